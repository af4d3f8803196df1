//! The uncontended fast path allocates nothing: neither the limiter's acquire nor a whole
//! `ready(); call(request).await` through `PaceLayer` (keyed by route, on a warm key).

use std::alloc::System;
use std::convert::Infallible;

use ratewise_core::{ByRoute, Key, RouteTable};
use ratewise_pace::{LocalLimiter, PaceLayer, Quota, QuotaTable, RateLimiter};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::{Layer, Service, ServiceExt};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[tokio::test(start_paused = true)]
async fn the_fast_path_allocates_nothing() {
    let quota = Quota::per_second(1_000_000).unwrap().burst(10_000).unwrap();
    let limiter = LocalLimiter::new();
    let key = Key::new("repos");
    limiter.check(&key, &[quota], 1).unwrap();
    let region = Region::new(GLOBAL);
    for _ in 0..100 {
        assert!(
            limiter
                .acquire_now(&key, &[quota], 1)
                .unwrap()
                .unwrap()
                .is_allowed()
        );
        assert!(
            limiter
                .acquire(&key, &[quota], 1)
                .await
                .unwrap()
                .is_allowed()
        );
    }
    assert_eq!(region.change().allocations, 0, "limiter acquire allocated");

    let routes = RouteTable::builder()
        .route("/repos/{owner}/{repo}", "repos")
        .unwrap()
        .build();
    let layer = PaceLayer::keyed(ByRoute(routes), QuotaTable::new().with("repos", quota))
        .max_concurrency(100)
        .unwrap();
    let mut svc = layer.layer(tower::service_fn(|_request: http::Request<()>| {
        std::future::ready(Ok::<_, Infallible>(()))
    }));
    let request = || {
        http::Request::get("/repos/rust-lang/rust")
            .body(())
            .unwrap()
    };
    // Warm up: the key's state is created once, and within the first few requests the thread
    // makes its own copy of the hot key (core's `Key::for_this_thread`, once per thread and key).
    for _ in 0..16 {
        svc.ready().await.unwrap().call(request()).await.unwrap();
    }
    let requests: Vec<_> = (0..100).map(|_| request()).collect();
    let region = Region::new(GLOBAL);
    for request in requests {
        svc.ready().await.unwrap().call(request).await.unwrap();
    }
    assert_eq!(
        region.change().allocations,
        0,
        "PaceLayer fast path allocated"
    );
}
