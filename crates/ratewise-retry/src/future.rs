//! Future types.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::Request;
use pin_project_lite::pin_project;
use ratewise_core::BoxError;
use ratewise_core::metric_names::RETRY_GIVEN_UP_TOTAL;
use tower::Service;

use crate::policy::{HttpResponse, RetryPolicy, Shared};
use crate::service::BoxErrors;

type Inner<S, B> = tower::retry::future::ResponseFuture<RetryPolicy, BoxErrors<S>, Request<B>>;

pin_project! {
    /// The response future of [`Retry`](crate::Retry).
    ///
    /// # Cancel safety
    ///
    /// Dropping it drops the attempt in flight (or the backoff sleep) and the stored copy of
    /// the request; it holds nothing else.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
        S::Response: HttpResponse,
        S::Error: Into<BoxError>,
        B: Clone,
        B: 'static,
    {
        #[pin]
        inner: Inner<S, B>,
        watch: Option<Arc<Shared>>,
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
    S::Response: HttpResponse,
    S::Error: Into<BoxError>,
    B: Clone + 'static,
{
    #[inline]
    pub(crate) fn new(inner: Inner<S, B>, watch: Option<Arc<Shared>>) -> Self {
        ResponseFuture { inner, watch }
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
    S::Response: HttpResponse,
    S::Error: Into<BoxError>,
    B: Clone + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("retryable", &self.watch.is_none())
            .finish_non_exhaustive()
    }
}

impl<S, B> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>> + Clone,
    S::Response: HttpResponse,
    S::Error: Into<BoxError>,
    B: Clone + 'static,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let (Some(shared), Ok(response)) = (this.watch.take(), &result) {
            if shared.retryable_failure(response).is_some() {
                metrics::counter!(RETRY_GIVEN_UP_TOTAL, "reason" => "not_idempotent").increment(1);
                tracing::debug!(
                    target: "ratewise_retry",
                    status = response.status().as_u16(),
                    "not retrying a request that is not idempotent"
                );
            } else {
                // tower never asks the policy about a request it could not copy, so its
                // success is accounted here: the token quota refills on every success
                // (AWS standard mode), not only on those of retryable requests.
                shared.budget.on_success(0);
            }
        }
        Poll::Ready(result)
    }
}

pin_project! {
    /// Converts the inner future's error into a `BoxError`.
    #[derive(Debug)]
    pub(crate) struct BoxErrorsFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F> BoxErrorsFuture<F> {
    pub(crate) fn new(inner: F) -> Self {
        BoxErrorsFuture { inner }
    }
}

impl<F, T, E> Future for BoxErrorsFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx).map_err(Into::into)
    }
}
