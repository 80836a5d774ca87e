//! Warden's sandboxed runtime: the only crate that knows wasmtime.
//!
//! [`Runtime::load`] turns component bytes into a described [`Tool`];
//! [`Runtime::invoke`] runs one action of it in a fresh store built only from a
//! [`Grant`], under fuel, an epoch deadline, memory and table limits and an
//! output cap, and returns a [`Report`]: the [`Outcome`], the output, the fuel
//! and time used, and every guarded import call with its decision.
//!
//! Architecture invariants: no capability state is built except from a grant
//! ([`state::CallState::build`]); an ungranted capability is not linked
//! ([`linker::build`]); every path, host, key, secret or log call passes the
//! one [`guard::Guard`]; guest stdio never reaches the host's own streams.

#![deny(unsafe_code)]

mod bindings;
pub mod caps;
mod engine;
pub mod guard;
pub mod journal;
mod linker;
mod state;
mod stdio;
mod tool;
pub mod untrusted;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use warden_policy::{Capability, Decision, Grant, Limits};
use wasmtime::component::Linker;
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

pub use caps::kv::{KvBackend, MemoryKv};
pub use caps::log::LogLine;
pub use caps::secrets::{SecretSource, StaticSecrets};
pub use guard::ImportEvent;
pub use journal::{Divergence, Journal};
pub use linker::{Provider, capability_of};
pub use state::{Backends, HoldWait, ImportPolicy, ImportVerdict, WriteAhead};
pub use tool::{ActionInfo, Tool, ToolInfo};
pub use warden_policy::Effect;

use bindings::ToolPre;
use journal::TapeHandle;
use state::{CallState, LimitHit};

/// Errors of loading tools and configuring the runtime. Failures of a call
/// are not errors: they are an [`Outcome`] in the [`Report`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not a valid WebAssembly component: {0}")]
    InvalidComponent(String),
    #[error("component imports `{0}`, which Warden never provides")]
    UnsupportedImport(String),
    #[error("invalid tool description: {0}")]
    InvalidDescription(String),
    #[error("describe failed: {0}")]
    DescribeFailed(String),
    #[error("engine: {0}")]
    Engine(String),
    #[error("{0}")]
    Io(String),
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runtime settings.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Most calls running at once; further calls wait for a slot. Also sizes
    /// the instance pool.
    pub max_concurrent: u32,
    /// Directory for precompiled components; `None` disables the disk cache.
    pub cache_dir: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_concurrent: 64,
            cache_dir: None,
        }
    }
}

/// Limits of a tool's `describe` call: it is untrusted code like any other.
pub const DESCRIBE_LIMITS: Limits = Limits {
    fuel: 2_000_000_000,
    deadline_ms: 10_000,
    memory_bytes: 64 << 20,
    table_elements: 10_000,
    output_bytes: 4 << 20,
    stdio_bytes: 16 << 10,
};

/// Largest input accepted, in bytes. A security bound: the input is copied
/// into guest memory, and no tool call needs more (the RPC layer caps bodies
/// lower still).
pub const MAX_INPUT_BYTES: usize = 16 << 20;

/// Extra time past a call's deadline before the host abandons it while it
/// waits in a host call (for example a slow HTTP response). Wasm execution
/// itself is stopped by the epoch at the deadline.
const DEADLINE_GRACE: Duration = Duration::from_millis(50);

/// The wasmtime engine, its linkers and the compile cache.
pub struct Runtime {
    engine: Engine,
    _ticker: engine::Ticker,
    cache: Option<tool::DiskCache>,
    linkers: Mutex<HashMap<BTreeSet<Capability>, Arc<Linker<CallState>>>>,
    slots: tokio::sync::Semaphore,
    max_concurrent: usize,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl Tool {
    /// Checks a call's input before anything runs: its size, that it is
    /// JSON, and that it matches the action's input schema (compiled at
    /// load). Returns the parsed input, or the outcome that refuses it. An
    /// action without a compiled schema is refused (fail closed).
    pub fn check_input(&self, action: &str, input: &str) -> Result<serde_json::Value, Outcome> {
        if self.info.action(action).is_none() {
            return Err(Outcome::UnknownAction {
                action: action.to_owned(),
            });
        }
        if input.len() > MAX_INPUT_BYTES {
            return Err(Outcome::InvalidInput {
                field: "$".into(),
                message: format!(
                    "input of {} bytes exceeds {MAX_INPUT_BYTES} bytes",
                    input.len()
                ),
            });
        }
        let value: serde_json::Value =
            serde_json::from_str(input).map_err(|e| Outcome::InvalidInput {
                field: "$".into(),
                message: format!("input is not JSON: {e}"),
            })?;
        // The host validates the input against the action's schema before
        // anything runs; the tool's own checks come second.
        let Some((validator, _)) = self.validators.get(action) else {
            return Err(Outcome::Denied {
                reason: format!(
                    "the input schema of `{action}` is not compiled, so the input cannot be checked"
                ),
                rule: "guard.input_schema".into(),
            });
        };
        if let Some((field, message)) = tool::schema_error(validator, &value) {
            return Err(Outcome::InvalidInput {
                field,
                message: format!("does not match the input schema: {message}"),
            });
        }
        Ok(value)
    }
}

/// One call to run.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub action: &'a str,
    /// The JSON input, as text.
    pub input: &'a str,
}

/// How a call ended. Every variant is a normal answer, not an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The action ran and returned valid output.
    Ok,
    /// The input did not match the action (field named).
    InvalidInput { field: String, message: String },
    /// The action ran and reported a failure.
    Failed { message: String },
    /// A guard or the tool refused; `rule` names what decided.
    Denied { reason: String, rule: String },
    /// Policy holds the call for human approval; nothing ran.
    Held { reason: String, rule: String },
    /// The tool has no such action.
    UnknownAction { action: String },
    /// Refused before running: the grant does not allow this call.
    NotGranted { reason: String },
    /// Fuel ran out.
    OutOfFuel { limit: u64 },
    /// The wall-clock deadline passed.
    Deadline { limit_ms: u64 },
    /// Memory or table growth past the limit.
    MemoryLimit { limit: u64, requested: u64 },
    /// The guest overflowed its stack.
    StackOverflow,
    /// The output is larger than allowed.
    OutputTooLarge { limit: u64, size: u64 },
    /// The output is not JSON.
    InvalidOutput { message: String },
    /// The guest trapped (panic, unreachable, bad memory access...).
    Trap { message: String },
}

impl Outcome {
    /// The outcome's name as serialized (`ok`, `not_granted`, ...), for
    /// metrics labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::InvalidInput { .. } => "invalid_input",
            Outcome::Failed { .. } => "failed",
            Outcome::Denied { .. } => "denied",
            Outcome::Held { .. } => "held",
            Outcome::UnknownAction { .. } => "unknown_action",
            Outcome::NotGranted { .. } => "not_granted",
            Outcome::OutOfFuel { .. } => "out_of_fuel",
            Outcome::Deadline { .. } => "deadline",
            Outcome::MemoryLimit { .. } => "memory_limit",
            Outcome::StackOverflow => "stack_overflow",
            Outcome::OutputTooLarge { .. } => "output_too_large",
            Outcome::InvalidOutput { .. } => "invalid_output",
            Outcome::Trap { .. } => "trap",
        }
    }

    /// A one-line reason, lowercase, for logs and the CLI.
    pub fn reason(&self) -> String {
        match self {
            Outcome::Ok => "ok".into(),
            Outcome::InvalidInput { field, message } => {
                format!("invalid input: field `{field}`: {message}")
            }
            Outcome::Failed { message } => format!("failed: {message}"),
            Outcome::Denied { reason, rule } => format!("denied: {reason} [{rule}]"),
            Outcome::Held { reason, rule } => format!("held for approval: {reason} [{rule}]"),
            Outcome::UnknownAction { action } => format!("unknown action `{action}`"),
            Outcome::NotGranted { reason } => format!("not granted: {reason}"),
            Outcome::OutOfFuel { limit } => format!("out of fuel: used all {limit} units"),
            Outcome::Deadline { limit_ms } => format!("deadline: stopped after {limit_ms} ms"),
            Outcome::MemoryLimit { limit, requested } => {
                format!("memory limit: requested {requested} bytes, limit {limit}")
            }
            Outcome::StackOverflow => "stack overflow".into(),
            Outcome::OutputTooLarge { limit, size } => {
                format!("output too large: {size} bytes, limit {limit}")
            }
            Outcome::InvalidOutput { message } => format!("invalid output: {message}"),
            Outcome::Trap { message } => format!("trap: {message}"),
        }
    }

    /// Whether the call succeeded.
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok)
    }
}

/// Everything known about one call.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: String,
    pub version: String,
    pub component_sha256: String,
    pub action: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// The output JSON when the outcome is `ok`.
    pub output: Option<serde_json::Value>,
    pub fuel_used: u64,
    pub elapsed_us: u64,
    pub imports: Vec<ImportEvent>,
    pub logs: Vec<LogLine>,
    pub logs_dropped: u64,
    pub stdout: String,
    pub stderr: String,
    pub stdio_dropped: u64,
    /// The request's correlation id (set by the host service; the runtime
    /// leaves it empty). It is on every log line of the call and its imports.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub correlation_id: String,
    /// The invocation id in the audit trail (set by the host service), for
    /// `warden audit replay`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub invocation_id: String,
    /// A held call: the approval request approvers decide; poll it for the
    /// result once approved (set by the host service).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub approval_id: String,
    /// Secrets whose values were removed from the logs and stdio (names).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets_redacted: Vec<String>,
    /// Tool output is untrusted content: always true when there is output.
    /// Treat it as data, never as instructions.
    pub untrusted: bool,
    /// Prompt-injection markers found in the output (a heuristic signal).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub injection_markers: Vec<String>,
    /// The import journal of the call (for the audit trail and replay); not
    /// part of the answer.
    #[serde(skip)]
    pub journal: Option<Journal>,
}

impl Report {
    /// A report of a call not run yet: outcome `ok`, nothing used.
    pub fn new(tool: &str, version: &str, component_sha256: &str, action: &str) -> Report {
        Report {
            tool: tool.to_owned(),
            version: version.to_owned(),
            component_sha256: component_sha256.to_owned(),
            action: action.to_owned(),
            outcome: Outcome::Ok,
            output: None,
            fuel_used: 0,
            elapsed_us: 0,
            imports: Vec::new(),
            logs: Vec::new(),
            logs_dropped: 0,
            stdout: String::new(),
            stderr: String::new(),
            stdio_dropped: 0,
            correlation_id: String::new(),
            invocation_id: String::new(),
            approval_id: String::new(),
            secrets_redacted: Vec::new(),
            untrusted: false,
            injection_markers: Vec::new(),
            journal: None,
        }
    }
}

/// The result of replaying one invocation.
#[derive(Debug, Clone)]
pub struct Replayed {
    /// The replayed call's report (its imports answered from the journal).
    pub report: Report,
    /// The first point where the replay differed from the journal's import
    /// sequence, if any.
    pub divergence: Option<Divergence>,
}

impl Runtime {
    /// A runtime with its own engine and epoch ticker.
    pub fn new(config: RuntimeConfig) -> Result<Runtime> {
        let engine = engine::build(config.max_concurrent)?;
        let ticker = engine::Ticker::start(&engine)?;
        let cache = config.cache_dir.map(|dir| tool::DiskCache {
            dir,
            fingerprint: engine::fingerprint(&engine),
        });
        Ok(Runtime {
            engine,
            _ticker: ticker,
            cache,
            linkers: Mutex::new(HashMap::new()),
            slots: tokio::sync::Semaphore::new(config.max_concurrent as usize),
            max_concurrent: config.max_concurrent as usize,
        })
    }

    /// Calls running wasm right now (holding a concurrency slot).
    pub fn in_flight(&self) -> usize {
        self.max_concurrent - self.slots.available_permits()
    }

    /// The wasmtime engine (for benchmarks and embedding).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Loads a component file. See [`Runtime::load`].
    pub async fn load_file(&self, path: &Path) -> Result<Arc<Tool>> {
        self.load(&tool::read(path)?).await
    }

    /// Compiles (or loads from cache) a component, checks its imports, runs its
    /// `describe` with no capabilities, and validates the description.
    pub async fn load(&self, bytes: &[u8]) -> Result<Arc<Tool>> {
        let (hash, component, cached) = tool::compile(&self.engine, self.cache.as_ref(), bytes)?;
        tracing::debug!(sha256 = %hex::encode(hash), cached, "component loaded");
        let (imports, required) = tool::classify_imports(&self.engine, &component)?;
        let mut tool = Tool {
            hash,
            component,
            info: ToolInfo {
                name: String::new(),
                version: String::new(),
                description: String::new(),
                actions: Vec::new(),
            },
            imports,
            required,
            from_cache: cached,
            pres: Mutex::new(HashMap::new()),
            validators: HashMap::new(),
        };
        // Describe with every import the component needs linked but an empty
        // grant: any capability use during describe is denied by the guard.
        let grant = Arc::new(Grant::empty(DESCRIBE_LIMITS));
        let caps = tool.required.clone();
        let pre = self.pre(&tool, &caps)?;
        let backends = Backends {
            kv: Arc::new(MemoryKv::default()),
            secrets: Arc::new(StaticSecrets::default()),
            write_ahead: None,
            policy: None,
        };
        // Describe takes a pool slot like any call, so a load under full
        // concurrency waits instead of failing on an exhausted pool.
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| Error::Engine("runtime is shutting down".into()))?;
        let started = Instant::now();
        let tape = TapeHandle::record(Journal::new(DESCRIBE_LIMITS));
        let mut store = self
            .store(grant, &backends, started, tape)
            .map_err(Error::DescribeFailed)?;
        let fut = async {
            let instance = pre.instantiate_async(&mut store).await?;
            instance.call_describe(&mut store).await
        };
        let raw = match tokio::time::timeout(
            Duration::from_millis(DESCRIBE_LIMITS.deadline_ms) + DEADLINE_GRACE,
            fut,
        )
        .await
        {
            Ok(Ok(raw)) => raw,
            Ok(Err(e)) => return Err(Error::DescribeFailed(format!("{e:#}"))),
            Err(_) => return Err(Error::DescribeFailed("deadline passed".into())),
        };
        drop(store);
        tool.info = ToolInfo::from_wit(raw)?;
        tool.validators = tool.info.validators()?;
        Ok(Arc::new(tool))
    }

    fn linker(&self, caps: &BTreeSet<Capability>) -> Result<Arc<Linker<CallState>>> {
        let mut linkers = self.linkers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = linkers.get(caps) {
            return Ok(l.clone());
        }
        let l = Arc::new(linker::build(&self.engine, caps)?);
        linkers.insert(caps.clone(), l.clone());
        Ok(l)
    }

    /// The pre-instantiated component for a capability set (cached per tool).
    fn pre(&self, tool: &Tool, caps: &BTreeSet<Capability>) -> Result<ToolPre<CallState>> {
        let mut pres = tool.pres.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = pres.get(caps) {
            return Ok(p.clone());
        }
        let linker = self.linker(caps)?;
        let instance_pre = linker
            .instantiate_pre(&tool.component)
            .map_err(|e| Error::InvalidComponent(format!("{e:#}")))?;
        let pre = ToolPre::new(instance_pre).map_err(|e| {
            Error::InvalidComponent(format!(
                "component does not export the warden:tool world: {e:#}"
            ))
        })?;
        pres.insert(caps.clone(), pre.clone());
        Ok(pre)
    }

    fn store(
        &self,
        grant: Arc<Grant>,
        backends: &Backends,
        started: Instant,
        tape: TapeHandle,
    ) -> Result<Store<CallState>, String> {
        let limits = grant.limits;
        let state = CallState::build(grant, backends, started, tape)?;
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store
            .set_fuel(limits.fuel)
            .map_err(|e| format!("setting fuel: {e}"))?;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut ctx| {
            let state = ctx.data_mut();
            // Time spent waiting for an approver is not the call's time.
            if Instant::now() >= state.deadline + state.guard.paused() {
                state.limiter.hit = Some(LimitHit::Deadline);
                return Err(wasmtime::Error::new(state::LimitExceeded(
                    LimitHit::Deadline,
                )));
            }
            // Yield every tick so other calls on this executor make progress.
            Ok(UpdateDeadline::Yield(1))
        });
        Ok(store)
    }

    /// Runs one action of `tool` under `grant`. Never fails: every failure is
    /// an [`Outcome`] in the report.
    pub async fn invoke(
        &self,
        tool: &Tool,
        grant: Arc<Grant>,
        backends: &Backends,
        call: Call<'_>,
    ) -> Report {
        let started = Instant::now();
        let mut report = Report::new(
            &tool.info.name,
            &tool.info.version,
            &tool.hash_hex(),
            call.action,
        );
        report.outcome = self
            .run(tool, grant, backends, call, started, &mut report)
            .await;
        report.elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        report
    }

    /// Re-executes one recorded invocation of `tool`: the same action and
    /// input, under the journal's limits, with every guarded import answered
    /// from `journal` and compared with it, and the journal's clocks and
    /// insecure randomness. Nothing leaves the sandbox, except that granted
    /// secrets are read from `secrets` again (their values are never
    /// journaled). Refuses a journal marked not replayable.
    pub async fn replay(
        &self,
        tool: &Tool,
        journal: Journal,
        secrets: Arc<dyn SecretSource>,
        call: Call<'_>,
    ) -> std::result::Result<Replayed, String> {
        if let Some(why) = &journal.not_replayable {
            return Err(format!("this invocation cannot be replayed: {why}"));
        }
        let started = Instant::now();
        let mut report = self
            .invoke_blank(tool, call)
            .ok_or_else(|| format!("the component has no action `{}`", call.action))?;
        let grant = Arc::new(Grant::empty(journal.limits));
        let backends = Backends {
            kv: Arc::new(MemoryKv::default()),
            secrets,
            write_ahead: None,
            policy: None,
        };
        let tape = TapeHandle::replay(journal);
        report.outcome = self
            .execute(
                tool,
                grant,
                &backends,
                call,
                started,
                &mut report,
                tape.clone(),
            )
            .await;
        report.elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let (_, divergence) = tape.finish();
        Ok(Replayed { report, divergence })
    }

    fn invoke_blank(&self, tool: &Tool, call: Call<'_>) -> Option<Report> {
        tool.info.action(call.action)?;
        Some(Report::new(
            &tool.info.name,
            &tool.info.version,
            &tool.hash_hex(),
            call.action,
        ))
    }

    async fn run(
        &self,
        tool: &Tool,
        grant: Arc<Grant>,
        backends: &Backends,
        call: Call<'_>,
        started: Instant,
        report: &mut Report,
    ) -> Outcome {
        // Cheapest refusals first, before any wasm object exists. A grant built
        // in code rather than parsed may be invalid: validate it again and
        // fail closed.
        if let Err(e) = grant.validate() {
            return Outcome::NotGranted {
                reason: e.to_string(),
            };
        }
        if tool.info.action(call.action).is_none() {
            return Outcome::UnknownAction {
                action: call.action.to_owned(),
            };
        }
        if let Err(o) = tool.check_input(call.action, call.input) {
            return o;
        }
        if !grant.allows_action(call.action) {
            return Outcome::NotGranted {
                reason: format!(
                    "action `{}` of tool `{}` is not in the grant",
                    call.action, tool.info.name
                ),
            };
        }
        let granted = grant.capabilities();
        if let Some(missing) = tool.required.iter().find(|c| !granted.contains(c)) {
            let import = tool
                .imports
                .iter()
                .find(|i| capability_of(i) == Provider::Capability(*missing))
                .cloned()
                .unwrap_or_default();
            return Outcome::NotGranted {
                reason: format!(
                    "component imports `{import}` (capability `{missing}`), which the grant does not include; it cannot be instantiated"
                ),
            };
        }
        let tape = TapeHandle::record(Journal::new(grant.limits));
        let outcome = self
            .execute(tool, grant, backends, call, started, report, tape.clone())
            .await;
        report.journal = Some(tape.finish().0);
        outcome
    }

    /// Instantiates and runs the call. `run` has checked the grant; a replay
    /// comes here directly with an empty grant and a replay tape.
    #[allow(clippy::too_many_arguments)]
    async fn execute(
        &self,
        tool: &Tool,
        grant: Arc<Grant>,
        backends: &Backends,
        call: Call<'_>,
        started: Instant,
        report: &mut Report,
        tape: TapeHandle,
    ) -> Outcome {
        let limits = grant.limits;
        // Link exactly what the component imports, all of it granted.
        let pre = match self.pre(tool, &tool.required) {
            Ok(p) => p,
            Err(e) => {
                return Outcome::Trap {
                    message: e.to_string(),
                };
            }
        };
        let _slot = match self.slots.acquire().await {
            Ok(s) => s,
            Err(_) => {
                return Outcome::Trap {
                    message: "runtime is shutting down".into(),
                };
            }
        };
        let mut store = match self.store(grant, backends, started, tape) {
            Ok(s) => s,
            Err(e) => return Outcome::NotGranted { reason: e },
        };
        let deadline = Duration::from_millis(limits.deadline_ms);
        let paused = store.data().guard.clone();
        let result = {
            let mut run = std::pin::pin!(async {
                let instance = pre.instantiate_async(&mut store).await?;
                instance
                    .call_invoke(&mut store, call.action, call.input)
                    .await
            });
            // The host's own stop, past the epoch deadline; like the deadline
            // it moves by the time the call spent waiting for approvers.
            let begun = tokio::time::Instant::now();
            loop {
                let until = begun + deadline + DEADLINE_GRACE + paused.paused();
                match tokio::time::timeout_at(until, &mut run).await {
                    Ok(r) => break Ok(r),
                    Err(e) if begun + deadline + DEADLINE_GRACE + paused.paused() <= until => {
                        break Err(e);
                    }
                    Err(_) => continue,
                }
            }
        };

        report.fuel_used = limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        let state = store.data_mut();
        let first_denial = state.guard.first_denial();
        report.imports = state.guard.take_events();
        report.logs = std::mem::take(&mut state.log.lines);
        report.logs_dropped = state.log.dropped;
        let (stdout, out_dropped) = state.stdout.take();
        let (stderr, err_dropped) = state.stderr.take();
        report.stdout = stdout;
        report.stderr = stderr;
        report.stdio_dropped = out_dropped + err_dropped;
        let hit = state.limiter.hit;
        // Secret values the call read never leave in its logs or stdio.
        let secrets = state.guard.secrets();
        let mut redacted = guard::redact(&mut report.stdout, &secrets);
        redacted.extend(guard::redact(&mut report.stderr, &secrets));
        for line in &mut report.logs {
            redacted.extend(guard::redact(&mut line.message, &secrets));
        }
        redacted.sort();
        redacted.dedup();
        report.secrets_redacted = redacted;
        let outcome = Self::outcome(tool, call, &limits, report, result, hit, first_denial);
        // Nor in its output: an output holding one is refused, not returned.
        if let Some(out) = &report.output {
            let mut text = out.to_string();
            report.untrusted = true;
            report.injection_markers = untrusted::injection_markers(&text);
            let leaked = guard::redact(&mut text, &secrets);
            if let Some(name) = leaked.first() {
                report.output = None;
                return Outcome::Denied {
                    reason: format!(
                        "guard: the output contains the value of secret `{name}`; it is not returned"
                    ),
                    rule: "guard.secret_leak".into(),
                };
            }
        }
        outcome
    }

    /// The outcome of a finished call, and its output when it is valid.
    #[allow(clippy::too_many_arguments)]
    fn outcome(
        tool: &Tool,
        call: Call<'_>,
        limits: &Limits,
        report: &mut Report,
        result: std::result::Result<
            wasmtime::Result<std::result::Result<String, bindings::warden::tool::types::ToolError>>,
            tokio::time::error::Elapsed,
        >,
        hit: Option<LimitHit>,
        first_denial: Option<ImportEvent>,
    ) -> Outcome {
        match result {
            Err(_elapsed) => Outcome::Deadline {
                limit_ms: limits.deadline_ms,
            },
            Ok(Err(e)) => classify_trap(&e, hit, limits, &report.stderr),
            Ok(Ok(Err(tool_error))) => tool_outcome(tool_error, first_denial),
            Ok(Ok(Ok(output))) => {
                let size = output.len() as u64;
                if size > limits.output_bytes {
                    return Outcome::OutputTooLarge {
                        limit: limits.output_bytes,
                        size,
                    };
                }
                let value: serde_json::Value = match serde_json::from_str(&output) {
                    Ok(v) => v,
                    Err(e) => {
                        return Outcome::InvalidOutput {
                            message: format!("output is not JSON: {e}"),
                        };
                    }
                };
                if let Some((_, validator)) = tool.validators.get(call.action)
                    && let Some((at, message)) = tool::schema_error(validator, &value)
                {
                    return Outcome::InvalidOutput {
                        message: format!(
                            "output does not match the output schema at {at}: {message}"
                        ),
                    };
                }
                report.output = Some(value);
                Outcome::Ok
            }
        }
    }
}

/// Maps a tool's own error to an outcome. When the guard denied an import
/// during the call, the guard's reason is reported: it is authoritative and
/// names the grant, where the guest only saw an error code.
fn tool_outcome(
    e: bindings::warden::tool::types::ToolError,
    first_denial: Option<ImportEvent>,
) -> Outcome {
    use bindings::warden::tool::types::ToolError as E;
    if let Some(ImportEvent {
        decision: Decision::Deny { reason, rule },
        ..
    }) = first_denial
        && matches!(e, E::Failed(_) | E::Denied(_))
    {
        return Outcome::Denied { reason, rule };
    }
    match e {
        E::InvalidInput(f) => Outcome::InvalidInput {
            field: f.field,
            message: f.message,
        },
        E::Failed(message) => Outcome::Failed { message },
        E::Denied(reason) => Outcome::Denied {
            reason,
            rule: "tool".into(),
        },
        E::UnknownAction(action) => Outcome::UnknownAction { action },
    }
}

/// Maps a trap or host error to the limit or fault that caused it.
fn classify_trap(
    e: &wasmtime::Error,
    hit: Option<LimitHit>,
    limits: &Limits,
    stderr: &str,
) -> Outcome {
    match hit {
        Some(LimitHit::Deadline) => {
            return Outcome::Deadline {
                limit_ms: limits.deadline_ms,
            };
        }
        Some(LimitHit::Memory { desired }) => {
            return Outcome::MemoryLimit {
                limit: limits.memory_bytes,
                requested: desired as u64,
            };
        }
        Some(LimitHit::Table { desired }) => {
            return Outcome::MemoryLimit {
                limit: u64::from(limits.table_elements),
                requested: desired as u64,
            };
        }
        None => {}
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => Outcome::OutOfFuel { limit: limits.fuel },
        Some(Trap::StackOverflow) => Outcome::StackOverflow,
        Some(Trap::Interrupt) => Outcome::Deadline {
            limit_ms: limits.deadline_ms,
        },
        Some(trap) => {
            // A Rust panic prints its location and message to stderr before
            // trapping: "thread '..' panicked at src/lib.rs:1:2:\n<message>".
            let mut lines = stderr.lines().skip_while(|l| !l.contains("panicked at"));
            let panic = match (lines.next(), lines.next()) {
                (Some(at), Some(msg)) => format!(" ({} {})", at.trim(), msg.trim()),
                (Some(at), None) => format!(" ({})", at.trim()),
                _ => String::new(),
            };
            Outcome::Trap {
                message: format!("{trap}{panic}"),
            }
        }
        None => {
            if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                return Outcome::Trap {
                    message: format!("guest exited with status {}", exit.0),
                };
            }
            Outcome::Trap {
                message: format!("{e:#}"),
            }
        }
    }
}
