//! `warden serve` and the governance commands as a newcomer uses them, in the
//! order the README walks through them.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::{admin_key, http, ok_json, start_serve, stdout, text_tenant, warden, warden_with};
use serde_json::Value;
use warden_tests::{guest, root};

/// Starts `warden serve`, waits for its "serving" line, stops it, and returns
/// everything it printed on stderr.
fn serve_once(data: &Path) -> String {
    let server = start_serve(data);
    server.printed.clone()
}

#[test]
fn serve_creates_its_database_and_prints_the_admin_key_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("fresh");
    let first = serve_once(&data);
    let key = admin_key(&first).expect("the first start prints the admin key");
    assert!(first.contains("shown only now"), "{first}");
    assert!(data.join("control.db").is_file());
    assert!(data.join("tenants").is_dir());
    let second = serve_once(&data);
    assert_eq!(
        admin_key(&second),
        None,
        "the key is shown only once: {second}"
    );
    // The key works.
    let o = warden(&data, Some(&key), &["tenant", "create", "acme"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn readme_walk_from_bootstrap_to_a_granted_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    let admin = admin_key(&serve_once(data)).expect("admin key");
    walk(&admin, &|key, args| warden(data, key, args));
}

/// The same walk with every command sent to a running server over its HTTP
/// API (`--server`), then the config file, a wrong key and a dead server.
#[test]
fn the_cli_drives_a_running_server_over_the_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("served");
    let server = start_serve(&data);
    let admin = admin_key(&server.printed).expect("admin key");
    // The client's own data directory is elsewhere and stays untouched.
    let client = dir.path().join("client");
    let url = server.url.clone();
    walk(&admin, &|key, args| {
        let mut a = vec!["--server", url.as_str()];
        a.extend_from_slice(args);
        warden(&client, key, &a)
    });
    assert!(
        !client.join("control.db").exists(),
        "a remote command opened a local database"
    );

    // The config file: server and key, refused while others can read it.
    let config = dir.path().join("config.toml");
    std::fs::write(&config, format!("server = \"{url}\"\nkey = \"{admin}\"\n")).expect("write");
    let config_env = [("WARDEN_CONFIG", config.to_str().expect("utf-8"))];
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let open = warden_with(&client, None, &["tenant", "list"], &config_env);
    assert_ne!(open.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&open.stderr).contains("chmod 600"),
        "{}",
        String::from_utf8_lossy(&open.stderr)
    );
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let listed = stdout(&warden_with(
        &client,
        None,
        &["tenant", "list"],
        &config_env,
    ));
    assert!(listed.contains("acme"), "{listed}");

    // A wrong key is refused by the server: exit 3 and its message.
    let wrong = warden(
        &client,
        Some("wdn_key_acme_0000000000000000000000000000000000000000000000000000000000000000"),
        &["--server", &url, "inventory"],
    );
    assert_eq!(wrong.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("unknown"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    // Not a URL, and a server that is gone: clear errors, not panics.
    let bad = warden(
        &client,
        Some(&admin),
        &["--server", "localhost:7070", "tenant", "list"],
    );
    assert_ne!(bad.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("http://"));
    drop(server);
    let gone = warden(&client, Some(&admin), &["--server", &url, "tenant", "list"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("cannot reach the server"),
        "{}",
        String::from_utf8_lossy(&gone.stderr)
    );
}

/// The README's operator walk, from the admin key to a revoked grant, with
/// `run` executing each CLI command (locally or against a server).
fn walk(admin: &str, run: &dyn Fn(Option<&str>, &[&str]) -> Output) {
    let admin = admin.to_owned();
    let tickets = guest("tickets");
    let tickets = tickets.to_str().expect("utf-8");
    let manifest = root().join("tools/tickets/tool.toml");
    let manifest = manifest.to_str().expect("utf-8");
    let grant = root().join("examples/grants/tickets-support.toml");
    let grant = grant.to_str().expect("utf-8");

    // Admin: a tenant and its first deployer.
    stdout(&run(Some(&admin), &["tenant", "create", "acme"]));
    let alice = ok_json(&run(
        Some(&admin),
        &[
            "principal",
            "add",
            "alice",
            "--role",
            "deployer",
            "--role",
            "viewer",
            "--tenant",
            "acme",
            "--json",
        ],
    ))["api_key"]
        .as_str()
        .expect("key")
        .to_owned();
    // Alice adds a builder.
    let bob = ok_json(&run(
        Some(&alice),
        &["principal", "add", "bob", "--role", "builder", "--json"],
    ))["api_key"]
        .as_str()
        .expect("key")
        .to_owned();
    // Bob publishes; Bob may not deploy (role), Alice deploys.
    stdout(&run(
        Some(&bob),
        &["tool", "publish", tickets, "--manifest", manifest],
    ));
    let refused = run(Some(&bob), &["tool", "deploy", "tickets", "0.1.0"]);
    assert_eq!(refused.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("needs the deployer role"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    stdout(&run(Some(&alice), &["tool", "deploy", "tickets", "0.1.0"]));
    // Bob drafts the agent; Alice activates, grants and issues its credential.
    stdout(&run(
        Some(&bob),
        &[
            "agent",
            "create",
            "support-bot",
            "--purpose",
            "answers support tickets",
        ],
    ));
    stdout(&run(Some(&alice), &["agent", "activate", "support-bot"]));
    stdout(&run(
        Some(&alice),
        &[
            "grant",
            "add",
            "--agent",
            "support-bot",
            "--tool",
            "tickets",
            "--file",
            grant,
        ],
    ));
    let wide = run(
        Some(&alice),
        &[
            "grant",
            "add",
            "--agent",
            "support-bot",
            "--tool",
            "tickets",
            "--actions",
            "open_ticket,launch_missiles",
        ],
    );
    assert_eq!(wide.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&wide.stderr).contains("launch_missiles"));
    let cred = ok_json(&run(
        Some(&alice),
        &["credential", "issue", "--agent", "support-bot", "--json"],
    ))["credential"]
        .as_str()
        .expect("credential")
        .to_owned();

    // The agent: credential → token → actions → call.
    let token = stdout(&run(None, &["token", "--credential", &cred]))
        .trim()
        .to_owned();
    assert!(token.starts_with("wdn_tok_acme_"), "{token}");
    let actions = stdout(&run(None, &["actions", "--token", &token]));
    assert!(
        actions.contains("open_ticket") && !actions.contains("delete_record"),
        "{actions}"
    );
    let out = ok_json(&run(
        None,
        &[
            "call",
            "tickets",
            "open_ticket",
            "--input",
            r#"{"subject":"printer on fire","body":"help"}"#,
            "--token",
            &token,
        ],
    ));
    assert!(out["id"].is_number(), "{out}");
    let denied = run(
        None,
        &[
            "call",
            "tickets",
            "delete_record",
            "--input",
            r#"{"id":1}"#,
            "--token",
            &token,
        ],
    );
    assert_eq!(denied.status.code(), Some(3));

    // Alice sets a Cedar policy; an invalid one is refused (exit 2) and the
    // first stays in force; `policy test` explains; the call is denied.
    let pdir = tempfile::tempdir().expect("tempdir");
    let good = pdir.path().join("policy.cedar");
    std::fs::write(
        &good,
        r#"@id("baseline") permit(principal, action, resource);
@id("no-fires") @reason("fires go to the fire brigade")
forbid(principal, action == Warden::Action::"invoke", resource == Warden::ToolAction::"tickets/open_ticket")
when { context.args.hasTag("subject") && context.args.getTag("subject") like "*fire*" };
"#,
    )
    .expect("write policy");
    let bad = pdir.path().join("bad.cedar");
    std::fs::write(
        &bad,
        "permit(principal, action, resource) when { context.x };",
    )
    .expect("write policy");
    let good = good.to_str().expect("utf-8");
    let set = stdout(&run(Some(&alice), &["policy", "set", good]));
    assert!(set.contains("policy version 1 in force"), "{set}");
    let refused = run(
        Some(&alice),
        &["policy", "set", bad.to_str().expect("utf-8")],
    );
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("do not validate"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(
        stdout(&run(Some(&alice), &["policy", "show"]))
            .contains("policy version 1 set by principal:alice")
    );
    let explained = stdout(&run(
        Some(&alice),
        &[
            "policy",
            "test",
            "--agent",
            "support-bot",
            "--tool",
            "tickets",
            "--action",
            "open_ticket",
            "--args",
            r#"{"subject":"printer on fire","body":"help"}"#,
        ],
    ));
    assert!(
        explained.starts_with("DENY:") && explained.contains("fires go to the fire brigade"),
        "{explained}"
    );
    let fire = run(
        None,
        &[
            "call",
            "tickets",
            "open_ticket",
            "--input",
            r#"{"subject":"printer on fire again","body":"help"}"#,
            "--token",
            &token,
        ],
    );
    assert_eq!(fire.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&fire.stderr).contains("no-fires")
            || String::from_utf8_lossy(&fire.stdout).contains("no-fires"),
        "{fire:?}"
    );

    // Urgent tickets need a human: the call is held; Pat (approver, named
    // by the policy) lists it with its input and approves; the call ran once
    // and the agent reads the result. Bob cannot decide.
    let held_policy = pdir.path().join("held.cedar");
    std::fs::write(
        &held_policy,
        r#"@id("baseline") permit(principal, action in [Warden::Action::"invoke", Warden::Action::"invoke_unattended", Warden::Action::"import", Warden::Action::"import_unattended"], resource);
@id("urgent-needs-a-human") @reason("urgent tickets page someone")
forbid(principal, action == Warden::Action::"invoke_unattended", resource == Warden::ToolAction::"tickets/open_ticket")
when { context.args.hasTag("subject") && context.args.getTag("subject") like "*urgent*" };
@id("pat-approves") permit(principal == Warden::Approver::"pat", action == Warden::Action::"approve", resource);
"#,
    )
    .expect("write policy");
    stdout(&run(
        Some(&alice),
        &["policy", "set", held_policy.to_str().expect("utf-8")],
    ));
    let pat = ok_json(&run(
        Some(&alice),
        &["principal", "add", "pat", "--role", "approver", "--json"],
    ))["api_key"]
        .as_str()
        .expect("key")
        .to_owned();
    let held = run(
        None,
        &[
            "call",
            "tickets",
            "open_ticket",
            "--input",
            r#"{"subject":"urgent: VPN down","body":"all of sales"}"#,
            "--token",
            &token,
        ],
    );
    assert_eq!(held.status.code(), Some(3), "{held:?}");
    let listed = ok_json(&run(Some(&pat), &["approval", "list", "--json"]));
    let id = listed[0]["id"].as_str().expect("approval id").to_owned();
    assert_eq!(
        listed[0]["input"],
        r#"{"subject":"urgent: VPN down","body":"all of sales"}"#
    );
    let shown = stdout(&run(Some(&pat), &["approval", "list"]));
    assert!(
        shown.contains(&id) && shown.contains("urgent tickets page someone"),
        "{shown}"
    );
    assert_eq!(
        run(Some(&bob), &["approval", "approve", &id]).status.code(),
        Some(3)
    );
    let approved = stdout(&run(
        Some(&pat),
        &["approval", "approve", &id, "--comment", "paging ops"],
    ));
    assert!(
        approved.contains("executed") && approved.contains("result: ok"),
        "{approved}"
    );
    let waited = ok_json(&run(
        None,
        &[
            "approval",
            "wait",
            &id,
            "--seconds",
            "1",
            "--token",
            &token,
            "--json",
        ],
    ));
    assert_eq!(waited["status"], "executed", "{waited}");
    assert!(waited["result"]["output"]["id"].is_number(), "{waited}");
    assert_eq!(
        run(Some(&pat), &["approval", "approve", &id]).status.code(),
        Some(2),
        "a consumed approval is not approved again"
    );

    // Alice (viewer too) reads the inventory and grants; Bob cannot.
    let inv = stdout(&run(Some(&alice), &["inventory"]));
    assert!(
        inv.contains("support-bot") && inv.contains("bob") && inv.contains("active"),
        "{inv}"
    );
    let grants = stdout(&run(Some(&alice), &["grant", "list"]));
    assert!(
        grants.contains("open_ticket") && grants.contains("live"),
        "{grants}"
    );
    assert_eq!(run(Some(&bob), &["inventory"]).status.code(), Some(3));

    // Revocation: the next call is denied.
    stdout(&run(
        Some(&alice),
        &[
            "grant",
            "revoke",
            "--agent",
            "support-bot",
            "--tool",
            "tickets",
        ],
    ));
    let after = run(
        None,
        &[
            "call",
            "tickets",
            "read_ticket",
            "--input",
            r#"{"id":1}"#,
            "--token",
            &token,
        ],
    );
    assert_eq!(after.status.code(), Some(3));
    let history = stdout(&run(Some(&alice), &["history"]));
    for action in [
        "tenant.create",
        "principal.add",
        "tool.publish",
        "tool.deploy",
        "grant.revoke",
    ] {
        assert!(
            history.contains(action),
            "history lacks {action}:\n{history}"
        );
    }
    // No key: a clear message.
    let nokey = run(None, &["inventory"]);
    assert_ne!(nokey.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&nokey.stderr).contains("WARDEN_KEY"));
}

/// Kill the server (SIGKILL) in the middle of a load of calls and restart
/// it: every call acknowledged to a client has its completion entry in the
/// trail, and the exported trail verifies offline.
#[test]
fn every_acknowledged_call_survives_a_killed_server_and_the_trail_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("served");
    let client = dir.path().join("client");
    let server = start_serve(&data);
    let admin = admin_key(&server.printed).expect("admin key");
    let url = server.url.clone();
    let run = |key: Option<&str>, args: &[&str]| {
        let mut a = vec!["--server", url.as_str()];
        a.extend_from_slice(args);
        warden(&client, key, &a)
    };
    let (alice, bob) = text_tenant(&run, &admin, "acme");
    stdout(&run(
        Some(&bob),
        &["agent", "create", "bot", "--purpose", "load"],
    ));
    stdout(&run(Some(&alice), &["agent", "activate", "bot"]));
    stdout(&run(
        Some(&alice),
        &["grant", "add", "--agent", "bot", "--tool", "text"],
    ));
    let cred = ok_json(&run(
        Some(&alice),
        &["credential", "issue", "--agent", "bot", "--json"],
    ))["credential"]
        .as_str()
        .expect("credential")
        .to_owned();
    let token = stdout(&run(None, &["token", "--credential", &cred]))
        .trim()
        .to_owned();

    // Load: 6 clients call until the server dies; each remembers the calls
    // it got an answer for.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..6 {
        let (url, token, stop) = (url.clone(), token.clone(), stop.clone());
        clients.push(std::thread::spawn(move || {
            let mut acked = Vec::new();
            for i in 0.. {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let id = format!("load-{c}-{i}");
                let body = r#"{"tool":"text","action":"word_count","input":{"text":"a b c"}}"#;
                match http(&url, "POST", "/v1/invoke", &token, body, &id) {
                    Ok((200, v)) if v["outcome"] == "ok" => {
                        assert_eq!(v["correlation_id"], id.as_str());
                        acked.push(id);
                    }
                    Ok((s, v)) => panic!("unexpected answer {s}: {v}"),
                    Err(_) => break, // the server is gone
                }
            }
            acked
        }));
    }
    std::thread::sleep(Duration::from_millis(1500));
    drop(server); // SIGKILL, mid-load
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked: Vec<String> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("client"))
        .collect();
    assert!(
        acked.len() > 50,
        "only {} calls answered before the kill",
        acked.len()
    );

    // Restart and export over the API; verify offline with the HMAC keys.
    let server = start_serve(&data);
    let url = server.url.clone();
    let bundle = dir.path().join("bundle.json");
    stdout(&warden(
        &client,
        Some(&alice),
        &[
            "--server",
            &url,
            "audit",
            "export",
            "--out",
            bundle.to_str().expect("utf-8"),
        ],
    ));
    let keys = data.join("audit-keys/acme.json");
    let verified = stdout(&warden(
        &client,
        None,
        &[
            "audit",
            "verify",
            bundle.to_str().expect("utf-8"),
            "--keys",
            keys.to_str().expect("utf-8"),
        ],
    ));
    assert!(verified.starts_with("OK"), "{verified}");
    let b: Value = serde_json::from_slice(&std::fs::read(&bundle).expect("bundle")).expect("json");
    let finished: std::collections::HashSet<String> = b["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| serde_json::from_str::<Value>(r["body"].as_str()?).ok())
        .filter(|e| e["kind"] == "invocation.finished")
        .filter_map(|e| e["correlation"].as_str().map(str::to_owned))
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|id| !finished.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged calls have no completion entry: {lost:?}",
        lost.len()
    );

    // Any acknowledged call replays from its journal over the API.
    let invocation = b["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| serde_json::from_str::<Value>(r["body"].as_str()?).ok())
        .find(|e| e["kind"] == "invocation.finished" && e["decision"] == "ok")
        .and_then(|e| e["invocation"].as_str().map(str::to_owned))
        .expect("a finished invocation");
    let replayed = stdout(&warden(
        &client,
        Some(&alice),
        &["--server", &url, "audit", "replay", &invocation],
    ));
    assert!(replayed.starts_with("OK: invocation"), "{replayed}");
    let missing = warden(
        &client,
        Some(&alice),
        &["--server", &url, "audit", "replay", "inv_unknown"],
    );
    assert_ne!(missing.status.code(), Some(0));

    // A tampered bundle fails verification, naming the entry.
    let mut t: Value =
        serde_json::from_slice(&std::fs::read(&bundle).expect("bundle")).expect("json");
    let body = t["records"][5]["body"]
        .as_str()
        .expect("body")
        .replace("\"actor\":\"", "\"actor\":\"x");
    t["records"][5]["body"] = Value::String(body);
    std::fs::write(&bundle, serde_json::to_vec(&t).expect("json")).expect("write");
    let failed = warden(
        &client,
        None,
        &[
            "audit",
            "verify",
            bundle.to_str().expect("utf-8"),
            "--keys",
            keys.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(failed.status.code(), Some(1));
    let out = String::from_utf8_lossy(&failed.stdout);
    assert!(out.contains("FAILED at entry 5"), "{out}");
}
