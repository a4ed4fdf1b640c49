// The Audit view: the tenant's audit trail, filtered and paged.

import { api } from './api.js';
import { state } from './state.js';
import { $, el, formatTime } from './ui.js';

const ACTIONS = {
  'session.revoke': ['Session ended', 'badge-danger'],
  'user.revoke': ['All sessions ended', 'badge-danger'],
  'user.lock': ['User locked', 'badge-danger'],
  'user.unblock': ['Block lifted', 'badge-accent'],
  'policy.update': ['Policy changed', 'badge-accent'],
  'store.reset': ['Store data lost', 'badge-warn'],
  'session.refuse': ['New session refused', 'badge-warn'],
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

export async function loadAudit(append = false) {
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
