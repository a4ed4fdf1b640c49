// Calls of the admin API, with the access token in the Authorization header; there are no
// cookies, so there is nothing to forge (no CSRF). A 401 signs the administrator out.

import { state } from './state.js';
import { signOut } from './signin.js';

class ApiError extends Error {
  constructor(status, title, detail) {
    super(detail || title || `HTTP ${status}`);
    this.status = status;
    this.title = title;
  }
}

export function authHeaders(extra = {}) {
  return { Authorization: `Bearer ${state.token}`, 'X-GrantFlow-Client': 'dashboard', ...extra };
}

export async function api(path, { method = 'GET', body, headers: extra = {} } = {}) {
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
