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
//! when the call ends.
//!
//! Where the counts live depends on the store: a single SQLite process keeps
//! them in memory (fast, and nothing else serves that data directory's
//! calls); on PostgreSQL, where several nodes may serve one tenant, they are
//! in the database (`warden_store::usage`), so a bound holds across nodes.
//! Both paths check the same windows in the same order ([`windows`]) and
//! refuse with the same rules ([`refusal`]).

use std::collections::HashMap;
use std::sync::Mutex;

use warden_policy::cedar::Usage;
use warden_policy::{Effect, RateGrant};
use warden_store::{TenantStore, UsageWindow};

const MINUTE: i64 = 60;
const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

/// Scope of the write-quota window.
const WRITES: &str = "*writes";
/// Scope of the fuel-budget window.
const FUEL: &str = "*fuel";

/// Which agent's use of which tool: (tenant, agent id, tool).
pub(crate) type Key = (String, String, String);

/// Why a call is refused: (rule, reason).
pub(crate) type Refusal = (&'static str, String);

/// The windows one admission checks, in order: fuel budget, write quota,
/// then the action's minute, hour and day. The fuel window is only
/// checked (fuel is added when the call ends); the write window counts only
/// calls that write.
fn windows<'a>(
    action: &'a str,
    effect: Effect,
    rate: &RateGrant,
    now: i64,
) -> [UsageWindow<'a>; 5] {
    let writes = !matches!(effect, Effect::Read);
    let w = |scope, width: i64, limit: Option<i64>, count| UsageWindow {
        scope,
        width,
        bucket: now.div_euclid(width),
        limit,
        count,
    };
    [
        w(FUEL, DAY, rate.fuel_per_day.map(|b| b as i64), false),
        w(
            WRITES,
            DAY,
            rate.writes_per_day.filter(|_| writes).map(i64::from),
            writes,
        ),
        w(action, MINUTE, rate.per_minute.map(i64::from), true),
        w(action, HOUR, rate.per_hour.map(i64::from), true),
        w(action, DAY, rate.per_day.map(i64::from), true),
    ]
}

/// The counts before a call, from the windows' counts in [`windows`] order.
fn usage_before(before: &[i64]) -> Usage {
    let at = |i: usize| before.get(i).copied().unwrap_or(0).max(0) as u64;
    Usage {
        fuel_today: at(0),
        writes_today: at(1),
        minute: at(2),
        hour: at(3),
        day: at(4),
    }
}

/// Why window `i` (in [`windows`] order) refused the call.
fn refusal(i: usize, action: &str, rate: &RateGrant, before: &[i64]) -> Refusal {
    let used = before.get(i).copied().unwrap_or(0);
    match i {
        0 => (
            "guard.fuel_budget",
            format!(
                "the daily fuel budget of {} for this tool is spent ({used} used today, UTC)",
                rate.fuel_per_day.unwrap_or(0)
            ),
        ),
        1 => (
            "guard.write_quota",
            format!(
                "the write quota of {} write, destructive or external calls per day for this tool is used up (UTC)",
                rate.writes_per_day.unwrap_or(0)
            ),
        ),
        2 => (
            "guard.rate.minute",
            format!(
                "rate limit: at most {} calls of `{action}` per minute",
                rate.per_minute.unwrap_or(0)
            ),
        ),
        3 => (
            "guard.rate.hour",
            format!(
                "rate limit: at most {} calls of `{action}` per hour",
                rate.per_hour.unwrap_or(0)
            ),
        ),
        _ => (
            "guard.rate.day",
            format!(
                "rate limit: at most {} calls of `{action}` per day (UTC)",
                rate.per_day.unwrap_or(0)
            ),
        ),
    }
}

/// A count in one fixed window.
#[derive(Debug, Default, Clone, Copy)]
struct Window {
    bucket: i64,
    used: i64,
}

/// The counters of one process, by (key, scope, width).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    usage: Mutex<HashMap<(Key, String, i64), Window>>,
}

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
        let ws = windows(action, effect, rate, now);
        let mut before = [0_i64; 5];
        for (i, w) in ws.iter().enumerate() {
            let slot = usage
                .entry((key.clone(), w.scope.to_owned(), w.width))
                .or_default();
            if slot.bucket != w.bucket {
                *slot = Window {
                    bucket: w.bucket,
                    used: 0,
                };
            }
            before[i] = slot.used;
        }
        if let Some(i) = ws
            .iter()
            .zip(&before)
            .position(|(w, used)| w.limit.is_some_and(|l| *used >= l))
        {
            return Err(refusal(i, action, rate, &before));
        }
        for w in ws.iter().filter(|w| w.count) {
            if let Some(slot) = usage.get_mut(&(key.clone(), w.scope.to_owned(), w.width)) {
                slot.used += 1;
            }
        }
        Ok(usage_before(&before))
    }

    /// Adds the fuel a finished call burned.
    pub fn burned(&self, key: &Key, fuel: u64, now: i64) {
        let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = now.div_euclid(DAY);
        let slot = usage
            .entry((key.clone(), FUEL.to_owned(), DAY))
            .or_default();
        if slot.bucket != bucket {
            *slot = Window { bucket, used: 0 };
        }
        slot.used = slot.used.saturating_add(fuel.min(i64::MAX as u64) as i64);
    }
}

/// [`Counters::admit`] against the counters in the database, shared by
/// every node. A store error is returned as such: the caller denies.
pub(crate) async fn admit_shared(
    store: &TenantStore,
    key: &Key,
    action: &str,
    effect: Effect,
    rate: &RateGrant,
    now: i64,
) -> warden_store::Result<Result<Usage, Refusal>> {
    let ws = windows(action, effect, rate, now);
    let a = store.admit_usage(&key.1, &key.2, &ws).await?;
    Ok(match a.refused {
        Some(i) => Err(refusal(i, action, rate, &a.before)),
        None => Ok(usage_before(&a.before)),
    })
}

/// [`Counters::burned`] against the counters in the database.
pub(crate) async fn burned_shared(
    store: &TenantStore,
    key: &Key,
    fuel: u64,
    now: i64,
) -> warden_store::Result<()> {
    store
        .add_usage(
            &key.1,
            &key.2,
            FUEL,
            DAY,
            now.div_euclid(DAY),
            fuel.min(i64::MAX as u64) as i64,
        )
        .await
}
