//! Every hostile fixture is stopped by the right limit with a clear outcome,
//! and the host stays healthy for the next call.

use std::time::Duration;

use serde_json::json;
use warden_runtime::{Error, Outcome, Report, Runtime, Tool};
use warden_tests::{backends, grant, invoke, load, root, runtime};

/// A trivial call that must still succeed after each hostile one.
async fn healthy(rt: &Runtime, text: &Tool) {
    let r = invoke(
        rt,
        text,
        &grant(""),
        &backends(&[]),
        "word_count",
        json!({"text": "still alive"}),
    )
    .await;
    assert!(
        r.outcome.is_ok(),
        "host unhealthy after a hostile call: {}",
        r.outcome.reason()
    );
    assert_eq!(r.output, Some(json!({"words": 2, "lines": 1, "chars": 11})));
}

async fn hostile(
    rt: &Runtime,
    tool: &Tool,
    limits: &str,
    action: &str,
    input: serde_json::Value,
) -> Report {
    invoke(rt, tool, &grant(limits), &backends(&[]), action, input).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fixture_is_stopped_by_its_limit() {
    let rt = runtime();
    let h = load(&rt, "fixture_hostile").await;
    let text = load(&rt, "text").await;

    // Infinite loop, fuel first.
    let r = hostile(&rt, &h, "[limits]\nfuel = 50000000\n", "spin", json!({})).await;
    assert_eq!(r.outcome, Outcome::OutOfFuel { limit: 50_000_000 });
    assert_eq!(r.fuel_used, 50_000_000);
    healthy(&rt, &text).await;

    // Infinite loop, wall clock first.
    let r = hostile(
        &rt,
        &h,
        "[limits]\nfuel = 100000000000\ndeadline_ms = 200\n",
        "spin",
        json!({}),
    )
    .await;
    assert_eq!(r.outcome, Outcome::Deadline { limit_ms: 200 });
    assert!(
        r.elapsed_us >= 200_000,
        "stopped early: {} us",
        r.elapsed_us
    );
    healthy(&rt, &text).await;

    // Memory bomb.
    let r = hostile(
        &rt,
        &h,
        "[limits]\nmemory_bytes = 16777216\n",
        "memory_bomb",
        json!({}),
    )
    .await;
    match r.outcome {
        Outcome::MemoryLimit { limit, requested } => {
            assert_eq!(limit, 16 << 20);
            assert!(requested > limit);
        }
        other => panic!("memory bomb: {other:?}"),
    }
    healthy(&rt, &text).await;

    // Deep recursion.
    let r = hostile(&rt, &h, "", "deep_recursion", json!({})).await;
    assert_eq!(r.outcome, Outcome::StackOverflow);
    healthy(&rt, &text).await;

    // Huge output.
    let r = hostile(
        &rt,
        &h,
        "[limits]\noutput_bytes = 1000\n",
        "huge_output",
        json!({"bytes": 5000}),
    )
    .await;
    assert_eq!(
        r.outcome,
        Outcome::OutputTooLarge {
            limit: 1000,
            size: 5011
        }
    );
    assert_eq!(r.output, None);
    let r = hostile(
        &rt,
        &h,
        "[limits]\noutput_bytes = 1000\n",
        "huge_output",
        json!({"bytes": 10}),
    )
    .await;
    assert!(r.outcome.is_ok());
    healthy(&rt, &text).await;

    // An output its own schema forbids: refused, not returned.
    let r = hostile(&rt, &h, "", "lying_output", json!({})).await;
    match &r.outcome {
        Outcome::InvalidOutput { message } => assert!(
            message.contains("does not match the output schema at count")
                && message.contains("is not of type \"integer\""),
            "{message}"
        ),
        other => panic!("lying output: {other:?}"),
    }
    assert_eq!(r.output, None);
    // An input its schema forbids never reaches the tool: nothing runs.
    let r = hostile(&rt, &h, "", "lying_output", json!({"extra": 1})).await;
    match &r.outcome {
        Outcome::InvalidInput { field, message } => {
            // `additionalProperties: false` without `properties` fails as a
            // false schema at the object itself.
            assert!(field == "extra" || field == "$", "{field}: {message}");
            assert!(
                message.contains("does not match the input schema"),
                "{message}"
            );
        }
        other => panic!("schema-invalid input: {other:?}"),
    }
    assert_eq!(r.fuel_used, 0, "refused before any wasm ran");
    healthy(&rt, &text).await;

    // Stdout/stderr flood: captured up to the cap, the rest dropped and counted.
    let r = hostile(
        &rt,
        &h,
        "[limits]\nstdio_bytes = 4096\n",
        "stdio_flood",
        json!({"bytes": 10_000_000}),
    )
    .await;
    assert!(r.outcome.is_ok(), "{}", r.outcome.reason());
    assert_eq!(r.stdout.len(), 4096);
    assert_eq!(r.stderr.len(), 4096);
    assert_eq!(
        r.stdio_dropped,
        2 * (10_000_000_u64.div_ceil(2048) * 1024) - 8192
    );
    healthy(&rt, &text).await;

    // Panic: a trap carrying the panic message.
    let r = hostile(&rt, &h, "", "panic", json!({})).await;
    match &r.outcome {
        Outcome::Trap { message } => {
            assert!(
                message.contains("hostile fixture panicked on purpose"),
                "{message}"
            )
        }
        other => panic!("panic: {other:?}"),
    }
    healthy(&rt, &text).await;
}

#[tokio::test]
async fn invalid_components_are_refused_at_load() {
    let rt = runtime();
    match rt
        .load_file(&warden_tests::guest("fixture_bad_schema"))
        .await
    {
        Err(Error::InvalidDescription(m)) => {
            assert!(
                m.contains("action `noop`: input schema is not a valid JSON Schema"),
                "{m}"
            )
        }
        other => panic!("bad schema accepted: {other:?}"),
    }
    match rt
        .load_file(&root().join("tools/fixtures/malformed.wasm"))
        .await
    {
        Err(Error::InvalidComponent(m)) => assert!(m.contains("failed to parse"), "{m}"),
        other => panic!("malformed accepted: {other:?}"),
    }
    match rt.load_file(&warden_tests::guest("fixture_sockets")).await {
        Err(e @ Error::UnsupportedImport(_)) => {
            let m = e.to_string();
            assert!(m.starts_with("component imports `wasi:sockets/"), "{m}");
            assert!(m.ends_with("which Warden never provides"), "{m}");
        }
        other => panic!("raw sockets accepted: {other:?}"),
    }
    match rt.load(b"").await {
        Err(Error::InvalidComponent(_)) => {}
        other => panic!("empty bytes accepted: {other:?}"),
    }
    // A core module is not a component.
    let core = b"\0asm\x01\0\0\0";
    match rt.load(core).await {
        Err(Error::InvalidComponent(_)) => {}
        other => panic!("core module accepted: {other:?}"),
    }
    let text = load(&rt, "text").await;
    healthy(&rt, &text).await;
}

/// Two runaway calls loop on both cores; a trivial call still completes while
/// they run. (The bench `runaway` reports its latency.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trivial_call_completes_while_two_runaways_loop() {
    let rt = std::sync::Arc::new(runtime());
    let h = load(&rt, "fixture_hostile").await;
    let text = load(&rt, "text").await;
    let runaway = grant("[limits]\nfuel = 100000000000\ndeadline_ms = 8000\n");
    let mut loops = Vec::new();
    for _ in 0..2 {
        let (rt, h, g) = (rt.clone(), h.clone(), runaway.clone());
        loops.push(tokio::spawn(async move {
            invoke(&rt, &h, &g, &backends(&[]), "spin", json!({})).await
        }));
    }
    // Let both runaways start spinning.
    tokio::time::sleep(Duration::from_millis(100)).await;
    healthy(&rt, &text).await;
    assert!(
        loops.iter().all(|l| !l.is_finished()),
        "the runaways must still be looping when the trivial call completes"
    );
    for l in loops {
        let r = l.await.expect("runaway task");
        assert_eq!(r.outcome, Outcome::Deadline { limit_ms: 8000 });
    }
}

/// Nothing ambient leaks into a guest: no environment variables, no
/// arguments, no stdin.
#[tokio::test]
async fn guest_sees_no_ambient_authority() {
    let rt = runtime();
    let h = load(&rt, "fixture_hostile").await;
    let r = hostile(&rt, &h, "", "ambient", json!({})).await;
    assert!(r.outcome.is_ok(), "{}", r.outcome.reason());
    let out = r.output.expect("output");
    assert_eq!(out["env"], json!([]), "environment leaked: {out}");
    assert_eq!(out["args"], json!([]), "arguments leaked: {out}");
    assert_eq!(out["stdin_bytes"], 0);
    assert!(r.imports.is_empty(), "no capability was used");
}

/// The disk cache is used on the second load, and a corrupt entry is detected
/// and recompiled rather than loaded.
#[tokio::test]
async fn compile_cache_hits_and_survives_corruption() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = warden_runtime::Runtime::new(warden_runtime::RuntimeConfig {
        max_concurrent: 4,
        cache_dir: Some(dir.path().to_path_buf()),
    })
    .expect("runtime");
    let path = warden_tests::guest("text");
    let first = rt.load_file(&path).await.expect("load");
    assert!(!first.loaded_from_cache());
    let second = rt.load_file(&path).await.expect("load");
    assert!(second.loaded_from_cache());
    assert_eq!(first.hash(), second.hash());
    // Corrupt every cached file: the next load recompiles and still works.
    for e in std::fs::read_dir(dir.path()).expect("cache dir").flatten() {
        let mut bytes = std::fs::read(e.path()).expect("read");
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(e.path(), bytes).expect("write");
    }
    let third = rt.load_file(&path).await.expect("load after corruption");
    assert!(!third.loaded_from_cache());
    healthy(&rt, &third).await;
}

/// Refusals that happen before any instance exists: an invalid grant built in
/// code, oversized input, input that is not JSON. Nothing runs, no fuel is used.
#[tokio::test]
async fn bad_grants_and_inputs_are_refused_before_running() {
    let rt = runtime();
    let h = load(&rt, "fixture_hostile").await;
    let text = load(&rt, "text").await;

    let mut bad = warden_policy::Grant::empty(warden_policy::Limits::STANDARD);
    bad.limits.memory_bytes = u64::MAX;
    let r = invoke(
        &rt,
        &h,
        &std::sync::Arc::new(bad),
        &backends(&[]),
        "spin",
        json!({}),
    )
    .await;
    assert!(
        matches!(&r.outcome, Outcome::NotGranted { reason } if reason.contains("memory_bytes must be between")),
        "{:?}",
        r.outcome
    );
    assert_eq!(r.fuel_used, 0);

    let big = "x".repeat(warden_runtime::MAX_INPUT_BYTES + 1);
    let call = warden_runtime::Call {
        action: "spin",
        input: &big,
    };
    let r = rt.invoke(&h, grant(""), &backends(&[]), call).await;
    assert!(
        matches!(&r.outcome, Outcome::InvalidInput { field, message } if field == "$" && message.contains("exceeds")),
        "{:?}",
        r.outcome
    );
    assert_eq!(r.fuel_used, 0);

    let call = warden_runtime::Call {
        action: "spin",
        input: "{not json",
    };
    let r = rt.invoke(&h, grant(""), &backends(&[]), call).await;
    assert!(
        matches!(&r.outcome, Outcome::InvalidInput { field, message } if field == "$" && message.contains("not JSON")),
        "{:?}",
        r.outcome
    );
    assert_eq!(r.fuel_used, 0);
    healthy(&rt, &text).await;
}
