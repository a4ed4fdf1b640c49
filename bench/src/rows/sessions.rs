//! 1 k vs 1 M live sessions (issue 10, item 3): the same warm Check load against a store that
//! holds about a thousand live sessions and against one that holds `plan.large_sessions`
//! (1 000 000; 50 000 in the short mode), on the embedded store and on Redis, each through the
//! real `grantflow-extauthz`; and what a live session costs in memory and on disk.
//!
//! The stores are filled from this process through the store API
//! ([`footprint::seed`](crate::footprint::seed)), not with a million RS256 tokens:
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
//! The warm load ([`warm`]: [`loops_of`](warm::loops_of), [`warm_load`](warm::warm_load),
//! [`Warm`](warm::Warm), [`Ratios`]) is shared with the `tenants` row; the
//! seeding and sizing of the stores are in [`seed`].

mod seed;
#[cfg(test)]
mod tests;
pub(super) mod warm;

use serde_json::{Map, Value, json};

use self::seed::{budget, bytes_per, embedded_size, memory_in_process, redis_sizes, seeded_json};
use self::warm::{P99_GOAL, Ratios, THROUGHPUT_GOAL, loops_of, not_allowed_note};
use super::traffic::{cell, put, thousands};
use super::{Context, Section};
use crate::BoxError;

/// The small store: live sessions seeded before the hot tokens add theirs.
pub const SMALL_SESSIONS: usize = 1_000;

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

pub async fn run(context: &Context<'_>) -> Result<Section, BoxError> {
    let plan = context.plan;
    let loops = loops_of(plan);
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
                    format!("{} (RSS), {} (disk)", cell(rss, 0), cell(disk, 0))
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
        put(&mut figures, "rss_bytes_per_session", rss);
        put(&mut figures, "disk_bytes_per_session", disk);
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
                format!("{} (`used_memory`)", cell(redis_bytes, 0))
            } else {
                "".into()
            }
        ));
    }
    markdown.push_str(&format!(
        "| memory (in the bench process) | {} | – | – | – | – | – | {:.0} | – | {} (RSS) |\n",
        thousands(memory.seeded.created),
        memory.seeded.per_s(),
        cell(memory.bytes_per_session, 0)
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
    put(&mut figures, "bytes_per_session", redis_bytes);
    put(
        &mut figures,
        "seed_redis_cpu_us_per_session",
        redis.seed_redis_cpu_us,
    );
    figures.insert("ratios".into(), redis_ratios.json());
    json.insert("redis".into(), Value::Object(figures));
    let mut figures = Map::new();
    figures.insert("seeding".into(), seeded_json(&memory.seeded));
    put(
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
