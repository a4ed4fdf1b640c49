//! # grantflow-core
//!
//! The domain of the GrantFlow session layer, shared by `extauthz` and the operator. It knows
//! no transport (no tonic, axum or kube): binaries translate their inputs into these types.
//!
//! ```text
//! bearer token ──► token::TokenValidator ──► identity::Identity
//!                       │ (jwks::KeySet)            │
//!                                                   ▼
//! session::AccessRequest ──► store::SessionStore::check ──► session::Verdict
//!                            (decision::TenantSessions: policy, marks, tombstones)
//! revocation::Revocation ──► store::SessionStore::revoke ──► audit::AuditRecord
//! ```

#![forbid(unsafe_code)]

pub mod audit;
pub mod clock;
pub mod decision;
pub mod identity;
pub mod jwks;
pub mod listing;
pub mod policy;
pub mod revocation;
pub mod session;
pub mod session_limit;
pub mod signals;
pub mod store;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod text;
pub mod token;
