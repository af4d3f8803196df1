//! Overhead of the retry layer on the no-retry path (the inner service answers 200 at once),
//! against tower-resilience's retry layer, in the same run.
//!
//! `cargo bench -p ratewise-retry --bench overhead -- --warm-up-time 1 --measurement-time 3`
#![allow(missing_docs)]

use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use ratewise_core::BoxError;
use tower::{Layer, Service};

/// An always-ready upstream answering 200 without allocating.
#[derive(Clone, Copy)]
struct Upstream;

impl Service<Request<Full<Bytes>>> for Upstream {
    type Response = Response<Full<Bytes>>;
    type Error = BoxError;
    type Future = Ready<Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Request<Full<Bytes>>) -> Self::Future {
        ready(Ok(Response::new(Full::new(Bytes::from_static(b"ok")))))
    }
}

fn request() -> Request<Full<Bytes>> {
    Request::get("https://api.example.com/repos/tokio-rs/tower")
        .header("user-agent", "ratewise-bench")
        .header("accept", "application/json")
        .body(Full::new(Bytes::from_static(b"")))
        .unwrap()
}

/// Readies the service and sends one request, polling once with a no-op waker: on this path
/// every future involved is ready at once, so the bench measures the layers, not a runtime.
fn send<S>(service: &mut S, request: Request<Full<Bytes>>) -> StatusCode
where
    S: Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>>,
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

fn overhead(c: &mut Criterion) {
    let template = request();
    let mut group = c.benchmark_group("retry_no_retry_path");

    group.bench_function("baseline_no_layer", |b| {
        b.iter(|| send(&mut Upstream, black_box(template.clone())));
    });

    group.bench_function("ratewise_retry", |b| {
        let mut service = ratewise_retry::RetryLayer::new().layer(Upstream);
        b.iter(|| send(&mut service, black_box(template.clone())));
    });

    group.bench_function("tower_resilience_retry", |b| {
        let layer = tower_resilience::retry::RetryLayer::<
            Request<Full<Bytes>>,
            Response<Full<Bytes>>,
            BoxError,
        >::builder()
        .max_attempts(3)
        .exponential_backoff(Duration::from_millis(100))
        .retry_on_response(|response: &Response<Full<Bytes>>| {
            matches!(
                response.status().as_u16(),
                408 | 429 | 500 | 502 | 503 | 504
            )
        })
        .build();
        let mut service = layer.layer(Upstream);
        b.iter(|| send(&mut service, black_box(template.clone())));
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = overhead
}
criterion_main!(benches);
