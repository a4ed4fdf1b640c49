//! The memory store's own tests (the store contract is the conformance suite's).

use super::*;
use crate::audit::{Action, Actor, ActorKind, Source, Target};
use crate::clock::ManualClock;

fn record(tenant: &str, n: usize) -> AuditRecord {
    AuditRecord {
        id: format!("{n:04}"),
        time: crate::clock::rfc3339(0),
        tenant: tenant.into(),
        actor: Actor {
            kind: ActorKind::System,
            id: "test".into(),
            name: None,
        },
        action: Action::PolicyUpdate,
        target: Target::default(),
        reason: None,
        source: Source::System,
        sessions_revoked: None,
        detail: None,
    }
}

/// The cap is a memory bound, not a retention: past it the oldest records go (and the
/// count is said once per housekeeping run).
#[tokio::test]
async fn past_the_audit_cap_the_oldest_records_are_dropped() {
    let clock = ManualClock::new(1_750_000_000_000);
    let mut store = MemoryStore::new(Limits::default(), Arc::new(clock));
    store.audit_cap = 3;
    for n in 0..5 {
        store
            .set_policy(
                "t",
                Policy::default_with(Limits::default().default_max_age),
                Some(record("t", n)),
            )
            .await
            .unwrap();
    }
    let ids: Vec<String> = store
        .audit("t", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["0004", "0003", "0002"]);
    assert_eq!(store.tenants.lock()["t"].capped, 2);
    store.maintain().await.unwrap();
    assert_eq!(
        store.tenants.lock()["t"].capped,
        0,
        "said once, then counted afresh"
    );
    assert_eq!(
        store.audit("t", 10).await.unwrap().len(),
        3,
        "young records stay"
    );
}
