//! [`CacheLayer`].

use std::sync::Arc;

use tower_layer::Layer;

use crate::cache::config::CacheConfig;
use crate::cache::service::Cache;
use crate::cache::store::Shared;
use crate::error::ConfigError;

/// A private HTTP cache (RFC 9111) with coalescing and stale fallbacks, as a tower layer.
///
/// See the [crate docs](crate) for the behaviour and an example.
///
/// # Clone
///
/// Cheap: clones (and every [`Cache`] they make) share one store, created by the constructor.
#[derive(Clone, Debug)]
pub struct CacheLayer {
    shared: Arc<Shared>,
}

impl CacheLayer {
    /// A cache with the default [`CacheConfig`].
    pub fn new() -> Self {
        CacheLayer {
            shared: Arc::new(Shared::new(CacheConfig::new())),
        }
    }

    /// A cache with `config`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when a bound is zero or `max_entry_bytes` exceeds `max_bytes` (or
    /// 1 GiB), or the heuristic fraction is not in `0..=1`.
    pub fn with_config(config: CacheConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(CacheLayer {
            shared: Arc::new(Shared::new(config)),
        })
    }

    /// Bytes currently counted in the store (bodies, headers and a fixed overhead per
    /// entry). The store evicts asynchronously: call
    /// [`run_pending_tasks`](CacheLayer::run_pending_tasks) first for an exact figure.
    pub fn resident_bytes(&self) -> u64 {
        self.shared.store.weighted_size()
    }

    /// Number of stored entries (responses and `Vary` records), after the same caveat.
    pub fn entry_count(&self) -> u64 {
        self.shared.store.entry_count()
    }

    /// Runs the store's pending maintenance (evictions) now.
    pub fn run_pending_tasks(&self) {
        self.shared.store.run_pending_tasks();
    }

    /// Forgets every stored response.
    pub fn invalidate_all(&self) {
        self.shared.store.invalidate_all();
    }
}

impl Default for CacheLayer {
    fn default() -> Self {
        CacheLayer::new()
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = Cache<S>;

    fn layer(&self, inner: S) -> Cache<S> {
        Cache {
            inner,
            shared: self.shared.clone(),
        }
    }
}
