//! [`ResponseFuture`] of [`Batch`](crate::Batch).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use ratewise_core::BoxError;
use tokio::sync::oneshot;

use crate::error::UpstreamTaskLost;

pub(crate) type ItemResult<V> = Result<Option<V>, BoxError>;

pin_project! {
    /// Response future of [`Batch`](crate::Batch): the caller's own item.
    ///
    /// # Cancel safety
    ///
    /// Dropping it withdraws only this caller: its batch is still sent for the others (a key
    /// whose every caller left before the batch was sent is not requested).
    pub struct ResponseFuture<V> {
        #[pin]
        state: State<V>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<V> {
        Waiting { #[pin] rx: oneshot::Receiver<ItemResult<V>> },
        Failed { error: Option<BoxError> },
    }
}

impl<V> ResponseFuture<V> {
    pub(crate) fn waiting(rx: oneshot::Receiver<ItemResult<V>>) -> Self {
        ResponseFuture {
            state: State::Waiting { rx },
        }
    }

    pub(crate) fn failed(error: BoxError) -> Self {
        ResponseFuture {
            state: State::Failed { error: Some(error) },
        }
    }
}

impl<V> fmt::Debug for ResponseFuture<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<V> Future for ResponseFuture<V> {
    type Output = ItemResult<V>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Waiting { rx } => rx
                .poll(cx)
                .map(|r| r.unwrap_or_else(|_| Err(Box::new(UpstreamTaskLost)))),
            StateProj::Failed { error } => Poll::Ready(Err(error
                .take()
                .unwrap_or_else(|| Box::new(UpstreamTaskLost)))),
        }
    }
}
