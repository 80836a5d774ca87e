//! The MCP server (rmcp), over stdio (`warden mcp`) and streamable HTTP
//! (`/mcp`), speaking protocol revisions 2026-07-28 and 2025-06-18.
//!
//! `tools/list` shows exactly the calling agent's granted actions, each as an
//! MCP tool named `<tool>__<action>` with the description and schemas from
//! the tool's own `describe`. `tools/call` runs the same guarded path as the
//! HTTP API (`api::run_call`). Tool-level failures and denials are
//! `isError: true` results with a clear text; authentication problems are
//! protocol errors. A cancelled request (`notifications/cancelled`, or the HTTP
//! stream closing) drops the call's future, which stops its wasm execution at
//! once: nothing polls the fiber again and its instance is discarded.

use std::sync::Arc;

use rmcp::ErrorData as McpError;
use rmcp::handler::server::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    InitializeResult, JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities,
    ServerConfig, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use warden_runtime::Outcome;
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
        InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
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
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let session = self.session(&ctx).await?;
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
        let markers = report.injection_markers.clone();
        let invocation = report.invocation_id.clone();
        let mut result = match report.outcome {
            Outcome::Ok => {
                let output = report.output.unwrap_or(serde_json::Value::Null);
                if output.is_object() {
                    CallToolResult::structured(output)
                } else {
                    CallToolResult::success(vec![ContentBlock::text(output.to_string())])
                }
            }
            other => CallToolResult::error(vec![ContentBlock::text(other.reason())]),
        };
        // Tool output is untrusted content: say so on every answer.
        let mut meta = serde_json::Map::new();
        meta.insert("warden/untrusted".into(), serde_json::Value::Bool(true));
        meta.insert("warden/invocation_id".into(), invocation.into());
        if !markers.is_empty() {
            meta.insert("warden/injection_markers".into(), markers.into());
        }
        result.meta = Some(rmcp::model::MetaObject(meta));
        Ok(result.into())
    }
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
