//! Row `burst`: a burst of brand-new tokens during steady warm traffic (issue 10, item 3: warm
//! p99 during the burst ≤ 2× without it).
//!
//! Per store, a fresh `grantflow-extauthz`. An open loop at `plan.rate` cycles through the
//! `plan.tokens` hot tokens (each seen once before) for the whole scenario, every send stamped
//! with its time. Meanwhile, after a lead-in, a separate client (its own thread, tokio runtime
//! and HTTP/2 connections) sends [`BURST_TOKENS`] tokens minted beforehand (distinct users
//! and sessions), [`BURST_CONCURRENCY`] in flight, as fast as the server answers: each a full
//! RS256 verification and a session creation. Warm requests sent while a burst is in flight
//! are "with"; those sent in windows of the same length just before and just after each burst
//! (a [`GAP`] apart) are "without". Windows alternate: without, with, without, with, …,
//! without.
//!
//! The pieces it shares with the `revocations` row (a fresh server per store, minting, first
//! sight, the client on its own thread, the figures' helpers) are in [`super::traffic`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use envoy_types::ext_authz::v3::pb::CheckRequest;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;

use crate::BoxError;
use crate::cpu::{CpuSample, CpuSource};
use crate::load::{Answer, Client, call, connect};
use crate::settings::Plan;

use super::traffic::{
    OwnThread, RunningStore, cell, first_sight, histogram, mint, ms, not_ours, on_each_store, put,
    ratio, requests_for,
};
use super::{Context, Section, verdict};

/// New tokens per burst (full run / short mode). A release server answers thousands a second,
/// so one burst lasts a fraction of a second: the full run repeats it to gather warm samples.
const BURST_TOKENS: usize = 2_000;
const BURST_TOKENS_SHORT: usize = 300;
/// Bursts per store (full run / short mode); each has a window without before and after.
const ROUNDS: usize = 4;
const ROUNDS_SHORT: usize = 1;
/// Burst calls in flight, over this many HTTP/2 connections of the burst's own client.
const BURST_CONCURRENCY: usize = 16;
const BURST_CONNECTIONS: usize = 2;
/// A burst sends nothing after this long (a bound; a release build needs well under a second).
const BURST_LIMIT: Duration = Duration::from_secs(20);
const BURST_LIMIT_SHORT: Duration = Duration::from_secs(3);
/// Between a window without and the burst's own window, so that neither sees the other's
/// edge.
const GAP: Duration = Duration::from_millis(100);
/// The goal: warm p99 during the burst ≤ this × without it.
const GOAL: f64 = 2.0;

pub async fn run(context: &Context<'_>) -> Result<Section, BoxError> {
    let results = on_each_store(context, "burst", measure).await?;
    Ok(section(context.plan, &results))
}

/// One warm request of the open loop: when it was sent (after the loop's start), how long its
/// answer took, and what it was.
struct Sent {
    at: Duration,
    micros: u64,
    answer: Answer,
}

/// One burst, as its own client saw it.
struct Burst {
    started: Instant,
    ended: Instant,
    tokens: usize,
    allowed: usize,
    /// Not allowed: the answer (`denied 503`, `failed`, `not sent`) → how many.
    not_allowed: BTreeMap<String, u64>,
    latency: Histogram<u64>,
}

/// What the row measured on one store.
struct BurstRun {
    without: Histogram<u64>,
    with: Histogram<u64>,
    warm_not_allowed: u64,
    warm_dropped: u64,
    bursts: Vec<Burst>,
    /// Cores busy with other processes' work over the whole scenario.
    not_ours_cores: Option<f64>,
}

impl BurstRun {
    fn burst_tokens(&self) -> usize {
        self.bursts.iter().map(|b| b.tokens).sum()
    }

    fn burst_allowed(&self) -> usize {
        self.bursts.iter().map(|b| b.allowed).sum()
    }

    /// New tokens per second while the bursts ran.
    fn burst_rate(&self) -> Option<f64> {
        let seconds: f64 = self
            .bursts
            .iter()
            .map(|b| (b.ended - b.started).as_secs_f64())
            .sum();
        (seconds > 0.0).then(|| self.burst_tokens() as f64 / seconds)
    }

    /// The bursts' answers other than "allowed", together.
    fn not_allowed(&self) -> BTreeMap<String, u64> {
        let mut all = BTreeMap::new();
        for (answer, n) in self.bursts.iter().flat_map(|b| &b.not_allowed) {
            *all.entry(answer.clone()).or_default() += n;
        }
        all
    }

    fn burst_latency(&self) -> Histogram<u64> {
        let mut all = histogram();
        for burst in &self.bursts {
            all.add(&burst.latency).expect("same histogram bounds");
        }
        all
    }

    fn p99_ratio(&self) -> Option<f64> {
        ratio(ms(&self.with, 0.99), ms(&self.without, 0.99))
    }
}

/// The sizes of the scenario for this plan: (tokens per burst, bursts, lead-in before the
/// first window).
fn sizes(plan: &Plan) -> (usize, usize, Duration) {
    if plan.short {
        (
            BURST_TOKENS_SHORT,
            ROUNDS_SHORT,
            Duration::from_secs_f64(plan.warmup.min(0.5) + 0.3),
        )
    } else {
        (
            BURST_TOKENS,
            ROUNDS,
            Duration::from_secs_f64(plan.warmup.min(2.0) + 1.0),
        )
    }
}

async fn measure(plan: &Plan, store: &RunningStore) -> Result<BurstRun, BoxError> {
    let (per_burst, rounds, lead) = sizes(plan);
    let admin = store.server.admin;
    let minting = Instant::now();
    let hot = mint(admin, &format!("hot-{}", store.run), plan.tokens, false).await?;
    let mut burst_tokens = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let prefix = format!("burst{round}-{}", store.run);
        burst_tokens.push(mint(admin, &prefix, per_burst, false).await?);
    }
    eprintln!(
        "    {} tokens minted in {:.1} s",
        plan.tokens + rounds * per_burst,
        minting.elapsed().as_secs_f64()
    );
    let hot_requests = Arc::new(requests_for(&hot, 0));
    let clients = connect(store.server.grpc, plan.connections).await?;
    first_sight(&clients[0], &hot_requests, "hot").await?;

    // The warm traffic runs from here to the end; the windows are cut from it afterwards.
    let stop = Arc::new(AtomicBool::new(false));
    // Bounded whatever happens to the bursts.
    let burst_limit = if plan.short {
        BURST_LIMIT_SHORT
    } else {
        BURST_LIMIT
    };
    let limit = lead + (GAP * 4 + burst_limit * 3) * rounds as u32;
    let cpu = CpuSource::Process(store.server.pid);
    let cpu_before = CpuSample::take(cpu, store.redis_port());
    let started = Instant::now();
    let warm = tokio::spawn(paced(
        clients.clone(),
        hot_requests.clone(),
        plan.rate,
        stop.clone(),
        started,
        limit,
    ));
    let scenario = async {
        tokio::time::sleep(lead).await;
        let mut bursts = Vec::with_capacity(rounds);
        for (round, tokens) in burst_tokens.iter().enumerate() {
            let requests = requests_for(tokens, 1_000_000 * (round + 1));
            let grpc = store.server.grpc;
            let burst = OwnThread::spawn("bench-burst", move || {
                send_burst(grpc, requests, burst_limit)
            })?
            .join();
            let burst = burst.await??;
            let length = burst.ended - burst.started;
            bursts.push(burst);
            // The window after this burst, then the one before the next.
            let pause = if round + 1 < rounds {
                GAP * 2 + length * 2
            } else {
                GAP + length
            };
            tokio::time::sleep(pause + Duration::from_millis(20)).await;
        }
        Ok::<_, BoxError>(bursts)
    };
    let bursts = scenario.await;
    stop.store(true, Ordering::Relaxed);
    let (sent, dropped) = warm.await?;
    let used = CpuSample::take(cpu, store.redis_port()).since(&cpu_before);
    let seconds = started.elapsed().as_secs_f64();
    let bursts = bursts?;

    let windows: Vec<(Duration, Duration)> = bursts
        .iter()
        .map(|b| (b.started - started, b.ended - started))
        .collect();
    let mut run = BurstRun {
        without: histogram(),
        with: histogram(),
        warm_not_allowed: 0,
        warm_dropped: dropped,
        bursts,
        not_ours_cores: (seconds > 0.0).then(|| not_ours(&used) / seconds),
    };
    let settled = lead.saturating_sub(Duration::from_secs_f64(1.0).min(lead / 2));
    for sent in &sent {
        if sent.answer != Answer::Allowed {
            run.warm_not_allowed += 1;
        }
        match classify(sent.at, &windows, GAP, settled) {
            Some(true) => run.with.saturating_record(sent.micros),
            Some(false) => run.without.saturating_record(sent.micros),
            None => {}
        }
    }
    eprintln!(
        "    warm p99 without {} ms ({} calls), with {} ms ({} calls); burst {}/{} allowed, {} tokens/s",
        cell(ms(&run.without, 0.99), 3),
        run.without.len(),
        cell(ms(&run.with, 0.99), 3),
        run.with.len(),
        run.burst_allowed(),
        run.burst_tokens(),
        cell(run.burst_rate(), 0),
    );
    Ok(run)
}

/// Whether a warm request sent at `at` falls in a burst's window (`Some(true)`), in a window
/// without a burst (`Some(false)`: the burst's length just before it or just after it, `gap`
/// apart, not before `settled`), or in neither.
fn classify(
    at: Duration,
    bursts: &[(Duration, Duration)],
    gap: Duration,
    settled: Duration,
) -> Option<bool> {
    if bursts.iter().any(|&(start, end)| start <= at && at <= end) {
        return Some(true);
    }
    let without = bursts.iter().any(|&(start, end)| {
        let length = end - start;
        let before_end = start.saturating_sub(gap);
        let before_start = before_end.saturating_sub(length).max(settled);
        let after_start = end + gap;
        (before_start <= at && at < before_end) || (after_start < at && at <= after_start + length)
    });
    without.then_some(false)
}

/// The burst: every request sent once, [`BURST_CONCURRENCY`] in flight over
/// [`BURST_CONNECTIONS`] connections of its own, as fast as they are answered; none sent after
/// `limit` ([`BURST_LIMIT`]; those count as not allowed).
async fn send_burst(
    grpc: SocketAddr,
    requests: Vec<CheckRequest>,
    limit: Duration,
) -> Result<Burst, BoxError> {
    let clients = connect(grpc, BURST_CONNECTIONS).await?;
    let tokens = requests.len();
    let started = Instant::now();
    let deadline = started + limit;
    let answers: Vec<Option<(Answer, u64)>> =
        futures::stream::iter(requests.into_iter().enumerate())
            .map(|(i, request)| {
                let mut client = clients[i % clients.len()].clone();
                async move {
                    let sent = Instant::now();
                    if sent > deadline {
                        return None;
                    }
                    let answer = call(&mut client, request).await;
                    Some((answer, sent.elapsed().as_micros() as u64))
                }
            })
            .buffer_unordered(BURST_CONCURRENCY)
            .collect()
            .await;
    let ended = Instant::now();
    let mut latency = histogram();
    let mut allowed = 0;
    let mut not_allowed = BTreeMap::new();
    for answer in answers {
        let Some((answer, micros)) = answer else {
            *not_allowed.entry("not sent".into()).or_default() += 1;
            continue;
        };
        latency.saturating_record(micros);
        match answer {
            Answer::Allowed => allowed += 1,
            Answer::Denied(code) => *not_allowed.entry(format!("denied {code}")).or_default() += 1,
            Answer::Failed => *not_allowed.entry("failed".into()).or_default() += 1,
        }
    }
    Ok(Burst {
        started,
        ended,
        tokens,
        allowed,
        not_allowed,
        latency,
    })
}

/// An open loop at `rate` over `requests` from `started` until `stop` (or `limit` after
/// `started`), every send stamped with its time after `started`; at most 1 024 unanswered (more are dropped and counted).
async fn paced(
    clients: Vec<Client>,
    requests: Arc<Vec<CheckRequest>>,
    rate: u32,
    stop: Arc<AtomicBool>,
    started: Instant,
    limit: Duration,
) -> (Vec<Sent>, u64) {
    const MAX_OUTSTANDING: usize = 1_024;
    let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let outstanding = Arc::new(Semaphore::new(MAX_OUTSTANDING));
    let (done, mut answers) = tokio::sync::mpsc::unbounded_channel::<Sent>();
    let mut dropped = 0;
    let mut i: u64 = 0;
    loop {
        let due = started + period.mul_f64(i as f64);
        if stop.load(Ordering::Relaxed) || due - started > limit {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let Ok(permit) = outstanding.clone().try_acquire_owned() else {
            dropped += 1;
            i += 1;
            continue;
        };
        let mut client = clients[i as usize % clients.len()].clone();
        let request = requests[i as usize % requests.len()].clone();
        let done = done.clone();
        tokio::spawn(async move {
            let sent = Instant::now();
            let answer = call(&mut client, request).await;
            let _ = done.send(Sent {
                at: sent - started,
                micros: sent.elapsed().as_micros() as u64,
                answer,
            });
            drop(permit);
        });
        i += 1;
    }
    drop(done);
    let mut sent = Vec::new();
    // Every call is bounded by load.rs's call timeout, so this ends.
    while let Some(one) = answers.recv().await {
        sent.push(one);
    }
    (sent, dropped)
}

/// ` (denied 503: 3, failed: 1)` for answers other than "allowed"; empty when there were none.
fn answers_text(not_allowed: &BTreeMap<String, u64>) -> String {
    if not_allowed.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = not_allowed
        .iter()
        .map(|(answer, n)| format!("{answer}: {n}"))
        .collect();
    format!(" ({})", parts.join(", "))
}

fn section(plan: &Plan, results: &[(&'static str, BurstRun)]) -> Section {
    let (per_burst, rounds, _) = sizes(plan);
    let mut markdown = format!(
        "### A burst of new tokens during steady warm traffic\n\n\
         Per store a fresh extauthz; an open loop at {rate}/s over the {hot} hot tokens runs \
         throughout. A separate client (own thread and connections, {BURST_CONCURRENCY} in \
         flight) sends {bursts} of {per_burst} brand-new tokens (minted before, distinct users \
         and sessions: each a full RS256 verification and a session creation) as fast as they \
         are answered. Warm requests sent during a burst are compared with those sent in \
         windows of the burst's length just before and after it ({gap} ms apart); only warm \
         requests count toward the warm latency.\n\n\
         | store | warm p50 / p99 without, ms (calls) | warm p50 / p99 during the burst, ms (calls) | p99 during ÷ without | goal ≤ {GOAL}× | burst: new tokens/s | burst p50 / p99, ms | burst tokens allowed | warm answers not allowed | machine busy not ours, cores |\n\
         |---|---:|---:|---:|---|---:|---:|---:|---:|---:|\n",
        rate = plan.rate,
        hot = plan.tokens,
        bursts = if rounds == 1 {
            "one burst".to_owned()
        } else {
            format!("{rounds} bursts")
        },
        gap = GAP.as_millis(),
    );
    let mut figures = Map::new();
    figures.insert("rate_per_s".into(), json!(plan.rate));
    figures.insert("hot_tokens".into(), json!(plan.tokens));
    figures.insert("tokens_per_burst".into(), json!(per_burst));
    figures.insert("bursts".into(), json!(rounds));
    figures.insert("burst_concurrency".into(), json!(BURST_CONCURRENCY));
    figures.insert("goal_p99_ratio_max".into(), json!(GOAL));
    for (store, run) in results {
        let ratio = run.p99_ratio();
        let goal = verdict(ratio.unwrap_or(f64::NAN), GOAL, true);
        let burst_latency = run.burst_latency();
        markdown.push_str(&format!(
            "| {store} | {} / {} ({}) | {} / {} ({}) | {} | {goal} | {} | {} / {} | {} of {}{} | {} | {} |\n",
            cell(ms(&run.without, 0.5), 3),
            cell(ms(&run.without, 0.99), 3),
            run.without.len(),
            cell(ms(&run.with, 0.5), 3),
            cell(ms(&run.with, 0.99), 3),
            run.with.len(),
            ratio.map_or("–".into(), |r| format!("{r:.2}×")),
            cell(run.burst_rate(), 0),
            cell(ms(&burst_latency, 0.5), 2),
            cell(ms(&burst_latency, 0.99), 2),
            run.burst_allowed(),
            run.burst_tokens(),
            answers_text(&run.not_allowed()),
            run.warm_not_allowed,
            cell(run.not_ours_cores, 2),
        ));
        let mut one = Map::new();
        for (key, latency) in [("warm_without", &run.without), ("warm_with", &run.with)] {
            let mut figures = Map::new();
            put(&mut figures, "p50_ms", ms(latency, 0.5));
            put(&mut figures, "p99_ms", ms(latency, 0.99));
            figures.insert("calls".into(), json!(latency.len()));
            one.insert(key.into(), Value::Object(figures));
        }
        put(&mut one, "warm_p99_ratio", ratio);
        one.insert("warm_not_allowed".into(), json!(run.warm_not_allowed));
        one.insert("warm_dropped".into(), json!(run.warm_dropped));
        put(&mut one, "not_ours_cores", run.not_ours_cores);
        let mut burst = Map::new();
        put(&mut burst, "per_s", run.burst_rate());
        put(&mut burst, "p50_ms", ms(&burst_latency, 0.5));
        put(&mut burst, "p99_ms", ms(&burst_latency, 0.99));
        burst.insert("tokens".into(), json!(run.burst_tokens()));
        burst.insert("allowed".into(), json!(run.burst_allowed()));
        burst.insert("not_allowed".into(), json!(run.not_allowed()));
        one.insert("new_tokens".into(), Value::Object(burst));
        one.insert("goal".into(), json!(goal));
        figures.insert((*store).into(), Value::Object(one));
    }
    Section {
        markdown,
        json: Value::Object(figures),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(seconds: f64) -> Duration {
        Duration::from_secs_f64(seconds)
    }

    #[test]
    fn a_warm_request_is_with_during_a_burst_and_without_just_before_or_after() {
        // One burst from 3 s to 4 s, 0.1 s gap, settled from 1 s.
        let bursts = [(s(3.0), s(4.0))];
        let at = |t| classify(s(t), &bursts, s(0.1), s(1.0));
        assert_eq!(at(3.0), Some(true));
        assert_eq!(at(3.5), Some(true));
        assert_eq!(at(4.0), Some(true));
        // Before: [1.9, 2.9); after: (4.1, 5.1].
        assert_eq!(at(1.95), Some(false));
        assert_eq!(at(2.85), Some(false));
        assert_eq!(at(4.5), Some(false));
        assert_eq!(at(5.1), Some(false));
        // In a gap, or outside every window.
        assert_eq!(at(2.95), None);
        assert_eq!(at(4.05), None);
        assert_eq!(at(1.5), None);
        assert_eq!(at(5.3), None);
    }

    #[test]
    fn the_window_before_the_first_burst_starts_only_once_settled() {
        let bursts = [(s(1.0), s(3.0))];
        let at = |t| classify(s(t), &bursts, s(0.1), s(0.5));
        assert_eq!(at(0.4), None);
        assert_eq!(at(0.6), Some(false));
        // A later burst's own window wins over an earlier one's "after".
        let bursts = [(s(1.0), s(2.0)), (s(2.5), s(3.0))];
        assert_eq!(classify(s(2.6), &bursts, s(0.1), s(0.0)), Some(true));
    }

    #[test]
    fn answers_not_allowed_are_named() {
        assert_eq!(answers_text(&BTreeMap::new()), "");
        let answers = BTreeMap::from([("denied 503".to_owned(), 3), ("failed".to_owned(), 1)]);
        assert_eq!(answers_text(&answers), " (denied 503: 3, failed: 1)");
    }

    #[test]
    fn the_short_mode_is_smaller() {
        use clap::Parser;
        let short = Plan::new(&crate::settings::Settings::parse_from([
            "bench",
            "--seconds",
            "2",
        ]))
        .unwrap();
        let full = Plan::new(&crate::settings::Settings::parse_from(["bench"])).unwrap();
        let (short_tokens, short_rounds, short_lead) = sizes(&short);
        let (tokens, rounds, lead) = sizes(&full);
        assert!(short_tokens < tokens && short_rounds <= rounds && short_lead < lead);
    }
}
