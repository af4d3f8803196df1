//! [`CircuitBreaker`]: the service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use ratewise_core::{BoxError, ByHost, KeyFn};
use tokio::time::Instant;
use tower_service::Service;

use crate::classify::{Classify, DefaultClassifier};
use crate::future::{CallGuard, ResponseFuture};
use crate::layer::{CircuitBreakerLayer, Registry};

/// A per-key circuit breaker around `S`.
///
/// See the [crate docs](crate) for the behaviour and an example.
///
/// # Clone
///
/// Clones share every circuit with each other and with the [`CircuitBreakerLayer`] that made
/// them. The breaker keeps no per-instance readiness, so cloning is a few reference-count
/// increments.
///
/// # Errors
///
/// `Error = BoxError`. A refused call fails with [`ratewise_core::CircuitOpen`] (downcast it, or
/// find it with [`ratewise_core::find_refusal`]); errors of `S` pass through unchanged (boxed).
/// `poll_ready` never fails because of the circuit: it only forwards the inner readiness.
pub struct CircuitBreaker<S, K = ByHost, C = DefaultClassifier> {
    pub(crate) inner: S,
    pub(crate) key_fn: Arc<K>,
    pub(crate) classifier: C,
    pub(crate) registry: Arc<Registry>,
}

impl<S: Clone, K, C: Clone> Clone for CircuitBreaker<S, K, C> {
    fn clone(&self) -> Self {
        CircuitBreaker {
            inner: self.inner.clone(),
            key_fn: Arc::clone(&self.key_fn),
            classifier: self.classifier.clone(),
            registry: Arc::clone(&self.registry),
        }
    }
}

impl<S: fmt::Debug, K, C: fmt::Debug> fmt::Debug for CircuitBreaker<S, K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("classifier", &self.classifier)
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl<S> CircuitBreaker<S> {
    /// Wraps `inner` in a breaker with the default settings (see [`CircuitBreakerLayer::new`]).
    pub fn new(inner: S) -> Self {
        CircuitBreakerLayer::new().layer_service(inner)
    }

    /// A layer with the default settings (the same as [`CircuitBreakerLayer::new`]); see
    /// [`CircuitBreakerLayer::builder`] to change them.
    pub fn layer() -> CircuitBreakerLayer {
        CircuitBreakerLayer::new()
    }
}

impl<K, C: Clone> CircuitBreakerLayer<K, C> {
    fn layer_service<S>(&self, inner: S) -> CircuitBreaker<S, K, C> {
        tower_layer::Layer::layer(self, inner)
    }
}

impl<S, K, C> CircuitBreaker<S, K, C> {
    ratewise_core::define_inner_service_accessors!();

    /// A handle on the circuits this service shares with its layer.
    pub fn handle(&self) -> crate::CircuitBreakerHandle {
        crate::CircuitBreakerHandle {
            registry: Arc::clone(&self.registry),
        }
    }
}

impl<S, K, C, ReqBody, ResBody> Service<Request<ReqBody>> for CircuitBreaker<S, K, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    K: KeyFn,
    C: Classify,
{
    type Response = Response<ResBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The circuit never refuses here: refusals are errors of the response future, so the
        // service stays usable (a `poll_ready` error means "discard this service").
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (parts, body) = request.into_parts();
        let key = self.key_fn.key(&parts);
        let state = self.registry.state_of(&key);
        match state.admit() {
            Ok(ticket) => {
                let started = if state.policy().needs_clock() {
                    Some(Instant::now())
                } else {
                    None
                };
                // Rejections above leave the readied inner untouched for the next call; an
                // admitted call uses it directly, so no clone of `S` is needed.
                let future = self.inner.call(Request::from_parts(parts, body));
                ResponseFuture::called(
                    future,
                    CallGuard::new(state, ticket, started),
                    self.classifier.clone(),
                )
            }
            Err(open) => ResponseFuture::rejected(open),
        }
    }
}
