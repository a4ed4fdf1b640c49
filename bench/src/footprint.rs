//! Redis memory per live session: sessions created through `SessionStore::check` of a
//! `RedisStore` in this process (bounded concurrency), `used_memory` before and after, and what
//! one more round trip on the store's connection costs.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use grantflow_core::clock::{Clock, SystemClock};
use grantflow_core::decision::Limits;
use grantflow_core::identity::{Identity, SessionAnchor, SessionKey};
use grantflow_core::session::{AccessRequest, Verdict};
use grantflow_core::store::{RedisSettings, RedisStore, SessionStore};
use grantflow_e2e::redis::{RedisServer, redis_cli};
use hdrhistogram::Histogram;

use crate::cpu::{process_cpu, redis_cpu};
use crate::redis_info::{command_delta, command_stats, dbsize};
use crate::settings::Plan;
use crate::{BoxError, TENANT, USER_AGENT};

/// What one run of [`session_footprint`] measured.
pub struct Footprint {
    pub sessions: usize,
    pub created: usize,
    pub failed: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub keys_before: u64,
    pub keys_after: u64,
    pub elapsed: Duration,
    /// CPU seconds of this process (the in-process RedisStore) and of Redis.
    pub client_cpu: f64,
    pub redis_cpu: Option<f64>,
    pub commands: Vec<(String, u64, f64)>,
    pub round_trip: RoundTrip,
    /// `OBJECT ENCODING` of one session hash.
    pub encoding: String,
}

/// One more command on the store's connection: what the `SADD gf:tenants` after each new
/// session costs, measured with `PING` (the same path through the client, a trivial command).
#[derive(Default)]
pub struct RoundTrip {
    pub calls: u64,
    pub client_cpu: f64,
    pub redis_cpu: Option<f64>,
    /// One at a time, microseconds.
    pub latency: Option<Histogram<u64>>,
}

async fn round_trip(store: &RedisStore, port: u16, calls: u64) -> RoundTrip {
    let client_before = process_cpu("/proc/self/stat");
    let redis_before = redis_cpu(port);
    let ok = futures::stream::iter(0..calls)
        .map(|_| store.ping())
        .buffer_unordered(64)
        .filter(|r| std::future::ready(r.is_ok()))
        .count()
        .await as u64;
    let client_cpu = process_cpu("/proc/self/stat") - client_before;
    let redis_cpu = redis_cpu(port).zip(redis_before).map(|(a, b)| a - b);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).ok();
    for _ in 0..2_000 {
        let sent = Instant::now();
        if store.ping().await.is_ok()
            && let Some(h) = latency.as_mut()
        {
            h.saturating_record(sent.elapsed().as_micros() as u64);
        }
    }
    RoundTrip {
        calls: ok,
        client_cpu,
        redis_cpu,
        latency,
    }
}

impl Footprint {
    pub fn bytes_per_session(&self) -> f64 {
        self.bytes_after.saturating_sub(self.bytes_before) as f64 / self.created.max(1) as f64
    }
}

/// What a real Entra session brings: GUID user and sid, an e-mail-like name, an IPv4
/// client and a browser's user agent.
pub fn access_request(i: usize, now_secs: i64) -> AccessRequest {
    let guid = |kind: u32| format!("{kind:08x}-0000-4000-8000-{i:012x}");
    AccessRequest {
        identity: Arc::new(Identity {
            tenant: TENANT.into(),
            user: guid(0xb0b),
            display_name: Some(format!("user.{i}@contoso.example")),
            session: SessionKey {
                id: guid(0x5e5),
                anchor: SessionAnchor::Sid,
            },
            auth_time: None,
            issued_at: Some(now_secs),
            not_before: Some(now_secs),
            expires_at: now_secs + 3600,
            roles: Vec::new(),
        }),
        client_ip: Some(IpAddr::V4(Ipv4Addr::new(
            203,
            0,
            (i / 250 % 250) as u8,
            (i % 250 + 1) as u8,
        ))),
        user_agent: Some(USER_AGENT.into()),
    }
}

pub async fn session_footprint(
    plan: &Plan,
    redis: &RedisServer,
    first: usize,
    round_trips: u64,
) -> Result<Footprint, BoxError> {
    let clock = Arc::new(SystemClock);
    let store = RedisStore::new(
        RedisSettings {
            urls: vec![redis.url()],
            cluster: false,
            timeout: Duration::from_secs(2),
            write_timeout: Duration::from_secs(5),
            ca_pem: None,
            wait_replicas: 0,
        },
        Limits::default(),
        clock.clone(),
    );
    let now = clock.now_secs();
    // One session first: the script is loaded, the tenant's shared keys exist.
    let warm = store
        .check(&access_request(first + plan.sessions, now))
        .await?;
    if !matches!(warm, Verdict::Allow { created: true, .. }) {
        return Err(format!("the first session was not created: {warm:?}").into());
    }
    let bytes_before = redis.used_memory();
    let keys_before = dbsize(redis.port);
    let commands_before = command_stats(redis.port);
    let redis_cpu_before = redis_cpu(redis.port);
    let client_cpu_before = process_cpu("/proc/self/stat");
    let started = Instant::now();
    let store = &store;
    let results: Vec<bool> = futures::stream::iter(first..first + plan.sessions)
        .map(|i| async move {
            matches!(
                store.check(&access_request(i, now)).await,
                Ok(Verdict::Allow { created: true, .. })
            )
        })
        .buffer_unordered(plan.session_concurrency)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let client_cpu = process_cpu("/proc/self/stat") - client_cpu_before;
    let redis_cpu = redis_cpu(redis.port)
        .zip(redis_cpu_before)
        .map(|(a, b)| a - b);
    let commands = command_delta(&commands_before, &command_stats(redis.port));
    let bytes_after = redis.used_memory();
    let keys_after = dbsize(redis.port);
    let session_key = format!(
        "gf:{{{TENANT}}}:s:{}",
        access_request(first, now).identity.session.id
    );
    let encoding = redis_cli(redis.port, &["OBJECT", "ENCODING", &session_key])
        .map(|e| e.trim().to_owned())
        .unwrap_or_else(|| "?".into());
    let created = results.iter().filter(|ok| **ok).count();
    let round_trip = if round_trips > 0 {
        round_trip(store, redis.port, round_trips).await
    } else {
        RoundTrip::default()
    };
    let footprint = Footprint {
        sessions: plan.sessions,
        created,
        failed: plan.sessions - created,
        bytes_before,
        bytes_after,
        keys_before,
        keys_after,
        elapsed,
        client_cpu,
        redis_cpu,
        commands,
        round_trip,
        encoding,
    };
    eprintln!(
        "  {} sessions in {:.1} s ({:.0}/s), {:.0} bytes each (session hash: {})",
        footprint.created,
        elapsed.as_secs_f64(),
        footprint.created as f64 / elapsed.as_secs_f64(),
        footprint.bytes_per_session(),
        footprint.encoding
    );
    Ok(footprint)
}

/// What [`seed`] made.
#[derive(Debug, Clone, Copy)]
pub struct Seeded {
    /// Sessions asked for.
    pub asked: usize,
    /// Sessions the store created (allowed, `created: true`).
    pub created: usize,
    /// Sessions started before the time budget ran out (the rest were not tried).
    pub tried: usize,
    pub elapsed: Duration,
}

impl Seeded {
    /// Sessions created per second.
    pub fn per_s(&self) -> f64 {
        self.created as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The time budget ended the seeding before every session was tried.
    pub fn cut_short(&self) -> bool {
        self.tried < self.asked
    }
}

/// Creates the sessions `first..first + count` ([`access_request`], the dev tenant, every one
/// a user of its own, issued now) through `store.check`, `concurrency` at once; no new one is
/// started once `budget` has passed.
pub async fn seed(
    store: &dyn SessionStore,
    first: usize,
    count: usize,
    concurrency: usize,
    budget: Duration,
) -> Seeded {
    let now = SystemClock.now_secs();
    let started = Instant::now();
    let deadline = started + budget;
    let results: Vec<bool> = futures::stream::iter(first..first + count)
        .take_while(|_| std::future::ready(Instant::now() < deadline))
        .map(|i| async move {
            matches!(
                store.check(&access_request(i, now)).await,
                Ok(Verdict::Allow { created: true, .. })
            )
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    Seeded {
        asked: count,
        created: results.iter().filter(|ok| **ok).count(),
        tried: results.len(),
        elapsed: started.elapsed(),
    }
}
