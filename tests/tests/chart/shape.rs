//! The shape of what is rendered: what every combination must have (extauthz, and the
//! operator when it is deployed), and how a Redis CA Secret is mounted.

use grantflow_e2e::chart::{self, NAMESPACE, Rendered, secret_value, venv_bin};
use grantflow_e2e::repo_root;
use serde_json::{Value, json};

use crate::support::{CONFIG_FILE, EXTAUTHZ, OPERATOR, args_of, config_map_text, env_of, flag};

/// Where the chart mounts the CA of redis.external.tls.caSecret.
const REDIS_CA_FILE: &str = "/etc/grantflow/redis-ca/ca.crt";

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

/// What every combination must have, whatever else it renders.
pub fn check_common_shape(file: &str, r: &Rendered) {
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
    // Its CRDs (finalizers are set by patching the object), their status, Events — nothing else.
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

/// Both Deployments read GRANTFLOW_REDIS_CA_FILE from `secret`'s `key`, mounted read-only;
/// neither has the variable when `secret` is None.
pub fn check_redis_ca(file: &str, r: &Rendered, secret: Option<(&str, &str)>) {
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
