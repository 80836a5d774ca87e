//! Approvals at scale:
//!
//! - 1,000 pending holds: time to create them (each a real held call: the
//!   pipeline, the durable row, two audit entries), process memory and
//!   database bytes they hold, and the time for an approver to list them
//!   (each checked against the approver's policy authority);
//! - the time from the final approval to the result being available to the
//!   agent (the vote, the re-checked payload, the run, the stored report).
//!
//! `cargo bench -p warden-benches --bench approvals`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use warden_policy::{Grant, Limits};
use warden_service::approvals::Vote;
use warden_service::{Caller, Config, Warden};
use warden_tests::{guest, root};

const HOLDS: usize = 1_000;

const POLICY: &str = r#"
@id("baseline") permit(principal, action in [Warden::Action::"invoke", Warden::Action::"invoke_unattended"], resource);
@id("held") forbid(principal, action == Warden::Action::"invoke_unattended", resource in Warden::Tool::"text")
  when { context.args.hasTag("text") && context.args.getTag("text") like "*hold*" };
@id("ann") permit(principal == Warden::Approver::"ann", action == Warden::Action::"approve", resource);
"#;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn db_bytes(dir: &std::path::Path) -> u64 {
    ["acme.db", "acme.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join("tenants").join(f)).ok())
        .map(|m| m.len())
        .sum()
}

struct Setup {
    _dir: tempfile::TempDir,
    w: Arc<Warden>,
    ann: Caller,
    bot: warden_service::AgentSession,
}

async fn setup() -> Setup {
    let dir = tempfile::Builder::new()
        .prefix("approvals-bench-")
        .tempdir()
        .expect("dir");
    let mut config = Config::new(dir.path().to_owned());
    config.cache_dir = Some(root().join("target/warden-test-cache"));
    let opened = Warden::open(config).await.expect("open");
    let w = Arc::new(opened.warden);
    let admin = w
        .authenticate(&opened.bootstrap_key.expect("key"))
        .await
        .expect("admin");
    w.create_tenant(&admin, "acme").await.expect("tenant");
    let key = |r: (warden_service::PrincipalRecord, String)| r.1;
    let d = w
        .authenticate(&key(w
            .add_principal(&admin, "acme", "dee", &["deployer".into()])
            .await
            .expect("deployer")))
        .await
        .expect("key");
    let b = w
        .authenticate(&key(w
            .add_principal(&d, "acme", "bo", &["builder".into()])
            .await
            .expect("builder")))
        .await
        .expect("key");
    let ann = w
        .authenticate(&key(w
            .add_principal(&d, "acme", "ann", &["approver".into()])
            .await
            .expect("approver")))
        .await
        .expect("key");
    let bytes = std::fs::read(guest("text")).expect("component");
    let manifest = std::fs::read_to_string(root().join("tools/text/tool.toml")).expect("manifest");
    w.publish_tool(&b, &bytes, &manifest)
        .await
        .expect("publish");
    w.deploy_tool(&d, "text", "0.1.0").await.expect("deploy");
    w.create_agent(&b, "bot", "bench", None, None)
        .await
        .expect("agent");
    w.activate_agent(&d, "bot").await.expect("activate");
    w.add_grant(&d, "bot", "text", &Grant::empty(Limits::STANDARD), None)
        .await
        .expect("grant");
    w.set_policy(&d, POLICY).await.expect("policy");
    let cred = w.issue_credential(&d, "bot").await.expect("credential");
    let token = w
        .exchange_credential(&cred, None, None)
        .await
        .expect("token")
        .token;
    let bot = w.authenticate_agent(&token).await.expect("session");
    Setup {
        _dir: dir,
        w,
        ann,
        bot,
    }
}

async fn hold(s: &Setup, i: usize) -> String {
    let input = format!(r#"{{"text":"please hold number {i}"}}"#);
    let r =
        s.w.invoke(&s.bot, "text", "word_count", &input)
            .await
            .expect("answered");
    assert_eq!(r.outcome.kind(), "held");
    r.approval_id
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn approvals(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    let s = rt.block_on(setup());
    // Warm: one hold and its approval (compiles, caches).
    rt.block_on(async {
        let id = hold(&s, 0).await;
        s.w.decide_approval(&s.ann, &id, Vote::Approve, "")
            .await
            .expect("approve");
    });
    let dir = s.w.data_dir().to_owned();
    let (rss0, db0) = (rss_bytes(), db_bytes(&dir));
    let started = Instant::now();
    rt.block_on(async {
        for i in 0..HOLDS {
            hold(&s, i).await;
        }
    });
    let took = started.elapsed();
    let (rss1, db1) = (rss_bytes(), db_bytes(&dir));
    let listed = rt
        .block_on(s.w.pending_approvals(&s.ann, false))
        .expect("list");
    assert_eq!(listed.len(), HOLDS);
    let mut list_times: Vec<Duration> = (0..20)
        .map(|_| {
            let t = Instant::now();
            let l = rt
                .block_on(s.w.pending_approvals(&s.ann, false))
                .expect("list");
            assert_eq!(l.len(), HOLDS);
            t.elapsed()
        })
        .collect();
    list_times.sort();
    println!(
        "{HOLDS} pending holds: created in {took:?} ({:.0} holds/s, each a held call with its row and two audit entries); process RSS +{} KiB, database +{} KiB; listing all {HOLDS} with authority checks: median {:?}, p99 {:?}",
        HOLDS as f64 / took.as_secs_f64(),
        rss1.saturating_sub(rss0) / 1024,
        db1.saturating_sub(db0) / 1024,
        pct(&list_times, 0.5),
        pct(&list_times, 0.99)
    );
    // Final approval to result available: the vote, the run, the stored
    // report, then the agent's read of it.
    let ids: Vec<String> = listed
        .iter()
        .take(200)
        .map(|v| v.approval.id.clone())
        .collect();
    let mut to_result: Vec<Duration> = rt.block_on(async {
        let mut out = Vec::new();
        for id in &ids {
            let t = Instant::now();
            s.w.decide_approval(&s.ann, id, Vote::Approve, "")
                .await
                .expect("approve");
            let v =
                s.w.agent_approval(&s.bot, id, Duration::ZERO)
                    .await
                    .expect("read");
            assert!(v.approval.result.is_some());
            out.push(t.elapsed());
        }
        out
    });
    to_result.sort();
    println!(
        "final approval to result available ({} approvals with 800+ still pending): median {:?}, p99 {:?}",
        to_result.len(),
        pct(&to_result, 0.5),
        pct(&to_result, 0.99)
    );
    let mut g = c.benchmark_group("approvals");
    g.sample_size(10);
    g.bench_function("list_800_pending", |b| {
        b.iter(|| {
            rt.block_on(s.w.pending_approvals(&s.ann, false))
                .expect("list")
        });
    });
    g.finish();
}

criterion_group!(benches, approvals);
criterion_main!(benches);
