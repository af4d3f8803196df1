//! [`Backoff`]: how long to wait before a retry when the server did not say.

use std::fmt;
use std::time::Duration;

use crate::error::ConfigError;

/// How the exponential ceiling is randomised.
///
/// With `ceiling = min(cap, base * multiplier^(retry - 1))` and `u` uniform in `[0, 1)`
/// (Brooker, "Exponential Backoff And Jitter"):
///
/// | kind | delay |
/// |---|---|
/// | [`Full`](Jitter::Full) (default) | `u * ceiling` |
/// | [`Equal`](Jitter::Equal) | `ceiling / 2 + u * ceiling / 2` |
/// | [`Decorrelated`](Jitter::Decorrelated) | `min(cap, base + u * (3 * previous - base))` |
/// | [`None`](Jitter::None) | `ceiling` |
///
/// Full jitter spreads competing clients the most and makes the fewest calls; `None` is only
/// for tests and for callers that add their own spreading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Jitter {
    /// A uniform delay in `[0, ceiling)` (AWS standard retry mode).
    #[default]
    Full,
    /// Half the ceiling, plus a uniform delay in `[0, ceiling / 2)`.
    Equal,
    /// A uniform delay in `[base, 3 * previous delay)`, capped; ignores the multiplier.
    Decorrelated,
    /// Exactly the ceiling: no randomness.
    None,
}

/// Exponential backoff with jitter: the delay before a retry when the server gave no
/// `Retry-After`.
///
/// Defaults: full jitter, base 100 ms, multiplier 2, cap 20 s (AWS standard retry mode).
///
/// ```
/// use std::time::Duration;
/// use ratewise_retry::{Backoff, Jitter};
///
/// let backoff = Backoff::new()
///     .jitter(Jitter::Equal)
///     .base(Duration::from_millis(50))
///     .cap(Duration::from_secs(5));
/// // The third retry's ceiling is 50 ms * 2^2 = 200 ms; equal jitter waits 100..200 ms.
/// let delay = backoff.delay(3, Duration::ZERO, 0.5);
/// assert_eq!(delay, Duration::from_millis(150));
/// ```
#[derive(Clone, Copy, PartialEq)]
pub struct Backoff {
    jitter: Jitter,
    base: Duration,
    cap: Duration,
    multiplier: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

impl fmt::Debug for Backoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backoff")
            .field("jitter", &self.jitter)
            .field("base", &self.base)
            .field("cap", &self.cap)
            .field("multiplier", &self.multiplier)
            .finish()
    }
}

impl Backoff {
    /// Full jitter, base 100 ms, multiplier 2, cap 20 s.
    pub const fn new() -> Self {
        Backoff {
            jitter: Jitter::Full,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(20),
            multiplier: 2.0,
        }
    }

    /// No delay at all between attempts (for tests, or below a layer that paces).
    pub const fn none() -> Self {
        Backoff {
            jitter: Jitter::None,
            base: Duration::ZERO,
            cap: Duration::ZERO,
            multiplier: 1.0,
        }
    }

    /// The jitter kind.
    pub const fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The ceiling of the first retry.
    pub const fn base(mut self, base: Duration) -> Self {
        self.base = base;
        self
    }

    /// The largest delay.
    pub const fn cap(mut self, cap: Duration) -> Self {
        self.cap = cap;
        self
    }

    /// How much the ceiling grows per retry (finite, at least 1).
    pub const fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// The jitter kind in use.
    pub const fn jitter_kind(&self) -> Jitter {
        self.jitter
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !self.multiplier.is_finite() || self.multiplier < 1.0 {
            return Err(ConfigError::InvalidMultiplier(self.multiplier));
        }
        if self.base > self.cap {
            return Err(ConfigError::BaseAboveCap {
                base: self.base,
                cap: self.cap,
            });
        }
        Ok(())
    }

    /// The delay before retry number `retry` (1 for the first retry), given the previous
    /// delay (used by decorrelated jitter; pass [`Duration::ZERO`] for the first retry) and
    /// `unit`, a uniform random number in `[0, 1)`. Never more than the cap.
    pub fn delay(&self, retry: u32, previous: Duration, unit: f64) -> Duration {
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let cap = self.cap.as_secs_f64();
        let base = self.base.as_secs_f64();
        let exponent = retry.saturating_sub(1).min(1024) as i32;
        // powi saturates to +inf for large exponents; min(cap) brings it back.
        let ceiling = (base * self.multiplier.powi(exponent)).min(cap);
        let seconds = match self.jitter {
            Jitter::Full => unit * ceiling,
            Jitter::Equal => ceiling / 2.0 + unit * ceiling / 2.0,
            Jitter::None => ceiling,
            Jitter::Decorrelated => {
                let previous = previous.as_secs_f64().max(base);
                let upper = (previous * 3.0).min(cap);
                (base + unit * (upper - base).max(0.0)).min(cap)
            }
        };
        if seconds.is_finite() && seconds > 0.0 {
            // A cap near Duration::MAX rounds up in f64 past what a Duration can hold.
            Duration::try_from_secs_f64(seconds)
                .unwrap_or(self.cap)
                .min(self.cap)
        } else {
            Duration::ZERO
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn full_jitter_scales_the_exponential_ceiling() {
        let backoff = Backoff::new();
        assert_eq!(
            backoff.delay(1, Duration::ZERO, 0.5),
            Duration::from_millis(50)
        );
        assert_eq!(
            backoff.delay(3, Duration::ZERO, 0.5),
            Duration::from_millis(200)
        );
        // 100 ms * 2^20 is far above the cap.
        assert_eq!(
            backoff.delay(21, Duration::ZERO, 0.5),
            Duration::from_secs(10)
        );
        assert_eq!(backoff.delay(1, Duration::ZERO, 0.0), Duration::ZERO);
    }

    #[test]
    fn equal_none_and_decorrelated() {
        let equal = Backoff::new().jitter(Jitter::Equal);
        assert_eq!(
            equal.delay(2, Duration::ZERO, 0.0),
            Duration::from_millis(100)
        );
        let none = Backoff::new().jitter(Jitter::None).multiplier(3.0);
        assert_eq!(
            none.delay(3, Duration::ZERO, 0.9),
            Duration::from_millis(900)
        );
        let decorrelated = Backoff::new().jitter(Jitter::Decorrelated);
        // First retry: uniform in [base, 3 * base).
        assert_eq!(
            decorrelated.delay(1, Duration::ZERO, 0.5),
            Duration::from_millis(200)
        );
        assert_eq!(
            decorrelated.delay(2, Duration::from_millis(200), 0.0),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn invalid_configuration_is_rejected() {
        assert!(Backoff::new().multiplier(f64::NAN).validate().is_err());
        assert!(Backoff::new().multiplier(0.5).validate().is_err());
        assert!(
            Backoff::new()
                .base(Duration::from_secs(30))
                .validate()
                .is_err()
        );
        assert!(Backoff::none().validate().is_ok());
    }

    #[test]
    fn a_cap_near_duration_max_never_panics() {
        for jitter in [
            Jitter::Full,
            Jitter::Equal,
            Jitter::Decorrelated,
            Jitter::None,
        ] {
            let backoff = Backoff::new().jitter(jitter).cap(Duration::MAX);
            assert!(backoff.validate().is_ok());
            for retry in [1, 64, 1100, u32::MAX] {
                let delay = backoff.delay(retry, Duration::MAX, 0.999_999_999);
                assert!(delay <= Duration::MAX);
                if jitter == Jitter::None && retry > 1000 {
                    assert_eq!(delay, Duration::MAX, "the ceiling is the cap");
                }
            }
        }
    }

    fn any_jitter() -> impl Strategy<Value = Jitter> {
        prop_oneof![
            Just(Jitter::Full),
            Just(Jitter::Equal),
            Just(Jitter::Decorrelated),
            Just(Jitter::None)
        ]
    }

    proptest! {
        #[test]
        fn delay_never_exceeds_cap_nor_panics(
            jitter in any_jitter(),
            base_ms in 0u64..10_000,
            extra_cap_ms in 0u64..100_000,
            multiplier in 1.0f64..100.0,
            retry in any::<u32>(),
            previous_ms in any::<u64>(),
            unit in any::<f64>(),
        ) {
            let backoff = Backoff::new()
                .jitter(jitter)
                .base(Duration::from_millis(base_ms))
                .cap(Duration::from_millis(base_ms + extra_cap_ms))
                .multiplier(multiplier);
            prop_assert!(backoff.validate().is_ok());
            let delay = backoff.delay(retry, Duration::from_millis(previous_ms), unit);
            prop_assert!(delay <= Duration::from_millis(base_ms + extra_cap_ms));
        }

        #[test]
        fn full_jitter_is_monotonic_in_the_random_unit(a in 0.0f64..1.0, b in 0.0f64..1.0, retry in 1u32..30) {
            let backoff = Backoff::new();
            let (low, high) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(backoff.delay(retry, Duration::ZERO, low) <= backoff.delay(retry, Duration::ZERO, high));
        }
    }
}
