//! The MCP server with the official Python client (`mcp==2.3.0`) over stdio
//! (`warden mcp`) and streamable HTTP (`/mcp`), in both protocol modes, plus
//! cancellation of a running call.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use warden_policy::{Grant, Limits};
use warden_service::{Caller, Config, Warden};
use warden_tests::{guest, python_with_mcp, root};

struct Host {
    dir: tempfile::TempDir,
    warden: Arc<Warden>,
    url: String,
    /// Token of `writer`: text (all actions) and tickets (open/read only).
    writer: String,
    /// Token of `reader`: text word_count only.
    reader: String,
    /// Token of `spinner`: the hostile fixture, long deadline.
    spinner: String,
    deployer: Caller,
}

fn cache() -> std::path::PathBuf {
    root().join("target/warden-test-cache")
}

async fn publish(w: &Warden, by: &Caller, component: &str, manifest: &str) {
    let bytes = std::fs::read(guest(component)).expect("component");
    let text = std::fs::read_to_string(root().join(manifest)).expect("manifest");
    w.publish_tool(by, &bytes, &text).await.expect("publish");
}

async fn agent(
    w: &Warden,
    builder: &Caller,
    deployer: &Caller,
    name: &str,
    grants: &[(&str, Grant)],
) -> String {
    w.create_agent(builder, name, "mcp test", None, None)
        .await
        .expect("agent");
    w.activate_agent(deployer, name).await.expect("activate");
    for (tool, g) in grants {
        w.add_grant(deployer, name, tool, g, None)
            .await
            .expect("grant");
    }
    let cred = w
        .issue_credential(deployer, name)
        .await
        .expect("credential");
    w.exchange_credential(&cred, None, None)
        .await
        .expect("token")
        .token
}

async fn host() -> Host {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::new(dir.path().to_owned());
    config.cache_dir = Some(cache());
    let opened = Warden::open(config).await.expect("open");
    let w = Arc::new(opened.warden);
    let admin = w
        .authenticate(&opened.bootstrap_key.expect("admin key"))
        .await
        .expect("admin");
    w.create_tenant(&admin, "acme").await.expect("tenant");
    let (_, k) = w
        .add_principal(&admin, "acme", "alice", &["deployer".into()])
        .await
        .expect("deployer");
    let deployer = w.authenticate(&k).await.expect("key");
    let (_, k) = w
        .add_principal(&deployer, "acme", "bob", &["builder".into()])
        .await
        .expect("builder");
    let builder = w.authenticate(&k).await.expect("key");
    publish(&w, &builder, "text", "tools/text/tool.toml").await;
    publish(&w, &builder, "tickets", "tools/tickets/tool.toml").await;
    publish(
        &w,
        &builder,
        "fixture_hostile",
        "tools/fixtures/hostile/tool.toml",
    )
    .await;
    for (t, v) in [
        ("text", "0.1.0"),
        ("tickets", "0.1.0"),
        ("hostile", "0.1.0"),
    ] {
        w.deploy_tool(&deployer, t, v).await.expect("deploy");
    }
    let tickets = Grant::from_toml(
        "actions = [\"open_ticket\", \"read_ticket\"]\n[kv]\nnamespace = \"desk\"\n[log]\n",
    )
    .expect("grant");
    let mut word_count = Grant::empty(Limits::STANDARD);
    word_count.actions = Some(["word_count".to_owned()].into());
    let spin = Grant::from_toml(
        "actions = [\"spin\"]\n[limits]\nfuel = 100000000000\ndeadline_ms = 60000\n",
    )
    .expect("grant");
    let writer = agent(
        &w,
        &builder,
        &deployer,
        "writer",
        &[
            ("text", Grant::empty(Limits::STANDARD)),
            ("tickets", tickets),
        ],
    )
    .await;
    let reader = agent(&w, &builder, &deployer, "reader", &[("text", word_count)]).await;
    let spinner = agent(&w, &builder, &deployer, "spinner", &[("hostile", spin)]).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/mcp", listener.local_addr().expect("addr"));
    let state = warden_rpc::AppState::new(w.clone(), Vec::new());
    tokio::spawn(warden_rpc::serve(listener, state, std::future::pending()));
    Host {
        dir,
        warden: w,
        url,
        writer,
        reader,
        spinner,
        deployer,
    }
}

/// Runs the Python client and returns its JSON report.
fn python(h: &Host, transport: &str, mode: &str, token: &str, calls: Value) -> Value {
    let calls_file = h.dir.path().join(format!("calls-{transport}-{mode}.json"));
    std::fs::write(&calls_file, calls.to_string()).expect("calls");
    let out = Command::new(python_with_mcp())
        .arg(root().join("tests/mcp_client.py"))
        .args([transport, mode])
        .arg(&calls_file)
        .env("WARDEN_BIN", env!("CARGO_BIN_EXE_warden"))
        .env("WARDEN_DATA_DIR", h.dir.path())
        .env("WARDEN_CACHE_DIR", cache())
        .env("WARDEN_MCP_URL", &h.url)
        .env("WARDEN_TOKEN", token)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python client ({transport}, {mode}) failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("client prints JSON")
}

fn names(report: &Value) -> Vec<String> {
    let mut n: Vec<String> = report["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t["name"].as_str().expect("name").to_owned())
        .collect();
    n.sort();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_lists_and_calls_over_stdio_and_http_in_both_modes() {
    let h = host().await;
    let calls = json!([
        ["text__word_count", {"text": "one two three"}],
        ["tickets__open_ticket", {"subject": "VPN down", "body": "since 9"}],
        ["tickets__delete_record", {"id": 1}],
        ["text__word_count", {"txt": 1}],
        ["nope__nothing", {}],
    ]);
    for transport in ["stdio", "http"] {
        for mode in ["auto", "legacy"] {
            let w = h.writer.clone();
            let r = tokio::task::block_in_place(|| python(&h, transport, mode, &w, calls.clone()));
            let ctx = format!("{transport}/{mode}");
            // auto negotiates the current revision (no initialize); legacy uses
            // the initialize handshake with the client's latest handshake-era
            // revision. 2025-06-18 itself is pinned by the raw stdio test below.
            let version = r["protocol_version"].as_str().expect("version");
            if mode == "auto" {
                assert_eq!(version, "2026-07-28", "{ctx}");
            } else {
                assert!(version.starts_with("2025-"), "{ctx}: {version}");
            }
            assert_eq!(
                names(&r),
                [
                    "text__json_select",
                    "text__regex_extract",
                    "text__word_count",
                    "tickets__open_ticket",
                    "tickets__read_ticket",
                    "warden_approval"
                ],
                "{ctx}"
            );
            let wc = r["tools"]
                .as_array()
                .expect("tools")
                .iter()
                .find(|t| t["name"] == "text__word_count")
                .expect("word_count");
            assert_eq!(wc["inputSchema"]["type"], "object", "{ctx}");
            assert!(wc["inputSchema"]["properties"]["text"].is_object(), "{ctx}");
            assert_eq!(wc["outputSchema"]["type"], "object", "{ctx}");
            let res = r["results"].as_array().expect("results");
            // allowed: structured content matching the output schema
            assert_eq!(res[0]["isError"], false, "{ctx}: {}", res[0]);
            assert_eq!(res[0]["structuredContent"]["words"], 3, "{ctx}");
            // Tool output is marked untrusted on every answer.
            assert_eq!(
                res[0]["meta"]["warden/untrusted"], true,
                "{ctx}: {}",
                res[0]
            );
            for key in wc["outputSchema"]["required"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let key = key.as_str().expect("key");
                assert!(
                    res[0]["structuredContent"].get(key).is_some(),
                    "{ctx}: {key}"
                );
            }
            assert_eq!(res[1]["isError"], false, "{ctx}: {}", res[1]);
            // denied: not in the grant, with a clear text
            assert_eq!(res[2]["isError"], true, "{ctx}");
            assert!(
                res[2]["text"][0]
                    .as_str()
                    .expect("text")
                    .contains("not in the grant"),
                "{ctx}: {}",
                res[2]
            );
            // invalid input names the field
            assert_eq!(res[3]["isError"], true, "{ctx}");
            assert!(
                res[3]["text"][0].as_str().expect("text").contains("txt"),
                "{ctx}"
            );
            // unknown tool
            assert_eq!(res[4]["isError"], true, "{ctx}");
        }
    }
    // Another agent sees exactly its own grant.
    for transport in ["stdio", "http"] {
        let r = tokio::task::block_in_place(|| {
            python(
                &h,
                transport,
                "auto",
                &h.reader,
                json!([["text__regex_extract", {"text": "a", "pattern": "a"}]]),
            )
        });
        assert_eq!(
            names(&r),
            ["text__word_count", "warden_approval"],
            "{transport}"
        );
        assert_eq!(r["results"][0]["isError"], true, "{transport}");
    }
}

/// A held call through the official client: `isError` with the approval
/// id and how to get the result; an approver approves meanwhile; the
/// client's `warden_approval` call (long-polling) returns the tool's result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_sees_a_held_call_and_gets_the_result_after_approval() {
    let h = host().await;
    let w = h.warden.clone();
    let (_, k) = w
        .add_principal(&h.deployer, "acme", "carol", &["approver".into()])
        .await
        .expect("approver");
    let carol = w.authenticate(&k).await.expect("key");
    w.set_policy(
        &h.deployer,
        r#"
        @id("baseline") permit(principal, action in [Warden::Action::"invoke", Warden::Action::"invoke_unattended", Warden::Action::"import", Warden::Action::"import_unattended"], resource);
        @id("counting-secrets-needs-a-human")
        forbid(principal, action == Warden::Action::"invoke_unattended", resource == Warden::ToolAction::"text/word_count")
        when { context.args.hasTag("text") && context.args.getTag("text") like "*secret*" };
        @id("carol") permit(principal == Warden::Approver::"carol", action == Warden::Action::"approve", resource);
        "#,
    )
    .await
    .expect("policy");
    // carol approves the first hold she sees.
    let approver = tokio::spawn(async move {
        for _ in 0..1_500 {
            if let Some(v) = w
                .pending_approvals(&carol, false)
                .await
                .expect("list")
                .pop()
            {
                assert_eq!(v.approval.input, r#"{"text":"the secret plan"}"#);
                return w
                    .decide_approval(
                        &carol,
                        &v.approval.id,
                        warden_service::approvals::Vote::Approve,
                        "ok",
                    )
                    .await
                    .expect("approve");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no hold appeared");
    });
    let calls = json!([
        ["text__word_count", {"text": "the secret plan"}],
        ["warden_approval", {"approval_id": "$approval", "wait_seconds": 30}],
    ]);
    let wtok = h.writer.clone();
    let r = tokio::task::block_in_place(|| python(&h, "http", "auto", &wtok, calls));
    let held = &r["results"][0];
    assert_eq!(held["isError"], true, "{held}");
    let text = held["text"][0].as_str().expect("text");
    assert!(
        text.contains("held for human approval") && text.contains("warden_approval"),
        "{text}"
    );
    let id = held["meta"]["warden/approval_id"]
        .as_str()
        .expect("approval id");
    assert!(text.contains(id), "{text}");
    let done = &r["results"][1];
    assert_eq!(done["isError"], false, "{done}");
    assert_eq!(done["structuredContent"]["words"], 3, "{done}");
    let approved = approver.await.expect("approver task");
    assert_eq!(approved.approval.id, id);
    assert_eq!(approved.approval.status, "executed");
}

/// The tasks extension (SEP-2663), for a client that declares it: a held
/// call answers with a task (its id is the approval id); `tasks/get` says
/// `working` until an approver approves, then `completed` with the tool's
/// result; `tasks/cancel` withdraws another held call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_declaring_tasks_gets_a_task_for_a_held_call() {
    let h = host().await;
    let w = h.warden.clone();
    let (_, k) = w
        .add_principal(&h.deployer, "acme", "carol", &["approver".into()])
        .await
        .expect("approver");
    let carol = w.authenticate(&k).await.expect("key");
    w.set_policy(
        &h.deployer,
        r#"
        @id("baseline") permit(principal, action in [Warden::Action::"invoke", Warden::Action::"invoke_unattended"], resource);
        @id("secrets-need-a-human")
        forbid(principal, action == Warden::Action::"invoke_unattended", resource == Warden::ToolAction::"text/word_count")
        when { context.args.hasTag("text") && context.args.getTag("text") like "*secret*" };
        @id("carol") permit(principal == Warden::Approver::"carol", action == Warden::Action::"approve", resource);
        "#,
    )
    .await
    .expect("policy");
    let addr = h
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .to_owned();
    let token = h.writer.clone();
    let rpc = |id: u32, method: &'static str, mut params: Value| {
        let addr = addr.clone();
        let token = token.clone();
        async move {
            params["_meta"] = json!({
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"},
                "io.modelcontextprotocol/clientCapabilities": {
                    "extensions": {"io.modelcontextprotocol/tasks": {}}
                }
            });
            let mut headers = vec![
                ("Authorization", format!("Bearer {token}")),
                ("MCP-Protocol-Version", "2026-07-28".into()),
                ("Mcp-Method", method.to_owned()),
            ];
            if let Some(name) = params["name"].as_str().or(params["taskId"].as_str()) {
                headers.push(("Mcp-Name", name.to_owned()));
            }
            let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
            let raw = post_mcp(&addr, &body.to_string(), &headers).await;
            // The answer: the JSON-RPC message, plain or as one SSE event.
            let start = raw
                .find("{\"")
                .unwrap_or_else(|| panic!("no JSON in {raw}"));
            let end = raw.rfind('}').expect("end of JSON");
            let v: Value =
                serde_json::from_str(&raw[start..=end]).unwrap_or_else(|e| panic!("{e}: {raw}"));
            v
        }
    };
    let held = rpc(
        1,
        "tools/call",
        json!({"name": "text__word_count", "arguments": {"text": "the secret plan"}}),
    )
    .await;
    let result = &held["result"];
    assert_eq!(result["resultType"], "task", "{held}");
    let task = result["taskId"].as_str().expect("task id").to_owned();
    assert!(task.starts_with("apr_"), "{held}");
    assert_eq!(result["status"], "working", "{held}");
    let got = rpc(2, "tasks/get", json!({"taskId": task})).await;
    assert_eq!(got["result"]["status"], "working", "{got}");
    w.decide_approval(
        &carol,
        &task,
        warden_service::approvals::Vote::Approve,
        "fine",
    )
    .await
    .expect("approve");
    let got = rpc(3, "tasks/get", json!({"taskId": task})).await;
    assert_eq!(got["result"]["status"], "completed", "{got}");
    assert_eq!(
        got["result"]["result"]["structuredContent"]["words"], 3,
        "{got}"
    );
    // Another held call, cancelled by the agent through tasks/cancel.
    let held = rpc(
        4,
        "tools/call",
        json!({"name": "text__word_count", "arguments": {"text": "another secret"}}),
    )
    .await;
    let other = held["result"]["taskId"]
        .as_str()
        .expect("task id")
        .to_owned();
    let cancelled = rpc(5, "tasks/cancel", json!({"taskId": other})).await;
    assert!(cancelled.get("error").is_none(), "{cancelled}");
    let got = rpc(6, "tasks/get", json!({"taskId": other})).await;
    assert_eq!(got["result"]["status"], "cancelled", "{got}");
    // Another agent's task is unknown to this one.
    let reader = h.reader.clone();
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tasks/get", "params": {
    "taskId": task,
    "_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {"extensions": {"io.modelcontextprotocol/tasks": {}}}
    }}});
    let raw = post_mcp(
        &addr,
        &body.to_string(),
        &[
            ("Authorization", format!("Bearer {reader}")),
            ("MCP-Protocol-Version", "2026-07-28".into()),
            ("Mcp-Method", "tasks/get".into()),
            ("Mcp-Name", task.clone()),
        ],
    )
    .await;
    assert!(
        raw.contains("\"error\"") && raw.contains("not found"),
        "{raw}"
    );
}

/// CPU time (user + system, clock ticks) of a process.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

fn send(stdin: &mut impl Write, v: Value) {
    writeln!(stdin, "{v}").expect("write");
    stdin.flush().expect("flush");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_stdio_call_stops_its_wasm_loop() {
    let h = host().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("mcp")
        .env("WARDEN_DATA_DIR", h.dir.path())
        .env("WARDEN_CACHE_DIR", cache())
        .env("WARDEN_TOKEN", &h.spinner)
        .env("WARDEN_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("warden mcp");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    send(
        &mut stdin,
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "test", "version": "0"}}}),
    );
    stdout.read_line(&mut line).expect("initialize answer");
    let answer: Value = serde_json::from_str(&line).expect("JSON-RPC");
    assert_eq!(
        answer["result"]["protocolVersion"], "2025-06-18",
        "the 2025-06-18 handshake is served: {line}"
    );
    send(
        &mut stdin,
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    );
    send(
        &mut stdin,
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
               "params": {"name": "hostile__spin", "arguments": {}}}),
    );
    // The loop runs: the process burns CPU.
    std::thread::sleep(Duration::from_millis(700));
    let running = cpu_ticks(child.id());
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        cpu_ticks(child.id()) - running >= 20,
        "the spin loop should be running"
    );
    let cancelled_at = Instant::now();
    send(
        &mut stdin,
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
               "params": {"requestId": 2, "reason": "test"}}),
    );
    std::thread::sleep(Duration::from_millis(500));
    let after = cpu_ticks(child.id());
    std::thread::sleep(Duration::from_millis(1000));
    let burned = cpu_ticks(child.id()) - after;
    assert!(
        burned < 10,
        "after cancellation the loop must stop; the process still burned {burned} ticks in 1 s"
    );
    // Well before the grant's 60 s deadline, and the server still answers.
    assert!(cancelled_at.elapsed() < Duration::from_secs(10));
    send(
        &mut stdin,
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}),
    );
    line.clear();
    loop {
        line.clear();
        stdout.read_line(&mut line).expect("answer");
        if line.contains("\"id\":3") {
            break;
        }
    }
    assert!(line.contains("hostile__spin"), "{line}");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(h.warden.calls_in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_http_refuses_bad_tokens_and_foreign_origins() {
    let h = host().await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "test", "version": "0"}}});
    let addr = h
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .to_owned();
    let body = init.to_string();
    let foreign = post_mcp(
        &addr,
        &body,
        &[
            ("Authorization", format!("Bearer {}", h.writer)),
            ("Origin", "https://evil.example".into()),
        ],
    )
    .await;
    assert!(foreign.starts_with("HTTP/1.1 403"), "{foreign}");
    let missing = post_mcp(&addr, &body, &[]).await;
    assert!(missing.starts_with("HTTP/1.1 401"), "{missing}");
    let wrong = post_mcp(
        &addr,
        &body,
        &[("Authorization", "Bearer wdn_tok_acme_00".into())],
    )
    .await;
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    let fine = post_mcp(
        &addr,
        &body,
        &[("Authorization", format!("Bearer {}", h.writer))],
    )
    .await;
    assert!(fine.starts_with("HTTP/1.1 200"), "{fine}");
}

async fn post_mcp(addr: &str, body: &str, headers: &[(&str, String)]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut req = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
