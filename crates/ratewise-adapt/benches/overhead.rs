//! Per-request overhead of `AdaptLayer` on a ready no-op service whose responses carry GitHub
//! rate-limit headers, next to the same service without the layer.
//!
//! `cargo bench -p ratewise-adapt --bench overhead`

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group, criterion_main};
use std::time::SystemTime;

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri};
use ratewise_adapt::AdaptLayer;
use tower::{Layer, Service};

/// Answers every request at once with a clone of one header map (GitHub dialect, a quota that
/// never runs out during the bench).
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

fn github_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    put("date", "Thu, 26 Nov 2026 18:00:00 GMT");
    put("x-ratelimit-limit", "1000000000");
    put("x-ratelimit-remaining", "999999999");
    put("x-ratelimit-used", "1");
    // An hour after `date`: the window stays valid, so every request is the steady state
    // (a reset before `date` would make every request a slow-start probe of a new window).
    put("x-ratelimit-reset", "1795719600");
    put("x-ratelimit-resource", "core");
    headers
}

/// One request through `service`: ready, call, and poll the (immediately ready) future. Not
/// inlined, so that a profiler counts its calls (instructions per request under callgrind).
#[inline(never)]
fn one<S>(service: &mut S, cx: &mut Context<'_>)
where
    S: Service<Request<()>, Response = Response<()>>,
    S::Error: std::fmt::Debug,
{
    assert!(service.poll_ready(cx).is_ready());
    let mut request = Request::new(());
    *request.uri_mut() = Uri::from_static("https://api.github.com/repos/a/b");
    let future = pin!(service.call(request));
    match future.poll(cx) {
        Poll::Ready(Ok(response)) => {
            black_box(response);
        }
        other => panic!("not ready: {:?}", other.map(|r| r.map(|_| ()))),
    }
}

fn overhead(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let mut cx = Context::from_waker(Waker::noop());
    let no_op = NoOp {
        headers: github_headers(),
    };

    let mut group = c.benchmark_group("adapt_overhead");
    let mut bare = no_op.clone();
    group.bench_function("bare_service", |b| b.iter(|| one(&mut bare, &mut cx)));
    let headers = no_op.headers.clone();
    let mut adapted = AdaptLayer::new().layer(no_op);
    group.bench_function("adapt_layer_github_headers", |b| {
        b.iter(|| one(&mut adapted, &mut cx))
    });
    // The parser's share of the above (ratewise-headers, run once per response).
    group.bench_function("parse_github_headers", |b| {
        b.iter(|| {
            black_box(ratewise_headers::parse(
                StatusCode::OK,
                black_box(&headers),
                SystemTime::now(),
            ))
        })
    });
    let empty = HeaderMap::new();
    group.bench_function("parse_no_headers", |b| {
        b.iter(|| {
            black_box(ratewise_headers::parse(
                StatusCode::OK,
                black_box(&empty),
                SystemTime::now(),
            ))
        })
    });
    // A server that sends no rate-limit headers: the layer's own bookkeeping only.
    let quiet = NoOp {
        headers: HeaderMap::new(),
    };
    let mut bare_quiet = quiet.clone();
    group.bench_function("bare_service_no_headers", |b| {
        b.iter(|| one(&mut bare_quiet, &mut cx))
    });
    let mut adapted_quiet = AdaptLayer::new().layer(quiet);
    group.bench_function("adapt_layer_no_headers", |b| {
        b.iter(|| one(&mut adapted_quiet, &mut cx))
    });
    group.finish();
}

criterion_group!(benches, overhead);
criterion_main!(benches);
