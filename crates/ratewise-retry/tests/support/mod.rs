//! A tiny upstream for the behaviour tests: logs every attempt (virtual arrival time, method,
//! headers, full body) and answers from a script.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use ratewise_core::BoxError;
use tokio::time::Instant;
use tower::Service;

/// One attempt as the upstream saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub method: Method,
    pub headers: HeaderMap,
    pub body: Bytes,
}

type Respond = dyn Fn(usize, &Seen) -> Result<Response<Full<Bytes>>, BoxError> + Send + Sync;

/// The scripted upstream; clones share the log.
#[derive(Clone)]
pub struct Upstream {
    log: Arc<Mutex<Vec<Seen>>>,
    respond: Arc<Respond>,
}

impl Upstream {
    /// Answers attempt `n` (0-based, across all requests) with `respond(n, seen)`.
    pub fn new(
        respond: impl Fn(usize, &Seen) -> Result<Response<Full<Bytes>>, BoxError>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        Upstream {
            log: Arc::default(),
            respond: Arc::new(respond),
        }
    }

    /// Always answers `status` with the given headers.
    pub fn always(status: StatusCode, headers: &'static [(&'static str, &'static str)]) -> Self {
        Upstream::new(move |_, _| Ok(response(status, headers)))
    }

    pub fn log(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.log.lock().unwrap().len()
    }
}

pub fn response(
    status: StatusCode,
    headers: &[(&'static str, &'static str)],
) -> Response<Full<Bytes>> {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Full::new(Bytes::from_static(b"upstream")))
        .unwrap()
}

impl<B> Service<Request<B>> for Upstream
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Full<Bytes>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let at = Instant::now();
            let (parts, body) = request.into_parts();
            let body = body.collect().await.map_err(Into::into)?.to_bytes();
            let seen = Seen {
                at,
                method: parts.method,
                headers: parts.headers,
                body,
            };
            let n = {
                let mut log = this.log.lock().unwrap();
                log.push(seen.clone());
                log.len() - 1
            };
            (this.respond)(n, &seen)
        })
    }
}

pub fn get(uri: &str) -> Request<Full<Bytes>> {
    Request::get(uri).body(Full::new(Bytes::new())).unwrap()
}
