//! The Helm chart `charts/grantflow-session`, rendered by Helm's own template engine
//! (helm-python-sdk) for its defaults and the value combinations in `ci/`:
//!
//! - lint clean, schema rejects typos and values that do not fit together;
//! - every manifest passes `kubernetes-validate --strict` (except the kinds of third-party
//!   CRDs, which the tool has no schema for — those get structural checks here instead);
//! - the chart's CRDs are the generated ones;
//! - a TLS Redis (`rediss://`) with a private CA: the CA Secret is mounted into extauthz and the
//!   operator, GRANTFLOW_REDIS_CA_FILE names it, and the chart refuses it without TLS;
//! - every combination applies with real `kubectl` to the kmock API emulator, twice (the
//!   second apply changes nothing);
//! - extauthz starts in this process from the exact file the chart's ConfigMap holds (only
//!   listen addresses and the Redis address rewritten) and serves real Envoy traffic, on the
//!   in-chart Redis (URL and password from the chart's Secret), a plain external URL, a
//!   Redis Cluster and a Redis over TLS with a private CA (the file GRANTFLOW_REDIS_CA_FILE
//!   names, found through the Secret the Deployment mounts there);
//! - the operator binary starts with the exact arguments and environment of the chart's
//!   Deployment against kmock and a real Redis, wins the chart's Lease, and answers an
//!   AdmissionReview over TLS with the chart-generated certificate, for the very host name and
//!   path the MutatingWebhookConfiguration names.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use grantflow_core::clock::{Clock, SystemClock};
use grantflow_e2e::chart::{
    self, Kmock, NAMESPACE, RELEASE, Rendered, TempDir, base64_decode, ci_values, secret_value,
    venv_bin,
};
use grantflow_e2e::envoy::Envoy;
use grantflow_e2e::issuer::Issuer;
use grantflow_e2e::redis::{RedisCluster, RedisServer, redis_cli};
use grantflow_e2e::stack::{AUDIENCE, TENANT};
use grantflow_e2e::upstream::Upstream;
use grantflow_e2e::{free_port, loopback, repo_root};
use grantflow_extauthz::config::{ConfigError, Options, Settings};
use grantflow_extauthz::server;
use serde_json::{Value, json};

/// Every value combination the chart is tested with (`charts/grantflow-session/ci/`).
const COMBINATIONS: &[&str] = &[
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

/// Kinds defined by third-party CRDs: `kubernetes-validate` has no schema for them.
const THIRD_PARTY_KINDS: &[&str] = &[
    "ServiceMonitor",
    "Certificate",
    "Issuer",
    "AuthorizationPolicy",
];

const EXTAUTHZ: &str = "grantflow-session-extauthz";
const OPERATOR: &str = "grantflow-session-operator";
const REDIS: &str = "grantflow-session-redis";
const CONFIG_FILE: &str = "/etc/grantflow/extauthz.yaml";

fn render(file: &str) -> Rendered {
    let values = ci_values(file);
    chart::render(&[&values], None).unwrap_or_else(|e| panic!("{file} renders: {e}"))
}

fn env_of(container: &Value) -> BTreeMap<String, Value> {
    container["env"]
        .as_array()
        .map(|env| {
            env.iter()
                .map(|e| (e["name"].as_str().unwrap().to_owned(), e.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn args_of(container: &Value) -> Vec<String> {
    container["args"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// The value after `flag` in `args`.
fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn chart_metadata() -> Value {
    let out = chart::run(
        std::process::Command::new(venv_bin("python"))
            .arg(repo_root().join("tests/chart/helm.py"))
            .arg("crds")
            .arg(chart::chart_dir()),
    );
    let value: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    value["metadata"].clone()
}

// --- rendering, lint, schema ------------------------------------------------------------

#[test]
fn without_an_audience_the_chart_refuses_to_render_but_lints_clean() {
    let error = chart::render(&[], None)
        .err()
        .expect("no audience, no render");
    assert!(
        error.contains("config.audiences is required"),
        "a clear message: {error}"
    );
    // `helm lint` runs templates in lint mode, where `fail` only logs.
    let report = chart::lint(&[], None);
    assert_eq!(report["errors"], json!([]), "{report}");
    assert_eq!(report["messages"], json!([]), "{report}");
}

#[test]
fn every_combination_renders_and_lints_clean() {
    for file in COMBINATIONS {
        let values = ci_values(file);
        let report = chart::lint(&[&values], None);
        assert_eq!(report["errors"], json!([]), "{file}: {report}");
        assert_eq!(report["messages"], json!([]), "{file}: {report}");
        let rendered = render(file);
        assert!(!rendered.objects.is_empty(), "{file}");
        for object in &rendered.objects {
            // A key rendered without a value (`annotations:` and nothing under it) is null:
            // the API server drops it and every `kubectl apply` reports a change.
            assert_no_nulls(
                file,
                object,
                &format!("{}/{}", object["kind"], object["metadata"]["name"]),
            );
        }
        for object in &rendered.objects {
            if object["kind"] == "ClusterRole"
                || object["kind"] == "ClusterRoleBinding"
                || object["kind"] == "MutatingWebhookConfiguration"
            {
                continue;
            }
            assert!(
                object["metadata"]["namespace"].is_string(),
                "{file}: {}/{} names its namespace",
                object["kind"],
                object["metadata"]["name"]
            );
        }
    }
}

fn assert_no_nulls(file: &str, value: &Value, path: &str) {
    match value {
        Value::Null => panic!("{file}: {path} is null"),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                assert_no_nulls(file, item, &format!("{path}[{i}]"));
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                assert_no_nulls(file, item, &format!("{path}.{key}"));
            }
        }
        _ => {}
    }
}

#[test]
fn every_manifest_passes_kubernetes_validate_strict() {
    let mut skipped = BTreeSet::new();
    for file in COMBINATIONS {
        let rendered = render(file);
        let mut files = rendered.crd_files.clone();
        files.extend(rendered.files.iter().cloned());
        let output = chart::run(
            std::process::Command::new(venv_bin("kubernetes-validate"))
                .arg("--strict")
                .args(&files),
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && !stdout.contains("ERROR"),
            "{file}: kubernetes-validate --strict failed:\n{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let passed = stdout.lines().filter(|l| l.starts_with("INFO")).count();
        let mut expected = rendered.crd_files.len();
        for object in &rendered.objects {
            let kind = object["kind"].as_str().unwrap();
            if THIRD_PARTY_KINDS.contains(&kind) {
                let line = format!("Couldn't find schema for kind {kind} with api version");
                assert!(
                    stdout.contains(&line),
                    "{file}: {kind} is reported as skipped"
                );
                skipped.insert(kind.to_owned());
            } else {
                expected += 1;
            }
        }
        assert_eq!(
            passed, expected,
            "{file}: every built-in object was validated:\n{stdout}"
        );
        for line in stdout.lines().filter(|l| l.starts_with("WARN")) {
            assert!(
                THIRD_PARTY_KINDS
                    .iter()
                    .any(|k| line.contains(&format!("kind {k} "))),
                "{file}: only third-party kinds are skipped: {line}"
            );
        }
    }
    // Each of them is rendered by some combination (and checked structurally below).
    assert_eq!(
        skipped,
        THIRD_PARTY_KINDS.iter().map(|k| k.to_string()).collect(),
        "every third-party kind is rendered somewhere"
    );
}

#[test]
fn the_chart_crds_are_the_generated_ones() {
    let chart_crds = chart::chart_crds();
    let mut generated: Vec<(String, String)> = std::fs::read_dir(repo_root().join("crds"))
        .expect("crds/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    generated.sort();
    let mut in_chart: Vec<(String, String)> = chart_crds
        .iter()
        .map(|c| {
            let file = c["filename"].as_str().unwrap();
            (
                Path::new(file)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                c["data"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    in_chart.sort();
    assert!(!generated.is_empty());
    assert_eq!(
        in_chart.iter().map(|c| &c.0).collect::<Vec<_>>(),
        generated.iter().map(|c| &c.0).collect::<Vec<_>>(),
        "the same CRD files"
    );
    for ((name, chart), (_, crd)) in in_chart.iter().zip(&generated) {
        assert!(
            chart == crd,
            "charts/grantflow-session/crds/{name} differs from crds/{name}: run `cargo run -p grantflow-crds --bin crdgen -- --write`"
        );
    }
}

#[test]
fn the_schema_rejects_typos() {
    let dir = TempDir::new("typo");
    let cases = [
        ("extauthz:\n  replicaCont: 3\n", "replicaCont"),
        (
            "config:\n  audiences: [api://x]\n  max_sesion_age: 5m\n",
            "max_sesion_age",
        ),
        ("redis:\n  mode: externel\n", "mode"),
        ("operatr:\n  enabled: false\n", "operatr"),
        ("config:\n  max_session_age: 900\n", "max_session_age"),
        (
            "istio:\n  authorizationPolicies:\n    - name: a\n      selectr: {}\n",
            "selectr",
        ),
        ("extauthz:\n  image:\n    digest: latest\n", "digest"),
    ];
    for (i, (yaml, key)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("typo-{i}.yaml"));
        std::fs::write(&file, yaml).unwrap();
        let error = chart::check_schema(&[&file], None)
            .err()
            .unwrap_or_else(|| panic!("the schema rejects {yaml:?}"));
        assert!(
            error.contains(key),
            "{yaml:?}: the message names {key}: {error}"
        );
        // ...and so does an install: the render validates too.
        let error = chart::render(&[&ci_values("default-values.yaml"), &file], None)
            .err()
            .unwrap_or_else(|| panic!("rendering rejects {yaml:?}"));
        assert!(error.contains(key), "{error}");
    }
    for file in COMBINATIONS {
        chart::check_schema(&[&ci_values(file)], None)
            .unwrap_or_else(|e| panic!("{file} fits the schema: {e}"));
    }
}

#[test]
fn values_that_do_not_fit_together_are_refused_with_a_clear_message() {
    let default = ci_values("default-values.yaml");
    let cases = [
        // Entra's keys and issuers serve every tenant: no tenant list is a choice to make.
        (
            json!({"config": {"allowed_tenants": null}}),
            "config.allowed_tenants is required: Entra ID signs every tenant's tokens with the same keys",
        ),
        (
            json!({"config": {"allowed_tenants": []}}),
            "or set allowAllTenants=true to accept every tenant on purpose",
        ),
        (
            json!({"config": {"allowed_tenants": null, "oidc_discovery_url": "https://login.microsoftonline.com/common/v2.0/.well-known/openid-configuration"}}),
            "config.allowed_tenants is required",
        ),
        (
            json!({"allowAllTenants": true}),
            "set either config.allowed_tenants or allowAllTenants=true, not both",
        ),
        (json!({"allowAllTenants": "yes"}), "/allowAllTenants"),
        (
            json!({"store": {"type": "memory"}, "operator": {"enabled": false}}),
            "extauthz.replicaCount must be 1",
        ),
        (
            json!({"store": {"type": "memory"}, "extauthz": {"replicaCount": 1, "autoscaling": {"enabled": true}}, "operator": {"enabled": false}}),
            "autoscaling.enabled needs store.type redis",
        ),
        (
            json!({"store": {"type": "memory"}, "extauthz": {"replicaCount": 1}}),
            "operator.enabled=false",
        ),
        (
            json!({"store": {"type": "embedded"}, "operator": {"enabled": false}}),
            "store.type embedded keeps sessions inside one process: extauthz.replicaCount must be 1",
        ),
        (
            json!({"store": {"type": "embedded"}, "extauthz": {"replicaCount": 1}}),
            "store.type embedded is invisible to the operator",
        ),
        (
            json!({"store": {"type": "embedded", "embedded": {"persistence": {"size": "lots"}}}, "extauthz": {"replicaCount": 1}, "operator": {"enabled": false}}),
            "/store/embedded/persistence/size",
        ),
        (
            json!({"redis": {"mode": "external"}}),
            "redis.external.urls or redis.external.existingSecret",
        ),
        (
            json!({"redis": {"mode": "external", "external": {"urls": ["redis://:s3cret@redis:6379"]}}}),
            "must not carry credentials",
        ),
        (
            json!({"config": {"jwks_url": "https://a/keys", "oidc_discovery_url": "https://a/.well-known/openid-configuration"}}),
            "not both",
        ),
        (
            json!({"extauthz": {"podDisruptionBudget": {"minAvailable": 1}}}),
            "not both",
        ),
        (
            json!({"istio": {"enabled": true, "authorizationPolicies": [{"name": "everything"}]}}),
            "would cover extauthz itself",
        ),
        (json!({"istio": {"enabled": true}}), "list the workloads"),
        (
            json!({"extauthz": {"adminIngress": {"enabled": true}}}),
            "adminIngress.host is required",
        ),
        (
            // Redis URLs only: redis:// or rediss:// (TLS).
            json!({"redis": {"mode": "external", "external": {"urls": ["http://redis:6379"]}}}),
            "/redis/external/urls/0",
        ),
        // A CA for the Redis certificates: only for TLS connections to an external Redis.
        (
            json!({"redis": {"mode": "external", "external": {"urls": ["redis://redis:6379"], "tls": {"caSecret": "redis-ca"}}}}),
            "redis.external.tls.caSecret needs rediss:// (TLS) URLs, but redis.external.urls has redis://redis:6379",
        ),
        (
            json!({"redis": {"mode": "external", "external": {"urls": ["rediss://redis-0:6380", "redis://redis-1:6379"], "cluster": true, "tls": {"caSecret": "redis-ca"}}}}),
            "redis.external.tls.caSecret needs rediss:// (TLS) URLs, but redis.external.urls has redis://redis-1:6379",
        ),
        (
            json!({"redis": {"external": {"tls": {"caSecret": "redis-ca"}}}}),
            "the in-chart Redis (redis.mode internal) has no TLS",
        ),
        (
            json!({"store": {"type": "memory"}, "extauthz": {"replicaCount": 1}, "operator": {"enabled": false},
                   "redis": {"external": {"tls": {"caSecret": "redis-ca"}}}}),
            "store.type memory uses no Redis",
        ),
        (
            json!({"redis": {"mode": "external", "external": {"urls": ["rediss://redis:6380"], "tls": {"caSecret": "redis-ca", "caSecretKey": "ca crt"}}}}),
            "/redis/external/tls/caSecretKey",
        ),
        (
            json!({"redis": {"mode": "external", "external": {"urls": ["rediss://redis:6380"], "tls": {"caSecert": "redis-ca"}}}}),
            "caSecert",
        ),
        (
            json!({"extauthz": {"autoscaling": {"enabled": true, "minReplicas": 5, "maxReplicas": 3}}}),
            "must not exceed",
        ),
    ];
    for (set, message) in cases {
        let error = chart::render(&[&default], Some(&set))
            .err()
            .unwrap_or_else(|| panic!("{set} is refused"));
        assert!(
            error.contains(message),
            "{set}: expected {message:?} in {error}"
        );
    }
}

/// The keys of extauthz's configuration file, from its own parser: a file with an unknown
/// key is refused with the list of the known ones.
fn extauthz_config_keys() -> BTreeSet<String> {
    let dir = TempDir::new("keys");
    let file = dir.path().join("probe.yaml");
    std::fs::write(&file, "no_such_setting: 1\n").unwrap();
    let options = Options {
        config: Some(file),
        ..Options::default()
    };
    let error = match Settings::resolve(options) {
        Err(ConfigError::Parse { message, .. }) => message,
        other => panic!("an unknown key is a parse error, got {other:?}"),
    };
    let list = error
        .split("expected one of")
        .nth(1)
        .unwrap_or_else(|| panic!("serde lists the fields: {error}"));
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_schema_knows_every_extauthz_setting() {
    let keys = extauthz_config_keys();
    assert!(
        keys.contains("max_session_age") && keys.contains("redis_url"),
        "{keys:?}"
    );
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(chart::chart_dir().join("values.schema.json")).unwrap(),
    )
    .unwrap();
    let in_schema: BTreeSet<String> = schema["properties"]["config"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    // Set by the chart from other values (or, for dev, never in a cluster).
    let managed: BTreeSet<String> = [
        "grpc_addr",
        "admin_addr",
        "store",
        // The embedded store's volume mount.
        "data_dir",
        "redis_url",
        "redis_cluster",
        // GRANTFLOW_REDIS_CA_FILE, the mounted redis.external.tls.caSecret.
        "redis_ca_file",
        "dev",
    ]
    .map(String::from)
    .into();
    let mut covered: BTreeSet<String> = in_schema.union(&managed).cloned().collect();
    assert_eq!(
        covered, keys,
        "values.schema.json `config` + the chart-managed keys = extauthz's configuration keys"
    );
    covered.clear();
    // Every key the chart writes is one the binary reads.
    for file in COMBINATIONS {
        let rendered = render(file);
        let config = config_map_text(&rendered);
        for line in config.lines().filter(|l| !l.starts_with([' ', '-'])) {
            let key = line.split(':').next().unwrap();
            assert!(
                keys.contains(key),
                "{file}: unknown key {key} in the ConfigMap"
            );
            assert!(key != "dev", "{file}: the chart never turns on dev mode");
        }
    }
}

fn config_map_text(rendered: &Rendered) -> String {
    rendered.get("ConfigMap", EXTAUTHZ)["data"]["extauthz.yaml"]
        .as_str()
        .expect("extauthz.yaml in the ConfigMap")
        .to_owned()
}

// --- the shape of what is rendered -------------------------------------------------------

/// What every combination must have, whatever else it renders.
fn check_common_shape(file: &str, r: &Rendered) {
    let app_version = chart_metadata()["appVersion"].as_str().unwrap().to_owned();
    let deployment = r.get("Deployment", EXTAUTHZ);
    let pod = &deployment["spec"]["template"]["spec"];
    let c = r.container(deployment, "extauthz");

    // The image defaults to the chart's appVersion.
    assert_eq!(
        c["image"],
        format!("ghcr.io/grantflow/grantflow-extauthz:{app_version}"),
        "{file}"
    );
    // The ConfigMap, mounted and passed with --config.
    assert_eq!(
        args_of(c)[..2],
        ["--config".to_owned(), CONFIG_FILE.to_owned()],
        "{file}"
    );
    let mount = &c["volumeMounts"][0];
    assert_eq!(mount["mountPath"], "/etc/grantflow", "{file}");
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    assert_eq!(volume["configMap"]["name"], EXTAUTHZ, "{file}");
    // gRPC health probes on the Check port; readiness on /readyz.
    let grpc_port = c["ports"][0]["containerPort"].clone();
    assert_eq!(c["ports"][0]["name"], "grpc");
    assert_eq!(c["livenessProbe"]["grpc"]["port"], grpc_port, "{file}");
    assert_eq!(c["startupProbe"]["grpc"]["port"], grpc_port, "{file}");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz", "{file}");
    let config = config_map_text(r);
    assert!(
        config.contains(&format!("grpc_addr: 0.0.0.0:{grpc_port}")),
        "{file}: extauthz listens where the probes and the Service point: {config}"
    );
    // Restricted pod security.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{file}");
    assert_eq!(pod["securityContext"]["runAsUser"], 65532, "{file}");
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(
        c["securityContext"]["readOnlyRootFilesystem"], true,
        "{file}"
    );
    assert_eq!(
        c["securityContext"]["allowPrivilegeEscalation"], false,
        "{file}"
    );
    assert_eq!(
        c["securityContext"]["capabilities"]["drop"],
        json!(["ALL"]),
        "{file}"
    );
    assert!(
        c["resources"]["requests"]["cpu"].is_string(),
        "{file}: resources"
    );
    assert!(
        c["resources"]["limits"]["memory"].is_string(),
        "{file}: resources"
    );
    // extauthz needs no Kubernetes API: no token, no RBAC.
    assert_eq!(pod["automountServiceAccountToken"], false, "{file}");
    let sa = pod["serviceAccountName"].as_str().unwrap();
    assert_eq!(
        r.get("ServiceAccount", sa)["automountServiceAccountToken"],
        false
    );
    for binding in r
        .of_kind("RoleBinding")
        .into_iter()
        .chain(r.of_kind("ClusterRoleBinding"))
    {
        for subject in binding["subjects"].as_array().unwrap() {
            assert_ne!(subject["name"], sa, "{file}: extauthz is bound to no role");
        }
    }
    // Topology spread over the component's own pods.
    for constraint in pod["topologySpreadConstraints"].as_array().unwrap() {
        assert_eq!(
            constraint["labelSelector"]["matchLabels"],
            deployment["spec"]["selector"]["matchLabels"],
            "{file}"
        );
    }
    // The Service: gRPC and admin ports, selecting the pods.
    let service = r.get("Service", EXTAUTHZ);
    assert_eq!(
        service["spec"]["selector"], deployment["spec"]["selector"]["matchLabels"],
        "{file}"
    );
    let ports: Vec<&str> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(ports, ["grpc", "http-admin"], "{file}");
    assert_eq!(service["spec"]["ports"][0]["port"], grpc_port, "{file}");
    assert_eq!(
        r.get("Service", &format!("{EXTAUTHZ}-headless"))["spec"]["clusterIP"],
        "None"
    );
    // A PodDisruptionBudget for the same pods.
    assert_eq!(
        r.get("PodDisruptionBudget", EXTAUTHZ)["spec"]["selector"],
        deployment["spec"]["selector"],
        "{file}"
    );
    // Every workload's pods are restricted.
    for kind in ["Deployment", "StatefulSet"] {
        for workload in r.of_kind(kind) {
            let spec = &workload["spec"]["template"]["spec"];
            assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{file}");
            for c in spec["containers"]
                .as_array()
                .unwrap()
                .iter()
                .chain(spec["initContainers"].as_array().into_iter().flatten())
            {
                assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
                assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
                assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
            }
        }
    }
    // NOTES tell the next steps with the real service name.
    assert!(
        r.notes
            .contains(&format!("{EXTAUTHZ}.{NAMESPACE}.svc.cluster.local")),
        "{file}: {}",
        r.notes
    );
    if r.of_kind("Deployment").len() > 1 {
        check_operator_shape(file, r, &app_version);
    }
}

fn check_operator_shape(file: &str, r: &Rendered, app_version: &str) {
    let deployment = r.get("Deployment", OPERATOR);
    let pod = &deployment["spec"]["template"]["spec"];
    let c = r.container(deployment, "operator");
    assert_eq!(
        c["image"],
        format!("ghcr.io/grantflow/grantflow-operator:{app_version}"),
        "{file}"
    );
    let args = args_of(c);
    // The webhook: Fail, the operator's path, the Service's HTTPS port → the webhook port.
    let webhook_config = r.of_kind("MutatingWebhookConfiguration");
    assert_eq!(webhook_config.len(), 1, "{file}");
    let hook = &webhook_config[0]["webhooks"][0];
    assert_eq!(hook["failurePolicy"], "Fail", "{file}");
    assert_eq!(hook["sideEffects"], "None");
    assert_eq!(hook["clientConfig"]["service"]["name"], OPERATOR);
    assert_eq!(hook["clientConfig"]["service"]["namespace"], NAMESPACE);
    assert_eq!(
        hook["clientConfig"]["service"]["path"],
        "/mutate/revocations"
    );
    assert_eq!(
        hook["rules"][0],
        json!({"apiGroups": ["session.grantflow.io"], "apiVersions": ["v1alpha1"],
               "operations": ["CREATE", "UPDATE"], "resources": ["revocations"], "scope": "Namespaced"})
    );
    let service = r.get("Service", OPERATOR);
    let https = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == hook["clientConfig"]["service"]["port"])
        .expect("the webhook's Service port");
    let target = https["targetPort"].as_str().unwrap();
    let container_port = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == target)
        .expect("the named target port");
    assert_eq!(
        flag(&args, "--webhook-addr"),
        Some(format!("0.0.0.0:{}", container_port["containerPort"]).as_str()),
        "{file}: the webhook listens on the Service's target port"
    );
    // Its certificate comes from the Secret the chart or cert-manager writes.
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| {
            flag(&args, "--webhook-cert")
                .unwrap()
                .starts_with(m["mountPath"].as_str().unwrap())
        })
        .expect("the certificate is on a mounted volume");
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    let secret_name = volume["secret"]["secretName"].as_str().unwrap();
    assert_eq!(secret_name, "grantflow-session-webhook-tls");
    let cert_manager = !r.of_kind("Certificate").is_empty();
    if cert_manager {
        let cert = r.get("Certificate", "grantflow-session-webhook");
        assert_eq!(cert["spec"]["secretName"], secret_name, "{file}");
        assert_eq!(
            cert["spec"]["dnsNames"],
            json!([
                format!("{OPERATOR}.{NAMESPACE}.svc"),
                format!("{OPERATOR}.{NAMESPACE}.svc.cluster.local")
            ])
        );
        assert!(cert["spec"]["issuerRef"]["name"].is_string());
        assert_eq!(
            webhook_config[0]["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            format!("{NAMESPACE}/grantflow-session-webhook"),
            "{file}"
        );
        assert!(
            hook["clientConfig"]["caBundle"].is_null(),
            "cert-manager injects it"
        );
        assert!(
            r.objects
                .iter()
                .all(|o| !(o["kind"] == "Secret" && o["metadata"]["name"] == secret_name)),
            "{file}: cert-manager writes the Secret, not the chart"
        );
    } else {
        let secret = r.get("Secret", secret_name);
        assert_eq!(secret["type"], "kubernetes.io/tls");
        assert_eq!(
            hook["clientConfig"]["caBundle"], secret["data"]["ca.crt"],
            "{file}: the API server trusts the CA that signed the serving certificate"
        );
        assert!(secret_value(secret, "tls.crt").starts_with("-----BEGIN CERTIFICATE-----"));
    }
    // Leader election: the Lease named in the args, in the release namespace.
    let lease = flag(&args, "--lease-name").expect("--lease-name");
    let env = env_of(c);
    assert_eq!(
        env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(
        env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    let role = r.get("Role", &format!("{OPERATOR}-leader-election"));
    assert_eq!(role["metadata"]["namespace"], NAMESPACE);
    assert_eq!(
        role["rules"],
        json!([
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": [lease], "verbs": ["get", "patch"]}
        ]),
        "{file}"
    );
    // Its CRDs, their status and finalizers, Events — nothing else.
    let watch = flag(&args, "--watch-namespace");
    let (kind, name) = match watch {
        Some(_) => ("Role", OPERATOR.to_owned()),
        None => ("ClusterRole", format!("{NAMESPACE}-{OPERATOR}")),
    };
    let controller_role = r.get(kind, &name);
    if let Some(namespace) = watch {
        assert_eq!(controller_role["metadata"]["namespace"], namespace);
        assert!(
            r.of_kind("ClusterRole").is_empty(),
            "{file}: no cluster-wide rights"
        );
        assert_eq!(
            hook["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"], namespace,
            "{file}: the webhook covers the watched namespace only"
        );
    }
    let rules = &controller_role["rules"];
    assert_eq!(
        rules,
        &json!([
            {"apiGroups": ["session.grantflow.io"], "resources": ["sessionpolicies"], "verbs": ["get", "list", "watch", "patch"]},
            {"apiGroups": ["session.grantflow.io"], "resources": ["revocations"], "verbs": ["get", "list", "watch", "delete"]},
            {"apiGroups": ["session.grantflow.io"], "resources": ["sessionpolicies/status", "revocations/status"], "verbs": ["get", "patch"]},
            {"apiGroups": ["session.grantflow.io"], "resources": ["sessionpolicies/finalizers"], "verbs": ["update"]},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}
        ]),
        "{file}"
    );
    let binding = r.get(&format!("{kind}Binding"), &name);
    assert_eq!(binding["roleRef"]["name"], name);
    assert_eq!(binding["subjects"][0]["name"], pod["serviceAccountName"]);
    // Both binaries read the same store with the same limits.
    let extauthz = r.get("Deployment", EXTAUTHZ);
    let extauthz_env = env_of(r.container(extauthz, "extauthz"));
    assert_eq!(env["GRANTFLOW_STORE"]["value"], "redis");
    assert_eq!(
        env["GRANTFLOW_REDIS_URL"],
        extauthz_env
            .get("GRANTFLOW_REDIS_URL")
            .cloned()
            .unwrap_or_else(|| env["GRANTFLOW_REDIS_URL"].clone()),
        "{file}: the same Redis URL source"
    );
    let config = config_map_text(r);
    for (var, key) in [
        ("GRANTFLOW_MAX_SESSION_AGE", "max_session_age"),
        ("GRANTFLOW_RETENTION", "retention"),
        ("GRANTFLOW_WATERMARK_RETENTION", "watermark_retention"),
        ("GRANTFLOW_AUDIT_RETENTION", "audit_retention"),
        ("GRANTFLOW_STORE_WRITE_TIMEOUT", "store_write_timeout"),
    ] {
        let value = env[var]["value"].as_str().unwrap();
        assert!(
            config.contains(&format!("{key}: {value}\n")),
            "{file}: {var}={value} as {key} in the ConfigMap"
        );
    }
    let cluster = config.contains("redis_cluster: true");
    assert_eq!(env["GRANTFLOW_REDIS_CLUSTER"]["value"], cluster.to_string());
    // Both wait for the same number of Redis replicas after a write.
    let wait = config
        .lines()
        .find_map(|line| line.strip_prefix("redis_wait_replicas: "));
    assert_eq!(
        env.get("GRANTFLOW_REDIS_WAIT_REPLICAS")
            .and_then(|v| v["value"].as_str()),
        wait,
        "{file}: GRANTFLOW_REDIS_WAIT_REPLICAS as redis_wait_replicas in the ConfigMap"
    );
    assert!(r.get("PodDisruptionBudget", OPERATOR)["spec"]["maxUnavailable"].is_number());
}

#[test]
fn the_default_install() {
    let r = render("default-values.yaml");
    check_common_shape("default", &r);
    assert_eq!(r.get("Deployment", EXTAUTHZ)["spec"]["replicas"], 2);
    assert_eq!(r.get("Deployment", OPERATOR)["spec"]["replicas"], 2);
    let config = config_map_text(&r);
    assert!(config.contains("store: redis\n"), "{config}");
    assert!(
        !config.contains("redis_url"),
        "the URL comes from the Secret: {config}"
    );
    assert!(config.contains(
        "oidc_discovery_url: https://login.microsoftonline.com/common/v2.0/.well-known/openid-configuration"
    ));
    // The in-chart Redis: password in a Secret, AOF on a PVC, noeviction.
    let secret = r.get("Secret", REDIS);
    let password = secret_value(secret, "password");
    assert!(password.len() >= 32, "a long generated password");
    assert_eq!(
        secret_value(secret, "redis-url"),
        format!("redis://:{password}@{REDIS}.{NAMESPACE}.svc:6379")
    );
    let env = env_of(r.container(r.get("Deployment", EXTAUTHZ), "extauthz"));
    assert_eq!(
        env["GRANTFLOW_REDIS_URL"]["valueFrom"]["secretKeyRef"],
        json!({"name": REDIS, "key": "redis-url"})
    );
    let redis = r.get("StatefulSet", REDIS);
    let args = args_of(r.container(redis, "redis"));
    for (name, value) in [
        ("--appendonly", "yes"),
        ("--appendfsync", "everysec"),
        ("--maxmemory-policy", "noeviction"),
        ("--dir", "/data"),
    ] {
        assert_eq!(flag(&args, name), Some(value), "{args:?}");
    }
    assert!(
        !args.iter().any(|a| a.contains(&password)),
        "the password is not on the command line"
    );
    let claim = &redis["spec"]["volumeClaimTemplates"][0];
    assert_eq!(claim["metadata"]["name"], "data");
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "2Gi");
    assert_eq!(r.get("Service", REDIS)["spec"]["ports"][0]["port"], 6379);
    // GitOps: the password from a Secret of the user's.
    let own = chart::render(
        &[&ci_values("default-values.yaml")],
        Some(&json!({"redis": {"internal": {"existingSecret": "my-redis"}}})),
    )
    .expect("renders");
    assert!(
        own.of_kind("Secret")
            .iter()
            .all(|s| s["metadata"]["name"] != REDIS)
    );
    let redis = own.get("StatefulSet", REDIS);
    let init = &redis["spec"]["template"]["spec"]["initContainers"][0];
    assert_eq!(
        env_of(init)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"],
        json!({"name": "my-redis", "key": "password"})
    );
    for (name, container) in [(EXTAUTHZ, "extauthz"), (OPERATOR, "operator")] {
        let env = env_of(own.container(own.get("Deployment", name), container));
        assert_eq!(
            env["GRANTFLOW_REDIS_URL"]["valueFrom"]["secretKeyRef"],
            json!({"name": "my-redis", "key": "redis-url"})
        );
    }
    for absent in [
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "ServiceMonitor",
        "AuthorizationPolicy",
        "Certificate",
    ] {
        assert!(
            r.of_kind(absent).is_empty(),
            "{absent} is optional and off by default"
        );
    }
}

#[test]
fn an_external_redis_cluster_from_a_secret() {
    let r = render("external-redis-cluster-values.yaml");
    check_common_shape("external-redis-cluster", &r);
    assert!(r.of_kind("StatefulSet").is_empty(), "no in-chart Redis");
    let config = config_map_text(&r);
    assert!(config.contains("redis_cluster: true\n"), "{config}");
    assert!(!config.contains("redis_url"), "{config}");
    assert!(config.contains("require_sid: true\n"));
    for name in [EXTAUTHZ, OPERATOR] {
        let d = r.get("Deployment", name);
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            env_of(c)["GRANTFLOW_REDIS_URL"]["valueFrom"]["secretKeyRef"],
            json!({"name": "grantflow-redis", "key": "urls"}),
            "{name}"
        );
    }
    assert_eq!(r.get("Deployment", EXTAUTHZ)["spec"]["replicas"], 3);
    // NetworkPolicies: the Check API only from the mesh's namespaces, admin from monitoring.
    let policy = r.get("NetworkPolicy", EXTAUTHZ);
    assert_eq!(
        policy["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["istio-injection"],
        "enabled"
    );
    assert_eq!(policy["spec"]["ingress"][0]["ports"][0]["port"], "grpc");
    assert!(r.get("NetworkPolicy", OPERATOR)["spec"]["ingress"][0]["from"].is_null());
}

#[test]
fn the_in_chart_redis_with_network_policies_and_service_monitors() {
    let r = render("internal-redis-values.yaml");
    check_common_shape("internal-redis", &r);
    let redis = r.get("StatefulSet", REDIS);
    assert_eq!(
        flag(&args_of(r.container(redis, "redis")), "--maxmemory"),
        Some("400mb")
    );
    let claim = &redis["spec"]["volumeClaimTemplates"][0]["spec"];
    assert_eq!(claim["storageClassName"], "premium-rwo");
    assert_eq!(claim["resources"]["requests"]["storage"], "5Gi");
    let config = config_map_text(&r);
    assert!(
        config.contains("jwks_url: https://login.microsoftonline.com/common/discovery/v2.0/keys")
    );
    assert!(!config.contains("oidc_discovery_url"), "{config}");
    // Only extauthz and the operator reach Redis.
    let policy = r.get("NetworkPolicy", REDIS);
    let from: Vec<&Value> = policy["spec"]["ingress"][0]["from"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| &f["podSelector"]["matchLabels"])
        .collect();
    assert_eq!(
        from,
        [
            &r.get("Deployment", EXTAUTHZ)["spec"]["selector"]["matchLabels"],
            &r.get("Deployment", OPERATOR)["spec"]["selector"]["matchLabels"]
        ]
    );
    // The dashboard and API through an Ingress; nothing else of the admin port.
    let ingress = r.get("Ingress", &format!("{EXTAUTHZ}-admin"));
    assert_eq!(ingress["spec"]["ingressClassName"], "internal-nginx");
    let rule = &ingress["spec"]["rules"][0];
    assert_eq!(rule["host"], "sessions.contoso.com");
    let paths: Vec<&str> = rule["http"]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/admin", "/api/v1"]);
    for path in rule["http"]["paths"].as_array().unwrap() {
        assert_eq!(path["backend"]["service"]["name"], EXTAUTHZ);
        assert_eq!(path["backend"]["service"]["port"]["name"], "http-admin");
    }
    // ServiceMonitors scrape a port their Service has.
    for component in [EXTAUTHZ, OPERATOR] {
        let monitor = r.get("ServiceMonitor", component);
        assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
        assert_eq!(
            monitor["metadata"]["labels"]["release"],
            "kube-prometheus-stack"
        );
        let service = r.get("Service", component);
        assert_eq!(
            monitor["spec"]["selector"]["matchLabels"],
            service["spec"]["selector"]
        );
        let port = &monitor["spec"]["endpoints"][0]["port"];
        assert!(
            service["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| &p["name"] == port),
            "{component}: {port}"
        );
        assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    }
}

#[test]
fn istio_custom_authorization_policies() {
    let r = render("istio-values.yaml");
    check_common_shape("istio", &r);
    let policies = r.of_kind("AuthorizationPolicy");
    assert_eq!(policies.len(), 2);
    for policy in &policies {
        assert_eq!(policy["apiVersion"], "security.istio.io/v1");
        assert_eq!(policy["spec"]["action"], "CUSTOM");
        assert_eq!(policy["spec"]["provider"]["name"], "grantflow-extauthz");
        assert!(policy["spec"]["selector"]["matchLabels"]["app"].is_string());
        assert!(
            !policy["spec"]["rules"].as_array().unwrap().is_empty(),
            "a CUSTOM policy needs rules"
        );
    }
    let portal = r.get("AuthorizationPolicy", "admin-portal-grantflow");
    assert_eq!(portal["metadata"]["namespace"], "admin-portal");
    assert_eq!(portal["spec"]["rules"], json!([{}]), "every request");
    let api = r.get("AuthorizationPolicy", "break-glass-api-grantflow");
    assert_eq!(
        api["spec"]["rules"][0]["to"][0]["operation"]["notPaths"],
        json!(["/healthz", "/readyz"])
    );
    assert!(
        r.notes
            .contains("AuthorizationPolicy admin-portal/admin-portal-grantflow")
    );
}

#[test]
fn autoscaling_on_a_plain_external_redis_url() {
    let r = render("hpa-values.yaml");
    check_common_shape("hpa", &r);
    let deployment = r.get("Deployment", EXTAUTHZ);
    assert!(
        deployment["spec"]["replicas"].is_null(),
        "the HPA owns the replica count"
    );
    let hpa = r.get("HorizontalPodAutoscaler", EXTAUTHZ);
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"],
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": EXTAUTHZ})
    );
    assert_eq!(hpa["spec"]["minReplicas"], 3);
    assert_eq!(
        hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        60
    );
    let config = config_map_text(&r);
    assert!(
        config.contains("redis_url:\n- redis://redis-master.data.svc.cluster.local:6379\n"),
        "{config}"
    );
    let env = env_of(r.container(r.get("Deployment", OPERATOR), "operator"));
    assert_eq!(
        env["GRANTFLOW_REDIS_URL"]["value"],
        "redis://redis-master.data.svc.cluster.local:6379"
    );
    assert!(!env_of(r.container(deployment, "extauthz")).contains_key("GRANTFLOW_REDIS_URL"));
}

/// Where the chart mounts the CA of redis.external.tls.caSecret.
const REDIS_CA_FILE: &str = "/etc/grantflow/redis-ca/ca.crt";

/// Both Deployments read GRANTFLOW_REDIS_CA_FILE from `secret`'s `key`, mounted read-only;
/// neither has the variable when `secret` is None.
fn check_redis_ca(file: &str, r: &Rendered, secret: Option<(&str, &str)>) {
    for (name, container) in [(EXTAUTHZ, "extauthz"), (OPERATOR, "operator")] {
        let deployment = r.get("Deployment", name);
        let env = env_of(r.container(deployment, container));
        let Some((secret, key)) = secret else {
            assert!(
                !env.contains_key("GRANTFLOW_REDIS_CA_FILE"),
                "{file}: {name} uses the system's roots"
            );
            assert!(
                deployment["spec"]["template"]["spec"]["volumes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|v| v["name"] != "redis-ca"),
                "{file}: {name} mounts no Redis CA"
            );
            continue;
        };
        assert_eq!(
            env["GRANTFLOW_REDIS_CA_FILE"],
            json!({"name": "GRANTFLOW_REDIS_CA_FILE", "value": REDIS_CA_FILE}),
            "{file}: {name}"
        );
        let (mounted, mounted_key, mount) = r
            .secret_file(deployment, container, REDIS_CA_FILE)
            .unwrap_or_else(|| panic!("{file}: {name} has a Secret key at {REDIS_CA_FILE}"));
        assert_eq!(
            (mounted.as_str(), mounted_key.as_str()),
            (secret, key),
            "{file}: {name}"
        );
        assert_eq!(mount["readOnly"], true, "{file}: {name}");
    }
}

#[test]
fn an_external_redis_over_tls_with_a_private_ca() {
    let r = render("external-redis-tls-values.yaml");
    check_common_shape("external-redis-tls", &r);
    assert!(r.of_kind("StatefulSet").is_empty(), "no in-chart Redis");
    let url = "rediss://redis-tls.data.svc.cluster.local:6380";
    let config = config_map_text(&r);
    assert!(
        config.contains(&format!("redis_url:\n- {url}\n")),
        "{config}"
    );
    assert!(
        !config.contains("redis_ca_file"),
        "the CA file is given by the environment: {config}"
    );
    let operator_env = env_of(r.container(r.get("Deployment", OPERATOR), "operator"));
    assert_eq!(operator_env["GRANTFLOW_REDIS_URL"]["value"], url);
    check_redis_ca("external-redis-tls", &r, Some(("redis-ca", "ca.crt")));

    // A Redis Cluster over TLS: rediss:// seed nodes.
    let cluster = json!({"redis": {"external": {"cluster": true,
        "urls": ["rediss://redis-0.data.svc:6380", "rediss://redis-1.data.svc:6380"]}}});
    let values = ci_values("external-redis-tls-values.yaml");
    chart::check_schema(&[&values], Some(&cluster)).expect("rediss:// seed nodes fit the schema");
    let r = chart::render(&[&values], Some(&cluster)).expect("renders");
    check_common_shape("external-redis-tls cluster", &r);
    assert!(config_map_text(&r).contains(
        "redis_cluster: true\nredis_url:\n- rediss://redis-0.data.svc:6380\n- rediss://redis-1.data.svc:6380\n"
    ));
    check_redis_ca(
        "external-redis-tls cluster",
        &r,
        Some(("redis-ca", "ca.crt")),
    );

    // URLs (and password) from the user's Secret, which the chart cannot read: the CA is
    // mounted as asked, and the binaries check the scheme at start. Another key of the
    // Secret (a cert-manager Secret also holds tls.key): only that key is mounted.
    let own = json!({"redis": {"external": {"urls": [], "existingSecret": "grantflow-redis",
        "tls": {"caSecret": "redis-tls", "caSecretKey": "root-ca.pem"}}}});
    let r = chart::render(&[&values], Some(&own)).expect("renders");
    check_common_shape("external-redis-tls existingSecret", &r);
    check_redis_ca(
        "external-redis-tls existingSecret",
        &r,
        Some(("redis-tls", "root-ca.pem")),
    );
    let extauthz = r.get("Deployment", EXTAUTHZ);
    let volume = extauthz["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "redis-ca")
        .expect("the CA volume");
    assert_eq!(
        volume["secret"]["items"],
        json!([{"key": "root-ca.pem", "path": "ca.crt"}]),
        "only the CA of the Secret"
    );

    // A managed Redis with a public CA: rediss:// alone, verified against the system's roots.
    let public = json!({"redis": {"external": {"urls": ["rediss://contoso.redis.cache.windows.net:6380"],
        "tls": {"caSecret": ""}}}});
    let r = chart::render(&[&values], Some(&public)).expect("renders");
    check_common_shape("external-redis-tls public CA", &r);
    check_redis_ca("external-redis-tls public CA", &r, None);
    let operator_env = env_of(r.container(r.get("Deployment", OPERATOR), "operator"));
    assert_eq!(
        operator_env["GRANTFLOW_REDIS_URL"]["value"],
        "rediss://contoso.redis.cache.windows.net:6380"
    );
    // And no other combination has a Redis CA.
    for file in COMBINATIONS.iter().filter(|f| {
        ![
            "external-redis-tls-values.yaml",
            "memory-values.yaml",
            "embedded-values.yaml",
        ]
        .contains(f)
    }) {
        check_redis_ca(file, &render(file), None);
    }
}

#[test]
fn the_webhook_certificate_from_cert_manager() {
    let r = render("cert-manager-values.yaml");
    check_common_shape("cert-manager", &r);
    // No issuer given: a self-signed root, a CA Issuer, the serving certificate.
    let ca = r.get("Certificate", "grantflow-session-webhook-ca");
    assert_eq!(ca["spec"]["isCA"], true);
    assert_eq!(
        ca["spec"]["issuerRef"]["name"],
        "grantflow-session-selfsigned"
    );
    assert!(r.get("Issuer", "grantflow-session-selfsigned")["spec"]["selfSigned"].is_object());
    let ca_issuer = r.get("Issuer", "grantflow-session-webhook-ca");
    assert_eq!(
        ca_issuer["spec"]["ca"]["secretName"],
        ca["spec"]["secretName"]
    );
    let serving = r.get("Certificate", "grantflow-session-webhook");
    assert_eq!(
        serving["spec"]["issuerRef"]["name"],
        "grantflow-session-webhook-ca"
    );
    assert!(
        r.get("Deployment", OPERATOR)["spec"]["template"]["metadata"]["annotations"]
            .get("checksum/webhook-tls")
            .is_none()
    );

    let r = render("cert-manager-clusterissuer-values.yaml");
    check_common_shape("cert-manager-clusterissuer", &r);
    assert!(r.of_kind("Issuer").is_empty(), "the given issuer is used");
    assert_eq!(
        r.get("Certificate", "grantflow-session-webhook")["spec"]["issuerRef"],
        json!({"name": "internal-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"})
    );
}

#[test]
fn a_single_replica_on_the_memory_store() {
    let r = render("memory-values.yaml");
    check_common_shape("memory", &r);
    assert_eq!(r.get("Deployment", EXTAUTHZ)["spec"]["replicas"], 1);
    assert_eq!(r.of_kind("Deployment").len(), 1, "no operator");
    assert!(r.of_kind("StatefulSet").is_empty() && r.of_kind("Secret").is_empty());
    assert!(r.of_kind("MutatingWebhookConfiguration").is_empty());
    let config = config_map_text(&r);
    assert!(
        config.contains("store: memory\n") && !config.contains("redis"),
        "{config}"
    );
}

#[test]
fn a_single_replica_on_the_embedded_store_keeps_its_data_on_a_volume() {
    let r = render("embedded-values.yaml");
    check_common_shape("embedded", &r);
    let deployment = r.get("Deployment", EXTAUTHZ);
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(
        deployment["spec"]["strategy"],
        json!({"type": "Recreate"}),
        "one process per data volume: no rolling overlap"
    );
    assert_eq!(r.of_kind("Deployment").len(), 1, "no operator");
    assert!(r.of_kind("StatefulSet").is_empty() && r.of_kind("Secret").is_empty());
    let config = config_map_text(&r);
    assert!(
        config.contains("store: embedded\n")
            && config.contains("data_dir: /var/lib/grantflow\n")
            && !config.contains("redis"),
        "{config}"
    );
    let pod = &deployment["spec"]["template"]["spec"];
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/var/lib/grantflow")
        .expect("the data folder is a volume")
        .clone();
    assert_ne!(mount["readOnly"], true, "the data folder is writable");
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume")
        .clone();
    let claim = volume["persistentVolumeClaim"]["claimName"]
        .as_str()
        .unwrap();
    let pvc = r.get("PersistentVolumeClaim", claim);
    assert_eq!(pvc["spec"]["storageClassName"], "fast-ssd");
    assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "2Gi");
    assert_eq!(pvc["spec"]["accessModes"], json!(["ReadWriteOnce"]));
    assert_eq!(
        pvc["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
        "revocations and the audit trail outlive an uninstall"
    );

    // An existing claim: no claim rendered, that one mounted.
    let values = ci_values("embedded-values.yaml");
    let existing = json!({"store": {"embedded": {"persistence": {"existingClaim": "gf-data"}}}});
    let r = chart::render(&[&values], Some(&existing)).expect("renders");
    assert!(r.of_kind("PersistentVolumeClaim").is_empty());
    let volumes = &r.get("Deployment", EXTAUTHZ)["spec"]["template"]["spec"]["volumes"];
    assert!(
        volumes
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["persistentVolumeClaim"]["claimName"] == "gf-data"),
        "{volumes}"
    );
}

#[test]
fn the_istio_and_envoy_examples_fail_closed_and_match_the_chart() {
    let mesh = chart::yaml_file(&repo_root().join("examples/istio/meshconfig.yaml"));
    let mesh_config = mesh
        .iter()
        .find_map(|doc| {
            let m = &doc["meshConfig"];
            (!m.is_null()).then_some(m)
        })
        .expect("a meshConfig");
    let providers = mesh_config["extensionProviders"].as_array().unwrap();
    let values = chart::yaml_file(&chart::chart_dir().join("values.yaml"));
    let provider = providers
        .iter()
        .find(|p| p["name"] == values[0]["istio"]["extensionProviderName"])
        .expect("the provider the chart's AuthorizationPolicies name");
    let grpc = &provider["envoyExtAuthzGrpc"];
    assert_eq!(
        grpc["service"],
        format!("{EXTAUTHZ}.{NAMESPACE}.svc.cluster.local"),
        "the release of docs/install.md"
    );
    assert_eq!(grpc["port"], values[0]["extauthz"]["ports"]["grpc"]);
    assert_eq!(grpc["failOpen"], false, "fail closed");
    assert_eq!(grpc["statusOnError"], "503");
    assert!(grpc["timeout"].is_string());
    // The same snippet as IstioOperator and as istiod Helm values.
    let operator = chart::yaml_file(&repo_root().join("examples/istio/istiooperator.yaml"));
    assert_eq!(operator[0]["kind"], "IstioOperator");
    assert_eq!(
        operator[0]["spec"]["meshConfig"]["extensionProviders"], mesh_config["extensionProviders"],
        "istiooperator.yaml and meshconfig.yaml agree"
    );
    let policy = chart::yaml_file(&repo_root().join("examples/istio/authorizationpolicy.yaml"));
    let policy = &policy[0];
    assert_eq!(policy["kind"], "AuthorizationPolicy");
    assert_eq!(policy["spec"]["action"], "CUSTOM");
    assert_eq!(policy["spec"]["provider"]["name"], provider["name"]);
    assert!(!policy["spec"]["rules"].as_array().unwrap().is_empty());
    // The chart values of the Istio walkthrough render.
    let example = repo_root().join("examples/istio/values-istio.yaml");
    let rendered = chart::render(&[&example], None).expect("values-istio.yaml renders");
    assert!(!rendered.of_kind("AuthorizationPolicy").is_empty());
    // Plain Envoy: the example bootstrap fails closed.
    let envoy = chart::yaml_file(&repo_root().join("examples/envoy/envoy.yaml"));
    let text = envoy[0].to_string();
    assert!(text.contains("\"failure_mode_allow\":false"), "{text}");
}

#[test]
fn dockerfiles_build_distroless_nonroot_images() {
    for binary in ["extauthz", "operator"] {
        let path = repo_root().join(binary).join("Dockerfile");
        let text = std::fs::read_to_string(&path).expect("a Dockerfile");
        assert!(
            text.contains("FROM rust:1.95-bookworm AS build"),
            "{binary}"
        );
        assert!(
            text.contains("--locked"),
            "{binary}: reproducible dependencies"
        );
        assert!(!text.contains("cargo install"), "{binary}");
        assert!(
            text.contains("FROM gcr.io/distroless/cc-debian12:nonroot"),
            "{binary}: distroless runtime"
        );
        assert!(text.contains("USER 65532:65532"), "{binary}: non-root");
        assert!(
            text.contains(&format!(
                "ENTRYPOINT [\"/usr/local/bin/grantflow-{binary}\"]"
            )),
            "{binary}: exec form, no shell"
        );
    }
    let ignore = std::fs::read_to_string(repo_root().join(".dockerignore")).expect(".dockerignore");
    for entry in ["target", ".venv", "node_modules", ".git"] {
        assert!(
            ignore.lines().any(|l| l.contains(entry)),
            "{entry} is not sent to the builder"
        );
    }
    assert!(
        !ignore.lines().any(|l| l.trim() == "Cargo.lock"),
        "--locked needs Cargo.lock"
    );
}

// --- kubectl against the emulator ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn every_combination_applies_with_kubectl() {
    for file in COMBINATIONS {
        let rendered = render(file);
        let kmock = Kmock::start(&rendered.crd_files).await;
        let apply = |paths: &[PathBuf]| {
            let mut args = vec!["apply", "--validate=false"];
            for p in paths {
                args.push("-f");
                args.push(p.to_str().unwrap());
            }
            kmock.kubectl(&args)
        };
        let crds = apply(&rendered.crd_files);
        assert!(
            crds.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&crds.stderr)
        );
        let first = apply(&rendered.files);
        let stdout = String::from_utf8_lossy(&first.stdout);
        assert!(
            first.status.success(),
            "{file}: kubectl apply failed:\n{stdout}{}",
            String::from_utf8_lossy(&first.stderr)
        );
        let created = stdout.lines().filter(|l| l.ends_with(" created")).count();
        assert_eq!(
            created,
            rendered.objects.len(),
            "{file}: every object created:\n{stdout}"
        );
        // What the server stored is what was applied: a second apply changes nothing. (kubectl
        // always re-sends a PodDisruptionBudget's selector, whose patch strategy is
        // "replace", and reports it "configured"; its stored spec is compared below.)
        let second = apply(&rendered.files);
        let stdout = String::from_utf8_lossy(&second.stdout);
        assert!(second.status.success(), "{file}: {stdout}");
        assert!(
            stdout.lines().all(|l| l.ends_with(" unchanged")
                || (l.starts_with("poddisruptionbudget.policy/") && l.ends_with(" configured"))),
            "{file}: the second apply is a no-op:\n{stdout}"
        );
        for pdb in rendered.of_kind("PodDisruptionBudget") {
            let name = pdb["metadata"]["name"].as_str().unwrap();
            let got = kmock.kubectl(&[
                "get",
                "poddisruptionbudget.policy",
                name,
                "-n",
                NAMESPACE,
                "-o",
                "json",
            ]);
            let got: Value = serde_json::from_slice(&got.stdout).expect("JSON");
            assert_eq!(got["spec"], pdb["spec"], "{file}: {name}");
        }
        // And each object reads back with its namespace.
        let deployment =
            kmock.kubectl(&["get", "deployment", EXTAUTHZ, "-n", NAMESPACE, "-o", "json"]);
        let deployment: Value = serde_json::from_slice(&deployment.stdout).expect("JSON");
        assert_eq!(
            deployment["spec"]["template"]["spec"]["containers"][0]["args"],
            rendered.get("Deployment", EXTAUTHZ)["spec"]["template"]["spec"]["containers"][0]["args"]
        );
    }
}

// --- the binaries on the rendered configuration ----------------------------------------------

/// Replaces the single line starting with `key: ` by `key: value`.
fn rewrite_line(text: &str, key: &str, value: &str) -> String {
    let prefix = format!("{key}: ");
    let count = text.lines().filter(|l| l.starts_with(&prefix)).count();
    assert_eq!(count, 1, "one `{key}` in\n{text}");
    text.lines()
        .map(|l| {
            if l.starts_with(&prefix) {
                format!("{prefix}{value}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// `redis://[user:password@]host:port` with host:port replaced by 127.0.0.1:`port`.
fn redis_url_to(url: &str, port: u16) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (auth, _host) = match rest.rsplit_once('@') {
        Some((auth, host)) => (format!("{auth}@"), host),
        None => (String::new(), rest),
    };
    format!("{scheme}://{auth}127.0.0.1:{port}")
}

/// What the test gives in place of the Secret the chart's Deployment reads
/// GRANTFLOW_REDIS_URL from.
enum RedisUrlEnv {
    /// The Secret is rendered by the chart: its URL with the address rewritten.
    Rendered { port: u16 },
    /// An existing Secret the user made: these URLs.
    Given(Vec<String>),
    /// No such variable: the URLs are in the file (rewritten to this port).
    InFile { port: u16 },
    /// No Redis at all (the embedded store): its data folder, the Deployment's volume mount,
    /// becomes this local folder.
    NoRedis { data_dir: PathBuf },
}

/// What the test gives in place of a key of a Secret the chart's Deployment mounts as a file
/// (a Secret the user made): the local file with its content.
struct SecretFile<'a> {
    secret: &'a str,
    key: &'a str,
    local: PathBuf,
}

/// The local file of `mounted` that `container` of `deployment` sees at the in-cluster
/// `path`, found through the Secret volume the container mounts there (read-only).
fn local_file(
    file: &str,
    rendered: &Rendered,
    deployment: &Value,
    container: &str,
    path: &str,
    mounted: &[SecretFile],
) -> PathBuf {
    let (secret, key, mount) = rendered
        .secret_file(deployment, container, path)
        .unwrap_or_else(|| panic!("{file}: {container} has a Secret key mounted at {path}"));
    assert_eq!(
        mount["readOnly"], true,
        "{file}: {path} is mounted read-only"
    );
    mounted
        .iter()
        .find(|f| f.secret == secret && f.key == key)
        .unwrap_or_else(|| {
            panic!("{file}: the test gives no file for key {key} of Secret {secret}")
        })
        .local
        .clone()
}

/// Starts extauthz in this process exactly as the chart's Deployment does: `--config` the
/// ConfigMap's file, GRANTFLOW_REDIS_URL and GRANTFLOW_REDIS_CA_FILE (the only GRANTFLOW_*
/// variables the pod may get), with only the listen addresses and the Redis address changed
/// and the in-cluster CA path replaced by the local file of `mounted` the Deployment's Secret
/// volume puts there. Then sends Envoy traffic.
async fn serve_the_rendered_config(
    file: &str,
    issuer: &Issuer,
    redis: RedisUrlEnv,
    mounted: &[SecretFile<'_>],
) {
    let values = ci_values(file);
    // Testable values: the test issuer's keys and audience.
    let set = json!({"config": {"jwks_url": issuer.jwks_uri, "audiences": [AUDIENCE]}});
    let rendered = chart::render(&[&values], Some(&set)).expect("renders");
    let deployment = rendered.get("Deployment", EXTAUTHZ);
    let container = rendered.container(deployment, "extauthz");
    assert_eq!(args_of(container), ["--config", CONFIG_FILE], "{file}");
    let env = env_of(container);
    let grantflow_vars: Vec<&String> = env.keys().filter(|k| k.starts_with("GRANTFLOW_")).collect();

    let mut config = config_map_text(&rendered);
    let grpc = loopback(free_port());
    let admin = loopback(free_port());
    config = rewrite_line(&config, "grpc_addr", &grpc.to_string());
    config = rewrite_line(&config, "admin_addr", &admin.to_string());
    let redis_url = match redis {
        RedisUrlEnv::Rendered { port } => {
            let source = &env["GRANTFLOW_REDIS_URL"]["valueFrom"]["secretKeyRef"];
            let secret = rendered.get("Secret", source["name"].as_str().unwrap());
            let url = secret_value(secret, source["key"].as_str().unwrap());
            // The test Redis takes the chart's password.
            let password = secret_value(secret, "password");
            assert!(url.contains(&format!(":{password}@")));
            redis_cli(port, &["CONFIG", "SET", "requirepass", &password])
                .expect("set the chart's password on the test Redis");
            Some(vec![redis_url_to(&url, port)])
        }
        RedisUrlEnv::Given(urls) => {
            assert!(env["GRANTFLOW_REDIS_URL"]["valueFrom"]["secretKeyRef"].is_object());
            Some(urls)
        }
        RedisUrlEnv::NoRedis { data_dir } => {
            assert!(!env.contains_key("GRANTFLOW_REDIS_URL"), "{file}");
            assert!(!config.contains("redis"), "{file}: {config}");
            let mount = container["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["name"] == "data")
                .expect("the data volume is mounted");
            let in_pod = mount["mountPath"].as_str().unwrap();
            assert!(
                config.contains(&format!("data_dir: {in_pod}\n")),
                "{file}: data_dir is the volume's mount: {config}"
            );
            config = rewrite_line(&config, "data_dir", &data_dir.display().to_string());
            None
        }
        RedisUrlEnv::InFile { port } => {
            assert!(!env.contains_key("GRANTFLOW_REDIS_URL"), "{file}");
            let marker = "redis_url:\n- ";
            let start = config.find(marker).expect("redis_url in the file") + marker.len();
            let end = start + config[start..].find('\n').unwrap();
            let url = config[start..end].to_owned();
            config = config.replace(&url, &redis_url_to(&url, port));
            None
        }
    };
    // The CA file: the path the Deployment names, where its Secret volume puts the CA.
    let redis_ca_file = env.get("GRANTFLOW_REDIS_CA_FILE").map(|var| {
        let path = var["value"]
            .as_str()
            .expect("GRANTFLOW_REDIS_CA_FILE is a path");
        local_file(file, &rendered, deployment, "extauthz", path, mounted)
    });
    assert_eq!(
        redis_ca_file.iter().count(),
        mounted.len(),
        "{file}: the Deployment reads every Secret file the test gives"
    );
    assert_eq!(
        grantflow_vars,
        redis_ca_file
            .iter()
            .map(|_| "GRANTFLOW_REDIS_CA_FILE")
            .chain(redis_url.iter().map(|_| "GRANTFLOW_REDIS_URL"))
            .collect::<Vec<_>>(),
        "{file}: nothing else overrides the file"
    );

    let dir = TempDir::new("extauthz");
    let path = dir.path().join(Path::new(CONFIG_FILE).file_name().unwrap());
    std::fs::write(&path, &config).unwrap();
    // As clap fills Options: GRANTFLOW_REDIS_URL and GRANTFLOW_REDIS_CA_FILE from the
    // environment, the rest from the file.
    let options = Options {
        config: Some(path),
        redis_url,
        redis_ca_file,
        ..Options::default()
    };
    let settings = Settings::resolve(options)
        .unwrap_or_else(|e| panic!("{file}: the rendered configuration is valid: {e}"));
    assert_eq!(settings.grpc_addr, grpc);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = settings
        .store
        .open(settings.limits, clock.clone())
        .expect("the store opens");
    let running = server::start(&settings, store, clock.clone())
        .await
        .expect("extauthz starts");

    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = http.get(format!("http://{admin}/readyz")).send().await;
        if let Ok(response) = ready
            && response.status() == 200
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{file}: /readyz never answered 200"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Real traffic through Envoy: a token of the tenant is let through, no token is not.
    let upstream = Upstream::start().await;
    let envoy = Envoy::start(running.grpc_addr, upstream.addr).await;
    let now = clock.now_secs();
    let token = issuer
        .token(json!({
            "iss": format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
            "aud": AUDIENCE, "tid": TENANT, "oid": "chart-user", "sub": "chart-user",
            "sid": format!("chart-{file}"), "iat": now, "nbf": now, "ver": "2.0",
            "scp": "access_as_user",
        }))
        .await;
    let allowed = http
        .get(envoy.url("/"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("Envoy answers");
    assert_eq!(allowed.status(), 200, "{file}");
    let seen: Value = allowed.json().await.unwrap();
    assert_eq!(seen["x-grantflow-tenant"], json!([TENANT]), "{file}");
    let refused = http
        .get(envoy.url("/"))
        .send()
        .await
        .expect("Envoy answers");
    assert_eq!(refused.status(), 401, "{file}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn extauthz_serves_with_the_rendered_config_on_the_embedded_store() {
    let issuer = Issuer::start().await;
    let data = TempDir::new("embedded-data");
    serve_the_rendered_config(
        "embedded-values.yaml",
        &issuer,
        RedisUrlEnv::NoRedis {
            data_dir: data.path().join("grantflow"),
        },
        &[],
    )
    .await;
    assert!(
        data.path()
            .join("grantflow")
            .join(grantflow_core::store::DATABASE_FILE)
            .is_file(),
        "the embedded store wrote its data folder"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn extauthz_serves_with_the_rendered_config_on_the_in_chart_redis() {
    let issuer = Issuer::start().await;
    let redis = RedisServer::start().await;
    serve_the_rendered_config(
        "default-values.yaml",
        &issuer,
        RedisUrlEnv::Rendered { port: redis.port },
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn extauthz_serves_with_the_rendered_config_on_a_plain_redis_url() {
    let issuer = Issuer::start().await;
    let redis = RedisServer::start().await;
    serve_the_rendered_config(
        "hpa-values.yaml",
        &issuer,
        RedisUrlEnv::InFile { port: redis.port },
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn extauthz_serves_with_the_rendered_config_on_a_redis_cluster() {
    let issuer = Issuer::start().await;
    let cluster = RedisCluster::start().await;
    serve_the_rendered_config(
        "external-redis-cluster-values.yaml",
        &issuer,
        RedisUrlEnv::Given(cluster.urls()),
        &[],
    )
    .await;
}

/// A Redis over TLS whose certificate a private CA signs: the rendered file's rediss:// URL
/// (rewritten to the test server's TLS port) and the CA given as the Secret the values name
/// (redis-ca, key ca.crt), which the process finds only through the rendered
/// GRANTFLOW_REDIS_CA_FILE and the volume mounted at that path.
#[tokio::test(flavor = "multi_thread")]
async fn extauthz_serves_with_the_rendered_config_on_a_redis_over_tls_with_a_private_ca() {
    let issuer = Issuer::start().await;
    let redis = RedisServer::start_tls().await;
    let port = redis.tls_port.expect("a server started with TLS");
    serve_the_rendered_config(
        "external-redis-tls-values.yaml",
        &issuer,
        RedisUrlEnv::InFile { port },
        &[SecretFile {
            secret: "redis-ca",
            key: "ca.crt",
            local: redis.ca_file(),
        }],
    )
    .await;
}

/// The newest modification time among the files under `dirs` (recursively).
fn newest_mtime(dirs: &[PathBuf]) -> std::time::SystemTime {
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    let mut stack: Vec<PathBuf> = dirs.to_vec();
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if path
                .file_name()
                .is_some_and(|n| n == "target" || n == "tests")
            {
                continue;
            }
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.filter_map(Result::ok).map(|e| e.path()));
            }
        } else if let Ok(modified) = meta.modified() {
            newest = newest.max(modified);
        }
    }
    newest
}

/// The operator binary. `cargo test --workspace` builds it next to this test (for the
/// operator's own integration tests); when that one is missing or older than the sources it
/// is built from, cargo builds it.
fn operator_binary() -> PathBuf {
    let root = repo_root();
    let sources: Vec<PathBuf> = ["operator", "core", "crds", "Cargo.lock"]
        .iter()
        .map(|p| root.join(p))
        .collect();
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("grantflow-operator")));
    if let Some(binary) = beside
        && let Ok(built) = std::fs::metadata(&binary).and_then(|m| m.modified())
        && built >= newest_mtime(&sources)
    {
        return binary;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = chart::run(
        std::process::Command::new(cargo)
            .current_dir(&root)
            .args([
                "build",
                "--locked",
                "-p",
                "grantflow-operator",
                "--bin",
                "grantflow-operator",
                "--message-format",
                "json-render-diagnostics",
            ])
            .stderr(Stdio::inherit()),
    );
    assert!(output.status.success(), "cargo build -p grantflow-operator");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| {
            m["reason"] == "compiler-artifact" && m["target"]["name"] == "grantflow-operator"
        })
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo reports the operator executable")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_runs_with_the_rendered_deployment() {
    let binary = operator_binary();
    let rendered = render("default-values.yaml");
    let redis = RedisServer::start().await;
    let kmock = Kmock::start(&rendered.crd_files).await;
    let dir = TempDir::new("operator");

    let deployment = rendered.get("Deployment", OPERATOR);
    let container = rendered.container(deployment, "operator");
    let mounts = container["volumeMounts"].as_array().unwrap();
    let volumes = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    // The files of the mounted webhook Secret, as the kubelet would write them.
    let file_of = |path: &str| -> PathBuf {
        let mount = mounts
            .iter()
            .find(|m| path.starts_with(m["mountPath"].as_str().unwrap()))
            .unwrap_or_else(|| panic!("{path} is on a mounted volume"));
        let volume = volumes.iter().find(|v| v["name"] == mount["name"]).unwrap();
        let secret = rendered.get("Secret", volume["secret"]["secretName"].as_str().unwrap());
        let relative = &path[mount["mountPath"].as_str().unwrap().len() + 1..];
        let item = volume["secret"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["path"] == relative)
            .unwrap();
        let local = dir.path().join(relative);
        std::fs::write(&local, secret_value(secret, item["key"].as_str().unwrap())).unwrap();
        local
    };
    let admin = loopback(free_port());
    let webhook = loopback(free_port());
    let mut args = args_of(container);
    for i in 0..args.len() {
        let rewritten = match i.checked_sub(1).map(|p| args[p].as_str()) {
            Some("--admin-addr") => admin.to_string(),
            Some("--webhook-addr") => webhook.to_string(),
            Some("--webhook-cert" | "--webhook-key") => file_of(&args[i]).display().to_string(),
            _ => continue,
        };
        args[i] = rewritten;
    }
    let pod_name = format!("{OPERATOR}-7d9c5b6f4-x2x9q");
    let mut command = tokio::process::Command::new(&binary);
    command
        .args(&args)
        .env_clear()
        .env("KUBECONFIG", kmock.kubeconfig(dir.path()))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (name, var) in env_of(container) {
        let value = if let Some(value) = var["value"].as_str() {
            value.to_owned()
        } else if let Some(field) = var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            match field {
                "metadata.namespace" => NAMESPACE.to_owned(),
                "metadata.name" => pod_name.clone(),
                other => panic!("unexpected fieldRef {other}"),
            }
        } else {
            let source = &var["valueFrom"]["secretKeyRef"];
            let secret = rendered.get("Secret", source["name"].as_str().unwrap());
            let url = secret_value(secret, source["key"].as_str().unwrap());
            assert_eq!(name, "GRANTFLOW_REDIS_URL");
            let password = secret_value(secret, "password");
            redis_cli(redis.port, &["CONFIG", "SET", "requirepass", &password])
                .expect("set the chart's password on the test Redis");
            redis_url_to(&url, redis.port)
        };
        command.env(name, value);
    }
    let _operator = command.spawn().expect("start grantflow-operator");

    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = http.get(format!("http://{admin}/readyz")).send().await;
        if let Ok(response) = ready
            && response.status() == 200
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the operator's /readyz (store reachable with the chart's password) never answered 200"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The API server's call: https://<service>.<namespace>.svc:<port><path>, trusting caBundle.
    let hooks = rendered.of_kind("MutatingWebhookConfiguration");
    let hook = &hooks[0]["webhooks"][0];
    let service = &hook["clientConfig"]["service"];
    let host = format!(
        "{}.{}.svc",
        service["name"].as_str().unwrap(),
        service["namespace"].as_str().unwrap()
    );
    let ca = base64_decode(hook["clientConfig"]["caBundle"].as_str().unwrap());
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).expect("caBundle is PEM")])
        .resolve(&host, SocketAddr::new(webhook.ip(), webhook.port()))
        .build()
        .unwrap();
    let url = format!(
        "https://{host}:{}{}",
        webhook.port(),
        service["path"].as_str().unwrap()
    );
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "session.grantflow.io", "version": "v1alpha1", "kind": "Revocation"},
            "resource": {"group": "session.grantflow.io", "version": "v1alpha1", "resource": "revocations"},
            "name": "inc-2041-alice",
            "namespace": "grantflow",
            "operation": "CREATE",
            "userInfo": {"username": "alice@contoso.com", "groups": ["system:authenticated"]},
            "object": {
                "apiVersion": "session.grantflow.io/v1alpha1",
                "kind": "Revocation",
                "metadata": {"name": "inc-2041-alice", "namespace": "grantflow",
                             "annotations": {"session.grantflow.io/requested-by": "somebody-else"}},
                "spec": {"tenantId": TENANT, "target": {"userId": "3f2504e0-4f89-41d3-9a0c-0305e82c3301"},
                         "reason": "INC-2041 credential theft"}
            },
            "oldObject": null,
            "dryRun": false
        }
    });
    let answer: Value = client
        .post(&url)
        .json(&review)
        .send()
        .await
        .expect("the webhook answers over TLS for the Service's DNS name")
        .json()
        .await
        .expect("an AdmissionReview");
    let response = &answer["response"];
    assert_eq!(response["allowed"], true, "{answer}");
    assert_eq!(response["uid"], review["request"]["uid"]);
    let patch: Value = serde_json::from_slice(&base64_decode(
        response["patch"]
            .as_str()
            .unwrap_or_else(|| panic!("a patch: {answer}")),
    ))
    .unwrap();
    assert!(
        patch.to_string().contains("alice@contoso.com"),
        "the requester is recorded: {patch}"
    );

    // Leader election on the chart's Lease, in the release namespace, as this pod.
    let lease = flag(&args_of(container), "--lease-name")
        .unwrap()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = kmock.kubectl(&["get", "lease", &lease, "-n", NAMESPACE, "-o", "json"]);
        if got.status.success() {
            let lease: Value = serde_json::from_slice(&got.stdout).unwrap();
            if lease["spec"]["holderIdentity"] == pod_name.as_str() {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the operator never held Lease {NAMESPACE}/{lease}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = RELEASE;
}
