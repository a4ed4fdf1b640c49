//! Rendering, `helm lint` and the values schema: the chart refuses to render without an
//! audience, every combination lints clean, every manifest passes `kubernetes-validate
//! --strict`, the chart's CRDs are the generated ones, and the schema rejects typos, values
//! that do not fit together and knows every extauthz setting.

use std::collections::BTreeSet;
use std::path::Path;

use grantflow_e2e::chart::{self, ci_values, venv_bin};
use grantflow_e2e::repo_root;
use grantflow_extauthz::config::{ConfigError, Options, Settings};
use serde_json::{Value, json};

use crate::support::{COMBINATIONS, THIRD_PARTY, config_map_text, render};

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
            // `kubernetes-validate` has no schema for the kinds of third-party CRDs.
            if THIRD_PARTY.iter().any(|t| t.kind == kind) {
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
                THIRD_PARTY
                    .iter()
                    .any(|t| line.contains(&format!("kind {} ", t.kind))),
                "{file}: only third-party kinds are skipped: {line}"
            );
        }
    }
    // Each of them is rendered by some combination (and checked structurally below).
    assert_eq!(
        skipped,
        THIRD_PARTY.iter().map(|t| t.kind.to_owned()).collect(),
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
    let dir = grantflow_e2e::temp_dir("typo");
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
    let dir = grantflow_e2e::temp_dir("keys");
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
