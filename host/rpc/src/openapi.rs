//! The OpenAPI 3.1 document served at `/openapi.json`, generated from
//! [`ROUTES`]. A test walks `ROUTES` against the live router (every documented
//! route answers, no route is undocumented).

use axum::Json;
use serde_json::{Value, json};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// No authentication.
    None,
    /// An agent's access token.
    Agent,
    /// An operator key (admin key or principal API key).
    Operator,
}

/// (method, path, auth, summary) of every HTTP route except `/mcp`.
pub const ROUTES: &[(&str, &str, Auth, &str)] = &[
    (
        "get",
        "/healthz",
        Auth::None,
        "Liveness: the process answers",
    ),
    ("get", "/readyz", Auth::None, "Readiness: the store answers"),
    ("get", "/metrics", Auth::None, "Prometheus metrics"),
    ("get", "/openapi.json", Auth::None, "This document"),
    (
        "post",
        "/v1/token",
        Auth::None,
        "Exchange an agent credential for a short-lived access token",
    ),
    (
        "get",
        "/v1/actions",
        Auth::Agent,
        "The actions the calling agent is granted",
    ),
    (
        "post",
        "/v1/invoke",
        Auth::Agent,
        "Invoke a granted action (synchronously, or `async: true` for an invocation id)",
    ),
    (
        "get",
        "/v1/invocations/{id}",
        Auth::Agent,
        "Status and result of one of the agent's invocations; a held one answers `held` with its approval until the approved call ran (`?wait=<seconds>` long-polls, at most 60)",
    ),
    (
        "post",
        "/v1/tenants",
        Auth::Operator,
        "Create a tenant (admin key)",
    ),
    (
        "get",
        "/v1/tenants",
        Auth::Operator,
        "List tenants (admin key)",
    ),
    (
        "post",
        "/v1/principals",
        Auth::Operator,
        "Add a principal; answers its API key once",
    ),
    (
        "get",
        "/v1/principals",
        Auth::Operator,
        "List the tenant's principals (viewer)",
    ),
    (
        "get",
        "/v1/settings",
        Auth::Operator,
        "The tenant's settings (viewer)",
    ),
    (
        "put",
        "/v1/settings/{key}",
        Auth::Operator,
        "Change a tenant setting, on the record (deployer)",
    ),
    (
        "get",
        "/v1/policy",
        Auth::Operator,
        "The Cedar policy set in force, or null (viewer)",
    ),
    (
        "put",
        "/v1/policy",
        Auth::Operator,
        "Upload a new policy version; validated against the schema, refused when invalid (deployer)",
    ),
    (
        "get",
        "/v1/policy/versions/{version}",
        Auth::Operator,
        "One stored policy version (viewer)",
    ),
    (
        "post",
        "/v1/policy/test",
        Auth::Operator,
        "Decide a hypothetical call (grant, then policy) and say why (viewer)",
    ),
    (
        "get",
        "/v1/approvals",
        Auth::Operator,
        "Pending held calls the approver may decide, with the exact payload (`?all=true` adds the others, saying why not); viewers see all",
    ),
    (
        "get",
        "/v1/approvals/{id}",
        Auth::Operator,
        "One approval with its votes and, once run, its result. The requesting agent may read its own with its access token, long-polling with `?wait=<seconds>` (at most 60)",
    ),
    (
        "post",
        "/v1/approvals/{id}/{verb}",
        Auth::Operator,
        "`approve` or `reject` (approver, body `{\"comment\": ...}` optional; on quorum the call runs once and the answer carries its result); `cancel` by the requesting agent with its access token",
    ),
    (
        "post",
        "/v1/tools",
        Auth::Operator,
        "Publish a tool version: manifest text and base64 component (builder)",
    ),
    (
        "get",
        "/v1/tools",
        Auth::Operator,
        "Tools, versions and the live one (viewer)",
    ),
    (
        "post",
        "/v1/tools/{tool}/deploy",
        Auth::Operator,
        "Make a version live (deployer, not its publisher)",
    ),
    (
        "post",
        "/v1/tools/{tool}/rollback",
        Auth::Operator,
        "Make an earlier version live again (deployer)",
    ),
    (
        "post",
        "/v1/agents",
        Auth::Operator,
        "Draft an agent (builder)",
    ),
    (
        "post",
        "/v1/agents/{name}/credentials",
        Auth::Operator,
        "Issue an agent credential, answered once (deployer)",
    ),
    (
        "post",
        "/v1/agents/{name}/{verb}",
        Auth::Operator,
        "activate, suspend, renew or decommission an agent (deployer)",
    ),
    (
        "post",
        "/v1/grants",
        Auth::Operator,
        "Grant an agent a tool (deployer)",
    ),
    ("get", "/v1/grants", Auth::Operator, "List grants (viewer)"),
    (
        "delete",
        "/v1/grants/{agent}/{tool}",
        Auth::Operator,
        "Revoke a grant; the next call is denied (deployer)",
    ),
    (
        "get",
        "/v1/inventory",
        Auth::Operator,
        "Agents, tools and principals (viewer)",
    ),
    (
        "get",
        "/v1/history",
        Auth::Operator,
        "The tenant's governance history (viewer)",
    ),
    (
        "get",
        "/v1/audit/checkpoint",
        Auth::Operator,
        "The latest signed checkpoint of the tenant's audit trail (viewer)",
    ),
    (
        "get",
        "/v1/audit/entries",
        Auth::Operator,
        "Audit entries from `from`, at most `limit` (viewer)",
    ),
    (
        "get",
        "/v1/audit/entries/{seq}/payload",
        Auth::Operator,
        "The full input and output recorded with an entry (viewer)",
    ),
    (
        "get",
        "/v1/audit/proof/inclusion",
        Auth::Operator,
        "Inclusion proof of entry `seq` in the checkpoint of `size` (viewer)",
    ),
    (
        "get",
        "/v1/audit/proof/consistency",
        Auth::Operator,
        "Consistency proof between the checkpoints of `old` and `new` (viewer)",
    ),
    (
        "get",
        "/v1/audit/export",
        Auth::Operator,
        "An export bundle for offline verification (viewer)",
    ),
    (
        "post",
        "/v1/audit/rotate-key",
        Auth::Operator,
        "Rotate the tenant's audit keys (deployer)",
    ),
    (
        "post",
        "/v1/audit/replay",
        Auth::Operator,
        "Re-execute a recorded invocation from its import journal and compare (viewer)",
    ),
];

/// The document.
pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for (method, path, auth, summary) in ROUTES {
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        let mut op = json!({
            "summary": summary,
            "parameters": params,
            "responses": {
                "200": { "description": "Success (tool outcomes, including denials, are data here)", "content": { "application/json": { "schema": { "type": "object" } } } },
                "default": { "description": "Error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }
            }
        });
        if *auth != Auth::None {
            op["security"] = json!([{ "bearer": [] }]);
        }
        if matches!(*method, "post" | "put") {
            op["requestBody"] =
                json!({ "content": { "application/json": { "schema": { "type": "object" } } } });
        }
        let entry = paths.entry((*path).to_owned()).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Warden host API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Agents call granted tool actions; operators govern tenants, principals, tools, agents and grants. Errors use one envelope; tool outcomes are data in successful answers. MCP is served at /mcp (streamable HTTP)."
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": { "error": { "type": "object", "required": ["code", "message"], "properties": {
                        "code": { "type": "string" }, "message": { "type": "string" } } } }
                }
            }
        },
        "paths": paths
    })
}

pub async fn serve() -> Json<Value> {
    Json(document())
}
