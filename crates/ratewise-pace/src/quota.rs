//! [`Quota`]: a rate and a burst, validated at construction.

use std::fmt;
use std::time::Duration;

use crate::limiter::MAX_CHAINED_QUOTAS;

/// The longest span a quota may cover (`burst × emission interval`): about 146 years in
/// nanoseconds, so that instants plus spans never overflow a `u64` of nanoseconds.
const MAX_SPAN_NANOS: u64 = 1 << 62;

/// A rate limit: `count` requests per `period`, with a `burst`.
///
/// # Admission rule
///
/// A quota of *n* per *period* with burst *b* admits **at most *b* requests at once** (from a
/// bucket that has been idle long enough), **then one every *period / n***. Exactly, it is the
/// generic cell rate algorithm (GCRA) with the emission interval `T = period / n` (rounded up to
/// the nanosecond, so pacing is never faster than the quota) and a theoretical arrival time
/// `tat` per quota:
///
/// ```text
/// a request of cost c arriving at `now` passes  iff  max(tat, now) + c·T − b·T <= now
/// and then                                           tat = max(tat, now) + c·T
/// ```
///
/// A refused request changes nothing; it could pass `max(tat, now) + c·T − b·T − now` later.
/// Over any closed window of length `w`, at most `b + floor(w / T)` units of cost pass: what
/// a server enforcing the same GCRA (nginx `limit_req` with `burst = b − 1`) or a token bucket
/// of `b` refilled at `n / period` accepts. With burst 1 it also never exceeds a strict rolling
/// window of `n` per `period`. A request whose cost exceeds `b` can never pass.
///
/// The default burst is 1: perfectly smooth, one request every `T`.
///
/// ```
/// use std::time::Duration;
/// use ratewise_pace::Quota;
///
/// let repos = Quota::per_hour(5000)?.burst(50)?;
/// assert_eq!(repos.emission_interval(), Duration::from_millis(720));
/// assert_eq!(repos.burst_size(), 50);
/// assert!(Quota::per_second(0).is_err());
/// # Ok::<(), ratewise_pace::QuotaError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    count: u32,
    period: Duration,
    burst: u32,
    interval_nanos: u64,
}

impl Quota {
    /// `count` requests per second, burst 1.
    ///
    /// # Errors
    ///
    /// [`QuotaError::ZeroCount`] when `count` is 0.
    pub fn per_second(count: u32) -> Result<Self, QuotaError> {
        Quota::new(count, Duration::from_secs(1))
    }

    /// `count` requests per minute, burst 1.
    ///
    /// # Errors
    ///
    /// [`QuotaError::ZeroCount`] when `count` is 0.
    pub fn per_minute(count: u32) -> Result<Self, QuotaError> {
        Quota::new(count, Duration::from_secs(60))
    }

    /// `count` requests per hour, burst 1.
    ///
    /// # Errors
    ///
    /// [`QuotaError::ZeroCount`] when `count` is 0.
    pub fn per_hour(count: u32) -> Result<Self, QuotaError> {
        Quota::new(count, Duration::from_secs(3600))
    }

    /// One request every `period`, burst 1.
    ///
    /// # Errors
    ///
    /// [`QuotaError::ZeroPeriod`] when `period` is zero (or shorter than a nanosecond),
    /// [`QuotaError::TooLong`] when it exceeds about 146 years.
    pub fn with_period(period: Duration) -> Result<Self, QuotaError> {
        Quota::new(1, period)
    }

    /// `count` requests per `period`, burst 1.
    ///
    /// # Errors
    ///
    /// [`QuotaError::ZeroCount`], [`QuotaError::ZeroPeriod`], or [`QuotaError::TooLong`] when
    /// the period exceeds about 146 years.
    pub fn new(count: u32, period: Duration) -> Result<Self, QuotaError> {
        if count == 0 {
            return Err(QuotaError::ZeroCount);
        }
        let period_nanos = period.as_nanos();
        if period_nanos == 0 {
            return Err(QuotaError::ZeroPeriod);
        }
        if period_nanos > u128::from(MAX_SPAN_NANOS) {
            return Err(QuotaError::TooLong);
        }
        // Rounded up: pacing at a slightly lower rate than the quota is safe, faster is not.
        let interval_nanos = u64::try_from(period_nanos.div_ceil(u128::from(count)))
            .map_err(|_| QuotaError::TooLong)?;
        Ok(Quota {
            count,
            period,
            burst: 1,
            interval_nanos,
        })
    }

    /// Sets the burst: at most `burst` requests pass at once after an idle period.
    ///
    /// # Errors
    ///
    /// [`QuotaError::ZeroBurst`] when `burst` is 0, [`QuotaError::TooLong`] when
    /// `burst × period / count` exceeds about 146 years.
    pub fn burst(mut self, burst: u32) -> Result<Self, QuotaError> {
        if burst == 0 {
            return Err(QuotaError::ZeroBurst);
        }
        if self.interval_nanos.saturating_mul(u64::from(burst)) > MAX_SPAN_NANOS {
            return Err(QuotaError::TooLong);
        }
        self.burst = burst;
        Ok(self)
    }

    /// The number of requests per [`period`](Self::period).
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The period over which [`count`](Self::count) requests pass.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The burst: how many requests pass at once after an idle period.
    pub fn burst_size(&self) -> u32 {
        self.burst
    }

    /// `T = period / count`, rounded up to the nanosecond: the spacing of requests once the
    /// burst is spent, and the cost of one unit in the GCRA.
    pub fn emission_interval(&self) -> Duration {
        Duration::from_nanos(self.interval_nanos)
    }

    /// [`emission_interval`](Self::emission_interval) in nanoseconds.
    pub fn emission_interval_nanos(&self) -> u64 {
        self.interval_nanos
    }

    /// `burst × T` in nanoseconds: how far ahead of `now` the theoretical arrival time may be
    /// after an admission (the GCRA's delay tolerance plus one interval).
    pub fn burst_span_nanos(&self) -> u64 {
        // Cannot overflow: checked against MAX_SPAN_NANOS in `burst`.
        self.interval_nanos * u64::from(self.burst)
    }
}

/// The chained quotas of one key (1 to [`MAX_CHAINED_QUOTAS`]): a request passes only when
/// every one of them admits it, and a refusal by one consumes none of the others.
///
/// `Copy`, stored inline (no allocation). Built from one [`Quota`] (`From`) or a slice.
///
/// ```
/// use ratewise_pace::{Quota, Quotas};
///
/// // 10 per second AND 5000 per hour.
/// let chained = Quotas::new(&[Quota::per_second(10)?.burst(10)?, Quota::per_hour(5000)?])?;
/// assert_eq!(chained.as_slice().len(), 2);
/// assert_eq!(chained.min_burst(), 1);
/// # Ok::<(), ratewise_pace::QuotaError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quotas {
    quotas: [Quota; MAX_CHAINED_QUOTAS],
    len: u8,
    /// Kept with the chain: the layer reads it on every request.
    min_burst: u32,
}

impl Quotas {
    /// The chain of `quotas`, in this order (the order in which a limiter keeps their state).
    ///
    /// # Errors
    ///
    /// [`QuotaError::Empty`] or [`QuotaError::TooMany`].
    pub fn new(quotas: &[Quota]) -> Result<Self, QuotaError> {
        let Some(&first) = quotas.first() else {
            return Err(QuotaError::Empty);
        };
        if quotas.len() > MAX_CHAINED_QUOTAS {
            return Err(QuotaError::TooMany);
        }
        let mut all = [first; MAX_CHAINED_QUOTAS];
        all[..quotas.len()].copy_from_slice(quotas);
        Ok(Quotas {
            quotas: all,
            len: quotas.len() as u8,
            min_burst: quotas.iter().map(Quota::burst_size).min().unwrap_or(1),
        })
    }

    /// The quotas, in order.
    #[inline]
    pub fn as_slice(&self) -> &[Quota] {
        &self.quotas[..usize::from(self.len)]
    }

    /// The smallest burst: the largest cost a request may have.
    #[inline]
    pub fn min_burst(&self) -> u32 {
        self.min_burst
    }

    /// The longest emission interval: the spacing of unit requests once every burst is spent.
    pub fn max_interval(&self) -> Duration {
        self.as_slice()
            .iter()
            .map(Quota::emission_interval)
            .max()
            .unwrap_or_default()
    }

    /// The chain a request that may not use the reserve is checked against: each burst
    /// reduced by `floor(fraction × burst)` (at least 1 remains).
    pub(crate) fn without_reserve(mut self, fraction: f64) -> Self {
        for quota in &mut self.quotas[..usize::from(self.len)] {
            // In [0, burst): the fraction is checked to be in [0, 1) at construction.
            let reserved = (fraction * f64::from(quota.burst)).floor() as u32;
            quota.burst = quota.burst.saturating_sub(reserved).max(1);
        }
        self.min_burst = self
            .as_slice()
            .iter()
            .map(Quota::burst_size)
            .min()
            .unwrap_or(1);
        self
    }
}

impl From<Quota> for Quotas {
    fn from(quota: Quota) -> Self {
        Quotas {
            quotas: [quota; MAX_CHAINED_QUOTAS],
            len: 1,
            min_burst: quota.burst_size(),
        }
    }
}

impl fmt::Debug for Quotas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl fmt::Debug for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Quota")
            .field("count", &self.count)
            .field("period", &self.period)
            .field("burst", &self.burst)
            .finish()
    }
}

/// A [`Quota`] that cannot work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum QuotaError {
    /// The number of requests per period was 0.
    ZeroCount,
    /// The period was zero.
    ZeroPeriod,
    /// The burst was 0.
    ZeroBurst,
    /// The period, or `burst × period / count`, exceeds about 146 years.
    TooLong,
    /// A key was given an empty list of quotas.
    Empty,
    /// A key was given more than [`MAX_CHAINED_QUOTAS`] quotas.
    TooMany,
}

impl fmt::Display for QuotaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            QuotaError::ZeroCount => "quota count must be at least 1",
            QuotaError::ZeroPeriod => "quota period must be positive",
            QuotaError::ZeroBurst => "quota burst must be at least 1",
            QuotaError::TooLong => "quota period or burst span is too long",
            QuotaError::Empty => "a key needs at least one quota",
            QuotaError::TooMany => "a key may chain at most 4 quotas",
        })
    }
}

impl std::error::Error for QuotaError {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn constructors_and_errors() {
        assert_eq!(Quota::per_second(0), Err(QuotaError::ZeroCount));
        assert_eq!(
            Quota::with_period(Duration::ZERO),
            Err(QuotaError::ZeroPeriod)
        );
        assert_eq!(
            Quota::with_period(Duration::from_secs(u64::MAX)),
            Err(QuotaError::TooLong)
        );
        assert_eq!(
            Quota::per_second(1).unwrap().burst(0),
            Err(QuotaError::ZeroBurst)
        );
        assert_eq!(
            Quota::with_period(Duration::from_secs(3600 * 24 * 365))
                .unwrap()
                .burst(u32::MAX),
            Err(QuotaError::TooLong)
        );
        let search = Quota::per_minute(30).unwrap().burst(5).unwrap();
        assert_eq!(search.emission_interval(), Duration::from_secs(2));
        assert_eq!(search.burst_span_nanos(), 10_000_000_000);
        assert_eq!(search.count(), 30);
        assert_eq!(search.period(), Duration::from_secs(60));
        assert_eq!(
            Quota::with_period(Duration::from_millis(250))
                .unwrap()
                .emission_interval(),
            Duration::from_millis(250)
        );
        assert!(format!("{search:?}").contains("burst: 5"));
        assert_eq!(
            QuotaError::ZeroBurst.to_string(),
            "quota burst must be at least 1"
        );
    }

    proptest! {
        /// The emission interval is never shorter than period / count: n intervals never fit in
        /// less than the period, so pacing is never faster than the quota.
        #[test]
        fn interval_rounds_up(count in 1u32.., period_ms in 1u64..10_000_000) {
            let period = Duration::from_millis(period_ms);
            let quota = Quota::new(count, period).unwrap();
            let total = u128::from(quota.emission_interval_nanos()) * u128::from(count);
            prop_assert!(total >= period.as_nanos());
            prop_assert!(total < period.as_nanos() + u128::from(count));
        }
    }
}
