//! The Check benchmark (issue 3): the memory store, the embedded store and a real Redis side by
//! side, in one run.
//!
//! ```text
//! cargo run --release -p grantflow-bench
//! cargo run --release -p grantflow-bench -- --help
//! ```
//!
//! For each store it starts the release `grantflow-extauthz --dev` as a child process on free
//! loopback ports ([`extauthz`]), takes tokens from its `/dev/token`, and measures the gRPC
//! Check call ([`measure`], [`load`]), next to a no-op server in this process ([`noop`]):
//!
//! - throughput in a closed loop (a fixed number of calls in flight over a fixed number of
//!   HTTP/2 connections, for a fixed time);
//! - latency in an open loop (a fixed request rate well below saturation);
//! - CPU time per check of the extauthz process (`/proc/<pid>/stat`), of Redis
//!   (`INFO cpu`) and of this client, plus how busy the whole machine was (`/proc/stat`), so
//!   a noisy neighbour shows ([`cpu`], [`redis_info`]).
//!
//! When Envoy (`ENVOY_BIN`, else the one `scripts/install-test-tools.sh` installs) and `wrk`
//! are there, it also loads Envoy alone and Envoy in front of each extauthz with wrk, and
//! reports Envoy's CPU per request (docs/design.md §10's setup; [`envoy`]).
//!
//! Before the Redis run it creates 100k sessions through `SessionStore::check` (in this
//! process, bounded concurrency) and reports Redis `used_memory` per live session
//! ([`footprint`]). The tables go to stdout as Markdown ([`report`]).
//!
//! Needs `redis-server` and `redis-cli` (`REDIS_SERVER_BIN`, else `redis-server` on `PATH`).
//! Not a test: nothing here asserts on time. Every loop is bounded in count and in time, and
//! all traffic stays on 127.0.0.1. Settings ([`settings`]): flags or environment —
//! `BENCH_SECONDS`, `BENCH_WARMUP_SECONDS`, `BENCH_CONCURRENCY`, `BENCH_CONNECTIONS`,
//! `BENCH_RATE`, `BENCH_OPEN_SECONDS`, `BENCH_TOKENS`, `BENCH_SESSIONS`,
//! `BENCH_CLIENT_THREADS`, `BENCH_SERVER_RUST_LOG`, `BENCH_SERVER_WORKERS`, `BENCH_ENVOY`
//! (`0`: skip Envoy), `BENCH_EMBEDDED` (`0`: skip the embedded store), `GRANTFLOW_EXTAUTHZ_BIN`
//! (use this binary instead of building it), `ENVOY_BIN`, `REDIS_SERVER_BIN`, `BENCH_ROWS`
//! (the rows after the main tables, [`rows`]), `BENCH_LARGE_SESSIONS`, `BENCH_TENANTS`, `BENCH_JSON`
//! (also write every figure as JSON to this file, [`json`]).

mod cpu;
mod envoy;
mod extauthz;
mod footprint;
mod json;
mod load;
mod measure;
mod noop;
mod redis_info;
mod report;
mod rows;
mod settings;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command as StdCommand, ExitCode};
use std::time::Duration;

use clap::Parser;
use grantflow_e2e::redis::{RedisServer, redis_cli};

use crate::envoy::through_envoy;
use crate::extauthz::{StoreUnderTest, extauthz_binary};
use crate::footprint::session_footprint;
use crate::measure::{StoreRun, bench_noop, bench_store};
use crate::redis_info::info_field;
use crate::report::{Machine, print_envoy_report, print_report};
use crate::rows::Context;
use crate::settings::{Plan, Settings, on_path};

/// The development issuer's tenant (`grantflow_extauthz::config::DEV_TENANT`).
const TENANT: &str = grantflow_extauthz::config::DEV_TENANT;
/// A current desktop browser's user agent: what most sessions carry.
const USER_AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

fn main() -> ExitCode {
    let settings = Settings::parse();
    // `RedisServer` reads REDIS_SERVER_BIN; when it does not hold the server to use, run again
    // with it set (setting it in this process would need `unsafe`).
    let Some(redis_server) = settings
        .redis_server_bin
        .clone()
        .or_else(|| on_path("redis-server"))
    else {
        eprintln!(
            "error: set REDIS_SERVER_BIN or put redis-server on PATH (apt-get install redis-server)"
        );
        return ExitCode::from(2);
    };
    if std::env::var_os("REDIS_SERVER_BIN").as_deref() != Some(redis_server.as_os_str()) {
        let me = std::env::current_exe().expect("the benchmark's own path");
        let error = StdCommand::new(me)
            .args(std::env::args_os().skip(1))
            .env("REDIS_SERVER_BIN", redis_server)
            .exec();
        eprintln!("error: cannot run the benchmark again: {error}");
        return ExitCode::from(2);
    }
    if on_path("redis-cli").is_none() {
        eprintln!("error: redis-cli is not on PATH (apt-get install redis-tools)");
        return ExitCode::from(2);
    }
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; run with --release for meaningful numbers");
    }
    let plan = match Plan::new(&settings) {
        Ok(plan) => plan,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let extauthz = match extauthz_binary(settings.extauthz_bin) {
        Ok(path) => path,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(plan.client_threads)
        .thread_name("bench-client")
        .enable_all()
        .build()
        .expect("a tokio runtime");
    // The whole run is bounded; a hang ends it with an error instead of waiting forever.
    let limit = Duration::from_secs(1800);
    let json = settings.json;
    // A JSON file that cannot be written fails now, not after minutes of measuring.
    if let Some(path) = &json
        && let Err(error) = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
    {
        eprintln!(
            "error: cannot write the JSON report {}: {error}",
            path.display()
        );
        return ExitCode::from(2);
    }
    match runtime.block_on(async { tokio::time::timeout(limit, run(plan, extauthz, json)).await }) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(error)) => {
            eprintln!("error: {error}");
            ExitCode::from(1)
        }
        Err(_) => {
            eprintln!("error: the benchmark did not finish within {limit:?}");
            ExitCode::from(1)
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn run(plan: Plan, extauthz: PathBuf, json: Option<PathBuf>) -> Result<(), BoxError> {
    let machine = Machine::describe();
    eprintln!(
        "GrantFlow Check benchmark on {} ({} cores); extauthz {}",
        machine.cpu,
        machine.cores,
        extauthz.display()
    );

    let envoy_alone = match &plan.envoy {
        Some(tools) => {
            eprintln!("[0/4] Envoy alone (direct response), wrk");
            Some(through_envoy(&plan, tools, None).await?)
        }
        None => {
            eprintln!(
                "[0/4] Envoy + wrk skipped: set ENVOY_BIN (or run scripts/install-test-tools.sh) \
                 and install wrk (apt-get install wrk); BENCH_ENVOY=0 skips it on purpose"
            );
            None
        }
    };
    eprintln!("[1/4] no-op ext_authz server (baseline, in this process)");
    let noop = bench_noop(&plan).await?;
    eprintln!("[2/4] memory store, then the embedded store (a fresh data folder)");
    let memory = bench_store(&plan, &extauthz, StoreUnderTest::Memory).await?;
    let embedded = if plan.embedded {
        let data_dir =
            std::env::temp_dir().join(format!("grantflow-bench-{}-data", std::process::id()));
        let run = bench_store(&plan, &extauthz, StoreUnderTest::Embedded(&data_dir)).await;
        let _ = std::fs::remove_dir_all(&data_dir);
        Some(run?)
    } else {
        None
    };

    let mut redis = RedisServer::start().await;
    let redis_version = redis_cli(redis.port, &["INFO", "server"])
        .and_then(|info| info_field(&info, "redis_version"))
        .unwrap_or_else(|| "?".into());
    eprintln!(
        "[3/4] Redis {redis_version} memory: {} sessions through store.check",
        plan.sessions
    );
    let footprint = session_footprint(&plan, &redis, 0, 20_000).await?;
    // The same again with session hashes allowed to stay compact (listpack) although the
    // user agent is longer than the default `hash-max-listpack-value` of 64 bytes.
    eprintln!("      again with hash-max-listpack-value 256");
    let listpack_value = redis_cli(redis.port, &["CONFIG", "GET", "hash-max-listpack-value"])
        .and_then(|out| out.lines().nth(1).map(str::to_owned))
        .unwrap_or_else(|| "64".into());
    redis_cli(
        redis.port,
        &["CONFIG", "SET", "hash-max-listpack-value", "256"],
    );
    let compact = session_footprint(&plan, &redis, plan.sessions + 1, 0).await?;
    redis_cli(
        redis.port,
        &["CONFIG", "SET", "hash-max-listpack-value", &listpack_value],
    );
    eprintln!("[4/4] Redis store");
    let on_redis = bench_store(&plan, &extauthz, StoreUnderTest::Redis(&redis)).await?;
    redis.stop().await;

    let runs: Vec<&StoreRun> = [
        Some(&noop),
        Some(&memory),
        embedded.as_ref(),
        Some(&on_redis),
    ]
    .into_iter()
    .flatten()
    .collect();
    print_report(&plan, &machine, &redis_version, &runs, &footprint, &compact);
    if let Some(alone) = &envoy_alone {
        print_envoy_report(&plan, alone, &runs);
    }
    let context = Context {
        plan: &plan,
        extauthz: &extauthz,
        floor: &noop,
        runs: &runs,
    };
    let mut sections = Vec::new();
    let mut failed_rows = Vec::new();
    for (i, row) in plan.rows.iter().enumerate() {
        eprintln!("[row {}/{}] {}", i + 1, plan.rows.len(), row.key());
        match rows::run(*row, &context).await {
            Ok(section) => {
                println!("\n{}", section.markdown.trim_end());
                sections.push((row.key(), section.json));
            }
            Err(error) => {
                eprintln!("error: row {}: {error}", row.key());
                failed_rows.push(format!("{}: {error}", row.key()));
            }
        }
    }
    if let Some(path) = json {
        let mut report = json::report(
            &plan,
            &machine,
            &redis_version,
            &runs,
            &footprint,
            &compact,
            envoy_alone.as_ref(),
        );
        if let Some(root) = report.as_object_mut() {
            for (key, figures) in sections {
                root.insert(key.into(), figures);
            }
        }
        json::write(&path, &report)
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
        eprintln!("JSON report: {}", path.display());
    }
    if !failed_rows.is_empty() {
        return Err(format!("rows failed: {}", failed_rows.join("; ")).into());
    }
    Ok(())
}
