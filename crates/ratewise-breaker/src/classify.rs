//! Failure classification: which responses and errors count against the circuit.

use std::error::Error;

use http::{Response, StatusCode};
use ratewise_core::find_refusal;
use tower_http::classify::{ClassifiedResponse, ClassifyResponse};

/// How one call counts for the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The upstream is healthy (whatever the status: a 404 or a 429 is a healthy answer).
    Success,
    /// The upstream failed: counts against the failure rate, re-opens a half-open circuit.
    Failure,
    /// Neither: the call did not reach the upstream (a refusal of a layer below, such as
    /// pacing's `PaceWaitTooLong`). A probe classified so gives its slot back.
    Ignored,
}

/// Classifies the result of a call for the breaker.
///
/// [`DefaultClassifier`] suits HTTP APIs; [`TowerHttpClassifier`] adapts any `tower-http`
/// [`ClassifyResponse`]. Implementations are cloned into every response future, so keep them
/// cheap to clone (put large state behind an `Arc`).
pub trait Classify: Clone + Send + Sync + 'static {
    /// How a response counts.
    fn classify_response<B>(&self, response: &Response<B>) -> Outcome;

    /// How an error of the inner service counts.
    fn classify_error(&self, error: &(dyn Error + 'static)) -> Outcome;
}

/// The default classification: 5xx responses and errors of the inner service (timeouts,
/// connection errors) are failures; 429 is not a failure by default (the server is healthy
/// and asking us to slow down: that is the adaptation layer's signal); refusals of ratewise
/// layers below the breaker (found with [`ratewise_core::find_refusal`]) are
/// [`Outcome::Ignored`], since no request reached the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DefaultClassifier {
    too_many_requests_is_failure: bool,
}

impl DefaultClassifier {
    /// 5xx and errors are failures; 429 is a success.
    pub const fn new() -> Self {
        DefaultClassifier {
            too_many_requests_is_failure: false,
        }
    }

    /// Whether a `429 Too Many Requests` counts as a failure (default: false).
    pub const fn too_many_requests_is_failure(mut self, yes: bool) -> Self {
        self.too_many_requests_is_failure = yes;
        self
    }
}

impl Classify for DefaultClassifier {
    #[inline]
    fn classify_response<B>(&self, response: &Response<B>) -> Outcome {
        let status = response.status();
        if status.is_server_error()
            || (status == StatusCode::TOO_MANY_REQUESTS && self.too_many_requests_is_failure)
        {
            Outcome::Failure
        } else {
            Outcome::Success
        }
    }

    fn classify_error(&self, error: &(dyn Error + 'static)) -> Outcome {
        classify_error_default(error)
    }
}

fn classify_error_default(error: &(dyn Error + 'static)) -> Outcome {
    if find_refusal(error).is_some() {
        Outcome::Ignored
    } else {
        Outcome::Failure
    }
}

/// Adapts a `tower-http` [`ClassifyResponse`] (such as
/// [`ServerErrorsAsFailures`](tower_http::classify::ServerErrorsAsFailures) or
/// [`StatusInRangeAsFailures`](tower_http::classify::StatusInRangeAsFailures)) to the breaker.
///
/// - A response the classifier marks `Ready(Err(_))` is a [`Outcome::Failure`], `Ready(Ok(()))`
///   a [`Outcome::Success`].
/// - A response that needs the end of the body (`RequiresEos`, as gRPC's trailers) counts as a
///   success: the breaker decides when the response head arrives and does not wrap bodies.
/// - Errors are failures, except ratewise refusals (ignored). `ClassifyResponse::classify_error`
///   is not called: its failure classes carry an allocated `String` the breaker has no use for.
///
/// ```
/// use ratewise_breaker::{Classify, Outcome, TowerHttpClassifier};
/// use tower_http::classify::StatusInRangeAsFailures;
///
/// let classifier = TowerHttpClassifier::new(StatusInRangeAsFailures::new(500..=504));
/// let response = http::Response::builder().status(503).body(()).unwrap();
/// assert_eq!(classifier.classify_response(&response), Outcome::Failure);
/// ```
#[derive(Clone, Debug, Default)]
pub struct TowerHttpClassifier<C> {
    classifier: C,
}

impl<C> TowerHttpClassifier<C> {
    /// Wraps a `tower-http` classifier.
    pub const fn new(classifier: C) -> Self {
        TowerHttpClassifier { classifier }
    }
}

impl<C> Classify for TowerHttpClassifier<C>
where
    C: ClassifyResponse + Clone + Send + Sync + 'static,
{
    fn classify_response<B>(&self, response: &Response<B>) -> Outcome {
        match self.classifier.clone().classify_response(response) {
            ClassifiedResponse::Ready(Ok(())) | ClassifiedResponse::RequiresEos(_) => {
                Outcome::Success
            }
            ClassifiedResponse::Ready(Err(_)) => Outcome::Failure,
        }
    }

    fn classify_error(&self, error: &(dyn Error + 'static)) -> Outcome {
        classify_error_default(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratewise_core::{BoxError, CircuitOpen, Key, PaceWaitTooLong};
    use std::time::Duration;
    use tower_http::classify::{ServerErrorsAsFailures, StatusInRangeAsFailures};

    fn response(status: u16) -> Response<()> {
        Response::builder().status(status).body(()).unwrap()
    }

    #[test]
    fn default_counts_5xx_and_errors_not_429() {
        let c = DefaultClassifier::new();
        assert_eq!(c.classify_response(&response(200)), Outcome::Success);
        assert_eq!(c.classify_response(&response(404)), Outcome::Success);
        assert_eq!(c.classify_response(&response(429)), Outcome::Success);
        assert_eq!(c.classify_response(&response(500)), Outcome::Failure);
        assert_eq!(c.classify_response(&response(503)), Outcome::Failure);
        let io: BoxError = Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(c.classify_error(&*io), Outcome::Failure);
        let refused: BoxError =
            Box::new(PaceWaitTooLong::new(Key::new("k"), Duration::from_secs(1)));
        assert_eq!(c.classify_error(&*refused), Outcome::Ignored);
        let open: BoxError = Box::new(CircuitOpen::new(Key::new("k"), Duration::from_secs(1)));
        assert_eq!(c.classify_error(&*open), Outcome::Ignored);

        let strict = DefaultClassifier::new().too_many_requests_is_failure(true);
        assert_eq!(strict.classify_response(&response(429)), Outcome::Failure);
    }

    #[test]
    fn tower_http_classifiers_adapt() {
        let c = TowerHttpClassifier::new(ServerErrorsAsFailures::new());
        assert_eq!(c.classify_response(&response(502)), Outcome::Failure);
        assert_eq!(c.classify_response(&response(429)), Outcome::Success);
        let c = TowerHttpClassifier::new(StatusInRangeAsFailures::new(429..=599));
        assert_eq!(c.classify_response(&response(429)), Outcome::Failure);
        assert_eq!(c.classify_response(&response(404)), Outcome::Success);
        let err: BoxError = "timed out".into();
        assert_eq!(c.classify_error(&*err), Outcome::Failure);
    }
}
