//! The HTTP JSON API: the agent path end to end, every documented route
//! served, the error envelope for bad requests, and a randomized sweep over
//! request inputs that must never produce a 5xx.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use base64::Engine as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;
use warden_service::{Config, Warden};
use warden_tests::{guest, root};

struct Api {
    _dir: tempfile::TempDir,
    router: axum::Router,
    admin: String,
    deployer: String,
    builder: String,
    /// acme's agent token (text granted).
    token: String,
    /// globex's deployer key.
    other: String,
}

async fn call(
    api: &Api,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    raw(
        api,
        method,
        path,
        bearer,
        body.map(|b| b.to_string().into_bytes()),
        "application/json",
    )
    .await
}

async fn raw(
    api: &Api,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<Vec<u8>>,
    content_type: &str,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(b) = bearer {
        req = req.header("authorization", format!("Bearer {b}"));
    }
    let req = match body {
        Some(b) => req.header("content-type", content_type).body(Body::from(b)),
        None => req.body(Body::empty()),
    }
    .expect("request");
    let res = api.router.clone().oneshot(req).await.expect("answer");
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 64 << 20)
        .await
        .expect("body");
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| json!({ "raw": String::from_utf8_lossy(&bytes) }));
    (status, v)
}

async fn api() -> Api {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::new(dir.path().to_owned());
    config.cache_dir = Some(root().join("target/warden-test-cache"));
    let opened = Warden::open(config).await.expect("open");
    let admin = opened.bootstrap_key.expect("admin key");
    let state = warden_rpc::AppState::new(Arc::new(opened.warden), Vec::new());
    let mut a = Api {
        _dir: dir,
        router: warden_rpc::router(state),
        admin: admin.clone(),
        deployer: String::new(),
        builder: String::new(),
        token: String::new(),
        other: String::new(),
    };
    for t in ["acme", "globex"] {
        let (s, _) = call(
            &a,
            Method::POST,
            "/v1/tenants",
            Some(&admin),
            Some(json!({"name": t})),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let (s, v) = call(
        &a,
        Method::POST,
        "/v1/principals",
        Some(&admin),
        Some(json!({"name": "alice", "roles": ["deployer", "viewer"], "tenant": "acme"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    a.deployer = v["api_key"].as_str().expect("key").to_owned();
    let (_, v) = call(
        &a,
        Method::POST,
        "/v1/principals",
        Some(&admin),
        Some(json!({"name": "gina", "roles": ["deployer", "viewer"], "tenant": "globex"})),
    )
    .await;
    a.other = v["api_key"].as_str().expect("key").to_owned();
    let (_, v) = call(
        &a,
        Method::POST,
        "/v1/principals",
        Some(&a.deployer.clone()),
        Some(json!({"name": "bob", "roles": ["builder"]})),
    )
    .await;
    a.builder = v["api_key"].as_str().expect("key").to_owned();
    let component = base64::engine::general_purpose::STANDARD
        .encode(std::fs::read(guest("text")).expect("component"));
    let manifest = std::fs::read_to_string(root().join("tools/text/tool.toml")).expect("manifest");
    let (s, v) = call(
        &a,
        Method::POST,
        "/v1/tools",
        Some(&a.builder.clone()),
        Some(json!({"manifest": manifest, "component_base64": component})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let d = a.deployer.clone();
    let (s, v) = call(
        &a,
        Method::POST,
        "/v1/tools/text/deploy",
        Some(&d),
        Some(json!({"version": "0.1.0"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = call(
        &a,
        Method::POST,
        "/v1/agents",
        Some(&a.builder.clone()),
        Some(json!({"name": "bot", "purpose": "api test"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = call(&a, Method::POST, "/v1/agents/bot/activate", Some(&d), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = call(
        &a,
        Method::POST,
        "/v1/grants",
        Some(&d),
        Some(json!({"agent": "bot", "tool": "text", "actions": ["word_count"]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = call(
        &a,
        Method::POST,
        "/v1/agents/bot/credentials",
        Some(&d),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let cred = v["credential"].as_str().expect("credential").to_owned();
    let (s, v) = call(
        &a,
        Method::POST,
        "/v1/token",
        None,
        Some(json!({"credential": cred})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    a.token = v["token"].as_str().expect("token").to_owned();
    a
}

#[tokio::test]
async fn agents_invoke_synchronously_and_asynchronously() {
    let a = api().await;
    let t = a.token.clone();
    let (s, v) = call(&a, Method::GET, "/v1/actions", Some(&t), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["actions"].as_array().expect("actions").len(), 1);
    // allowed
    let (s, v) = call(
        &a,
        Method::POST,
        "/v1/invoke",
        Some(&t),
        Some(json!({"tool": "text", "action": "word_count", "input": {"text": "a b"}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["status"].as_str(), v["outcome"].as_str()),
        (Some("completed"), Some("ok"))
    );
    assert_eq!(v["output"]["words"], 2);
    // denied and invalid input are data in a 200 answer
    let (s, v) = call(
        &a,
        Method::POST,
        "/v1/invoke",
        Some(&t),
        Some(json!({"tool": "text", "action": "regex_extract", "input": {}})),
    )
    .await;
    assert_eq!(
        (s, v["outcome"].as_str()),
        (StatusCode::OK, Some("not_granted")),
        "{v}"
    );
    let (s, v) = call(
        &a,
        Method::POST,
        "/v1/invoke",
        Some(&t),
        Some(json!({"tool": "text", "action": "word_count", "input": {"txt": 1}})),
    )
    .await;
    assert_eq!(
        (s, v["outcome"].as_str()),
        (StatusCode::OK, Some("invalid_input")),
        "{v}"
    );
    let (s, v) = call(
        &a,
        Method::POST,
        "/v1/invoke",
        Some(&t),
        Some(json!({"tool": "nope", "action": "x"})),
    )
    .await;
    assert_eq!(
        (s, v["outcome"].as_str()),
        (StatusCode::OK, Some("not_granted")),
        "{v}"
    );
    // asynchronous: an id now, the report later
    let (s, v) = call(
        &a,
        Method::POST,
        "/v1/invoke",
        Some(&t),
        Some(
            json!({"tool": "text", "action": "word_count", "input": {"text": "x"}, "async": true}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let id = v["invocation_id"].as_str().expect("id").to_owned();
    let mut done = Value::Null;
    for _ in 0..200 {
        let (s, v) = call(
            &a,
            Method::GET,
            &format!("/v1/invocations/{id}"),
            Some(&t),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        if v["status"] == "completed" {
            done = v;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(done["output"]["words"], 1, "{done}");
    // another tenant's principal cannot read it, nor an unknown id
    let (s, _) = call(
        &a,
        Method::GET,
        &format!("/v1/invocations/{id}"),
        Some(&a.other.clone()),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v) = call(&a, Method::GET, "/v1/invocations/inv_00", Some(&t), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    // metrics count the calls
    let (s, v) = call(&a, Method::GET, "/metrics", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let text = v["raw"].as_str().expect("text");
    assert!(
        text.contains("warden_calls_total{tool=\"text\",outcome=\"ok\"}"),
        "{text}"
    );
    assert!(text.contains("warden_denials_total"), "{text}");
    assert!(
        text.contains("warden_call_duration_seconds_bucket"),
        "{text}"
    );
}

/// (method, path, bearer, body, content type, expected status)
type Case = (
    Method,
    &'static str,
    Option<String>,
    Option<Vec<u8>>,
    &'static str,
    StatusCode,
);

#[tokio::test]
async fn bad_requests_get_the_right_4xx_in_one_envelope() {
    let a = api().await;
    let t = a.token.clone();
    let d = a.deployer.clone();
    let cases: Vec<Case> = vec![
        (
            Method::POST,
            "/v1/invoke",
            Some(t.clone()),
            Some(b"{not json".to_vec()),
            "application/json",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/v1/invoke",
            Some(t.clone()),
            Some(b"{}".to_vec()),
            "text/plain",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            Method::POST,
            "/v1/invoke",
            Some(t.clone()),
            Some(br#"{"tool": 1}"#.to_vec()),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::POST,
            "/v1/invoke",
            Some(t.clone()),
            Some(vec![b' '; 2 << 20]),
            "application/json",
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            Method::POST,
            "/v1/invoke",
            None,
            Some(b"{}".to_vec()),
            "application/json",
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::POST,
            "/v1/invoke",
            Some("wdn_tok_acme_00".into()),
            Some(br#"{"tool":"text","action":"word_count"}"#.to_vec()),
            "application/json",
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            "/v1/actions",
            Some(d.clone()),
            None,
            "",
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            "/v1/inventory",
            Some(t.clone()),
            None,
            "",
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            "/v1/inventory",
            Some(a.builder.clone()),
            None,
            "",
            StatusCode::FORBIDDEN,
        ),
        (
            Method::POST,
            "/v1/tenants",
            Some(d.clone()),
            Some(br#"{"name":"x"}"#.to_vec()),
            "application/json",
            StatusCode::FORBIDDEN,
        ),
        (
            Method::POST,
            "/v1/tools/text/deploy",
            Some(a.other.clone()),
            Some(br#"{"version":"0.1.0"}"#.to_vec()),
            "application/json",
            StatusCode::NOT_FOUND,
        ),
        (
            Method::DELETE,
            "/v1/grants/bot/text",
            Some(a.other.clone()),
            None,
            "",
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            "/v1/agents/bot/credentials",
            Some(a.other.clone()),
            None,
            "",
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            "/v1/agents/bot/explode",
            Some(d.clone()),
            None,
            "",
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            "/v1/tools",
            Some(a.builder.clone()),
            Some(br#"{"manifest":"x","component_base64":"!!"}"#.to_vec()),
            "application/json",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/v1/grants",
            Some(d.clone()),
            Some(br#"{"agent":"bot","tool":"text","actions":["rm_rf"]}"#.to_vec()),
            "application/json",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/v1/nothing-here",
            None,
            None,
            "",
            StatusCode::NOT_FOUND,
        ),
    ];
    for (method, path, bearer, body, ct, want) in cases {
        let (s, v) = raw(&a, method.clone(), path, bearer.as_deref(), body, ct).await;
        assert_eq!(s, want, "{method} {path}: {v}");
        let code = v["error"]["code"].as_str();
        let message = v["error"]["message"].as_str();
        assert!(
            code.is_some() && message.is_some(),
            "{method} {path}: not the envelope: {v}"
        );
        // No data from elsewhere: another tenant's names only ever read as unknown.
        assert!(
            !v.to_string().contains("acme") || path == "/v1/invoke",
            "{v}"
        );
    }
}

#[tokio::test]
async fn every_documented_route_is_served() {
    let a = api().await;
    let doc = warden_rpc::openapi_document();
    let (s, served) = call(&a, Method::GET, "/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(served, doc);
    for (method, path, _, _) in warden_rpc::ROUTES {
        let concrete = path
            .replace("{id}", "inv_0")
            .replace("{key}", "idle_days")
            .replace("{tool}", "text")
            .replace("{name}", "bot")
            .replace("{verb}", "renew")
            .replace("{agent}", "bot");
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let (s, v) = call(&a, m, &concrete, None, None).await;
        assert_ne!(s, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_ne!(
            v["error"]["code"], "no_route",
            "{method} {path} is documented but not routed"
        );
        assert!(doc["paths"][path][method].is_object());
    }
    // Every route in the router source is documented.
    let src = std::fs::read_to_string(root().join("host/rpc/src/lib.rs")).expect("source");
    for line in src
        .lines()
        .filter(|l| l.trim_start().starts_with(".route(\""))
    {
        let path = line.split('"').nth(1).expect("path");
        assert!(
            warden_rpc::ROUTES.iter().any(|(_, p, _, _)| *p == path),
            "route {path} is not in the OpenAPI document"
        );
    }
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[(self.next() % xs.len() as u64) as usize]
    }
    fn word<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

#[tokio::test]
async fn random_api_inputs_never_cause_a_server_error() {
    let a = api().await;
    let mut rng = Rng(0x5eed_cafe_f00d_1234);
    let bearers = [
        None,
        Some(a.token.clone()),
        Some(a.deployer.clone()),
        Some(a.builder.clone()),
        Some(a.other.clone()),
        Some(a.admin.clone()),
        Some("wdn_key_acme_zz".to_owned()),
        Some("wdn_tok_acme_\tzz".to_owned()),
    ];
    let scalars = [
        json!(null),
        json!(true),
        json!(-1),
        json!(1e308),
        json!(""),
        json!("x".repeat(300)),
        json!("../../etc"),
        json!("bot"),
        json!("text"),
        json!([]),
        json!({}),
        json!("0.1.0"),
        json!(["word_count"]),
        json!("\u{202e}"),
    ];
    let keys = [
        "name",
        "purpose",
        "roles",
        "tenant",
        "tool",
        "action",
        "input",
        "agent",
        "actions",
        "version",
        "to",
        "value",
        "credential",
        "ttl_secs",
        "tools",
        "async",
        "wait_ms",
        "manifest",
        "component_base64",
        "grant_toml",
        "expires_in_days",
        "reason",
        "days",
        "owner",
    ];
    for i in 0..600 {
        let (method, path, _, _) = *rng.pick(warden_rpc::ROUTES);
        let concrete = path
            .replace("{id}", rng.word(&["inv_0", "x", "%00", "..%2F"]))
            .replace("{key}", rng.word(&["idle_days", "allow_self_deploy", "x"]))
            .replace("{tool}", rng.word(&["text", "nope", "a%20b"]))
            .replace("{name}", rng.word(&["bot", "ghost", "%FF"]))
            .replace(
                "{verb}",
                rng.word(&["renew", "activate", "suspend", "decommission", "fly"]),
            )
            .replace("{agent}", rng.word(&["bot", "ghost"]));
        let mut body = serde_json::Map::new();
        for _ in 0..(rng.next() % 5) {
            body.insert((*rng.pick(&keys)).to_owned(), rng.pick(&scalars).clone());
        }
        let body = match rng.next() % 4 {
            0 => None,
            1 => Some(b"{\"a\":".to_vec()),
            _ => Some(Value::Object(body).to_string().into_bytes()),
        };
        let bearer = rng.pick(&bearers).clone();
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let (s, v) = raw(
            &a,
            m,
            &concrete,
            bearer.as_deref(),
            body.clone(),
            "application/json",
        )
        .await;
        assert!(
            !s.is_server_error(),
            "case {i}: {method} {concrete} body {:?} → {s} {v}",
            body.map(|b| String::from_utf8_lossy(&b).into_owned())
        );
    }
}

/// A log sink the test can read back.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One correlation id runs from the agent's request through the call and its
/// import calls: it is echoed in the header, carried in the report, and on the
/// log line of every guarded import.
#[tokio::test]
async fn one_correlation_id_runs_from_the_request_through_the_imports() {
    let logs = Captured::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let a = api().await;
    // The kv tool, granted to the same agent: its calls make import calls.
    let component = base64::engine::general_purpose::STANDARD
        .encode(std::fs::read(guest("kv")).expect("component"));
    let manifest = std::fs::read_to_string(root().join("tools/kv/tool.toml")).expect("manifest");
    let (s, v) = call(
        &a,
        Method::POST,
        "/v1/tools",
        Some(&a.builder),
        Some(json!({"manifest": manifest, "component_base64": component})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = call(
        &a,
        Method::POST,
        "/v1/tools/kv/deploy",
        Some(&a.deployer),
        Some(json!({"version": "0.1.0"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = call(
        &a,
        Method::POST,
        "/v1/grants",
        Some(&a.deployer),
        Some(json!({"agent": "bot", "tool": "kv", "grant_toml": "[kv]\nnamespace = \"bot\"\nwrite = true\n"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let kv_token = a.token.clone();
    let send = |id: Option<&'static str>| {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri("/v1/invoke")
            .header("authorization", format!("Bearer {kv_token}"))
            .header("content-type", "application/json");
        if let Some(id) = id {
            req = req.header("x-request-id", id);
        }
        req.body(Body::from(
            json!({"tool": "kv", "action": "put", "input": {"key": "k", "value": "v"}}).to_string(),
        ))
        .expect("request")
    };
    // The client's id.
    let res = a
        .router
        .clone()
        .oneshot(send(Some("trace-7f3a")))
        .await
        .expect("answer");
    assert_eq!(res.headers()["x-request-id"], "trace-7f3a");
    let body = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .expect("body");
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["outcome"], "ok", "{v}");
    assert_eq!(v["untrusted"], true, "tool output is marked untrusted: {v}");
    // A malformed data session id is refused with the envelope, before any call.
    let bad = Request::builder()
        .method(Method::POST)
        .uri("/v1/invoke")
        .header("authorization", format!("Bearer {kv_token}"))
        .header("content-type", "application/json")
        .header("x-warden-session", "not a valid id!")
        .body(Body::from(
            json!({"tool": "kv", "action": "get", "input": {"key": "k"}}).to_string(),
        ))
        .expect("request");
    let res = a.router.clone().oneshot(bad).await.expect("answer");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .expect("body");
    let e: Value = serde_json::from_slice(&body).expect("json");
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("x-warden-session")),
        "{e}"
    );
    assert_eq!(v["correlation_id"], "trace-7f3a");
    assert!(!v["imports"].as_array().expect("imports").is_empty(), "{v}");
    // A fresh one when the client sends none: the same in header and report.
    let res = a.router.clone().oneshot(send(None)).await.expect("answer");
    let header = res.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let body = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .expect("body");
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["correlation_id"], header.as_str());

    // The answer's invocation id is the audit trail's: a viewer replays it.
    let invocation = v["invocation_id"].as_str().expect("invocation id");
    let (s, r) = call(
        &a,
        Method::POST,
        "/v1/audit/replay",
        Some(&a.deployer),
        Some(json!({ "invocation": invocation })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["matched"], true, "{r}");
    assert_eq!(r["imports"], 1, "{r}");
    let (s, r) = call(
        &a,
        Method::POST,
        "/v1/audit/replay",
        Some(&a.builder),
        Some(json!({ "invocation": invocation })),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{r}");

    let text = String::from_utf8(logs.0.lock().expect("lock").clone()).expect("utf-8");
    let imports: Vec<&str> = text.lines().filter(|l| l.contains("import call")).collect();
    assert!(!imports.is_empty(), "no import log lines:\n{text}");
    assert!(
        imports
            .iter()
            .any(|l| l.contains("correlation_id=trace-7f3a")),
        "import lines lack the correlation id:\n{}",
        imports.join("\n")
    );
    assert!(
        imports
            .iter()
            .any(|l| l.contains(&format!("correlation_id={header}"))),
        "{}",
        imports.join("\n")
    );
}

/// The policy over HTTP: an invalid upload is a 400 that keeps the version in
/// force, a builder may not set policy, `policy/test` explains, and a held
/// call is answered with outcome `held` (nothing ran).
#[tokio::test]
async fn policies_are_set_shown_and_tested_over_http() {
    let a = api().await;
    let d = a.deployer.clone();
    let (s, v) = call(&a, Method::GET, "/v1/policy", Some(&d), None).await;
    assert_eq!((s, &v["policy"]), (StatusCode::OK, &Value::Null), "{v}");
    let policy = r#"
        @id("baseline") permit(principal, action, resource);
        @id("long-texts-need-approval")
        @reason("long texts need a human")
        forbid(principal, action == Warden::Action::"invoke_unattended", resource in Warden::Tool::"text")
        when { context.args.hasTag("text") && context.args.getTag("text") like "*long*" };
    "#;
    let (s, v) = call(
        &a,
        Method::PUT,
        "/v1/policy",
        Some(&d),
        Some(json!({ "text": policy })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["version"], 1);
    let (s, v) = call(
        &a,
        Method::PUT,
        "/v1/policy",
        Some(&d),
        Some(json!({ "text": "permit(principal, action, resource) when { context.nope };" })),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("the version in force stays")),
        "{v}"
    );
    let b = a.builder.clone();
    let (s, _) = call(
        &a,
        Method::PUT,
        "/v1/policy",
        Some(&b),
        Some(json!({ "text": "" })),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = call(&a, Method::GET, "/v1/policy/versions/1", Some(&d), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["policy"]["version"], 1);
    let (s, v) = call(
        &a,
        Method::POST,
        "/v1/policy/test",
        Some(&d),
        Some(json!({"agent": "bot", "tool": "text", "action": "word_count", "args": {"text": "a long one"}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["decision"], "hold", "{v}");
    assert_eq!(v["policies"], json!(["long-texts-need-approval"]));
    let t = a.token.clone();
    let (s, v) = call(
        &a,
        Method::POST,
        "/v1/invoke",
        Some(&t),
        Some(json!({"tool": "text", "action": "word_count", "input": {"text": "a long one"}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["outcome"], "held", "{v}");
    assert!(
        v["reason"]
            .as_str()
            .is_some_and(|r| r.contains("long texts need a human")),
        "{v}"
    );
    assert_eq!(v["fuel_used"], 0);
    let (s, v) = call(
        &a,
        Method::POST,
        "/v1/invoke",
        Some(&t),
        Some(json!({"tool": "text", "action": "word_count", "input": {"text": "short"}})),
    )
    .await;
    assert_eq!(
        (s, v["outcome"].as_str()),
        (StatusCode::OK, Some("ok")),
        "{v}"
    );
}

/// A held call over HTTP: the agent gets `held` with an approval id, the
/// webhook hears of it, the approver lists it with the exact payload and
/// approves; the agent long-polls its invocation and gets the result. The
/// approver's identity is the key's, whatever the body says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_calls_are_approved_over_http_and_the_webhook_hears_of_them() {
    // A webhook receiver on loopback: each request's body, in order.
    let hook = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook_url = format!("http://{}/hook", hook.local_addr().expect("addr"));
    let (tx, mut notes) = tokio::sync::mpsc::unbounded_channel::<Value>();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut sock, _)) = hook.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            let _ =
                                tx.send(serde_json::from_str(&body[..len]).unwrap_or(Value::Null));
                            let _ = sock
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                                .await;
                            return;
                        }
                    }
                }
            });
        }
    });
    let a = api().await;
    let d = a.deployer.clone();
    let (s, v) = call(
        &a,
        Method::POST,
        "/v1/principals",
        Some(&d),
        Some(json!({"name": "ann", "roles": ["approver"]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let ann = v["api_key"].as_str().expect("key").to_owned();
    let policy = r#"
        @id("baseline") permit(principal, action in [Warden::Action::"invoke", Warden::Action::"invoke_unattended"], resource);
        @id("long-texts-need-approval")
        forbid(principal, action == Warden::Action::"invoke_unattended", resource in Warden::Tool::"text")
        when { context.args.hasTag("text") && context.args.getTag("text") like "*long*" };
        @id("ann-approves") permit(principal == Warden::Approver::"ann", action == Warden::Action::"approve", resource);
    "#;
    let (s, v) = call(
        &a,
        Method::PUT,
        "/v1/policy",
        Some(&d),
        Some(json!({ "text": policy })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = call(
        &a,
        Method::PUT,
        "/v1/settings/approval_webhook",
        Some(&d),
        Some(json!({ "value": hook_url })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    let t = a.token.clone();
    let (s, v) = call(
        &a,
        Method::POST,
        "/v1/invoke",
        Some(&t),
        Some(json!({"tool": "text", "action": "word_count", "input": {"text": "a long one"}})),
    )
    .await;
    assert_eq!(
        (s, v["outcome"].as_str()),
        (StatusCode::OK, Some("held")),
        "{v}"
    );
    let id = v["approval_id"].as_str().expect("approval id").to_owned();
    let inv = v["invocation_id"]
        .as_str()
        .expect("invocation id")
        .to_owned();
    let (s, v) = call(
        &a,
        Method::GET,
        &format!("/v1/invocations/{inv}"),
        Some(&t),
        None,
    )
    .await;
    assert_eq!(
        (s, v["status"].as_str()),
        (StatusCode::OK, Some("held")),
        "{v}"
    );
    let note = tokio::time::timeout(std::time::Duration::from_secs(10), notes.recv())
        .await
        .expect("webhook posted")
        .expect("note");
    assert_eq!(
        (note["event"].as_str(), note["approval"].as_str()),
        (Some("requested"), Some(id.as_str()))
    );

    let (s, v) = call(&a, Method::GET, "/v1/approvals", Some(&ann), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["approvals"][0]["id"], id.as_str());
    assert_eq!(v["approvals"][0]["input"], r#"{"text":"a long one"}"#);
    assert_eq!(v["approvals"][0]["may_decide"], true);
    // Neither the agent nor a builder may decide; a body naming someone
    // else is refused as malformed, not believed.
    let path = format!("/v1/approvals/{id}/approve");
    let (s, _) = call(&a, Method::POST, &path, Some(&t), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let b = a.builder.clone();
    let (s, _) = call(&a, Method::POST, &path, Some(&b), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(
        &a,
        Method::POST,
        &path,
        Some(&ann),
        Some(json!({"approver": "alice"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // The agent long-polls while ann approves.
    let poll_path = format!("/v1/invocations/{inv}?wait=30");
    let poll = call(&a, Method::GET, &poll_path, Some(&t), None);
    let approve = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        call(
            &a,
            Method::POST,
            &path,
            Some(&ann),
            Some(json!({"comment": "fine"})),
        )
        .await
    };
    let ((s1, polled), (s2, approved)) = tokio::join!(poll, approve);
    assert_eq!(s2, StatusCode::OK, "{approved}");
    assert_eq!(approved["status"], "executed", "{approved}");
    assert_eq!(approved["votes"][0]["principal"], "ann");
    assert_eq!(s1, StatusCode::OK, "{polled}");
    assert_eq!(polled["status"], "completed", "{polled}");
    assert_eq!(polled["outcome"], "ok", "{polled}");
    assert_eq!(polled["output"]["words"], 3, "{polled}");
    let note = tokio::time::timeout(std::time::Duration::from_secs(10), notes.recv())
        .await
        .expect("webhook posted")
        .expect("note");
    assert_eq!(note["event"], "approved");
    // A second approval of the consumed request is refused.
    let (s, _) = call(&a, Method::POST, &path, Some(&ann), None).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (_, m) = call(&a, Method::GET, "/metrics", None, None).await;
    let text = m["raw"].as_str().unwrap_or_default().to_owned();
    assert!(text.contains("warden_approvals_pending 0"), "{text}");
    assert!(
        text.contains("warden_approval_transitions_total{outcome=\"executed\"} 1"),
        "{text}"
    );
}
