//! Criterion benches of ratewise-pace against its peers, side by side in one run:
//!
//! - `acquire/*`: one admission decision, uncontended, on one key and round-robin over 10 000
//!   keys, and 2-thread contended on one key: our keyed `LocalLimiter` and our direct one
//!   (`LocalLimiter::direct`, one bucket), each on tokio's clock (the default) and, with
//!   `--features tsc-clock`, on the TSC (`*_tsc_clock`), vs governor's direct and keyed
//!   (dashmap) limiters, governor's keyed limiter both on its default clock (the TSC, through
//!   quanta) and on `std`'s monotonic clock, the one tokio's `Instant::now()` reads. Compare
//!   rows on equal clocks. Each row reduces the decision to "admitted?" (a `bool`).
//!   tower-resilience's limiter is not public on its own, so it appears in the layer rows.
//! - `clock/*`: the clock reads themselves, to show how much of each acquire row is the clock.
//! - `layer/*`: a full `ready().await; call(request).await` through each layer on a ready no-op
//!   service: `PaceLayer` vs `tower::limit::RateLimit` vs tower-resilience's `RateLimiterLayer`.
//!
//! Every quota is large enough that nothing is ever refused or delayed: this measures the
//! admitted fast path.
//!
//! Run: `cargo bench -p ratewise-pace --bench pace --features tsc-clock -- --warm-up-time 1
//! --measurement-time 3`
#![allow(missing_docs)]

use std::convert::Infallible;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use ratewise_core::{Key, KeyedStateConfig};
#[cfg(feature = "tsc-clock")]
use ratewise_pace::TscClock;
use ratewise_pace::{LocalLimiter, PaceLayer, Quota};
use tower::{Layer, Service, ServiceExt};

const KEYS: usize = 10_000;

fn our_quota() -> [Quota; 1] {
    [Quota::per_second(u32::MAX).unwrap().burst(1000).unwrap()]
}

fn governor_quota() -> governor::Quota {
    governor::Quota::per_second(NonZeroU32::new(u32::MAX).unwrap())
        .allow_burst(NonZeroU32::new(1000).unwrap())
}

fn keys() -> Vec<Key> {
    (0..KEYS).map(|i| Key::new(format!("key-{i}"))).collect()
}

fn acquire(c: &mut Criterion) {
    let mut group = c.benchmark_group("acquire");
    let quota = our_quota();
    let key = Key::new("api.github.com");

    let ours = LocalLimiter::new();
    group.bench_function("one_key/ratewise", |b| {
        b.iter(|| {
            black_box(
                ours.check(black_box(&key), &quota, 1)
                    .is_ok_and(|d| d.is_allowed()),
            )
        })
    });
    #[cfg(feature = "tsc-clock")]
    {
        let tsc = LocalLimiter::with_clock(TscClock::new(), 100_000);
        group.bench_function("one_key/ratewise_tsc_clock", |b| {
            b.iter(|| {
                black_box(
                    tsc.check(black_box(&key), &quota, 1)
                        .is_ok_and(|d| d.is_allowed()),
                )
            })
        });
    }
    // The same limiter on ratewise-core's generic KeyedState (`LocalLimiter::with_config`).
    let on_keyed_state = LocalLimiter::with_config(KeyedStateConfig::new()).unwrap();
    group.bench_function("one_key/ratewise_on_keyed_state", |b| {
        b.iter(|| {
            black_box(
                on_keyed_state
                    .check(black_box(&key), &quota, 1)
                    .is_ok_and(|d| d.is_allowed()),
            )
        })
    });
    // One bucket, no key lookup: governor's "direct" limiter and ours.
    let ours_direct = LocalLimiter::direct();
    group.bench_function("one_key/ratewise_direct", |b| {
        b.iter(|| {
            black_box(
                ours_direct
                    .check(black_box(&key), &quota, 1)
                    .is_ok_and(|d| d.is_allowed()),
            )
        })
    });
    #[cfg(feature = "tsc-clock")]
    {
        let tsc = LocalLimiter::direct_with_clock(TscClock::new());
        group.bench_function("one_key/ratewise_direct_tsc_clock", |b| {
            b.iter(|| {
                black_box(
                    tsc.check(black_box(&key), &quota, 1)
                        .is_ok_and(|d| d.is_allowed()),
                )
            })
        });
    }
    let direct = governor::RateLimiter::direct(governor_quota());
    group.bench_function("one_key/governor_direct", |b| {
        b.iter(|| black_box(direct.check().is_ok()))
    });
    let keyed = governor::RateLimiter::keyed(governor_quota());
    group.bench_function("one_key/governor_keyed", |b| {
        b.iter(|| black_box(keyed.check_key(black_box(&key)).is_ok()))
    });
    let keyed = governor_on_std_clock();
    group.bench_function("one_key/governor_keyed_std_clock", |b| {
        b.iter(|| black_box(keyed.check_key(black_box(&key)).is_ok()))
    });

    let many = keys();
    let ours = LocalLimiter::with_max_keys(2 * KEYS);
    let mut i = 0;
    group.bench_function("10k_keys/ratewise", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(
                ours.check(&many[i], &quota, 1)
                    .is_ok_and(|d| d.is_allowed()),
            )
        })
    });
    #[cfg(feature = "tsc-clock")]
    {
        let tsc = LocalLimiter::with_clock(TscClock::new(), 2 * KEYS);
        group.bench_function("10k_keys/ratewise_tsc_clock", |b| {
            b.iter(|| {
                i = (i + 1) % KEYS;
                black_box(tsc.check(&many[i], &quota, 1).is_ok_and(|d| d.is_allowed()))
            })
        });
    }
    let keyed = governor::RateLimiter::keyed(governor_quota());
    group.bench_function("10k_keys/governor_keyed", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(keyed.check_key(&many[i]).is_ok())
        })
    });
    let keyed = governor_on_std_clock();
    group.bench_function("10k_keys/governor_keyed_std_clock", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(keyed.check_key(&many[i]).is_ok())
        })
    });

    // Two threads on one key; the time per decision is the slower thread's total / iters.
    let ours = LocalLimiter::new();
    group.bench_function("contended_2_threads/ratewise", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, || {
                black_box(ours.check(&key, &quota, 1).is_ok_and(|d| d.is_allowed()));
            })
        })
    });
    #[cfg(feature = "tsc-clock")]
    {
        let tsc = LocalLimiter::with_clock(TscClock::new(), 100_000);
        group.bench_function("contended_2_threads/ratewise_tsc_clock", |b| {
            b.iter_custom(|iters| {
                two_threads(iters, || {
                    black_box(tsc.check(&key, &quota, 1).is_ok_and(|d| d.is_allowed()));
                })
            })
        });
    }
    let ours_direct = LocalLimiter::direct();
    group.bench_function("contended_2_threads/ratewise_direct", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, || {
                black_box(
                    ours_direct
                        .check(&key, &quota, 1)
                        .is_ok_and(|d| d.is_allowed()),
                );
            })
        })
    });
    #[cfg(feature = "tsc-clock")]
    {
        let tsc = LocalLimiter::direct_with_clock(TscClock::new());
        group.bench_function("contended_2_threads/ratewise_direct_tsc_clock", |b| {
            b.iter_custom(|iters| {
                two_threads(iters, || {
                    black_box(tsc.check(&key, &quota, 1).is_ok_and(|d| d.is_allowed()));
                })
            })
        });
    }
    let direct = governor::RateLimiter::direct(governor_quota());
    group.bench_function("contended_2_threads/governor_direct", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, || {
                black_box(direct.check().is_ok());
            })
        })
    });
    let keyed = governor::RateLimiter::keyed(governor_quota());
    group.bench_function("contended_2_threads/governor_keyed", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, || {
                black_box(keyed.check_key(&key).is_ok());
            })
        })
    });
    let keyed = governor_on_std_clock();
    group.bench_function("contended_2_threads/governor_keyed_std_clock", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, || {
                black_box(keyed.check_key(&key).is_ok());
            })
        })
    });
    group.finish();
}

/// governor's keyed limiter on the clock ratewise reads (`std`'s monotonic clock, which is
/// what tokio's `Instant::now()` reads outside a paused test runtime) instead of its default
/// TSC clock (quanta): the same algorithm compared at equal clocks.
fn governor_on_std_clock() -> governor::RateLimiter<
    Key,
    governor::state::keyed::DefaultKeyedStateStore<Key>,
    governor::clock::MonotonicClock,
    governor::middleware::NoOpMiddleware<std::time::Instant>,
> {
    governor::RateLimiter::dashmap_with_clock(governor_quota(), governor::clock::MonotonicClock)
}

fn two_threads(iters: u64, f: impl Fn() + Sync) -> Duration {
    let barrier = std::sync::Barrier::new(2);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        f();
                    }
                    start.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .max()
            .unwrap()
    })
}

fn noop() -> impl Service<
    http::Request<()>,
    Response = (),
    Error = Infallible,
    Future = std::future::Ready<Result<(), Infallible>>,
> + Clone {
    tower::service_fn(|_request: http::Request<()>| std::future::ready(Ok::<_, Infallible>(())))
}

/// Time of `iters` sequential `ready().await; call(request).await` through `svc`.
async fn drive<S>(svc: &mut S, iters: u64) -> Duration
where
    S: Service<http::Request<()>>,
    S::Error: std::fmt::Debug,
{
    let start = Instant::now();
    for _ in 0..iters {
        let ready = svc.ready().await.unwrap();
        black_box(ready.call(http::Request::new(())).await.unwrap());
    }
    start.elapsed()
}

fn layer(c: &mut Criterion) {
    let mut group = c.benchmark_group("layer");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();

    group.bench_function("ready_noop/ratewise_pace", |b| {
        let mut svc = PaceLayer::new(our_quota()[0]).layer(noop());
        b.iter_custom(|iters| rt.block_on(drive(&mut svc, iters)))
    });
    #[cfg(feature = "tsc-clock")]
    group.bench_function("ready_noop/ratewise_pace_tsc_clock", |b| {
        let mut svc = PaceLayer::new(our_quota()[0])
            .limiter(LocalLimiter::direct_with_clock(TscClock::new()))
            .layer(noop());
        b.iter_custom(|iters| rt.block_on(drive(&mut svc, iters)))
    });
    group.bench_function("ready_noop/tower_rate_limit", |b| {
        let mut svc = rt.block_on(async {
            tower::limit::RateLimitLayer::new(u64::MAX, Duration::from_secs(1)).layer(noop())
        });
        b.iter_custom(|iters| rt.block_on(drive(&mut svc, iters)))
    });
    group.bench_function("ready_noop/tower_resilience", |b| {
        let layer = tower_resilience::ratelimiter::RateLimiterLayer::builder()
            .limit_for_period(usize::MAX / 2)
            .refresh_period(Duration::from_secs(1))
            .build()
            .unwrap();
        let mut svc = layer.layer(noop());
        b.iter_custom(|iters| rt.block_on(drive(&mut svc, iters)))
    });
    group.bench_function("ready_noop/no_layer", |b| {
        let mut svc = noop();
        b.iter_custom(|iters| rt.block_on(drive(&mut svc, iters)))
    });
    group.finish();
}

/// The clock reads inside the acquire rows: ratewise reads tokio's clock (so that paused-clock
/// tests pace exactly), governor by default the TSC through quanta.
fn clock(c: &mut Criterion) {
    let mut group = c.benchmark_group("clock");
    group.bench_function("tokio_instant_now", |b| {
        b.iter(|| black_box(tokio::time::Instant::now()))
    });
    group.bench_function("std_instant_now", |b| {
        b.iter(|| black_box(std::time::Instant::now()))
    });
    #[cfg(feature = "tsc-clock")]
    {
        let tsc = TscClock::new();
        group.bench_function("ratewise_tsc_clock_now", |b| {
            b.iter(|| black_box(ratewise_pace::Clock::now_nanos(&tsc)))
        });
    }
    let quanta = governor::clock::QuantaClock::default();
    group.bench_function("governor_quanta_now", |b| {
        b.iter(|| black_box(governor::clock::Clock::now(&quanta)))
    });
    group.finish();
}

criterion_group!(benches, clock, acquire, layer);
criterion_main!(benches);
