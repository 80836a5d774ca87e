//! The wasmtime engine: pooling allocator, fuel, epochs, and the epoch ticker.
//!
//! One engine per [`Runtime`](crate::Runtime). Its configuration is part of
//! the precompiled-component cache key, since a `.cwasm` only loads into an
//! engine with the same settings.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::{Error, Result};

/// How often the epoch advances. Deadlines are checked at this granularity and
/// a running guest yields to the executor this often, so one runaway call
/// cannot starve the others.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Largest linear memory any call may be granted (the policy ceiling). The
/// pool reserves address space for this size per slot; actual use is bounded
/// per call by the store limiter.
const POOL_MAX_MEMORY: usize = 4 << 30;

/// Largest table any call may be granted; matches the policy ceiling.
const POOL_TABLE_ELEMENTS: usize = warden_policy::ceiling::TABLE_ELEMENTS as usize;

/// Builds the engine for at most `max_concurrent` simultaneous instances.
pub fn build(max_concurrent: u32) -> Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(max_concurrent)
        .total_core_instances(max_concurrent * 8)
        .total_memories(max_concurrent * 2)
        .total_tables(max_concurrent * 4)
        .total_stacks(max_concurrent)
        .max_memory_size(POOL_MAX_MEMORY)
        .table_elements(POOL_TABLE_ELEMENTS)
        .max_core_instances_per_component(16)
        .max_memories_per_component(4)
        .max_tables_per_component(8)
        // Reset small regions with memset instead of madvise: cheaper per call.
        .linear_memory_keep_resident(1 << 20)
        .table_keep_resident(64 << 10)
        .pagemap_scan(Enabled::Auto);

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        // Warden uses fiber-based `call_async`, not component-model async;
        // turning the latter off saves several microseconds per call.
        .concurrency_support(false)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config).map_err(|e| Error::Engine(e.to_string()))
}

/// A stable fingerprint of the engine's compilation settings, for cache keys.
pub fn fingerprint(engine: &Engine) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
#[derive(Debug)]
pub struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Ticker {
    /// Starts the ticker. Without it no deadline would ever fire, so failing to
    /// start it is an error, not a warning.
    pub fn start(engine: &Engine) -> Result<Ticker> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let engine = engine.clone();
        std::thread::Builder::new()
            .name("warden-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .map_err(|e| Error::Engine(format!("cannot start the epoch ticker: {e}")))?;
        Ok(Ticker { stop })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
