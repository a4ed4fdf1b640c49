//! Listing sessions in Redis ([`crate::listing`]) without reading the whole tenant where the
//! keys allow it:
//! - a user's sessions: the per-user set `gf:{T}:us:<user>` (`SMEMBERS`, then one `HGETALL`
//!   per session in one pipeline): O(the user's sessions);
//! - no filter, sorted by start: a keyset walk of `gf:{T}:live` (scored by start; equal
//!   scores are ordered by key, as the listing orders them), then one `HGETALL` per row of
//!   the page: O(log n + page); the total is one `ZCOUNT`;
//! - anything else (display-name prefix, IP range, browser, sort by last seen): every live
//!   session of the tenant is read (`ZRANGE` + one pipelined `HGETALL` each) and the page is
//!   cut here: O(tenant) per page.

use std::collections::HashMap;

use super::RedisStore;
use super::codec::{parse_session, prefix};
use super::connection::unavailable;
use crate::clock::millis;
use crate::listing::{self, Direction, SessionPage, SessionQuery, SortKey};
use crate::session::SessionRecord;
use crate::store::{SessionStore, StoreError};

/// Keys read from `gf:{T}:live` per round trip while walking it.
const WALK_BATCH: usize = 512;
/// Round trips one page may take walking `gf:{T}:live` (past the cursor, entries of the same
/// start as the cursor are skipped one batch at a time).
const WALK_ROUNDS: usize = 64;

impl RedisStore {
    /// The page `query` asks for (see the module doc for what each kind costs).
    pub(super) async fn list_page(
        &self,
        tenant: &str,
        query: &SessionQuery,
    ) -> Result<SessionPage, StoreError> {
        if let Some(user) = &query.user {
            let sessions = self.user_sessions(tenant, user).await?;
            return Ok(listing::page(query, &sessions));
        }
        if query.scans() || query.sort != SortKey::Started {
            let sessions = self.sessions(tenant).await?;
            return Ok(listing::page(query, &sessions));
        }
        self.walk_by_start(tenant, query).await
    }

    /// The user's live sessions, through the per-user set.
    pub(super) async fn user_sessions(
        &self,
        tenant: &str,
        user: &str,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let p = prefix(tenant);
        let call = async {
            let mut connection = self.connection().await?;
            let keys: Vec<String> = redis::cmd("SMEMBERS")
                .arg(format!("{p}us:{user}"))
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            let rows = self.read_sessions(&mut connection, &p, &keys).await?;
            Ok((keys, rows))
        };
        let (keys, rows) = self.within(self.settings.write_timeout, call).await?;
        let max_age = millis(self.policy(tenant).await?.max_session_age);
        let now = self.clock.now_ms();
        // The set may name sessions that ended (removed when next met): only the live ones of
        // this user count.
        Ok(keys
            .iter()
            .zip(rows)
            .filter_map(|(key, fields)| parse_session(tenant, key, fields))
            .filter(|s| s.user == user && now - s.started_at < max_age)
            .collect())
    }

    /// One live session by key: one `HGETALL`.
    pub(super) async fn one_session(
        &self,
        tenant: &str,
        key: &str,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let p = prefix(tenant);
        let keys = [key.to_owned()];
        let call = async {
            let mut connection = self.connection().await?;
            self.read_sessions(&mut connection, &p, &keys).await
        };
        let rows = self.within(self.settings.write_timeout, call).await?;
        let max_age = millis(self.policy(tenant).await?.max_session_age);
        let now = self.clock.now_ms();
        Ok(rows
            .into_iter()
            .next()
            .and_then(|fields| parse_session(tenant, key, fields))
            .filter(|s| now - s.started_at < max_age))
    }

    async fn read_sessions(
        &self,
        connection: &mut super::connection::Connection,
        p: &str,
        keys: &[String],
    ) -> Result<Vec<HashMap<String, String>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.hgetall(format!("{p}s:{key}"));
        }
        let rows: Vec<HashMap<String, String>> =
            pipe.query_async(connection).await.map_err(unavailable)?;
        if rows.len() != keys.len() {
            return Err(super::codec::malformed("a pipelined HGETALL reply"));
        }
        Ok(rows)
    }

    /// A page of every live session by start, from the cursor on, walking `gf:{T}:live`.
    async fn walk_by_start(
        &self,
        tenant: &str,
        query: &SessionQuery,
    ) -> Result<SessionPage, StoreError> {
        let max_age = millis(self.policy(tenant).await?.max_session_age);
        let now = self.clock.now_ms();
        let oldest = now - max_age; // live: started > oldest
        let p = prefix(tenant);
        let live = format!("{p}live");
        let limit = query.limit.max(1);
        let descending = query.direction == Direction::Descending;
        let call = async {
            let mut connection = self.connection().await?;
            let total: usize = redis::cmd("ZCOUNT")
                .arg(&live)
                .arg(format!("({oldest}"))
                .arg("+inf")
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            // From the cursor's start (inclusive: equal starts are sorted by key) towards the
            // end of the order, never past the live range.
            let (from, to) = match (&query.after, descending) {
                (Some(after), true) => (after.value.to_string(), format!("({oldest}")),
                (None, true) => ("+inf".to_owned(), format!("({oldest}")),
                (Some(after), false) => (after.value.max(oldest + 1).to_string(), "+inf".into()),
                (None, false) => (format!("({oldest}"), "+inf".into()),
            };
            let command = if descending {
                "ZREVRANGEBYSCORE"
            } else {
                "ZRANGEBYSCORE"
            };
            let mut walked: Vec<(String, i64)> = Vec::with_capacity(limit + 1);
            let mut offset = 0;
            // The last entry looked at, and whether the walk reached the end of the range.
            let mut scanned: Option<(String, i64)> = None;
            let mut finished = false;
            for _ in 0..WALK_ROUNDS {
                let batch: Vec<(String, f64)> = redis::cmd(command)
                    .arg(&live)
                    .arg(&from)
                    .arg(&to)
                    .arg("WITHSCORES")
                    .arg("LIMIT")
                    .arg(offset)
                    .arg(WALK_BATCH)
                    .query_async(&mut connection)
                    .await
                    .map_err(unavailable)?;
                offset += batch.len();
                finished = batch.len() < WALK_BATCH;
                // Scores are whole milliseconds, exact in a double.
                let batch: Vec<(String, i64)> = batch
                    .into_iter()
                    .map(|(key, score)| (key, score as i64))
                    .collect();
                scanned = batch.last().cloned().or(scanned);
                let room = limit + 1 - walked.len();
                walked.extend(
                    batch
                        .into_iter()
                        .filter(|(key, start)| query.is_after(*start, key))
                        .take(room),
                );
                if finished || walked.len() > limit {
                    break;
                }
            }
            let more = walked.len() > limit;
            walked.truncate(limit);
            // Out of rounds before the page was known to be the last (a long run of entries at
            // the cursor's start, all skipped): the next page resumes after the last entry
            // looked at, so no session is ever skipped.
            if !more && !finished {
                let next = scanned.map(|(key, start)| query.cursor(false, start, &key));
                let keys: Vec<String> = walked.iter().map(|(key, _)| key.clone()).collect();
                let rows = self.read_sessions(&mut connection, &p, &keys).await?;
                return Ok((total, keys, rows, next));
            }
            let keys: Vec<String> = walked.iter().map(|(key, _)| key.clone()).collect();
            let rows = self.read_sessions(&mut connection, &p, &keys).await?;
            // The next page starts after the last key walked, read back or not.
            let next = more
                .then(|| walked.last())
                .flatten()
                .map(|(key, start)| query.cursor(false, *start, key));
            Ok((total, keys, rows, next))
        };
        let (total, keys, rows, next_cursor) =
            self.within(self.settings.write_timeout, call).await?;
        // A session that ended between the two reads is left out of this page.
        let sessions: Vec<SessionRecord> = keys
            .iter()
            .zip(rows)
            .filter_map(|(key, fields)| parse_session(tenant, key, fields))
            .collect();
        Ok(SessionPage {
            sessions,
            total,
            next_cursor,
        })
    }
}
