// The Settings view: the tenant's maximum session age, idle timeout and sessions per user.

import { api } from './api.js';
import { state } from './state.js';
import { $, el, showError, toast } from './ui.js';

export function renderPolicy() {
  const p = state.policy;
  if (!p) return;
  if (document.activeElement !== $('max-age')) {
    $('max-age').value = String(Math.round(p.maxSessionAgeSeconds / 60));
  }
  if (document.activeElement !== $('idle-timeout')) {
    $('idle-timeout').value = p.idleTimeoutSeconds == null ? '' : String(Math.round(p.idleTimeoutSeconds / 60));
  }
  if (document.activeElement !== $('max-per-user')) {
    $('max-per-user').value = p.maxSessionsPerUser == null ? '' : String(p.maxSessionsPerUser);
  }
  $('max-per-user').max = String(p.maxSessionsPerUserCap);
  $('on-limit').value = p.onLimit || 'RefuseNew';
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

export async function loadPolicy() {
  state.policy = await api('/api/v1/policy');
  renderPolicy();
}

export async function submitPolicy(event) {
  event.preventDefault();
  showError('policy-error', '');
  const minutes = Number($('max-age').value);
  const reason = $('policy-reason').value.trim();
  if (!Number.isInteger(minutes) || minutes < 1 || minutes > 1440) {
    showError('policy-error', 'Enter a whole number of minutes between 1 and 1440.');
    $('max-age').focus();
    return;
  }
  // Empty: off (sent as null).
  const idleText = $('idle-timeout').value.trim();
  const idle = idleText === '' ? null : Number(idleText);
  if (idle !== null && (!Number.isInteger(idle) || idle < 1 || idle > minutes)) {
    showError('policy-error', 'Enter a whole number of minutes for the idle timeout, between 1 and the maximum session age, or leave it empty.');
    $('idle-timeout').focus();
    return;
  }
  const limitText = $('max-per-user').value.trim();
  const limit = limitText === '' ? null : Number(limitText);
  if (limit !== null && (!Number.isInteger(limit) || limit < 1 || limit > 1000)) {
    showError('policy-error', 'Enter a whole number of sessions between 1 and 1000, or leave it empty.');
    $('max-per-user').focus();
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
    const saved = await api('/api/v1/policy', { method: 'PUT', body: {
      maxSessionAgeSeconds: minutes * 60,
      idleTimeoutSeconds: idle === null ? null : idle * 60,
      maxSessionsPerUser: limit,
      onLimit: $('on-limit').value,
      reason,
    } });
    // A change that arrived live meanwhile is newer than this answer.
    if (state.policyEvents === seen) state.policy = saved;
    $('policy-reason').value = '';
    renderPolicy();
    toast(`Maximum session age set to ${minutes} min${idle === null ? '' : `, idle timeout ${idle} min`}${limit === null ? '' : `, at most ${limit} sessions per user`}.`);
  } catch (err) {
    showError('policy-error', err.message);
  } finally {
    $('policy-save').disabled = false;
  }
}
