//! The admin API and dashboard, in process (`Router::oneshot`): tokens signed by a test key,
//! a memory store and a clock the test moves. One test binary, a module per subject; the
//! harness and the helpers every module uses are in `support`.

mod access;
mod audit;
mod dashboard;
mod errors;
mod events;
mod idempotency;
mod listing;
mod locks;
mod openapi;
mod overview;
mod rate_limit;
mod sessions;
mod settings;
mod signals;
mod support;
