//! The Grafana dashboard (`dashboards/grantflow-session.json`, in the ConfigMap of
//! `templates/grafana-dashboard.yaml`): off by default; labelled for Grafana's sidecar; the
//! JSON is a dashboard; every query parses with Prometheus's own parser (promtool, each query
//! written as a recording rule with Grafana's variables replaced).

use std::collections::BTreeSet;

use grantflow_e2e::chart::{self, NAMESPACE, ci_values};
use grantflow_e2e::{repo_root, temp_dir};
use serde_json::{Value, json};

use crate::promtool;
use crate::support::render;

const CONFIG_MAP: &str = "grantflow-session-dashboard";
const KEY: &str = "grantflow-session.json";

/// The dashboard as the chart ships it.
pub fn dashboard() -> Value {
    let path = repo_root()
        .join("charts/grantflow-session/dashboards")
        .join(KEY);
    let text = std::fs::read_to_string(&path).expect("the dashboard file");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every PromQL query of the dashboard: panel targets and query variables.
pub fn queries(dashboard: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push(
                target["expr"]
                    .as_str()
                    .expect("a target has expr")
                    .to_owned(),
            );
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        if variable["type"] == "query" {
            out.push(variable["query"]["query"].as_str().unwrap().to_owned());
        }
    }
    out
}

/// `label_values(<selector>, <label>)` (Grafana's, not PromQL) → `<selector>`; Grafana's
/// variables → values Prometheus accepts.
fn as_promql(query: &str) -> String {
    let query = match query.strip_prefix("label_values(") {
        Some(rest) => {
            rest.rsplit_once(',')
                .expect("label_values(metric, label)")
                .0
        }
        None => query,
    };
    query
        .replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$namespace", NAMESPACE)
}

#[test]
fn the_config_map_carries_the_sidecar_label_and_the_json() {
    let r = render("internal-redis-values.yaml");
    let map = r.get("ConfigMap", CONFIG_MAP);
    assert_eq!(map["metadata"]["namespace"], NAMESPACE);
    assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(
        map["metadata"]["annotations"]["grafana_folder"],
        "GrantFlow"
    );
    let shipped: Value = serde_json::from_str(map["data"][KEY].as_str().expect("the JSON key"))
        .expect("the ConfigMap's dashboard is JSON");
    assert_eq!(shipped, dashboard(), "the ConfigMap holds the chart's file");

    let set = json!({"grafanaDashboard": {
        "namespace": "grafana", "sidecarLabel": "dashboards", "sidecarLabelValue": "grantflow",
        "labels": {"team": "identity"},
    }});
    let values = ci_values("internal-redis-values.yaml");
    let r = chart::render(&[&values], Some(&set)).expect("renders");
    let map = r.get("ConfigMap", CONFIG_MAP);
    assert_eq!(map["metadata"]["namespace"], "grafana");
    assert_eq!(map["metadata"]["labels"]["dashboards"], "grantflow");
    assert_eq!(map["metadata"]["labels"]["team"], "identity");
    assert!(map["metadata"]["labels"]["grafana_dashboard"].is_null());
}

#[test]
fn the_dashboard_is_a_grafana_dashboard() {
    let d = dashboard();
    assert_eq!(d["uid"], "grantflow-session");
    assert!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    let variables: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(variables, ["datasource", "namespace"]);
    let mut ids = BTreeSet::new();
    let mut panels = 0;
    for panel in d["panels"].as_array().unwrap() {
        let id = panel["id"].as_u64().expect("a panel id");
        assert!(ids.insert(id), "panel ids are unique: {id}");
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        assert!(x + w <= 24, "panel {id} fits the 24-column grid");
        if panel["type"] == "row" {
            continue;
        }
        panels += 1;
        let title = panel["title"].as_str().unwrap();
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has a query");
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            assert!(
                expr.contains("namespace=\"$namespace\""),
                "{title}: the query follows the namespace variable: {expr}"
            );
        }
    }
    assert!(panels >= 15, "{panels} panels");
}

#[test]
fn every_dashboard_query_parses() {
    let d = dashboard();
    let queries = queries(&d);
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| json!({"record": format!("grantflow_dashboard:query_{i}"), "expr": as_promql(q)}))
        .collect();
    for rule in &rules {
        let expr = rule["expr"].as_str().unwrap();
        assert!(!expr.contains('$'), "a Grafana variable is left: {expr}");
    }
    let file = json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = temp_dir("dashboard-queries");
    let output = promtool::check_rules(dir.path(), "dashboard.yaml", &file);
    assert!(
        output.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{output}"
    );
}
