// The Sessions view: one page of the tenant's live sessions at a time, listed by the server
// (search, sort and paging are API queries, so a tenant with 100 000 sessions costs the
// browser one page), optionally grouped by user; live updates apply to the visible page.
// And the dialogs that revoke one session or all of a user's.

import { api } from './api.js';
import { loadAudit } from './audit.js';
import { loadBlocked } from './blocked.js';
import { loadOverview } from './overview.js';
import { randomString } from './signin.js';
import { serverNow, state } from './state.js';
import { $, ago, el, formatDuration, formatTime, showError, toast } from './ui.js';

/// Rows per page.
export const LIST_PAGE = 100;
const SEARCH_DELAY_MS = 250;

/// What the table shows: the query (filters, sort, grouping) and where it is in the pages.
const list = {
  search: '',
  user: null, // an expanded user's id (from the grouped view)
  grouped: false,
  sort: 'started',
  desc: true,
  cursors: [null], // the cursor of each page seen so far; the last is the current page's
  next: null,
  total: 0,
  rows: [], // the sessions (or users) of the page, in order
  generation: 0, // answers of superseded requests are dropped
  newSince: 0, // sessions started (matching) since the page was loaded, not shown
};

const IP_LIKE = /^(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9a-f]*:[0-9a-f:.]*)(?:\/[0-9]{1,3})?$/i;

/// The API query of the current view.
function listQuery(cursor) {
  const params = new URLSearchParams({ limit: String(LIST_PAGE), sort: `${list.desc ? '-' : ''}${list.sort}` });
  const search = list.search.trim();
  if (search) params.set(IP_LIKE.test(search) ? 'ip' : 'name', search);
  if (list.user) params.set('user', list.user);
  if (list.grouped) params.set('groupBy', 'user');
  if (cursor) params.set('cursor', cursor);
  return `/api/v1/sessions?${params}`;
}

/// Whether a session (from a live event) matches the current filters, as the server decides.
function sessionMatches(s) {
  if (list.user && s.user !== list.user) return false;
  const search = list.search.trim().toLowerCase();
  if (!search) return true;
  if (IP_LIKE.test(search)) return s.clientIp === search; // ranges: the next load decides
  return (s.displayName || '').toLowerCase().startsWith(search) || s.user.toLowerCase().startsWith(search);
}

/// Loads the first page of the current query.
export async function loadSessions() {
  list.cursors = [null];
  await loadPage();
}

async function loadPage() {
  const generation = ++list.generation;
  const cursor = list.cursors[list.cursors.length - 1];
  $('sessions-table').setAttribute('aria-busy', 'true');
  try {
    const result = await api(listQuery(cursor));
    if (generation !== list.generation) return;
    list.rows = result.items;
    list.next = result.nextCursor ?? null;
    list.total = result.total;
    list.newSince = 0;
    if (!list.grouped) {
      for (const s of result.items) if (s.displayName) state.names.set(s.user, s.displayName);
      if (result.items.length) {
        const s = result.items[0];
        state.skewMs = Date.now() - new Date(s.startedAt).getTime() - s.ageSeconds * 1000;
      }
    } else {
      for (const u of result.items) if (u.displayName) state.names.set(u.user, u.displayName);
    }
    state.sessions = new Map(list.grouped ? [] : result.items.map((s) => [s.id, s]));
    renderSessions();
  } finally {
    if (generation === list.generation) $('sessions-table').removeAttribute('aria-busy');
  }
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

function userRow(u) {
  const name = u.displayName || u.user;
  const count = `${u.sessions} session${u.sessions === 1 ? '' : 's'}`;
  return el('tr', { dataset: { user: u.user } },
    el('td', { 'data-label': 'User' },
      el('div', {},
        el('div', { class: 'user-name', text: name }),
        el('div', { class: 'user-id', text: u.user }))),
    el('td', { 'data-label': 'Sessions', colspan: '2' }, el('span', { class: 'count-pill', text: count })),
    el('td', { 'data-label': 'Newest start' }, el('time', { datetime: u.newestStart, text: formatTime(u.newestStart) })),
    el('td', { 'data-label': 'Age' }),
    el('td', { 'data-label': 'Last seen', class: 'seen', dataset: { at: u.lastSeen }, text: ago(u.lastSeen) }),
    el('td', {},
      el('div', { class: 'actions' },
        el('button', { type: 'button', class: 'btn btn-small', 'aria-label': `Show the sessions of ${name}`, onclick: () => expandUser(u.user) }, 'Show sessions'),
        el('button', { type: 'button', class: 'btn btn-small', 'aria-label': `End all sessions of ${name}`, onclick: () => openRevokeAll(u) }, 'Revoke all'))));
}

function expandUser(user) {
  list.user = user;
  list.grouped = false;
  $('session-group').checked = false;
  loadSessions().catch((err) => toast(err.message, 'error'));
}

/// The order of the current sort, for live inserts: negative when `a` comes before `b`.
function order(a, b) {
  const key = list.sort === 'lastSeen' ? 'lastSeen' : 'startedAt';
  const c = a[key].localeCompare(b[key]) || a.id.localeCompare(b.id);
  return list.desc ? -c : c;
}

function updateSessionCounts() {
  const shown = $('sessions-body').rows.length;
  const first = (list.cursors.length - 1) * LIST_PAGE;
  $('sessions-empty').hidden = shown > 0;
  $('sessions-empty').textContent = list.search || list.user ? 'No session matches the search.' : 'No active sessions.';
  if (!list.grouped && !list.search && !list.user) $('session-count').textContent = String(list.total);
  const what = list.grouped ? 'users' : 'sessions';
  $('sessions-range').textContent = shown
    ? `${first + 1}–${first + shown} of ${list.total.toLocaleString('en')} ${what}`
    : `0 of ${list.total.toLocaleString('en')} ${what}`;
  $('sessions-prev').disabled = list.cursors.length <= 1;
  $('sessions-next').disabled = !list.next;
  $('sessions-new').hidden = list.newSince === 0;
  $('sessions-new').textContent = `${list.newSince} new — show`;
  $('session-user').hidden = !list.user;
  $('session-user-name').textContent = list.user ? state.names.get(list.user) || list.user : '';
  for (const th of document.querySelectorAll('#sessions-table th[data-sort]')) {
    const active = th.dataset.sort === list.sort;
    if (active) th.setAttribute('aria-sort', list.desc ? 'descending' : 'ascending');
    else th.removeAttribute('aria-sort');
  }
}

/// Renders the page (after a load).
export function renderSessions() {
  const rows = list.grouped ? list.rows.map(userRow) : list.rows.map((s) => sessionRow(s, false));
  $('sessions-body').replaceChildren(...rows);
  $('sessions-table').dataset.mode = list.grouped ? 'users' : 'sessions';
  updateSessionCounts();
  performance.mark('grantflow:sessions-rendered');
}

/// A session started (live event): shown at its place when it falls on the visible page,
/// else counted as new (a click loads the first page again).
export function addSession(s) {
  if (s.displayName) state.names.set(s.user, s.displayName);
  if (list.grouped || !sessionMatches(s)) return;
  const existing = document.querySelector(`#sessions-body tr[data-session-id="${CSS.escape(s.id)}"]`);
  if (existing) existing.remove();
  const rows = [...$('sessions-body').rows];
  const before = rows.find((r) => order(s, state.sessions.get(r.dataset.sessionId) ?? s) < 0);
  const onFirstPage = list.cursors.length === 1;
  const fits = before ? (onFirstPage || rows.indexOf(before) > 0) : !list.next && rows.length < LIST_PAGE;
  if (!existing) list.total += 1;
  if (!fits && !existing) {
    list.newSince += 1;
    updateSessionCounts();
    return;
  }
  state.sessions.set(s.id, s);
  // The page grows by the row rather than dropping its last one: the next page starts after
  // the last row the server sent, so a dropped row would be shown on no page.
  $('sessions-body').insertBefore(sessionRow(s, true), before ?? null);
  updateSessionCounts();
}

/// A session ended (live event, or revoked here): its row goes; focus inside it moves to the
/// next row (or the search box).
export function removeSession(id) {
  const row = document.querySelector(`#sessions-body tr[data-session-id="${CSS.escape(id)}"]`);
  state.sessions.delete(id);
  if (row) {
    if (row.contains(document.activeElement)) {
      const next = row.nextElementSibling ?? row.previousElementSibling;
      (next?.querySelector('button') ?? $('session-filter')).focus();
    }
    row.remove();
    list.total = Math.max(0, list.total - 1);
  }
  updateSessionCounts();
}

export function tick() {
  const now = serverNow();
  for (const cell of document.querySelectorAll('#sessions-body td.age[data-since]')) {
    cell.textContent = formatDuration(now - new Date(cell.dataset.since));
  }
  for (const cell of document.querySelectorAll('#sessions-body td.seen')) {
    cell.textContent = ago(cell.dataset.at);
  }
}

/// Wires the search box, sort headers, grouping and paging.
export function initSessions() {
  let timer = null;
  const reload = () => loadSessions().catch((err) => toast(err.message, 'error'));
  $('session-filter').addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      list.search = $('session-filter').value;
      reload();
    }, SEARCH_DELAY_MS);
  });
  $('session-group').addEventListener('change', (e) => {
    list.grouped = e.target.checked;
    if (list.grouped) list.user = null;
    reload();
  });
  $('session-user-clear').addEventListener('click', () => {
    list.user = null;
    reload();
  });
  for (const button of document.querySelectorAll('#sessions-table th[data-sort] button')) {
    button.addEventListener('click', () => {
      const key = button.closest('th').dataset.sort;
      list.desc = list.sort === key ? !list.desc : true;
      list.sort = key;
      reload();
    });
  }
  $('sessions-next').addEventListener('click', () => {
    if (!list.next) return;
    list.cursors.push(list.next);
    loadPage().catch((err) => toast(err.message, 'error'));
  });
  $('sessions-prev').addEventListener('click', () => {
    if (list.cursors.length <= 1) return;
    list.cursors.pop();
    loadPage().catch((err) => toast(err.message, 'error'));
  });
  $('sessions-new').addEventListener('click', reload);
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
  const own = target.id === state.me?.session;
  $('revoke-submit').disabled = true;
  try {
    const result = await api(`/api/v1/sessions/${encodeURIComponent(target.id)}/revoke`, {
      method: 'POST',
      body: { reason },
      headers: { 'Idempotency-Key': revokeKey },
    });
    $('revoke-dialog').close();
    removeSession(target.id);
    // Not after ending one's own session: the dashboard is signing out.
    if (!own && state.token) loadOverview().catch(() => {});
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
    if (list.grouped) loadSessions().catch(() => {});
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
