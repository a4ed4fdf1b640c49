//! 1 k vs 1 M live sessions (issue 10, item 3): the same warm Check load against a store that
//! holds about a thousand live sessions and against one that holds `plan.large_sessions`
//! (1 000 000; 50 000 in the short mode), on the embedded store and on Redis, each through the
//! real `grantflow-extauthz`; and what a live session costs in memory and on disk.
//!
//! The stores are filled from this process through the store API ([`footprint::seed`]), not
//! with a million RS256 tokens:
//!
//! - **embedded**: a fresh data folder is opened here (`MemoryStore::open_durable`), seeded and
//!   closed, then `grantflow-extauthz --store embedded --data-dir` starts on it (its start-up
//!   time, reading the sessions back, is reported); bytes per session from the extauthz
//!   process's RSS at the large size minus at the small one, and from the folder's size;
//! - **redis**: one Redis and one extauthz on it; seeded to ~1 k, measured, seeded on to the
//!   large size while the same extauthz keeps running, measured again with the same tokens;
//!   bytes per session from `used_memory`;
//! - **memory**: its sessions live only inside its process, so its bytes per session are
//!   measured in this process (RSS before and after seeding a `MemoryStore`).
//!
//! The loop helpers ([`Loops`], [`warm_load`], [`Warm`], [`Ratios`]) are shared with the
//! `tenants` row.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::ext_authz::v3::pb::CheckRequest;
use grantflow_core::clock::{Clock, SystemClock};
use grantflow_core::decision::Limits;
use grantflow_core::store::{MemoryStore, RedisStore};
use grantflow_e2e::redis::RedisServer;
use serde_json::{Map, Value, json};

use super::{Context, Section, verdict};
use crate::BoxError;
use crate::cpu::{CpuSample, CpuSource, micros_per};
use crate::extauthz::{Extauthz, StoreUnderTest};
use crate::footprint::{Seeded, seed};
use crate::load::{Answer, Measured, Target, call, check_request, closed_loop, connect, open_loop};
use crate::settings::Plan;

/// The small store: live sessions seeded before the hot tokens add theirs.
pub const SMALL_SESSIONS: usize = 1_000;
/// Seeding stops starting new sessions after this long (per store and size); the report says
/// how many were made.
const SEED_BUDGET: Duration = Duration::from_secs(150);
const SEED_BUDGET_SHORT: Duration = Duration::from_secs(15);
/// Sessions created at once when seeding the embedded store: each creation waits for its
/// group commit (an fsync), so many in flight make large groups.
const EMBEDDED_SEED_CONCURRENCY: usize = 512;
/// Tries of a token's first check when the server answers 503 (its store deadline overrun).
const FIRST_SIGHT_TRIES: u32 = 4;
/// The goals: at the large size (or with many tenants) at least this share of the
/// throughput, and at most this multiple of the p99s.
pub const THROUGHPUT_GOAL: f64 = 0.9;
pub const P99_GOAL: f64 = 1.1;

/// How long each warm load runs: the main tables' durations, shortened in the short mode so a
/// row with four loads stays within a few seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Loops {
    pub warmup: f64,
    pub closed: f64,
    pub open: f64,
}

impl Loops {
    pub fn of(plan: &Plan) -> Loops {
        if plan.short {
            Loops {
                warmup: plan.warmup.min(0.25),
                closed: (plan.seconds / 4.0).max(0.5),
                open: (plan.open_seconds / 4.0).max(0.5),
            }
        } else {
            Loops {
                warmup: plan.warmup,
                closed: plan.seconds,
                open: plan.open_seconds,
            }
        }
    }
}

/// What one warm load measured: the closed loop and the open loop.
pub struct Warm {
    pub closed: Measured,
    pub open: Measured,
    /// First checks tried again after a 503 (not measured; a busy machine's sign).
    pub first_sight_retries: u32,
}

impl Warm {
    pub fn checks_per_s(&self) -> f64 {
        self.closed.rate()
    }

    pub fn closed_p99_ms(&self) -> f64 {
        self.closed.quantile_ms(0.99)
    }

    pub fn open_p99_ms(&self) -> f64 {
        self.open.quantile_ms(0.99)
    }

    pub fn server_cpu_us(&self) -> f64 {
        micros_per(self.closed.cpu.server, self.closed.calls)
    }

    pub fn redis_cpu_us(&self) -> Option<f64> {
        self.closed
            .cpu
            .redis
            .map(|seconds| micros_per(seconds, self.closed.calls))
    }

    /// Answers that were not "allowed", both loops.
    pub fn not_allowed(&self) -> u64 {
        [&self.closed, &self.open]
            .iter()
            .map(|m| m.denied.values().sum::<u64>() + m.failed)
            .sum()
    }

    pub fn json(&self) -> Map<String, Value> {
        let mut figures = Map::new();
        let mut put = |key: &str, value: Value| {
            figures.insert(key.into(), value);
        };
        put("checks_per_s", json!(self.checks_per_s()));
        put("closed_p50_ms", json!(self.closed.quantile_ms(0.5)));
        put("closed_p99_ms", json!(self.closed_p99_ms()));
        put("open_p50_ms", json!(self.open.quantile_ms(0.5)));
        put("open_p99_ms", json!(self.open_p99_ms()));
        put("server_cpu_us", json!(self.server_cpu_us()));
        if let Some(redis) = self.redis_cpu_us() {
            put("redis_cpu_us", json!(redis));
        }
        put("calls_closed", json!(self.closed.calls));
        put("calls_open", json!(self.open.calls));
        put("not_allowed", json!(self.not_allowed()));
        put("open_dropped", json!(self.open.dropped));
        put("first_sight_retries", json!(self.first_sight_retries));
        figures
    }

    /// `| checks/s | closed p99 | open p99 | server CPU | Redis CPU |` cells.
    pub fn cells(&self) -> String {
        format!(
            "{:.0} | {:.2} | {:.3} | {:.1} | {}",
            self.checks_per_s(),
            self.closed_p99_ms(),
            self.open_p99_ms(),
            self.server_cpu_us(),
            self.redis_cpu_us()
                .map_or_else(|| "–".into(), |us| format!("{us:.1}"))
        )
    }
}

/// One load against another (`other / base`): the goal is throughput ≥ [`THROUGHPUT_GOAL`]×
/// and both p99s ≤ [`P99_GOAL`]×.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratios {
    pub throughput: f64,
    pub closed_p99: f64,
    pub open_p99: f64,
}

impl Ratios {
    pub fn of(base: &Warm, other: &Warm) -> Ratios {
        Ratios::from_figures(
            (
                base.checks_per_s(),
                base.closed_p99_ms(),
                base.open_p99_ms(),
            ),
            (
                other.checks_per_s(),
                other.closed_p99_ms(),
                other.open_p99_ms(),
            ),
        )
    }

    /// From (checks/s, closed p99, open p99) of each; a base of zero gives a ratio that is not
    /// finite ("not measured").
    pub fn from_figures(base: (f64, f64, f64), other: (f64, f64, f64)) -> Ratios {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        Ratios {
            throughput: ratio(other.0, base.0),
            closed_p99: ratio(other.1, base.1),
            open_p99: ratio(other.2, base.2),
        }
    }

    /// "met" when all three are within the goal, "missed" when one is not, "not measured"
    /// when one could not be computed.
    pub fn verdict(&self) -> &'static str {
        let verdicts = [
            verdict(self.throughput, THROUGHPUT_GOAL, false),
            verdict(self.closed_p99, P99_GOAL, true),
            verdict(self.open_p99, P99_GOAL, true),
        ];
        if verdicts.contains(&"not measured") {
            "not measured"
        } else if verdicts.iter().all(|v| *v == "met") {
            "met"
        } else {
            "missed"
        }
    }

    /// `| throughput | closed p99 | open p99 | goal |` cells.
    pub fn cells(&self) -> String {
        format!(
            "{:.2}× ({}) | {:.2}× ({}) | {:.2}× ({}) | **{}**",
            self.throughput,
            verdict(self.throughput, THROUGHPUT_GOAL, false),
            self.closed_p99,
            verdict(self.closed_p99, P99_GOAL, true),
            self.open_p99,
            verdict(self.open_p99, P99_GOAL, true),
            self.verdict()
        )
    }

    pub fn json(&self) -> Value {
        let finite = |v: f64| v.is_finite().then_some(v);
        let mut figures = Map::new();
        for (key, value) in [
            ("throughput_ratio", finite(self.throughput)),
            ("closed_p99_ratio", finite(self.closed_p99)),
            ("open_p99_ratio", finite(self.open_p99)),
        ] {
            if let Some(value) = value {
                figures.insert(key.into(), json!(value));
            }
        }
        figures.insert("goal".into(), json!(self.verdict()));
        Value::Object(figures)
    }
}

/// The warm load on `target`: every token once (first sight: verified, session created or
/// found; all must be allowed), a warm-up, the closed loop and the open loop, with CPU around
/// each loop — as in the main tables, without Envoy.
pub async fn warm_load(plan: &Plan, loops: &Loops, target: &Target<'_>) -> Result<Warm, BoxError> {
    let requests: Arc<Vec<CheckRequest>> = Arc::new(
        target
            .tokens
            .iter()
            .enumerate()
            .map(|(i, token)| check_request(token, i))
            .collect(),
    );
    let clients = connect(target.grpc, plan.connections).await?;
    // One at a time, as in the main tables. A 503 (the 50 ms store deadline overrun on a busy
    // machine) is tried again, a few times at most, and counted: first sight is not measured.
    let mut first = clients[0].clone();
    let mut refused = None;
    let mut retries = 0;
    'tokens: for request in requests.iter() {
        for attempt in 0..FIRST_SIGHT_TRIES {
            match call(&mut first, request.clone()).await {
                Answer::Allowed => continue 'tokens,
                Answer::Denied(503) | Answer::Failed if attempt + 1 < FIRST_SIGHT_TRIES => {
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                answer => {
                    refused = Some(answer);
                    break 'tokens;
                }
            }
        }
    }
    if let Some(answer) = refused {
        return Err(format!(
            "{}: a token's first check was not allowed ({answer:?}); see {}",
            target.name,
            target
                .log
                .map_or("its output".into(), |l| l.display().to_string())
        )
        .into());
    }
    if loops.warmup > 0.0 {
        closed_loop(
            &clients,
            &requests,
            plan.concurrency,
            Duration::from_secs_f64(loops.warmup),
            plan.max_calls,
        )
        .await;
    }
    let before = CpuSample::take(target.cpu, target.redis_ports.iter().copied());
    let mut closed = closed_loop(
        &clients,
        &requests,
        plan.concurrency,
        Duration::from_secs_f64(loops.closed),
        plan.max_calls,
    )
    .await;
    closed.cpu = CpuSample::take(target.cpu, target.redis_ports.iter().copied()).since(&before);
    let before = CpuSample::take(target.cpu, target.redis_ports.iter().copied());
    let mut open = open_loop(
        &clients,
        &requests,
        plan.rate,
        Duration::from_secs_f64(loops.open),
    )
    .await;
    open.cpu = CpuSample::take(target.cpu, target.redis_ports.iter().copied()).since(&before);
    let warm = Warm {
        closed,
        open,
        first_sight_retries: retries,
    };
    eprintln!(
        "  {}: {:.0} checks/s, closed p99 {:.2} ms, open p99 {:.3} ms, server {:.1} µs CPU/check",
        target.name,
        warm.checks_per_s(),
        warm.closed_p99_ms(),
        warm.open_p99_ms(),
        warm.server_cpu_us()
    );
    Ok(warm)
}

/// The dev tenant's live sessions as the server counts them (`GET /api/v1/overview`, with an
/// admin token from `/dev/token`, whose one session is among them); `None` when it does not
/// answer.
pub async fn live_sessions(server: &Extauthz) -> Option<u64> {
    let http = reqwest::Client::new();
    let admin = server.admin;
    let token = http
        .get(format!(
            "http://{admin}/dev/token?admin=true&user=benchadmin&session=bench-admin"
        ))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?
        .error_for_status()
        .ok()?
        .text()
        .await
        .ok()?;
    let overview = http
        .get(format!("http://{admin}/api/v1/overview"))
        .bearer_auth(token.trim())
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?
        .error_for_status()
        .ok()?
        .text()
        .await
        .ok()?;
    serde_json::from_str::<Value>(&overview).ok()?["liveSessions"].as_u64()
}

/// Resident memory of a process (`VmRSS` of `/proc/<pid>/status`, or `self`), in bytes.
pub fn rss_bytes(pid: &str) -> Option<u64> {
    parse_vm_rss(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let mut parts = line.split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(value * 1024),
        Some(_) => None,
    }
}

/// `(after − before) / (sessions after − sessions before)`, when both are measured and there
/// are more sessions after.
pub fn bytes_per(before: Option<u64>, after: Option<u64>, sessions: (usize, usize)) -> Option<f64> {
    let (before, after) = (before?, after?);
    let more = sessions.1.checked_sub(sessions.0).filter(|n| *n > 0)?;
    Some((after as f64 - before as f64) / more as f64)
}

/// Bytes of the files in `dir` (not recursive: the data folder holds its database file).
fn folder_bytes(dir: &Path) -> Option<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).ok()? {
        let metadata = entry.ok()?.metadata().ok()?;
        if metadata.is_file() {
            total += metadata.len();
        }
    }
    Some(total)
}

/// A data folder removed when dropped (also on error paths).
struct Folder(PathBuf);

impl Folder {
    fn fresh(label: &str) -> Folder {
        let dir = std::env::temp_dir().join(format!(
            "grantflow-bench-{}-sessions-{label}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        Folder(dir)
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn budget(plan: &Plan) -> Duration {
    if plan.short {
        SEED_BUDGET_SHORT
    } else {
        SEED_BUDGET
    }
}

fn note_seeded(what: &str, seeded: &Seeded) {
    eprintln!(
        "  {what}: {} of {} sessions seeded in {:.1} s ({:.0}/s){}",
        seeded.created,
        seeded.asked,
        seeded.elapsed.as_secs_f64(),
        seeded.per_s(),
        if seeded.cut_short() {
            " — stopped by the time budget"
        } else {
            ""
        }
    );
}

fn seeded_json(seeded: &Seeded) -> Value {
    json!({
        "asked": seeded.asked,
        "created": seeded.created,
        "seed_per_s": seeded.per_s(),
        "seed_s": seeded.elapsed.as_secs_f64(),
        "cut_short": seeded.cut_short(),
    })
}

/// The memory store's bytes per live session, in this process.
struct InProcess {
    seeded: Seeded,
    bytes_per_session: Option<f64>,
}

async fn memory_in_process(plan: &Plan) -> InProcess {
    let before = rss_bytes("self");
    let store = MemoryStore::new(Limits::default(), Arc::new(SystemClock));
    let seeded = seed(
        &store,
        0,
        plan.large_sessions,
        plan.session_concurrency,
        budget(plan),
    )
    .await;
    let after = rss_bytes("self");
    drop(store);
    note_seeded("memory store (in the bench process)", &seeded);
    InProcess {
        bytes_per_session: bytes_per(before, after, (0, seeded.created)),
        seeded,
    }
}

/// One size of the embedded store: seeded here, then served by extauthz.
struct EmbeddedSize {
    seeded: Seeded,
    /// Live sessions while measured: seeded + the hot tokens'.
    live: usize,
    /// Live sessions as extauthz counts them (its admin session included).
    counted: Option<u64>,
    startup: Duration,
    warm: Warm,
    rss: Option<u64>,
    disk: Option<u64>,
}

async fn embedded_size(
    context: &Context<'_>,
    loops: &Loops,
    label: &str,
    sessions: usize,
) -> Result<EmbeddedSize, BoxError> {
    let plan = context.plan;
    let folder = Folder::fresh(label);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = MemoryStore::open_durable(&folder.0, Limits::default(), clock)?;
    let seeded = seed(&store, 0, sessions, EMBEDDED_SEED_CONCURRENCY, budget(plan)).await;
    // Closed: every change committed, the folder's lock released.
    drop(store);
    note_seeded(&format!("embedded store, {label}"), &seeded);
    let disk = folder_bytes(&folder.0);
    let started = Instant::now();
    let server =
        Extauthz::start(context.extauthz, StoreUnderTest::Embedded(&folder.0), plan).await?;
    let startup = started.elapsed();
    eprintln!(
        "  extauthz on it ready in {:.0} ms",
        startup.as_secs_f64() * 1e3
    );
    let run = format!("sessions-{label}-{}", std::process::id());
    let tokens = server.tokens(plan.tokens, &run).await?;
    let target = Target {
        name: "embedded",
        grpc: server.grpc,
        cpu: CpuSource::Process(server.pid),
        redis_ports: Vec::new(),
        tokens: &tokens,
        log: Some(&server.log),
    };
    // On an error the server is killed when dropped and its log stays for the message.
    let warm = warm_load(plan, loops, &target).await?;
    let rss = rss_bytes(&server.pid.to_string());
    let counted = live_sessions(&server).await;
    server.stop().await;
    Ok(EmbeddedSize {
        seeded,
        live: seeded.created + plan.tokens,
        counted,
        startup,
        warm,
        rss,
        disk,
    })
}

/// Redis at both sizes: one Redis, one extauthz, seeded on between the two loads.
struct RedisSizes {
    small_seeded: Seeded,
    large_seeded: Seeded,
    small: Warm,
    large: Warm,
    small_live: usize,
    large_live: usize,
    /// Live sessions as extauthz counts them (its admin session included).
    small_counted: Option<u64>,
    large_counted: Option<u64>,
    used_small: u64,
    used_large: u64,
    seed_redis_cpu_us: Option<f64>,
}

async fn redis_sizes(context: &Context<'_>, loops: &Loops) -> Result<RedisSizes, BoxError> {
    let plan = context.plan;
    let redis = RedisServer::start().await;
    let store = RedisStore::new(
        redis.settings(Duration::from_secs(2)),
        Limits::default(),
        Arc::new(SystemClock),
    );
    let small_seeded = seed(
        &store,
        0,
        SMALL_SESSIONS,
        plan.session_concurrency,
        budget(plan),
    )
    .await;
    note_seeded("redis, 1 k", &small_seeded);
    let server = Extauthz::start(context.extauthz, StoreUnderTest::Redis(&redis), plan).await?;
    let run = format!("sessions-redis-{}", std::process::id());
    let tokens = server.tokens(plan.tokens, &run).await?;
    let target = Target {
        name: "redis",
        grpc: server.grpc,
        cpu: CpuSource::Process(server.pid),
        redis_ports: vec![redis.port],
        tokens: &tokens,
        log: Some(&server.log),
    };
    // On an error the server is killed when dropped and its log stays for the message.
    let small = warm_load(plan, loops, &target).await?;
    // Counted before used_memory is read: the admin session is then in both sizes' figures.
    let small_counted = live_sessions(&server).await;
    let used_small = redis.used_memory();
    let redis_before = crate::cpu::redis_cpu(redis.port);
    let more = plan.large_sessions.saturating_sub(SMALL_SESSIONS);
    let large_seeded = seed(
        &store,
        SMALL_SESSIONS,
        more,
        plan.session_concurrency,
        budget(plan),
    )
    .await;
    let seed_redis_cpu_us = crate::cpu::redis_cpu(redis.port)
        .zip(redis_before)
        .map(|(after, before)| micros_per(after - before, large_seeded.created as u64));
    let used_large = redis.used_memory();
    note_seeded("redis, on to the large size", &large_seeded);
    let large = warm_load(plan, loops, &target).await?;
    let large_counted = live_sessions(&server).await;
    server.stop().await;
    drop(store);
    let small_live = small_seeded.created + plan.tokens;
    Ok(RedisSizes {
        small_live,
        large_live: small_live + large_seeded.created,
        small_seeded,
        large_seeded,
        small_counted,
        large_counted,
        small,
        large,
        used_small,
        used_large,
        seed_redis_cpu_us,
    })
}

/// A sentence on answers that were not "allowed" in the measured loops, when there were any.
pub fn not_allowed_note<'a>(loads: impl IntoIterator<Item = (String, &'a Warm)>) -> String {
    let notes: Vec<String> = loads
        .into_iter()
        .filter(|(_, warm)| warm.not_allowed() > 0)
        .map(|(label, warm)| {
            format!(
                "{label}: {} of {}",
                warm.not_allowed(),
                warm.closed.calls + warm.open.calls
            )
        })
        .collect();
    if notes.is_empty() {
        String::new()
    } else {
        format!(
            "\nAnswers not allowed (a 503 is the 50 ms store deadline overrun): {}.\n",
            notes.join("; ")
        )
    }
}

pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}

/// Live sessions as seeded plus the hot tokens', and extauthz's own count when it differs
/// (its admin session included).
fn live_cell(live: usize, counted: Option<u64>) -> String {
    match counted {
        Some(counted) if counted != live as u64 + 1 => {
            format!(
                "{} (extauthz counts {})",
                thousands(live),
                thousands(counted as usize)
            )
        }
        _ => thousands(live),
    }
}

fn bytes_cell(bytes: Option<f64>) -> String {
    bytes.map_or_else(|| "–".into(), |b| format!("{b:.0}"))
}

fn insert_some(map: &mut Map<String, Value>, key: &str, value: Option<f64>) {
    if let Some(value) = value.filter(|v| v.is_finite()) {
        map.insert(key.into(), json!(value));
    }
}

pub async fn run(context: &Context<'_>) -> Result<Section, BoxError> {
    let plan = context.plan;
    let loops = Loops::of(plan);
    let large_label = format!("{}", plan.large_sessions);

    eprintln!(
        "  memory store: {} sessions in this process",
        plan.large_sessions
    );
    let memory = memory_in_process(plan).await;

    let embedded = if plan.embedded {
        eprintln!("  embedded store: {SMALL_SESSIONS} sessions");
        let small = embedded_size(context, &loops, "1k", SMALL_SESSIONS).await?;
        eprintln!("  embedded store: {} sessions", plan.large_sessions);
        let large = embedded_size(context, &loops, &large_label, plan.large_sessions).await?;
        Some((small, large))
    } else {
        None
    };
    eprintln!(
        "  redis: {SMALL_SESSIONS}, then {} sessions",
        plan.large_sessions
    );
    let redis = redis_sizes(context, &loops).await?;

    let mut markdown = String::new();
    markdown.push_str(&format!(
        "### 1 k vs {} live sessions\n\n",
        thousands(plan.large_sessions)
    ));
    markdown.push_str(&format!(
        "The same warm Check load ({} hot tokens; closed loop {} calls in flight for {:.1} s after \
         {:.2} s warm-up, open loop {}/s for {:.1} s) against a store holding ~{} live sessions \
         and one holding ~{}, through the real extauthz. The stores are seeded from the bench \
         process through `SessionStore::check` (dev tenant, a user per session, issued now): \
         the embedded store on a fresh data folder that extauthz then opens (its start-up reads \
         them back), Redis seeded on from 1 k to the large size under the same running extauthz \
         and tokens. Bytes per session: the extauthz process's RSS (embedded) and the data \
         folder's size at the large size minus the small one, Redis `used_memory`; the memory \
         store's sessions can only be made inside its process, so its figure is the bench \
         process's RSS before and after seeding a `MemoryStore` with the same sessions. \
         Live sessions: seeded plus the hot tokens' (extauthz's own count, from its admin \
         overview, is shown only where it differs beyond its admin session). \
         Goal: at the large size, throughput ≥ {THROUGHPUT_GOAL}× and both p99s ≤ {P99_GOAL}× \
         the small size's.\n\n",
        plan.tokens,
        plan.concurrency,
        loops.closed,
        loops.warmup,
        plan.rate,
        loops.open,
        thousands(SMALL_SESSIONS),
        thousands(plan.large_sessions),
    ));
    markdown.push_str(
        "| store | live sessions | checks/s | closed p99, ms | open p99, ms | server CPU µs/check \
         | Redis CPU µs/check | seeded/s | extauthz start-up, ms | bytes/session |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    let mut json = Map::new();
    json.insert("small_sessions".into(), json!(SMALL_SESSIONS));
    json.insert("large_sessions".into(), json!(plan.large_sessions));
    let mut ratio_rows = Vec::new();

    if let Some((small, large)) = &embedded {
        let rss = bytes_per(small.rss, large.rss, (small.live, large.live));
        let disk = bytes_per(small.disk, large.disk, (small.live, large.live));
        for (size, label) in [(small, "small"), (large, "large")] {
            markdown.push_str(&format!(
                "| embedded | {} | {} | {:.0} | {:.0} | {} |\n",
                live_cell(size.live, size.counted),
                size.warm.cells(),
                size.seeded.per_s(),
                size.startup.as_secs_f64() * 1e3,
                if label == "large" {
                    format!("{} (RSS), {} (disk)", bytes_cell(rss), bytes_cell(disk))
                } else {
                    "".into()
                }
            ));
        }
        let ratios = Ratios::of(&small.warm, &large.warm);
        ratio_rows.push(("embedded", ratios));
        let mut figures = Map::new();
        for (size, label) in [(small, "small"), (large, "large")] {
            let mut one = size.warm.json();
            one.insert("live_sessions".into(), json!(size.live));
            if let Some(counted) = size.counted {
                one.insert("live_sessions_counted".into(), json!(counted));
            }
            one.insert("seeding".into(), seeded_json(&size.seeded));
            one.insert("startup_ms".into(), json!(size.startup.as_secs_f64() * 1e3));
            if let Some(rss) = size.rss {
                one.insert("rss_bytes".into(), json!(rss));
            }
            if let Some(disk) = size.disk {
                one.insert("disk_bytes".into(), json!(disk));
            }
            figures.insert(label.into(), Value::Object(one));
        }
        insert_some(&mut figures, "rss_bytes_per_session", rss);
        insert_some(&mut figures, "disk_bytes_per_session", disk);
        figures.insert("ratios".into(), ratios.json());
        json.insert("embedded".into(), Value::Object(figures));
    }

    if embedded.is_none() {
        markdown.push_str("| embedded | skipped (`BENCH_EMBEDDED=0`) |||||||||\n");
    }
    let redis_bytes = bytes_per(
        Some(redis.used_small),
        Some(redis.used_large),
        (redis.small_live, redis.large_live),
    );
    for (warm, live, counted, seeded, label) in [
        (
            &redis.small,
            redis.small_live,
            redis.small_counted,
            &redis.small_seeded,
            "small",
        ),
        (
            &redis.large,
            redis.large_live,
            redis.large_counted,
            &redis.large_seeded,
            "large",
        ),
    ] {
        markdown.push_str(&format!(
            "| redis | {} | {} | {:.0} | – | {} |\n",
            live_cell(live, counted),
            warm.cells(),
            seeded.per_s(),
            if label == "large" {
                format!("{} (`used_memory`)", bytes_cell(redis_bytes))
            } else {
                "".into()
            }
        ));
    }
    markdown.push_str(&format!(
        "| memory (in the bench process) | {} | – | – | – | – | – | {:.0} | – | {} (RSS) |\n",
        thousands(memory.seeded.created),
        memory.seeded.per_s(),
        bytes_cell(memory.bytes_per_session)
    ));
    let redis_ratios = Ratios::of(&redis.small, &redis.large);
    ratio_rows.push(("redis", redis_ratios));
    let mut figures = Map::new();
    for (warm, live, counted, seeded, used, label) in [
        (
            &redis.small,
            redis.small_live,
            redis.small_counted,
            &redis.small_seeded,
            redis.used_small,
            "small",
        ),
        (
            &redis.large,
            redis.large_live,
            redis.large_counted,
            &redis.large_seeded,
            redis.used_large,
            "large",
        ),
    ] {
        let mut one = warm.json();
        one.insert("live_sessions".into(), json!(live));
        if let Some(counted) = counted {
            one.insert("live_sessions_counted".into(), json!(counted));
        }
        one.insert("seeding".into(), seeded_json(seeded));
        one.insert("used_memory_bytes".into(), json!(used));
        figures.insert(label.into(), Value::Object(one));
    }
    insert_some(&mut figures, "bytes_per_session", redis_bytes);
    insert_some(
        &mut figures,
        "seed_redis_cpu_us_per_session",
        redis.seed_redis_cpu_us,
    );
    figures.insert("ratios".into(), redis_ratios.json());
    json.insert("redis".into(), Value::Object(figures));
    let mut figures = Map::new();
    figures.insert("seeding".into(), seeded_json(&memory.seeded));
    insert_some(
        &mut figures,
        "rss_bytes_per_session",
        memory.bytes_per_session,
    );
    json.insert("memory".into(), Value::Object(figures));

    markdown.push_str(&format!(
        "\n| store | throughput, large / small | closed p99, large / small | open p99, large / small \
         | goal (≥ {THROUGHPUT_GOAL}×, ≤ {P99_GOAL}×, ≤ {P99_GOAL}×) |\n|---|---:|---:|---:|---|\n"
    ));
    for (store, ratios) in &ratio_rows {
        markdown.push_str(&format!("| {store} | {} |\n", ratios.cells()));
    }
    let mut loads = Vec::new();
    if let Some((small, large)) = &embedded {
        loads.push((format!("embedded {}", thousands(small.live)), &small.warm));
        loads.push((format!("embedded {}", thousands(large.live)), &large.warm));
    }
    loads.push((
        format!("redis {}", thousands(redis.small_live)),
        &redis.small,
    ));
    loads.push((
        format!("redis {}", thousands(redis.large_live)),
        &redis.large,
    ));
    markdown.push_str(&not_allowed_note(loads));
    let cut: Vec<String> = embedded
        .iter()
        .flat_map(|(s, l)| [("embedded", s.seeded), ("embedded", l.seeded)])
        .chain([
            ("redis", redis.small_seeded),
            ("redis", redis.large_seeded),
            ("memory", memory.seeded),
        ])
        .filter(|(_, seeded)| seeded.cut_short())
        .map(|(store, seeded)| format!("{store}: {} of {}", seeded.created, seeded.asked))
        .collect();
    if !cut.is_empty() {
        markdown.push_str(&format!(
            "\nSeeding stopped at its time budget ({} s) before every session was made: {}.\n",
            budget(plan).as_secs(),
            cut.join("; ")
        ));
    }
    Ok(Section {
        markdown,
        json: Value::Object(json),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\tgrantflow\nVmPeak:\t  9000 kB\nVmRSS:\t   1234 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(1234 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\t12 MB\n"), None);
        assert!(rss_bytes("self").is_some_and(|b| b > 0));
    }

    #[test]
    fn bytes_per_session_needs_both_sizes_and_more_sessions() {
        assert_eq!(bytes_per(Some(1_000), Some(3_000), (10, 20)), Some(200.0));
        assert_eq!(bytes_per(Some(3_000), Some(1_000), (10, 20)), Some(-200.0));
        assert_eq!(bytes_per(None, Some(3_000), (10, 20)), None);
        assert_eq!(bytes_per(Some(1_000), Some(3_000), (20, 20)), None);
    }

    #[test]
    fn ratios_and_their_goal() {
        let met = Ratios::from_figures((1000.0, 2.0, 0.5), (950.0, 2.1, 0.52));
        assert!((met.throughput - 0.95).abs() < 1e-9);
        assert_eq!(met.verdict(), "met");
        let slow = Ratios::from_figures((1000.0, 2.0, 0.5), (850.0, 2.0, 0.5));
        assert_eq!(slow.verdict(), "missed");
        let late = Ratios::from_figures((1000.0, 2.0, 0.5), (1000.0, 2.0, 0.6));
        assert_eq!(late.verdict(), "missed");
        let unmeasured = Ratios::from_figures((0.0, 2.0, 0.5), (1000.0, 2.0, 0.5));
        assert_eq!(unmeasured.verdict(), "not measured");
        assert!(unmeasured.json().get("throughput_ratio").is_none());
    }

    #[test]
    fn the_short_mode_shortens_the_loops() {
        use clap::Parser;
        let short = Plan::new(&crate::settings::Settings::parse_from([
            "bench",
            "--seconds",
            "2",
        ]))
        .unwrap();
        let loops = Loops::of(&short);
        assert!(loops.closed <= 0.5 && loops.open <= 0.5 && loops.warmup <= 0.25);
        let full = Plan::new(&crate::settings::Settings::parse_from(["bench"])).unwrap();
        assert_eq!(
            Loops::of(&full),
            Loops {
                warmup: full.warmup,
                closed: full.seconds,
                open: full.open_seconds
            }
        );
    }

    #[test]
    fn extauthz_count_is_shown_only_when_it_differs_beyond_its_admin_session() {
        assert_eq!(live_cell(1_064, Some(1_065)), "1\u{202f}064");
        assert_eq!(live_cell(1_064, None), "1\u{202f}064");
        assert_eq!(
            live_cell(1_064, Some(64)),
            "1\u{202f}064 (extauthz counts 64)"
        );
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(1_000_064), "1\u{202f}000\u{202f}064");
        assert_eq!(thousands(999), "999");
    }
}
