//! The audit trail over real calls: export and offline verification, a tamper
//! campaign located at the right entry, key rotation continuity, independent
//! verifiers (`tlog_tiles`, `signed_note`), append-only tables, and failing
//! closed when the trail cannot be written.

use std::collections::HashMap;
use std::sync::Arc;

use warden_audit::{Bundle, KeyFile, Record, verify};
use warden_policy::{Grant, Limits};
use warden_service::{Caller, Config, Warden};
use warden_tests::{guest, root};

struct Env {
    dir: tempfile::TempDir,
    w: Arc<Warden>,
    deployer: Caller,
    token: String,
}

async fn open(dir: &std::path::Path) -> (Warden, Option<String>) {
    let mut config = Config::new(dir.to_owned());
    config.cache_dir = Some(root().join("target/warden-test-cache"));
    let o = Warden::open(config).await.expect("open");
    (o.warden, o.bootstrap_key)
}

/// A tenant with the `text` and `kv` tools granted to one agent.
async fn env() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let (w, admin) = open(dir.path()).await;
    let admin = w.authenticate(&admin.expect("admin")).await.expect("admin");
    w.create_tenant(&admin, "acme").await.expect("tenant");
    let roles = |r: &[&str]| r.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let (_, dk) = w
        .add_principal(&admin, "acme", "alice", &roles(&["deployer", "viewer"]))
        .await
        .expect("alice");
    let deployer = w.authenticate(&dk).await.expect("alice");
    let (_, bk) = w
        .add_principal(&deployer, "acme", "bob", &roles(&["builder"]))
        .await
        .expect("bob");
    let builder = w.authenticate(&bk).await.expect("bob");
    for tool in ["text", "kv"] {
        let bytes = std::fs::read(guest(tool)).expect("component");
        let manifest = std::fs::read_to_string(root().join(format!("tools/{tool}/tool.toml")))
            .expect("manifest");
        w.publish_tool(&builder, &bytes, &manifest)
            .await
            .expect("publish");
        w.deploy_tool(&deployer, tool, "0.1.0")
            .await
            .expect("deploy");
    }
    w.create_agent(&builder, "bot", "audit test", None, None)
        .await
        .expect("agent");
    w.activate_agent(&deployer, "bot").await.expect("activate");
    let mut text = Grant::empty(Limits::STANDARD);
    text.actions = Some(["word_count".to_owned()].into_iter().collect());
    w.add_grant(&deployer, "bot", "text", &text, None)
        .await
        .expect("grant text");
    let kv = Grant::from_toml("[kv]\nnamespace = \"bot\"\nwrite = true\n").expect("kv grant");
    w.add_grant(&deployer, "bot", "kv", &kv, None)
        .await
        .expect("grant kv");
    let cred = w.issue_credential(&deployer, "bot").await.expect("cred");
    let token = w
        .exchange_credential(&cred, None, None)
        .await
        .expect("token")
        .token;
    Env {
        dir,
        w: Arc::new(w),
        deployer,
        token,
    }
}

/// `n` real calls, 16 at a time: word counts, kv puts and a denied action.
async fn calls(e: &Env, n: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..16 {
        let w = e.w.clone();
        let token = e.token.clone();
        tasks.spawn(async move {
            let s = w.authenticate_agent(&token).await.expect("token");
            for i in (worker..n).step_by(16) {
                let (tool, action, input) = match i % 3 {
                    0 => ("text", "word_count", format!(r#"{{"text":"call {i}"}}"#)),
                    1 => ("kv", "put", format!(r#"{{"key":"k{i}","value":"v"}}"#)),
                    _ => ("text", "regex_extract", "{}".to_owned()),
                };
                w.invoke(&s, tool, action, &input)
                    .await
                    .expect("call answered");
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("worker");
    }
}

fn hmac_keys(e: &Env) -> HashMap<String, Vec<u8>> {
    let text = std::fs::read(e.w.audit_key_file("acme")).expect("key file");
    let keys: KeyFile = serde_json::from_slice(&text).expect("key file parses");
    keys.hmac_keys()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_calls_export_and_verify_offline() {
    let e = env().await;
    calls(&e, 60).await;
    let bundle = e.w.audit_export(&e.deployer).await.expect("export");
    let v = verify(&bundle, &hmac_keys(&e), None);
    assert!(v.ok(), "{:?}", v.failure);
    assert_eq!(v.entries, bundle.records.len() as u64);
    assert_eq!(v.hmac_checked, v.entries);
    assert_eq!(v.checkpointed, v.entries, "the export ends at a checkpoint");
    // Without the HMAC keys the chain, the roots and the signatures still verify.
    let v = verify(&bundle, &HashMap::new(), Some(&bundle.signers[0]));
    assert!(v.ok(), "{:?}", v.failure);
    assert_eq!(v.hmac_checked, 0);

    // What is recorded: governance changes, and for every call a decision and
    // (when it ran) a completion with digests, fuel and imports.
    let entries: Vec<warden_audit::Entry> = bundle
        .records
        .iter()
        .map(|r| warden_audit::Entry::decode(r.body.as_bytes()).expect("entry"))
        .collect();
    let kinds = |k: &str| entries.iter().filter(|e| e.kind == k).count();
    assert_eq!(kinds("invocation.decided"), 60);
    assert_eq!(
        kinds("invocation.finished"),
        40,
        "the 20 denied calls never ran"
    );
    assert!(
        kinds("governance") >= 10,
        "tenant, principals, tools, agent, grants"
    );
    // Write-ahead: each kv write has its own decision entry, after the call's
    // decision and before its completion.
    assert_eq!(kinds("import.decided"), 20, "one per kv put");
    for (i, wa) in entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.kind == "import.decided")
    {
        assert_eq!(wa.detail["operation"], "set");
        let pos = |kind: &str| {
            entries
                .iter()
                .position(|e| e.kind == kind && e.invocation == wa.invocation)
                .expect("entry of the same invocation")
        };
        assert!(pos("invocation.decided") < i && i < pos("invocation.finished"));
    }
    let denied = entries
        .iter()
        .find(|e| e.decision.as_deref() == Some("deny"))
        .expect("a denial");
    assert_eq!(denied.action.as_deref(), Some("regex_extract"));
    assert!(
        denied.detail["reason"]
            .as_str()
            .expect("reason")
            .contains("not in the grant")
    );
    let put = entries
        .iter()
        .find(|e| e.kind == "invocation.finished" && e.tool.as_deref() == Some("kv"))
        .expect("a kv call");
    assert_eq!(put.decision.as_deref(), Some("ok"));
    assert!(put.fuel.expect("fuel") > 0);
    assert!(put.correlation.as_deref().is_some_and(|c| !c.is_empty()));
    assert_eq!(put.detail["imports"][0]["capability"], "kv");
    // Payloads are stored beside the entries, matching their digests.
    let input =
        e.w.audit_payload(&e.deployer, put.detail["decided"].as_u64().expect("seq"))
            .await
            .expect("payload")
            .input;
    let decided = &entries[put.detail["decided"].as_u64().expect("seq") as usize];
    assert_eq!(
        Some(warden_audit::sha256_hex(input.expect("input").as_bytes())),
        decided.args_sha256
    );
    // So is the import journal, matching the digest in the signed entry.
    let journal =
        e.w.audit_payload(&e.deployer, put.seq)
            .await
            .expect("payload")
            .journal
            .expect("journal");
    assert_eq!(
        put.detail["journal_sha256"],
        warden_audit::sha256_hex(journal.as_bytes())
    );
    let journal = warden_runtime::Journal::parse(&journal).expect("journal parses");
    assert_eq!(journal.imports.len(), 1);
    assert_eq!(journal.imports[0].operation, "set");
}

/// Applies one random change and says where it must be found.
#[derive(Debug, Clone, Copy)]
enum Tamper {
    Byte,
    Mac,
    Delete,
    Insert,
    Swap,
    Truncate,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn tamper(b: &Bundle, t: Tamper, rng: &mut Rng) -> (Bundle, u64) {
    let mut b = b.clone();
    let n = b.records.len();
    match t {
        Tamper::Byte => {
            let k = rng.below(n);
            let mut body = b.records[k].body.clone().into_bytes();
            let i = rng.below(body.len());
            let old = body[i];
            let mut new = b' ' + (rng.next() % 94) as u8;
            if new == old {
                new = if old == b'a' { b'b' } else { b'a' };
            }
            body[i] = new;
            b.records[k].body = String::from_utf8(body).expect("ascii");
            (b, k as u64)
        }
        Tamper::Mac => {
            let k = rng.below(n);
            let mut mac = b.records[k].mac.clone().into_bytes();
            let i = rng.below(mac.len());
            mac[i] = if mac[i] == b'0' { b'1' } else { b'0' };
            b.records[k].mac = String::from_utf8(mac).expect("ascii");
            (b, k as u64)
        }
        Tamper::Delete => {
            let k = rng.below(n);
            b.records.remove(k);
            (b, k as u64)
        }
        Tamper::Insert => {
            let k = rng.below(n);
            let mut j = rng.below(n);
            if j == k {
                j = (k + 1) % n;
            }
            let copy: Record = b.records[j].clone();
            b.records.insert(k, copy);
            (b, k as u64)
        }
        Tamper::Swap => {
            let k = rng.below(n - 1);
            b.records.swap(k, k + 1);
            (b, k as u64)
        }
        Tamper::Truncate => {
            let k = rng.below(n);
            b.records.truncate(k);
            (b, k as u64)
        }
    }
}

/// Hundreds of random single changes to a log of a few thousand real
/// entries: each is detected and located at the entry it touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tamper_campaign_is_detected_and_located() {
    let e = env().await;
    calls(&e, 1500).await;
    let bundle = e.w.audit_export(&e.deployer).await.expect("export");
    assert!(
        bundle.records.len() >= 2500,
        "{} entries",
        bundle.records.len()
    );
    let keys = hmac_keys(&e);
    assert!(verify(&bundle, &keys, None).ok());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let kinds = [
        Tamper::Byte,
        Tamper::Mac,
        Tamper::Delete,
        Tamper::Insert,
        Tamper::Swap,
        Tamper::Truncate,
    ];
    let mut tried = HashMap::new();
    for round in 0..360 {
        let t = kinds[round % kinds.len()];
        let (bad, at) = tamper(&bundle, t, &mut rng);
        let v = verify(&bad, &keys, None);
        let f = v
            .failure
            .unwrap_or_else(|| panic!("round {round}: {t:?} at {at} went undetected"));
        assert_eq!(
            f.position, at,
            "round {round}: {t:?} at {at}, reported {f:?}"
        );
        *tried.entry(format!("{t:?}")).or_insert(0) += 1;
    }
    assert_eq!(tried.len(), 6);

    // Without the HMAC keys, every change is still detected.
    for round in 0..60 {
        let t = kinds[round % kinds.len()];
        if matches!(t, Tamper::Mac) {
            continue; // an HMAC can only be checked with its key
        }
        let (bad, at) = tamper(&bundle, t, &mut rng);
        let v = verify(&bad, &HashMap::new(), None);
        assert!(v.failure.is_some(), "{t:?} at {at} undetected without keys");
    }

    // An attacker without the keys who rewrites an entry and re-links every
    // later one is caught by the signed checkpoint.
    let mut forged = bundle.clone();
    let k = 1000;
    let mut entry = warden_audit::Entry::decode(forged.records[k].body.as_bytes()).expect("entry");
    entry.actor = "someone-else".into();
    forged.records[k].body = String::from_utf8(entry.encode()).expect("utf-8");
    for i in k + 1..forged.records.len() {
        let prev = warden_audit::sha256_hex(forged.records[i - 1].body.as_bytes());
        let mut e = warden_audit::Entry::decode(forged.records[i].body.as_bytes()).expect("entry");
        e.prev = prev;
        forged.records[i].body = String::from_utf8(e.encode()).expect("utf-8");
    }
    let v = verify(&forged, &HashMap::new(), None);
    let f = v.failure.expect("a relinked rewrite is detected");
    assert!(f.problem.contains("checkpoint"), "{f:?}");
    assert!(f.position <= k as u64, "{f:?}");
    // With the keys, it is located exactly.
    assert_eq!(
        verify(&forged, &keys, None)
            .failure
            .expect("detected")
            .position,
        k as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_verifies_and_a_forged_rotation_does_not() {
    let e = env().await;
    calls(&e, 20).await;
    let seq =
        e.w.audit_rotate(&e.deployer, "quarterly")
            .await
            .expect("rotate");
    calls(&e, 20).await;
    let bundle = e.w.audit_export(&e.deployer).await.expect("export");
    let keys = hmac_keys(&e);
    assert_eq!(keys.len(), 2);
    let v = verify(&bundle, &keys, None);
    assert!(v.ok(), "{:?}", v.failure);
    assert_eq!(v.rotations, 1);
    assert_eq!(bundle.signers.len(), 2);
    // Entries after the rotation use the new HMAC key.
    let last = warden_audit::Entry::decode(bundle.records.last().expect("entries").body.as_bytes())
        .expect("entry");
    let rot =
        warden_audit::Entry::decode(bundle.records[seq as usize].body.as_bytes()).expect("entry");
    assert_eq!(rot.kind, "key.rotate");
    assert_eq!(last.key, rot.detail["new_key"].as_str().expect("new key"));

    // A rotation not signed by the old key is rejected.
    let mut forged = bundle.clone();
    let intruder = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    use base64::Engine as _;
    use ed25519_dalek::Signer as _;
    let body = forged.records[seq as usize].body.clone();
    forged.records[seq as usize]
        .cosign
        .as_mut()
        .expect("cosign")
        .sig_old =
        base64::engine::general_purpose::STANDARD.encode(intruder.sign(body.as_bytes()).to_bytes());
    let f = verify(&forged, &HashMap::new(), None)
        .failure
        .expect("rejected");
    assert_eq!(f.position, seq);
    assert!(f.problem.contains("not signed by the old key"), "{f:?}");
    // Nor one without its co-signatures.
    let mut bare = bundle.clone();
    bare.records[seq as usize].cosign = None;
    assert!(
        verify(&bare, &HashMap::new(), None)
            .failure
            .expect("rejected")
            .problem
            .contains("co-signatures")
    );
    // A checkpoint signed by the retired key after the rotation is refused:
    // pinning a different first key fails at once.
    let other = warden_audit::note::verifier_key("warden/acme", &intruder.verifying_key());
    assert!(
        verify(&bundle, &HashMap::new(), Some(&other))
            .failure
            .is_some()
    );
}

/// `tlog_tiles` and `signed_note` (independent implementations) accept our
/// checkpoints and proofs, and reject forged ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_verifiers_accept_our_checkpoints_and_proofs() {
    use signed_note::{Note, StandardVerifier, VerifierList};
    use tlog_tiles::{Checkpoint, Hash, check_record, check_tree};

    let e = env().await;
    calls(&e, 30).await;
    let old = e.w.audit_sync(&e.deployer).await.expect("sync");
    calls(&e, 30).await;
    let new = e.w.audit_sync(&e.deployer).await.expect("sync");
    assert!(new > old);
    let bundle = e.w.audit_export(&e.deployer).await.expect("export");
    let verifiers = || {
        VerifierList::new(
            bundle
                .signers
                .iter()
                .map(|k| {
                    Box::new(StandardVerifier::new(k).expect("verifier key"))
                        as Box<dyn signed_note::Verifier>
                })
                .collect(),
        )
    };
    let hash = |h: &str| Hash(hex::decode(h).expect("hex").try_into().expect("32 bytes"));

    let incl =
        e.w.audit_inclusion(&e.deployer, old / 2, Some(new))
            .await
            .expect("inclusion");
    let note = Note::from_bytes(incl.checkpoint.as_bytes()).expect("note parses");
    note.verify(&verifiers())
        .expect("signed_note accepts our checkpoint");
    let cp = Checkpoint::from_bytes(note.text()).expect("tlog checkpoint parses");
    assert_eq!((cp.origin(), cp.size()), ("warden/acme", new));
    assert_eq!(cp.hash(), &hash(&incl.root));
    let proof: Vec<Hash> = incl.proof.iter().map(|h| hash(h)).collect();
    let leaf = tlog_tiles::record_hash(incl.record.body.as_bytes());
    assert_eq!(leaf, hash(&incl.leaf_hash));
    check_record(&proof, new, *cp.hash(), old / 2, leaf)
        .expect("tlog_tiles accepts the inclusion proof");
    let mut bad = proof.clone();
    bad[0].0[0] ^= 1;
    assert!(check_record(&bad, new, *cp.hash(), old / 2, leaf).is_err());

    let cons =
        e.w.audit_consistency(&e.deployer, old, Some(new))
            .await
            .expect("consistency");
    let old_note = Note::from_bytes(cons.old_checkpoint.as_bytes()).expect("note");
    old_note
        .verify(&verifiers())
        .expect("old checkpoint verifies");
    let old_cp = Checkpoint::from_bytes(old_note.text()).expect("checkpoint");
    let proof: Vec<Hash> = cons.proof.iter().map(|h| hash(h)).collect();
    check_tree(&proof, new, *cp.hash(), old, *old_cp.hash())
        .expect("tlog_tiles accepts the consistency proof");
    let mut bad = proof.clone();
    bad[0].0[5] ^= 1;
    assert!(check_tree(&bad, new, *cp.hash(), old, *old_cp.hash()).is_err());

    // A forged checkpoint (another size, same signature) is rejected.
    let forged = incl
        .checkpoint
        .replacen(&format!("\n{new}\n"), &format!("\n{}\n", new + 1), 1);
    let forged = Note::from_bytes(forged.as_bytes()).expect("still a note");
    assert!(forged.verify(&verifiers()).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_tables_refuse_update_and_delete() {
    let e = env().await;
    calls(&e, 3).await;
    e.w.audit_sync(&e.deployer).await.expect("sync");
    let path = e.dir.path().join("tenants/acme.db");
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("db");
    for sql in [
        "UPDATE audit_entries SET mac = 'x' WHERE seq = 0",
        "DELETE FROM audit_entries WHERE seq = 0",
        "UPDATE audit_checkpoints SET note = 'x'",
        "DELETE FROM audit_checkpoints",
        "UPDATE audit_payloads SET input = 'x'",
        "DELETE FROM audit_payloads",
        "UPDATE events SET actor = 'x'",
        "DELETE FROM events",
    ] {
        let err = sqlx::query(sql).execute(&db).await.expect_err(sql);
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    db.close().await;
}

/// Without its keys the trail cannot be written, and then nothing runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_fails_closed_when_the_trail_cannot_be_written() {
    let e = env().await;
    calls(&e, 3).await;
    e.w.close().await;
    std::fs::remove_file(e.w.audit_key_file("acme")).expect("remove key file");
    let (w, _) = open(e.dir.path()).await;
    let s = w.authenticate_agent(&e.token).await.expect("token");
    let err = w
        .invoke(&s, "kv", "put", r#"{"key":"after","value":"v"}"#)
        .await
        .expect_err("the call must fail closed");
    assert!(err.to_string().contains("audit"), "{err}");
    // The kv write never happened: the kv tool reads nothing back.
    let err = w.invoke(&s, "kv", "get", r#"{"key":"after"}"#).await;
    assert!(err.is_err());
    w.close().await;
}

/// A one-shot HTTP server on loopback: answers one request with `body`, then
/// closes its listener, so a later connection to the port is refused.
fn one_shot_server(body: &'static str) -> std::net::SocketAddr {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            let mut reader = BufReader::new(&stream);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                line.clear();
            }
            let mut s = &stream;
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-served-by: one-shot\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
        drop(listener);
    });
    addr
}

/// Trace replay over real runs: a pure tool, kv imports and HTTP imports each
/// replay to the same import sequence and output digest, with nothing reaching
/// the backends (the kv key is gone and the HTTP server is closed by then).
/// Replaying on a different component is reported as a divergence, and
/// invocations that did not run, or do not exist, are refused clearly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_matches_real_runs_and_reports_divergence() {
    use sha2::Digest as _;
    let e = env().await;
    let w = &e.w;
    let (_, bk) = w
        .add_principal(&e.deployer, "acme", "carol", &["builder".to_owned()])
        .await
        .expect("carol");
    let builder = w.authenticate(&bk).await.expect("carol");
    let publish = |crate_name: &'static str, manifest: &'static str| {
        let w = w.clone();
        let builder = builder.clone();
        async move {
            let bytes = std::fs::read(guest(crate_name)).expect("component");
            let manifest = std::fs::read_to_string(root().join(manifest)).expect("manifest");
            w.publish_tool(&builder, &bytes, &manifest)
                .await
                .expect("publish");
            hex::encode(sha2::Sha256::digest(&bytes))
        }
    };
    publish("http-fetch", "tools/http-fetch/tool.toml").await;
    publish("fixture-greeter-v1", "tools/fixtures/greeter-v1/tool.toml").await;
    let v2 = publish("fixture-greeter-v2", "tools/fixtures/greeter-v2/tool.toml").await;
    w.deploy_tool(&e.deployer, "http-fetch", "0.1.0")
        .await
        .expect("deploy");
    w.deploy_tool(&e.deployer, "greeter", "1.0.0")
        .await
        .expect("deploy");
    let addr = one_shot_server("recorded once");
    let http = Grant::from_toml(&format!(
        "[http]\nallow = [{{ host = \"127.0.0.1\", port = {}, schemes = [\"http\"], methods = [\"GET\"] }}]\n",
        addr.port()
    ))
    .expect("http grant");
    w.add_grant(&e.deployer, "bot", "http-fetch", &http, None)
        .await
        .expect("grant http");
    w.add_grant(
        &e.deployer,
        "bot",
        "greeter",
        &Grant::empty(Limits::STANDARD),
        None,
    )
    .await
    .expect("grant greeter");
    let s = w.authenticate_agent(&e.token).await.expect("session");
    let call = |tool: &'static str, action: &'static str, input: String| {
        let w = w.clone();
        let s = s.clone();
        async move {
            let r = w.invoke(&s, tool, action, &input).await.expect("answered");
            assert!(r.outcome.is_ok(), "{tool} {action}: {:?}", r.outcome);
            assert!(r.invocation_id.starts_with("inv_"), "{}", r.invocation_id);
            r
        }
    };
    let pure = call("text", "word_count", r#"{"text":"one two three"}"#.into()).await;
    let put = call("kv", "put", r#"{"key":"k","value":"v1"}"#.into()).await;
    let get = call("kv", "get", r#"{"key":"k"}"#.into()).await;
    let fetched = call(
        "http-fetch",
        "get",
        format!(r#"{{"url":"http://127.0.0.1:{}/x"}}"#, addr.port()),
    )
    .await;
    assert_eq!(
        fetched.output.as_ref().expect("output")["body"],
        "recorded once"
    );
    let greeted = call("greeter", "greet", r#"{"name":"Ada"}"#.into()).await;
    // The world moves on: the key is deleted, the HTTP server is gone.
    call("kv", "delete", r#"{"key":"k"}"#.into()).await;
    let gone = call("kv", "get", r#"{"key":"k"}"#.into()).await;
    assert_ne!(gone.output, get.output);

    for (r, imports) in [
        (&pure, 0),
        (&put, 1),
        (&get, 1),
        (&fetched, 1),
        (&greeted, 0),
    ] {
        let replay = w
            .audit_replay(&e.deployer, &r.invocation_id, None)
            .await
            .expect("replay");
        assert!(
            replay.matched,
            "{} {}: {:?}",
            r.tool, r.action, replay.divergence
        );
        assert_eq!(replay.imports, imports, "{} {}", r.tool, r.action);
        assert_eq!(replay.component, r.component_sha256);
        assert_eq!(replay.outcome, "ok");
        assert_eq!(
            replay.output_sha256.as_deref(),
            Some(warden_audit::sha256_hex(
                r.output.as_ref().expect("output").to_string().as_bytes()
            ))
            .as_deref()
        );
    }

    // The same invocation on another component: reported, with both digests.
    let other = w
        .audit_replay(&e.deployer, &greeted.invocation_id, Some(&v2))
        .await
        .expect("replay on v2");
    assert!(!other.matched);
    let d = other.divergence.expect("divergence");
    assert_eq!(d.at, "output", "{d:?}");
    assert_eq!(
        d.expected,
        format!("sha256 {}", other.recorded_output_sha256.expect("digest"))
    );
    assert_ne!(d.expected, d.got);
    // A component that makes other import calls diverges at the first one.
    let kv_hash = put.component_sha256.clone();
    let text_on_kv = w
        .audit_replay(
            &e.deployer,
            &put.invocation_id,
            Some(&pure.component_sha256),
        )
        .await;
    assert!(
        matches!(&text_on_kv, Err(warden_service::Error::Invalid(m)) if m.contains("no action `put`")),
        "{text_on_kv:?}"
    );
    let _ = kv_hash;

    // Refusals: a call that never ran, an unknown invocation, a non-viewer.
    let s2 = w.authenticate_agent(&e.token).await.expect("session");
    let denied = w
        .invoke(&s2, "text", "regex_extract", "{}")
        .await
        .expect("answered");
    assert!(!denied.outcome.is_ok());
    let bundle = w.audit_export(&e.deployer).await.expect("export");
    let denied_inv = bundle
        .records
        .iter()
        .rev()
        .map(|r| warden_audit::Entry::decode(r.body.as_bytes()).expect("entry"))
        .find(|en| en.kind == "invocation.decided" && en.decision.as_deref() == Some("deny"))
        .and_then(|en| en.invocation)
        .expect("denied invocation");
    let r = w.audit_replay(&e.deployer, &denied_inv, None).await;
    assert!(
        matches!(&r, Err(warden_service::Error::Invalid(m)) if m.contains("did not run")),
        "{r:?}"
    );
    let r = w.audit_replay(&e.deployer, "inv_nope", None).await;
    assert!(
        matches!(r, Err(warden_service::Error::NotFound(_))),
        "{r:?}"
    );
    let r = w.audit_replay(&builder, &pure.invocation_id, None).await;
    assert!(
        matches!(r, Err(warden_service::Error::Forbidden(_))),
        "{r:?}"
    );
}

/// A replay compares each import call with the journal: another resource, a
/// different request or a missing call is reported at its position, with what
/// was expected and what came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_names_the_first_import_that_differs() {
    use serde_json::json;
    use warden_runtime::{Call, StaticSecrets};
    use warden_tests::{backends, grant, invoke, load, runtime};
    let rt = runtime();
    let kv = load(&rt, "kv").await;
    let g = grant("[kv]\nnamespace = \"n\"\nwrite = true\n");
    let b = backends(&[]);
    let put = invoke(&rt, &kv, &g, &b, "put", json!({"key": "a", "value": "1"})).await;
    assert!(put.outcome.is_ok(), "{:?}", put.outcome);
    let journal = put.journal.clone().expect("journal");
    assert_eq!(journal.imports.len(), 1);
    assert_eq!(journal.imports[0].resource, "a");
    let secrets = Arc::new(StaticSecrets::default());
    let replay = |input: serde_json::Value| {
        let rt = &rt;
        let kv = kv.clone();
        let journal = journal.clone();
        let secrets = secrets.clone();
        async move {
            let input = input.to_string();
            rt.replay(
                &kv,
                journal,
                secrets,
                Call {
                    action: "put",
                    input: &input,
                },
            )
            .await
            .expect("replayable")
        }
    };
    // The same input: no divergence, same output, nothing written anywhere.
    let same = replay(json!({"key": "a", "value": "1"})).await;
    assert_eq!(same.divergence, None);
    assert_eq!(same.report.output, put.output);
    // Another key: import #0 differs by resource.
    let d = replay(json!({"key": "b", "value": "1"}))
        .await
        .divergence
        .expect("diverged");
    assert_eq!(d.import, Some(0));
    assert_eq!(d.expected, "kv set `a`");
    assert_eq!(d.got, "kv set `b`");
    // Same key, another value: import #0 differs by request.
    let d = replay(json!({"key": "a", "value": "2"}))
        .await
        .divergence
        .expect("diverged");
    assert_eq!(d.import, Some(0));
    assert!(d.expected.starts_with("request"), "{d:?}");
    // A journal with a call the component no longer makes.
    let mut longer = journal.clone();
    longer.imports.push(longer.imports[0].clone());
    let input = json!({"key": "a", "value": "1"}).to_string();
    let r = rt
        .replay(
            &kv,
            longer,
            secrets.clone(),
            Call {
                action: "put",
                input: &input,
            },
        )
        .await
        .expect("replayable");
    let d = r.divergence.expect("diverged");
    assert_eq!(d.import, Some(1));
    assert_eq!(d.got, "no further import call");
    // A journal marked not replayable is refused with the reason.
    let mut fs = journal.clone();
    fs.not_replayable = Some("the call used the filesystem".into());
    let r = rt
        .replay(
            &kv,
            fs,
            secrets,
            Call {
                action: "put",
                input: &input,
            },
        )
        .await;
    assert!(matches!(&r, Err(m) if m.contains("filesystem")), "{r:?}");
}

/// A write-ahead hook that records what the backend held when it was asked,
/// and fails when told to.
#[derive(Debug)]
struct Hook {
    kv: Arc<warden_runtime::MemoryKv>,
    fail: bool,
    seen: std::sync::Mutex<Vec<(String, bool)>>,
}

impl warden_runtime::WriteAhead for Hook {
    fn before_effect(
        &self,
        event: warden_runtime::ImportEvent,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>> {
        use warden_runtime::KvBackend as _;
        let present = self.kv.get("n", &event.resource).expect("kv").is_some();
        self.seen
            .lock()
            .expect("lock")
            .push((format!("{} {}", event.operation, event.resource), present));
        let fail = self.fail;
        Box::pin(async move {
            if fail {
                Err("disk full".to_owned())
            } else {
                Ok(())
            }
        })
    }
}

/// Write-ahead per effect: the hook runs before the kv write and the HTTP
/// request (the key is not there yet when it is asked; reads never ask), and
/// when it fails, the effect does not happen: nothing is written, no
/// connection is opened, and the call reports the denial with its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_effect_waits_for_its_write_ahead_record_and_fails_closed() {
    use serde_json::json;
    use warden_runtime::{Backends, KvBackend as _, MemoryKv, Outcome, StaticSecrets};
    use warden_tests::{grant, invoke, load, runtime};
    let rt = runtime();
    let kv_tool = load(&rt, "kv").await;
    let g = grant("[kv]\nnamespace = \"n\"\nwrite = true\n");
    let backends = |fail: bool| {
        let kv = Arc::new(MemoryKv::default());
        let hook = Arc::new(Hook {
            kv: kv.clone(),
            fail,
            seen: std::sync::Mutex::new(Vec::new()),
        });
        let b = Backends {
            kv: kv.clone(),
            secrets: Arc::new(StaticSecrets::default()),
            write_ahead: Some(hook.clone()),
            policy: None,
        };
        (b, kv, hook)
    };
    let (b, kv, hook) = backends(false);
    let r = invoke(
        &rt,
        &kv_tool,
        &g,
        &b,
        "put",
        json!({"key": "a", "value": "1"}),
    )
    .await;
    assert!(r.outcome.is_ok(), "{:?}", r.outcome);
    let r = invoke(&rt, &kv_tool, &g, &b, "get", json!({"key": "a"})).await;
    assert!(r.outcome.is_ok(), "{:?}", r.outcome);
    assert_eq!(
        *hook.seen.lock().expect("lock"),
        vec![("set a".to_owned(), false)],
        "asked once, before the write; the read did not ask"
    );
    assert!(kv.get("n", "a").expect("kv").is_some());

    // The record cannot be made durable: nothing is written.
    let (b, kv, _) = backends(true);
    let r = invoke(
        &rt,
        &kv_tool,
        &g,
        &b,
        "put",
        json!({"key": "a", "value": "1"}),
    )
    .await;
    match &r.outcome {
        Outcome::Denied { reason, rule } => {
            assert_eq!(rule, "audit.write_ahead");
            assert!(reason.contains("disk full"), "{reason}");
        }
        other => panic!("expected a denial, got {other:?}"),
    }
    assert!(kv.get("n", "a").expect("kv").is_none());

    // HTTP: with the record failing, no connection is ever opened.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let fetch = load(&rt, "http-fetch").await;
    let hg = grant(&format!(
        "[http]\nallow = [{{ host = \"127.0.0.1\", port = {port}, schemes = [\"http\"] }}]\n"
    ));
    let (b, _, hook) = backends(true);
    let r = invoke(
        &rt,
        &fetch,
        &hg,
        &b,
        "get",
        json!({"url": format!("http://127.0.0.1:{port}/x")}),
    )
    .await;
    assert!(!r.outcome.is_ok(), "{:?}", r.outcome);
    assert_eq!(hook.seen.lock().expect("lock").len(), 1);
    match &r.imports[0].decision {
        warden_policy::Decision::Deny { rule, .. } => assert_eq!(rule, "audit.write_ahead"),
        other => panic!("expected the write-ahead denial, got {other:?}"),
    }
    assert!(
        listener.accept().is_err(),
        "a connection reached the server although its record failed"
    );
}
