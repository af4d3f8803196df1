//! [`ResponseFuture`] of the [`CircuitBreaker`](crate::CircuitBreaker).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;
use ratewise_core::{BoxError, CircuitOpen};
use tokio::time::Instant;

use crate::classify::{Classify, Outcome};
use crate::state::{KeyState, Ticket};

pin_project! {
    /// The response future of [`CircuitBreaker`](crate::CircuitBreaker).
    ///
    /// # Cancel safety
    ///
    /// Dropping this future before it completes counts nothing: a half-open probe gives its
    /// slot back at once (another caller may probe), and a closed-state call simply leaves no
    /// trace in the window.
    ///
    /// # Errors
    ///
    /// [`CircuitOpen`] when the circuit refused the call (returned on the first poll, without
    /// calling the inner service), or the inner service's error.
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F, C>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, C> {
        Called {
            #[pin]
            future: F,
            guard: Option<CallGuard>,
            classifier: C,
        },
        Rejected {
            error: Option<CircuitOpen>,
        },
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn called(future: F, guard: CallGuard, classifier: C) -> Self {
        ResponseFuture {
            kind: Kind::Called {
                future,
                guard: Some(guard),
                classifier,
            },
        }
    }

    pub(crate) fn rejected(error: CircuitOpen) -> Self {
        ResponseFuture {
            kind: Kind::Rejected { error: Some(error) },
        }
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Called { guard, .. } => f
                .debug_struct("ResponseFuture")
                .field("guard", guard)
                .finish_non_exhaustive(),
            Kind::Rejected { error } => f
                .debug_struct("ResponseFuture")
                .field("rejected", error)
                .finish(),
        }
    }
}

impl<F, C, B, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    C: Classify,
{
    type Output = Result<Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called {
                future,
                guard,
                classifier,
            } => {
                let result = ready!(future.poll(cx)).map_err(Into::into);
                if let Some(guard) = guard.take() {
                    let outcome = match &result {
                        Ok(response) => classifier.classify_response(response),
                        Err(error) => classifier.classify_error(&**error),
                    };
                    guard.finish(outcome);
                }
                Poll::Ready(result)
            }
            KindProj::Rejected { error } => Poll::Ready(Err(match error.take() {
                Some(error) => Box::new(error),
                None => "circuit breaker response future polled after completion".into(),
            })),
        }
    }
}

/// What an admitted call holds: its circuit and ticket. Dropped unfinished, it releases a
/// probe slot without counting.
pub(crate) struct CallGuard {
    state: Arc<KeyState>,
    ticket: Ticket,
    started: Option<Instant>,
}

impl CallGuard {
    pub(crate) fn new(state: Arc<KeyState>, ticket: Ticket, started: Option<Instant>) -> Self {
        CallGuard {
            state,
            ticket,
            started,
        }
    }

    fn finish(mut self, outcome: Outcome) {
        let ticket = std::mem::replace(&mut self.ticket, Ticket::Untracked);
        if let Ticket::Untracked = ticket {
            return;
        }
        let now = self.started.map(|_| Instant::now());
        let slow = match (self.started, now, self.state.policy().settings.slow_call) {
            (Some(started), Some(now), Some(slow)) => {
                now.saturating_duration_since(started) >= slow.threshold
            }
            _ => false,
        };
        self.state.complete(ticket, outcome, slow, now);
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        let ticket = std::mem::replace(&mut self.ticket, Ticket::Untracked);
        self.state.release(ticket);
    }
}

impl fmt::Debug for CallGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallGuard")
            .field("key", self.state.key())
            .field("ticket", &self.ticket)
            .finish()
    }
}
