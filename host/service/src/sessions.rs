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
use warden_policy::cedar::SessionFacts;

/// Sessions idle this long are forgotten.
const IDLE_SECS: i64 = 86_400;
/// Past this many sessions, idle ones are swept on insert.
const SWEEP_AT: usize = 10_000;

/// (tenant, agent id, session id).
pub(crate) type Key = (String, String, String);

/// Most distinct `tool/action` names remembered per session.
const MAX_TOOLS: usize = 64;

#[derive(Debug, Clone)]
struct Session {
    tier: Option<Classification>,
    seen: i64,
    calls: u64,
    tools: Vec<String>,
}

#[derive(Debug, Default)]
pub(crate) struct Sessions {
    sessions: Mutex<HashMap<Key, Session>>,
}

impl Sessions {
    /// The session's tier so far (`public` when it has read nothing).
    pub fn tier(&self, key: &Key) -> Classification {
        self.lock()
            .get(key)
            .and_then(|s| s.tier)
            .unwrap_or(Classification::Public)
    }

    /// What the session did so far, for policies (`context.session`).
    pub fn facts(&self, key: &Key) -> SessionFacts {
        match self.lock().get(key) {
            Some(s) => SessionFacts {
                id: key.2.clone(),
                tier: s.tier,
                calls: s.calls,
                tools: s.tools.clone(),
            },
            None => SessionFacts {
                id: key.2.clone(),
                ..SessionFacts::default()
            },
        }
    }

    /// Records a successful call of `tool/action` that read data of `read`,
    /// raising the session's tier.
    pub fn read(&self, key: &Key, tool_action: &str, read: Classification, now: i64) {
        let mut sessions = self.lock();
        if sessions.len() >= SWEEP_AT {
            sessions.retain(|_, s| now - s.seen < IDLE_SECS);
        }
        let s = sessions.entry(key.clone()).or_insert(Session {
            tier: None,
            seen: now,
            calls: 0,
            tools: Vec::new(),
        });
        s.tier = Some(s.tier.map_or(read, |t| t.max(read)));
        s.seen = now;
        s.calls += 1;
        if s.tools.len() < MAX_TOOLS && !s.tools.iter().any(|t| t == tool_action) {
            s.tools.push(tool_action.to_owned());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
}
