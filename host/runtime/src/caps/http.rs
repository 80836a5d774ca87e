//! The `http` capability: standard `wasi:http/outgoing-handler`, with every
//! request checked by the guard before a connection is opened.
//!
//! wasmtime-wasi-http calls [`WasiHttpHooks::send_request`] for each outgoing
//! request; [`HttpHooks`] asks the guard about scheme, host, port and method,
//! refuses with `HTTP-request-denied` when the grant does not allow it, and
//! reads the response body in full, at most the grant's `max_response_bytes`
//! (a larger body fails the request), so the response can be journaled for
//! replay. A replay answers from the journal and opens no connection.

use std::time::Duration;

use http_body_util::BodyExt;
use warden_policy::{Decision, ImportCall};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::guard::Guard;
use crate::journal::B64;

/// Connect timeout when the guest sets none. The call's own deadline still
/// bounds the whole request.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Hooks of one call's outgoing HTTP.
#[derive(Debug)]
pub struct HttpHooks {
    pub guard: Guard,
    /// Largest response body delivered to the guest; 0 when http is not granted.
    pub max_response_bytes: u64,
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for HttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> SendFuture {
        drop(fut);
        let uri = request.uri();
        let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
        let host = uri.host().unwrap_or_default().to_owned();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "http" { 80 } else { 443 });
        let call = ImportCall::HttpRequest {
            scheme,
            host,
            port,
            method: request.method().as_str().to_owned(),
            path: uri.path().to_owned(),
        };
        let (seq, decision) = self.guard.check(call);
        if let Decision::Deny { .. } = decision {
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        // Journaled request: the full URI (with its query) and the header
        // names. Header values are not journaled: they may carry secrets.
        let mut names: Vec<String> = request
            .headers()
            .keys()
            .map(|k| k.as_str().to_owned())
            .collect();
        names.sort();
        names.dedup();
        let journaled_request = serde_json::json!({
            "uri": request.uri().to_string(),
            "headers": names,
        });
        let guard = self.guard.clone();
        if guard.replaying() {
            return Box::new(async move {
                // Consume the guest's request body as the network would.
                let (_, body) = request.into_parts();
                let _ = body.collect().await;
                let journaled = guard
                    .replayed(seq, &journaled_request)
                    .map_err(|e| Error::InternalError(Some(e)))?;
                let response = replayed_response(&journaled).inspect_err(|e| {
                    guard.record_error(seq, format!("{e:?}"));
                })?;
                let io: Box<dyn Future<Output = Result<(), Error>> + Send> =
                    Box::new(async { Ok(()) });
                Ok((response, io))
            });
        }
        let max = self.max_response_bytes;
        let mut options = options.unwrap_or_default();
        options
            .connect_timeout
            .get_or_insert(DEFAULT_CONNECT_TIMEOUT);
        Box::new(async move {
            // Write-ahead: the request leaves only once its decision is durable.
            if guard.before_effect(seq).await.is_err() {
                return Err(Error::HttpRequestDenied);
            }
            let result = fetch(request, options, max).await;
            match result {
                Ok((status, headers, body)) => {
                    guard.journal(
                        seq,
                        journaled_request,
                        serde_json::json!({ "ok": {
                            "status": status.as_u16(),
                            "headers": header_pairs(&headers),
                            "body": B64(body.to_vec()),
                        }}),
                    );
                    let mut response = http::Response::new(full(body));
                    *response.status_mut() = status;
                    *response.headers_mut() = headers;
                    let io: Box<dyn Future<Output = Result<(), Error>> + Send> =
                        Box::new(async { Ok(()) });
                    Ok((response, io))
                }
                Err(e) => {
                    let text = format!("{e:?}");
                    guard.record_error(seq, text.clone());
                    guard.journal(seq, journaled_request, serde_json::json!({ "err": text }));
                    Err(e)
                }
            }
        })
    }
}

/// Sends the request and reads the whole response body, at most `max` bytes
/// (a larger body fails the request). The body is read in full so it can be
/// journaled; it was already bounded by the grant.
async fn fetch(
    request: http::Request<WasiBody>,
    options: RequestOptions,
    max: u64,
) -> Result<(http::StatusCode, http::HeaderMap, bytes::Bytes), Error> {
    let (response, io) = wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
    // The connection is driven by `io` while the body is read, and stopped
    // when this future ends or is dropped (deadline).
    struct AbortOnDrop(tokio::task::JoinHandle<Result<(), Error>>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _io = AbortOnDrop(tokio::spawn(io));
    let (parts, body) = response.into_parts();
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let collected = http_body_util::Limited::new(body, limit).collect().await;
    let body = match collected {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            return Err(match e.downcast::<Error>() {
                Ok(inner) => *inner,
                Err(_) => Error::HttpResponseBodySize(Some(max)),
            });
        }
    };
    Ok((parts.status, parts.headers, body))
}

fn full(body: bytes::Bytes) -> WasiBody {
    http_body_util::Full::new(body)
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn header_pairs(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// The response a replay gives the guest, from the journaled result.
fn replayed_response(journaled: &serde_json::Value) -> Result<http::Response<WasiBody>, Error> {
    if let Some(err) = journaled.get("err") {
        return Err(journaled_error(err.as_str().unwrap_or_default()));
    }
    let bad = || Error::InternalError(Some("replay: the journaled response is malformed".into()));
    let ok = journaled.get("ok").ok_or_else(bad)?;
    #[derive(serde::Deserialize)]
    struct Journaled {
        status: u16,
        headers: Vec<(String, String)>,
        body: B64,
    }
    let j: Journaled = serde_json::from_value(ok.clone()).map_err(|_| bad())?;
    let mut response = http::Response::new(full(bytes::Bytes::from(j.body.0)));
    *response.status_mut() = http::StatusCode::from_u16(j.status).map_err(|_| bad())?;
    for (k, v) in j.headers {
        let name = http::HeaderName::from_bytes(k.as_bytes()).map_err(|_| bad())?;
        let value = http::HeaderValue::from_str(&v).map_err(|_| bad())?;
        response.headers_mut().append(name, value);
    }
    Ok(response)
}

/// Maps a journaled error (its debug text) back to the error the guest saw.
/// Errors carrying an OS error or a library error cannot be rebuilt exactly;
/// they come back as an internal error with the journaled text.
fn journaled_error(text: &str) -> Error {
    match text {
        "DnsTimeout" => Error::DnsTimeout,
        "DestinationNotFound" => Error::DestinationNotFound,
        "DestinationUnavailable" => Error::DestinationUnavailable,
        "ConnectionRefused" => Error::ConnectionRefused,
        "ConnectionTerminated" => Error::ConnectionTerminated,
        "ConnectionTimeout" => Error::ConnectionTimeout,
        "ConnectionReadTimeout" => Error::ConnectionReadTimeout,
        "HttpResponseIncomplete" => Error::HttpResponseIncomplete,
        "HttpResponseTimeout" => Error::HttpResponseTimeout,
        "HttpProtocolError" => Error::HttpProtocolError,
        t if t.starts_with("HttpResponseBodySize") => Error::HttpResponseBodySize(None),
        t => Error::InternalError(Some(t.to_owned())),
    }
}
