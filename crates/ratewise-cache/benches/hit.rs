//! Cache-hit overhead of `CacheLayer` next to tower-resilience's cache layer and
//! http-cache-tower (moka manager), in the same run, over the same inner service.
//!
//! Run: `cargo bench -p ratewise-cache --bench hit -- --warm-up-time 1 --measurement-time 3`.
//!
//! Each iteration builds a GET, calls the (cloned, readied) service and drops the response;
//! `baseline` is the inner service alone, so `layer - baseline` is the cost of a hit.
//! What each peer does on a hit differs: tower-resilience is a generic memoizer (key = URI,
//! clone of the stored `Response`, no HTTP semantics); http-cache-tower and ratewise apply
//! RFC 9111 (freshness check, `Age`/`Date` rewrite) before answering.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Full;
use ratewise_core::BoxError;
use tower::{Layer, Service, ServiceExt, service_fn};

const URL: &str = "http://api.test/repos/octo/cat";

static BODY: [u8; 1024] = [b'j'; 1024];

/// A GitHub-like cacheable 200 (`public` rather than GitHub's `private`: see the
/// http-cache-tower note below).
fn origin_response() -> Response<Full<Bytes>> {
    Response::builder()
        .header("content-type", "application/json; charset=utf-8")
        .header("cache-control", "public, max-age=600")
        .header("etag", "W/\"a1b2c3d4e5f60718293a4b5c6d7e8f90\"")
        .header("x-ratelimit-limit", "5000")
        .header("x-ratelimit-remaining", "4987")
        .header("x-ratelimit-reset", "1350085394")
        .header("x-ratelimit-resource", "core")
        .header("x-github-media-type", "github.v3; format=json")
        .header("content-length", BODY.len().to_string())
        .body(Full::new(Bytes::from_static(&BODY)))
        .unwrap()
}

fn request() -> Request<Full<Bytes>> {
    Request::get(URL)
        .header("accept", "application/vnd.github+json")
        .body(Full::default())
        .unwrap()
}

fn origin(
    calls: Arc<AtomicUsize>,
) -> impl Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = BoxError, Future: Send>
+ Clone
+ Send
+ Sync
+ 'static {
    let f = Arc::new(move |_req: Request<Full<Bytes>>| {
        calls.fetch_add(1, Ordering::Relaxed);
        std::future::ready(Ok::<_, BoxError>(origin_response()))
    });
    service_fn(move |req| f(req))
}

async fn call<S, B>(service: &S) -> Response<B>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
{
    service.clone().oneshot(request()).await.unwrap()
}

fn bench_hits(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("cache_hit");
    group.measurement_time(Duration::from_secs(3));

    let base_calls = Arc::new(AtomicUsize::new(0));
    let baseline = origin(base_calls.clone());
    group.bench_function("baseline_no_cache", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(call(&baseline).await) })
    });

    let ours_calls = Arc::new(AtomicUsize::new(0));
    let ours = ratewise_cache::CacheLayer::new().layer(origin(ours_calls.clone()));
    rt.block_on(call(&ours));
    group.bench_function("ratewise_cache", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(call(&ours).await) })
    });
    assert_eq!(
        ours_calls.load(Ordering::Relaxed),
        1,
        "ratewise: every call after the first is a hit"
    );

    let resilience_calls = Arc::new(AtomicUsize::new(0));
    let resilience_layer = tower_resilience::cache::CacheLayer::builder()
        .max_size(10_000)
        .ttl(Duration::from_secs(600))
        .key_extractor(|req: &Request<Full<Bytes>>| req.uri().to_string())
        .build()
        .unwrap();
    let resilience = resilience_layer.layer(origin(resilience_calls.clone()));
    rt.block_on(call(&resilience));
    group.bench_function("tower_resilience_cache", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(call(&resilience).await) })
    });
    assert_eq!(
        resilience_calls.load(Ordering::Relaxed),
        1,
        "tower-resilience: hits only"
    );

    let http_cache_calls = Arc::new(AtomicUsize::new(0));
    let manager = http_cache::MokaManager::new(moka::future::Cache::new(10_000));
    let http_cache =
        http_cache_tower::HttpCacheLayer::new(manager).layer(origin(http_cache_calls.clone()));
    rt.block_on(call(&http_cache));
    group.bench_function("http_cache_tower_moka", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(call(&http_cache).await) })
    });
    assert_eq!(
        http_cache_calls.load(Ordering::Relaxed),
        1,
        "http-cache-tower: hits only"
    );

    group.finish();
}

criterion_group!(benches, bench_hits);
criterion_main!(benches);
