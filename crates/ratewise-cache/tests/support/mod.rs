//! A tiny origin server as a tower service, for the cache and batch tests.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use ratewise_core::BoxError;
use tower::Service;

pub type Handler =
    dyn Fn(&Request<Full<Bytes>>, usize) -> Result<Response<Full<Bytes>>, BoxError> + Send + Sync;

/// Counts requests, records their headers, answers with `handler(request, call_index)` after
/// `latency` (tokio time).
#[derive(Clone)]
pub struct Origin {
    state: Arc<State>,
}

struct State {
    calls: AtomicUsize,
    not_modified: AtomicUsize,
    seen: Mutex<Vec<HeaderMap>>,
    latency: Duration,
    handler: Box<Handler>,
}

impl Origin {
    pub fn new(
        latency: Duration,
        handler: impl Fn(&Request<Full<Bytes>>, usize) -> Result<Response<Full<Bytes>>, BoxError>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        Origin {
            state: Arc::new(State {
                calls: AtomicUsize::new(0),
                not_modified: AtomicUsize::new(0),
                seen: Mutex::new(Vec::new()),
                latency,
                handler: Box::new(handler),
            }),
        }
    }

    /// Requests received (counted on arrival).
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// 304 responses sent.
    pub fn not_modified(&self) -> usize {
        self.state.not_modified.load(Ordering::SeqCst)
    }

    /// Headers of every request received.
    pub fn seen(&self) -> Vec<HeaderMap> {
        self.state.seen.lock().unwrap().clone()
    }
}

impl Service<Request<Full<Bytes>>> for Origin {
    type Response = Response<Full<Bytes>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Full<Bytes>>) -> Self::Future {
        let state = self.state.clone();
        let index = state.calls.fetch_add(1, Ordering::SeqCst);
        state.seen.lock().unwrap().push(request.headers().clone());
        Box::pin(async move {
            tokio::time::sleep(state.latency).await;
            let response = (state.handler)(&request, index)?;
            if response.status() == StatusCode::NOT_MODIFIED {
                state.not_modified.fetch_add(1, Ordering::SeqCst);
            }
            Ok(response)
        })
    }
}

pub fn get(uri: &str) -> Request<Full<Bytes>> {
    Request::get(uri).body(Full::default()).unwrap()
}

pub fn response(cache_control: &str, body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .header("cache-control", cache_control)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

pub async fn body_of<B>(response: Response<B>) -> Bytes
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    response.into_body().collect().await.unwrap().to_bytes()
}
