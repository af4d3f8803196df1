//! [`ResponseFuture`]: waits for the request's slot, then drives the inner service's future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use ratewise_core::metric_names::{PACE_REFUSED_TOTAL, PACE_WAIT_SECONDS};
use ratewise_core::{BoxError, Key, PaceWaitTooLong};
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep, sleep_until};
use tower_service::Service;

use crate::layer::Shared;
use crate::limiter::{Decision, RateLimiter};
use crate::queue::{KeyState, Ticket};
use crate::quota::Quotas;
use crate::request::Priority;

/// How long a parked waiter without any deadline sleeps before looking again (it is woken
/// as soon as it becomes the head anyway): a long but finite timer.
const PARK_WITHOUT_LIMIT: Duration = Duration::from_secs(3600 * 24 * 365);

/// A concurrency permit of a key, held until the response future completes or is dropped.
/// Holding the key's state keeps it (and its semaphore) from eviction meanwhile.
pub(crate) struct Held {
    _permit: OwnedSemaphorePermit,
    _key_state: Arc<KeyState>,
}

impl Held {
    pub(crate) fn new(permit: OwnedSemaphorePermit, key_state: Arc<KeyState>) -> Self {
        Held {
            _permit: permit,
            _key_state: key_state,
        }
    }
}

type PermitFuture =
    Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// Everything a waiting request carries (boxed: only requests that wait pay for it).
pub(crate) struct Wait<S, Req, L> {
    pub(crate) shared: Arc<Shared<L>>,
    pub(crate) key: Key,
    pub(crate) quotas: Quotas,
    pub(crate) cost: u32,
    pub(crate) priority: Priority,
    /// Low priority with a reserve: fail fast rather than wait.
    pub(crate) sheds: bool,
    /// The request fails rather than wait past this instant (`max_wait`, `Deadline`).
    pub(crate) limit: Option<Instant>,
    pub(crate) started: Instant,
    /// Whether the "waiting" event was emitted.
    pub(crate) announced: bool,
    /// The projected wait when it last joined the queue.
    pub(crate) estimate: Duration,
    pub(crate) inner: S,
    pub(crate) request: Req,
    pub(crate) ticket: Option<Ticket>,
    pub(crate) held: Option<Held>,
    /// The one timer of this request (slot due, or park limit), reset in place: it lives in
    /// the box so that the response future stays small for requests that never wait.
    pub(crate) timer: Option<Pin<Box<Sleep>>>,
}

pin_project! {
    /// The response future of [`Pace`](crate::Pace): waits for the request's slot (and
    /// concurrency permit), then drives the inner service's future.
    ///
    /// # Cancel safety
    ///
    /// Dropping it at any point releases everything it holds: its place in the key's queue
    /// (the next waiter becomes head and is woken), its concurrency permit, and it has taken
    /// **no quota** unless it was admitted (the limiter's denials consume nothing, and the
    /// request is sent right after admission). A dropped waiting request leaves the bucket
    /// as if it never came.
    ///
    /// # Errors
    ///
    /// [`PaceWaitTooLong`] when the wait would pass `max_wait` or the request's
    /// [`Deadline`](ratewise_core::Deadline) (or, with a reserve, a low-priority request would
    /// have to wait); [`CostExceedsBurst`](crate::CostExceedsBurst) when the request can never
    /// pass; the limiter's errors; and the inner service's errors.
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<S, Req, L>
    where
        S: Service<Req>,
        L: RateLimiter,
    {
        #[pin]
        state: State<S, Req, L>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req, L>
    where
        S: Service<Req>,
        L: RateLimiter,
    {
        Calling {
            #[pin]
            future: S::Future,
            held: Option<Held>,
        },
        Permit {
            permit: PermitFuture,
            key_state: Option<Arc<KeyState>>,
            wait: Option<Box<Wait<S, Req, L>>>,
        },
        Start {
            wait: Option<Box<Wait<S, Req, L>>>,
        },
        Acquiring {
            #[pin]
            future: L::AcquireFuture,
            wait: Option<Box<Wait<S, Req, L>>>,
        },
        Sleeping {
            wait: Option<Box<Wait<S, Req, L>>>,
        },
        Parked {
            wait: Option<Box<Wait<S, Req, L>>>,
        },
        Failed {
            error: Option<BoxError>,
        },
    }
}

impl<S, Req, L> ResponseFuture<S, Req, L>
where
    S: Service<Req>,
    L: RateLimiter,
{
    pub(crate) fn calling(future: S::Future, held: Option<Held>) -> Self {
        ResponseFuture {
            state: State::Calling { future, held },
        }
    }

    pub(crate) fn failed(error: BoxError) -> Self {
        ResponseFuture {
            state: State::Failed { error: Some(error) },
        }
    }

    pub(crate) fn waiting(
        wait: Box<Wait<S, Req, L>>,
        permit_wait: Option<(Arc<Semaphore>, Arc<KeyState>)>,
        early: Option<Decision>,
    ) -> Self {
        let state = match (permit_wait, early) {
            (Some((semaphore, key_state)), _) => State::Permit {
                permit: Box::pin(semaphore.acquire_owned()),
                key_state: Some(key_state),
                wait: Some(wait),
            },
            // Denied already in `call`: queue now, so that FIFO order is call order.
            (None, Some(decision)) => wait.on_decision(Ok(decision)),
            (None, None) => wait.start(None),
        };
        ResponseFuture { state }
    }
}

impl<S, Req, L> Wait<S, Req, L>
where
    S: Service<Req>,
    L: RateLimiter,
{
    /// Decides the next step of a request that is not waiting on a timer: join the queue
    /// behind others, park until it is the head, or ask the limiter.
    fn start(mut self: Box<Self>, cx: Option<&mut Context<'_>>) -> State<S, Req, L> {
        match &self.ticket {
            None => {
                let queued = self.shared.total_waiting.load(Ordering::Acquire) > 0
                    && self
                        .shared
                        .keys
                        .get(&self.key)
                        .is_some_and(|state| state.has_waiters());
                if queued {
                    let is_head = self.enqueue();
                    if !is_head {
                        return self.park_after_enqueue();
                    }
                }
            }
            Some(ticket) => {
                if let Some(cx) = cx
                    && !ticket.key_state.is_head_or_park(ticket.id, cx.waker())
                {
                    let limit = self.park_limit();
                    self.arm(limit);
                    return State::Parked { wait: Some(self) };
                }
            }
        }
        self.acquire()
    }

    /// Asks the limiter (as the head of the queue, or with nobody queued).
    fn acquire(self: Box<Self>) -> State<S, Req, L> {
        let limiter = &self.shared.limiter;
        match limiter.acquire_now(&self.key, self.quotas.as_slice(), self.cost) {
            Some(result) => self.on_decision(result),
            None => State::Acquiring {
                future: limiter.acquire(&self.key, self.quotas.as_slice(), self.cost),
                wait: Some(self),
            },
        }
    }

    fn on_decision(mut self: Box<Self>, result: Result<Decision, BoxError>) -> State<S, Req, L> {
        match result {
            Err(error) => State::Failed { error: Some(error) },
            Ok(Decision::Allowed) => {
                let waited = self.started.elapsed();
                if !waited.is_zero() {
                    tracing::debug!(key = %self.key, wait = ?waited, "pace: admitted after waiting");
                    metrics::histogram!(PACE_WAIT_SECONDS, "key" => key_label(&self.key))
                        .record(waited.as_secs_f64());
                }
                // Leaving the queue wakes the next waiter.
                self.ticket = None;
                let Wait {
                    mut inner,
                    request,
                    held,
                    ..
                } = *self;
                State::Calling {
                    future: inner.call(request),
                    held,
                }
            }
            Ok(Decision::Denied { retry_after }) => {
                // A limiter's answer is clamped: a broken store cannot make us sleep for ages
                // past the park timer (the request asks again then).
                let due = after(Instant::now(), retry_after);
                if self.sheds || self.limit.is_some_and(|limit| due > limit) {
                    return self.refuse(retry_after);
                }
                if self.ticket.is_none() && !self.enqueue() {
                    return self.park_after_enqueue();
                }
                if let Some(ticket) = &self.ticket {
                    ticket.key_state.set_head_due(ticket.id, due);
                }
                if !self.announced {
                    self.announced = true;
                    tracing::debug!(key = %self.key, wait = ?retry_after, priority = ?self.priority, "pace: waiting for a slot");
                }
                self.arm(due);
                State::Sleeping { wait: Some(self) }
            }
        }
    }

    /// Joins the key's queue; returns whether this request is the head.
    fn enqueue(&mut self) -> bool {
        let key_state = self
            .shared
            .keys
            .get_or_insert_with(&self.key, || KeyState::new(None));
        let enqueued = key_state.enqueue(
            self.priority,
            self.cost,
            self.quotas.max_interval(),
            Instant::now(),
        );
        self.shared.total_waiting.fetch_add(1, Ordering::AcqRel);
        self.ticket = Some(Ticket {
            key_state,
            id: enqueued.id,
            total_waiting: Arc::clone(&self.shared.total_waiting),
        });
        // Stash the estimate for `park_after_enqueue`.
        self.estimate = enqueued.estimate;
        enqueued.is_head
    }

    /// Behind others: fail fast if the projected wait is too long, else park.
    fn park_after_enqueue(mut self: Box<Self>) -> State<S, Req, L> {
        let estimate = self.estimate;
        if self.sheds
            || self
                .limit
                .is_some_and(|limit| after(Instant::now(), estimate) > limit)
        {
            return self.refuse(estimate);
        }
        if !self.announced {
            tracing::debug!(key = %self.key, wait = ?estimate, priority = ?self.priority, "pace: queued behind other requests");
        }
        let limit = self.park_limit();
        self.arm(limit);
        State::Parked { wait: Some(self) }
    }

    /// Sets the request's timer to fire at `deadline` (allocated on the first wait only).
    fn arm(&mut self, deadline: Instant) {
        match &mut self.timer {
            Some(timer) => timer.as_mut().reset(deadline),
            None => self.timer = Some(Box::pin(sleep_until(deadline))),
        }
    }

    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.timer {
            Some(timer) => timer.as_mut().poll(cx),
            // Unreachable: the waiting states arm the timer first. Asking again is safe.
            None => Poll::Ready(()),
        }
    }

    fn park_limit(&self) -> Instant {
        self.limit
            .unwrap_or_else(|| after(Instant::now(), PARK_WITHOUT_LIMIT))
    }

    fn refuse(&self, retry_after: Duration) -> State<S, Req, L> {
        tracing::debug!(key = %self.key, retry_after = ?retry_after, priority = ?self.priority, "pace: refused, the wait is too long");
        metrics::counter!(PACE_REFUSED_TOTAL, "key" => key_label(&self.key)).increment(1);
        // The caller drops `self`: that leaves the queue and releases the permit.
        State::Failed {
            error: Some(Box::new(PaceWaitTooLong::new(
                self.key.clone(),
                retry_after,
            ))),
        }
    }
}

impl<S, Req, L> Future for ResponseFuture<S, Req, L>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    L: RateLimiter,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            let next = match state.as_mut().project() {
                StateProj::Calling { future, held } => {
                    let output = ready!(future.poll(cx));
                    // The request is done: release the concurrency permit now.
                    held.take();
                    return Poll::Ready(output.map_err(Into::into));
                }
                StateProj::Failed { error } => {
                    return Poll::Ready(Err(error.take().unwrap_or_else(|| {
                        "pace response future polled after completion".into()
                    })));
                }
                StateProj::Permit {
                    permit,
                    key_state,
                    wait,
                } => {
                    let permit = ready!(permit.as_mut().poll(cx));
                    let mut wait = take(wait);
                    match permit {
                        Ok(permit) => {
                            let key_state =
                                key_state.take().expect("key state is set with the permit");
                            wait.held = Some(Held::new(permit, key_state));
                            wait.start(Some(cx))
                        }
                        // The semaphores are never closed.
                        Err(closed) => State::Failed {
                            error: Some(Box::new(closed)),
                        },
                    }
                }
                StateProj::Start { wait } => take(wait).start(Some(cx)),
                StateProj::Acquiring { future, wait } => {
                    let result = ready!(future.poll(cx));
                    take(wait).on_decision(result)
                }
                StateProj::Sleeping { wait } => {
                    let waiting = wait.as_mut().expect("a sleeping state holds its wait");
                    ready!(waiting.poll_timer(cx));
                    take(wait).start(Some(cx))
                }
                StateProj::Parked { wait } => {
                    let waiting = wait.as_mut().expect("a parked state holds its wait");
                    let ticket = waiting.ticket.as_ref().expect("a parked request is queued");
                    if ticket.key_state.is_head_or_park(ticket.id, cx.waker()) {
                        take(wait).acquire()
                    } else if waiting.poll_timer(cx).is_ready() {
                        let waiting = take(wait);
                        if waiting.limit.is_some() {
                            let retry_after = waiting.quotas.max_interval() * waiting.cost.max(1);
                            waiting.refuse(retry_after)
                        } else {
                            State::Start {
                                wait: Some(waiting),
                            }
                        }
                    } else {
                        return Poll::Pending;
                    }
                }
            };
            state.set(next);
        }
    }
}

/// A metric label sharing the key's name (no copy of the string).
fn key_label(key: &Key) -> metrics::SharedString {
    metrics::SharedString::from_shared(key.to_shared())
}

/// `now + duration`, at most [`PARK_WITHOUT_LIMIT`] away (never overflows).
pub(crate) fn after(now: Instant, duration: Duration) -> Instant {
    now + duration.min(PARK_WITHOUT_LIMIT)
}

fn take<T>(slot: &mut Option<Box<T>>) -> Box<T> {
    slot.take()
        .expect("a waiting state always holds its wait until it moves on")
}

impl<S, Req, L> fmt::Debug for ResponseFuture<S, Req, L>
where
    S: Service<Req>,
    L: RateLimiter,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Calling { .. } => "calling",
            State::Permit { .. } => "waiting for a concurrency permit",
            State::Start { .. } => "starting",
            State::Acquiring { .. } => "acquiring",
            State::Sleeping { .. } => "waiting for its slot",
            State::Parked { .. } => "queued",
            State::Failed { .. } => "failed",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
