// Sign-in: OpenID Connect authorization code + PKCE, entirely in the browser (discovery →
// authorize → token). The access token lives in sessionStorage (this tab only).

import { state } from './state.js';
import { $, showError } from './ui.js';

const TOKEN_KEY = 'grantflow.admin.token';
const PKCE_KEY = 'grantflow.admin.pkce';
const REDIRECT_URI = `${location.origin}/admin/`;

function base64url(bytes) {
  let text = '';
  for (const b of new Uint8Array(bytes)) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

export function randomString(bytes = 32) {
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

async function discovery() {
  const authority = state.config.signIn.authority.replace(/\/+$/, '');
  const res = await fetch(`${authority}/.well-known/openid-configuration`, { cache: 'no-store' });
  if (!res.ok) throw new Error(`the sign-in authority answered ${res.status}`);
  return res.json();
}

/// Starts a sign-in; `signedIn` runs when it finishes without leaving the page (development
/// sign-in).
export async function beginSignIn(signedIn) {
  showError('signin-error', '');
  try {
    if (state.config.devSignIn) {
      const res = await fetch('/dev/token?admin=true&user=admin', { cache: 'no-store' });
      if (!res.ok) throw new Error(`the development issuer answered ${res.status}`);
      const token = (await res.text()).trim();
      saveToken(token, (jwtPayload(token).exp || 0) * 1000);
      await signedIn();
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
export async function completeSignIn() {
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

export function loadToken() {
  const saved = JSON.parse(sessionStorage.getItem(TOKEN_KEY) || 'null');
  if (saved && saved.expiresAt > Date.now() + 10_000) state.token = saved.token;
}

export function signOut(message) {
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
