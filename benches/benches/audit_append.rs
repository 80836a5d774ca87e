//! Append throughput of the audit writer with group commit: 1, 16 and 256
//! concurrent writers, each waiting until its entry is durable (SQLite,
//! `synchronous=FULL`, a real file under `target/`). One element is one
//! durable entry.
//!
//! `cargo bench -p warden-benches --bench audit_append`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use warden_audit::Entry;
use warden_service::AuditLog;
use warden_store::Store;

fn entry(i: u64) -> Entry {
    let mut e = Entry::new(
        "acme",
        "invocation.finished",
        "agent:bot",
        1_763_000_000_000 + i as i64,
    );
    e.agent = Some("bot".into());
    e.tool = Some("text".into());
    e.action = Some("word_count".into());
    e.args_sha256 = Some(warden_audit::sha256_hex(&i.to_le_bytes()));
    e.decision = Some("ok".into());
    e.fuel = Some(12_345);
    e.correlation = Some(format!("req-{i}"));
    e
}

fn append(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    let dir = tempfile::Builder::new()
        .prefix("audit-append-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("tempdir");
    let (store, tenant) = rt.block_on(async {
        let store = Store::open(dir.path()).await.expect("store");
        store
            .create_tenant("acme", "bench", 0)
            .await
            .expect("tenant");
        let tenant = store.tenant("acme").await.expect("tenant store");
        (store, tenant)
    });
    let log = Arc::new(AuditLog::new(dir.path()));
    let mut g = c.benchmark_group("audit append (durable)");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));
    for writers in [1u64, 16, 256] {
        g.bench_function(format!("{writers} writers"), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let log = log.clone();
                let tenant = tenant.clone();
                async move {
                    let started = Instant::now();
                    let mut tasks = tokio::task::JoinSet::new();
                    for w in 0..writers {
                        let log = log.clone();
                        let tenant = tenant.clone();
                        let n = iters / writers + u64::from(w < iters % writers);
                        tasks.spawn(async move {
                            for i in 0..n {
                                log.append(&tenant, entry(w * 1_000_000 + i), None)
                                    .await
                                    .expect("append");
                            }
                        });
                    }
                    while let Some(r) = tasks.join_next().await {
                        r.expect("writer");
                    }
                    started.elapsed()
                }
            });
        });
    }
    g.finish();
    rt.block_on(log.flush(&store));
}

criterion_group!(benches, append);
criterion_main!(benches);
