//! Live updates for the dashboard: `GET /api/v1/events`, Server-Sent Events fed by the store's
//! change feed of the caller's tenant (every replica sees every change).
//!
//! Events (the `data` is JSON):
//! - `ready` once the subscription is live — the client (re)loads its tables after it, so no
//!   change between its last load and the subscription is lost;
//! - `session.created` (a session, as `GET /api/v1/sessions/{id}` shows it),
//!   `session.ended` (`{id, user, reason}`), `policy.changed` (the policy);
//! - `resync`: changes were lost (a slow client): reload everything;
//! - `end` (`{reason}`) before the server closes the stream: the caller's token expired or its
//!   own session ended. The client must sign in again rather than reconnect.
//!
//! Comments (`: keep-alive`) every 15 s keep proxies from closing an idle stream. Browsers
//! cannot send an `Authorization` header with `EventSource`, so the dashboard reads this
//! stream with `fetch()`.
//!
//! One administrator holds at most [`MAX_STREAMS_PER_ADMIN`] streams at once per (tenant,
//! user id), per process ([`StreamSlots`]): the next is answered 429 `too-many-streams` with
//! `Retry-After`. A stream's slot is freed when the stream is dropped — it ended, or the client
//! went away.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use grantflow_core::clock::Clock;
use grantflow_core::store::{ChangeEvent, ChangeStream};
use parking_lot::Mutex;
use serde_json::json;
use tokio::time::Sleep;

use super::caller::Caller;
use super::problem::Problem;
use super::views::{PolicyView, SessionView};
use super::{AdminState, within};

/// Interval of the keep-alive comments.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Longest a stream stays open without re-authentication, whatever the token says.
const MAX_STREAM: Duration = Duration::from_secs(24 * 60 * 60);
/// Streams one administrator (tenant, user id) may hold open at once in this process: a
/// dashboard holds one per open tab.
pub const MAX_STREAMS_PER_ADMIN: usize = 8;
/// The `Retry-After` of a refused stream, in seconds: a slot frees when a tab closes.
pub const STREAM_RETRY_AFTER_SECS: u64 = 10;

/// The open streams of each administrator, by (tenant, user id).
#[derive(Default)]
pub struct StreamSlots {
    open: Mutex<HashMap<(String, String), usize>>,
}

/// One open stream's place; dropping it frees the place.
pub struct StreamSlot {
    slots: Arc<StreamSlots>,
    admin: (String, String),
}

impl StreamSlots {
    /// A place for one more stream of `user` in `tenant`, unless they hold the most already.
    pub fn take(self: &Arc<Self>, tenant: &str, user: &str) -> Option<StreamSlot> {
        let admin = (tenant.to_owned(), user.to_owned());
        let mut open = self.open.lock();
        let count = open.entry(admin.clone()).or_default();
        if *count >= MAX_STREAMS_PER_ADMIN {
            return None;
        }
        *count += 1;
        Some(StreamSlot {
            slots: self.clone(),
            admin,
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock();
        if let Some(count) = open.get_mut(&self.admin) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.admin);
            }
        }
    }
}

struct Feed {
    changes: ChangeStream,
    tenant: String,
    own_session: String,
    clock: Arc<dyn Clock>,
    token_expiry: Pin<Box<Sleep>>,
    ready_sent: bool,
    ending: Option<&'static str>,
    done: bool,
    /// Held while the stream lives: dropped with it.
    _slot: StreamSlot,
}

pub(super) async fn stream(
    caller: Caller,
    State(state): State<AdminState>,
    Extension(slots): Extension<Arc<StreamSlots>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    let slot = slots
        .take(caller.tenant(), &caller.identity.user)
        .ok_or_else(|| Problem::too_many_streams(STREAM_RETRY_AFTER_SECS))?;
    let changes = within(state.store.subscribe(caller.tenant())).await?;
    let remaining = caller
        .identity
        .expires_at
        .saturating_sub(state.clock.now_secs())
        .max(0);
    let remaining = Duration::from_secs(u64::try_from(remaining).unwrap_or(0)).min(MAX_STREAM);
    let feed = Feed {
        changes,
        tenant: caller.tenant().to_owned(),
        own_session: caller.identity.session.id.clone(),
        clock: state.clock.clone(),
        token_expiry: Box::pin(tokio::time::sleep(remaining)),
        ready_sent: false,
        ending: None,
        done: false,
        _slot: slot,
    };
    let events = futures::stream::unfold(feed, |mut feed| async move {
        let event = feed.next_event().await?;
        Some((Ok(event), feed))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive")))
}

impl Feed {
    async fn next_event(&mut self) -> Option<Event> {
        if self.done {
            return None;
        }
        if !self.ready_sent {
            self.ready_sent = true;
            return Some(event("ready", json!({})));
        }
        if let Some(reason) = self.ending.take() {
            return Some(self.end(reason));
        }
        loop {
            tokio::select! {
                _ = &mut self.token_expiry => return Some(self.end("token-expired")),
                next = self.changes.next() => {
                    let Some(change) = next else {
                        // The store closed the feed; the client reconnects and reloads.
                        return Some(self.end("feed-closed"));
                    };
                    // Defence in depth: the store's feed is per tenant already.
                    if change.tenant() != self.tenant {
                        continue;
                    }
                    return Some(self.render(change));
                }
            }
        }
    }

    fn end(&mut self, reason: &'static str) -> Event {
        self.done = true;
        event("end", json!({ "reason": reason }))
    }

    fn render(&mut self, change: ChangeEvent) -> Event {
        match change {
            ChangeEvent::SessionCreated { session, .. } => event(
                "session.created",
                SessionView::new(&session, self.clock.now_ms()),
            ),
            ChangeEvent::SessionEnded {
                session,
                user,
                reason,
                ..
            } => {
                if session == self.own_session {
                    self.ending = Some("session-ended");
                }
                event(
                    "session.ended",
                    json!({ "id": session, "user": user, "reason": reason }),
                )
            }
            ChangeEvent::PolicyChanged { policy, .. } => {
                event("policy.changed", PolicyView::new(&policy))
            }
            ChangeEvent::UserBlocksChanged { user, .. } => {
                event("user.blocks", json!({ "user": user }))
            }
            ChangeEvent::Resync { .. } => event("resync", json!({})),
        }
    }
}

fn event(name: &str, data: impl serde::Serialize) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|_| Event::default().event("resync").data("{}"))
}
