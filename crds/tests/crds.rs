//! The generated CRDs: committed copies match the Rust types, the schema's CEL rules do what
//! they promise (evaluated client-side by kube's CEL engine, as no API server runs here), and
//! the samples in `examples/kubernetes/` are valid against the schemas (`check-jsonschema`) and
//! the CRD manifests against Kubernetes' own schema (`kubernetes-validate`).

use std::path::{Path, PathBuf};
use std::process::Command;

use grantflow_crds::{CRD_DIRS, Revocation, SessionPolicy, crd_files};
use kube::CustomResourceExt;
use kube::core::cel::Validator;
use serde_json::{Value, json};

/// The checkout under test: cargo's run-time `CARGO_MANIFEST_DIR` (a test binary built from
/// another checkout into a shared target directory carries that checkout's path at compile
/// time).
fn repo_root() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    Path::new(&manifest)
        .parent()
        .expect("crds/ is in the repository")
        .to_owned()
}

#[test]
fn committed_crds_match_the_rust_types() {
    let root = repo_root();
    for dir in CRD_DIRS {
        for (name, generated) in crd_files() {
            let path = root.join(dir).join(name);
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == generated,
                "{} differs from the Rust types in crds/src/lib.rs; regenerate it with \
                 `cargo run -p grantflow-crds --bin crdgen -- --write` and commit the result",
                path.display()
            );
        }
    }
}

fn schema_of<K: CustomResourceExt>() -> Value {
    let crd = K::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("an openAPIV3Schema");
    serde_json::to_value(schema).unwrap()
}

/// The CEL messages that fail for `object` (and `old`, for an update).
fn cel_failures(schema: &Value, object: Value, old: Option<Value>) -> Vec<String> {
    match Validator::new().validate(schema, &object, old.as_ref()) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.into_iter().map(|e| e.message).collect(),
    }
}

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

fn policy(max_age: Option<&str>) -> Value {
    let mut spec = json!({ "tenantId": TENANT });
    if let Some(age) = max_age {
        spec["maxSessionAge"] = age.into();
    }
    json!({ "apiVersion": "session.grantflow.io/v1alpha1", "kind": "SessionPolicy",
            "metadata": { "name": "p", "namespace": "ns" }, "spec": spec })
}

fn revocation(target: Value, lock_until: Option<&str>) -> Value {
    let mut spec = json!({ "tenantId": TENANT, "target": target, "reason": "INC-1" });
    if let Some(until) = lock_until {
        spec["lockUntil"] = until.into();
    }
    json!({ "apiVersion": "session.grantflow.io/v1alpha1", "kind": "Revocation",
            "metadata": { "name": "r", "namespace": "ns" }, "spec": spec })
}

#[test]
fn session_policy_max_age_is_bounded_and_defaulted_and_tenant_is_immutable() {
    let schema = schema_of::<SessionPolicy>();
    for ok in [None, Some("1m"), Some("15m"), Some("1h30m"), Some("24h")] {
        assert_eq!(
            cel_failures(&schema, policy(ok), None),
            Vec::<String>::new(),
            "{ok:?}"
        );
    }
    for bad in ["59s", "25h", "24h1s"] {
        assert_eq!(
            cel_failures(&schema, policy(Some(bad)), None),
            vec!["maxSessionAge must be between 1m and 24h"],
            "{bad}"
        );
    }
    let mut moved = policy(Some("15m"));
    moved["spec"]["tenantId"] = "00000000-0000-4000-8000-000000000001".into();
    assert_eq!(
        cel_failures(&schema, moved, Some(policy(Some("15m")))),
        vec!["tenantId cannot be changed; create a new SessionPolicy"]
    );
    // The age may change.
    assert!(cel_failures(&schema, policy(Some("5m")), Some(policy(Some("15m")))).is_empty());
}

#[test]
fn revocation_needs_exactly_one_target_lock_only_for_users_and_is_immutable() {
    let schema = schema_of::<Revocation>();
    let user = json!({ "userId": "u-1" });
    let session = json!({ "sessionId": "s-1" });
    assert!(cel_failures(&schema, revocation(user.clone(), None), None).is_empty());
    assert!(cel_failures(&schema, revocation(session.clone(), None), None).is_empty());
    assert!(
        cel_failures(
            &schema,
            revocation(user.clone(), Some("2026-12-01T00:00:00Z")),
            None
        )
        .is_empty()
    );

    let both = json!({ "userId": "u-1", "sessionId": "s-1" });
    assert_eq!(
        cel_failures(&schema, revocation(both, None), None),
        vec!["set exactly one of sessionId and userId"]
    );
    assert_eq!(
        cel_failures(&schema, revocation(json!({}), None), None),
        vec!["set exactly one of sessionId and userId"]
    );
    assert_eq!(
        cel_failures(
            &schema,
            revocation(session, Some("2026-12-01T00:00:00Z")),
            None
        ),
        vec!["lockUntil applies to user targets only"]
    );

    let old = revocation(user.clone(), None);
    let mut changed = old.clone();
    changed["spec"]["reason"] = "something else".into();
    assert_eq!(
        cel_failures(&schema, changed, Some(old.clone())),
        vec!["a Revocation cannot be changed; create a new one"]
    );
    // Status and metadata may change.
    let mut with_status = old.clone();
    with_status["status"] = json!({ "sessionsRevoked": 2 });
    assert!(cel_failures(&schema, with_status, Some(old)).is_empty());
}

#[test]
fn a_lock_message_needs_a_user_lock_and_is_bounded() {
    let schema = schema_of::<Revocation>();
    let with_message = |target: Value, lock: Option<&str>| {
        let mut r = revocation(target, lock);
        r["spec"]["message"] = "INC-2041: call the security desk".into();
        r
    };
    let user = json!({ "userId": "u-1" });
    let lock = Some("2026-12-01T00:00:00Z");
    assert!(cel_failures(&schema, with_message(user.clone(), lock), None).is_empty());
    let rule = "message applies to a lock only: set lockUntil and target.userId";
    assert_eq!(
        cel_failures(&schema, with_message(user, None), None),
        vec![rule]
    );
    let failures = cel_failures(
        &schema,
        with_message(json!({ "sessionId": "s-1" }), lock),
        None,
    );
    assert!(failures.contains(&rule.to_owned()), "{failures:?}");
    // The length bound is in the schema (the API server enforces it).
    let spec = &schema["properties"]["spec"]["properties"]["message"];
    assert_eq!(spec["maxLength"], 200, "{spec}");
}

#[test]
fn the_spec_rules_are_declared_where_the_api_server_enforces_them() {
    let revocation = serde_json::to_string(&Revocation::crd()).unwrap();
    assert!(revocation.contains(r#""subresources":{"status":{}}"#));
    assert!(revocation.contains(r#""x-kubernetes-list-type":"map""#));
    assert!(revocation.contains(r#""minLength":1"#));
    let policy = serde_json::to_string(&SessionPolicy::crd()).unwrap();
    assert!(policy.contains(r#""default":"15m""#));
    assert!(policy.contains(r#""scope":"Namespaced""#));
}

/// A tool from the test venv (`scripts/install-test-tools.sh`), found on PATH or in `.venv/bin`.
fn venv_tool(name: &str) -> PathBuf {
    let local = repo_root().join(".venv/bin").join(name);
    if local.exists() {
        return local;
    }
    PathBuf::from(name)
}

fn run(mut command: Command) {
    let shown = format!("{command:?}");
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown} (run ./scripts/test.sh): {e}"));
    assert!(
        output.status.success(),
        "{shown} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn examples_validate_against_the_generated_schemas() {
    let root = repo_root();
    let dir = std::env::temp_dir().join(format!("grantflow-crd-schemas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let schemas = [
        ("SessionPolicy", schema_of::<SessionPolicy>()),
        ("Revocation", schema_of::<Revocation>()),
    ];
    let examples = root.join("examples/kubernetes");
    let mut checked = 0;
    for (kind, schema) in &schemas {
        let schema_file = dir.join(format!("{kind}.json"));
        std::fs::write(&schema_file, serde_json::to_vec(schema).unwrap()).unwrap();
        let mut samples = Vec::new();
        for entry in std::fs::read_dir(&examples).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let object: Value = serde_yaml::from_str(&text).unwrap();
            if object["kind"] == *kind {
                // The API server's CEL rules too, not only the structural schema.
                assert_eq!(
                    cel_failures(schema, object, None),
                    Vec::<String>::new(),
                    "{}",
                    path.display()
                );
                samples.push(path);
            }
        }
        assert!(!samples.is_empty(), "an example of every kind");
        checked += samples.len();
        let mut command = Command::new(venv_tool("check-jsonschema"));
        command.arg("--schemafile").arg(&schema_file).args(&samples);
        run(command);
    }
    assert_eq!(checked, 3);

    // The CRD manifests themselves, against Kubernetes' CustomResourceDefinition schema.
    let mut command = Command::new(venv_tool("kubernetes-validate"));
    command.args(["--strict", "-k", "1.37.0"]);
    for (name, _) in crd_files() {
        command.arg(root.join("crds").join(name));
    }
    run(command);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn check_jsonschema_refuses_a_bad_sample() {
    // Guards the test above against a schema that accepts anything.
    let dir = std::env::temp_dir().join(format!("grantflow-crd-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let schema_file = dir.join("schema.json");
    std::fs::write(
        &schema_file,
        serde_json::to_vec(&schema_of::<Revocation>()).unwrap(),
    )
    .unwrap();
    let sample = dir.join("bad.yaml");
    let mut bad = revocation(json!({ "userId": "u 1" }), None);
    bad["spec"]["tenantId"] = "not-a-guid".into();
    bad["spec"]["reason"] = "   ".into();
    std::fs::write(&sample, serde_yaml::to_string(&bad).unwrap()).unwrap();
    let output = Command::new(venv_tool("check-jsonschema"))
        .arg("--schemafile")
        .arg(&schema_file)
        .arg(&sample)
        .output()
        .expect("run check-jsonschema (run ./scripts/test.sh)");
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    for field in ["tenantId", "userId", "reason"] {
        assert!(text.contains(field), "{field} is reported: {text}");
    }
    std::fs::remove_dir_all(dir).ok();
}
