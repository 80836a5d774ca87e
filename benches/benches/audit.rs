//! The audit trail's CPU costs: sealing one entry (canonical encoding,
//! chain hash, Merkle leaf and frontier, HMAC) and verifying a bundle
//! offline (per entry: decode, canonical re-encode, HMAC, chain, Merkle).
//!
//! `cargo bench -p warden-benches --bench audit`

use std::collections::HashMap;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use warden_audit::{Bundle, Chain, Entry, KeyFile};

/// A realistic call-completion entry.
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
    e.component = Some("28454001fbaa74033e39869d72f9002bf33f3213ea6b0aa226e283d52af57b97".into());
    e.args_sha256 = Some(warden_audit::sha256_hex(&i.to_le_bytes()));
    e.result_sha256 = Some(warden_audit::sha256_hex(&(i + 1).to_le_bytes()));
    e.decision = Some("ok".into());
    e.fuel = Some(12_345);
    e.elapsed_us = Some(87);
    e.correlation = Some(format!("req-{i}"));
    e.detail = serde_json::json!({ "decided": i.saturating_sub(1), "imports": [] });
    e
}

fn bundle(n: u64, keys: &KeyFile) -> Bundle {
    let mut chain = Chain::new("acme");
    let key = keys.current().expect("key");
    let records = (0..n)
        .map(|i| chain.seal(entry(i), key).expect("seal"))
        .collect();
    let name = warden_audit::origin("acme");
    Bundle {
        format: Bundle::FORMAT.into(),
        tenant: "acme".into(),
        origin: name.clone(),
        signers: vec![key.verifier(&name).expect("verifier").text()],
        records,
        checkpoints: vec![chain.checkpoint(key).expect("checkpoint")],
    }
}

fn seal(c: &mut Criterion) {
    let keys = KeyFile::new(0).expect("keys");
    let key = keys.current().expect("key").clone();
    let mut chain = Chain::new("acme");
    let mut i = 0;
    let mut g = c.benchmark_group("audit");
    g.throughput(Throughput::Elements(1));
    g.bench_function("seal one entry (encode, chain, Merkle, HMAC)", |b| {
        b.iter(|| {
            i += 1;
            chain.seal(entry(i), &key).expect("seal")
        });
    });
    g.bench_function("sign a checkpoint (Ed25519)", |b| {
        b.iter(|| chain.checkpoint(&key).expect("checkpoint"));
    });
    g.finish();
}

fn verify(c: &mut Criterion) {
    let keys = KeyFile::new(0).expect("keys");
    let n = 100_000;
    let b = bundle(n, &keys);
    let hmac = keys.hmac_keys();
    let mut g = c.benchmark_group("audit verify");
    g.throughput(Throughput::Elements(n));
    g.sample_size(10);
    g.bench_function("100k entries, with HMAC keys", |bn| {
        bn.iter(|| {
            let v = warden_audit::verify(&b, &hmac, None);
            assert!(v.ok());
        });
    });
    g.bench_function("100k entries, without HMAC keys", |bn| {
        bn.iter(|| {
            let v = warden_audit::verify(&b, &HashMap::new(), None);
            assert!(v.ok());
        });
    });
    g.finish();
}

criterion_group!(benches, seal, verify);
criterion_main!(benches);
