//! Every combination applies with real `kubectl` to a real API server (etcd and
//! kube-apiserver, [`ControlPlane`]) with the server's own validation (`--validate=strict`:
//! unknown or duplicate fields are refused), twice (the second apply changes nothing).
//!
//! One control plane for the whole test. Each combination is rendered into a namespace of its
//! own, named after its values file, so the cluster-scoped objects (whose names include the
//! release namespace) do not clash. There is no kubelet or controller manager: no Pod runs;
//! what is checked is that the server accepts and stores every object.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use grantflow_e2e::control_plane::ControlPlane;
use grantflow_e2e::kubernetes::{eventually, kubectl, kubectl_output};
use serde_json::{Value, json};

use crate::support::{COMBINATIONS, EXTAUTHZ, THIRD_PARTY, render_in};

/// `kubectl apply --validate=strict -f <each of paths>`, whatever its result.
async fn apply(kubeconfig: &Path, paths: &[PathBuf]) -> Output {
    let mut args = vec!["apply", "--validate=strict"];
    for p in paths {
        args.push("-f");
        args.push(p.to_str().unwrap());
    }
    kubectl_output(kubeconfig, &args).await
}

/// Stand-in CRDs for the third-party kinds the chart may render ([`THIRD_PARTY`]): the right
/// group, version, kind, plural and scope, and a schema that accepts any object. The real
/// CRDs of cert-manager, the Prometheus Operator and Istio are not what is tested here; the
/// chart's objects of those kinds are checked structurally by the other chart tests. What the
/// server validates strictly are the built-in kinds and the chart's own CRDs.
async fn install_third_party_crds(plane: &ControlPlane, admin: &Path) {
    let crds: Vec<Value> = THIRD_PARTY
        .iter()
        .map(|t| {
            json!({
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": format!("{}.{}", t.plural, t.group)},
                "spec": {
                    "group": t.group,
                    "scope": "Namespaced",
                    "names": {
                        "kind": t.kind,
                        "listKind": format!("{}List", t.kind),
                        "plural": t.plural,
                        "singular": t.kind.to_lowercase(),
                    },
                    "versions": [{
                        "name": t.version,
                        "served": true,
                        "storage": true,
                        "schema": {"openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": true,
                        }},
                    }],
                },
            })
        })
        .collect();
    let file = plane.dir().join("third-party-crds.json");
    let list = json!({"apiVersion": "v1", "kind": "List", "items": crds});
    std::fs::write(&file, list.to_string()).expect("write the stand-in CRDs");
    let file = file.to_str().unwrap();
    kubectl(admin, &["apply", "--validate=strict", "-f", file]).await;
    kubectl(
        admin,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "-f",
            file,
        ],
    )
    .await;
    let resources: Vec<String> = THIRD_PARTY
        .iter()
        .map(|t| format!("{}.{}", t.plural, t.group))
        .collect();
    let resources = resources.join(",");
    eventually(
        Duration::from_secs(10),
        "the stand-in CRDs are discoverable",
        || async {
            kubectl_output(admin, &["get", &resources, "-A"])
                .await
                .status
                .success()
                .then_some(())
        },
    )
    .await;
}

/// `kind/namespace/name` → `metadata.resourceVersion` of the objects of `paths` as stored.
async fn resource_versions(kubeconfig: &Path, paths: &[PathBuf]) -> BTreeMap<String, String> {
    let mut args = vec!["get", "-o", "json"];
    for p in paths {
        args.push("-f");
        args.push(p.to_str().unwrap());
    }
    let got: Value =
        serde_json::from_str(&kubectl(kubeconfig, &args).await).expect("kubectl prints JSON");
    let items = match got["kind"].as_str() {
        Some("List") => got["items"].as_array().expect("items").clone(),
        _ => vec![got],
    };
    items
        .iter()
        .map(|o| {
            let m = &o["metadata"];
            (
                format!(
                    "{}/{}/{}",
                    o["kind"].as_str().unwrap(),
                    m["namespace"].as_str().unwrap_or(""),
                    m["name"].as_str().unwrap()
                ),
                m["resourceVersion"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_combination_applies_with_kubectl() {
    let plane = ControlPlane::start().await;
    let admin = plane.admin_kubeconfig("default");
    install_third_party_crds(&plane, &admin).await;
    for file in COMBINATIONS {
        let namespace = format!("chart-{}", file.trim_end_matches("-values.yaml"));
        let rendered = render_in(&namespace, file);
        // The release namespace and any other the chart puts objects in (a watched
        // namespace, Istio policies' namespaces) exist, as they would in a cluster.
        let mut namespaces: Vec<&str> = rendered
            .objects
            .iter()
            .filter_map(|o| o["metadata"]["namespace"].as_str())
            .chain([namespace.as_str()])
            .collect();
        namespaces.sort();
        namespaces.dedup();
        for ns in namespaces {
            let created = kubectl_output(&admin, &["create", "namespace", ns]).await;
            let stderr = String::from_utf8_lossy(&created.stderr);
            assert!(
                created.status.success() || stderr.contains("AlreadyExists"),
                "{file}: create namespace {ns}: {stderr}"
            );
        }
        let kubeconfig = plane.admin_kubeconfig(&namespace);

        // The chart's CRDs (the same for every combination: created by the first, unchanged
        // after), established before the templates are applied.
        let crds = apply(&kubeconfig, &rendered.crd_files).await;
        assert!(
            crds.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&crds.stderr)
        );
        let mut wait = vec!["wait", "--for=condition=Established", "--timeout=30s"];
        for p in &rendered.crd_files {
            wait.push("-f");
            wait.push(p.to_str().unwrap());
        }
        kubectl(&kubeconfig, &wait).await;

        let first = apply(&kubeconfig, &rendered.files).await;
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
        // "replace", and reports it "configured"; its stored spec is compared below. The
        // real server also fills in defaults in a StatefulSet's volumeClaimTemplates — a list
        // kubectl replaces whole — so kubectl re-sends that list and reports the StatefulSet
        // "configured" too; its stored templates are compared below.) On a real server
        // "changes nothing" is also visible as every object keeping its resourceVersion: the
        // server stores no new revision of any of them.
        let before = resource_versions(&kubeconfig, &rendered.files).await;
        assert_eq!(before.len(), rendered.objects.len(), "{file}: {before:?}");
        let second = apply(&kubeconfig, &rendered.files).await;
        let stdout = String::from_utf8_lossy(&second.stdout);
        assert!(
            second.status.success(),
            "{file}: {stdout}{}",
            String::from_utf8_lossy(&second.stderr)
        );
        assert!(
            stdout.lines().all(|l| l.ends_with(" unchanged")
                || ((l.starts_with("poddisruptionbudget.policy/")
                    || l.starts_with("statefulset.apps/"))
                    && l.ends_with(" configured"))),
            "{file}: the second apply is a no-op:\n{stdout}"
        );
        let after = resource_versions(&kubeconfig, &rendered.files).await;
        assert_eq!(
            before, after,
            "{file}: the second apply stored no new revision"
        );
        for pdb in rendered.of_kind("PodDisruptionBudget") {
            let name = pdb["metadata"]["name"].as_str().unwrap();
            let got = kubectl(
                &kubeconfig,
                &["get", "poddisruptionbudget.policy", name, "-o", "json"],
            )
            .await;
            let got: Value = serde_json::from_str(&got).expect("JSON");
            assert_eq!(got["spec"], pdb["spec"], "{file}: {name}");
        }
        // The stored volumeClaimTemplates are the rendered ones plus exactly the server's
        // defaults for a PersistentVolumeClaim (volumeMode Filesystem, status phase Pending).
        for statefulset in rendered.of_kind("StatefulSet") {
            let name = statefulset["metadata"]["name"].as_str().unwrap();
            let got = kubectl(&kubeconfig, &["get", "statefulset", name, "-o", "json"]).await;
            let got: Value = serde_json::from_str(&got).expect("JSON");
            let mut templates = got["spec"]["volumeClaimTemplates"].clone();
            let rendered_templates = &statefulset["spec"]["volumeClaimTemplates"];
            for (i, template) in templates.as_array_mut().into_iter().flatten().enumerate() {
                let claim = template.as_object_mut().unwrap();
                assert_eq!(claim.remove("status"), Some(json!({"phase": "Pending"})));
                if rendered_templates[i]["spec"]["volumeMode"].is_null() {
                    let spec = claim["spec"].as_object_mut().unwrap();
                    assert_eq!(spec.remove("volumeMode"), Some(json!("Filesystem")));
                }
            }
            assert_eq!(&templates, rendered_templates, "{file}: {name}");
        }
        // And each object reads back with its namespace.
        let deployment = kubectl(
            &kubeconfig,
            &[
                "get",
                "deployment",
                EXTAUTHZ,
                "-n",
                &namespace,
                "-o",
                "json",
            ],
        )
        .await;
        let deployment: Value = serde_json::from_str(&deployment).expect("JSON");
        assert_eq!(
            deployment["spec"]["template"]["spec"]["containers"][0]["args"],
            rendered.get("Deployment", EXTAUTHZ)["spec"]["template"]["spec"]["containers"][0]["args"],
            "{file}"
        );
    }
}
