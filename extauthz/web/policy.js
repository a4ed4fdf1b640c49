// The Settings view: the tenant's maximum session age.

import { api } from './api.js';
import { state } from './state.js';
import { $, el, showError, toast } from './ui.js';

export function renderPolicy() {
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
