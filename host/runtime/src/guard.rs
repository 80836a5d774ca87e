//! The one guard every guarded import call passes through.
//!
//! A [`Guard`] is built per call from the grant. Capability views ask it about
//! each [`ImportCall`] before touching their backend; it decides with
//! [`warden_policy::check_import`], records an [`ImportEvent`] and returns the
//! decision. Later layers (Cedar policy, approvals, audit) extend this one
//! entry point instead of adding checks of their own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use warden_policy::{Capability, Decision, Grant, ImportCall, check_import};

use crate::journal::{Divergence, JournalEntry, Tape, TapeHandle};
use crate::state::{ImportPolicy, ImportVerdict, WriteAhead};

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
    /// (name, value) of the secrets this call has read; kept in memory for
    /// the call only, to keep their values out of every record.
    secrets: Vec<(String, String)>,
    /// Import calls the policy held, waiting for [`Guard::before_effect`]:
    /// (seq, call, reason, rule).
    holds: Vec<(u32, ImportCall, String, String)>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Best effort: do not leave secret values in freed memory as is.
        for (_, v) in &mut self.secrets {
            v.clear();
        }
    }
}

/// Secret values shorter than this are not searched for (they would match
/// ordinary text); a granted secret this short is not a secret.
pub const MIN_SECRET_LEN: usize = 4;

/// Replaces every occurrence of a secret value in `text`; returns the names
/// found.
pub(crate) fn redact(text: &mut String, secrets: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for (name, value) in secrets {
        if value.len() >= MIN_SECRET_LEN && text.contains(value.as_str()) {
            *text = text.replace(value.as_str(), &format!("[redacted secret {name}]"));
            found.push(name.clone());
        }
    }
    found
}

/// Rule of the denial a replay gives an import call that differs from the
/// journal (the replay stops being faithful at that point).
pub const REPLAY_DIVERGED: &str = "replay.divergence";

/// The per-call guard. Cheap to clone; all clones share one record.
///
/// It also keeps the call's import journal ([`crate::journal`]): when
/// recording, each decision, request and result is written to it; when
/// replaying, decisions and results come from it and each call is compared
/// with the journaled one.
#[derive(Debug, Clone)]
pub struct Guard {
    grant: Arc<Grant>,
    started: Instant,
    inner: Arc<Mutex<Inner>>,
    tape: TapeHandle,
    write_ahead: Option<Arc<dyn WriteAhead>>,
    policy: Option<Arc<dyn ImportPolicy>>,
    /// Microseconds this call has waited for approvers (not its time).
    paused_us: Arc<AtomicU64>,
    /// When the current wait began (µs after `started`); 0: not waiting.
    waiting_since_us: Arc<AtomicU64>,
}

impl Guard {
    /// A guard for one call under `grant`.
    pub(crate) fn new(
        grant: Arc<Grant>,
        tape: TapeHandle,
        write_ahead: Option<Arc<dyn WriteAhead>>,
        policy: Option<Arc<dyn ImportPolicy>>,
    ) -> Guard {
        Guard {
            grant,
            started: Instant::now(),
            inner: Arc::new(Mutex::new(Inner {
                events: Vec::new(),
                calls: 0,
                secrets: Vec::new(),
                holds: Vec::new(),
            })),
            paused_us: Arc::new(AtomicU64::new(0)),
            waiting_since_us: Arc::new(AtomicU64::new(0)),
            tape,
            write_ahead,
            policy,
        }
    }

    /// Write-ahead: makes the decision of allowed import call `seq` durable
    /// before its effect. Capability views call it for every call that
    /// [leaves the sandbox](ImportCall::leaves_sandbox), after the guard
    /// allowed it and before acting. On failure the event becomes a denial
    /// (`audit.write_ahead`) and the effect must not happen. A replay acts
    /// on nothing and writes nothing.
    pub async fn before_effect(&self, seq: u32) -> Result<(), String> {
        // A held call waits for its approvers first; the write-ahead record
        // then carries the released decision.
        let held = {
            let mut inner = self.lock();
            let at = inner.holds.iter().position(|h| h.0 == seq);
            at.map(|i| inner.holds.swap_remove(i))
        };
        if let (Some((_, call, reason, rule)), Some(policy)) = (held, &self.policy) {
            let waited = Instant::now();
            // While waiting, `paused` grows with the clock (the host's own
            // timeout reads it during the wait).
            self.waiting_since_us.store(
                u64::try_from(self.started.elapsed().as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1),
                Ordering::Relaxed,
            );
            let released = policy.hold(call, seq, reason, rule).await;
            self.paused_us.fetch_add(
                u64::try_from(waited.elapsed().as_micros()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            self.waiting_since_us.store(0, Ordering::Relaxed);
            if let Err((rule, reason)) = released {
                self.record_sandbox_denial(seq, &rule, reason.clone());
                return Err(reason);
            }
        }
        let Some(hook) = &self.write_ahead else {
            return Ok(());
        };
        if self.replaying() {
            return Ok(());
        }
        let event = self.lock().events.get(seq as usize).cloned();
        let Some(event) = event else {
            return Err("audit: the import call is not recorded".into());
        };
        match hook.before_effect(event).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let reason = format!(
                    "audit: the decision could not be made durable, so the effect did not happen: {e}"
                );
                self.record_sandbox_denial(seq, "audit.write_ahead", reason.clone());
                Err(reason)
            }
        }
    }

    /// Remembers a secret value the call read, so no record keeps it.
    pub fn secret_read(&self, name: &str, value: &str) {
        let mut inner = self.lock();
        if !inner.secrets.iter().any(|(n, _)| n == name) {
            inner.secrets.push((name.to_owned(), value.to_owned()));
        }
    }

    /// The secrets this call read, as (name, value).
    pub(crate) fn secrets(&self) -> Vec<(String, String)> {
        self.lock().secrets.clone()
    }

    /// Redacts secret values in a journaled value: in strings, and in the
    /// bytes of base64 strings (kv values, HTTP bodies).
    fn scrub_value(&self, v: &mut Value) {
        let secrets = self.secrets();
        if secrets.is_empty() {
            return;
        }
        fn walk(v: &mut Value, secrets: &[(String, String)]) {
            match v {
                Value::String(s) => {
                    if !redact(s, secrets).is_empty() {
                        return;
                    }
                    use base64::Engine as _;
                    let b64 = &base64::engine::general_purpose::STANDARD;
                    if let Ok(bytes) = b64.decode(s.as_bytes())
                        && let Ok(mut text) = String::from_utf8(bytes)
                        && !redact(&mut text, secrets).is_empty()
                    {
                        *s = b64.encode(text.as_bytes());
                    }
                }
                Value::Array(a) => a.iter_mut().for_each(|x| walk(x, secrets)),
                Value::Object(m) => m.values_mut().for_each(|x| walk(x, secrets)),
                _ => {}
            }
        }
        walk(v, &secrets);
    }

    /// Whether this call is a replay (results come from the journal).
    pub fn replaying(&self) -> bool {
        self.tape.is_replay()
    }

    /// The decision for `call` at position `seq`: when recording, the live
    /// decision (journaled); when replaying, the journaled one, or a denial if
    /// the call differs from the journal.
    fn journal_decision(
        &self,
        seq: u32,
        call: &ImportCall,
        resource: &str,
        live: impl FnOnce() -> Decision,
    ) -> Decision {
        let mut tape = self.tape.lock();
        match &mut *tape {
            Tape::Record(j) => {
                let decision = live();
                if call.capability() == Capability::Fs && j.not_replayable.is_none() {
                    j.not_replayable =
                        Some("the call used the filesystem, whose data is not journaled".into());
                }
                if j.imports.len() == seq as usize {
                    j.imports.push(JournalEntry {
                        capability: call.capability(),
                        operation: call.operation().to_owned(),
                        resource: resource.to_owned(),
                        decision: decision.clone(),
                        request: Value::Null,
                        result: Value::Null,
                    });
                }
                decision
            }
            Tape::Replay {
                journal,
                next_import,
                divergence,
                ..
            } => {
                let diverged = |reason: String| Decision::Deny {
                    reason,
                    rule: REPLAY_DIVERGED.to_owned(),
                };
                if let Some(d) = divergence {
                    return diverged(format!("replay: diverged earlier ({d})"));
                }
                let got = format!("{} {} `{}`", call.capability(), call.operation(), resource);
                let position = *next_import;
                *next_import += 1;
                match journal.imports.get(position) {
                    Some(e)
                        if e.capability == call.capability()
                            && e.operation == call.operation()
                            && e.resource == resource =>
                    {
                        e.decision.clone()
                    }
                    other => {
                        let d = Divergence {
                            at: "import".into(),
                            import: Some(position),
                            expected: other.map_or_else(
                                || "no further import call".to_owned(),
                                |e| format!("{} {} `{}`", e.capability, e.operation, e.resource),
                            ),
                            got,
                        };
                        let reason = format!("replay: diverged ({d})");
                        *divergence = Some(d);
                        diverged(reason)
                    }
                }
            }
        }
    }

    /// Runs the effect of an allowed import call, journaling it: when
    /// recording, `run` acts and its result is journaled with `request`;
    /// when replaying, `request` is compared with the journal and the
    /// journaled result is returned without acting. An `Err` is the effect's
    /// own failure (also attached to the event).
    pub fn effect<T: Serialize + DeserializeOwned>(
        &self,
        seq: u32,
        request: Value,
        run: impl FnOnce() -> Result<T, String>,
    ) -> Result<T, String> {
        if self.replaying() {
            let result = self.replayed(seq, &request)?;
            let r = match result {
                Value::Object(mut m) if m.contains_key("ok") => {
                    serde_json::from_value(m.remove("ok").unwrap_or_default()).map_err(|e| {
                        self.diverge(seq, "a journaled result of this type", &format!("{e}"))
                    })
                }
                Value::Object(m) if m.contains_key("err") => {
                    Err(m["err"].as_str().unwrap_or_default().to_owned())
                }
                other => Err(self.diverge(seq, "a journaled result", &other.to_string())),
            };
            if let Err(e) = &r {
                self.record_error(seq, e.clone());
            }
            return r;
        }
        let r = run();
        let result = match &r {
            Ok(v) => json!({ "ok": serde_json::to_value(v).unwrap_or_default() }),
            Err(e) => {
                self.record_error(seq, e.clone());
                json!({ "err": e })
            }
        };
        self.journal(seq, request, result);
        r
    }

    /// Records the request and result of import call `seq` (recording only).
    pub fn journal(&self, seq: u32, mut request: Value, mut result: Value) {
        self.scrub_value(&mut request);
        self.scrub_value(&mut result);
        if let Tape::Record(j) = &mut *self.tape.lock()
            && let Some(e) = j.imports.get_mut(seq as usize)
        {
            e.request = request;
            e.result = result;
        }
    }

    /// The journaled result of import call `seq` (replaying only), after
    /// checking that `request` is the journaled one. A different request is a
    /// divergence, returned as the error the guest receives.
    pub fn replayed(&self, seq: u32, request: &Value) -> Result<Value, String> {
        let mut request = request.clone();
        self.scrub_value(&mut request);
        let request = &request;
        let expected = match &*self.tape.lock() {
            Tape::Replay { journal, .. } => journal.imports.get(seq as usize).cloned(),
            Tape::Record(_) => None,
        };
        let Some(e) = expected else {
            return Err(self.diverge(seq, "a journaled import call", "none"));
        };
        if &e.request != request {
            return Err(self.diverge(
                seq,
                &format!("request {}", e.request),
                &format!("request {request}"),
            ));
        }
        Ok(e.result)
    }

    /// Marks a divergence at import call `seq` (the first one wins) and
    /// returns the message the guest sees.
    fn diverge(&self, seq: u32, expected: &str, got: &str) -> String {
        let d = Divergence {
            at: "import".into(),
            import: Some(seq as usize),
            expected: expected.to_owned(),
            got: got.to_owned(),
        };
        let msg = format!("replay: diverged ({d})");
        if let Tape::Replay { divergence, .. } = &mut *self.tape.lock()
            && divergence.is_none()
        {
            *divergence = Some(d);
        }
        msg
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
        let seq = u32::try_from(inner.events.len()).unwrap_or(u32::MAX);
        // What is recorded never holds a secret value the call has read (a
        // URL path or a key built from one).
        let mut resource = call.resource();
        redact(&mut resource, &inner.secrets);
        let decision = if inner.calls > MAX_IMPORT_CALLS {
            Decision::Deny {
                reason: format!(
                    "guard: more than {MAX_IMPORT_CALLS} import calls in one invocation"
                ),
                rule: "guard.max_import_calls".to_owned(),
            }
        } else {
            // The grant first, then the tenant's policy on what it allowed.
            let mut held = None;
            let decision = self.journal_decision(seq, &call, &resource, || {
                match (check_import(&self.grant, &call), &self.policy) {
                    (Decision::Allow, Some(p)) => match p.decide(&call) {
                        ImportVerdict::Decided(d) => d,
                        // Only an effect waits: it is released (or refused)
                        // in `before_effect`, which every effect that leaves
                        // the sandbox passes before it happens.
                        ImportVerdict::Hold { reason, rule } if call.leaves_sandbox() => {
                            held = Some((reason, rule));
                            Decision::Allow
                        }
                        ImportVerdict::Hold { reason, rule } => Decision::Deny {
                            reason: format!(
                                "{reason}; a call that does not leave the sandbox cannot wait for approval"
                            ),
                            rule,
                        },
                    },
                    (d, _) => d,
                }
            });
            if let Some((reason, rule)) = held {
                inner.holds.push((seq, call.clone(), reason, rule));
            }
            decision
        };
        if inner.events.len() < MAX_IMPORT_CALLS {
            let event = ImportEvent {
                seq,
                capability: call.capability(),
                operation: call.operation(),
                resource,
                decision: decision.clone(),
                error: None,
                at_us: u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX),
            };
            tracing::debug!(target: "warden::guard", ?event, "import call");
            inner.events.push(event);
        }
        (seq, decision)
    }

    /// How long this call has waited for approvers so far.
    pub fn paused(&self) -> std::time::Duration {
        let done = self.paused_us.load(Ordering::Relaxed);
        let since = self.waiting_since_us.load(Ordering::Relaxed);
        let now = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let current = if since == 0 {
            0
        } else {
            now.saturating_sub(since)
        };
        std::time::Duration::from_micros(done.saturating_add(current))
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
