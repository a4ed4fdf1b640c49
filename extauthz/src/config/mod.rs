//! Configuration: one file (YAML or TOML) plus environment plus flags. Flags win over the
//! environment (clap reads both), which wins over the file, which wins over the defaults.
//! `grantflow-extauthz --help` lists every setting; the file uses the same names with
//! underscores (`max_session_age: 15m`).
//!
//! - [`options`]: every setting as given ([`Options`]), the defaults as named constants,
//!   reading the file and merging the flags over it;
//! - [`resolve`]: from options to the checked [`Settings`];
//! - this module: the command line ([`Cli`]) and the resolved types.
//!
//! The store settings extauthz shares with the operator (`--redis-url`,
//! `--max-session-age`, ...) are `grantflow_runtime::store::StoreArgs`, flattened into
//! [`Options`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use grantflow_core::decision::Limits;
use grantflow_core::store::StoreConfig;
use grantflow_core::token::TokenRules;

pub mod options;
pub mod resolve;
#[cfg(test)]
mod tests;

pub use grantflow_runtime::LogFormat;
pub use grantflow_runtime::store::{DEFAULT_DATA_DIR, StoreArgs, StoreKind};
pub use options::{DEFAULT_ADMIN_ROLE, Options};

#[derive(Debug, Parser)]
#[command(name = "grantflow-extauthz", version, about = "GrantFlow session layer: Envoy ext_authz server and admin HTTP.", long_about = None)]
pub struct Cli {
    /// Without a subcommand the server runs: the ext_authz gRPC API and the admin HTTP side.
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub options: Options,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send one Check request to a running server and print the verdict (a debugging aid).
    Check(crate::check_client::CheckArgs),
}

/// Where the issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Jwks(String),
    Discovery(String),
    /// The built-in development issuer.
    Dev,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub store: StoreConfig,
    pub store_timeout: Duration,
    pub limits: Limits,
    pub keys: KeySource,
    pub token: TokenRules,
    pub jwks_refresh_interval: Duration,
    pub jwks_min_refetch_interval: Duration,
    pub sign_in_url: String,
    /// Whether Check answers carry Envoy dynamic metadata (off by default: it costs Envoy).
    pub dynamic_metadata: bool,
    pub trusted_proxy_hops: usize,
    pub log_format: LogFormat,
    pub admin: AdminSettings,
    /// Back-channel logout and the Shared Signals receiver (both off by default).
    pub signals: SignalSettings,
    pub dev: bool,
}

/// The endpoints that end sessions on a signal from outside.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignalSettings {
    /// The client ids a logout token may be addressed to; empty: back-channel logout is off.
    pub backchannel_audiences: Vec<String>,
    /// The Shared Signals transmitter; `None`: the receiver is off.
    pub ssf: Option<SsfSettings>,
}

/// One Shared Signals transmitter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsfSettings {
    pub issuer: String,
    pub jwks_url: String,
    pub audiences: Vec<String>,
}

/// The admin API's and dashboard's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// The app role (`roles` claim) that makes a caller a tenant administrator.
    pub role: String,
    /// How the dashboard signs administrators in; `None`: not configured.
    pub sign_in: Option<DashboardSignIn>,
}

/// The dashboard's OpenID Connect sign-in (authorization code + PKCE, in the browser).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DashboardSignIn {
    /// The authority (issuer) URL, without a trailing slash.
    pub authority: String,
    /// `scheme://host[:port]` of the authority, for the Content-Security-Policy.
    pub authority_origin: String,
    pub client_id: String,
    pub scope: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid configuration: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// The development issuer's audience and tenant.
pub const DEV_AUDIENCE: &str = "api://grantflow-dev";
pub const DEV_TENANT: &str = "00000000-0000-4000-8000-000000000001";
