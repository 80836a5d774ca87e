//! Governance: roles, separation of duties, the tool registry, agents,
//! credentials and grants, on a real SQLite data directory with real
//! components.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use tempfile::TempDir;
use warden_policy::{Grant, Limits, Operation, Role};
use warden_runtime::Outcome;
use warden_service::{AgentStatus, Caller, Config, Error, Warden};
use warden_tests::{guest, root};

const START: i64 = 1_800_000_000;
const DAY: i64 = 86_400;

struct Env {
    dir: TempDir,
    w: Warden,
    clock: Arc<AtomicI64>,
    admin: Caller,
    admin_key: String,
    /// Every secret handed out, for the hashed-storage test.
    secrets: Vec<String>,
    /// The PostgreSQL cluster the store lives in, when not SQLite.
    _pg: Option<warden_tests::pg::Postgres>,
}

async fn env() -> Env {
    env_with(None).await
}

/// An [`env`] whose store is a throwaway PostgreSQL (row-level security,
/// shared counters), for the tests that run on both backends.
async fn env_on_postgres() -> Env {
    env_with(Some(warden_tests::pg::Postgres::start().await)).await
}

async fn env_with(pg: Option<warden_tests::pg::Postgres>) -> Env {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = pg.as_ref().map(|pg| warden_store::PostgresOptions {
        url: pg.app_url(),
        max_connections: 8,
    });
    let (w, key, clock) = open_on(dir.path(), database).await;
    let key = key.expect("first start prints the admin key");
    let admin = w.authenticate(&key).await.expect("admin key works");
    assert_eq!(admin, Caller::Admin);
    Env {
        dir,
        w,
        clock,
        admin,
        admin_key: key.clone(),
        secrets: vec![key],
        _pg: pg,
    }
}

async fn open(dir: &std::path::Path) -> (Warden, Option<String>, Arc<AtomicI64>) {
    open_on(dir, None).await
}

async fn open_on(
    dir: &std::path::Path,
    database: Option<warden_store::PostgresOptions>,
) -> (Warden, Option<String>, Arc<AtomicI64>) {
    let clock = Arc::new(AtomicI64::new(START));
    let c = clock.clone();
    let mut config = Config::new(dir.to_owned());
    config.database = database;
    config.cache_dir = Some(root().join("target/warden-test-cache"));
    config.clock = Arc::new(move || c.load(Ordering::SeqCst));
    let opened = Warden::open(config).await.expect("data directory opens");
    (opened.warden, opened.bootstrap_key, clock)
}

impl Env {
    fn advance(&self, secs: i64) {
        self.clock.fetch_add(secs, Ordering::SeqCst);
    }

    /// Creates a tenant and its first deployer (`<tenant>-admin`, also viewer).
    async fn tenant(&mut self, name: &str) -> Caller {
        self.w
            .create_tenant(&self.admin, name)
            .await
            .expect("tenant created");
        let (_, key) = self
            .w
            .add_principal(
                &self.admin,
                name,
                &format!("{name}-admin"),
                &roles(&["deployer", "viewer"]),
            )
            .await
            .expect("first deployer");
        self.secrets.push(key.clone());
        self.w.authenticate(&key).await.expect("key works")
    }

    async fn principal(&mut self, by: &Caller, name: &str, r: &[&str]) -> Caller {
        let tenant = match by {
            Caller::Principal(p) => p.tenant.clone(),
            Caller::Admin => panic!("use a deployer"),
        };
        let (_, key) = self
            .w
            .add_principal(by, &tenant, name, &roles(r))
            .await
            .expect("principal added");
        self.secrets.push(key.clone());
        self.w.authenticate(&key).await.expect("key works")
    }

    async fn publish(&self, by: &Caller, component: &str, manifest: &str) {
        let bytes = std::fs::read(guest(component)).expect("component");
        let text = std::fs::read_to_string(root().join(manifest)).expect("manifest");
        self.w
            .publish_tool(by, &bytes, &text)
            .await
            .expect("published");
    }

    /// Drafts (by `builder`) and activates (by `deployer`) an agent.
    async fn active_agent(&self, builder: &Caller, deployer: &Caller, name: &str) {
        self.w
            .create_agent(builder, name, "testing", None, None)
            .await
            .expect("agent drafted");
        self.w
            .activate_agent(deployer, name)
            .await
            .expect("agent activated");
    }

    async fn token_for(&mut self, deployer: &Caller, agent: &str) -> (String, String) {
        let cred = self
            .w
            .issue_credential(deployer, agent)
            .await
            .expect("credential");
        let token = self
            .w
            .exchange_credential(&cred, None, None)
            .await
            .expect("token")
            .token;
        self.secrets.push(cred.clone());
        self.secrets.push(token.clone());
        (cred, token)
    }

    async fn call(&self, token: &str, tool: &str, input: &str) -> Result<Outcome, Error> {
        let s = self.w.authenticate_agent(token).await?;
        let action = if tool == "greeter" {
            "greet"
        } else {
            "word_count"
        };
        Ok(self.w.invoke(&s, tool, action, input).await?.outcome)
    }
}

fn roles(r: &[&str]) -> Vec<String> {
    r.iter().map(|s| (*s).to_owned()).collect()
}

fn greeter_grant() -> Grant {
    Grant::empty(Limits::STANDARD)
}

fn refused(result: Result<Outcome, Error>, fragment: &str) {
    match result {
        Ok(Outcome::NotGranted { reason }) if reason.contains(fragment) => {}
        Err(e) if e.to_string().contains(fragment) => {}
        other => panic!("expected a refusal containing `{fragment}`, got {other:?}"),
    }
}

fn forbidden<T: std::fmt::Debug>(result: Result<T, Error>, fragment: &str) {
    match result {
        Err(Error::Forbidden(m)) if m.contains(fragment) => {}
        other => panic!("expected forbidden containing `{fragment}`, got {other:?}"),
    }
}

fn invalid<T: std::fmt::Debug>(result: Result<T, Error>, fragment: &str) {
    match result {
        Err(e @ (Error::Invalid(_) | Error::Conflict(_) | Error::NotFound(_)))
            if e.to_string().contains(fragment) => {}
        other => panic!("expected a refusal containing `{fragment}`, got {other:?}"),
    }
}

// ---- every operation × every role ------------------------------------------------

/// Prepares what `op` needs (as `deployer`/`builder` helpers) and then runs it
/// as `caller`.
async fn attempt(
    e: &Env,
    deployer: &Caller,
    builder: &Caller,
    caller: &Caller,
    op: Operation,
    case: &str,
) -> Result<(), Error> {
    let w = &e.w;
    let agent = format!("agent-{case}");
    let needs_agent = !matches!(
        op,
        Operation::ReadInventory
            | Operation::PublishTool
            | Operation::DraftAgent
            | Operation::DeployTool
            | Operation::RollbackTool
            | Operation::AddPrincipal
            | Operation::ChangeSettings
            | Operation::DecideApproval
            | Operation::ReadAudit
            | Operation::RotateAuditKeys
            | Operation::SetPolicy
    );
    if needs_agent {
        w.create_agent(builder, &agent, "testing", None, None)
            .await
            .expect("prepare agent");
    }
    match op {
        Operation::ReadInventory => {
            w.inventory(caller).await?;
            w.grants(caller, None, true).await?;
            w.events(caller).await.map(|_| ())
        }
        Operation::PublishTool => {
            let bytes = std::fs::read(guest("text")).expect("component");
            let text =
                std::fs::read_to_string(root().join("tools/text/tool.toml")).expect("manifest");
            w.publish_tool(caller, &bytes, &text).await.map(|_| ())
        }
        Operation::DraftAgent => w
            .create_agent(caller, &agent, "testing", None, None)
            .await
            .map(|_| ()),
        Operation::DeployTool => w.deploy_tool(caller, "greeter", "2.0.0").await.map(|_| ()),
        Operation::RollbackTool => {
            w.deploy_tool(deployer, "greeter", "2.0.0")
                .await
                .expect("prepare deploy");
            w.rollback_tool(caller, "greeter", None).await.map(|_| ())
        }
        Operation::AddGrant => w
            .add_grant(caller, &agent, "greeter", &greeter_grant(), None)
            .await
            .map(|_| ()),
        Operation::RevokeGrant => {
            w.add_grant(deployer, &agent, "greeter", &greeter_grant(), None)
                .await
                .expect("prepare grant");
            w.revoke_grant(caller, &agent, "greeter").await
        }
        Operation::ActivateAgent => w.activate_agent(caller, &agent).await.map(|_| ()),
        Operation::SuspendAgent => {
            w.activate_agent(deployer, &agent)
                .await
                .expect("prepare activation");
            w.suspend_agent(caller, &agent, "test").await.map(|_| ())
        }
        Operation::RenewAgent => w.renew_agent(caller, &agent, 30).await.map(|_| ()),
        Operation::DecommissionAgent => w
            .decommission_agent(caller, &agent, "test")
            .await
            .map(|_| ()),
        Operation::IssueCredential => w.issue_credential(caller, &agent).await.map(|_| ()),
        Operation::AddPrincipal => w
            .add_principal(caller, "acme", &format!("p-{case}"), &roles(&["viewer"]))
            .await
            .map(|_| ()),
        Operation::ChangeSettings => w.set_setting(caller, "idle_days", "10").await,
        Operation::ReadAudit => {
            w.audit_export(caller).await?;
            w.audit_checkpoint(caller).await?;
            w.audit_entries(caller, 0, 10).await.map(|_| ())
        }
        Operation::RotateAuditKeys => w.audit_rotate(caller, "test").await.map(|_| ()),
        Operation::SetPolicy => w
            .set_policy(caller, r#"permit(principal, action, resource);"#)
            .await
            .map(|_| ()),
        // Deciding held calls arrives with the approvals issue; until then the
        // role table in warden-policy is what the service will consult.
        Operation::DecideApproval => match caller {
            Caller::Principal(p) => p.roles.authorize(op).map_err(Error::Forbidden),
            Caller::Admin => Err(Error::Forbidden("the admin key holds no role".into())),
        },
    }
}

#[tokio::test]
async fn every_operation_is_allowed_exactly_to_its_role() {
    let mut e = env().await;
    let deployer = e.tenant("acme").await;
    let maker = e.principal(&deployer, "maker", &["builder"]).await;
    e.publish(
        &maker,
        "fixture_greeter_v1",
        "tools/fixtures/greeter-v1/tool.toml",
    )
    .await;
    e.publish(
        &maker,
        "fixture_greeter_v2",
        "tools/fixtures/greeter-v2/tool.toml",
    )
    .await;
    e.w.deploy_tool(&deployer, "greeter", "1.0.0")
        .await
        .expect("deploy");
    let mut by_role = Vec::new();
    for role in Role::ALL {
        let c = e
            .principal(&deployer, &format!("only-{role}"), &[role.name()])
            .await;
        by_role.push((role, c));
    }
    let mut checked = 0;
    for op in Operation::ALL {
        for (role, caller) in &by_role {
            let case = format!("{}-{role}", op.name().replace(' ', "-"));
            let result = attempt(&e, &deployer, &maker, caller, op, &case).await;
            let need = op.required_role();
            match (*role == need, result) {
                (true, Ok(())) => {}
                (false, Err(Error::Forbidden(m)))
                    if m.contains(&format!("needs the {need} role")) => {}
                (expected, other) => panic!(
                    "`{}` as {role}: expected {}, got {other:?}",
                    op.name(),
                    if expected {
                        "success"
                    } else {
                        "a role refusal"
                    }
                ),
            }
            checked += 1;
        }
        // The admin key holds no tenant role at all.
        let case = format!("{}-admin", op.name().replace(' ', "-"));
        let result = attempt(&e, &deployer, &maker, &e.admin, op, &case).await;
        assert!(
            matches!(result, Err(Error::Forbidden(_))),
            "`{}` with the admin key: {result:?}",
            op.name()
        );
    }
    assert_eq!(checked, Operation::ALL.len() * Role::ALL.len());
}

#[tokio::test]
async fn admin_key_only_bootstraps() {
    let mut e = env().await;
    let deployer = e.tenant("acme").await;
    // A second deployer through the admin key: refused, the tenant has one.
    forbidden(
        e.w.add_principal(&e.admin, "acme", "mallory", &roles(&["deployer"]))
            .await,
        "already has a deployer",
    );
    // The admin key must bootstrap a deployer, not anything else.
    e.w.create_tenant(&e.admin, "globex").await.expect("tenant");
    forbidden(
        e.w.add_principal(&e.admin, "globex", "v", &roles(&["viewer"]))
            .await,
        "include the deployer role",
    );
    // Principals do not create tenants.
    forbidden(
        e.w.create_tenant(&deployer, "initech").await,
        "only the admin key",
    );
    // Bad names and unknown roles are clear errors.
    invalid(e.w.create_tenant(&e.admin, "Bad_Name").await, "tenant name");
    invalid(e.w.create_tenant(&e.admin, "acme").await, "already exists");
    invalid(
        e.w.add_principal(&deployer, "acme", "eve", &roles(&["root"]))
            .await,
        "unknown role `root`",
    );
    // A bootstrap key that is not the stored one is refused.
    let mut fake = e.admin_key.clone();
    fake.replace_range(fake.len() - 4.., "0000");
    assert!(matches!(
        e.w.authenticate(&fake).await,
        Err(Error::Unauthenticated(_))
    ));
}

// ---- separation of duties ------------------------------------------------------

#[tokio::test]
async fn a_publisher_does_not_deploy_their_own_version_unless_the_tenant_allows_it() {
    let mut e = env().await;
    let deployer = e.tenant("acme").await;
    let solo = e
        .principal(&deployer, "solo", &["builder", "deployer"])
        .await;
    e.publish(
        &solo,
        "fixture_greeter_v1",
        "tools/fixtures/greeter-v1/tool.toml",
    )
    .await;
    e.publish(
        &solo,
        "fixture_greeter_v2",
        "tools/fixtures/greeter-v2/tool.toml",
    )
    .await;

    // deny: the publisher deploys
    forbidden(
        e.w.deploy_tool(&solo, "greeter", "1.0.0").await,
        "separation of duties",
    );
    // allow: another deployer
    e.w.deploy_tool(&deployer, "greeter", "1.0.0")
        .await
        .expect("another deployer deploys");
    // deny: the publisher rolls forward or back to their own version
    forbidden(
        e.w.deploy_tool(&solo, "greeter", "2.0.0").await,
        "allow_self_deploy",
    );

    // relax, explicitly and on the record
    e.w.set_setting(&deployer, "allow_self_deploy", "true")
        .await
        .expect("setting");
    e.w.deploy_tool(&solo, "greeter", "2.0.0")
        .await
        .expect("relaxed: the publisher deploys");
    let history = e.w.events(&deployer).await.expect("history");
    assert!(
        history.iter().any(|ev| ev.action == "setting.set"
            && ev.subject == "allow_self_deploy"
            && ev.actor == "principal:acme-admin"
            && ev.detail["to"] == "true"),
        "the relaxation is recorded: {history:?}"
    );
    let settings = e.w.settings(&deployer).await.expect("settings");
    assert!(settings.allow_self_deploy);

    // tighten again: refused again
    e.w.set_setting(&deployer, "allow_self_deploy", "false")
        .await
        .expect("setting");
    forbidden(
        e.w.rollback_tool(&solo, "greeter", None).await,
        "separation of duties",
    );

    // settings are validated
    invalid(
        e.w.set_setting(&deployer, "allow_everything", "true").await,
        "unknown setting",
    );
    invalid(
        e.w.set_setting(&deployer, "allow_self_deploy", "yes").await,
        "does not accept",
    );
}

#[tokio::test]
async fn the_owner_approval_rule_is_a_recorded_setting() {
    use warden_policy::SeparationRule;
    let mut e = env().await;
    let deployer = e.tenant("acme").await;
    let settings = e.w.settings(&deployer).await.expect("settings");
    let rule = SeparationRule::ApproveOwnAgent;
    // hold by default: the owner may not decide, someone else may
    assert!(
        rule.check("p_owner", "p_owner", settings.relaxed(rule))
            .is_err()
    );
    assert!(
        rule.check("p_other", "p_owner", settings.relaxed(rule))
            .is_ok()
    );
    e.w.set_setting(&deployer, "allow_owner_approval", "true")
        .await
        .expect("setting");
    let settings = e.w.settings(&deployer).await.expect("settings");
    assert!(
        rule.check("p_owner", "p_owner", settings.relaxed(rule))
            .is_ok()
    );
    assert_eq!(settings.changes.len(), 1);
    assert_eq!(settings.changes[0].2, "principal:acme-admin");
}

// ---- registry ------------------------------------------------------------------

#[tokio::test]
async fn bad_publications_give_clear_errors_and_write_nothing() {
    let mut e = env().await;
    let deployer = e.tenant("acme").await;
    let builder = e.principal(&deployer, "b", &["builder", "viewer"]).await;
    e.publish(
        &builder,
        "fixture_greeter_v1",
        "tools/fixtures/greeter-v1/tool.toml",
    )
    .await;
    let greeter = std::fs::read(guest("fixture_greeter_v1")).expect("component");
    let manifest = std::fs::read_to_string(root().join("tools/fixtures/greeter-v1/tool.toml"))
        .expect("manifest");
    let tickets_manifest =
        std::fs::read_to_string(root().join("tools/tickets/tool.toml")).expect("manifest");
    let mut corrupted = greeter.clone();
    let mid = corrupted.len() / 2;
    for b in &mut corrupted[mid..mid + 64] {
        *b ^= 0xa5;
    }
    let malformed = std::fs::read(root().join("tools/fixtures/malformed.wasm")).expect("fixture");
    let manifest_v2 = manifest.replace("1.0.0", "2.0.0");

    let before = (
        e.w.inventory(&builder).await.expect("inventory").tools,
        e.w.events(&builder).await.expect("history").len(),
    );
    let cases: Vec<(&str, &[u8], String, &str)> = vec![
        ("not TOML", &greeter, "name = ".into(), "invalid manifest"),
        (
            "unknown capability",
            &greeter,
            format!("{manifest}\n[capabilities.sockets]\n"),
            "unknown field `sockets`",
        ),
        (
            "bad version",
            &greeter,
            manifest.replace("1.0.0", "one"),
            "not MAJOR.MINOR.PATCH",
        ),
        (
            "effect disagrees",
            &greeter,
            manifest.replace("effect = \"read\"", "effect = \"write\""),
            "manifest does not match the component",
        ),
        (
            "another tool's manifest",
            &greeter,
            tickets_manifest,
            "describes itself as `greeter`",
        ),
        (
            "version disagrees with the component",
            &greeter,
            manifest_v2,
            "describes itself as `greeter` 1.0.0",
        ),
        (
            "corrupted bytes",
            &corrupted,
            manifest.clone(),
            "component was refused",
        ),
        (
            "not a component",
            &malformed,
            manifest.clone(),
            "component was refused",
        ),
        (
            "duplicate version",
            &greeter,
            manifest.clone(),
            "already published",
        ),
    ];
    for (what, bytes, text, fragment) in cases {
        match e.w.publish_tool(&builder, bytes, &text).await {
            Err(Error::Invalid(m)) | Err(Error::Conflict(m)) if m.contains(fragment) => {}
            other => panic!("{what}: expected an error containing `{fragment}`, got {other:?}"),
        }
    }
    let after = (
        e.w.inventory(&builder).await.expect("inventory").tools,
        e.w.events(&builder).await.expect("history").len(),
    );
    assert_eq!(before.0.len(), after.0.len());
    assert_eq!(
        before.0[0].versions, after.0[0].versions,
        "no version written"
    );
    assert_eq!(before.1, after.1, "no history written");
    assert_eq!(blob_count(&e).await, 1, "no component bytes written");
}

async fn tenant_db(e: &Env, tenant: &str) -> sqlx::SqlitePool {
    let path = e.dir.path().join("tenants").join(format!("{tenant}.db"));
    sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("tenant database")
}

async fn blob_count(e: &Env) -> i64 {
    let db = tenant_db(e, "acme").await;
    let n = sqlx::query_scalar("SELECT COUNT(*) FROM blobs")
        .fetch_one(&db)
        .await
        .expect("count");
    db.close().await;
    n
}

/// Which greeter version answered a call: (report version, output version).
async fn answer(e: &Env, token: String) -> (String, Option<u64>) {
    let s = e.w.authenticate_agent(&token).await.expect("token");
    let r =
        e.w.invoke(&s, "greeter", "greet", r#"{"name":"ada"}"#)
            .await
            .expect("call");
    assert!(r.outcome.is_ok(), "{:?}", r.outcome);
    (r.version, r.output.expect("output")["version"].as_u64())
}

#[tokio::test]
async fn deploy_and_rollback_change_the_code_that_answers() {
    let mut e = env().await;
    let deployer = e.tenant("acme").await;
    let builder = e.principal(&deployer, "b", &["builder"]).await;
    e.publish(
        &builder,
        "fixture_greeter_v1",
        "tools/fixtures/greeter-v1/tool.toml",
    )
    .await;
    e.publish(
        &builder,
        "fixture_greeter_v2",
        "tools/fixtures/greeter-v2/tool.toml",
    )
    .await;
    invalid(
        e.w.rollback_tool(&deployer, "greeter", None).await,
        "never been deployed",
    );
    e.w.deploy_tool(&deployer, "greeter", "1.0.0")
        .await
        .expect("deploy");
    e.active_agent(&builder, &deployer, "bot").await;
    e.w.add_grant(&deployer, "bot", "greeter", &greeter_grant(), None)
        .await
        .expect("grant");
    let (_, token) = e.token_for(&deployer, "bot").await;
    assert_eq!(answer(&e, token.clone()).await, ("1.0.0".into(), Some(1)));
    e.w.deploy_tool(&deployer, "greeter", "2.0.0")
        .await
        .expect("deploy v2");
    assert_eq!(answer(&e, token.clone()).await, ("2.0.0".into(), Some(2)));
    let back =
        e.w.rollback_tool(&deployer, "greeter", None)
            .await
            .expect("rollback");
    assert_eq!(
        (back.version.as_str(), back.kind.as_str()),
        ("1.0.0", "rollback")
    );
    assert_eq!(answer(&e, token.clone()).await, ("1.0.0".into(), Some(1)));
    invalid(
        e.w.rollback_tool(&deployer, "greeter", Some("1.0.0")).await,
        "already live",
    );
    invalid(
        e.w.deploy_tool(&deployer, "greeter", "9.9.9").await,
        "not found",
    );
}

#[tokio::test]
async fn a_tampered_stored_component_is_refused_not_run() {
    let mut e = env().await;
    let deployer = e.tenant("acme").await;
    let builder = e.principal(&deployer, "b", &["builder"]).await;
    e.publish(
        &builder,
        "fixture_greeter_v1",
        "tools/fixtures/greeter-v1/tool.toml",
    )
    .await;
    e.w.deploy_tool(&deployer, "greeter", "1.0.0")
        .await
        .expect("deploy");
    e.active_agent(&builder, &deployer, "bot").await;
    e.w.add_grant(&deployer, "bot", "greeter", &greeter_grant(), None)
        .await
        .expect("grant");
    let (_, token) = e.token_for(&deployer, "bot").await;
    e.w.close().await;
    let db = tenant_db(&e, "acme").await;
    sqlx::query("UPDATE blobs SET bytes = X'0061736d0d000100'")
        .execute(&db)
        .await
        .expect("tamper");
    db.close().await;
    // A fresh host has no compiled copy in memory: it must read the blob.
    let (w, key, _) = open(e.dir.path()).await;
    assert!(key.is_none(), "the admin key is created only once");
    let s = w.authenticate_agent(&token).await.expect("token");
    match w.invoke(&s, "greeter", "greet", r#"{"name":"ada"}"#).await {
        Err(Error::Internal(m)) => assert!(m.contains("corrupt"), "{m}"),
        other => panic!("expected the corrupt blob to be refused, got {other:?}"),
    }
}

// ---- grants ----------------------------------------------------------------------

#[tokio::test]
async fn a_grant_wider_than_the_manifest_is_refused_naming_the_excess() {
    let mut e = env().await;
    let deployer = e.tenant("acme").await;
    let builder = e.principal(&deployer, "b", &["builder"]).await;
    e.publish(&builder, "tickets", "tools/tickets/tool.toml")
        .await;
    e.publish(
        &builder,
        "fixture_greeter_v1",
        "tools/fixtures/greeter-v1/tool.toml",
    )
    .await;
    e.w.create_agent(&builder, "bot", "testing", None, None)
        .await
        .expect("agent");
    invalid(
        e.w.add_grant(&deployer, "bot", "tickets", &greeter_grant(), None)
            .await,
        "no deployed version",
    );
    e.w.deploy_tool(&deployer, "tickets", "0.1.0")
        .await
        .expect("deploy");
    e.w.deploy_tool(&deployer, "greeter", "1.0.0")
        .await
        .expect("deploy");
    let cases = [
        // (tool, grant, refusal naming the excess)
        ("greeter", "[kv]\nnamespace = \"x\"\n", Some("kv")),
        (
            "greeter",
            "actions = [\"delete_everything\"]\n",
            Some("delete_everything"),
        ),
        (
            "tickets",
            "[fs]\ndirs = [{ host = \"/tmp\", guest = \"/data\", mode = \"read-only\" }]\n",
            Some("fs"),
        ),
        (
            "tickets",
            "[secrets]\nnames = [\"API_KEY\"]\n",
            Some("secrets"),
        ),
        ("tickets", "[kv]\nnamespace = \"desk\"\n[log]\n", None),
        ("greeter", "[rate]\nper_minute = 10\nper_day = 1000\n", None),
    ];
    for (tool, text, excess) in cases {
        let grant = Grant::from_toml(text).expect("grant parses");
        let r = e.w.add_grant(&deployer, "bot", tool, &grant, None).await;
        match (excess, r) {
            (None, Ok(g)) => assert!(g.revoked_at.is_none()),
            (Some(name), Err(Error::Invalid(m)))
                if m.contains("exceeds the tool's manifest") && m.contains(name) => {}
            (x, other) => panic!("{tool} {text}: expected {x:?}, got {other:?}"),
        }
    }
    // Unknown capability names in a grant file are refused by the parser.
    let e2 = Grant::from_toml("[sockets]\nallow = true\n").expect_err("unknown capability");
    assert!(e2.to_string().contains("unknown field `sockets`"), "{e2}");
    // Rate limits are stored with the grant.
    let stored =
        e.w.grants(&deployer, Some("bot"), false)
            .await
            .expect("grants");
    let g: Grant = serde_json::from_str(
        &stored
            .iter()
            .find(|g| g.tool == "greeter")
            .expect("greeter grant")
            .spec,
    )
    .expect("stored grant");
    assert_eq!(g.rate.and_then(|r| r.per_minute), Some(10));
}

#[tokio::test]
async fn revoked_and_expired_grants_deny_the_next_call() {
    let mut e = env().await;
    let deployer = e.tenant("acme").await;
    let builder = e.principal(&deployer, "b", &["builder"]).await;
    e.publish(
        &builder,
        "fixture_greeter_v1",
        "tools/fixtures/greeter-v1/tool.toml",
    )
    .await;
    e.w.deploy_tool(&deployer, "greeter", "1.0.0")
        .await
        .expect("deploy");
    e.active_agent(&builder, &deployer, "bot").await;
    let (cred, token) = e.token_for(&deployer, "bot").await;
    let input = r#"{"name":"ada"}"#;

    // deny: no grant yet
    refused(e.call(&token, "greeter", input).await, "has no grant");
    // allow
    e.w.add_grant(&deployer, "bot", "greeter", &greeter_grant(), Some(2))
        .await
        .expect("grant");
    assert!(matches!(
        e.call(&token, "greeter", input).await,
        Ok(Outcome::Ok)
    ));
    // deny: an action outside the grant
    let mut narrow = greeter_grant();
    narrow.actions = Some(["greet".to_owned()].into());
    e.w.add_grant(&deployer, "bot", "greeter", &narrow, Some(2))
        .await
        .expect("narrower grant replaces the old one");
    let s = e.w.authenticate_agent(&token).await.expect("token");
    assert!(matches!(
        e.w.invoke(&s, "greeter", "wave", "{}")
            .await
            .expect("call")
            .outcome,
        Outcome::NotGranted { .. } | Outcome::UnknownAction { .. }
    ));
    // deny: revoked, on the very next call
    e.w.revoke_grant(&deployer, "bot", "greeter")
        .await
        .expect("revoke");
    refused(e.call(&token, "greeter", input).await, "has no grant");
    invalid(
        e.w.revoke_grant(&deployer, "bot", "greeter").await,
        "live grant",
    );
    // deny: expired (a fresh token: the old one is an hour old by then)
    e.w.add_grant(&deployer, "bot", "greeter", &greeter_grant(), Some(1))
        .await
        .expect("grant");
    assert!(matches!(
        e.call(&token, "greeter", input).await,
        Ok(Outcome::Ok)
    ));
    e.advance(DAY + 1);
    refused(e.call(&token, "greeter", input).await, "expired");
    let fresh =
        e.w.exchange_credential(&cred, None, None)
            .await
            .expect("token")
            .token;
    refused(
        e.call(&fresh, "greeter", input).await,
        "grant of agent `bot` on tool `greeter` expired",
    );
    // The history shows every grant, revoked or not.
    let all =
        e.w.grants(&deployer, Some("bot"), true)
            .await
            .expect("grants");
    assert_eq!(all.len(), 3);
    assert_eq!(all.iter().filter(|g| g.revoked_at.is_some()).count(), 2);
}

// ---- agents and credentials ---------------------------------------------------------

#[tokio::test]
async fn suspended_decommissioned_and_overdue_agents_are_refused() {
    let mut e = env().await;
    let deployer = e.tenant("acme").await;
    let builder = e.principal(&deployer, "b", &["builder"]).await;
    e.publish(
        &builder,
        "fixture_greeter_v1",
        "tools/fixtures/greeter-v1/tool.toml",
    )
    .await;
    e.w.deploy_tool(&deployer, "greeter", "1.0.0")
        .await
        .expect("deploy");
    let input = r#"{"name":"ada"}"#;

    // A draft agent cannot get a token.
    e.w.create_agent(&builder, "bot", "testing", None, Some(10))
        .await
        .expect("agent");
    let cred = e.w.issue_credential(&deployer, "bot").await.expect("cred");
    forbidden(e.w.exchange_credential(&cred, None, None).await, "is draft");
    e.w.activate_agent(&deployer, "bot")
        .await
        .expect("activate");
    e.w.add_grant(&deployer, "bot", "greeter", &greeter_grant(), None)
        .await
        .expect("grant");
    let token =
        e.w.exchange_credential(&cred, None, None)
            .await
            .expect("token")
            .token;
    assert!(matches!(
        e.call(&token, "greeter", input).await,
        Ok(Outcome::Ok)
    ));

    // suspended: the token is refused until reactivation
    e.w.suspend_agent(&deployer, "bot", "incident 42")
        .await
        .expect("suspend");
    forbidden(e.w.authenticate_agent(&token).await, "is suspended");
    forbidden(
        e.w.exchange_credential(&cred, None, None).await,
        "is suspended",
    );
    e.w.activate_agent(&deployer, "bot")
        .await
        .expect("reactivate");
    assert!(matches!(
        e.call(&token, "greeter", input).await,
        Ok(Outcome::Ok)
    ));

    // A session authenticated before a suspension does not outlive it.
    let session = e.w.authenticate_agent(&token).await.expect("session");
    e.w.suspend_agent(&deployer, "bot", "again")
        .await
        .expect("suspend");
    forbidden(
        e.w.invoke(&session, "greeter", "greet", input).await,
        "is suspended",
    );
    e.w.activate_agent(&deployer, "bot")
        .await
        .expect("reactivate");

    // past renewal: suspended on first use, and flagged in the inventory
    e.advance(11 * DAY);
    let inv = e.w.inventory(&deployer).await.expect("inventory");
    assert!(
        inv.agents
            .iter()
            .any(|a| a.agent.name == "bot" && a.overdue)
    );
    forbidden(
        e.w.exchange_credential(&cred, None, None).await,
        "passed its renewal date",
    );
    let bot = |inv: &warden_service::Inventory| {
        inv.agents
            .iter()
            .find(|a| a.agent.name == "bot")
            .expect("bot")
            .clone()
    };
    assert_eq!(
        bot(&e.w.inventory(&deployer).await.expect("inventory"))
            .agent
            .status,
        AgentStatus::Suspended
    );
    forbidden(e.w.activate_agent(&deployer, "bot").await, "renew it first");
    e.w.renew_agent(&deployer, "bot", 30).await.expect("renew");
    e.w.activate_agent(&deployer, "bot")
        .await
        .expect("activate");
    let token =
        e.w.exchange_credential(&cred, None, None)
            .await
            .expect("token")
            .token;
    assert!(matches!(
        e.call(&token, "greeter", input).await,
        Ok(Outcome::Ok)
    ));

    // decommissioned: credentials, tokens and grants revoked; history kept
    e.w.decommission_agent(&deployer, "bot", "retired")
        .await
        .expect("decommission");
    assert!(matches!(
        e.w.authenticate_agent(&token).await,
        Err(Error::Unauthenticated(m)) if m.contains("revoked")
    ));
    assert!(matches!(
        e.w.exchange_credential(&cred, None, None).await,
        Err(Error::Unauthenticated(_))
    ));
    forbidden(e.w.activate_agent(&deployer, "bot").await, "decommissioned");
    forbidden(
        e.w.add_grant(&deployer, "bot", "greeter", &greeter_grant(), None)
            .await,
        "decommissioned",
    );
    let inv = e.w.inventory(&deployer).await.expect("inventory");
    let b = bot(&inv);
    assert_eq!(b.agent.status, AgentStatus::Decommissioned);
    assert!(b.grants.is_empty());
    let grants =
        e.w.grants(&deployer, Some("bot"), true)
            .await
            .expect("grant history");
    assert!(!grants.is_empty() && grants.iter().all(|g| g.revoked_at.is_some()));
    let history = e.w.events(&deployer).await.expect("history");
    for action in [
        "agent.create",
        "agent.active",
        "agent.suspended",
        "agent.renew",
        "agent.decommissioned",
        "credential.issue",
        "grant.add",
    ] {
        assert!(
            history
                .iter()
                .any(|ev| ev.action == action && ev.subject.starts_with("bot")),
            "history lacks {action}"
        );
    }
}

#[tokio::test]
async fn idle_agents_are_flagged() {
    let mut e = env().await;
    let deployer = e.tenant("acme").await;
    let builder = e.principal(&deployer, "b", &["builder"]).await;
    e.publish(
        &builder,
        "fixture_greeter_v1",
        "tools/fixtures/greeter-v1/tool.toml",
    )
    .await;
    e.w.deploy_tool(&deployer, "greeter", "1.0.0")
        .await
        .expect("deploy");
    e.active_agent(&builder, &deployer, "busy").await;
    e.active_agent(&builder, &deployer, "quiet").await;
    e.w.add_grant(&deployer, "busy", "greeter", &greeter_grant(), None)
        .await
        .expect("grant");
    e.w.set_setting(&deployer, "idle_days", "7")
        .await
        .expect("setting");
    e.advance(8 * DAY);
    let (_, token) = e.token_for(&deployer, "busy").await;
    assert!(matches!(
        e.call(&token, "greeter", r#"{"name":"x"}"#).await,
        Ok(Outcome::Ok)
    ));
    let inv = e.w.inventory(&deployer).await.expect("inventory");
    let flag = |n: &str| {
        inv.agents
            .iter()
            .find(|a| a.agent.name == n)
            .map(|a| (a.idle, a.agent.last_active_at.is_some()))
    };
    assert_eq!(flag("busy"), Some((false, true)));
    assert_eq!(flag("quiet"), Some((true, false)));
}

#[tokio::test]
async fn tokens_are_scoped_to_their_tenant_tools_and_lifetime() {
    let mut e = env().await;
    let acme = e.tenant("acme").await;
    let globex = e.tenant("globex").await;
    let builder = e.principal(&acme, "b", &["builder"]).await;
    e.publish(
        &builder,
        "fixture_greeter_v1",
        "tools/fixtures/greeter-v1/tool.toml",
    )
    .await;
    e.publish(&builder, "text", "tools/text/tool.toml").await;
    e.w.deploy_tool(&acme, "greeter", "1.0.0")
        .await
        .expect("deploy");
    e.w.deploy_tool(&acme, "text", "0.1.0")
        .await
        .expect("deploy");
    e.active_agent(&builder, &acme, "bot").await;
    e.w.add_grant(&acme, "bot", "greeter", &greeter_grant(), None)
        .await
        .expect("grant");
    e.w.add_grant(&acme, "bot", "text", &greeter_grant(), None)
        .await
        .expect("grant");
    let (cred, token) = e.token_for(&acme, "bot").await;
    let input = r#"{"name":"ada"}"#;
    assert!(matches!(
        e.call(&token, "greeter", input).await,
        Ok(Outcome::Ok)
    ));

    // Another tenant: the same secret with the other tenant's name finds nothing.
    let moved = token.replacen("_acme_", "_globex_", 1);
    assert!(matches!(
        e.w.authenticate_agent(&moved).await,
        Err(Error::Unauthenticated(_))
    ));
    let moved_cred = cred.replacen("_acme_", "_globex_", 1);
    assert!(matches!(
        e.w.exchange_credential(&moved_cred, None, None).await,
        Err(Error::Unauthenticated(_))
    ));
    // A principal of one tenant acts only in its own.
    forbidden(
        e.w.check_tenant(&acme, "globex"),
        "belongs to tenant `acme`",
    );
    forbidden(
        e.w.add_principal(&acme, "globex", "spy", &roles(&["viewer"]))
            .await,
        "belongs to tenant `acme`",
    );
    // Globex sees none of acme's agents.
    let inv = e.w.inventory(&globex).await.expect("inventory");
    assert!(inv.agents.is_empty() && inv.tools.is_empty());
    assert!(matches!(
        e.w.grants(&globex, Some("bot"), true).await,
        Err(Error::NotFound(_))
    ));

    // Narrowed to one tool.
    let narrow =
        e.w.exchange_credential(&cred, None, Some(vec!["text".into()]))
            .await
            .expect("token")
            .token;
    e.secrets.push(narrow.clone());
    refused(e.call(&narrow, "greeter", input).await, "narrowed to text");
    assert!(matches!(
        e.call(&narrow, "text", r#"{"text":"a b"}"#).await,
        Ok(Outcome::Ok)
    ));
    let s = e.w.authenticate_agent(&narrow).await.expect("token");
    let listed = e.w.granted_actions(&s).await.expect("actions");
    assert!(listed.iter().all(|a| a.tool == "text") && !listed.is_empty());

    // Lifetime: one hour by default, bounded on request.
    invalid(
        e.w.exchange_credential(
            &cred,
            Some(std::time::Duration::from_secs(7 * 86_400)),
            None,
        )
        .await,
        "token lifetime",
    );
    e.advance(3601);
    assert!(matches!(
        e.w.authenticate_agent(&token).await,
        Err(Error::Unauthenticated(m)) if m.contains("expired")
    ));
    // Malformed tokens and keys.
    for bad in ["", "wdn_tok_acme_xyz", "Bearer abc", &e.admin_key] {
        assert!(matches!(
            e.w.authenticate_agent(bad).await,
            Err(Error::Unauthenticated(_))
        ));
    }
    assert!(matches!(
        e.w.authenticate(&token).await,
        Err(Error::Unauthenticated(m)) if m.contains("not an operator key")
    ));
}

// ---- storage -------------------------------------------------------------------------

#[tokio::test]
async fn secrets_are_stored_only_as_hashes() {
    let mut e = env().await;
    let deployer = e.tenant("acme").await;
    let builder = e.principal(&deployer, "b", &["builder"]).await;
    e.active_agent(&builder, &deployer, "bot").await;
    e.token_for(&deployer, "bot").await;
    e.w.close().await;
    let mut files = Vec::new();
    for sub in ["", "tenants"] {
        for entry in std::fs::read_dir(e.dir.path().join(sub))
            .expect("data dir")
            .flatten()
        {
            if entry.path().is_file() {
                files.push(std::fs::read(entry.path()).expect("file"));
            }
        }
    }
    assert!(files.len() >= 2, "control and tenant databases");
    let contains = |needle: &str| {
        files
            .iter()
            .any(|f| f.windows(needle.len()).any(|w| w == needle.as_bytes()))
    };
    assert!(e.secrets.len() >= 5);
    for secret in &e.secrets {
        // Neither the whole secret nor its random part is anywhere on disk...
        let random = secret.rsplit('_').next().expect("random part");
        assert!(!contains(random), "plaintext secret found on disk");
        // ...but its hash is, so we looked in the right place.
        assert!(
            contains(&warden_store::hash_secret(secret)),
            "hash of a secret not found"
        );
    }
}

#[tokio::test]
async fn a_failed_multi_row_write_leaves_nothing() {
    let mut e = env().await;
    let deployer = e.tenant("acme").await;
    e.principal(&deployer, "dup", &["viewer"]).await;
    let db = tenant_db(&e, "acme").await;
    let count = |db: sqlx::SqlitePool| async move {
        let keys: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys")
            .fetch_one(&db)
            .await
            .expect("count");
        let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
            .fetch_one(&db)
            .await
            .expect("count");
        (keys, events)
    };
    let before = count(db.clone()).await;
    invalid(
        e.w.add_principal(&deployer, "acme", "dup", &roles(&["builder"]))
            .await,
        "already exists",
    );
    assert_eq!(
        count(db.clone()).await,
        before,
        "no key or event for a refused principal"
    );
    db.close().await;
}

/// The call cache never outlives a change, even one made by another process
/// on the same data directory (here a second `Warden`, as a CLI run or a
/// second server would be): each change is seen by the very next call.
#[tokio::test]
async fn changes_by_another_process_reach_the_next_call_through_the_cache() {
    let mut e = env().await;
    let deployer = e.tenant("acme").await;
    let builder = e.principal(&deployer, "b", &["builder"]).await;
    e.publish(
        &builder,
        "fixture_greeter_v1",
        "tools/fixtures/greeter-v1/tool.toml",
    )
    .await;
    e.publish(
        &builder,
        "fixture_greeter_v2",
        "tools/fixtures/greeter-v2/tool.toml",
    )
    .await;
    e.w.deploy_tool(&deployer, "greeter", "1.0.0")
        .await
        .expect("deploy");
    e.active_agent(&builder, &deployer, "bot").await;
    e.w.add_grant(&deployer, "bot", "greeter", &greeter_grant(), None)
        .await
        .expect("grant");
    let (_, token) = e.token_for(&deployer, "bot").await;
    // Warm the cache: several calls through the same Warden.
    for _ in 0..3 {
        assert_eq!(answer(&e, token.clone()).await.0, "1.0.0");
    }
    let (other, _, _) = open(e.dir.path()).await;
    let other_deployer = match &deployer {
        Caller::Principal(_) => other
            .authenticate(&e.secrets[1])
            .await
            .expect("the deployer's key works in the other process"),
        Caller::Admin => unreachable!(),
    };

    // A deployment by the other process: the next call runs the new version.
    other
        .deploy_tool(&other_deployer, "greeter", "2.0.0")
        .await
        .expect("deploy v2");
    assert_eq!(answer(&e, token.clone()).await.0, "2.0.0");

    // A revocation: the next call is refused.
    other
        .revoke_grant(&other_deployer, "bot", "greeter")
        .await
        .expect("revoke");
    refused(
        e.call(&token, "greeter", r#"{"name":"ada"}"#).await,
        "no grant",
    );

    // A new grant works again; then a suspension refuses the token at once.
    other
        .add_grant(&other_deployer, "bot", "greeter", &greeter_grant(), None)
        .await
        .expect("grant again");
    assert_eq!(answer(&e, token.clone()).await.0, "2.0.0");
    other
        .suspend_agent(&other_deployer, "bot", "testing the cache")
        .await
        .expect("suspend");
    forbidden(
        e.call(&token, "greeter", r#"{"name":"ada"}"#).await,
        "suspended",
    );
    // Time-based limits are checked on every call, cached or not.
    other
        .activate_agent(&other_deployer, "bot")
        .await
        .expect("activate");
    assert_eq!(answer(&e, token.clone()).await.0, "2.0.0");
    e.advance(2 * 3600);
    match e.call(&token, "greeter", r#"{"name":"ada"}"#).await {
        Err(Error::Unauthenticated(m)) => assert!(m.contains("expired"), "{m}"),
        other => panic!("an expired token must be refused, got {other:?}"),
    }
    other.close().await;
}

/// Rate limits per minute, hour and UTC day, the write quota and the daily
/// fuel budget each allow up to their bound, deny past it with their rule,
/// and allow again in the next window. Refusals are audited with the rule.
#[tokio::test]
async fn rate_limits_quotas_and_the_fuel_budget_hold_at_their_boundaries() {
    rate_limits_quotas_and_the_fuel_budget_hold_at_their_boundaries_on(env().await).await;
}

/// The same on PostgreSQL.
#[tokio::test]
async fn rate_limits_quotas_and_the_fuel_budget_hold_at_their_boundaries_on_postgres() {
    rate_limits_quotas_and_the_fuel_budget_hold_at_their_boundaries_on(env_on_postgres().await)
        .await;
}

async fn rate_limits_quotas_and_the_fuel_budget_hold_at_their_boundaries_on(mut e: Env) {
    let deployer = greeter_and_kv(&mut e).await;
    let mut greeter = greeter_grant();
    greeter.rate = Some(warden_policy::RateGrant {
        per_minute: Some(2),
        per_hour: Some(3),
        per_day: Some(4),
        writes_per_day: None,
        fuel_per_day: None,
    });
    e.w.add_grant(&deployer, "bot", "greeter", &greeter, None)
        .await
        .expect("grant");
    let (cred, _) = e.token_for(&deployer, "bot").await;
    let clock = e.clock.clone();
    let now = move || clock.load(Ordering::SeqCst);
    let fresh = || async {
        e.w.exchange_credential(&cred, None, None)
            .await
            .expect("token")
            .token
    };
    assert_eq!(now() % 3600, 0, "the test starts on an hour boundary");
    let greet = |token: String| {
        let w = &e.w;
        async move {
            let s = w.authenticate_agent(&token).await.expect("session");
            w.invoke(&s, "greeter", "greet", r#"{"name":"ada"}"#)
                .await
                .expect("answered")
                .outcome
        }
    };
    let denied = |o: Outcome, want: &str| match o {
        Outcome::Denied { rule, reason } => {
            assert_eq!(rule, want, "{reason}");
        }
        other => panic!("expected a {want} denial, got {other:?}"),
    };
    let t = fresh().await;
    assert_eq!(greet(t.clone()).await, Outcome::Ok);
    assert_eq!(greet(t.clone()).await, Outcome::Ok);
    denied(greet(t.clone()).await, "guard.rate.minute");
    e.advance(59);
    denied(greet(t.clone()).await, "guard.rate.minute");
    e.advance(1); // the next minute
    assert_eq!(greet(t.clone()).await, Outcome::Ok);
    denied(greet(t.clone()).await, "guard.rate.hour");
    e.advance(3600 - 60); // the next hour
    let t = fresh().await;
    assert_eq!(greet(t.clone()).await, Outcome::Ok);
    denied(greet(t.clone()).await, "guard.rate.day");
    e.advance(86_400 - now() % 86_400); // the next UTC day
    let t = fresh().await;
    assert_eq!(greet(t.clone()).await, Outcome::Ok);

    // The write quota counts write, destructive and external calls only.
    let mut kv = Grant::from_toml("[kv]\nnamespace = \"bot\"\nwrite = true\n").expect("kv");
    kv.rate = Some(warden_policy::RateGrant {
        per_minute: None,
        per_hour: None,
        per_day: None,
        writes_per_day: Some(2),
        fuel_per_day: None,
    });
    e.w.add_grant(&deployer, "bot", "kv", &kv, None)
        .await
        .expect("grant");
    let s = e.w.authenticate_agent(&t).await.expect("session");
    let kv_call = |action: &'static str, input: &'static str| {
        let w = &e.w;
        let s = s.clone();
        async move {
            w.invoke(&s, "kv", action, input)
                .await
                .expect("answered")
                .outcome
        }
    };
    assert_eq!(
        kv_call("put", r#"{"key":"a","value":"1"}"#).await,
        Outcome::Ok
    );
    assert_eq!(kv_call("delete", r#"{"key":"a"}"#).await, Outcome::Ok);
    denied(
        kv_call("put", r#"{"key":"b","value":"1"}"#).await,
        "guard.write_quota",
    );
    assert_eq!(
        kv_call("get", r#"{"key":"a"}"#).await,
        Outcome::Ok,
        "reads are not writes"
    );

    // The fuel budget: a call is admitted while budget remains; once spent,
    // the next is refused until the next UTC day.
    let mut fuel = greeter_grant();
    fuel.rate = Some(warden_policy::RateGrant {
        per_minute: None,
        per_hour: None,
        per_day: None,
        writes_per_day: None,
        fuel_per_day: Some(1),
    });
    let t = fresh().await;
    e.w.add_grant(&deployer, "bot", "greeter", &fuel, None)
        .await
        .expect("grant");
    // Today's greeter calls already burned fuel: the budget of 1 is spent.
    denied(greet(t.clone()).await, "guard.fuel_budget");
    e.advance(86_400);
    let t = fresh().await;
    assert_eq!(
        greet(t.clone()).await,
        Outcome::Ok,
        "a new day, a new budget"
    );
    denied(greet(t.clone()).await, "guard.fuel_budget");

    // Every refusal is in the audit trail with its rule.
    let bundle = e.w.audit_export(&deployer).await.expect("export");
    let rules: Vec<String> = bundle
        .records
        .iter()
        .filter_map(|r| warden_audit::Entry::decode(r.body.as_bytes()).ok())
        .filter(|en| en.kind == "invocation.decided" && en.decision.as_deref() == Some("deny"))
        .filter_map(|en| en.rule)
        .collect();
    for rule in [
        "guard.rate.minute",
        "guard.rate.hour",
        "guard.rate.day",
        "guard.write_quota",
        "guard.fuel_budget",
    ] {
        assert!(
            rules.iter().any(|r| r == rule),
            "{rule} not audited: {rules:?}"
        );
    }
}

/// Data classification per session: a session that has read confidential data
/// is stopped from calling an action that sends data to a public destination;
/// a fresh session (another data session, or another token) is not.
#[tokio::test]
async fn a_session_that_read_confidential_data_cannot_send_it_out() {
    a_session_that_read_confidential_data_cannot_send_it_out_on(env().await).await;
}

/// The same on PostgreSQL, where a second node sharing the database also
/// knows what the session read.
#[tokio::test]
async fn a_session_that_read_confidential_data_cannot_send_it_out_on_postgres() {
    a_session_that_read_confidential_data_cannot_send_it_out_on(env_on_postgres().await).await;
}

async fn a_session_that_read_confidential_data_cannot_send_it_out_on(mut e: Env) {
    let deployer = e.tenant("acme").await;
    let builder = e.principal(&deployer, "b", &["builder"]).await;
    let publish = |component: &str, manifest: String| {
        let bytes = std::fs::read(guest(component)).expect("component");
        let w = &e.w;
        let builder = builder.clone();
        async move {
            w.publish_tool(&builder, &bytes, &manifest)
                .await
                .expect("published");
        }
    };
    let text = std::fs::read_to_string(root().join("tools/text/tool.toml"))
        .expect("manifest")
        .replacen(
            "name = \"json_select\"\neffect = \"read\"\nclassification = \"internal\"",
            "name = \"json_select\"\neffect = \"read\"\nclassification = \"confidential\"",
            1,
        );
    assert!(text.contains("\"confidential\""));
    publish("text", text).await;
    let greeter = std::fs::read_to_string(root().join("tools/fixtures/greeter-v1/tool.toml"))
        .expect("manifest")
        .replacen(
            "classification = \"public\"",
            "classification = \"public\"\nsends_to = \"public\"",
            1,
        );
    publish("fixture_greeter_v1", greeter).await;
    for (tool, v) in [("text", "0.1.0"), ("greeter", "1.0.0")] {
        e.w.deploy_tool(&deployer, tool, v).await.expect("deploy");
    }
    e.active_agent(&builder, &deployer, "bot").await;
    for tool in ["text", "greeter"] {
        e.w.add_grant(&deployer, "bot", tool, &greeter_grant(), None)
            .await
            .expect("grant");
    }
    let (cred, token) = e.token_for(&deployer, "bot").await;
    let s = e.w.authenticate_agent(&token).await.expect("session");
    let greet = |s: warden_service::AgentSession| {
        let w = &e.w;
        async move {
            w.invoke(&s, "greeter", "greet", r#"{"name":"ada"}"#)
                .await
                .expect("answered")
                .outcome
        }
    };
    let read_confidential = |s: warden_service::AgentSession| {
        let w = &e.w;
        async move {
            let r = w
                .invoke(
                    &s,
                    "text",
                    "json_select",
                    r#"{"document":{"salary":1},"pointer":"/salary"}"#,
                )
                .await
                .expect("answered");
            assert!(r.outcome.is_ok(), "{:?}", r.outcome);
        }
    };
    // Allowed before anything above public was read.
    assert_eq!(greet(s.clone()).await, Outcome::Ok);
    read_confidential(s.clone()).await;
    match greet(s.clone()).await {
        Outcome::Denied { rule, reason } => {
            assert_eq!(rule, "guard.classification");
            assert!(
                reason.contains("confidential") && reason.contains("public"),
                "{reason}"
            );
        }
        other => panic!("expected a classification denial, got {other:?}"),
    }
    // A fresh session: a new token, or another data session id.
    let fresh =
        e.w.exchange_credential(&cred, None, None)
            .await
            .expect("token")
            .token;
    let s2 = e.w.authenticate_agent(&fresh).await.expect("session");
    assert_eq!(greet(s2.clone()).await, Outcome::Ok);
    let a = s2.clone().in_data_session("agent:a");
    let b = s2.clone().in_data_session("agent:b");
    read_confidential(a.clone()).await;
    assert!(matches!(greet(a.clone()).await, Outcome::Denied { .. }));
    assert_eq!(greet(b.clone()).await, Outcome::Ok);

    // Policy may hold such a call for approval instead of denying it; a
    // policy that does not hold leaves the denial in place.
    e.w.set_policy(
        &deployer,
        r#"@id("baseline") permit(principal, action, resource);"#,
    )
    .await
    .expect("policy");
    assert!(
        matches!(greet(a.clone()).await, Outcome::Denied { ref rule, .. } if rule == "guard.classification")
    );
    e.w.set_policy(
        &deployer,
        r#"
        @id("baseline") permit(principal, action, resource);
        @id("confidential-out-needs-approval")
        forbid(principal, action == Warden::Action::"invoke_unattended", resource)
        when { context.session.rank >= 3 && resource.sends_to == "public" };
        "#,
    )
    .await
    .expect("policy");
    match greet(a).await {
        Outcome::Held { rule, reason } => {
            assert_eq!(rule, "policy.hold");
            assert!(reason.contains("data classification"), "{reason}");
        }
        other => panic!("expected a hold, got {other:?}"),
    }
    assert_eq!(
        greet(b).await,
        Outcome::Ok,
        "a session that read nothing confidential"
    );
    // Several nodes: another node on the same database refuses the session
    // that read confidential data here, and still serves a clean one.
    if let Some(pg) = &e._pg {
        let (two, _, _) = open_on(
            e.dir.path(),
            Some(warden_store::PostgresOptions {
                url: pg.app_url(),
                max_connections: 4,
            }),
        )
        .await;
        let s2 = two.authenticate_agent(&fresh).await.expect("session");
        let on_two = |s: warden_service::AgentSession| {
            let w = &two;
            async move {
                w.invoke(&s, "greeter", "greet", r#"{"name":"ada"}"#)
                    .await
                    .expect("answered")
                    .outcome
            }
        };
        // (The policy in force now holds such a call instead of denying it;
        // the hold's reason is the classification refusal.)
        let outcome = on_two(s2.clone().in_data_session("agent:a")).await;
        assert!(
            matches!(&outcome, Outcome::Held { reason, .. } if reason.contains("data classification")),
            "the second node forgot what the session read: {outcome:?}"
        );
        assert_eq!(on_two(s2.in_data_session("agent:c")).await, Outcome::Ok);
        two.close().await;
        // Idle for a day, the session is deleted by the sweep (a single
        // process forgets it in memory): it starts clean again.
        e.advance(86_401);
        e.w.sweep().await.expect("sweep");
        let again =
            e.w.exchange_credential(&cred, None, None)
                .await
                .expect("token")
                .token;
        let s3 = e.w.authenticate_agent(&again).await.expect("session");
        assert_eq!(
            greet(s3.in_data_session("agent:a")).await,
            Outcome::Ok,
            "an idle session was not forgotten"
        );
    }
}

// ---- Cedar policy --------------------------------------------------------------

/// A tenant policy set: a baseline permit and rules the tests below exercise.
const POLICY: &str = r#"
@id("baseline")
permit(principal, action, resource);

@id("no-mallory")
@reason("mallory is not greeted")
forbid(principal, action == Warden::Action::"invoke", resource == Warden::ToolAction::"greeter/greet")
when { context.args.hasTag("name") && context.args.getTag("name") == "mallory" };

@id("bosses-need-approval")
@reason("greeting the boss needs a human")
forbid(principal, action == Warden::Action::"invoke_unattended", resource in Warden::Tool::"greeter")
when { context.args.hasTag("name") && context.args.getTag("name") == "boss" };

@id("no-deletes-in-production")
forbid(principal, action == Warden::Action::"invoke", resource in Warden::Tool::"kv")
when { context.effect == "destructive" && context.env == "production" };

@id("payroll-writes-held")
forbid(principal, action == Warden::Action::"import_unattended", resource is Warden::KvKey)
when { resource.operation == "set" && resource.key like "*payroll*" };

@id("secret-keys-off")
forbid(principal, action == Warden::Action::"import", resource is Warden::KvKey)
when { resource.key like "*secret*" };
"#;

/// Tenant `acme` with greeter 1.0.0 and kv 0.1.0 deployed and agent `bot`
/// active (no grant yet); returns the deployer.
async fn greeter_and_kv(e: &mut Env) -> Caller {
    let deployer = e.tenant("acme").await;
    let builder = e.principal(&deployer, "b", &["builder"]).await;
    e.publish(
        &builder,
        "fixture_greeter_v1",
        "tools/fixtures/greeter-v1/tool.toml",
    )
    .await;
    e.publish(&builder, "kv", "tools/kv/tool.toml").await;
    e.w.deploy_tool(&deployer, "greeter", "1.0.0")
        .await
        .expect("deploy");
    e.w.deploy_tool(&deployer, "kv", "0.1.0")
        .await
        .expect("deploy");
    e.active_agent(&builder, &deployer, "bot").await;
    deployer
}

/// A tenant with greeter and kv deployed, agent `bot` granted both, and the
/// policy above in force. Returns the deployer and an agent session.
async fn policy_env(e: &mut Env) -> (Caller, warden_service::AgentSession) {
    let deployer = greeter_and_kv(e).await;
    e.w.add_grant(&deployer, "bot", "greeter", &greeter_grant(), None)
        .await
        .expect("grant");
    let kv = Grant::from_toml("[kv]\nnamespace = \"bot\"\nwrite = true\n").expect("kv");
    e.w.add_grant(&deployer, "bot", "kv", &kv, None)
        .await
        .expect("grant");
    let v = e.w.set_policy(&deployer, POLICY).await.expect("policy set");
    assert_eq!(v.version, 1);
    let (_, token) = e.token_for(&deployer, "bot").await;
    let s = e.w.authenticate_agent(&token).await.expect("session");
    (deployer, s)
}

/// The decided entries of the trail, by invocation id.
async fn decided(e: &Env, by: &Caller, invocation: &str) -> warden_audit::Entry {
    let bundle = e.w.audit_export(by).await.expect("export");
    bundle
        .records
        .iter()
        .filter_map(|r| warden_audit::Entry::decode(r.body.as_bytes()).ok())
        .find(|en| en.kind == "invocation.decided" && en.invocation.as_deref() == Some(invocation))
        .expect("decided entry")
}

/// Table-driven: real calls under a real policy set, each row with the
/// decision, the rule and policy that made it, and what `policy test` says
/// about the same call.
#[tokio::test]
async fn cedar_policies_allow_deny_and_hold_real_calls_and_say_why() {
    let mut e = env().await;
    let (deployer, s) = policy_env(&mut e).await;
    // (tool, action, input, decision, rule, policies, reason fragment)
    type Row = (
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static [&'static str],
        &'static str,
    );
    let rows: [Row; 6] = [
        (
            "greeter",
            "greet",
            r#"{"name":"ada"}"#,
            "allow",
            "policy",
            &["baseline"],
            "",
        ),
        (
            "greeter",
            "greet",
            r#"{"name":"mallory"}"#,
            "deny",
            "policy",
            &["no-mallory"],
            "mallory is not greeted",
        ),
        (
            "greeter",
            "greet",
            r#"{"name":"boss"}"#,
            "hold",
            "policy.hold",
            &["bosses-need-approval"],
            "greeting the boss needs a human",
        ),
        (
            "kv",
            "put",
            r#"{"key":"a","value":"v"}"#,
            "allow",
            "policy",
            &["baseline"],
            "",
        ),
        (
            "kv",
            "delete",
            r#"{"key":"a"}"#,
            "deny",
            "policy",
            &["no-deletes-in-production"],
            "no-deletes-in-production",
        ),
        (
            "kv",
            "get",
            r#"{"key":"a"}"#,
            "allow",
            "policy",
            &["baseline"],
            "",
        ),
    ];
    for (tool, action, input, want, rule, policies, why) in rows {
        let r = e.w.invoke(&s, tool, action, input).await.expect("answered");
        let row = format!("{tool}/{action} {input}");
        match (&r.outcome, want) {
            (Outcome::Ok, "allow") => {}
            (Outcome::Denied { rule: got, reason }, "deny")
            | (Outcome::Held { rule: got, reason }, "hold") => {
                assert_eq!(got, rule, "{row}: {reason}");
                assert!(reason.contains(why), "{row}: {reason}");
                assert!(reason.contains("version 1"), "{row}: {reason}");
                assert_eq!(r.fuel_used, 0, "{row}: nothing ran");
            }
            (other, _) => panic!("{row}: expected {want}, got {other:?}"),
        }
        // The trail names the decision, the rule and the policies.
        let d = decided(&e, &deployer, &r.invocation_id).await;
        assert_eq!(d.decision.as_deref(), Some(want), "{row}");
        assert_eq!(d.rule.as_deref(), Some(rule), "{row}");
        assert_eq!(d.detail["policy_version"], 1, "{row}");
        assert_eq!(d.detail["policies"], serde_json::json!(policies), "{row}");
        // `policy test` says the same about the same call.
        let t =
            e.w.test_policy(
                &deployer,
                &warden_service::PolicyTest {
                    agent: "bot".into(),
                    tool: tool.into(),
                    action: action.into(),
                    args: Some(serde_json::from_str(input).expect("json")),
                    ..Default::default()
                },
            )
            .await
            .expect("policy test");
        assert_eq!(
            (t.decision.as_str(), t.rule.as_str()),
            (want, rule),
            "{row}: {t:?}"
        );
        assert_eq!(t.policies, policies, "{row}");
        assert!(t.reason.contains(why), "{row}: {}", t.reason);
    }

    // An import call the policy denies is an error the guest sees; the
    // call runs. (Held import calls: `holds_inside_a_call_suspend_until_decided`.)
    for (key, rule) in [("my-secret", "policy")] {
        let input = format!(r#"{{"key":"{key}","value":"v"}}"#);
        let r = e.w.invoke(&s, "kv", "put", &input).await.expect("answered");
        assert!(!r.outcome.is_ok(), "{key}: {:?}", r.outcome);
        let ev = r
            .imports
            .iter()
            .find(|i| i.resource == key)
            .unwrap_or_else(|| panic!("{key}: no import event in {:?}", r.imports));
        match &ev.decision {
            warden_policy::Decision::Deny { rule: got, .. } => assert_eq!(got, rule, "{key}"),
            other => panic!("{key}: {other:?}"),
        }
    }
    // The import test, through `policy test`.
    let t =
        e.w.test_policy(
            &deployer,
            &warden_service::PolicyTest {
                agent: "bot".into(),
                tool: "kv".into(),
                action: "put".into(),
                import: Some(warden_policy::ImportCall::KvSet {
                    key: "payroll-1".into(),
                    len: 1,
                }),
                ..Default::default()
            },
        )
        .await
        .expect("policy test");
    assert_eq!(
        (t.decision.as_str(), t.rule.as_str()),
        ("hold", "policy.hold")
    );
    // A candidate text is tested without being set.
    let t = e
        .w
        .test_policy(
            &deployer,
            &warden_service::PolicyTest {
                agent: "bot".into(),
                tool: "greeter".into(),
                action: "greet".into(),
                policy: Some(r#"@id("only-reads") permit(principal, action, resource) when { context.effect == "read" };"#.into()),
                ..Default::default()
            },
        )
        .await
        .expect("policy test");
    assert_eq!(t.decision, "allow", "greet is a read: {t:?}");
    assert_eq!(t.policies, ["only-reads"]);
    assert_eq!(t.policy_version, None);
}

/// An invalid upload is refused with the reason, and the version in force
/// stays in force; only a deployer may set policy; versions are kept.
#[tokio::test]
async fn an_invalid_policy_upload_is_refused_and_the_old_one_stays() {
    let mut e = env().await;
    let (deployer, s) = policy_env(&mut e).await;
    let viewer = e.principal(&deployer, "v", &["viewer"]).await;
    for (text, why) in [
        ("permit(principal, action, resource", "do not parse"),
        (
            r#"permit(principal, action, resource) when { context.no_such_field == 1 };"#,
            "do not validate",
        ),
        (
            r#"forbid(principal, action == Warden::Action::"invoke", resource) when { context.numbers.getTag("n") > 1 };"#,
            "unable to guarantee safety",
        ),
    ] {
        match e.w.set_policy(&deployer, text).await {
            Err(Error::Invalid(m)) => {
                assert!(m.contains(why), "{m}");
                assert!(m.contains("the version in force stays"), "{m}");
            }
            other => panic!("{text}: expected a refusal, got {other:?}"),
        }
    }
    assert!(matches!(
        e.w.set_policy(&viewer, "").await,
        Err(Error::Forbidden(_))
    ));
    let live = e.w.policy(&viewer, None).await.expect("read").expect("set");
    assert_eq!(live.version, 1);
    assert_eq!(live.text, POLICY);
    // Still decided by version 1.
    let r =
        e.w.invoke(&s, "greeter", "greet", r#"{"name":"mallory"}"#)
            .await
            .expect("answered");
    assert!(matches!(r.outcome, Outcome::Denied { ref rule, .. } if rule == "policy"));
    // A new valid version takes effect on the very next call; an empty one
    // turns the policy layer off; old versions stay readable.
    let v2 =
        e.w.set_policy(
            &deployer,
            r#"@id("all") permit(principal, action, resource);"#,
        )
        .await
        .expect("v2");
    assert_eq!(v2.version, 2);
    let r =
        e.w.invoke(&s, "greeter", "greet", r#"{"name":"mallory"}"#)
            .await
            .expect("answered");
    assert_eq!(r.outcome, Outcome::Ok);
    e.w.set_policy(&deployer, "").await.expect("v3");
    let r =
        e.w.invoke(&s, "kv", "delete", r#"{"key":"a"}"#)
            .await
            .expect("answered");
    assert_eq!(r.outcome, Outcome::Ok, "no policy layer: the grant decides");
    let d = decided(&e, &deployer, &r.invocation_id).await;
    assert_eq!(d.rule.as_deref(), Some("grant"));
    assert_eq!(
        e.w.policy(&viewer, Some(1))
            .await
            .expect("v1")
            .expect("v1")
            .text,
        POLICY
    );
    assert!(matches!(
        e.w.policy(&viewer, Some(9)).await,
        Err(Error::NotFound(_))
    ));
    let events = e.w.events(&deployer).await.expect("history");
    assert_eq!(
        events.iter().filter(|ev| ev.action == "policy.set").count(),
        3
    );
}

/// A policy whose evaluation errors (Long overflow) never allows: Cedar skips
/// it, Warden denies and names it.
#[tokio::test]
async fn a_policy_that_errors_denies_the_call() {
    let mut e = env().await;
    let (deployer, s) = policy_env(&mut e).await;
    e.w.set_policy(
        &deployer,
        r#"
        @id("baseline") permit(principal, action, resource);
        @id("overflows") forbid(principal, action == Warden::Action::"invoke", resource)
        when { context.counters.minute + 9223372036854775807 > 10 };
        "#,
    )
    .await
    .expect("valid policy");
    let greet = || e.w.invoke(&s, "greeter", "greet", r#"{"name":"ada"}"#);
    // The first call of the minute: 0 + MAX does not overflow, the forbid
    // applies.
    match greet().await.expect("answered").outcome {
        Outcome::Denied { rule, .. } => assert_eq!(rule, "policy"),
        other => panic!("{other:?}"),
    }
    // The second: 1 + MAX overflows; the forbid errors and is skipped by
    // Cedar, so the baseline alone would allow. It is denied.
    let r = greet().await.expect("answered");
    match &r.outcome {
        Outcome::Denied { rule, reason } => {
            assert_eq!(rule, "policy.error");
            assert!(reason.contains("overflow"), "{reason}");
        }
        other => panic!("an erroring policy must deny: {other:?}"),
    }
    assert_eq!(r.fuel_used, 0);
    let d = decided(&e, &deployer, &r.invocation_id).await;
    assert_eq!(d.detail["policies"], serde_json::json!(["overflows"]));
}

/// Fail closed: a failing policy store (injected, and a stored policy that
/// was tampered with), failing counters and a schema that cannot be compiled
/// each deny with the reason, and nothing runs.
#[tokio::test]
async fn failures_in_the_policy_store_counters_and_schemas_deny() {
    let mut e = env().await;
    let (deployer, s) = policy_env(&mut e).await;
    let put = || {
        e.w.invoke(&s, "kv", "put", r#"{"key":"x","value":"written"}"#)
    };
    let faults = e.w.faults();
    for (flag, rule, why) in [
        (&faults.policy_store, "policy.store", "policy store failed"),
        (&faults.counters, "guard.counters", "counters cannot count"),
        (&faults.schema, "guard.input_schema", "cannot be compiled"),
    ] {
        flag.store(true, Ordering::SeqCst);
        let r = put().await.expect("answered");
        flag.store(false, Ordering::SeqCst);
        match &r.outcome {
            Outcome::Denied { rule: got, reason } => {
                assert_eq!(got, rule);
                assert!(reason.contains(why), "{reason}");
            }
            other => panic!("{rule}: expected a denial, got {other:?}"),
        }
        assert_eq!(r.fuel_used, 0, "{rule}: nothing ran");
        assert!(r.imports.is_empty(), "{rule}: no import call");
        let d = decided(&e, &deployer, &r.invocation_id).await;
        assert_eq!(d.decision.as_deref(), Some("deny"));
        assert_eq!(d.rule.as_deref(), Some(rule));
    }
    // Nothing was written by the refused calls.
    let got =
        e.w.invoke(&s, "kv", "get", r#"{"key":"x"}"#)
            .await
            .expect("answered");
    assert!(got.outcome.is_ok(), "{:?}", got.outcome);
    assert!(
        !got.output.expect("output").to_string().contains("written"),
        "a refused call wrote"
    );
    // Tamper with the stored policy in the database: the set no longer
    // matches its recorded hash, and every call is denied until a valid
    // version is set.
    let db = e.dir.path().join("tenants").join("acme.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("open tenant db");
    sqlx::query("UPDATE policies SET text = 'permit(principal, action, resource);'")
        .execute(&pool)
        .await
        .expect("tamper");
    pool.close().await;
    let r = put().await.expect("answered");
    match &r.outcome {
        Outcome::Denied { rule, reason } => {
            assert_eq!(rule, "policy.store");
            assert!(
                reason.contains("does not match its recorded SHA-256"),
                "{reason}"
            );
        }
        other => panic!("tampered policy: expected a denial, got {other:?}"),
    }
    e.w.set_policy(&deployer, POLICY)
        .await
        .expect("a valid version");
    assert!(put().await.expect("answered").outcome.is_ok());
}

// ---- approvals ---------------------------------------------------------------

/// Greeting the boss and payroll kv writes are held; alice, bob and carol
/// may approve (and nobody else: the baseline permits no `approve`).
const APPROVAL_POLICY: &str = r#"
@id("baseline")
permit(principal, action in [Warden::Action::"invoke", Warden::Action::"invoke_unattended",
                             Warden::Action::"import", Warden::Action::"import_unattended"], resource);

@id("bosses-need-approval")
@reason("greeting the boss needs a human")
forbid(principal, action == Warden::Action::"invoke_unattended", resource in Warden::Tool::"greeter")
when { context.args.hasTag("name") && context.args.getTag("name") == "boss" };

@id("payroll-writes-held")
forbid(principal, action == Warden::Action::"import_unattended", resource is Warden::KvKey)
when { resource.operation == "set" && resource.key like "*payroll*" };

@id("approvers")
permit(principal, action == Warden::Action::"approve", resource)
when { ["alice", "bob", "carol"].contains(principal.name) };
"#;

struct Approvers {
    deployer: Caller,
    alice: Caller,
    bob: Caller,
    carol: Caller,
    /// Holds the approver role, but no policy permits them.
    dave: Caller,
    /// Viewer only.
    vic: Caller,
    bot: warden_service::AgentSession,
}

/// `policy_env`'s tenant with [`APPROVAL_POLICY`] and the approvers. The kv
/// grant's deadline is 1 s, so waiting for an approver longer than that
/// shows the wait is not charged to the call.
async fn approval_env(e: &mut Env) -> Approvers {
    let deployer = greeter_and_kv(e).await;
    e.w.add_grant(&deployer, "bot", "greeter", &greeter_grant(), None)
        .await
        .expect("grant");
    let mut kv = Grant::from_toml("[kv]\nnamespace = \"bot\"\nwrite = true\n").expect("kv");
    kv.limits.deadline_ms = 1_000;
    e.w.add_grant(&deployer, "bot", "kv", &kv, None)
        .await
        .expect("grant");
    e.w.set_policy(&deployer, APPROVAL_POLICY)
        .await
        .expect("policy set");
    let alice = e.principal(&deployer, "alice", &["approver"]).await;
    let bob = e.principal(&deployer, "bob", &["approver"]).await;
    let carol = e.principal(&deployer, "carol", &["approver"]).await;
    let dave = e.principal(&deployer, "dave", &["approver"]).await;
    let vic = e.principal(&deployer, "vic", &["viewer"]).await;
    let (_, token) = e.token_for(&deployer, "bot").await;
    let bot = e.w.authenticate_agent(&token).await.expect("session");
    Approvers {
        deployer,
        alice,
        bob,
        carol,
        dave,
        vic,
        bot,
    }
}

/// Greets the boss: held. Returns the approval id and the invocation id.
async fn hold_boss(e: &Env, a: &Approvers) -> (String, String) {
    let r =
        e.w.invoke(&a.bot, "greeter", "greet", r#"{"name":"boss"}"#)
            .await
            .expect("answered");
    match &r.outcome {
        Outcome::Held { rule, reason } => {
            assert_eq!(rule, "policy.hold");
            assert!(reason.contains("pending"), "{reason}");
        }
        other => panic!("not held: {other:?}"),
    }
    assert!(r.approval_id.starts_with("apr_"), "{}", r.approval_id);
    assert_eq!(r.fuel_used, 0, "nothing ran");
    (r.approval_id, r.invocation_id)
}

/// The kinds of the audit entries about approval `id`, in order.
async fn approval_trail(e: &Env, by: &Caller, id: &str) -> Vec<String> {
    let bundle = e.w.audit_export(by).await.expect("export");
    bundle
        .records
        .iter()
        .filter_map(|r| warden_audit::Entry::decode(r.body.as_bytes()).ok())
        .filter(|en| en.detail.get("approval").and_then(|v| v.as_str()) == Some(id))
        .map(|en| en.kind)
        .collect()
}

/// How many times invocation `inv` finished (ran) in the trail.
async fn runs(e: &Env, by: &Caller, inv: &str) -> usize {
    let bundle = e.w.audit_export(by).await.expect("export");
    bundle
        .records
        .iter()
        .filter_map(|r| warden_audit::Entry::decode(r.body.as_bytes()).ok())
        .filter(|en| en.kind == "invocation.finished" && en.invocation.as_deref() == Some(inv))
        .count()
}

/// Waits (bounded) until `by` sees a pending approval; returns it.
async fn first_pending(e: &Env, by: &Caller) -> warden_service::approvals::ApprovalView {
    for _ in 0..500 {
        if let Some(v) = e.w.pending_approvals(by, false).await.expect("list").pop() {
            return v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("no approval became pending");
}

fn conflict(r: Result<warden_service::approvals::ApprovalView, Error>, fragment: &str) {
    match r {
        Err(Error::Conflict(m)) if m.contains(fragment) => {}
        other => panic!("expected a conflict with `{fragment}`, got {other:?}"),
    }
}

use warden_service::approvals::Vote;

/// Approve, reject, expire and cancel, side by side: only approve runs the
/// call, once, and the agent collects the result by approval or invocation id.
#[tokio::test]
async fn held_calls_run_once_approved_and_never_otherwise() {
    held_calls_run_once_approved_and_never_otherwise_on(env().await).await;
}

/// The same on PostgreSQL.
#[tokio::test]
async fn held_calls_run_once_approved_and_never_otherwise_on_postgres() {
    held_calls_run_once_approved_and_never_otherwise_on(env_on_postgres().await).await;
}

async fn held_calls_run_once_approved_and_never_otherwise_on(mut e: Env) {
    let mut a = approval_env(&mut e).await;

    // Approve: runs once, now; the agent reads the result.
    let (id, inv) = hold_boss(&e, &a).await;
    let listed = e.w.pending_approvals(&a.alice, false).await.expect("list");
    assert_eq!(listed.len(), 1);
    let shown = &listed[0].approval;
    assert_eq!(shown.input, r#"{"name":"boss"}"#, "the exact payload");
    assert_eq!(
        (
            shown.tool.as_str(),
            shown.action.as_str(),
            shown.status.as_str()
        ),
        ("greeter", "greet", "pending")
    );
    assert_eq!(shown.policy_version, 1);
    let v =
        e.w.decide_approval(&a.alice, &id, Vote::Approve, "ok")
            .await
            .expect("approved");
    assert_eq!(v.approval.status, "executed");
    let result = v.approval.result.as_ref().expect("result stored");
    assert_eq!(result["outcome"], "ok", "{result}");
    let got =
        e.w.agent_approval(&a.bot, &id, std::time::Duration::ZERO)
            .await
            .expect("agent reads its approval");
    assert_eq!(got.approval.result.as_ref(), Some(result));
    assert_eq!(
        e.w.approval_of_invocation(&a.bot, &inv)
            .await
            .expect("by invocation"),
        Some(id.clone())
    );
    assert_eq!(runs(&e, &a.deployer, &inv).await, 1);
    assert_eq!(
        approval_trail(&e, &a.deployer, &id).await,
        [
            "approval.requested",
            "invocation.decided",
            "approval.vote",
            "approval.approved",
            "approval.executing",
            "invocation.decided",
            "approval.executed"
        ],
        "the hold's decision, then the approved run's"
    );
    // Replaying the consumed approval is refused; it never runs again.
    conflict(
        e.w.decide_approval(&a.bob, &id, Vote::Approve, "").await,
        "executed",
    );
    e.w.resume_approvals(false).await.expect("sweep");
    assert_eq!(runs(&e, &a.deployer, &inv).await, 1);

    // Reject: vetoed, never runs, the agent sees it.
    let (id, inv) = hold_boss(&e, &a).await;
    let v =
        e.w.decide_approval(&a.bob, &id, Vote::Reject, "not today")
            .await
            .expect("rejected");
    assert_eq!(v.approval.status, "rejected");
    assert!(v.approval.result.is_none());
    conflict(
        e.w.decide_approval(&a.alice, &id, Vote::Approve, "").await,
        "rejected",
    );
    assert_eq!(runs(&e, &a.deployer, &inv).await, 0);

    // Expire: past the expiry a vote is refused and the hold is expired.
    let (id, inv) = hold_boss(&e, &a).await;
    e.advance(3_601);
    conflict(
        e.w.decide_approval(&a.alice, &id, Vote::Approve, "").await,
        "expired",
    );
    assert_eq!(
        e.w.approval(&a.vic, &id)
            .await
            .expect("viewer reads")
            .approval
            .status,
        "expired"
    );
    assert_eq!(runs(&e, &a.deployer, &inv).await, 0);
    assert_eq!(
        approval_trail(&e, &a.deployer, &id).await,
        [
            "approval.requested",
            "invocation.decided",
            "approval.expired"
        ]
    );

    // Cancel: the requesting agent withdraws it; nothing runs. (A fresh
    // token: the clock moved past the first one's hour.)
    let (_, token) = e.token_for(&a.deployer, "bot").await;
    a.bot = e.w.authenticate_agent(&token).await.expect("session");
    let (id, inv) = hold_boss(&e, &a).await;
    let v = e.w.cancel_approval(&a.bot, &id).await.expect("cancelled");
    assert_eq!(v.approval.status, "cancelled");
    conflict(
        e.w.decide_approval(&a.alice, &id, Vote::Approve, "").await,
        "cancelled",
    );
    assert_eq!(runs(&e, &a.deployer, &inv).await, 0);
    assert!(
        e.w.pending_approvals(&a.alice, true)
            .await
            .expect("list")
            .is_empty(),
        "nothing left pending"
    );
}

/// 2-of-3 quorum, a veto, and who may never decide: the agent's owner, an
/// approver the policy does not name, a principal without the role, and the
/// agent itself (an agent token is not an operator key).
#[tokio::test]
async fn quorum_veto_and_approver_authority() {
    quorum_veto_and_approver_authority_on(env().await).await;
}

/// The same on PostgreSQL.
#[tokio::test]
async fn quorum_veto_and_approver_authority_on_postgres() {
    quorum_veto_and_approver_authority_on(env_on_postgres().await).await;
}

async fn quorum_veto_and_approver_authority_on(mut e: Env) {
    let a = approval_env(&mut e).await;
    e.w.set_setting(&a.deployer, "approvals_required", "2")
        .await
        .expect("setting");

    // 2 of 3: one approval is not enough; the second runs it.
    let (id, inv) = hold_boss(&e, &a).await;
    let v =
        e.w.decide_approval(&a.alice, &id, Vote::Approve, "")
            .await
            .expect("vote");
    assert_eq!((v.approval.status.as_str(), v.approvals), ("pending", 1));
    conflict(
        e.w.decide_approval(&a.alice, &id, Vote::Approve, "").await,
        "already voted",
    );
    assert_eq!(runs(&e, &a.deployer, &inv).await, 0);
    let v =
        e.w.decide_approval(&a.carol, &id, Vote::Approve, "")
            .await
            .expect("vote");
    assert_eq!(v.approval.status, "executed");
    assert_eq!(runs(&e, &a.deployer, &inv).await, 1);

    // A veto: one approval, then a rejection, rejects.
    let (id, inv) = hold_boss(&e, &a).await;
    e.w.decide_approval(&a.alice, &id, Vote::Approve, "")
        .await
        .expect("vote");
    let v =
        e.w.decide_approval(&a.bob, &id, Vote::Reject, "no")
            .await
            .expect("veto");
    assert_eq!(v.approval.status, "rejected");
    assert_eq!(runs(&e, &a.deployer, &inv).await, 0);

    let (id, _) = hold_boss(&e, &a).await;
    // Outside the policy: the role is not enough.
    forbidden(
        e.w.decide_approval(&a.dave, &id, Vote::Approve, "").await,
        "no policy permits `dave`",
    );
    let dave_list = e.w.pending_approvals(&a.dave, true).await.expect("list");
    assert_eq!(dave_list[0].may_decide, Some(false));
    assert!(
        e.w.pending_approvals(&a.dave, false)
            .await
            .expect("list")
            .is_empty()
    );
    // Without the role: a viewer reads, never decides.
    assert!(matches!(
        e.w.decide_approval(&a.vic, &id, Vote::Approve, "").await,
        Err(Error::Forbidden(m)) if m.contains("approver role")
    ));
    // The agent's owner (the builder `b` drafted it) may not approve it,
    // even holding the role and a policy permit.
    let mut owner_env = env().await;
    let owner_a = approval_env(&mut owner_env).await;
    let both = owner_env
        .principal(&owner_a.deployer, "carl", &["builder", "approver"])
        .await;
    let relaxed_policy = APPROVAL_POLICY.replace(r#""carol"]"#, r#""carol", "carl"]"#);
    owner_env
        .w
        .set_policy(&owner_a.deployer, &relaxed_policy)
        .await
        .expect("policy");
    owner_env
        .active_agent(&both, &owner_a.deployer, "carlbot")
        .await;
    owner_env
        .w
        .add_grant(
            &owner_a.deployer,
            "carlbot",
            "greeter",
            &greeter_grant(),
            None,
        )
        .await
        .expect("grant");
    let (_, t) = owner_env.token_for(&owner_a.deployer, "carlbot").await;
    let carlbot = owner_env.w.authenticate_agent(&t).await.expect("session");
    let r = owner_env
        .w
        .invoke(&carlbot, "greeter", "greet", r#"{"name":"boss"}"#)
        .await
        .expect("held");
    forbidden(
        owner_env
            .w
            .decide_approval(&both, &r.approval_id, Vote::Approve, "mine")
            .await,
        "you own this agent",
    );
    assert!(
        approval_trail(&owner_env, &owner_a.deployer, &r.approval_id)
            .await
            .contains(&"approval.refused".to_owned())
    );
    // The agent itself has no operator key at all.
    let (_, token) = e.token_for(&a.deployer, "bot").await;
    assert!(matches!(
        e.w.authenticate(&token).await,
        Err(Error::Unauthenticated(_))
    ));
    // Its refused attempts are in the trail.
    let trail = approval_trail(&e, &a.deployer, &id).await;
    assert_eq!(
        trail,
        [
            "approval.requested",
            "invocation.decided",
            "approval.refused"
        ]
    );
}

/// Exactly one execution when approvers race, and a payload changed after
/// it was held (the stored input edited, or the tool redeployed) is refused.
#[tokio::test]
async fn concurrent_approvals_run_once_and_swapped_payloads_are_refused() {
    let mut e = env().await;
    let a = approval_env(&mut e).await;
    // Racing approvers (quorum 1) and a racing sweep.
    let (id, inv) = hold_boss(&e, &a).await;
    let (r1, r2, r3) = tokio::join!(
        e.w.decide_approval(&a.alice, &id, Vote::Approve, ""),
        e.w.decide_approval(&a.bob, &id, Vote::Approve, ""),
        e.w.resume_approvals(false),
    );
    r3.expect("sweep");
    assert_eq!(
        [r1.is_ok(), r2.is_ok()].iter().filter(|x| **x).count(),
        1,
        "one vote decides, the other is refused: {r1:?} {r2:?}"
    );
    assert_eq!(runs(&e, &a.deployer, &inv).await, 1, "exactly one run");

    // The stored request edited after it was held: refused at execution.
    let (id, inv) = hold_boss(&e, &a).await;
    let db = tenant_db(&e, "acme").await;
    sqlx::query("UPDATE approvals SET input = ? WHERE id = ?")
        .bind(r#"{"name":"everyone"}"#)
        .bind(&id)
        .execute(&db)
        .await
        .expect("tamper");
    let v =
        e.w.decide_approval(&a.alice, &id, Vote::Approve, "")
            .await
            .expect("vote");
    let result = v.approval.result.expect("result");
    assert_eq!(result["outcome"], "denied", "{result}");
    assert_eq!(result["rule"], "approval.payload", "{result}");
    assert!(
        result["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no longer matches its hash")),
        "{result}"
    );
    assert_eq!(runs(&e, &a.deployer, &inv).await, 0);

    // The tool changed between the hold and the approval: refused.
    let (id, inv) = hold_boss(&e, &a).await;
    let builder2 = e.principal(&a.deployer, "b2", &["builder"]).await;
    e.publish(
        &builder2,
        "fixture_greeter_v2",
        "tools/fixtures/greeter-v2/tool.toml",
    )
    .await;
    e.w.deploy_tool(&a.deployer, "greeter", "2.0.0")
        .await
        .expect("deploy v2");
    let v =
        e.w.decide_approval(&a.alice, &id, Vote::Approve, "")
            .await
            .expect("vote");
    let result = v.approval.result.expect("result");
    assert_eq!(result["rule"], "approval.payload", "{result}");
    assert!(
        result["reason"]
            .as_str()
            .is_some_and(|r| r.contains("now version 2.0.0")),
        "{result}"
    );
    assert_eq!(runs(&e, &a.deployer, &inv).await, 0);
}

/// Approved but not yet run when the process stopped: the next start runs it
/// once. A call suspended inside on a hold when the process stopped is
/// aborted and recorded, never resumed.
#[tokio::test]
async fn restart_runs_approved_calls_once_and_aborts_suspended_ones() {
    let mut e = env().await;
    let a = approval_env(&mut e).await;
    let (id, inv) = hold_boss(&e, &a).await;
    e.w.faults()
        .stop_before_execution
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let v =
        e.w.decide_approval(&a.alice, &id, Vote::Approve, "")
            .await
            .expect("vote");
    assert_eq!(v.approval.status, "approved");
    assert_eq!(runs(&e, &a.deployer, &inv).await, 0);

    // A call suspended on a held kv write, then the process "dies" (the
    // call's future is dropped).
    let put =
        e.w.invoke(&a.bot, "kv", "put", r#"{"key":"payroll-1","value":"9"}"#);
    tokio::select! {
        r = put => panic!("the held write finished: {r:?}"),
        v = first_pending(&e, &a.alice) => assert_eq!(v.approval.kind, "import"),
    }
    e.w.close().await;
    let e = Env {
        w: open(e.dir.path()).await.0,
        ..e
    };
    let resumed = e.w.resume_approvals(true).await.expect("resume");
    assert_eq!(resumed.executed, std::slice::from_ref(&id));
    assert_eq!(resumed.aborted.len(), 1, "{resumed:?}");
    assert_eq!(runs(&e, &a.deployer, &inv).await, 1);
    let aborted =
        e.w.approval(&a.alice, &resumed.aborted[0])
            .await
            .expect("show");
    assert_eq!(aborted.approval.status, "aborted");
    assert!(
        approval_trail(&e, &a.deployer, &resumed.aborted[0])
            .await
            .contains(&"approval.aborted".to_owned())
    );
    // Nothing runs twice on the next start.
    let again = e.w.resume_approvals(true).await.expect("resume");
    assert!(
        again.executed.is_empty() && again.aborted.is_empty(),
        "{again:?}"
    );
    assert_eq!(runs(&e, &a.deployer, &inv).await, 1);
}

/// A hold inside a call: the instance waits on the held kv write. Approved,
/// the write happens and the call completes (after waiting longer than its
/// 1 s deadline, which the wait is not charged to); rejected, the guest
/// sees a denial and the value is never written.
#[tokio::test]
async fn holds_inside_a_call_suspend_until_decided() {
    holds_inside_a_call_suspend_until_decided_on(env().await).await;
}

/// The same on PostgreSQL.
#[tokio::test]
async fn holds_inside_a_call_suspend_until_decided_on_postgres() {
    holds_inside_a_call_suspend_until_decided_on(env_on_postgres().await).await;
}

async fn holds_inside_a_call_suspend_until_decided_on(mut e: Env) {
    let a = approval_env(&mut e).await;
    let approve = async {
        let v = first_pending(&e, &a.alice).await;
        assert_eq!(v.approval.kind, "import");
        assert_eq!(
            v.approval.import.as_ref().expect("import request")["key"],
            "payroll-1"
        );
        tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
        e.w.decide_approval(&a.alice, &v.approval.id, Vote::Approve, "")
            .await
            .expect("approved")
    };
    let (r, v) = tokio::join!(
        e.w.invoke(&a.bot, "kv", "put", r#"{"key":"payroll-1","value":"9"}"#),
        approve
    );
    let r = r.expect("answered");
    assert!(r.outcome.is_ok(), "{:?}", r.outcome);
    let got =
        e.w.invoke(&a.bot, "kv", "get", r#"{"key":"payroll-1"}"#)
            .await
            .expect("get");
    assert!(got.output.expect("output").to_string().contains('9'));
    let id = v.approval.id;
    assert_eq!(
        e.w.approval(&a.alice, &id)
            .await
            .expect("show")
            .approval
            .status,
        "consumed"
    );
    assert_eq!(
        approval_trail(&e, &a.deployer, &id).await,
        [
            "approval.requested",
            "approval.vote",
            "approval.approved",
            "approval.consumed"
        ]
    );

    // Rejected: the write never happens.
    let reject = async {
        let v = first_pending(&e, &a.alice).await;
        e.w.decide_approval(&a.bob, &v.approval.id, Vote::Reject, "no")
            .await
            .expect("rejected")
    };
    let (r, _) = tokio::join!(
        e.w.invoke(&a.bot, "kv", "put", r#"{"key":"payroll-2","value":"9"}"#),
        reject
    );
    let r = r.expect("answered");
    assert!(!r.outcome.is_ok(), "{:?}", r.outcome);
    let ev = r
        .imports
        .iter()
        .find(|i| i.resource == "payroll-2")
        .expect("import event");
    match &ev.decision {
        warden_policy::Decision::Deny { rule, reason } => {
            assert_eq!(rule, "approval.rejected");
            assert!(reason.contains("bob"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let got =
        e.w.invoke(&a.bot, "kv", "get", r#"{"key":"payroll-2"}"#)
            .await
            .expect("get");
    assert!(
        got.output.is_none_or(|o| !o.to_string().contains('9')),
        "never written"
    );

    // Expired while suspended: refused, nothing written.
    let expire = async {
        first_pending(&e, &a.alice).await;
        e.advance(3_601);
    };
    let (r, ()) = tokio::join!(
        e.w.invoke(&a.bot, "kv", "put", r#"{"key":"payroll-3","value":"9"}"#),
        expire
    );
    let r = r.expect("answered");
    let ev = r
        .imports
        .iter()
        .find(|i| i.resource == "payroll-3")
        .expect("import event");
    assert!(
        matches!(&ev.decision, warden_policy::Decision::Deny { rule, .. } if rule == "approval.expired"),
        "{ev:?}"
    );
}

/// Several nodes on one PostgreSQL: a starting node leaves another node's
/// in-flight hold alone while that node beats, and aborts (and records) it
/// once the owner has been silent for 30 s. (SQLite, one process per data
/// directory, aborts every in-flight hold at start; see the restart test.)
#[tokio::test]
async fn a_node_aborts_another_nodes_hold_only_when_its_owner_is_silent() {
    let mut e = env_on_postgres().await;
    let a = approval_env(&mut e).await;
    let url = e._pg.as_ref().map(|pg| pg.app_url()).expect("postgres");
    let second = |e: &Env| {
        let dir = e.dir.path().to_owned();
        let url = url.clone();
        async move {
            open_on(
                &dir,
                Some(warden_store::PostgresOptions {
                    url,
                    max_connections: 4,
                }),
            )
            .await
        }
    };
    // Node one suspends a call on a held payroll write.
    let put =
        e.w.invoke(&a.bot, "kv", "put", r#"{"key":"payroll-1","value":"9"}"#);
    let held = tokio::select! {
        r = put => panic!("the held write finished: {r:?}"),
        v = first_pending(&e, &a.alice) => v.approval,
    };
    assert_eq!(held.kind, "import");
    assert_eq!(held.owner_node.as_deref(), Some(e.w.node_id()));
    // Node two starts: node one's hold is live (fresh heartbeat), kept.
    let (two, key, clock2) = second(&e).await;
    assert_eq!(
        key, None,
        "the admin key is not shown again by a second node"
    );
    assert_ne!(two.node_id(), e.w.node_id());
    clock2.store(e.clock.load(Ordering::SeqCst), Ordering::SeqCst);
    let r = two.resume_approvals(true).await.expect("resume");
    assert!(r.aborted.is_empty(), "{r:?}");
    // 31 s later, but node one's sweep has beaten first: still kept.
    e.advance(31);
    clock2.fetch_add(31, Ordering::SeqCst);
    e.w.resume_approvals(false).await.expect("node one sweeps");
    let r = two.resume_approvals(false).await.expect("resume");
    assert!(r.aborted.is_empty(), "{r:?}");
    // Node one falls silent; 31 s later node two aborts the hold, once.
    clock2.fetch_add(31, Ordering::SeqCst);
    let r = two.resume_approvals(false).await.expect("resume");
    assert_eq!(r.aborted, std::slice::from_ref(&held.id));
    let r = two.resume_approvals(false).await.expect("resume");
    assert!(r.aborted.is_empty(), "{r:?}");
    let row = two.approval(&a.alice, &held.id).await.expect("approval");
    assert_eq!(row.approval.status, "aborted");
    two.close().await;
}
