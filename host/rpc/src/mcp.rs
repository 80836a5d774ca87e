//! The MCP server (rmcp), over stdio (`warden mcp`) and streamable HTTP
//! (`/mcp`), speaking protocol revisions 2026-07-28 and 2025-06-18.
//!
//! `tools/list` shows exactly the calling agent's granted actions, each as an
//! MCP tool named `<tool>__<action>` with the description and schemas from
//! the tool's own `describe`. `tools/call` runs the same guarded path as the
//! HTTP API (`api::run_call`). Tool-level failures and denials are
//! `isError: true` results with a clear text; authentication problems are
//! protocol errors. A held call answers `isError: true` with its approval id
//! (the built-in tool `warden_approval` then returns the result), or, for a
//! client that declares the tasks extension (SEP-2663), a task whose id is
//! the approval id (`tasks/get`, `tasks/cancel`). A cancelled request (`notifications/cancelled`, or the HTTP
//! stream closing) drops the call's future, which stops its wasm execution at
//! once: nothing polls the fiber again and its instance is discarded.

use std::sync::Arc;

use rmcp::ErrorData as McpError;
use rmcp::handler::server::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, ContentBlock,
    CreateTaskResult, DetailedTask, GetTaskParams, GetTaskResult, Implementation, InitializeResult,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Task,
    TaskPayload, TaskStatus, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use warden_service::AgentSession;

use crate::AppState;

/// Separator between tool and action in MCP tool names. MCP clients commonly
/// accept only `[A-Za-z0-9_-]`, so no dot.
const SEP: &str = "__";

/// Where the caller's token comes from.
#[derive(Debug, Clone)]
enum Auth {
    /// stdio: one token for the whole session, given at start.
    Fixed(String),
    /// HTTP: the `Authorization: Bearer` header of each request.
    PerRequest,
}

/// The MCP server handler.
#[derive(Debug, Clone)]
pub struct WardenMcp {
    state: AppState,
    auth: Auth,
}

impl WardenMcp {
    /// A handler for stdio, authenticated by one agent access token.
    pub fn stdio(state: AppState, token: String) -> WardenMcp {
        WardenMcp {
            state,
            auth: Auth::Fixed(token),
        }
    }

    /// The agent of this request. stdio re-authenticates its one token on
    /// every request; HTTP takes the session `mcp_auth` authenticated for this
    /// very request.
    async fn session(&self, ctx: &RequestContext<RoleServer>) -> Result<AgentSession, McpError> {
        match &self.auth {
            Auth::Fixed(token) => self
                .state
                .warden
                .authenticate_agent(token)
                .await
                .map(|s| s.correlated(format!("mcp-{}-{}", std::process::id(), ctx.id)))
                .map_err(|e| McpError::invalid_request(e.to_string(), None)),
            Auth::PerRequest => ctx
                .extensions
                .get::<axum::http::request::Parts>()
                .and_then(|parts| parts.extensions.get::<AgentSession>())
                .cloned()
                .ok_or_else(|| McpError::invalid_request("request not authenticated", None)),
        }
    }
}

fn object(v: &serde_json::Value) -> Option<JsonObject> {
    v.as_object().cloned()
}

impl ServerHandler for WardenMcp {
    fn get_info(&self) -> ServerConfig {
        // The tasks extension (SEP-2663): a held call becomes a task (its
        // id is the approval id) for clients that declare the extension.
        InitializeResult::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tasks()
                .build(),
        )
            .with_server_info(Implementation::new("warden", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Warden runs sandboxed tools. Each tool here is one action you were granted, named <tool>__<action>.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let session = self.session(&ctx).await?;
        let actions = self
            .state
            .warden
            .granted_actions(&session)
            .await
            .map_err(|e| McpError::internal_error(opaque(&e), None))?;
        let tools = actions
            .into_iter()
            .map(|a| {
                let input = object(&a.input_schema).unwrap_or_default();
                let mut t = Tool::new(
                    format!("{}{SEP}{}", a.tool, a.action),
                    a.description.clone(),
                    Arc::new(input),
                );
                // MCP requires an object output schema; others are left out.
                if a.output_schema.get("type").and_then(|t| t.as_str()) == Some("object") {
                    t.output_schema = object(&a.output_schema).map(Arc::new);
                }
                t
            })
            .collect::<Vec<_>>();
        let mut tools = tools;
        tools.push(approval_tool());
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let session = self.session(&ctx).await?;
        if request.name == APPROVAL_TOOL {
            return self
                .approval_result(&session, request.arguments.unwrap_or_default(), &ctx)
                .await;
        }
        let Some((tool, action)) = request.name.split_once(SEP) else {
            return Ok(tool_error(format!(
                "unknown tool `{}`: names are <tool>{SEP}<action>",
                request.name
            )));
        };
        let input = serde_json::Value::Object(request.arguments.unwrap_or_default()).to_string();
        let call = crate::api::run_call(
            self.state.clone(),
            session,
            tool.to_owned(),
            action.to_owned(),
            input,
        );
        let report = tokio::select! {
            r = call => r,
            () = ctx.ct.cancelled() => {
                tracing::info!(tool, action, "MCP call cancelled; wasm execution stopped");
                return Err(McpError::internal_error("cancelled", None));
            }
        };
        let report = match report {
            Ok(r) => r,
            Err(e) => return Err(McpError::invalid_request(e.message, None)),
        };
        let summary = report.outcome.reason();
        let tasks = ctx
            .client_capabilities()
            .is_some_and(|c| c.supports_tasks());
        if tasks && !report.approval_id.is_empty() {
            // A held call, for a client that speaks tasks: a task it polls
            // with tasks/get (and may cancel with tasks/cancel).
            let now = iso8601(self.state.warden.now());
            let task = Task::new(
                report.approval_id.clone(),
                TaskStatus::Working,
                now.clone(),
                now,
            )
            .with_status_message(format!("held for human approval: {summary}"))
            .with_poll_interval_ms(1_000);
            let mut meta = serde_json::Map::new();
            meta.insert(
                "warden/approval_id".into(),
                report.approval_id.clone().into(),
            );
            meta.insert(
                "warden/invocation_id".into(),
                report.invocation_id.clone().into(),
            );
            return Ok(CallToolResponse::Task(
                CreateTaskResult::new(task).with_meta(rmcp::model::MetaObject(meta)),
            ));
        }
        Ok(tool_result(&serde_json::json!(report), &summary).into())
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, McpError> {
        let session = self.session(&ctx).await?;
        let view = self
            .state
            .warden
            .agent_approval(&session, &request.task_id, std::time::Duration::ZERO)
            .await
            .map_err(|e| McpError::invalid_params(opaque(&e), None))?;
        Ok(GetTaskResult::new(task_of(&view)))
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let session = self.session(&ctx).await?;
        self.state
            .warden
            .cancel_approval(&session, &request.task_id)
            .await
            .map(|_| ())
            .map_err(|e| McpError::invalid_params(opaque(&e), None))
    }
}

/// A held call's approval as a task: working while undecided or running;
/// completed with the tool's result once run, or with an `isError` result
/// once rejected, expired or aborted; cancelled when the agent cancelled.
fn task_of(view: &warden_service::approvals::ApprovalView) -> DetailedTask {
    let a = &view.approval;
    let created = iso8601(a.created_at);
    let updated = iso8601(a.finished_at.or(a.decided_at).unwrap_or(a.created_at));
    let task =
        Task::new(a.id.clone(), TaskStatus::Working, created, updated).with_poll_interval_ms(1_000);
    let object = |r: CallToolResult| match serde_json::to_value(r) {
        Ok(serde_json::Value::Object(o)) => o,
        _ => JsonObject::new(),
    };
    let (message, payload) = match (a.status.as_str(), &a.result) {
        (_, Some(result)) => {
            let summary = result
                .get("summary")
                .and_then(|s| s.as_str())
                .unwrap_or("the approved call did not succeed")
                .to_owned();
            (
                format!("approved and run: {summary}"),
                TaskPayload::Completed {
                    result: object(tool_result(result, &summary)),
                },
            )
        }
        ("cancelled", None) => ("cancelled by the agent".to_owned(), TaskPayload::Cancelled),
        ("pending", None) => (
            format!(
                "held for human approval: {} of {} approvals; expires at {} (unix)",
                view.approvals, a.required, a.expires_at
            ),
            TaskPayload::Working,
        ),
        ("approved" | "executing", None) => ("approved; running".to_owned(), TaskPayload::Working),
        (other, None) => {
            let text = format!("approval {} is {other}; the held call did not run", a.id);
            (
                text.clone(),
                TaskPayload::Completed {
                    result: object(CallToolResult::error(vec![ContentBlock::text(text)])),
                },
            )
        }
    };
    DetailedTask::new(task.with_status_message(message), payload)
}

/// Unix seconds as an ISO 8601 UTC timestamp.
fn iso8601(secs: i64) -> String {
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl WardenMcp {
    /// `warden_approval`: where a held call stands, and its result once the
    /// approved call ran (waiting up to `wait_seconds` for it).
    async fn approval_result(
        &self,
        session: &AgentSession,
        args: JsonObject,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let Some(id) = args.get("approval_id").and_then(|v| v.as_str()) else {
            return Ok(tool_error(
                "warden_approval needs `approval_id` (from the held call's answer)".into(),
            ));
        };
        let wait = args
            .get("wait_seconds")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        let asked =
            self.state
                .warden
                .agent_approval(session, id, std::time::Duration::from_secs(wait));
        let view = tokio::select! {
            v = asked => v,
            () = ctx.ct.cancelled() => return Err(McpError::internal_error("cancelled", None)),
        };
        let view = match view {
            Ok(v) => v,
            Err(e) => return Ok(tool_error(opaque(&e))),
        };
        if let Some(result) = &view.approval.result {
            let summary = result
                .get("summary")
                .and_then(|s| s.as_str())
                .unwrap_or("the approved call did not succeed")
                .to_owned();
            return Ok(tool_result(result, &summary).into());
        }
        let a = &view.approval;
        let text = match a.status.as_str() {
            "pending" => format!(
                "approval {} is pending ({} of {} approvals); it expires at {} (unix). Call warden_approval again (wait_seconds up to 60) for the result.",
                a.id, view.approvals, a.required, a.expires_at
            ),
            other => format!("approval {} is {other}; the held call did not run", a.id),
        };
        let mut result = if a.status == "pending" {
            CallToolResult::success(vec![ContentBlock::text(text)])
        } else {
            CallToolResult::error(vec![ContentBlock::text(text)])
        };
        let mut meta = serde_json::Map::new();
        meta.insert("warden/approval_id".into(), a.id.clone().into());
        meta.insert("warden/approval_status".into(), a.status.clone().into());
        result.meta = Some(rmcp::model::MetaObject(meta));
        Ok(result.into())
    }
}

/// The built-in tool an agent asks about its held calls with. Its name has
/// no `__`, so it never collides with a granted `<tool>__<action>`.
const APPROVAL_TOOL: &str = "warden_approval";

fn approval_tool() -> Tool {
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "approval_id": { "type": "string", "description": "the id a held call answered with" },
            "wait_seconds": { "type": "integer", "minimum": 0, "maximum": 60,
                              "description": "wait up to this long for a decision and the result" }
        },
        "required": ["approval_id"],
        "additionalProperties": false
    });
    Tool::new(
        APPROVAL_TOOL,
        "Where a call held for human approval stands; once approved and run, its result.",
        Arc::new(object(&schema).unwrap_or_default()),
    )
}

/// A call's report (as JSON) as an MCP tool result.
fn tool_result(report: &serde_json::Value, summary: &str) -> CallToolResult {
    let get = |k: &str| report.get(k).cloned().unwrap_or(serde_json::Value::Null);
    let outcome = get("outcome");
    let approval = get("approval_id");
    let mut result = if outcome == "ok" {
        let output = get("output");
        if output.is_object() {
            CallToolResult::structured(output)
        } else {
            CallToolResult::success(vec![ContentBlock::text(output.to_string())])
        }
    } else {
        let text = match (outcome.as_str(), approval.as_str()) {
            (Some("held"), Some(id)) => format!(
                "held for human approval, nothing ran: {summary}. Approval id: {id}. Call the tool `{APPROVAL_TOOL}` with {{\"approval_id\": \"{id}\", \"wait_seconds\": 60}} to get the result once approvers decide."
            ),
            _ => summary.to_owned(),
        };
        CallToolResult::error(vec![ContentBlock::text(text)])
    };
    // Tool output is untrusted content: say so on every answer.
    let mut meta = serde_json::Map::new();
    meta.insert("warden/untrusted".into(), serde_json::Value::Bool(true));
    meta.insert(
        "warden/invocation_id".into(),
        report
            .get("invocation_id")
            .cloned()
            .unwrap_or_else(|| "".into()),
    );
    if let Some(id) = approval.as_str() {
        meta.insert("warden/approval_id".into(), id.into());
    }
    if let Some(m) = report.get("injection_markers") {
        meta.insert("warden/injection_markers".into(), m.clone());
    }
    result.meta = Some(rmcp::model::MetaObject(meta));
    result
}

fn tool_error(text: String) -> CallToolResponse {
    CallToolResult::error(vec![ContentBlock::text(text)]).into()
}

fn opaque(e: &warden_service::Error) -> String {
    match e {
        warden_service::Error::Internal(m) => {
            tracing::error!(error = %m, "internal error in MCP");
            "internal error".into()
        }
        other => other.to_string(),
    }
}

/// The streamable HTTP service mounted at `/mcp`. Host and Origin are
/// validated: loopback hosts only, and browser origins only from the
/// configured list (none by default, so any browser Origin is refused).
pub fn http_service(state: AppState) -> StreamableHttpService<WardenMcp, LocalSessionManager> {
    let origins: Vec<String> = state.allowed_origins.as_ref().clone();
    let config = StreamableHttpServerConfig::default()
        .with_allowed_origins(origins)
        .enforce_origin_validation();
    let handler = WardenMcp {
        state,
        auth: Auth::PerRequest,
    };
    StreamableHttpService::new(
        move || Ok(handler.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    )
}

/// Serves MCP over this process's stdin and stdout until the client leaves.
pub async fn serve_stdio(state: AppState, token: String) -> std::io::Result<()> {
    use rmcp::ServiceExt;
    let running = WardenMcp::stdio(state, token)
        .serve((tokio::io::stdin(), tokio::io::stdout()))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    running
        .waiting()
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn iso8601_dates() {
        assert_eq!(super::iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::iso8601(1_763_800_000), "2025-11-22T08:26:40Z");
        // A leap day.
        assert_eq!(super::iso8601(951_782_400), "2000-02-29T00:00:00Z");
    }
}
