//! Row `revocations`: a revoke every 100 ms through the real admin API during the closed loop
//! (issue 10, item 3: checks/s and p99 unchanged within 10 %).
//!
//! Per store, a fresh `grantflow-extauthz`. Besides the `plan.tokens` hot tokens the closed loop
//! cycles through, it creates victim sessions (their own users and tokens, each sent once
//! through Check) that the loop never uses. The closed loop then runs in windows of half
//! `plan.seconds`, alternating without / with / with / without (without / with in the short
//! mode); during a window "with", a separate client (its own thread and runtime) ends one
//! victim session every [`PERIOD`] with `POST /api/v1/sessions/{id}/revoke` (bearer admin
//! token from `/dev/token?admin=true`, an `Idempotency-Key`, a reason). The admin API allows
//! each administrator a burst of 60 writes and then one a second, so the revokes rotate over
//! enough administrators (at most [`WRITES_PER_ADMIN`] each) that none is refused with 429.
//! Afterwards every revoked session's token is sent through Check once more: it must be
//! refused (the promise).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};

use crate::BoxError;
use crate::cpu::{CpuSample, CpuSource, micros_per};
use crate::load::{Answer, closed_loop, connect};
use crate::settings::Plan;

use super::traffic::{
    HTTP_TIMEOUT, OwnThread, RunningStore, SETUP_TRIES, call_patiently, cell, first_sight,
    histogram, mint, ms, not_ours, on_each_store, put, ratio, requests_for,
};
use super::{Context, Section, verdict};

/// One revoke every this long during a window "with".
const PERIOD: Duration = Duration::from_millis(100);
/// The goals: checks/s with ≥ this × without; closed p99 with ≤ this × without.
const GOAL_RATE: f64 = 0.9;
const GOAL_P99: f64 = 1.1;
/// Revokes per administrator: under the admin API's burst of 60 writes per administrator.
const WRITES_PER_ADMIN: usize = 50;

pub async fn run(context: &Context<'_>) -> Result<Section, BoxError> {
    let results = on_each_store(context, "revocations", measure).await?;
    Ok(section(context.plan, &results))
}

/// The windows of the closed loop: how long each, and in which order (`true`: with
/// revocations). A full run alternates without, with, with, without, half `plan.seconds` each;
/// the short mode runs one of each, at most 0.75 s.
fn schedule(plan: &Plan) -> (Duration, Vec<bool>) {
    if plan.short {
        let window = (plan.seconds / 2.0).clamp(0.5, 0.75);
        (Duration::from_secs_f64(window), vec![false, true])
    } else {
        let window = Duration::from_secs_f64(plan.seconds / 2.0);
        (window, vec![false, true, true, false])
    }
}

/// Victim sessions needed: one per [`PERIOD`] of every window with revocations, and one spare
/// each; and the administrators they need.
fn victims_and_admins(window: Duration, with_windows: usize) -> (usize, usize) {
    let per_window = (window.as_secs_f64() / PERIOD.as_secs_f64()).ceil() as usize + 1;
    let victims = per_window * with_windows;
    (victims, victims.div_ceil(WRITES_PER_ADMIN).max(1))
}

/// The closed loop's windows of one kind, together.
struct Side {
    windows: Vec<Window>,
    latency: Histogram<u64>,
}

/// One window of the closed loop.
struct Window {
    calls: u64,
    not_allowed: u64,
    elapsed: Duration,
    p99_ms: f64,
    server_cpu: f64,
    redis_cpu: Option<f64>,
    machine_busy: f64,
    /// Busy CPU seconds of other processes.
    not_ours: f64,
}

impl Side {
    fn new() -> Side {
        Side {
            windows: Vec::new(),
            latency: histogram(),
        }
    }

    fn calls(&self) -> u64 {
        self.windows.iter().map(|w| w.calls).sum()
    }

    fn seconds(&self) -> f64 {
        self.windows.iter().map(|w| w.elapsed.as_secs_f64()).sum()
    }

    fn rate(&self) -> Option<f64> {
        let seconds = self.seconds();
        (seconds > 0.0).then(|| self.calls() as f64 / seconds)
    }

    fn server_cpu_us(&self) -> Option<f64> {
        (self.calls() > 0).then(|| {
            micros_per(
                self.windows.iter().map(|w| w.server_cpu).sum(),
                self.calls(),
            )
        })
    }

    fn redis_cpu_us(&self) -> Option<f64> {
        let redis: Option<f64> = self.windows.iter().map(|w| w.redis_cpu).sum();
        redis
            .filter(|_| self.calls() > 0)
            .map(|seconds| micros_per(seconds, self.calls()))
    }

    fn not_allowed(&self) -> u64 {
        self.windows.iter().map(|w| w.not_allowed).sum()
    }

    /// Cores busy with other processes' work, on average over the windows.
    fn not_ours_cores(&self) -> Option<f64> {
        let seconds = self.seconds();
        (seconds > 0.0).then(|| self.windows.iter().map(|w| w.not_ours).sum::<f64>() / seconds)
    }

    /// Busy cores of the whole machine, on average over the windows.
    fn machine_busy_cores(&self) -> Option<f64> {
        let seconds = self.seconds();
        (seconds > 0.0).then(|| self.windows.iter().map(|w| w.machine_busy).sum::<f64>() / seconds)
    }
}

/// What the revoking client did.
struct Revokes {
    /// Sessions the API answered 200 for.
    revoked: Vec<String>,
    /// Answers other than 200 (status, or 0 for no answer).
    failed: Vec<u16>,
    latency: Histogram<u64>,
}

/// What the row measured on one store.
struct RevocationRun {
    without: Side,
    with: Side,
    revokes: Revokes,
    admins: usize,
    /// Revoked sessions whose token Check refused afterwards (401), allowed, or neither.
    refused_after: usize,
    allowed_after: usize,
    /// Neither: another refusal, or still unavailable.
    unknown_after: usize,
}

impl RevocationRun {
    fn rate_ratio(&self) -> Option<f64> {
        ratio(self.with.rate(), self.without.rate())
    }

    fn p99_ratio(&self) -> Option<f64> {
        ratio(
            ms(&self.with.latency, 0.99),
            ms(&self.without.latency, 0.99),
        )
    }

    /// Both goals, and the promise that every revoked session is refused.
    fn goal(&self) -> String {
        let rate = verdict(self.rate_ratio().unwrap_or(f64::NAN), GOAL_RATE, false);
        let p99 = verdict(self.p99_ratio().unwrap_or(f64::NAN), GOAL_P99, true);
        let goal = match (rate, p99) {
            ("met", "met") => "met",
            ("missed", "met") => "missed (checks/s)",
            ("met", "missed") => "missed (p99)",
            ("missed", "missed") => "missed (checks/s and p99)",
            _ => "not measured",
        };
        if self.allowed_after > 0 {
            format!(
                "{goal}; {} revoked session(s) still allowed",
                self.allowed_after
            )
        } else {
            goal.into()
        }
    }
}

async fn measure(plan: &Plan, store: &RunningStore) -> Result<RevocationRun, BoxError> {
    let (window, order) = schedule(plan);
    let with_windows = order.iter().filter(|w| **w).count();
    let (victim_count, admin_count) = victims_and_admins(window, with_windows);
    let admin = store.server.admin;
    let hot = mint(admin, &format!("hot-{}", store.run), plan.tokens, false).await?;
    let victims = mint(admin, &format!("victim-{}", store.run), victim_count, false).await?;
    let admins = mint(admin, &format!("admin-{}", store.run), admin_count, true).await?;
    let hot_requests = Arc::new(requests_for(&hot, 0));
    let victim_requests = requests_for(&victims, 1_000_000);
    let clients = connect(store.server.grpc, plan.connections).await?;
    first_sight(&clients[0], &hot_requests, "hot").await?;
    first_sight(&clients[0], &victim_requests, "victim").await?;
    // Each administrator's own session, created before the windows.
    let http = reqwest::Client::new();
    for minted in &admins {
        http.get(format!("http://{admin}/api/v1/me"))
            .bearer_auth(&minted.token)
            .timeout(HTTP_TIMEOUT)
            .send()
            .await?
            .error_for_status()?;
    }
    let warmup = if plan.short {
        plan.warmup.min(0.25)
    } else {
        plan.warmup
    };
    if warmup > 0.0 {
        closed_loop(
            &clients,
            &hot_requests,
            plan.concurrency,
            Duration::from_secs_f64(warmup),
            plan.max_calls,
        )
        .await;
    }

    let cpu = CpuSource::Process(store.server.pid);
    let redis_port = store.redis_port();
    let admin_tokens: Vec<String> = admins.iter().map(|m| m.token.clone()).collect();
    let mut unrevoked = victims.iter();
    let mut run = RevocationRun {
        without: Side::new(),
        with: Side::new(),
        revokes: Revokes {
            revoked: Vec::new(),
            failed: Vec::new(),
            latency: histogram(),
        },
        admins: admin_count,
        refused_after: 0,
        allowed_after: 0,
        unknown_after: 0,
    };
    for with in order {
        let revoker = if with {
            let sessions: Vec<String> = unrevoked
                .by_ref()
                .take(victim_count / with_windows)
                .map(|m| m.session.clone())
                .collect();
            let tokens = admin_tokens.clone();
            Some(OwnThread::spawn("bench-revoke", move || {
                revoke_every(admin, tokens, sessions, window)
            })?)
        } else {
            None
        };
        let before = CpuSample::take(cpu, redis_port);
        let measured = closed_loop(
            &clients,
            &hot_requests,
            plan.concurrency,
            window,
            plan.max_calls,
        )
        .await;
        let used = CpuSample::take(cpu, redis_port).since(&before);
        let side = if with {
            &mut run.with
        } else {
            &mut run.without
        };
        side.latency
            .add(&measured.latency)
            .expect("same histogram bounds");
        side.windows.push(Window {
            calls: measured.calls,
            not_allowed: measured.calls - measured.allowed,
            elapsed: measured.elapsed,
            p99_ms: measured.quantile_ms(0.99),
            server_cpu: used.server,
            redis_cpu: used.redis,
            machine_busy: used.machine_busy,
            not_ours: not_ours(&used),
        });
        if let Some(revoker) = revoker {
            let revokes = revoker.join().await?;
            run.revokes.revoked.extend(revokes.revoked);
            run.revokes.failed.extend(revokes.failed);
            run.revokes
                .latency
                .add(&revokes.latency)
                .expect("same histogram bounds");
        }
        eprintln!(
            "    {}: {:.0} checks/s, p99 {:.2} ms",
            if with { "with revokes" } else { "without" },
            measured.rate(),
            measured.quantile_ms(0.99)
        );
    }

    // The promise: every revoked session is refused now (401; a 503 or no answer is asked
    // again, a few times).
    let mut client = clients[0].clone();
    for (i, minted) in victims.iter().enumerate() {
        if !run.revokes.revoked.contains(&minted.session) {
            continue;
        }
        let (answer, _) = call_patiently(
            &mut client,
            &victim_requests[i],
            SETUP_TRIES,
            Duration::from_millis(50),
        )
        .await;
        match answer {
            Answer::Denied(401) => run.refused_after += 1,
            Answer::Allowed => run.allowed_after += 1,
            _ => run.unknown_after += 1,
        }
    }
    eprintln!(
        "    {} revokes ({} failed), {} of them refused afterwards",
        run.revokes.revoked.len(),
        run.revokes.failed.len(),
        run.refused_after
    );
    Ok(run)
}

/// Ends `sessions` one every [`PERIOD`] for `window`, through the admin API at `admin`, the
/// administrators' `tokens` taking turns.
async fn revoke_every(
    admin: SocketAddr,
    tokens: Vec<String>,
    sessions: Vec<String>,
    window: Duration,
) -> Revokes {
    let http = reqwest::Client::new();
    let mut revokes = Revokes {
        revoked: Vec::new(),
        failed: Vec::new(),
        latency: histogram(),
    };
    let started = Instant::now();
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::from_std(started + PERIOD), PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for (i, session) in sessions.into_iter().enumerate() {
        ticker.tick().await;
        if started.elapsed() >= window {
            break;
        }
        let sent = Instant::now();
        let answer = http
            .post(format!("http://{admin}/api/v1/sessions/{session}/revoke"))
            .bearer_auth(&tokens[i % tokens.len()])
            .header("idempotency-key", format!("bench-revoke-{session}"))
            .json(&json!({"reason": "benchmark: a revoke every 100 ms under load"}))
            .timeout(HTTP_TIMEOUT)
            .send()
            .await;
        let status = match answer {
            Ok(response) => {
                let status = response.status().as_u16();
                let _ = response.bytes().await;
                status
            }
            Err(_) => 0,
        };
        revokes
            .latency
            .saturating_record(sent.elapsed().as_micros() as u64);
        if status == 200 {
            revokes.revoked.push(session);
        } else {
            revokes.failed.push(status);
        }
    }
    revokes
}

fn section(plan: &Plan, results: &[(&'static str, RevocationRun)]) -> Section {
    let (window, order) = schedule(plan);
    let order_text: Vec<&str> = order
        .iter()
        .map(|with| if *with { "with" } else { "without" })
        .collect();
    let mut markdown = format!(
        "### Revocations under load\n\n\
         Per store a fresh extauthz; the closed loop ({concurrency} calls in flight over \
         {connections} connections, the {hot} hot tokens) runs in windows of {window} s: \
         {order}. During a window \"with\", a separate client ends one live session that the \
         loop does not use every {period} ms through the admin API \
         (`POST /api/v1/sessions/{{id}}/revoke`, administrators taking turns under the write \
         rate limit); afterwards Check must refuse every revoked session.\n\n\
         | store | checks/s without / with | with ÷ without (≥ {GOAL_RATE}×) | closed p99 without / with, ms | with ÷ without (≤ {GOAL_P99}×) | goal | server CPU µs/check without / with | revokes made (failed) | revoke call p50 / p99, ms | revoked sessions refused after | machine busy not ours, cores without / with |\n\
         |---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|\n",
        concurrency = plan.concurrency,
        connections = plan.connections,
        hot = plan.tokens,
        window = window.as_secs_f64(),
        order = order_text.join(", "),
        period = PERIOD.as_millis(),
    );
    let mut figures = Map::new();
    figures.insert("window_s".into(), json!(window.as_secs_f64()));
    figures.insert("order".into(), json!(order_text));
    figures.insert("revoke_every_ms".into(), json!(PERIOD.as_millis() as u64));
    figures.insert("goal_checks_ratio_min".into(), json!(GOAL_RATE));
    figures.insert("goal_p99_ratio_max".into(), json!(GOAL_P99));
    for (store, run) in results {
        let goal = run.goal();
        markdown.push_str(&format!(
            "| {store} | {} / {} | {} | {} / {} | {} | {goal} | {} / {} | {} ({}) | {} / {} | {} of {}{} | {} / {} |\n",
            cell(run.without.rate(), 0),
            cell(run.with.rate(), 0),
            run.rate_ratio().map_or("–".into(), |r| format!("{r:.3}×")),
            cell(ms(&run.without.latency, 0.99), 2),
            cell(ms(&run.with.latency, 0.99), 2),
            run.p99_ratio().map_or("–".into(), |r| format!("{r:.3}×")),
            cell(run.without.server_cpu_us(), 1),
            cell(run.with.server_cpu_us(), 1),
            run.revokes.revoked.len(),
            run.revokes.failed.len(),
            cell(ms(&run.revokes.latency, 0.5), 2),
            cell(ms(&run.revokes.latency, 0.99), 2),
            run.refused_after,
            run.revokes.revoked.len(),
            match (run.allowed_after, run.unknown_after) {
                (0, 0) => String::new(),
                (allowed, unknown) => format!(" ({allowed} still allowed, {unknown} other)"),
            },
            cell(run.without.not_ours_cores(), 2),
            cell(run.with.not_ours_cores(), 2),
        ));
        let mut one = Map::new();
        for (key, side) in [("without", &run.without), ("with", &run.with)] {
            let mut figures = Map::new();
            put(&mut figures, "checks_per_s", side.rate());
            put(&mut figures, "closed_p50_ms", ms(&side.latency, 0.5));
            put(&mut figures, "closed_p99_ms", ms(&side.latency, 0.99));
            put(&mut figures, "server_cpu_us", side.server_cpu_us());
            put(&mut figures, "redis_cpu_us", side.redis_cpu_us());
            put(
                &mut figures,
                "machine_busy_cores",
                side.machine_busy_cores(),
            );
            put(&mut figures, "not_ours_cores", side.not_ours_cores());
            figures.insert("calls".into(), json!(side.calls()));
            figures.insert("not_allowed".into(), json!(side.not_allowed()));
            let windows: Vec<Value> = side
                .windows
                .iter()
                .map(|w| {
                    json!({
                        "checks_per_s": w.calls as f64 / w.elapsed.as_secs_f64().max(1e-9),
                        "closed_p99_ms": w.p99_ms,
                    })
                })
                .collect();
            figures.insert("windows".into(), Value::Array(windows));
            one.insert(key.into(), Value::Object(figures));
        }
        put(&mut one, "checks_ratio", run.rate_ratio());
        put(&mut one, "p99_ratio", run.p99_ratio());
        one.insert("revokes".into(), json!(run.revokes.revoked.len()));
        one.insert("revokes_failed".into(), json!(run.revokes.failed.len()));
        one.insert("revokes_failed_statuses".into(), json!(run.revokes.failed));
        one.insert("administrators".into(), json!(run.admins));
        put(&mut one, "revoke_p50_ms", ms(&run.revokes.latency, 0.5));
        put(&mut one, "revoke_p99_ms", ms(&run.revokes.latency, 0.99));
        one.insert("revoked_refused_after".into(), json!(run.refused_after));
        one.insert("revoked_allowed_after".into(), json!(run.allowed_after));
        one.insert("revoked_unknown_after".into(), json!(run.unknown_after));
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
    use clap::Parser;

    fn plan(args: &[&str]) -> Plan {
        let mut all = vec!["bench"];
        all.extend_from_slice(args);
        Plan::new(&crate::settings::Settings::parse_from(all)).unwrap()
    }

    #[test]
    fn windows_alternate_and_split_the_closed_loop_time() {
        let (window, order) = schedule(&plan(&[]));
        assert_eq!(window, Duration::from_secs(4));
        assert_eq!(order, vec![false, true, true, false]);
        let (window, order) = schedule(&plan(&["--seconds", "1"]));
        assert_eq!(window, Duration::from_millis(500));
        assert_eq!(order, vec![false, true]);
        let (window, _) = schedule(&plan(&["--seconds", "2"]));
        assert_eq!(window, Duration::from_millis(750));
    }

    #[test]
    fn enough_victims_and_administrators_under_the_write_limit() {
        // 4 s windows: 40 revokes each at most, one spare.
        assert_eq!(victims_and_admins(Duration::from_secs(4), 2), (82, 2));
        assert_eq!(victims_and_admins(Duration::from_millis(500), 1), (6, 1));
        let (victims, admins) = victims_and_admins(Duration::from_secs(60), 2);
        assert!(victims.div_ceil(admins) <= WRITES_PER_ADMIN);
    }

    fn side(calls: u64, seconds: f64, p99_us: u64) -> Side {
        let mut side = Side::new();
        side.latency.record(p99_us).unwrap();
        side.windows.push(Window {
            calls,
            not_allowed: 0,
            elapsed: Duration::from_secs_f64(seconds),
            p99_ms: p99_us as f64 / 1000.0,
            server_cpu: calls as f64 * 40e-6,
            redis_cpu: None,
            machine_busy: seconds,
            not_ours: 0.0,
        });
        side
    }

    #[test]
    fn the_goal_needs_both_checks_per_second_and_p99() {
        let run = |rate_with: u64, p99_with: u64| RevocationRun {
            without: side(10_000, 1.0, 1_000),
            with: side(rate_with, 1.0, p99_with),
            revokes: Revokes {
                revoked: Vec::new(),
                failed: Vec::new(),
                latency: histogram(),
            },
            admins: 1,
            refused_after: 0,
            allowed_after: 0,
            unknown_after: 0,
        };
        assert_eq!(run(9_500, 1_050).goal(), "met");
        assert_eq!(run(8_000, 1_050).goal(), "missed (checks/s)");
        assert_eq!(run(9_500, 1_500).goal(), "missed (p99)");
        assert_eq!(run(8_000, 1_500).goal(), "missed (checks/s and p99)");
        let broken = RevocationRun {
            allowed_after: 2,
            ..run(9_500, 1_050)
        };
        assert_eq!(broken.goal(), "met; 2 revoked session(s) still allowed");
        let measured = run(9_500, 1_050);
        assert!((measured.rate_ratio().unwrap() - 0.95).abs() < 1e-9);
        assert!((measured.with.server_cpu_us().unwrap() - 40.0).abs() < 1e-6);
        assert_eq!(measured.with.redis_cpu_us(), None);
    }
}
