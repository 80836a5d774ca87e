//! Every capability, end to end with real components: an allowed case works,
//! an ungranted use is denied with a message naming the capability and what
//! the grant allows, and a component importing an unlinked capability is
//! refused before instantiation with a message naming the missing grant.

use serde_json::json;
use warden_policy::{Capability, Decision};
use warden_runtime::{Outcome, Report};
use warden_tests::{backends, grant, http_server, invoke, load, runtime};

/// Asserts the report's outcome. `Ok(fragment)` expects success with the
/// fragment in the output JSON; `Err(fragment)` expects a non-ok outcome whose
/// reason contains the fragment.
#[track_caller]
fn check(r: &Report, expected: Result<&str, &str>) {
    match expected {
        Ok(frag) => {
            assert!(
                r.outcome.is_ok(),
                "expected ok, got {}\n{r:#?}",
                r.outcome.reason()
            );
            let out = r.output.as_ref().map(|o| o.to_string()).unwrap_or_default();
            assert!(out.contains(frag), "output {out} lacks {frag}");
        }
        Err(frag) => {
            let reason = r.outcome.reason();
            assert!(
                !r.outcome.is_ok(),
                "expected failure with {frag}, got ok: {:?}",
                r.output
            );
            assert!(reason.contains(frag), "reason `{reason}` lacks `{frag}`");
        }
    }
}

fn files_grant(dir: &std::path::Path, mode: &str) -> String {
    format!(
        "[fs]\ndirs = [{{ host = \"{}\", guest = \"/workspace\", mode = \"{mode}\" }}]\n",
        dir.display()
    )
}

#[tokio::test]
async fn fs_allow_deny_and_escapes() {
    let rt = runtime();
    let files = load(&rt, "files").await;
    let b = backends(&[]);
    let work = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(outside.path().join("secret.txt"), "top secret").expect("write");
    std::os::unix::fs::symlink(outside.path(), work.path().join("link")).expect("symlink");
    std::os::unix::fs::symlink(
        outside.path().join("secret.txt"),
        work.path().join("leak.txt"),
    )
    .expect("symlink");
    let rw = grant(&files_grant(work.path(), "read-write"));
    let ro = grant(&files_grant(work.path(), "read-only"));

    // Allowed: write, read, list, delete inside the granted directory.
    let r = invoke(
        &rt,
        &files,
        &rw,
        &b,
        "write",
        json!({"path": "notes.txt", "content": "hi there"}),
    )
    .await;
    check(&r, Ok("\"bytes\":8"));
    assert_eq!(
        std::fs::read_to_string(work.path().join("notes.txt")).expect("file written"),
        "hi there"
    );
    assert!(r.imports.iter().any(|e| e.capability == Capability::Fs
        && e.operation == "open-write"
        && e.resource == "/workspace/notes.txt"
        && e.decision == Decision::Allow));
    check(
        &invoke(&rt, &files, &ro, &b, "read", json!({"path": "notes.txt"})).await,
        Ok("hi there"),
    );
    check(
        &invoke(&rt, &files, &ro, &b, "list", json!({"path": "."})).await,
        Ok("notes.txt"),
    );
    check(
        &invoke(&rt, &files, &rw, &b, "delete", json!({"path": "notes.txt"})).await,
        Ok("true"),
    );
    assert!(!work.path().join("notes.txt").exists());

    // Denied: writing under a read-only grant names the directory and mode.
    std::fs::write(work.path().join("keep.txt"), "keep").expect("write");
    let r = invoke(
        &rt,
        &files,
        &ro,
        &b,
        "write",
        json!({"path": "keep.txt", "content": "x"}),
    )
    .await;
    check(
        &r,
        Err("fs: write to `/workspace/keep.txt` denied: `/workspace` is granted read-only"),
    );
    check(
        &invoke(&rt, &files, &ro, &b, "delete", json!({"path": "keep.txt"})).await,
        Err("granted read-only"),
    );
    assert_eq!(
        std::fs::read_to_string(work.path().join("keep.txt")).expect("kept"),
        "keep"
    );

    // Escapes: `..`, an absolute path, and symlinks out of the directory.
    let r = invoke(
        &rt,
        &files,
        &rw,
        &b,
        "read",
        json!({"path": "../secret.txt"}),
    )
    .await;
    check(&r, Err("contains `..`"));
    let r = invoke(
        &rt,
        &files,
        &rw,
        &b,
        "write",
        json!({"path": "../escaped.txt", "content": "x"}),
    )
    .await;
    check(&r, Err("contains `..`"));
    let r = invoke(&rt, &files, &rw, &b, "read", json!({"path": "/etc/passwd"})).await;
    assert!(
        !r.outcome.is_ok(),
        "absolute path outside the grant must fail: {r:?}"
    );
    assert!(
        !format!("{r:?}").contains("root:"),
        "absolute path leaked /etc/passwd"
    );
    let r = invoke(
        &rt,
        &files,
        &rw,
        &b,
        "read",
        json!({"path": "link/secret.txt"}),
    )
    .await;
    check(&r, Err("resolves outside the granted directory"));
    let r = invoke(&rt, &files, &rw, &b, "read", json!({"path": "leak.txt"})).await;
    check(&r, Err("resolves outside the granted directory"));
    assert!(!format!("{r:?}").contains("top secret"));
    let r = invoke(
        &rt,
        &files,
        &rw,
        &b,
        "write",
        json!({"path": "link/planted.txt", "content": "x"}),
    )
    .await;
    check(&r, Err("resolves outside the granted directory"));
    assert!(!outside.path().join("planted.txt").exists());

    // Unlinked: no fs grant, the component is not instantiated at all.
    let none = grant("");
    let r = invoke(&rt, &files, &none, &b, "read", json!({"path": "keep.txt"})).await;
    check(&r, Err("capability `fs`"));
    assert!(matches!(r.outcome, Outcome::NotGranted { .. }));
    assert!(
        r.outcome.reason().contains("wasi:filesystem/"),
        "{}",
        r.outcome.reason()
    );
}

#[tokio::test]
async fn fs_grant_to_a_missing_directory_is_refused() {
    let rt = runtime();
    let files = load(&rt, "files").await;
    let g = grant(&files_grant(
        std::path::Path::new("/nonexistent/warden-test"),
        "read-only",
    ));
    let r = invoke(
        &rt,
        &files,
        &g,
        &backends(&[]),
        "list",
        json!({"path": "."}),
    )
    .await;
    check(
        &r,
        Err("granted directory `/nonexistent/warden-test` cannot be opened"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_allow_deny_cap_and_deadline() {
    let addr = http_server();
    let rt = runtime();
    let fetch = load(&rt, "http-fetch").await;
    let b = backends(&[]);
    let port = addr.port();
    let g = grant(&format!(
        "[http]\nallow = [{{ host = \"127.0.0.1\", port = {port}, schemes = [\"http\"], methods = [\"GET\"] }}]\nmax_response_bytes = 4096\n"
    ));

    // Allowed GET to the granted host and port.
    let r = invoke(
        &rt,
        &fetch,
        &g,
        &b,
        "get",
        json!({"url": format!("http://127.0.0.1:{port}/hello")}),
    )
    .await;
    check(&r, Ok("\"body\":\"hello\""));
    assert!(
        r.imports
            .iter()
            .any(|e| e.capability == Capability::Http && e.decision == Decision::Allow)
    );

    // Another host, another port, another method: denied before connecting,
    // each naming what the grant allows.
    let r = invoke(
        &rt,
        &fetch,
        &g,
        &b,
        "get",
        json!({"url": format!("http://127.0.0.2:{port}/hello")}),
    )
    .await;
    check(
        &r,
        Err(&format!(
            "http: host `127.0.0.2:{port}` is not granted (grant allows: http 127.0.0.1:{port} [GET])"
        )),
    );
    let r = invoke(
        &rt,
        &fetch,
        &g,
        &b,
        "get",
        json!({"url": format!("http://127.0.0.1:{}/hello", port + 1)}),
    )
    .await;
    check(&r, Err("is not granted"));
    let r = invoke(
        &rt,
        &fetch,
        &g,
        &b,
        "post",
        json!({"url": format!("http://127.0.0.1:{port}/echo"), "body": "{}"}),
    )
    .await;
    check(&r, Err("http: method POST to `127.0.0.1"));
    let r = invoke(
        &rt,
        &fetch,
        &g,
        &b,
        "get",
        json!({"url": format!("https://127.0.0.1:{port}/hello")}),
    )
    .await;
    check(&r, Err("scheme `https`"));

    // POST allowed when granted; the body round-trips.
    let gp = grant(&format!(
        "[http]\nallow = [{{ host = \"127.0.0.1\", port = {port}, schemes = [\"http\"], methods = [\"GET\", \"POST\"] }}]\n"
    ));
    let r = invoke(
        &rt,
        &fetch,
        &gp,
        &b,
        "post",
        json!({"url": format!("http://127.0.0.1:{port}/echo"), "body": "{\"a\":1}"}),
    )
    .await;
    check(&r, Ok("{\\\"a\\\":1}"));

    // The host's response cap (4096 bytes) stops a 2 MiB body.
    let r = invoke(
        &rt,
        &fetch,
        &g,
        &b,
        "get",
        json!({"url": format!("http://127.0.0.1:{port}/big"), "max_bytes": 10_000_000}),
    )
    .await;
    check(&r, Err("response body exceeds"));
    assert!(r.output.is_none());

    // A server that never answers in time: the call's deadline still holds
    // while the guest waits inside a host call.
    let slow = grant(&format!(
        "[limits]\ndeadline_ms = 300\n[http]\nallow = [{{ host = \"127.0.0.1\", port = {port}, schemes = [\"http\"] }}]\n"
    ));
    let r = invoke(
        &rt,
        &fetch,
        &slow,
        &b,
        "get",
        json!({"url": format!("http://127.0.0.1:{port}/slow")}),
    )
    .await;
    assert!(
        matches!(r.outcome, Outcome::Deadline { limit_ms: 300 }),
        "{:?}",
        r.outcome
    );

    // Unlinked: no http grant.
    let r = invoke(
        &rt,
        &fetch,
        &grant(""),
        &b,
        "get",
        json!({"url": format!("http://127.0.0.1:{port}/hello")}),
    )
    .await;
    check(&r, Err("capability `http`"));
    assert!(
        r.outcome.reason().contains("wasi:http/"),
        "{}",
        r.outcome.reason()
    );
}

#[tokio::test]
async fn kv_allow_deny_namespaces() {
    let rt = runtime();
    let kv = load(&rt, "kv").await;
    let b = backends(&[]);
    let a = grant("[kv]\nnamespace = \"team-a\"\nmax_value_bytes = 16\n");
    let other = grant("[kv]\nnamespace = \"team-b\"\n");
    let ro = grant("[kv]\nnamespace = \"team-a\"\nwrite = false\n");

    check(
        &invoke(&rt, &kv, &a, &b, "put", json!({"key": "k1", "value": "v1"})).await,
        Ok("true"),
    );
    check(
        &invoke(&rt, &kv, &a, &b, "get", json!({"key": "k1"})).await,
        Ok("\"value\":\"v1\""),
    );
    check(
        &invoke(&rt, &kv, &a, &b, "list", json!({"prefix": "k"})).await,
        Ok("[\"k1\"]"),
    );
    // Another namespace on the same backend sees nothing.
    check(
        &invoke(&rt, &kv, &other, &b, "get", json!({"key": "k1"})).await,
        Ok("\"found\":false"),
    );
    check(
        &invoke(&rt, &kv, &other, &b, "list", json!({})).await,
        Ok("\"keys\":[]"),
    );
    // Read-only grant: reads work, writes and deletes are denied by name.
    check(
        &invoke(&rt, &kv, &ro, &b, "get", json!({"key": "k1"})).await,
        Ok("v1"),
    );
    check(
        &invoke(&rt, &kv, &ro, &b, "put", json!({"key": "k1", "value": "x"})).await,
        Err("kv: set `k1` denied: namespace `team-a` is granted read-only"),
    );
    check(
        &invoke(&rt, &kv, &ro, &b, "delete", json!({"key": "k1"})).await,
        Err("granted read-only"),
    );
    // Value size cap from the grant.
    check(
        &invoke(
            &rt,
            &kv,
            &a,
            &b,
            "put",
            json!({"key": "big", "value": "x".repeat(17)}),
        )
        .await,
        Err("kv: value of 17 bytes for `big` exceeds the granted 16 bytes"),
    );
    check(
        &invoke(&rt, &kv, &a, &b, "delete", json!({"key": "k1"})).await,
        Ok("\"existed\":true"),
    );
    // Unlinked.
    let r = invoke(&rt, &kv, &grant(""), &b, "get", json!({"key": "k1"})).await;
    check(
        &r,
        Err(
            "component imports `warden:tool/kv@0.1.0` (capability `kv`), which the grant does not include",
        ),
    );
}

#[tokio::test]
async fn secrets_allow_deny_missing() {
    let rt = runtime();
    let probe = load(&rt, "fixture_unlinked").await;
    let b = backends(&[("API_TOKEN", "s3cr3t-value"), ("DB_PASSWORD", "hunter2")]);
    let g = grant(
        "[kv]\nnamespace = \"probe\"\n[log]\n[secrets]\nnames = [\"API_TOKEN\", \"UNSET\"]\n",
    );

    let r = invoke(
        &rt,
        &probe,
        &g,
        &b,
        "secret_length",
        json!({"name": "API_TOKEN"}),
    )
    .await;
    check(&r, Ok("\"length\":12"));
    assert!(
        !serde_json::to_string(&r)
            .expect("report serializes")
            .contains("s3cr3t-value")
    );
    // A secret that exists on the host but is not granted.
    check(
        &invoke(
            &rt,
            &probe,
            &g,
            &b,
            "secret_length",
            json!({"name": "DB_PASSWORD"}),
        )
        .await,
        Err("secrets: `DB_PASSWORD` is not granted (grant allows: API_TOKEN, UNSET)"),
    );
    // Granted but without a value here.
    check(
        &invoke(
            &rt,
            &probe,
            &g,
            &b,
            "secret_length",
            json!({"name": "UNSET"}),
        )
        .await,
        Err("granted but has no value"),
    );
    // Unlinked: the component imports secrets, the grant lacks them.
    let r = invoke(
        &rt,
        &probe,
        &grant("[kv]\nnamespace = \"p\"\n[log]\n"),
        &b,
        "secret_length",
        json!({"name": "API_TOKEN"}),
    )
    .await;
    check(&r, Err("capability `secrets`"));
}

/// Secrets never leave: an output holding a granted secret's value is
/// refused (and so never stored), and the value is redacted from the logs,
/// stdout, stderr, the import records and the journal; a call that reads the
/// secret without spilling it is untouched.
#[tokio::test]
async fn secret_values_never_leave_the_call() {
    let rt = runtime();
    let probe = load(&rt, "fixture_unlinked").await;
    let b = backends(&[("API_TOKEN", "s3cr3t-value")]);
    let g = grant(
        "[kv]\nnamespace = \"probe\"\nwrite = true\n[log]\n[secrets]\nnames = [\"API_TOKEN\"]\n",
    );
    // Allowed: reading the secret and returning only its length.
    let r = invoke(
        &rt,
        &probe,
        &g,
        &b,
        "secret_length",
        json!({"name": "API_TOKEN"}),
    )
    .await;
    check(&r, Ok("\"length\":12"));
    assert!(r.secrets_redacted.is_empty());
    // Refused: returning it.
    let r = invoke(
        &rt,
        &probe,
        &g,
        &b,
        "secret_echo",
        json!({"name": "API_TOKEN"}),
    )
    .await;
    match &r.outcome {
        Outcome::Denied { reason, rule } => {
            assert_eq!(rule, "guard.secret_leak");
            assert!(reason.contains("secret `API_TOKEN`"), "{reason}");
        }
        other => panic!("expected the leak refused, got {other:?}"),
    }
    assert_eq!(r.output, None);
    // Redacted: spilling it to the log, stdio and a kv value. The tool's own
    // effect (the kv write) still happens: the boundary is the grant.
    let r = invoke(
        &rt,
        &probe,
        &g,
        &b,
        "secret_spill",
        json!({"name": "API_TOKEN"}),
    )
    .await;
    assert!(r.outcome.is_ok(), "{:?}", r.outcome);
    assert_eq!(r.secrets_redacted, vec!["API_TOKEN".to_owned()]);
    let everything = format!(
        "{} {}",
        serde_json::to_string(&r).expect("report"),
        serde_json::to_string(&r.journal).expect("journal")
    );
    assert!(!everything.contains("s3cr3t-value"), "{everything}");
    assert!(
        r.stdout.contains("[redacted secret API_TOKEN]"),
        "{}",
        r.stdout
    );
    assert!(r.logs[0].message.contains("[redacted secret API_TOKEN]"));
    let journal = r.journal.expect("journal");
    let set = journal
        .imports
        .iter()
        .find(|e| e.operation == "set")
        .expect("kv set journaled");
    use base64::Engine as _;
    let value = base64::engine::general_purpose::STANDARD
        .decode(set.request["value"].as_str().expect("value"))
        .expect("base64");
    assert_eq!(
        String::from_utf8(value).expect("utf-8"),
        "kv [redacted secret API_TOKEN]"
    );
}

#[tokio::test]
async fn log_allow_budget_unlinked() {
    let rt = runtime();
    let tickets = load(&rt, "tickets").await;
    let probe = load(&rt, "fixture_unlinked").await;
    let b = backends(&[]);
    let g = grant("[kv]\nnamespace = \"desk\"\n[log]\n");
    let r = invoke(
        &rt,
        &tickets,
        &g,
        &b,
        "open_ticket",
        json!({"subject": "printer", "body": "on fire"}),
    )
    .await;
    check(&r, Ok("\"id\":1"));
    assert_eq!(r.logs.len(), 1);
    assert_eq!(r.logs[0].message, "opened ticket 1");

    // A flood stays within the log budget; the rest is counted as dropped.
    let small = grant("[kv]\nnamespace = \"p\"\n[secrets]\nnames = []\n[log]\nmax_bytes = 5000\n");
    let r = invoke(
        &rt,
        &probe,
        &small,
        &b,
        "log_flood",
        json!({"bytes": 200_000}),
    )
    .await;
    check(&r, Ok("200000"));
    assert_eq!(r.logs.len(), 5);
    assert_eq!(r.logs_dropped, 195);

    // Unlinked: tickets imports log.
    let r = invoke(
        &rt,
        &tickets,
        &grant("[kv]\nnamespace = \"desk\"\n"),
        &b,
        "read_ticket",
        json!({"id": 1}),
    )
    .await;
    check(&r, Err("capability `log`"));
}

#[tokio::test]
async fn import_call_bound_denies_past_the_limit() {
    let rt = runtime();
    let probe = load(&rt, "fixture_unlinked").await;
    let g = grant("[kv]\nnamespace = \"p\"\n[secrets]\nnames = []\n[log]\nmax_bytes = 4194304\n");
    // 12,000 log calls: the first 10,000 are decided, the rest denied.
    let r = invoke(
        &rt,
        &probe,
        &g,
        &backends(&[]),
        "log_flood",
        json!({"bytes": 12_000_000}),
    )
    .await;
    check(&r, Ok("12000000"));
    assert_eq!(r.imports.len(), warden_runtime::guard::MAX_IMPORT_CALLS);
    assert_eq!(r.logs_dropped, 12_000 - r.logs.len() as u64);
    assert!(r.logs.len() <= warden_runtime::guard::MAX_IMPORT_CALLS);
}
