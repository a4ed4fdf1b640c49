// GrantFlow session administration dashboard.
//
// Sign-in: OpenID Connect authorization code + PKCE, entirely in the browser (discovery →
// authorize → token). The access token lives in sessionStorage (this tab only) and is sent
// in the Authorization header; there are no cookies, so there is nothing to forge (no CSRF).
// Live updates: the Server-Sent Events stream /api/v1/events, read with fetch() because
// EventSource cannot send an Authorization header.
// Rendering: text only (textContent); nothing from the API is ever parsed as HTML.
//
// The page is ES modules, one per subject: state, ui (page helpers), signin, api, the views
// (sessions, blocked, audit, policy) and live (the event stream); this one wires them up.

import { loadAudit } from './audit.js';
import { api } from './api.js';
import { loadBlocked, submitLift } from './blocked.js';
import { setLive, runLive } from './live.js';
import { loadPolicy, submitPolicy } from './policy.js';
import { initOverview } from './overview.js';
import { initSessions, submitRevoke, submitRevokeAll, tick } from './sessions.js';
import { beginSignIn, completeSignIn, loadToken, signOut } from './signin.js';
import { state } from './state.js';
import { $, showError, toast } from './ui.js';

const VIEWS = ['sessions', 'blocked', 'audit', 'settings'];
/// How often the blocked users are re-read. The event stream carries no event for a
/// revoke-all of a user without live sessions or for a lift, so this bounds how stale the
/// list is when another administrator made the change (own changes reload at once).
const BLOCKED_REFRESH_MS = 30_000;

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
  $('sign-in').addEventListener('click', () => beginSignIn(start));
  $('sign-out').addEventListener('click', () => signOut('You signed out.'));
  initSessions();
  initOverview();
  $('revoke-form').addEventListener('submit', submitRevoke);
  $('revoke-all-form').addEventListener('submit', submitRevokeAll);
  $('lift-form').addEventListener('submit', submitLift);
  $('revoke-all-lock').addEventListener('change', (e) => {
    $('revoke-all-until').disabled = !e.target.checked;
    $('revoke-all-message').disabled = !e.target.checked;
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
