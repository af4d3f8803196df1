//! The AWS SDK adaptive retry algorithm: a CUBIC rate calculator, a smoothed send-rate clock
//! and a token bucket, as specified for the SDKs (botocore `retries/adaptive.py`,
//! `retries/bucket.py`, `retries/throttling.py`) and checked against their cross-SDK vectors.
//!
//! Times are seconds (`f64`) since an arbitrary origin; the layer passes seconds since its
//! creation on tokio's clock, so the algorithm follows a paused clock in tests.

/// CUBIC scale constant `C`.
const SCALE_CONSTANT: f64 = 0.4;
/// Multiplicative decrease `beta`.
const BETA: f64 = 0.7;
/// Weight of the newest bucket in the measured send rate.
const SMOOTHING: f64 = 0.8;
/// Width of a send-rate bucket, in seconds.
const TIME_BUCKET_RANGE: f64 = 0.5;
/// Lowest fill rate of the token bucket, requests per second.
const MIN_FILL_RATE: f64 = 0.5;
/// The fill rate never exceeds this multiple of the measured send rate.
const MAX_RATE_ADJUST_SCALE: f64 = 2.0;
/// Largest rate the calculator reports (requests per second): CUBIC grows without bound, a
/// server's header-seeded rate may be absurd, and neither may overflow the bucket arithmetic.
const MAX_RATE: f64 = 1.0e9;

/// `W(t) = C (t - t_fail - K)^3 + W_max` with `K = cbrt(W_max (1 - beta) / C)`.
#[derive(Clone, Debug)]
pub(crate) struct CubicCalculator {
    w_max: f64,
    k: f64,
    last_fail: f64,
}

impl CubicCalculator {
    pub(crate) fn new(starting_max_rate: f64, start_time: f64) -> Self {
        let mut cubic = CubicCalculator {
            w_max: starting_max_rate,
            k: 0.0,
            last_fail: start_time,
        };
        cubic.k = cubic.zero_point();
        cubic
    }

    fn zero_point(&self) -> f64 {
        (self.w_max * (1.0 - BETA) / SCALE_CONSTANT).cbrt()
    }

    /// The rate after a success at `timestamp`.
    pub(crate) fn success_received(&self, timestamp: f64) -> f64 {
        let dt = timestamp - self.last_fail;
        (SCALE_CONSTANT * (dt - self.k).powi(3) + self.w_max).clamp(0.0, MAX_RATE)
    }

    /// The rate after a throttle at `timestamp`, when the client was sending at `current_rate`.
    pub(crate) fn error_received(&mut self, current_rate: f64, timestamp: f64) -> f64 {
        self.w_max = current_rate.clamp(0.0, MAX_RATE);
        self.k = self.zero_point();
        self.last_fail = timestamp;
        self.w_max * BETA
    }

    /// Restarts the curve at `rate` (a rate declared by the server's headers).
    pub(crate) fn seed(&mut self, rate: f64, timestamp: f64) {
        *self = CubicCalculator::new(rate.clamp(0.0, MAX_RATE), timestamp);
    }
}

/// The measured send rate: an exponentially weighted average over half-second buckets.
#[derive(Clone, Debug)]
pub(crate) struct RateClocker {
    measured_rate: f64,
    last_bucket: f64,
    count: f64,
}

impl RateClocker {
    pub(crate) fn new(now: f64) -> Self {
        RateClocker {
            measured_rate: 0.0,
            last_bucket: now.floor(),
            count: 0.0,
        }
    }

    /// Records one response at `now`; returns the measured rate.
    pub(crate) fn record(&mut self, now: f64) -> f64 {
        let scale = 1.0 / TIME_BUCKET_RANGE;
        let bucket = (now * scale).floor() / scale;
        self.count += 1.0;
        if bucket > self.last_bucket {
            let current_rate = self.count / (bucket - self.last_bucket);
            self.measured_rate = current_rate * SMOOTHING + self.measured_rate * (1.0 - SMOOTHING);
            self.count = 0.0;
            self.last_bucket = bucket;
        }
        self.measured_rate
    }
}

/// A token bucket whose capacity equals its rate (at least one token).
#[derive(Clone, Debug)]
pub(crate) struct TokenBucket {
    fill_rate: f64,
    max_capacity: f64,
    capacity: f64,
    last: f64,
}

impl TokenBucket {
    pub(crate) fn new(max_rate: f64, now: f64) -> Self {
        let mut bucket = TokenBucket {
            fill_rate: MIN_FILL_RATE,
            max_capacity: 1.0,
            capacity: 0.0,
            last: now,
        };
        bucket.set_max_rate(max_rate, now);
        bucket
    }

    fn refill(&mut self, now: f64) {
        if now > self.last {
            let added = (now - self.last) * self.fill_rate;
            self.capacity = (self.capacity + added).min(self.max_capacity);
            self.last = now;
        }
    }

    pub(crate) fn max_rate(&self) -> f64 {
        self.fill_rate
    }

    pub(crate) fn set_max_rate(&mut self, max_rate: f64, now: f64) {
        self.refill(now);
        let max_rate = if max_rate.is_finite() {
            max_rate.min(MAX_RATE)
        } else {
            MIN_FILL_RATE
        };
        self.fill_rate = max_rate.max(MIN_FILL_RATE);
        self.max_capacity = max_rate.max(1.0);
        self.capacity = self.capacity.min(self.max_capacity);
    }

    /// Seconds until a token is available at `now` (0 when one is).
    pub(crate) fn wait_for_token(&mut self, now: f64) -> f64 {
        self.refill(now);
        if self.capacity >= 1.0 {
            0.0
        } else {
            (1.0 - self.capacity) / self.fill_rate
        }
    }

    /// Takes a token; the caller checked [`wait_for_token`](Self::wait_for_token) is 0.
    pub(crate) fn take(&mut self, now: f64) {
        self.refill(now);
        self.capacity -= 1.0;
    }
}

/// The adaptive client rate limiter of one key: off until the first throttle, then a token
/// bucket whose rate follows CUBIC.
#[derive(Clone, Debug)]
pub(crate) struct AdaptiveRate {
    enabled: bool,
    cubic: CubicCalculator,
    clocker: RateClocker,
    bucket: TokenBucket,
}

impl AdaptiveRate {
    pub(crate) fn new(now: f64) -> Self {
        AdaptiveRate {
            enabled: false,
            cubic: CubicCalculator::new(MIN_FILL_RATE, now),
            clocker: RateClocker::new(now),
            bucket: TokenBucket::new(MIN_FILL_RATE, now),
        }
    }

    pub(crate) fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The current fill rate (requests per second) when enabled.
    pub(crate) fn rate(&self) -> Option<f64> {
        self.enabled.then(|| self.bucket.max_rate())
    }

    /// Seconds to wait before sending at `now` (0: send now and call [`take`](Self::take)).
    pub(crate) fn wait(&mut self, now: f64) -> f64 {
        if self.enabled {
            self.bucket.wait_for_token(now)
        } else {
            0.0
        }
    }

    pub(crate) fn take(&mut self, now: f64) {
        if self.enabled {
            self.bucket.take(now);
        }
    }

    /// Records a response at `now`; returns the new fill rate.
    pub(crate) fn on_response(&mut self, throttled: bool, now: f64) -> f64 {
        let measured = self.clocker.record(now);
        let new_rate = if throttled {
            let rate_to_use = if self.enabled {
                measured.min(self.bucket.max_rate())
            } else {
                measured
            };
            self.enabled = true;
            self.cubic.error_received(rate_to_use, now)
        } else {
            self.cubic.success_received(now)
        };
        self.bucket
            .set_max_rate(new_rate.min(MAX_RATE_ADJUST_SCALE * measured), now);
        self.bucket.max_rate()
    }

    /// Seeds the curve and the bucket with a rate the server declared (limit / window).
    pub(crate) fn seed(&mut self, rate: f64, now: f64) {
        if rate.is_finite() && rate > 0.0 {
            self.cubic.seed(rate, now);
            self.bucket.set_max_rate(rate, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The cross-SDK vectors: throttled at W_max = 10 req/s at t = 5 s, the rate at
    /// t = 5..=11 s.
    #[test]
    fn cross_sdk_cubic_vectors() {
        let mut cubic = CubicCalculator::new(10.0, 0.0);
        let expected = [7.0, 9.649, 10.00003, 10.453, 13.409, 21.266, 36.426];
        let at_throttle = cubic.error_received(10.0, 5.0);
        assert!((at_throttle - expected[0]).abs() < 1e-9, "{at_throttle}");
        for (i, want) in expected.iter().enumerate().skip(1) {
            let got = cubic.success_received(5.0 + i as f64);
            assert!(
                (got - want).abs() < 5e-4,
                "t = {}: got {got}, want {want}",
                5 + i
            );
        }
    }

    #[test]
    fn zero_point_matches_the_sdks() {
        // botocore test_cubic: starting_max_rate 10 gives K = 1.9574338205844317.
        let cubic = CubicCalculator::new(10.0, 0.0);
        assert!((cubic.k - 1.957_433_820_584_431_7).abs() < 1e-12);
    }

    #[test]
    fn clocker_smooths_half_second_buckets() {
        let mut clock = RateClocker::new(0.0);
        // Ten responses in the first half second: no bucket has closed yet.
        for i in 0..10 {
            assert_eq!(clock.record(f64::from(i) * 0.04), 0.0);
        }
        // The eleventh, in the next bucket, closes it: 11 responses / 0.5 s * 0.8.
        let rate = clock.record(0.55);
        assert!((rate - 17.6).abs() < 1e-9, "{rate}");
    }

    #[test]
    fn bucket_waits_for_tokens_at_the_fill_rate() {
        let mut bucket = TokenBucket::new(4.0, 0.0);
        assert!((bucket.wait_for_token(0.0) - 0.25).abs() < 1e-12);
        assert_eq!(bucket.wait_for_token(0.25), 0.0);
        bucket.take(0.25);
        // Capacity is capped at the rate.
        assert_eq!(bucket.wait_for_token(100.0), 0.0);
        for _ in 0..4 {
            bucket.take(100.0);
        }
        assert!(bucket.wait_for_token(100.0) > 0.0);
        // Rates below the floor are raised to it.
        bucket.set_max_rate(0.0, 100.0);
        assert_eq!(bucket.max_rate(), MIN_FILL_RATE);
    }

    #[test]
    fn limiter_is_off_until_the_first_throttle() {
        let mut limiter = AdaptiveRate::new(0.0);
        assert_eq!(limiter.wait(0.0), 0.0);
        assert_eq!(limiter.rate(), None);
        let mut t = 0.0;
        for _ in 0..100 {
            t += 0.05;
            limiter.on_response(false, t);
        }
        assert!(!limiter.is_enabled());
        let rate = limiter.on_response(true, t + 0.05);
        assert!(limiter.is_enabled());
        // Sending at about 20/s, throttled: 0.7 x the measured rate.
        assert!(rate > 10.0 && rate < 20.0, "{rate}");
        assert_eq!(limiter.rate(), Some(rate));
    }

    proptest! {
        /// Rates stay finite and non-negative whatever the timestamps and rates.
        #[test]
        fn rates_stay_finite(
            events in proptest::collection::vec((any::<bool>(), 0.0f64..1.0e6), 1..64),
            seed in proptest::option::of(0.0f64..1.0e12),
        ) {
            let mut limiter = AdaptiveRate::new(0.0);
            if let Some(seed) = seed {
                limiter.seed(seed, 0.0);
            }
            let mut t = 0.0;
            for (throttled, dt) in events {
                t += dt;
                let rate = limiter.on_response(throttled, t);
                prop_assert!(rate.is_finite() && (MIN_FILL_RATE..=MAX_RATE).contains(&rate));
                let wait = limiter.wait(t);
                prop_assert!(wait.is_finite() && (0.0..=1.0 / MIN_FILL_RATE).contains(&wait));
            }
        }
    }
}
