// At a glance: live sessions now, and over the last hour the sessions started and the
// requests refused per minute by reason (GET /api/v1/overview), drawn as plain SVG bars.
// Colours come from classes in app.css (the CSP allows no inline style).

import { api } from './api.js';
import { state } from './state.js';
import { $ } from './ui.js';

const SVG = 'http://www.w3.org/2000/svg';
/// The chart has one bar a minute: re-read once a minute, and shortly after sessions start or
/// end (events), at most once per SOON_MS.
const REFRESH_MS = 60_000;
const SOON_MS = 3_000;
const LABELS = {
  expired: 'Expired',
  revoked: 'Revoked',
  locked: 'Locked',
  signInAgain: 'Sign in again',
  tooManySessions: 'Too many sessions',
  invalidToken: 'Invalid token',
  unavailable: 'Store unavailable',
};
const WIDTH = 600;
const HEIGHT = 80;
const TOP = 12;

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

/// Stacked bars: one per minute, one segment per series; a scale label at the top.
function drawBars(target, minutes, series) {
  const desc = target.querySelector('desc');
  const max = Math.max(1, ...minutes.map((m) => series.reduce((n, key) => n + m[key], 0)));
  const step = WIDTH / minutes.length;
  const nodes = [svg('line', { class: 'axis', x1: 0, y1: HEIGHT - 0.5, x2: WIDTH, y2: HEIGHT - 0.5 })];
  minutes.forEach((m, i) => {
    let y = HEIGHT;
    for (const key of series) {
      if (!m[key]) continue;
      const h = ((HEIGHT - TOP) * m[key]) / max;
      y -= h;
      const bar = svg('rect', { class: `bar-${key}`, x: (i * step + 1).toFixed(1), y: y.toFixed(1), width: Math.max(1, step - 2).toFixed(1), height: h.toFixed(1) });
      bar.append(svg('title', {}, `${new Date(m.start).toLocaleTimeString()}: ${m[key]} ${LABELS[key] ?? key}`));
      nodes.push(bar);
    }
  });
  nodes.push(svg('text', { x: 2, y: 9 }, `max ${max}/min`));
  target.replaceChildren(desc, ...nodes);
}

function render(overview) {
  const { minutes, reasons } = overview;
  $('overview-live').textContent = overview.liveSessions.toLocaleString('en');
  $('overview').dataset.live = String(overview.liveSessions);
  $('session-count').textContent = String(overview.liveSessions);
  const started = minutes.reduce((n, m) => n + m.started, 0);
  $('overview-started-total').textContent = `(${started.toLocaleString('en')} in all)`;
  $('overview').dataset.started = String(started);
  drawBars($('overview-started'), minutes, ['started']);
  drawBars($('overview-refused'), minutes, reasons);
  $('overview-legend').replaceChildren(...reasons.map((key) => {
    const total = minutes.reduce((n, m) => n + m[key], 0);
    const item = document.createElement('li');
    item.dataset.reason = key;
    item.dataset.total = String(total);
    const swatch = document.createElement('span');
    swatch.className = `swatch bar-${key}`;
    item.append(swatch, `${LABELS[key] ?? key}: ${total.toLocaleString('en')}`);
    return item;
  }));
}

export async function loadOverview() {
  render(await api('/api/v1/overview'));
}

let soon = null;

/// Re-reads the overview a little later (after a session event), once for a burst of them.
export function refreshOverviewSoon() {
  if (soon) return;
  soon = setTimeout(() => {
    soon = null;
    if (state.token && state.me && state.view === 'sessions') loadOverview().catch(() => {});
  }, SOON_MS);
}

export function initOverview() {
  setInterval(() => {
    if (state.token && state.me && state.view === 'sessions') loadOverview().catch(() => {});
  }, REFRESH_MS);
}
