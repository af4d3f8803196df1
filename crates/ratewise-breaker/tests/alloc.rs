//! The closed-state fast path allocates nothing: a whole `ready(); call(request).await`
//! through `CircuitBreakerLayer` on a warm key, for successes and for failures below the
//! threshold, with the default key function (by host) and with the time window and slow-call
//! rule (which read the clock).
//!
//! The counting allocator sees every thread of the process, and a lazily initialised
//! thread-local or one-time registration can land in any window, so the calls are measured in
//! three rounds of 300: a per-request allocation shows in every round; the test asserts that
//! the quietest round allocated nothing.

use std::alloc::System;
use std::convert::Infallible;
use std::time::Duration;

use ratewise_breaker::{CircuitBreakerLayer, Window};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::{Layer, Service, ServiceExt};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn request() -> http::Request<()> {
    http::Request::get("https://api.example.com/items")
        .body(())
        .unwrap()
}

async fn allocations_of<L>(layer: L) -> usize
where
    L: Layer<
        tower::util::ServiceFn<
            fn(http::Request<()>) -> std::future::Ready<Result<http::Response<()>, Infallible>>,
        >,
    >,
    L::Service: Service<http::Request<()>, Response = http::Response<()>>,
    <L::Service as Service<http::Request<()>>>::Error: std::fmt::Debug,
{
    fn answer(
        request: http::Request<()>,
    ) -> std::future::Ready<Result<http::Response<()>, Infallible>> {
        // Every third call fails: 33% stays under the 50% threshold.
        let status = if request.headers().contains_key("x-fail") {
            500
        } else {
            200
        };
        let mut response = http::Response::new(());
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
        std::future::ready(Ok(response))
    }
    let mut svc = layer.layer(tower::service_fn(answer as fn(_) -> _));
    // Warm up: the key is interned and its circuit created once, and within the first few
    // requests the thread makes its own copy of the hot key (core's `Key::for_this_thread`).
    for _ in 0..16 {
        svc.ready().await.unwrap().call(request()).await.unwrap();
    }
    let requests: Vec<_> = (0..300)
        .map(|i| {
            let mut request = request();
            if i % 3 == 0 {
                request
                    .headers_mut()
                    .insert("x-fail", http::HeaderValue::from_static("1"));
            }
            request
        })
        .collect();
    let mut requests = requests.into_iter();
    let mut quietest = usize::MAX;
    for _round in 0..3 {
        let round: Vec<_> = requests.by_ref().take(100).collect();
        let region = Region::new(GLOBAL);
        for request in round {
            svc.ready().await.unwrap().call(request).await.unwrap();
        }
        quietest = quietest.min(region.change().allocations);
    }
    quietest
}

#[tokio::test(start_paused = true)]
async fn the_closed_fast_path_allocates_nothing() {
    let default = CircuitBreakerLayer::new();
    let handle = default.handle();
    assert_eq!(
        allocations_of(default).await,
        0,
        "default breaker allocated"
    );
    assert_eq!(
        handle.state(&ratewise_breaker::Key::new("api.example.com")),
        ratewise_breaker::CircuitState::Closed
    );

    let timed = CircuitBreakerLayer::builder()
        .window(Window::time(Duration::from_secs(30)))
        .slow_calls(Duration::from_secs(1), 0.5)
        .build()
        .unwrap();
    assert_eq!(
        allocations_of(timed).await,
        0,
        "time-window breaker allocated"
    );
}
