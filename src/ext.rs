//! [`ServiceBuilderExt`]: one `ServiceBuilder` method per ratewise layer.

use tower::ServiceBuilder;
#[allow(unused_imports)]
use tower::layer::util::Stack;

mod sealed {
    pub trait Sealed {}
    impl<L> Sealed for tower::ServiceBuilder<L> {}
}

/// Adds a method per ratewise layer to `tower::ServiceBuilder`, each with the layer's defaults.
/// For a configured layer, pass it to `ServiceBuilder::layer` instead.
///
/// The trait is sealed: only `ServiceBuilder` implements it.
///
/// ```
/// use ratewise::ServiceBuilderExt;
/// use ratewise::pace::Quota;
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), ratewise::BoxError> {
/// let client = ServiceBuilder::new()
///     .retry_http()
///     .circuit_breaker()
///     .adapt()
///     .pace(Quota::per_second(5)?)
///     .service_fn(|_request: http::Request<String>| async {
///         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
///     });
/// let response = client
///     .oneshot(http::Request::get("https://api.example.com/").body(String::new())?)
///     .await?;
/// assert_eq!(response.status(), 200);
/// # Ok(())
/// # }
/// ```
pub trait ServiceBuilderExt<L>: sealed::Sealed + Sized {
    /// Paces every request through one shared GCRA bucket with `quotas`.
    /// See [`crate::pace`] for more details.
    #[cfg(feature = "pace")]
    #[cfg_attr(docsrs, doc(cfg(feature = "pace")))]
    fn pace(
        self,
        quotas: impl Into<ratewise_pace::Quotas>,
    ) -> ServiceBuilder<Stack<ratewise_pace::PaceLayer, L>>;

    /// Learns the server's limits from its headers and 429s, zero configuration.
    /// See [`crate::adapt`] for more details.
    #[cfg(feature = "adapt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "adapt")))]
    fn adapt(self) -> ServiceBuilder<Stack<ratewise_adapt::AdaptLayer, L>>;

    /// Retries with the defaults of [`RetryLayer::new`](ratewise_retry::RetryLayer::new)
    /// (named so it does not clash with tower's own `ServiceBuilder::retry`).
    /// See [`crate::retry`] for more details.
    #[cfg(feature = "retry")]
    #[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
    fn retry_http(self) -> ServiceBuilder<Stack<ratewise_retry::RetryLayer, L>>;

    /// A circuit breaker per host with the defaults.
    /// See [`crate::breaker`] for more details.
    #[cfg(feature = "breaker")]
    #[cfg_attr(docsrs, doc(cfg(feature = "breaker")))]
    fn circuit_breaker(self) -> ServiceBuilder<Stack<ratewise_breaker::CircuitBreakerLayer, L>>;

    /// An RFC 9111 client cache with the defaults.
    /// See [`crate::cache`] for more details.
    #[cfg(feature = "cache")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
    fn http_cache(self) -> ServiceBuilder<Stack<ratewise_cache::CacheLayer, L>>;

    /// Records requests, 429s and latency per host.
    /// See [`crate::metrics`] for more details.
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    fn record_metrics(self) -> ServiceBuilder<Stack<ratewise_metrics::MetricsLayer, L>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    #[cfg(feature = "pace")]
    fn pace(
        self,
        quotas: impl Into<ratewise_pace::Quotas>,
    ) -> ServiceBuilder<Stack<ratewise_pace::PaceLayer, L>> {
        self.layer(ratewise_pace::PaceLayer::new(quotas))
    }

    #[cfg(feature = "adapt")]
    fn adapt(self) -> ServiceBuilder<Stack<ratewise_adapt::AdaptLayer, L>> {
        self.layer(ratewise_adapt::AdaptLayer::new())
    }

    #[cfg(feature = "retry")]
    fn retry_http(self) -> ServiceBuilder<Stack<ratewise_retry::RetryLayer, L>> {
        self.layer(ratewise_retry::RetryLayer::new())
    }

    #[cfg(feature = "breaker")]
    fn circuit_breaker(self) -> ServiceBuilder<Stack<ratewise_breaker::CircuitBreakerLayer, L>> {
        self.layer(ratewise_breaker::CircuitBreakerLayer::new())
    }

    #[cfg(feature = "cache")]
    fn http_cache(self) -> ServiceBuilder<Stack<ratewise_cache::CacheLayer, L>> {
        self.layer(ratewise_cache::CacheLayer::new())
    }

    #[cfg(feature = "metrics")]
    fn record_metrics(self) -> ServiceBuilder<Stack<ratewise_metrics::MetricsLayer, L>> {
        self.layer(ratewise_metrics::MetricsLayer::new())
    }
}
