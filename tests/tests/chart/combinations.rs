//! One test per value combination in `ci/`: the default install, an external Redis Cluster,
//! the in-chart Redis with network policies, Istio, autoscaling, Redis over TLS with a private
//! CA, cert-manager, the memory and the embedded store.

use grantflow_e2e::chart::{self, NAMESPACE, ci_values, secret_value};
use serde_json::{Value, json};

use crate::shape::{check_common_shape, check_redis_ca};
use crate::support::{
    COMBINATIONS, EXTAUTHZ, OPERATOR, REDIS, args_of, config_map_text, env_of, flag, render,
};

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
