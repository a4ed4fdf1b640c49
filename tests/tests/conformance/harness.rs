//! The context a case runs in ([`Ctx`]): one store of one kind, a clock the case moves, a
//! tenant of its own, and fixtures.
//!
//! # Time
//!
//! Every case starts at [`T0`] on a [`ManualClock`]. The embedded and memory stores begin a
//! day earlier (their loss time L, before which tokens are refused, is `T0 - 1 day`), so a
//! case sees a store that has been in service for a while; cases about a store that begins
//! now say so ([`Ctx::begin_new_store`]). Redis decides with the time the store passes to its
//! scripts (the manual clock), but expires keys on its own, real clock: a key written with a
//! retention of a day outlives any clock move. Cases that depend on a key expiring use short
//! durations and [`Ctx::elapse`], which also waits that long for real on Redis; cases that
//! would need a day of real time run only where the clock can be moved.
//!
//! # Redis servers
//!
//! Starting a cluster for each of ~60 cases would cost minutes, so every case of a test binary
//! shares one standalone server and one cluster ([`RedisServer::shared`],
//! [`RedisCluster::shared`]): started by the first case that needs it, killed by a lifeline
//! watchdog once the binary has ended, however it ends (no orphaned `redis-server`). Each case
//! works in tenants of its own (random ids), so their data never meets — with one exception:
//! housekeeping (`maintain`) sweeps *every* tenant on the server with the calling case's
//! clock, which could expire another running case's sessions. So a shared server has a
//! read-write lock: ordinary cases hold it shared and run side by side; a case that runs
//! housekeeping is declared `exclusive` and holds it alone ([`Ctx::maintain`] refuses to run
//! otherwise). Cases that wipe or restart Redis get servers of their own (`own`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use grantflow_core::audit::{Action, Actor, ActorKind, AuditRecord, Source, Target};
use grantflow_core::clock::{Clock, ManualClock, UnixMillis, rfc3339};
use grantflow_core::decision::Limits;
use grantflow_core::identity::{Identity, SessionKey};
use grantflow_core::policy::{Policy, PolicySource};
use grantflow_core::revocation::{BlockedUser, Revocation, RevocationOutcome, RevocationTarget};
use grantflow_core::session::{AccessRequest, EndReason, SessionRecord, Verdict};
use grantflow_core::store::{
    RedisSettings, RedisStore, SessionStore, StoreConfig, StoreError, StoreReset,
};
use grantflow_e2e::redis::{RedisCluster, RedisServer, redis_cli};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// The start of every case, in milliseconds (a whole second).
pub const T0: i64 = 1_750_000_000_000;
pub const ALICE: &str = "a11ce000-0000-0000-0000-000000000001";
pub const BOB: &str = "b0b00000-0000-0000-0000-000000000002";
pub const CAROL: &str = "ca501000-0000-0000-0000-000000000003";
pub const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
pub const CLIENT_IP: &str = "203.0.113.7";

pub const SEC: Duration = Duration::from_secs(1);
pub const MS: Duration = Duration::from_millis(1);
pub const HOUR: Duration = Duration::from_secs(3600);
pub const DAY: Duration = Duration::from_secs(24 * 3600);

pub fn mins(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}

pub const EXPIRED: Verdict = Verdict::Deny(EndReason::Expired);
pub const REVOKED: Verdict = Verdict::Deny(EndReason::Revoked);
pub const REAUTHENTICATE: Verdict = Verdict::Deny(EndReason::Reauthenticate);

/// The refusal of a user locked until `until`, without a message.
pub fn locked(until: UnixMillis) -> Verdict {
    Verdict::Locked {
        until,
        message: None,
    }
}

pub fn created(started_at: i64) -> Verdict {
    Verdict::Allow {
        created: true,
        started_at,
    }
}

pub fn allowed(started_at: i64) -> Verdict {
    Verdict::Allow {
        created: false,
        started_at,
    }
}

pub fn is_allowed(verdict: Verdict) -> bool {
    matches!(verdict, Verdict::Allow { .. })
}

/// The same token with `auth_time` (seconds).
pub fn authenticated(identity: Identity, auth_time_secs: i64) -> Identity {
    Identity {
        auth_time: Some(auth_time_secs),
        ..identity
    }
}

/// The same token with `iat` (seconds; `None`: the token does not say).
pub fn issued(identity: Identity, iat_secs: impl Into<Option<i64>>) -> Identity {
    Identity {
        issued_at: iat_secs.into(),
        ..identity
    }
}

pub fn policy(max_age: Duration) -> Policy {
    Policy {
        max_session_age: max_age,
        idle_timeout: None,
        max_sessions_per_user: None,
        on_limit: Default::default(),
        source: PolicySource::Admin,
    }
}

pub fn admin() -> Actor {
    Actor {
        kind: ActorKind::Admin,
        id: "ad000000-0000-0000-0000-0000000000ad".into(),
        name: Some("Grace".into()),
    }
}

/// The audit record of an administrator's policy change in `tenant` at `now` (max age 30m).
pub fn policy_record(tenant: &str, now: UnixMillis) -> AuditRecord {
    AuditRecord {
        id: grantflow_core::audit::new_audit_id(),
        time: rfc3339(now),
        tenant: tenant.into(),
        actor: admin(),
        action: Action::PolicyUpdate,
        target: Target::default(),
        reason: None,
        source: Source::Api,
        sessions_revoked: None,
        detail: Some("maxSessionAge=30m".into()),
    }
}

/// The audit record of an administrator lifting `user`'s block in `tenant` at `now`.
pub fn unblock_record(tenant: &str, user: &str, now: UnixMillis) -> AuditRecord {
    AuditRecord {
        id: grantflow_core::audit::new_audit_id(),
        time: rfc3339(now),
        tenant: tenant.into(),
        actor: admin(),
        action: Action::UserUnblock,
        target: Target {
            user: Some(user.into()),
            session: None,
        },
        reason: Some("false positive".into()),
        source: Source::Dashboard,
        sessions_revoked: None,
        detail: None,
    }
}

/// An administrator's revocation of `target` in `tenant`, from the dashboard.
pub fn revocation(tenant: &str, target: RevocationTarget, reason: &str) -> Revocation {
    Revocation {
        tenant: tenant.into(),
        target,
        reason: reason.into(),
        actor: admin(),
        source: Source::Dashboard,
        idempotency_key: None,
    }
}

/// The same revocation with an idempotency key.
pub fn keyed(revocation: Revocation, key: &str) -> Revocation {
    Revocation {
        idempotency_key: Some(key.into()),
        ..revocation
    }
}

pub fn session(key: &str) -> RevocationTarget {
    RevocationTarget::Session(key.into())
}

pub fn user(user: &str) -> RevocationTarget {
    RevocationTarget::User {
        user: user.into(),
        lock_until: None,
        message: None,
    }
}

pub fn lock(user: &str, until: UnixMillis) -> RevocationTarget {
    RevocationTarget::User {
        user: user.into(),
        lock_until: Some(until),
        message: None,
    }
}

/// A random tenant id.
pub fn new_tenant() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `store`'s verdict on `identity`, from the usual client.
pub async fn check_on(store: &dyn SessionStore, identity: &Identity) -> Verdict {
    let request = AccessRequest {
        identity: Arc::new(identity.clone()),
        client_ip: Some(CLIENT_IP.parse().unwrap()),
        user_agent: Some(CHROME.into()),
    };
    store.check(&request).await.expect("the store answers")
}

// ---------------------------------------------------------------------------------------------
// Stores
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// The in-process engine with its redb journal, in a temporary data folder.
    Embedded,
    /// The in-process engine alone, as `--store memory` opens it.
    Memory,
    Redis,
    RedisCluster,
}

impl StoreKind {
    pub fn is_redis(self) -> bool {
        matches!(self, Self::Redis | Self::RedisCluster)
    }
}

/// The stores by the names `cases!` gives their tests.
#[allow(non_upper_case_globals)]
pub mod stores {
    use super::StoreKind;

    pub const embedded: StoreKind = StoreKind::Embedded;
    pub const memory: StoreKind = StoreKind::Memory;
    pub const redis: StoreKind = StoreKind::Redis;
    pub const redis_cluster: StoreKind = StoreKind::RedisCluster;
}

/// How a Redis case uses its server (the embedded and memory stores are the case's own
/// anyway).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// The binary's shared server, side by side with other cases.
    Shared,
    /// The binary's shared server, alone (for housekeeping, which sweeps every tenant).
    Exclusive,
    /// A server (or cluster) of the case's own, stopped when it ends (to wipe it).
    Own,
}

/// The sharings by the names `cases!` takes.
#[allow(non_upper_case_globals)]
pub mod sharing {
    use super::Sharing;

    pub const shared: Sharing = Sharing::Shared;
    pub const exclusive: Sharing = Sharing::Exclusive;
    pub const own: Sharing = Sharing::Own;
}

/// One lock per shared server: see the module documentation.
static STANDALONE_LOCK: RwLock<()> = RwLock::const_new(());
static CLUSTER_LOCK: RwLock<()> = RwLock::const_new(());

/// What a case's store lives on. Dropped after the store (field order of [`Ctx`]).
#[allow(clippy::large_enum_variant)] // one per case
enum Backing {
    Folder(tempfile::TempDir),
    Memory,
    Redis {
        settings: RedisSettings,
        _server: Server,
    },
}

#[allow(clippy::large_enum_variant)] // one per case
enum Server {
    /// Held for the case's lifetime (the lock of the module documentation).
    Shared(#[allow(dead_code)] RwLockReadGuard<'static, ()>),
    Exclusive(#[allow(dead_code)] RwLockWriteGuard<'static, ()>),
    OwnStandalone(RedisServer),
    OwnCluster(RedisCluster),
    /// A server the test holds itself (TLS, replicas).
    Held,
}

/// Settings for `urls`, with deadlines generous enough for a busy 2-core machine.
pub fn redis_settings(urls: Vec<String>, cluster: bool) -> RedisSettings {
    RedisSettings {
        urls,
        cluster,
        timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(5),
        ca_pem: None,
        wait_replicas: 0,
    }
}

/// Runs `case` on a new context of `kind`.
pub async fn run<F, Fut>(kind: StoreKind, sharing: Sharing, case: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    case(Ctx::start(kind, sharing).await).await;
}

/// A case's world: its store, clock and tenants.
pub struct Ctx {
    pub kind: StoreKind,
    pub clock: ManualClock,
    /// The case's tenant.
    pub tenant: String,
    /// A second tenant of the case.
    pub other_tenant: String,
    limits: Limits,
    // Dropped before the backing: the data folder or server outlives the store.
    store: Arc<dyn SessionStore>,
    backing: Backing,
}

impl Ctx {
    /// A store of `kind` with the default limits, at [`T0`].
    pub async fn start(kind: StoreKind, sharing: Sharing) -> Ctx {
        let backing = match kind {
            StoreKind::Embedded => Backing::Folder(new_folder()),
            StoreKind::Memory => Backing::Memory,
            StoreKind::Redis => {
                let (urls, server) = match sharing {
                    Sharing::Own => {
                        let server = RedisServer::start().await;
                        (vec![server.url()], Server::OwnStandalone(server))
                    }
                    Sharing::Shared | Sharing::Exclusive => {
                        let url = RedisServer::shared().await.url();
                        (vec![url], take_lock(&STANDALONE_LOCK, sharing).await)
                    }
                };
                Backing::Redis {
                    settings: redis_settings(urls, false),
                    _server: server,
                }
            }
            StoreKind::RedisCluster => {
                let (urls, server) = match sharing {
                    Sharing::Own => {
                        let cluster = RedisCluster::start().await;
                        (cluster.urls(), Server::OwnCluster(cluster))
                    }
                    Sharing::Shared | Sharing::Exclusive => {
                        let urls = RedisCluster::shared().await.urls();
                        (urls, take_lock(&CLUSTER_LOCK, sharing).await)
                    }
                };
                Backing::Redis {
                    settings: redis_settings(urls, true),
                    _server: server,
                }
            }
        };
        Self::open(kind, backing, Limits::default())
    }

    /// A Redis store with `settings`, on a server the caller holds (TLS, replicas).
    pub fn on_redis(settings: RedisSettings) -> Ctx {
        let kind = if settings.cluster {
            StoreKind::RedisCluster
        } else {
            StoreKind::Redis
        };
        let backing = Backing::Redis {
            settings,
            _server: Server::Held,
        };
        Self::open(kind, backing, Limits::default())
    }

    /// Opens the store on `backing` a day before [`T0`], then sets the clock to `T0`.
    fn open(kind: StoreKind, backing: Backing, limits: Limits) -> Ctx {
        let clock = ManualClock::new(T0 - DAY.as_millis() as i64);
        let store = open_store(&backing, limits, &clock);
        clock.set(T0);
        Ctx {
            kind,
            clock,
            tenant: new_tenant(),
            other_tenant: new_tenant(),
            limits,
            store,
            backing,
        }
    }

    /// The same kind of store with other limits: a new one (a new data folder; the same
    /// Redis), so call it before anything else.
    pub fn with_limits(self, limits: Limits) -> Ctx {
        assert_eq!(self.clock.now_ms(), T0, "with_limits comes first");
        let Ctx {
            kind,
            store,
            backing,
            ..
        } = self;
        drop(store);
        let backing = match backing {
            Backing::Folder(_) => Backing::Folder(new_folder()),
            other => other,
        };
        Self::open(kind, backing, limits)
    }

    /// Redis: a new store on the same server with `change`d settings; call it first.
    pub fn with_redis_settings(self, change: impl FnOnce(&mut RedisSettings)) -> Ctx {
        assert_eq!(self.clock.now_ms(), T0, "with_redis_settings comes first");
        let Ctx {
            kind,
            limits,
            store,
            backing,
            ..
        } = self;
        drop(store);
        let Backing::Redis {
            mut settings,
            _server,
        } = backing
        else {
            panic!("Redis settings are for Redis");
        };
        change(&mut settings);
        Self::open(kind, Backing::Redis { settings, _server }, limits)
    }

    pub fn store(&self) -> &dyn SessionStore {
        &*self.store
    }

    // -- time ---------------------------------------------------------------------------------

    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn now_secs(&self) -> i64 {
        self.clock.now_secs()
    }

    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    pub fn set_time(&self, to: UnixMillis) {
        self.clock.set(to);
    }

    /// Moves the clock by `by` and, on Redis, also waits that long: for keys that Redis
    /// expires on its own clock. Short durations only.
    pub async fn elapse(&self, by: Duration) {
        assert!(by <= Duration::from_secs(10), "elapse is for short waits");
        self.clock.advance(by);
        if self.kind.is_redis() {
            tokio::time::sleep(by).await;
        }
    }

    // -- tokens -------------------------------------------------------------------------------

    /// A token of `user` in the case's tenant with session id `sid`, issued (`iat`) now,
    /// without `auth_time`.
    pub fn token(&self, user: &str, sid: &str) -> Identity {
        self.token_in(&self.tenant, user, sid)
    }

    pub fn token_in(&self, tenant: &str, user: &str, sid: &str) -> Identity {
        self.identity(tenant, user, SessionKey::derive(Some(sid), None, "unused"))
    }

    /// A token without `sid`: its session is keyed by a hash of its `uti`, else of the whole
    /// token (`raw`).
    pub fn token_without_sid(&self, user: &str, uti: Option<&str>, raw: &str) -> Identity {
        self.identity(&self.tenant, user, SessionKey::derive(None, uti, raw))
    }

    fn identity(&self, tenant: &str, user: &str, session: SessionKey) -> Identity {
        let now = self.now_secs();
        Identity {
            tenant: tenant.into(),
            user: user.into(),
            display_name: Some(format!("{user}@contoso.example")),
            session,
            auth_time: None,
            issued_at: Some(now),
            not_before: None,
            expires_at: now + 3600,
            roles: Vec::new(),
        }
    }

    // -- the store ----------------------------------------------------------------------------

    pub async fn check(&self, identity: &Identity) -> Verdict {
        check_on(self.store(), identity).await
    }

    pub async fn revoke(&self, revocation: Revocation) -> RevocationOutcome {
        self.store
            .revoke(&revocation)
            .await
            .expect("the store revokes")
    }

    pub async fn try_revoke(
        &self,
        revocation: &Revocation,
    ) -> Result<RevocationOutcome, StoreError> {
        self.store.revoke(revocation).await
    }

    pub async fn sessions(&self, tenant: &str) -> Vec<SessionRecord> {
        self.store.sessions(tenant).await.expect("sessions")
    }

    pub async fn session_ids(&self, tenant: &str) -> Vec<String> {
        let sessions = self.sessions(tenant).await;
        sessions.into_iter().map(|s| s.id).collect()
    }

    pub async fn audit(
        &self,
        tenant: &str,
        limit: usize,
    ) -> Vec<grantflow_core::audit::AuditRecord> {
        self.store.audit(tenant, limit).await.expect("audit")
    }

    /// The users of `tenant` that a watermark or lock keeps out.
    pub async fn blocked(&self, tenant: &str) -> Vec<BlockedUser> {
        self.store
            .blocked_users(tenant)
            .await
            .expect("blocked users")
    }

    pub async fn policy(&self, tenant: &str) -> Policy {
        self.store.policy(tenant).await.expect("policy")
    }

    pub async fn set_policy(&self, tenant: &str, max_age: Duration) {
        self.store
            .set_policy(tenant, policy(max_age), None)
            .await
            .expect("policy set");
    }

    /// Housekeeping. On a shared Redis server only for `exclusive` cases: it sweeps every
    /// tenant on the server with this case's clock.
    pub async fn maintain(&self) {
        if let Backing::Redis {
            _server: Server::Shared(_),
            ..
        } = &self.backing
        {
            panic!(
                "maintain() on a shared Redis sweeps every case's tenants with this case's \
                 clock: declare the case `[; exclusive]`"
            );
        }
        self.store.maintain().await.expect("housekeeping");
    }

    pub fn resets(&self) -> Vec<StoreReset> {
        self.store.resets()
    }

    // -- store lifecycle ----------------------------------------------------------------------

    /// Embedded: drops the store and opens its data folder again, as a restarted process
    /// would.
    pub async fn restart(&mut self) {
        let Backing::Folder(_) = &self.backing else {
            panic!("restart is for the embedded store");
        };
        let placeholder: Arc<dyn SessionStore> = Arc::new(grantflow_core::store::MemoryStore::new(
            self.limits,
            Arc::new(self.clock.clone()),
        ));
        let old = std::mem::replace(&mut self.store, placeholder);
        assert_eq!(Arc::strong_count(&old), 1, "nothing else holds the store");
        drop(old);
        // The journal's writer thread closes the database once it has written what was
        // queued; until then the folder is still in use.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match try_open(&self.backing, self.limits, &self.clock) {
                Ok(store) => {
                    self.store = store;
                    return;
                }
                Err(StoreError::Unavailable(why))
                    if why.contains("in use") && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(other) => panic!("the data folder opens again: {other}"),
            }
        }
    }

    /// Embedded and memory: a new store that begins now (a new data folder; a memory store
    /// started now), in place of the case's.
    pub fn begin_new_store(&mut self) {
        match &self.backing {
            Backing::Folder(_) => self.backing = Backing::Folder(new_folder()),
            Backing::Memory => {}
            Backing::Redis { .. } => panic!("a new store is for the embedded and memory stores"),
        }
        self.store = open_store(&self.backing, self.limits, &self.clock);
    }

    /// Redis: another process's store on the same server (it knows nothing this one learnt).
    pub fn second_process(&self) -> Arc<dyn SessionStore> {
        let Backing::Redis { settings, .. } = &self.backing else {
            panic!("a second process is for Redis");
        };
        Arc::new(RedisStore::new(
            settings.clone(),
            self.limits,
            Arc::new(self.clock.clone()),
        ))
    }

    /// Redis of the case's own: `FLUSHALL` on every node (as a restart without persistence
    /// or a failover to an empty replica would leave it).
    pub fn wipe(&self) {
        let nodes: Vec<u16> = match &self.backing {
            Backing::Redis {
                _server: Server::OwnStandalone(server),
                ..
            } => vec![server.port],
            Backing::Redis {
                _server: Server::OwnCluster(cluster),
                ..
            } => cluster.nodes.iter().map(|n| n.port).collect(),
            _ => panic!("only a Redis of the case's own (`own`) is wiped"),
        };
        for port in nodes {
            let reply = redis_cli(port, &["FLUSHALL"]);
            assert_eq!(reply.as_deref().map(str::trim), Some("OK"), "FLUSHALL");
        }
    }
}

async fn take_lock(lock: &'static RwLock<()>, sharing: Sharing) -> Server {
    match sharing {
        Sharing::Shared => Server::Shared(lock.read().await),
        Sharing::Exclusive => Server::Exclusive(lock.write().await),
        Sharing::Own => unreachable!("a server of its own needs no lock"),
    }
}

fn new_folder() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("grantflow-conformance-")
        .tempdir()
        .expect("a temporary data folder")
}

fn open_store(backing: &Backing, limits: Limits, clock: &ManualClock) -> Arc<dyn SessionStore> {
    try_open(backing, limits, clock).expect("the store opens")
}

fn try_open(
    backing: &Backing,
    limits: Limits,
    clock: &ManualClock,
) -> Result<Arc<dyn SessionStore>, StoreError> {
    let config = match backing {
        Backing::Folder(dir) => StoreConfig::Embedded {
            data_dir: dir.path().to_owned(),
        },
        Backing::Memory => StoreConfig::Memory,
        Backing::Redis { settings, .. } => StoreConfig::Redis(settings.clone()),
    };
    config.open(limits, Arc::new(clock.clone()))
}
