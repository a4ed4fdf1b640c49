//! # grantflow-runtime
//!
//! The wiring `grantflow-extauthz` and `grantflow-operator` share, so it is written once (as
//! linkerd keeps `policy-controller/runtime`):
//!
//! - [`logging`]: the log format flag and the tracing subscriber;
//! - [`shutdown`]: the Ctrl-C/SIGTERM signal both binaries stop on;
//! - [`store`]: the store flags (`--redis-url`, `--max-session-age`, ...) both binaries
//!   flatten into their options, mapped to core's `StoreConfig` and `Limits`;
//! - [`listen`]: binding a listener with an error that names the address;
//! - [`help`]: help text that shows a default taken from its constant.
//!
//! It depends on core, clap, tokio and tracing-subscriber only: no tonic, axum or kube.

#![forbid(unsafe_code)]

pub mod help;
pub mod listen;
pub mod logging;
pub mod shutdown;
pub mod store;

pub use listen::{BindError, bind};
pub use logging::{LogFormat, init_tracing};
pub use shutdown::shutdown_signal;
