//! [`LocalLimiter`]: the in-memory, lock-free GCRA.

use std::fmt;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::time::Duration;

use ratewise_core::{BoxError, Key, KeyedState, KeyedStateConfig, KeyedStateError};
use tokio::time::Instant;

use crate::clock::{Clock, TokioClock};
use crate::limiter::{
    CostExceedsBurst, Decision, InvalidQuotaChain, MAX_CHAINED_QUOTAS, RateLimiter,
};
use crate::loom::{AtomicU64, Mutex, Ordering};
use crate::quota::Quota;
use crate::store::BucketMap;

/// The default cap on the keys of a [`LocalLimiter`].
const DEFAULT_MAX_KEYS: usize = 100_000;

/// The GCRA state of one key: the theoretical arrival time of each chained quota, in
/// nanoseconds since the limiter's epoch (40 bytes).
pub(crate) struct Bucket {
    tats: [AtomicU64; MAX_CHAINED_QUOTAS],
    /// Taken only by chained (multi-quota) acquires and drains, so that their updates of
    /// several quotas are all-or-nothing; single-quota acquires never take it.
    chain: Mutex<()>,
}

impl Bucket {
    pub(crate) fn new() -> Self {
        Bucket {
            tats: std::array::from_fn(|_| AtomicU64::new(0)),
            chain: Mutex::new(()),
        }
    }

    /// Admits `cost` at `now` (nanoseconds) against every quota, or returns the wait in
    /// nanoseconds until it could pass, changing nothing.
    ///
    /// The caller guarantees `1 <= quotas.len() <= MAX_CHAINED_QUOTAS` and `cost <= burst` of
    /// each quota (so `cost × T` cannot overflow).
    #[inline]
    pub(crate) fn acquire(&self, quotas: &[Quota], cost: u32, now: u64) -> Result<(), u64> {
        match quotas {
            [quota] => self.acquire_one(quota, cost, now),
            _ => self.acquire_chain(quotas, cost, now),
        }
    }

    /// One quota: a single compare-and-swap loop on its `tat`, like governor. Relaxed is
    /// enough: the admission count depends only on the total order of read-modify-writes on
    /// this one atomic, and the limiter publishes no other data through it.
    ///
    /// Saturating (as `acquire_chain`): a `tat` drained to the end of time refuses, never
    /// wraps into an admission.
    #[inline]
    pub(crate) fn acquire_one(&self, quota: &Quota, cost: u32, now: u64) -> Result<(), u64> {
        let increment = quota
            .emission_interval_nanos()
            .saturating_mul(u64::from(cost));
        let limit = now.saturating_add(quota.burst_span_nanos());
        let tat = &self.tats[0];
        let mut current = tat.load(Ordering::Relaxed);
        loop {
            let next = current.max(now).saturating_add(increment);
            if next > limit {
                return Err(next - limit);
            }
            match tat.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(()),
                Err(actual) => current = actual,
            }
        }
    }

    /// Chained quotas: under the chain lock (which every other writer of quotas `1..` holds
    /// too), check all, then publish quota 0 with a compare-and-swap (single-quota acquires
    /// may race on it: on a lost race, check again) and store the others.
    #[cold]
    fn acquire_chain(&self, quotas: &[Quota], cost: u32, now: u64) -> Result<(), u64> {
        let _guard = self
            .chain
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut first = self.tats[0].load(Ordering::Relaxed);
        let mut next = [0u64; MAX_CHAINED_QUOTAS];
        loop {
            let mut wait = 0u64;
            for (index, quota) in quotas.iter().enumerate() {
                let current = if index == 0 {
                    first
                } else {
                    self.tats[index].load(Ordering::Relaxed)
                };
                let increment = quota
                    .emission_interval_nanos()
                    .saturating_mul(u64::from(cost));
                let limit = now.saturating_add(quota.burst_span_nanos());
                next[index] = current.max(now).saturating_add(increment);
                wait = wait.max(next[index].saturating_sub(limit));
            }
            if wait > 0 {
                return Err(wait);
            }
            match self.tats[0].compare_exchange(
                first,
                next[0],
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => first = actual,
            }
        }
        for (index, value) in next.iter().enumerate().take(quotas.len()).skip(1) {
            self.tats[index].store(*value, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Moves every quota's `tat` to at least `until + (b − 1)·T`.
    pub(crate) fn drain(&self, quotas: &[Quota], until: u64) {
        let _guard = self
            .chain
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (tat, quota) in self.tats.iter().zip(quotas) {
            let floor =
                until.saturating_add(quota.burst_span_nanos() - quota.emission_interval_nanos());
            tat.fetch_max(floor, Ordering::Relaxed);
        }
    }

    pub(crate) fn tat(&self, index: usize) -> u64 {
        self.tats[index].load(Ordering::Relaxed)
    }

    /// The latest theoretical arrival time of all quotas: the instant the bucket is full.
    pub(crate) fn latest_tat(&self) -> u64 {
        self.tats
            .iter()
            .map(|tat| tat.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0)
    }

    /// Whether every quota is full at `now`: the bucket then equals a new one.
    pub(crate) fn is_full(&self, now: u64) -> bool {
        self.latest_tat() <= now
    }
}

/// A refusal, with its wait.
#[cold]
fn denied(wait: u64) -> Decision {
    Decision::Denied {
        retry_after: Duration::from_nanos(wait),
    }
}

#[cold]
#[inline(never)]
fn cost_exceeds_burst(key: &Key, quota: &Quota, cost: u32) -> BoxError {
    Box::new(CostExceedsBurst::new(key.clone(), cost, quota.burst_size()))
}

/// Checks what every limiter must reject before touching state.
#[inline]
pub(crate) fn validate(key: &Key, quotas: &[Quota], cost: u32) -> Result<(), BoxError> {
    if quotas.is_empty() || quotas.len() > MAX_CHAINED_QUOTAS {
        return Err(Box::new(InvalidQuotaChain::new(quotas.len())));
    }
    for quota in quotas {
        if cost > quota.burst_size() {
            return Err(Box::new(CostExceedsBurst::new(
                key.clone(),
                cost,
                quota.burst_size(),
            )));
        }
    }
    Ok(())
}

/// The in-memory GCRA limiter: one lock-free bucket per key (an `AtomicU64` theoretical
/// arrival time per chained quota, updated by compare-and-swap, as in governor).
///
/// Buckets live inline in a map of 16 shards indexed by the key's precomputed hash
/// ([`Key::prehash`]): looking up an existing key hashes nothing, takes this thread's own read
/// lock of its shard (no line written that another thread reads), reads one cache line and
/// allocates nothing; the acquire itself is one
/// compare-and-swap for a key with one quota. Keys with chained quotas take a short per-key
/// lock (never held across an await) so that the update of all their quotas is
/// all-or-nothing.
///
/// Time comes from a [`Clock`]: by default tokio's ([`TokioClock`]), so pacing follows a paused
/// clock in tests; [`with_clock`](Self::with_clock) takes another (the `tsc-clock` feature's
/// `TscClock` reads the CPU's counter, about 13 ns cheaper per decision on the benchmark
/// machine).
///
/// # Idle keys
///
/// A GCRA bucket knows when it is idle: once every theoretical arrival time has passed, it is
/// full and equal to a new one. Such buckets are dropped by a sweep (at most once a minute,
/// during an insert), which never changes a decision, so no "last used" time is kept. Only
/// when the key cap is reached with every bucket still refilling are the buckets closest to
/// full evicted (see [`with_max_keys`](Self::with_max_keys)).
///
/// # Memory
///
/// Per key: one 64-byte, cache-line-aligned entry (the key with its hash, and the bucket) plus
/// a control byte of the table and its slack; the key's name is an `Arc<str>` shared with the
/// key function. Fixed: about 20 KiB for the 16 shards and their per-thread reader locks.
///
/// # Clone
///
/// Clones share the same buckets; each has a copy of the clock.
#[derive(Clone)]
pub struct LocalLimiter<C = TokioClock> {
    store: Store,
    clock: C,
}

#[derive(Clone)]
enum Store {
    /// Built by `direct`: one bucket for every key (on a line of its own, so that threads
    /// contend on the bucket only). First, so that it is the first tested.
    Single(Arc<LineBucket>),
    /// The default: buckets inline in a sharded map, dropped once full (see `store.rs`).
    Own(Arc<BucketMap>),
    /// Built by `with_config`: the generic keyed map of ratewise-core.
    Keyed(KeyedState<Bucket>),
}

/// A bucket alone on its cache line(s).
#[repr(align(128))]
struct LineBucket(Bucket);

impl Store {
    #[inline]
    fn with<R>(&self, key: &Key, now: u64, f: impl FnOnce(&Bucket) -> R) -> R {
        match self {
            Store::Own(map) => map.with(key, now, f),
            Store::Keyed(state) => state.with_or_insert(key, Bucket::new, |bucket| f(bucket)),
            Store::Single(bucket) => f(&bucket.0),
        }
    }

    fn tat(&self, key: &Key, index: usize) -> Option<u64> {
        match self {
            Store::Own(map) => map.tat(key, index),
            Store::Keyed(state) => state.get(key).map(|bucket| bucket.tat(index)),
            Store::Single(bucket) => Some(bucket.0.tat(index)),
        }
    }

    fn len(&self) -> usize {
        match self {
            Store::Own(map) => map.len(),
            Store::Keyed(state) => state.len(),
            Store::Single(_) => 1,
        }
    }
}

impl LocalLimiter {
    /// A limiter holding at most 100 000 keys, on tokio's clock.
    pub fn new() -> Self {
        LocalLimiter::with_max_keys(DEFAULT_MAX_KEYS)
    }

    /// One bucket for every key, on tokio's clock: what [`PaceLayer::new`](crate::PaceLayer::new)
    /// uses, and governor's "direct" limiter. No lookup at all: an acquire is the clock read and
    /// one compare-and-swap.
    ///
    /// Every key shares the bucket (a drain of any key drains it), so give it to a layer with
    /// one key; a keyed layer wants [`new`](Self::new).
    pub fn direct() -> Self {
        LocalLimiter::direct_with_clock(TokioClock::new())
    }

    /// A limiter holding at most `max_keys` keys (at least 1).
    ///
    /// Keys whose bucket is full again (unused for one burst span) are dropped by a sweep at
    /// most every minute, which changes no decision. Only when `max_keys` buckets are all
    /// still refilling does an insert evict the ones closest to full (a debug event says so).
    /// Threads inserting new keys at the same moment may pass the cap by one key each until
    /// their calls return (each evicts before returning).
    pub fn with_max_keys(max_keys: usize) -> Self {
        LocalLimiter::with_clock(TokioClock::new(), max_keys)
    }

    /// A limiter whose buckets live in ratewise-core's [`KeyedState`] with this
    /// configuration (idle eviction by last use, LRU cap).
    ///
    /// Prefer [`with_max_keys`](Self::with_max_keys): its store is faster (no last-use
    /// bookkeeping per acquire) and never evicts a bucket that still matters before the cap.
    /// With this one, an idle timeout shorter than the longest burst span may free quota
    /// early.
    ///
    /// # Errors
    ///
    /// [`KeyedStateError`] when the configuration is invalid.
    pub fn with_config(config: KeyedStateConfig) -> Result<Self, KeyedStateError> {
        Ok(LocalLimiter {
            store: Store::Keyed(KeyedState::new(config)?),
            clock: TokioClock::new(),
        })
    }
}

impl<C: Clock> LocalLimiter<C> {
    /// A limiter holding at most `max_keys` keys (as [`with_max_keys`](LocalLimiter::with_max_keys))
    /// that reads the time from `clock`.
    ///
    /// ```
    /// use ratewise_pace::{LocalLimiter, TokioClock};
    ///
    /// let limiter = LocalLimiter::with_clock(TokioClock::new(), 10_000);
    /// # let _ = limiter;
    /// ```
    pub fn with_clock(clock: C, max_keys: usize) -> Self {
        LocalLimiter {
            store: Store::Own(Arc::new(BucketMap::new(max_keys))),
            clock,
        }
    }

    /// One bucket for every key (as [`direct`](LocalLimiter::direct)) that reads the time from
    /// `clock`.
    pub fn direct_with_clock(clock: C) -> Self {
        LocalLimiter {
            store: Store::Single(Arc::new(LineBucket(Bucket::new()))),
            clock,
        }
    }

    /// The clock this limiter reads.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// The synchronous acquire behind [`RateLimiter::acquire`]: same rules, same answer.
    ///
    /// # Errors
    ///
    /// [`CostExceedsBurst`] when `cost` exceeds a quota's burst, [`InvalidQuotaChain`] when
    /// `quotas` is empty or longer than [`MAX_CHAINED_QUOTAS`].
    // Always inlined, and small: the common case (one quota, admitted) is the clock read, the
    // lookup and one compare-and-swap in the caller; everything else is out of line.
    #[inline(always)]
    pub fn check(&self, key: &Key, quotas: &[Quota], cost: u32) -> Result<Decision, BoxError> {
        let [quota] = quotas else {
            return self.check_chain(key, quotas, cost);
        };
        let now = self.clock.now_nanos();
        let verdict = match &self.store {
            // No insert here, and the arithmetic saturates, so a cost above the burst can only
            // be refused: checked then, off the admitted path.
            Store::Single(bucket) => bucket.0.acquire_one(quota, cost, now),
            // Checked before the lookup: an insert at the cap may evict another key.
            _ if cost > quota.burst_size() => return Err(cost_exceeds_burst(key, quota, cost)),
            Store::Own(map) => map.with(key, now, |bucket| bucket.acquire_one(quota, cost, now)),
            Store::Keyed(_) => self.store_with_cold(key, now, quotas, cost),
        };
        match verdict {
            Ok(()) => Ok(Decision::Allowed),
            Err(_) if cost > quota.burst_size() => Err(cost_exceeds_burst(key, quota, cost)),
            Err(wait) => Ok(denied(wait)),
        }
    }

    /// Chained (or invalid) quotas: validated first.
    #[inline(never)]
    fn check_chain(&self, key: &Key, quotas: &[Quota], cost: u32) -> Result<Decision, BoxError> {
        validate(key, quotas, cost)?;
        let now = self.clock.now_nanos();
        match self.store_with_cold(key, now, quotas, cost) {
            Ok(()) => Ok(Decision::Allowed),
            Err(wait) => Ok(denied(wait)),
        }
    }

    #[inline(never)]
    fn store_with_cold(&self, key: &Key, now: u64, quotas: &[Quota], cost: u32) -> Result<(), u64> {
        self.store
            .with(key, now, |bucket| bucket.acquire(quotas, cost, now))
    }

    /// The synchronous drain behind [`RateLimiter::drain`].
    ///
    /// # Errors
    ///
    /// [`InvalidQuotaChain`] when `quotas` is empty or too long.
    pub fn drain_now(&self, key: &Key, quotas: &[Quota], until: Instant) -> Result<(), BoxError> {
        validate(key, quotas, 0)?;
        let now = self.clock.now_nanos();
        let until = self.clock.nanos_at(until);
        self.store
            .with(key, now, |bucket| bucket.drain(quotas, until));
        Ok(())
    }

    /// The theoretical arrival time of the `index`-th quota of `key` (the instant at which its
    /// bucket is full again), or `None` if the key has no state (a [`direct`](LocalLimiter::direct)
    /// limiter answers for its one bucket, whatever the key). For tests and introspection.
    pub fn theoretical_arrival(&self, key: &Key, index: usize) -> Option<Instant> {
        if index >= MAX_CHAINED_QUOTAS {
            return None;
        }
        let tat = self.store.tat(key, index)?;
        Some(self.clock.epoch() + Duration::from_nanos(tat))
    }

    /// The number of keys held (always 1 for a [`direct`](LocalLimiter::direct) limiter).
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for LocalLimiter {
    fn default() -> Self {
        LocalLimiter::new()
    }
}

impl<C: fmt::Debug> fmt::Debug for LocalLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalLimiter")
            .field("keys", &self.store.len())
            .field("clock", &self.clock)
            .finish()
    }
}

impl<C: Clock> RateLimiter for LocalLimiter<C> {
    type AcquireFuture = Ready<Result<Decision, BoxError>>;
    type DrainFuture = Ready<Result<(), BoxError>>;

    #[inline]
    fn acquire(&self, key: &Key, quotas: &[Quota], cost: u32) -> Self::AcquireFuture {
        ready(self.check(key, quotas, cost))
    }

    #[inline]
    fn acquire_now(
        &self,
        key: &Key,
        quotas: &[Quota],
        cost: u32,
    ) -> Option<Result<Decision, BoxError>> {
        Some(self.check(key, quotas, cost))
    }

    fn drain(&self, key: &Key, quotas: &[Quota], until: Instant) -> Self::DrainFuture {
        ready(self.drain_now(key, quotas, until))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;

    fn quota(count: u32, period_ms: u64, burst: u32) -> Quota {
        Quota::new(count, Duration::from_millis(period_ms))
            .unwrap()
            .burst(burst)
            .unwrap()
    }

    #[test]
    fn burst_then_one_per_interval() {
        let bucket = Bucket::new();
        let q = [quota(10, 1000, 3)];
        for _ in 0..3 {
            assert_eq!(bucket.acquire(&q, 1, 0), Ok(()));
        }
        assert_eq!(bucket.acquire(&q, 1, 0), Err(100 * MS));
        assert_eq!(bucket.acquire(&q, 1, 99 * MS), Err(MS));
        assert_eq!(bucket.acquire(&q, 1, 100 * MS), Ok(()));
        assert_eq!(bucket.acquire(&q, 1, 100 * MS), Err(100 * MS));
        // Denials changed nothing.
        assert_eq!(bucket.tat(0), 400 * MS);
    }

    #[test]
    fn chained_quotas_are_all_or_nothing() {
        let bucket = Bucket::new();
        // 2 per 100 ms, burst 2 AND 3 per second, burst 3.
        let q = [quota(2, 100, 2), quota(3, 1000, 3)];
        assert_eq!(bucket.acquire(&q, 1, 0), Ok(()));
        assert_eq!(bucket.acquire(&q, 1, 0), Ok(()));
        let fast_before = bucket.tat(0);
        // The fast quota refuses: the slow one must not be charged.
        assert_eq!(bucket.acquire(&q, 1, 0), Err(50 * MS));
        assert_eq!(bucket.tat(0), fast_before);
        assert_eq!(bucket.tat(1), 2 * 333_333_334);
        assert_eq!(bucket.acquire(&q, 1, 50 * MS), Ok(()));
        let (fast, slow) = (bucket.tat(0), bucket.tat(1));
        // Now the slow quota refuses; the fast one must not be charged.
        let wait = bucket.acquire(&q, 1, 200 * MS).unwrap_err();
        assert_eq!(wait, 4 * 333_333_334 - (200 * MS + 3 * 333_333_334));
        assert_eq!((bucket.tat(0), bucket.tat(1)), (fast, slow));
    }

    #[test]
    fn weighted_costs_and_drain() {
        let bucket = Bucket::new();
        let q = [quota(10, 1000, 5)];
        assert_eq!(bucket.acquire(&q, 5, 0), Ok(()));
        assert_eq!(bucket.acquire(&q, 2, 0), Err(200 * MS));
        assert_eq!(bucket.acquire(&q, 0, 0), Ok(()));
        // Drain until 1 s: nothing passes before it, exactly one unit at it.
        bucket.drain(&q, 1000 * MS);
        assert_eq!(bucket.acquire(&q, 1, 999 * MS), Err(MS));
        assert_eq!(bucket.acquire(&q, 1, 1000 * MS), Ok(()));
        assert_eq!(bucket.acquire(&q, 1, 1000 * MS), Err(100 * MS));
        // A shorter drain does not shorten the longer one.
        let before = bucket.tat(0);
        bucket.drain(&q, 10 * MS);
        assert_eq!(bucket.tat(0), before);
    }

    #[tokio::test(start_paused = true)]
    async fn direct_limiter_shares_one_bucket_between_keys() {
        let limiter = LocalLimiter::direct();
        let q = [Quota::per_second(10).unwrap().burst(2).unwrap()];
        let (a, b) = (Key::new("a"), Key::new("b"));
        assert!(limiter.check(&a, &q, 1).unwrap().is_allowed());
        assert!(limiter.check(&b, &q, 1).unwrap().is_allowed());
        assert_eq!(
            limiter.check(&a, &q, 1).unwrap(),
            Decision::Denied {
                retry_after: Duration::from_millis(100)
            }
        );
        assert_eq!(limiter.len(), 1);
        // A drain of any key drains the one bucket; costs and chains are validated as ever.
        let until = Instant::now() + Duration::from_secs(3);
        limiter.drain_now(&b, &q, until).unwrap();
        assert_eq!(
            limiter.check(&a, &q, 1).unwrap(),
            Decision::Denied {
                retry_after: Duration::from_secs(3)
            }
        );
        assert!(limiter.theoretical_arrival(&a, 0).unwrap() >= until);
        assert!(
            limiter
                .check(&a, &q, 3)
                .unwrap_err()
                .is::<CostExceedsBurst>()
        );
        assert!(
            limiter
                .check(&a, &[], 1)
                .unwrap_err()
                .is::<InvalidQuotaChain>()
        );
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(limiter.check(&b, &[q[0], q[0]], 1).unwrap().is_allowed());
    }

    #[tokio::test(start_paused = true)]
    async fn costs_above_the_burst_are_errors_and_touch_nothing() {
        // Checked before any state is touched: no bucket inserted (an insert at the cap would
        // evict another key's), none changed; `cost × T` overflowing u64 included.
        let limiter = LocalLimiter::with_max_keys(8);
        let q = [Quota::per_hour(1).unwrap().burst(2).unwrap()];
        for (used, cost) in [(0, u32::MAX), (0, 3), (1, u32::MAX), (1, 3)] {
            let key = Key::new(format!("{used}-{cost}"));
            for _ in 0..used {
                assert!(limiter.check(&key, &q, 1).unwrap().is_allowed());
            }
            let keys = limiter.len();
            let err = limiter.check(&key, &q, cost).unwrap_err();
            assert_eq!(err.downcast_ref::<CostExceedsBurst>().unwrap().cost(), cost);
            assert_eq!(limiter.len(), keys);
            // The bucket is as before: exactly the rest of the burst passes.
            for _ in used..2 {
                assert!(limiter.check(&key, &q, 1).unwrap().is_allowed());
            }
            assert!(!limiter.check(&key, &q, 1).unwrap().is_allowed());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_to_the_end_of_time_refuses_and_never_wraps() {
        let limiter = LocalLimiter::new();
        let key = Key::new("k");
        let chain = [
            Quota::per_second(10).unwrap().burst(5).unwrap(),
            Quota::per_hour(100).unwrap().burst(50).unwrap(),
        ];
        let far = Instant::now() + Duration::from_secs(1 << 40);
        for quotas in [&chain[..1], &chain[..]] {
            limiter.drain_now(&key, quotas, far).unwrap();
            for cost in [1, 5] {
                assert!(!limiter.check(&key, quotas, cost).unwrap().is_allowed());
            }
        }
    }

    proptest! {
        /// Any cost: admitted only within the burst, an error exactly when above it.
        #[test]
        fn any_cost_is_admitted_refused_or_an_error_by_the_burst(
            cost in prop_oneof![0u32..8, any::<u32>()],
            burst in 1u32..6,
            period_ms in prop_oneof![Just(1u64), Just(1000), Just(3_600_000)],
        ) {
            let limiter = LocalLimiter::direct();
            let q = [Quota::with_period(Duration::from_millis(period_ms)).unwrap().burst(burst).unwrap()];
            let decision = limiter.check(&Key::new("k"), &q, cost);
            if cost > burst {
                prop_assert!(decision.unwrap_err().is::<CostExceedsBurst>());
            } else {
                prop_assert!(decision.unwrap().is_allowed());
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn limiter_validates_and_follows_tokio_time() {
        let limiter = LocalLimiter::new();
        let key = Key::new("search");
        let q = [Quota::per_minute(30).unwrap().burst(5).unwrap()];
        for _ in 0..5 {
            assert_eq!(limiter.check(&key, &q, 1).unwrap(), Decision::Allowed);
        }
        assert_eq!(
            limiter.acquire(&key, &q, 1).await.unwrap(),
            Decision::Denied {
                retry_after: Duration::from_secs(2)
            }
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(limiter.acquire(&key, &q, 1).await.unwrap().is_allowed());
        let err = limiter.check(&key, &q, 6).unwrap_err();
        let err = err.downcast_ref::<CostExceedsBurst>().unwrap();
        assert_eq!((err.cost(), err.burst()), (6, 5));
        assert!(
            limiter
                .check(&key, &[], 1)
                .unwrap_err()
                .is::<InvalidQuotaChain>()
        );
        assert!(limiter.check(&key, &[q[0]; 5], 1).is_err());

        let until = Instant::now() + Duration::from_secs(30);
        limiter.drain(&key, &q, until).await.unwrap();
        assert_eq!(
            limiter.check(&key, &q, 1).unwrap(),
            Decision::Denied {
                retry_after: Duration::from_secs(30)
            }
        );
        assert!(limiter.theoretical_arrival(&key, 0).unwrap() >= until);
        assert_eq!(limiter.len(), 1);
        assert!(format!("{limiter:?}").contains("keys: 1"));
    }

    #[test]
    fn threads_never_over_admit() {
        let bucket = Bucket::new();
        let q = [quota(1000, 1000, 20)];
        let admitted = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        if bucket.acquire(&q, 1, 5 * MS).is_ok() {
                            admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        // All at the same instant on a fresh bucket: exactly the burst passes.
        assert_eq!(admitted.load(std::sync::atomic::Ordering::Relaxed), 20);
    }

    proptest! {
        /// Against a reference model: in any sequence of acquires at nondecreasing times, the
        /// admitted cost in any window [t, t + w] is at most b + w / T, and the bucket answers
        /// exactly as the textbook GCRA.
        #[test]
        fn matches_reference_gcra(
            steps in proptest::collection::vec((0u64..300, 0u32..4, 0usize..2), 1..200),
        ) {
            let quotas = [quota(10, 1000, 3), quota(20, 4000, 4)];
            for chain in [1usize, 2] {
                let bucket = Bucket::new();
                let q = &quotas[..chain];
                let mut model = [0u64; 2];
                let mut now = 0u64;
                let mut admitted: Vec<(u64, u32)> = Vec::new();
                for &(dt, cost, _) in &steps {
                    now += dt * MS;
                    let cost = cost.min(3);
                    let mut wait = 0;
                    let mut next = [0u64; 2];
                    for (i, quota) in q.iter().enumerate() {
                        next[i] = model[i].max(now) + quota.emission_interval_nanos() * u64::from(cost);
                        wait = wait.max(next[i].saturating_sub(now + quota.burst_span_nanos()));
                    }
                    let expected = if wait == 0 { model = next; Ok(()) } else { Err(wait) };
                    prop_assert_eq!(bucket.acquire(q, cost, now), expected);
                    if expected.is_ok() { admitted.push((now, cost)); }
                }
                for &(start, _) in &admitted {
                    for w in [0u64, 100 * MS, 1000 * MS] {
                        let sum: u64 = admitted.iter().filter(|(t, _)| *t >= start && *t <= start + w).map(|&(_, c)| u64::from(c)).sum();
                        prop_assert!(sum <= 3 + w / (100 * MS), "window {} at {}: {}", w, start, sum);
                    }
                }
            }
        }
    }
}

#[cfg(loom)]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicU32;

    fn quota(count: u32, burst: u32) -> Quota {
        Quota::new(count, Duration::from_secs(1))
            .unwrap()
            .burst(burst)
            .unwrap()
    }

    /// Two threads race for the last unit of one quota: exactly one wins, and the state is the
    /// one a sequential order would give.
    #[test]
    fn single_quota_cas_admits_exactly_the_burst() {
        loom::model(|| {
            let bucket = Arc::new(Bucket::new());
            let q = [quota(10, 2)];
            bucket.acquire(&q, 1, 0).unwrap();
            let admitted = Arc::new(AtomicU32::new(0));
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let (bucket, admitted) = (Arc::clone(&bucket), Arc::clone(&admitted));
                    loom::thread::spawn(move || {
                        if bucket.acquire(&q, 1, 0).is_ok() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                })
                .collect();
            for thread in threads {
                thread.join().unwrap();
            }
            assert_eq!(admitted.load(Ordering::Relaxed), 1);
            assert_eq!(bucket.tat(0), 200_000_000);
        });
    }

    /// A chained acquire races a single-quota acquire (after a runtime change of the key's
    /// quotas) for the last unit of quota 0, while a drain takes the chain lock: exactly one
    /// wins, and quota 1 is charged if and only if the chained acquire won (never a partial
    /// update).
    #[test]
    fn chained_acquire_races_single_and_drain() {
        loom::model(|| {
            let bucket = Arc::new(Bucket::new());
            let chained = [quota(10, 1), quota(10, 1)];
            let single = [quota(10, 1)];
            let a = {
                let bucket = Arc::clone(&bucket);
                loom::thread::spawn(move || bucket.acquire(&chained, 1, 0).is_ok())
            };
            let b = {
                let bucket = Arc::clone(&bucket);
                loom::thread::spawn(move || bucket.acquire(&single, 1, 0).is_ok())
            };
            bucket.drain(&[quota(10, 1)], 0);
            let chained_ok = a.join().unwrap();
            let single_ok = b.join().unwrap();
            assert!(chained_ok ^ single_ok, "exactly one wins the last unit");
            assert_eq!(bucket.tat(0), 100_000_000);
            assert_eq!(bucket.tat(1), if chained_ok { 100_000_000 } else { 0 });
        });
    }
}
