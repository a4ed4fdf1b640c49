// GrantFlow session administration dashboard.
//
// Sign-in: OpenID Connect authorization code + PKCE, entirely in the browser (discovery →
// authorize → token). The access token lives in sessionStorage (this tab only) and is sent
// in the Authorization header; there are no cookies, so there is nothing to forge (no CSRF).
// Live updates: the Server-Sent Events stream /api/v1/events, read with fetch() because
// EventSource cannot send an Authorization header.
// Rendering: text only (textContent); nothing from the API is ever parsed as HTML.

const TOKEN_KEY = 'grantflow.admin.token';
const PKCE_KEY = 'grantflow.admin.pkce';
const REDIRECT_URI = `${location.origin}/admin/`;
const PAGE = 500;
const MAX_PAGES = 40;
const VIEWS = ['sessions', 'blocked', 'audit', 'settings'];
/// How often the blocked users are re-read. The event stream carries no event for a
/// revoke-all of a user without live sessions or for a lift, so this bounds how stale the
/// list is when another administrator made the change (own changes reload at once).
const BLOCKED_REFRESH_MS = 30_000;

const $ = (id) => document.getElementById(id);

const state = {
  config: null,
  token: null,
  me: null,
  sessions: new Map(),
  names: new Map(), // user id → display name, from the sessions seen (for Blocked users)
  blocked: [],
  audit: { items: [], nextOffset: null, user: '', action: '' },
  policy: null,
  live: null, // AbortController of the event stream
  skewMs: 0, // this browser's clock minus the server's, from the sessions' ages
  policyEvents: 0, // policy.changed events seen
  view: 'sessions',
};

// --- small helpers -----------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, title, detail) {
    super(detail || title || `HTTP ${status}`);
    this.status = status;
    this.title = title;
  }
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function base64url(bytes) {
  let text = '';
  for (const b of new Uint8Array(bytes)) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function randomString(bytes = 32) {
  return base64url(crypto.getRandomValues(new Uint8Array(bytes)));
}

function jwtPayload(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(part));
  } catch {
    return {};
  }
}

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
const timeOnly = new Intl.DateTimeFormat(undefined, { timeStyle: 'medium' });

function formatTime(iso) {
  if (!iso) return '—';
  const at = new Date(iso);
  const today = new Date().toDateString() === at.toDateString();
  return today ? timeOnly.format(at) : dateTime.format(at);
}

function formatDuration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  const h = Math.floor(m / 60);
  return `${h} h ${m % 60} min`;
}

/// Now, on the server's clock (ages and "last seen" are relative to it).
const serverNow = () => Date.now() - state.skewMs;

function ago(iso) {
  const ms = serverNow() - new Date(iso).getTime();
  return ms < 5000 ? 'just now' : `${formatDuration(ms)} ago`;
}

function toast(message, kind = 'info') {
  const node = el('div', { class: `toast${kind === 'error' ? ' toast-error' : ''}`, text: message });
  $('toasts').append(node);
  setTimeout(() => node.remove(), 6000);
}

function showError(id, message) {
  const node = $(id);
  node.textContent = message || '';
  node.hidden = !message;
}

// --- sign-in -----------------------------------------------------------------------------

async function discovery() {
  const authority = state.config.signIn.authority.replace(/\/+$/, '');
  const res = await fetch(`${authority}/.well-known/openid-configuration`, { cache: 'no-store' });
  if (!res.ok) throw new Error(`the sign-in authority answered ${res.status}`);
  return res.json();
}

async function beginSignIn() {
  showError('signin-error', '');
  try {
    if (state.config.devSignIn) {
      const res = await fetch('/dev/token?admin=true&user=admin', { cache: 'no-store' });
      if (!res.ok) throw new Error(`the development issuer answered ${res.status}`);
      const token = (await res.text()).trim();
      saveToken(token, (jwtPayload(token).exp || 0) * 1000);
      await start();
      return;
    }
    const oidc = await discovery();
    const verifier = randomString(48);
    const challenge = base64url(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier)));
    const pkce = { state: randomString(16), nonce: randomString(16), verifier, tokenEndpoint: oidc.token_endpoint };
    sessionStorage.setItem(PKCE_KEY, JSON.stringify(pkce));
    const url = new URL(oidc.authorization_endpoint);
    url.search = new URLSearchParams({
      client_id: state.config.signIn.clientId,
      response_type: 'code',
      redirect_uri: REDIRECT_URI,
      response_mode: 'query',
      scope: state.config.signIn.scope,
      state: pkce.state,
      nonce: pkce.nonce,
      code_challenge: challenge,
      code_challenge_method: 'S256',
    }).toString();
    location.assign(url.toString());
  } catch (err) {
    showError('signin-error', `Sign-in could not start: ${err.message}`);
  }
}

/// Finishes a sign-in when the authority redirected back with ?code=…&state=….
async function completeSignIn() {
  const params = new URLSearchParams(location.search);
  if (!params.has('code') && !params.has('error')) return;
  history.replaceState(null, '', `/admin/${location.hash}`);
  const saved = JSON.parse(sessionStorage.getItem(PKCE_KEY) || 'null');
  sessionStorage.removeItem(PKCE_KEY);
  if (params.has('error')) {
    throw new Error(params.get('error_description') || params.get('error'));
  }
  if (!saved || saved.state !== params.get('state')) {
    throw new Error('the sign-in response does not match the request (state); try again');
  }
  const res = await fetch(saved.tokenEndpoint, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'authorization_code',
      code: params.get('code'),
      redirect_uri: REDIRECT_URI,
      client_id: state.config.signIn.clientId,
      code_verifier: saved.verifier,
      scope: state.config.signIn.scope,
    }),
    cache: 'no-store',
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok || !body.access_token) {
    throw new Error(body.error_description || body.error || `the token endpoint answered ${res.status}`);
  }
  const expiresAt = Date.now() + (Number(body.expires_in) || 3600) * 1000;
  saveToken(body.access_token, expiresAt);
}

function saveToken(token, expiresAt) {
  state.token = token;
  sessionStorage.setItem(TOKEN_KEY, JSON.stringify({ token, expiresAt }));
}

function loadToken() {
  const saved = JSON.parse(sessionStorage.getItem(TOKEN_KEY) || 'null');
  if (saved && saved.expiresAt > Date.now() + 10_000) state.token = saved.token;
}

function signOut(message) {
  state.token = null;
  state.me = null;
  sessionStorage.removeItem(TOKEN_KEY);
  if (state.live) state.live.abort();
  state.live = null;
  state.sessions.clear();
  state.names.clear();
  state.blocked = [];
  $('app').hidden = true;
  $('who').hidden = true;
  $('signin').hidden = false;
  showError('signin-error', message || '');
  $('sign-in').focus();
}

// --- API ---------------------------------------------------------------------------------

function authHeaders(extra = {}) {
  return { Authorization: `Bearer ${state.token}`, 'X-GrantFlow-Client': 'dashboard', ...extra };
}

async function api(path, { method = 'GET', body, headers: extra = {} } = {}) {
  const headers = authHeaders({ Accept: 'application/json', ...extra });
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
  });
  if (res.ok) return res.json();
  const problem = await res.json().catch(() => ({}));
  if (res.status === 401) {
    signOut(problem.detail || 'Your sign-in has ended. Sign in again.');
  }
  throw new ApiError(res.status, problem.title, problem.detail);
}

// --- sessions ----------------------------------------------------------------------------

async function loadSessions() {
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
function renderSessions() {
  const filter = $('session-filter').value.trim().toLowerCase();
  const list = [...state.sessions.values()].filter((s) => sessionMatches(s, filter)).sort(sessionOrder);
  $('sessions-body').replaceChildren(...list.map((s) => sessionRow(s, false)));
  updateSessionCounts();
}

/// Adds one session live: only its row is inserted, so focus and scroll stay where they are.
function addSession(s) {
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
function removeSession(id) {
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

function tick() {
  const now = serverNow();
  for (const cell of document.querySelectorAll('#sessions-body td.age')) {
    cell.textContent = formatDuration(now - new Date(cell.dataset.since));
  }
  for (const cell of document.querySelectorAll('#sessions-body td.seen')) {
    cell.textContent = ago(cell.dataset.at);
  }
}

// --- revoke dialogs ----------------------------------------------------------------------

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
  showError('revoke-all-error', '');
  $('revoke-all-dialog').showModal();
  $('revoke-all-reason').focus();
}

async function submitRevoke(event) {
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

async function submitRevokeAll(event) {
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

// --- blocked users -----------------------------------------------------------------------

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
    el('td', { 'data-label': 'Locked until' }, time(b.lockUntil)),
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

async function loadBlocked() {
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
function refreshBlockedSoon() {
  clearTimeout(blockedTimer);
  blockedTimer = setTimeout(() => loadBlocked().catch(() => {}), 250);
}

function openLift(b) {
  lifting = b;
  const facts = [
    ['User', state.names.has(b.user) ? `${state.names.get(b.user)} (${b.user})` : b.user],
    ['Since', formatTime(b.notBefore)],
    ['Locked until', formatTime(b.lockUntil)],
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

async function submitLift(event) {
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

// --- audit -------------------------------------------------------------------------------

const ACTIONS = {
  'session.revoke': ['Session ended', 'badge-danger'],
  'user.revoke': ['All sessions ended', 'badge-danger'],
  'user.lock': ['User locked', 'badge-danger'],
  'user.unblock': ['Block lifted', 'badge-accent'],
  'policy.update': ['Policy changed', 'badge-accent'],
  'store.reset': ['Store data lost', 'badge-warn'],
};

function auditRow(r) {
  const [label, badge] = ACTIONS[r.action] || [r.action, ''];
  const actor = r.actor.name || r.actor.id;
  const target = [];
  if (r.target.user) target.push(el('div', { class: 'user-id', text: `user ${r.target.user}` }));
  if (r.target.session) target.push(el('div', { class: 'user-id', text: `session ${r.target.session}` }));
  if (r.detail) target.push(el('div', { class: 'muted', text: r.detail }));
  if (!target.length) target.push(el('span', { class: 'muted', text: 'tenant' }));
  return el('tr', { dataset: { auditId: r.id } },
    el('td', { 'data-label': 'Time' }, el('time', { datetime: r.time, text: formatTime(r.time) })),
    el('td', { 'data-label': 'Actor' },
      el('div', { class: 'user-name', text: actor }),
      el('div', { class: 'user-id', text: r.actor.kind === 'admin' ? r.actor.id : `${r.actor.kind} · ${r.actor.id}` })),
    el('td', { 'data-label': 'Action' }, el('span', { class: `badge ${badge}`, text: label })),
    el('td', { 'data-label': 'Target', class: 'target' }, ...target),
    el('td', { 'data-label': 'Reason', class: 'reason', text: r.reason || '—' }),
    el('td', { 'data-label': 'Source' }, el('span', { class: 'badge', text: r.source })),
    el('td', { 'data-label': 'Sessions', class: 'num', text: r.sessionsRevoked ?? '—' }));
}

async function loadAudit(append = false) {
  const a = state.audit;
  const params = new URLSearchParams({ limit: '50', offset: String(append ? a.nextOffset : 0) });
  if (a.user) params.set('user', a.user);
  if (a.action) params.set('action', a.action);
  const page = await api(`/api/v1/audit?${params}`);
  a.items = append ? a.items.concat(page.items) : page.items;
  a.nextOffset = page.nextOffset;
  $('audit-body').replaceChildren(...a.items.map(auditRow));
  $('audit-empty').hidden = a.items.length > 0;
  $('audit-more').hidden = a.nextOffset === null || a.nextOffset === undefined;
}

// --- settings ----------------------------------------------------------------------------

function renderPolicy() {
  const p = state.policy;
  if (!p) return;
  if (document.activeElement !== $('max-age')) {
    $('max-age').value = String(Math.round(p.maxSessionAgeSeconds / 60));
  }
  $('max-age').min = String(Math.ceil(p.minSeconds / 60));
  $('max-age').max = String(Math.floor(p.maxSeconds / 60));
  const sources = { default: 'This tenant uses the default.', admin: 'Set by an administrator.', kubernetes: '' };
  $('policy-source').textContent = sources[p.source] || '';
  const managed = $('policy-managed');
  if (p.editable) {
    managed.hidden = true;
  } else {
    managed.hidden = false;
    managed.replaceChildren(
      el('strong', { text: 'Managed by Kubernetes. ' }),
      `This tenant's policy comes from the SessionPolicy ${p.managedBy}; change it there (kubectl or GitOps). Editing here is turned off.`);
  }
  $('policy-fields').disabled = !p.editable;
}

async function loadPolicy() {
  state.policy = await api('/api/v1/policy');
  renderPolicy();
}

async function submitPolicy(event) {
  event.preventDefault();
  showError('policy-error', '');
  const minutes = Number($('max-age').value);
  const reason = $('policy-reason').value.trim();
  if (!Number.isInteger(minutes) || minutes < 1 || minutes > 1440) {
    showError('policy-error', 'Enter a whole number of minutes between 1 and 1440.');
    $('max-age').focus();
    return;
  }
  if (!reason) {
    showError('policy-error', 'A reason is required.');
    $('policy-reason').focus();
    return;
  }
  $('policy-save').disabled = true;
  const seen = state.policyEvents;
  try {
    const saved = await api('/api/v1/policy', { method: 'PUT', body: { maxSessionAgeSeconds: minutes * 60, reason } });
    // A change that arrived live meanwhile is newer than this answer.
    if (state.policyEvents === seen) state.policy = saved;
    $('policy-reason').value = '';
    renderPolicy();
    toast(`Maximum session age set to ${minutes} min.`);
  } catch (err) {
    showError('policy-error', err.message);
  } finally {
    $('policy-save').disabled = false;
  }
}

// --- live updates ------------------------------------------------------------------------

function setLive(mode, text) {
  $('live').dataset.state = mode;
  $('live-text').textContent = text;
}

async function reloadAll() {
  const jobs = [loadSessions(), loadPolicy(), loadBlocked()];
  if (state.view === 'audit') jobs.push(loadAudit());
  await Promise.all(jobs);
}

function handleEvent(name, data) {
  switch (name) {
    case 'ready':
      setLive('live', 'Live');
      reloadAll().catch(() => {});
      break;
    case 'session.created':
      addSession(data);
      break;
    case 'session.ended':
      removeSession(data.id);
      // A revocation may have been a revoke-all (through another replica or the API).
      if (data.reason === 'revoked') refreshBlockedSoon();
      if (state.view === 'audit') loadAudit().catch(() => {});
      break;
    case 'user.blocks':
      // A revoke-all, lock or lift (here, through another replica, the API or Kubernetes).
      refreshBlockedSoon();
      if (state.view === 'audit') loadAudit().catch(() => {});
      break;
    case 'policy.changed':
      state.policyEvents += 1;
      state.policy = data;
      renderPolicy();
      if (state.view === 'audit') loadAudit().catch(() => {});
      break;
    case 'resync':
      reloadAll().catch(() => {});
      break;
    case 'end':
      // `feed-closed`: the server lost its change feed; the loop reconnects and reloads.
      if (data.reason === 'session-ended') signOut('Your session was ended. Sign in again.');
      else if (data.reason === 'token-expired') signOut('Your sign-in has expired. Sign in again.');
      break;
    default:
      break;
  }
}

function dispatchBlock(block) {
  let name = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (line.startsWith(':')) continue; // keep-alive comment
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') name = value;
    else if (field === 'data') data.push(value);
  }
  if (!data.length) return;
  let parsed = {};
  try {
    parsed = JSON.parse(data.join('\n'));
  } catch {
    return;
  }
  handleEvent(name, parsed);
}

async function runLive() {
  let backoff = 500;
  while (state.token) {
    const controller = new AbortController();
    state.live = controller;
    try {
      const res = await fetch('/api/v1/events', {
        headers: authHeaders({ Accept: 'text/event-stream' }),
        signal: controller.signal,
        cache: 'no-store',
      });
      if (res.status === 401 || res.status === 403) {
        const problem = await res.json().catch(() => ({}));
        signOut(problem.detail || 'Your sign-in has ended. Sign in again.');
        return;
      }
      if (!res.ok || !res.body) throw new Error(`events: HTTP ${res.status}`);
      backoff = 500;
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, '\n');
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          dispatchBlock(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch {
      if (controller.signal.aborted) return;
    }
    if (!state.token) return;
    setLive('reconnecting', 'Reconnecting…');
    await sleep(backoff);
    backoff = Math.min(backoff * 2, 15_000);
  }
}

// --- views -------------------------------------------------------------------------------

function showView() {
  const view = (location.hash || '#sessions').slice(1);
  state.view = VIEWS.includes(view) ? view : 'sessions';
  for (const tab of document.querySelectorAll('.tab')) {
    if (tab.dataset.view === state.view) tab.setAttribute('aria-current', 'page');
    else tab.removeAttribute('aria-current');
  }
  for (const name of VIEWS) {
    $(`view-${name}`).hidden = name !== state.view;
  }
  if (!state.token || !state.me) return;
  if (state.view === 'audit') loadAudit().catch((err) => toast(err.message, 'error'));
  if (state.view === 'blocked') loadBlocked().catch((err) => toast(err.message, 'error'));
  if (state.view === 'settings') loadPolicy().catch((err) => toast(err.message, 'error'));
}

async function start() {
  try {
    state.me = await api('/api/v1/me');
  } catch (err) {
    if (err.status === 403) {
      signOut(`${err.detail || err.message} You are signed in, but not as a session administrator.`);
    } else if (err.status !== 401) {
      signOut(`The dashboard could not load: ${err.message}`);
    }
    return;
  }
  $('tenant-id').textContent = state.me.tenant;
  $('me-name').textContent = state.me.displayName || state.me.user;
  $('signin').hidden = true;
  $('who').hidden = false;
  $('app').hidden = false;
  setLive('connecting', 'Connecting…');
  showView();
  runLive();
}

async function main() {
  $('sign-in').addEventListener('click', beginSignIn);
  $('sign-out').addEventListener('click', () => signOut('You signed out.'));
  $('session-filter').addEventListener('input', () => renderSessions());
  $('revoke-form').addEventListener('submit', submitRevoke);
  $('revoke-all-form').addEventListener('submit', submitRevokeAll);
  $('lift-form').addEventListener('submit', submitLift);
  $('revoke-all-lock').addEventListener('change', (e) => {
    $('revoke-all-until').disabled = !e.target.checked;
    if (e.target.checked) $('revoke-all-until').focus();
  });
  $('policy-form').addEventListener('submit', submitPolicy);
  $('audit-filters').addEventListener('submit', (e) => {
    e.preventDefault();
    state.audit.user = $('audit-user').value.trim();
    state.audit.action = $('audit-action').value;
    loadAudit().catch((err) => toast(err.message, 'error'));
  });
  $('audit-more').addEventListener('click', () => loadAudit(true).catch((err) => toast(err.message, 'error')));
  for (const button of document.querySelectorAll('dialog [data-close]')) {
    button.addEventListener('click', () => button.closest('dialog').close());
  }
  window.addEventListener('hashchange', showView);
  setInterval(tick, 1000);
  setInterval(() => {
    if (state.token && state.me) loadBlocked().catch(() => {});
  }, BLOCKED_REFRESH_MS);

  try {
    const res = await fetch('/admin/config.json', { cache: 'no-store' });
    state.config = await res.json();
  } catch {
    $('signin').hidden = false;
    showError('signin-error', 'The dashboard settings could not be loaded.');
    return;
  }
  $('role-name').textContent = state.config.adminRole;
  if (!state.config.signIn && !state.config.devSignIn) {
    $('signin').hidden = false;
    $('sign-in').disabled = true;
    showError('signin-error', 'Sign-in is not configured: set admin_oidc_authority and admin_client_id.');
    return;
  }
  try {
    await completeSignIn();
  } catch (err) {
    signOut(`Sign-in failed: ${err.message}`);
    return;
  }
  loadToken();
  if (state.token) await start();
  else signOut('');
}

main();
