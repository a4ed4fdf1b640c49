// Page helpers: elements (text only: nothing from the API is ever parsed as HTML), times and
// durations as shown, toasts and form errors.

import { serverNow } from './state.js';

export const $ = (id) => document.getElementById(id);

export function el(tag, props = {}, ...children) {
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

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
const timeOnly = new Intl.DateTimeFormat(undefined, { timeStyle: 'medium' });

export function formatTime(iso) {
  if (!iso) return '—';
  const at = new Date(iso);
  const today = new Date().toDateString() === at.toDateString();
  return today ? timeOnly.format(at) : dateTime.format(at);
}

export function formatDuration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  const h = Math.floor(m / 60);
  return `${h} h ${m % 60} min`;
}


export function ago(iso) {
  const ms = serverNow() - new Date(iso).getTime();
  return ms < 5000 ? 'just now' : `${formatDuration(ms)} ago`;
}

export function toast(message, kind = 'info') {
  const node = el('div', { class: `toast${kind === 'error' ? ' toast-error' : ''}`, text: message });
  $('toasts').append(node);
  setTimeout(() => node.remove(), 6000);
}

export function showError(id, message) {
  const node = $(id);
  node.textContent = message || '';
  node.hidden = !message;
}
