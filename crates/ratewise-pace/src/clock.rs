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
/// Contract: `now_nanos` stays within tens of microseconds of
/// `tokio::time::Instant::now() - epoch()`, never decreases by more than that between two calls
/// (a step back only makes the limiter stricter for that long, never admits more), and stays
/// below 2^63 (292 years), so that GCRA arithmetic never saturates.
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
    /// time. Between two re-anchorings the clocks part by their rate difference over 100 ms:
    /// under a microsecond for quanta's calibration error (parts per million), up to 50 µs
    /// while NTP slews the system clock at its 500 ppm maximum.
    const REANCHOR_EVERY_NANOS: u64 = 100_000_000;

    /// `next` while one caller re-anchors: the others read tokio's clock meanwhile.
    const REANCHORING: u64 = 0;

    /// The CPU's time-stamp counter (through [quanta](https://docs.rs/quanta)), kept in step
    /// with tokio's clock: about 10 ns a read where tokio's clock takes about 25 ns on the
    /// benchmark machine (`cargo bench -p ratewise-pace --bench pace --features tsc-clock --
    /// clock`). Needs the `tsc-clock` feature.
    ///
    /// This is the clock governor reads by default. Unlike governor's, it does not drift from
    /// tokio's timers: every 100 ms of counter time one decision reads tokio's clock and
    /// corrects the offset, so a [`drain`](crate::RateLimiter::drain) until a tokio instant
    /// ends when the timers waiting for it fire, give or take the clocks' rate difference over
    /// 100 ms (under a microsecond from calibration; up to 50 µs while NTP slews the system
    /// clock). A correction that steps back only makes the limiter stricter for that long, and
    /// every anchor reads tokio's clock before the counter, so the counter errs late, not
    /// early.
    ///
    /// **It does not follow tokio's paused clock**: in a `start_paused` test, buckets refill
    /// in real time while timers run in simulated time. Keep the default
    /// [`TokioClock`](super::TokioClock) in such tests (for instance, choose the clock where
    /// the stack is built and pass `TokioClock` from tests), and use this one where a few
    /// nanoseconds per request matter. On a CPU without a usable counter quanta falls back to
    /// the monotonic clock (then this is no faster than `TokioClock`, still correct).
    ///
    /// Each clone keeps itself in step with tokio's clock on its own (a clone re-anchors on
    /// its first read).
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
                // Due at once: re-anchors on its first read (the original may be mid-anchor).
                next: AtomicU64::new(1),
            }
        }
    }

    impl TscClock {
        /// A clock whose epoch is now. The first one made in the process calibrates quanta's
        /// counter against the monotonic clock, busy for up to 200 ms on the calling thread:
        /// make it at start-up.
        pub fn new() -> Self {
            let counter = quanta::Clock::new();
            let nanos_per_2_32_raw = counter.delta_as_nanos(0, 1 << 32);
            // tokio's clock first, the counter second: the counter starts (and every anchor
            // leaves it) a little behind, which errs strict.
            let epoch = Instant::now();
            let base_raw = counter.raw();
            TscClock {
                counter,
                base_raw,
                nanos_per_2_32_raw,
                epoch,
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

        fn tokio_nanos(&self) -> u64 {
            as_nanos(Instant::now().saturating_duration_since(self.epoch))
        }

        /// Due (or the counter went back before the last anchor, or another caller is
        /// re-anchoring): one caller re-anchors, the others read tokio's clock meanwhile.
        #[cold]
        #[inline(never)]
        fn reanchor(&self, due: u64) -> u64 {
            if due == REANCHORING
                || self
                    .next
                    .compare_exchange(due, REANCHORING, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                return self.tokio_nanos();
            }
            let tokio = self.tokio_nanos();
            let counted = self.counted();
            let offset = i64::try_from(i128::from(tokio) - i128::from(counted)).unwrap_or(0);
            self.offset.store(offset, Ordering::Relaxed);
            // Published after the offset: a reader that sees this `next` sees that offset.
            self.next.store(
                counted.saturating_add(REANCHOR_EVERY_NANOS).max(1),
                Ordering::Release,
            );
            tokio
        }
    }

    #[inline]
    fn apply(counted: u64, offset: i64) -> u64 {
        // Saturating: a counter read behind the anchor (cores out of step, a resumed VM) must
        // give an early time, never wrap to a far one.
        counted.saturating_add_signed(offset)
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
            let due = self.next.load(Ordering::Acquire);
            // One compare for "inside [due - period, due)": past due, behind the last anchor
            // (the counter went back), or `REANCHORING` (which wraps outside) go cold.
            if counted.wrapping_sub(due.wrapping_sub(REANCHOR_EVERY_NANOS)) >= REANCHOR_EVERY_NANOS
            {
                return self.reanchor(due);
            }
            apply(counted, self.offset.load(Ordering::Relaxed))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn stays_in_step_with_tokio_clock() {
            // No waiting: every read, including across a forced re-anchoring, lies within the
            // calibration error of tokio's clock read around it, and never goes back.
            let clock = TscClock::new();
            let mut last = 0;
            for read in 0..10_000 {
                if read == 5_000 {
                    clock.next.store(1, Ordering::Relaxed);
                }
                let before = clock.nanos_at(Instant::now());
                let now = clock.now_nanos();
                let after = clock.nanos_at(Instant::now());
                assert!(
                    now + 1_000_000 >= before && now <= after + 1_000_000,
                    "{before} {now} {after}"
                );
                assert!(now + 1_000 >= last, "back from {last} to {now}");
                last = last.max(now);
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
            // Pretend the counter drifted 5 ms ahead; the re-anchoring when due corrects it.
            clock.offset.store(5_000_000, Ordering::Relaxed);
            clock.next.store(1, Ordering::Relaxed);
            let now = clock.now_nanos();
            let tokio = clock.nanos_at(Instant::now());
            assert!(now <= tokio, "{now} {tokio}");
            assert!(clock.offset.load(Ordering::Relaxed).abs() < 1_000_000);
            assert!(clock.next.load(Ordering::Relaxed) > REANCHORING);
        }

        #[test]
        fn a_counter_behind_the_last_anchor_reanchors() {
            let clock = TscClock::new();
            // As if the last anchor were far ahead of the counter (the counter went back).
            clock.next.store(u64::MAX / 2, Ordering::Relaxed);
            clock.offset.store(-1_000_000_000_000, Ordering::Relaxed);
            let now = clock.now_nanos();
            assert!(now <= clock.nanos_at(Instant::now()));
            assert!(clock.next.load(Ordering::Relaxed) < u64::MAX / 2);
            assert!(clock.offset.load(Ordering::Relaxed) > -1_000_000);
        }

        #[test]
        fn readers_use_tokio_clock_while_another_reanchors() {
            let clock = TscClock::new();
            clock.next.store(REANCHORING, Ordering::Relaxed);
            // A stale offset is not used meanwhile.
            clock.offset.store(10_000_000_000, Ordering::Relaxed);
            let before = clock.nanos_at(Instant::now());
            let now = clock.now_nanos();
            let after = clock.nanos_at(Instant::now());
            assert!(before <= now && now <= after, "{before} {now} {after}");
            assert_eq!(clock.next.load(Ordering::Relaxed), REANCHORING);
        }

        #[test]
        fn a_clone_reanchors_on_its_first_read() {
            let clock = TscClock::new();
            clock.offset.store(7_000_000, Ordering::Relaxed);
            let copy = clock.clone();
            let now = copy.now_nanos();
            assert!(now <= copy.nanos_at(Instant::now()));
            assert!(copy.offset.load(Ordering::Relaxed).abs() < 1_000_000);
        }

        #[test]
        fn offsets_saturate_never_wrap() {
            assert_eq!(apply(5, -10), 0);
            assert_eq!(apply(u64::MAX - 1, 10), u64::MAX);
            assert_eq!(apply(100, -10), 90);
        }
    }
}
