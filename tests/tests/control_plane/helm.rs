//! The chart installs for real: Helm's own install, upgrade and uninstall actions
//! (helm-python-sdk, through `tests/chart/helm.py release`) against the real API server, for
//! the default values and two other combinations. Every object is accepted by the server
//! (schemas, admission); no Pod runs, because there is no kubelet or controller manager —
//! the Deployments exist and stay unscheduled, which the test states rather than waits for.

use std::path::Path;
use std::process::Command;

use grantflow_e2e::chart::{RELEASE, chart_dir, ci_values, venv_bin};
use grantflow_e2e::repo_root;
use serde::Deserialize;
use serde_json::Value;

use crate::support::Cluster;

/// `helm.py release --action <action>` into `namespace`; returns the release (name, version,
/// status, manifest) or panics with Helm's error.
fn release(
    kubeconfig: &Path,
    action: &str,
    namespace: &str,
    values: &[&Path],
    set: Option<&Value>,
) -> Value {
    let mut command = Command::new(venv_bin("python"));
    command
        .arg(repo_root().join("tests/chart/helm.py"))
        .args(["release", chart_dir().to_str().unwrap()])
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args([
            "--action",
            action,
            "--name",
            RELEASE,
            "--namespace",
            namespace,
        ]);
    for file in values {
        command.arg("--values").arg(file);
    }
    if let Some(set) = set {
        command.args(["--set-json", &set.to_string()]);
    }
    let output = command.output().expect("run tests/chart/helm.py");
    assert!(
        output.status.success(),
        "helm.py release {action}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&output.stdout).expect("helm.py prints JSON");
    assert!(
        result["error"].is_null(),
        "helm {action} ({values:?}) failed: {}",
        result["error"]
    );
    result
}

/// `(kind, name)` of every object in a release manifest.
fn objects(manifest: &str) -> Vec<(String, String)> {
    serde_yaml::Deserializer::from_str(manifest)
        .filter_map(|doc| {
            let value = serde_yaml::Value::deserialize(doc).ok()?;
            let kind = value.get("kind")?.as_str()?.to_owned();
            let name = value.get("metadata")?.get("name")?.as_str()?.to_owned();
            Some((kind, name))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_installs_upgrades_and_uninstalls_on_a_real_api_server() {
    let cluster = Cluster::start(false).await;
    for (combination, namespace) in [
        ("default-values.yaml", "gf-default"),
        ("embedded-values.yaml", "gf-embedded"),
        ("memory-values.yaml", "gf-memory"),
    ] {
        cluster.kubectl(&["create", "namespace", namespace]).await;
        let values = ci_values(combination);
        let installed = release(&cluster.admin, "install", namespace, &[&values], None);
        assert_eq!(
            installed["status"], "deployed",
            "{combination}: {installed}"
        );
        assert_eq!(installed["version"], 1);
        let manifest = installed["manifest"].as_str().unwrap().to_owned();
        let rendered = objects(&manifest);
        assert!(rendered.len() >= 5, "{combination}: {rendered:?}");
        // Every object of the release is on the server, as the chart rendered it.
        for (kind, name) in &rendered {
            let got = cluster
                .kubectl(&[
                    "get",
                    "-n",
                    namespace,
                    &kind.to_lowercase(),
                    name,
                    "-o",
                    "name",
                ])
                .await;
            assert!(
                !got.trim().is_empty(),
                "{combination}: {kind}/{name} exists"
            );
        }
        // The CRDs came with the first install (Helm's crds/ folder).
        assert!(
            cluster
                .get("crd", "revocations.session.grantflow.io")
                .await
                .is_some()
        );
        // No Pod: the Deployment is accepted but nothing schedules or runs it here.
        let deployments: Value = serde_json::from_str(
            &cluster
                .kubectl(&["get", "deployments", "-n", namespace, "-o", "json"])
                .await,
        )
        .unwrap();
        for deployment in deployments["items"].as_array().unwrap() {
            assert!(
                deployment["status"]["readyReplicas"].is_null(),
                "no kubelet here, so no replica is ready: {}",
                deployment["metadata"]["name"]
            );
        }
        let pods = cluster
            .kubectl(&["get", "pods", "-n", namespace, "-o", "name"])
            .await;
        assert!(
            pods.trim().is_empty(),
            "no controller manager, so no Pod: {pods}"
        );

        // An upgrade with a changed value is revision 2 and changes the object.
        let upgraded = release(
            &cluster.admin,
            "upgrade",
            namespace,
            &[&values],
            Some(
                &serde_json::json!({"extauthz": {"podAnnotations": {"example.com/upgraded": "yes"}}}),
            ),
        );
        assert_eq!(upgraded["status"], "deployed", "{combination}: {upgraded}");
        assert_eq!(upgraded["version"], 2);
        let extauthz = rendered
            .iter()
            .find(|(kind, name)| kind == "Deployment" && name.contains("extauthz"))
            .map(|(_, name)| name.clone())
            .expect("an extauthz Deployment");
        let deployment = cluster
            .kubectl(&[
                "get",
                "deployment",
                "-n",
                namespace,
                &extauthz,
                "-o",
                "json",
            ])
            .await;
        let deployment: Value = serde_json::from_str(&deployment).unwrap();
        assert_eq!(
            deployment["spec"]["template"]["metadata"]["annotations"]["example.com/upgraded"],
            "yes",
            "{combination}"
        );

        // Uninstall removes what the release made, except what the chart keeps on purpose
        // (the embedded store's volume claim: `helm.sh/resource-policy: keep`).
        release(&cluster.admin, "uninstall", namespace, &[], None);
        for (kind, name) in &rendered {
            let left = grantflow_e2e::kubernetes::kubectl_output(
                &cluster.admin,
                &[
                    "get",
                    "-n",
                    namespace,
                    &kind.to_lowercase(),
                    name,
                    "-o",
                    "json",
                ],
            )
            .await;
            if left.status.success() {
                let object: Value = serde_json::from_slice(&left.stdout).unwrap();
                let keep = object["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep";
                let deleting = object["metadata"]["deletionTimestamp"].is_string();
                assert!(
                    keep || deleting,
                    "{combination}: {kind}/{name} is left after uninstall"
                );
            }
        }
    }
}
