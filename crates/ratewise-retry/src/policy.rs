//! [`RetryPolicy`]: the `tower::retry::Policy` for HTTP that [`RetryLayer`](crate::RetryLayer)
//! plugs into tower's `Retry`.

use std::any::Any;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, Method, Request, Response, StatusCode};
use ratewise_core::metric_names::{
    RETRIES_TOTAL, RETRY_ATTEMPTS_TOTAL, RETRY_BUDGET_EXHAUSTED_TOTAL, RETRY_GIVEN_UP_TOTAL,
};
use ratewise_core::{BoxError, Deadline};
use tokio::time::{Instant, Sleep};
use tower::retry::Policy;

use crate::backoff::Backoff;
use crate::budget::{RetryBudget, RetryCost};
use crate::classify::{ClassifyError, ErrorClass, proves_not_sent};
use crate::replay::ReplayBody;

/// A per-request opt-in: the caller asserts that this request is safe to repeat even though
/// its method is not idempotent (a POST that the server deduplicates by some other means).
///
/// ```
/// let mut request = http::Request::post("https://api.example.com/charges").body(()).unwrap();
/// request.extensions_mut().insert(ratewise_retry::Idempotent);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Idempotent;

/// The responses [`RetryPolicy`] can inspect: `http::Response<B>` for any body `B`.
///
/// Sealed; it exists so that the services and futures of this crate can name the response
/// type without an extra type parameter for its body.
pub trait HttpResponse: sealed::Sealed {
    /// The status code.
    fn status(&self) -> StatusCode;
    /// The headers.
    fn headers(&self) -> &HeaderMap;
}

impl<B> HttpResponse for Response<B> {
    fn status(&self) -> StatusCode {
        Response::status(self)
    }
    fn headers(&self) -> &HeaderMap {
        Response::headers(self)
    }
}

mod sealed {
    pub trait Sealed {}
    impl<B> Sealed for http::Response<B> {}
}

/// The retryable statuses, as a bitset over 0..640.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct StatusSet([u64; 10]);

impl StatusSet {
    pub(crate) const fn empty() -> Self {
        StatusSet([0; 10])
    }

    /// Adds `status`; codes of 640 and above (valid for `StatusCode`, never retryable here)
    /// are ignored rather than indexing out of the set.
    pub(crate) fn insert(&mut self, status: StatusCode) {
        let code = status.as_u16() as usize;
        if code < 640 {
            self.0[code / 64] |= 1 << (code % 64);
        }
    }

    pub(crate) fn contains(&self, status: StatusCode) -> bool {
        let code = status.as_u16() as usize;
        code < 640 && self.0[code / 64] & (1 << (code % 64)) != 0
    }

    fn codes(&self) -> impl Iterator<Item = u16> + '_ {
        (0u16..640).filter(|&code| self.0[code as usize / 64] & (1 << (code % 64)) != 0)
    }
}

impl fmt::Debug for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.codes()).finish()
    }
}

/// The configuration and the state shared by every clone of a layer, its services and their
/// policies.
pub(crate) struct Shared {
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) statuses: StatusSet,
    pub(crate) idempotency_header: HeaderName,
    pub(crate) max_wait: Duration,
    pub(crate) server_jitter: Duration,
    pub(crate) total_timeout: Option<Duration>,
    pub(crate) classify: Box<dyn ClassifyError>,
    /// Whether requests that are not idempotent are copied, so that an attempt that provably
    /// never left can be sent again.
    pub(crate) retry_unsent: bool,
    pub(crate) budget: RetryBudget,
    pub(crate) rng: Mutex<Box<dyn rand::Rng + Send>>,
    /// The attempts counter, registered with the `metrics` recorder at the first attempt and
    /// then held: the facade's per-call registration costs more than the rest of the
    /// no-retry path.
    pub(crate) attempts_counter: OnceLock<metrics::Counter>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryConfig")
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("statuses", &self.statuses)
            .field("idempotency_header", &self.idempotency_header)
            .field("max_wait", &self.max_wait)
            .field("server_jitter", &self.server_jitter)
            .field("total_timeout", &self.total_timeout)
            .field("retry_unsent", &self.retry_unsent)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Whether the request may be sent more than once: an idempotent method, an
    /// idempotency-key header, or the [`Idempotent`] opt-in.
    pub(crate) fn is_idempotent<B>(&self, request: &Request<B>) -> bool {
        matches!(
            *request.method(),
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::PUT
                | Method::DELETE
                | Method::TRACE
        ) || request.headers().contains_key(&self.idempotency_header)
            || request.extensions().get::<Idempotent>().is_some()
    }

    /// Whether `response` is a failure worth retrying, and if so the delay the server asked
    /// for (`Some(None)`: retryable, no server delay).
    ///
    /// A response whose status is in the retryable set is retryable. So is a 403 that the
    /// header parser calls a rate-limit refusal (`Retry-After`, or an exhausted policy such
    /// as GitHub's `x-ratelimit-remaining: 0` with its reset): it is treated like a 429, so
    /// it is retried exactly when 429 is in the set. Any other 403 (an authorization error,
    /// even one that carries a non-exhausted GitHub `x-ratelimit-*`) is final. The headers of
    /// a 403 are only parsed when 429 is retryable.
    pub(crate) fn retryable_failure<R: HttpResponse>(
        &self,
        response: &R,
    ) -> Option<Option<Duration>> {
        let status = response.status();
        if self.statuses.contains(status) {
            return Some(server_delay(response));
        }
        if status == StatusCode::FORBIDDEN && self.statuses.contains(StatusCode::TOO_MANY_REQUESTS)
        {
            let info = ratewise_headers::parse(status, response.headers(), SystemTime::now());
            if info.is_rate_limited() {
                return Some(unclamped(&info, info.wait()));
            }
        }
        None
    }

    /// Whether the layer keeps a copy of `request` to send it again: always for an idempotent
    /// request, and for any other one when it may be re-sent after an attempt that never
    /// left (never when `max_attempts` is 1).
    pub(crate) fn copies<B>(&self, request: &Request<B>) -> bool {
        self.copies_every_request() || (self.max_attempts > 1 && self.is_idempotent(request))
    }

    /// Whether every request is copied, whatever its method: requests that are not idempotent
    /// too, since they may be re-sent after an attempt that never left.
    pub(crate) fn copies_every_request(&self) -> bool {
        self.max_attempts > 1 && self.retry_unsent
    }

    /// A uniform number in `[0, 1)` from the injected generator.
    fn unit(&self) -> f64 {
        let bits = self
            .rng
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .next_u64();
        (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Why a retry happened; the `reason` label of
/// [`RETRIES_TOTAL`](ratewise_core::metric_names::RETRIES_TOTAL).
#[derive(Clone, Copy, Debug)]
enum Reason {
    Status(StatusCode),
    Transport(ErrorClass),
}

/// Where the delay came from; the `delay_source` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DelaySource {
    Backoff,
    RetryAfter,
}

impl DelaySource {
    fn label(self) -> &'static str {
        match self {
            DelaySource::Backoff => "backoff",
            DelaySource::RetryAfter => "retry_after",
        }
    }
}

/// The state of one request session (the first attempt and its retries).
#[derive(Clone, Copy, Debug)]
struct Session {
    /// Attempts sent so far, as counted when each completes.
    attempts: u32,
    previous_delay: Duration,
    deadline: Option<Instant>,
    /// Tokens the session spent on retries (token quota), refunded on success.
    spent_tokens: u32,
}

impl Session {
    const fn new() -> Self {
        Session {
            attempts: 0,
            previous_delay: Duration::ZERO,
            deadline: None,
            spent_tokens: 0,
        }
    }
}

/// The HTTP retry policy: which results to retry, how long to wait, and whether the budget
/// allows it. [`RetryLayer`](crate::RetryLayer) plugs it into `tower::retry::Retry`; it can
/// also be used with tower's `Retry` directly ([`RetryLayer::policy`](crate::RetryLayer::policy))
/// over a service whose error type is [`BoxError`].
///
/// A retry happens when all of these hold, checked in this order:
///
/// 1. the response's status is retryable (408, 429, 500, 502, 503, 504 by default), or it is
///    a 403 that the headers mark as a rate-limit refusal (GitHub's primary and secondary
///    limits: `Retry-After`, or `x-ratelimit-remaining: 0` with a reset), which is treated
///    like a 429 (retried when 429 is retryable); or the error is classified as retryable by
///    the [`ClassifyError`]. A plain 403 (an authorization error) is never retried;
/// 2. the request is idempotent (GET, HEAD, OPTIONS, PUT, DELETE, TRACE; other methods only
///    with the idempotency-key header or the [`Idempotent`] extension), or the attempt failed
///    with an error that proves the request never left (the classifier and the built-in
///    rules of [`SafeTransportErrors`](crate::SafeTransportErrors) both call it
///    [`ErrorClass::NotSent`]; see
///    [`RetryLayerBuilder::retry_unsent`](crate::RetryLayerBuilder::retry_unsent));
/// 3. fewer than `max_attempts` attempts were sent;
/// 4. the body can be replayed (a `B: Clone` body always can; a [`ReplayBody`] under its
///    cap, or whatever its size when the failed attempt read none of it);
/// 5. the server's delay (`retry-after-ms`, `Retry-After`, and on a rate-limit refusal the
///    reset of an exhausted policy: `RateLimit` `t=`, `x-ratelimit-reset`), if any, is within
///    `max_wait`;
/// 6. the delay does not end past the request's [`Deadline`] (or the default total timeout);
/// 7. the retry budget allows it.
///
/// Otherwise the last response is returned as it is, and a transport error is returned as
/// that error.
///
/// # Clone
///
/// tower clones the policy once per request session; the configuration, the budget and the
/// random generator are behind one `Arc`, so every clone shares them.
#[derive(Clone)]
pub struct RetryPolicy {
    shared: Arc<Shared>,
    session: Session,
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("config", &self.shared)
            .field("session", &self.session)
            .finish()
    }
}

impl RetryPolicy {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        RetryPolicy {
            shared,
            session: Session::new(),
        }
    }

    fn give_up(&self, reason: &'static str, attempts: u32) {
        metrics::counter!(RETRY_GIVEN_UP_TOTAL, "reason" => reason).increment(1);
        tracing::debug!(
            target: "ratewise_retry",
            attempt = attempts,
            reason,
            "not retrying; returning the last result"
        );
    }

    /// The decision after an attempt failed with `reason`; `server_delay` is what the server
    /// asked for, if anything.
    fn schedule<B: 'static>(
        &mut self,
        request: &Request<B>,
        reason: Reason,
        cost: RetryCost,
        server_delay: Option<Duration>,
    ) -> Option<Pin<Box<Sleep>>> {
        let shared = &*self.shared;
        let attempts = self.session.attempts;
        if attempts >= shared.max_attempts {
            self.give_up("attempts", attempts);
            return None;
        }
        if let Some(body) = (request.body() as &dyn Any).downcast_ref::<ReplayBody>()
            && !body.is_replayable()
        {
            self.give_up("body_not_replayable", attempts);
            return None;
        }
        let (delay, source) = match server_delay {
            Some(wait) if wait > shared.max_wait || wait == Duration::MAX => {
                self.give_up("wait_too_long", attempts);
                return None;
            }
            Some(wait) => {
                let jitter = if shared.server_jitter.is_zero() {
                    Duration::ZERO
                } else {
                    shared.server_jitter.mul_f64(shared.unit())
                };
                (
                    ceil_to_millis(wait).saturating_add(jitter),
                    DelaySource::RetryAfter,
                )
            }
            None => {
                let delay =
                    shared
                        .backoff
                        .delay(attempts, self.session.previous_delay, shared.unit());
                (delay, DelaySource::Backoff)
            }
        };
        let now = Instant::now();
        let Some(at) = now.checked_add(delay) else {
            // Only a cap near Duration::MAX gets here: a wait past the end of time.
            self.give_up("wait_too_long", attempts);
            return None;
        };
        if self.session.deadline.is_some_and(|deadline| at > deadline) {
            self.give_up("deadline", attempts);
            return None;
        }
        let Some(tokens) = shared.budget.withdraw(cost) else {
            metrics::counter!(RETRY_BUDGET_EXHAUSTED_TOTAL).increment(1);
            tracing::debug!(
                target: "ratewise_retry",
                attempt = attempts,
                "retry budget spent; returning the last result"
            );
            return None;
        };
        self.session.spent_tokens = self.session.spent_tokens.saturating_add(tokens);
        self.session.previous_delay = delay;

        let (reason_label, status) = match reason {
            Reason::Status(status) => ("status", Some(status.as_u16())),
            Reason::Transport(_) => ("transport", None),
        };
        metrics::counter!(RETRIES_TOTAL, "reason" => reason_label, "delay_source" => source.label())
            .increment(1);
        tracing::debug!(
            target: "ratewise_retry",
            attempt = attempts,
            reason = reason_label,
            status,
            error_class = ?match reason { Reason::Transport(class) => Some(class), Reason::Status(_) => None },
            delay_ms = delay.as_millis() as u64,
            delay_source = source.label(),
            "retrying"
        );
        Some(Box::pin(tokio::time::sleep_until(at)))
    }
}

/// Rounds up to whole milliseconds (tokio's timer resolution), so a server-directed wait is
/// never cut short.
fn ceil_to_millis(wait: Duration) -> Duration {
    let sub_milli = wait.subsec_nanos() % 1_000_000;
    if sub_milli == 0 {
        wait
    } else {
        wait.saturating_add(Duration::from_nanos(u64::from(1_000_000 - sub_milli)))
    }
}

/// The server's requested delay: `retry-after-ms`, `Retry-After` (seconds or an HTTP-date read
/// relative to `Date`), or on a rate-limit refusal (429, or a 403 the parser calls rate-limited)
/// the reset of an exhausted policy (draft `RateLimit` `t=`, GitHub `x-ratelimit-reset`).
fn server_delay<R: HttpResponse>(response: &R) -> Option<Duration> {
    let info = ratewise_headers::parse(response.status(), response.headers(), SystemTime::now());
    let wait = if info.is_rate_limited() {
        info.wait()
    } else {
        info.retry_after()
    };
    unclamped(&info, wait)
}

/// The parser clamps absurd durations (`Retry-After: 99999999`) to its maximum (one day).
/// Waiting that clamped value would retry long before the instant the server named, so a
/// clamped wait is reported as unbounded: beyond any `max_wait`, it is never waited for.
fn unclamped(info: &ratewise_headers::RateLimitInfo, wait: Option<Duration>) -> Option<Duration> {
    match wait {
        Some(wait) if info.is_clamped() && wait >= ratewise_headers::DEFAULT_MAX_DURATION => {
            tracing::debug!(
                target: "ratewise_retry",
                "the server's delay exceeds a day; treating it as too long to wait"
            );
            Some(Duration::MAX)
        }
        other => other,
    }
}

impl<B, Res> Policy<Request<B>, Res, BoxError> for RetryPolicy
where
    B: Clone + 'static,
    Res: HttpResponse,
{
    /// Boxed so that the response future stays small on the path that never retries; the
    /// allocation happens only when a retry is scheduled.
    type Future = Pin<Box<Sleep>>;

    fn retry(
        &mut self,
        request: &mut Request<B>,
        result: &mut Result<Res, BoxError>,
    ) -> Option<Pin<Box<Sleep>>> {
        self.session.attempts = self.session.attempts.saturating_add(1);
        match result {
            Ok(response) => {
                let Some(server_delay) = self.shared.retryable_failure(response) else {
                    self.shared.budget.on_success(self.session.spent_tokens);
                    return None;
                };
                // Whether the request is idempotent is asked again here, on the failure path
                // only, rather than kept in the session (copied with the policy per request).
                if !self.shared.is_idempotent(request) {
                    // The server answered, so it saw the request: never again.
                    self.give_up("not_idempotent", self.session.attempts);
                    return None;
                }
                self.schedule(
                    request,
                    Reason::Status(response.status()),
                    RetryCost::Normal,
                    server_delay,
                )
            }
            Err(error) => {
                let class = self.shared.classify.classify(&**error);
                let cost = match class {
                    ErrorClass::Fatal => return None,
                    ErrorClass::Timeout => RetryCost::Timeout,
                    ErrorClass::NotSent | ErrorClass::ConnectionLost => RetryCost::Normal,
                };
                // A request that is not idempotent is sent again only when the attempt never
                // left: the classifier says so, and so do the built-in rules (a custom
                // classifier alone cannot make the layer repeat such a request).
                let repeatable = self.shared.is_idempotent(request)
                    || (class == ErrorClass::NotSent && proves_not_sent(&**error));
                if !repeatable {
                    self.give_up("not_idempotent", self.session.attempts);
                    return None;
                }
                self.schedule(request, Reason::Transport(class), cost, None)
            }
        }
    }

    fn clone_request(&mut self, request: &Request<B>) -> Option<Request<B>> {
        self.shared
            .attempts_counter
            .get_or_init(|| metrics::counter!(RETRY_ATTEMPTS_TOTAL))
            .increment(1);
        if self.session.attempts == 0 {
            // A new session. tower calls this on the service's own policy and then clones the
            // policy into the response future, so every session field is (re)set here.
            let default_deadline = self
                .shared
                .total_timeout
                .and_then(|timeout| Instant::now().checked_add(timeout));
            let deadline = match (
                Deadline::of(request).map(Deadline::instant),
                default_deadline,
            ) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            self.session = Session {
                deadline,
                ..Session::new()
            };
            self.shared.budget.deposit();
            if !self.shared.copies(request) {
                // Not cloned, so never retried: the request is sent exactly once.
                return None;
            }
        }
        Some(request.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_set_and_rounding() {
        let mut set = StatusSet::empty();
        set.insert(StatusCode::TOO_MANY_REQUESTS);
        set.insert(StatusCode::from_u16(599).unwrap());
        assert!(set.contains(StatusCode::TOO_MANY_REQUESTS));
        assert!(set.contains(StatusCode::from_u16(599).unwrap()));
        assert!(!set.contains(StatusCode::OK));
        // A server may send any code up to 999: never an out-of-bounds index.
        let odd = StatusCode::from_u16(999).unwrap();
        set.insert(odd);
        assert!(!set.contains(odd));
        assert_eq!(format!("{set:?}"), "{429, 599}");
        assert_eq!(
            ceil_to_millis(Duration::from_micros(1_500)),
            Duration::from_millis(2)
        );
        assert_eq!(
            ceil_to_millis(Duration::from_secs(7)),
            Duration::from_secs(7)
        );
    }
}
