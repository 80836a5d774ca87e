//! The call cache: authenticated sessions and resolved calls (grant, live
//! component, manifest), per tenant, valid for exactly one call generation.
//!
//! Every call reads the tenant's generation (one row, moved by triggers on
//! every committed change to what a call depends on, by any process) and uses
//! a cached entry only when it was made at that same generation. So a
//! revocation, suspension, deployment or grant change is seen by the very next
//! call, as without the cache. Time-based checks (token expiry, renewal date,
//! grant expiry) are made against the clock on every call, cached or not.
//! Only successes are cached; every refusal takes the full path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use warden_policy::{Grant, Manifest};
use warden_runtime::Tool;

use crate::calls::AgentSession;

/// Entries per tenant and kind before the map is emptied (a crude bound; a
/// generation change empties it anyway).
const MAX_ENTRIES: usize = 10_000;

/// A resolved, runnable call target.
#[derive(Clone)]
pub(crate) struct Resolved {
    pub grant: Arc<Grant>,
    pub tool: Arc<Tool>,
    pub manifest: Arc<Manifest>,
    pub grant_expires_at: i64,
}

#[derive(Default)]
struct TenantCache {
    generation: i64,
    sessions: HashMap<String, AgentSession>,
    resolved: HashMap<(String, String), Resolved>,
}

#[derive(Default)]
pub(crate) struct CallCache {
    tenants: Mutex<HashMap<String, TenantCache>>,
    /// When each agent's activity was last written (agent id → Unix seconds).
    touched: Mutex<HashMap<String, i64>>,
}

impl CallCache {
    fn with<T>(&self, tenant: &str, generation: i64, f: impl FnOnce(&mut TenantCache) -> T) -> T {
        let mut map = self
            .tenants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let t = map.entry(tenant.to_owned()).or_default();
        if t.generation != generation {
            // Never go back to an older generation: a slow reader must not
            // revive entries a newer change already dropped.
            if generation < t.generation {
                return f(&mut TenantCache {
                    generation,
                    ..TenantCache::default()
                });
            }
            *t = TenantCache {
                generation,
                ..TenantCache::default()
            };
        }
        f(t)
    }

    pub fn session(&self, tenant: &str, generation: i64, token_hash: &str) -> Option<AgentSession> {
        self.with(tenant, generation, |t| t.sessions.get(token_hash).cloned())
    }

    pub fn put_session(&self, tenant: &str, generation: i64, token_hash: &str, s: &AgentSession) {
        self.with(tenant, generation, |t| {
            if t.sessions.len() >= MAX_ENTRIES {
                t.sessions.clear();
            }
            t.sessions.insert(token_hash.to_owned(), s.clone());
        });
    }

    pub fn resolved(
        &self,
        tenant: &str,
        generation: i64,
        agent_id: &str,
        tool: &str,
    ) -> Option<Resolved> {
        self.with(tenant, generation, |t| {
            t.resolved
                .get(&(agent_id.to_owned(), tool.to_owned()))
                .cloned()
        })
    }

    pub fn put_resolved(
        &self,
        tenant: &str,
        generation: i64,
        agent_id: &str,
        tool: &str,
        r: &Resolved,
    ) {
        self.with(tenant, generation, |t| {
            if t.resolved.len() >= MAX_ENTRIES {
                t.resolved.clear();
            }
            t.resolved
                .insert((agent_id.to_owned(), tool.to_owned()), r.clone());
        });
    }

    /// Whether the agent's activity should be written now (at most once per
    /// `every` seconds), given what the store last said.
    pub fn should_touch(&self, agent_id: &str, stored: Option<i64>, now: i64, every: i64) -> bool {
        let mut map = self
            .touched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let last = map.get(agent_id).copied().max(stored);
        if last.is_some_and(|t| now - t < every) {
            return false;
        }
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(agent_id.to_owned(), now);
        true
    }
}
