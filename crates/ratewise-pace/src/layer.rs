//! [`PaceLayer`], its quota table and its runtime handle.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use arc_swap::ArcSwap;
use hashbrown::HashTable;
use std::time::Duration;

use ratewise_core::{BoxError, Global, Key, KeyFn, KeyedState, KeyedStateConfig};
use tokio::time::Instant;
use tower_layer::Layer;

use crate::limiter::RateLimiter;
use crate::local::LocalLimiter;
use crate::queue::KeyState;
use crate::quota::Quotas;
use crate::request::{CostFn, UnitCost};
use crate::service::Pace;

/// Which quotas each key has: per key (the buckets of a
/// [`RouteTable`](ratewise_core::RouteTable), hosts, ...), plus an optional default for keys
/// not listed.
///
/// ```
/// use ratewise_pace::{Quota, QuotaTable};
///
/// // The seed's three endpoints; other paths are not paced.
/// let table = QuotaTable::new()
///     .with("repos", Quota::per_hour(5000)?.burst(50)?)
///     .with("search", Quota::per_minute(30)?.burst(5)?)
///     .with("graphql", Quota::per_hour(5000)?.burst(20)?);
/// assert!(table.get(&"search".into()).is_some());
/// assert!(table.get(&"default".into()).is_none());
/// # Ok::<(), ratewise_pace::QuotaError>(())
/// ```
#[derive(Clone, Default)]
pub struct QuotaTable {
    default: Option<Quotas>,
    /// Indexed by [`Key::prehash`]: the lookup on every request hashes nothing.
    keys: HashTable<(Key, Quotas)>,
}

impl QuotaTable {
    /// An empty table: no key is paced until given quotas.
    pub fn new() -> Self {
        QuotaTable::default()
    }

    /// Gives `key` its (chained) quotas.
    pub fn with(mut self, key: impl Into<Key>, quotas: impl Into<Quotas>) -> Self {
        self.insert(key.into(), quotas.into());
        self
    }

    fn insert(&mut self, key: Key, quotas: Quotas) {
        match self.keys.entry(
            key.prehash(),
            |(listed, _)| *listed == key,
            |(listed, _)| listed.prehash(),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut listed) => listed.get_mut().1 = quotas,
            hashbrown::hash_table::Entry::Vacant(vacant) => {
                vacant.insert((key, quotas));
            }
        }
    }

    fn remove(&mut self, key: &Key) {
        if let Ok(listed) = self
            .keys
            .find_entry(key.prehash(), |(listed, _)| listed == key)
        {
            listed.remove();
        }
    }

    /// The quotas of every key not listed [none: such keys are not paced].
    pub fn default_quotas(mut self, quotas: impl Into<Quotas>) -> Self {
        self.default = Some(quotas.into());
        self
    }

    /// The quotas of `key`: its own, else the default, else `None` (not paced).
    pub fn get(&self, key: &Key) -> Option<Quotas> {
        self.get_ref(key).copied()
    }

    #[inline]
    pub(crate) fn get_ref(&self, key: &Key) -> Option<&Quotas> {
        self.keys
            .find(key.prehash(), |(listed, _)| listed == key)
            .map(|(_, quotas)| quotas)
            .or(self.default.as_ref())
    }
}

impl fmt::Debug for QuotaTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuotaTable")
            .field("keys", &DebugKeys(&self.keys))
            .field("default", &self.default)
            .finish()
    }
}

/// Lists a table's keys and quotas like a map.
struct DebugKeys<'a>(&'a HashTable<(Key, Quotas)>);

impl fmt::Debug for DebugKeys<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(key, quotas)| (key, quotas)))
            .finish()
    }
}

/// One service's cached view of its layer's quota table.
pub(crate) type TableCache = arc_swap::Cache<Arc<ArcSwap<QuotaTable>>, Arc<QuotaTable>>;

/// The state every clone of a layer, and every service it makes, shares.
pub(crate) struct Shared<L> {
    pub(crate) limiter: L,
    /// Read on every request without a lock (each service keeps an [`arc_swap::Cache`] of it);
    /// replaced whole on (rare) runtime changes.
    table: Arc<ArcSwap<QuotaTable>>,
    pub(crate) keys: KeyedState<KeyState>,
    /// Waiters over all keys: when 0, the fast path skips the key's queue.
    pub(crate) total_waiting: Arc<AtomicUsize>,
}

impl<L> Shared<L> {
    fn new(limiter: L, table: QuotaTable) -> Self {
        Shared {
            limiter,
            table: Arc::new(ArcSwap::from_pointee(table)),
            keys: KeyedState::new(KeyedStateConfig::new())
                .expect("the default keyed state configuration is valid"),
            total_waiting: Arc::new(AtomicUsize::new(0)),
        }
    }

    #[inline]
    pub(crate) fn quotas(&self, key: &Key) -> Option<Quotas> {
        self.table.load().get(key)
    }

    /// A cache of the current table for one service: a `call` reads it with one relaxed load
    /// of the table's pointer (no reference count, no `arc-swap` debt slot).
    pub(crate) fn table_cache(&self) -> TableCache {
        arc_swap::Cache::new(Arc::clone(&self.table))
    }

    /// Copy-on-write update; concurrent updates are applied one after the other.
    fn update(&self, f: impl Fn(&mut QuotaTable)) {
        self.table.rcu(|table| {
            let mut table = QuotaTable::clone(table);
            f(&mut table);
            table
        });
    }
}

/// How a layer's services wait.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Settings {
    pub(crate) max_wait: Option<Duration>,
    pub(crate) reserve: f64,
    pub(crate) max_concurrency: Option<usize>,
}

/// A [`PaceLayer`] setting that cannot work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PaceConfigError {
    /// The reserve was not a fraction in `[0, 1)`.
    InvalidReserve,
    /// The concurrency cap was 0, or larger than tokio's semaphore allows.
    InvalidConcurrency,
}

impl fmt::Display for PaceConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            PaceConfigError::InvalidReserve => "pace reserve must be a fraction in [0, 1)",
            PaceConfigError::InvalidConcurrency => {
                "pace max_concurrency must be at least 1 (and at most usize::MAX >> 3)"
            }
        })
    }
}

impl std::error::Error for PaceConfigError {}

/// Paces requests with GCRA: per key, chained quotas, weighted costs, FIFO waiting.
///
/// See the [module docs](crate) for the behaviour and an example.
///
/// # Clone
///
/// The limiter, the quota table and the waiter queues live in an `Arc` created by the
/// constructor: cloning this layer, or the services it makes, **shares one budget**; it never
/// creates a new one. Builder methods (`max_wait`, `reserve`, ...) configure this value: call
/// them before cloning it.
#[must_use]
pub struct PaceLayer<L = LocalLimiter, K = Global, C = UnitCost> {
    pub(crate) shared: Arc<Shared<L>>,
    pub(crate) key_fn: Arc<K>,
    pub(crate) cost_fn: Arc<C>,
    pub(crate) settings: Settings,
}

impl PaceLayer {
    /// One bucket shared by every request, with these (chained) quotas.
    ///
    /// The limiter is a [`LocalLimiter::direct`]: one bucket and no lookup. Every key shares
    /// it, so a [`PaceHandle`] of this layer drains the one bucket whatever key it names (the
    /// layer's requests all have one key, `global`).
    ///
    /// ```
    /// use ratewise_pace::{PaceLayer, Quota};
    ///
    /// let layer = PaceLayer::new(Quota::per_second(10)?.burst(5)?);
    /// # drop(layer);
    /// # Ok::<(), ratewise_pace::QuotaError>(())
    /// ```
    pub fn new(quotas: impl Into<Quotas>) -> Self {
        let key = Key::new("global");
        // One key: a single bucket needs no lookup.
        PaceLayer::build(
            LocalLimiter::direct(),
            Global::named(key.clone()),
            QuotaTable::new().with(key, quotas),
        )
    }
}

impl<K: KeyFn> PaceLayer<LocalLimiter, K> {
    /// One bucket per key: `key_fn` names the key of each request (for example
    /// [`ByRoute`](ratewise_core::ByRoute) over a [`RouteTable`](ratewise_core::RouteTable)),
    /// and `quotas` gives each key its (chained) quotas. Keys without quotas are not paced.
    ///
    /// The in-memory [`LocalLimiter`] keeps the buckets (at most 100 000 keys, full buckets
    /// dropped); use [`limiter`](Self::limiter) for another store.
    pub fn keyed(key_fn: K, quotas: QuotaTable) -> Self {
        PaceLayer::build(LocalLimiter::new(), key_fn, quotas)
    }
}

impl<L, K> PaceLayer<L, K> {
    fn build(limiter: L, key_fn: K, quotas: QuotaTable) -> Self {
        PaceLayer {
            shared: Arc::new(Shared::new(limiter, quotas)),
            key_fn: Arc::new(key_fn),
            cost_fn: Arc::new(UnitCost),
            settings: Settings {
                max_wait: None,
                reserve: 0.0,
                max_concurrency: None,
            },
        }
    }
}

impl<L, K, C> PaceLayer<L, K, C> {
    /// Uses `limiter` (for example the Redis limiter) instead of the in-memory one, keeping the
    /// quota table.
    pub fn limiter<L2: RateLimiter>(self, limiter: L2) -> PaceLayer<L2, K, C> {
        let table = QuotaTable::clone(&self.shared.table.load());
        PaceLayer {
            shared: Arc::new(Shared::new(limiter, table)),
            key_fn: self.key_fn,
            cost_fn: self.cost_fn,
            settings: self.settings,
        }
    }

    /// The cost of each request (default 1); see [`CostFn`].
    pub fn cost<C2: CostFn>(self, cost_fn: C2) -> PaceLayer<L, K, C2> {
        PaceLayer {
            shared: self.shared,
            key_fn: self.key_fn,
            cost_fn: Arc::new(cost_fn),
            settings: self.settings,
        }
    }

    /// Fail fast with [`PaceWaitTooLong`](ratewise_core::PaceWaitTooLong) instead of waiting
    /// when the wait would exceed `max_wait` [default: wait as long as needed]. `Duration::ZERO`
    /// never waits.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.settings.max_wait = Some(max_wait);
        self
    }

    /// Keeps `fraction` of each key's burst (`floor(fraction × burst)` units of each quota)
    /// for requests above [`Priority::Low`](crate::Priority::Low): a low-priority request that
    /// would dip into the reserve, or would have to wait, fails fast with
    /// [`PaceWaitTooLong`](ratewise_core::PaceWaitTooLong) instead [default 0: no reserve].
    ///
    /// # Errors
    ///
    /// [`PaceConfigError::InvalidReserve`] unless `0 <= fraction < 1`.
    pub fn reserve(mut self, fraction: f64) -> Result<Self, PaceConfigError> {
        if !(0.0..1.0).contains(&fraction) {
            return Err(PaceConfigError::InvalidReserve);
        }
        self.settings.reserve = fraction;
        Ok(self)
    }

    /// At most `max` requests of one key in flight at once (GitHub allows 100); a permit is
    /// held from admission until the response future completes or is dropped [default: no
    /// cap]. Requests wait for a permit (in FIFO order) before they wait for their pacing slot.
    ///
    /// # Errors
    ///
    /// [`PaceConfigError::InvalidConcurrency`] when `max` is 0 or absurdly large.
    pub fn max_concurrency(mut self, max: usize) -> Result<Self, PaceConfigError> {
        if max == 0 || max > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(PaceConfigError::InvalidConcurrency);
        }
        self.settings.max_concurrency = Some(max);
        Ok(self)
    }

    /// A handle to change quotas and drain keys at runtime; it shares this layer's state.
    pub fn handle(&self) -> PaceHandle<L> {
        PaceHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<L, K, C> Clone for PaceLayer<L, K, C> {
    fn clone(&self) -> Self {
        PaceLayer {
            shared: Arc::clone(&self.shared),
            key_fn: Arc::clone(&self.key_fn),
            cost_fn: Arc::clone(&self.cost_fn),
            settings: self.settings,
        }
    }
}

impl<L, K, C> fmt::Debug for PaceLayer<L, K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PaceLayer")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<S, L, K, C> Layer<S> for PaceLayer<L, K, C> {
    type Service = Pace<S, L, K, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Pace {
            inner,
            table: self.shared.table_cache(),
            shared: Arc::clone(&self.shared),
            key_fn: Arc::clone(&self.key_fn),
            cost_fn: Arc::clone(&self.cost_fn),
            settings: self.settings,
        }
    }
}

/// Changes a [`PaceLayer`]'s quotas and drains its keys at runtime.
///
/// Quotas travel with every acquire (see [`RateLimiter`]), so a change applies from the next
/// request on; a key keeps its bucket state (what it has used) across changes.
///
/// # Clone
///
/// Clones share the layer's state.
pub struct PaceHandle<L = LocalLimiter> {
    shared: Arc<Shared<L>>,
}

impl<L> PaceHandle<L> {
    /// Gives `key` new (chained) quotas, from the next request on.
    ///
    /// The key's bucket state carries over quota by quota (keep the order of the old quotas):
    /// what the key has used is still counted, so a request the old quota would have delayed
    /// to `t` passes at `t` at the earliest even if the new quota is faster.
    pub fn set_quotas(&self, key: impl Into<Key>, quotas: impl Into<Quotas>) {
        let (key, quotas) = (key.into(), quotas.into());
        tracing::debug!(key = %key, ?quotas, "pace: quotas changed");
        self.shared.update(|table| {
            table.insert(key.clone(), quotas);
        });
    }

    /// Removes `key`'s own quotas: it falls back to the default.
    pub fn remove_quotas(&self, key: &Key) {
        self.shared.update(|table| {
            table.remove(key);
        });
    }

    /// Sets (or, with `None`, removes) the quotas of keys not listed.
    pub fn set_default_quotas(&self, quotas: Option<Quotas>) {
        self.shared.update(|table| table.default = quotas);
    }

    /// The quotas `key` is paced with now, or `None` if it is not paced.
    pub fn quotas(&self, key: &Key) -> Option<Quotas> {
        self.shared.quotas(key)
    }

    /// The number of requests of `key` waiting for their slot now.
    pub fn waiting(&self, key: &Key) -> usize {
        self.shared.keys.get(key).map_or(0, |state| state.waiting())
    }

    /// The limiter.
    pub fn limiter(&self) -> &L {
        &self.shared.limiter
    }
}

impl<L: RateLimiter> PaceHandle<L> {
    /// A cooldown: `key` admits nothing before `until` (see [`RateLimiter::drain`]). Waiters
    /// keep their order and are admitted from `until` on; those whose `max_wait` or deadline
    /// comes first fail with [`PaceWaitTooLong`](ratewise_core::PaceWaitTooLong). Does
    /// nothing for a key that is not paced.
    ///
    /// # Errors
    ///
    /// The limiter's error (for a remote limiter, when the store is unreachable).
    pub async fn drain(&self, key: &Key, until: Instant) -> Result<(), BoxError> {
        let Some(quotas) = self.shared.quotas(key) else {
            return Ok(());
        };
        tracing::debug!(key = %key, until = ?until.saturating_duration_since(Instant::now()), "pace: key drained");
        self.shared
            .limiter
            .drain(key, quotas.as_slice(), until)
            .await
    }
}

impl<L> Clone for PaceHandle<L> {
    fn clone(&self) -> Self {
        PaceHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<L> fmt::Debug for PaceHandle<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PaceHandle").finish_non_exhaustive()
    }
}
