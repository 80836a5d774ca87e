//! The `http` capability: standard `wasi:http/outgoing-handler`, with every
//! request checked by the guard before a connection is opened.
//!
//! wasmtime-wasi-http calls [`WasiHttpHooks::send_request`] for each outgoing
//! request; [`HttpHooks`] asks the guard about scheme, host, port and method,
//! refuses with `HTTP-request-denied` when the grant does not allow it, and
//! caps the response body at the grant's `max_response_bytes`.

use std::time::Duration;

use http_body_util::BodyExt;
use warden_policy::{Decision, ImportCall};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::guard::Guard;

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
        let max = self.max_response_bytes;
        let guard = self.guard.clone();
        let mut options = options.unwrap_or_default();
        options
            .connect_timeout
            .get_or_insert(DEFAULT_CONNECT_TIMEOUT);
        Box::new(async move {
            let (response, io) =
                match wasmtime_wasi_http::default_send_request(request, Some(options)).await {
                    Ok(r) => r,
                    Err(e) => {
                        guard.record_error(seq, format!("{e:?}"));
                        return Err(e);
                    }
                };
            let response = response.map(|body| {
                http_body_util::Limited::new(body, usize::try_from(max).unwrap_or(usize::MAX))
                    .map_err(move |e| match e.downcast::<Error>() {
                        Ok(inner) => *inner,
                        Err(_) => Error::HttpResponseBodySize(Some(max)),
                    })
                    .boxed_unsync()
            });
            Ok((response, Box::new(io) as Box<dyn Future<Output = _> + Send>))
        })
    }
}
