//! Warden's host RPC: the HTTP JSON API, the MCP server and `/metrics`.
//!
//! Architecture invariant: this is the only crate that knows HTTP and
//! JSON-RPC. It authenticates, maps requests to `warden-service` operations
//! and answers; it decides nothing itself. Tool outcomes are data in a
//! successful answer; only problems with the request are HTTP errors, all in
//! one envelope (`error.rs`).

#![forbid(unsafe_code)]

mod api;
mod error;
mod extract;
mod invocations;
pub mod mcp;
mod metrics;
mod openapi;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use tracing::Instrument;
use warden_service::Warden;

pub use error::ApiError;
pub use metrics::Metrics;
pub use openapi::{ROUTES, document as openapi_document};

/// Largest request body in general: 1 MiB (tool inputs are JSON, not files).
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Largest body of a publish request: a base64 component of up to ~48 MiB.
pub const MAX_PUBLISH_BYTES: usize = 64 << 20;
/// Longest any request may take before it is answered 408, beyond the longest
/// synchronous wait a call may ask for.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(11 * 60);

/// Everything handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub warden: Arc<Warden>,
    pub metrics: Arc<Metrics>,
    invocations: Arc<invocations::Invocations>,
    /// Origins allowed to call `/mcp` from a browser.
    pub allowed_origins: Arc<Vec<String>>,
}

impl AppState {
    /// State over a host, with fresh metrics.
    pub fn new(warden: Arc<Warden>, allowed_origins: Vec<String>) -> AppState {
        AppState {
            warden,
            metrics: Arc::new(Metrics::default()),
            invocations: Arc::new(invocations::Invocations::default()),
            allowed_origins: Arc::new(allowed_origins),
        }
    }
}

/// The correlation id of one HTTP request (its `x-request-id`).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl RequestId {
    /// The id in these request extensions ("" when there is none).
    pub fn of(extensions: &axum::http::Extensions) -> String {
        extensions
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default()
    }
}

/// Gives each request a correlation id (the client's `x-request-id` if it is
/// short and printable, else a fresh one), runs it in a span carrying that id,
/// and echoes it in the answer.
async fn correlate(mut req: Request, next: Next) -> Response {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let given = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_owned);
    let id = given.unwrap_or_else(|| {
        format!(
            "req-{:x}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        )
    });
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut res = next.run(req).instrument(span).await;
    if let Ok(v) = axum::http::HeaderValue::from_str(&id) {
        res.headers_mut().insert("x-request-id", v);
    }
    res
}

async fn count(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let transport = if req.uri().path().starts_with("/mcp") {
        "mcp_http"
    } else {
        "http"
    };
    let res = next.run(req).await;
    state.metrics.request(transport, res.status().as_u16());
    res
}

/// Refuses an MCP HTTP request without a valid agent token before it reaches
/// the MCP session machinery (401 in the error envelope), and hands the
/// authenticated session on in the request's extensions.
async fn mcp_auth(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    use axum::response::IntoResponse;
    let (mut parts, body) = req.into_parts();
    let checked = match extract::bearer(&parts) {
        Ok(token) => state
            .warden
            .authenticate_agent(&token)
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    match checked {
        Ok(session) => {
            // The MCP handler reads the session from here instead of
            // authenticating the same token a second time.
            let ds = match api::data_session(&parts.headers) {
                Ok(ds) => ds,
                Err(e) => return e.into_response(),
            };
            let session = session
                .correlated(RequestId::of(&parts.extensions))
                .in_data_session(ds);
            parts.extensions.insert(session);
            next.run(Request::from_parts(parts, body)).await
        }
        Err(e) => e.into_response(),
    }
}

/// The whole HTTP surface: API, `/mcp`, health, metrics and `/openapi.json`.
pub fn router(state: AppState) -> Router {
    let publish = Router::new()
        .route("/v1/tools", post(api::publish))
        .layer(DefaultBodyLimit::max(MAX_PUBLISH_BYTES));
    let api = Router::new()
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/metrics", get(api::metrics))
        .route("/openapi.json", get(openapi::serve))
        .route("/v1/token", post(api::token))
        .route("/v1/actions", get(api::actions))
        .route("/v1/invoke", post(api::invoke))
        .route("/v1/invocations/{id}", get(api::invocation))
        .route("/v1/tenants", post(api::create_tenant).get(api::tenants))
        .route(
            "/v1/principals",
            post(api::add_principal).get(api::principals),
        )
        .route("/v1/settings", get(api::settings))
        .route("/v1/settings/{key}", put(api::set_setting))
        .route("/v1/tools", get(api::tools))
        .route("/v1/tools/{tool}/deploy", post(api::deploy))
        .route("/v1/tools/{tool}/rollback", post(api::rollback))
        .route("/v1/agents", post(api::create_agent))
        .route("/v1/agents/{name}/credentials", post(api::issue_credential))
        .route("/v1/agents/{name}/{verb}", post(api::agent_change))
        .route("/v1/grants", post(api::add_grant).get(api::grants))
        .route("/v1/grants/{agent}/{tool}", delete(api::revoke_grant))
        .route("/v1/inventory", get(api::inventory))
        .route("/v1/history", get(api::history))
        .route("/v1/audit/checkpoint", get(api::audit_checkpoint))
        .route("/v1/audit/entries", get(api::audit_entries))
        .route("/v1/audit/entries/{seq}/payload", get(api::audit_payload))
        .route("/v1/audit/proof/inclusion", get(api::audit_inclusion))
        .route("/v1/audit/proof/consistency", get(api::audit_consistency))
        .route("/v1/audit/export", get(api::audit_export))
        .route("/v1/audit/rotate-key", post(api::audit_rotate))
        .route("/v1/audit/replay", post(api::audit_replay))
        .route("/v1/policy", get(api::policy).put(api::set_policy))
        .route("/v1/policy/versions/{version}", get(api::policy_version))
        .route("/v1/policy/test", post(api::test_policy))
        .route("/v1/approvals", get(api::approvals))
        .route("/v1/approvals/{id}", get(api::approval))
        .route("/v1/approvals/{id}/{verb}", post(api::vote))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .merge(publish)
        .nest_service(
            "/mcp",
            Router::new()
                .fallback_service(mcp::http_service(state.clone()))
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    mcp_auth,
                ))
                .with_state(state.clone()),
        )
        .fallback(api::no_route);
    api.layer(axum::middleware::from_fn_with_state(state.clone(), count))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(axum::middleware::from_fn(correlate))
        .with_state(state)
}

/// Serves `router(state)` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
