//! Listing a tenant's live sessions on the server: filters, sort, keyset pages and grouping by
//! user — one implementation for every store that holds its sessions in this process, and the
//! rules Redis follows for the parts it answers itself.
//!
//! Pages are keyset pages on (sort key, session key): the cursor names the last row shown, and
//! the next page starts strictly after it in the same order. A session that existed on both
//! sides of a page break is therefore never skipped nor shown twice, whatever started or ended
//! in between (sessions that start later appear on a later page when they sort after the
//! cursor). Sorting by last seen moves a session when it is used; a session used between two
//! pages can move across the break (it is the same session, now with another last seen).
//!
//! The cursor is opaque to clients (base64url of a small JSON document); it names its query
//! (sort, direction and filters) and a cursor of another query, or one that does not decode,
//! is refused ([`ListingError`]).

use std::cmp::Ordering;
use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::clock::UnixMillis;
use crate::session::SessionRecord;

/// Rows per page unless asked otherwise.
pub const DEFAULT_LIMIT: usize = 100;
/// Rows per page at most.
pub const MAX_LIMIT: usize = 500;

/// What sessions are sorted by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SortKey {
    /// When the session started.
    #[default]
    Started,
    /// When the session was last used.
    LastSeen,
}

/// Which way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    /// Oldest first.
    Ascending,
    /// Newest first.
    #[default]
    Descending,
}

/// A request that cannot be answered: a cursor that does not decode or belongs to another
/// query, a malformed address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListingError {
    #[error("the cursor is not valid: pass back the nextCursor of the previous page unchanged")]
    BadCursor,
    #[error(
        "the cursor belongs to another query: keep the filters and sort of the page it came from"
    )]
    CursorOfAnotherQuery,
    #[error("`{0}` is neither an IP address nor a CIDR range (e.g. 10.0.0.0/8)")]
    BadNetwork(String),
}

/// Where a page starts: strictly after this (sort value, key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct After {
    pub value: i64,
    pub key: String,
}

/// A listing request. Every filter given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionQuery {
    /// Exactly this user id (`oid`). Stores answer it through a per-user index: O(result).
    pub user: Option<String>,
    /// A case-insensitive prefix of the display name or of the user id. Scans the tenant.
    pub name_prefix: Option<String>,
    /// The client IP is in this network (a single address is a /32 or /128). Scans the tenant.
    pub network: Option<IpNet>,
    /// A case-insensitive part of the browser label ("Chrome on Windows 10"). Scans the tenant.
    pub browser: Option<String>,
    pub sort: SortKey,
    pub direction: Direction,
    /// Rows per page (1..=[`MAX_LIMIT`]).
    pub limit: usize,
    /// Where the page starts (decoded from a cursor).
    pub after: Option<After>,
}

/// The JSON inside a cursor.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct CursorData {
    v: u8,
    sort: SortKey,
    dir: Direction,
    user: Option<String>,
    name: Option<String>,
    ip: Option<String>,
    browser: Option<String>,
    grouped: bool,
    at: i64,
    key: String,
}

/// An IP address (a host network) or a CIDR range.
pub fn parse_network(text: &str) -> Result<IpNet, ListingError> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| ListingError::BadNetwork(text.chars().take(64).collect()))
}

/// A query's filters, lower-cased once for a pass over many sessions.
struct Matcher<'q> {
    query: &'q SessionQuery,
    name: Option<String>,
    browser: Option<String>,
}

impl<'q> Matcher<'q> {
    fn new(query: &'q SessionQuery) -> Self {
        Self {
            query,
            name: query.name_prefix.as_ref().map(|p| p.to_lowercase()),
            browser: query.browser.as_ref().map(|b| b.to_lowercase()),
        }
    }

    fn matches(&self, session: &SessionRecord) -> bool {
        if self
            .query
            .user
            .as_ref()
            .is_some_and(|user| *user != session.user)
        {
            return false;
        }
        if let Some(prefix) = &self.name {
            let named = session
                .display_name
                .as_ref()
                .is_some_and(|name| name.to_lowercase().starts_with(prefix.as_str()));
            if !named && !session.user.to_lowercase().starts_with(prefix.as_str()) {
                return false;
            }
        }
        if let Some(network) = &self.query.network
            && !session.client_ip.is_some_and(|ip| network.contains(&ip))
        {
            return false;
        }
        if let Some(part) = &self.browser
            && !session
                .client_label
                .as_ref()
                .is_some_and(|label| label.to_lowercase().contains(part.as_str()))
        {
            return false;
        }
        true
    }
}

impl SessionQuery {
    /// The first page of everything, newest first.
    pub fn new() -> Self {
        Self {
            limit: DEFAULT_LIMIT,
            ..Self::default()
        }
    }

    /// Whether a filter other than the user is set (the listing must look at every session
    /// of the tenant, or of the user).
    pub fn scans(&self) -> bool {
        self.name_prefix.is_some() || self.network.is_some() || self.browser.is_some()
    }

    /// Whether `session` passes every filter.
    pub fn matches(&self, session: &SessionRecord) -> bool {
        Matcher::new(self).matches(session)
    }

    /// The sort value of `session`.
    pub fn value(&self, session: &SessionRecord) -> UnixMillis {
        match self.sort {
            SortKey::Started => session.started_at,
            SortKey::LastSeen => session.last_seen,
        }
    }

    /// The order of two rows (value, key) in this query's direction.
    pub fn order(&self, a: (i64, &str), b: (i64, &str)) -> Ordering {
        let ascending = a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1));
        match self.direction {
            Direction::Ascending => ascending,
            Direction::Descending => ascending.reverse(),
        }
    }

    /// Whether the row (value, key) comes after the cursor (always, without one).
    pub fn is_after(&self, value: i64, key: &str) -> bool {
        self.after
            .as_ref()
            .is_none_or(|after| self.order((value, key), (after.value, &after.key)).is_gt())
    }

    fn cursor_data(&self, grouped: bool, value: i64, key: &str) -> CursorData {
        CursorData {
            v: 1,
            sort: self.sort,
            dir: self.direction,
            user: self.user.clone(),
            name: self.name_prefix.clone(),
            ip: self.network.map(|n| n.to_string()),
            browser: self.browser.clone(),
            grouped,
            at: value,
            key: key.to_owned(),
        }
    }

    /// The opaque cursor of a page that ends with the row (value, key).
    pub fn cursor(&self, grouped: bool, value: i64, key: &str) -> String {
        let json = serde_json::to_vec(&self.cursor_data(grouped, value, key))
            .expect("a cursor serializes");
        URL_SAFE_NO_PAD.encode(json)
    }

    /// Sets where the page starts from a cursor of this same query (with the same filters,
    /// sort, direction and grouping).
    pub fn resume(&mut self, cursor: &str, grouped: bool) -> Result<(), ListingError> {
        if cursor.len() > 4096 {
            return Err(ListingError::BadCursor);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(cursor.trim())
            .map_err(|_| ListingError::BadCursor)?;
        let data: CursorData =
            serde_json::from_slice(&bytes).map_err(|_| ListingError::BadCursor)?;
        if data.v != 1 {
            return Err(ListingError::BadCursor);
        }
        if data != self.cursor_data(grouped, data.at, &data.key) {
            return Err(ListingError::CursorOfAnotherQuery);
        }
        self.after = Some(After {
            value: data.at,
            key: data.key,
        });
        Ok(())
    }
}

/// One page of sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPage {
    pub sessions: Vec<SessionRecord>,
    /// Sessions matching the filters, on every page.
    pub total: usize,
    /// The cursor of the next page, when there are more rows.
    pub next_cursor: Option<String>,
}

/// One user's live sessions, summed up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserGroup {
    pub user: String,
    /// The display name of the newest of the user's sessions that has one.
    pub display_name: Option<String>,
    /// How many live sessions (matching the filters) the user has.
    pub sessions: usize,
    /// The newest start among them.
    pub newest_start: UnixMillis,
    /// The latest last seen among them.
    pub last_seen: UnixMillis,
}

impl UserGroup {
    fn value(&self, sort: SortKey) -> i64 {
        match sort {
            SortKey::Started => self.newest_start,
            SortKey::LastSeen => self.last_seen,
        }
    }
}

/// One page of users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPage {
    pub users: Vec<UserGroup>,
    /// Users with sessions matching the filters.
    pub total: usize,
    pub next_cursor: Option<String>,
}

/// The first `limit` of `rows` after the cursor, in order, and whether more follow.
fn first<T>(
    query: &SessionQuery,
    mut rows: Vec<T>,
    key: impl Fn(&T) -> (i64, &str),
) -> (Vec<T>, bool) {
    let limit = query.limit.max(1);
    let cmp = |a: &T, b: &T| query.order(key(a), key(b));
    let more = rows.len() > limit;
    if more {
        // Only the page is sorted: O(n + limit log limit).
        rows.select_nth_unstable_by(limit, cmp);
        rows.truncate(limit);
    }
    rows.sort_unstable_by(cmp);
    (rows, more)
}

/// The page of `sessions` (every live session the filters may need to see: the tenant's,
/// or the user's when the query names one) that `query` asks for.
pub fn page<'a>(
    query: &SessionQuery,
    sessions: impl IntoIterator<Item = &'a SessionRecord>,
) -> SessionPage {
    let matcher = Matcher::new(query);
    let mut total = 0;
    let rows: Vec<&SessionRecord> = sessions
        .into_iter()
        .filter(|s| matcher.matches(s))
        .inspect(|_| total += 1)
        .filter(|s| query.is_after(query.value(s), &s.id))
        .collect();
    let (rows, more) = first(query, rows, |s| (query.value(s), s.id.as_str()));
    let next_cursor = more
        .then(|| rows.last())
        .flatten()
        .map(|s| query.cursor(false, query.value(s), &s.id));
    SessionPage {
        sessions: rows.into_iter().cloned().collect(),
        total,
        next_cursor,
    }
}

/// The page of users (one row per user with the count of their sessions matching the
/// filters), sorted by their newest start or latest last seen, then user id.
pub fn group<'a>(
    query: &SessionQuery,
    sessions: impl IntoIterator<Item = &'a SessionRecord>,
) -> UserPage {
    let mut users: std::collections::HashMap<&str, (UserGroup, UnixMillis)> =
        std::collections::HashMap::new();
    let matcher = Matcher::new(query);
    for s in sessions.into_iter().filter(|s| matcher.matches(s)) {
        let (group, named_at) = users.entry(&s.user).or_insert_with(|| {
            (
                UserGroup {
                    user: s.user.clone(),
                    display_name: None,
                    sessions: 0,
                    newest_start: s.started_at,
                    last_seen: s.last_seen,
                },
                UnixMillis::MIN,
            )
        });
        group.sessions += 1;
        group.newest_start = group.newest_start.max(s.started_at);
        group.last_seen = group.last_seen.max(s.last_seen);
        if s.display_name.is_some() && s.started_at >= *named_at {
            group.display_name.clone_from(&s.display_name);
            *named_at = s.started_at;
        }
    }
    let total = users.len();
    let rows: Vec<UserGroup> = users
        .into_values()
        .map(|(group, _)| group)
        .filter(|g| query.is_after(g.value(query.sort), &g.user))
        .collect();
    let (rows, more) = first(query, rows, |g| (g.value(query.sort), g.user.as_str()));
    let next_cursor = more
        .then(|| rows.last())
        .flatten()
        .map(|g| query.cursor(true, g.value(query.sort), &g.user));
    UserPage {
        users: rows,
        total,
        next_cursor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SessionAnchor;

    fn session(id: &str, user: &str, started_at: i64, ip: &str) -> SessionRecord {
        SessionRecord {
            tenant: "t".into(),
            user: user.into(),
            display_name: Some(format!("Name {user}")),
            id: id.into(),
            anchor: SessionAnchor::Sid,
            started_at,
            last_seen: started_at + 5,
            client_ip: ip.parse().ok(),
            user_agent: None,
            client_label: Some("Firefox on Linux".into()),
        }
    }

    #[test]
    fn pages_walk_every_row_once_in_order_with_equal_sort_values() {
        let all: Vec<SessionRecord> = (0..25)
            .map(|i| session(&format!("s{i:02}"), "u", i / 4, "10.0.0.1"))
            .collect();
        let mut query = SessionQuery {
            limit: 7,
            ..SessionQuery::new()
        };
        let mut seen = Vec::new();
        for _ in 0..10 {
            let page = page(&query, &all);
            assert_eq!(page.total, 25);
            seen.extend(page.sessions.iter().map(|s| s.id.clone()));
            let Some(cursor) = page.next_cursor else {
                break;
            };
            query.resume(&cursor, false).unwrap();
        }
        let mut sorted: Vec<&SessionRecord> = all.iter().collect();
        sorted.sort_by(|x, y| (y.started_at, &y.id).cmp(&(x.started_at, &x.id)));
        let expected: Vec<String> = sorted.iter().map(|s| s.id.clone()).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn cursors_are_bound_to_their_query_and_must_decode() {
        let query = SessionQuery::new();
        let cursor = query.cursor(false, 5, "s1");
        let mut other = SessionQuery {
            browser: Some("fire".into()),
            ..SessionQuery::new()
        };
        assert_eq!(
            other.resume(&cursor, false),
            Err(ListingError::CursorOfAnotherQuery)
        );
        assert_eq!(
            SessionQuery::new().resume(&cursor, true),
            Err(ListingError::CursorOfAnotherQuery)
        );
        assert_eq!(
            SessionQuery::new().resume("not a cursor!", false),
            Err(ListingError::BadCursor)
        );
        let mut same = SessionQuery::new();
        same.resume(&cursor, false).unwrap();
        assert_eq!(
            same.after,
            Some(After {
                value: 5,
                key: "s1".into()
            })
        );
    }

    #[test]
    fn networks_are_addresses_or_ranges() {
        assert_eq!(
            parse_network("10.1.2.3").unwrap().to_string(),
            "10.1.2.3/32"
        );
        assert_eq!(
            parse_network("10.1.2.3/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert!(parse_network("10.1.2").is_err());
        let query = SessionQuery {
            network: Some(parse_network("10.0.0.0/8").unwrap()),
            ..SessionQuery::new()
        };
        assert!(query.matches(&session("a", "u", 1, "10.9.9.9")));
        assert!(!query.matches(&session("a", "u", 1, "11.0.0.1")));
        assert!(!query.matches(&session("a", "u", 1, "::1")));
    }

    #[test]
    fn groups_count_each_users_sessions() {
        let all = vec![
            session("a", "u1", 1, "10.0.0.1"),
            session("b", "u1", 3, "10.0.0.1"),
            session("c", "u2", 2, "10.0.0.1"),
        ];
        let page = group(&SessionQuery::new(), &all);
        assert_eq!(page.total, 2);
        let counts: Vec<(&str, usize)> = page
            .users
            .iter()
            .map(|g| (g.user.as_str(), g.sessions))
            .collect();
        assert_eq!(counts, [("u1", 2), ("u2", 1)]);
        assert_eq!(page.users[0].newest_start, 3);
    }
}
