//! Configuration: flags, each with an environment variable. The store settings use the same
//! names as extauthz (`GRANTFLOW_STORE`, `GRANTFLOW_REDIS_URL`, `GRANTFLOW_MAX_SESSION_AGE`,
//! `GRANTFLOW_RETENTION`, ...) so one ConfigMap serves both; they must agree, since both
//! binaries read and write the same store. `grantflow-operator --help` lists everything.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use grantflow_core::decision::Limits;
use grantflow_core::policy::DEFAULT_MAX_SESSION_AGE;
use grantflow_core::store::StoreConfig;
pub use grantflow_runtime::LogFormat;
use grantflow_runtime::logging::DEFAULT_LOG_FORMAT;
use grantflow_runtime::store::{Naming, StoreArgs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// In this process: only for trying it out and tests (extauthz cannot see it).
    Memory,
    /// Redis, standalone or Cluster: the store extauthz uses.
    Redis,
}

impl From<StoreKind> for grantflow_runtime::store::StoreKind {
    fn from(kind: StoreKind) -> Self {
        match kind {
            StoreKind::Memory => Self::Memory,
            StoreKind::Redis => Self::Redis,
        }
    }
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "grantflow-operator",
    version,
    about = "GrantFlow session layer: Kubernetes operator for SessionPolicy and Revocation."
)]
pub struct Options {
    /// Address of /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "GRANTFLOW_OPERATOR_ADMIN_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub admin_addr: SocketAddr,

    /// Address of the admission webhook (HTTPS).
    #[arg(long, env = "GRANTFLOW_WEBHOOK_ADDR", default_value = "0.0.0.0:9443")]
    pub webhook_addr: SocketAddr,

    /// PEM certificate chain of the webhook (e.g. mounted from a cert-manager Secret). Without
    /// it and --webhook-key the webhook is off and no Revocation can be applied.
    #[arg(
        long,
        env = "GRANTFLOW_WEBHOOK_CERT",
        value_name = "FILE",
        requires = "webhook_key"
    )]
    pub webhook_cert: Option<PathBuf>,

    /// PEM private key of the webhook certificate.
    #[arg(
        long,
        env = "GRANTFLOW_WEBHOOK_KEY",
        value_name = "FILE",
        requires = "webhook_cert"
    )]
    pub webhook_key: Option<PathBuf>,

    /// Session store.
    #[arg(long, env = "GRANTFLOW_STORE", value_enum, default_value = "memory")]
    pub store: StoreKind,

    /// The store settings extauthz takes too (same flags, environment variables, defaults).
    #[command(flatten)]
    pub store_args: StoreArgs,

    /// Watch only this namespace [default: every namespace].
    #[arg(long, env = "GRANTFLOW_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// Name of the Lease that elects the one active replica.
    #[arg(
        long,
        env = "GRANTFLOW_LEASE_NAME",
        default_value = "grantflow-operator"
    )]
    pub lease_name: String,

    /// Namespace of the Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,

    /// This replica's identity in the Lease [default: the pod name, else a random id].
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// How long a Lease stays held without renewal (whole seconds, at least 2).
    #[arg(long, env = "GRANTFLOW_LEASE_DURATION", value_parser = humantime::parse_duration, default_value = "15s")]
    pub lease_duration: Duration,

    /// How long before the Lease expires the holder renews it (less than the duration).
    #[arg(long, env = "GRANTFLOW_LEASE_GRACE", value_parser = humantime::parse_duration, default_value = "5s")]
    pub lease_grace: Duration,

    /// How often an applied SessionPolicy is compared with the store again.
    #[arg(long, env = "GRANTFLOW_POLICY_RESYNC", value_parser = humantime::parse_duration, default_value = "5m")]
    pub policy_resync: Duration,

    /// Delete applied Revocations this long after they were applied (their audit records
    /// stay) [default: keep them].
    #[arg(long, env = "GRANTFLOW_REVOCATION_RETENTION", value_parser = humantime::parse_duration)]
    pub revocation_retention: Option<Duration>,

    /// Log format.
    #[arg(long, env = "GRANTFLOW_LOG_FORMAT", value_enum, default_value_t = DEFAULT_LOG_FORMAT)]
    pub log_format: LogFormat,
}

/// Where the webhook's TLS identity comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub admin_addr: SocketAddr,
    pub webhook_addr: SocketAddr,
    pub webhook_tls: Option<WebhookTls>,
    pub store: StoreConfig,
    pub store_timeout: Duration,
    pub limits: Limits,
    pub watch_namespace: Option<String>,
    pub lease: LeaseSettings,
    pub policy_resync: Duration,
    pub revocation_retention: Option<Duration>,
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    /// Whole seconds.
    pub duration: u64,
    pub grace: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl Settings {
    pub fn from_options(o: Options) -> Result<Self, ConfigError> {
        // The operator has one store deadline: every call is a write.
        let store_timeout = o.store_args.store_write_timeout();
        let limits = o.store_args.limits(Naming::Flag).map_err(ConfigError)?;
        let store = o
            .store_args
            .store_config(o.store.into(), None, store_timeout, Naming::Flag)
            .map_err(ConfigError)?;
        if store_timeout.is_zero() {
            return Err(ConfigError(
                "--store-write-timeout must be more than zero".into(),
            ));
        }
        // Stricter than extauthz: the retention covers the default maximum age too.
        if limits.retention < DEFAULT_MAX_SESSION_AGE {
            return Err(ConfigError(
                "--retention must be at least the maximum session age".into(),
            ));
        }
        let duration = o.lease_duration.as_secs();
        let grace = o.lease_grace.as_secs();
        if duration < 2 || grace == 0 || grace >= duration {
            return Err(ConfigError(
                "the lease duration must be at least 2s and the grace between 1s and the duration"
                    .into(),
            ));
        }
        let webhook_tls = match (o.webhook_cert, o.webhook_key) {
            (Some(cert), Some(key)) => Some(WebhookTls { cert, key }),
            _ => None,
        };
        let identity = o
            .identity
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| format!("grantflow-operator-{}", uuid::Uuid::new_v4()));
        Ok(Self {
            admin_addr: o.admin_addr,
            webhook_addr: o.webhook_addr,
            webhook_tls,
            store,
            store_timeout,
            limits,
            watch_namespace: o.watch_namespace.filter(|n| !n.is_empty()),
            lease: LeaseSettings {
                name: o.lease_name,
                namespace: o.lease_namespace,
                identity,
                duration,
                grace,
            },
            policy_resync: o.policy_resync.max(Duration::from_secs(1)),
            revocation_retention: o.revocation_retention,
            log_format: o.log_format,
        })
    }

    /// Defaults for tests: loopback ports chosen by the OS, memory store, short lease.
    pub fn for_tests() -> Self {
        let options = Options::parse_from([
            "grantflow-operator",
            "--admin-addr",
            "127.0.0.1:0",
            "--webhook-addr",
            "127.0.0.1:0",
            "--lease-duration",
            "3s",
            "--lease-grace",
            "1s",
        ]);
        Self::from_options(options).expect("valid test settings")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, String> {
        let mut all = vec!["grantflow-operator"];
        all.extend_from_slice(args);
        let options = Options::try_parse_from(all).map_err(|e| e.to_string())?;
        Settings::from_options(options).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_store_selection() {
        let s = parse(&[]).unwrap();
        assert!(matches!(s.store, StoreConfig::Memory));
        assert_eq!(s.webhook_tls, None);
        assert_eq!(s.lease.duration, 15);
        assert_eq!(s.limits.default_max_age, Duration::from_secs(900));
        assert!(s.lease.identity.starts_with("grantflow-operator-"));

        let s = parse(&[
            "--store",
            "redis",
            "--redis-url",
            "redis://a:6379,redis://b:6379",
            "--redis-cluster",
        ])
        .unwrap();
        match s.store {
            StoreConfig::Redis(redis) => {
                assert_eq!(redis.urls.len(), 2);
                assert!(redis.cluster);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            parse(&["--store", "redis"])
                .unwrap_err()
                .contains("--redis-url")
        );
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        assert!(
            parse(&["--webhook-cert", "c.pem"]).is_err(),
            "key required too"
        );
        assert!(parse(&["--lease-duration", "5s", "--lease-grace", "5s"]).is_err());
        assert!(parse(&["--max-session-age", "30s"]).is_err());
        assert!(parse(&["--store-write-timeout", "0s"]).is_err());
        assert!(
            parse(&["--audit-retention", "23h"])
                .unwrap_err()
                .contains("--audit-retention must be at least 1d")
        );
    }

    #[test]
    fn audit_retention_defaults_to_90_days_and_is_set_by_flag_or_env() {
        let days = |n: u64| Duration::from_secs(n * 24 * 60 * 60);
        assert_eq!(parse(&[]).unwrap().limits.audit_retention, days(90));
        let s = parse(&["--audit-retention", "30d"]).unwrap();
        assert_eq!(s.limits.audit_retention, days(30));
        use clap::CommandFactory;
        let env = Options::command()
            .get_arguments()
            .find(|a| a.get_id() == "audit_retention")
            .and_then(|a| a.get_env().map(|e| e.to_owned()));
        assert_eq!(
            env.as_deref(),
            Some(std::ffi::OsStr::new("GRANTFLOW_AUDIT_RETENTION"))
        );
    }
}
