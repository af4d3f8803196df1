//! Closed-state overhead of `CircuitBreakerLayer` beside tower-resilience's circuit breaker, in
//! the same run: one `ready(); call(request).await` per iteration over an inner service that
//! answers at once; single thread, and two threads sharing one breaker (one key).
//!
//! `cargo bench -p ratewise-breaker --bench closed_overhead -- --warm-up-time 1 --measurement-time 3`

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response, Uri};
use ratewise_breaker::CircuitBreakerLayer;
use ratewise_core::Global;
use tower::{Layer, Service, ServiceExt};

type Inner =
    tower::util::ServiceFn<fn(Request<()>) -> std::future::Ready<Result<Response<()>, Infallible>>>;

fn answer(_request: Request<()>) -> std::future::Ready<Result<Response<()>, Infallible>> {
    std::future::ready(Ok(Response::new(())))
}

fn inner() -> Inner {
    tower::service_fn(answer as fn(_) -> _)
}

fn request(uri: &Uri) -> Request<()> {
    let mut request = Request::new(());
    *request.uri_mut() = uri.clone();
    request
}

/// Runs `iters` calls through `svc` on a current-thread runtime; returns the elapsed time.
fn drive<S>(runtime: &tokio::runtime::Runtime, svc: &mut S, uri: &Uri, iters: u64) -> Duration
where
    S: Service<Request<()>, Response = Response<()>>,
    S::Error: std::fmt::Debug,
{
    runtime.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            let response = svc.ready().await.unwrap().call(request(uri)).await.unwrap();
            black_box(response);
        }
        start.elapsed()
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// Makes a fresh service per thread from `make` (clones of one shared breaker) and runs
/// `iters` calls on each of two threads at once; returns the longest thread time.
fn contended<S, F>(make: F, uri: &Uri, iters: u64) -> Duration
where
    F: Fn() -> S + Sync,
    S: Service<Request<()>, Response = Response<()>>,
    S::Error: std::fmt::Debug,
{
    let barrier = Barrier::new(2);
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let runtime = runtime();
                    let mut svc = make();
                    barrier.wait();
                    drive(&runtime, &mut svc, uri, iters)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .max()
            .unwrap()
    })
}

fn bench<S, F>(c: &mut Criterion, group: &str, name: &str, make: F)
where
    F: Fn() -> S + Sync,
    S: Service<Request<()>, Response = Response<()>>,
    S::Error: std::fmt::Debug,
{
    let uri: Uri = "https://api.example.com/items".parse().unwrap();
    let runtime = runtime();
    let mut svc = make();
    drive(&runtime, &mut svc, &uri, 10);
    c.benchmark_group(format!("{group}/single_thread"))
        .bench_function(name, |b| {
            b.iter_custom(|iters| drive(&runtime, &mut svc, &uri, iters))
        });
    c.benchmark_group(format!("{group}/two_threads"))
        .bench_function(name, |b| {
            b.iter_custom(|iters| contended(&make, &uri, iters))
        });
}

fn closed_overhead(c: &mut Criterion) {
    let group = "breaker_closed";
    bench(c, group, "baseline_no_layer", inner);

    let by_host = CircuitBreakerLayer::new();
    bench(c, group, "ratewise_by_host", || by_host.layer(inner()));

    let global = CircuitBreakerLayer::builder()
        .key_fn(Global::new())
        .build()
        .unwrap();
    bench(c, group, "ratewise_global", || global.layer(inner()));

    let resilience = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .build()
        .unwrap();
    bench(c, group, "tower_resilience_0_13", || {
        resilience.layer(inner())
    });
}

criterion_group!(benches, closed_overhead);
criterion_main!(benches);
