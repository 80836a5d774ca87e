//! Helpers shared by the CLI tests: run `warden` with a clean environment,
//! read its output, and start `warden serve` on a free loopback port.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use warden_tests::{guest, root};

pub fn warden(data: &Path, key: Option<&str>, args: &[&str]) -> Output {
    warden_with(data, key, args, &[])
}

/// Runs the CLI with a clean environment: no operator key, token, server or
/// config file from the developer's shell.
pub fn warden_with(data: &Path, key: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_warden"));
    cmd.args(args)
        .env("WARDEN_DATA_DIR", data)
        .env("XDG_CONFIG_HOME", data.join("no-config"))
        .env_remove("WARDEN_SERVER")
        .env_remove("WARDEN_CONFIG")
        .env("WARDEN_CACHE_DIR", root().join("target/warden-test-cache"))
        .env_remove("WARDEN_KEY")
        .env_remove("WARDEN_TOKEN")
        .env_remove("WARDEN_CREDENTIAL");
    if let Some(k) = key {
        cmd.env("WARDEN_KEY", k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run warden")
}

pub fn ok_json(o: &Output) -> Value {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("stdout is JSON")
}

pub fn stdout(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A running `warden serve`, killed on drop.
pub struct Server {
    pub child: std::process::Child,
    pub printed: String,
    pub url: String,
    /// Everything the server printed on stderr so far.
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    /// What the server printed on stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `warden serve` on a free loopback port and waits until it serves.
pub fn start_serve(data: &Path) -> Server {
    start_serve_with(data, &[])
}

/// [`start_serve`] with extra environment (e.g. `WARDEN_DATABASE`).
pub fn start_serve_with(data: &Path, env: &[(&str, &str)]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .envs(env.iter().copied())
        .env("WARDEN_DATA_DIR", data)
        .env("WARDEN_CACHE_DIR", root().join("target/warden-test-cache"))
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start warden serve");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let keep = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(mut l) = keep.lock() {
                l.push_str(&line);
                l.push('\n');
            }
            let _ = tx.send(line);
        }
    });
    let mut seen = String::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains("serving") {
                    break;
                }
            }
            Err(e) => {
                let _ = child.kill();
                panic!("warden serve did not start ({e}); it printed:\n{seen}");
            }
        }
    }
    let url = seen
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("the serving line names its address")
        .to_owned();
    Server {
        child,
        printed: seen,
        url,
        log,
    }
}

pub fn admin_key(printed: &str) -> Option<String> {
    printed
        .split_whitespace()
        .find(|w| w.starts_with("wdn_admin_"))
        .map(|w| w.trim_start_matches("WARDEN_KEY=").to_owned())
}

/// One HTTP/1.1 request on a fresh connection; returns (status, body).
pub fn http(
    url: &str,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
    id: &str,
) -> std::io::Result<(u16, Value)> {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nx-request-id: {id}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status line"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let v = serde_json::from_str(body).map_err(|_| std::io::Error::other("incomplete body"))?;
    Ok((status, v))
}

/// Through `run` (one CLI command, local or `--server`): tenant `name`, its
/// deployer `alice` (also viewer) and builder `bob`, and the `text` tool
/// published by bob and deployed by alice. Returns (alice's key, bob's key).
pub fn text_tenant(
    run: &dyn Fn(Option<&str>, &[&str]) -> Output,
    admin: &str,
    name: &str,
) -> (String, String) {
    let key = |o: Output| ok_json(&o)["api_key"].as_str().expect("key").to_owned();
    stdout(&run(Some(admin), &["tenant", "create", name]));
    let alice = key(run(
        Some(admin),
        &[
            "principal",
            "add",
            "alice",
            "--role",
            "deployer,viewer",
            "--tenant",
            name,
            "--json",
        ],
    ));
    let bob = key(run(
        Some(&alice),
        &["principal", "add", "bob", "--role", "builder", "--json"],
    ));
    let text = guest("text");
    let manifest = root().join("tools/text/tool.toml");
    stdout(&run(
        Some(&bob),
        &[
            "tool",
            "publish",
            text.to_str().expect("utf-8"),
            "--manifest",
            manifest.to_str().expect("utf-8"),
        ],
    ));
    stdout(&run(Some(&alice), &["tool", "deploy", "text", "0.1.0"]));
    (alice, bob)
}
