//! The `sessions` row's stores at their two sizes: seeded from this process through the store
//! API ([`footprint::seed`](crate::footprint::seed)) within a time budget, then measured with
//! the warm load ([`embedded_size`], [`redis_sizes`]; the memory store in this process,
//! [`memory_in_process`]); and what a live session costs: RSS ([`rss_bytes`]), the data
//! folder's bytes, extauthz's own count ([`live_sessions`]), bytes per session ([`bytes_per`]).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use grantflow_core::clock::{Clock, SystemClock};
use grantflow_core::decision::Limits;
use grantflow_core::store::{MemoryStore, RedisStore};
use grantflow_e2e::redis::RedisServer;
use serde_json::{Value, json};

use super::SMALL_SESSIONS;
use super::warm::{Warm, warm_load};
use crate::BoxError;
use crate::cpu::{CpuSource, micros_per};
use crate::extauthz::{Extauthz, StoreUnderTest};
use crate::footprint::{Seeded, seed};
use crate::load::Target;
use crate::measure::Loops;
use crate::rows::Context;
use crate::rows::traffic::DataDir;
use crate::settings::Plan;

/// Seeding stops starting new sessions after this long (per store and size); the report says
/// how many were made.
const SEED_BUDGET: Duration = Duration::from_secs(150);
const SEED_BUDGET_SHORT: Duration = Duration::from_secs(15);
/// Sessions created at once when seeding the embedded store: each creation waits for its
/// group commit (an fsync), so many in flight make large groups.
const EMBEDDED_SEED_CONCURRENCY: usize = 512;

/// The dev tenant's live sessions as the server counts them (`GET /api/v1/overview`, with an
/// admin token from `/dev/token`, whose one session is among them); `None` when it does not
/// answer.
pub(super) async fn live_sessions(server: &Extauthz) -> Option<u64> {
    let http = reqwest::Client::new();
    let admin = server.admin;
    let token = text_of(
        http.get(format!(
            "http://{admin}/dev/token?admin=true&user=benchadmin&session=bench-admin"
        )),
        Duration::from_secs(5),
    )
    .await?;
    let overview = text_of(
        http.get(format!("http://{admin}/api/v1/overview"))
            .bearer_auth(token.trim()),
        Duration::from_secs(10),
    )
    .await?;
    serde_json::from_str::<Value>(&overview).ok()?["liveSessions"].as_u64()
}

/// The body of a successful answer to `request` within `timeout`; `None` otherwise.
async fn text_of(request: reqwest::RequestBuilder, timeout: Duration) -> Option<String> {
    let response = request.timeout(timeout).send().await.ok()?;
    response.error_for_status().ok()?.text().await.ok()
}

/// Resident memory of a process (`VmRSS` of `/proc/<pid>/status`, or `self`), in bytes.
pub(super) fn rss_bytes(pid: &str) -> Option<u64> {
    parse_vm_rss(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

pub(super) fn parse_vm_rss(status: &str) -> Option<u64> {
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
pub(super) fn bytes_per(
    before: Option<u64>,
    after: Option<u64>,
    sessions: (usize, usize),
) -> Option<f64> {
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

pub(super) fn budget(plan: &Plan) -> Duration {
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

pub(super) fn seeded_json(seeded: &Seeded) -> Value {
    json!({
        "asked": seeded.asked,
        "created": seeded.created,
        "seed_per_s": seeded.per_s(),
        "seed_s": seeded.elapsed.as_secs_f64(),
        "cut_short": seeded.cut_short(),
    })
}

/// The memory store's bytes per live session, in this process.
pub(super) struct InProcess {
    pub(super) seeded: Seeded,
    pub(super) bytes_per_session: Option<f64>,
}

pub(super) async fn memory_in_process(plan: &Plan) -> InProcess {
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
pub(super) struct EmbeddedSize {
    pub(super) seeded: Seeded,
    /// Live sessions while measured: seeded + the hot tokens'.
    pub(super) live: usize,
    /// Live sessions as extauthz counts them (its admin session included).
    pub(super) counted: Option<u64>,
    pub(super) startup: Duration,
    pub(super) warm: Warm,
    pub(super) rss: Option<u64>,
    pub(super) disk: Option<u64>,
}

pub(super) async fn embedded_size(
    context: &Context<'_>,
    loops: &Loops,
    label: &str,
    sessions: usize,
) -> Result<EmbeddedSize, BoxError> {
    let plan = context.plan;
    let folder = DataDir::fresh(&format!("sessions-{label}"));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = MemoryStore::open_durable(folder.path(), Limits::default(), clock)?;
    let seeded = seed(&store, 0, sessions, EMBEDDED_SEED_CONCURRENCY, budget(plan)).await;
    // Closed: every change committed, the folder's lock released.
    drop(store);
    note_seeded(&format!("embedded store, {label}"), &seeded);
    let disk = folder_bytes(folder.path());
    let started = Instant::now();
    let server = Extauthz::start(
        context.extauthz,
        StoreUnderTest::Embedded(folder.path()),
        plan,
    )
    .await?;
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
pub(super) struct RedisSizes {
    pub(super) small_seeded: Seeded,
    pub(super) large_seeded: Seeded,
    pub(super) small: Warm,
    pub(super) large: Warm,
    pub(super) small_live: usize,
    pub(super) large_live: usize,
    /// Live sessions as extauthz counts them (its admin session included).
    pub(super) small_counted: Option<u64>,
    pub(super) large_counted: Option<u64>,
    pub(super) used_small: u64,
    pub(super) used_large: u64,
    pub(super) seed_redis_cpu_us: Option<f64>,
}

pub(super) async fn redis_sizes(
    context: &Context<'_>,
    loops: &Loops,
) -> Result<RedisSizes, BoxError> {
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
