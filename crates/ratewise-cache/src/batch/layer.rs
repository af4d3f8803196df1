//! [`BatchLayer`] and [`BatchConfig`].

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use tower_layer::Layer;

use crate::batch::service::Batch;
use crate::error::ConfigError;

/// Configuration of a [`BatchLayer`]; defaults in parentheses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchConfig {
    pub(crate) max_delay: Duration,
    pub(crate) max_size: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig::new()
    }
}

impl BatchConfig {
    /// The defaults: 5 ms, 100 keys.
    pub const fn new() -> Self {
        BatchConfig {
            max_delay: Duration::from_millis(5),
            max_size: 100,
        }
    }

    /// Longest time a lookup waits for companions before its batch is sent (default: 5 ms), counted
    /// from the first lookup of the batch.
    pub const fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// Most distinct keys in one upstream request (default: 100); a full batch is sent at once.
    pub const fn max_size(mut self, size: usize) -> Self {
        self.max_size = size;
        self
    }
}

/// Batches single lookups into upstream requests for many keys (the DataLoader pattern).
///
/// Wraps a `Service<Vec<K>>` whose response is any `IntoIterator<Item = (K, V)>` (such as
/// `HashMap<K, V>`) into a [`Batch`], a `Service<K>` answering `Option<V>`: the caller's item,
/// or `None` when the upstream answer did not contain its key. See the
/// [crate docs](crate#batching) for an example.
///
/// # Clone
///
/// The layer holds only configuration. The batching window is created by
/// [`layer`](Layer::layer), once per wrapped service, and shared by every clone of that
/// [`Batch`]: a window only makes sense for one upstream service, so the layer cannot own it.
pub struct BatchLayer<K, V> {
    config: BatchConfig,
    _marker: PhantomData<fn(K) -> V>,
}

impl<K, V> BatchLayer<K, V> {
    /// A layer with the default [`BatchConfig`] (5 ms, 100 keys).
    pub const fn new() -> Self {
        BatchLayer {
            config: BatchConfig::new(),
            _marker: PhantomData,
        }
    }

    /// A layer with `config`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when `max_size` is zero.
    pub fn with_config(config: BatchConfig) -> Result<Self, ConfigError> {
        if config.max_size == 0 {
            return Err(ConfigError::new("max_size must be positive"));
        }
        Ok(BatchLayer {
            config,
            _marker: PhantomData,
        })
    }
}

impl<K, V> Default for BatchLayer<K, V> {
    fn default() -> Self {
        BatchLayer::new()
    }
}

impl<K, V> Clone for BatchLayer<K, V> {
    fn clone(&self) -> Self {
        BatchLayer {
            config: self.config,
            _marker: PhantomData,
        }
    }
}

impl<K, V> fmt::Debug for BatchLayer<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchLayer")
            .field("config", &self.config)
            .finish()
    }
}

impl<S, K, V> Layer<S> for BatchLayer<K, V> {
    type Service = Batch<S, K, V>;

    fn layer(&self, inner: S) -> Batch<S, K, V> {
        Batch::new_unchecked(inner, self.config)
    }
}
