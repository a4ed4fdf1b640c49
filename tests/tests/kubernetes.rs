//! The Kubernetes API end to end: real `kubectl` against the kmock API server (with its
//! admission webhook call), the operator in this process, real Redis shared with extauthz,
//! a real Envoy, and tokens from a real OIDC issuer.

use std::sync::Arc;
use std::time::Duration;

use grantflow_core::audit::{ActorKind, Source};
use grantflow_core::clock::Clock;
use grantflow_core::decision::Limits;
use grantflow_core::store::{RedisSettings, SessionStore, StoreConfig};
use grantflow_e2e::kubernetes::{
    ApiServer, NAMESPACE, TempDir, User, WebhookCert, eventually, is_leader, kubectl,
    kubectl_output, start_operator,
};
use grantflow_e2e::redis::RedisServer;
use grantflow_e2e::stack::{Stack, StackOptions, TENANT};
use grantflow_operator::server::Running;
use serde_json::Value;

const OPERATOR: User = User {
    token: "operator-token",
    name: "system:serviceaccount:grantflow:grantflow-operator",
};
const ALICE: User = User {
    token: "alice-token",
    name: "alice@contoso.com",
};

struct KubeStack {
    stack: Stack,
    api: ApiServer,
    webhook: WebhookCert,
    redis_settings: RedisSettings,
    operator: Option<Running>,
    files: TempDir,
    _redis: RedisServer,
}

impl KubeStack {
    async fn start() -> KubeStack {
        let redis = RedisServer::start().await;
        let redis_settings = RedisSettings {
            urls: vec![redis.url()],
            cluster: false,
            timeout: Duration::from_secs(2),
            write_timeout: Duration::from_secs(2),
            ca_pem: None,
            wait_replicas: 0,
        };
        let stack = Stack::start_with(StackOptions {
            store: StoreConfig::Redis(redis_settings.clone()),
            ..StackOptions::default()
        })
        .await;
        let files = TempDir::new("kubernetes-e2e");
        let webhook = WebhookCert::new(&files);
        let webhook_url = webhook.url();
        let api = ApiServer::start(
            &[OPERATOR, ALICE],
            Some((webhook_url.as_str(), webhook.tls.cert.as_path())),
        )
        .await;
        let mut kube = KubeStack {
            stack,
            api,
            webhook,
            redis_settings,
            operator: None,
            files,
            _redis: redis,
        };
        kube.start_operator("operator-0").await;
        kube
    }

    /// Starts an operator replica on its own Redis connection (as a separate pod would be)
    /// and waits until it leads.
    async fn start_operator(&mut self, identity: &str) {
        let store = StoreConfig::Redis(self.redis_settings.clone())
            .open(Limits::default(), Arc::new(self.stack.clock.clone()))
            .expect("the store opens");
        let running = start_operator(
            self.api.client(OPERATOR.token).await,
            &self.webhook,
            identity,
            store,
            Arc::new(self.stack.clock.clone()),
        )
        .await;
        let http = reqwest::Client::new();
        eventually(Duration::from_secs(30), "the operator leads", || async {
            is_leader(&http, &running).await.then_some(())
        })
        .await;
        self.operator = Some(running);
    }

    async fn stop_operator(&mut self) {
        if let Some(running) = self.operator.take() {
            running.stop().await;
        }
    }

    async fn kubectl(&self, args: &[&str]) -> String {
        kubectl(&self.api.kubeconfig(ALICE.token), args).await
    }

    /// `kubectl apply -f` of a manifest.
    async fn apply(&self, name: &str, manifest: &str) -> String {
        let file = self.files.write(name, manifest);
        self.kubectl(&["apply", "--validate=false", "-f", file.to_str().unwrap()])
            .await
    }

    /// `kubectl get <kind> <name> -o yaml`, parsed.
    async fn get(&self, kind: &str, name: &str) -> Value {
        let yaml = self.kubectl(&["get", kind, name, "-o", "yaml"]).await;
        serde_yaml::from_str(&yaml).expect("kubectl prints YAML")
    }

    /// Waits until condition `type_` of `kind/name` has `status`; returns the object.
    async fn wait_for(&self, kind: &str, name: &str, type_: &str, status: &str) -> Value {
        eventually(
            Duration::from_secs(30),
            &format!("{kind}/{name} {type_}={status}"),
            || async {
                let object = self.get(kind, name).await;
                let conditions = object["status"]["conditions"].as_array().cloned()?;
                conditions
                    .iter()
                    .any(|c| c["type"] == type_ && c["status"] == status)
                    .then_some(object)
            },
        )
        .await
    }
}

fn revocation_yaml(name: &str, target: &str, reason: &str) -> String {
    format!(
        "apiVersion: session.grantflow.io/v1alpha1\nkind: Revocation\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\n  annotations:\n    # Typed by the requester: the webhook must overwrite it.\n    session.grantflow.io/requested-by: ceo@contoso.com\nspec:\n  tenantId: {TENANT}\n  target:\n    {target}\n  reason: {reason}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_revocation_ends_a_users_sessions_once_even_across_operator_restarts() {
    let mut kube = KubeStack::start().await;
    let stack = &kube.stack;
    let laptop = stack.token("user-dave", "sid-dave-laptop").await;
    let phone = stack.token("user-dave", "sid-dave-phone").await;
    let erin = stack.token("user-erin", "sid-erin").await;
    for token in [&laptop, &phone, &erin] {
        assert_eq!(stack.status(token).await, 200);
    }
    stack.clock.advance(Duration::from_secs(2));

    let created = kube
        .apply(
            "revoke-dave.yaml",
            &revocation_yaml(
                "inc-2041-dave",
                "userId: user-dave",
                "INC-2041 credential theft",
            ),
        )
        .await;
    assert!(
        created.contains("revocation.session.grantflow.io/inc-2041-dave created"),
        "{created}"
    );
    let revocation = kube
        .wait_for("revocation", "inc-2041-dave", "Applied", "True")
        .await;

    // `kubectl get revocation -o yaml` shows what was done, and by whom.
    let status = &revocation["status"];
    assert_eq!(status["sessionsRevoked"], 2, "{revocation:#}");
    assert_eq!(status["requestedBy"], ALICE.name);
    assert_eq!(
        revocation["metadata"]["annotations"]["session.grantflow.io/requested-by"], ALICE.name,
        "the webhook overwrote the typed requester"
    );
    assert_eq!(status["conditions"][0]["reason"], "Revoked");
    assert!(status["appliedAt"].is_string());
    let audit_id = status["auditId"].as_str().expect("an audit id").to_owned();

    // The very next request of the user through Envoy is refused; others are untouched.
    let stack = &kube.stack;
    assert_eq!(stack.status(&laptop).await, 401);
    assert_eq!(stack.status(&phone).await, 401);
    assert_eq!(stack.status(&erin).await, 200);

    let audit = stack.store.audit(TENANT, 10).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].id, audit_id);
    assert_eq!(audit[0].actor.kind, ActorKind::Kubernetes);
    assert_eq!(audit[0].actor.id, ALICE.name);
    assert_eq!(audit[0].source, Source::Kubernetes);
    assert_eq!(audit[0].sessions_revoked, Some(2));

    // An Event was recorded about it.
    let events: Value = serde_yaml::from_str(
        &kube
            .kubectl(&["get", "events.v1.events.k8s.io", "-o", "yaml"])
            .await,
    )
    .unwrap();
    let revoked = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["regarding"]["name"] == "inc-2041-dave")
        .expect("an Event about the Revocation");
    assert_eq!(revoked["reason"], "Revoked");
    assert_eq!(revoked["type"], "Normal");

    // A new replica takes over (the old one released the Lease): it sees the applied
    // Revocation and does nothing with it; a second Revocation is applied once.
    kube.stop_operator().await;
    kube.stack.clock.advance(Duration::from_secs(2));
    // A fresh sign-in proves itself with `auth_time` after the revocation (a token without it
    // is refused: "Sign in again").
    let mut claims = kube.stack.claims("user-dave", Some("sid-dave-fresh"));
    claims["auth_time"] = kube.stack.clock.now_secs().into();
    let fresh = kube.stack.issuer.token(claims).await;
    assert_eq!(
        kube.stack.status(&fresh).await,
        200,
        "a fresh sign-in works"
    );
    kube.start_operator("operator-1").await;
    kube.apply(
        "revoke-erin.yaml",
        &revocation_yaml("lost-phone-erin", "sessionId: sid-erin", "Lost phone"),
    )
    .await;
    let second = kube
        .wait_for("revocation", "lost-phone-erin", "Applied", "True")
        .await;
    assert_eq!(second["status"]["sessionsRevoked"], 1);
    assert_eq!(kube.stack.status(&erin).await, 401);
    assert_eq!(
        kube.stack.status(&fresh).await,
        200,
        "the first Revocation was not applied again"
    );
    let audit = kube.stack.store.audit(TENANT, 10).await.unwrap();
    assert_eq!(audit.len(), 2, "one audit record per Revocation: {audit:?}");
    let first = kube.get("revocation", "inc-2041-dave").await;
    assert_eq!(first["status"]["auditId"], audit_id.as_str());

    // The spec is the request: the operator refuses what the schema would (the emulator does
    // not run the CEL rules) and applies nothing.
    let invalid = kube
        .apply(
            "revoke-nobody.yaml",
            &revocation_yaml("nobody", "userId: \"a b\"", "typo"),
        )
        .await;
    assert!(invalid.contains("created"), "{invalid}");
    let refused = kube
        .wait_for("revocation", "nobody", "Applied", "False")
        .await;
    assert_eq!(refused["status"]["conditions"][0]["reason"], "InvalidSpec");
    assert_eq!(kube.stack.store.audit(TENANT, 10).await.unwrap().len(), 2);
    kube.stop_operator().await;
}

fn policy_yaml(name: &str, max_age: &str) -> String {
    format!(
        "apiVersion: session.grantflow.io/v1alpha1\nkind: SessionPolicy\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\nspec:\n  tenantId: {TENANT}\n  maxSessionAge: {max_age}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_session_policy_ends_older_sessions_and_deleting_it_restores_the_default() {
    let mut kube = KubeStack::start().await;
    let stack = &kube.stack;
    let early = stack.token("user-frank", "sid-frank-early").await;
    assert_eq!(stack.status(&early).await, 200);
    stack.clock.advance(Duration::from_secs(120));

    // Two minutes in: a one-minute policy ends the older session at once.
    let applied = kube
        .apply("policy.yaml", &policy_yaml("contoso", "1m"))
        .await;
    assert!(
        applied.contains("sessionpolicy.session.grantflow.io/contoso created"),
        "{applied}"
    );
    let policy = kube
        .wait_for("sessionpolicy", "contoso", "Ready", "True")
        .await;
    assert_eq!(policy["status"]["conditions"][0]["reason"], "Applied");
    assert_eq!(policy["status"]["observedGeneration"], 1);
    assert_eq!(
        policy["metadata"]["finalizers"][0], "session.grantflow.io/policy",
        "{policy:#}"
    );
    let stack = &kube.stack;
    assert_eq!(
        stack.status(&early).await,
        401,
        "older than the new maximum age"
    );

    // Sessions started now live one minute; these two are 90 s old when looked at again.
    let kept = stack.token("user-frank", "sid-frank-kept").await;
    let checked = stack.token("user-frank", "sid-frank-checked").await;
    assert_eq!(stack.status(&kept).await, 200);
    assert_eq!(stack.status(&checked).await, 200);
    stack.clock.advance(Duration::from_secs(90));
    assert_eq!(stack.status(&checked).await, 401, "the policy is in force");

    // A second policy for the same tenant is refused, and changes nothing.
    kube.apply("policy-2.yaml", &policy_yaml("contoso-again", "24h"))
        .await;
    let conflict = kube
        .wait_for("sessionpolicy", "contoso-again", "Ready", "False")
        .await;
    assert_eq!(conflict["status"]["conditions"][0]["reason"], "Conflict");
    kube.kubectl(&["delete", "sessionpolicy", "contoso-again"])
        .await;

    // Deleting the policy returns the tenant to the default (15 minutes): the 90-second-old
    // session is fine again.
    let deleted = kube.kubectl(&["delete", "sessionpolicy", "contoso"]).await;
    assert!(deleted.contains("deleted"), "{deleted}");
    let gone = kubectl_output(
        &kube.api.kubeconfig(ALICE.token),
        &["get", "sessionpolicy", "contoso"],
    )
    .await;
    assert!(
        !gone.status.success(),
        "the finalizer was removed and the object is gone"
    );
    assert_eq!(
        kube.stack.store.policy(TENANT).await.unwrap(),
        grantflow_core::policy::Policy::default_with(Duration::from_secs(15 * 60))
    );
    assert_eq!(kube.stack.status(&kept).await, 200);
    kube.stop_operator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_operator_replica_leads_and_another_takes_over() {
    let files = TempDir::new("leader-e2e");
    let webhooks = [WebhookCert::new(&files), WebhookCert::new(&files)];
    let api = ApiServer::start(&[OPERATOR], None).await;
    let clock = grantflow_core::clock::SystemClock;
    let store: Arc<dyn SessionStore> = StoreConfig::Memory
        .open(Limits::default(), Arc::new(clock))
        .expect("the store opens");
    let mut replicas = Vec::new();
    for (i, webhook) in webhooks.iter().enumerate() {
        replicas.push(Some(
            start_operator(
                api.client(OPERATOR.token).await,
                webhook,
                &format!("operator-{i}"),
                store.clone(),
                Arc::new(clock),
            )
            .await,
        ));
    }
    let http = reqwest::Client::new();
    let first = eventually(Duration::from_secs(30), "one replica leads", || async {
        let leading = leaders(&http, &replicas).await;
        (leading.len() == 1).then(|| leading[0])
    })
    .await;
    // For a while (several renewals of a 3 s lease), still exactly that one.
    for _ in 0..20 {
        assert_eq!(leaders(&http, &replicas).await, vec![first]);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let lease: Value = serde_yaml::from_str(
        &kubectl(
            &api.kubeconfig(OPERATOR.token),
            &[
                "get",
                "leases.v1.coordination.k8s.io",
                "grantflow-operator",
                "-o",
                "yaml",
            ],
        )
        .await,
    )
    .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], format!("operator-{first}"));

    // The leader stops (and releases the Lease): the other takes over.
    replicas[first].take().unwrap().stop().await;
    let second = eventually(
        Duration::from_secs(30),
        "the other replica leads",
        || async {
            let leading = leaders(&http, &replicas).await;
            (leading.len() == 1).then(|| leading[0])
        },
    )
    .await;
    assert_ne!(second, first);
    for replica in replicas.into_iter().flatten() {
        replica.stop().await;
    }
}

/// The indexes of the running replicas that say they lead.
async fn leaders(http: &reqwest::Client, replicas: &[Option<Running>]) -> Vec<usize> {
    let mut leading = Vec::new();
    for (i, replica) in replicas.iter().enumerate() {
        if let Some(running) = replica
            && is_leader(http, running).await
        {
            leading.push(i);
        }
    }
    leading
}
