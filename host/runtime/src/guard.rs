//! The one guard every guarded import call passes through.
//!
//! A [`Guard`] is built per call from the grant. Capability views ask it about
//! each [`ImportCall`] before touching their backend; it decides with
//! [`warden_policy::check_import`], records an [`ImportEvent`] and returns the
//! decision. Later layers (Cedar policy, approvals, audit) extend this one
//! entry point instead of adding checks of their own.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use warden_policy::{Capability, Decision, Grant, ImportCall, check_import};

/// Most guarded import calls one invocation may make. A security bound: it
/// keeps the event record of one call bounded, and a tool that needs more
/// calls than this is doing bulk work a single tool call should not do. Calls
/// past the bound are denied, not dropped silently.
pub const MAX_IMPORT_CALLS: usize = 10_000;

/// One guarded import call with its decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportEvent {
    /// Position in the call, from 0.
    pub seq: u32,
    pub capability: Capability,
    pub operation: &'static str,
    pub resource: String,
    #[serde(flatten)]
    pub decision: Decision,
    /// The effect's own failure after an allowed decision (e.g. `not-found`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Microseconds since the call started.
    pub at_us: u64,
}

#[derive(Debug)]
struct Inner {
    events: Vec<ImportEvent>,
    calls: usize,
}

/// The per-call guard. Cheap to clone; all clones share one record.
#[derive(Debug, Clone)]
pub struct Guard {
    grant: Arc<Grant>,
    started: Instant,
    inner: Arc<Mutex<Inner>>,
}

impl Guard {
    /// A guard for one call under `grant`.
    pub fn new(grant: Arc<Grant>) -> Guard {
        Guard {
            grant,
            started: Instant::now(),
            inner: Arc::new(Mutex::new(Inner {
                events: Vec::new(),
                calls: 0,
            })),
        }
    }

    /// The grant this guard enforces.
    pub fn grant(&self) -> &Grant {
        &self.grant
    }

    /// Decides `call`, records it, and returns the decision. Returns the event's
    /// sequence number with the decision so the caller can attach the effect's
    /// result with [`Guard::record_error`].
    pub fn check(&self, call: ImportCall) -> (u32, Decision) {
        let mut inner = self.lock();
        inner.calls += 1;
        let decision = if inner.calls > MAX_IMPORT_CALLS {
            Decision::Deny {
                reason: format!(
                    "guard: more than {MAX_IMPORT_CALLS} import calls in one invocation"
                ),
                rule: "guard.max_import_calls".to_owned(),
            }
        } else {
            check_import(&self.grant, &call)
        };
        let seq = u32::try_from(inner.events.len()).unwrap_or(u32::MAX);
        if inner.events.len() < MAX_IMPORT_CALLS {
            let event = ImportEvent {
                seq,
                capability: call.capability(),
                operation: call.operation(),
                resource: call.resource(),
                decision: decision.clone(),
                error: None,
                at_us: u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX),
            };
            tracing::debug!(target: "warden::guard", ?event, "import call");
            inner.events.push(event);
        }
        (seq, decision)
    }

    /// Attaches the effect's own failure to an allowed event.
    pub fn record_error(&self, seq: u32, error: String) {
        if let Some(e) = self.lock().events.get_mut(seq as usize) {
            e.error = Some(error);
        }
    }

    /// Turns an allowed event into a denial made by the sandbox itself after the
    /// guard allowed the call (for example a symlink that resolves outside a
    /// granted directory, refused by the capability-based filesystem).
    pub fn record_sandbox_denial(&self, seq: u32, rule: &str, reason: String) {
        if let Some(e) = self.lock().events.get_mut(seq as usize) {
            e.decision = Decision::Deny {
                reason,
                rule: rule.to_owned(),
            };
        }
    }

    /// The first denial of this call, if any.
    pub fn first_denial(&self) -> Option<ImportEvent> {
        self.lock()
            .events
            .iter()
            .find(|e| !e.decision.is_allow())
            .cloned()
    }

    /// Moves the events out, for the report at the end of a call.
    pub fn take_events(&self) -> Vec<ImportEvent> {
        std::mem::take(&mut self.lock().events)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means another thread panicked while holding it;
        // the record itself is still consistent (each update is one push).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}
