// The Sessions view: the live sessions (rows added and removed live), and the dialogs that
// revoke one session or all of a user's.

import { api } from './api.js';
import { loadAudit } from './audit.js';
import { loadBlocked } from './blocked.js';
import { randomString } from './signin.js';
import { MAX_PAGES, PAGE, serverNow, state } from './state.js';
import { $, ago, el, formatDuration, formatTime, showError, toast } from './ui.js';

export async function loadSessions() {
  const all = new Map();
  let offset = 0;
  for (let page = 0; page < MAX_PAGES && offset !== null; page += 1) {
    const result = await api(`/api/v1/sessions?limit=${PAGE}&offset=${offset}`);
    for (const s of result.items) {
      all.set(s.id, s);
      if (s.displayName) state.names.set(s.user, s.displayName);
    }
    if (page === 0 && result.items.length) {
      const s = result.items[0];
      state.skewMs = Date.now() - new Date(s.startedAt).getTime() - s.ageSeconds * 1000;
    }
    offset = result.nextOffset;
  }
  state.sessions = all;
  renderSessions();
}

function sessionMatches(s, filter) {
  if (!filter) return true;
  const hay = [s.displayName, s.user, s.clientLabel, s.clientIp, s.id].join(' ').toLowerCase();
  return hay.includes(filter);
}

function sessionRow(s, fresh) {
  const name = s.displayName || s.user;
  const own = state.me && s.id === state.me.session;
  const row = el('tr', { dataset: { sessionId: s.id, user: s.user }, class: fresh ? 'fresh' : undefined },
    el('td', { 'data-label': 'User' },
      el('div', {},
        el('div', { class: 'user-name' }, name, own ? el('span', { class: 'you', text: 'you' }) : null),
        el('div', { class: 'user-id', text: s.user }))),
    el('td', { 'data-label': 'Browser', text: s.clientLabel || 'Unknown', title: s.userAgent || '' }),
    el('td', { 'data-label': 'IP address', class: 'mono', text: s.clientIp || '—' }),
    el('td', { 'data-label': 'Started' }, el('time', { datetime: s.startedAt, text: formatTime(s.startedAt) })),
    el('td', { 'data-label': 'Age', class: 'age', dataset: { since: s.startedAt }, text: formatDuration(serverNow() - new Date(s.startedAt)) }),
    el('td', { 'data-label': 'Last seen', class: 'seen', dataset: { at: s.lastSeen }, text: ago(s.lastSeen) }),
    el('td', {},
      el('div', { class: 'actions' },
        el('button', { type: 'button', class: 'btn btn-small btn-danger-outline', 'aria-label': `End session of ${name}`, onclick: () => openRevoke(s) }, 'Revoke'),
        el('button', { type: 'button', class: 'btn btn-small', 'aria-label': `End all sessions of ${name}`, onclick: () => openRevokeAll(s) }, 'Revoke all'))));
  return row;
}

function sessionOrder(a, b) {
  return b.startedAt.localeCompare(a.startedAt) || a.id.localeCompare(b.id);
}

function updateSessionCounts() {
  const shown = $('sessions-body').rows.length;
  $('sessions-empty').hidden = shown > 0;
  $('sessions-empty').textContent = state.sessions.size ? 'No session matches the filter.' : 'No active sessions.';
  $('session-count').textContent = String(state.sessions.size);
}

/// Renders the whole table (after a load or a filter change).
export function renderSessions() {
  const filter = $('session-filter').value.trim().toLowerCase();
  const list = [...state.sessions.values()].filter((s) => sessionMatches(s, filter)).sort(sessionOrder);
  $('sessions-body').replaceChildren(...list.map((s) => sessionRow(s, false)));
  updateSessionCounts();
}

/// Adds one session live: only its row is inserted, so focus and scroll stay where they are.
export function addSession(s) {
  const existing = document.querySelector(`#sessions-body tr[data-session-id="${CSS.escape(s.id)}"]`);
  state.sessions.set(s.id, s);
  if (s.displayName) state.names.set(s.user, s.displayName);
  if (existing) existing.remove();
  if (sessionMatches(s, $('session-filter').value.trim().toLowerCase())) {
    const row = sessionRow(s, true);
    const before = [...$('sessions-body').rows].find((r) => sessionOrder(s, state.sessions.get(r.dataset.sessionId) ?? s) < 0);
    $('sessions-body').insertBefore(row, before ?? null);
  }
  updateSessionCounts();
}

/// Removes one session live; focus inside its row moves to the next row (or the filter).
export function removeSession(id) {
  if (!state.sessions.delete(id)) return;
  const row = document.querySelector(`#sessions-body tr[data-session-id="${CSS.escape(id)}"]`);
  if (row) {
    if (row.contains(document.activeElement)) {
      const next = row.nextElementSibling ?? row.previousElementSibling;
      (next?.querySelector('button') ?? $('session-filter')).focus();
    }
    row.remove();
  }
  updateSessionCounts();
}

export function tick() {
  const now = serverNow();
  for (const cell of document.querySelectorAll('#sessions-body td.age')) {
    cell.textContent = formatDuration(now - new Date(cell.dataset.since));
  }
  for (const cell of document.querySelectorAll('#sessions-body td.seen')) {
    cell.textContent = ago(cell.dataset.at);
  }
}

let revoking = null;
let revokeKey = null;
let revokeAllKey = null;

function openRevoke(s) {
  revoking = s;
  // One key per dialog: submitting again after an error (e.g. a 503) answers the first
  // outcome instead of "not found", and cannot write a second audit record.
  revokeKey = randomString(16);
  const facts = [
    ['User', s.displayName ? `${s.displayName} (${s.user})` : s.user],
    ['Browser', s.clientLabel || 'Unknown'],
    ['IP address', s.clientIp || '—'],
    ['Started', formatTime(s.startedAt)],
    ['Session', s.id],
  ];
  $('revoke-facts').replaceChildren(...facts.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: v })]));
  $('revoke-reason').value = '';
  showError('revoke-error', '');
  $('revoke-dialog').showModal();
  $('revoke-reason').focus();
}

function openRevokeAll(s) {
  revoking = s;
  // One key per dialog: submitting again after an error (e.g. a 503) cannot revoke twice or
  // write a second audit record.
  revokeAllKey = randomString(16);
  $('revoke-all-user').textContent = s.displayName || s.user;
  $('revoke-all-reason').value = '';
  $('revoke-all-lock').checked = false;
  $('revoke-all-until').disabled = true;
  $('revoke-all-until').value = '';
  $('revoke-all-message').disabled = true;
  $('revoke-all-message').value = '';
  showError('revoke-all-error', '');
  $('revoke-all-dialog').showModal();
  $('revoke-all-reason').focus();
}

export async function submitRevoke(event) {
  event.preventDefault();
  const reason = $('revoke-reason').value.trim();
  if (!reason) {
    showError('revoke-error', 'A reason is required.');
    $('revoke-reason').focus();
    return;
  }
  const target = revoking;
  $('revoke-submit').disabled = true;
  try {
    const result = await api(`/api/v1/sessions/${encodeURIComponent(target.id)}/revoke`, {
      method: 'POST',
      body: { reason },
      headers: { 'Idempotency-Key': revokeKey },
    });
    $('revoke-dialog').close();
    removeSession(target.id);
    toast(result.sessionsRevoked ? `Session of ${target.displayName || target.user} ended.` : 'That session had already ended.');
    if (state.view === 'audit') loadAudit();
  } catch (err) {
    showError('revoke-error', err.message);
  } finally {
    $('revoke-submit').disabled = false;
  }
}

export async function submitRevokeAll(event) {
  event.preventDefault();
  const reason = $('revoke-all-reason').value.trim();
  if (!reason) {
    showError('revoke-all-error', 'A reason is required.');
    $('revoke-all-reason').focus();
    return;
  }
  const body = { reason };
  if ($('revoke-all-lock').checked) {
    const until = $('revoke-all-until').value;
    if (!until) {
      showError('revoke-all-error', 'Choose until when the user is locked out.');
      $('revoke-all-until').focus();
      return;
    }
    body.lockUntil = new Date(until).toISOString();
    const message = $('revoke-all-message').value.trim();
    if (message) body.message = message;
  }
  const target = revoking;
  $('revoke-all-submit').disabled = true;
  try {
    const result = await api(`/api/v1/users/${encodeURIComponent(target.user)}/revoke`, {
      method: 'POST',
      body,
      headers: { 'Idempotency-Key': revokeAllKey },
    });
    $('revoke-all-dialog').close();
    for (const s of [...state.sessions.values()]) if (s.user === target.user) removeSession(s.id);
    const n = result.sessionsRevoked;
    const who = target.displayName || target.user;
    const back = result.blocked ? ` ${who} must sign in again interactively; see Blocked users.` : '';
    toast(`${n} session${n === 1 ? '' : 's'} of ${who} ended.${back}`);
    loadBlocked().catch(() => {});
    if (state.view === 'audit') loadAudit();
  } catch (err) {
    showError('revoke-all-error', err.message);
  } finally {
    $('revoke-all-submit').disabled = false;
  }
}
