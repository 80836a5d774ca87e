//! `warden run` and `warden inspect` as a tool author uses them.

use std::process::{Command, Output};

use serde_json::Value;
use warden_tests::{guest, root};

fn warden(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .env("WARDEN_CACHE_DIR", root().join("target/warden-test-cache"))
        .output()
        .expect("run warden")
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

#[test]
fn run_prints_output_and_exits_zero() {
    let t = guest("text");
    let o = warden(&[
        "run",
        t.to_str().expect("utf-8"),
        "--action",
        "word_count",
        "--input",
        r#"{"text":"a b c"}"#,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out: Value = serde_json::from_slice(&o.stdout).expect("stdout is JSON");
    assert_eq!(out["words"], 3);
    assert!(o.stderr.is_empty(), "{}", text(&o.stderr));
}

#[test]
fn refusals_exit_nonzero_with_one_line_reason() {
    let t = guest("text");
    let t = t.to_str().expect("utf-8");
    let h = guest("fixture_hostile");
    let h = h.to_str().expect("utf-8");
    let dir = tempfile::tempdir().expect("tempdir");
    let fuel = dir.path().join("fuel.toml");
    std::fs::write(&fuel, "[limits]\nfuel = 10000000\n").expect("grant");
    let tickets_grant = root().join("examples/grants/tickets-support.toml");
    let tk = guest("tickets");
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec![
                "run",
                t,
                "--action",
                "word_count",
                "--input",
                r#"{"txt":"x"}"#,
            ],
            4,
            "invalid input: field `txt`",
        ),
        (
            vec!["run", t, "--action", "nope"],
            4,
            "unknown action `nope`",
        ),
        (
            vec![
                "run",
                h,
                "--action",
                "spin",
                "--grant",
                fuel.to_str().expect("utf-8"),
            ],
            5,
            "out of fuel",
        ),
        (
            vec![
                "run",
                tk.to_str().expect("utf-8"),
                "--action",
                "delete_record",
                "--input",
                r#"{"id":1}"#,
                "--grant",
                tickets_grant.to_str().expect("utf-8"),
            ],
            3,
            "not granted: action `delete_record`",
        ),
        (
            vec![
                "run",
                tk.to_str().expect("utf-8"),
                "--action",
                "read_ticket",
                "--input",
                r#"{"id":1}"#,
            ],
            3,
            "capability `kv`",
        ),
        (vec!["run", h, "--action", "panic"], 1, "trap:"),
    ];
    for (args, code, reason) in cases {
        let o = warden(&args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(reason), "{args:?}: {err}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: reason is not one line: {err}"
        );
        assert!(o.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn usage_errors_are_clear() {
    let t = guest("text");
    let t = t.to_str().expect("utf-8");
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[sockets]\n").expect("grant");
    let malformed = root().join("tools/fixtures/malformed.wasm");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["run", t, "--action", "word_count", "--input", "{not json"],
            "--input is not valid JSON",
        ),
        (
            vec![
                "run",
                t,
                "--action",
                "word_count",
                "--grant",
                bad.to_str().expect("utf-8"),
            ],
            "unknown field `sockets`",
        ),
        (
            vec![
                "run",
                t,
                "--action",
                "word_count",
                "--grant",
                "/nonexistent.toml",
            ],
            "reading grant file",
        ),
        (
            vec!["inspect", malformed.to_str().expect("utf-8")],
            "not a valid WebAssembly component",
        ),
        (
            vec!["inspect", "/nonexistent.wasm"],
            "reading `/nonexistent.wasm`",
        ),
    ];
    for (args, reason) in cases {
        let o = warden(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(
            text(&o.stderr).contains(reason),
            "{args:?}: {}",
            text(&o.stderr)
        );
    }
}

#[test]
fn json_report_shows_outcome_fuel_time_and_imports() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.txt"), "alpha").expect("file");
    let grant = dir.path().join("g.toml");
    std::fs::write(
        &grant,
        format!(
            "[fs]\ndirs = [{{ host = \"{}\", guest = \"/workspace\", mode = \"read-only\" }}]\n",
            dir.path().display()
        ),
    )
    .expect("grant");
    let f = guest("files");
    let f = f.to_str().expect("utf-8");
    let g = grant.to_str().expect("utf-8");
    let o = warden(&[
        "run",
        f,
        "--action",
        "read",
        "--input",
        r#"{"path":"a.txt"}"#,
        "--grant",
        g,
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let r: Value = serde_json::from_slice(&o.stdout).expect("report");
    assert_eq!(r["outcome"], "ok");
    assert_eq!(r["output"]["content"], "alpha");
    assert!(r["fuel_used"].as_u64().expect("fuel") > 0);
    assert!(r["elapsed_us"].as_u64().is_some());
    let imports = r["imports"].as_array().expect("imports");
    assert!(imports.iter().any(|e| e["capability"] == "fs"
        && e["resource"] == "/workspace/a.txt"
        && e["decision"] == "allow"));

    let o = warden(&[
        "run",
        f,
        "--action",
        "write",
        "--input",
        r#"{"path":"a.txt","content":"x"}"#,
        "--grant",
        g,
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(3));
    let r: Value = serde_json::from_slice(&o.stdout).expect("report");
    assert_eq!(r["outcome"], "denied");
    assert_eq!(r["rule"], "grant.fs.mode");
    assert!(r["imports"].as_array().expect("imports").iter().any(|e| {
        e["decision"] == "deny"
            && e["reason"]
                .as_str()
                .is_some_and(|s| s.contains("read-only"))
    }));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("a.txt")).expect("kept"),
        "alpha"
    );
}

#[test]
fn kv_file_persists_between_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kv = dir.path().join("desk.json");
    let kv = kv.to_str().expect("utf-8");
    let tk = guest("tickets");
    let tk = tk.to_str().expect("utf-8");
    let g = root().join("examples/grants/tickets-support.toml");
    let g = g.to_str().expect("utf-8");
    let o = warden(&[
        "run",
        tk,
        "--action",
        "open_ticket",
        "--input",
        r#"{"subject":"s","body":"b"}"#,
        "--grant",
        g,
        "--kv-file",
        kv,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let o = warden(&[
        "run",
        tk,
        "--action",
        "read_ticket",
        "--input",
        r#"{"id":1}"#,
        "--grant",
        g,
        "--kv-file",
        kv,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(out["subject"], "s");
}

/// Values that are not UTF-8 survive a round trip through the kv file.
#[test]
fn kv_file_keeps_binary_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kv = dir.path().join("desk.json");
    std::fs::write(
        &kv,
        r#"{"desk": {"blob": {"hex": "00ff10"}, "note": "plain"}}"#,
    )
    .expect("kv file");
    let tk = guest("tickets");
    let g = root().join("examples/grants/tickets-support.toml");
    let o = warden(&[
        "run",
        tk.to_str().expect("utf-8"),
        "--action",
        "open_ticket",
        "--input",
        r#"{"subject":"s","body":"b"}"#,
        "--grant",
        g.to_str().expect("utf-8"),
        "--kv-file",
        kv.to_str().expect("utf-8"),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let saved: Value = serde_json::from_slice(&std::fs::read(&kv).expect("kv file")).expect("json");
    assert_eq!(saved["desk"]["blob"], serde_json::json!({"hex": "00ff10"}));
    assert_eq!(saved["desk"]["note"], "plain");
    assert!(saved["desk"]["ticket/0000000001"].is_string());

    std::fs::write(&kv, r#"{"desk": {"blob": {"hex": "zz"}}}"#).expect("kv file");
    let o = warden(&[
        "run",
        tk.to_str().expect("utf-8"),
        "--action",
        "read_ticket",
        "--input",
        r#"{"id":1}"#,
        "--grant",
        g.to_str().expect("utf-8"),
        "--kv-file",
        kv.to_str().expect("utf-8"),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("value of `desk/blob` is not valid hex"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn inspect_shows_actions_effects_and_valid_schemas() {
    let tk = guest("tickets");
    let o = warden(&["inspect", tk.to_str().expect("utf-8"), "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let doc: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(doc["capabilities"], serde_json::json!(["kv", "log"]));
    let actions = doc["tool"]["actions"].as_array().expect("actions");
    let delete = actions
        .iter()
        .find(|a| a["name"] == "delete_record")
        .expect("delete_record");
    assert_eq!(delete["effect"], "destructive");
    for a in actions {
        assert_eq!(
            a["input_schema"]["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert_eq!(a["input_schema"]["type"], "object");
    }
    let o = warden(&["inspect", tk.to_str().expect("utf-8")]);
    let out = text(&o.stdout);
    assert!(out.contains("action delete_record (Destructive)"), "{out}");
    assert!(out.contains("capabilities: kv, log"), "{out}");
}

/// Guest stdout and stderr never reach warden's own streams: a flooding tool's
/// call prints only its output JSON.
#[test]
fn guest_stdio_never_mixes_into_cli_output() {
    let h = guest("fixture_hostile");
    let o = warden(&[
        "run",
        h.to_str().expect("utf-8"),
        "--action",
        "stdio_flood",
        "--input",
        r#"{"bytes":1000000}"#,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "{\"written\":1001472}\n");
    assert!(
        o.stderr.is_empty(),
        "guest stderr leaked: {} bytes",
        o.stderr.len()
    );
}

/// The host's environment is not visible to the guest, even secrets-looking
/// variables that `warden run` itself reads.
#[test]
fn host_environment_is_invisible() {
    let h = guest("fixture_hostile");
    let o = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["run", h.to_str().expect("utf-8"), "--action", "ambient"])
        .env("WARDEN_SECRET_API_TOKEN", "do-not-leak")
        .env("WARDEN_CACHE_DIR", root().join("target/warden-test-cache"))
        .output()
        .expect("run warden");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(out["env"], serde_json::json!([]));
    assert!(!text(&o.stdout).contains("do-not-leak"));
}

/// `--manifest` checks the component against its `tool.toml` and refuses a
/// grant wider than the manifest requests, naming the excess.
#[test]
fn manifest_checks() {
    let f = guest("files");
    let f = f.to_str().expect("utf-8");
    let files_manifest = root().join("tools/files/tool.toml");
    let files_manifest = files_manifest.to_str().expect("utf-8");
    let o = warden(&["inspect", f, "--manifest", files_manifest]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("agrees with the component"));

    // The tickets manifest does not describe the files component.
    let tickets_manifest = root().join("tools/tickets/tool.toml");
    let o = warden(&[
        "inspect",
        f,
        "--manifest",
        tickets_manifest.to_str().expect("utf-8"),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("manifest does not match the component"),
        "{}",
        text(&o.stderr)
    );

    // A grant for a directory the tool does not request is refused before running.
    let dir = tempfile::tempdir().expect("tempdir");
    let g = dir.path().join("g.toml");
    std::fs::write(
        &g,
        format!(
            "[fs]\ndirs = [{{ host = \"{}\", guest = \"/etc\", mode = \"read-only\" }}]\n",
            dir.path().display()
        ),
    )
    .expect("grant");
    let o = warden(&[
        "run",
        f,
        "--action",
        "list",
        "--input",
        r#"{"path":"."}"#,
        "--grant",
        g.to_str().expect("utf-8"),
        "--manifest",
        files_manifest,
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr)
            .contains("grant exceeds the tool's manifest: fs: guest path `/etc` is not requested"),
        "{}",
        text(&o.stderr)
    );
    assert!(o.stdout.is_empty());
}
