//! Shared helpers of Warden's integration tests and benchmarks: paths of the
//! guest components built by `build.rs`, grants from TOML, a runtime with a
//! shared compile cache, and a small loopback HTTP server.

pub mod pg;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use warden_policy::Grant;
use warden_runtime::{
    Backends, Call, MemoryKv, Report, Runtime, RuntimeConfig, StaticSecrets, Tool,
};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("WARDEN_ROOT"))
}

/// Path of a built guest component, by crate name (`text`, `fixture_hostile`).
pub fn guest(name: &str) -> PathBuf {
    PathBuf::from(env!("WARDEN_GUESTS_DIR")).join(format!("{}.wasm", name.replace('-', "_")))
}

/// A runtime whose compile cache is shared by all tests of this checkout.
pub fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig {
        max_concurrent: 16,
        cache_dir: Some(root().join("target/warden-test-cache")),
    })
    .expect("runtime starts")
}

/// Loads a guest by name.
pub async fn load(rt: &Runtime, name: &str) -> Arc<Tool> {
    match rt.load_file(&guest(name)).await {
        Ok(t) => t,
        Err(e) => panic!("loading {name}: {e}"),
    }
}

/// Parses a grant, panicking with the reason on invalid test data.
pub fn grant(toml: &str) -> Arc<Grant> {
    match Grant::from_toml(toml) {
        Ok(g) => Arc::new(g),
        Err(e) => panic!("test grant is invalid: {e}\n{toml}"),
    }
}

/// Backends with a fresh in-memory kv and the given secrets.
pub fn backends(secrets: &[(&str, &str)]) -> Backends {
    Backends {
        kv: Arc::new(MemoryKv::default()),
        secrets: Arc::new(StaticSecrets(
            secrets
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )),
        write_ahead: None,
        policy: None,
    }
}

/// Invokes one action.
pub async fn invoke(
    rt: &Runtime,
    tool: &Tool,
    grant: &Arc<Grant>,
    backends: &Backends,
    action: &str,
    input: serde_json::Value,
) -> Report {
    let input = input.to_string();
    rt.invoke(
        tool,
        grant.clone(),
        backends,
        Call {
            action,
            input: &input,
        },
    )
    .await
}

/// A tiny HTTP/1.1 server on 127.0.0.1 for http capability tests. Routes:
/// `GET /hello` → "hello"; `GET /big` → 2 MiB; `GET /slow` → answers after
/// 10 s; `POST /echo` → the request body. It serves until the test process
/// ends; each connection is handled on its own thread and closed after one
/// response.
pub fn http_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
                let mut reader = BufReader::new(&stream);
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    return;
                }
                let mut content_length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        content_length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; content_length.min(1 << 20)];
                let _ = reader.read_exact(&mut body);
                let path = request_line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("/")
                    .to_owned();
                let response_body: Vec<u8> = match path.as_str() {
                    "/hello" => b"hello".to_vec(),
                    "/big" => vec![b'b'; 2 << 20],
                    "/echo" => body,
                    "/slow" => {
                        std::thread::sleep(Duration::from_secs(10));
                        b"late".to_vec()
                    }
                    _ => b"not found".to_vec(),
                };
                let status =
                    if path == "/hello" || path == "/big" || path == "/echo" || path == "/slow" {
                        "200 OK"
                    } else {
                        "404 Not Found"
                    };
                let mut s = &stream;
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    response_body.len()
                );
                let _ = s.write_all(&response_body);
            });
        }
    });
    addr
}

/// The Python interpreter of the test venv (`target/py-venv`) with the
/// official MCP client (`mcp==2.3.0`) installed. `tests/run.sh` creates it
/// before the tests run; when it is missing (a test run directly with cargo),
/// this creates it under a temporary name and renames it into place, so
/// concurrent test processes cannot see a half-built venv.
pub fn python_with_mcp() -> PathBuf {
    let venv = root().join("target/py-venv");
    let python = venv.join("bin/python");
    if python.is_file() {
        return python;
    }
    let tmp = root().join(format!("target/py-venv.tmp-{}", std::process::id()));
    let run = |cmd: &mut std::process::Command| {
        let out = cmd.output().expect("run python");
        assert!(
            out.status.success(),
            "{cmd:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(std::process::Command::new("python3")
        .args(["-m", "venv"])
        .arg(&tmp));
    run(std::process::Command::new(tmp.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "mcp==2.3.0",
    ]));
    if std::fs::rename(&tmp, &venv).is_err() {
        // Another process won the race; use its venv.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    python
}
