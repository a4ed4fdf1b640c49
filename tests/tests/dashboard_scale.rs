//! The dashboard at scale in real Chromium: a tenant with 1 000 and with 100 000 live sessions
//! (seeded through the store the replica uses, not through Envoy). The browser proves the
//! first page shows, a search by user narrows to that user's sessions, a sort header changes
//! the order (server-side), the next page shows other rows, a revoke from the page ends that
//! session (the store refuses it afterwards), grouping by user shows a count per user and
//! expands one, and the overview shows the live count and the
//! last hour's counts. Time to first rows, the round trips and the tab's JS heap are measured
//! and printed (docs/admin.md has them), not asserted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use grantflow_core::clock::Clock;
use grantflow_core::identity::{Identity, SessionKey};
use grantflow_core::listing::{Direction, SessionQuery, SortKey};
use grantflow_core::session::{AccessRequest, EndReason, Verdict};
use grantflow_core::store::SessionStore;
use grantflow_e2e::browser::{artifacts, run_browser};
use grantflow_e2e::stack::{Stack, StackOptions, TENANT};
use serde_json::{Value, json};

/// Sessions per seeded user (below the per-user bound).
const PER_USER: usize = 5;
/// The user the browser searches for, with sessions of its own.
const TARGET_USER: &str = "f00dcafe-0000-4000-8000-000000000001";
const TARGET_NAME: &str = "Zelda Quartermaine";
const TARGET_SESSIONS: usize = 3;
const BROWSERS: [&str; 3] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.0 Safari/605.1.15",
];

fn identity(stack: &Stack, user: &str, name: &str, sid: &str, auth_time: i64) -> Identity {
    let now = stack.clock.now_secs();
    Identity {
        tenant: TENANT.into(),
        user: user.into(),
        display_name: Some(name.into()),
        session: SessionKey::derive(Some(sid), None, ""),
        auth_time: Some(auth_time),
        issued_at: Some(now),
        not_before: None,
        expires_at: now + 3600,
        roles: Vec::new(),
    }
}

fn request(identity: Identity, i: usize) -> AccessRequest {
    AccessRequest {
        identity: Arc::new(identity),
        client_ip: Some(
            format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255)
                .parse()
                .unwrap(),
        ),
        user_agent: Some(BROWSERS[i % BROWSERS.len()].into()),
    }
}

/// Seeds `count` sessions through the store (64 checks at a time); started over the last
/// ten minutes, last seen as they were seeded (the clock moves 1 ms per session).
async fn seed(stack: &Stack, count: usize) -> Duration {
    let began = Instant::now();
    let store = stack.store.clone();
    let now = stack.clock.now_secs();
    for batch in 0..count.div_ceil(1000) {
        let range = batch * 1000..((batch + 1) * 1000).min(count);
        let requests: Vec<AccessRequest> = range
            .map(|i| {
                let user = format!("00000000-0000-4000-8000-{:012}", i / PER_USER);
                let name = format!("User {:06}", i / PER_USER);
                let auth = now - 600 + (i as i64 * 600 / count as i64);
                request(
                    identity(stack, &user, &name, &format!("seed-{i:06}"), auth),
                    i,
                )
            })
            .collect();
        let verdicts: Vec<Verdict> = futures::stream::iter(requests)
            .map(|r| {
                let store = store.clone();
                async move { store.check(&r).await.expect("the store answers") }
            })
            .buffer_unordered(64)
            .collect()
            .await;
        assert!(
            verdicts
                .iter()
                .all(|v| matches!(v, Verdict::Allow { created: true, .. }))
        );
        stack.clock.advance(Duration::from_secs(1));
    }
    for i in 0..TARGET_SESSIONS {
        let r = request(
            identity(
                stack,
                TARGET_USER,
                TARGET_NAME,
                &format!("target-{i}"),
                now - 300,
            ),
            i,
        );
        assert!(matches!(
            store.check(&r).await,
            Ok(Verdict::Allow { created: true, .. })
        ));
    }
    began.elapsed()
}

async fn first_id(store: &dyn SessionStore, direction: Direction) -> String {
    let query = SessionQuery {
        sort: SortKey::Started,
        direction,
        limit: 1,
        ..SessionQuery::new()
    };
    let page = store.list_sessions(TENANT, &query).await.unwrap();
    page.sessions[0].id.clone()
}

async fn run(size: usize) -> Value {
    let stack = Stack::start_with(StackOptions {
        dashboard: true,
        ..StackOptions::default()
    })
    .await;
    let seeding = seed(&stack, size).await;
    eprintln!("seeded {size} sessions through the store in {seeding:?}");
    // Through Envoy: a session starts, an invalid token is refused (the overview counts both).
    let user = stack.token("envoy-user", "sid-envoy-user").await;
    assert_eq!(stack.status(&user).await, 200);
    assert_ne!(stack.status("not-a-token").await, 200);
    let live = stack.store.live_count(TENANT).await.unwrap();
    assert_eq!(live, size + TARGET_SESSIONS + 1);

    let input = json!({
        "dashboardUrl": format!("http://{}/admin/", stack.admin_addr(0)),
        "artifacts": artifacts(&format!("dashboard-scale-{size}")),
        "size": size,
        // The administrator's own session starts at sign-in.
        "live": live + 1,
        "newestId": first_id(&*stack.store, Direction::Descending).await,
        "oldestId": first_id(&*stack.store, Direction::Ascending).await,
        "target": { "user": TARGET_USER, "name": TARGET_NAME, "sessions": TARGET_SESSIONS },
    });
    let mut result = run_browser("dashboard_scale.mjs", &input, Duration::from_secs(180)).await;

    // The session revoked from the page is ended in the store: listed no more, refused.
    let revoked = result["revoked"]
        .as_str()
        .expect("a revoked session")
        .to_owned();
    assert!(revoked.starts_with("target-"), "{revoked}");
    let theirs = SessionQuery {
        user: Some(TARGET_USER.into()),
        ..SessionQuery::new()
    };
    let left = stack.store.list_sessions(TENANT, &theirs).await.unwrap();
    assert_eq!(left.total, TARGET_SESSIONS - 1);
    assert!(left.sessions.iter().all(|s| s.id != revoked));
    let index: usize = revoked["target-".len()..].parse().unwrap();
    let again = request(
        identity(
            &stack,
            TARGET_USER,
            TARGET_NAME,
            &revoked,
            stack.clock.now_secs() - 300,
        ),
        index,
    );
    assert_eq!(
        stack.store.check(&again).await.unwrap(),
        Verdict::Deny(EndReason::Revoked)
    );
    result["seedingMs"] = json!(seeding.as_millis());
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_pages_searches_sorts_and_revokes_at_1k_and_100k_sessions() {
    let mut rows = Vec::new();
    for size in [1_000, 100_000] {
        let result = run(size).await;
        eprintln!("{size} sessions: {result}");
        rows.push(result);
    }
    eprintln!(
        "| sessions | seeding | time to first rows | sign-in click → rows | sort | next page | \
         search | revoke | group by user | JS heap used | DOM nodes |"
    );
    for r in &rows {
        let ms = |key: &str| format!("{} ms", r[key]);
        eprintln!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} MB | {} |",
            r["size"],
            ms("seedingMs"),
            ms("timeToFirstRowsMs"),
            ms("signInToRowsMs"),
            ms("sortMs"),
            ms("nextPageMs"),
            ms("searchMs"),
            ms("revokeMs"),
            ms("groupMs"),
            r["jsHeapUsedBytes"].as_f64().unwrap_or(0.0) / 1e6,
            r["domNodes"],
        );
    }
}
