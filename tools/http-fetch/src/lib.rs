//! `http-fetch`: GET and POST through `wasi:http`. The host decides which hosts
//! are reachable; this tool adds its own response cap.

use warden_guest::http;
use warden_guest::prelude::*;

struct HttpFetch;

/// Default response cap of this tool: 256 KiB.
const DEFAULT_MAX_BYTES: u64 = 256 * 1024;

fn default_max() -> u64 {
    DEFAULT_MAX_BYTES
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct GetInput {
    /// `http://` or `https://` URL.
    url: String,
    /// Largest response body to accept, in bytes.
    #[serde(default = "default_max")]
    max_bytes: u64,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PostInput {
    url: String,
    /// Request body, sent as text.
    body: String,
    #[serde(default = "default_content_type")]
    content_type: String,
    #[serde(default = "default_max")]
    max_bytes: u64,
}

fn default_content_type() -> String {
    "application/json".to_owned()
}

#[derive(Serialize, JsonSchema)]
struct FetchOutput {
    status: u16,
    /// The response body as text (lossy UTF-8).
    body: String,
    bytes: u64,
}

fn output(r: http::Response) -> FetchOutput {
    FetchOutput {
        status: r.status,
        bytes: r.body.len() as u64,
        body: r.text(),
    }
}

fn get(input: GetInput) -> Result<FetchOutput, ToolError> {
    Ok(output(http::get(&input.url, input.max_bytes)?))
}

fn post(input: PostInput) -> Result<FetchOutput, ToolError> {
    Ok(output(http::post(
        &input.url,
        &input.content_type,
        input.body.as_bytes(),
        input.max_bytes,
    )?))
}

impl Tool for HttpFetch {
    const NAME: &'static str = "http-fetch";
    const VERSION: &'static str = "0.1.0";
    const DESCRIPTION: &'static str =
        "Fetch URLs over HTTP(S): GET and POST to granted hosts only, with a response size cap.";

    fn actions() -> Vec<Action> {
        vec![
            Action::new(
                "get",
                "GET a URL and return status and body.",
                Effect::Read,
                get,
            ),
            Action::new(
                "post",
                "POST a body to a URL and return status and body.",
                Effect::External,
                post,
            ),
        ]
    }
}

warden_guest::export_tool!(HttpFetch);
