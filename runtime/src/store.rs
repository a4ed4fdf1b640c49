//! The store flags both binaries take, with the same names, environment variables and
//! defaults (one ConfigMap serves both, and they must agree, since both read and write the
//! same store), and their mapping to core's [`StoreConfig`] and [`Limits`].
//!
//! Each binary flattens [`StoreArgs`] into its options (`#[command(flatten)]`, and in
//! extauthz's configuration file `#[serde(flatten)]`) and keeps its own `--store` choice,
//! since they offer different stores.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use grantflow_core::decision::{DEFAULT_AUDIT_RETENTION, DEFAULT_WATERMARK_RETENTION, Limits};
use grantflow_core::policy::{DEFAULT_MAX_SESSION_AGE, check_max_age};
use grantflow_core::store::{RedisSettings, StoreConfig};
use serde::Deserialize;

use crate::help::{Shown, with_default};

/// The embedded store's data folder when none is given (relative to the working directory).
pub const DEFAULT_DATA_DIR: &str = "grantflow-data";
/// Deadline of store writes when none is given.
pub const DEFAULT_STORE_WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long ended sessions are remembered when not set.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// Replicas that must acknowledge a write when not set: none.
pub const DEFAULT_REDIS_WAIT_REPLICAS: u32 = 0;
/// Whether the Redis URLs are cluster nodes when not set.
pub const DEFAULT_REDIS_CLUSTER: bool = false;
/// The least audit retention (the dashboard shows a day of history at least).
pub const MIN_AUDIT_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

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

impl std::fmt::Display for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = self.to_possible_value().expect("no value is skipped");
        f.write_str(value.get_name())
    }
}

/// The store flags both binaries share, each optional so a configuration file can fill it
/// in; [`StoreArgs::limits`] and [`StoreArgs::store_config`] apply the defaults. A setting
/// with a default is described by its `help`, which shows the default from its constant
/// ([`with_default`]), the others by their doc comment.
#[derive(Debug, Clone, Default, Args, Deserialize)]
pub struct StoreArgs {
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

    #[arg(
        long,
        env = "GRANTFLOW_REDIS_CLUSTER",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
        help = with_default(
            "The Redis URLs are Redis Cluster nodes (`--redis-cluster` alone means true).",
            DEFAULT_REDIS_CLUSTER,
        )
    )]
    pub redis_cluster: Option<bool>,

    /// PEM file of the CA certificate(s) that sign the Redis servers' certificates (a private
    /// CA); replaces the system's root certificates. Only with `rediss://` URLs
    /// [default: the system's roots].
    #[arg(long, env = "GRANTFLOW_REDIS_CA_FILE", value_name = "FILE")]
    pub redis_ca_file: Option<PathBuf>,

    #[arg(
        long,
        env = "GRANTFLOW_REDIS_WAIT_REPLICAS",
        value_name = "N",
        help = with_default(
            "Redis replicas that must acknowledge each revocation and policy change (`WAIT`) \
             before it is reported done; 0 trusts the primary alone. Past half of \
             store_write_timeout the change is reported failed (it is in effect on the primary).",
            DEFAULT_REDIS_WAIT_REPLICAS,
        )
    )]
    pub redis_wait_replicas: Option<u32>,

    #[arg(
        long,
        env = "GRANTFLOW_STORE_WRITE_TIMEOUT",
        value_parser = humantime::parse_duration,
        value_name = "DURATION",
        help = with_default(
            "Deadline of store writes an administrator waits for (revocations, policy changes).",
            Shown(DEFAULT_STORE_WRITE_TIMEOUT),
        )
    )]
    #[serde(default, with = "humantime_serde")]
    pub store_write_timeout: Option<Duration>,

    #[arg(
        long,
        env = "GRANTFLOW_MAX_SESSION_AGE",
        value_parser = humantime::parse_duration,
        value_name = "DURATION",
        help = with_default(
            "Maximum session age of tenants without a SessionPolicy, 1m..24h.",
            Shown(DEFAULT_MAX_SESSION_AGE),
        )
    )]
    #[serde(default, with = "humantime_serde")]
    pub max_session_age: Option<Duration>,

    #[arg(
        long,
        env = "GRANTFLOW_RETENTION",
        value_parser = humantime::parse_duration,
        value_name = "DURATION",
        help = with_default(
            "How long expired and revoked sessions (tombstones), user marks and applied \
             revocation keys are remembered. Must exceed the lifetime of the issuer's tokens.",
            Shown(DEFAULT_RETENTION),
        )
    )]
    #[serde(default, with = "humantime_serde")]
    pub retention: Option<Duration>,

    #[arg(
        long,
        env = "GRANTFLOW_WATERMARK_RETENTION",
        value_parser = humantime::parse_duration,
        value_name = "DURATION",
        help = with_default(
            "How long a revoke-all of a user keeps refusing that user's tokens that cannot \
             prove a sign-in after it (no `auth_time`, or an older one), unless an \
             administrator lifts it (the default is the inactivity lifetime of an Entra \
             refresh token).",
            Shown(DEFAULT_WATERMARK_RETENTION),
        )
    )]
    #[serde(default, with = "humantime_serde")]
    pub watermark_retention: Option<Duration>,

    #[arg(
        long,
        env = "GRANTFLOW_AUDIT_RETENTION",
        value_parser = humantime::parse_duration,
        value_name = "DURATION",
        help = with_default(
            &format!(
                "How long audit records are kept in the store (the dashboard's and API's audit \
                 trail), at least {}. The JSON audit log line is the durable copy.",
                Shown(MIN_AUDIT_RETENTION)
            ),
            Shown(DEFAULT_AUDIT_RETENTION),
        )
    )]
    #[serde(default, with = "humantime_serde")]
    pub audit_retention: Option<Duration>,
}

/// How a binary names a setting in its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// By its configuration file key: `max_session_age` (extauthz).
    FileKey,
    /// By its flag: `--max-session-age` (the operator, which has no file).
    Flag,
}

impl Naming {
    /// `key` (a field name of the options) as this binary names it.
    pub fn name(self, key: &str) -> String {
        match self {
            Naming::FileKey => key.to_owned(),
            Naming::Flag => format!("--{}", key.replace('_', "-")),
        }
    }
}

impl StoreArgs {
    /// Fills every setting not given here from `file`. The destructure names every field
    /// (no `..`), so a field added to [`StoreArgs`] does not compile until it is merged.
    pub fn or(self, file: StoreArgs) -> StoreArgs {
        let StoreArgs {
            redis_url,
            redis_cluster,
            redis_ca_file,
            redis_wait_replicas,
            store_write_timeout,
            max_session_age,
            retention,
            watermark_retention,
            audit_retention,
        } = self;
        StoreArgs {
            redis_url: redis_url.or(file.redis_url),
            redis_cluster: redis_cluster.or(file.redis_cluster),
            redis_ca_file: redis_ca_file.or(file.redis_ca_file),
            redis_wait_replicas: redis_wait_replicas.or(file.redis_wait_replicas),
            store_write_timeout: store_write_timeout.or(file.store_write_timeout),
            max_session_age: max_session_age.or(file.max_session_age),
            retention: retention.or(file.retention),
            watermark_retention: watermark_retention.or(file.watermark_retention),
            audit_retention: audit_retention.or(file.audit_retention),
        }
    }

    /// The write deadline, given or the default.
    pub fn store_write_timeout(&self) -> Duration {
        self.store_write_timeout
            .unwrap_or(DEFAULT_STORE_WRITE_TIMEOUT)
    }

    /// The retention limits, given or the defaults. Checks the maximum session age
    /// (1m..24h), that the retention covers it, and that audit records are kept a day at
    /// least.
    pub fn limits(&self, naming: Naming) -> Result<Limits, String> {
        let default_max_age = self.max_session_age.unwrap_or(DEFAULT_MAX_SESSION_AGE);
        check_max_age(default_max_age)
            .map_err(|e| format!("{}: {e}", naming.name("max_session_age")))?;
        let retention = self.retention.unwrap_or(DEFAULT_RETENTION);
        if retention < default_max_age {
            return Err(format!(
                "{} must be at least the maximum session age",
                naming.name("retention")
            ));
        }
        let audit_retention = self.audit_retention.unwrap_or(DEFAULT_AUDIT_RETENTION);
        if audit_retention < MIN_AUDIT_RETENTION {
            return Err(format!(
                "{} must be at least {}",
                naming.name("audit_retention"),
                Shown(MIN_AUDIT_RETENTION)
            ));
        }
        Ok(Limits {
            default_max_age,
            retention,
            watermark_retention: self
                .watermark_retention
                .unwrap_or(DEFAULT_WATERMARK_RETENTION),
            audit_retention,
            max_sessions_per_user: grantflow_core::decision::DEFAULT_MAX_SESSIONS_PER_USER,
        })
    }

    /// The store `kind` with these settings. `data_dir` is the embedded store's folder
    /// (default [`DEFAULT_DATA_DIR`]); `call_timeout` the deadline of every Redis call, whose
    /// writes get the write deadline, or the call deadline when that is longer.
    pub fn store_config(
        self,
        kind: StoreKind,
        data_dir: Option<PathBuf>,
        call_timeout: Duration,
        naming: Naming,
    ) -> Result<StoreConfig, String> {
        let write_timeout = self.store_write_timeout();
        Ok(match (kind, self.redis_url) {
            (StoreKind::Embedded, _) => StoreConfig::Embedded {
                data_dir: data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            },
            (StoreKind::Memory, _) => StoreConfig::Memory,
            (StoreKind::Redis, Some(urls)) if !urls.is_empty() => {
                let redis = RedisSettings {
                    urls,
                    cluster: self.redis_cluster.unwrap_or(DEFAULT_REDIS_CLUSTER),
                    timeout: call_timeout,
                    write_timeout: write_timeout.max(call_timeout),
                    ca_pem: None,
                    wait_replicas: self
                        .redis_wait_replicas
                        .unwrap_or(DEFAULT_REDIS_WAIT_REPLICAS),
                };
                StoreConfig::Redis(match &self.redis_ca_file {
                    Some(path) => redis
                        .trust_ca_file(path)
                        .map_err(|e| format!("{}: {e}", naming.name("redis_ca_file")))?,
                    None => redis,
                })
            }
            (StoreKind::Redis, _) => {
                return Err(format!(
                    "{} redis needs {}",
                    naming.name("store"),
                    naming.name("redis_url")
                ));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        store: StoreArgs,
    }

    fn parse(args: &[&str]) -> StoreArgs {
        let mut all = vec!["x"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).expect("valid flags").store
    }

    #[test]
    fn defaults_and_names() {
        let limits = parse(&[]).limits(Naming::Flag).unwrap();
        assert_eq!(limits, Limits::default());
        assert_eq!(limits.retention, DEFAULT_RETENTION);
        let err = parse(&["--audit-retention", "23h"])
            .limits(Naming::Flag)
            .unwrap_err();
        assert_eq!(err, "--audit-retention must be at least 1d");
        let err = parse(&["--audit-retention", "23h"])
            .limits(Naming::FileKey)
            .unwrap_err();
        assert_eq!(err, "audit_retention must be at least 1d");
    }

    #[test]
    fn redis_cluster_is_a_flag_or_a_value() {
        assert_eq!(parse(&["--redis-cluster"]).redis_cluster, Some(true));
        assert_eq!(
            parse(&["--redis-cluster", "false"]).redis_cluster,
            Some(false)
        );
        assert_eq!(
            parse(&["--redis-cluster", "true"]).redis_cluster,
            Some(true)
        );
        assert_eq!(parse(&[]).redis_cluster, None);
    }

    #[test]
    fn redis_needs_urls() {
        let err = parse(&[])
            .store_config(
                StoreKind::Redis,
                None,
                Duration::from_millis(50),
                Naming::Flag,
            )
            .unwrap_err();
        assert_eq!(err, "--store redis needs --redis-url");
        match parse(&[
            "--redis-url",
            "redis://a:6379",
            "--store-write-timeout",
            "1s",
        ])
        .store_config(
            StoreKind::Redis,
            None,
            Duration::from_millis(50),
            Naming::FileKey,
        )
        .unwrap()
        {
            StoreConfig::Redis(redis) => {
                assert_eq!(redis.timeout, Duration::from_millis(50));
                assert_eq!(redis.write_timeout, Duration::from_secs(1));
                assert!(!redis.cluster);
            }
            other => panic!("{other:?}"),
        }
    }
}
