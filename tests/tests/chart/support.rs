//! What the chart tests share: the value combinations, the names the chart gives its objects,
//! the third-party kinds it may render, rendering a combination, and reading containers, the
//! extauthz ConfigMap and Redis URLs.

use std::collections::BTreeMap;

use grantflow_e2e::chart::{self, Rendered, ci_values};
use serde_json::Value;

/// Every value combination the chart is tested with (`charts/grantflow-session/ci/`).
pub const COMBINATIONS: &[&str] = &[
    "default-values.yaml",
    "external-redis-cluster-values.yaml",
    "internal-redis-values.yaml",
    "istio-values.yaml",
    "hpa-values.yaml",
    "cert-manager-values.yaml",
    "cert-manager-clusterissuer-values.yaml",
    "memory-values.yaml",
    "embedded-values.yaml",
    "external-redis-tls-values.yaml",
];

/// A kind defined by a third-party CRD (Prometheus Operator, cert-manager, Istio) that some
/// combination renders.
pub struct ThirdPartyKind {
    pub kind: &'static str,
    pub group: &'static str,
    pub version: &'static str,
    /// The resource name (the CRD's `spec.names.plural`).
    pub plural: &'static str,
}

/// Every third-party kind the chart renders (all namespaced).
pub const THIRD_PARTY: &[ThirdPartyKind] = &[
    ThirdPartyKind {
        kind: "ServiceMonitor",
        group: "monitoring.coreos.com",
        version: "v1",
        plural: "servicemonitors",
    },
    ThirdPartyKind {
        kind: "PrometheusRule",
        group: "monitoring.coreos.com",
        version: "v1",
        plural: "prometheusrules",
    },
    ThirdPartyKind {
        kind: "Certificate",
        group: "cert-manager.io",
        version: "v1",
        plural: "certificates",
    },
    ThirdPartyKind {
        kind: "Issuer",
        group: "cert-manager.io",
        version: "v1",
        plural: "issuers",
    },
    ThirdPartyKind {
        kind: "AuthorizationPolicy",
        group: "security.istio.io",
        version: "v1",
        plural: "authorizationpolicies",
    },
];

pub const EXTAUTHZ: &str = "grantflow-session-extauthz";
pub const OPERATOR: &str = "grantflow-session-operator";
pub const REDIS: &str = "grantflow-session-redis";
pub const CONFIG_FILE: &str = "/etc/grantflow/extauthz.yaml";

pub fn render(file: &str) -> Rendered {
    let values = ci_values(file);
    chart::render(&[&values], None).unwrap_or_else(|e| panic!("{file} renders: {e}"))
}

/// [`render`] with `namespace` as the release namespace.
pub fn render_in(namespace: &str, file: &str) -> Rendered {
    let values = ci_values(file);
    chart::render_in(namespace, &[&values], None)
        .unwrap_or_else(|e| panic!("{file} renders into {namespace}: {e}"))
}

pub fn env_of(container: &Value) -> BTreeMap<String, Value> {
    container["env"]
        .as_array()
        .map(|env| {
            env.iter()
                .map(|e| (e["name"].as_str().unwrap().to_owned(), e.clone()))
                .collect()
        })
        .unwrap_or_default()
}

pub fn args_of(container: &Value) -> Vec<String> {
    container["args"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// The value after `flag` in `args`.
pub fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

pub fn config_map_text(rendered: &Rendered) -> String {
    rendered.get("ConfigMap", EXTAUTHZ)["data"]["extauthz.yaml"]
        .as_str()
        .expect("extauthz.yaml in the ConfigMap")
        .to_owned()
}

/// `redis://[user:password@]host:port` with host:port replaced by 127.0.0.1:`port`.
pub fn redis_url_to(url: &str, port: u16) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (auth, _host) = match rest.rsplit_once('@') {
        Some((auth, host)) => (format!("{auth}@"), host),
        None => (String::new(), rest),
    };
    format!("{scheme}://{auth}127.0.0.1:{port}")
}
