//! # grantflow-operator
//!
//! The Kubernetes side of the GrantFlow session layer (docs/design.md §5). It turns two custom
//! resources into calls on the same [`SessionStore`](grantflow_core::store::SessionStore)
//! that extauthz reads, so one place (the store) decides what a revocation or a policy does.
//!
//! ```text
//!             ┌──────────── admission (TLS) ────────────┐
//! kubectl ──► API server ──► webhook: records the creator of a Revocation in an annotation
//!                 │ watch
//!                 ▼
//!   leader only (Lease) ─► policy::reconcile     ─► SessionStore::set_policy / clear_policy
//!                        ─► revocation::reconcile ─► SessionStore::revoke (idempotency key = uid)
//!                 │                                     │
//!                 ◄── status (server-side apply), Events ┘
//! ```
//!
//! - [`spec`]: custom resource spec → domain types (the operator re-checks what the schema
//!   checks, since a CRD can be installed without its rules);
//! - [`status`]: conditions, computed in one place, written only when they change;
//! - [`policy`], [`revocation`]: the reconcilers; [`context`]: what they share;
//! - [`webhook`]: the mutating admission webhook, served over [`tls`]; [`admin`]: health and
//!   metrics;
//! - [`leader`]: runs the controllers only while this replica holds the Lease;
//! - [`config`], [`server`]: settings and wiring; `main.rs` only calls them.

#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod context;
pub mod leader;
pub mod metrics;
pub mod policy;
pub mod revocation;
pub mod server;
pub mod spec;
pub mod status;
pub mod tls;
pub mod webhook;

/// The operator's name: field manager of its writes, reporter of its Events.
pub const MANAGER: &str = "grantflow-operator";

/// Waits until `signal` holds `want`; false when its sender is gone first. (Drops the
/// channel's read guard before returning, so callers stay `Send`.)
pub(crate) async fn until(signal: &mut tokio::sync::watch::Receiver<bool>, want: bool) -> bool {
    signal.wait_for(|value| *value == want).await.is_ok()
}
