//! The futures of the Redis limiters.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use ratewise_core::BoxError;
use ratewise_pace::Decision;

type Boxed<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send + 'static>>;

/// The future of an acquire on Redis: one script call, at most the configured timeout.
///
/// Boxed inside (it owns a copy of the key and quotas and awaits the Redis client's futures),
/// one allocation per acquire next to a network round trip.
///
/// # Cancel safety
///
/// Dropping it before completion either leaves Redis unchanged or, if the script already ran,
/// has taken the cost once; never twice.
#[must_use = "futures do nothing unless polled"]
pub struct AcquireFuture {
    inner: Boxed<Decision>,
}

impl AcquireFuture {
    pub(crate) fn new(
        future: impl Future<Output = Result<Decision, BoxError>> + Send + 'static,
    ) -> Self {
        Self {
            inner: Box::pin(future),
        }
    }
}

impl Future for AcquireFuture {
    type Output = Result<Decision, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl fmt::Debug for AcquireFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcquireFuture").finish_non_exhaustive()
    }
}

/// The future of a drain (a shared cooldown) on Redis.
///
/// # Cancel safety
///
/// Dropping it before completion either leaves Redis unchanged or has written the cooldown.
#[must_use = "futures do nothing unless polled"]
pub struct DrainFuture {
    inner: Boxed<()>,
}

impl DrainFuture {
    pub(crate) fn new(future: impl Future<Output = Result<(), BoxError>> + Send + 'static) -> Self {
        Self {
            inner: Box::pin(future),
        }
    }
}

impl Future for DrainFuture {
    type Output = Result<(), BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl fmt::Debug for DrainFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrainFuture").finish_non_exhaustive()
    }
}
