//! The `sessions` row's unit tests.

use super::seed::{bytes_per, parse_vm_rss, rss_bytes};
use super::warm::{Ratios, loops_of};
use super::*;
use crate::measure::Loops;
use crate::settings::Plan;

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
    let loops = loops_of(&short);
    assert!(loops.closed <= 0.5 && loops.open <= 0.5 && loops.warmup <= 0.25);
    let full = Plan::new(&crate::settings::Settings::parse_from(["bench"])).unwrap();
    assert_eq!(
        loops_of(&full),
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
