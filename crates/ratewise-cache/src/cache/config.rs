//! Configuration of [`CacheLayer`](crate::CacheLayer).

use std::time::Duration;

use http::HeaderName;
use http::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION};

use crate::error::ConfigError;

/// Configuration of a [`CacheLayer`](crate::CacheLayer); defaults in parentheses.
///
/// ```
/// use std::time::Duration;
/// use ratewise_cache::{CacheConfig, CacheLayer};
///
/// # fn main() -> Result<(), ratewise_cache::ConfigError> {
/// let layer = CacheLayer::with_config(
///     CacheConfig::new()
///         .max_bytes(16 * 1024 * 1024)
///         .max_entry_bytes(512 * 1024)
///         .stale_on_refusal(Some(Duration::from_secs(600))),
/// )?;
/// # drop(layer);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct CacheConfig {
    pub(crate) max_bytes: u64,
    pub(crate) max_entry_bytes: u64,
    pub(crate) heuristic_fraction: Option<f32>,
    pub(crate) isolation_headers: Vec<HeaderName>,
    pub(crate) stale_on_refusal: Option<Duration>,
    pub(crate) max_stale: Duration,
    pub(crate) coalesce: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig::new()
    }
}

impl CacheConfig {
    /// The defaults: 64 MiB in total, 4 MiB per entry, no heuristic freshness, isolation by
    /// `Authorization`, `Proxy-Authorization` and `Cookie`, stale-on-refusal up to 1 hour past
    /// freshness, server stale windows capped at 1 day, coalescing on.
    pub fn new() -> Self {
        CacheConfig {
            max_bytes: 64 * 1024 * 1024,
            max_entry_bytes: 4 * 1024 * 1024,
            heuristic_fraction: None,
            isolation_headers: vec![AUTHORIZATION, PROXY_AUTHORIZATION, COOKIE],
            stale_on_refusal: Some(Duration::from_secs(3600)),
            max_stale: Duration::from_secs(24 * 3600),
            coalesce: true,
        }
    }

    /// Upper bound of the resident bytes of the store (bodies, headers and a fixed overhead
    /// per entry) (default: 64 MiB). Eviction (TinyLFU admission, LRU eviction, by `moka`) keeps the
    /// total under it.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Largest body stored (default: 4 MiB). Larger responses are streamed to the caller uncached,
    /// never buffered past this size.
    pub fn max_entry_bytes(mut self, bytes: u64) -> Self {
        self.max_entry_bytes = bytes;
        self
    }

    /// Heuristic freshness (RFC 9111 §4.2.2) for responses without explicit freshness: a
    /// fraction of the time since `Last-Modified` (browsers use 0.1). (default: `None`, off): such
    /// responses are stored (when storable) but stale at once, so they are only revalidated or
    /// served stale. Off by default because an API client should not invent freshness the
    /// server did not grant.
    pub fn heuristic_freshness(mut self, fraction: Option<f32>) -> Self {
        self.heuristic_fraction = fraction;
        self
    }

    /// Request headers that identify the user (default: `Authorization`,
    /// `Proxy-Authorization`, `Cookie`): a request carrying any of them is cached under a SHA-256 digest of their
    /// values, so one user's response is never served to another. The raw values are never
    /// kept in the key nor in the stored request.
    pub fn isolation_headers(mut self, headers: impl IntoIterator<Item = HeaderName>) -> Self {
        self.isolation_headers = headers.into_iter().collect();
        self
    }

    /// When a layer below refuses the request (pacing or adaptation wait too long, circuit
    /// open), serve a stored response that is stale by at most this much (default: `Some(1 hour)`);
    /// `None` turns it off. Responses with `must-revalidate` or `no-cache` are never served
    /// this way.
    pub fn stale_on_refusal(mut self, max_staleness: Option<Duration>) -> Self {
        self.stale_on_refusal = max_staleness;
        self
    }

    /// Cap applied to the server's `stale-while-revalidate` and `stale-if-error` values
    /// (default: 1 day), so a hostile or broken header cannot keep stale data alive for years.
    pub fn max_stale(mut self, max: Duration) -> Self {
        self.max_stale = max;
        self
    }

    /// Coalesce concurrent identical cacheable requests into one upstream request (default: `true`).
    pub fn coalesce(mut self, coalesce: bool) -> Self {
        self.coalesce = coalesce;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_bytes == 0 {
            return Err(ConfigError::new("max_bytes must be positive"));
        }
        if self.max_entry_bytes == 0 || self.max_entry_bytes > self.max_bytes {
            return Err(ConfigError::new("max_entry_bytes must be in 1..=max_bytes"));
        }
        if self.max_entry_bytes > u64::from(u32::MAX / 4) {
            return Err(ConfigError::new("max_entry_bytes must be at most 1 GiB"));
        }
        if let Some(f) = self.heuristic_fraction
            && (!f.is_finite() || !(0.0..=1.0).contains(&f))
        {
            return Err(ConfigError::new(
                "heuristic_freshness must be a finite fraction in 0..=1",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_configs_are_rejected() {
        assert!(CacheConfig::new().validate().is_ok());
        assert!(CacheConfig::new().max_bytes(0).validate().is_err());
        assert!(
            CacheConfig::new()
                .max_bytes(10)
                .max_entry_bytes(11)
                .validate()
                .is_err()
        );
        assert!(CacheConfig::new().max_entry_bytes(0).validate().is_err());
        assert!(
            CacheConfig::new()
                .heuristic_freshness(Some(f32::NAN))
                .validate()
                .is_err()
        );
        assert!(
            CacheConfig::new()
                .heuristic_freshness(Some(2.0))
                .validate()
                .is_err()
        );
        assert!(
            CacheConfig::new()
                .heuristic_freshness(Some(0.1))
                .validate()
                .is_ok()
        );
    }
}
