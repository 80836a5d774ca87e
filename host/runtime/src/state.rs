//! Per-call store data, built only from the grant.
//!
//! [`CallState::build`] is the single place where a grant becomes instance
//! state: preopens from the fs grant, HTTP hooks from the http grant, the kv
//! namespace, the secret source, the log budget, and the memory and table
//! limits. Nothing is inherited from the host process: no environment, no
//! arguments, no stdin, and stdout/stderr go to bounded pipes.

use std::sync::Arc;
use std::time::Instant;

use warden_policy::{DirMode, Grant};
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::caps::fs::FsPaths;
use crate::caps::http::HttpHooks;
use crate::caps::kv::{KvBackend, KvState};
use crate::caps::log::LogState;
use crate::caps::secrets::{SecretSource, SecretsState};
use crate::guard::Guard;
use crate::journal::{Tape, TapeHandle, TapedMonotonicClock, TapedWallClock};
use crate::stdio::BoundedPipe;
use rand::SeedableRng;
use rand::rngs::StdRng;

/// Host-side backends a call may reach through its capabilities.
#[derive(Debug, Clone)]
pub struct Backends {
    pub kv: Arc<dyn KvBackend>,
    pub secrets: Arc<dyn SecretSource>,
    /// Where the decision of each effect that leaves the sandbox is made
    /// durable before the effect happens (the audit trail); `None` runs
    /// effects without a write-ahead record (the standalone `warden run`).
    pub write_ahead: Option<Arc<dyn WriteAhead>>,
    /// The policy consulted for each import call the grant allows (the
    /// tenant's Cedar policy); `None`: the grant alone decides.
    pub policy: Option<Arc<dyn ImportPolicy>>,
}

/// What the policy hook says about one import call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportVerdict {
    /// Allow or Deny, now.
    Decided(warden_policy::Decision),
    /// Only a human may release it: the call waits in
    /// [`ImportPolicy::hold`] before its effect.
    Hold { reason: String, rule: String },
}

/// A held import call's wait, resolved: `Ok` approved, `Err((rule, reason))`
/// refused (rejected, expired, or the approval could not be recorded).
pub type HoldWait = std::pin::Pin<Box<dyn Future<Output = Result<(), (String, String)>> + Send>>;

/// The policy hook: decides an import call after the grant allowed it, and
/// waits for approvers on the calls it holds. It must fail closed: a check
/// that cannot be made is a Deny, a wait that cannot be recorded is a refusal.
pub trait ImportPolicy: Send + Sync + std::fmt::Debug {
    fn decide(&self, call: &warden_policy::ImportCall) -> ImportVerdict;

    /// Suspends the call until approvers decide import call `call` (number
    /// `seq` of this invocation), held for `reason` by `rule`. The default
    /// refuses: a host without approvals cannot wait.
    fn hold(
        &self,
        call: warden_policy::ImportCall,
        seq: u32,
        reason: String,
        rule: String,
    ) -> HoldWait {
        let _ = (call, seq);
        Box::pin(async move {
            Err((
                rule,
                format!("{reason}; this host cannot wait for an approval, so the call is refused"),
            ))
        })
    }
}

/// The write-ahead hook: makes an allowed import call's decision durable.
/// The effect happens only if this succeeds; an error fails the import call
/// closed (the guest sees a denial, the event records why).
pub trait WriteAhead: Send + Sync + std::fmt::Debug {
    fn before_effect(
        &self,
        event: crate::ImportEvent,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
}

/// WASI context and resource table; implements [`WasiView`].
pub struct WasiParts {
    pub ctx: WasiCtx,
    pub table: ResourceTable,
}

impl WasiView for WasiParts {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// Which limit stopped a call, recorded by the limiter or the epoch callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    Memory { desired: usize },
    Table { desired: usize },
    Deadline,
}

/// Memory and table limits of one call.
#[derive(Debug)]
pub struct CallLimiter {
    pub memory_bytes: usize,
    pub table_elements: usize,
    pub hit: Option<LimitHit>,
}

/// Error raised into the guest when it crosses a limit. Its presence is
/// recorded in [`CallLimiter::hit`], which the invoke path reads.
#[derive(Debug)]
pub struct LimitExceeded(pub LimitHit);

impl std::fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "limit exceeded: {:?}", self.0)
    }
}

impl std::error::Error for LimitExceeded {}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            let hit = LimitHit::Memory { desired };
            self.hit = Some(hit);
            return Err(wasmtime::Error::new(LimitExceeded(hit)));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            let hit = LimitHit::Table { desired };
            self.hit = Some(hit);
            return Err(wasmtime::Error::new(LimitExceeded(hit)));
        }
        Ok(true)
    }
}

/// Everything one call's store holds.
pub struct CallState {
    pub wasi: WasiParts,
    pub http_ctx: WasiHttpCtx,
    pub http_hooks: HttpHooks,
    pub fs_paths: FsPaths,
    pub kv: KvState,
    pub secrets: SecretsState,
    pub log: LogState,
    pub guard: Guard,
    pub limiter: CallLimiter,
    pub stdout: BoundedPipe,
    pub stderr: BoundedPipe,
    pub deadline: Instant,
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            hooks: &mut self.http_hooks,
            table: &mut self.wasi.table,
            ctx: &mut self.http_ctx,
        }
    }
}

impl CallState {
    /// Builds the state of one call from `grant` alone.
    pub(crate) fn build(
        grant: Arc<Grant>,
        backends: &Backends,
        started: Instant,
        tape: TapeHandle,
    ) -> Result<CallState, String> {
        let limits = grant.limits;
        let stdio = usize::try_from(limits.stdio_bytes).unwrap_or(usize::MAX);
        let stdout = BoundedPipe::new(stdio);
        let stderr = BoundedPipe::new(stdio);

        // Deny by default: no inherit_*, no env, no args, empty stdin.
        let mut builder = WasiCtxBuilder::new();
        builder.stdout(stdout.clone()).stderr(stderr.clone());
        // Pinned nondeterminism, so the call can be replayed: insecure
        // randomness from the journal's seeds, every clock read on its tape.
        {
            let tape_ref = tape.lock();
            let journal = match &*tape_ref {
                Tape::Record(j) | Tape::Replay { journal: j, .. } => j,
            };
            builder
                .insecure_random(StdRng::seed_from_u64(journal.insecure_rng_seed))
                .insecure_random_seed(journal.insecure_seed());
        }
        builder
            .wall_clock(TapedWallClock { tape: tape.clone() })
            .monotonic_clock(TapedMonotonicClock {
                tape: tape.clone(),
                started,
            });
        if let Some(fs) = &grant.fs {
            for d in &fs.dirs {
                let perms = match d.mode {
                    DirMode::ReadOnly => FsPerms::ReadOnly,
                    DirMode::ReadWrite => FsPerms::ReadWrite,
                };
                builder
                    .preopened_dir(&d.host, &d.guest, perms)
                    .map_err(|e| {
                        format!(
                            "fs: granted directory `{}` cannot be opened: {e}",
                            d.host.display()
                        )
                    })?;
            }
        }
        let guard = Guard::new(
            grant.clone(),
            tape,
            backends.write_ahead.clone(),
            backends.policy.clone(),
        );
        Ok(CallState {
            wasi: WasiParts {
                ctx: builder.build(),
                table: ResourceTable::new(),
            },
            http_ctx: WasiHttpCtx::new(),
            http_hooks: HttpHooks {
                guard: guard.clone(),
                max_response_bytes: grant.http.as_ref().map_or(0, |h| h.max_response_bytes),
            },
            fs_paths: FsPaths::default(),
            kv: KvState {
                grant: grant.kv.clone(),
                backend: backends.kv.clone(),
            },
            secrets: SecretsState {
                source: backends.secrets.clone(),
            },
            log: LogState {
                max_bytes: grant.log.as_ref().map_or(0, |l| l.max_bytes),
                ..LogState::default()
            },
            guard,
            limiter: CallLimiter {
                memory_bytes: usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX),
                table_elements: limits.table_elements as usize,
                hit: None,
            },
            stdout,
            stderr,
            deadline: started + std::time::Duration::from_millis(limits.deadline_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Table growth past the grant's limit is refused and recorded, like memory.
    #[test]
    fn limiter_refuses_growth_past_limits() {
        let mut l = CallLimiter {
            memory_bytes: 1 << 20,
            table_elements: 100,
            hit: None,
        };
        assert!(matches!(l.memory_growing(0, 1 << 20, None), Ok(true)));
        assert!(matches!(l.table_growing(0, 100, None), Ok(true)));
        assert!(l.hit.is_none());
        assert!(l.table_growing(100, 101, None).is_err());
        assert_eq!(l.hit, Some(LimitHit::Table { desired: 101 }));
        assert!(l.memory_growing(1 << 20, (1 << 20) + 65536, None).is_err());
        assert_eq!(
            l.hit,
            Some(LimitHit::Memory {
                desired: (1 << 20) + 65536
            })
        );
    }
}
