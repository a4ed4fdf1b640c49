//! One control plane per test, with the committed CRDs installed and a namespace for the
//! test's objects; `kubectl` as the cluster admin or as another user.

use std::path::{Path, PathBuf};
use std::time::Duration;

use grantflow_e2e::control_plane::ControlPlane;
use grantflow_e2e::kubernetes::{eventually, kubectl, kubectl_output};
use grantflow_e2e::repo_root;
use serde_json::Value;

/// Where the tests put their objects (and the operator its Lease and Events).
pub const NAMESPACE: &str = "grantflow";

pub struct Cluster {
    pub plane: ControlPlane,
    /// `system:masters`, default namespace [`NAMESPACE`].
    pub admin: PathBuf,
}

impl Cluster {
    /// A control plane with [`NAMESPACE`] created; with the committed CRDs installed and
    /// established if `crds`.
    pub async fn start(crds: bool) -> Cluster {
        let plane = ControlPlane::start().await;
        let admin = plane.admin_kubeconfig(NAMESPACE);
        let cluster = Cluster { plane, admin };
        cluster.kubectl(&["create", "namespace", NAMESPACE]).await;
        if crds {
            cluster.install_crds().await;
        }
        cluster
    }

    /// `kubectl apply` of `crds/*.yaml`, then waits until both are `Established` (served).
    pub async fn install_crds(&self) {
        let root = repo_root();
        for file in ["crds/sessionpolicies.yaml", "crds/revocations.yaml"] {
            let path = root.join(file);
            self.kubectl(&["apply", "--server-side", "-f", path.to_str().unwrap()])
                .await;
        }
        self.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd/sessionpolicies.session.grantflow.io",
            "crd/revocations.session.grantflow.io",
        ])
        .await;
        // Discovery lags the condition a little (envtest polls it too).
        eventually(
            Duration::from_secs(10),
            "the CRDs are discoverable",
            || async {
                kubectl_output(&self.admin, &["get", "sessionpolicies,revocations"])
                    .await
                    .status
                    .success()
                    .then_some(())
            },
        )
        .await;
    }

    /// `kubectl` as the admin; asserts success, returns stdout.
    pub async fn kubectl(&self, args: &[&str]) -> String {
        kubectl(&self.admin, args).await
    }

    /// `kubectl apply -f <manifest>` with `kubeconfig`, whatever its result: (success,
    /// stdout + stderr).
    pub async fn apply_as(&self, kubeconfig: &Path, manifest: &str) -> (bool, String) {
        let file = self
            .plane
            .dir()
            .join(format!("manifest-{}.yaml", grantflow_e2e::unique()));
        std::fs::write(&file, manifest).expect("write a manifest");
        let output = kubectl_output(kubeconfig, &["apply", "-f", file.to_str().unwrap()]).await;
        (
            output.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        )
    }

    /// `kubectl apply` as the admin; asserts success.
    pub async fn apply(&self, manifest: &str) -> String {
        let (ok, out) = self.apply_as(&self.admin, manifest).await;
        assert!(ok, "kubectl apply failed: {out}\n{manifest}");
        out
    }

    /// `kubectl get <kind> <name> -o json`, parsed; `None` if it does not exist.
    pub async fn get(&self, kind: &str, name: &str) -> Option<Value> {
        let output = kubectl_output(&self.admin, &["get", kind, name, "-o", "json"]).await;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                stderr.contains("NotFound"),
                "kubectl get {kind} {name}: {stderr}"
            );
            return None;
        }
        Some(serde_json::from_slice(&output.stdout).expect("kubectl prints JSON"))
    }

    /// Waits until condition `type_` of `kind/name` has `status`; returns the object.
    pub async fn wait_for(&self, kind: &str, name: &str, type_: &str, status: &str) -> Value {
        eventually(
            Duration::from_secs(30),
            &format!("{kind}/{name} {type_}={status}"),
            || async {
                let object = self.get(kind, name).await?;
                let conditions = object["status"]["conditions"].as_array().cloned()?;
                conditions
                    .iter()
                    .any(|c| c["type"] == type_ && c["status"] == status)
                    .then_some(object)
            },
        )
        .await
    }

    /// The Events (events.k8s.io/v1) of [`NAMESPACE`] about `name`.
    pub async fn events_about(&self, name: &str) -> Vec<Value> {
        let events: Value = serde_json::from_str(
            &self
                .kubectl(&["get", "events.v1.events.k8s.io", "-o", "json"])
                .await,
        )
        .expect("kubectl prints JSON");
        events["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|e| e["regarding"]["name"] == name)
            .cloned()
            .collect()
    }
}
