//! Errors: [`ConfigError`] for invalid configuration, and [`BoxError`] (re-exported from
//! `ratewise-core`).
//!
//! The retry layer adds no refusal of its own: when it declines to retry (budget spent,
//! attempts exhausted, a server wait past the deadline) it returns the last response, and a
//! transport error after the last attempt is returned as that error.

use std::error::Error;
use std::fmt;
use std::time::Duration;

pub use ratewise_core::BoxError;

/// An invalid [`RetryLayer`](crate::RetryLayer) configuration, rejected by
/// [`RetryLayerBuilder::build`](crate::RetryLayerBuilder::build).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    /// `max_attempts` must be at least 1 (1 = never retry).
    ZeroAttempts,
    /// The backoff multiplier must be finite and at least 1.
    InvalidMultiplier(f64),
    /// The backoff base must not exceed its cap.
    BaseAboveCap {
        /// The configured base.
        base: Duration,
        /// The configured cap.
        cap: Duration,
    },
    /// A retry budget percentage must be finite and in `0.0..=1000.0`.
    InvalidPercent(f64),
    /// A retry budget window must be between 1 s and 60 s.
    InvalidBudgetWindow(Duration),
    /// A token quota needs a positive capacity and a positive retry cost not above it.
    InvalidTokenQuota,
    /// A status in the retryable set is outside 100..=599.
    InvalidStatus(u16),
    /// The jitter added to server-directed delays must not exceed `max_wait`.
    ServerJitterAboveMaxWait {
        /// The configured jitter.
        jitter: Duration,
        /// The configured `max_wait`.
        max_wait: Duration,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::ZeroAttempts => f.pad("max_attempts must be at least 1"),
            ConfigError::InvalidMultiplier(m) => {
                write!(f, "backoff multiplier must be finite and >= 1, got {m}")
            }
            ConfigError::BaseAboveCap { base, cap } => {
                write!(f, "backoff base {base:?} exceeds its cap {cap:?}")
            }
            ConfigError::InvalidPercent(p) => {
                write!(
                    f,
                    "retry budget percent must be finite and in 0..=1000, got {p}"
                )
            }
            ConfigError::InvalidBudgetWindow(w) => {
                write!(
                    f,
                    "retry budget window must be between 1 s and 60 s, got {w:?}"
                )
            }
            ConfigError::InvalidTokenQuota => {
                f.pad("token quota needs capacity > 0 and 0 < retry cost <= capacity")
            }
            ConfigError::InvalidStatus(s) => write!(f, "status {s} is not in 100..=599"),
            ConfigError::ServerJitterAboveMaxWait { jitter, max_wait } => {
                write!(
                    f,
                    "server delay jitter {jitter:?} exceeds max_wait {max_wait:?}"
                )
            }
        }
    }
}

impl Error for ConfigError {}
