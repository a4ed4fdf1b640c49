//! The chart's RBAC for the operator is sufficient and least privilege, on the real API
//! server's RBAC authorizer: the operator binary runs as the chart's ServiceAccount (a token
//! the server signs through TokenRequest) with exactly the chart's rendered Role and
//! ClusterRole, and does its whole job; with any single rule removed it fails at the step
//! that rule is for.

use std::sync::Arc;
use std::time::{Duration, Instant};

use grantflow_core::clock::SystemClock;
use grantflow_core::decision::Limits;
use grantflow_core::store::{SessionStore, StoreConfig};
use grantflow_e2e::stack::TENANT;

use grantflow_e2e::chart::{self, ci_values};
use grantflow_e2e::free_port;
use grantflow_e2e::kubernetes::{Operator, OperatorOptions};
use grantflow_e2e::redis::RedisServer;
use serde_json::Value;

use crate::crds::{policy, revocation};
use crate::support::{Cluster, NAMESPACE};

/// One step of the operator's job, observed from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// It holds the Lease (create, get, patch of `leases`).
    Leads,
    /// A new SessionPolicy gets its finalizer and `Ready=True` (watch, patch, status).
    PolicyReady,
    /// A Revocation gets `Applied=True` (watch, status).
    RevocationApplied,
    /// Events were recorded about both.
    EventsRecorded,
    /// The applied Revocation is deleted after its retention (delete).
    RevocationDeleted,
}

/// How long one step may take before it counts as failed.
const STEP_WITHIN: Duration = Duration::from_secs(8);

/// Polls `probe` until it holds or [`STEP_WITHIN`] passes.
async fn within<F, Fut>(mut probe: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + STEP_WITHIN;
    while Instant::now() < deadline {
        if probe().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Runs the operator as `token`'s ServiceAccount on fresh objects (`run` names them) and
/// returns the first step it does not complete, or `None` if it does its whole job.
async fn first_failing_step(
    cluster: &Cluster,
    store: &dyn SessionStore,
    options: &OperatorOptions,
    lease: &str,
    run: usize,
) -> Option<Step> {
    // A fresh Lease each run: creating it is part of the job.
    let _ = grantflow_e2e::kubernetes::kubectl_output(
        &cluster.admin,
        &["delete", "lease", lease, "--ignore-not-found"],
    )
    .await;
    let operator = Operator::start(options, cluster.plane.dir()).await;
    let policy_name = format!("policy-{run}");
    let revocation_name = format!("revocation-{run}");
    let tenant = format!("00000000-0000-0000-0000-{run:012}");
    let failed = 'job: {
        if !within(|| operator.is_leader()).await {
            break 'job Some(Step::Leads);
        }
        cluster.apply(&policy(&policy_name, &tenant, "30m")).await;
        // The requester annotation as the webhook would set it (no webhook in this test).
        cluster
            .apply(
                &revocation(&revocation_name, &format!("userId: user-{run}"), "").replace(
                    "metadata:\n",
                    "metadata:\n  annotations:\n    session.grantflow.io/requested-by: alice@contoso.com\n",
                ),
            )
            .await;
        let ready = within(|| async {
            cluster
                .get("sessionpolicy", &policy_name)
                .await
                .is_some_and(|p| {
                    p["metadata"]["finalizers"][0] == "session.grantflow.io/policy"
                        && condition(&p, "Ready") == Some("True")
                })
        })
        .await;
        if !ready {
            break 'job Some(Step::PolicyReady);
        }
        // Applied: the store has its audit record, and the object says `Applied=True` — or is
        // already gone, which the clean-up does only after reading `appliedAt` from the status
        // (a slow `kubectl get` on a loaded machine can miss the few seconds in between).
        let user = format!("user-{run}");
        let applied = within(|| async {
            let recorded = store.audit(TENANT, 100).await.is_ok_and(|records| {
                records
                    .iter()
                    .any(|r| r.target.user.as_deref() == Some(user.as_str()))
            });
            recorded
                && cluster
                    .get("revocation", &revocation_name)
                    .await
                    .is_none_or(|r| condition(&r, "Applied") == Some("True"))
        })
        .await;
        if !applied {
            break 'job Some(Step::RevocationApplied);
        }
        let recorded = within(|| async {
            !cluster.events_about(&policy_name).await.is_empty()
                && !cluster.events_about(&revocation_name).await.is_empty()
        })
        .await;
        if !recorded {
            break 'job Some(Step::EventsRecorded);
        }
        let deleted =
            within(|| async { cluster.get("revocation", &revocation_name).await.is_none() }).await;
        if !deleted {
            break 'job Some(Step::RevocationDeleted);
        }
        None
    };
    if failed.is_none() {
        // Deleting the policy goes through its finalizer, which the operator removes.
        cluster
            .kubectl(&["delete", "sessionpolicy", &policy_name, "--wait=false"])
            .await;
        assert!(
            within(|| async { cluster.get("sessionpolicy", &policy_name).await.is_none() }).await,
            "the operator removes its finalizer from a deleted policy:\n{}",
            operator.log()
        );
    }
    let log = operator.log();
    operator.stop().await;
    if failed.is_some() {
        // What the operator said, for the assertion message of the caller (the denied
        // request names the missing permission).
        let denied: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("forbidden") || l.contains("Forbidden") || l.contains("WARN"))
            .take(5)
            .collect();
        eprintln!(
            "run {run}: failed at {failed:?}; the operator logged:\n{}",
            denied.join("\n")
        );
    }
    failed
}

fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a str> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)?["status"]
        .as_str()
}

/// Which step each rule of the chart's operator roles is for, by (resource, verb) it grants.
fn step_of(rule: &Value) -> Step {
    let resources: Vec<&str> = rule["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    match resources[0] {
        "leases" => Step::Leads,
        "sessionpolicies" | "sessionpolicies/status" => Step::PolicyReady,
        "revocations" => Step::RevocationApplied,
        "events" => Step::EventsRecorded,
        other => panic!("a rule for {other} that no step explains: {rule}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_operator_rbac_is_sufficient_and_every_rule_is_needed() {
    let cluster = Cluster::start(true).await;
    let redis = RedisServer::start().await;
    // The chart rendered into the test namespace; its operator ServiceAccount, roles and
    // bindings applied as they are.
    let rendered = chart::render(
        &[&ci_values("default-values.yaml")],
        Some(&serde_json::json!({})),
    )
    .expect("the chart renders");
    let rbac: Vec<Value> = rendered
        .template_objects("operator-rbac.yaml")
        .into_iter()
        .map(|mut o| {
            retarget(&mut o);
            o
        })
        .collect();
    let account = rbac
        .iter()
        .find(|o| o["kind"] == "ServiceAccount")
        .expect("the chart makes the operator's ServiceAccount");
    let account_name = account["metadata"]["name"].as_str().unwrap().to_owned();
    let deployment = rendered
        .objects
        .iter()
        .find(|o| {
            o["kind"] == "Deployment" && o["__template"].as_str().unwrap_or("").contains("operator")
        })
        .expect("the operator Deployment");
    let args: Vec<&str> = rendered.container(deployment, "operator")["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let lease = args[args.iter().position(|a| *a == "--lease-name").unwrap() + 1].to_owned();
    for object in &rbac {
        cluster.apply(&serde_json::to_string(object).unwrap()).await;
    }
    let token = cluster
        .kubectl(&["create", "token", &account_name, "--duration=1h"])
        .await;
    let kubeconfig = cluster
        .plane
        .token_kubeconfig(&account_name, token.trim(), NAMESPACE);
    let options = OperatorOptions {
        kubeconfig,
        redis_url: redis.url(),
        namespace: NAMESPACE.into(),
        identity: "operator-rbac".into(),
        webhook_tls: None,
        webhook_port: free_port(),
        env: vec![
            ("GRANTFLOW_LEASE_NAME".into(), lease.clone()),
            ("GRANTFLOW_REVOCATION_RETENTION".into(), "1s".into()),
        ],
    };

    // Exactly the chart's rules: the whole job is done.
    let store = StoreConfig::Redis(redis.settings(Duration::from_secs(2)))
        .open(Limits::default(), Arc::new(SystemClock))
        .expect("the store opens");
    let failed = first_failing_step(&cluster, store.as_ref(), &options, &lease, 0).await;
    assert_eq!(failed, None, "the chart's RBAC is sufficient");

    // Each rule removed in turn (the role re-applied without it): the step it is for fails.
    let mut run = 0;
    for (r, role) in rbac.iter().enumerate() {
        if !matches!(role["kind"].as_str(), Some("Role" | "ClusterRole")) {
            continue;
        }
        let rules = role["rules"].as_array().unwrap().clone();
        for (i, rule) in rules.iter().enumerate() {
            run += 1;
            let mut reduced = role.clone();
            reduced["rules"].as_array_mut().unwrap().remove(i);
            cluster
                .apply(&serde_json::to_string(&reduced).unwrap())
                .await;
            let failed = first_failing_step(&cluster, store.as_ref(), &options, &lease, run).await;
            assert_eq!(
                failed,
                Some(step_of(rule)),
                "without rule {i} of {} {} ({rule}) the operator should fail at {:?}",
                role["kind"],
                role["metadata"]["name"],
                step_of(rule)
            );
            cluster
                .apply(&serde_json::to_string(&rbac[r]).unwrap())
                .await;
        }
    }
}

/// Moves a rendered object of the chart's namespace into the test's.
fn retarget(object: &mut Value) {
    if object["metadata"]["namespace"].is_string() {
        object["metadata"]["namespace"] = NAMESPACE.into();
    }
    if let Some(subjects) = object["subjects"].as_array_mut() {
        for subject in subjects {
            if subject["namespace"].is_string() {
                subject["namespace"] = NAMESPACE.into();
            }
        }
    }
}
