//! Faults, end to end through the real Envoy and the real `grantflow-extauthz` binary: the
//! process killed right after a revocation, Redis wiped or restarted without persistence, a
//! Redis failover after a revocation the replica did or did not confirm, and the revoke-all
//! and idempotency rules through the admin API.
//!
//! Every test counts the requests allowed after a revocation was acknowledged (the admin API
//! answered 200): there must be none.
//!
//! One module per fault: [`embedded_store_restart`], [`redis_data_loss`], [`redis_failover`],
//! [`revoke_all`], [`idempotency`]; the stack, the watcher and the admin calls they share are in
//! [`harness`].

mod embedded_store_restart;
mod harness;
mod idempotency;
mod redis_data_loss;
mod redis_failover;
mod revoke_all;
