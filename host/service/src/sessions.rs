//! Data classification per agent session (the aggregation rule): a session
//! is as sensitive as the most sensitive thing it has read. Each successful
//! call raises the session's tier to the classification of what the action
//! returns; an action that sends data to a destination below the session's
//! tier is refused (`guard.classification`).
//!
//! A session is the id the agent sends (`x-warden-session` over HTTP), or,
//! without one, its access token: a fresh token is a fresh session. Tiers
//! live in the serving process's memory, forgotten a day after a session's
//! last call.

use std::collections::HashMap;
use std::sync::Mutex;

use warden_policy::Classification;

/// Sessions idle this long are forgotten.
const IDLE_SECS: i64 = 86_400;
/// Past this many sessions, idle ones are swept on insert.
const SWEEP_AT: usize = 10_000;

/// (tenant, agent id, session id).
pub(crate) type Key = (String, String, String);

#[derive(Debug, Default)]
pub(crate) struct Sessions {
    tiers: Mutex<HashMap<Key, (Classification, i64)>>,
}

impl Sessions {
    /// The session's tier so far (`public` when it has read nothing).
    pub fn tier(&self, key: &Key) -> Classification {
        self.lock()
            .get(key)
            .map_or(Classification::Public, |(c, _)| *c)
    }

    /// Raises the session's tier after it read data of `read`.
    pub fn read(&self, key: &Key, read: Classification, now: i64) {
        let mut tiers = self.lock();
        if tiers.len() >= SWEEP_AT {
            tiers.retain(|_, (_, seen)| now - *seen < IDLE_SECS);
        }
        let e = tiers.entry(key.clone()).or_insert((read, now));
        e.0 = e.0.max(read);
        e.1 = now;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (Classification, i64)>> {
        self.tiers.lock().unwrap_or_else(|p| p.into_inner())
    }
}
