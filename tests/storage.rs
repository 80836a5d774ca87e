//! The store on both backends, and PostgreSQL's tenant isolation under
//! attack.
//!
//! `store_suite` drives every part of the store (tenants, settings,
//! principals, agents, credentials, tools, deployments, grants, policies,
//! history, audit trail, approvals, shared counters) and checks each answer,
//! including that a second tenant sees none of the first's data; it runs on
//! SQLite (a file per tenant) and on a real PostgreSQL 15 started by the test
//! (row-level security). The attack tests then go around the store and talk
//! SQL to PostgreSQL directly, as the application role and as the tables'
//! owner, and show the database itself refusing or returning nothing.

use sqlx::{Connection, Executor, PgConnection, Row};
use warden_store::{
    AgentStatus, ApprovalRecord, AuditBatch, AuditRow, Error, NewAgent, NewGrant, NewPrincipal,
    NewToolVersion, Payload, PostgresOptions, Store, UsageWindow, VoteOutcome, VoteRecord,
};
use warden_tests::pg::Postgres;

const NOW: i64 = 1_800_000_000;

fn sha(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn approval(id: &str, agent_id: &str) -> ApprovalRecord {
    ApprovalRecord {
        id: id.into(),
        kind: "call".into(),
        status: "pending".into(),
        agent_id: agent_id.into(),
        agent: "bot".into(),
        tool: "text".into(),
        version: "1.0.0".into(),
        component: "c0ffee".into(),
        action: "word_count".into(),
        input: r#"{"text":"a b"}"#.into(),
        import: None,
        policy_version: 1,
        correlation: "corr".into(),
        invocation: "inv_1".into(),
        data_session: "ds".into(),
        rule: "policy.hold".into(),
        reason: "needs a human".into(),
        policies: vec!["p0".into()],
        facts: serde_json::json!({ "args": { "text": "a b" } }),
        required: 1,
        created_at: NOW,
        expires_at: NOW + 600,
        payload_sha256: "ab".repeat(32),
        decided_at: None,
        finished_at: None,
        result: None,
        owner_node: Some("node_a".into()),
        heartbeat_at: Some(NOW),
        votes: Vec::new(),
    }
}

/// Everything the store does, on whichever backend `store` is.
async fn store_suite(store: &Store) {
    // Control plane.
    assert!(
        store
            .install_admin_key("adminhash", NOW)
            .await
            .expect("store call")
    );
    assert!(
        !store
            .install_admin_key("other", NOW)
            .await
            .expect("store call")
    );
    assert!(store.is_admin_key("adminhash").await.expect("store call"));
    assert!(!store.is_admin_key("other").await.expect("store call"));
    store
        .create_tenant("acme", "admin", NOW)
        .await
        .expect("store call");
    store
        .create_tenant("beta", "admin", NOW)
        .await
        .expect("store call");
    assert!(matches!(
        store.create_tenant("acme", "admin", NOW).await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        store.create_tenant("Bad Name", "admin", NOW).await,
        Err(Error::Conflict(_))
    ));
    assert_eq!(
        store.tenant_names().await.expect("store call"),
        ["acme", "beta"]
    );
    assert!(matches!(
        store.tenant("nobody").await,
        Err(Error::NotFound(_))
    ));
    let a = store.tenant("acme").await.expect("store call");
    let b = store.tenant("beta").await.expect("store call");

    // Settings: upsert, and per tenant.
    a.set_setting("approvals_required", "1", "alice", NOW)
        .await
        .expect("store call");
    a.set_setting("approvals_required", "2", "alice", NOW + 1)
        .await
        .expect("store call");
    assert_eq!(
        a.setting("approvals_required")
            .await
            .expect("store call")
            .as_deref(),
        Some("2")
    );
    assert_eq!(a.settings().await.expect("store call").len(), 1);
    assert_eq!(
        b.setting("approvals_required").await.expect("store call"),
        None
    );

    // Principals: unique per tenant, the same name in two tenants is two
    // principals.
    let roles = vec!["deployer".to_owned(), "approver".to_owned()];
    let alice = a
        .add_principal(NewPrincipal {
            name: "alice",
            roles: &roles,
            key_hash: "key-a",
            actor: "admin",
            now: NOW,
        })
        .await
        .expect("store call");
    assert!(matches!(
        a.add_principal(NewPrincipal {
            name: "alice",
            roles: &roles,
            key_hash: "key-a2",
            actor: "admin",
            now: NOW,
        })
        .await,
        Err(Error::Conflict(_))
    ));
    let alice_b = b
        .add_principal(NewPrincipal {
            name: "alice",
            roles: &roles,
            key_hash: "key-b",
            actor: "admin",
            now: NOW,
        })
        .await
        .expect("store call");
    assert_ne!(alice.id, alice_b.id);
    assert_eq!(
        a.principal_by_key("key-a")
            .await
            .expect("store call")
            .expect("store call")
            .id,
        alice.id
    );
    assert!(
        b.principal_by_key("key-a")
            .await
            .expect("store call")
            .is_none()
    );
    assert_eq!(
        a.principal_by_name("alice")
            .await
            .expect("store call")
            .roles,
        roles
    );
    assert_eq!(b.principals().await.expect("store call").len(), 1);

    // Agents: the call generation moves on every change the call path reads.
    let gen0 = a.call_generation().await.expect("store call");
    let bot = a
        .create_agent(NewAgent {
            name: "bot",
            owner_id: &alice.id,
            purpose: "tests",
            renew_by: NOW + 86_400,
            actor: "principal:alice",
            now: NOW,
        })
        .await
        .expect("store call");
    // Another tenant cannot hang an agent on this tenant's principal.
    assert!(
        b.create_agent(NewAgent {
            name: "spy",
            owner_id: &alice.id,
            purpose: "tests",
            renew_by: NOW + 86_400,
            actor: "principal:alice",
            now: NOW,
        })
        .await
        .is_err()
    );
    a.set_agent_status(
        &bot.id,
        AgentStatus::Active,
        "ready",
        "principal:alice",
        NOW,
    )
    .await
    .expect("store call");
    let gen1 = a.call_generation().await.expect("store call");
    assert!(gen1 > gen0, "status change moves the generation");
    assert_eq!(b.call_generation().await.expect("store call"), 0);
    assert_eq!(
        a.agent_by_name("bot").await.expect("store call").status,
        AgentStatus::Active
    );
    assert!(matches!(
        b.agent_by_id(&bot.id).await,
        Err(Error::NotFound(_))
    ));
    a.touch_agent(&bot.id, NOW + 5).await.expect("store call");
    assert_eq!(
        a.agent_by_id(&bot.id)
            .await
            .expect("store call")
            .last_active_at,
        Some(NOW + 5)
    );

    // Credentials.
    a.add_credential(&bot.id, "cred-1", "principal:alice", NOW)
        .await
        .expect("store call");
    assert_eq!(
        a.credential_agent("cred-1")
            .await
            .expect("store call")
            .as_deref(),
        Some(bot.id.as_str())
    );
    assert_eq!(
        b.credential_agent("cred-1").await.expect("store call"),
        None
    );

    // Tools: a blob, a version, a deployment.
    let bytes = b"\0asm\x0d\0\x01\0 a component".to_vec();
    let digest = sha(&bytes);
    a.publish(NewToolVersion {
        tool: "text",
        version: "1.0.0",
        sha256: &digest,
        bytes: &bytes,
        manifest_json: "{}",
        actor: "principal:alice",
        now: NOW,
    })
    .await
    .expect("store call");
    let gen2 = a.call_generation().await.expect("store call");
    a.deploy("text", "1.0.0", "deploy", "principal:alice", NOW)
        .await
        .expect("store call");
    assert!(a.call_generation().await.expect("store call") > gen2);
    assert_eq!(
        a.live_version("text")
            .await
            .expect("store call")
            .expect("store call")
            .version,
        "1.0.0"
    );
    assert_eq!(a.blob(&digest).await.expect("store call"), bytes);
    assert!(b.live_version("text").await.expect("store call").is_none());
    assert!(b.blob(&digest).await.is_err());
    assert_eq!(a.deployments("text").await.expect("store call").len(), 1);
    assert_eq!(a.tool_versions().await.expect("store call").len(), 1);

    // Grants: a new grant replaces the live one.
    for spec in ["{\"v\":1}", "{\"v\":2}"] {
        a.add_grant(NewGrant {
            agent_id: &bot.id,
            tool: "text",
            spec_json: spec,
            expires_at: NOW + 3600,
            actor: "principal:alice",
            now: NOW,
        })
        .await
        .expect("store call");
    }
    assert_eq!(
        a.live_grant(&bot.id, "text")
            .await
            .expect("store call")
            .expect("store call")
            .spec,
        "{\"v\":2}"
    );
    assert_eq!(
        a.grants(Some(&bot.id), true)
            .await
            .expect("store call")
            .len(),
        2
    );
    assert_eq!(a.grants(None, false).await.expect("store call").len(), 1);
    assert!(b.grants(None, true).await.expect("store call").is_empty());
    assert!(
        a.revoke_grant(&bot.id, "text", "principal:alice", NOW)
            .await
            .expect("store call")
    );
    assert!(
        a.live_grant(&bot.id, "text")
            .await
            .expect("store call")
            .is_none()
    );

    // Policies: versions per tenant.
    assert_eq!(
        a.add_policy("permit(principal, action, resource);", "s1", "alice", NOW)
            .await
            .expect("store call"),
        1
    );
    assert_eq!(
        a.add_policy("", "s2", "alice", NOW)
            .await
            .expect("store call"),
        2
    );
    assert_eq!(
        a.policy(None)
            .await
            .expect("store call")
            .expect("store call")
            .version,
        2
    );
    assert_eq!(
        a.policy(Some(1))
            .await
            .expect("store call")
            .expect("store call")
            .sha256,
        "s1"
    );
    assert!(b.policy(None).await.expect("store call").is_none());

    // History: in order, per tenant.
    let events = a.events().await.expect("store call");
    assert!(events.len() >= 10, "{events:?}");
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(events[0].action, "tenant.create");
    let b_events = b.events().await.expect("store call");
    assert_eq!(
        b_events
            .iter()
            .map(|e| e.action.as_str())
            .collect::<Vec<_>>(),
        ["tenant.create", "principal.add"]
    );
    let after = a.events_after(events[2].seq, 3).await.expect("store call");
    assert_eq!(after.len(), 3);
    assert_eq!(after[0].seq, events[3].seq);

    // Audit trail: appends only at the head.
    let rows = vec![
        AuditRow {
            seq: 0,
            body: r#"{"invocation":"inv_1","kind":"invocation.decided"}"#.into(),
            mac: "m0".into(),
            cosign: None,
        },
        AuditRow {
            seq: 1,
            body: r#"{"kind":"governance"}"#.into(),
            mac: "m1".into(),
            cosign: Some("c1".into()),
        },
    ];
    let batch = AuditBatch {
        first_seq: 0,
        rows: rows.clone(),
        payloads: vec![(0, Payload::input("{\"text\":\"a b\"}"))],
        checkpoint: Some((2, "note".into(), NOW * 1000)),
        events_seq: Some(events[4].seq),
    };
    assert!(a.append_audit(&batch).await.expect("store call"));
    assert!(
        !a.append_audit(&batch).await.expect("store call"),
        "the head moved"
    );
    assert_eq!(a.audit_rows(0, 10).await.expect("store call"), rows);
    assert_eq!(
        a.audit_invocation("inv_1").await.expect("store call"),
        rows[..1].to_vec()
    );
    assert_eq!(
        a.audit_payload(0)
            .await
            .expect("store call")
            .expect("store call")
            .input
            .as_deref(),
        Some("{\"text\":\"a b\"}")
    );
    a.add_audit_checkpoint(2, "again", 0)
        .await
        .expect("store call");
    assert_eq!(
        a.audit_checkpoints().await.expect("store call"),
        [(2, "note".to_owned())]
    );
    assert_eq!(
        a.audit_events_cursor().await.expect("store call"),
        events[4].seq
    );
    assert!(b.audit_rows(0, 10).await.expect("store call").is_empty());
    assert_eq!(b.audit_events_cursor().await.expect("store call"), 0);
    // Beta's chain starts at 0 independently.
    assert!(
        b.append_audit(&AuditBatch {
            first_seq: 0,
            rows: rows[..1].to_vec(),
            ..AuditBatch::default()
        })
        .await
        .expect("store call")
    );

    // Approvals: vote, claim once, heartbeat, per tenant.
    a.add_approval(&approval("apr_1", &bot.id))
        .await
        .expect("store call");
    assert_eq!(
        a.approvals(&["pending"], 10)
            .await
            .expect("store call")
            .len(),
        1
    );
    assert_eq!(a.count_approvals("pending").await.expect("store call"), 1);
    let vote = VoteRecord {
        principal_id: alice.id.clone(),
        principal: "alice".into(),
        vote: "approve".into(),
        comment: "ok".into(),
        at: NOW + 1,
    };
    assert_eq!(
        a.vote_approval("apr_1", &vote).await.expect("store call"),
        VoteOutcome::Counted {
            status: "approved".into(),
            approvals: 1
        }
    );
    assert!(matches!(
        a.vote_approval("apr_1", &vote).await,
        Err(Error::Conflict(_))
    ));
    assert!(
        a.move_approval(
            "apr_1",
            &["approved"],
            "executing",
            NOW + 2,
            None,
            Some("node_b")
        )
        .await
        .expect("store call")
    );
    assert!(
        !a.move_approval(
            "apr_1",
            &["approved"],
            "executing",
            NOW + 2,
            None,
            Some("node_c")
        )
        .await
        .expect("store call"),
        "only one claim wins"
    );
    assert_eq!(
        a.heartbeat_approvals("node_b", NOW + 9)
            .await
            .expect("store call"),
        1
    );
    let got = a.approval("apr_1").await.expect("store call");
    assert_eq!(got.owner_node.as_deref(), Some("node_b"));
    assert_eq!(got.heartbeat_at, Some(NOW + 9));
    assert_eq!(got.votes.len(), 1);
    assert_eq!(
        a.approval_by_invocation("inv_1", &bot.id)
            .await
            .expect("store call")
            .as_deref(),
        Some("apr_1")
    );
    assert!(matches!(b.approval("apr_1").await, Err(Error::NotFound(_))));
    assert!(b.approvals(&[], 10).await.expect("store call").is_empty());

    // Data sessions: the tier only rises, per tenant.
    assert_eq!(
        a.data_session(&bot.id, "s1", 64).await.expect("store call"),
        warden_store::DataSession::default()
    );
    for (tool, rank) in [
        ("text/word_count", 1),
        ("hr/read", 3),
        ("text/word_count", 0),
    ] {
        a.record_data_session(&bot.id, "s1", tool, rank, NOW)
            .await
            .expect("store call");
    }
    let s1 = a.data_session(&bot.id, "s1", 64).await.expect("store call");
    assert_eq!(
        (s1.rank, s1.calls, s1.tools),
        (
            Some(3),
            3,
            vec!["hr/read".to_owned(), "text/word_count".to_owned()]
        )
    );
    assert_eq!(
        b.data_session(&bot.id, "s1", 64).await.expect("store call"),
        warden_store::DataSession::default()
    );
    // Sessions idle past the cut are deleted with their tools; the others
    // and the other tenant's are kept.
    a.record_data_session(&bot.id, "idle", "hr/read", 3, NOW - 90_000)
        .await
        .expect("store call");
    b.record_data_session(&bot.id, "idle", "hr/read", 3, NOW - 90_000)
        .await
        .expect("store call");
    assert_eq!(
        a.prune_data_sessions(NOW - 86_400)
            .await
            .expect("store call"),
        1
    );
    assert_eq!(
        a.data_session(&bot.id, "idle", 64)
            .await
            .expect("store call"),
        warden_store::DataSession::default()
    );
    assert_eq!(
        a.data_session(&bot.id, "s1", 64)
            .await
            .expect("store call")
            .calls,
        3
    );
    assert_eq!(
        b.data_session(&bot.id, "idle", 64)
            .await
            .expect("store call")
            .rank,
        Some(3),
        "pruning one tenant touched another's sessions"
    );

    // Shared counters: a limit of 2 per minute admits two calls.
    let window = |limit| {
        [UsageWindow {
            scope: "word_count",
            width: 60,
            bucket: NOW / 60,
            limit: Some(limit),
            count: true,
        }]
    };
    for expect in [0, 1] {
        let got = a
            .admit_usage(&bot.id, "text", &window(2))
            .await
            .expect("store call");
        assert_eq!((got.before, got.refused), (vec![expect], None));
    }
    let third = a
        .admit_usage(&bot.id, "text", &window(2))
        .await
        .expect("store call");
    assert_eq!((third.before, third.refused), (vec![2], Some(0)));
    a.add_usage(&bot.id, "text", "word_count", 60, NOW / 60, 5)
        .await
        .expect("store call");
    let other = b
        .admit_usage(&bot.id, "text", &window(2))
        .await
        .expect("store call");
    assert_eq!(other.before, [0], "another tenant's counters are its own");

    // One row per window kind: the next minute starts from zero, and a
    // node whose clock lags (still in the old minute) sees and adds to the
    // newest minute's count instead of a fresh one.
    let at = |bucket| {
        [UsageWindow {
            scope: "word_count",
            width: 60,
            bucket,
            limit: Some(2),
            count: true,
        }]
    };
    let next = a
        .admit_usage(&bot.id, "text", &at(NOW / 60 + 1))
        .await
        .expect("store call");
    assert_eq!((next.before, next.refused), (vec![0], None));
    let lagging = a
        .admit_usage(&bot.id, "text", &at(NOW / 60))
        .await
        .expect("store call");
    assert_eq!((lagging.before, lagging.refused), (vec![1], None));
    let lagging = a
        .admit_usage(&bot.id, "text", &at(NOW / 60))
        .await
        .expect("store call");
    assert_eq!(
        (lagging.before, lagging.refused),
        (vec![2], Some(0)),
        "a lagging clock opened a fresh window"
    );
    a.add_usage(&bot.id, "text", "word_count", 60, NOW / 60, 1)
        .await
        .expect("store call");
    let now = a
        .admit_usage(&bot.id, "text", &at(NOW / 60 + 1))
        .await
        .expect("store call");
    assert_eq!(now.before, [3], "a late count was lost");
}

#[tokio::test]
async fn store_suite_on_sqlite() {
    let dir = tempfile::tempdir().expect("store call");
    let store = Store::open(dir.path()).await.expect("store call");
    store_suite(&store).await;
    store.close().await;
}

#[tokio::test]
async fn store_suite_on_postgres() {
    let pg = Postgres::start().await;
    store_suite_on(&pg).await;
    // The suite counted in two minutes of one window kind: one row.
    let mut app = PgConnection::connect(&pg.app_url())
        .await
        .expect("store call");
    let mut tx = scoped(&mut app, "acme").await;
    assert_eq!(count(&mut tx, "usage_counters").await, 1);
    tx.rollback().await.expect("store call");
}

/// The store suite on `pg`, through the application role.
async fn store_suite_on(pg: &Postgres) {
    let dir = tempfile::tempdir().expect("store call");
    let store = Store::open_postgres(
        dir.path(),
        &PostgresOptions {
            url: pg.app_url(),
            max_connections: 4,
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", pg.log()));
    store_suite(&store).await;
    store.close().await;
}

/// Two tenants with data, made through the store as Warden makes them.
async fn two_tenants(pg: &Postgres) {
    store_suite_on(pg).await;
}

/// Every tenant-scoped table.
const TABLES: [&str; 22] = [
    "settings",
    "principals",
    "api_keys",
    "agents",
    "agent_credentials",
    "access_tokens",
    "blobs",
    "tool_versions",
    "deployments",
    "grants",
    "events",
    "call_generation",
    "policies",
    "audit_entries",
    "audit_checkpoints",
    "audit_payloads",
    "audit_cursor",
    "approvals",
    "approval_votes",
    "usage_counters",
    "data_sessions",
    "data_session_tools",
];

/// A transaction on `app` with `warden.tenant` set to `tenant` (as the
/// store begins every transaction).
async fn scoped<'c>(
    app: &'c mut PgConnection,
    tenant: &str,
) -> sqlx::Transaction<'c, sqlx::Postgres> {
    let mut tx = app.begin().await.expect("begin");
    sqlx::query("SELECT set_config('warden.tenant', $1, true)")
        .bind(tenant)
        .execute(&mut *tx)
        .await
        .expect("set the tenant");
    tx
}

async fn count(c: &mut PgConnection, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(c)
        .await
        .unwrap_or_else(|e| panic!("counting {table}: {e}"))
}

fn refused_by_rls(e: &sqlx::Error) -> bool {
    let text = e.to_string();
    text.contains("row-level security") || text.contains("null value in column \"tenant\"")
}

#[tokio::test]
async fn tenant_attacks_are_refused_or_empty_by_postgres() {
    let pg = Postgres::start().await;
    two_tenants(&pg).await;
    let mut app = PgConnection::connect(&pg.app_url())
        .await
        .expect("store call");

    // The setup really wrote rows for both tenants (seen with each scope).
    let mut per_tenant = Vec::new();
    for t in ["acme", "beta"] {
        let mut tx = scoped(&mut app, t).await;
        per_tenant.push(count(&mut tx, "principals").await);
        // Scoped to one tenant, a query naming the other finds nothing.
        let other = if t == "acme" { "beta" } else { "acme" };
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM principals WHERE tenant = $1")
            .bind(other)
            .fetch_one(&mut *tx)
            .await
            .expect("store call");
        assert_eq!(n, 0, "{t} sees {other}'s principals");
        tx.rollback().await.expect("store call");
    }
    assert_eq!(per_tenant, [1, 1]);

    // 1. A missing setting: unscoped queries (no WHERE) see nothing, in
    //    every tenant-scoped table.
    for table in TABLES {
        assert_eq!(count(&mut app, table).await, 0, "unscoped {table}");
    }
    // ... and an empty setting is no better.
    let mut tx = scoped(&mut app, "").await;
    for table in TABLES {
        assert_eq!(count(&mut tx, table).await, 0, "empty-scoped {table}");
    }
    tx.rollback().await.expect("store call");
    //    Nor can it write: the tenant column has nothing to default to.
    let e = app
        .execute(
            "INSERT INTO settings (key, value, changed_by, changed_at) VALUES ('k', 'v', 'x', 0)",
        )
        .await
        .expect_err("must be refused");
    assert!(refused_by_rls(&e), "{e}");
    let e = app
        .execute(
            "INSERT INTO settings (tenant, key, value, changed_by, changed_at) \
             VALUES ('acme', 'k', 'v', 'x', 0)",
        )
        .await
        .expect_err("must be refused");
    assert!(refused_by_rls(&e), "{e}");
    let done = app
        .execute("UPDATE settings SET value = 'pwned'")
        .await
        .expect("store call");
    assert_eq!(done.rows_affected(), 0, "unscoped UPDATE touched rows");

    // 2. Scoped to acme, rows stamped with beta's id are refused, and
    //    beta's rows cannot be reached or moved.
    let mut tx = scoped(&mut app, "acme").await;
    let e = tx
        .execute(
            "INSERT INTO settings (tenant, key, value, changed_by, changed_at) \
             VALUES ('beta', 'k', 'v', 'x', 0)",
        )
        .await
        .expect_err("must be refused");
    assert!(refused_by_rls(&e), "{e}");
    tx.rollback().await.expect("store call");
    let mut tx = scoped(&mut app, "acme").await;
    let moved = tx
        .execute("UPDATE agents SET status = 'active' WHERE tenant = 'beta'")
        .await
        .expect("store call");
    assert_eq!(moved.rows_affected(), 0, "acme updated beta's agents");
    // Moving one of its own rows into beta is refused (WITH CHECK).
    let e = tx
        .execute("UPDATE settings SET tenant = 'beta'")
        .await
        .expect_err("must be refused");
    assert!(refused_by_rls(&e), "{e}");
    tx.rollback().await.expect("store call");

    // 3. Changing the tenant inside a transaction: every statement sees
    //    exactly one tenant. Rows written as acme vanish from view once the
    //    setting says beta and cannot be touched; beta's view is beta's only.
    let mut tx = scoped(&mut app, "acme").await;
    tx.execute(
        "INSERT INTO settings (key, value, changed_by, changed_at) VALUES ('smuggled', 'v', 'x', 0)",
    )
    .await
    .expect("store call");
    tx.execute("SELECT set_config('warden.tenant', 'beta', true)")
        .await
        .expect("store call");
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM settings WHERE key = 'smuggled'")
        .fetch_one(&mut *tx)
        .await
        .expect("store call");
    assert_eq!(n, 0, "beta sees the row acme wrote in the same transaction");
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM principals WHERE tenant <> 'beta'")
        .fetch_one(&mut *tx)
        .await
        .expect("store call");
    assert_eq!(n, 0);
    let touched = tx
        .execute("UPDATE settings SET tenant = 'beta' WHERE key = 'smuggled'")
        .await
        .expect("store call");
    assert_eq!(touched.rows_affected(), 0);
    tx.rollback().await.expect("store call");
    //    The setting ends with its transaction: the next one on the same
    //    connection is unscoped again.
    let tx = scoped(&mut app, "acme").await;
    tx.commit().await.expect("store call");
    assert_eq!(count(&mut app, "principals").await, 0);

    // 4. The application role cannot rewrite history or lift the policies.
    let mut tx = scoped(&mut app, "acme").await;
    for attack in [
        "DELETE FROM events",
        "UPDATE audit_entries SET body = '{}'",
        "DELETE FROM audit_entries",
        "ALTER TABLE principals DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE principals NO FORCE ROW LEVEL SECURITY",
        "DROP POLICY tenant_isolation ON principals",
    ] {
        let mut sp = tx.begin().await.expect("store call");
        let e = sp
            .execute(attack)
            .await
            .map(|_| ())
            .expect_err("must be refused");
        let text = e.to_string();
        assert!(
            text.contains("permission denied")
                || text.contains("must be owner")
                || text.contains("query would be affected by row-level security"),
            "{attack}: {text}"
        );
        sp.rollback().await.expect("store call");
    }
    tx.rollback().await.expect("store call");
    // SET row_security = off makes a policy-filtered query an error, never
    // a bypass.
    app.execute("SET row_security = off")
        .await
        .expect("store call");
    let e = sqlx::query("SELECT COUNT(*) FROM principals")
        .fetch_one(&mut app)
        .await
        .expect_err("must be refused");
    assert!(e.to_string().contains("row-level security"), "{e}");
    app.close().await.expect("store call");

    // 5. The owner role, without the setting, sees nothing either (FORCE),
    //    and cannot write another tenant's rows.
    let mut owner = PgConnection::connect(&pg.owner_url())
        .await
        .expect("store call");
    for table in TABLES {
        assert_eq!(count(&mut owner, table).await, 0, "owner sees {table}");
    }
    let e = owner
        .execute(
            "INSERT INTO settings (tenant, key, value, changed_by, changed_at) \
             VALUES ('acme', 'k', 'v', 'x', 0)",
        )
        .await
        .expect_err("must be refused");
    assert!(refused_by_rls(&e), "{e}");
    let row =
        sqlx::query("SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = $1")
            .bind("audit_entries")
            .fetch_one(&mut owner)
            .await
            .expect("store call");
    assert!(row.get::<bool, _>(0) && row.get::<bool, _>(1));
    // Every tenant-scoped table has RLS enabled and forced, with a policy
    // that has both USING and WITH CHECK.
    let rows = sqlx::query(
        "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, \
         (SELECT COUNT(*) FROM pg_policy p WHERE p.polrelid = c.oid \
          AND p.polqual IS NOT NULL AND p.polwithcheck IS NOT NULL) AS policies \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind = 'r' \
         AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant')",
    )
    .fetch_all(&mut owner)
    .await
    .expect("store call");
    assert_eq!(rows.len(), TABLES.len());
    for r in rows {
        let name: String = r.get(0);
        assert!(r.get::<bool, _>(1) && r.get::<bool, _>(2), "{name}");
        assert_eq!(r.get::<i64, _>(3), 1, "{name}");
    }
    owner.close().await.expect("store call");
}

#[tokio::test]
async fn warden_refuses_a_role_that_could_see_past_row_level_security() {
    let pg = Postgres::start().await;
    let dir = tempfile::tempdir().expect("store call");
    let open = |url: String| {
        let dir = dir.path().to_owned();
        async move {
            Store::open_postgres(
                &dir,
                &PostgresOptions {
                    url,
                    max_connections: 2,
                },
            )
            .await
        }
    };
    // The owner of the tables.
    let e = open(pg.owner_url()).await.expect_err("must be refused");
    assert!(
        matches!(e, Error::Refused(_)) && e.to_string().contains("owns"),
        "{e}"
    );
    // A superuser.
    let e = open(pg.superuser_url("warden"))
        .await
        .expect_err("must be refused");
    assert!(
        matches!(e, Error::Refused(_)) && e.to_string().contains("superuser"),
        "{e}"
    );
    // A role with BYPASSRLS.
    let mut su = PgConnection::connect(&pg.superuser_url("warden"))
        .await
        .expect("store call");
    su.execute("CREATE ROLE sneaky LOGIN BYPASSRLS IN ROLE warden_app")
        .await
        .expect("store call");
    let e = open(pg.url_for("sneaky", "warden"))
        .await
        .expect_err("must be refused");
    assert!(
        matches!(e, Error::Refused(_)) && e.to_string().contains("BYPASSRLS"),
        "{e}"
    );
    // A database that was never migrated.
    su.execute("CREATE DATABASE empty OWNER warden_owner")
        .await
        .expect("store call");
    let e = open(pg.url_for("warden", "empty"))
        .await
        .expect_err("must be refused");
    assert!(e.to_string().contains("not migrated"), "{e}");
    su.close().await.expect("store call");
    // The application role is accepted.
    open(pg.app_url()).await.expect("store call").close().await;
}

/// Upgrading a database that counted under the first schema (a counter row
/// per window elapsed) keeps each window kind's newest count, per tenant,
/// puts row-level security back as it was, and leaves a schema Warden
/// serves on.
#[tokio::test]
async fn the_upgrade_to_bounded_counters_keeps_each_windows_newest_count() {
    let pg = Postgres::start_unmigrated().await;
    // The first migration alone, as an earlier build left the database.
    let first = tempfile::tempdir().expect("temp dir");
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../host/store/migrations/postgres/0001_warden.sql"),
        first.path().join("0001_warden.sql"),
    )
    .expect("copy the first migration");
    let mut owner = PgConnection::connect(&pg.owner_url())
        .await
        .expect("owner connects");
    sqlx::migrate::Migrator::new(first.path())
        .await
        .expect("migrator")
        .run(&mut owner)
        .await
        .expect("the first migration");
    let mut app = PgConnection::connect(&pg.app_url())
        .await
        .expect("app connects");
    for (tenant, rows) in [
        ("acme", &[(60, 100, 3), (60, 101, 5), (3600, 2, 7)][..]),
        ("beta", &[(60, 100, 9)][..]),
    ] {
        let mut tx = scoped(&mut app, tenant).await;
        sqlx::query("INSERT INTO tenants (name, created_by, created_at) VALUES ($1, 'admin', 0)")
            .bind(tenant)
            .execute(&mut *tx)
            .await
            .expect("tenant row");
        for (width, bucket, used) in rows {
            sqlx::query(
                "INSERT INTO usage_counters (agent, tool, scope, width, bucket, used) \
                 VALUES ('bot', 'text', 'word_count', $1, $2, $3)",
            )
            .bind(*width as i64)
            .bind(*bucket as i64)
            .bind(*used as i64)
            .execute(&mut *tx)
            .await
            .expect("counter row");
        }
        tx.commit().await.expect("commit");
    }

    Store::migrate_postgres(&pg.owner_url())
        .await
        .expect("the upgrade");

    for (tenant, want) in [
        ("acme", vec![(60, 101, 5), (3600, 2, 7)]),
        ("beta", vec![(60, 100, 9)]),
    ] {
        let mut tx = scoped(&mut app, tenant).await;
        let got: Vec<(i64, i64, i64)> =
            sqlx::query_as("SELECT width, bucket, used FROM usage_counters ORDER BY width, bucket")
                .fetch_all(&mut *tx)
                .await
                .expect("counters");
        assert_eq!(got, want, "{tenant}");
        tx.rollback().await.expect("rollback");
    }
    let forced: bool = sqlx::query_scalar(
        "SELECT relforcerowsecurity FROM pg_class WHERE relname = 'usage_counters'",
    )
    .fetch_one(&mut owner)
    .await
    .expect("pg_class");
    assert!(forced, "the upgrade left row-level security unforced");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open_postgres(
        dir.path(),
        &PostgresOptions {
            url: pg.app_url(),
            max_connections: 2,
        },
    )
    .await
    .expect("Warden serves on the upgraded schema");
    store.close().await;
}
