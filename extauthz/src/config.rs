//! Configuration: one file (YAML or TOML) plus environment plus flags. Flags win over the
//! environment (clap reads both), which wins over the file, which wins over the defaults.
//! `grantflow-extauthz --help` lists every setting; the file uses the same names with
//! underscores (`max_session_age: 15m`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use grantflow_core::decision::Limits;
use grantflow_core::policy::{DEFAULT_MAX_SESSION_AGE, check_max_age};
use grantflow_core::store::{RedisSettings, StoreConfig};
use grantflow_core::token::{ENTRA_ISSUERS, TokenRules};
use serde::Deserialize;

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

/// The embedded store's data folder when none is given (relative to the working directory).
pub const DEFAULT_DATA_DIR: &str = "grantflow-data";

/// Which session store to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// In this process, written to the data folder (data_dir); one replica; survives
    /// restarts and crashes.
    Embedded,
    /// In this process only; nothing survives a restart, so a restarted process refuses every
    /// token issued before it started. For tests and throwaway trials.
    Memory,
    /// Redis, standalone or Cluster (see redis_url, redis_cluster); for many replicas.
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Every setting, each optional here; [`Settings`] fills in the defaults.
#[derive(Debug, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Configuration file (YAML, or TOML when it ends in `.toml`).
    #[arg(long, env = "GRANTFLOW_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Address of the ext_authz gRPC API and gRPC health service [default: 127.0.0.1:9001].
    #[arg(long, env = "GRANTFLOW_GRPC_ADDR", value_name = "ADDR")]
    pub grpc_addr: Option<SocketAddr>,

    /// Address of the admin HTTP side: /healthz, /readyz, /metrics, the dashboard (/admin/)
    /// and its API (/api/v1/) [default: 127.0.0.1:8080].
    #[arg(long, env = "GRANTFLOW_ADMIN_ADDR", value_name = "ADDR")]
    pub admin_addr: Option<SocketAddr>,

    /// Session store [default: embedded].
    #[arg(long, env = "GRANTFLOW_STORE", value_enum)]
    pub store: Option<StoreKind>,

    /// Data folder of the embedded store (created when missing; one process per folder)
    /// [default: grantflow-data, in the working directory].
    #[arg(long, env = "GRANTFLOW_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Redis URL(s), comma separated: `redis://[user:password@]host:port[/db]` or `rediss://`
    /// (one for standalone; the seed nodes of a cluster). Keep credentials in the environment.
    #[arg(
        long,
        env = "GRANTFLOW_REDIS_URL",
        value_delimiter = ',',
        value_name = "URL",
        hide_env_values = true
    )]
    pub redis_url: Option<Vec<String>>,

    /// The Redis URLs are Redis Cluster nodes [default: false].
    #[arg(long, env = "GRANTFLOW_REDIS_CLUSTER", value_name = "BOOL")]
    pub redis_cluster: Option<bool>,

    /// PEM file of the CA certificate(s) that sign the Redis servers' certificates (a private
    /// CA); replaces the system's root certificates. Only with `rediss://` URLs
    /// [default: the system's roots].
    #[arg(long, env = "GRANTFLOW_REDIS_CA_FILE", value_name = "FILE")]
    pub redis_ca_file: Option<PathBuf>,

    /// Redis replicas that must acknowledge each revocation and policy change (`WAIT`)
    /// before it is reported done; 0 trusts the primary alone. Past half of
    /// store_write_timeout the change is reported failed (it is in effect on the primary)
    /// [default: 0].
    #[arg(long, env = "GRANTFLOW_REDIS_WAIT_REPLICAS", value_name = "N")]
    pub redis_wait_replicas: Option<u32>,

    /// Deadline of store writes an administrator waits for (revocations, policy changes)
    /// [default: 2s].
    #[arg(long, env = "GRANTFLOW_STORE_WRITE_TIMEOUT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub store_write_timeout: Option<Duration>,

    /// Deadline of every store call; past it the request is refused with 503 [default: 50ms].
    #[arg(long, env = "GRANTFLOW_STORE_TIMEOUT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub store_timeout: Option<Duration>,

    /// Maximum session age of tenants without a SessionPolicy, 1m..24h [default: 15m].
    #[arg(long, env = "GRANTFLOW_MAX_SESSION_AGE", value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub max_session_age: Option<Duration>,

    /// How long expired and revoked sessions (tombstones) are remembered [default: 24h]. Must
    /// exceed the lifetime of the issuer's tokens.
    #[arg(long, env = "GRANTFLOW_RETENTION", value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub retention: Option<Duration>,

    /// How long a revoke-all of a user keeps refusing that user's tokens that cannot prove a
    /// sign-in after it (no `auth_time`, or an older one), unless an administrator lifts it
    /// [default: 90d, the inactivity lifetime of an Entra refresh token].
    #[arg(long, env = "GRANTFLOW_WATERMARK_RETENTION", value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub watermark_retention: Option<Duration>,

    /// How long audit records are kept in the store (the dashboard's and API's audit trail),
    /// at least 1d [default: 90d]. The JSON audit log line is the durable copy.
    #[arg(long, env = "GRANTFLOW_AUDIT_RETENTION", value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub audit_retention: Option<Duration>,

    /// URL of the issuer's JWKS document.
    #[arg(
        long,
        env = "GRANTFLOW_JWKS_URL",
        value_name = "URL",
        conflicts_with = "oidc_discovery_url"
    )]
    pub jwks_url: Option<String>,

    /// URL of the issuer's OpenID Connect discovery document; its `jwks_uri` is used
    /// (e.g. https://login.microsoftonline.com/common/v2.0/.well-known/openid-configuration).
    #[arg(long, env = "GRANTFLOW_OIDC_DISCOVERY_URL", value_name = "URL")]
    pub oidc_discovery_url: Option<String>,

    /// Accepted token issuers, comma separated; `{tenantid}` stands for the token's tenant,
    /// which must then be a GUID [default: the Entra ID v1 and v2 issuers].
    #[arg(
        long,
        env = "GRANTFLOW_ISSUERS",
        value_delimiter = ',',
        value_name = "ISSUER"
    )]
    pub issuers: Option<Vec<String>>,

    /// Accepted token audiences, comma separated (required).
    #[arg(
        long,
        env = "GRANTFLOW_AUDIENCES",
        value_delimiter = ',',
        value_name = "AUDIENCE"
    )]
    pub audiences: Option<Vec<String>>,

    /// Only accept these tenants, comma separated [default: every tenant].
    #[arg(
        long,
        env = "GRANTFLOW_ALLOWED_TENANTS",
        value_delimiter = ',',
        value_name = "TENANT"
    )]
    pub allowed_tenants: Option<Vec<String>>,

    /// The claim that names the tenant [default: tid].
    #[arg(long, env = "GRANTFLOW_TENANT_CLAIM", value_name = "CLAIM")]
    pub tenant_claim: Option<String>,

    /// Clock skew allowed on token `exp` and `nbf` [default: 60s].
    #[arg(long, env = "GRANTFLOW_TOKEN_LEEWAY", value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub token_leeway: Option<Duration>,

    /// Refuse tokens without a `sid` claim (without it every access token is its own
    /// session, so a silent refresh starts a new one) [default: false].
    #[arg(long, env = "GRANTFLOW_REQUIRE_SID", value_name = "BOOL")]
    pub require_sid: Option<bool>,

    /// How often the JWKS is refreshed in the background [default: 1h].
    #[arg(long, env = "GRANTFLOW_JWKS_REFRESH_INTERVAL", value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub jwks_refresh_interval: Option<Duration>,

    /// Least time between two JWKS fetches caused by unknown key ids [default: 30s].
    #[arg(long, env = "GRANTFLOW_JWKS_MIN_REFETCH_INTERVAL", value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub jwks_min_refetch_interval: Option<Duration>,

    /// Where the "Sign in again" link of the refusal pages points [default: /].
    #[arg(long, env = "GRANTFLOW_SIGN_IN_URL", value_name = "URL")]
    pub sign_in_url: Option<String>,

    /// Number of trusted proxies in front of Envoy that append to `x-forwarded-for`; 0 uses
    /// the peer address Envoy reports [default: 0].
    #[arg(long, env = "GRANTFLOW_TRUSTED_PROXY_HOPS", value_name = "N")]
    pub trusted_proxy_hops: Option<usize>,

    /// Log format [default: text].
    #[arg(long, env = "GRANTFLOW_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// The app role a token must carry to use the admin API and dashboard
    /// [default: GrantFlow.SessionAdmin].
    #[arg(long, env = "GRANTFLOW_ADMIN_ROLE", value_name = "ROLE")]
    pub admin_role: Option<String>,

    /// OpenID Connect authority the dashboard signs administrators in with (authorization
    /// code + PKCE in the browser); its discovery document is
    /// `<authority>/.well-known/openid-configuration`
    /// (e.g. https://login.microsoftonline.com/organizations/v2.0).
    #[arg(long, env = "GRANTFLOW_ADMIN_OIDC_AUTHORITY", value_name = "URL")]
    pub admin_oidc_authority: Option<String>,

    /// Client (application) id of the dashboard's app registration (a single-page app whose
    /// redirect URI is `<admin URL>/admin/`). Required with admin_oidc_authority.
    #[arg(long, env = "GRANTFLOW_ADMIN_CLIENT_ID", value_name = "ID")]
    pub admin_client_id: Option<String>,

    /// Scopes the dashboard asks for; the access token must be for an accepted audience
    /// [default: `openid profile <first audience>/.default`].
    #[arg(long, env = "GRANTFLOW_ADMIN_SCOPE", value_name = "SCOPES")]
    pub admin_scope: Option<String>,

    /// Development mode: a built-in issuer signs tokens with a key made at start-up and
    /// serves them at the admin address (GET /dev/token). Never use in production.
    #[arg(long, env = "GRANTFLOW_DEV", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub dev: Option<bool>,
}

macro_rules! take_unset {
    ($into:ident, $from:ident, $($field:ident),+ $(,)?) => {
        $( if $into.$field.is_none() { $into.$field = $from.$field.take(); } )+
    };
}

impl Options {
    /// Fills every setting not given here from `file`.
    fn or(mut self, mut file: Options) -> Options {
        take_unset!(
            self,
            file,
            grpc_addr,
            admin_addr,
            store,
            data_dir,
            redis_url,
            redis_cluster,
            redis_ca_file,
            redis_wait_replicas,
            store_write_timeout,
            store_timeout,
            max_session_age,
            retention,
            watermark_retention,
            audit_retention,
            jwks_url,
            oidc_discovery_url,
            issuers,
            audiences,
            allowed_tenants,
            tenant_claim,
            token_leeway,
            require_sid,
            jwks_refresh_interval,
            jwks_min_refetch_interval,
            sign_in_url,
            trusted_proxy_hops,
            log_format,
            admin_role,
            admin_oidc_authority,
            admin_client_id,
            admin_scope,
            dev,
        );
        self
    }
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
    pub trusted_proxy_hops: usize,
    pub log_format: LogFormat,
    pub admin: AdminSettings,
    pub dev: bool,
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

/// The default admin app role.
pub const DEFAULT_ADMIN_ROLE: &str = "GrantFlow.SessionAdmin";

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

impl Settings {
    /// Resolves flags and environment (`cli`) over the file they name over the defaults.
    pub fn resolve(cli: Options) -> Result<Self, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => Options::default(),
        };
        Self::from_options(cli.or(file))
    }

    pub fn from_options(o: Options) -> Result<Self, ConfigError> {
        let dev = o.dev.unwrap_or(false);
        let keys = match (o.jwks_url, o.oidc_discovery_url, dev) {
            (Some(url), None, _) => KeySource::Jwks(url),
            (None, Some(url), _) => KeySource::Discovery(url),
            (None, None, true) => KeySource::Dev,
            (Some(_), Some(_), _) => {
                return Err(ConfigError::Invalid(
                    "set either jwks_url or oidc_discovery_url, not both".into(),
                ));
            }
            (None, None, false) => {
                return Err(ConfigError::Invalid(
                    "no token issuer keys: set jwks_url or oidc_discovery_url (or run with --dev \
                     to try GrantFlow with a built-in development issuer)"
                        .into(),
                ));
            }
        };
        match &keys {
            KeySource::Jwks(url) => check_key_url("jwks_url", url, dev)?,
            KeySource::Discovery(url) => check_key_url("oidc_discovery_url", url, dev)?,
            KeySource::Dev => {}
        }
        let grpc_addr = o.grpc_addr.unwrap_or(([127, 0, 0, 1], 9001).into());
        let admin_addr = o.admin_addr.unwrap_or(([127, 0, 0, 1], 8080).into());
        if dev {
            for (name, addr) in [("grpc_addr", grpc_addr), ("admin_addr", admin_addr)] {
                if !addr.ip().is_loopback() {
                    return Err(ConfigError::Invalid(format!(
                        "development mode listens on loopback addresses only (it hands out \
                         tokens at /dev/token): {name} {addr} is not one; use 127.0.0.1 or \
                         [::1], or run without --dev"
                    )));
                }
            }
        }
        let mut audiences = o.audiences.unwrap_or_default();
        audiences.retain(|a| !a.trim().is_empty());
        if audiences.is_empty() {
            if keys == KeySource::Dev {
                audiences.push(DEV_AUDIENCE.into());
            } else {
                return Err(ConfigError::Invalid(
                    "set at least one accepted token audience (audiences)".into(),
                ));
            }
        }
        let max_session_age = o.max_session_age.unwrap_or(DEFAULT_MAX_SESSION_AGE);
        check_max_age(max_session_age)
            .map_err(|e| ConfigError::Invalid(format!("max_session_age: {e}")))?;
        let retention = o.retention.unwrap_or(Duration::from_secs(24 * 60 * 60));
        if retention < max_session_age {
            return Err(ConfigError::Invalid(
                "retention must be at least the maximum session age".into(),
            ));
        }
        let mut token = TokenRules::entra(audiences);
        token.issuers = o
            .issuers
            .unwrap_or_else(|| ENTRA_ISSUERS.iter().map(|s| s.to_string()).collect());
        token.allowed_tenants = o.allowed_tenants.unwrap_or_default();
        token.tenant_claim = o.tenant_claim.unwrap_or_else(|| "tid".into());
        token.leeway = o.token_leeway.unwrap_or(Duration::from_secs(60));
        token.require_sid = o.require_sid.unwrap_or(false);
        if token.issuers.is_empty() {
            return Err(ConfigError::Invalid(
                "set at least one accepted issuer".into(),
            ));
        }
        let store_timeout = o.store_timeout.unwrap_or(Duration::from_millis(50));
        if store_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "store_timeout must be more than zero".into(),
            ));
        }
        let store_write_timeout = o.store_write_timeout.unwrap_or(Duration::from_secs(2));
        let watermark_retention = o
            .watermark_retention
            .unwrap_or(grantflow_core::decision::DEFAULT_WATERMARK_RETENTION);
        if watermark_retention < Duration::from_secs(60 * 60) {
            return Err(ConfigError::Invalid(
                "watermark_retention must be at least 1h (it must outlive the tokens issued before a revoke-all)".into(),
            ));
        }
        let audit_retention = o
            .audit_retention
            .unwrap_or(grantflow_core::decision::DEFAULT_AUDIT_RETENTION);
        if audit_retention < Duration::from_secs(24 * 60 * 60) {
            return Err(ConfigError::Invalid(
                "audit_retention must be at least 1d".into(),
            ));
        }
        let store = match (o.store.unwrap_or(StoreKind::Embedded), o.redis_url) {
            (StoreKind::Embedded, _) => StoreConfig::Embedded {
                data_dir: o
                    .data_dir
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            },
            (StoreKind::Memory, _) => StoreConfig::Memory,
            (StoreKind::Redis, Some(urls)) if !urls.is_empty() => {
                let redis = RedisSettings {
                    urls,
                    cluster: o.redis_cluster.unwrap_or(false),
                    timeout: store_timeout,
                    write_timeout: store_write_timeout.max(store_timeout),
                    ca_pem: None,
                    wait_replicas: o.redis_wait_replicas.unwrap_or(0),
                };
                StoreConfig::Redis(match &o.redis_ca_file {
                    Some(path) => redis.trust_ca_file(path).map_err(ConfigError::Invalid)?,
                    None => redis,
                })
            }
            (StoreKind::Redis, _) => {
                return Err(ConfigError::Invalid("store redis needs redis_url".into()));
            }
        };
        let admin = admin_settings(
            o.admin_role,
            o.admin_oidc_authority,
            o.admin_client_id,
            o.admin_scope,
            &token.audiences[0],
        )?;
        Ok(Self {
            grpc_addr,
            admin_addr,
            store,
            store_timeout,
            limits: Limits {
                default_max_age: max_session_age,
                retention,
                watermark_retention,
                audit_retention,
            },
            keys,
            token,
            jwks_refresh_interval: o.jwks_refresh_interval.unwrap_or(Duration::from_secs(3600)),
            jwks_min_refetch_interval: o
                .jwks_min_refetch_interval
                .unwrap_or(Duration::from_secs(30)),
            sign_in_url: o.sign_in_url.unwrap_or_else(|| "/".into()),
            trusted_proxy_hops: o.trusted_proxy_hops.unwrap_or(0),
            log_format: o.log_format.unwrap_or(LogFormat::Text),
            admin,
            dev,
        })
    }
}

/// The issuer's keys come over `https://`, or plain `http://` from a loopback host or in
/// development mode.
fn check_key_url(name: &str, url: &str, dev: bool) -> Result<(), ConfigError> {
    grantflow_core::jwks::check_url(url, dev)
        .map(drop)
        .map_err(|reason| ConfigError::Invalid(format!("{name}: {reason}")))
}

fn admin_settings(
    role: Option<String>,
    authority: Option<String>,
    client_id: Option<String>,
    scope: Option<String>,
    first_audience: &str,
) -> Result<AdminSettings, ConfigError> {
    let role = role.unwrap_or_else(|| DEFAULT_ADMIN_ROLE.into());
    if role.trim().is_empty() {
        return Err(ConfigError::Invalid("admin_role must not be empty".into()));
    }
    let sign_in = match (authority, client_id) {
        (None, None) => None,
        (Some(_), None) | (None, Some(_)) => {
            return Err(ConfigError::Invalid(
                "set both admin_oidc_authority and admin_client_id for the dashboard sign-in"
                    .into(),
            ));
        }
        (Some(authority), Some(client_id)) => {
            let authority = authority.trim_end_matches('/').to_owned();
            let authority_origin = origin(&authority).ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "admin_oidc_authority must be an http(s) URL, not `{authority}`"
                ))
            })?;
            if client_id.trim().is_empty() || client_id.chars().any(char::is_control) {
                return Err(ConfigError::Invalid(
                    "admin_client_id must not be empty".into(),
                ));
            }
            let scope = scope.unwrap_or_else(|| {
                format!(
                    "openid profile {}/.default",
                    first_audience.trim_end_matches('/')
                )
            });
            Some(DashboardSignIn {
                authority,
                authority_origin,
                client_id,
                scope,
            })
        }
    };
    Ok(AdminSettings { role, sign_in })
}

/// `scheme://host[:port]` of an http(s) URL whose host part is plain (letters, digits, `.`,
/// `-`, `:`, `[`, `]`), so it is safe inside a Content-Security-Policy header.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if !matches!(scheme, "http" | "https") {
        return None;
    }
    let host = rest.split(['/', '?', '#']).next()?;
    let plain = !host.is_empty()
        && !host.contains('@')
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    plain.then(|| format!("{scheme}://{}", host.to_ascii_lowercase()))
}

fn read_file(path: &Path) -> Result<Options, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let parsed = if path.extension().is_some_and(|e| e == "toml") {
        toml::from_str(&text).map_err(|e| e.to_string())
    } else {
        serde_yaml::from_str(&text).map_err(|e| e.to_string())
    };
    parsed.map_err(|message| ConfigError::Parse {
        path: path.to_owned(),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Options {
        let mut all = vec!["grantflow-extauthz"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).expect("valid flags").options
    }

    #[test]
    fn defaults_need_an_issuer_unless_dev() {
        let err = Settings::from_options(Options::default()).unwrap_err();
        assert!(err.to_string().contains("jwks_url"), "{err}");
        let dev = Settings::from_options(parse(&["--dev"])).unwrap();
        assert_eq!(dev.keys, KeySource::Dev);
        assert_eq!(dev.token.audiences, vec![DEV_AUDIENCE.to_string()]);
        assert_eq!(dev.limits.default_max_age, Duration::from_secs(900));
        assert_eq!(dev.store_timeout, Duration::from_millis(50));
        assert_eq!(dev.grpc_addr.port(), 9001);
        assert_eq!(dev.token.issuers.len(), 2);
        assert_eq!(dev.admin.role, DEFAULT_ADMIN_ROLE);
        assert_eq!(dev.admin.sign_in, None);
    }

    #[test]
    fn dashboard_sign_in_settings() {
        let settings = Settings::from_options(parse(&[
            "--dev",
            "--admin-oidc-authority",
            "https://login.microsoftonline.com/organizations/v2.0/",
            "--admin-client-id",
            "11111111-2222-3333-4444-555555555555",
            "--admin-role",
            "Sessions.Admin",
        ]))
        .unwrap();
        assert_eq!(settings.admin.role, "Sessions.Admin");
        let sign_in = settings.admin.sign_in.unwrap();
        assert_eq!(
            sign_in.authority,
            "https://login.microsoftonline.com/organizations/v2.0"
        );
        assert_eq!(
            sign_in.authority_origin,
            "https://login.microsoftonline.com"
        );
        assert_eq!(
            sign_in.scope,
            format!("openid profile {DEV_AUDIENCE}/.default")
        );

        let err = Settings::from_options(parse(&[
            "--dev",
            "--admin-oidc-authority",
            "https://login.example.test",
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("admin_client_id"), "{err}");
        for bad in [
            "ftp://x.test",
            "https://",
            "https://a b.test",
            "https://x;y.test",
        ] {
            let err = Settings::from_options(parse(&[
                "--dev",
                "--admin-oidc-authority",
                bad,
                "--admin-client-id",
                "c",
            ]))
            .unwrap_err();
            assert!(err.to_string().contains("http(s) URL"), "{bad}: {err}");
        }
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = std::env::temp_dir().join(format!("gf-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("extauthz.yaml");
        std::fs::write(
            &file,
            "jwks_url: http://127.0.0.1:1/jwks\naudiences: [api://a, api://b]\nmax_session_age: 5m\nrequire_sid: true\nadmin_role: Ops.Admin\nadmin_scope: openid api://a/Sessions\n",
        )
        .unwrap();
        let cli = parse(&[
            "--config",
            file.to_str().unwrap(),
            "--max-session-age",
            "10m",
        ]);
        let settings = Settings::resolve(cli).unwrap();
        assert_eq!(settings.limits.default_max_age, Duration::from_secs(600));
        assert_eq!(settings.token.audiences, vec!["api://a", "api://b"]);
        assert!(settings.token.require_sid);
        assert_eq!(settings.admin.role, "Ops.Admin");
        assert_eq!(
            settings.keys,
            KeySource::Jwks("http://127.0.0.1:1/jwks".into())
        );
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn redis_store_settings() {
        let cli = parse(&[
            "--dev",
            "--store",
            "redis",
            "--redis-url",
            "redis://127.0.0.1:7000,redis://127.0.0.1:7001",
            "--redis-cluster",
            "true",
            "--store-timeout",
            "20ms",
        ]);
        match Settings::from_options(cli).unwrap().store {
            StoreConfig::Redis(redis) => {
                assert_eq!(redis.urls.len(), 2);
                assert!(redis.cluster);
                assert_eq!(redis.timeout, Duration::from_millis(20));
                assert_eq!(redis.write_timeout, Duration::from_secs(2));
            }
            other => panic!("expected the Redis store, not {other:?}"),
        }
        let err = Settings::from_options(parse(&["--dev", "--store", "redis"])).unwrap_err();
        assert!(err.to_string().contains("redis_url"), "{err}");
        assert_eq!(
            Settings::from_options(parse(&["--dev"])).unwrap().store,
            StoreConfig::Embedded {
                data_dir: DEFAULT_DATA_DIR.into()
            },
            "the embedded store is the default"
        );
        assert_eq!(
            Settings::from_options(parse(&["--dev", "--data-dir", "/var/lib/gf"]))
                .unwrap()
                .store,
            StoreConfig::Embedded {
                data_dir: "/var/lib/gf".into()
            }
        );
        assert_eq!(
            Settings::from_options(parse(&["--dev", "--store", "memory"]))
                .unwrap()
                .store,
            StoreConfig::Memory
        );
    }

    #[test]
    fn redis_over_tls_with_a_private_ca() {
        let dir = std::env::temp_dir().join(format!("gf-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.crt");
        let pem = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUY29udG9zbw==\n-----END CERTIFICATE-----\n";
        std::fs::write(&ca, pem).unwrap();
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "password=hunter2\n").unwrap();
        let ca_arg = ca.to_str().unwrap();
        let with = |url: &str, file: &str| {
            Settings::from_options(parse(&[
                "--dev",
                "--store",
                "redis",
                "--redis-url",
                url,
                "--redis-ca-file",
                file,
            ]))
        };
        match with("rediss://:secret@cache.example:6380", ca_arg)
            .unwrap()
            .store
        {
            StoreConfig::Redis(redis) => assert_eq!(redis.ca_pem.as_deref(), Some(pem.as_bytes())),
            other => panic!("expected the Redis store, not {other:?}"),
        }
        // A CA with a plain-text URL is a mistake; the error never shows the URL (password).
        let err = with("redis://:secret@cache.example:6379", ca_arg)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("rediss://") && !err.contains("secret"),
            "{err}"
        );
        let err = with("rediss://cache.example:6380", "/nonexistent/ca.crt")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/ca.crt"), "{err}");
        let err = with("rediss://cache.example:6380", not_pem.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no PEM certificate") && !err.contains("hunter2"),
            "{err}"
        );
        // Without a CA file, rediss:// trusts the system's roots.
        match Settings::from_options(parse(&[
            "--dev",
            "--store",
            "redis",
            "--redis-url",
            "rediss://cache.example:6380",
        ]))
        .unwrap()
        .store
        {
            StoreConfig::Redis(redis) => assert_eq!(redis.ca_pem, None),
            other => panic!("expected the Redis store, not {other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn development_mode_listens_on_loopback_only() {
        let settings = Settings::from_options(parse(&[
            "--dev",
            "--grpc-addr",
            "[::1]:9001",
            "--admin-addr",
            "127.0.0.2:8080",
        ]))
        .unwrap();
        assert!(settings.dev);
        for (flag, addr, name) in [
            ("--admin-addr", "0.0.0.0:8080", "admin_addr"),
            ("--grpc-addr", "0.0.0.0:9001", "grpc_addr"),
            ("--admin-addr", "[::]:8080", "admin_addr"),
            ("--grpc-addr", "10.1.2.3:9001", "grpc_addr"),
        ] {
            let err = Settings::from_options(parse(&["--dev", flag, addr]))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("loopback addresses only") && err.contains(name),
                "{addr}: {err}"
            );
        }
        // Outside development mode any address may be served.
        let settings = Settings::from_options(parse(&[
            "--jwks-url",
            "https://login.microsoftonline.com/common/discovery/v2.0/keys",
            "--audiences",
            "api://a",
            "--admin-addr",
            "0.0.0.0:8080",
            "--grpc-addr",
            "0.0.0.0:9001",
        ]))
        .unwrap();
        assert!(settings.admin_addr.ip().is_unspecified());
    }

    #[test]
    fn issuer_keys_need_https_outside_loopback_and_development() {
        let with = |args: &[&str]| {
            let mut all = vec!["--audiences", "api://a"];
            all.extend_from_slice(args);
            Settings::from_options(parse(&all))
        };
        let err = with(&["--jwks-url", "http://login.example.test/keys"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("jwks_url") && err.contains("use https://"),
            "{err}"
        );
        let err = with(&[
            "--oidc-discovery-url",
            "http://login.example.test/.well-known/openid-configuration",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("oidc_discovery_url") && err.contains("use https://"),
            "{err}"
        );
        with(&["--jwks-url", "http://127.0.0.1:5556/keys"]).unwrap();
        with(&["--jwks-url", "https://login.example.test/keys"]).unwrap();
        with(&["--dev", "--jwks-url", "http://login.example.test/keys"]).unwrap();
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("gf-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("extauthz.toml");
        std::fs::write(&file, "jwks_url = \"http://x\"\nmax_sesion_age = \"5m\"\n").unwrap();
        let err = Settings::resolve(parse(&["--config", file.to_str().unwrap()])).unwrap_err();
        assert!(err.to_string().contains("max_sesion_age"), "{err}");
        let err =
            Settings::from_options(parse(&["--dev", "--max-session-age", "30s"])).unwrap_err();
        assert!(
            err.to_string().contains("between 1 minute and 24 hours"),
            "{err}"
        );
        assert!(Cli::try_parse_from(["x", "--store-timeout", "fast"]).is_err());
        std::fs::remove_dir_all(dir).ok();
    }
    #[test]
    fn audit_retention_is_kept_by_time_from_flag_file_or_env_and_at_least_a_day() {
        let days = |n: u64| Duration::from_secs(n * 24 * 60 * 60);
        let dev = Settings::from_options(parse(&["--dev"])).unwrap();
        assert_eq!(dev.limits.audit_retention, days(90));
        let flag = Settings::from_options(parse(&["--dev", "--audit-retention", "30d"])).unwrap();
        assert_eq!(flag.limits.audit_retention, days(30));

        let dir = std::env::temp_dir().join(format!("gf-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("extauthz.yaml");
        std::fs::write(&file, "dev: true\naudit_retention: 1d\n").unwrap();
        let settings = Settings::resolve(parse(&["--config", file.to_str().unwrap()])).unwrap();
        assert_eq!(settings.limits.audit_retention, days(1));
        std::fs::remove_dir_all(dir).ok();

        let err =
            Settings::from_options(parse(&["--dev", "--audit-retention", "23h"])).unwrap_err();
        assert!(
            err.to_string()
                .contains("audit_retention must be at least 1d"),
            "{err}"
        );
        use clap::CommandFactory;
        let env = Cli::command()
            .get_arguments()
            .find(|a| a.get_id() == "audit_retention")
            .and_then(|a| a.get_env().map(|e| e.to_owned()));
        assert_eq!(
            env.as_deref(),
            Some(std::ffi::OsStr::new("GRANTFLOW_AUDIT_RETENTION"))
        );
    }
}
