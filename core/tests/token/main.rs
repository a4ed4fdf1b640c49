//! Bearer token validation (docs/design.md §3 and its "Failure"): signature by the issuer's JWKS,
//! the accepted algorithms, issuer / audience / expiry / tenant rules, the claims an identity is
//! made of, key rotation and the verified-token cache.
//!
//! Every refusal asserts the exact [`TokenError`] variant. Keys are real RSA-2048 keys generated
//! once per test binary; time is a [`ManualClock`].
//!
//! One module per subject: [`valid_tokens`], [`signatures`], [`keys`], [`time`],
//! [`issuer_and_tenant`], [`user_and_session_claims`], [`garbage_and_size`], and the signals that
//! end sessions ([`signals`]: back-channel logout tokens, CAEP Security Event Tokens); the keys, claims and
//! validator they share are in [`harness`].

mod garbage_and_size;
mod harness;
mod issuer_and_tenant;
mod keys;
mod signals;
mod signatures;
mod time;
mod user_and_session_claims;
mod valid_tokens;
