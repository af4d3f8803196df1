//! Real threads (a multi-thread runtime, real time) hammering one key: never more admissions
//! than the quota allows over the run, with the keyed and the direct store, on tokio's clock
//! and (feature `tsc-clock`) on the TSC clock. The test reads tokio's clock only, and nothing
//! is asserted about how long anything took.

mod support;

use std::future::{Ready, ready};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ratewise_core::{BoxError, Key, PaceWaitTooLong};
use ratewise_pace::{Clock, Decision, LocalLimiter, PaceLayer, Quota, Quotas, RateLimiter};
use support::{Recorder, request};
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};

/// Records, for each admission, an interval of tokio time that contains the instant the
/// limiter decided at.
struct Timed<C> {
    inner: LocalLimiter<C>,
    admitted: Mutex<Vec<(Instant, Instant)>>,
}

impl<C: Clock> RateLimiter for Timed<C> {
    type AcquireFuture = Ready<Result<Decision, BoxError>>;
    type DrainFuture = Ready<Result<(), BoxError>>;

    fn acquire(&self, key: &Key, quotas: &[Quota], cost: u32) -> Self::AcquireFuture {
        ready(self.acquire_now(key, quotas, cost).unwrap())
    }

    fn acquire_now(
        &self,
        key: &Key,
        quotas: &[Quota],
        cost: u32,
    ) -> Option<Result<Decision, BoxError>> {
        let before = Instant::now();
        let decision = self.inner.check(key, quotas, cost);
        let after = Instant::now();
        if matches!(decision, Ok(Decision::Allowed)) {
            self.admitted.lock().unwrap().push((before, after));
        }
        Some(decision)
    }

    fn drain(&self, key: &Key, quotas: &[Quota], until: Instant) -> Self::DrainFuture {
        ready(self.inner.drain_now(key, quotas, until))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_over_admission_under_contention() {
    hammer("keyed", 0, LocalLimiter::new).await;
    hammer("direct", 0, LocalLimiter::direct).await;
}

#[cfg(feature = "tsc-clock")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_over_admission_under_contention_on_the_tsc_clock() {
    use ratewise_pace::TscClock;
    // The limiter decides on the counter, the test measures on tokio's clock: they agree to
    // tens of microseconds, so a window may hold one admission more than tokio's time allows.
    hammer("keyed, TSC", 1, || {
        LocalLimiter::with_clock(TscClock::new(), 1000)
    })
    .await;
    hammer("direct, TSC", 1, || {
        LocalLimiter::direct_with_clock(TscClock::new())
    })
    .await;
}

/// `slack`: admissions a window may hold beyond the quota's bound because the limiter's clock
/// is not the one the test reads.
async fn hammer<C: Clock>(store: &str, slack: u64, new_limiter: impl Fn() -> LocalLimiter<C>) {
    // 2000/s, burst 20 AND 50000/min, burst 40: a 500 µs interval, small enough that the
    // callers contend on every slot.
    let quotas = Quotas::new(&[
        Quota::per_second(2000).unwrap().burst(20).unwrap(),
        Quota::per_minute(50_000).unwrap().burst(40).unwrap(),
    ])
    .unwrap();
    // Fail-fast callers hammer the limiter itself (a refused request retries at once), so the
    // admissions hug the bound; waiting callers exercise the queues across threads.
    for (chained, fail_fast) in [(false, true), (true, true), (false, false), (true, false)] {
        let quotas = if chained {
            quotas
        } else {
            Quotas::from(quotas.as_slice()[0])
        };
        let recorder = Recorder::default();
        let limiter = new_limiter();
        let timed = Arc::new(Timed {
            inner: limiter.clone(),
            admitted: Mutex::new(Vec::new()),
        });
        let mut layer = PaceLayer::new(quotas).limiter(Arc::clone(&timed));
        if fail_fast {
            layer = layer.max_wait(Duration::ZERO);
        }
        let client = ServiceBuilder::new().layer(layer).service(recorder.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let callers: Vec<_> = (0..32)
            .map(|caller| {
                let (client, stop) = (client.clone(), Arc::clone(&stop));
                tokio::spawn(async move {
                    let mut sent = 0;
                    while !stop.load(Ordering::Relaxed) {
                        match client.clone().oneshot(request(caller, "/x")).await {
                            Ok(_) => sent += 1,
                            Err(err) => {
                                assert!(err.is::<PaceWaitTooLong>(), "{err}");
                                tokio::task::yield_now().await;
                            }
                        }
                    }
                    sent
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        let mut sent = 0;
        for caller in callers {
            sent += caller.await.unwrap();
        }
        let end = Instant::now();
        let admissions = recorder.admissions();
        assert_eq!(admissions.len(), sent);
        let span = (end - start).as_nanos() as u64;
        println!(
            "{store}, chained {chained}, fail fast {fail_fast}: {} admissions, bound {}",
            admissions.len(),
            u64::from(quotas.as_slice()[0].burst_size())
                + span / quotas.as_slice()[0].emission_interval_nanos()
        );
        // Every admission happened in [start, end]: GCRA allows the burst plus one per
        // interval of that span, and each quota of the chain must hold on its own.
        for quota in quotas.as_slice() {
            let span = (end - start).as_nanos() as u64;
            let bound =
                u64::from(quota.burst_size()) + span / quota.emission_interval_nanos() + slack;
            assert!(
                admissions.len() as u64 <= bound,
                "{} admissions > {bound} allowed by {quota:?}",
                admissions.len()
            );
        }
        // The bucket's own account agrees: each admission moved the theoretical arrival time
        // by one interval, never past end + burst span.
        let tat = limiter.theoretical_arrival(&Key::new("global"), 0).unwrap();
        let quota = quotas.as_slice()[0];
        assert!(
            tat <= end
                + Duration::from_nanos(
                    quota.burst_span_nanos() + slack * quota.emission_interval_nanos()
                )
        );
        // Per window too, exactly: an admission whose acquire ran entirely inside a window
        // [s, s + w] was decided at an instant inside it, so each quota bounds those.
        let acquires = timed.admitted.lock().unwrap().clone();
        for window in [Duration::from_millis(5), Duration::from_millis(50)] {
            for &(s, _) in &acquires {
                let inside = acquires
                    .iter()
                    .filter(|&&(t0, t1)| t0 >= s && t1 <= s + window)
                    .count() as u64;
                for quota in quotas.as_slice() {
                    let bound = u64::from(quota.burst_size())
                        + window.as_nanos() as u64 / quota.emission_interval_nanos()
                        + slack;
                    assert!(inside <= bound, "{inside} in a {window:?} window > {bound}");
                }
            }
        }
    }
}
