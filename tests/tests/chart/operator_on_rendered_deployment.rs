//! The operator binary starts with the exact arguments and environment of the chart's
//! Deployment against a real API server (etcd and kube-apiserver, [`ControlPlane`], with the
//! chart's CRDs installed) and a real Redis, as the chart's ServiceAccount with exactly the
//! chart's rendered RBAC (a token the server signs through TokenRequest), wins the chart's
//! Lease, and answers an AdmissionReview over TLS with the chart-generated certificate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use grantflow_e2e::chart::{self, NAMESPACE, base64_decode, secret_value};
use grantflow_e2e::control_plane::ControlPlane;
use grantflow_e2e::kubernetes::{eventually, kubectl, kubectl_output};
use grantflow_e2e::redis::{RedisServer, redis_cli};
use grantflow_e2e::stack::TENANT;
use grantflow_e2e::{free_port, loopback};
use serde_json::{Value, json};

use crate::support::{OPERATOR, args_of, env_of, flag, redis_url_to, render};

/// A control plane, and the kubeconfig the operator's pod would have there.
struct ServiceAccountKubeconfig {
    /// The chart's operator ServiceAccount's token.
    token: PathBuf,
    /// The cluster admin's (`system:masters`).
    admin: PathBuf,
    plane: ControlPlane,
}

impl ServiceAccountKubeconfig {
    fn path(&self) -> &Path {
        &self.token
    }
}

/// Starts a control plane with the release namespace, the chart's CRDs (established) and the
/// chart's rendered operator RBAC (its ServiceAccount, Role, ClusterRole and bindings, as
/// they are) applied, and returns a kubeconfig that presents a token of the ServiceAccount
/// `deployment` runs as, signed by the server (TokenRequest, `kubectl create token`).
async fn as_the_charts_service_account(
    rendered: &chart::Rendered,
    deployment: &Value,
) -> ServiceAccountKubeconfig {
    let plane = ControlPlane::start().await;
    let admin = plane.admin_kubeconfig(NAMESPACE);
    kubectl(&admin, &["create", "namespace", NAMESPACE]).await;
    let mut apply_crds = vec!["apply", "--validate=strict"];
    let mut wait = vec!["wait", "--for=condition=Established", "--timeout=30s"];
    for p in &rendered.crd_files {
        for args in [&mut apply_crds, &mut wait] {
            args.push("-f");
            args.push(p.to_str().unwrap());
        }
    }
    kubectl(&admin, &apply_crds).await;
    kubectl(&admin, &wait).await;
    let rbac: Vec<Value> = rendered.template_objects("operator-rbac.yaml");
    assert!(
        rbac.iter()
            .any(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role"),
        "the chart renders the operator's RBAC: {}",
        rendered.summary()
    );
    let file = plane.dir().join("operator-rbac.json");
    let list = json!({"apiVersion": "v1", "kind": "List", "items": rbac});
    std::fs::write(&file, list.to_string()).expect("write the chart's RBAC");
    kubectl(
        &admin,
        &["apply", "--validate=strict", "-f", file.to_str().unwrap()],
    )
    .await;
    let account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .expect("the operator Deployment names its ServiceAccount");
    let token = kubectl(
        &admin,
        &["create", "token", account, "-n", NAMESPACE, "--duration=1h"],
    )
    .await;
    let token = plane.token_kubeconfig(account, token.trim(), NAMESPACE);
    ServiceAccountKubeconfig {
        token,
        admin,
        plane,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_runs_with_the_rendered_deployment() {
    let binary = grantflow_e2e::kubernetes::Operator::binary();
    let rendered = render("default-values.yaml");
    let redis = RedisServer::start().await;
    let dir = grantflow_e2e::temp_dir("operator");
    let deployment = rendered.get("Deployment", OPERATOR);
    let kubeconfig = as_the_charts_service_account(&rendered, deployment).await;
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
        .env("KUBECONFIG", kubeconfig.path())
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
    eventually(
        Duration::from_secs(60),
        "the operator's /readyz (store reachable with the chart's password) answers 200",
        || async {
            let ready = http.get(format!("http://{admin}/readyz")).send().await;
            ready.is_ok_and(|r| r.status() == 200).then_some(())
        },
    )
    .await;

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
        let got = kubectl_output(
            &kubeconfig.admin,
            &["get", "lease", &lease, "-n", NAMESPACE, "-o", "json"],
        )
        .await;
        if got.status.success() {
            let lease: Value = serde_json::from_slice(&got.stdout).unwrap();
            if lease["spec"]["holderIdentity"] == pod_name.as_str() {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the operator never held Lease {NAMESPACE}/{lease}:\n{}",
            kubeconfig.plane.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
