//! What a Redis limiter does while Redis is slow or down.

use std::fmt;

/// What an acquire does when Redis does not answer within the timeout (or answers an error).
///
/// Whatever the policy, no acquire waits on Redis longer than the configured timeout. While
/// Redis is failing, the limiter is *degraded*: it answers from the policy at once, and one
/// acquire per probe interval tries Redis again (bounded by the same timeout); the first that
/// succeeds switches every caller back to the shared limit. Each switch emits a `tracing`
/// event and increments [`REDIS_MODE_SWITCHES_TOTAL`](ratewise_core::metric_names::REDIS_MODE_SWITCHES_TOTAL);
/// each decision made by the policy increments
/// [`REDIS_FALLBACK_TOTAL`](ratewise_core::metric_names::REDIS_FALLBACK_TOTAL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Pace locally at `rate / expected_workers` (and `burst / expected_workers`, at least 1)
    /// per key: each of the `expected_workers` processes sharing the quota takes its share, so
    /// a Redis outage neither stops the work nor turns into a burst of 429s upstream. The
    /// default, with `expected_workers: 1`: set it to the number of processes you run.
    ///
    /// Admissions made locally are not written back to Redis when it returns (expect up to one
    /// extra burst per worker at the switch). A cost above this process's share of the burst
    /// waits until that share is full and then takes its whole cost: never refused forever,
    /// never counted as less than it is (the local rate stays `rate / expected_workers`).
    FallbackLocal {
        /// How many processes share the quota (at least 1).
        expected_workers: u32,
    },
    /// Allow every request. Only for quotas where a 429 storm is cheaper than a stall.
    FailOpen,
    /// Refuse every request with a [`RedisUnavailable`](crate::RedisUnavailable) error.
    FailClosed,
}

impl Default for FailurePolicy {
    fn default() -> Self {
        Self::FallbackLocal {
            expected_workers: 1,
        }
    }
}

impl FailurePolicy {
    /// The `policy` label of the fallback metric.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::FallbackLocal { .. } => "fallback_local",
            Self::FailOpen => "fail_open",
            Self::FailClosed => "fail_closed",
        }
    }
}

impl fmt::Display for FailurePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.label())
    }
}
