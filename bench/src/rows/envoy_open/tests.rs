//! The `envoy-open` row's tests.

use clap::Parser;

use super::*;
use crate::settings::Settings;

fn plan(args: &[&str]) -> Plan {
    let mut all = vec!["bench", "--envoy", "0"];
    all.extend_from_slice(args);
    Plan::new(&Settings::parse_from(all)).unwrap()
}

#[test]
fn the_rate_is_half_the_floors_saturation() {
    assert_eq!(half_rate(9313.0), Some(4657));
    assert_eq!(half_rate(9312.4), Some(4656));
    assert_eq!(half_rate(2.0), Some(1));
    assert_eq!(half_rate(1.0), None);
    assert_eq!(half_rate(0.0), None);
    assert_eq!(half_rate(f64::NAN), None);
    assert_eq!(half_rate(f64::INFINITY), None);
    assert_eq!(half_rate(1e9), Some(50_000));
}

#[test]
fn the_short_mode_measures_less_and_the_no_op_once() {
    let short = Shape::new(&plan(&["--seconds", "2"]), 4000);
    assert_eq!(
        short,
        Shape {
            rate: 4000,
            seconds: 1.0,
            warmup: 0.25,
            noop_again: false,
            alone: false,
            tokens: 64
        }
    );
    let shorter = Shape::new(&plan(&["--seconds", "1", "--open-seconds", "0.5"]), 10);
    assert_eq!(shorter.seconds, 0.5);
    let full = Shape::new(&plan(&["--tokens", "8"]), 4000);
    assert_eq!(
        full,
        Shape {
            rate: 4000,
            seconds: 6.0,
            warmup: 1.0,
            noop_again: true,
            alone: true,
            tokens: 8
        }
    );
    let no_warmup = Shape::new(&plan(&["--warmup-seconds", "0"]), 4000);
    assert_eq!(no_warmup.warmup, 0.25);
}

fn load(latencies_us: &[u64], non_2xx: u64, dropped: u64) -> Load {
    let mut load = Load::empty(latencies_us.len() as u64 + dropped);
    load.ok = latencies_us.len() as u64 - non_2xx;
    load.non_2xx = non_2xx;
    load.dropped = dropped;
    load.elapsed = Duration::from_secs(1);
    for &us in latencies_us {
        load.latency.record(us).unwrap();
        load.from_schedule.record(us + 10).unwrap();
        load.lag.record(10).unwrap();
        load.pacer_lag.record(5).unwrap();
    }
    load
}

fn run(key: &'static str, role: Role, latencies_us: &[u64]) -> OpenRun {
    OpenRun {
        key,
        label: key,
        role,
        load: load(latencies_us, 0, 0),
        cpu: Cpu {
            envoy: 0.1,
            server: (role != Role::Alone).then_some(0.05),
            client: 0.02,
            redis: (key == "redis").then_some(0.01),
            machine: 0.5,
        },
        connections_opened: Some(0),
    }
}

#[test]
fn the_goal_needs_the_ratio_and_every_request_answered() {
    let fine = load(&[1000; 10], 0, 0);
    assert_eq!(goal_verdict(Some(1.1), &fine), "met");
    assert_eq!(goal_verdict(Some(1.3), &fine), "missed");
    assert_eq!(goal_verdict(None, &fine), "not measured");
    let lossy = load(&[1000; 10], 1, 2);
    assert_eq!(goal_verdict(Some(1.0), &lossy), "missed (3 of 12 not 2xx)");
}

#[test]
fn cores_not_ours_are_what_the_measured_processes_did_not_use() {
    let cpu = Cpu {
        envoy: 0.5,
        server: Some(0.25),
        client: 0.125,
        redis: Some(0.125),
        machine: 1.5,
    };
    assert_eq!(cpu.not_ours_cores(2.0), 0.25);
    let busy_only_us = Cpu {
        machine: 0.9,
        ..cpu
    };
    assert_eq!(busy_only_us.not_ours_cores(2.0), 0.0);
}

#[test]
fn the_section_has_a_row_per_server_and_figures_with_units() {
    let shape = Shape {
        rate: 100,
        seconds: 1.0,
        warmup: 0.25,
        noop_again: true,
        alone: true,
        tokens: 64,
    };
    let runs = [
        run("alone", Role::Alone, &[500; 100]),
        run("noop", Role::Floor, &[1000; 100]),
        run("memory", Role::Store, &[1100; 100]),
        run("redis", Role::Store, &[2000; 100]),
        run("noop_again", Role::Noise, &[1050; 100]),
    ];
    let section = section(200.0, &shape, &runs);
    let table: Vec<&str> = section
        .markdown
        .lines()
        .filter(|line| line.starts_with('|'))
        .collect();
    assert_eq!(table.len(), 2 + runs.len(), "{}", section.markdown);
    let columns = table[0].matches('|').count();
    assert!(
        table
            .iter()
            .all(|line| line.matches('|').count() == columns)
    );
    assert!(
        table[2].ends_with(
            "| 0.50× | 1000.0 | – | 200.0 | 0 / 0 / 0 | 10 (0; 0) | 0 | 0.38 | (no ext_authz) |"
        ),
        "{}",
        table[2]
    );
    assert!(table[3].ends_with("| (the floor) |"), "{}", table[3]);
    assert!(table[4].contains("| 1.10× |") && table[4].ends_with("| met |"));
    assert!(table[5].contains("Redis") && table[5].ends_with("| missed |"));
    assert!(table[6].ends_with("| (noise) |"), "{}", table[6]);
    assert!(section.markdown.starts_with("### "));

    let json = &section.json;
    assert_eq!(json["rate_per_s"], 100);
    assert_eq!(json["max_outstanding"], CONNECTIONS + QUEUE);
    assert_eq!(json["queue_bound"], QUEUE);
    assert_eq!(json["noop"]["pacer_lag_p99_us"], 5);
    assert_eq!(json["noop"]["pacer_late"], 0);
    assert_eq!(json["noop"]["connections_replaced"], 0);
    assert!(section.markdown.contains("hyper's HTTP/1.1 client"));
    assert_eq!(json["noop"]["p99_ms"], 1.0);
    assert!(json["noop"].get("goal").is_none());
    assert_eq!(json["memory"]["goal"], "met");
    assert_eq!(json["redis"]["goal"], "missed");
    assert_eq!(json["redis"]["p99_ratio"], 2.0);
    assert!(json["memory"].get("redis_cpu_us").is_none());
    assert_eq!(json["redis"]["redis_cpu_us"], 100.0);
    assert_eq!(json["memory"]["envoy_cpu_us"], 1000.0);
    assert!(json["noop_again"].get("goal").is_none());
    assert!(json["noop_again"].get("p99_ratio").is_some());
    assert!(json["alone"].get("extauthz_cpu_us").is_none());
    assert!(json["alone"].get("goal").is_none());
    assert_eq!(json["alone"]["p99_ratio"], 0.5);
}

#[test]
fn a_skipped_row_says_why() {
    let section = skipped("no Envoy");
    assert!(section.markdown.contains("Skipped: no Envoy."));
    assert_eq!(section.json["skipped"], "no Envoy");
}
