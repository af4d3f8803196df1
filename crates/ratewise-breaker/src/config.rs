//! Breaker settings, their validation, and the jitter source.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ratewise_core::KeyedStateError;

/// The window over which the failure rate (and the slow-call rate) is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// The last `calls` completed calls (default: 20).
    Count {
        /// How many calls the window holds.
        calls: u32,
    },
    /// The calls completed during the last `length`, counted in `buckets` equal buckets: a bucket
    /// leaves the window whole, so the window covers between `length - length / buckets` and
    /// `length` of history.
    Time {
        /// The length of the window.
        length: Duration,
        /// How many buckets the window is cut into.
        buckets: u32,
    },
}

impl Window {
    /// A window of the last `calls` calls.
    pub const fn count(calls: u32) -> Self {
        Window::Count { calls }
    }

    /// A window of the last `length`, in 10 buckets.
    pub const fn time(length: Duration) -> Self {
        Window::Time {
            length,
            buckets: 10,
        }
    }

    /// A window of the last `length`, in `buckets` buckets.
    pub const fn time_in_buckets(length: Duration, buckets: u32) -> Self {
        Window::Time { length, buckets }
    }
}

impl Default for Window {
    fn default() -> Self {
        Window::count(20)
    }
}

/// A breaker configuration that cannot work, returned by
/// [`CircuitBreakerBuilder::build`](crate::CircuitBreakerBuilder::build).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A count window of 0 calls, a time window of zero length or with 0 buckets, or more buckets
    /// than nanoseconds.
    EmptyWindow,
    /// `minimum_calls` was 0, or larger than a count window (the breaker could never trip on
    /// the rate).
    MinimumCalls(u32),
    /// A rate threshold outside `(0, 1]` (or NaN).
    Rate(f64),
    /// `consecutive_failures` was `Some(0)`.
    ZeroConsecutiveFailures,
    /// A zero slow-call threshold.
    ZeroSlowCallThreshold,
    /// A zero open duration.
    ZeroOpenDuration,
    /// `max_open_duration` below `open_duration`.
    MaxOpenBelowOpen,
    /// An open-duration multiplier below 1 (or not finite).
    Multiplier(f64),
    /// A jitter fraction outside `[0, 1)` (or NaN).
    Jitter(f64),
    /// `half_open_probes` was 0.
    ZeroProbes,
    /// A zero probe timeout.
    ZeroProbeTimeout,
    /// The keyed-state limits are invalid.
    KeyedState(KeyedStateError),
    /// Keys may be evicted while idle for less than `max_open_duration`, which would forget an
    /// open circuit before it could half-open.
    IdleTimeoutBelowMaxOpen,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::EmptyWindow => {
                f.pad("breaker window must hold at least one call or bucket")
            }
            ConfigError::MinimumCalls(n) => {
                write!(
                    f,
                    "breaker minimum_calls {n} must be >= 1 and fit in the count window"
                )
            }
            ConfigError::Rate(rate) => write!(f, "breaker rate threshold {rate} must be in (0, 1]"),
            ConfigError::ZeroConsecutiveFailures => {
                f.pad("breaker consecutive_failures must be >= 1")
            }
            ConfigError::ZeroSlowCallThreshold => f.pad("breaker slow-call threshold must be > 0"),
            ConfigError::ZeroOpenDuration => f.pad("breaker open_duration must be > 0"),
            ConfigError::MaxOpenBelowOpen => {
                f.pad("breaker max_open_duration must be >= open_duration")
            }
            ConfigError::Multiplier(m) => {
                write!(f, "breaker open_multiplier {m} must be finite and >= 1")
            }
            ConfigError::Jitter(j) => write!(f, "breaker jitter {j} must be in [0, 1)"),
            ConfigError::ZeroProbes => f.pad("breaker half_open_probes must be >= 1"),
            ConfigError::ZeroProbeTimeout => f.pad("breaker probe_timeout must be > 0"),
            ConfigError::KeyedState(err) => write!(f, "breaker keyed state: {err}"),
            ConfigError::IdleTimeoutBelowMaxOpen => {
                f.pad("breaker keyed-state idle_timeout must be >= max_open_duration")
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::KeyedState(err) => Some(err),
            _ => None,
        }
    }
}

/// The validated numbers of a breaker.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    pub(crate) window: Window,
    pub(crate) minimum_calls: u32,
    pub(crate) failure_rate: f64,
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) slow_call: Option<SlowCall>,
    pub(crate) open_duration: Duration,
    pub(crate) max_open_duration: Duration,
    pub(crate) open_multiplier: f64,
    pub(crate) jitter: f64,
    pub(crate) half_open_probes: u32,
    pub(crate) probe_timeout: Duration,
}

/// Calls slower than `threshold` are slow; the breaker trips when their share of the window
/// reaches `rate`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SlowCall {
    pub(crate) threshold: Duration,
    pub(crate) rate: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            window: Window::default(),
            minimum_calls: 10,
            failure_rate: 0.5,
            consecutive_failures: None,
            slow_call: None,
            open_duration: Duration::from_secs(30),
            max_open_duration: Duration::from_secs(300),
            open_multiplier: 2.0,
            jitter: 0.1,
            half_open_probes: 1,
            probe_timeout: Duration::from_secs(30),
        }
    }
}

fn valid_rate(rate: f64) -> Result<(), ConfigError> {
    if rate > 0.0 && rate <= 1.0 {
        Ok(())
    } else {
        Err(ConfigError::Rate(rate))
    }
}

impl Settings {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        match self.window {
            Window::Count { calls } => {
                if calls == 0 {
                    return Err(ConfigError::EmptyWindow);
                }
                if self.minimum_calls > calls {
                    return Err(ConfigError::MinimumCalls(self.minimum_calls));
                }
            }
            Window::Time { length, buckets } => {
                if buckets == 0 || length.as_nanos() < u128::from(buckets) {
                    return Err(ConfigError::EmptyWindow);
                }
            }
        }
        if self.minimum_calls == 0 {
            return Err(ConfigError::MinimumCalls(0));
        }
        valid_rate(self.failure_rate)?;
        if self.consecutive_failures == Some(0) {
            return Err(ConfigError::ZeroConsecutiveFailures);
        }
        if let Some(slow) = self.slow_call {
            if slow.threshold.is_zero() {
                return Err(ConfigError::ZeroSlowCallThreshold);
            }
            valid_rate(slow.rate)?;
        }
        if self.open_duration.is_zero() {
            return Err(ConfigError::ZeroOpenDuration);
        }
        if self.max_open_duration < self.open_duration {
            return Err(ConfigError::MaxOpenBelowOpen);
        }
        if !(self.open_multiplier.is_finite() && self.open_multiplier >= 1.0) {
            return Err(ConfigError::Multiplier(self.open_multiplier));
        }
        if !(self.jitter >= 0.0 && self.jitter < 1.0) {
            return Err(ConfigError::Jitter(self.jitter));
        }
        if self.half_open_probes == 0 {
            return Err(ConfigError::ZeroProbes);
        }
        if self.probe_timeout.is_zero() {
            return Err(ConfigError::ZeroProbeTimeout);
        }
        Ok(())
    }

    /// How long the circuit stays open after its `trips`-th consecutive trip (1-based), before
    /// jitter: `open_duration * multiplier^(trips - 1)`, capped at `max_open_duration`.
    pub(crate) fn open_duration_for(&self, trips: u32) -> Duration {
        let exponent = i32::try_from(trips.saturating_sub(1)).unwrap_or(i32::MAX);
        let secs = self.open_duration.as_secs_f64() * self.open_multiplier.powi(exponent);
        let cap = self.max_open_duration;
        if secs.is_finite() && secs < cap.as_secs_f64() {
            Duration::try_from_secs_f64(secs).map_or(cap, |d| d.min(cap))
        } else {
            cap
        }
    }

    /// The jittered open duration: a window `jitter` of `duration` wide, starting at
    /// `duration` (`unit` in `[0, 1)` picks the point), shifted down only as far as the cap
    /// requires and never below `open_duration`. The configured open duration is therefore a
    /// floor and `max_open_duration` a ceiling, and callers still spread their probes at the
    /// cap.
    pub(crate) fn jittered(&self, duration: Duration, unit: f64) -> Duration {
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let cap = self.max_open_duration.as_secs_f64();
        let secs = duration.as_secs_f64();
        let span = secs * self.jitter;
        let low = (cap - span).max(self.open_duration.as_secs_f64()).min(secs);
        let high = (low + span).min(cap);
        // `mul_f64` panics when rounding carries a huge duration past `Duration::MAX`.
        Duration::try_from_secs_f64(low + (high - low) * unit).map_or(duration, |jittered| {
            jittered.clamp(self.open_duration.min(duration), self.max_open_duration)
        })
    }
}

/// A source of uniform random numbers in `[0, 1)` for jittering open durations.
///
/// Implemented by [`SeededJitter`] (the default, seeded randomly per layer) and by every closure
/// `Fn() -> f64 + Send + Sync + 'static`. Values outside `[0, 1]` are clamped, NaN counts as 0.
pub trait JitterSource: Send + Sync + 'static {
    /// The next number in `[0, 1)`.
    fn next_unit(&self) -> f64;
}

impl<F> JitterSource for F
where
    F: Fn() -> f64 + Send + Sync + 'static,
{
    fn next_unit(&self) -> f64 {
        self()
    }
}

/// A small, lock-free, seedable pseudo-random generator (SplitMix64) for jitter: the same seed
/// gives the same sequence of open durations, which makes tests reproducible.
pub struct SeededJitter {
    state: AtomicU64,
}

impl SeededJitter {
    /// A generator starting from `seed`.
    pub const fn new(seed: u64) -> Self {
        SeededJitter {
            state: AtomicU64::new(seed),
        }
    }

    /// A generator seeded from the process's random hasher keys.
    pub fn from_entropy() -> Self {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(0x5eed);
        SeededJitter::new(hasher.finish())
    }
}

impl fmt::Debug for SeededJitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeededJitter").finish_non_exhaustive()
    }
}

impl JitterSource for SeededJitter {
    fn next_unit(&self) -> f64 {
        let mut z = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // The top 53 bits as a fraction of 2^53: uniform in [0, 1).
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let s = Settings::default();
        s.validate().unwrap();
        assert_eq!(s.window, Window::count(20));
        assert_eq!(s.minimum_calls, 10);
        assert_eq!(s.open_duration_for(1), Duration::from_secs(30));
        assert_eq!(s.open_duration_for(2), Duration::from_secs(60));
        assert_eq!(s.open_duration_for(3), Duration::from_secs(120));
        assert_eq!(s.open_duration_for(4), Duration::from_secs(240));
        assert_eq!(s.open_duration_for(5), Duration::from_secs(300));
        assert_eq!(s.open_duration_for(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn invalid_settings_are_rejected() {
        let base = Settings::default();
        let cases: Vec<(Settings, ConfigError)> = vec![
            (
                Settings {
                    window: Window::count(0),
                    ..base
                },
                ConfigError::EmptyWindow,
            ),
            (
                Settings {
                    window: Window::time_in_buckets(Duration::from_secs(1), 0),
                    ..base
                },
                ConfigError::EmptyWindow,
            ),
            (
                Settings {
                    minimum_calls: 21,
                    ..base
                },
                ConfigError::MinimumCalls(21),
            ),
            (
                Settings {
                    minimum_calls: 0,
                    ..base
                },
                ConfigError::MinimumCalls(0),
            ),
            (
                Settings {
                    failure_rate: 0.0,
                    ..base
                },
                ConfigError::Rate(0.0),
            ),
            (
                Settings {
                    failure_rate: 1.5,
                    ..base
                },
                ConfigError::Rate(1.5),
            ),
            (
                Settings {
                    consecutive_failures: Some(0),
                    ..base
                },
                ConfigError::ZeroConsecutiveFailures,
            ),
            (
                Settings {
                    open_duration: Duration::ZERO,
                    ..base
                },
                ConfigError::ZeroOpenDuration,
            ),
            (
                Settings {
                    max_open_duration: Duration::from_secs(1),
                    ..base
                },
                ConfigError::MaxOpenBelowOpen,
            ),
            (
                Settings {
                    open_multiplier: 0.5,
                    ..base
                },
                ConfigError::Multiplier(0.5),
            ),
            (
                Settings {
                    jitter: 1.0,
                    ..base
                },
                ConfigError::Jitter(1.0),
            ),
            (
                Settings {
                    half_open_probes: 0,
                    ..base
                },
                ConfigError::ZeroProbes,
            ),
            (
                Settings {
                    probe_timeout: Duration::ZERO,
                    ..base
                },
                ConfigError::ZeroProbeTimeout,
            ),
        ];
        for (settings, expected) in cases {
            assert_eq!(settings.validate().unwrap_err(), expected);
        }
        let nan = Settings {
            failure_rate: f64::NAN,
            ..base
        }
        .validate()
        .unwrap_err();
        assert!(matches!(nan, ConfigError::Rate(r) if r.is_nan()));
        assert!(matches!(
            Settings {
                jitter: f64::NAN,
                ..base
            }
            .validate(),
            Err(ConfigError::Jitter(_))
        ));
    }

    #[test]
    fn seeded_jitter_is_reproducible_and_in_range() {
        let a = SeededJitter::new(7);
        let b = SeededJitter::new(7);
        for _ in 0..1000 {
            let x = a.next_unit();
            assert_eq!(x, b.next_unit());
            assert!((0.0..1.0).contains(&x));
        }
        assert_ne!(
            SeededJitter::new(8).next_unit(),
            SeededJitter::new(7).next_unit()
        );
    }

    proptest! {
        #[test]
        fn open_duration_grows_monotonically_and_stays_within_bounds(
            base_ms in 1u64..100_000,
            extra_ms in prop_oneof![0u64..10_000_000, Just(u64::MAX - 100_000)],
            multiplier in 1.0f64..10.0,
            jitter in 0.0f64..0.99,
            unit in proptest::num::f64::ANY,
            trips in 1u32..200,
        ) {
            let settings = Settings {
                open_duration: Duration::from_millis(base_ms),
                max_open_duration: Duration::from_millis(base_ms + extra_ms),
                open_multiplier: multiplier,
                jitter,
                ..Settings::default()
            };
            settings.validate().unwrap();
            let d = settings.open_duration_for(trips);
            let next = settings.open_duration_for(trips + 1);
            prop_assert!(d >= settings.open_duration);
            prop_assert!(d <= settings.max_open_duration);
            prop_assert!(next >= d);
            let j = settings.jittered(d, unit);
            prop_assert!(j >= settings.open_duration, "never shorter than configured");
            prop_assert!(j <= settings.max_open_duration);
            // f64 arithmetic on durations of millions of years loses whole seconds.
            let slack = Duration::from_nanos(1).max(d.mul_f64(1e-9));
            prop_assert!(j >= d.mul_f64(1.0 - jitter).saturating_sub(slack));
            prop_assert!(j <= d.saturating_add(d.mul_f64(jitter)).saturating_add(slack));
        }
    }
}
