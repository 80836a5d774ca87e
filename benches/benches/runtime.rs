//! Per-call latency of raw wasmtime vs Warden's full runtime path, compile vs
//! cached load, and a trivial call's latency while two runaways loop.
//!
//! Run: `cargo bench -p warden-benches` (numbers go in the issue notes).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use warden_runtime::{Call, Runtime, RuntimeConfig};
use warden_tests::{backends, grant, guest, invoke, load};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

wasmtime::component::bindgen!({
    path: "../wit",
    world: "warden:tool/tool",
    exports: { default: async },
});

const INPUT: &str = r#"{"text":"the quick brown fox jumps over the lazy dog"}"#;

struct Raw {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Raw {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// The floor: the same pooled engine as Warden's (fuel, epochs, pagemap scan,
/// keep-resident), a pre-instantiated component, a fresh store per call with
/// a WASI context, instantiate, call `invoke`. No guard, no grant, no limits
/// or deadline callback, no report.
fn raw_wasmtime(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(16)
        .total_core_instances(128)
        .total_memories(32)
        .total_tables(64)
        .total_stacks(16)
        .max_memory_size(4 << 30)
        .table_elements(100_000)
        .linear_memory_keep_resident(1 << 20)
        .table_keep_resident(64 << 10)
        .pagemap_scan(wasmtime::Enabled::Auto);
    // The same engine settings as Warden's own (host/runtime/src/engine.rs),
    // so the ratio measures Warden's path, not a different engine.
    let mut config = Config::new();
    config
        .consume_fuel(true)
        .epoch_interruption(true)
        .concurrency_support(false)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config).expect("engine");
    let component = Component::from_file(&engine, guest("text")).expect("compile");
    let mut linker: Linker<Raw> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).expect("link");
    let pre = ToolPre::new(linker.instantiate_pre(&component).expect("pre")).expect("tool world");
    c.bench_function("raw_wasmtime/text.word_count", |b| {
        b.to_async(rt).iter(|| async {
            let mut store = Store::new(
                &engine,
                Raw {
                    ctx: WasiCtx::builder().build(),
                    table: ResourceTable::new(),
                },
            );
            store.set_fuel(1_000_000_000).expect("fuel");
            store.set_epoch_deadline(1000);
            let tool = pre
                .instantiate_async(&mut store)
                .await
                .expect("instantiate");
            let out = tool
                .call_invoke(&mut store, "word_count", INPUT)
                .await
                .expect("call");
            assert!(out.is_ok());
            let _ = std::hint::black_box(out);
        })
    });
}

/// Warden's full path: grant checks, state built from the grant, guard,
/// limits, stdio capture, output validation, report.
fn warden_full(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let runtime = Runtime::new(RuntimeConfig {
        max_concurrent: 16,
        cache_dir: None,
    })
    .expect("runtime");
    let tool = rt
        .block_on(runtime.load_file(&guest("text")))
        .expect("load");
    let g = grant("");
    let b = backends(&[]);
    c.bench_function("warden/text.word_count", |bench| {
        bench.to_async(rt).iter(|| async {
            let r = runtime
                .invoke(
                    &tool,
                    g.clone(),
                    &b,
                    Call {
                        action: "word_count",
                        input: INPUT,
                    },
                )
                .await;
            assert!(r.outcome.is_ok());
            std::hint::black_box(r);
        })
    });
}

/// First compile vs cached load of the same component.
fn compile_vs_cache(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let bytes = std::fs::read(guest("text")).expect("text.wasm");
    let mut group = c.benchmark_group("load/text");
    group.sample_size(10);
    group.bench_function("compile (no cache)", |b| {
        let runtime = Runtime::new(RuntimeConfig {
            max_concurrent: 4,
            cache_dir: None,
        })
        .expect("runtime");
        b.to_async(rt)
            .iter(|| async { std::hint::black_box(runtime.load(&bytes).await.expect("load")) })
    });
    let dir = std::env::temp_dir().join(format!("warden-bench-cache-{}", std::process::id()));
    let runtime = Runtime::new(RuntimeConfig {
        max_concurrent: 4,
        cache_dir: Some(dir.clone()),
    })
    .expect("runtime");
    rt.block_on(runtime.load(&bytes)).expect("warm the cache");
    group.bench_function("cached .cwasm", |b| {
        b.to_async(rt)
            .iter(|| async { std::hint::black_box(runtime.load(&bytes).await.expect("load")) })
    });
    group.finish();
    let _ = std::fs::remove_dir_all(dir);
}

/// A trivial call's latency while two runaway calls loop on both cores.
fn runaway(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let runtime = Arc::new(
        Runtime::new(RuntimeConfig {
            max_concurrent: 16,
            cache_dir: None,
        })
        .expect("runtime"),
    );
    let text = rt.block_on(load(&runtime, "text"));
    let hostile = rt.block_on(load(&runtime, "fixture_hostile"));
    let spin = grant("[limits]\nfuel = 100000000000\ndeadline_ms = 600000\n");
    let mut loops = Vec::new();
    for _ in 0..2 {
        let (runtime, hostile, spin) = (runtime.clone(), hostile.clone(), spin.clone());
        loops.push(rt.spawn(async move {
            invoke(&runtime, &hostile, &spin, &backends(&[]), "spin", json!({})).await
        }));
    }
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(100)).await });
    let g = grant("");
    let b = backends(&[]);
    let mut group = c.benchmark_group("runaway");
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("trivial call while two runaways loop", |bench| {
        bench.to_async(rt).iter_custom(|iters| {
            let (runtime, text, g, b) = (runtime.clone(), text.clone(), g.clone(), b.clone());
            async move {
                let start = Instant::now();
                for _ in 0..iters {
                    let r = runtime
                        .invoke(
                            &text,
                            g.clone(),
                            &b,
                            Call {
                                action: "word_count",
                                input: INPUT,
                            },
                        )
                        .await;
                    assert!(r.outcome.is_ok());
                }
                start.elapsed()
            }
        })
    });
    group.finish();
    for l in loops {
        l.abort();
    }
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    raw_wasmtime(c, &rt);
    warden_full(c, &rt);
    compile_vs_cache(c, &rt);
    runaway(c, &rt);
}

criterion_group!(runtime, benches);
criterion_main!(runtime);
