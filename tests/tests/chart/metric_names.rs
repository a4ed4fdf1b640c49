//! Every metric the dashboard and the alerts read is one the binaries expose: the real
//! `grantflow-extauthz` binary is started (with a real issuer and the memory store) and its
//! `/metrics` read; the operator's registry is rendered (its `/metrics` serves exactly that
//! text). A renamed metric fails here instead of silently emptying a panel or an alert.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::time::Duration;

use grantflow_e2e::issuer::Issuer;
use grantflow_e2e::kubernetes::eventually;
use grantflow_e2e::process::{Extauthz, Stop};
use grantflow_e2e::stack::{AUDIENCE, SIGN_IN_URL};

use crate::alert_rules::{ALERTS, rule_file};
use crate::dashboard::{dashboard, queries};
use crate::promtool::grantflow_names;
use crate::support::render;

/// The series names an OpenMetrics exposition defines, from its `# TYPE` lines (a family
/// without samples yet is listed too): counters `_total`, histograms `_bucket`, `_sum`,
/// `_count`, gauges by their name.
fn series_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').expect("# TYPE <name> <type>");
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            "gauge" => &[""],
            other => panic!("{name}: unexpected metric type {other}"),
        };
        for suffix in suffixes {
            names.insert(format!("{name}{suffix}"));
        }
    }
    names
}

async fn extauthz_exposition() -> String {
    let issuer = Issuer::start().await;
    let args: Vec<OsString> = [
        "--jwks-url",
        &issuer.jwks_uri,
        "--audiences",
        AUDIENCE,
        "--sign-in-url",
        SIGN_IN_URL,
        "--store",
        "memory",
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    let mut extauthz = Extauthz::start(args).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("an HTTP client");
    // One Check with a token that is no JWT, through the binary's own `check` client: the
    // families labelled by open-ended reasons get their first series.
    let checked = std::process::Command::new(Extauthz::binary())
        .args([
            "check",
            "--server",
            &format!("http://{}", extauthz.grpc_addr),
        ])
        .args(["--token", "not-a-jwt"])
        .output()
        .expect("run grantflow-extauthz check");
    let said = String::from_utf8_lossy(&checked.stdout);
    assert!(said.starts_with("DENIED 401"), "{said}");
    let url = extauthz.admin_url("/metrics");
    // The first background refresh loaded the keys (/readyz waited for them); its success is
    // counted right after.
    let text = eventually(
        Duration::from_secs(10),
        "the first JWKS refresh is counted",
        || async {
            let text = http.get(&url).send().await.ok()?.text().await.ok()?;
            text.lines()
                .any(|l| l.starts_with("grantflow_jwks_refreshes_total{result=\"success\"} "))
                .then_some(text)
        },
    )
    .await;
    let status = extauthz.stop(Stop::Term).await;
    assert!(status.success(), "extauthz exits 0: {}", extauthz.log());
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_the_alerts_read_only_exposed_metrics() {
    let extauthz = extauthz_exposition().await;
    // The refresh hook also set the time of the last success.
    let last_success: f64 = extauthz
        .lines()
        .find_map(|l| l.strip_prefix("grantflow_jwks_last_success_timestamp_seconds "))
        .expect("the last JWKS success time")
        .parse()
        .expect("a number");
    assert!(last_success > 1.7e9, "a Unix time: {last_success}");
    // The operator's registry, after one call of each of its recording methods (a family
    // without a series is not in the exposition).
    let metrics = grantflow_operator::metrics::Metrics::default();
    metrics.outcome("revocation", "Applied");
    metrics.observe("revocation", Duration::from_millis(3));
    metrics.failed("revocation", "store_unavailable");
    metrics.admission("patched");
    metrics.set_leader(true);
    metrics.time_revocation(async {}).await;
    let operator = metrics.render();
    let mut exposed = series_names(&extauthz);
    exposed.extend(series_names(&operator));
    assert!(exposed.contains("grantflow_checks_total"), "{extauthz}");
    assert!(
        extauthz.contains("grantflow_token_rejections_total{reason=\"malformed\"} 1\n"),
        "{extauthz}"
    );
    assert!(exposed.contains("grantflow_operator_reconcile_errors_total"));

    let mut read = BTreeSet::new();
    for query in queries(&dashboard()) {
        let names = grantflow_names(&query);
        assert!(
            !names.is_empty(),
            "the query reads a GrantFlow metric: {query}"
        );
        read.extend(names);
    }
    let rule =
        rule_file(render("internal-redis-values.yaml").get("PrometheusRule", "grantflow-session"));
    let rules = rule["groups"][0]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), ALERTS.len());
    for rule in rules {
        read.extend(grantflow_names(rule["expr"].as_str().unwrap()));
        // The runbook text names metrics too (what to look at next).
        for text in rule["annotations"].as_object().unwrap().values() {
            read.extend(grantflow_names(text.as_str().unwrap()));
        }
    }
    let missing: Vec<&String> = read.difference(&exposed).collect();
    assert!(
        missing.is_empty(),
        "read by the dashboard or the alerts but exposed by neither binary: {missing:?}\n\
         exposed: {exposed:?}"
    );
    println!(
        "{} GrantFlow series names read by the dashboard and alerts, all among the {} exposed",
        read.len(),
        exposed.len()
    );
}
