//! [`ResponseFuture`], the future of [`Adapt`](crate::Adapt).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::Response;
use ratewise_core::{AdaptWaitTooLong, BoxError, Deadline, Key, metric_names};
use tokio::sync::futures::OwnedNotified;
use tokio::time::{Instant, Sleep, sleep_until};
use tower_service::Service;

use crate::observe::{Observation, cached_age};
use crate::state::{KeyState, Shared, Wait, WaitReason, key_label};

pin_project_lite::pin_project! {
    /// The response future of [`Adapt`](crate::Adapt): waits until the request's key may send
    /// (a cooldown, an exhausted window, slow start, the learned rate), sends the request, and
    /// learns from the response.
    ///
    /// # Errors
    ///
    /// [`AdaptWaitTooLong`] when the wait would pass `max_wait` or the request's [`Deadline`];
    /// otherwise the inner service's error.
    ///
    /// # Cancel safety
    ///
    /// Dropping this future at any point releases what it holds: a waiting future holds no
    /// reservation (only its place among the key's waiters, which it leaves); an in-flight one
    /// gives its in-flight slot back (so slow start never stalls on a dropped request) and wakes
    /// the key's waiters. The unit of quota it reserved stays spent: the request may already
    /// have reached the server (a timeout above this layer, or an inner service that sends in
    /// `call`), and returning the unit could send one request more than the server allows. A
    /// later response of the key corrects the estimate when the request never arrived.
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<F, S, Req> {
        #[pin]
        state: State<F, S, Req>,
        shared: Arc<Shared>,
        route: Arc<KeyState>,
        segment: u64,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F, S, Req> {
        Waiting {
            service: Option<S>,
            request: Option<Req>,
            key: Key,
            deadline: Option<Deadline>,
            started: Instant,
            notify_since: Option<Instant>,
            reason: WaitReason,
            waiter: Option<WaiterGuard>,
            #[pin]
            sleep: Option<Sleep>,
            #[pin]
            notified: Option<OwnedNotified>,
        },
        InFlight {
            #[pin]
            future: F,
            reservation: Reservation,
        },
        Done,
    }
}

impl<F, S, Req> fmt::Debug for ResponseFuture<F, S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Waiting { .. } => "waiting",
            State::InFlight { .. } => "in_flight",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("key", self.route.key())
            .field("state", &state)
            .finish()
    }
}

impl<F, S, Req> ResponseFuture<F, S, Req> {
    pub(crate) fn in_flight(
        future: F,
        shared: Arc<Shared>,
        route: Arc<KeyState>,
        segment: u64,
        reserved_on: Arc<KeyState>,
        seq: u64,
    ) -> Self {
        ResponseFuture {
            state: State::InFlight {
                future,
                reservation: Reservation {
                    state: Some(reserved_on),
                    seq,
                },
            },
            shared,
            route,
            segment,
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn waiting(
        service: S,
        request: Req,
        shared: Arc<Shared>,
        route: Arc<KeyState>,
        segment: u64,
        key: Key,
        deadline: Option<Deadline>,
        started: Instant,
        wait: Wait,
    ) -> Self {
        ResponseFuture {
            state: State::Waiting {
                service: Some(service),
                request: Some(request),
                key,
                deadline,
                started,
                notify_since: None,
                reason: wait.reason,
                waiter: None,
                sleep: None,
                notified: None,
            },
            shared,
            route,
            segment,
        }
    }
}

impl<F, S, ReqBody, ResBody, E> Future for ResponseFuture<F, S, http::Request<ReqBody>>
where
    S: Service<http::Request<ReqBody>, Future = F, Response = Response<ResBody>, Error = E>,
    F: Future<Output = Result<Response<ResBody>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<ResBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Waiting {
                    service,
                    request,
                    key,
                    deadline,
                    started,
                    notify_since,
                    reason,
                    waiter,
                    mut sleep,
                    mut notified,
                } => {
                    let state = this.route.resolve(*this.segment);
                    if waiter
                        .as_ref()
                        .is_none_or(|guard| !Arc::ptr_eq(&guard.state, &state))
                    {
                        *waiter = Some(WaiterGuard::new(Arc::clone(&state)));
                        notified.set(None);
                    }
                    // Created before the check, so a change between the check and the
                    // registration of our waker still wakes us.
                    if notified.is_none() {
                        notified.set(Some(state.notified()));
                    }
                    let now = Instant::now();
                    match state.try_reserve(this.shared, now) {
                        Ok(seq) => {
                            let waited = now.saturating_duration_since(*started);
                            record_wait(key, *reason, waited);
                            let (Some(mut service), Some(request)) =
                                (service.take(), request.take())
                            else {
                                unreachable!("a waiting future holds its service and request")
                            };
                            *waiter = None;
                            let future = service.call(request);
                            this.state.set(State::InFlight {
                                future,
                                reservation: Reservation {
                                    state: Some(state),
                                    seq,
                                },
                            });
                        }
                        Err(wait) => {
                            *reason = wait.reason;
                            // Each wait the server imposes (a cooldown, a reset) is capped by
                            // max_wait from now; a wait for a response (slow start) by max_wait
                            // from when it began, and it ends early when the claim of the
                            // requests in flight expires. The deadline caps everything.
                            let max_wait = this.shared.config.max_wait;
                            let for_response = wait.reason == WaitReason::SlowStart;
                            let mut limit = if for_response {
                                *notify_since.get_or_insert(now) + max_wait
                            } else {
                                *notify_since = None;
                                now + max_wait
                            };
                            if let Some(deadline) = deadline {
                                limit = limit.min(deadline.instant());
                            }
                            let refusal = match wait.until {
                                _ if for_response && now >= limit => {
                                    Some(wait.until.map_or(Duration::ZERO, |until| {
                                        until.saturating_duration_since(now)
                                    }))
                                }
                                Some(until) if !for_response && until > limit => Some(until - now),
                                _ => None,
                            };
                            if let Some(retry_after) = refusal {
                                let error = refuse(key, *reason, retry_after);
                                this.state.set(State::Done);
                                return Poll::Ready(Err(error));
                            }
                            let target = wait.until.map_or(limit, |until| until.min(limit));
                            match sleep.as_mut().as_pin_mut() {
                                Some(timer) => {
                                    if timer.deadline() != target {
                                        timer.reset(target);
                                    }
                                }
                                None => sleep.set(Some(sleep_until(target))),
                            }
                            if let Some(notification) = notified.as_mut().as_pin_mut()
                                && notification.poll(cx).is_ready()
                            {
                                notified.set(None);
                                continue;
                            }
                            if let Some(timer) = sleep.as_mut().as_pin_mut()
                                && timer.poll(cx).is_ready()
                            {
                                continue;
                            }
                            return Poll::Pending;
                        }
                    }
                }
                StateProj::InFlight {
                    future,
                    reservation,
                } => {
                    let result = ready!(future.poll(cx));
                    let (reserved_on, seq) = reservation.take();
                    if let Some(reserved_on) = reserved_on {
                        match &result {
                            Ok(response) => learn(
                                this.shared,
                                this.route,
                                *this.segment,
                                &reserved_on,
                                seq,
                                response,
                            ),
                            Err(_) => reserved_on.release(),
                        }
                    }
                    this.state.set(State::Done);
                    return Poll::Ready(result.map_err(Into::into));
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            }
        }
    }
}

/// Learns from a response: parse its headers, update the key (and its server bucket).
fn learn<B>(
    shared: &Shared,
    route: &Arc<KeyState>,
    segment: u64,
    reserved_on: &Arc<KeyState>,
    seq: u64,
    response: &Response<B>,
) {
    let headers = response.headers();
    let now = Instant::now();
    if let Some(age) = cached_age(headers) {
        // Its counts describe the past; a refusal's pause may still run (a CDN serving a
        // stored 429): keep what is left of it.
        let info = ratewise_headers::parse(response.status(), headers, shared.wall_clock(now));
        match Observation::from_info(&info, route.key()).cached_refusal(age) {
            Some((rest, global)) => {
                // Only the pause: the response never reached the origin, so it must not end
                // slow start, re-learn policies or cut the learned rate.
                tracing::debug!(key = %route.key(), age = ?age, rest = ?rest, "adapt: cached refusal; the rest of its pause kept");
                reserved_on.release();
                reserved_on.pause(now + rest, global, shared, now);
            }
            None => {
                tracing::trace!(key = %route.key(), "adapt: cached response (Age > 0) ignored");
                reserved_on.release();
            }
        }
        return;
    }
    if !ratewise_headers::may_describe_limits(response.status(), headers) {
        // Nothing for the parser to find: learn from an empty observation without it.
        let nothing = Observation::default();
        route.complete(reserved_on, seq, &nothing, None, segment, shared, now);
        return;
    }
    let info = ratewise_headers::parse(response.status(), headers, shared.wall_clock(now));
    let observation = Observation::from_info(&info, route.key());
    route.complete(
        reserved_on,
        seq,
        &observation,
        info.bucket(),
        segment,
        shared,
        now,
    );
}

fn record_wait(key: &Key, reason: WaitReason, waited: Duration) {
    tracing::debug!(%key, reason = reason.as_str(), waited = ?waited, "adapt: request waited");
    metrics::histogram!(
        metric_names::ADAPT_WAIT_SECONDS,
        "key" => key_label(key),
        "reason" => reason.as_str()
    )
    .record(waited.as_secs_f64());
}

fn refuse(key: &Key, reason: WaitReason, retry_after: Duration) -> BoxError {
    tracing::debug!(%key, reason = reason.as_str(), retry_after = ?retry_after, "adapt: wait too long; refused");
    metrics::counter!(metric_names::ADAPT_REFUSED_TOTAL, "key" => key_label(key)).increment(1);
    Box::new(AdaptWaitTooLong::new(key.clone(), retry_after))
}

/// One request's place in its key's in-flight count; dropping it unanswered gives it back.
struct Reservation {
    state: Option<Arc<KeyState>>,
    seq: u64,
}

impl Reservation {
    fn take(&mut self) -> (Option<Arc<KeyState>>, u64) {
        (self.state.take(), self.seq)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            tracing::trace!(key = %state.key(), "adapt: in-flight request dropped; reservation released");
            state.release();
        }
    }
}

/// Counts a future among its key's waiters while it waits (so responses know to wake them).
struct WaiterGuard {
    state: Arc<KeyState>,
}

impl WaiterGuard {
    fn new(state: Arc<KeyState>) -> Self {
        state.add_waiter(1);
        WaiterGuard { state }
    }
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        self.state.add_waiter(-1);
    }
}
