// The Blocked users view: users a revoke-all watermark or a lock keeps out, and lifting it.

import { api } from './api.js';
import { loadAudit } from './audit.js';
import { MAX_PAGES, PAGE, state } from './state.js';
import { $, el, formatTime, showError, toast } from './ui.js';

let lifting = null;
let blockedTimer = null;

function blockedRow(b) {
  const r = b.revocation;
  const by = r
    ? el('td', { 'data-label': 'Revoked by' },
      el('div', { class: 'user-name', text: r.actor }),
      el('div', { class: 'muted', text: r.reason || '' }))
    : el('td', { 'data-label': 'Revoked by', class: 'muted', text: '—' });
  const time = (iso) => (iso ? el('time', { datetime: iso, text: formatTime(iso) }) : '—');
  const name = state.names.get(b.user);
  return el('tr', { dataset: { blockedUser: b.user } },
    el('td', { 'data-label': 'User' },
      el('div', {},
        name ? el('div', { class: 'user-name', text: name }) : null,
        el('div', { class: 'user-id', text: b.user }))),
    el('td', { 'data-label': 'Since' }, time(b.notBefore)),
    el('td', { 'data-label': 'Locked until' }, time(b.lockUntil),
      b.message ? el('div', { class: 'muted lock-message', text: b.message }) : null),
    el('td', { 'data-label': 'Holds until' }, time(b.holdsUntil)),
    by,
    el('td', {},
      el('div', { class: 'actions' },
        el('button', { type: 'button', class: 'btn btn-small', 'aria-label': `Lift the block on ${b.user}`, onclick: () => openLift(b) }, 'Lift'))));
}

function renderBlocked() {
  $('blocked-body').replaceChildren(...state.blocked.map(blockedRow));
  $('blocked-empty').hidden = state.blocked.length > 0;
  $('blocked-count').textContent = String(state.blocked.length);
}

export async function loadBlocked() {
  const all = [];
  let offset = 0;
  for (let page = 0; page < MAX_PAGES && offset !== null && offset !== undefined; page += 1) {
    const result = await api(`/api/v1/blocked-users?limit=${PAGE}&offset=${offset}`);
    all.push(...result.items);
    offset = result.nextOffset;
  }
  state.blocked = all;
  renderBlocked();
}

/// Reloads the blocked users soon, once for a burst of events (a revoke-all ends many
/// sessions at once).
export function refreshBlockedSoon() {
  clearTimeout(blockedTimer);
  blockedTimer = setTimeout(() => loadBlocked().catch(() => {}), 250);
}

function openLift(b) {
  lifting = b;
  const facts = [
    ['User', state.names.has(b.user) ? `${state.names.get(b.user)} (${b.user})` : b.user],
    ['Since', formatTime(b.notBefore)],
    ['Locked until', formatTime(b.lockUntil)],
    ...(b.message ? [['Message to the user', b.message]] : []),
    ['Holds until', formatTime(b.holdsUntil)],
  ];
  if (b.revocation) facts.push(['Revoked by', `${b.revocation.actor}: ${b.revocation.reason || '—'}`]);
  $('lift-facts').replaceChildren(...facts.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: v })]));
  $('lift-user').textContent = state.names.get(b.user) || b.user;
  $('lift-reason').value = '';
  showError('lift-error', '');
  $('lift-dialog').showModal();
  $('lift-reason').focus();
}

export async function submitLift(event) {
  event.preventDefault();
  const reason = $('lift-reason').value.trim();
  if (!reason) {
    showError('lift-error', 'A reason is required.');
    $('lift-reason').focus();
    return;
  }
  const target = lifting;
  $('lift-submit').disabled = true;
  try {
    await api(`/api/v1/users/${encodeURIComponent(target.user)}/revocation`, { method: 'DELETE', body: { reason } });
    $('lift-dialog').close();
    toast(`The block on ${state.names.get(target.user) || target.user} is lifted.`);
    if (state.view === 'audit') loadAudit().catch(() => {});
  } catch (err) {
    // 404: someone else lifted it, or it just ran out; the reload shows it.
    showError('lift-error', err.message);
  } finally {
    $('lift-submit').disabled = false;
    loadBlocked().catch(() => {});
  }
}
