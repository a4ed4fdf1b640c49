//! The Redis store: standalone Redis or Redis Cluster, the engine for many replicas.
//!
//! Key layout (every key of a tenant carries the hash tag `{<tenant>}`, so each script runs
//! in one cluster slot):
//!
//! | key                         | type   | holds                                         |
//! |-----------------------------|--------|-----------------------------------------------|
//! | `gf:{T}:policy`             | hash   | `max_age_ms`, `source` (JSON)                 |
//! | `gf:{T}:s:<session>`        | hash   | a live session; TTL start + max age + retention |
//! | `gf:{T}:end:<session>`      | hash   | tombstone `reason`, `at`, `user`; TTL retention |
//! | `gf:{T}:gen`                | hash   | generation marker: `id` (the instant the tenant's state began), `lost` (L) |
//! | `gf:{T}:u:<user>`           | hash   | `nb` watermark, `lock` until; TTL watermark retention (or lock) |
//! | `gf:{T}:blocked`            | zset   | users kept out by marks, by when that ends    |
//! | `gf:{T}:us:<user>`          | set    | the user's live session keys                  |
//! | `gf:{T}:live`               | zset   | live session keys by start                    |
//! | `gf:{T}:audit`              | stream | audit records (`record` = JSON); ids are the store's time; kept for the audit retention (at most [`AUDIT_CAP`]) |
//! | `gf:{T}:idem:<key>`         | hash   | outcome and fingerprint of an idempotent revocation; TTL 24 h |
//! | `gf:tenants`                | set    | tenants with sessions (for housekeeping)      |
//!
//! Changes are published on `gf:{T}:changes` (`SPUBLISH` on a cluster, `PUBLISH` otherwise).
//! Every call has a deadline; a timeout, a lost connection or a reply of the wrong shape is a
//! [`StoreError`], which refuses the request. Connections are made lazily and re-made by the
//! client library, so the store recovers by itself when Redis returns.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::TlsCertificates;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{
    AsyncCommands, Cmd, IntoConnectionInfo, Pipeline, ProtocolVersion, PushInfo, PushKind,
    RedisFuture, Script, Value,
};
use serde::Deserialize;
use tokio::sync::{Mutex as AsyncMutex, broadcast, mpsc};

use super::{AUDIT_CAP, ChangeEvent, ChangeStream, SessionStore, StoreError, StoreReset};
use crate::audit::AuditRecord;
use crate::clock::{Clock, millis};
use crate::decision::{Limits, TOUCH_INTERVAL_MS, UserMarks};
use crate::identity::SessionAnchor;
use crate::policy::{Policy, PolicySource};
use crate::revocation::{
    BlockedUser, IDEMPOTENCY_TTL, Revocation, RevocationOutcome, RevocationTarget,
};
use crate::session::{AccessRequest, EndReason, SessionRecord, Verdict, client_label};

const TENANTS_KEY: &str = "gf:tenants";

/// Where Redis is and how long calls may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]` (or `rediss://`); several for a cluster.
    pub urls: Vec<String>,
    pub cluster: bool,
    /// Deadline of a request-path call (`check`, reads).
    pub timeout: Duration,
    /// Deadline of a write an administrator waits for (revocations, policy changes).
    pub write_timeout: Duration,
    /// PEM of the CA certificates that sign the servers' certificates, for `rediss://` URLs;
    /// replaces the system's root certificates. `None`: the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Replicas that must acknowledge every revocation and policy change (`WAIT`) before the
    /// call returns; 0 returns once the primary has it.
    pub wait_replicas: u32,
}

impl RedisSettings {
    /// Trusts only the CA certificates of the PEM file at `path` (a private CA) for the
    /// `rediss://` URLs. Errors name the file, never a URL (URLs may hold a password).
    pub fn trust_ca_file(mut self, path: &std::path::Path) -> Result<Self, String> {
        let shown = path.display();
        let bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read the Redis CA file {shown}: {e}"))?;
        let blocks = pem::parse_many(&bytes)
            .map_err(|e| format!("the Redis CA file {shown} is not PEM: {e}"))?;
        if !blocks.iter().any(|block| block.tag() == "CERTIFICATE") {
            return Err(format!(
                "the Redis CA file {shown} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
            ));
        }
        if !self.urls.iter().all(|url| url.starts_with("rediss://")) {
            return Err(
                "a Redis CA file is for TLS: every Redis URL must then start with rediss://".into(),
            );
        }
        self.ca_pem = Some(bytes);
        Ok(self)
    }

    /// The CA certificates to trust, when not the system's.
    fn certificates(&self) -> Option<TlsCertificates> {
        self.ca_pem.as_ref().map(|pem| TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.clone()),
        })
    }
}

struct Scripts {
    check: Script,
    revoke: Script,
    unblock: Script,
    policy: Script,
    sweep: Script,
    append: Script,
}

/// `audit.lua` (the audit stream's `append_audit`) and a script that uses it.
fn with_audit(script: &str) -> Script {
    Script::new(&format!("{}\n{script}", include_str!("lua/audit.lua")))
}

impl Scripts {
    fn load() -> Self {
        Self {
            check: Script::new(include_str!("lua/check.lua")),
            revoke: with_audit(include_str!("lua/revoke.lua")),
            unblock: with_audit(include_str!("lua/unblock.lua")),
            policy: with_audit(include_str!("lua/policy.lua")),
            sweep: Script::new(include_str!("lua/sweep.lua")),
            append: with_audit(include_str!("lua/append.lua")),
        }
    }
}

/// Says so when the cap dropped audit records of `tenant` before the audit retention.
fn log_capped(tenant: &str, capped: i64) {
    if capped > 0 {
        tracing::error!(
            %tenant,
            dropped = capped,
            cap = AUDIT_CAP,
            "the tenant's audit trail reached its cap: the oldest records are dropped from the store before the audit retention (the JSON audit log keeps them)"
        );
    }
}

/// A connection to either kind of deployment (both multiplexed, cheap to clone).
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Connection {
    /// `WAIT replicas timeout` on the primary that holds `key`: how many of its replicas have
    /// acknowledged every write made on this connection so far.
    async fn wait(
        &mut self,
        key: &str,
        replicas: u32,
        timeout: Duration,
    ) -> redis::RedisResult<u32> {
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas).arg(timeout.as_millis().max(1) as u64);
        match self {
            Connection::Single(c) => wait.query_async(c).await,
            Connection::Cluster(c) => {
                let primary =
                    SingleNodeRoutingInfo::SpecificNode(Route::with_key(key, SlotAddr::Master));
                let reply = c
                    .route_command(wait, RoutingInfo::SingleNode(primary))
                    .await?;
                Ok(redis::from_redis_value(reply)?)
            }
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// Sessions, policies and audit trails in Redis.
pub struct RedisStore {
    settings: RedisSettings,
    limits: Limits,
    clock: Arc<dyn Clock>,
    scripts: Scripts,
    connection: AsyncMutex<Option<Connection>>,
    subscriber: AsyncMutex<Option<Subscriber>>,
    changes: broadcast::Sender<ChangeEvent>,
    publish: &'static str,
    /// Tenants this process has added to `gf:tenants`.
    registered: parking_lot::Mutex<HashSet<String>>,
    /// Each tenant's generation marker as this process last saw it (see `check.lua`).
    generations: parking_lot::Mutex<HashMap<String, String>>,
    /// The losses of data this process found.
    resets: parking_lot::Mutex<Vec<StoreReset>>,
}

struct Subscriber {
    connection: Connection,
    channels: HashSet<String>,
}

fn unavailable(error: redis::RedisError) -> StoreError {
    // Redis error text names the command and the server's answer, never the credentials.
    StoreError::Unavailable(format!(
        "{:?}: {}",
        error.kind(),
        error.detail().unwrap_or("")
    ))
}

fn malformed(what: &str) -> StoreError {
    StoreError::Malformed(what.to_owned())
}

/// The key prefix of a tenant, with its hash tag.
fn prefix(tenant: &str) -> String {
    format!("gf:{{{tenant}}}:")
}

impl RedisStore {
    /// A store for `settings`; connects on first use (so extauthz starts, and refuses with
    /// 503, while Redis is down).
    pub fn new(settings: RedisSettings, limits: Limits, clock: Arc<dyn Clock>) -> Self {
        let (changes, _) = broadcast::channel(4_096);
        let publish = if settings.cluster {
            "SPUBLISH"
        } else {
            "PUBLISH"
        };
        Self {
            settings,
            limits,
            clock,
            scripts: Scripts::load(),
            connection: AsyncMutex::new(None),
            subscriber: AsyncMutex::new(None),
            changes,
            publish,
            registered: parking_lot::Mutex::new(HashSet::new()),
            generations: parking_lot::Mutex::new(HashMap::new()),
            resets: parking_lot::Mutex::new(Vec::new()),
        }
    }

    /// Records that `tenant`'s data was lost (its generation marker vanished or changed):
    /// tokens issued before `lost_at` are refused from now on, by every replica (the loss time
    /// is in Redis). Audited as `store.reset` and logged.
    async fn found_reset(&self, tenant: &str, generation: &str) {
        let lost_at: i64 = generation.parse().unwrap_or_else(|_| self.clock.now_ms());
        tracing::error!(
            %tenant,
            lost_at = %crate::clock::rfc3339(lost_at),
            "the session store lost this tenant's data (generation marker gone or changed): tokens issued before the loss are refused"
        );
        self.registered.lock().remove(tenant);
        self.resets.lock().push(StoreReset {
            tenant: Some(tenant.to_owned()),
            lost_at,
            generation: generation.to_owned(),
        });
        let record = AuditRecord {
            id: crate::audit::new_audit_id(),
            time: crate::clock::rfc3339(self.clock.now_ms()),
            tenant: tenant.to_owned(),
            actor: crate::audit::Actor {
                kind: crate::audit::ActorKind::System,
                id: "grantflow-extauthz".into(),
                name: None,
            },
            action: crate::audit::Action::StoreReset,
            target: crate::audit::Target::default(),
            reason: Some(
                "the session store lost this tenant's data; tokens issued before the loss are refused"
                    .into(),
            ),
            source: crate::audit::Source::System,
            sessions_revoked: None,
            detail: Some(format!(
                "tokens issued before {} must be replaced (sign in again)",
                crate::clock::rfc3339(lost_at)
            )),
        };
        record.log();
        let Ok(json) = serde_json::to_string(&record) else {
            return;
        };
        let key = format!("{}audit", prefix(tenant));
        let appended = self
            .within(self.settings.write_timeout, async {
                let mut connection = self.connection().await?;
                let capped: i64 = self
                    .scripts
                    .append
                    .key(&key)
                    .arg(self.clock.now_ms())
                    .arg(millis(self.limits.audit_retention))
                    .arg(AUDIT_CAP)
                    .arg(&record.id)
                    .arg(&json)
                    .invoke_async(&mut connection)
                    .await
                    .map_err(unavailable)?;
                log_capped(tenant, capped);
                Ok(())
            })
            .await;
        if let Err(error) = appended {
            tracing::warn!(%error, "the store.reset audit record could not be appended (the loss is enforced all the same)");
        }
    }

    async fn connect(
        &self,
        push: Option<mpsc::UnboundedSender<PushInfo>>,
    ) -> Result<Connection, StoreError> {
        let s = &self.settings;
        // The deadline of each call is enforced around it; these bound the library's own waits.
        let connect_timeout = s.write_timeout;
        if s.cluster {
            let mut builder = ClusterClientBuilder::new(s.urls.clone())
                .connection_timeout(connect_timeout)
                .response_timeout(s.write_timeout)
                .retries(1)
                .min_retry_wait(5)
                .max_retry_wait(50);
            if let Some(push) = push {
                builder = builder
                    .use_protocol(ProtocolVersion::RESP3)
                    .push_sender(push);
            }
            if let Some(certificates) = s.certificates() {
                builder = builder.certs(certificates);
            }
            let client = builder.build().map_err(unavailable)?;
            Ok(Connection::Cluster(
                client.get_async_connection().await.map_err(unavailable)?,
            ))
        } else {
            let url = s
                .urls
                .first()
                .ok_or_else(|| StoreError::Unavailable("no Redis URL".into()))?;
            let mut info = url.as_str().into_connection_info().map_err(unavailable)?;
            let mut config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(connect_timeout))
                .set_response_timeout(Some(s.write_timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(200));
            if let Some(push) = push {
                let redis = info
                    .redis_settings()
                    .clone()
                    .set_protocol(ProtocolVersion::RESP3);
                info = info.set_redis_settings(redis);
                config = config.set_push_sender(push).set_automatic_resubscription();
            }
            let client = match s.certificates() {
                Some(certificates) => redis::Client::build_with_tls(info, certificates),
                None => redis::Client::open(info),
            }
            .map_err(unavailable)?;
            let manager = client
                .get_connection_manager_with_config(config)
                .await
                .map_err(unavailable)?;
            Ok(Connection::Single(manager))
        }
    }

    /// The shared connection, made on first use.
    async fn connection(&self) -> Result<Connection, StoreError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let connection = self.connect(None).await?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Runs `call` within `deadline`; a late answer is a timeout.
    async fn within<T>(
        &self,
        deadline: Duration,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(deadline, call)
            .await
            .unwrap_or(Err(StoreError::Timeout))
    }

    /// With `wait_replicas`, waits until that many replicas of `key`'s primary acknowledged
    /// the writes made so far on `connection` — for half the write deadline, so that a lagging
    /// replica is reported as such rather than as a timeout. The write itself is already in
    /// effect on the primary either way.
    async fn replicated(&self, connection: &mut Connection, key: &str) -> Result<(), StoreError> {
        let wanted = self.settings.wait_replicas;
        if wanted == 0 {
            return Ok(());
        }
        let patience = self.settings.write_timeout / 2;
        let acknowledged = connection
            .wait(key, wanted, patience)
            .await
            .map_err(unavailable)?;
        if acknowledged < wanted {
            return Err(StoreError::NotReplicated {
                acknowledged,
                wanted,
            });
        }
        Ok(())
    }

    /// Adds the tenant to `gf:tenants` for housekeeping (expiry, and forgetting audit records
    /// past the audit retention), once per tenant and process, so only the first new session
    /// or audit record of a tenant pays the extra round trip. A failure is retried with the
    /// next one and never changes the verdict or the write.
    async fn register_tenant(&self, tenant: &str) {
        if self.registered.lock().contains(tenant) {
            return;
        }
        let added = self
            .within(self.settings.timeout, async {
                let mut connection = self.connection().await?;
                let _: i64 = connection
                    .sadd(TENANTS_KEY, tenant)
                    .await
                    .map_err(unavailable)?;
                Ok(())
            })
            .await;
        match added {
            Ok(()) => {
                self.registered.lock().insert(tenant.to_owned());
            }
            Err(error) => tracing::debug!(%error, "could not register the tenant for housekeeping"),
        }
    }

    async fn read_policy(&self, tenant: &str) -> Result<Policy, StoreError> {
        let mut connection = self.connection().await?;
        let fields: HashMap<String, String> = connection
            .hgetall(format!("{}policy", prefix(tenant)))
            .await
            .map_err(unavailable)?;
        parse_policy(&fields, self.limits.default_max_age)
    }

    async fn sweep_tenant(&self, tenant: &str) -> Result<i64, StoreError> {
        let mut connection = self.connection().await?;
        let p = prefix(tenant);
        self.scripts
            .sweep
            .key(format!("{p}policy"))
            .key(format!("{p}audit"))
            .arg(&p)
            .arg(self.clock.now_ms())
            .arg(millis(self.limits.default_max_age))
            .arg(millis(self.limits.retention))
            .arg(self.publish)
            .arg(millis(self.limits.audit_retention))
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)
    }

    /// Runs `policy.lua`: sets `policy` (or clears it when `None`), with an optional audit
    /// record (appended, and logged once in effect), and publishes the change.
    async fn write_policy(
        &self,
        tenant: &str,
        policy: Option<&Policy>,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        let p = prefix(tenant);
        let (max_age, source) = match policy {
            Some(policy) => (
                millis(policy.max_session_age).to_string(),
                serde_json::to_string(&policy.source).map_err(|_| malformed("policy"))?,
            ),
            None => (String::new(), String::new()),
        };
        let audit_json = audit
            .map(serde_json::to_string)
            .transpose()
            .map_err(|_| malformed("audit record"))?
            .unwrap_or_default();
        let call = async {
            let mut connection = self.connection().await?;
            let capped: i64 = self
                .scripts
                .policy
                .key(format!("{p}policy"))
                .key(format!("{p}audit"))
                .arg(&p)
                .arg(&max_age)
                .arg(&source)
                .arg(&audit_json)
                .arg(self.publish)
                .arg(AUDIT_CAP)
                .arg(millis(self.limits.default_max_age))
                .arg(self.clock.now_ms())
                .arg(millis(self.limits.audit_retention))
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable)?;
            // In effect now: logged even if the replicas do not confirm it below.
            if let Some(record) = audit {
                record.log();
                log_capped(tenant, capped);
            }
            self.replicated(&mut connection, &p).await
        };
        self.within(self.settings.write_timeout, call).await?;
        if audit.is_some() {
            self.register_tenant(tenant).await;
        }
        Ok(())
    }

    /// Subscribes the change feed of `tenant` on the subscriber connection.
    async fn listen(&self, tenant: &str) -> Result<(), StoreError> {
        let channel = format!("{}changes", prefix(tenant));
        let mut guard = self.subscriber.lock().await;
        if guard.is_none() {
            let (push, received) = mpsc::unbounded_channel();
            let connection = self.connect(Some(push)).await?;
            tokio::spawn(forward_pushes(received, self.changes.clone()));
            *guard = Some(Subscriber {
                connection,
                channels: HashSet::new(),
            });
        }
        let subscriber = guard.as_mut().expect("made above");
        if subscriber.channels.contains(&channel) {
            return Ok(());
        }
        match &mut subscriber.connection {
            Connection::Single(c) => c.subscribe(&channel).await.map_err(unavailable)?,
            Connection::Cluster(c) => c.ssubscribe(&channel).await.map_err(unavailable)?,
        }
        subscriber.channels.insert(channel);
        Ok(())
    }
}

/// Turns published messages into change events; a lost connection means events may have been
/// missed, so every tenant is told to resync.
async fn forward_pushes(
    mut received: mpsc::UnboundedReceiver<PushInfo>,
    changes: broadcast::Sender<ChangeEvent>,
) {
    while let Some(push) = received.recv().await {
        match push.kind {
            PushKind::Message | PushKind::SMessage => {
                if let Some(event) = decode_push(&push.data) {
                    let _ = changes.send(event);
                }
            }
            PushKind::Disconnection => {
                let _ = changes.send(ChangeEvent::Resync {
                    tenant: String::new(),
                });
            }
            _ => {}
        }
    }
}

#[derive(Deserialize)]
struct Published {
    t: String,
    key: Option<String>,
    user: Option<String>,
    dn: Option<String>,
    anchor: Option<String>,
    started: Option<String>,
    seen: Option<String>,
    ip: Option<String>,
    ua: Option<String>,
    reason: Option<String>,
    max_age_ms: Option<String>,
    source: Option<String>,
}

fn decode_push(data: &[Value]) -> Option<ChangeEvent> {
    let [channel, payload] = data else {
        return None;
    };
    let channel: String = redis::from_redis_value(channel.clone()).ok()?;
    let payload: String = redis::from_redis_value(payload.clone()).ok()?;
    let tenant = channel
        .strip_prefix("gf:{")?
        .strip_suffix("}:changes")?
        .to_owned();
    let message: Published = serde_json::from_str(&payload).ok()?;
    match message.t.as_str() {
        "created" => {
            let user_agent = message.ua.filter(|ua| !ua.is_empty());
            Some(ChangeEvent::SessionCreated {
                session: SessionRecord {
                    tenant: tenant.clone(),
                    user: message.user?,
                    display_name: message.dn.filter(|d| !d.is_empty()),
                    id: message.key?,
                    anchor: parse_anchor(message.anchor.as_deref()?)?,
                    started_at: message.started?.parse().ok()?,
                    last_seen: message.seen?.parse().ok()?,
                    client_ip: message.ip.and_then(|ip| ip.parse().ok()),
                    client_label: user_agent.as_deref().and_then(client_label),
                    user_agent,
                },
                tenant,
            })
        }
        "ended" => Some(ChangeEvent::SessionEnded {
            session: message.key?,
            user: message.user.filter(|u| !u.is_empty()),
            reason: if message.reason.as_deref() == Some("expired") {
                EndReason::Expired
            } else {
                EndReason::Revoked
            },
            tenant,
        }),
        "blocks" => Some(ChangeEvent::UserBlocksChanged {
            user: message.user.filter(|u| !u.is_empty())?,
            tenant,
        }),
        "policy" => Some(ChangeEvent::PolicyChanged {
            policy: Policy {
                max_session_age: Duration::from_millis(message.max_age_ms?.parse().ok()?),
                source: serde_json::from_str(&message.source?).ok()?,
            },
            tenant,
        }),
        _ => None,
    }
}

fn parse_anchor(anchor: &str) -> Option<SessionAnchor> {
    serde_json::from_value(serde_json::Value::String(anchor.to_owned())).ok()
}

fn parse_policy(fields: &HashMap<String, String>, default: Duration) -> Result<Policy, StoreError> {
    let Some(max_age) = fields.get("max_age_ms") else {
        return Ok(Policy::default_with(default));
    };
    let max_age: u64 = max_age.parse().map_err(|_| malformed("policy max age"))?;
    let source: PolicySource = fields
        .get("source")
        .map(|s| serde_json::from_str(s))
        .transpose()
        .map_err(|_| malformed("policy source"))?
        .unwrap_or(PolicySource::Admin);
    Ok(Policy {
        max_session_age: Duration::from_millis(max_age),
        source,
    })
}

fn parse_session(tenant: &str, id: &str, fields: HashMap<String, String>) -> Option<SessionRecord> {
    let user_agent = fields.get("ua").filter(|ua| !ua.is_empty()).cloned();
    Some(SessionRecord {
        tenant: tenant.to_owned(),
        user: fields.get("user")?.clone(),
        display_name: fields.get("dn").filter(|d| !d.is_empty()).cloned(),
        id: id.to_owned(),
        anchor: parse_anchor(fields.get("anchor")?)?,
        started_at: fields.get("started")?.parse().ok()?,
        last_seen: fields.get("seen")?.parse().ok()?,
        client_ip: fields.get("ip").and_then(|ip| ip.parse().ok()),
        client_label: user_agent.as_deref().and_then(client_label),
        user_agent,
    })
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn check(&self, request: &AccessRequest) -> Result<Verdict, StoreError> {
        let identity = &request.identity;
        let p = prefix(&identity.tenant);
        let known = self
            .generations
            .lock()
            .get(&identity.tenant)
            .cloned()
            .unwrap_or_default();
        let call = async {
            let mut connection = self.connection().await?;
            let reply: (i64, i64, String, u8) = self
                .scripts
                .check
                .key(format!("{p}policy"))
                .arg(&p)
                .arg(self.clock.now_ms())
                .arg(millis(self.limits.default_max_age))
                .arg(millis(self.limits.retention))
                .arg(millis(self.limits.watermark_retention))
                .arg(
                    identity
                        .auth_time
                        .map(|s| s.saturating_mul(1000).to_string())
                        .unwrap_or_default(),
                )
                .arg(
                    identity
                        .issued_at
                        .or(identity.auth_time)
                        .map(|s| s.to_string())
                        .unwrap_or_default(),
                )
                .arg(&identity.session.id)
                .arg(&identity.user)
                .arg(identity.display_name.as_deref().unwrap_or(""))
                .arg(identity.session.anchor.as_str())
                .arg(
                    request
                        .client_ip
                        .map(|ip| ip.to_string())
                        .unwrap_or_default(),
                )
                .arg(request.user_agent.as_deref().unwrap_or(""))
                .arg(self.publish)
                .arg(TOUCH_INTERVAL_MS)
                .arg(&known)
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable)?;
            Ok(reply)
        };
        let (code, started_at, generation, reset) =
            self.within(self.settings.timeout, call).await?;
        if !generation.is_empty() {
            self.generations
                .lock()
                .insert(identity.tenant.clone(), generation.clone());
            if reset == 1 {
                self.found_reset(&identity.tenant, &generation).await;
            }
        }
        match code {
            1 => Ok(Verdict::Allow {
                created: false,
                started_at,
            }),
            2 => {
                self.register_tenant(&identity.tenant).await;
                Ok(Verdict::Allow {
                    created: true,
                    started_at,
                })
            }
            3 => Ok(Verdict::Deny(EndReason::Expired)),
            4 => Ok(Verdict::Deny(EndReason::Revoked)),
            5 => Ok(Verdict::Deny(EndReason::Reauthenticate)),
            _ => Err(malformed("check verdict")),
        }
    }

    async fn revoke(&self, revocation: &Revocation) -> Result<RevocationOutcome, StoreError> {
        let now = self.clock.now_ms();
        let (kind, target_id, lock_until) = match &revocation.target {
            RevocationTarget::Session(key) => ("session", key.as_str(), None),
            RevocationTarget::User { user, lock_until } => ("user", user.as_str(), *lock_until),
        };
        // `revoke.lua` fills in the count and, for one session, its user, and answers the record
        // it stored, which is the one logged.
        let record = revocation.audit_record(now, 0, None);
        let fingerprint = revocation.fingerprint();
        let json = serde_json::to_string(&record).map_err(|_| malformed("audit record"))?;
        let p = prefix(&revocation.tenant);
        let call = async {
            let mut connection = self.connection().await?;
            let reply: (u32, String, u8, String, i64) = self
                .scripts
                .revoke
                .key(format!("{p}audit"))
                .arg(&p)
                .arg(now)
                .arg(millis(self.limits.retention))
                .arg(kind)
                .arg(target_id)
                .arg(lock_until.map(|t| t.to_string()).unwrap_or_default())
                .arg(&json)
                .arg(revocation.idempotency_key.as_deref().unwrap_or(""))
                .arg(self.publish)
                .arg(AUDIT_CAP)
                .arg(&fingerprint)
                .arg(millis(IDEMPOTENCY_TTL))
                .arg(millis(self.limits.watermark_retention))
                .arg(millis(self.limits.audit_retention))
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable)?;
            let (sessions_revoked, audit_id, replayed, stored, capped) = reply;
            log_capped(&revocation.tenant, capped);
            if replayed == 2 {
                return Err(StoreError::IdempotencyKeyReused);
            }
            if replayed == 0 {
                // In effect now: logged even if the replicas do not confirm it below — the
                // record exactly as the stream holds it.
                match serde_json::from_str::<AuditRecord>(&stored) {
                    Ok(stored) => stored.log(),
                    Err(_) => {
                        tracing::error!(
                            "the stored audit record could not be read back; logging the request's"
                        );
                        record.log();
                    }
                }
            }
            self.replicated(&mut connection, &p).await?;
            Ok((sessions_revoked, audit_id, replayed))
        };
        let (sessions_revoked, audit_id, replayed) =
            self.within(self.settings.write_timeout, call).await?;
        self.register_tenant(&revocation.tenant).await;
        Ok(RevocationOutcome {
            sessions_revoked,
            audit_id,
            replayed: replayed == 1,
        })
    }

    async fn blocked_users(&self, tenant: &str) -> Result<Vec<BlockedUser>, StoreError> {
        let p = prefix(tenant);
        let now = self.clock.now_ms();
        let call = async {
            let mut connection = self.connection().await?;
            let users: Vec<String> = connection
                .zrangebyscore(format!("{p}blocked"), now + 1, "+inf")
                .await
                .map_err(unavailable)?;
            if users.is_empty() {
                return Ok((users, Vec::new()));
            }
            let mut pipe = redis::pipe();
            for user in &users {
                pipe.cmd("HMGET")
                    .arg(format!("{p}u:{user}"))
                    .arg("nb")
                    .arg("lock");
            }
            let marks: Vec<(Option<i64>, Option<i64>)> = pipe
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            Ok((users, marks))
        };
        let (users, marks) = self.within(self.settings.write_timeout, call).await?;
        // The same rule as the in-process stores: only marks still in force are listed.
        let mut blocked: Vec<BlockedUser> = users
            .iter()
            .zip(marks)
            .filter_map(|(user, (not_before, lock_until))| {
                let marks = UserMarks {
                    not_before,
                    lock_until,
                };
                marks.blocked(user, &self.limits, now)
            })
            .collect();
        blocked.sort_by(|a, b| a.user.cmp(&b.user));
        Ok(blocked)
    }

    async fn unblock_user(
        &self,
        tenant: &str,
        user: &str,
        audit: AuditRecord,
    ) -> Result<bool, StoreError> {
        let p = prefix(tenant);
        let json = serde_json::to_string(&audit).map_err(|_| malformed("audit record"))?;
        let call = async {
            let mut connection = self.connection().await?;
            let (lifted, capped): (i64, i64) = self
                .scripts
                .unblock
                .key(format!("{p}audit"))
                .arg(&p)
                .arg(self.clock.now_ms())
                .arg(user)
                .arg(&json)
                .arg(AUDIT_CAP)
                .arg(millis(self.limits.watermark_retention))
                .arg(millis(self.limits.audit_retention))
                .arg(self.publish)
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable)?;
            if lifted == 1 {
                audit.log();
                log_capped(tenant, capped);
            }
            self.replicated(&mut connection, &p).await?;
            Ok(lifted == 1)
        };
        let lifted = self.within(self.settings.write_timeout, call).await?;
        if lifted {
            self.register_tenant(tenant).await;
        }
        Ok(lifted)
    }

    async fn policy(&self, tenant: &str) -> Result<Policy, StoreError> {
        self.within(self.settings.timeout, self.read_policy(tenant))
            .await
    }

    async fn set_policy(
        &self,
        tenant: &str,
        policy: Policy,
        audit: Option<AuditRecord>,
    ) -> Result<(), StoreError> {
        self.write_policy(tenant, Some(&policy), audit.as_ref())
            .await
    }

    async fn clear_policy(&self, tenant: &str) -> Result<(), StoreError> {
        self.write_policy(tenant, None, None).await
    }

    async fn sessions(&self, tenant: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let p = prefix(tenant);
        let call = async {
            let mut connection = self.connection().await?;
            let keys: Vec<String> = connection
                .zrange(format!("{p}live"), 0, -1)
                .await
                .map_err(unavailable)?;
            if keys.is_empty() {
                return Ok((keys, Vec::new()));
            }
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.hgetall(format!("{p}s:{key}"));
            }
            let rows: Vec<HashMap<String, String>> = pipe
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            Ok((keys, rows))
        };
        let read = self.within(self.settings.write_timeout, call).await?;
        let (keys, rows) = match read {
            (keys, rows) if rows.len() == keys.len() => (keys, rows),
            _ => return Ok(Vec::new()),
        };
        let policy = self.policy(tenant).await?;
        let now = self.clock.now_ms();
        let max_age = millis(policy.max_session_age);
        // Sessions past the max age whose expiry housekeeping has not caught yet are not live.
        Ok(keys
            .iter()
            .zip(rows)
            .filter_map(|(key, fields)| parse_session(tenant, key, fields))
            .filter(|s| now - s.started_at < max_age)
            .collect())
    }

    async fn audit(&self, tenant: &str, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let key = format!("{}audit", prefix(tenant));
        let call = async {
            let mut connection = self.connection().await?;
            let reply: redis::streams::StreamRangeReply = connection
                .xrevrange_count(&key, "+", "-", limit)
                .await
                .map_err(unavailable)?;
            Ok(reply)
        };
        let reply = self.within(self.settings.write_timeout, call).await?;
        reply
            .ids
            .iter()
            .map(|entry| {
                let json: String = entry
                    .get("record")
                    .ok_or_else(|| malformed("audit entry"))?;
                serde_json::from_str(&json).map_err(|_| malformed("audit record"))
            })
            .collect()
    }

    async fn subscribe(&self, tenant: &str) -> Result<ChangeStream, StoreError> {
        // Subscribe to the broadcast first, so nothing published after `listen` is missed.
        let receiver = self.changes.subscribe();
        self.within(self.settings.write_timeout, self.listen(tenant))
            .await?;
        Ok(super::tenant_feed(receiver, tenant))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let call = async {
            let mut connection = self.connection().await?;
            let _: String = redis::cmd("PING")
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            Ok(())
        };
        self.within(self.settings.timeout.max(Duration::from_millis(200)), call)
            .await
    }

    async fn maintain(&self) -> Result<(), StoreError> {
        let tenants: Vec<String> = self
            .within(self.settings.write_timeout, async {
                let mut connection = self.connection().await?;
                connection.smembers(TENANTS_KEY).await.map_err(unavailable)
            })
            .await?;
        for tenant in tenants {
            let expired = self
                .within(self.settings.write_timeout, self.sweep_tenant(&tenant))
                .await?;
            if expired > 0 {
                tracing::debug!(%tenant, expired, "expired sessions past the max age");
            }
        }
        Ok(())
    }

    fn resets(&self) -> Vec<StoreReset> {
        self.resets.lock().clone()
    }
}
