//! Invocations started through the API, by id: running or completed with
//! their report, readable only by the agent that started them.
//!
//! Kept in memory and bounded: the durable record of every call is the audit
//! trail (a later issue); this table only lets an asynchronous caller collect
//! its answer.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;
use warden_runtime::Report;

/// Most completed invocations kept for collection; older ones are dropped
/// first (a bound on memory, not a retention promise).
const KEEP_COMPLETED: usize = 10_000;

/// State of one invocation.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum State {
    Running,
    Completed {
        #[serde(flatten)]
        report: Box<Report>,
    },
}

#[derive(Debug)]
struct Entry {
    tenant: String,
    agent_id: String,
    state: State,
}

/// The invocation table.
#[derive(Debug, Default)]
pub struct Invocations {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_id: HashMap<String, Entry>,
    completed: VecDeque<String>,
}

impl Invocations {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a started invocation.
    pub fn start(&self, id: &str, tenant: &str, agent_id: &str) {
        self.lock().by_id.insert(
            id.to_owned(),
            Entry {
                tenant: tenant.to_owned(),
                agent_id: agent_id.to_owned(),
                state: State::Running,
            },
        );
    }

    /// Records an invocation's report.
    pub fn complete(&self, id: &str, report: Report) {
        let mut inner = self.lock();
        if let Some(e) = inner.by_id.get_mut(id) {
            e.state = State::Completed {
                report: Box::new(report),
            };
            inner.completed.push_back(id.to_owned());
        }
        while inner.completed.len() > KEEP_COMPLETED {
            if let Some(old) = inner.completed.pop_front() {
                inner.by_id.remove(&old);
            }
        }
    }

    /// Forgets an invocation that never ran to completion (cancelled).
    pub fn forget(&self, id: &str) {
        self.lock().by_id.remove(id);
    }

    /// The state of an invocation, if it belongs to this agent. Another
    /// agent's or tenant's id reads as unknown.
    pub fn get(&self, id: &str, tenant: &str, agent_id: &str) -> Option<State> {
        let inner = self.lock();
        let e = inner.by_id.get(id)?;
        (e.tenant == tenant && e.agent_id == agent_id).then(|| e.state.clone())
    }
}
