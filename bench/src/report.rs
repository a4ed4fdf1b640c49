//! The report: Markdown tables on stdout, ready to paste into `docs/benchmarks.md`.

use std::collections::HashMap;

use crate::cpu::micros_per;
use crate::envoy::EnvoyRun;
use crate::footprint::Footprint;
use crate::measure::StoreRun;
use crate::settings::Plan;

/// The machine the benchmark ran on.
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
}

impl Machine {
    pub fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name")?.split_once(':'))
            .map(|(_, model)| model.trim().to_owned())
            .unwrap_or_else(|| "unknown CPU".into());
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

pub fn print_report(
    plan: &Plan,
    machine: &Machine,
    redis_version: &str,
    runs: &[&StoreRun],
    footprint: &Footprint,
    compact: &Footprint,
) {
    let row = |label: &str, value: &dyn Fn(&StoreRun) -> String| {
        let cells: Vec<String> = runs.iter().map(|r| value(r)).collect();
        println!("| {label} | {} |", cells.join(" | "));
    };
    println!();
    println!(
        "Machine: {} ({} cores, `nproc` = {}); Redis {redis_version}; client: {} tokio worker thread(s); \
         extauthz: {} tokio worker thread(s), RUST_LOG {}.",
        machine.cpu,
        machine.cores,
        machine.cores,
        plan.client_threads,
        plan.server_workers
            .map_or_else(|| format!("{} (default)", machine.cores), |n| n.to_string()),
        plan.server_log.as_deref().unwrap_or("unset (info)")
    );
    println!(
        "Closed loop: {} calls in flight over {} HTTP/2 connections, {:.0} s measured after {:.0} s warm-up. \
         Open loop: {}/s for {:.0} s. {} distinct tokens/sessions, each verified once (cached after).",
        plan.concurrency,
        plan.connections,
        plan.seconds,
        plan.warmup,
        plan.rate,
        plan.open_seconds,
        plan.tokens
    );
    println!();
    let names: Vec<String> = runs
        .iter()
        .map(|r| match r.store {
            "no-op" => "no-op server (baseline)".to_string(),
            store => format!("extauthz, {store} store"),
        })
        .collect();
    println!("| gRPC Check | {} |", names.join(" | "));
    println!("|---|{}", "---:|".repeat(runs.len()));
    row("throughput, checks/s (closed loop)", &|r| {
        format!("{:.0}", r.closed.rate())
    });
    row(
        &format!("latency p50 / p99, ms (open loop {}/s)", plan.rate),
        &|r| {
            format!(
                "{:.3} / {:.3}",
                r.open.quantile_ms(0.5),
                r.open.quantile_ms(0.99)
            )
        },
    );
    row("latency p50 / p99, ms (closed loop)", &|r| {
        format!(
            "{:.2} / {:.2}",
            r.closed.quantile_ms(0.5),
            r.closed.quantile_ms(0.99)
        )
    });
    row("server CPU µs/check (closed loop)", &|r| {
        format!("{:.1}", micros_per(r.closed.cpu.server, r.closed.calls))
    });
    row(
        &format!("server CPU µs/check (open loop {}/s)", plan.rate),
        &|r| format!("{:.1}", micros_per(r.open.cpu.server, r.open.calls)),
    );
    row("Redis CPU µs/check (closed loop)", &|r| {
        r.closed.cpu.redis.map_or("–".into(), |s| {
            format!("{:.1}", micros_per(s, r.closed.calls))
        })
    });
    row(
        "Redis commands per check (script's own included), µs each inside Redis",
        &|r| {
            if r.commands.is_empty() {
                "–".into()
            } else {
                describe_commands(&r.commands, r.closed.calls, "check")
            }
        },
    );
    row("bench client CPU µs/check (closed loop)", &|r| {
        format!("{:.1}", micros_per(r.closed.cpu.client, r.closed.calls))
    });
    row("machine busy, cores: all / not ours (closed loop)", &|r| {
        let c = &r.closed.cpu;
        let seconds = r.closed.elapsed.as_secs_f64();
        let ours = c.server + c.client + c.redis.unwrap_or(0.0);
        format!(
            "{:.2} / {:.2}",
            c.machine_busy / seconds,
            (c.machine_busy - ours).max(0.0) / seconds
        )
    });
    row("answers not allowed (closed + open)", &|r| {
        let mut denied: HashMap<i32, u64> = r.closed.denied.clone();
        for (code, n) in &r.open.denied {
            *denied.entry(*code).or_default() += n;
        }
        let mut parts: Vec<String> = denied
            .iter()
            .map(|(code, n)| format!("{n}× {code}"))
            .collect();
        let failed = r.closed.failed + r.open.failed;
        if failed > 0 {
            parts.push(format!("{failed}× error"));
        }
        if r.open.dropped > 0 {
            parts.push(format!("{} dropped", r.open.dropped));
        }
        if parts.is_empty() {
            "0".into()
        } else {
            parts.join(", ")
        }
    });
    println!();
    println!("| Redis memory (`INFO memory` used_memory) | |");
    println!("|---|---:|");
    println!(
        "| live sessions created through `store.check` | {} of {} ({} failed), {:.1} s, {:.0}/s, {} in flight |",
        footprint.created,
        footprint.sessions,
        footprint.failed,
        footprint.elapsed.as_secs_f64(),
        footprint.created as f64 / footprint.elapsed.as_secs_f64(),
        plan.session_concurrency
    );
    println!(
        "| used_memory before → after | {} → {} bytes |",
        footprint.bytes_before, footprint.bytes_after
    );
    println!(
        "| **bytes per live session** (session hash encoded as {}) | **{:.0}** |",
        footprint.encoding,
        footprint.bytes_per_session()
    );
    println!(
        "| bytes per live session with `hash-max-listpack-value 256` (session hash: {}; {} more sessions) | {:.0} |",
        compact.encoding,
        compact.created,
        compact.bytes_per_session()
    );
    println!(
        "| CPU µs per session created: RedisStore client / Redis | {:.1} / {} |",
        micros_per(footprint.client_cpu, footprint.created as u64),
        footprint.redis_cpu.map_or("–".into(), |s| format!(
            "{:.1}",
            micros_per(s, footprint.created as u64)
        ))
    );
    println!(
        "| Redis commands per session created (script's own included), µs each inside Redis | {} |",
        describe_commands(&footprint.commands, footprint.created as u64, "session")
    );
    let rt = &footprint.round_trip;
    println!(
        "| one more round trip (PING on the store's connection, 64 in flight): CPU µs client / Redis; alone p50 | {:.1} / {} ; {} |",
        micros_per(rt.client_cpu, rt.calls),
        rt.redis_cpu
            .map_or("–".into(), |s| format!("{:.1}", micros_per(s, rt.calls))),
        rt.latency.as_ref().map_or("–".into(), |h| format!(
            "{:.3} ms",
            h.value_at_quantile(0.5) as f64 / 1000.0
        ))
    );
    println!(
        "| keys per live session | {:.2} |",
        footprint.keys_after.saturating_sub(footprint.keys_before) as f64
            / footprint.created.max(1) as f64
    );
    println!();
    for run in runs {
        println!(
            "{} detail: closed loop {} calls in {:.2} s, p90 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; \
             open loop {} calls, p90 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms, send lag p99 {} µs; \
             open-loop CPU µs/check: Redis {}, client {:.1}",
            run.store,
            run.closed.calls,
            run.closed.elapsed.as_secs_f64(),
            run.closed.quantile_ms(0.9),
            run.closed.quantile_ms(0.999),
            run.closed.latency.max() as f64 / 1000.0,
            run.open.calls,
            run.open.quantile_ms(0.9),
            run.open.quantile_ms(0.999),
            run.open.latency.max() as f64 / 1000.0,
            run.open.send_lag_p99.unwrap_or(0),
            run.open.cpu.redis.map_or("–".into(), |s| format!(
                "{:.1}",
                micros_per(s, run.open.calls)
            )),
            micros_per(run.open.cpu.client, run.open.calls),
        );
    }
}

pub fn print_envoy_report(plan: &Plan, alone: &EnvoyRun, servers: &[&StoreRun]) {
    let mut runs: Vec<(String, &EnvoyRun)> = vec![("Envoy alone".into(), alone)];
    for server in servers {
        if let Some(run) = &server.envoy {
            let name = match server.store {
                "no-op" => "Envoy + no-op ext_authz".to_string(),
                store => format!("Envoy + extauthz ({store})"),
            };
            runs.push((name, run));
        }
    }
    let row = |label: &str, value: &dyn Fn(&EnvoyRun) -> String| {
        let cells: Vec<String> = runs.iter().map(|(_, r)| value(r)).collect();
        println!("| {label} | {} |", cells.join(" | "));
    };
    let dash = || "–".to_string();
    println!();
    println!(
        "Through Envoy (`--concurrency 1`, `direct_response` upstream), wrk -t1 -c{} for {:.0} s \
         after {:.0} s warm-up, one token:",
        plan.concurrency, plan.seconds, plan.warmup
    );
    println!();
    let names: Vec<&str> = runs.iter().map(|(name, _)| name.as_str()).collect();
    println!("| HTTP GET through Envoy | {} |", names.join(" | "));
    println!("|---|{}", "---:|".repeat(runs.len()));
    row("requests/s (closed loop)", &|r| format!("{:.0}", r.rate()));
    row("latency p50 / p99, ms (closed loop)", &|r| {
        format!("{:.2} / {:.2}", r.p50_ms, r.p99_ms)
    });
    row("**Envoy CPU µs/request**", &|r| {
        format!("**{:.1}**", micros_per(r.envoy_cpu, r.requests))
    });
    row("ext_authz server CPU µs/request", &|r| {
        r.extauthz_cpu
            .map_or_else(dash, |c| format!("{:.1}", micros_per(c, r.requests)))
    });
    row("Redis CPU µs/request", &|r| {
        r.redis_cpu
            .map_or_else(dash, |c| format!("{:.1}", micros_per(c, r.requests)))
    });
    row("wrk CPU µs/request", &|r| {
        r.wrk_cpu
            .map_or_else(dash, |c| format!("{:.1}", micros_per(c, r.requests)))
    });
    row("machine busy, cores: all / not ours", &|r| {
        let ours = r.envoy_cpu
            + r.extauthz_cpu.unwrap_or(0.0)
            + r.redis_cpu.unwrap_or(0.0)
            + r.wrk_cpu.unwrap_or(0.0);
        format!(
            "{:.2} / {:.2}",
            r.machine_busy / r.seconds,
            (r.machine_busy - ours).max(0.0) / r.seconds
        )
    });
    row("answers not 2xx", &|r| {
        if r.socket_errors {
            format!("{} (and socket errors)", r.non_2xx)
        } else {
            r.non_2xx.to_string()
        }
    });
}

fn describe_commands(delta: &[(String, u64, f64)], per: u64, unit: &str) -> String {
    delta
        .iter()
        .map(|(name, calls, usec)| {
            format!(
                "{name} {:.2}/{unit} at {usec:.1} µs",
                *calls as f64 / per.max(1) as f64
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}
