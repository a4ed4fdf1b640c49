// Live updates: the Server-Sent Events stream /api/v1/events, read with fetch() because
// EventSource cannot send an Authorization header.

import { authHeaders } from './api.js';
import { loadAudit } from './audit.js';
import { loadBlocked, refreshBlockedSoon } from './blocked.js';
import { loadOverview, refreshOverviewSoon } from './overview.js';
import { loadPolicy, renderPolicy } from './policy.js';
import { addSession, loadSessions, removeSession } from './sessions.js';
import { signOut } from './signin.js';
import { state } from './state.js';
import { $, sleep } from './ui.js';

export function setLive(mode, text) {
  $('live').dataset.state = mode;
  $('live-text').textContent = text;
}

async function reloadAll() {
  const jobs = [loadSessions(), loadPolicy(), loadBlocked(), loadOverview()];
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
      refreshOverviewSoon();
      break;
    case 'session.ended':
      removeSession(data.id);
      refreshOverviewSoon();
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

export async function runLive() {
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
