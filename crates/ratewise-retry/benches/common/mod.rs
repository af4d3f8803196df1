//! What both benches share: the upstream, the request, the peers and a synchronous driver.
#![allow(dead_code, unreachable_pub)]

use std::future::{Future, Ready, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use ratewise_core::BoxError;
use tower::{Layer, Service};

pub type Req = Request<Full<Bytes>>;
pub type Res = Response<Full<Bytes>>;

/// An always-ready upstream answering 200 at once.
#[derive(Clone, Copy)]
pub struct Upstream;

impl Service<Req> for Upstream {
    type Response = Res;
    type Error = BoxError;
    type Future = Ready<Result<Res, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Req) -> Self::Future {
        ready(Ok(Response::new(Full::new(Bytes::from_static(b"ok")))))
    }
}

/// The least a `tower::retry::Policy` must do to be able to retry: copy the request.
#[derive(Clone, Copy)]
pub struct CopyOnly;

impl<R, E> tower::retry::Policy<Req, R, E> for CopyOnly {
    type Future = Ready<()>;

    fn retry(&mut self, _: &mut Req, _: &mut Result<R, E>) -> Option<Ready<()>> {
        None
    }

    fn clone_request(&mut self, request: &Req) -> Option<Req> {
        Some(request.clone())
    }
}

/// A GET with two headers, as a typical API call.
pub fn request() -> Req {
    Request::get("https://api.example.com/repos/tokio-rs/tower")
        .header("user-agent", "ratewise-bench")
        .header("accept", "application/json")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// A POST without an idempotency key, with the same headers and a small body.
pub fn post() -> Req {
    Request::post("https://api.example.com/repos/tokio-rs/tower/issues")
        .header("user-agent", "ratewise-bench")
        .header("accept", "application/json")
        .body(Full::new(Bytes::from_static(b"{\"title\":\"bench\"}")))
        .unwrap()
}

/// ratewise's retry layer with its defaults.
pub fn ratewise() -> ratewise_retry::Retry<Upstream> {
    ratewise_retry::RetryLayer::new().layer(Upstream)
}

/// ratewise's retry layer sending requests that are not idempotent once, uncopied
/// (`retry_unsent(false)`).
pub fn ratewise_sent_once() -> ratewise_retry::Retry<Upstream> {
    ratewise_retry::RetryLayer::builder()
        .retry_unsent(false)
        .build()
        .unwrap()
        .layer(Upstream)
}

/// tower's `Retry` with [`CopyOnly`]: the floor of any policy built on tower::retry.
pub fn tower_floor() -> tower::retry::Retry<CopyOnly, Upstream> {
    tower::retry::Retry::new(CopyOnly, Upstream)
}

/// tower-resilience's retry layer configured like ours: 3 attempts, exponential backoff from
/// 100 ms, the same retryable statuses.
pub fn tower_resilience() -> tower_resilience::retry::Retry<Upstream, Req, Res, BoxError> {
    tower_resilience::retry::RetryLayer::<Req, Res, BoxError>::builder()
        .max_attempts(3)
        .exponential_backoff(Duration::from_millis(100))
        .retry_on_response(|response: &Res| {
            matches!(
                response.status().as_u16(),
                408 | 429 | 500 | 502 | 503 | 504
            )
        })
        .build()
        .layer(Upstream)
}

/// Readies the service and sends one request, polling once with a no-op waker: on this path
/// every future involved is ready at once, so the benches measure the layers, not a runtime.
pub fn send<S>(service: &mut S, request: Req) -> StatusCode
where
    S: Service<Req, Response = Res>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    match service.poll_ready(&mut cx) {
        Poll::Ready(ready) => ready.unwrap(),
        Poll::Pending => panic!("the bench upstream is always ready"),
    }
    let mut future = pin!(service.call(request));
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(response) => response.unwrap().status(),
        Poll::Pending => panic!("no retry happens on this path"),
    }
}
