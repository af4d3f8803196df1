//! Overhead of a whole `ratewise::stack()` per request on a ready no-op service, beside the
//! equivalent tower-resilience stack and the bare service, in the same run.
//!
//! `cargo bench --bench stack --features full -- --warm-up-time 1 --measurement-time 3`
//!
//! - `bare`: the inner service alone (answers at once, no headers).
//! - `ratewise_stack`: `stack()` with its defaults (deadline off, metrics, retry, circuit
//!   breaker, adaptation) plus pacing at a quota that never makes anyone wait, and the attempt
//!   timeout: every layer's fast path.
//! - `ratewise_equivalent`: the same layers as the tower-resilience stack (retry, circuit
//!   breaker, pacing, attempt timeout): `stack()` without adaptation and metrics.
//! - `tower_resilience_stack`: retry (3 attempts on 408/429/5xx), circuit breaker (defaults),
//!   rate limiter (never binding) and time limiter (60 s), errors boxed between layers as
//!   tower-resilience's per-layer error types require.

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Full;
use ratewise::BoxError;
use ratewise::pace::{PaceLayer, Quota};
use tower::{Service, ServiceBuilder, ServiceExt};

type Body = Full<Bytes>;

fn answer(_request: Request<Body>) -> std::future::Ready<Result<Response<Body>, Infallible>> {
    std::future::ready(Ok(Response::new(Full::new(Bytes::new()))))
}

fn inner() -> tower::util::ServiceFn<
    fn(Request<Body>) -> std::future::Ready<Result<Response<Body>, Infallible>>,
> {
    tower::service_fn(answer as fn(_) -> _)
}

fn request() -> Request<Body> {
    Request::get("https://api.example.com/items/1")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn drive<S>(runtime: &tokio::runtime::Runtime, svc: &mut S, iters: u64) -> Duration
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Error: std::fmt::Debug,
{
    runtime.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            let response = svc.ready().await.unwrap().call(request()).await.unwrap();
            black_box(response);
        }
        start.elapsed()
    })
}

fn stacks(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let mut group = c.benchmark_group("stack_overhead");

    let mut bare = inner();
    group.bench_function("bare", |b| b.iter_custom(|n| drive(&runtime, &mut bare, n)));

    let stack = ratewise::stack()
        .pace(PaceLayer::new(
            Quota::per_second(1_000_000_000)
                .and_then(|q| q.burst(1_000_000))
                .unwrap(),
        ))
        .build()
        .unwrap();
    let mut ours = ServiceBuilder::new().layer(stack).service(inner());
    group.bench_function("ratewise_stack", |b| {
        b.iter_custom(|n| drive(&runtime, &mut ours, n))
    });

    let equivalent = ratewise::stack()
        .without_adapt()
        .without_metrics()
        .pace(PaceLayer::new(
            Quota::per_second(1_000_000_000)
                .and_then(|q| q.burst(1_000_000))
                .unwrap(),
        ))
        .build()
        .unwrap();
    let mut ours_equivalent = ServiceBuilder::new().layer(equivalent).service(inner());
    group.bench_function("ratewise_equivalent", |b| {
        b.iter_custom(|n| drive(&runtime, &mut ours_equivalent, n))
    });

    let retry =
        tower_resilience::retry::RetryLayer::<Request<Body>, Response<Body>, BoxError>::builder()
            .max_attempts(3)
            .exponential_backoff(Duration::from_millis(100))
            .retry_on_response(|response: &Response<Body>| {
                matches!(
                    response.status().as_u16(),
                    408 | 429 | 500 | 502 | 503 | 504
                )
            })
            .build();
    let breaker = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .build()
        .unwrap();
    let limiter = tower_resilience::ratelimiter::RateLimiterLayer::builder()
        .limit_for_period(1_000_000_000)
        .refresh_period(Duration::from_secs(1))
        .build()
        .unwrap();
    let time_limiter = tower_resilience::timelimiter::TimeLimiterLayer::builder()
        .timeout_duration(Duration::from_secs(60))
        .build();
    let mut theirs = ServiceBuilder::new()
        .layer(retry)
        .map_err(BoxError::from)
        .layer(breaker)
        .map_err(|e| -> BoxError { format!("{e:?}").into() })
        .layer(limiter)
        .map_err(|e| -> BoxError { format!("{e:?}").into() })
        .layer(time_limiter)
        .service(inner());
    group.bench_function("tower_resilience_stack", |b| {
        b.iter_custom(|n| drive(&runtime, &mut theirs, n))
    });
    group.finish();
}

criterion_group!(benches, stacks);
criterion_main!(benches);
