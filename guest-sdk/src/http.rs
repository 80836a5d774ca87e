//! Outgoing HTTP through standard `wasi:http/outgoing-handler`.
//!
//! The host checks every request against the grant (scheme, host, port, method)
//! and caps the response body; a refused request comes back as
//! [`Error::Denied`]. This module adds a response cap of its own so a tool can
//! bound what it buffers.

use wasip2::http::outgoing_handler;
use wasip2::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
use wasip2::io::streams::StreamError;

/// A response with its body fully read.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as UTF-8 text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The host refused the request (not in the grant).
    Denied(String),
    /// The URL could not be used.
    InvalidUrl(String),
    /// The response body is larger than the cap.
    TooLarge(u64),
    /// Any other transport or protocol failure.
    Failed(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Denied(m) => write!(f, "http request denied: {m}"),
            Error::InvalidUrl(m) => write!(f, "invalid url: {m}"),
            Error::TooLarge(n) => write!(f, "response body exceeds {n} bytes"),
            Error::Failed(m) => write!(f, "http request failed: {m}"),
        }
    }
}

impl From<Error> for crate::ToolError {
    fn from(e: Error) -> crate::ToolError {
        match e {
            Error::Denied(_) => crate::ToolError::Denied(e.to_string()),
            _ => crate::ToolError::Failed(e.to_string()),
        }
    }
}

fn code_error(code: ErrorCode) -> Error {
    match code {
        ErrorCode::HttpRequestDenied => Error::Denied("the host's grant does not allow it".into()),
        ErrorCode::HttpResponseBodySize(n) => Error::TooLarge(n.unwrap_or(0)),
        other => Error::Failed(format!("{other:?}")),
    }
}

/// `GET url`, reading at most `max_bytes` of body.
pub fn get(url: &str, max_bytes: u64) -> Result<Response, Error> {
    request("GET", url, &[], None, max_bytes)
}

/// `POST url` with a body, reading at most `max_bytes` of response body.
pub fn post(url: &str, content_type: &str, body: &[u8], max_bytes: u64) -> Result<Response, Error> {
    request(
        "POST",
        url,
        &[("content-type", content_type)],
        Some(body),
        max_bytes,
    )
}

/// Sends one request. `url` is `http(s)://host[:port][/path?query]`.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    max_bytes: u64,
) -> Result<Response, Error> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| Error::InvalidUrl(format!("`{url}` has no scheme")))?;
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => {
            return Err(Error::InvalidUrl(format!(
                "scheme `{other}` is not http or https"
            )));
        }
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(Error::InvalidUrl(format!("`{url}` has no host")));
    }
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.to_owned()),
    };

    let fields = Fields::new();
    if let Some(bytes) = body {
        // A known length lets every server read the body without chunking.
        fields
            .append("content-length", bytes.len().to_string().as_bytes())
            .map_err(|e| Error::InvalidUrl(format!("content-length: {e:?}")))?;
    }
    for (k, v) in headers {
        fields
            .append(k, v.as_bytes())
            .map_err(|e| Error::InvalidUrl(format!("header `{k}`: {e:?}")))?;
    }
    let req = OutgoingRequest::new(fields);
    let bad = |what: &str| Error::InvalidUrl(format!("{what} of `{url}` is not valid"));
    req.set_method(&method).map_err(|_| bad("method"))?;
    req.set_scheme(Some(&scheme)).map_err(|_| bad("scheme"))?;
    req.set_authority(Some(authority))
        .map_err(|_| bad("authority"))?;
    req.set_path_with_query(Some(path))
        .map_err(|_| bad("path"))?;
    let out_body = req
        .body()
        .map_err(|_| Error::Failed("request body unavailable".into()))?;

    let future = outgoing_handler::handle(req, None).map_err(code_error)?;

    if let Some(bytes) = body {
        let stream = out_body
            .write()
            .map_err(|_| Error::Failed("request body stream unavailable".into()))?;
        for chunk in bytes.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| Error::Failed(format!("writing request body: {e:?}")))?;
        }
        drop(stream);
    }
    OutgoingBody::finish(out_body, None).map_err(code_error)?;

    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(r))) => r,
        Some(Ok(Err(code))) => return Err(code_error(code)),
        Some(Err(())) | None => return Err(Error::Failed("response already taken".into())),
    };
    let status = response.status();
    let headers = response.headers().entries();
    let incoming = response
        .consume()
        .map_err(|_| Error::Failed("response body unavailable".into()))?;
    let stream = incoming
        .stream()
        .map_err(|_| Error::Failed("response body stream unavailable".into()))?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => {
                body.extend_from_slice(&chunk);
                if body.len() as u64 > max_bytes {
                    return Err(Error::TooLarge(max_bytes));
                }
            }
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                if let Some(code) = wasip2::http::types::http_error_code(&e) {
                    return Err(code_error(code));
                }
                // wasmtime-wasi-http reports the host's body cap as a plain
                // stream error whose text names the limit.
                let text = e.to_debug_string();
                if text.contains("body size exceeds") {
                    return Err(Error::TooLarge(max_bytes));
                }
                return Err(Error::Failed(format!("reading response body: {text}")));
            }
        }
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}
