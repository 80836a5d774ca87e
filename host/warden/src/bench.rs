//! `warden bench`: a load tool. Drives a running server over HTTP (N
//! keep-alive connections, each one request at a time) or an MCP stdio server
//! it starts itself (`warden mcp`, N requests in flight), for a bounded time
//! and count, and reports throughput and latency percentiles.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// What to drive.
#[derive(Debug, Clone)]
pub struct Bench {
    /// `http://host:port` of `warden serve`, or `None` for MCP over stdio.
    pub url: Option<String>,
    pub token: String,
    pub tool: String,
    pub action: String,
    pub input: String,
    pub concurrency: usize,
    pub duration: Duration,
    pub max_calls: u64,
}

/// Latencies in microseconds, sorted, and the wall time they took.
struct Samples {
    latencies: Vec<u64>,
    errors: u64,
    wall: Duration,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub async fn run(b: Bench) -> anyhow::Result<()> {
    if b.concurrency == 0 || b.max_calls == 0 {
        bail!("--concurrency and --count must be at least 1");
    }
    let s = match &b.url {
        Some(url) => http(&b, url).await?,
        None => mcp_stdio(&b).await?,
    };
    let mut lat = s.latencies;
    lat.sort_unstable();
    #[allow(clippy::cast_precision_loss)]
    let rate = lat.len() as f64 / s.wall.as_secs_f64();
    let report = json!({
        "transport": if b.url.is_some() { "http" } else { "mcp-stdio" },
        "concurrency": b.concurrency,
        "calls": lat.len(),
        "errors": s.errors,
        "seconds": s.wall.as_secs_f64(),
        "calls_per_second": rate.round(),
        "p50_us": percentile(&lat, 0.50),
        "p90_us": percentile(&lat, 0.90),
        "p99_us": percentile(&lat, 0.99),
        "max_us": lat.last().copied().unwrap_or(0),
    });
    println!("{report}");
    Ok(())
}

/// One HTTP/1.1 keep-alive connection.
struct Conn {
    stream: BufReader<tokio::net::TcpStream>,
}

impl Conn {
    async fn open(addr: &str) -> anyhow::Result<Conn> {
        let s = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        s.set_nodelay(true)?;
        Ok(Conn {
            stream: BufReader::new(s),
        })
    }

    /// Sends one request and reads the answer; returns the status.
    async fn call(&mut self, request: &[u8]) -> anyhow::Result<u16> {
        self.stream.get_mut().write_all(request).await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("malformed status line")?;
        let mut length = 0usize;
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await? == 0 {
                bail!("connection closed");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse()?;
            }
        }
        let mut body = vec![0u8; length];
        self.stream.read_exact(&mut body).await?;
        Ok(status)
    }
}

async fn http(b: &Bench, url: &str) -> anyhow::Result<Samples> {
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let body = json!({ "tool": b.tool, "action": b.action, "input": serde_json::from_str::<serde_json::Value>(&b.input)? }).to_string();
    let request = Arc::new(
        format!(
            "POST /v1/invoke HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            b.token,
            body.len()
        )
        .into_bytes(),
    );
    let issued = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + b.duration;
    let mut tasks = Vec::new();
    for _ in 0..b.concurrency {
        let mut conn = Conn::open(&addr).await?;
        let (request, issued, errors) = (request.clone(), issued.clone(), errors.clone());
        let max = b.max_calls;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < max {
                let t = Instant::now();
                match conn.call(&request).await {
                    Ok(200) => lat.push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX)),
                    Ok(_) | Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            lat
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await?);
    }
    Ok(Samples {
        latencies,
        errors: errors.load(Ordering::Relaxed),
        wall: start.elapsed(),
    })
}

async fn mcp_stdio(b: &Bench) -> anyhow::Result<Samples> {
    let b = b.clone();
    tokio::task::spawn_blocking(move || mcp_stdio_blocking(&b)).await?
}

/// MCP over a child's pipes: one writer, one reader, requests matched by id.
fn mcp_stdio_blocking(b: &Bench) -> anyhow::Result<Samples> {
    use std::io::{BufRead, Write};
    let exe = std::env::current_exe()?;
    let mut child = std::process::Command::new(exe)
        .arg("mcp")
        .env("WARDEN_TOKEN", &b.token)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting warden mcp")?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut stdout = std::io::BufReader::new(child.stdout.take().context("stdout")?);
    let mut line = String::new();
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "warden-bench", "version": "0"}}});
    writeln!(stdin, "{init}")?;
    stdout.read_line(&mut line)?;
    if !line.contains("\"result\"") {
        let _ = child.kill();
        bail!("MCP initialize failed: {line}");
    }
    writeln!(
        stdin,
        "{{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}}"
    )?;
    let name = format!("{}__{}", b.tool, b.action);
    let args: serde_json::Value = serde_json::from_str(&b.input)?;
    let start = Instant::now();
    let deadline = start + b.duration;
    let mut sent: std::collections::HashMap<u64, Instant> = std::collections::HashMap::new();
    let mut next_id = 1u64;
    let mut latencies = Vec::new();
    let mut errors = 0u64;
    loop {
        while sent.len() < b.concurrency && next_id <= b.max_calls && Instant::now() < deadline {
            let req = json!({"jsonrpc": "2.0", "id": next_id, "method": "tools/call",
                "params": {"name": name, "arguments": args}});
            writeln!(stdin, "{req}")?;
            sent.insert(next_id, Instant::now());
            next_id += 1;
        }
        stdin.flush()?;
        if sent.is_empty() {
            break;
        }
        line.clear();
        if stdout.read_line(&mut line)? == 0 {
            bail!("warden mcp exited");
        }
        let v: serde_json::Value = serde_json::from_str(&line)?;
        if let Some(id) = v.get("id").and_then(serde_json::Value::as_u64)
            && let Some(t) = sent.remove(&id)
        {
            if v["result"]["isError"] == json!(false) {
                latencies.push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
            } else {
                errors += 1;
            }
        }
    }
    let wall = start.elapsed();
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    Ok(Samples {
        latencies,
        errors,
        wall,
    })
}
