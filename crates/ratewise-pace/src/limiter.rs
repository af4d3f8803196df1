//! The [`RateLimiter`] trait: the store behind [`PaceLayer`](crate::PaceLayer).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ratewise_core::{BoxError, Key};
use tokio::time::Instant;

use crate::quota::Quota;

/// The most quotas one key may chain (`10/s AND 5000/h AND ...`).
pub const MAX_CHAINED_QUOTAS: usize = 4;

/// The answer of a [`RateLimiter`] to one acquire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Every quota admitted the request and its cost was taken from each of them.
    Allowed,
    /// At least one quota refused; **nothing was taken from any quota**. The same request
    /// (same quotas, same cost) could pass after `retry_after` if nothing else is admitted
    /// meanwhile.
    Denied {
        /// How long from now until the request could pass.
        retry_after: Duration,
    },
}

impl Decision {
    /// Whether the request was admitted.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed)
    }
}

/// A GCRA rate limiter keyed by [`Key`]: the store that [`PaceLayer`](crate::PaceLayer) asks
/// before each request. [`LocalLimiter`](crate::LocalLimiter) is the in-memory implementation;
/// `ratewise-redis` implements it on Redis so that many processes share one quota.
///
/// # Contract
///
/// Every implementation must follow these rules, so that any limiter fits behind the layer:
///
/// - **The quotas travel with each call.** [`acquire`](Self::acquire) and
///   [`drain`](Self::drain) receive the key's quotas (`count`, `period`, `burst` of each, see
///   [`Quota::emission_interval_nanos`] and [`Quota::burst_span_nanos`]). A limiter needs no
///   setup per key, and a quota changed at runtime simply arrives with the next call. The state
///   of the `i`-th quota of a key is kept under `(key, i)`: a key's quotas keep their order, and
///   a quota whose parameters change keeps its state (its theoretical arrival time).
/// - **GCRA, exactly as documented on [`Quota`]**: per quota a theoretical arrival time `tat`
///   (never moved backwards); a request of cost `c` at `now` passes a quota iff
///   `max(tat, now) + c·T − b·T <= now`, and then `tat = max(tat, now) + c·T`.
/// - **Chained quotas are all-or-nothing.** A request is [`Decision::Allowed`] only when every
///   quota in `quotas` admits it, and then its cost is taken from all of them atomically
///   (no other acquire of the key sees a partial update). When any quota refuses, the answer is
///   [`Decision::Denied`] with `retry_after` = the longest wait among the refusing quotas, and
///   **no quota is changed** (a Redis script writes nothing on denial).
/// - **Denials consume nothing**, so a caller may ask again later at no cost, and a caller that
///   gives up (a dropped request) leaves no trace.
/// - **Costs**: `cost` is the weight of the request (1 for a plain request, GraphQL points, LLM
///   tokens). A cost of 0 passes whenever the key is not drained or over its burst. A cost
///   greater than some quota's burst can never pass: the answer is an `Err` holding
///   [`CostExceedsBurst`].
/// - **Time**: the limiter uses its own clock (the local one tokio's
///   [`Instant`], so paused-clock tests work; Redis its server `TIME`). `retry_after` is
///   relative, so clocks need not agree.
/// - **One round trip**: an acquire is a single atomic step (one CAS locally, one script call
///   on Redis). FIFO order, priorities, reserves, waiting and `max_wait` live in the layer,
///   which asks the limiter again when a denied request's `retry_after` has passed.
/// - **Errors** (`Err`) mean the limiter could not decide (Redis unreachable, invalid input);
///   the layer returns them to the caller of that request.
/// - **Cancel safety**: the returned futures own everything they need (`'static`): they never
///   borrow the arguments. Dropping an acquire future before it completes either leaves the
///   state unchanged or (for a remote limiter, when the script already ran) takes the cost once;
///   it never takes it twice.
///
/// # Changes
///
/// - Added [`acquire_now`](Self::acquire_now), a synchronous fast path with a default
///   (`None`) implementation: existing implementations need no change.
pub trait RateLimiter: Send + Sync + 'static {
    /// The future of [`acquire`](Self::acquire).
    type AcquireFuture: Future<Output = Result<Decision, BoxError>> + Send + 'static;
    /// The future of [`drain`](Self::drain).
    type DrainFuture: Future<Output = Result<(), BoxError>> + Send + 'static;

    /// Takes `cost` from every quota of `key` if all of them admit it now (see the trait docs
    /// for the exact rule); otherwise takes nothing and says how long until it could pass.
    ///
    /// `quotas` holds 1 to [`MAX_CHAINED_QUOTAS`] quotas.
    fn acquire(&self, key: &Key, quotas: &[Quota], cost: u32) -> Self::AcquireFuture;

    /// The same acquire, answered synchronously when the limiter can decide without waiting
    /// (an in-memory limiter); `None` (the default) when it cannot, and then the layer awaits
    /// [`acquire`](Self::acquire) instead. When this returns `Some`, the acquire has happened
    /// exactly as [`acquire`](Self::acquire) would have done it.
    ///
    /// The layer calls this first so that an uncontended request takes no future and no
    /// allocation. A remote limiter keeps the default.
    #[inline]
    fn acquire_now(
        &self,
        key: &Key,
        quotas: &[Quota],
        cost: u32,
    ) -> Option<Result<Decision, BoxError>> {
        let _ = (key, quotas, cost);
        None
    }

    /// A cooldown: `key` admits nothing before `until`. Each quota's theoretical arrival time
    /// becomes `max(tat, until + (b − 1)·T)`, so at `until` exactly one unit of each quota is
    /// available and the bucket refills at the quota's rate from there (no burst right after a
    /// cooldown). A drain never shortens an earlier, longer one.
    ///
    /// The adaptation layer calls this on `Retry-After`; on Redis it is the shared cooldown
    /// every worker sees.
    fn drain(&self, key: &Key, quotas: &[Quota], until: Instant) -> Self::DrainFuture;
}

impl<L: RateLimiter + ?Sized> RateLimiter for Arc<L> {
    type AcquireFuture = L::AcquireFuture;
    type DrainFuture = L::DrainFuture;

    #[inline]
    fn acquire(&self, key: &Key, quotas: &[Quota], cost: u32) -> Self::AcquireFuture {
        (**self).acquire(key, quotas, cost)
    }

    #[inline]
    fn acquire_now(
        &self,
        key: &Key,
        quotas: &[Quota],
        cost: u32,
    ) -> Option<Result<Decision, BoxError>> {
        (**self).acquire_now(key, quotas, cost)
    }

    #[inline]
    fn drain(&self, key: &Key, quotas: &[Quota], until: Instant) -> Self::DrainFuture {
        (**self).drain(key, quotas, until)
    }
}

/// A request costs more than a quota's burst, so it can never pass.
///
/// Returned (inside a [`BoxError`]) by [`RateLimiter::acquire`] and by the layer, which checks
/// before asking the limiter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CostExceedsBurst {
    key: Key,
    cost: u32,
    burst: u32,
}

impl CostExceedsBurst {
    /// A request of `cost` for `key`, whose smallest burst is `burst`.
    pub fn new(key: Key, cost: u32, burst: u32) -> Self {
        CostExceedsBurst { key, cost, burst }
    }

    /// The key.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// The request's cost.
    pub fn cost(&self) -> u32 {
        self.cost
    }

    /// The smallest burst among the key's quotas.
    pub fn burst(&self) -> u32 {
        self.burst
    }
}

impl fmt::Display for CostExceedsBurst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request cost {} exceeds the burst {} of key `{}`",
            self.cost, self.burst, self.key
        )
    }
}

impl std::error::Error for CostExceedsBurst {}

/// The quotas' slice could not be used: empty or longer than [`MAX_CHAINED_QUOTAS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidQuotaChain {
    len: usize,
}

impl InvalidQuotaChain {
    /// A chain of `len` quotas.
    pub fn new(len: usize) -> Self {
        InvalidQuotaChain { len }
    }

    /// The number of quotas that was given.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the chain was empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Display for InvalidQuotaChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a key needs 1 to {MAX_CHAINED_QUOTAS} chained quotas, got {}",
            self.len
        )
    }
}

impl std::error::Error for InvalidQuotaChain {}
