//! The generated CRDs on a real API server: they install (structural schemas, CEL rules
//! within the server's cost budget), `kubectl get` shows their printer columns, and the
//! server itself refuses what their schemas and CEL rules forbid, with their messages.

use grantflow_e2e::stack::TENANT;

use crate::support::{Cluster, NAMESPACE};

pub fn policy(name: &str, tenant: &str, max_age: &str) -> String {
    format!(
        "apiVersion: session.grantflow.io/v1alpha1\nkind: SessionPolicy\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\nspec:\n  tenantId: {tenant}\n  maxSessionAge: {max_age}\n"
    )
}

pub fn revocation(name: &str, target: &str, extra: &str) -> String {
    format!(
        "apiVersion: session.grantflow.io/v1alpha1\nkind: Revocation\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\nspec:\n  tenantId: {TENANT}\n  target:\n    {target}\n  reason: INC-2041 credential theft\n{extra}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crds_install_show_their_columns_and_the_server_enforces_their_rules() {
    // Installing at all proves the schemas structural and every CEL rule within the
    // server's estimated cost budget (it refuses a CRD whose rules could exceed it).
    let cluster = Cluster::start(true).await;
    for crd in ["sessionpolicies", "revocations"] {
        let object = cluster
            .get("crd", &format!("{crd}.session.grantflow.io"))
            .await
            .expect("the CRD exists");
        let conditions = object["status"]["conditions"].as_array().unwrap();
        for type_ in ["NamesAccepted", "Established"] {
            assert!(
                conditions
                    .iter()
                    .any(|c| c["type"] == type_ && c["status"] == "True"),
                "{crd}: {type_}: {conditions:?}"
            );
        }
    }

    cluster.apply(&policy("contoso", TENANT, "30m")).await;
    cluster
        .apply(&revocation("inc-2041-dave", "userId: user-dave", ""))
        .await;
    let listed = cluster
        .kubectl(&["get", "sessionpolicies,revocations", "-A"])
        .await;
    let headers: Vec<&str> = listed
        .lines()
        .filter(|l| l.starts_with("NAMESPACE"))
        .collect();
    assert_eq!(headers.len(), 2, "{listed}");
    for (header, columns) in headers.iter().zip([
        &["NAME", "TENANT", "MAX AGE", "READY", "AGE"][..],
        &[
            "NAME", "TENANT", "USER", "SESSION", "APPLIED", "REVOKED", "AGE",
        ][..],
    ]) {
        for column in columns {
            assert!(header.contains(column), "{column} in {header:?}\n{listed}");
        }
    }
    let row = listed
        .lines()
        .find(|l| l.contains("inc-2041-dave"))
        .expect("the Revocation is listed");
    assert!(row.contains(TENANT) && row.contains("user-dave"), "{row}");
    let row = listed
        .lines()
        .find(|l| l.contains("contoso"))
        .expect("the policy is listed");
    assert!(row.contains("30m"), "{row}");
    // The priority-1 columns show with -o wide.
    for (kind, column) in [
        ("sessionpolicies", "REASON"),
        ("revocations", "REQUESTED BY"),
    ] {
        let wide = cluster.kubectl(&["get", kind, "-o", "wide"]).await;
        assert!(wide.lines().next().unwrap().contains(column), "{wide}");
    }

    // What the schema and the CEL rules refuse, the server refuses with their message, and
    // stores nothing.
    let refusals = [
        (
            policy("too-short", TENANT, "30s"),
            "maxSessionAge must be between 1m and 24h",
        ),
        (
            policy("too-long", TENANT, "25h"),
            "maxSessionAge must be between 1m and 24h",
        ),
        (policy("banana", TENANT, "banana"), "spec.maxSessionAge"),
        (policy("no-tenant", "contoso.com", "15m"), "spec.tenantId"),
        (
            format!("{}  idleTimeout: 31m\n", policy("idle-long", TENANT, "30m")),
            "idleTimeout must not be longer than maxSessionAge",
        ),
        (
            format!(
                "{}  idleTimeout: 30s\n",
                policy("idle-short", TENANT, "30m")
            ),
            "idleTimeout must be between 1m and 24h",
        ),
        (
            format!("{}  maxSessionsPerUser: 0\n", policy("none", TENANT, "30m")),
            "spec.maxSessionsPerUser",
        ),
        (
            format!(
                "{}  maxSessionsPerUser: 1001\n",
                policy("many", TENANT, "30m")
            ),
            "spec.maxSessionsPerUser",
        ),
        (
            format!("{}  onLimit: KickEveryone\n", policy("kick", TENANT, "30m")),
            "spec.onLimit",
        ),
        (
            revocation("both", "userId: user-dave\n    sessionId: sid-1", ""),
            "set exactly one of sessionId and userId",
        ),
        (
            revocation("neither", "{}", ""),
            "set exactly one of sessionId and userId",
        ),
        (
            revocation("bad-user", "userId: \"a b\"", ""),
            "spec.target.userId",
        ),
        (
            revocation(
                "lock-a-session",
                "sessionId: sid-1",
                "  lockUntil: \"2030-01-01T00:00:00Z\"\n",
            ),
            "lockUntil applies to user targets only",
        ),
    ];
    for (manifest, message) in &refusals {
        let (ok, out) = cluster.apply_as(&cluster.admin, manifest).await;
        assert!(!ok, "the server accepted:\n{manifest}\n{out}");
        assert!(out.contains(message), "{message:?} in {out}");
    }
    let names = cluster
        .kubectl(&["get", "sessionpolicies,revocations", "-o", "name"])
        .await;
    assert_eq!(
        names.lines().count(),
        2,
        "only the valid objects exist: {names}"
    );

    // A Revocation's spec cannot change, nor a policy's tenant; a policy's age can.
    let (ok, out) = cluster
        .apply_as(
            &cluster.admin,
            &revocation("inc-2041-dave", "userId: user-erin", ""),
        )
        .await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("a Revocation cannot be changed; create a new one"),
        "{out}"
    );
    let (ok, out) = cluster
        .apply_as(
            &cluster.admin,
            &policy("contoso", "00000000-0000-0000-0000-000000000001", "30m"),
        )
        .await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("tenantId cannot be changed; create a new SessionPolicy"),
        "{out}"
    );
    let with_rules = format!(
        "{}  idleTimeout: 10m\n  maxSessionsPerUser: 3\n  onLimit: EndOldest\n",
        policy("contoso", TENANT, "1h")
    );
    let (ok, out) = cluster.apply_as(&cluster.admin, &with_rules).await;
    assert!(ok, "{out}");
    let changed = cluster.get("sessionpolicy", "contoso").await.unwrap();
    assert_eq!(changed["spec"]["maxSessionAge"], "1h");
    assert_eq!(changed["spec"]["idleTimeout"], "10m");
    assert_eq!(changed["spec"]["maxSessionsPerUser"], 3);
    assert_eq!(changed["spec"]["onLimit"], "EndOldest");
    assert_eq!(changed["metadata"]["generation"], 2);

    // The defaults of the schema are applied by the server.
    cluster
        .apply(&format!(
            "apiVersion: session.grantflow.io/v1alpha1\nkind: SessionPolicy\nmetadata:\n  name: defaulted\n  namespace: {NAMESPACE}\nspec:\n  tenantId: 00000000-0000-0000-0000-000000000002\n"
        ))
        .await;
    let defaulted = cluster.get("sessionpolicy", "defaulted").await.unwrap();
    assert_eq!(defaulted["spec"]["maxSessionAge"], "15m");
    assert_eq!(defaulted["spec"]["onLimit"], "RefuseNew");
    assert!(
        defaulted["spec"].get("idleTimeout").is_none(),
        "off unless set"
    );
}
