//! The HTTP JSON API: agent endpoints (token, actions, invoke, invocations)
//! and operator endpoints (everything the governance CLI does).
//!
//! Every handler authenticates first, then calls one `warden-service`
//! operation. Tool outcomes are data in a 200 answer; only problems with the
//! request itself (authentication, role, validation, unknown names) are HTTP
//! errors.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use warden_policy::{Grant, Limits};
use warden_service::{AgentSession, Caller};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, Bearer};
use crate::invocations::State as InvocationState;

/// Longest a synchronous invoke waits before answering `running` with the
/// invocation id (the call goes on; collect it with GET /v1/invocations/{id}).
const MAX_WAIT_MS: u64 = 10 * 60 * 1000;
/// Default wait of a synchronous invoke.
const DEFAULT_WAIT_MS: u64 = 30_000;

fn new_id() -> String {
    let mut b = [0u8; 16];
    // Invocation ids are not secrets (reads are checked against the agent),
    // but unguessable ids avoid leaking call volume.
    if getrandom::fill(&mut b).is_err() {
        b = rand_fallback();
    }
    format!("inv_{}", hex::encode(b))
}

fn rand_fallback() -> [u8; 16] {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    n.to_le_bytes()
}

async fn agent(state: &AppState, token: &str) -> ApiResult<AgentSession> {
    Ok(state.warden.authenticate_agent(token).await?)
}

async fn operator(state: &AppState, key: &str) -> ApiResult<Caller> {
    Ok(state.warden.authenticate(key).await?)
}

// ---- health ----------------------------------------------------------------------

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    state.warden.ready().await?;
    Ok(Json(json!({ "status": "ready" })))
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render_with(
            state.warden.calls_in_flight(),
            &state.warden.approval_stats().await,
        ),
    )
}

// ---- agents ------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    credential: String,
    #[serde(default)]
    ttl_secs: Option<u64>,
    #[serde(default)]
    tools: Option<Vec<String>>,
}

pub async fn token(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<TokenRequest>,
) -> ApiResult<Json<Value>> {
    let t = state
        .warden
        .exchange_credential(
            &req.credential,
            req.ttl_secs.map(Duration::from_secs),
            req.tools,
        )
        .await?;
    Ok(Json(json!(t)))
}

pub async fn actions(State(state): State<AppState>, Bearer(t): Bearer) -> ApiResult<Json<Value>> {
    let s = agent(&state, &t).await?;
    Ok(Json(
        json!({ "actions": state.warden.granted_actions(&s).await? }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvokeRequest {
    tool: String,
    action: String,
    #[serde(default = "empty_object")]
    input: Value,
    /// Answer at once with the invocation id instead of waiting.
    #[serde(default)]
    r#async: bool,
    /// How long a synchronous call waits for its answer (default 30 s).
    #[serde(default)]
    wait_ms: Option<u64>,
}

fn empty_object() -> Value {
    json!({})
}

/// The agent's data session (`x-warden-session`, or over MCP its
/// `mcp-session-id`): at most 128 characters of `A-Za-z0-9._:-`. Empty when
/// absent (the access token is then the session).
pub(crate) fn data_session(headers: &axum::http::HeaderMap) -> ApiResult<String> {
    let Some(v) = headers
        .get("x-warden-session")
        .or_else(|| headers.get("mcp-session-id"))
    else {
        return Ok(String::new());
    };
    let v = v.to_str().unwrap_or("\u{0}");
    if v.is_empty()
        || v.len() > 128
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c))
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "x-warden-session must be 1 to 128 characters of A-Z a-z 0-9 . _ : -",
        ));
    }
    Ok(format!("agent:{v}"))
}

pub async fn invoke(
    State(state): State<AppState>,
    rid: Option<axum::Extension<crate::RequestId>>,
    headers: axum::http::HeaderMap,
    Bearer(t): Bearer,
    ApiJson(req): ApiJson<InvokeRequest>,
) -> ApiResult<axum::response::Response> {
    let cid = rid.map(|r| r.0.0).unwrap_or_default();
    let ds = data_session(&headers)?;
    let wait = Duration::from_millis(req.wait_ms.unwrap_or(DEFAULT_WAIT_MS).min(MAX_WAIT_MS));
    let id = new_id();
    let input = req.input.to_string();
    if !req.r#async {
        // The common case runs on this task: one authentication, no spawn, no
        // table entry unless the wait runs out.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut call = Box::pin(authenticated_call(
            state.clone(),
            t,
            (cid, id.clone(), ds),
            req.tool,
            req.action,
            input,
            tx,
        ));
        return match tokio::time::timeout(wait, &mut call).await {
            Ok(report) => Ok(answer(&id, report?).into_response()),
            Err(_) => {
                // Authentication finished long ago: the session is known.
                let session = rx.await.map_err(|_| {
                    ApiError::from(warden_service::Error::Internal(
                        "call lost its session".into(),
                    ))
                })?;
                state
                    .invocations
                    .start(&id, &session.tenant, &session.agent_id);
                let st = state.clone();
                let id2 = id.clone();
                tokio::spawn(async move {
                    match call.await {
                        Ok(report) => st.invocations.complete(&id2, report),
                        Err(e) => {
                            tracing::warn!(error = ?e, "invocation failed after the wait");
                            st.invocations.forget(&id2);
                        }
                    }
                });
                Ok((
                    StatusCode::ACCEPTED,
                    Json(json!({ "invocation_id": id, "status": "running" })),
                )
                    .into_response())
            }
        };
    }
    let session = agent(&state, &t)
        .await?
        .correlated(cid)
        .invocation(id.clone())
        .in_data_session(ds);
    state
        .invocations
        .start(&id, &session.tenant, &session.agent_id);
    let st = state.clone();
    let id2 = id.clone();
    tokio::spawn(async move {
        match run_call(st.clone(), session, req.tool, req.action, input).await {
            Ok(report) => st.invocations.complete(&id2, report),
            Err(e) => {
                tracing::warn!(error = ?e, "asynchronous invocation refused");
                st.invocations.forget(&id2);
            }
        }
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "invocation_id": id, "status": "running" })),
    )
        .into_response())
}

/// Runs one call for a session authenticated by this same request, and
/// records its metrics.
pub(crate) async fn run_call(
    state: AppState,
    session: AgentSession,
    tool: String,
    action: String,
    input: String,
) -> ApiResult<warden_runtime::Report> {
    let started = Instant::now();
    let report = state
        .warden
        .invoke_authenticated(&session, &tool, &action, &input)
        .await?;
    state
        .metrics
        .call(&session.tenant, &report, started.elapsed().as_secs_f64());
    Ok(report)
}

/// Authenticates and runs one call; sends the session out as soon as it is
/// known (the synchronous path needs it only if its wait runs out).
async fn authenticated_call(
    state: AppState,
    token: String,
    (correlation_id, invocation_id, data_session): (String, String, String),
    tool: String,
    action: String,
    input: String,
    session_out: tokio::sync::oneshot::Sender<AgentSession>,
) -> ApiResult<warden_runtime::Report> {
    let started = Instant::now();
    let session = state
        .warden
        .authenticate_agent(&token)
        .await?
        .correlated(correlation_id)
        .invocation(invocation_id)
        .in_data_session(data_session);
    let _ = session_out.send(session.clone());
    let report = state
        .warden
        .invoke_authenticated(&session, &tool, &action, &input)
        .await?;
    state
        .metrics
        .call(&session.tenant, &report, started.elapsed().as_secs_f64());
    Ok(report)
}

fn answer(id: &str, report: warden_runtime::Report) -> Json<Value> {
    let mut v = json!(report);
    if let Some(o) = v.as_object_mut() {
        o.insert("invocation_id".into(), json!(id));
        o.insert("status".into(), json!("completed"));
    }
    Json(v)
}

pub async fn invocation(
    State(state): State<AppState>,
    Bearer(t): Bearer,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> ApiResult<Json<Value>> {
    let s = agent(&state, &t).await?;
    let approval = match state.invocations.get(&id, &s.tenant, &s.agent_id) {
        Some(InvocationState::Running) => {
            return Ok(Json(json!({ "invocation_id": id, "status": "running" })));
        }
        Some(InvocationState::Completed { report }) if report.approval_id.is_empty() => {
            return Ok(answer(&id, *report));
        }
        Some(InvocationState::Completed { report }) => Some(report.approval_id.clone()),
        None => state.warden.approval_of_invocation(&s, &id).await?,
    };
    // A held call: its approval says where it is, and carries the result
    // once the approved call ran.
    let Some(approval) = approval else {
        return Err(ApiError::not_found(format!("invocation `{id}` not found")));
    };
    let wait = Duration::from_secs(q.wait.unwrap_or(0));
    let a = state.warden.agent_approval(&s, &approval, wait).await?;
    match &a.approval.result {
        Some(result) => {
            let mut v = result.clone();
            if let Some(o) = v.as_object_mut() {
                o.insert("invocation_id".into(), json!(id));
                o.insert("status".into(), json!("completed"));
            }
            Ok(Json(v))
        }
        None => Ok(Json(json!({
            "invocation_id": id,
            "status": "held",
            "approval_id": a.approval.id,
            "approval_status": a.approval.status,
            "expires_at": a.approval.expires_at,
        }))),
    }
}

// ---- operators ---------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameRequest {
    name: String,
}

pub async fn create_tenant(
    State(state): State<AppState>,
    Bearer(k): Bearer,
    ApiJson(req): ApiJson<NameRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let c = operator(&state, &k).await?;
    state.warden.create_tenant(&c, &req.name).await?;
    Ok((StatusCode::CREATED, Json(json!({ "tenant": req.name }))))
}

pub async fn tenants(State(state): State<AppState>, Bearer(k): Bearer) -> ApiResult<Json<Value>> {
    let c = operator(&state, &k).await?;
    Ok(Json(json!({ "tenants": state.warden.tenants(&c).await? })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalRequest {
    name: String,
    roles: Vec<String>,
    #[serde(default)]
    tenant: Option<String>,
}

pub async fn add_principal(
    State(state): State<AppState>,
    Bearer(k): Bearer,
    ApiJson(req): ApiJson<PrincipalRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let c = operator(&state, &k).await?;
    let tenant = match (&req.tenant, &c) {
        (Some(t), _) => t.clone(),
        (None, Caller::Principal(p)) => p.tenant.clone(),
        (None, Caller::Admin) => {
            return Err(ApiError::bad_request(
                "with the admin key, name the tenant in `tenant`",
            ));
        }
    };
    let (p, key) = state
        .warden
        .add_principal(&c, &tenant, &req.name, &req.roles)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "principal": p, "api_key": key })),
    ))
}

pub async fn inventory(State(state): State<AppState>, Bearer(k): Bearer) -> ApiResult<Json<Value>> {
    let c = operator(&state, &k).await?;
    Ok(Json(json!(state.warden.inventory(&c).await?)))
}

pub async fn principals(
    State(state): State<AppState>,
    Bearer(k): Bearer,
) -> ApiResult<Json<Value>> {
    let c = operator(&state, &k).await?;
    Ok(Json(
        json!({ "principals": state.warden.inventory(&c).await?.principals }),
    ))
}

pub async fn history(State(state): State<AppState>, Bearer(k): Bearer) -> ApiResult<Json<Value>> {
    let c = operator(&state, &k).await?;
    Ok(Json(json!({ "events": state.warden.events(&c).await? })))
}

pub async fn settings(State(state): State<AppState>, Bearer(k): Bearer) -> ApiResult<Json<Value>> {
    let c = operator(&state, &k).await?;
    Ok(Json(json!(state.warden.settings(&c).await?)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingRequest {
    value: String,
}

pub async fn set_setting(
    State(state): State<AppState>,
    Bearer(k): Bearer,
    Path(key): Path<String>,
    ApiJson(req): ApiJson<SettingRequest>,
) -> ApiResult<Json<Value>> {
    let c = operator(&state, &k).await?;
    state.warden.set_setting(&c, &key, &req.value).await?;
    Ok(Json(json!({ "setting": key, "value": req.value })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// The `tool.toml` text.
    manifest: String,
    /// The component bytes, base64 (standard alphabet).
    component_base64: String,
}

pub async fn publish(
    State(state): State<AppState>,
    Bearer(k): Bearer,
    ApiJson(req): ApiJson<PublishRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let c = operator(&state, &k).await?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(req.component_base64.as_bytes())
        .map_err(|e| ApiError::bad_request(format!("component_base64 is not base64: {e}")))?;
    let v = state.warden.publish_tool(&c, &bytes, &req.manifest).await?;
    Ok((StatusCode::CREATED, Json(json!(v))))
}

pub async fn tools(State(state): State<AppState>, Bearer(k): Bearer) -> ApiResult<Json<Value>> {
    let c = operator(&state, &k).await?;
    Ok(Json(
        json!({ "tools": state.warden.inventory(&c).await?.tools }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    version: String,
}

pub async fn deploy(
    State(state): State<AppState>,
    Bearer(k): Bearer,
    Path(tool): Path<String>,
    ApiJson(req): ApiJson<DeployRequest>,
) -> ApiResult<Json<Value>> {
    let c = operator(&state, &k).await?;
    Ok(Json(json!(
        state.warden.deploy_tool(&c, &tool, &req.version).await?
    )))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    #[serde(default)]
    to: Option<String>,
}

pub async fn rollback(
    State(state): State<AppState>,
    Bearer(k): Bearer,
    Path(tool): Path<String>,
    ApiJson(req): ApiJson<RollbackRequest>,
) -> ApiResult<Json<Value>> {
    let c = operator(&state, &k).await?;
    Ok(Json(json!(
        state
            .warden
            .rollback_tool(&c, &tool, req.to.as_deref())
            .await?
    )))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentRequest {
    name: String,
    purpose: String,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    renew_days: Option<u32>,
}

pub async fn create_agent(
    State(state): State<AppState>,
    Bearer(k): Bearer,
    ApiJson(req): ApiJson<AgentRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let c = operator(&state, &k).await?;
    let a = state
        .warden
        .create_agent(
            &c,
            &req.name,
            &req.purpose,
            req.owner.as_deref(),
            req.renew_days,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(json!(a))))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentChange {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    days: Option<u32>,
}

pub async fn agent_change(
    State(state): State<AppState>,
    Bearer(k): Bearer,
    Path((name, verb)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    let c = operator(&state, &k).await?;
    // The body is optional here: empty means no reason and default days.
    let req: AgentChange = if body.iter().all(u8::is_ascii_whitespace) {
        AgentChange::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?
    };
    let w = &state.warden;
    let reason = req.reason.as_deref();
    let a = match verb.as_str() {
        "activate" => w.activate_agent(&c, &name).await?,
        "suspend" => {
            w.suspend_agent(&c, &name, reason.unwrap_or("suspended over the API"))
                .await?
        }
        "renew" => w.renew_agent(&c, &name, req.days.unwrap_or(90)).await?,
        "decommission" => {
            w.decommission_agent(&c, &name, reason.unwrap_or("decommissioned over the API"))
                .await?
        }
        other => {
            return Err(ApiError::not_found(format!(
                "no agent operation `{other}` (activate, suspend, renew, decommission)"
            )));
        }
    };
    Ok(Json(json!(a)))
}

pub async fn issue_credential(
    State(state): State<AppState>,
    Bearer(k): Bearer,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let c = operator(&state, &k).await?;
    let cred = state.warden.issue_credential(&c, &name).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "agent": name, "credential": cred })),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    agent: String,
    tool: String,
    /// A grant in the grant-file TOML format (optional).
    #[serde(default)]
    grant_toml: Option<String>,
    /// Granted actions (instead of `actions` in `grant_toml`).
    #[serde(default)]
    actions: Option<Vec<String>>,
    #[serde(default)]
    expires_in_days: Option<u32>,
}

pub async fn add_grant(
    State(state): State<AppState>,
    Bearer(k): Bearer,
    ApiJson(req): ApiJson<GrantRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let c = operator(&state, &k).await?;
    let mut grant = match &req.grant_toml {
        Some(t) => Grant::from_toml(t).map_err(|e| ApiError::bad_request(e.to_string()))?,
        None => Grant::empty(Limits::STANDARD),
    };
    if let Some(a) = req.actions {
        if grant.actions.is_some() {
            return Err(ApiError::bad_request(
                "give the actions either in grant_toml or in actions, not both",
            ));
        }
        grant.actions = Some(a.into_iter().collect());
    }
    let g = state
        .warden
        .add_grant(&c, &req.agent, &req.tool, &grant, req.expires_in_days)
        .await?;
    Ok((StatusCode::CREATED, Json(json!(g))))
}

pub async fn revoke_grant(
    State(state): State<AppState>,
    Bearer(k): Bearer,
    Path((agent, tool)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let c = operator(&state, &k).await?;
    state.warden.revoke_grant(&c, &agent, &tool).await?;
    Ok(Json(json!({ "revoked": { "agent": agent, "tool": tool } })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantQuery {
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    history: bool,
}

pub async fn grants(
    State(state): State<AppState>,
    Bearer(k): Bearer,
    Query(q): Query<GrantQuery>,
) -> ApiResult<Json<Value>> {
    let c = operator(&state, &k).await?;
    Ok(Json(json!({
        "grants": state.warden.grants(&c, q.agent.as_deref(), q.history).await?
    })))
}

// ---- audit ---------------------------------------------------------------------------

pub async fn audit_checkpoint(
    State(state): State<AppState>,
    Bearer(k): Bearer,
) -> ApiResult<Json<Value>> {
    let c = operator(&state, &k).await?;
    Ok(Json(
        json!({ "checkpoint": state.warden.audit_checkpoint(&c).await? }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntriesQuery {
    #[serde(default)]
    from: u64,
    #[serde(default = "default_limit")]
    limit: u64,
}

fn default_limit() -> u64 {
    100
}

pub async fn audit_entries(
    State(state): State<AppState>,
    Bearer(k): Bearer,
    Query(q): Query<EntriesQuery>,
) -> ApiResult<Json<Value>> {
    let c = operator(&state, &k).await?;
    Ok(Json(json!({
        "entries": state.warden.audit_entries(&c, q.from, q.limit).await?
    })))
}

pub async fn audit_payload(
    State(state): State<AppState>,
    Bearer(k): Bearer,
    Path(seq): Path<u64>,
) -> ApiResult<Json<Value>> {
    let c = operator(&state, &k).await?;
    let p = state.warden.audit_payload(&c, seq).await?;
    let journal = match p.journal.as_deref().map(serde_json::from_str::<Value>) {
        Some(Ok(j)) => Some(j),
        Some(Err(_)) => p.journal.map(Value::String),
        None => None,
    };
    Ok(Json(json!({
        "seq": seq,
        "input": p.input,
        "output": p.output,
        "journal": journal,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionQuery {
    seq: u64,
    #[serde(default)]
    size: Option<u64>,
}

pub async fn audit_inclusion(
    State(state): State<AppState>,
    Bearer(k): Bearer,
    Query(q): Query<InclusionQuery>,
) -> ApiResult<Json<Value>> {
    let c = operator(&state, &k).await?;
    Ok(Json(json!(
        state.warden.audit_inclusion(&c, q.seq, q.size).await?
    )))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    old: u64,
    #[serde(default)]
    new: Option<u64>,
}

pub async fn audit_consistency(
    State(state): State<AppState>,
    Bearer(k): Bearer,
    Query(q): Query<ConsistencyQuery>,
) -> ApiResult<Json<Value>> {
    let c = operator(&state, &k).await?;
    Ok(Json(json!(
        state.warden.audit_consistency(&c, q.old, q.new).await?
    )))
}

pub async fn audit_export(
    State(state): State<AppState>,
    Bearer(k): Bearer,
) -> ApiResult<Json<Value>> {
    let c = operator(&state, &k).await?;
    Ok(Json(json!(state.warden.audit_export(&c).await?)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    #[serde(default)]
    reason: Option<String>,
}

pub async fn audit_rotate(
    State(state): State<AppState>,
    Bearer(k): Bearer,
    ApiJson(req): ApiJson<RotateRequest>,
) -> ApiResult<Json<Value>> {
    let c = operator(&state, &k).await?;
    let reason = req.reason.as_deref().unwrap_or("rotated over the API");
    let seq = state.warden.audit_rotate(&c, reason).await?;
    Ok(Json(json!({ "rotated": true, "seq": seq })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    invocation: String,
    /// Replay against another stored component (its SHA-256).
    #[serde(default)]
    component: Option<String>,
}

pub async fn audit_replay(
    State(state): State<AppState>,
    Bearer(k): Bearer,
    ApiJson(req): ApiJson<ReplayRequest>,
) -> ApiResult<Json<Value>> {
    let c = operator(&state, &k).await?;
    let r = state
        .warden
        .audit_replay(&c, &req.invocation, req.component.as_deref())
        .await?;
    Ok(Json(json!(r)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRequest {
    /// The Cedar policy text (empty: no policy layer).
    text: String,
}

pub async fn set_policy(
    State(state): State<AppState>,
    Bearer(k): Bearer,
    ApiJson(req): ApiJson<PolicyRequest>,
) -> ApiResult<Json<Value>> {
    let c = operator(&state, &k).await?;
    Ok(Json(json!(state.warden.set_policy(&c, &req.text).await?)))
}

pub async fn policy(State(state): State<AppState>, Bearer(k): Bearer) -> ApiResult<Json<Value>> {
    let c = operator(&state, &k).await?;
    Ok(Json(
        json!({ "policy": state.warden.policy(&c, None).await? }),
    ))
}

pub async fn policy_version(
    State(state): State<AppState>,
    Bearer(k): Bearer,
    Path(version): Path<i64>,
) -> ApiResult<Json<Value>> {
    let c = operator(&state, &k).await?;
    Ok(Json(
        json!({ "policy": state.warden.policy(&c, Some(version)).await? }),
    ))
}

pub async fn test_policy(
    State(state): State<AppState>,
    Bearer(k): Bearer,
    ApiJson(req): ApiJson<warden_service::PolicyTest>,
) -> ApiResult<Json<Value>> {
    let c = operator(&state, &k).await?;
    Ok(Json(json!(state.warden.test_policy(&c, &req).await?)))
}

// ---- approvals ----------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsQuery {
    /// Also list the pending approvals this approver may not decide.
    #[serde(default)]
    all: bool,
}

pub async fn approvals(
    State(state): State<AppState>,
    Bearer(k): Bearer,
    Query(q): Query<ApprovalsQuery>,
) -> ApiResult<Json<Value>> {
    let c = operator(&state, &k).await?;
    Ok(Json(
        json!({ "approvals": state.warden.pending_approvals(&c, q.all).await? }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    /// Long-poll: seconds to wait for a final state (at most 60).
    #[serde(default)]
    wait: Option<u64>,
}

/// One approval: an operator (approver or viewer) sees it with its votes;
/// the requesting agent sees its own, and may long-poll it for the result.
pub async fn approval(
    State(state): State<AppState>,
    Bearer(k): Bearer,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> ApiResult<Json<Value>> {
    if let Ok(s) = state.warden.authenticate_agent(&k).await {
        let wait = Duration::from_secs(q.wait.unwrap_or(0));
        return Ok(Json(json!(
            state.warden.agent_approval(&s, &id, wait).await?
        )));
    }
    let c = operator(&state, &k).await?;
    Ok(Json(json!(state.warden.approval(&c, &id).await?)))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct VoteRequest {
    #[serde(default)]
    comment: String,
}

/// `approve` or `reject` by the authenticated approver (the identity comes
/// from the key, never from the body).
pub async fn vote(
    State(state): State<AppState>,
    Bearer(k): Bearer,
    Path((id, verb)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    // The body is optional: none, or `{"comment": "..."}`.
    let comment = if body.iter().all(u8::is_ascii_whitespace) {
        String::new()
    } else {
        serde_json::from_slice::<VoteRequest>(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid vote body: {e}")))?
            .comment
    };
    let vote = match verb.as_str() {
        "approve" => warden_service::approvals::Vote::Approve,
        "reject" => warden_service::approvals::Vote::Reject,
        "cancel" => {
            let s = agent(&state, &k).await?;
            return Ok(Json(json!(state.warden.cancel_approval(&s, &id).await?)));
        }
        other => {
            return Err(ApiError::not_found(format!(
                "unknown approval verb `{other}` (approve, reject, cancel)"
            )));
        }
    };
    let c = operator(&state, &k).await?;
    Ok(Json(json!(
        state
            .warden
            .decide_approval(&c, &id, vote, &comment)
            .await?
    )))
}

/// The answer for a path no route serves.
pub async fn no_route() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        "no such endpoint; see /openapi.json",
    )
}
