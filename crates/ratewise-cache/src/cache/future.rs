//! [`ResponseFuture`] of [`Cache`](crate::Cache).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use pin_project_lite::pin_project;
use ratewise_core::BoxError;

use crate::cache::body::CacheBody;

type Output<B> = Result<Response<CacheBody<B>>, BoxError>;
type BoxedOutput<B> = Pin<Box<dyn Future<Output = Output<B>> + Send>>;

pin_project! {
    /// Response future of [`Cache`](crate::Cache).
    ///
    /// A cache hit (and a stale response served while revalidating) is answered without
    /// allocating a future; other paths (a miss waiting on its upstream task, a follower, a
    /// pass-through) box one future, which is negligible next to the upstream request.
    ///
    /// # Cancel safety
    ///
    /// Dropping it drops only this caller's interest: see [`Cache`](crate::Cache#cancel-safety).
    pub struct ResponseFuture<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Ready { output: Option<Output<B>> },
        Boxed { future: BoxedOutput<B> },
    }
}

impl<B> ResponseFuture<B> {
    pub(crate) fn ready(output: Output<B>) -> Self {
        ResponseFuture {
            kind: Kind::Ready {
                output: Some(output),
            },
        }
    }

    pub(crate) fn boxed(future: impl Future<Output = Output<B>> + Send + 'static) -> Self {
        ResponseFuture {
            kind: Kind::Boxed {
                future: Box::pin(future),
            },
        }
    }
}

impl<B> fmt::Debug for ResponseFuture<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Ready { .. } => "Ready",
            Kind::Boxed { .. } => "Boxed",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}

impl<B> Future for ResponseFuture<B> {
    type Output = Output<B>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Ready { output } => Poll::Ready(
                output
                    .take()
                    .expect("ResponseFuture polled after completion"),
            ),
            KindProj::Boxed { future } => future.as_mut().poll(cx),
        }
    }
}
