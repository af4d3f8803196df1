//! Sends 100 000 requests through one retry layer on the no-retry path, for counting
//! instructions under valgrind: deterministic where wall-clock benches on a shared, noisy
//! machine are not. It measures no time itself.
//!
//! ```text
//! cargo bench -p ratewise-retry --bench instructions --no-run
//! for layer in baseline ratewise tower_floor tower_resilience \
//!     baseline_post ratewise_post ratewise_post_sent_once; do
//!   RETRY_BENCH_LAYER=$layer valgrind --tool=cachegrind --cache-sim=no \
//!     --cachegrind-out-file=/dev/null target/release/deps/instructions-*[!.d]
//! done
//! ```
//!
//! Instructions per request = (I refs of a layer) / 100 000; subtract `baseline` (one request
//! clone and the upstream call) for the layer's own cost. The `*_post` runs send a POST without
//! an idempotency key: `ratewise_post` with the defaults (the request is copied, in case its
//! connection is refused), `ratewise_post_sent_once` with `retry_unsent(false)` (no copy).
#![allow(missing_docs)]

mod common;

use std::hint::black_box;

const REQUESTS: u32 = 100_000;

fn run<S>(service: S)
where
    S: tower::Service<common::Req, Response = common::Res>,
    S::Error: std::fmt::Debug,
{
    run_with(service, common::request());
}

fn run_with<S>(mut service: S, template: common::Req)
where
    S: tower::Service<common::Req, Response = common::Res>,
    S::Error: std::fmt::Debug,
{
    for _ in 0..REQUESTS {
        black_box(common::send(&mut service, black_box(template.clone())));
    }
}

fn main() {
    let layer = std::env::var("RETRY_BENCH_LAYER").unwrap_or_default();
    match layer.as_str() {
        "baseline" => run(common::Upstream),
        "ratewise" => run(common::ratewise()),
        "tower_floor" => run(common::tower_floor()),
        "tower_resilience" => run(common::tower_resilience()),
        "baseline_post" => run_with(common::Upstream, common::post()),
        "ratewise_post" => run_with(common::ratewise(), common::post()),
        "ratewise_post_sent_once" => run_with(common::ratewise_sent_once(), common::post()),
        // `cargo bench` without the variable runs nothing.
        _ => return,
    }
    println!("{layer}: {REQUESTS} requests sent");
}
