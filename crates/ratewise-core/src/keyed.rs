//! [`KeyedState`]: bounded per-key state shared by every clone of a layer.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crossbeam_utils::sync::{ShardedLock, ShardedLockReadGuard, ShardedLockWriteGuard};
use std::time::Duration;

use hashbrown::HashTable;
use tokio::time::Instant;

use crate::key::Key;

const SHARDS: usize = 16;

/// [`KeyedState::get`] records its time only when the key's last use is older than this: LRU
/// order and idle eviction need no finer time, and skipping the store keeps threads that read
/// the same key from writing (and bouncing) its cache line on every call.
const TOUCH_GRANULARITY_NANOS: u64 = 1_000_000;

/// The low bit of [`Slot::last_used`]: the key was used, by a hit that read no clock, since the
/// time in the other bits (see [`Slot::mark_used`]).
const USED: u64 = 1;

/// Limits of a [`KeyedState`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyedStateConfig {
    max_keys: usize,
    idle_timeout: Option<Duration>,
}

impl KeyedStateConfig {
    /// At most 10 000 keys; keys idle for 10 minutes are evicted.
    pub const fn new() -> Self {
        KeyedStateConfig {
            max_keys: 10_000,
            idle_timeout: Some(Duration::from_secs(600)),
        }
    }

    /// The hard cap on the number of keys [10 000]. Inserting past it evicts the least recently
    /// used keys first. Must be at least 1.
    pub const fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// Keys not used for this long, and not held by anyone, are evicted [10 minutes]: never
    /// sooner, and perhaps a sweep later (see [`KeyedState`]). `None` keeps keys until the
    /// cap pushes them out.
    pub const fn idle_timeout(mut self, idle_timeout: Option<Duration>) -> Self {
        self.idle_timeout = idle_timeout;
        self
    }

    /// The cap on the number of keys.
    pub const fn get_max_keys(&self) -> usize {
        self.max_keys
    }

    /// The idle timeout, if keys are evicted when idle.
    pub const fn get_idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout
    }
}

impl Default for KeyedStateConfig {
    fn default() -> Self {
        KeyedStateConfig::new()
    }
}

/// A [`KeyedStateConfig`] that cannot work.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyedStateError {
    /// `max_keys` was 0.
    ZeroMaxKeys,
    /// `idle_timeout` was zero.
    ZeroIdleTimeout,
}

impl fmt::Display for KeyedStateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyedStateError::ZeroMaxKeys => f.pad("keyed state needs max_keys >= 1"),
            KeyedStateError::ZeroIdleTimeout => f.pad("keyed state idle_timeout must be > 0"),
        }
    }
}

impl std::error::Error for KeyedStateError {}

/// Per-key state for a layer, bounded in the number of keys and evicted when idle.
///
/// - **Concurrent get-or-insert**: the state of a key is created once, however many tasks ask
///   for it at the same time. Lookups of existing keys take a shared (read) lock on one of 16
///   shards and allocate nothing.
/// - **Idle eviction** on tokio's clock (so it follows a paused clock in tests): a key not used
///   for `idle_timeout` whose state nobody holds (no outstanding [`Arc`] from
///   [`get_or_insert_with`](Self::get_or_insert_with)) is removed by a sweep. Sweeps run
///   while inserting new keys, at most every quarter of `idle_timeout`, or when
///   [`evict_idle`](Self::evict_idle) is called. A key is never evicted less than
///   `idle_timeout` after its last use (to within 1 ms: uses closer together than that record
///   the first one's time); see below for how late it may be.
/// - **Hits read no clock.** A hit through [`with_or_insert`](Self::with_or_insert) or
///   [`get_or_insert_with`](Self::get_or_insert_with) only marks its key used (one load, and a
///   store the first time after each sweep); the next sweep, or eviction for the cap, stamps
///   every marked key with its own time. So a key last used by such a hit counts as used at
///   the first sweep after that hit, and may stay past `idle_timeout` after its use by as long
///   as that sweep took to come (sweeps come at most every quarter of `idle_timeout`, and only
///   as often as keys are inserted or [`evict_idle`](Self::evict_idle) is called). Inserts and
///   [`get`](Self::get) record their own time.
/// - **A hard cap** on the number of keys: when an insert would pass `max_keys`, the least
///   recently used keys are evicted (unheld ones first), in a batch of 1/16 of the cap so the
///   cost of the scan is amortized. Keys used only by hits since the previous sweep or cap
///   eviction count as used at the time of this one, as in the CLOCK approximation of LRU:
///   after a long stretch without inserts, every key hit in it ties, and the batch is taken
///   among them in no particular order (held keys still go last, and keys idle longer than
///   `idle_timeout` are gone already). A victim is removed only if it is still the state that
///   was chosen and, if it was unheld, nobody took or used it since.
///   The map holds at most `max_keys` keys once every call that inserts has returned, unless
///   requests took or used, during the eviction, the very keys it had chosen (those are kept,
///   and a later insert evicts again); while threads insert new keys at the same moment, it
///   may hold up to one more per such thread, which each of them evicts before returning.
///   Evictions are serialized, so racing inserts never evict more than one batch between them.
/// - [`len`](Self::len) is exact whenever no call is running; during calls it may briefly count
///   a key that is being removed (never fewer keys than the map holds, never an underflow).
///
/// A state that is evicted while a request still holds its `Arc` stays valid for that request;
/// the next request for the key starts with a new state. Layers choose `idle_timeout` so that
/// an idle key's state is equivalent to a new one (for example a token bucket that has refilled).
///
/// # Memory
///
/// Per key: about 80 bytes (a 40-byte table entry holding the key and its hash, a control byte,
/// the `Arc` header and slack), plus the key's name
/// (shared with the key function's interned copy) and `size_of::<V>()`. Per map: 2 KiB for
/// the 16 shards, each on cache lines of its own, and 16 KiB for their per-thread reader locks.
///
/// # Clone
///
/// Clones share the same map.
pub struct KeyedState<V> {
    shared: Arc<Shared<V>>,
}

/// A shard's lock and table header on cache lines of their own (two lines, for the
/// adjacent-line prefetcher).
///
/// The lock is crossbeam's `ShardedLock`, not `std::sync::RwLock`: a `RwLock` read lock writes
/// the lock word, so every thread looking up keys of one shard (every request to one host, in
/// every layer) bounces that line; `ShardedLock` gives each thread its own reader lock. Hits
/// then write nothing shared (`mark_used` writes only when the bit is clear). Writers (new
/// keys, sweeps, evictions) take every reader lock: the rare path.
#[repr(align(128))]
struct Shard<V>(ShardedLock<HashTable<Entry<V>>>);

struct Shared<V> {
    /// Indexed by each key's [`prehash`](Key::prehash): a lookup hashes nothing.
    shards: Box<[Shard<V>]>,
    len: AtomicUsize,
    config: KeyedStateConfig,
    epoch: Instant,
    /// Nanoseconds since `epoch` of the last idle sweep.
    last_sweep: AtomicU64,
    /// Held while evicting for the cap, so racing inserts do not each evict a batch.
    evicting: Mutex<()>,
}

struct Entry<V> {
    key: Key,
    slot: Slot<V>,
}

fn entry_prehash<V>(entry: &Entry<V>) -> u64 {
    entry.key.prehash()
}

struct Slot<V> {
    value: Arc<V>,
    /// Nanoseconds since the map's epoch of the last recorded use, in the bits above [`USED`].
    last_used: AtomicU64,
}

impl<V> Clone for KeyedState<V> {
    fn clone(&self) -> Self {
        KeyedState {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<V> fmt::Debug for KeyedState<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedState")
            .field("len", &self.len())
            .field("config", &self.shared.config)
            .finish()
    }
}

impl<V> KeyedState<V> {
    /// An empty map with these limits.
    ///
    /// # Errors
    ///
    /// [`KeyedStateError`] when `max_keys` is 0 or `idle_timeout` is zero.
    pub fn new(config: KeyedStateConfig) -> Result<Self, KeyedStateError> {
        if config.max_keys == 0 {
            return Err(KeyedStateError::ZeroMaxKeys);
        }
        if config.idle_timeout == Some(Duration::ZERO) {
            return Err(KeyedStateError::ZeroIdleTimeout);
        }
        let shards = (0..SHARDS)
            .map(|_| Shard(ShardedLock::new(HashTable::new())))
            .collect();
        Ok(KeyedState {
            shared: Arc::new(Shared {
                shards,
                len: AtomicUsize::new(0),
                config,
                epoch: Instant::now(),
                last_sweep: AtomicU64::new(0),
                evicting: Mutex::new(()),
            }),
        })
    }

    /// The limits this map was made with.
    pub fn config(&self) -> KeyedStateConfig {
        self.shared.config
    }

    /// The number of keys held now.
    pub fn len(&self) -> usize {
        self.shared.len.load(Ordering::Relaxed)
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The state of `key`, created by `init` if the key is new. Holding the returned `Arc` keeps
    /// the key from idle eviction.
    pub fn get_or_insert_with(&self, key: &Key, init: impl FnOnce() -> V) -> Arc<V> {
        self.with_or_insert(key, init, Arc::clone)
    }

    /// Calls `f` with the state of `key` (created by `init` if the key is new) without cloning
    /// the `Arc`: the cheapest access, for short synchronous updates such as an atomic
    /// compare-and-swap.
    ///
    /// `f` runs under a lock of the key's shard (shared on a hit, exclusive when the key is
    /// inserted): it must not block or call back into this map.
    pub fn with_or_insert<R>(
        &self,
        key: &Key,
        init: impl FnOnce() -> V,
        f: impl FnOnce(&Arc<V>) -> R,
    ) -> R {
        let shared = &*self.shared;
        let shard = shared.shard(key);
        {
            let map = read(shard);
            if let Some(entry) = map.find(key.prehash(), |entry| entry.key == *key) {
                entry.slot.mark_used();
                return f(&entry.slot.value);
            }
        }
        self.insert_slow(key, init, shared.now_nanos(), f)
    }

    #[cold]
    fn insert_slow<R>(
        &self,
        key: &Key,
        init: impl FnOnce() -> V,
        now: u64,
        f: impl FnOnce(&Arc<V>) -> R,
    ) -> R {
        let shared = &*self.shared;
        let max = shared.config.max_keys;
        self.maybe_sweep_idle(now);
        if shared.len.load(Ordering::Relaxed) >= max {
            // Room for this key and a batch more, so the next inserts need no scan.
            self.evict_lru(key, max - (max / 16).max(1));
        }
        let mut inserted = false;
        let result = {
            let mut map = write(shared.shard(key));
            let entry = map
                .entry(key.prehash(), |entry| entry.key == *key, entry_prehash)
                .or_insert_with(|| {
                    inserted = true;
                    shared.len.fetch_add(1, Ordering::Relaxed);
                    Entry {
                        key: key.clone(),
                        slot: Slot {
                            value: Arc::new(init()),
                            last_used: AtomicU64::new(now & !USED),
                        },
                    }
                })
                .into_mut();
            entry.slot.touch(now);
            f(&entry.slot.value)
        };
        if inserted && shared.len.load(Ordering::Relaxed) > max {
            // Inserts racing with this one went past the cap: bring it back before returning
            // rather than at some later insert.
            self.evict_lru(key, max - 1);
        }
        result
    }

    /// The state of `key` if it is held.
    pub fn get(&self, key: &Key) -> Option<Arc<V>> {
        let shared = &*self.shared;
        let now = shared.now_nanos();
        let map = read(shared.shard(key));
        map.find(key.prehash(), |entry| entry.key == *key)
            .map(|entry| {
                entry.slot.touch(now);
                Arc::clone(&entry.slot.value)
            })
    }

    /// Removes `key`, returning its state.
    pub fn remove(&self, key: &Key) -> Option<Arc<V>> {
        let mut map = write(self.shared.shard(key));
        let found = map
            .find_entry(key.prehash(), |entry| entry.key == *key)
            .ok()?;
        let (entry, _) = found.remove();
        self.shared.len.fetch_sub(1, Ordering::Relaxed);
        Some(entry.slot.value)
    }

    /// Calls `f` for every key and its state (the map may change meanwhile; each shard is read
    /// under its lock, so `f` must not call back into this map).
    pub fn for_each(&self, mut f: impl FnMut(&Key, &Arc<V>)) {
        for Shard(shard) in self.shared.shards.iter() {
            for entry in read(shard).iter() {
                f(&entry.key, &entry.slot.value);
            }
        }
    }

    /// Removes every key idle for longer than `idle_timeout` whose state nobody holds; returns
    /// how many were removed. Does nothing without an idle timeout.
    pub fn evict_idle(&self) -> usize {
        let shared = &*self.shared;
        let Some(idle) = shared.config.idle_timeout else {
            return 0;
        };
        shared
            .last_sweep
            .store(shared.now_nanos(), Ordering::Relaxed);
        let idle = duration_nanos(idle);
        let mut removed = 0;
        for Shard(shard) in shared.shards.iter() {
            let mut map = write(shard);
            // Read under the lock: no hit of this shard is running, so each marked key was
            // used at or before this time.
            let now = shared.now_nanos();
            map.retain(|Entry { slot, .. }| {
                let used = slot.harvest(now);
                let keep = Arc::strong_count(&slot.value) > 1 || now.saturating_sub(used) < idle;
                removed += usize::from(!keep);
                keep
            });
        }
        shared.len.fetch_sub(removed, Ordering::Relaxed);
        removed
    }

    fn maybe_sweep_idle(&self, now: u64) {
        let shared = &*self.shared;
        let Some(idle) = shared.config.idle_timeout else {
            return;
        };
        let last = shared.last_sweep.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= duration_nanos(idle) / 4
            && shared
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.evict_idle();
        }
    }

    /// Evicts the least recently used keys other than `keep` (those nobody holds first) until
    /// at most `target` keys other than `keep` remain.
    #[cold]
    fn evict_lru(&self, keep: &Key, target: usize) {
        let shared = &*self.shared;
        // One eviction at a time; the scan below sees what an earlier one left.
        let _evicting = lock(&shared.evicting);
        // (held, last use, shard, key, identity of the state): the identity is an address,
        // not a clone, so that taking it does not make the state look held.
        let mut candidates: Vec<(bool, u64, usize, Key, usize)> = Vec::new();
        for (index, Shard(shard)) in shared.shards.iter().enumerate() {
            // Exclusive, with the time read under the lock, to stamp the marked keys (as a
            // sweep does).
            let map = write(shard);
            let now = shared.now_nanos();
            for Entry { key, slot } in map.iter() {
                let used = slot.harvest(now);
                if key != keep {
                    let held = Arc::strong_count(&slot.value) > 1;
                    let identity = Arc::as_ptr(&slot.value) as *const () as usize;
                    candidates.push((held, used, index, key.clone(), identity));
                }
            }
        }
        let count = candidates.len().saturating_sub(target);
        if count == 0 {
            return;
        }
        if count < candidates.len() {
            candidates.select_nth_unstable_by(count - 1, |a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        }
        let mut removed = 0;
        for (held, used, index, key, identity) in candidates.into_iter().take(count) {
            let mut map = write(&shared.shards[index].0);
            let Ok(found) = map.find_entry(key.prehash(), |entry| entry.key == key) else {
                continue;
            };
            // The locks were released since the scan: evict only the very state that was
            // chosen, and an unheld one only if nobody took or used it meanwhile (a request
            // that just joined a key's queue must not lose it to a stale choice).
            if found.get().slot.still_chosen(held, used, identity) {
                found.remove();
                removed += 1;
            }
        }
        shared.len.fetch_sub(removed, Ordering::Relaxed);
    }
}

impl<V> Shared<V> {
    fn shard(&self, key: &Key) -> &ShardedLock<HashTable<Entry<V>>> {
        // Bits 40..44: each shard's table uses the low bits (bucket index) and the top 7 bits
        // (the tag that filters probes), so choosing the shard by either would leave every key
        // of a shard with nearly the same index or tag.
        &self.shards[(key.prehash() >> 40) as usize % SHARDS].0
    }

    fn now_nanos(&self) -> u64 {
        duration_nanos(Instant::now().saturating_duration_since(self.epoch))
    }
}

impl<V> Slot<V> {
    /// A use at a time the caller did not read: marks the slot, which a hit of many threads
    /// then only reads (no store, no bouncing cache line) until the next sweep stamps it.
    #[inline]
    fn mark_used(&self) {
        if self.last_used.load(Ordering::Relaxed) & USED == 0 {
            self.last_used.fetch_or(USED, Ordering::Relaxed);
        }
    }

    /// A use at `now`, keeping the mark of a hit that may have raced in.
    fn touch(&self, now: u64) {
        let last = self.last_used.load(Ordering::Relaxed);
        if (last & !USED).saturating_add(TOUCH_GRANULARITY_NANOS) <= now {
            // Relaxed: an older timestamp racing in only makes eviction a little earlier, as
            // does a failed exchange (another use was recorded meanwhile).
            let _ = self.last_used.compare_exchange(
                last,
                (now & !USED) | (last & USED),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Whether this is still the state an eviction chose: the same `Arc` (by `identity`), and,
    /// if it was chosen as unheld, still unheld and unused since its last use was `used`.
    fn still_chosen(&self, held: bool, used: u64, identity: usize) -> bool {
        let same = Arc::as_ptr(&self.value) as *const () as usize == identity;
        same && (held
            || (Arc::strong_count(&self.value) == 1
                && self.last_used.load(Ordering::Relaxed) == used & !USED))
    }

    /// The time of the last use, stamping a marked slot with `now`. Called under the shard's
    /// write lock (no hit is running), with `now` read under it.
    fn harvest(&self, now: u64) -> u64 {
        let last = self.last_used.load(Ordering::Relaxed);
        if last & USED == 0 {
            return last;
        }
        self.last_used.store(now & !USED, Ordering::Relaxed);
        now
    }
}

fn duration_nanos(duration: Duration) -> u64 {
    // In u64 (no u128 multiply): saturates after 584 years.
    duration
        .as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(duration.subsec_nanos()))
}

/// Poison-tolerant locks: a panic in a caller's closure cannot leave the map itself
/// inconsistent (entries are inserted and removed whole).
fn read<T>(lock: &ShardedLock<T>) -> ShardedLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &ShardedLock<T>) -> ShardedLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn lock<T>(lock: &Mutex<T>) -> MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    impl<V> KeyedState<V> {
        /// Whether `key` is held, without recording a use.
        fn get_without_touch(&self, key: &Key) -> bool {
            read(self.shared.shard(key))
                .find(key.prehash(), |entry| entry.key == *key)
                .is_some()
        }
    }

    /// Regression: an eviction released the shard locks between choosing its victims and
    /// removing them, and removed a victim that a request had taken (held) or used
    /// meanwhile, or a new state made under the same key.
    #[test]
    fn an_eviction_removes_only_the_state_it_chose_unchanged() {
        let slot = Slot {
            value: Arc::new(AtomicU32::new(0)),
            last_used: AtomicU64::new(0),
        };
        let used = slot.harvest(1_000_001);
        let identity = Arc::as_ptr(&slot.value) as *const () as usize;
        assert!(slot.still_chosen(false, used, identity), "untouched");
        assert!(
            !slot.still_chosen(false, used, identity + 1),
            "another state"
        );
        let taken = Arc::clone(&slot.value);
        assert!(!slot.still_chosen(false, used, identity), "taken since");
        assert!(slot.still_chosen(true, used, identity), "chosen as held");
        drop(taken);
        slot.mark_used();
        assert!(!slot.still_chosen(false, used, identity), "hit since");
        let used = slot.harvest(5_000_000);
        assert!(slot.still_chosen(false, used, identity));
        slot.touch(9_000_000);
        assert!(!slot.still_chosen(false, used, identity), "read since");
    }

    fn map(max_keys: usize, idle_secs: u64) -> KeyedState<AtomicU32> {
        KeyedState::new(
            KeyedStateConfig::new()
                .max_keys(max_keys)
                .idle_timeout(Some(Duration::from_secs(idle_secs))),
        )
        .unwrap()
    }

    #[test]
    fn invalid_config_is_rejected() {
        assert_eq!(
            KeyedState::<()>::new(KeyedStateConfig::new().max_keys(0)).unwrap_err(),
            KeyedStateError::ZeroMaxKeys
        );
        assert_eq!(
            KeyedState::<()>::new(KeyedStateConfig::new().idle_timeout(Some(Duration::ZERO)))
                .unwrap_err(),
            KeyedStateError::ZeroIdleTimeout
        );
    }

    #[tokio::test(start_paused = true)]
    async fn get_or_insert_creates_once_and_shares() {
        let state = map(100, 60);
        let key = Key::new("a");
        let a = state.get_or_insert_with(&key, || AtomicU32::new(1));
        let b = state.get_or_insert_with(&key, || AtomicU32::new(99));
        assert!(Arc::ptr_eq(&a, &b));
        a.fetch_add(1, Ordering::Relaxed);
        let seen = state.with_or_insert(&key, || unreachable!(), |v| v.load(Ordering::Relaxed));
        assert_eq!(seen, 2);
        assert_eq!(state.len(), 1);
        assert!(state.clone().get(&key).is_some());
        assert!(state.remove(&key).is_some());
        assert!(state.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_keys_are_evicted_on_tokio_time_unless_held() {
        let state = map(100, 60);
        let held_key = Key::new("held");
        let held = state.get_or_insert_with(&held_key, || AtomicU32::new(0));
        state.with_or_insert(&Key::new("idle"), || AtomicU32::new(0), |_| ());
        state.with_or_insert(&Key::new("busy"), || AtomicU32::new(0), |_| ());

        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(state.evict_idle(), 0, "nothing is idle for 60 s yet");
        state.with_or_insert(&Key::new("busy"), || AtomicU32::new(0), |_| ());

        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(state.evict_idle(), 1, "only 'idle' goes");
        assert!(state.get(&Key::new("idle")).is_none());
        assert!(state.get(&Key::new("busy")).is_some());
        assert!(
            state.get(&held_key).is_some(),
            "a held state is never evicted"
        );

        drop(held);
        tokio::time::advance(Duration::from_secs(61)).await;
        // An insert runs the sweep by itself.
        state.with_or_insert(&Key::new("new"), || AtomicU32::new(0), |_| ());
        assert_eq!(state.len(), 1);
    }

    /// The relaxation of clock-free hits: a key last used by a hit counts as used at the next
    /// sweep, so it outlives `idle_timeout` after its use by up to the gap between sweeps, and
    /// is never evicted earlier. `get` records its own time.
    #[tokio::test(start_paused = true)]
    async fn hits_are_stamped_by_the_next_sweep_and_never_evicted_early() {
        let state = map(100, 60);
        let (hit, read) = (Key::new("hit"), Key::new("read"));
        state.with_or_insert(&hit, || AtomicU32::new(0), |_| ());
        state.with_or_insert(&read, || AtomicU32::new(0), |_| ());
        tokio::time::advance(Duration::from_secs(30)).await;
        state.with_or_insert(&hit, || unreachable!(), |_| ());
        assert!(state.get(&read).is_some());
        tokio::time::advance(Duration::from_secs(31)).await;
        // 61 s: both used 31 s ago. The sweep stamps "hit" with 61 s.
        assert_eq!(state.evict_idle(), 0);
        tokio::time::advance(Duration::from_secs(29)).await;
        // 90 s: "read" was read 60 s ago; "hit" was used 60 s ago too, but counts from 61 s.
        assert_eq!(state.evict_idle(), 1);
        assert!(state.get(&read).is_none());
        tokio::time::advance(Duration::from_secs(30)).await;
        // 120 s: 59 s after the stamp.
        assert_eq!(state.evict_idle(), 0);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(state.evict_idle(), 1);
        assert!(state.is_empty());
    }

    proptest::proptest! {
        /// Whatever the interleaving of hits, reads, inserts, sweeps and waits: no key is
        /// evicted less than `idle_timeout` after its last use, and every key is evicted by
        /// the first sweep `idle_timeout` after the first sweep at or after its last use.
        #[test]
        fn idle_eviction_is_never_early_and_late_by_at_most_a_sweep(
            ops in proptest::collection::vec((0u8..4, 0usize..4, 1u64..40), 1..60),
        ) {
            const IDLE: u64 = 60;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            runtime.block_on(async {
                let state = map(100, IDLE);
                let keys: Vec<Key> = (0..4).map(|i| Key::new(format!("k{i}"))).collect();
                let start = tokio::time::Instant::now();
                let secs = || start.elapsed().as_secs();
                // Per key: the last use, and the first sweep at or after it.
                let mut used: Vec<Option<(u64, Option<u64>)>> = vec![None; 4];
                for (op, k, wait) in ops {
                    let key = &keys[k];
                    match op {
                        0 => tokio::time::advance(Duration::from_secs(wait)).await,
                        1 => {
                            state.with_or_insert(key, || AtomicU32::new(0), |_| ());
                            used[k] = Some((secs(), None));
                        }
                        2 => {
                            if state.get(key).is_some() {
                                used[k] = Some((secs(), None));
                            }
                        }
                        _ => {
                            let now = secs();
                            state.evict_idle();
                            for (k, slot) in used.iter_mut().enumerate() {
                                let Some((last, first_sweep)) = slot else { continue };
                                let sweep = *first_sweep.get_or_insert(now);
                                let held = state.get_without_touch(&keys[k]);
                                if held {
                                    proptest::prop_assert!(
                                        now - sweep < IDLE,
                                        "k{k} used at {last}, swept at {sweep}, kept at {now}"
                                    );
                                } else {
                                    proptest::prop_assert!(
                                        now - *last >= IDLE,
                                        "k{k} used at {last}, evicted at {now}"
                                    );
                                    *slot = None;
                                }
                            }
                        }
                    }
                }
                Ok(())
            })?;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn key_cap_evicts_least_recently_used() {
        let state = map(32, 3600);
        for i in 0..32 {
            state.with_or_insert(&Key::new(format!("k{i}")), || AtomicU32::new(i), |_| ());
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        // Touch the oldest key so it becomes the most recent.
        assert!(state.get(&Key::new("k0")).is_some());
        tokio::time::advance(Duration::from_millis(10)).await;
        state.with_or_insert(&Key::new("new"), || AtomicU32::new(0), |_| ());
        assert!(state.len() <= 32);
        // A batch of max/16 = 2 keys went: the least recently used ones, k1 and k2.
        assert!(state.get(&Key::new("k0")).is_some());
        assert!(state.get(&Key::new("k1")).is_none());
        assert!(state.get(&Key::new("k2")).is_none());
        assert!(state.get(&Key::new("k3")).is_some());
        assert!(state.get(&Key::new("new")).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn key_cap_prefers_unheld_keys_and_is_never_exceeded() {
        let state = map(8, 3600);
        let held: Vec<_> = (0..4)
            .map(|i| state.get_or_insert_with(&Key::new(format!("held{i}")), || AtomicU32::new(0)))
            .collect();
        for i in 0..1000 {
            tokio::time::advance(Duration::from_millis(1)).await;
            state.with_or_insert(&Key::new(format!("k{i}")), || AtomicU32::new(0), |_| ());
            assert!(state.len() <= 8, "len {} after insert {i}", state.len());
        }
        for i in 0..4 {
            assert!(state.get(&Key::new(format!("held{i}"))).is_some());
        }
        drop(held);
    }

    /// Regression for the cap under concurrency: inserts that raced past `max_keys` stayed
    /// above it until some later insert. Threads insert, hit, remove and sweep at once; `len`
    /// never underflows or strays by more than the calls in flight, and once they are done it
    /// equals the real number of keys, within the cap.
    #[test]
    fn concurrent_insert_remove_and_evict_keep_len_exact_and_the_cap() {
        const THREADS: usize = 4;
        const MAX: usize = 32;
        for round in 0..20 {
            let state: KeyedState<AtomicU32> = KeyedState::new(
                KeyedStateConfig::new()
                    .max_keys(MAX)
                    .idle_timeout(Some(Duration::from_secs(3600))),
            )
            .unwrap();
            let held = state.get_or_insert_with(&Key::new("held"), || AtomicU32::new(0));
            let barrier = std::sync::Barrier::new(THREADS);
            std::thread::scope(|scope| {
                for thread in 0..THREADS {
                    let (state, barrier) = (&state, &barrier);
                    scope.spawn(move || {
                        barrier.wait();
                        for i in 0..1_000 {
                            let key = Key::new(format!("r{round}-t{thread}-{}", i % 97));
                            match i % 11 {
                                0 => drop(state.remove(&key)),
                                1 => drop(state.get(&key)),
                                2 => drop(state.evict_idle()),
                                _ => state.with_or_insert(&key, || AtomicU32::new(0), |_| ()),
                            }
                            // Each other thread may be between an insert and its eviction,
                            // or between a removal and its count.
                            let len = state.len();
                            assert!(len <= MAX + 2 * THREADS, "len {len} in round {round}");
                        }
                    });
                }
            });
            let mut count = 0;
            state.for_each(|_, _| count += 1);
            assert_eq!(state.len(), count, "round {round}");
            assert!(
                count <= MAX,
                "{count} keys for a cap of {MAX} in round {round}"
            );
            drop(held);
        }
    }

    /// Regression: inserts racing at the cap each saw room, and the map stayed above
    /// `max_keys` until some later insert. Threads released together insert one new key each
    /// into a map one key short of its cap; once they return, the cap holds.
    #[test]
    fn simultaneous_inserts_at_the_cap_leave_it_respected() {
        const THREADS: usize = 4;
        const MAX: usize = 4;
        for round in 0..300 {
            let state: KeyedState<AtomicU32> =
                KeyedState::new(KeyedStateConfig::new().max_keys(MAX)).unwrap();
            for i in 0..MAX - 1 {
                state.with_or_insert(&Key::new(format!("old{i}")), || AtomicU32::new(0), |_| ());
            }
            let barrier = std::sync::Barrier::new(THREADS);
            std::thread::scope(|scope| {
                for thread in 0..THREADS {
                    let (state, barrier) = (&state, &barrier);
                    scope.spawn(move || {
                        let key = Key::new(format!("new{thread}"));
                        barrier.wait();
                        state.with_or_insert(&key, || AtomicU32::new(0), |_| ());
                    });
                }
            });
            let mut count = 0;
            state.for_each(|_, _| count += 1);
            assert_eq!(state.len(), count, "round {round}");
            assert!(
                count <= MAX,
                "{count} keys for a cap of {MAX} in round {round}"
            );
        }
    }

    #[test]
    fn concurrent_get_or_insert_creates_one_state() {
        let state = KeyedState::new(KeyedStateConfig::new()).unwrap();
        let created = Arc::new(AtomicU32::new(0));
        std::thread::scope(|scope| {
            for _ in 0..4 {
                let state = state.clone();
                let created = Arc::clone(&created);
                scope.spawn(move || {
                    for i in 0..500 {
                        let value =
                            state.get_or_insert_with(&Key::new(format!("k{}", i % 50)), || {
                                created.fetch_add(1, Ordering::Relaxed);
                                AtomicU32::new(0)
                            });
                        value.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(created.load(Ordering::Relaxed), 50);
        let mut total = 0;
        state.for_each(|_, v| total += v.load(Ordering::Relaxed));
        assert_eq!(total, 2000);
    }
}
