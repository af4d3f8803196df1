//! Where a [`LocalLimiter`](crate::LocalLimiter) reads the time: tokio's clock (the default)
//! or, opt-in, the CPU's time-stamp counter kept in step with it.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

/// The time source of a [`LocalLimiter`](crate::LocalLimiter): nanoseconds since an epoch
/// that is a tokio [`Instant`].
///
/// The limiter reads [`now_nanos`](Clock::now_nanos) once per decision and converts tokio
/// instants (a [`drain`](crate::RateLimiter::drain)'s `until`) with [`epoch`](Clock::epoch),
/// so a clock must tick with tokio's timers for cooldowns to end when the timers that wait for
/// them fire.
///
/// Contract: `now_nanos` never decreases by more than a few microseconds between two calls
/// (a step back only makes the limiter stricter for that long, never admits more), and stays
/// within a few microseconds of `tokio::time::Instant::now() - epoch()`.
pub trait Clock: Clone + Send + Sync + 'static {
    /// The tokio instant that nanosecond 0 of this clock stands for.
    fn epoch(&self) -> Instant;

    /// The time now, in nanoseconds since [`epoch`](Clock::epoch).
    fn now_nanos(&self) -> u64;

    /// `instant` in nanoseconds since [`epoch`](Clock::epoch) (0 for earlier instants).
    #[inline]
    fn nanos_at(&self, instant: Instant) -> u64 {
        as_nanos(instant.saturating_duration_since(self.epoch()))
    }
}

/// A duration in nanoseconds, in `u64` arithmetic (no `u128` multiply): saturates after 584
/// years.
#[inline]
pub(crate) fn as_nanos(duration: Duration) -> u64 {
    duration
        .as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(duration.subsec_nanos()))
}

/// tokio's clock, read on every decision: `tokio::time::Instant::now()`.
///
/// The default, because it follows a paused clock: with `#[tokio::test(start_paused = true)]`
/// an hour of a 5000/h quota is paced exactly in milliseconds of real time, and a drain until
/// a tokio instant ends exactly when a tokio timer set for that instant fires. Outside a
/// paused runtime, tokio's clock is `std::time::Instant` (a `clock_gettime` call, about 25 ns
/// on the benchmark machine).
#[derive(Clone, Copy)]
pub struct TokioClock {
    epoch: Instant,
}

impl TokioClock {
    /// A clock whose epoch is now.
    pub fn new() -> Self {
        TokioClock {
            epoch: Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock::new()
    }
}

impl fmt::Debug for TokioClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokioClock").finish_non_exhaustive()
    }
}

impl Clock for TokioClock {
    #[inline]
    fn epoch(&self) -> Instant {
        self.epoch
    }

    #[inline]
    fn now_nanos(&self) -> u64 {
        self.nanos_at(Instant::now())
    }
}

#[cfg(feature = "tsc-clock")]
pub use tsc::TscClock;

#[cfg(feature = "tsc-clock")]
mod tsc {
    use std::fmt;
    use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

    use tokio::time::Instant;

    use super::{Clock, as_nanos};

    /// How often the counter is put back in step with tokio's clock: every 100 ms of counter
    /// time. quanta's calibration is good to a few parts per million, so between two
    /// re-anchorings the clocks part by well under a microsecond.
    const REANCHOR_EVERY_NANOS: u64 = 100_000_000;

    /// The CPU's time-stamp counter (through [quanta](https://docs.rs/quanta)), kept in step
    /// with tokio's clock: about 10 ns a read where tokio's clock takes about 25 ns on the
    /// benchmark machine (`cargo bench -p ratewise-pace --bench pace --features tsc-clock --
    /// clock`). Needs the `tsc-clock` feature.
    ///
    /// This is the clock governor reads by default. Unlike governor's, it does not drift from
    /// tokio's timers: every 100 ms of counter time one decision reads tokio's clock and
    /// corrects the offset, so a [`drain`](crate::RateLimiter::drain) until a tokio instant
    /// ends when the timers waiting for it fire (give or take the calibration error over
    /// 100 ms, a fraction of a microsecond; a correction that steps back only makes the
    /// limiter stricter for that long).
    ///
    /// **It does not follow tokio's paused clock**: in a `start_paused` test, buckets refill
    /// in real time while timers run in simulated time. Keep the default [`TokioClock`] in
    /// such tests (for instance, choose the clock where the stack is built and pass
    /// `TokioClock` from tests), and use this one where a few nanoseconds per request matter.
    /// On a CPU without a usable counter quanta falls back to the monotonic clock (then this
    /// is no faster than [`TokioClock`], still correct).
    ///
    /// Each clone keeps itself in step with tokio's clock on its own.
    pub struct TscClock {
        counter: quanta::Clock,
        /// The counter's raw reading at `epoch`.
        base_raw: u64,
        /// Nanoseconds per 2^32 raw units (quanta's calibration, applied inline: one call into
        /// quanta per read instead of two).
        nanos_per_2_32_raw: u64,
        epoch: Instant,
        // Inline, not behind an `Arc` shared by clones: the hot path follows no pointer. Each
        // clone keeps itself in step with tokio's clock.
        /// tokio's nanoseconds minus the counter's, at the last re-anchoring.
        offset: AtomicI64,
        /// The counter's nanoseconds at which the next decision re-anchors.
        next: AtomicU64,
    }

    impl Clone for TscClock {
        fn clone(&self) -> Self {
            TscClock {
                counter: self.counter.clone(),
                base_raw: self.base_raw,
                nanos_per_2_32_raw: self.nanos_per_2_32_raw,
                epoch: self.epoch,
                offset: AtomicI64::new(self.offset.load(Ordering::Relaxed)),
                next: AtomicU64::new(self.next.load(Ordering::Relaxed)),
            }
        }
    }

    impl TscClock {
        /// A clock whose epoch is now (it calibrates quanta's counter the first time one is
        /// made in the process, which takes a few milliseconds).
        pub fn new() -> Self {
            let counter = quanta::Clock::new();
            let nanos_per_2_32_raw = counter.delta_as_nanos(0, 1 << 32);
            let base_raw = counter.raw();
            TscClock {
                counter,
                base_raw,
                nanos_per_2_32_raw,
                epoch: Instant::now(),
                offset: AtomicI64::new(0),
                next: AtomicU64::new(REANCHOR_EVERY_NANOS),
            }
        }

        /// The counter's nanoseconds since `base`.
        #[inline]
        fn counted(&self) -> u64 {
            let raw = self.counter.raw().saturating_sub(self.base_raw);
            // Fixed point, as quanta scales: exact to a nanosecond per 4 s of counter time.
            let nanos = (u128::from(raw) * u128::from(self.nanos_per_2_32_raw)) >> 32;
            // Below 2^64 for 584 years of counter time.
            nanos as u64
        }

        #[cold]
        #[inline(never)]
        fn reanchor(&self, counted: u64, due: u64) -> u64 {
            // One caller per period re-reads tokio's clock; the others use the offset they read.
            if self
                .next
                .compare_exchange(
                    due,
                    counted.saturating_add(REANCHOR_EVERY_NANOS),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
            {
                return apply(counted, self.offset.load(Ordering::Relaxed));
            }
            let tokio = as_nanos(Instant::now().saturating_duration_since(self.epoch));
            let offset = i64::try_from(i128::from(tokio) - i128::from(counted)).unwrap_or(0);
            self.offset.store(offset, Ordering::Relaxed);
            tokio
        }
    }

    #[inline]
    fn apply(counted: u64, offset: i64) -> u64 {
        // Wrapping is exact here: `counted + offset` is tokio's time at the last re-anchoring
        // (at least 100 ms) plus the counter's time since, never below 0 nor near 2^64.
        counted.wrapping_add_signed(offset)
    }

    impl Default for TscClock {
        fn default() -> Self {
            TscClock::new()
        }
    }

    impl fmt::Debug for TscClock {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("TscClock")
                .field("offset_nanos", &self.offset.load(Ordering::Relaxed))
                .finish_non_exhaustive()
        }
    }

    impl Clock for TscClock {
        #[inline]
        fn epoch(&self) -> Instant {
            self.epoch
        }

        #[inline]
        fn now_nanos(&self) -> u64 {
            let counted = self.counted();
            let due = self.next.load(Ordering::Relaxed);
            if counted >= due {
                return self.reanchor(counted, due);
            }
            apply(counted, self.offset.load(Ordering::Relaxed))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::time::Duration;

        #[test]
        fn stays_in_step_with_tokio_clock() {
            let clock = TscClock::new();
            let mut last = 0;
            for _ in 0..5 {
                std::thread::sleep(Duration::from_millis(30));
                let before = clock.nanos_at(Instant::now());
                let now = clock.now_nanos();
                let after = clock.nanos_at(Instant::now());
                // Within the calibration error (a few ppm of 30 ms is far under 1 ms) of tokio's
                // clock read around it, and moving forward.
                assert!(
                    now + 1_000_000 >= before && now <= after + 1_000_000,
                    "{before} {now} {after}"
                );
                assert!(now > last);
                last = now;
            }
        }

        #[test]
        fn scales_like_quanta() {
            let clock = TscClock::new();
            for raw in [0u64, 1, 1 << 20, 1 << 32, 1 << 40, 3 << 50] {
                let ours = (u128::from(raw) * u128::from(clock.nanos_per_2_32_raw)) >> 32;
                let quanta = clock.counter.delta_as_nanos(0, raw);
                // 1 ns of rounding per 2^32 raw units (seconds), plus one.
                let tolerance = (raw >> 32) + 1;
                assert!(
                    u64::try_from(ours).unwrap().abs_diff(quanta) <= tolerance,
                    "{raw}: {ours} vs {quanta}"
                );
            }
        }

        #[test]
        fn reanchors_to_tokio_clock() {
            let clock = TscClock::new();
            // Pretend the counter drifted by 5 ms; the next re-anchoring corrects it.
            clock.offset.store(5_000_000, Ordering::Relaxed);
            clock.next.store(0, Ordering::Relaxed);
            let now = clock.now_nanos();
            let tokio = clock.nanos_at(Instant::now());
            assert!(now <= tokio, "{now} {tokio}");
            assert!(clock.offset.load(Ordering::Relaxed).abs() < 1_000_000);
            assert!(clock.next.load(Ordering::Relaxed) > 0);
        }
    }
}
