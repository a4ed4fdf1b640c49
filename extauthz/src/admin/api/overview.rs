//! The dashboard's overview (`GET /api/v1/overview`): live sessions now, and per minute over
//! the last hour the sessions started and the requests refused by reason — the caller's
//! tenant, as this replica decided them (`crate::activity`).

use axum::Json;
use axum::extract::State;
use grantflow_core::clock::rfc3339;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::activity::{Event, MINUTES};
use crate::admin::caller::Caller;
use crate::admin::problem::Problem;
use crate::admin::{AdminState, within};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Overview {
    /// Live sessions of the tenant now (the store's count: every replica's).
    live_sessions: usize,
    /// The per-minute counts are this replica's own.
    per_replica: bool,
    /// Minutes, oldest first; the last is the current (incomplete) minute.
    minutes: Vec<Map<String, Value>>,
    /// The reasons each minute counts, in the order the dashboard draws them.
    reasons: Vec<&'static str>,
}

pub(super) async fn overview(
    caller: Caller,
    State(state): State<AdminState>,
) -> Result<Json<Overview>, Problem> {
    let live_sessions = within(state.store.live_count(caller.tenant())).await?;
    let minutes = state
        .activity
        .last_hour(caller.tenant())
        .into_iter()
        .map(|minute| {
            let mut row = Map::new();
            row.insert("start".into(), rfc3339(minute.start).into());
            for event in Event::ALL {
                // Unverified tokens have no tenant: the replica's count is shown.
                let count = match event {
                    Event::InvalidToken => minute.invalid_tokens,
                    _ => minute.counts[event as usize],
                };
                row.insert(event.name().into(), count.into());
            }
            row
        })
        .collect::<Vec<_>>();
    debug_assert_eq!(minutes.len(), MINUTES);
    Ok(Json(Overview {
        live_sessions,
        per_replica: true,
        minutes,
        reasons: Event::ALL[1..].iter().map(|e| e.name()).collect(),
    }))
}
