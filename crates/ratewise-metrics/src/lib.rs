//! Metrics for ratewise stacks: [`MetricsLayer`] and the names of every metric the layers
//! record through the [`metrics`](https://docs.rs/metrics) facade.
//!
//! # Overview
//!
//! [`MetricsLayer`] records one observation per logical request: a request counter by key and
//! status class, a latency histogram and a counter of 429 responses. Placed above the retry
//! layer (the order of `ratewise::stack()`), it sees what the caller sees; the layers below
//! record their own decisions (waits, retries, cooldowns, breaker transitions, cache outcomes)
//! under the names listed in [`names`].
//!
//! Any `metrics` recorder works (for example `metrics-exporter-prometheus`). Handles are
//! registered once per key and reused, so the per-request cost is a map lookup and a few atomic
//! updates, with no allocation. Each request checks that the recorder is still the one its key's
//! handles were registered with, and registers them again when it is not: requests sent before
//! the recorder was installed do not silence that key afterwards.
//!
//! # Labels are bounded
//!
//! The `key` label comes from a [`KeyFn`] (hosts by default, or the buckets of a
//! [`RouteTable`](ratewise_core::RouteTable)), never from a raw URL. At most
//! [`max_keys`](MetricsLayer::max_keys) distinct keys \[100\] get their own label value; requests
//! of further keys are recorded under `key="other"`.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use ratewise_metrics::MetricsLayer;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), ratewise_core::BoxError> {
//! let client = service_fn(|_request: http::Request<()>| async {
//!     Ok::<_, Infallible>(http::Response::new(()))
//! });
//! let service = ServiceBuilder::new().layer(MetricsLayer::new()).service(client);
//!
//! let response = service
//!     .oneshot(http::Request::get("https://api.example.com/users").body(())?)
//!     .await?;
//! assert_eq!(response.status(), 200);
//! # Ok(())
//! # }
//! ```
//!
//! # Metric names
//!
//! See [`names`]: every name, its kind, and its labels.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use metrics::{Counter, Histogram, SharedString};
use pin_project_lite::pin_project;
use ratewise_core::{BoxError, ByHost, Key, KeyFn};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

/// Every metric name the ratewise layers record, with its kind and labels.
#[doc(inline)]
pub use ratewise_core::metric_names as names;

/// Records requests, status classes, 429s and latency per key for every request that passes.
///
/// See the [crate docs](crate) for an example.
///
/// # Clone
///
/// Clones share the table of registered handles and the label cap.
#[derive(Clone)]
#[must_use]
pub struct MetricsLayer<K = ByHost> {
    key_fn: Arc<K>,
    handles: Arc<HandleTable>,
}

impl MetricsLayer<ByHost> {
    /// Metrics keyed by host, at most 100 distinct keys.
    pub fn new() -> Self {
        MetricsLayer::with_key_fn(ByHost::new())
    }
}

impl Default for MetricsLayer<ByHost> {
    fn default() -> Self {
        MetricsLayer::new()
    }
}

impl<K: KeyFn> MetricsLayer<K> {
    /// Metrics keyed by `key_fn` (e.g. [`ByRoute`](ratewise_core::ByRoute) for per-endpoint
    /// labels), at most 100 distinct keys.
    pub fn with_key_fn(key_fn: K) -> Self {
        MetricsLayer {
            key_fn: Arc::new(key_fn),
            handles: Arc::new(HandleTable::new(100)),
        }
    }

    /// At most `max_keys` distinct keys get their own `key` label \[100\]; the rest are recorded
    /// as `key="other"`.
    pub fn max_keys(self, max_keys: usize) -> Self {
        MetricsLayer {
            key_fn: self.key_fn,
            handles: Arc::new(HandleTable::new(max_keys)),
        }
    }
}

impl<K> fmt::Debug for MetricsLayer<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsLayer")
            .field("max_keys", &self.handles.max_keys)
            .finish_non_exhaustive()
    }
}

impl<S, K> Layer<S> for MetricsLayer<K> {
    type Service = Metrics<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        Metrics {
            inner,
            key_fn: Arc::clone(&self.key_fn),
            handles: Arc::clone(&self.handles),
        }
    }
}

/// The service made by [`MetricsLayer`]. See the [crate docs](crate) for an example.
#[derive(Clone)]
pub struct Metrics<S, K = ByHost> {
    inner: S,
    key_fn: Arc<K>,
    handles: Arc<HandleTable>,
}

impl<S, K> Metrics<S, K> {
    ratewise_core::define_inner_service_accessors!();
}

impl<S: fmt::Debug, K> fmt::Debug for Metrics<S, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, K, ReqBody, ResBody> Service<http::Request<ReqBody>> for Metrics<S, K>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Error: Into<BoxError>,
    K: KeyFn,
{
    type Response = http::Response<ResBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let (key, request) = self.key_fn.key_of(request);
        let handles = self.handles.get(&key);
        ResponseFuture {
            inner: self.inner.call(request),
            handles,
            started: Instant::now(),
        }
    }
}

pin_project! {
    /// The response future of [`Metrics`]: records the outcome when the inner future completes.
    ///
    /// # Cancel safety
    ///
    /// A future dropped before completion records nothing: the request had no outcome.
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        handles: Arc<KeyHandles>,
        started: Instant,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<http::Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let handles = &**this.handles;
        handles
            .duration
            .record(this.started.elapsed().as_secs_f64());
        match &result {
            Ok(response) => {
                let status = response.status().as_u16();
                let class = usize::from(status / 100).clamp(1, 5) - 1;
                handles.requests[class].increment(1);
                if status == 429 {
                    handles.responses_429.increment(1);
                }
            }
            Err(_) => handles.requests[5].increment(1),
        }
        Poll::Ready(result.map_err(Into::into))
    }
}

/// The registered handles of one `key` label value.
struct KeyHandles {
    /// `1xx`..`5xx`, then `error`.
    requests: [Counter; 6],
    duration: Histogram,
    responses_429: Counter,
    /// The recorder the handles were registered with (see [`current_recorder`]).
    recorder: usize,
}

const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "error"];

impl KeyHandles {
    fn register(label: SharedString, recorder: usize) -> Self {
        let requests = STATUS_CLASSES.map(|class| {
            metrics::counter!(names::REQUESTS_TOTAL, "key" => label.clone(), "status_class" => class)
        });
        KeyHandles {
            requests,
            duration: metrics::histogram!(names::REQUEST_DURATION_SECONDS, "key" => label.clone()),
            responses_429: metrics::counter!(names::RESPONSES_429_TOTAL, "key" => label),
            recorder,
        }
    }
}

/// The identity (address) of the recorder that `metrics` would register a handle with now: the
/// thread's local recorder, else the global one, else its no-op recorder.
///
/// A handle stays bound to the recorder it was registered with, and handles registered before a
/// recorder is installed are no-ops forever. So cached handles are checked against this on every
/// request and registered again when the recorder changed (for example when the Prometheus
/// exporter is installed after the first requests). Reading it is a thread-local access and an
/// atomic load.
fn current_recorder() -> usize {
    metrics::with_recorder(|recorder| std::ptr::from_ref(recorder).cast::<()>().addr())
}

/// Handles per key, capped: keys past the cap share the `other` handles.
struct HandleTable {
    max_keys: usize,
    by_key: RwLock<HashMap<Key, Arc<KeyHandles>, foldhash::fast::RandomState>>,
    other: RwLock<Option<Arc<KeyHandles>>>,
}

impl HandleTable {
    fn new(max_keys: usize) -> Self {
        HandleTable {
            max_keys,
            by_key: RwLock::default(),
            other: RwLock::default(),
        }
    }

    fn get(&self, key: &Key) -> Arc<KeyHandles> {
        let recorder = current_recorder();
        {
            let read = self.by_key.read().unwrap_or_else(|p| p.into_inner());
            match read.get(key) {
                Some(handles) if handles.recorder == recorder => return Arc::clone(handles),
                Some(_) => {}
                None if read.len() >= self.max_keys => {
                    drop(read);
                    return self.other(recorder);
                }
                None => {}
            }
        }
        let mut write = self.by_key.write().unwrap_or_else(|p| p.into_inner());
        match write.get(key) {
            Some(handles) if handles.recorder == recorder => return Arc::clone(handles),
            Some(_) => {}
            None if write.len() >= self.max_keys => {
                drop(write);
                return self.other(recorder);
            }
            None => {}
        }
        let handles = Arc::new(KeyHandles::register(
            SharedString::from_shared(key.to_shared()),
            recorder,
        ));
        write.insert(key.clone(), Arc::clone(&handles));
        handles
    }

    /// The handles shared by every key past the cap.
    fn other(&self, recorder: usize) -> Arc<KeyHandles> {
        if let Some(handles) = &*self.other.read().unwrap_or_else(|p| p.into_inner())
            && handles.recorder == recorder
        {
            return Arc::clone(handles);
        }
        let mut other = self.other.write().unwrap_or_else(|p| p.into_inner());
        match &*other {
            Some(handles) if handles.recorder == recorder => Arc::clone(handles),
            _ => {
                let handles = Arc::new(KeyHandles::register(
                    SharedString::const_str("other"),
                    recorder,
                ));
                *other = Some(Arc::clone(&handles));
                handles
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
    use metrics_util::{CompositeKey, MetricKind};
    use std::convert::Infallible;
    use std::time::Duration;
    use tower::{ServiceExt, service_fn};

    fn counter(
        snapshot: &[(CompositeKey, DebugValue)],
        name: &str,
        labels: &[(&str, &str)],
    ) -> u64 {
        snapshot
            .iter()
            .filter(|(key, _)| key.kind() == MetricKind::Counter && key.key().name() == name)
            .filter(|(key, _)| {
                labels.iter().all(|(k, v)| {
                    key.key()
                        .labels()
                        .any(|label| label.key() == *k && label.value() == *v)
                })
            })
            .map(|(_, value)| match value {
                DebugValue::Counter(n) => *n,
                _ => 0,
            })
            .sum()
    }

    fn snapshot(snapshotter: &Snapshotter) -> Vec<(CompositeKey, DebugValue)> {
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| (key, value))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn records_status_classes_429s_latency_and_caps_labels() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let _guard = metrics::set_default_local_recorder(&recorder);

        let client = service_fn(|request: http::Request<()>| async move {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let status = match request.uri().path() {
                "/limited" => 429,
                "/broken" => return Err("connection reset"),
                _ => 200,
            };
            Ok::<_, &'static str>(http::Response::builder().status(status).body(()).unwrap())
        });
        let layer = MetricsLayer::new().max_keys(2);
        let service = layer.layer(client);
        for uri in [
            "http://a.example/ok",
            "http://a.example/limited",
            "http://b.example/ok",
            "http://b.example/broken",
            "http://c.example/ok",
            "http://d.example/limited",
        ] {
            let _ = service
                .clone()
                .oneshot(http::Request::get(uri).body(()).unwrap())
                .await;
        }
        let snap = snapshot(&snapshotter);
        let requests = names::REQUESTS_TOTAL;
        assert_eq!(
            counter(
                &snap,
                requests,
                &[("key", "a.example"), ("status_class", "2xx")]
            ),
            1
        );
        assert_eq!(
            counter(
                &snap,
                requests,
                &[("key", "a.example"), ("status_class", "4xx")]
            ),
            1
        );
        assert_eq!(
            counter(
                &snap,
                requests,
                &[("key", "b.example"), ("status_class", "error")]
            ),
            1
        );
        // Past the cap of 2 keys, c and d are recorded as "other".
        assert_eq!(counter(&snap, requests, &[("key", "other")]), 2);
        assert_eq!(counter(&snap, requests, &[("key", "c.example")]), 0);
        assert_eq!(counter(&snap, names::RESPONSES_429_TOTAL, &[]), 2);
        let latencies: Vec<f64> = snap
            .iter()
            .filter(|(key, _)| key.key().name() == names::REQUEST_DURATION_SECONDS)
            .flat_map(|(_, value)| match value {
                DebugValue::Histogram(values) => values.iter().map(|v| v.into_inner()).collect(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(latencies.len(), 6);
        assert!(
            latencies.iter().all(|&l| (l - 0.25).abs() < 1e-9),
            "{latencies:?}"
        );
    }

    /// Regression: handles registered before a recorder was installed were no-ops forever, so a
    /// program that sent a request before installing its exporter lost that key's metrics.
    #[tokio::test(start_paused = true)]
    async fn handles_registered_before_the_recorder_follow_it_once_installed() {
        let client = service_fn(|_: http::Request<()>| async {
            Ok::<_, Infallible>(http::Response::new(()))
        });
        let service = MetricsLayer::new().max_keys(1).layer(client);
        let send = |uri: &'static str| {
            service
                .clone()
                .oneshot(http::Request::get(uri).body(()).unwrap())
        };
        // No recorder yet: registered with the no-op recorder.
        send("http://a.example/").await.unwrap();
        send("http://b.example/").await.unwrap();

        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let _guard = metrics::set_default_local_recorder(&recorder);
        send("http://a.example/").await.unwrap();
        send("http://b.example/").await.unwrap();
        send("http://a.example/").await.unwrap();

        let snap = snapshot(&snapshotter);
        let requests = names::REQUESTS_TOTAL;
        assert_eq!(counter(&snap, requests, &[("key", "a.example")]), 2);
        assert_eq!(counter(&snap, requests, &[("key", "other")]), 1);
    }

    #[tokio::test]
    async fn errors_are_boxed_and_responses_pass_through() {
        let client = service_fn(|_: http::Request<()>| async {
            Ok::<_, Infallible>(http::Response::new("body"))
        });
        let response = MetricsLayer::new()
            .layer(client)
            .oneshot(http::Request::new(()))
            .await
            .unwrap();
        assert_eq!(*response.body(), "body");
    }

    #[test]
    fn traits() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<MetricsLayer>();
        assert_send_sync::<Metrics<(), ByHost>>();
    }
}
