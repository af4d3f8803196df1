//! [`Pace`]: the service made by [`PaceLayer`](crate::PaceLayer).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use ratewise_core::{BoxError, Deadline, KeyFn};
use tokio::time::Instant;
use tower_service::Service;

use crate::future::{Held, ResponseFuture, Wait, after};
use crate::layer::{Settings, Shared, TableCache};
use crate::limiter::{CostExceedsBurst, Decision, RateLimiter};
use crate::queue::KeyState;
use crate::request::{CostFn, Priority};

/// Paces requests to its inner service; made by [`PaceLayer`](crate::PaceLayer).
///
/// See the [module docs](crate) for an example.
///
/// # Clone
///
/// Clones share the layer's limiter, quotas and queues; the inner service is cloned.
pub struct Pace<S, L, K, C> {
    pub(crate) inner: S,
    pub(crate) table: TableCache,
    pub(crate) shared: Arc<Shared<L>>,
    pub(crate) key_fn: Arc<K>,
    pub(crate) cost_fn: Arc<C>,
    pub(crate) settings: Settings,
}

impl<S, L, K, C> Pace<S, L, K, C> {
    /// Wraps `inner` with the pacing of `layer` (sharing its state), like
    /// [`Layer::layer`](tower_layer::Layer::layer).
    pub fn new(inner: S, layer: &crate::PaceLayer<L, K, C>) -> Self {
        tower_layer::Layer::layer(layer, inner)
    }

    ratewise_core::define_inner_service_accessors!();
}

impl<S: Clone, L, K, C> Clone for Pace<S, L, K, C> {
    fn clone(&self) -> Self {
        Pace {
            inner: self.inner.clone(),
            table: self.shared.table_cache(),
            shared: Arc::clone(&self.shared),
            key_fn: Arc::clone(&self.key_fn),
            cost_fn: Arc::clone(&self.cost_fn),
            settings: self.settings,
        }
    }
}

impl<S: fmt::Debug, L, K, C> fmt::Debug for Pace<S, L, K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pace")
            .field("inner", &self.inner)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<S, B, L, K, C> Service<Request<B>> for Pace<S, L, K, C>
where
    S: Service<Request<B>> + Clone,
    S::Error: Into<BoxError>,
    L: RateLimiter,
    K: KeyFn,
    C: CostFn,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Request<B>, L>;

    /// The inner service's readiness: pacing waits per request, inside the response future
    /// (the key is only known from the request), so it never relies on inner backpressure.
    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (parts, body) = request.into_parts();
        let key = self.key_fn.key(&parts);
        // Borrowed from this service's cached table: nothing is copied on the fast path.
        let Some(quotas) = self.table.load().get_ref(&key) else {
            // Not paced.
            return ResponseFuture::calling(
                self.inner.call(Request::from_parts(parts, body)),
                None,
            );
        };
        let cost = self.cost_fn.cost(&parts);
        let priority = parts
            .extensions
            .get::<Priority>()
            .copied()
            .unwrap_or_default();
        let deadline = parts.extensions.get::<Deadline>().map(|d| d.instant());
        let request = Request::from_parts(parts, body);

        let min_burst = quotas.min_burst();
        if cost > min_burst {
            return ResponseFuture::failed(Box::new(CostExceedsBurst::new(key, cost, min_burst)));
        }
        // Low priority may not use the reserve: checked against reduced bursts, and shed
        // instead of waiting.
        let sheds = priority == Priority::Low && self.settings.reserve > 0.0;
        let reduced;
        let quotas = if sheds {
            reduced = quotas.without_reserve(self.settings.reserve);
            &reduced
        } else {
            quotas
        };
        let cost = cost.min(quotas.min_burst());

        let shared = &self.shared;
        let mut held = None;
        let mut permit_wait = None;
        if let Some(max) = self.settings.max_concurrency {
            let key_state = shared
                .keys
                .get_or_insert_with(&key, || KeyState::new(Some(max)));
            if let Some(semaphore) = key_state.semaphore.clone() {
                match semaphore.clone().try_acquire_owned() {
                    Ok(permit) => held = Some(Held::new(permit, key_state)),
                    Err(_) => permit_wait = Some((semaphore, key_state)),
                }
            }
        }

        let mut early = None;
        if permit_wait.is_none() {
            let queued = shared.total_waiting.load(Ordering::Acquire) > 0
                && shared
                    .keys
                    .get(&key)
                    .is_some_and(|state| state.has_waiters());
            if !queued {
                match shared.limiter.acquire_now(&key, quotas.as_slice(), cost) {
                    Some(Ok(Decision::Allowed)) => {
                        // The fast path: nothing waits, nothing is cloned or allocated.
                        return ResponseFuture::calling(self.inner.call(request), held);
                    }
                    Some(Err(error)) => return ResponseFuture::failed(error),
                    Some(Ok(denied)) => early = Some(denied),
                    None => {}
                }
            }
        }

        // The slow path: the request waits, so it takes the readied inner service with it.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let now = Instant::now();
        let limit = match (self.settings.max_wait, deadline) {
            (Some(max_wait), Some(deadline)) => Some(deadline.min(after(now, max_wait))),
            (Some(max_wait), None) => Some(after(now, max_wait)),
            (None, deadline) => deadline,
        };
        let wait = Box::new(Wait {
            shared: Arc::clone(shared),
            key,
            quotas: *quotas,
            cost,
            priority,
            sheds,
            limit,
            started: now,
            announced: false,
            estimate: Duration::ZERO,
            inner,
            request,
            ticket: None,
            held,
            timer: None,
        });
        ResponseFuture::waiting(wait, permit_wait, early)
    }
}
