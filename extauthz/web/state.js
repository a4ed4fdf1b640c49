// The dashboard's state: what it shows and where it is, shared by every view.

export const PAGE = 500;
export const MAX_PAGES = 40;

export const state = {
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

/// Now, on the server's clock (ages and "last seen" are relative to it).
export const serverNow = () => Date.now() - state.skewMs;
