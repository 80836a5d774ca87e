//! An agent calling tools over Warden's HTTP API, with nothing but the
//! standard library: exchange the credential for a token, list the granted
//! actions, call one.
//!
//! ```sh
//! WARDEN_URL=127.0.0.1:7070 WARDEN_CREDENTIAL=wdn_cred_acme_… \
//!     cargo run -p warden-examples --bin agent_http -- tickets open_ticket '{"subject":"VPN down","body":"since 9"}'
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// One HTTP/1.1 request; returns (status, JSON body).
fn request(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status)?;
    let code: u16 = status
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    let mut line = String::new();
    while r.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut rest = String::new();
    r.read_to_string(&mut rest)?;
    Ok((
        code,
        serde_json::from_str(&rest).unwrap_or(Value::String(rest)),
    ))
}

fn main() -> anyhow::Result<()> {
    let addr = std::env::var("WARDEN_URL").unwrap_or_else(|_| "127.0.0.1:7070".into());
    let addr = addr
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let credential = std::env::var("WARDEN_CREDENTIAL").context("set WARDEN_CREDENTIAL")?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (tool, action, input) = match args.as_slice() {
        [t, a, i] => (
            t.clone(),
            a.clone(),
            serde_json::from_str::<Value>(i).context("input is not JSON")?,
        ),
        _ => bail!("usage: agent_http <tool> <action> <input JSON>"),
    };

    let (code, t) = request(
        &addr,
        "POST",
        "/v1/token",
        None,
        Some(&json!({ "credential": credential })),
    )?;
    if code != 200 {
        bail!("token exchange refused ({code}): {t}");
    }
    let token = t["token"].as_str().context("no token")?.to_owned();
    println!("token valid until {}", t["expires_at"]);

    let (_, actions) = request(&addr, "GET", "/v1/actions", Some(&token), None)?;
    for a in actions["actions"].as_array().into_iter().flatten() {
        println!(
            "granted: {}.{} ({}) {}",
            a["tool"].as_str().unwrap_or("?"),
            a["action"].as_str().unwrap_or("?"),
            a["effect"].as_str().unwrap_or("?"),
            a["description"].as_str().unwrap_or("")
        );
    }

    let (code, r) = request(
        &addr,
        "POST",
        "/v1/invoke",
        Some(&token),
        Some(&json!({ "tool": tool, "action": action, "input": input })),
    )?;
    if code != 200 {
        bail!("request refused ({code}): {r}");
    }
    // Tool outcomes are data: `ok` with an output, or why not.
    match r["outcome"].as_str() {
        Some("ok") => println!("output: {}", r["output"]),
        other => println!("outcome {}: {}", other.unwrap_or("?"), r),
    }
    Ok(())
}
