// Test-only OIDC issuer for GrantFlow's end-to-end tests.
//
// Usage: node tests/issuer/issuer.mjs
//
// Starts an oauth2-mock-server OIDC issuer and a small control API, both on
// 127.0.0.1 with OS-assigned ports, then prints exactly one JSON line:
//   {"issuer":"http://127.0.0.1:P","jwks_uri":"http://127.0.0.1:P/jwks","control":"http://127.0.0.1:Q",
//    "ssf_issuer":"https://ssf.grantflow-e2e.test","ssf_jwks_uri":"http://127.0.0.1:Q/ssf/jwks"}
//
// Control API (JSON in, JSON out):
//   POST /token  {"claims": {...}, "expires_in"?: 3600, "kid"?: "..."|null,
//                 "typ"?: "...", "signer"?: "issuer"|"ssf"}
//                -> 200 {"token": "<RS256 JWT>", "kid": "<signing kid>"}
//                Every claim in `claims` overrides the default payload
//                (iss, iat, exp, nbf included); a claim given as null is
//                removed. `expires_in` sets exp = now + expires_in (may be
//                negative). `kid`, when present, overrides the JWT header kid
//                (a string) or drops it (null); the token is still signed by
//                the current key, so a foreign kid makes it unverifiable.
//                `typ` sets the JWT header `typ` (default "JWT"), e.g.
//                "logout+jwt" or "secevent+jwt". `signer: "ssf"` signs with the
//                Shared Signals transmitter's own key instead (its default `iss`
//                is the transmitter's, see `ssf_issuer` below); `/rotate` does
//                not change that key.
//   GET  /ssf/jwks -> 200 the Shared Signals transmitter's JWKS (public keys).
//   POST /rotate -> 200 {"kid": "<new kid>"}: a fresh RS256 key signs all later
//                tokens and the JWKS holds only that key (old key removed).
//   GET  /health -> 200 {"ok": true}
//   POST /sign-in-as {"claims": {...}} -> 200 {"ok": true}: the identity that
//                later authorization-code sign-ins get (see below); a claim
//                given as null is removed from the default.
//
// Authorization code flow (the dashboard's sign-in): oauth2-mock-server
// approves every /authorize at once; its /token endpoint checks PKCE. The
// access token it issues here is shaped like an Entra ID v2 access token of
// the sign-in identity: iss https://login.microsoftonline.com/<tid>/v2.0,
// aud = the requested scope's resource (`api://x/.default` -> `api://x`),
// tid, oid, sid (fresh per sign-in), auth_time, preferred_username, name,
// roles, scp. The default identity is an administrator of tenant
// 72f988bf-86f1-41af-91ab-2d7cd011db47 (the e2e tests' tenant) with the
// GrantFlow.SessionAdmin app role. The ID token carries the same identity
// with aud = client_id.
//
// Exits on SIGTERM/SIGINT and when stdin closes, so a dead harness never
// leaves it running: spawn it with a piped stdin and hold the pipe open.
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import { JWKStore, OAuth2Issuer, OAuth2Server } from 'oauth2-mock-server';

const HOST = '127.0.0.1';
const ALG = 'RS256';

const server = new OAuth2Server();
let currentKid;

// The Shared Signals transmitter: a second issuer with its own key, whose JWKS the control
// API serves at /ssf/jwks.
const SSF_ISSUER = 'https://ssf.grantflow-e2e.test';
const ssf = new OAuth2Issuer();
ssf.url = SSF_ISSUER;
const ssfKid = (await ssf.keys.generate(ALG)).kid;

// oauth2-mock-server's JWKStore has no way to delete a key, and with several
// keys it signs round-robin. Rotation therefore swaps in a brand-new store
// holding only the new key: `issuer.keys` is a prototype getter used by both
// buildToken() and the /jwks handler, so an own property shadows it.
async function installFreshKey() {
  const store = new JWKStore();
  const jwk = await store.generate(ALG);
  Object.defineProperty(server.issuer, 'keys', {
    value: store,
    configurable: true,
    enumerable: false,
    writable: false,
  });
  currentKid = jwk.kid;
  return currentKid;
}

async function mintToken(body) {
  const claims = body.claims ?? {};
  if (claims === null || typeof claims !== 'object' || Array.isArray(claims)) {
    throw new BadRequest('"claims" must be an object');
  }
  const expiresIn = body.expires_in ?? 3600;
  if (typeof expiresIn !== 'number' || !Number.isFinite(expiresIn)) {
    throw new BadRequest('"expires_in" must be a number');
  }
  const hasKidOverride = Object.prototype.hasOwnProperty.call(body, 'kid');
  if (hasKidOverride && body.kid !== null && typeof body.kid !== 'string') {
    throw new BadRequest('"kid" must be a string or null');
  }
  if (body.typ !== undefined && typeof body.typ !== 'string') {
    throw new BadRequest('"typ" must be a string');
  }
  const signer = body.signer ?? 'issuer';
  if (signer !== 'issuer' && signer !== 'ssf') {
    throw new BadRequest('"signer" must be "issuer" or "ssf"');
  }
  const [issuer, kid] = signer === 'ssf' ? [ssf, ssfKid] : [server.issuer, currentKid];
  let headerKid;
  const token = await issuer.buildToken({
    kid,
    expiresIn,
    scopesOrTransform: (header, payload) => {
      for (const [name, value] of Object.entries(claims)) {
        if (value === null) delete payload[name];
        else payload[name] = value;
      }
      if (hasKidOverride) {
        if (body.kid === null) delete header.kid;
        else header.kid = body.kid;
      }
      if (body.typ !== undefined) header.typ = body.typ;
      headerKid = header.kid;
    },
  });
  return { token, kid: headerKid ?? null };
}

// The identity authorization-code sign-ins get (POST /sign-in-as changes it).
let signInAs = {
  tid: '72f988bf-86f1-41af-91ab-2d7cd011db47',
  oid: 'admin-oid-0001',
  preferred_username: 'ada.admin@contoso.test',
  name: 'Ada Admin',
  roles: ['GrantFlow.SessionAdmin'],
};

// The session id of each sign-in, by authorization code.
const sidByCode = new Map();

// Claims that belong in the access token only.
const ACCESS_ONLY = new Set(['aud', 'roles', 'scp']);

server.service.on('beforeTokenSigning', (token, req) => {
  const grant = req?.body?.grant_type;
  if (grant !== 'authorization_code' && grant !== 'refresh_token') return;
  const payload = token.payload;
  const now = Math.floor(Date.now() / 1000);
  const identity = { ...signInAs };
  const tid = identity.tid;
  const isAccessToken = Object.prototype.hasOwnProperty.call(payload, 'scope');
  const base = {
    iss: `https://login.microsoftonline.com/${tid}/v2.0`,
    sub: identity.oid,
    auth_time: now,
    ver: '2.0',
  };
  if (isAccessToken) {
    const scopes = String(payload.scope ?? '').split(/\s+/).filter(Boolean);
    // Entra: `api://x/.default` or `api://x/Some.Scope` is a token for `api://x`.
    const resource = scopes.find((s) => s.includes('://'));
    if (resource && identity.aud === undefined) {
      const path = resource.indexOf('/', resource.indexOf('://') + 3);
      identity.aud = path < 0 ? resource : resource.slice(0, path);
    }
    identity.scp = scopes.filter((s) => !['openid', 'profile', 'email', 'offline_access'].includes(s)).map((s) => s.split('/').pop()).join(' ');
    delete payload.scope;
  }
  // One session per sign-in (per authorization code): both tokens share its sid.
  const code = req?.body?.code ?? 'refresh';
  if (!sidByCode.has(code)) sidByCode.set(code, randomUUID());
  base.sid = sidByCode.get(code);
  for (const [name, value] of Object.entries({ ...base, ...identity })) {
    if (!isAccessToken && ACCESS_ONLY.has(name)) continue;
    if (value === null || value === undefined) delete payload[name];
    else payload[name] = value;
  }
});

class BadRequest extends Error {}

function readJson(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('error', reject);
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8').trim();
      if (text === '') return resolve({});
      try {
        const value = JSON.parse(text);
        if (value === null || typeof value !== 'object' || Array.isArray(value)) {
          reject(new BadRequest('body must be a JSON object'));
        } else {
          resolve(value);
        }
      } catch {
        reject(new BadRequest('malformed JSON body'));
      }
    });
  });
}

function send(res, status, body) {
  const data = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(data),
    'cache-control': 'no-store',
  });
  res.end(data);
}

const control = createServer(async (req, res) => {
  try {
    const path = new URL(req.url, 'http://x').pathname;
    if (req.method === 'POST' && path === '/token') {
      send(res, 200, await mintToken(await readJson(req)));
    } else if (req.method === 'POST' && path === '/rotate') {
      await readJson(req);
      send(res, 200, { kid: await installFreshKey() });
    } else if (req.method === 'POST' && path === '/sign-in-as') {
      const body = await readJson(req);
      const claims = body.claims;
      if (claims === null || typeof claims !== 'object' || Array.isArray(claims)) {
        throw new BadRequest('"claims" must be an object');
      }
      signInAs = { ...signInAs, ...claims };
      send(res, 200, { ok: true });
    } else if (req.method === 'GET' && path === '/ssf/jwks') {
      send(res, 200, { keys: ssf.keys.toJSON() });
    } else if (req.method === 'GET' && path === '/health') {
      send(res, 200, { ok: true });
    } else {
      send(res, 404, { error: 'not found' });
    }
  } catch (err) {
    const status = err instanceof BadRequest ? 400 : 500;
    send(res, status, { error: String(err?.message ?? err) });
  }
});

let shuttingDown = false;
async function shutdown(code) {
  if (shuttingDown) return;
  shuttingDown = true;
  const timer = setTimeout(() => process.exit(code), 2000);
  timer.unref();
  control.closeAllConnections?.();
  await Promise.allSettled([
    server.listening ? server.stop() : Promise.resolve(),
    new Promise((resolve) => (control.listening ? control.close(resolve) : resolve())),
  ]);
  process.exit(code);
}

process.on('SIGTERM', () => shutdown(0));
process.on('SIGINT', () => shutdown(0));
process.on('SIGHUP', () => shutdown(0));
// The harness must spawn this with a piped stdin and keep it open (in Rust:
// `.stdin(Stdio::piped())`); an inherited or null stdin ends at once.
let stdinClosed = false;
const onStdinClosed = () => {
  if (stdinClosed) return;
  stdinClosed = true;
  if (!shuttingDown) console.error('issuer: stdin closed, exiting');
  shutdown(0);
};
process.stdin.on('end', onStdinClosed);
process.stdin.on('close', onStdinClosed);
process.stdin.on('error', onStdinClosed);
process.stdin.resume();

try {
  await installFreshKey();
  await server.start(0, HOST);
  // The library would advertise http://localhost:P for 127.0.0.1; pin the
  // issuer (and so the discovery document's URLs) to the literal address.
  const issuer = `http://${HOST}:${server.address().port}`;
  server.issuer.url = issuer;
  await new Promise((resolve, reject) => {
    control.once('error', reject);
    control.listen(0, HOST, resolve);
  });
  const line = {
    issuer,
    jwks_uri: `${issuer}/jwks`,
    control: `http://${HOST}:${control.address().port}`,
    ssf_issuer: SSF_ISSUER,
    ssf_jwks_uri: `http://${HOST}:${control.address().port}/ssf/jwks`,
  };
  process.stdout.write(`${JSON.stringify(line)}\n`);
} catch (err) {
  console.error('issuer failed to start:', err);
  await shutdown(1);
}
