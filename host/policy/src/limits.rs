//! Per-call resource limits.
//!
//! Every field is required and bounded: there is no "unlimited" value. The grant
//! file may leave fields out; they are then taken from [`Limits::STANDARD`], a
//! named, documented preset, never from an implicit default.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Hard limits of one call. The runtime refuses to run without them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Wasm fuel (roughly one unit per instruction). 10M fuel is about 0.4–1.2 ms
    /// of guest CPU on the reference machine.
    pub fuel: u64,
    /// Wall-clock deadline of the call in milliseconds, enforced by epochs.
    pub deadline_ms: u64,
    /// Largest linear memory of the instance, in bytes.
    pub memory_bytes: u64,
    /// Largest number of table elements of the instance.
    pub table_elements: u32,
    /// Largest output (the JSON answer) in bytes.
    pub output_bytes: u64,
    /// Largest captured stdout plus stderr in bytes; the rest is dropped and counted.
    pub stdio_bytes: u64,
}

/// Ceilings that no grant may exceed. Each is far above a sane tool's needs and
/// low enough that one call cannot take the host down.
pub mod ceiling {
    /// 100 billion fuel: minutes of CPU, beyond that use a job system, not a tool call.
    pub const FUEL: u64 = 100_000_000_000;
    /// Ten minutes of wall clock.
    pub const DEADLINE_MS: u64 = 10 * 60 * 1000;
    /// 4 GiB, the largest 32-bit linear memory.
    pub const MEMORY_BYTES: u64 = 4 << 30;
    /// One million table elements.
    pub const TABLE_ELEMENTS: u32 = 1_000_000;
    /// 64 MiB of output.
    pub const OUTPUT_BYTES: u64 = 64 << 20;
    /// 16 MiB of captured stdio.
    pub const STDIO_BYTES: u64 = 16 << 20;
}

impl Limits {
    /// The documented preset used where a grant file leaves a limit out:
    /// 1 billion fuel, 5 s, 64 MiB memory, 10,000 table elements, 1 MiB output,
    /// 64 KiB stdio.
    pub const STANDARD: Limits = Limits {
        fuel: 1_000_000_000,
        deadline_ms: 5_000,
        memory_bytes: 64 << 20,
        table_elements: 10_000,
        output_bytes: 1 << 20,
        stdio_bytes: 64 << 10,
    };

    /// Checks that every limit is non-zero and under its ceiling.
    pub fn validate(&self) -> Result<()> {
        fn check(name: &str, value: u64, max: u64) -> Result<()> {
            if value == 0 || value > max {
                return Err(Error::InvalidGrant(format!(
                    "limits: {name} must be between 1 and {max}, got {value}"
                )));
            }
            Ok(())
        }
        check("fuel", self.fuel, ceiling::FUEL)?;
        check("deadline_ms", self.deadline_ms, ceiling::DEADLINE_MS)?;
        check("memory_bytes", self.memory_bytes, ceiling::MEMORY_BYTES)?;
        check(
            "table_elements",
            u64::from(self.table_elements),
            u64::from(ceiling::TABLE_ELEMENTS),
        )?;
        check("output_bytes", self.output_bytes, ceiling::OUTPUT_BYTES)?;
        check("stdio_bytes", self.stdio_bytes, ceiling::STDIO_BYTES)?;
        Ok(())
    }
}

/// Limits as written in a grant file: each may be left out.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsFile {
    fuel: Option<u64>,
    deadline_ms: Option<u64>,
    memory_bytes: Option<u64>,
    table_elements: Option<u32>,
    output_bytes: Option<u64>,
    stdio_bytes: Option<u64>,
}

impl LimitsFile {
    pub(crate) fn resolve(self) -> Limits {
        let s = Limits::STANDARD;
        Limits {
            fuel: self.fuel.unwrap_or(s.fuel),
            deadline_ms: self.deadline_ms.unwrap_or(s.deadline_ms),
            memory_bytes: self.memory_bytes.unwrap_or(s.memory_bytes),
            table_elements: self.table_elements.unwrap_or(s.table_elements),
            output_bytes: self.output_bytes.unwrap_or(s.output_bytes),
            stdio_bytes: self.stdio_bytes.unwrap_or(s.stdio_bytes),
        }
    }
}
