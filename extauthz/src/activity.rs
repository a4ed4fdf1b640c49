//! What the session layer did in the last hour, per minute, for the dashboard's overview
//! (`GET /api/v1/overview`): sessions started and requests refused by reason, per tenant.
//!
//! An in-process ring of 60 one-minute buckets per tenant, fed by the request path
//! (`Authorizer::authorize`, one call per check: a short lock and two array writes). The
//! counts are this replica's: with several replicas each shows what it decided itself.
//! Refusals of tokens that could not be verified (or no token) have no trustworthy tenant:
//! they are counted apart, for the whole replica, and shown as such.
//!
//! Bounded: at most [`MAX_TENANTS`] tenants are tracked; a tenant idle for an hour makes room,
//! and past the bound a new tenant's activity is not counted (the metrics still are).

use std::collections::HashMap;
use std::sync::Arc;

use grantflow_core::clock::{Clock, UnixMillis};
use parking_lot::Mutex;

use crate::outcome::{Denial, Outcome};

/// Minutes kept.
pub const MINUTES: usize = 60;
/// Tenants tracked at most.
pub const MAX_TENANTS: usize = 10_000;
const MINUTE_MS: i64 = 60_000;

/// What is counted each minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Started,
    Expired,
    /// Revoked by an administrator, a Kubernetes Revocation, a revoke-all, the identity
    /// provider (back-channel logout, a Shared Signals event).
    Revoked,
    /// The user is locked out until a time.
    Locked,
    SignInAgain,
    TooManySessions,
    /// No token, or one that could not be verified (counted for the replica, not a tenant).
    InvalidToken,
    /// The store (or the issuer's keys) could not answer: refused, fail closed.
    Unavailable,
}

impl Event {
    pub const ALL: [Event; 8] = [
        Event::Started,
        Event::Expired,
        Event::Revoked,
        Event::Locked,
        Event::SignInAgain,
        Event::TooManySessions,
        Event::InvalidToken,
        Event::Unavailable,
    ];

    /// The name the API shows.
    pub fn name(self) -> &'static str {
        match self {
            Event::Started => "started",
            Event::Expired => "expired",
            Event::Revoked => "revoked",
            Event::Locked => "locked",
            Event::SignInAgain => "signInAgain",
            Event::TooManySessions => "tooManySessions",
            Event::InvalidToken => "invalidToken",
            Event::Unavailable => "unavailable",
        }
    }

    /// The event a check's outcome counts as, if any (a request of a live session is none).
    pub fn of(outcome: &Outcome) -> Option<Event> {
        Some(match outcome {
            Outcome::Allow { created: true, .. } => Event::Started,
            Outcome::Allow { created: false, .. } => return None,
            Outcome::Deny { denial, .. } => match denial {
                Denial::MissingToken | Denial::InvalidToken => Event::InvalidToken,
                // Idle is an expiry too (the same "Session expired" page).
                Denial::SessionExpired | Denial::SessionIdle { .. } => Event::Expired,
                Denial::SessionRevoked => Event::Revoked,
                Denial::Locked => Event::Locked,
                Denial::SignInAgain => Event::SignInAgain,
                // The store's bound or the tenant's own limit: a new session refused.
                Denial::TooManySessions | Denial::SessionLimit { .. } => Event::TooManySessions,
                Denial::Unavailable => Event::Unavailable,
            },
        })
    }
}

/// One minute's counts, by [`Event::ALL`] order.
pub type Counts = [u64; Event::ALL.len()];

/// One tenant's last hour.
#[derive(Debug, Clone)]
struct Ring {
    /// The minute (Unix ms / 60 000) each bucket holds.
    minute: [i64; MINUTES],
    counts: [Counts; MINUTES],
}

impl Ring {
    fn new() -> Self {
        Self {
            minute: [i64::MIN; MINUTES],
            counts: [[0; Event::ALL.len()]; MINUTES],
        }
    }

    fn add(&mut self, minute: i64, event: Event) {
        let slot = minute.rem_euclid(MINUTES as i64) as usize;
        if self.minute[slot] != minute {
            self.minute[slot] = minute;
            self.counts[slot] = [0; Event::ALL.len()];
        }
        self.counts[slot][event as usize] += 1;
    }

    fn count(&self, minute: i64) -> Counts {
        let slot = minute.rem_euclid(MINUTES as i64) as usize;
        if self.minute[slot] == minute {
            self.counts[slot]
        } else {
            [0; Event::ALL.len()]
        }
    }

    fn idle_since(&self, minute: i64) -> bool {
        self.minute.iter().all(|m| *m <= minute - MINUTES as i64)
    }
}

/// One minute of the overview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minute {
    /// When the minute began.
    pub start: UnixMillis,
    /// The tenant's counts.
    pub counts: Counts,
    /// Refusals of tokens that could not be verified, on this replica (every tenant).
    pub invalid_tokens: u64,
}

/// The per-minute counts of this process.
pub struct Activity {
    clock: Arc<dyn Clock>,
    tenants: Mutex<HashMap<String, Ring>>,
    /// Unverified tokens: no tenant can be trusted.
    unattributed: Mutex<Ring>,
}

impl Activity {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            tenants: Mutex::new(HashMap::new()),
            unattributed: Mutex::new(Ring::new()),
        }
    }

    /// Counts a check's outcome (called once per check by the request path).
    pub fn record(&self, outcome: &Outcome) {
        let Some(event) = Event::of(outcome) else {
            return;
        };
        let tenant = match outcome {
            Outcome::Allow { identity, .. }
            | Outcome::Deny {
                identity: Some(identity),
                ..
            } => Some(identity.tenant.as_str()),
            Outcome::Deny { identity: None, .. } => None,
        };
        self.add(tenant, event);
    }

    /// Counts `event` for `tenant` (`None`: the replica's unattributed refusals) now.
    pub fn add(&self, tenant: Option<&str>, event: Event) {
        let minute = self.clock.now_ms().div_euclid(MINUTE_MS);
        let Some(tenant) = tenant else {
            self.unattributed.lock().add(minute, event);
            return;
        };
        let mut tenants = self.tenants.lock();
        if let Some(ring) = tenants.get_mut(tenant) {
            ring.add(minute, event);
            return;
        }
        if tenants.len() >= MAX_TENANTS {
            tenants.retain(|_, ring| !ring.idle_since(minute));
            if tenants.len() >= MAX_TENANTS {
                return;
            }
        }
        let mut ring = Ring::new();
        ring.add(minute, event);
        tenants.insert(tenant.to_owned(), ring);
    }

    /// The last [`MINUTES`] minutes of `tenant`, oldest first (the current minute last).
    pub fn last_hour(&self, tenant: &str) -> Vec<Minute> {
        let now = self.clock.now_ms().div_euclid(MINUTE_MS);
        let tenants = self.tenants.lock();
        let ring = tenants.get(tenant);
        let unattributed = self.unattributed.lock();
        (now - MINUTES as i64 + 1..=now)
            .map(|minute| Minute {
                start: minute * MINUTE_MS,
                counts: ring.map_or([0; Event::ALL.len()], |r| r.count(minute)),
                invalid_tokens: unattributed.count(minute)[Event::InvalidToken as usize],
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use grantflow_core::clock::ManualClock;

    use super::*;

    #[test]
    fn counts_per_minute_and_forgets_after_an_hour() {
        let clock = ManualClock::new(1_750_000_000_000);
        let activity = Activity::new(Arc::new(clock.clone()));
        activity.add(Some("t"), Event::Started);
        activity.add(Some("t"), Event::Started);
        activity.add(Some("u"), Event::Revoked);
        activity.add(None, Event::InvalidToken);
        clock.advance(Duration::from_secs(60));
        activity.add(Some("t"), Event::Expired);
        let hour = activity.last_hour("t");
        assert_eq!(hour.len(), MINUTES);
        let [.., before, now] = hour.as_slice() else {
            unreachable!()
        };
        assert_eq!(before.counts[Event::Started as usize], 2);
        assert_eq!(before.counts[Event::Revoked as usize], 0);
        assert_eq!(before.invalid_tokens, 1);
        assert_eq!(now.counts[Event::Expired as usize], 1);
        clock.advance(Duration::from_secs(60 * 60));
        assert!(
            activity
                .last_hour("t")
                .iter()
                .all(|m| m.counts == [0; Event::ALL.len()])
        );
    }

    #[test]
    fn every_event_has_its_place_and_a_lock_is_counted_as_locked() {
        for (index, event) in Event::ALL.into_iter().enumerate() {
            assert_eq!(event as usize, index, "{event:?}");
        }
        let locked = Outcome::Deny {
            denial: Denial::Locked,
            identity: None,
            lock: None,
        };
        assert_eq!(Event::of(&locked), Some(Event::Locked));
        let revoked = Outcome::Deny {
            denial: Denial::SessionRevoked,
            identity: None,
            lock: None,
        };
        assert_eq!(Event::of(&revoked), Some(Event::Revoked));
    }
}
