//! A five-minute tour of Warden on the embedded defaults: real tools built from
//! `tools/`, grants that allow and deny, and hostile code stopped by limits.
//!
//! Run: `cargo run -p warden-examples --bin demo`

use std::sync::Arc;

use serde_json::json;
use warden_runtime::Runtime;
use warden_tests::{backends, grant, invoke, load, runtime};

fn show(title: &str, r: &warden_runtime::Report) {
    let result = match &r.output {
        Some(o) => o.to_string(),
        None => r.outcome.reason(),
    };
    println!(
        "{title:<58} {:<16} {:>7} us  {result}",
        serde_json::to_value(&r.outcome)
            .ok()
            .and_then(|v| v.get("outcome").and_then(|o| o.as_str().map(str::to_owned)))
            .unwrap_or_default(),
        r.elapsed_us
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let rt: Arc<Runtime> = Arc::new(runtime());
    let b = backends(&[("API_TOKEN", "demo-token")]);
    let text = load(&rt, "text").await;
    let tickets = load(&rt, "tickets").await;
    let files = load(&rt, "files").await;
    let hostile = load(&rt, "fixture_hostile").await;
    let work = tempfile::tempdir()?;
    std::fs::write(work.path().join("hello.txt"), "hello from the host")?;

    println!("Warden demo: each line is one sandboxed call (fresh instance, grant-scoped).\n");
    let none = grant("");
    show(
        "text.word_count, no capabilities",
        &invoke(
            &rt,
            &text,
            &none,
            &b,
            "word_count",
            json!({"text": "agents call tools"}),
        )
        .await,
    );
    show(
        "text.word_count with a bad field",
        &invoke(&rt, &text, &none, &b, "word_count", json!({"txt": 1})).await,
    );

    let support = grant(
        "actions = [\"open_ticket\", \"read_ticket\", \"draft_reply\"]\n[kv]\nnamespace = \"desk\"\n[log]\n",
    );
    show(
        "tickets.open_ticket (support grant)",
        &invoke(
            &rt,
            &tickets,
            &support,
            &b,
            "open_ticket",
            json!({"subject": "VPN down", "body": "since 9"}),
        )
        .await,
    );
    show(
        "tickets.delete_record (not in the support grant)",
        &invoke(
            &rt,
            &tickets,
            &support,
            &b,
            "delete_record",
            json!({"id": 1}),
        )
        .await,
    );
    show(
        "tickets.read_ticket without a kv grant",
        &invoke(&rt, &tickets, &none, &b, "read_ticket", json!({"id": 1})).await,
    );

    let fs = grant(&format!(
        "[fs]\ndirs = [{{ host = \"{}\", guest = \"/workspace\", mode = \"read-only\" }}]\n",
        work.path().display()
    ));
    show(
        "files.read inside the granted directory",
        &invoke(&rt, &files, &fs, &b, "read", json!({"path": "hello.txt"})).await,
    );
    show(
        "files.write under a read-only grant",
        &invoke(
            &rt,
            &files,
            &fs,
            &b,
            "write",
            json!({"path": "x.txt", "content": "x"}),
        )
        .await,
    );
    show(
        "files.read ../ escape",
        &invoke(
            &rt,
            &files,
            &fs,
            &b,
            "read",
            json!({"path": "../etc/passwd"}),
        )
        .await,
    );

    show(
        "hostile.spin, 50M fuel",
        &invoke(
            &rt,
            &hostile,
            &grant("[limits]\nfuel = 50000000\n"),
            &b,
            "spin",
            json!({}),
        )
        .await,
    );
    show(
        "hostile.spin, 200 ms deadline",
        &invoke(
            &rt,
            &hostile,
            &grant("[limits]\nfuel = 100000000000\ndeadline_ms = 200\n"),
            &b,
            "spin",
            json!({}),
        )
        .await,
    );
    show(
        "hostile.memory_bomb, 16 MiB",
        &invoke(
            &rt,
            &hostile,
            &grant("[limits]\nmemory_bytes = 16777216\n"),
            &b,
            "memory_bomb",
            json!({}),
        )
        .await,
    );
    show(
        "hostile.deep_recursion",
        &invoke(&rt, &hostile, &none, &b, "deep_recursion", json!({})).await,
    );
    show(
        "hostile.panic",
        &invoke(&rt, &hostile, &none, &b, "panic", json!({})).await,
    );
    show(
        "text.word_count after all that",
        &invoke(
            &rt,
            &text,
            &none,
            &b,
            "word_count",
            json!({"text": "still healthy"}),
        )
        .await,
    );
    println!(
        "\nNext: `cargo run -p warden -- run <component.wasm> --action … --input … --grant grant.toml --json` (see README)."
    );
    Ok(())
}
