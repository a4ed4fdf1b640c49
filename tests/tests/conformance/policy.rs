//! Step 1 of the decision: the tenant's policy (max age), and policy changes applying to
//! existing sessions at once.

use grantflow_core::decision::Limits;
use grantflow_core::policy::{Policy, PolicySource};

use crate::harness::*;

cases! {
    lowered_policy_ends_older_sessions_at_once_and_younger_ones_continue;
    policy_changes_apply_at_once_and_keep_their_source;
    lowered_policy_also_applies_to_housekeeping [; exclusive];
    clear_policy_returns_to_the_default;
    configured_default_max_age_applies_to_tenants_without_a_policy;
    policy_update_with_an_audit_record_is_appended;
}

async fn lowered_policy_ends_older_sessions_at_once_and_younger_ones_continue(ctx: Ctx) {
    let t = &ctx.tenant;
    ctx.set_policy(t, mins(60)).await;
    assert_eq!(ctx.policy(t).await, policy(mins(60)));
    let older = ctx.token(ALICE, "s-older");
    let younger = ctx.token(BOB, "s-younger");
    assert_eq!(ctx.check(&older).await, created(T0));
    ctx.advance(mins(20));
    assert_eq!(ctx.check(&younger).await, created(T0 + 20 * 60_000));
    ctx.advance(mins(5));
    assert_eq!(
        ctx.check(&older).await,
        allowed(T0),
        "25 minutes under a 60-minute policy"
    );

    ctx.set_policy(t, mins(10)).await;
    assert_eq!(
        ctx.check(&older).await,
        EXPIRED,
        "25 minutes old under a 10-minute policy"
    );
    assert_eq!(
        ctx.check(&younger).await,
        allowed(T0 + 20 * 60_000),
        "5 minutes old"
    );
    ctx.advance(mins(5) - MS);
    assert_eq!(ctx.check(&younger).await, allowed(T0 + 20 * 60_000));
    ctx.advance(MS);
    assert_eq!(ctx.check(&younger).await, EXPIRED);
}

pub(crate) async fn policy_changes_apply_at_once_and_keep_their_source(ctx: Ctx) {
    let t = &ctx.tenant;
    assert_eq!(ctx.policy(t).await, Policy::default_with(mins(15)));
    let old = ctx.token("u1", "old");
    ctx.check(&old).await;
    ctx.advance(mins(3));
    let young = ctx.token("u2", "young");
    ctx.check(&young).await;
    ctx.advance(mins(1));
    let from_kubernetes = Policy {
        max_session_age: mins(2),
        idle_timeout: None,
        max_sessions_per_user: None,
        on_limit: Default::default(),
        source: PolicySource::Kubernetes("ns/p".into()),
    };
    ctx.store()
        .set_policy(t, from_kubernetes.clone(), None)
        .await
        .unwrap();
    assert_eq!(ctx.policy(t).await, from_kubernetes);
    assert_eq!(
        ctx.check(&old).await,
        EXPIRED,
        "a lowered max age ends older sessions"
    );
    assert!(is_allowed(ctx.check(&young).await));
    ctx.store().clear_policy(t).await.unwrap();
    assert_eq!(ctx.policy(t).await, Policy::default_with(mins(15)));
}

async fn lowered_policy_also_applies_to_housekeeping(ctx: Ctx) {
    let t = &ctx.tenant;
    ctx.set_policy(t, mins(60)).await;
    ctx.check(&ctx.token(ALICE, "s-older")).await;
    ctx.advance(mins(20));
    ctx.check(&ctx.token(BOB, "s-younger")).await;
    ctx.set_policy(t, mins(10)).await;
    ctx.maintain().await;
    assert_eq!(ctx.session_ids(t).await, ["s-younger"]);
    assert_eq!(ctx.check(&ctx.token(ALICE, "s-older")).await, EXPIRED);
}

async fn clear_policy_returns_to_the_default(ctx: Ctx) {
    let t = &ctx.tenant;
    ctx.set_policy(t, mins(60)).await;
    let token = ctx.token(ALICE, "s-1");
    ctx.check(&token).await;
    ctx.advance(mins(20));
    assert_eq!(ctx.check(&token).await, allowed(T0));
    ctx.store().clear_policy(t).await.unwrap();
    assert_eq!(ctx.policy(t).await, Policy::default_with(mins(15)));
    assert_eq!(
        ctx.check(&token).await,
        EXPIRED,
        "20 minutes old under the 15-minute default"
    );
    // Clearing a tenant that never had a policy is harmless.
    let other = &ctx.other_tenant;
    ctx.store().clear_policy(other).await.unwrap();
    assert_eq!(ctx.policy(other).await, Policy::default_with(mins(15)));
}

async fn configured_default_max_age_applies_to_tenants_without_a_policy(ctx: Ctx) {
    let ctx = ctx.with_limits(Limits {
        default_max_age: mins(5),
        ..Limits::default()
    });
    assert_eq!(ctx.policy(&ctx.tenant).await, Policy::default_with(mins(5)));
    let token = ctx.token(ALICE, "s-1");
    assert_eq!(ctx.check(&token).await, created(T0));
    ctx.advance(mins(5) - MS);
    assert_eq!(ctx.check(&token).await, allowed(T0));
    ctx.advance(MS);
    assert_eq!(ctx.check(&token).await, EXPIRED);
}

async fn policy_update_with_an_audit_record_is_appended(ctx: Ctx) {
    let record = policy_record(&ctx.tenant, ctx.now());
    ctx.store()
        .set_policy(&ctx.tenant, policy(mins(30)), Some(record.clone()))
        .await
        .unwrap();
    assert_eq!(ctx.audit(&ctx.tenant, 10).await, vec![record]);
    assert_eq!(ctx.policy(&ctx.tenant).await, policy(mins(30)));
    // Without a record, nothing is appended.
    ctx.set_policy(&ctx.tenant, mins(20)).await;
    assert_eq!(ctx.audit(&ctx.tenant, 10).await.len(), 1);
}
