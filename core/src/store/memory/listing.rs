//! Listing in the in-process stores ([`crate::listing`]): a user's sessions through the
//! per-user index of [`crate::decision::TenantSessions`] (O(result)); anything else is one
//! pass over the tenant's live sessions under the state lock (the page is selected, not the
//! whole tenant sorted). Sessions past the max age that housekeeping has not expired yet are
//! not live.

use super::MemoryStore;
use crate::clock::millis;
use crate::listing::{self, SessionPage, SessionQuery, UserPage};
use crate::session::SessionRecord;
use crate::store::tenant::Tenant;

impl MemoryStore {
    /// `f` over the tenant's live sessions that the query may need (the user's, when it
    /// names one), with the state lock held.
    fn with_live<T>(
        &self,
        tenant: &str,
        query: &SessionQuery,
        f: impl FnOnce(&mut dyn Iterator<Item = &SessionRecord>) -> T,
    ) -> T {
        let now = self.clock.now_ms();
        let tenants = self.tenants.lock();
        let Some(entry): Option<&Tenant> = tenants.get(tenant) else {
            return f(&mut std::iter::empty());
        };
        let sessions = &entry.sessions;
        let max_age = millis(sessions.policy(&self.limits).max_session_age);
        let live = |s: &&SessionRecord| now - s.started_at < max_age;
        match &query.user {
            Some(user) => f(&mut sessions.user_sessions(user).filter(live)),
            None => f(&mut sessions.live.values().filter(live)),
        }
    }

    pub(super) fn list_page(&self, tenant: &str, query: &SessionQuery) -> SessionPage {
        self.with_live(tenant, query, |sessions| listing::page(query, sessions))
    }

    pub(super) fn user_page(&self, tenant: &str, query: &SessionQuery) -> UserPage {
        self.with_live(tenant, query, |sessions| listing::group(query, sessions))
    }

    pub(super) fn live_session(&self, tenant: &str, key: &str) -> Option<SessionRecord> {
        let now = self.clock.now_ms();
        let tenants = self.tenants.lock();
        let entry = tenants.get(tenant)?;
        let max_age = millis(entry.sessions.policy(&self.limits).max_session_age);
        entry
            .sessions
            .live
            .get(key)
            .filter(|s| now - s.started_at < max_age)
            .cloned()
    }

    pub(super) fn count_live(&self, tenant: &str) -> usize {
        self.with_live(tenant, &SessionQuery::new(), |sessions| sessions.count())
    }
}
