//! The change feed: one subscriber connection (RESP3 pushes) listens on the channels
//! `gf:{T}:changes` of the tenants asked for, and the published messages become
//! [`ChangeEvent`]s on the store's broadcast.

use std::collections::HashSet;
use std::time::Duration;

use redis::{PushInfo, PushKind, Value};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};

use super::RedisStore;
use super::codec::{prefix, session_from};
use super::connection::{Connection, unavailable};
use crate::policy::Policy;
use crate::session::EndReason;
use crate::store::{ChangeEvent, StoreError};

pub(super) struct Subscriber {
    connection: Connection,
    channels: HashSet<String>,
}

impl RedisStore {
    /// Subscribes the change feed of `tenant` on the subscriber connection.
    pub(super) async fn listen(&self, tenant: &str) -> Result<(), StoreError> {
        let channel = format!("{}changes", prefix(tenant));
        let mut guard = self.subscriber.lock().await;
        if guard.is_none() {
            let (push, received) = mpsc::unbounded_channel();
            let connection = self.connect(Some(push)).await?;
            tokio::spawn(forward_pushes(received, self.changes.clone()));
            *guard = Some(Subscriber {
                connection,
                channels: HashSet::new(),
            });
        }
        let subscriber = guard.as_mut().expect("made above");
        if subscriber.channels.contains(&channel) {
            return Ok(());
        }
        match &mut subscriber.connection {
            Connection::Single(c) => c.subscribe(&channel).await.map_err(unavailable)?,
            Connection::Cluster(c) => c.ssubscribe(&channel).await.map_err(unavailable)?,
        }
        subscriber.channels.insert(channel);
        Ok(())
    }
}

/// Turns published messages into change events; a lost connection means events may have been
/// missed, so every tenant is told to resync.
async fn forward_pushes(
    mut received: mpsc::UnboundedReceiver<PushInfo>,
    changes: broadcast::Sender<ChangeEvent>,
) {
    while let Some(push) = received.recv().await {
        match push.kind {
            PushKind::Message | PushKind::SMessage => {
                if let Some(event) = decode_push(&push.data) {
                    let _ = changes.send(event);
                }
            }
            PushKind::Disconnection => {
                let _ = changes.send(ChangeEvent::Resync {
                    tenant: String::new(),
                });
            }
            _ => {}
        }
    }
}

#[derive(Deserialize)]
struct Published {
    t: String,
    key: Option<String>,
    user: Option<String>,
    dn: Option<String>,
    anchor: Option<String>,
    started: Option<String>,
    seen: Option<String>,
    ip: Option<String>,
    ua: Option<String>,
    cl: Option<String>,
    reason: Option<String>,
    max_age_ms: Option<String>,
    source: Option<String>,
    idle_ms: Option<String>,
    max_per_user: Option<String>,
    on_limit: Option<String>,
}

pub(super) fn decode_push(data: &[Value]) -> Option<ChangeEvent> {
    let [channel, payload] = data else {
        return None;
    };
    let channel: String = redis::from_redis_value(channel.clone()).ok()?;
    let payload: String = redis::from_redis_value(payload.clone()).ok()?;
    let tenant = channel
        .strip_prefix("gf:{")?
        .strip_suffix("}:changes")?
        .to_owned();
    let message: Published = serde_json::from_str(&payload).ok()?;
    match message.t.as_str() {
        "created" => Some(ChangeEvent::SessionCreated {
            session: session_from(&tenant, message.key.as_deref()?, |name| match name {
                "user" => message.user.as_deref(),
                "dn" => message.dn.as_deref(),
                "anchor" => message.anchor.as_deref(),
                "started" => message.started.as_deref(),
                "seen" => message.seen.as_deref(),
                "ip" => message.ip.as_deref(),
                "ua" => message.ua.as_deref(),
                "cl" => message.cl.as_deref(),
                _ => None,
            })?,
            tenant,
        }),
        "ended" => Some(ChangeEvent::SessionEnded {
            session: message.key?,
            user: message.user.filter(|u| !u.is_empty()),
            reason: match message.reason.as_deref() {
                Some("expired") => EndReason::Expired,
                Some("idle") => EndReason::Idle,
                _ => EndReason::Revoked,
            },
            tenant,
        }),
        "blocks" => Some(ChangeEvent::UserBlocksChanged {
            user: message.user.filter(|u| !u.is_empty())?,
            tenant,
        }),
        "policy" => {
            let (idle_timeout, max_sessions_per_user, on_limit) = super::codec::policy_rules(
                message.idle_ms.as_deref(),
                message.max_per_user.as_deref(),
                message.on_limit.as_deref(),
            )
            .ok()?;
            Some(ChangeEvent::PolicyChanged {
                policy: Policy {
                    max_session_age: Duration::from_millis(message.max_age_ms?.parse().ok()?),
                    idle_timeout,
                    max_sessions_per_user,
                    on_limit,
                    source: serde_json::from_str(&message.source?).ok()?,
                },
                tenant,
            })
        }
        _ => None,
    }
}
