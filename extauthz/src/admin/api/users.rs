//! Users: revoke all of a user's sessions (and lock them out), the users a revoke-all
//! watermark or a lock keeps out, and lifting both.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use grantflow_core::audit::{Action, AuditRecord, Target, new_audit_id};
use grantflow_core::clock::{UnixMillis, rfc3339};
use grantflow_core::revocation::{
    BlockedUser, LOCK_MESSAGE_MAX_CHARS, Revocation, RevocationTarget,
};
use grantflow_core::text;
use serde::{Deserialize, Serialize};

use super::{
    DEFAULT_PAGE, Page, idempotency_key, json_body, page, path_id, query, reason, revocation_answer,
};
use crate::admin::caller::Caller;
use crate::admin::problem::Problem;
use crate::admin::rate_limit::Writer;
use crate::admin::views::BlockedView;
use crate::admin::{AdminState, within};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RevokeUserBody {
    reason: Option<String>,
    /// RFC 3339; no new session for the user until then.
    lock_until: Option<String>,
    /// Shown to the user on the refusal while the lock holds (only with `lockUntil`).
    message: Option<String>,
}

/// A lock's message as the store keeps it: cleaned like a reason (one line, no format
/// characters), at most [`LOCK_MESSAGE_MAX_CHARS`]; only with a lock; empty is none.
fn lock_message(message: Option<String>, locked: bool) -> Result<Option<String>, Problem> {
    let Some(message) = message else {
        return Ok(None);
    };
    if !locked {
        return Err(Problem::bad_request(
            "message needs lockUntil: it is shown to the user while the lock holds them out.",
        ));
    }
    let message = text::clean(&message, usize::MAX);
    if message.chars().count() > LOCK_MESSAGE_MAX_CHARS {
        return Err(Problem::bad_request(format!(
            "The message is longer than {LOCK_MESSAGE_MAX_CHARS} characters."
        )));
    }
    Ok(Some(message).filter(|m| !m.is_empty()))
}

/// The answer of a revoke-all: what it did, and what the user must do to get back in.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct UserRevocationResult {
    sessions_revoked: u32,
    audit_id: String,
    /// The user's watermark and lock as they stand now (`null`: nothing holds the user out,
    /// e.g. an administrator lifted it since the first call of a replayed request).
    blocked: Option<BlockedView>,
    /// In words: what the user must do to get back in.
    next_step: String,
}

pub(super) async fn revoke_user(
    Writer(caller): Writer,
    State(state): State<AdminState>,
    user: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let user = path_id(user, "user")?;
    // A retried call with the same `Idempotency-Key` (within 24 h) changes nothing and
    // answers the first call's outcome: one audit record, one watermark. The same key with
    // another request (target, lock or reason) is refused (422) and changes nothing.
    let idempotency_key = idempotency_key(&headers, &caller)?;
    let body: RevokeUserBody = json_body(&body)?;
    let reason = reason(body.reason)?;
    let lock_until = match body.lock_until.as_deref() {
        None => None,
        Some(text) => {
            let at = humantime::parse_rfc3339_weak(text.trim()).map_err(|_| {
                Problem::bad_request(
                    "lockUntil must be an RFC 3339 time, e.g. 2026-12-01T00:00:00Z.",
                )
            })?;
            let at = at
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|_| Problem::bad_request("lockUntil must be in the future."))?;
            let at = i64::try_from(at.as_millis()).unwrap_or(i64::MAX);
            if at <= state.clock.now_ms() {
                return Err(Problem::bad_request("lockUntil must be in the future."));
            }
            Some(at)
        }
    };
    let message = lock_message(body.message, lock_until.is_some())?;
    let revocation = Revocation {
        tenant: caller.tenant().to_owned(),
        target: RevocationTarget::User {
            user: user.clone(),
            lock_until,
            message,
        },
        reason,
        actor: caller.actor(),
        source: caller.source,
        idempotency_key,
    };
    let outcome = (state.metrics)
        .time_revocation("user_revoke", within(state.store.revoke(&revocation)))
        .await?;
    // What holds the user out now, as the store says. The revocation is in force whatever
    // this read answers, so its failure does not fail the call: the answer then says the
    // rule without the times.
    let (blocked, next_step) = match within(state.store.blocked_users(caller.tenant())).await {
        Ok(all) => {
            let blocked = all.into_iter().find(|b| b.user == user);
            let next_step = next_step(&user, blocked.as_ref(), state.clock.now_ms());
            (blocked, next_step)
        }
        Err(_) => (
            None,
            format!(
                "The user must sign in again interactively (password, security key, …): tokens \
                 without auth_time, or signed in before this revocation, are refused until the \
                 watermark retention has passed or an administrator lifts it (DELETE \
                 /api/v1/users/{user}/revocation). GET /api/v1/blocked-users shows until when."
            ),
        ),
    };
    Ok(revocation_answer(
        &outcome,
        UserRevocationResult {
            sessions_revoked: outcome.sessions_revoked,
            audit_id: outcome.audit_id.clone(),
            blocked: blocked.as_ref().map(BlockedView::new),
            next_step,
        },
    ))
}

/// What `user` must do to get back in, given what holds them out at `now` (docs/design.md §3: a
/// lock refuses every token until it ends; the watermark W refuses, until `holds_until`, tokens
/// without `auth_time` and tokens whose `auth_time` is not after W).
fn next_step(user: &str, blocked: Option<&BlockedUser>, now: UnixMillis) -> String {
    let lift = format!(
        "an administrator lifts it (DELETE /api/v1/users/{user}/revocation, or Lift under \
         Blocked users in the dashboard)"
    );
    let Some(b) = blocked else {
        return "Their sessions are ended and stay ended. Nothing else holds the user out now \
                (no watermark or lock is in force), so any valid token opens a new session."
            .into();
    };
    let holds = rfc3339(b.holds_until);
    let watermark = b.not_before.map(|at| {
        format!(
            "the user must sign in again interactively (password, security key, …): only a \
             token whose auth_time is after {} opens a session. Tokens without auth_time (or \
             with an earlier one) are refused until {holds} or until {lift}. A refreshed token \
             is not enough.",
            rfc3339(at)
        )
    });
    match (b.lock_until.filter(|until| *until > now), watermark) {
        (Some(until), Some(watermark)) if until < b.holds_until => format!(
            "The user is locked out: no token opens a session until {} or until {lift}. \
             After that, {watermark}",
            rfc3339(until)
        ),
        (Some(until), _) => format!(
            "The user is locked out: no token opens a session until {} or until {lift}. \
             After that nothing holds the user out and any valid token opens a session.",
            rfc3339(until)
        ),
        (None, Some(watermark)) => {
            let mut text = watermark;
            if let Some(first) = text.get_mut(..1) {
                first.make_ascii_uppercase();
            }
            text
        }
        (None, None) => format!(
            "Nothing holds the user out after {holds}; until then {lift} can let them in early."
        ),
    }
}

/// One blocked user with the revocation that blocked them (from the audit trail, when it is
/// still in the window read).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct BlockedUserItem {
    #[serde(flatten)]
    blocked: BlockedView,
    /// The newest `user.revoke` / `user.lock` record of the user.
    revocation: Option<RevocationSummary>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct RevocationSummary {
    audit_id: String,
    time: String,
    actor: String,
    reason: Option<String>,
}

/// Audit records read to find who blocked each listed user and why.
const BLOCKED_AUDIT_WINDOW: usize = 2_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BlockedQuery {
    limit: Option<usize>,
    offset: Option<usize>,
}

pub(super) async fn list_blocked(
    caller: Caller,
    State(state): State<AdminState>,
    q: Result<Query<BlockedQuery>, QueryRejection>,
) -> Result<Json<Page<BlockedUserItem>>, Problem> {
    let q = query(q)?;
    let limit = page(q.limit, DEFAULT_PAGE)?;
    let mut blocked = within(state.store.blocked_users(caller.tenant())).await?;
    // Newest revocation first.
    blocked.sort_by(|a, b| {
        b.not_before
            .cmp(&a.not_before)
            .then_with(|| a.user.cmp(&b.user))
    });
    let records = if blocked.is_empty() {
        Vec::new()
    } else {
        within(state.store.audit(caller.tenant(), BLOCKED_AUDIT_WINDOW)).await?
    };
    let items = blocked
        .iter()
        .map(|b| BlockedUserItem {
            blocked: BlockedView::new(b),
            revocation: records
                .iter()
                .find(|r| {
                    r.tenant == caller.tenant()
                        && matches!(r.action, Action::UserRevoke | Action::UserLock)
                        && r.target.user.as_ref() == Some(&b.user)
                })
                .map(|r| RevocationSummary {
                    audit_id: r.id.clone(),
                    time: r.time.clone(),
                    actor: r.actor.name.clone().unwrap_or_else(|| r.actor.id.clone()),
                    reason: r.reason.clone(),
                }),
        })
        .collect();
    Ok(Json(Page::of(items, q.offset.unwrap_or(0), limit)))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LiftBody {
    reason: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct LiftResult {
    user: String,
    audit_id: String,
    /// What was lifted.
    lifted: BlockedView,
}

/// Lifts a user's revoke-all watermark and lock (audited `user.unblock`): tokens that could
/// not prove a sign-in after the revocation open sessions again. Sessions that were ended
/// stay ended.
pub(super) async fn lift_revocation(
    Writer(caller): Writer,
    State(state): State<AdminState>,
    user: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Json<LiftResult>, Problem> {
    let user = path_id(user, "user")?;
    let body: LiftBody = json_body(&body)?;
    let reason = reason(body.reason)?;
    let not_blocked =
        || Problem::not_found("No revoke-all watermark or lock holds this user in your tenant.");
    let blocked = within(state.store.blocked_users(caller.tenant()))
        .await?
        .into_iter()
        .find(|b| b.user == user)
        .ok_or_else(not_blocked)?;
    let mut lifted = Vec::new();
    if let Some(at) = blocked.not_before {
        lifted.push(format!("revoke-all watermark of {}", rfc3339(at)));
    }
    if let Some(until) = blocked.lock_until {
        match &blocked.message {
            Some(message) => lifted.push(format!("lock until {} ({message})", rfc3339(until))),
            None => lifted.push(format!("lock until {}", rfc3339(until))),
        }
    }
    let record = AuditRecord {
        id: new_audit_id(),
        time: rfc3339(state.clock.now_ms()),
        tenant: caller.tenant().to_owned(),
        actor: caller.actor(),
        action: Action::UserUnblock,
        target: Target {
            user: Some(user.clone()),
            session: None,
        },
        reason: Some(reason),
        source: caller.source,
        sessions_revoked: None,
        detail: Some(format!("lifted {}", lifted.join(" and "))),
    };
    let audit_id = record.id.clone();
    // The store decides: `false` when nothing held the user any more (lifted meanwhile by
    // someone else, or just expired) — then nothing was written.
    if !within(state.store.unblock_user(caller.tenant(), &user, record)).await? {
        return Err(not_blocked());
    }
    Ok(Json(LiftResult {
        user,
        audit_id,
        lifted: BlockedView::new(&blocked),
    }))
}
