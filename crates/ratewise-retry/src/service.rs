//! [`Retry`]: the service made by [`RetryLayer`](crate::RetryLayer).

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use ratewise_core::BoxError;
use tower::Service;

use crate::future::{BoxErrorsFuture, ResponseFuture};
use crate::layer::RetryLayer;
use crate::policy::{HttpResponse, RetryPolicy, Shared};

/// Retries failed HTTP requests of the inner service according to a [`RetryLayer`]'s
/// configuration. See the [crate docs](crate) for an example.
///
/// Built on `tower::retry::Retry` with a [`RetryPolicy`]: each retry drives the inner
/// service's readiness again (`poll_ready` on a clone) before calling it.
///
/// # Clone
///
/// Cloning shares the layer's configuration and retry budget (one `Arc`); the inner service
/// is cloned as usual. tower's `Retry` keeps a clone of the inner service in every response
/// future so that it can re-send.
///
/// # Errors
///
/// `type Error = BoxError`: the inner service's error after the last attempt (or a
/// non-retryable one), converted with `Into<BoxError>`. Failed responses are not errors: when
/// the layer stops retrying, the caller gets the last response.
///
/// # Cancel safety
///
/// Dropping the response future at any point (during an attempt or during a backoff sleep)
/// drops the in-flight attempt and the copy of the request; nothing is left reserved. Budget
/// withdrawals are not refunded on cancellation (a retry that was started counts), and a
/// [`ReplayBody`](crate::ReplayBody) being sent hands its buffer back when dropped.
pub struct Retry<S> {
    inner: tower::retry::Retry<RetryPolicy, BoxErrors<S>>,
    shared: Arc<Shared>,
}

impl<S: Clone> Clone for Retry<S> {
    fn clone(&self) -> Self {
        Retry {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Retry<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", self.get_ref())
            .field("config", &self.shared)
            .finish()
    }
}

impl<S> Retry<S> {
    /// Wraps `inner` with the configuration and budget of `layer`.
    pub fn new(inner: S, layer: &RetryLayer) -> Self {
        let shared = Arc::clone(layer.shared());
        Retry {
            inner: tower::retry::Retry::new(
                RetryPolicy::new(Arc::clone(&shared)),
                BoxErrors { inner },
            ),
            shared,
        }
    }

    /// A layer with the default configuration (see [`RetryLayer::new`]).
    pub fn layer() -> RetryLayer {
        RetryLayer::new()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner.get_ref().inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner.get_mut().inner
    }

    /// Consumes `self`, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner.into_inner().inner
    }
}

impl<S, B> Service<Request<B>> for Retry<S>
where
    S: Service<Request<B>> + Clone,
    S::Response: HttpResponse,
    S::Error: Into<BoxError>,
    B: Clone + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, request: Request<B>) -> Self::Future {
        // Requests that are not idempotent and that the policy does not copy (so tower never
        // asks it about them) are watched, so a retryable failure of one is counted as
        // `given_up{reason="not_idempotent"}` and a success refills the budget. Copied ones
        // are accounted by the policy.
        let watch = (!self.shared.copies_every_request() && !self.shared.is_idempotent(&request))
            .then(|| Arc::clone(&self.shared));
        // tower's Retry calls the readied inner service and keeps a clone of it to re-drive
        // readiness before every retry.
        ResponseFuture::new(self.inner.call(request), watch)
    }
}

/// Converts the inner service's errors into `BoxError`, so that the policy can classify them
/// through `dyn Error`.
#[derive(Clone, Debug)]
pub(crate) struct BoxErrors<S> {
    inner: S,
}

impl<S, R> Service<R> for BoxErrors<S>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxErrorsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: R) -> Self::Future {
        BoxErrorsFuture::new(self.inner.call(request))
    }
}
