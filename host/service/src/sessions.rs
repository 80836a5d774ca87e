//! Data classification per agent session (the aggregation rule): a session
//! is as sensitive as the most sensitive thing it has read. Each successful
//! call raises the session's tier to the classification of what the action
//! returns; an action that sends data to a destination below the session's
//! tier is refused (`guard.classification`).
//!
//! A session is the id the agent sends (`x-warden-session` over HTTP), or,
//! without one, its access token: a fresh token is a fresh session. Tiers
//! live in the serving process's memory, forgotten a day after a session's
//! last call; on PostgreSQL, where several nodes may serve one agent, they
//! live in the database instead ([`shared_facts`], [`record_shared`]), so a
//! session restricted on one node is restricted on all, and the minute
//! sweep deletes those idle for a day ([`prune_shared`]).

use std::collections::HashMap;
use std::sync::Mutex;

use warden_policy::Classification;
use warden_policy::cedar::SessionFacts;
use warden_store::TenantStore;

/// Classifications by rank, as stored (0 = public).
const RANKS: [Classification; 4] = [
    Classification::Public,
    Classification::Internal,
    Classification::Confidential,
    Classification::Restricted,
];

fn rank(c: Classification) -> i64 {
    RANKS
        .iter()
        .position(|r| *r == c)
        .unwrap_or(RANKS.len() - 1) as i64
}

/// What the session did so far, from the database (several nodes). An
/// unknown stored rank reads as the highest tier (fail closed).
pub(crate) async fn shared_facts(
    store: &TenantStore,
    key: &Key,
) -> warden_store::Result<SessionFacts> {
    let s = store.data_session(&key.1, &key.2, MAX_TOOLS as i64).await?;
    Ok(SessionFacts {
        id: key.2.clone(),
        tier: s.rank.map(|r| {
            usize::try_from(r)
                .ok()
                .and_then(|i| RANKS.get(i).copied())
                .unwrap_or(Classification::Restricted)
        }),
        calls: s.calls.max(0) as u64,
        tools: s.tools,
    })
}

/// [`Sessions::read`] in the database (several nodes).
pub(crate) async fn record_shared(
    store: &TenantStore,
    key: &Key,
    tool_action: &str,
    read: Classification,
    now: i64,
) -> warden_store::Result<()> {
    store
        .record_data_session(&key.1, &key.2, tool_action, rank(read), now)
        .await
}

/// Forgets the shared sessions idle for [`IDLE_SECS`] (several nodes; the
/// periodic sweep calls it), as a single process forgets them.
pub(crate) async fn prune_shared(store: &TenantStore, now: i64) -> warden_store::Result<u64> {
    store.prune_data_sessions(now - IDLE_SECS).await
}

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
