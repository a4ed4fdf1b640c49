//! What the reconcilers share, and their error type.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use grantflow_core::clock::Clock;
use grantflow_core::store::{SessionStore, StoreError};
use grantflow_crds::SessionPolicy;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};
use parking_lot::Mutex;

use crate::metrics::Metrics;

/// `namespace/name`: how logs, the backoff and the store (policy source) name an object.
pub fn object_key<K: ResourceExt>(object: &K) -> String {
    format!(
        "{}/{}",
        object.namespace().unwrap_or_default(),
        object.name_any()
    )
}

/// Everything a reconcile needs; one per controller run.
pub struct Context {
    pub client: Client,
    pub store: Arc<dyn SessionStore>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    /// The SessionPolicy cache of the controller (for conflicts between policies).
    pub policies: Store<SessionPolicy>,
    /// Deadline of one store call.
    pub store_timeout: Duration,
    /// How often an applied policy is checked against the store again.
    pub policy_resync: Duration,
    /// Applied Revocations are deleted this long after they were applied (never when unset).
    pub revocation_retention: Option<Duration>,
    tenants: TenantLocks,
    backoff: Backoff,
}

impl Context {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        store: Arc<dyn SessionStore>,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        policies: Store<SessionPolicy>,
        store_timeout: Duration,
        policy_resync: Duration,
        revocation_retention: Option<Duration>,
    ) -> Self {
        Self {
            client,
            store,
            recorder,
            metrics,
            clock,
            policies,
            store_timeout,
            policy_resync,
            revocation_retention,
            tenants: TenantLocks::default(),
            backoff: Backoff::default(),
        }
    }

    /// Runs a store call within the store deadline.
    pub async fn store_call<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.store_timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout),
        }
    }

    /// Serialises the operator's writes to one tenant (policy apply and clean-up race
    /// otherwise when one policy replaces another).
    pub fn tenant_lock(&self, tenant: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.tenants.get(tenant)
    }

    /// The next retry delay for an object that failed (doubling from 1 s to 5 min).
    pub fn retry_after(&self, key: &str) -> Duration {
        self.backoff.next(key)
    }

    /// Forgets the failures of an object that reconciled.
    pub fn succeeded(&self, key: &str) {
        self.backoff.reset(key);
    }

    /// Publishes an Event about `object`; a failure to publish is logged, not retried.
    pub async fn publish<K>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        note: String,
        action: &str,
    ) where
        K: Resource<DynamicType = ()> + ResourceExt,
    {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(object = %object_key(object), %error, "cannot publish an Event");
        }
    }
}

#[derive(Default)]
struct TenantLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl TenantLocks {
    fn get(&self, tenant: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.0.lock();
        // Drop locks nobody holds, so the map stays as small as the tenants in flight.
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        locks.entry(tenant.to_owned()).or_default().clone()
    }
}

const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Backoff(Mutex<HashMap<String, u32>>);

impl Backoff {
    fn next(&self, key: &str) -> Duration {
        let mut failures = self.0.lock();
        let n = failures.entry(key.to_owned()).or_default();
        let delay = BACKOFF_FIRST.saturating_mul(1u32 << (*n).min(16));
        *n = n.saturating_add(1);
        delay.min(BACKOFF_MAX)
    }

    fn reset(&self, key: &str) {
        self.0.lock().remove(key);
    }
}

/// Why a reconcile failed; it is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("session store: {0}")]
    Store(#[from] StoreError),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("the object has no {0}")]
    Incomplete(&'static str),
}

impl Error {
    /// A short, bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kubernetes",
            Error::Store(e) => match e {
                StoreError::Unavailable(_) => "store_unavailable",
                StoreError::Timeout => "store_timeout",
                StoreError::Malformed(_) => "store_malformed",
                StoreError::NotReplicated { .. } => "store_not_replicated",
                StoreError::IdempotencyKeyReused => "store_idempotency_key_reused",
            },
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.metric_label(),
                _ => "finalizer",
            },
            Error::Incomplete(_) => "incomplete_object",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_ceiling_and_resets() {
        let b = Backoff::default();
        let delays: Vec<u64> = (0..12).map(|_| b.next("a").as_secs()).collect();
        assert_eq!(&delays[..5], &[1, 2, 4, 8, 16]);
        assert_eq!(delays[11], 300);
        assert_eq!(b.next("b").as_secs(), 1);
        b.reset("a");
        assert_eq!(b.next("a").as_secs(), 1);
    }

    #[test]
    fn error_labels_are_bounded() {
        assert_eq!(
            Error::Store(StoreError::Unavailable("secret text".into())).metric_label(),
            "store_unavailable"
        );
        assert_eq!(
            Error::Incomplete("namespace").metric_label(),
            "incomplete_object"
        );
    }
}
