//! Errors of the Redis limiters.

use std::error::Error;
use std::fmt;
use std::time::Duration;

use ratewise_core::{Key, Refusal};

/// Redis is unavailable and the policy is [`FailurePolicy::FailClosed`](crate::FailurePolicy),
/// or a shared cooldown could not be written.
///
/// A [`Refusal`]: the request may be tried again after `retry_after` (the probe interval).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisUnavailable {
    key: Key,
    retry_after: Duration,
}

impl RedisUnavailable {
    /// Redis could not decide for `key`; try again after `retry_after`.
    pub fn new(key: Key, retry_after: Duration) -> Self {
        Self { key, retry_after }
    }
}

impl fmt::Display for RedisUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "redis unavailable for key `{}`; retry after {:?}",
            self.key, self.retry_after
        )
    }
}

impl Error for RedisUnavailable {}

impl Refusal for RedisUnavailable {
    fn key(&self) -> &Key {
        &self.key
    }
    fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

/// A Redis limiter configuration that cannot work.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The key prefix contains `{` or `}`, which would break the hash tag.
    BraceInPrefix,
    /// The per-call timeout is zero.
    ZeroTimeout,
    /// The probe interval is zero.
    ZeroProbeInterval,
    /// `FallbackLocal { expected_workers: 0 }`.
    ZeroWorkers,
    /// `max_local_keys(0)`.
    ZeroLocalKeys,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::BraceInPrefix => "the key prefix must not contain `{` or `}`",
            Self::ZeroTimeout => "the redis timeout must be positive",
            Self::ZeroProbeInterval => "the probe interval must be positive",
            Self::ZeroWorkers => "expected_workers must be at least 1",
            Self::ZeroLocalKeys => "the local fallback must keep at least 1 key",
        })
    }
}

impl Error for ConfigError {}
