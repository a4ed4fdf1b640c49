//! Listing live sessions on the server (`SessionStore::list_sessions`, `session_users`,
//! `live_count`; core/src/listing.rs): every filter, each sort both ways, keyset pages that
//! stay correct while sessions start and end, cursors bound to their query, grouping by user.

use std::sync::Arc;

use grantflow_core::identity::Identity;
use grantflow_core::listing::{
    Direction, ListingError, SessionPage, SessionQuery, SortKey, UserPage, parse_network,
};
use grantflow_core::session::AccessRequest;

use crate::harness::*;

cases! {
    each_filter_narrows_the_listing;
    each_sort_orders_both_ways;
    pages_walk_every_session_once_while_others_start_and_end;
    a_cursor_of_another_query_or_a_tampered_one_is_refused;
    sessions_are_grouped_by_user_with_counts;
    ended_and_too_old_sessions_are_not_listed_nor_counted;
    one_session_is_read_by_its_key;
}

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";

/// A session of `identity` from `ip` with `user_agent`.
async fn start(ctx: &Ctx, identity: Identity, ip: &str, user_agent: &str) {
    let request = AccessRequest {
        identity: Arc::new(identity),
        client_ip: Some(ip.parse().unwrap()),
        user_agent: Some(user_agent.into()),
    };
    let verdict = ctx
        .store()
        .check(&request)
        .await
        .expect("the store answers");
    assert!(is_allowed(verdict.clone()), "{verdict:?}");
}

fn named(identity: Identity, name: &str) -> Identity {
    Identity {
        display_name: Some(name.into()),
        ..identity
    }
}

async fn list(ctx: &Ctx, query: &SessionQuery) -> SessionPage {
    ctx.store()
        .list_sessions(&ctx.tenant, query)
        .await
        .expect("list_sessions")
}

async fn ids(ctx: &Ctx, query: SessionQuery) -> Vec<String> {
    let mut ids: Vec<String> = list(ctx, &query)
        .await
        .sessions
        .into_iter()
        .map(|s| s.id)
        .collect();
    ids.sort();
    ids
}

fn query() -> SessionQuery {
    SessionQuery::new()
}

async fn each_filter_narrows_the_listing(ctx: Ctx) {
    start(
        &ctx,
        named(ctx.token(ALICE, "a-1"), "Alice Liddell"),
        "10.1.0.5",
        CHROME,
    )
    .await;
    start(
        &ctx,
        named(ctx.token(ALICE, "a-2"), "Alice Liddell"),
        "10.2.0.1",
        FIREFOX,
    )
    .await;
    start(
        &ctx,
        named(ctx.token(BOB, "b-1"), "Bob Builder"),
        "192.168.1.9",
        CHROME,
    )
    .await;
    start(&ctx, ctx.token(CAROL, "c-1"), "2001:db8::1", FIREFOX).await;
    // Another tenant's session is never listed.
    start(
        &ctx,
        ctx.token_in(&new_tenant(), ALICE, "x-1"),
        "10.1.0.5",
        CHROME,
    )
    .await;

    let all = ids(&ctx, query()).await;
    assert_eq!(all, ["a-1", "a-2", "b-1", "c-1"]);
    let by_user = SessionQuery {
        user: Some(ALICE.into()),
        ..query()
    };
    assert_eq!(ids(&ctx, by_user.clone()).await, ["a-1", "a-2"]);
    assert_eq!(list(&ctx, &by_user).await.total, 2);
    let nobody = SessionQuery {
        user: Some("0000".into()),
        ..query()
    };
    assert!(ids(&ctx, nobody).await.is_empty());
    // A display-name prefix (any case), or a user id prefix.
    let name = |prefix: &str| SessionQuery {
        name_prefix: Some(prefix.into()),
        ..query()
    };
    assert_eq!(ids(&ctx, name("bob b")).await, ["b-1"]);
    assert_eq!(ids(&ctx, name("ALICE")).await, ["a-1", "a-2"]);
    assert_eq!(ids(&ctx, name("ca501")).await, ["c-1"]);
    assert!(ids(&ctx, name("builder")).await.is_empty());
    // An address or a range, of either family.
    let ip = |net: &str| SessionQuery {
        network: Some(parse_network(net).unwrap()),
        ..query()
    };
    assert_eq!(ids(&ctx, ip("10.0.0.0/8")).await, ["a-1", "a-2"]);
    assert_eq!(ids(&ctx, ip("10.1.0.5")).await, ["a-1"]);
    assert_eq!(ids(&ctx, ip("2001:db8::/32")).await, ["c-1"]);
    assert!(ids(&ctx, ip("172.16.0.0/12")).await.is_empty());
    // Part of the browser label.
    let browser = |part: &str| SessionQuery {
        browser: Some(part.into()),
        ..query()
    };
    assert_eq!(ids(&ctx, browser("firefox")).await, ["a-2", "c-1"]);
    assert_eq!(
        ids(&ctx, browser("Chrome on Windows")).await,
        ["a-1", "b-1"]
    );
    // Filters combine.
    let both = SessionQuery {
        browser: Some("chrome".into()),
        ..by_user
    };
    assert_eq!(ids(&ctx, both.clone()).await, ["a-1"]);
    assert_eq!(list(&ctx, &both).await.total, 1);
}

async fn each_sort_orders_both_ways(ctx: Ctx) {
    for (i, sid) in ["s-1", "s-2", "s-3"].iter().enumerate() {
        start(&ctx, ctx.token(ALICE, sid), &format!("10.0.0.{i}"), CHROME).await;
        ctx.advance(SEC * 2);
    }
    // s-1 is used again: last seen s-2 < s-3 < s-1.
    assert!(is_allowed(ctx.check(&ctx.token(ALICE, "s-1")).await));
    let order = |sort, direction| SessionQuery {
        sort,
        direction,
        ..query()
    };
    let listed = |q: SessionQuery| {
        let ctx = &ctx;
        async move {
            let ids: Vec<String> = list(ctx, &q)
                .await
                .sessions
                .into_iter()
                .map(|s| s.id)
                .collect();
            ids
        }
    };
    assert_eq!(
        listed(order(SortKey::Started, Direction::Ascending)).await,
        ["s-1", "s-2", "s-3"]
    );
    assert_eq!(
        listed(order(SortKey::Started, Direction::Descending)).await,
        ["s-3", "s-2", "s-1"]
    );
    assert_eq!(
        listed(order(SortKey::LastSeen, Direction::Ascending)).await,
        ["s-2", "s-3", "s-1"]
    );
    assert_eq!(
        listed(order(SortKey::LastSeen, Direction::Descending)).await,
        ["s-1", "s-3", "s-2"]
    );
    // The same on a user's sessions (the per-user index).
    let mine = SessionQuery {
        user: Some(ALICE.into()),
        ..order(SortKey::LastSeen, Direction::Descending)
    };
    assert_eq!(listed(mine).await, ["s-1", "s-3", "s-2"]);
    // The default: newest start first.
    assert_eq!(listed(query()).await, ["s-3", "s-2", "s-1"]);
}

/// Walks every page of `query` (limit 4), calling `between` after each page; the ids shown.
async fn walk(
    ctx: &Ctx,
    mut query: SessionQuery,
    mut between: impl AsyncFnMut(usize),
) -> Vec<String> {
    query.limit = 4;
    let mut shown = Vec::new();
    for round in 0..20 {
        let page = list(ctx, &query).await;
        assert!(page.sessions.len() <= 4);
        shown.extend(page.sessions.into_iter().map(|s| s.id));
        let Some(cursor) = page.next_cursor else {
            return shown;
        };
        query.resume(&cursor, false).expect("its own cursor");
        between(round).await;
    }
    panic!("more than 20 pages");
}

async fn pages_walk_every_session_once_while_others_start_and_end(ctx: Ctx) {
    // 14 sessions of three users; pairs share a start (the same millisecond), so the key
    // breaks ties.
    let users = [ALICE, BOB, CAROL];
    for i in 0..14 {
        start(
            &ctx,
            ctx.token(users[i % 3], &format!("p-{i:02}")),
            "10.0.0.1",
            CHROME,
        )
        .await;
        if i % 2 == 1 {
            ctx.advance(SEC);
        }
    }
    let numbered = |ids: Vec<String>| -> Vec<String> {
        ids.into_iter().filter(|id| id.starts_with("p-")).collect()
    };
    for direction in [Direction::Descending, Direction::Ascending] {
        let tag = format!("{direction:?}");
        let q = SessionQuery {
            direction,
            ..query()
        };
        // What is live now, in order: by start, then key (pairs share a start and their keys
        // sort as their numbers).
        let mut expected = numbered(ctx.session_ids(&ctx.tenant).await);
        expected.sort();
        if direction == Direction::Descending {
            expected.reverse();
        }
        // Undisturbed: every session once, in order.
        let shown = numbered(walk(&ctx, q.clone(), async |_| {}).await);
        assert_eq!(shown, expected, "{tag}");

        // Between the first and second page: a session not shown yet ends, one already shown
        // ends, and a new one starts.
        let (later, earlier) = (expected[5].clone(), expected[0].clone());
        let shown = walk(&ctx, q.clone(), async |round| {
            if round == 0 {
                for key in [&later, &earlier] {
                    ctx.revoke(revocation(&ctx.tenant, session(key), "test"))
                        .await;
                }
                ctx.advance(SEC);
                start(
                    &ctx,
                    ctx.token(BOB, &format!("n-{tag}")),
                    "10.0.0.2",
                    CHROME,
                )
                .await;
            }
        })
        .await;
        let mut unique = shown.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            shown.len(),
            "no session twice ({tag}): {shown:?}"
        );
        let shown = numbered(shown);
        let survivors: Vec<String> = expected.iter().filter(|k| **k != later).cloned().collect();
        assert_eq!(
            shown, survivors,
            "every session that existed throughout, in order ({tag})"
        );
        assert!(
            !shown.contains(&later),
            "{later} ended before its page ({tag})"
        );
    }
}

async fn a_cursor_of_another_query_or_a_tampered_one_is_refused(ctx: Ctx) {
    for sid in ["s-1", "s-2", "s-3"] {
        start(&ctx, ctx.token(ALICE, sid), "10.0.0.1", CHROME).await;
        ctx.advance(SEC);
    }
    let first = SessionQuery {
        limit: 2,
        ..query()
    };
    let page = list(&ctx, &first).await;
    let cursor = page.next_cursor.expect("a second page");
    let mut other_sort = SessionQuery {
        sort: SortKey::LastSeen,
        ..first.clone()
    };
    assert_eq!(
        other_sort.resume(&cursor, false),
        Err(ListingError::CursorOfAnotherQuery)
    );
    let mut other_filter = SessionQuery {
        user: Some(BOB.into()),
        ..first.clone()
    };
    assert_eq!(
        other_filter.resume(&cursor, false),
        Err(ListingError::CursorOfAnotherQuery)
    );
    let mut grouped = first.clone();
    assert_eq!(
        grouped.resume(&cursor, true),
        Err(ListingError::CursorOfAnotherQuery)
    );
    let mut tampered = first.clone();
    let mut bad = cursor.clone();
    bad.insert(3, '!');
    assert_eq!(tampered.resume(&bad, false), Err(ListingError::BadCursor));
    assert_eq!(
        tampered.resume(&cursor[..cursor.len() / 2], false),
        Err(ListingError::BadCursor)
    );
    // The untouched cursor gives the last session.
    let mut next = first.clone();
    next.resume(&cursor, false).unwrap();
    let rest: Vec<String> = list(&ctx, &next)
        .await
        .sessions
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(rest, ["s-1"]);
}

async fn users(ctx: &Ctx, query: &SessionQuery) -> UserPage {
    ctx.store()
        .session_users(&ctx.tenant, query)
        .await
        .expect("session_users")
}

async fn sessions_are_grouped_by_user_with_counts(ctx: Ctx) {
    start(
        &ctx,
        named(ctx.token(ALICE, "a-1"), "Alice"),
        "10.0.0.1",
        CHROME,
    )
    .await;
    ctx.advance(SEC);
    start(
        &ctx,
        named(ctx.token(ALICE, "a-2"), "Alice L."),
        "10.0.0.2",
        FIREFOX,
    )
    .await;
    ctx.advance(SEC);
    start(&ctx, ctx.token(BOB, "b-1"), "10.0.0.3", CHROME).await;
    ctx.advance(SEC);
    start(&ctx, ctx.token(CAROL, "c-1"), "192.168.0.1", CHROME).await;
    start(&ctx, ctx.token(CAROL, "c-2"), "192.168.0.1", CHROME).await;
    start(&ctx, ctx.token(CAROL, "c-3"), "192.168.0.1", CHROME).await;

    let page = users(&ctx, &query()).await;
    assert_eq!(page.total, 3);
    let rows: Vec<(&str, usize)> = page
        .users
        .iter()
        .map(|g| (g.user.as_str(), g.sessions))
        .collect();
    // Newest start first.
    assert_eq!(rows, [(CAROL, 3), (BOB, 1), (ALICE, 2)]);
    assert_eq!(page.users[2].display_name.as_deref(), Some("Alice L."));
    assert_eq!(page.users[2].newest_start, T0 + 1000);
    // Filters apply before grouping.
    let chrome = SessionQuery {
        browser: Some("chrome".into()),
        ..query()
    };
    let rows: Vec<(String, usize)> = users(&ctx, &chrome)
        .await
        .users
        .into_iter()
        .map(|g| (g.user, g.sessions))
        .collect();
    assert_eq!(
        rows,
        [(CAROL.to_owned(), 3), (BOB.into(), 1), (ALICE.into(), 1)]
    );
    // Paged with a cursor, one user a page.
    let mut q = SessionQuery {
        limit: 1,
        direction: Direction::Ascending,
        ..query()
    };
    let mut seen = Vec::new();
    for _ in 0..5 {
        let page = users(&ctx, &q).await;
        seen.extend(page.users.into_iter().map(|g| g.user));
        let Some(cursor) = page.next_cursor else {
            break;
        };
        // A grouped cursor is not a session cursor.
        assert_eq!(
            q.clone().resume(&cursor, false),
            Err(ListingError::CursorOfAnotherQuery)
        );
        q.resume(&cursor, true).unwrap();
    }
    assert_eq!(seen, [ALICE, BOB, CAROL]);
    // Expanding one user's row: that user's sessions.
    let carol = SessionQuery {
        user: Some(CAROL.into()),
        ..query()
    };
    assert_eq!(users(&ctx, &carol).await.users.len(), 1);
    assert_eq!(ids(&ctx, carol).await, ["c-1", "c-2", "c-3"]);
}

async fn ended_and_too_old_sessions_are_not_listed_nor_counted(ctx: Ctx) {
    ctx.store()
        .set_policy(&ctx.tenant, policy(mins(5)), None)
        .await
        .unwrap();
    start(&ctx, ctx.token(ALICE, "old"), "10.0.0.1", CHROME).await;
    ctx.advance(mins(3));
    start(&ctx, ctx.token(ALICE, "a-2"), "10.0.0.1", CHROME).await;
    start(&ctx, ctx.token(BOB, "b-1"), "10.0.0.1", CHROME).await;
    start(&ctx, ctx.token(BOB, "b-2"), "10.0.0.1", CHROME).await;
    assert_eq!(ctx.store().live_count(&ctx.tenant).await.unwrap(), 4);
    // Bob's sessions end (revoke-all); "old" passes the max age without housekeeping.
    ctx.revoke(revocation(&ctx.tenant, user(BOB), "test")).await;
    ctx.advance(mins(3));
    assert_eq!(ctx.store().live_count(&ctx.tenant).await.unwrap(), 1);
    assert_eq!(ids(&ctx, query()).await, ["a-2"]);
    let bob = SessionQuery {
        user: Some(BOB.into()),
        ..query()
    };
    assert!(ids(&ctx, bob).await.is_empty());
    let alice = SessionQuery {
        user: Some(ALICE.into()),
        ..query()
    };
    assert_eq!(ids(&ctx, alice).await, ["a-2"]);
    for direction in [Direction::Ascending, Direction::Descending] {
        let page = list(
            &ctx,
            &SessionQuery {
                direction,
                ..query()
            },
        )
        .await;
        assert_eq!(page.total, 1);
        assert_eq!(page.sessions.len(), 1);
    }
    assert_eq!(users(&ctx, &query()).await.total, 1);
}

async fn one_session_is_read_by_its_key(ctx: Ctx) {
    ctx.store()
        .set_policy(&ctx.tenant, policy(mins(5)), None)
        .await
        .unwrap();
    start(
        &ctx,
        named(ctx.token(ALICE, "a-1"), "Alice"),
        "10.0.0.1",
        FIREFOX,
    )
    .await;
    start(&ctx, ctx.token(BOB, "b-1"), "10.0.0.2", CHROME).await;
    let read = |key: &'static str| {
        let ctx = &ctx;
        async move {
            ctx.store()
                .session(&ctx.tenant, key)
                .await
                .expect("session")
        }
    };
    let alice = read("a-1").await.expect("live");
    assert_eq!(alice.user, ALICE);
    assert_eq!(alice.display_name.as_deref(), Some("Alice"));
    assert_eq!(alice.client_label.as_deref(), Some("Firefox on Linux"));
    assert!(read("nobody").await.is_none());
    // Not another tenant's.
    assert!(
        ctx.store()
            .session(&new_tenant(), "a-1")
            .await
            .unwrap()
            .is_none()
    );
    // Not once ended, nor past the max age.
    ctx.revoke(revocation(&ctx.tenant, session("b-1"), "test"))
        .await;
    assert!(read("b-1").await.is_none());
    ctx.advance(mins(6));
    assert!(read("a-1").await.is_none());
}
