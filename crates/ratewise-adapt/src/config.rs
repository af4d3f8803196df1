//! Configuration of [`AdaptLayer`](crate::AdaptLayer): [`AdaptConfig`], [`SafetyMargin`],
//! [`ConfigError`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ratewise_core::{ByHostAndRoute, KeyFn, KeyedStateConfig, RouteTable};

use crate::layer::AdaptLayer;

/// How much of the server's remaining quota to leave unused before waiting for the reset.
///
/// A request waits when the learned remaining quota, minus the requests already in flight, is
/// at or below the margin.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum SafetyMargin {
    /// Leave this many requests of every window unused.
    Count(u64),
    /// Leave this fraction (in `[0, 1)`) of the policy's limit unused, rounded up; behaves as
    /// `Count(0)` for policies whose limit the server does not state.
    Fraction(f64),
}

impl SafetyMargin {
    /// The margin in requests for a policy with this limit.
    pub(crate) fn requests(self, limit: Option<u64>) -> i64 {
        match self {
            SafetyMargin::Count(count) => i64::try_from(count).unwrap_or(i64::MAX),
            SafetyMargin::Fraction(fraction) => match limit {
                // Both factors are finite and non-negative (checked at construction), and the
                // cast saturates.
                Some(limit) => (limit as f64 * fraction).ceil() as i64,
                None => 0,
            },
        }
    }
}

impl Default for SafetyMargin {
    /// `Count(0)`: use the whole quota.
    fn default() -> Self {
        SafetyMargin::Count(0)
    }
}

/// Settings of an [`AdaptLayer`], checked by [`build`](AdaptConfig::build).
///
/// ```
/// use std::time::Duration;
/// use ratewise_adapt::{AdaptLayer, SafetyMargin};
///
/// let layer = AdaptLayer::builder()
///     .safety_margin(SafetyMargin::Fraction(0.05))
///     .max_wait(Duration::from_secs(10))
///     .spread(true)
///     .build()?;
/// # let _ = layer;
/// # Ok::<(), ratewise_adapt::ConfigError>(())
/// ```
#[derive(Clone)]
#[must_use]
pub struct AdaptConfig {
    pub(crate) key_fn: Arc<dyn KeyFn>,
    pub(crate) safety_margin: SafetyMargin,
    pub(crate) spread: bool,
    pub(crate) slow_start: u32,
    pub(crate) probe_timeout: Duration,
    pub(crate) max_wait: Duration,
    pub(crate) header_less: bool,
    pub(crate) keyed: KeyedStateConfig,
    pub(crate) unknown_reset: Duration,
    pub(crate) unexplained_refusal: Duration,
}

impl fmt::Debug for AdaptConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptConfig")
            .field("safety_margin", &self.safety_margin)
            .field("spread", &self.spread)
            .field("slow_start", &self.slow_start)
            .field("probe_timeout", &self.probe_timeout)
            .field("max_wait", &self.max_wait)
            .field("header_less", &self.header_less)
            .field("keyed", &self.keyed)
            .field("unknown_reset", &self.unknown_reset)
            .field("unexplained_refusal", &self.unexplained_refusal)
            .finish_non_exhaustive()
    }
}

impl Default for AdaptConfig {
    fn default() -> Self {
        AdaptConfig::new()
    }
}

impl AdaptConfig {
    /// The defaults: key by host and route bucket (with an empty [`RouteTable`], so by host),
    /// margin `Count(0)`, no spreading, slow start of 1 request with a `probe_timeout` of 10 s,
    /// `max_wait` 60 s, header-less CUBIC mode on, at most 10 000 keys idle-evicted after 10
    /// minutes, a 60 s cooldown after a refusal the headers do not explain.
    pub fn new() -> Self {
        AdaptConfig {
            key_fn: Arc::new(ByHostAndRoute::new(RouteTable::default())),
            safety_margin: SafetyMargin::default(),
            spread: false,
            slow_start: 1,
            probe_timeout: Duration::from_secs(10),
            max_wait: Duration::from_secs(60),
            header_less: true,
            keyed: KeyedStateConfig::new(),
            unknown_reset: Duration::from_secs(1),
            unexplained_refusal: Duration::from_secs(60),
        }
    }

    /// How requests are grouped into keys (default: by host and route bucket). The server-declared bucket
    /// (Discord `X-RateLimit-Bucket`, GitHub `x-ratelimit-resource`) further merges keys that
    /// the server says share a quota.
    pub fn key_fn(mut self, key_fn: impl KeyFn) -> Self {
        self.key_fn = Arc::new(key_fn);
        self
    }

    /// The part of each window's quota left unused (default `Count(0)`).
    pub fn safety_margin(mut self, margin: SafetyMargin) -> Self {
        self.safety_margin = margin;
        self
    }

    /// Pace the remaining budget evenly until the reset instead of sending it at once and then
    /// waiting (default: off).
    pub fn spread(mut self, spread: bool) -> Self {
        self.spread = spread;
        self
    }

    /// Requests in flight for a key the server has not described yet (and while re-learning a
    /// window after its reset) (default 1). Must be at least 1.
    pub fn slow_start(mut self, in_flight: u32) -> Self {
        self.slow_start = in_flight;
        self
    }

    /// How long the requests in flight of a key in slow start may go unanswered before one
    /// more request may probe (default 10 s). Must be non-zero.
    ///
    /// A probe that never completes (a hung connection and no timeout anywhere) would
    /// otherwise hold its key's slow start for as long as it lives, and every other caller of
    /// the key would wait `max_wait` and fail. With this bound, while the key is full
    /// (`slow_start` requests in flight, none answered) and no request of the key was sent for
    /// `probe_timeout`, the next waiter probes; so a key whose limits are unknown sends at most
    /// `slow_start` requests, plus one per `probe_timeout` while nothing answers: never a
    /// burst. Set it above the slowest response you expect (a long LLM completion), or leave
    /// it and accept one extra probe per `probe_timeout` on such keys; a value at or above
    /// `max_wait` lets waiters fail before the claim expires. A request that never completes
    /// keeps counting as in flight, so after each later reset its key may wait up to
    /// `probe_timeout` from its last request before it probes the new window.
    pub fn probe_timeout(mut self, after: Duration) -> Self {
        self.probe_timeout = after;
        self
    }

    /// The longest wait the layer accepts (default 60 s): a cooldown or reset further away than
    /// this fails fast with [`AdaptWaitTooLong`](crate::AdaptWaitTooLong) carrying the server's
    /// `retry_after`, and a wait for a response (slow start) gives up after this long. Each wait
    /// is capped on its own; bound a request's total time with a
    /// [`Deadline`](ratewise_core::Deadline). Must be non-zero.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Learn a rate from throttles alone (the AWS SDK adaptive algorithm, per key) for keys
    /// whose server sends no rate-limit headers (default: on).
    pub fn header_less(mut self, enabled: bool) -> Self {
        self.header_less = enabled;
        self
    }

    /// Bounds on the per-key state (default 10 000 keys, idle for 10 minutes).
    pub fn keyed_state(mut self, keyed: KeyedStateConfig) -> Self {
        self.keyed = keyed;
        self
    }

    /// How long a learned exhausted policy whose server gave no reset time blocks its key
    /// (default 1 s); then one request probes. Must be non-zero.
    pub fn unknown_reset(mut self, after: Duration) -> Self {
        self.unknown_reset = after;
        self
    }

    /// How long a refusal that the response's headers do not explain pauses its key (default
    /// 60 s; zero turns it off): a 429 (or rate-limit 403) without `Retry-After` whose policies
    /// all still have requests left, such as GitHub's secondary limits ("wait at least one
    /// minute, then back off exponentially"). Each further such refusal in a row doubles the
    /// pause (up to 1 h; refusals of requests already in flight when the pause began count as
    /// the same one); a response that is not a refusal starts over; a policy in other units
    /// (tokens) that resets sooner bounds the pause. Without it, nothing in such a response
    /// would slow the key down: its policies say there is quota left.
    pub fn unexplained_refusal_cooldown(mut self, cooldown: Duration) -> Self {
        self.unexplained_refusal = cooldown;
        self
    }

    /// Checks the settings and makes the layer.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for a fraction outside `[0, 1)` or not finite, a zero `slow_start`, a
    /// zero `probe_timeout`, `max_wait` or `unknown_reset`, or an invalid [`KeyedStateConfig`].
    pub fn build(self) -> Result<AdaptLayer, ConfigError> {
        if let SafetyMargin::Fraction(fraction) = self.safety_margin
            && !(fraction.is_finite() && (0.0..1.0).contains(&fraction))
        {
            return Err(ConfigError::InvalidFraction(fraction));
        }
        if self.slow_start == 0 {
            return Err(ConfigError::ZeroSlowStart);
        }
        if self.probe_timeout.is_zero() {
            return Err(ConfigError::ZeroProbeTimeout);
        }
        if self.max_wait.is_zero() {
            return Err(ConfigError::ZeroMaxWait);
        }
        if self.unknown_reset.is_zero() {
            return Err(ConfigError::ZeroUnknownReset);
        }
        AdaptLayer::from_config(self)
    }
}

/// An [`AdaptConfig`] that cannot work.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    /// `SafetyMargin::Fraction` outside `[0, 1)` or not finite.
    InvalidFraction(f64),
    /// `slow_start` was 0: no request could ever be sent to a new key.
    ZeroSlowStart,
    /// `probe_timeout` was zero.
    ZeroProbeTimeout,
    /// `max_wait` was zero.
    ZeroMaxWait,
    /// `unknown_reset` was zero.
    ZeroUnknownReset,
    /// The keyed-state bounds were invalid.
    KeyedState(ratewise_core::KeyedStateError),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::InvalidFraction(fraction) => {
                write!(f, "safety margin fraction {fraction} is not in [0, 1)")
            }
            ConfigError::ZeroSlowStart => f.pad("slow_start must be at least 1"),
            ConfigError::ZeroProbeTimeout => f.pad("probe_timeout must be non-zero"),
            ConfigError::ZeroMaxWait => f.pad("max_wait must be non-zero"),
            ConfigError::ZeroUnknownReset => f.pad("unknown_reset must be non-zero"),
            ConfigError::KeyedState(err) => write!(f, "invalid keyed state bounds: {err}"),
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
