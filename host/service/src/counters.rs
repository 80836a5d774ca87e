//! Guardrail counters: call rates per agent × tool × action (per clock
//! minute, hour and UTC day), the write quota (calls with a write,
//! destructive or external effect per UTC day, per agent × tool) and the
//! daily fuel budget (per agent × tool), from the grant's `[rate]`.
//!
//! Every call is counted, metered or not: policies see the counts
//! (`context.counters`), and the grant's `[rate]` bounds them.
//!
//! Windows are fixed (the bucket is `now / window`), so a window's count
//! resets exactly at its boundary. A call is counted when it is admitted,
//! before it runs, so concurrent calls cannot overshoot a bound; fuel is added
//! when the call ends. Counters live in the serving process's memory (see
//! ARCHITECTURE.md, "Known gaps").

use std::collections::HashMap;
use std::sync::Mutex;

use warden_policy::cedar::Usage;
use warden_policy::{Effect, RateGrant};

const MINUTE: i64 = 60;
const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

/// A count in one fixed window.
#[derive(Debug, Default, Clone, Copy)]
struct Window {
    bucket: i64,
    used: u64,
}

impl Window {
    fn current(&mut self, now: i64, width: i64) -> &mut u64 {
        let bucket = now.div_euclid(width);
        if self.bucket != bucket {
            *self = Window { bucket, used: 0 };
        }
        &mut self.used
    }
}

#[derive(Debug, Default)]
struct ActionUsage {
    minute: Window,
    hour: Window,
    day: Window,
}

#[derive(Debug, Default)]
struct ToolUsage {
    actions: HashMap<String, ActionUsage>,
    writes: Window,
    fuel: Window,
}

/// Which agent's use of which tool.
pub(crate) type Key = (String, String, String);

/// The counters of one process.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    usage: Mutex<HashMap<Key, ToolUsage>>,
}

/// Why a call is refused: (rule, reason).
pub(crate) type Refusal = (&'static str, String);

impl Counters {
    /// Admits one call of `action` (with `effect`) under `rate` at `now`
    /// (seconds), counting it, and returns the counts before it; or refuses
    /// it, counting nothing.
    pub fn admit(
        &self,
        key: &Key,
        action: &str,
        effect: Effect,
        rate: &RateGrant,
        now: i64,
    ) -> Result<Usage, Refusal> {
        let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        let tool = usage.entry(key.clone()).or_default();
        let writes = !matches!(effect, Effect::Read);
        let before = {
            let a = tool.actions.entry(action.to_owned()).or_default();
            Usage {
                minute: *a.minute.current(now, MINUTE),
                hour: *a.hour.current(now, HOUR),
                day: *a.day.current(now, DAY),
                writes_today: *tool.writes.current(now, DAY),
                fuel_today: *tool.fuel.current(now, DAY),
            }
        };
        if let Some(budget) = rate.fuel_per_day {
            let used = *tool.fuel.current(now, DAY);
            if used >= budget {
                return Err((
                    "guard.fuel_budget",
                    format!(
                        "the daily fuel budget of {budget} for this tool is spent ({used} used today, UTC)"
                    ),
                ));
            }
        }
        if let Some(limit) = rate.writes_per_day
            && writes
            && *tool.writes.current(now, DAY) >= u64::from(limit)
        {
            return Err((
                "guard.write_quota",
                format!(
                    "the write quota of {limit} write, destructive or external calls per day for this tool is used up (UTC)"
                ),
            ));
        }
        let a = tool.actions.entry(action.to_owned()).or_default();
        for (limit, window, width, name, rule) in [
            (
                rate.per_minute,
                &mut a.minute,
                MINUTE,
                "minute",
                "guard.rate.minute",
            ),
            (rate.per_hour, &mut a.hour, HOUR, "hour", "guard.rate.hour"),
            (rate.per_day, &mut a.day, DAY, "day (UTC)", "guard.rate.day"),
        ] {
            if let Some(limit) = limit
                && *window.current(now, width) >= u64::from(limit)
            {
                return Err((
                    rule,
                    format!("rate limit: at most {limit} calls of `{action}` per {name}"),
                ));
            }
        }
        // Admitted: count it everywhere.
        *a.minute.current(now, MINUTE) += 1;
        *a.hour.current(now, HOUR) += 1;
        *a.day.current(now, DAY) += 1;
        if writes {
            *tool.writes.current(now, DAY) += 1;
        }
        Ok(before)
    }

    /// Adds the fuel a finished call burned.
    pub fn burned(&self, key: &Key, fuel: u64, now: i64) {
        let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        let used = usage.entry(key.clone()).or_default().fuel.current(now, DAY);
        *used = used.saturating_add(fuel);
    }
}
