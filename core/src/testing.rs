//! Test doubles for the binaries' tests (the `test-util` feature, never in a release build).
//!
//! [`FaultyStore`] wraps a real store (by default a memory store) and answers as it does,
//! except for the operations a test told it to fail ([`Fault`]): refuse with a chosen
//! [`StoreError`], answer the error after the change is made (a write the replicas did not
//! confirm), or never answer (a frozen store). It counts every call made to it, and can report
//! losses of data ([`StoreReset`]) the real store did not have.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use async_trait::async_trait;

use crate::audit::AuditRecord;
use crate::clock::SystemClock;
use crate::decision::Limits;
use crate::policy::Policy;
use crate::revocation::{BlockedUser, Revocation, RevocationOutcome};
use crate::session::{AccessRequest, SessionRecord, Verdict};
use crate::store::{ChangeStream, MemoryStore, SessionStore, StoreError, StoreReset};

/// An operation of [`SessionStore`] that can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Check,
    Revoke,
    BlockedUsers,
    UnblockUser,
    Policy,
    SetPolicy,
    ClearPolicy,
    Sessions,
    Audit,
    Subscribe,
    Ping,
    Maintain,
}

impl Operation {
    /// Every operation that can fail.
    pub const ALL: [Operation; 12] = [
        Self::Check,
        Self::Revoke,
        Self::BlockedUsers,
        Self::UnblockUser,
        Self::Policy,
        Self::SetPolicy,
        Self::ClearPolicy,
        Self::Sessions,
        Self::Audit,
        Self::Subscribe,
        Self::Ping,
        Self::Maintain,
    ];
}

/// What a faulty operation does instead of answering as the wrapped store does.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Fails with the error; the wrapped store is not asked.
    Fail(StoreError),
    /// The wrapped store makes the change, then the answer is the error (a Redis `WAIT` that
    /// the replicas did not answer: in effect on the primary, not confirmed).
    FailAfter(StoreError),
    /// Never answers, like a frozen Redis; the wrapped store is not asked.
    Hang,
}

/// A fault and how many more calls it applies to (`None`: every call).
#[derive(Debug)]
struct Rule {
    fault: Fault,
    remaining: Option<AtomicU32>,
}

impl Rule {
    /// The fault, when it still applies to this call (and one use fewer remains).
    fn take(&self) -> Option<&Fault> {
        match &self.remaining {
            None => Some(&self.fault),
            Some(remaining) => remaining
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
                .then_some(&self.fault),
        }
    }
}

/// A store that answers as the store it wraps, except for the faults it was given; it
/// counts every call made to it (including [`SessionStore::resets`]).
pub struct FaultyStore {
    inner: Arc<dyn SessionStore>,
    faults: HashMap<Operation, Rule>,
    resets: Option<Vec<StoreReset>>,
    calls: AtomicU64,
}

impl FaultyStore {
    /// Wraps `inner`, with no faults yet.
    pub fn new(inner: Arc<dyn SessionStore>) -> Self {
        Self {
            inner,
            faults: HashMap::new(),
            resets: None,
            calls: AtomicU64::new(0),
        }
    }

    /// Wraps a fresh memory store (default limits, the system clock), with no faults yet.
    pub fn memory() -> Self {
        Self::new(Arc::new(MemoryStore::new(
            Limits::default(),
            Arc::new(SystemClock),
        )))
    }

    /// Every call of each of `operations` meets `fault`.
    pub fn with_fault(self, operations: impl IntoIterator<Item = Operation>, fault: Fault) -> Self {
        self.with_rule(operations, fault, None)
    }

    /// The first `times` calls of each of `operations` meet `fault`; later calls are
    /// answered by the wrapped store.
    pub fn with_fault_times(
        self,
        operations: impl IntoIterator<Item = Operation>,
        fault: Fault,
        times: u32,
    ) -> Self {
        self.with_rule(operations, fault, Some(times))
    }

    /// [`SessionStore::resets`] answers `resets` instead of the wrapped store's.
    pub fn with_resets(mut self, resets: Vec<StoreReset>) -> Self {
        self.resets = Some(resets);
        self
    }

    /// How many calls were made to this store so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    fn with_rule(
        mut self,
        operations: impl IntoIterator<Item = Operation>,
        fault: Fault,
        times: Option<u32>,
    ) -> Self {
        for operation in operations {
            let rule = Rule {
                fault: fault.clone(),
                remaining: times.map(AtomicU32::new),
            };
            self.faults.insert(operation, rule);
        }
        self
    }

    /// Counts the call and runs `call` on the wrapped store unless a fault says otherwise.
    async fn run<T, F>(&self, operation: Operation, call: F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>>,
    {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match self.faults.get(&operation).and_then(Rule::take) {
            None => call.await,
            Some(Fault::Fail(error)) => Err(error.clone()),
            Some(Fault::FailAfter(error)) => {
                call.await?;
                Err(error.clone())
            }
            Some(Fault::Hang) => std::future::pending().await,
        }
    }
}

#[async_trait]
impl SessionStore for FaultyStore {
    async fn check(&self, request: &AccessRequest) -> Result<Verdict, StoreError> {
        self.run(Operation::Check, self.inner.check(request)).await
    }

    async fn revoke(&self, revocation: &Revocation) -> Result<RevocationOutcome, StoreError> {
        self.run(Operation::Revoke, self.inner.revoke(revocation))
            .await
    }

    async fn blocked_users(&self, tenant: &str) -> Result<Vec<BlockedUser>, StoreError> {
        self.run(Operation::BlockedUsers, self.inner.blocked_users(tenant))
            .await
    }

    async fn unblock_user(
        &self,
        tenant: &str,
        user: &str,
        audit: AuditRecord,
    ) -> Result<bool, StoreError> {
        let call = self.inner.unblock_user(tenant, user, audit);
        self.run(Operation::UnblockUser, call).await
    }

    async fn policy(&self, tenant: &str) -> Result<Policy, StoreError> {
        self.run(Operation::Policy, self.inner.policy(tenant)).await
    }

    async fn set_policy(
        &self,
        tenant: &str,
        policy: Policy,
        audit: Option<AuditRecord>,
    ) -> Result<(), StoreError> {
        let call = self.inner.set_policy(tenant, policy, audit);
        self.run(Operation::SetPolicy, call).await
    }

    async fn clear_policy(&self, tenant: &str) -> Result<(), StoreError> {
        self.run(Operation::ClearPolicy, self.inner.clear_policy(tenant))
            .await
    }

    async fn sessions(&self, tenant: &str) -> Result<Vec<SessionRecord>, StoreError> {
        self.run(Operation::Sessions, self.inner.sessions(tenant))
            .await
    }

    async fn audit(&self, tenant: &str, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.run(Operation::Audit, self.inner.audit(tenant, limit))
            .await
    }

    async fn subscribe(&self, tenant: &str) -> Result<ChangeStream, StoreError> {
        self.run(Operation::Subscribe, self.inner.subscribe(tenant))
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(Operation::Ping, self.inner.ping()).await
    }

    async fn maintain(&self) -> Result<(), StoreError> {
        self.run(Operation::Maintain, self.inner.maintain()).await
    }

    fn resets(&self) -> Vec<StoreReset> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match &self.resets {
            Some(resets) => resets.clone(),
            None => self.inner.resets(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicySource;

    const TENANT: &str = "contoso";

    #[tokio::test]
    async fn without_faults_it_answers_as_the_wrapped_store_and_counts_the_calls() {
        let store = FaultyStore::memory();
        assert_eq!(store.ping().await, Ok(()));
        assert_eq!(
            store.policy(TENANT).await.unwrap().source,
            PolicySource::Default
        );
        assert!(store.resets().is_empty());
        assert_eq!(store.calls(), 3);
    }

    #[tokio::test]
    async fn a_fault_applies_to_its_operations_only_and_as_many_times_as_told() {
        let down = StoreError::Unavailable("down".into());
        let store = FaultyStore::memory()
            .with_fault([Operation::Ping], Fault::Fail(down.clone()))
            .with_fault_times([Operation::Sessions], Fault::Fail(StoreError::Timeout), 1);
        assert_eq!(store.ping().await, Err(down.clone()));
        assert_eq!(store.ping().await, Err(down));
        assert_eq!(store.sessions(TENANT).await, Err(StoreError::Timeout));
        assert_eq!(store.sessions(TENANT).await, Ok(vec![]));
        assert!(store.audit(TENANT, 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_fault_after_the_call_leaves_the_change_made() {
        let unconfirmed = StoreError::NotReplicated {
            acknowledged: 0,
            wanted: 1,
        };
        let store = FaultyStore::memory().with_fault(
            [Operation::ClearPolicy],
            Fault::FailAfter(unconfirmed.clone()),
        );
        assert_eq!(store.clear_policy(TENANT).await, Err(unconfirmed));
        assert_eq!(store.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_operation_never_answers() {
        let store =
            FaultyStore::memory().with_fault([Operation::Check, Operation::Ping], Fault::Hang);
        let answer = tokio::time::timeout(std::time::Duration::from_secs(60), store.ping()).await;
        assert!(answer.is_err(), "timed out");
        let resets = vec![StoreReset {
            tenant: None,
            lost_at: 1,
            generation: "g-1".into(),
        }];
        let store = store.with_resets(resets.clone());
        assert_eq!(store.resets(), resets);
    }
}
