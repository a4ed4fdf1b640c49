//! The PrometheusRule (`templates/prometheusrule.yaml`): off by default; its envelope has the
//! shape the Prometheus Operator reads; its rules pass the real `promtool check rules`, for the
//! defaults and for changed values; and `promtool test rules` (`tests/chart/rules-test.yaml`)
//! proves each alert fires on a synthetic series and stays quiet otherwise.
//!
//! Why the envelope is checked here and not by a schema: kubernetes-validate has no schema for
//! CRD kinds, and the rule content — the part that can be wrong in many ways — is exactly a
//! Prometheus rule file, which promtool checks with Prometheus's own parser (PromQL, label and
//! annotation templates, durations, duplicate names). What remains is the CRD's small envelope
//! (`spec.groups[].name/rules`, each rule `alert` xor `record`, string maps), asserted below
//! against the fields of the Prometheus Operator's PrometheusRule CRD.

use std::collections::BTreeSet;

use grantflow_e2e::chart::{self, NAMESPACE, ci_values};
use grantflow_e2e::{repo_root, temp_dir};
use serde_json::{Value, json};

use crate::promtool::{self, grantflow_names};
use crate::support::render;

const RULE: &str = "grantflow-session";
const VALUES: &str = "internal-redis-values.yaml";

/// Every alert the chart ships (docs/operations.md, "Alerts").
pub const ALERTS: [&str; 6] = [
    "GrantFlowStoreErrors",
    "GrantFlowFailClosedRefusals",
    "GrantFlowJwksRefreshFailing",
    "GrantFlowRevocationWritesSlow",
    "GrantFlowOperatorReconcileErrors",
    "GrantFlowAdmissionWebhookFailures",
];

/// The rendered rules: `{groups: spec.groups}`, a Prometheus rule file.
pub fn rule_file(rule: &Value) -> Value {
    json!({ "groups": rule["spec"]["groups"] })
}

fn rules(rule: &Value) -> Vec<&Value> {
    rule["spec"]["groups"]
        .as_array()
        .expect("spec.groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").iter())
        .collect()
}

fn alert_names(rule: &Value) -> Vec<String> {
    rules(rule)
        .iter()
        .map(|r| r["alert"].as_str().unwrap().to_owned())
        .collect()
}

fn string_map(value: &Value, what: &str) {
    let map = value
        .as_object()
        .unwrap_or_else(|| panic!("{what} is a map"));
    for (key, item) in map {
        assert!(item.is_string(), "{what}.{key} is a string: {item}");
    }
}

#[test]
fn alerts_and_dashboard_are_off_by_default() {
    let r = render("default-values.yaml");
    assert!(r.of_kind("PrometheusRule").is_empty());
    assert!(
        r.of_kind("ConfigMap")
            .iter()
            .all(|c| c["metadata"]["labels"]["grafana_dashboard"].is_null()),
        "no dashboard ConfigMap by default"
    );
}

#[test]
fn the_prometheus_rule_has_the_operators_shape() {
    let r = render(VALUES);
    let rule = r.get("PrometheusRule", RULE);
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["metadata"]["namespace"], NAMESPACE);
    // The label kube-prometheus-stack's ruleSelector matches, from prometheusRule.labels.
    assert_eq!(
        rule["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    string_map(&rule["metadata"]["labels"], "metadata.labels");
    let spec = rule["spec"].as_object().expect("spec");
    assert_eq!(spec.keys().collect::<Vec<_>>(), ["groups"]);
    let groups = spec["groups"].as_array().expect("spec.groups is a list");
    let mut group_names = BTreeSet::new();
    for group in groups {
        let group = group.as_object().expect("a group is a map");
        for key in group.keys() {
            assert!(
                [
                    "name",
                    "interval",
                    "rules",
                    "limit",
                    "partial_response_strategy"
                ]
                .contains(&key.as_str()),
                "a PrometheusRule group has no field {key}"
            );
        }
        let name = group["name"].as_str().expect("group name");
        assert!(
            !name.is_empty() && group_names.insert(name),
            "unique group {name}"
        );
        assert!(!group["rules"].as_array().expect("rules").is_empty());
    }
    for rule in rules(rule) {
        let fields = rule.as_object().expect("a rule is a map");
        for key in fields.keys() {
            assert!(
                [
                    "alert",
                    "record",
                    "expr",
                    "for",
                    "keep_firing_for",
                    "labels",
                    "annotations"
                ]
                .contains(&key.as_str()),
                "a rule has no field {key}"
            );
        }
        assert!(rule["record"].is_null(), "alerts only");
        let alert = rule["alert"].as_str().expect("alert");
        assert!(rule["expr"].is_string(), "{alert}: expr is a string");
        assert!(rule["for"].is_string(), "{alert}: for");
        string_map(&rule["labels"], &format!("{alert}.labels"));
        string_map(&rule["annotations"], &format!("{alert}.annotations"));
        assert_eq!(rule["labels"]["team"], "identity", "{alert}: alertLabels");
        assert!(
            ["critical", "warning"].contains(&rule["labels"]["severity"].as_str().unwrap()),
            "{alert}: severity"
        );
        for key in ["summary", "description", "runbook"] {
            assert!(
                rule["annotations"][key]
                    .as_str()
                    .is_some_and(|t| t.len() > 20),
                "{alert}: annotation {key} (the runbook text)"
            );
        }
        // Every series selector is limited to the release's namespace.
        let expr = rule["expr"].as_str().unwrap();
        let selectors = expr.matches("grantflow_").count();
        let scoped = expr
            .matches(&format!("{{namespace=\"{NAMESPACE}\""))
            .count();
        assert!(selectors > 0 && selectors == scoped, "{alert}: {expr}");
        assert!(!grantflow_names(expr).is_empty());
    }
    assert_eq!(alert_names(rule), ALERTS);
}

#[test]
fn promtool_accepts_the_rules_and_refuses_a_broken_one() {
    let r = render(VALUES);
    let dir = temp_dir("rules");
    let output = promtool::check_rules(
        dir.path(),
        "rules.yaml",
        &rule_file(r.get("PrometheusRule", RULE)),
    );
    assert!(output.contains("SUCCESS: 6 rules found"), "{output}");
    // The same check refuses what Prometheus would refuse (so its SUCCESS means something).
    let mut broken = rule_file(r.get("PrometheusRule", RULE));
    broken["groups"][0]["rules"][0]["expr"] = json!("sum(rate(grantflow_checks_total[5m])");
    std::fs::write(
        dir.path().join("broken.yaml"),
        serde_yaml::to_string(&broken).unwrap(),
    )
    .unwrap();
    let (ok, output) = promtool::run(dir.path(), &["check", "rules", "broken.yaml"]);
    assert!(!ok && output.contains("parse error"), "{output}");
}

#[test]
fn thresholds_durations_and_switches_come_from_the_values() {
    let set = json!({"prometheusRule": {
        "namespace": "monitoring",
        "rateWindow": "10m",
        "alertLabels": {"team": "sre", "page": "yes"},
        "alerts": {
            "failClosedRefusals": {"threshold": 0.05, "for": "3m", "severity": "page"},
            "revocationWritesSlow": {"threshold": 2.5},
            "jwksRefreshFailing": {"enabled": false},
            "admissionWebhookFailures": {"enabled": false},
        },
    }});
    let values = ci_values(VALUES);
    let r = chart::render_in("payments", &[&values], Some(&set)).expect("renders");
    let rule = r.get("PrometheusRule", RULE);
    assert_eq!(rule["metadata"]["namespace"], "monitoring");
    assert_eq!(
        alert_names(rule),
        [
            "GrantFlowStoreErrors",
            "GrantFlowFailClosedRefusals",
            "GrantFlowRevocationWritesSlow",
            "GrantFlowOperatorReconcileErrors",
        ]
    );
    let by_name = |name: &str| {
        rules(rule)
            .into_iter()
            .find(|r| r["alert"] == name)
            .unwrap()
            .clone()
    };
    let refusals = by_name("GrantFlowFailClosedRefusals");
    assert!(refusals["expr"].as_str().unwrap().ends_with("> 0.05"));
    assert_eq!(refusals["for"], "3m");
    assert_eq!(
        refusals["labels"],
        json!({"severity": "page", "team": "sre", "page": "yes"})
    );
    let slow = by_name("GrantFlowRevocationWritesSlow");
    assert!(slow["expr"].as_str().unwrap().contains(") > 2.5 or "));
    for rule in rules(rule) {
        let expr = rule["expr"].as_str().unwrap();
        assert!(expr.contains("{namespace=\"payments\""), "{expr}");
        assert!(expr.contains("[10m]") && !expr.contains("[5m]"), "{expr}");
    }
    let dir = temp_dir("rules");
    let output = promtool::check_rules(dir.path(), "rules.yaml", &rule_file(rule));
    assert!(output.contains("SUCCESS: 4 rules found"), "{output}");
}

#[test]
fn the_schema_refuses_typos_and_values_of_the_wrong_kind() {
    let values = ci_values(VALUES);
    chart::check_schema(&[&values], None).expect("the CI values fit the schema");
    for bad in [
        json!({"prometheusRule": {"alerts": {"storeErrors": {"for": "soon"}}}}),
        json!({"prometheusRule": {"alerts": {"storeError": {"enabled": true}}}}),
        json!({"prometheusRule": {"alerts": {"failClosedRefusals": {"threshold": -1}}}}),
        json!({"prometheusRule": {"rateWindow": 5}}),
        json!({"prometheusRule": {"alertLabels": {"team": 7}}}),
        json!({"grafanaDashboard": {"sidecarLabelValue": 1}}),
        json!({"grafanaDashboard": {"folder": "GrantFlow"}}),
    ] {
        assert!(
            chart::check_schema(&[&values], Some(&bad)).is_err(),
            "the schema refuses {bad}"
        );
    }
}

#[test]
fn a_rule_without_any_alert_is_refused_with_a_clear_message() {
    let off = json!({"enabled": false});
    let set = json!({"prometheusRule": {"alerts": {
        "storeErrors": off, "failClosedRefusals": off, "jwksRefreshFailing": off,
        "revocationWritesSlow": off, "operatorReconcileErrors": off,
        "admissionWebhookFailures": off,
    }}});
    let values = ci_values(VALUES);
    let error = chart::render(&[&values], Some(&set))
        .err()
        .expect("an empty PrometheusRule is refused");
    assert!(
        error.contains("every alert in prometheusRule.alerts is disabled"),
        "{error}"
    );
}

#[test]
fn promtool_unit_tests_fire_each_alert_and_keep_it_quiet_otherwise() {
    let r = render(VALUES);
    let mut rules_file = rule_file(r.get("PrometheusRule", RULE));
    // The annotations are templates of $value (checked by `check rules` above); the unit tests
    // assert which alerts fire with which labels.
    for group in rules_file["groups"].as_array_mut().unwrap() {
        for rule in group["rules"].as_array_mut().unwrap() {
            rule.as_object_mut().unwrap().remove("annotations");
        }
    }
    let dir = temp_dir("rules-test");
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_yaml::to_string(&rules_file).unwrap(),
    )
    .unwrap();
    let tests = repo_root().join("tests/chart/rules-test.yaml");
    std::fs::copy(&tests, dir.path().join("rules-test.yaml")).expect("copy the unit tests");
    let (ok, output) = promtool::run(dir.path(), &["test", "rules", "rules-test.yaml"]);
    assert!(
        ok && output.contains("SUCCESS"),
        "promtool test rules:\n{output}"
    );

    // Each alert is tested both ways: firing somewhere, and quiet somewhere.
    let text = std::fs::read_to_string(&tests).unwrap();
    let unit: Value = serde_yaml::from_str(&text).expect("rules-test.yaml");
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for case in unit["tests"].as_array().unwrap() {
        for test in case["alert_rule_test"].as_array().unwrap() {
            let name = test["alertname"].as_str().unwrap().to_owned();
            if test["exp_alerts"].as_array().unwrap().is_empty() {
                quiet.insert(name);
            } else {
                fires.insert(name);
            }
        }
    }
    let all: BTreeSet<String> = ALERTS.iter().map(|a| (*a).to_owned()).collect();
    assert_eq!(fires, all, "every alert fires in some test");
    assert_eq!(quiet, all, "every alert stays quiet in some test");
}
