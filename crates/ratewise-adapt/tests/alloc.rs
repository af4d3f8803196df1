//! The uncontended path through the layer allocates nothing: reserve, call, learn, release.
//!
//! The only test of this binary, so that no other test allocates while it counts.

use std::alloc::System;
use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use http::{HeaderMap, HeaderValue, Request, Response, Uri};
use ratewise_adapt::AdaptLayer;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::{Layer, Service};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Answers at once with a clone of `headers` (empty clones do not allocate).
#[derive(Clone)]
struct NoOp {
    headers: HeaderMap,
}

impl Service<Request<()>> for NoOp {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Request<()>) -> Self::Future {
        let mut response = Response::new(());
        *response.headers_mut() = self.headers.clone();
        ready(Ok(response))
    }
}

fn one<S>(service: &mut S, request: Request<()>, cx: &mut Context<'_>)
where
    S: Service<Request<()>, Response = Response<()>>,
{
    assert!(service.poll_ready(cx).is_ready());
    let future = pin!(service.call(request));
    assert!(matches!(future.poll(cx), Poll::Ready(Ok(_))));
}

#[test]
fn the_uncontended_path_allocates_nothing() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let mut cx = Context::from_waker(Waker::noop());
    let uri = Uri::from_static("https://api.test/items");
    let request = || {
        let mut request = Request::new(());
        *request.uri_mut() = uri.clone();
        request
    };

    // A server that sends no rate-limit headers: the layer's own work only.
    let mut bare = AdaptLayer::new().layer(NoOp {
        headers: HeaderMap::new(),
    });
    // The first request creates the key; within the first few the thread makes its own copy
    // of the hot key (core's `Key::for_this_thread`, once per thread and key).
    for _ in 0..16 {
        one(&mut bare, request(), &mut cx);
    }
    let region = Region::new(GLOBAL);
    for _ in 0..1000 {
        one(&mut bare, request(), &mut cx);
    }
    let stats = region.change();
    assert_eq!(stats.allocations, 0, "{stats:?}");

    // With GitHub headers, only the parser's result allocates (its policy list).
    let mut headers = HeaderMap::new();
    headers.insert("x-ratelimit-limit", HeaderValue::from_static("1000000000"));
    headers.insert(
        "x-ratelimit-remaining",
        HeaderValue::from_static("999999999"),
    );
    headers.insert("x-ratelimit-reset", HeaderValue::from_static("4102444800"));
    let mut github = AdaptLayer::new().layer(NoOp { headers });
    one(&mut github, request(), &mut cx);
    let region = Region::new(GLOBAL);
    for _ in 0..1000 {
        one(&mut github, request(), &mut cx);
    }
    let stats = region.change();
    println!(
        "with GitHub headers: {} allocations per request (header map clone + parse)",
        stats.allocations as f64 / 1000.0
    );
}
