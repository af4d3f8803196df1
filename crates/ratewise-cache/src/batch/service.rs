//! [`Batch`]: the service made by [`BatchLayer`](crate::BatchLayer).

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use ratewise_core::BoxError;
use ratewise_core::metric_names::BATCH_TOTAL;
use tokio::sync::oneshot;
use tower_service::Service;

use crate::batch::future::{ItemResult, ResponseFuture};
use crate::batch::layer::BatchConfig;
use crate::error::SharedError;

/// A `Service<K>` that sends single lookups upstream in batches; made by
/// [`BatchLayer`](crate::BatchLayer).
///
/// A window opens with the first lookup and closes after
/// [`max_delay`](BatchConfig::max_delay) or as soon as it holds
/// [`max_size`](BatchConfig::max_size) distinct keys; its keys then go upstream as one
/// `Vec<K>` (in arrival order, each once however many callers asked for it), on a clone of
/// the inner service readied for that call, in a spawned task.
///
/// `poll_ready` is always ready: lookups only join a window, and each batch drives the
/// readiness of its own clone of the inner service.
///
/// # Clone
///
/// Clones share one window (an `Arc`), so lookups from every clone batch together.
///
/// # Cancel safety
///
/// A dropped lookup does not break its batch; see [`ResponseFuture`].
///
/// # Errors
///
/// When the upstream request fails, exactly the callers of that batch get the error: a
/// [`SharedError`] (whose `source()` is the upstream error) when the batch had several
/// callers, the error itself otherwise. A lookup made outside a tokio runtime fails at once.
/// Per-item errors are modelled by the value type: answer `HashMap<K, Result<T, E>>` upstream
/// and each caller gets its own `Option<Result<T, E>>`.
pub struct Batch<S, K, V> {
    shared: Arc<BatchShared<S, K, V>>,
}

struct BatchShared<S, K, V> {
    inner: Mutex<S>,
    config: BatchConfig,
    window: Mutex<Window<K, V>>,
}

type Waiter<V> = oneshot::Sender<ItemResult<V>>;

struct Window<K, V> {
    /// Bumped whenever a window is taken, so a late timer knows its window is gone.
    generation: u64,
    entries: Vec<(K, Vec<Waiter<V>>)>,
    index: HashMap<K, usize>,
}

impl<S, K, V> Batch<S, K, V> {
    /// Wraps `inner` with its own batching window.
    ///
    /// # Errors
    ///
    /// [`ConfigError`](crate::ConfigError) when `max_size` is zero.
    pub fn new(inner: S, config: BatchConfig) -> Result<Self, crate::ConfigError> {
        crate::BatchLayer::<K, V>::with_config(config)?;
        Ok(Self::new_unchecked(inner, config))
    }

    /// A batch layer with `config`; see [`BatchLayer::with_config`](crate::BatchLayer::with_config).
    ///
    /// # Errors
    ///
    /// [`ConfigError`](crate::ConfigError) when `max_size` is zero.
    pub fn layer(config: BatchConfig) -> Result<crate::BatchLayer<K, V>, crate::ConfigError> {
        crate::BatchLayer::with_config(config)
    }

    pub(crate) fn new_unchecked(inner: S, config: BatchConfig) -> Self {
        Batch {
            shared: Arc::new(BatchShared {
                inner: Mutex::new(inner),
                config,
                window: Mutex::new(Window {
                    generation: 0,
                    entries: Vec::new(),
                    index: HashMap::new(),
                }),
            }),
        }
    }
}

impl<S, K, V> Clone for Batch<S, K, V> {
    fn clone(&self) -> Self {
        Batch {
            shared: self.shared.clone(),
        }
    }
}

impl<S, K, V> fmt::Debug for Batch<S, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl<S, K, V> BatchShared<S, K, V>
where
    S: Service<Vec<K>> + Clone + Send + 'static,
    S::Response: IntoIterator<Item = (K, V)>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    fn take_window(&self, window: &mut Window<K, V>) -> Vec<(K, Vec<Waiter<V>>)> {
        window.generation = window.generation.wrapping_add(1);
        window.index.clear();
        std::mem::take(&mut window.entries)
    }

    fn flush_if_current(self: &Arc<Self>, generation: u64) {
        let entries = {
            let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
            if window.generation != generation || window.entries.is_empty() {
                return;
            }
            self.take_window(&mut window)
        };
        self.send(entries);
    }

    /// Sends one batch upstream in its own task.
    fn send(self: &Arc<Self>, mut entries: Vec<(K, Vec<Waiter<V>>)>) {
        // Callers that left before the batch was sent do not cost a key.
        entries.retain_mut(|(_, waiters)| {
            waiters.retain(|w| !w.is_closed());
            !waiters.is_empty()
        });
        if entries.is_empty() {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone();
        metrics::counter!(BATCH_TOTAL, "kind" => "batch").increment(1);
        tracing::trace!(target: "ratewise::batch", keys = entries.len(), "sending batch");
        tokio::spawn(async move {
            let keys: Vec<K> = entries.iter().map(|(k, _)| k.clone()).collect();
            let result = async {
                std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
                inner.call(keys).await
            }
            .await;
            match result {
                Ok(response) => {
                    let mut items: HashMap<K, V> = response.into_iter().collect();
                    for (key, waiters) in entries {
                        let item = items.remove(&key);
                        for waiter in waiters {
                            let _ = waiter.send(Ok(item.clone()));
                        }
                    }
                }
                Err(err) => {
                    let err: BoxError = err.into();
                    tracing::debug!(target: "ratewise::batch", error = %err, "batch failed");
                    let callers: usize = entries.iter().map(|(_, w)| w.len()).sum();
                    if callers == 1 {
                        if let Some(waiter) = entries.into_iter().flat_map(|(_, w)| w).next() {
                            let _ = waiter.send(Err(err));
                        }
                    } else {
                        let shared = SharedError::new(err);
                        for waiter in entries.into_iter().flat_map(|(_, w)| w) {
                            let _ = waiter.send(Err(Box::new(shared.clone())));
                        }
                    }
                }
            }
        });
    }
}

impl<S, K, V> Service<K> for Batch<S, K, V>
where
    S: Service<Vec<K>> + Clone + Send + 'static,
    S::Response: IntoIterator<Item = (K, V)>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    type Response = Option<V>;
    type Error = BoxError;
    type Future = ResponseFuture<V>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, key: K) -> ResponseFuture<V> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return ResponseFuture::failed("BatchLayer needs a tokio runtime".into());
        };
        metrics::counter!(BATCH_TOTAL, "kind" => "item").increment(1);
        let shared = &self.shared;
        let (tx, rx) = oneshot::channel();
        let full = {
            let mut window = shared.window.lock().unwrap_or_else(|e| e.into_inner());
            if window.entries.is_empty() {
                let generation = window.generation;
                let timer_shared = shared.clone();
                let delay = shared.config.max_delay;
                runtime.spawn(async move {
                    tokio::time::sleep(delay).await;
                    timer_shared.flush_if_current(generation);
                });
            }
            match window.index.get(&key) {
                Some(&i) => window.entries[i].1.push(tx),
                None => {
                    let i = window.entries.len();
                    window.index.insert(key.clone(), i);
                    window.entries.push((key, vec![tx]));
                }
            }
            (window.entries.len() >= shared.config.max_size)
                .then(|| shared.take_window(&mut window))
        };
        if let Some(entries) = full {
            shared.send(entries);
        }
        ResponseFuture::waiting(rx)
    }
}
