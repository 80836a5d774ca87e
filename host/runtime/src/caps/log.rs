//! The `log` capability: `warden:tool/log`, captured and bounded.
//!
//! Log lines go into the call's report, never to the host's own output. The
//! grant's `max_bytes` bounds their total size; lines past it are counted and
//! dropped.

use serde::Serialize;
use warden_policy::{Decision, ImportCall};
use wasmtime::component::HasData;

use crate::bindings::warden::tool::log::{self as wit, Level};
use crate::guard::Guard;

/// One captured log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    pub level: &'static str,
    pub message: String,
}

/// Per-call log state.
#[derive(Debug, Default)]
pub struct LogState {
    pub max_bytes: u64,
    pub used: u64,
    pub lines: Vec<LogLine>,
    pub dropped: u64,
}

/// `HasData` marker for log.
#[derive(Debug)]
pub struct LogCap;

impl HasData for LogCap {
    type Data<'a> = LogView<'a>;
}

/// What the log host function can reach.
#[derive(Debug)]
pub struct LogView<'a> {
    pub state: &'a mut LogState,
    pub guard: &'a Guard,
}

impl wit::Host for LogView<'_> {
    fn log(&mut self, level: Level, message: String) {
        let len = message.len() as u64;
        if let (_, Decision::Deny { .. }) = self.guard.check(ImportCall::Log { len }) {
            self.state.dropped += 1;
            return;
        }
        if self.state.used + len > self.state.max_bytes {
            self.state.dropped += 1;
            return;
        }
        self.state.used += len;
        let level = match level {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        self.state.lines.push(LogLine { level, message });
    }
}
