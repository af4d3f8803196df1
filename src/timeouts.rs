//! The two timeouts of a stack: [`SetDeadlineLayer`] (the total time of a logical request,
//! as a [`Deadline`] every layer below respects) and [`AttemptTimeoutLayer`] (one attempt on
//! the wire).
//!
//! Both are optional at run time (`None` passes requests through) and always box errors, so a
//! stack has one type whatever is configured.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use ratewise_core::{BoxError, Deadline};
use tokio::time::{Instant, Sleep, sleep_until};
use tower_layer::Layer;
use tower_service::Service;

/// Sets a [`Deadline`] `timeout` after the call on every request that has none (or a later
/// one), and fails the call with [`TotalTimeoutElapsed`] when the deadline passes.
///
/// The layers below read the deadline: the retry layer does not sleep towards a retry that
/// would start after it, pacing and adaptation fail fast instead of waiting past it. Unlike
/// `tower::timeout::Timeout`, the time a request spends waiting for a slot is covered, because
/// those waits happen inside the response futures below.
#[derive(Clone, Copy, Debug)]
#[must_use]
pub struct SetDeadlineLayer {
    timeout: Option<Duration>,
}

impl SetDeadlineLayer {
    /// Every request gets `timeout` in total; `None` passes requests through unchanged (a
    /// deadline the request already carries still applies below).
    pub const fn new(timeout: Option<Duration>) -> Self {
        SetDeadlineLayer { timeout }
    }
}

impl<S> Layer<S> for SetDeadlineLayer {
    type Service = SetDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SetDeadline {
            inner,
            timeout: self.timeout,
        }
    }
}

/// The service made by [`SetDeadlineLayer`].
#[derive(Clone, Debug)]
pub struct SetDeadline<S> {
    inner: S,
    timeout: Option<Duration>,
}

impl<S, B> Service<http::Request<B>> for SetDeadline<S>
where
    S: Service<http::Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = TimeoutFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let Some(timeout) = self.timeout else {
            return TimeoutFuture::new(self.inner.call(request), None, Elapsed::Total);
        };
        let ours = instant_after(timeout);
        let deadline = match Deadline::of(&request) {
            Some(Deadline(theirs)) if theirs <= ours => theirs,
            _ => {
                request.extensions_mut().insert(Deadline(ours));
                ours
            }
        };
        TimeoutFuture::new(self.inner.call(request), Some(deadline), Elapsed::Total)
    }
}

/// Fails an attempt with [`AttemptTimeoutElapsed`] when no response came within the timeout.
///
/// It starts counting in `call`; placed below the pacing layer (as in `ratewise::stack()`),
/// it covers the attempt on the wire, not the wait for a slot.
#[derive(Clone, Copy, Debug)]
#[must_use]
pub struct AttemptTimeoutLayer {
    timeout: Option<Duration>,
}

impl AttemptTimeoutLayer {
    /// Each attempt gets `timeout`; `None` passes requests through.
    pub const fn new(timeout: Option<Duration>) -> Self {
        AttemptTimeoutLayer { timeout }
    }
}

impl<S> Layer<S> for AttemptTimeoutLayer {
    type Service = AttemptTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AttemptTimeout {
            inner,
            timeout: self.timeout,
        }
    }
}

/// The service made by [`AttemptTimeoutLayer`].
#[derive(Clone, Debug)]
pub struct AttemptTimeout<S> {
    inner: S,
    timeout: Option<Duration>,
}

impl<S, R> Service<R> for AttemptTimeout<S>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = TimeoutFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let deadline = self.timeout.map(instant_after);
        TimeoutFuture::new(self.inner.call(request), deadline, Elapsed::Attempt)
    }
}

/// `timeout` from now, saturated: `Instant + Duration` panics on overflow, and a huge timeout
/// (`Duration::MAX` for "practically none") must not panic in `call`.
fn instant_after(timeout: Duration) -> Instant {
    // About 30 years, as tokio's own "far future".
    const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);
    let now = Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(FAR_FUTURE))
        .unwrap_or(now)
}

#[derive(Clone, Copy, Debug)]
enum Elapsed {
    Total,
    Attempt,
}

pin_project! {
    /// The response future of [`SetDeadline`] and [`AttemptTimeout`].
    ///
    /// # Cancel safety
    ///
    /// Dropping it drops the inner future, which releases what the layers below hold.
    #[must_use = "futures do nothing unless polled"]
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Option<Sleep>,
        kind: Elapsed,
    }
}

impl<F> TimeoutFuture<F> {
    fn new(inner: F, deadline: Option<Instant>, kind: Elapsed) -> Self {
        TimeoutFuture {
            inner,
            sleep: deadline.map(sleep_until),
            kind,
        }
    }
}

impl<F> fmt::Debug for TimeoutFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutFuture")
            .field("deadline", &self.sleep.as_ref().map(Sleep::deadline))
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl<F, T, E> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result.map_err(Into::into));
        }
        let Some(sleep) = this.sleep.as_pin_mut() else {
            return Poll::Pending;
        };
        std::task::ready!(sleep.poll(cx));
        Poll::Ready(Err(match this.kind {
            Elapsed::Total => Box::new(TotalTimeoutElapsed(())),
            Elapsed::Attempt => Box::new(AttemptTimeoutElapsed(())),
        }))
    }
}

/// The request's total deadline passed before a response arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TotalTimeoutElapsed(());

impl fmt::Display for TotalTimeoutElapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("request deadline elapsed")
    }
}

impl std::error::Error for TotalTimeoutElapsed {}

/// One attempt took longer than the attempt timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptTimeoutElapsed(());

impl fmt::Display for AttemptTimeoutElapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("attempt timed out")
    }
}

impl std::error::Error for AttemptTimeoutElapsed {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{ServiceExt, service_fn};

    #[tokio::test(start_paused = true)]
    async fn sets_the_earlier_deadline_and_times_out_at_it() {
        let slow = service_fn(|request: http::Request<()>| async move {
            let deadline = Deadline::of(&request).expect("a deadline");
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok::<_, Infallible>(deadline)
        });
        let service = SetDeadlineLayer::new(Some(Duration::from_secs(5))).layer(slow);
        let start = Instant::now();
        let err = service
            .clone()
            .oneshot(http::Request::new(()))
            .await
            .unwrap_err();
        assert!(err.is::<TotalTimeoutElapsed>());
        assert_eq!(start.elapsed(), Duration::from_secs(5));

        // A request with an earlier deadline keeps it.
        let mut request = http::Request::new(());
        request
            .extensions_mut()
            .insert(Deadline::after(Duration::from_secs(1)));
        let start = Instant::now();
        let err = service.oneshot(request).await.unwrap_err();
        assert!(err.is::<TotalTimeoutElapsed>());
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn attempt_timeout_is_optional() {
        let slow = service_fn(|_: http::Request<()>| async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok::<_, Infallible>(())
        });
        let err = AttemptTimeoutLayer::new(Some(Duration::from_secs(2)))
            .layer(slow)
            .oneshot(http::Request::new(()))
            .await
            .unwrap_err();
        assert!(err.is::<AttemptTimeoutElapsed>());
        let start = Instant::now();
        AttemptTimeoutLayer::new(None)
            .layer(slow)
            .oneshot(http::Request::new(()))
            .await
            .unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }

    /// Regression: `Instant::now() + Duration::MAX` panicked inside `call`.
    #[tokio::test(start_paused = true)]
    async fn huge_timeouts_saturate_instead_of_panicking() {
        let fast = service_fn(|request: http::Request<()>| async move {
            Ok::<_, Infallible>(Deadline::of(&request).map(Deadline::remaining))
        });
        let remaining = SetDeadlineLayer::new(Some(Duration::MAX))
            .layer(fast)
            .oneshot(http::Request::new(()))
            .await
            .unwrap()
            .expect("a deadline");
        assert!(
            remaining > Duration::from_secs(86_400 * 365),
            "{remaining:?}"
        );
        let remaining = AttemptTimeoutLayer::new(Some(Duration::MAX))
            .layer(fast)
            .oneshot(http::Request::new(()))
            .await
            .unwrap();
        assert_eq!(remaining, None);
    }

    #[tokio::test(start_paused = true)]
    async fn passes_responses_through_in_time() {
        let fast = service_fn(|request: http::Request<()>| async move {
            Ok::<_, Infallible>(Deadline::of(&request).unwrap().remaining())
        });
        let remaining = SetDeadlineLayer::new(Some(Duration::from_secs(5)))
            .layer(fast)
            .oneshot(http::Request::new(()))
            .await
            .unwrap();
        assert_eq!(remaining, Duration::from_secs(5));
    }
}
