//! The import journal: what one invocation asked of the world and what it got
//! back, so the invocation can be re-executed exactly ("trace replay").
//!
//! Recording: every guarded import call appends a [`JournalEntry`] (the
//! guard's decision, the request, and the result the guest received), and
//! the instance's other sources of nondeterminism are pinned: the insecure
//! random generator and seed come from seeds kept in the journal, and every
//! clock read is kept on a tape.
//!
//! Replaying: the guard compares each import call the component makes with the
//! journal, in order, and hands the journaled decision and result back instead
//! of touching a backend; clocks and insecure randomness read back from the
//! journal. The first difference (another import, another resource, another
//! request, an import too many or too few) is a [`Divergence`].
//!
//! What is never journaled: secret values (a replay reads the secret from the
//! host's secret store again) and `wasi:random/random` bytes (cryptographic
//! randomness stays unrecorded; a tool whose output depends on it diverges on
//! replay, and the report says where). Filesystem data is not journaled
//! either: an invocation that touched the filesystem is marked not replayable.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use warden_policy::{Capability, Decision, Limits};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

/// Version tag of the journal encoding.
pub const JOURNAL_FORMAT: &str = "warden-journal/1";

/// Bytes as base64 in JSON (kv values, HTTP bodies).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct B64(pub Vec<u8>);

impl Serialize for B64 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map(B64)
            .map_err(serde::de::Error::custom)
    }
}

/// One guarded import call as journaled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub capability: Capability,
    pub operation: String,
    pub resource: String,
    #[serde(flatten)]
    pub decision: Decision,
    /// What the guest sent beyond the resource (a kv value, HTTP header names).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub request: serde_json::Value,
    /// What the guest received: `{"ok": ...}` or `{"err": "..."}`; null when
    /// the call was denied or returns nothing.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub result: serde_json::Value,
}

/// Everything needed to re-execute one invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Journal {
    pub format: String,
    /// The limits the invocation ran under (replay uses the same).
    pub limits: Limits,
    /// `wasi:random/insecure-seed`.
    pub insecure_seed: String,
    /// Seed of the `wasi:random/insecure` generator.
    pub insecure_rng_seed: u64,
    /// Wall-clock reads, as (seconds, nanoseconds) since the epoch.
    #[serde(default)]
    pub wall_clock: Vec<(u64, u32)>,
    /// Monotonic-clock reads, in nanoseconds.
    #[serde(default)]
    pub monotonic_clock: Vec<u64>,
    pub imports: Vec<JournalEntry>,
    /// Why this invocation cannot be replayed, when it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_replayable: Option<String>,
}

impl Journal {
    /// A fresh journal for a call under `limits`, with new random seeds.
    pub fn new(limits: Limits) -> Journal {
        Journal {
            format: JOURNAL_FORMAT.to_owned(),
            limits,
            insecure_seed: rand::random::<u128>().to_string(),
            insecure_rng_seed: rand::random::<u64>(),
            wall_clock: Vec::new(),
            monotonic_clock: Vec::new(),
            imports: Vec::new(),
            not_replayable: None,
        }
    }

    /// Parses a stored journal, refusing an unknown format.
    pub fn parse(text: &str) -> Result<Journal, String> {
        let j: Journal =
            serde_json::from_str(text).map_err(|e| format!("the journal is not readable: {e}"))?;
        if j.format != JOURNAL_FORMAT {
            return Err(format!(
                "the journal has format `{}`, this host reads `{JOURNAL_FORMAT}`",
                j.format
            ));
        }
        Ok(j)
    }

    pub(crate) fn insecure_seed(&self) -> u128 {
        self.insecure_seed.parse().unwrap_or(0)
    }
}

/// Where a replay first differed from the original.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Divergence {
    /// `import` (with its position), `output` or `outcome`.
    pub at: String,
    /// Position of the import call, from 0, when `at` is `import`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub import: Option<usize>,
    pub expected: String,
    pub got: String,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.import {
            Some(i) => write!(
                f,
                "import call #{i}: expected {}, got {}",
                self.expected, self.got
            ),
            None => write!(
                f,
                "{}: expected {}, got {}",
                self.at, self.expected, self.got
            ),
        }
    }
}

/// The shared tape of one call: the journal being written, or the journal
/// being replayed with its read positions and the first divergence.
#[derive(Debug)]
pub(crate) enum Tape {
    Record(Journal),
    Replay {
        journal: Journal,
        next_import: usize,
        next_wall: usize,
        next_monotonic: usize,
        divergence: Option<Divergence>,
    },
}

/// A cheap handle on the call's tape, shared by the guard and the clocks.
#[derive(Debug, Clone)]
pub(crate) struct TapeHandle(Arc<Mutex<Tape>>);

impl TapeHandle {
    pub fn record(journal: Journal) -> TapeHandle {
        TapeHandle(Arc::new(Mutex::new(Tape::Record(journal))))
    }

    pub fn replay(journal: Journal) -> TapeHandle {
        TapeHandle(Arc::new(Mutex::new(Tape::Replay {
            journal,
            next_import: 0,
            next_wall: 0,
            next_monotonic: 0,
            divergence: None,
        })))
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Tape> {
        // A poisoned lock only means a panic elsewhere; every update below is
        // a single push or index bump, so the tape is still consistent.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_replay(&self) -> bool {
        matches!(*self.lock(), Tape::Replay { .. })
    }

    /// Takes the journal out at the end of a recorded call, with the first
    /// divergence of a replayed one.
    pub fn finish(&self) -> (Journal, Option<Divergence>) {
        let mut tape = self.lock();
        match &mut *tape {
            Tape::Record(j) => (std::mem::replace(j, Journal::new(j.limits)), None),
            Tape::Replay {
                journal,
                next_import,
                divergence,
                ..
            } => {
                if divergence.is_none() && *next_import < journal.imports.len() {
                    let e = &journal.imports[*next_import];
                    *divergence = Some(Divergence {
                        at: "import".into(),
                        import: Some(*next_import),
                        expected: format!("{} {} `{}`", e.capability, e.operation, e.resource),
                        got: "no further import call".into(),
                    });
                }
                (journal.clone(), divergence.clone())
            }
        }
    }
}

/// Wall clock that records (or replays) every read.
pub(crate) struct TapedWallClock {
    pub tape: TapeHandle,
}

impl HostWallClock for TapedWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        let mut tape = self.tape.lock();
        match &mut *tape {
            Tape::Record(j) => {
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default();
                if j.wall_clock.len() < MAX_CLOCK_READS {
                    j.wall_clock.push((now.as_secs(), now.subsec_nanos()));
                } else {
                    j.not_replayable
                        .get_or_insert_with(|| "the call read the clock too often".into());
                }
                now
            }
            Tape::Replay {
                journal, next_wall, ..
            } => {
                // Past the tape's end the clock stands still at its last read.
                let i = (*next_wall).min(journal.wall_clock.len().saturating_sub(1));
                *next_wall += 1;
                journal
                    .wall_clock
                    .get(i)
                    .map_or(Duration::ZERO, |&(s, n)| Duration::new(s, n))
            }
        }
    }
}

/// Monotonic clock (nanoseconds since the call started) that records or
/// replays every read.
pub(crate) struct TapedMonotonicClock {
    pub tape: TapeHandle,
    pub started: Instant,
}

impl HostMonotonicClock for TapedMonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        let mut tape = self.tape.lock();
        match &mut *tape {
            Tape::Record(j) => {
                let now = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                if j.monotonic_clock.len() < MAX_CLOCK_READS {
                    j.monotonic_clock.push(now);
                } else {
                    j.not_replayable
                        .get_or_insert_with(|| "the call read the clock too often".into());
                }
                now
            }
            Tape::Replay {
                journal,
                next_monotonic,
                ..
            } => {
                let i = (*next_monotonic).min(journal.monotonic_clock.len().saturating_sub(1));
                *next_monotonic += 1;
                journal.monotonic_clock.get(i).copied().unwrap_or(0)
            }
        }
    }
}

/// Most clock reads kept per call; past it the journal is marked not
/// replayable instead of growing without bound.
pub const MAX_CLOCK_READS: usize = 100_000;
