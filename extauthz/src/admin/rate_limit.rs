//! The per-administrator rate limit of the API's writes: ending a session, ending every
//! session of a user, lifting a block and changing the policy share one budget per
//! (tenant, administrator). Over it, a write is answered 429 `rate-limited` with
//! `Retry-After` before the session store is asked anything — not even about the caller's own
//! session — so a refused write changes nothing and writes no audit record. Reads are not
//! limited.
//!
//! The numbers: a burst of [`WRITE_BURST`] (60) writes, refilled at one per
//! [`WRITE_REFILL`] (a second), i.e. 60 a minute sustained.
//!
//! - Incident response stays unhindered: ending the sessions of a whole page of users (or the
//!   40 victims of a phishing wave) with a script is 60 writes at once and the rest at one a
//!   second — 100 revoke-alls take 40 s. One revoke-all ends every session of a user, so
//!   "dozens of sessions in a minute" is far inside it; a person clicking through the
//!   dashboard (each write asks for a reason) never reaches one a second.
//! - The flood that prompted it (10 000 revocations in 5 s) now takes 2 h 45 min per
//!   administrator, so the in-store audit trail can no longer be flushed in seconds, and the
//!   counter `grantflow_admin_writes_rate_limited_total` shows it happening.
//!
//! The limiter is in memory, per process (the admin API of each replica counts on its own),
//! and counts on the admin side's injected clock. A replay of an idempotent revocation (same
//! administrator, same `Idempotency-Key`, same method and path within [`REPLAY_MEMORY`] of
//! the write it repeats) is let through without spending from the budget: the store answers
//! it with the first call's outcome (or 422 for a different body) and writes nothing, so a
//! client that retries after a 503 is never locked out by its own retries. Each remembered
//! key was paid for once, so this admits no extra change.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use governor::clock::Reference;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use grantflow_core::clock::Clock;
use grantflow_core::identity::is_safe_id;
use parking_lot::Mutex;

use super::AdminState;
use super::caller::{self, Caller};
use super::problem::Problem;

/// Writes one administrator may make at once, with a full budget.
pub const WRITE_BURST: NonZeroU32 = NonZeroU32::new(60).unwrap();
/// One more write is allowed per this much time, up to [`WRITE_BURST`].
pub const WRITE_REFILL: Duration = Duration::from_secs(1);
/// How often the limiter forgets administrators whose budget is full again, and replays past
/// [`REPLAY_MEMORY`] (checked on each write; nothing grows while no write comes).
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(30);
/// How long an admitted idempotent write is remembered, so that its replays pass. Well under
/// the store's 24 h of idempotency keys: a replay let through is always one the store still
/// recognises.
pub const REPLAY_MEMORY: Duration = Duration::from_secs(60 * 60);
/// Idempotent writes remembered per administrator (the oldest are forgotten first).
pub const REPLAYS_PER_ADMIN: usize = 2 * WRITE_BURST.get() as usize;

/// One write operation of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOperation {
    /// Lower-case method, as in [`super::API_ROUTES`].
    pub method: &'static str,
    /// The route, as in [`super::API_ROUTES`].
    pub path: &'static str,
    /// The `operation` label of `grantflow_admin_writes_rate_limited_total`.
    pub label: &'static str,
    /// Whether the handler honours `Idempotency-Key` (then a replay is not counted).
    pub idempotent: bool,
}

/// Every write of the API; a test holds it to the non-GET operations of `API_ROUTES`.
pub const WRITE_OPERATIONS: &[WriteOperation] = &[
    WriteOperation {
        method: "post",
        path: "/api/v1/sessions/{id}/revoke",
        label: "session_revoke",
        idempotent: true,
    },
    WriteOperation {
        method: "post",
        path: "/api/v1/users/{user}/revoke",
        label: "user_revoke",
        idempotent: true,
    },
    WriteOperation {
        method: "delete",
        path: "/api/v1/users/{user}/revocation",
        label: "user_unblock",
        idempotent: false,
    },
    WriteOperation {
        method: "put",
        path: "/api/v1/policy",
        label: "policy_update",
        idempotent: false,
    },
];

/// A write not in [`WRITE_OPERATIONS`]: limited like the others, never exempt as a replay.
const OTHER_WRITE: WriteOperation = WriteOperation {
    method: "",
    path: "",
    label: "other",
    idempotent: false,
};

fn operation_of(method: &Method, path: Option<&str>) -> WriteOperation {
    WRITE_OPERATIONS
        .iter()
        .find(|op| method.as_str().eq_ignore_ascii_case(op.method) && path == Some(op.path))
        .copied()
        .unwrap_or(OTHER_WRITE)
}

/// (tenant, administrator's user id).
type AdminKey = (String, String);

/// The admin side's clock as governor reads it: nanoseconds since the epoch, never going
/// back (a wall clock stepped back holds the budget still instead of confusing it).
#[derive(Clone)]
struct LimiterClock {
    clock: Arc<dyn Clock>,
    latest: Arc<AtomicU64>,
}

impl governor::clock::Clock for LimiterClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        let millis = u64::try_from(self.clock.now_ms()).unwrap_or(0);
        let nanos = millis.saturating_mul(1_000_000);
        let before = self.latest.fetch_max(nanos, Ordering::Relaxed);
        Nanos::from(before.max(nanos))
    }
}

/// An idempotent write that was admitted (and paid for).
struct Admitted {
    key: String,
    /// Method and path of the request.
    request: String,
    at: Nanos,
}

struct Replays {
    by_admin: HashMap<AdminKey, VecDeque<Admitted>>,
    swept_at: Nanos,
}

/// The keyed limiter of the API's writes; one per admin router.
pub struct WriteLimiter {
    limiter:
        RateLimiter<AdminKey, HashMapStateStore<AdminKey>, LimiterClock, NoOpMiddleware<Nanos>>,
    clock: LimiterClock,
    replays: Mutex<Replays>,
}

impl std::fmt::Debug for WriteLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteLimiter")
            .field("admins", &self.limiter.len())
            .finish_non_exhaustive()
    }
}

/// One write as the limiter sees it.
#[derive(Debug, Clone, Copy)]
pub struct WriteRequest<'a> {
    pub tenant: &'a str,
    pub user: &'a str,
    pub operation: WriteOperation,
    /// Method and path, e.g. `POST /api/v1/users/u1/revoke`.
    pub request: &'a str,
    /// The `Idempotency-Key` header, when it is a valid one.
    pub idempotency_key: Option<&'a str>,
}

impl WriteLimiter {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        let clock = LimiterClock {
            clock,
            latest: Arc::new(AtomicU64::new(0)),
        };
        let quota = Quota::with_period(WRITE_REFILL)
            .expect("the refill period is not zero")
            .allow_burst(WRITE_BURST);
        let swept_at = governor::clock::Clock::now(&clock);
        Self {
            limiter: RateLimiter::hashmap_with_clock(quota, clock.clone()),
            clock,
            replays: Mutex::new(Replays {
                by_admin: HashMap::new(),
                swept_at,
            }),
        }
    }

    /// Admits the write, or answers after how many whole seconds (at least 1) it would be.
    pub fn admit(&self, write: &WriteRequest<'_>) -> Result<(), u64> {
        let now = governor::clock::Clock::now(&self.clock);
        let mut replays = self.replays.lock();
        if now.duration_since(replays.swept_at) >= Nanos::from(HOUSEKEEPING_INTERVAL) {
            self.sweep(&mut replays, now);
        }
        let admin = (write.tenant.to_owned(), write.user.to_owned());
        let key = write.idempotency_key.filter(|_| write.operation.idempotent);
        if let Some(key) = key {
            let remembered = replays
                .by_admin
                .get(&admin)
                .and_then(|admitted| admitted.iter().find(|a| a.key == key));
            match remembered {
                // A replay of a write already paid for: the store answers it, changing nothing.
                Some(first) if first.request == write.request => return Ok(()),
                // The same key for another request: counted (the store will refuse it, 422).
                Some(_) => return self.check(&admin, now),
                None => {}
            }
        }
        self.check(&admin, now)?;
        if let Some(key) = key {
            let admitted = replays.by_admin.entry(admin).or_default();
            if admitted.len() >= REPLAYS_PER_ADMIN {
                admitted.pop_front();
            }
            admitted.push_back(Admitted {
                key: key.to_owned(),
                request: write.request.to_owned(),
                at: now,
            });
        }
        Ok(())
    }

    fn check(&self, admin: &AdminKey, now: Nanos) -> Result<(), u64> {
        self.limiter.check_key(admin).map_err(|not_until| {
            let wait = not_until.wait_time_from(now);
            let whole = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            whole.max(1)
        })
    }

    /// Forgets administrators whose budget is full again and replays older than
    /// [`REPLAY_MEMORY`].
    fn sweep(&self, replays: &mut Replays, now: Nanos) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        let oldest = Reference::saturating_sub(&now, Nanos::from(REPLAY_MEMORY));
        replays.by_admin.retain(|_, admitted| {
            admitted.retain(|a| a.at > oldest);
            !admitted.is_empty()
        });
        replays.by_admin.shrink_to_fit();
        replays.swept_at = now;
    }

    /// Runs the housekeeping now (tests).
    pub fn housekeeping(&self) {
        let now = governor::clock::Clock::now(&self.clock);
        let mut replays = self.replays.lock();
        self.sweep(&mut replays, now);
    }

    /// Administrators the limiter holds state for: (budget not full, remembered replays).
    pub fn tracked(&self) -> (usize, usize) {
        (self.limiter.len(), self.replays.lock().by_admin.len())
    }
}

/// An administrator making a write: authenticated (token and role), then held to the write
/// limit, and only then is the store asked whether the caller's own session is live.
#[derive(Debug, Clone)]
pub struct Writer(pub Caller);

impl FromRequestParts<AdminState> for Writer {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AdminState,
    ) -> Result<Self, Self::Rejection> {
        let identity = caller::authenticate(parts, state).await?;
        let Some(limiter) = parts.extensions.get::<Arc<WriteLimiter>>().cloned() else {
            // Only `admin::router` builds the API, and it always adds the limiter.
            tracing::error!("admin write without its rate limiter: refused");
            return Err(Problem::of_status(StatusCode::INTERNAL_SERVER_ERROR));
        };
        let operation = operation_of(
            &parts.method,
            parts
                .extensions
                .get::<MatchedPath>()
                .map(MatchedPath::as_str),
        );
        let request = format!("{} {}", parts.method, parts.uri.path());
        let idempotency_key = parts
            .headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .filter(|key| is_safe_id(key));
        let write = WriteRequest {
            tenant: &identity.tenant,
            user: &identity.user,
            operation,
            request: &request,
            idempotency_key,
        };
        if let Err(retry_after) = limiter.admit(&write) {
            state.metrics.admin_write_rate_limited(operation.label);
            tracing::debug!(
                tenant = %identity.tenant,
                user = %identity.user,
                operation = operation.label,
                retry_after,
                "admin write refused: rate limit"
            );
            return Err(Problem::rate_limited(retry_after));
        }
        caller::confirm(parts, state, identity).await.map(Writer)
    }
}

#[cfg(test)]
mod tests {
    use grantflow_core::clock::ManualClock;

    use super::*;

    const START: i64 = 1_790_000_000_000;

    fn write<'a>(user: &'a str, request: &'a str, key: Option<&'a str>) -> WriteRequest<'a> {
        WriteRequest {
            tenant: "t1",
            user,
            operation: WRITE_OPERATIONS[1],
            request,
            idempotency_key: key,
        }
    }

    #[test]
    fn a_burst_then_one_a_second_with_whole_second_waits() {
        let clock = ManualClock::new(START);
        let limiter = WriteLimiter::new(Arc::new(clock.clone()));
        for _ in 0..WRITE_BURST.get() {
            limiter.admit(&write("ann", "POST /x", None)).unwrap();
        }
        assert_eq!(limiter.admit(&write("ann", "POST /x", None)), Err(1));
        clock.advance(Duration::from_millis(400));
        assert_eq!(limiter.admit(&write("ann", "POST /x", None)), Err(1));
        clock.advance(Duration::from_millis(600));
        limiter.admit(&write("ann", "POST /x", None)).unwrap();
        assert_eq!(limiter.admit(&write("ann", "POST /x", None)), Err(1));
        // Another administrator has a budget of their own.
        limiter.admit(&write("bob", "POST /x", None)).unwrap();
    }

    #[test]
    fn replays_of_a_paid_idempotent_write_pass_and_nothing_else_does() {
        let clock = ManualClock::new(START);
        let limiter = WriteLimiter::new(Arc::new(clock.clone()));
        limiter
            .admit(&write("ann", "POST /u/1/revoke", Some("k1")))
            .unwrap();
        for _ in 1..WRITE_BURST.get() {
            limiter.admit(&write("ann", "POST /other", None)).unwrap();
        }
        assert!(limiter.admit(&write("ann", "POST /other", None)).is_err());
        // The replay passes, again and again.
        for _ in 0..5 {
            limiter
                .admit(&write("ann", "POST /u/1/revoke", Some("k1")))
                .unwrap();
        }
        // The same key for another request, a new key, and the key of someone else: counted.
        assert!(
            limiter
                .admit(&write("ann", "POST /u/2/revoke", Some("k1")))
                .is_err()
        );
        assert!(
            limiter
                .admit(&write("ann", "POST /u/1/revoke", Some("k2")))
                .is_err()
        );
        // A non-idempotent operation never passes as a replay.
        let lift = WriteRequest {
            operation: WRITE_OPERATIONS[2],
            ..write("ann", "POST /u/1/revoke", Some("k1"))
        };
        assert!(limiter.admit(&lift).is_err());
        // Past the replay memory, a replay is counted like any write.
        clock.advance(REPLAY_MEMORY + Duration::from_secs(1));
        limiter.housekeeping();
        for _ in 0..WRITE_BURST.get() {
            limiter.admit(&write("ann", "POST /other", None)).unwrap();
        }
        assert!(
            limiter
                .admit(&write("ann", "POST /u/1/revoke", Some("k1")))
                .is_err()
        );
    }

    #[test]
    fn housekeeping_forgets_administrators_whose_budget_is_full_again() {
        let clock = ManualClock::new(START);
        let limiter = WriteLimiter::new(Arc::new(clock.clone()));
        for n in 0..50 {
            let user = format!("admin-{n}");
            limiter
                .admit(&write(&user, "POST /x", Some("key")))
                .unwrap();
        }
        assert_eq!(limiter.tracked(), (50, 50));
        // A minute later every budget is full: the next write's housekeeping drops them all
        // but the writer; the replays are kept for their hour.
        clock.advance(Duration::from_secs(61));
        limiter.admit(&write("admin-0", "POST /y", None)).unwrap();
        assert_eq!(limiter.tracked(), (1, 50));
        clock.advance(REPLAY_MEMORY);
        limiter.housekeeping();
        assert_eq!(limiter.tracked(), (0, 0));
    }

    #[test]
    fn a_clock_stepped_back_does_not_refill_or_break_the_budget() {
        let clock = ManualClock::new(START);
        let limiter = WriteLimiter::new(Arc::new(clock.clone()));
        for _ in 0..WRITE_BURST.get() {
            limiter.admit(&write("ann", "POST /x", None)).unwrap();
        }
        clock.set(START - 3_600_000);
        assert_eq!(limiter.admit(&write("ann", "POST /x", None)), Err(1));
        clock.set(START + 1_000);
        limiter.admit(&write("ann", "POST /x", None)).unwrap();
    }

    #[test]
    fn writes_are_known_by_method_and_route() {
        let op = operation_of(&Method::PUT, Some("/api/v1/policy"));
        assert_eq!(op.label, "policy_update");
        assert_eq!(
            operation_of(&Method::GET, Some("/api/v1/policy")).label,
            "other"
        );
        assert_eq!(operation_of(&Method::POST, None), OTHER_WRITE);
        for (method, path) in super::super::API_ROUTES {
            let known = WRITE_OPERATIONS
                .iter()
                .any(|op| op.method == *method && op.path == *path);
            assert_eq!(known, *method != "get", "{method} {path}");
        }
    }
}
