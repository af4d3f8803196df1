//! [`BucketMap`]: the default store of [`LocalLimiter`](crate::LocalLimiter)'s buckets.
//!
//! A GCRA bucket says by itself when it is idle: once every theoretical arrival time is in the
//! past, the bucket is full and indistinguishable from a new one, so it can be dropped at any
//! time without changing any decision. The map therefore needs no "last used" timestamp (no
//! second clock read and no write per lookup, unlike a generic keyed map).
//!
//! Why not `HashMap<Key, Bucket>` (or governor's `DashMap`): a lookup here hashes nothing (the
//! key carries its [`prehash`](Key::prehash)), compares clones of one key by pointer (no read
//! of the string, often a cache miss away), and finds key and bucket in one 64-byte,
//! line-aligned entry. With 10 000 keys that is one cache line per lookup besides the control
//! bytes, where a map of `Key -> bucket` hashed by name reads three.
//!
//! Why crossbeam's `ShardedLock` and not `std::sync::RwLock` per shard: a read lock of a
//! `RwLock` writes its one lock word, so threads pacing one key bounce two lines per decision
//! (the lock word and the bucket). `ShardedLock` gives each thread its own reader lock, and
//! only the bucket's compare-and-swap is shared: two threads on one key took 45 ns per
//! decision instead of 134 ns (governor's `DashMap`, a `RwLock` per shard: 100 ns), at no cost
//! for one thread. Writers (a new key, a sweep) lock every reader lock, which is the rare path.

use crossbeam_utils::sync::{ShardedLock, ShardedLockReadGuard, ShardedLockWriteGuard};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use hashbrown::HashTable;
use ratewise_core::Key;

use crate::local::Bucket;

const SHARDS: usize = 16;

/// How often (in limiter nanoseconds) an insert sweeps full buckets out: a minute.
const SWEEP_EVERY_NANOS: u64 = 60_000_000_000;

/// A key and its bucket in one cache line (24 + 40 bytes).
#[repr(align(64))]
struct Entry {
    key: Key,
    bucket: Bucket,
}

// The layout the docs promise (loom's atomics are larger).
#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<Entry>() == 64);

/// A shard's lock and table header on cache lines of their own: threads on keys of
/// neighbouring shards do not share the line they read the table header from (two lines, for
/// the adjacent-line prefetcher).
#[repr(align(128))]
struct Shard(ShardedLock<HashTable<Entry>>);

impl std::ops::Deref for Shard {
    type Target = ShardedLock<HashTable<Entry>>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

pub(crate) struct BucketMap {
    shards: Box<[Shard]>,
    len: AtomicUsize,
    max_keys: usize,
    last_sweep: AtomicU64,
}

fn prehash(entry: &Entry) -> u64 {
    entry.key.prehash()
}

impl BucketMap {
    pub(crate) fn new(max_keys: usize) -> Self {
        BucketMap {
            shards: (0..SHARDS)
                .map(|_| Shard(ShardedLock::new(HashTable::new())))
                .collect(),
            len: AtomicUsize::new(0),
            max_keys: max_keys.max(1),
            last_sweep: AtomicU64::new(0),
        }
    }

    #[inline]
    fn shard(&self, hash: u64) -> &Shard {
        // Bits 40..44: a table indexes by the low bits and tags by the top 7, so the shard
        // takes bits neither uses (a shard of 2^40 entries is out of reach).
        &self.shards[(hash >> 40) as usize % SHARDS]
    }

    /// Calls `f` with `key`'s bucket (created if new) under a shared lock of its shard.
    #[inline]
    pub(crate) fn with<R>(&self, key: &Key, now: u64, f: impl FnOnce(&Bucket) -> R) -> R {
        let hash = key.prehash();
        let shard = self.shard(hash);
        {
            let table = read(shard);
            if let Some(entry) = table.find(hash, |entry| entry.key == *key) {
                return f(&entry.bucket);
            }
        }
        self.insert_slow(shard, key, now, f)
    }

    #[cold]
    fn insert_slow<R>(
        &self,
        shard: &Shard,
        key: &Key,
        now: u64,
        f: impl FnOnce(&Bucket) -> R,
    ) -> R {
        let last = self.last_sweep.load(Ordering::Relaxed);
        let full = self.len.load(Ordering::Relaxed) >= self.max_keys;
        if (full || now.saturating_sub(last) >= SWEEP_EVERY_NANOS)
            && self
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.sweep(now);
        }
        let hash = key.prehash();
        let mut table = write(shard);
        let mut searched_elsewhere = false;
        while table.find(hash, |entry| entry.key == *key).is_none() {
            if self.len.load(Ordering::Relaxed) >= self.max_keys
                && !self.evict_closest_to_full(&mut table, now)
                && !searched_elsewhere
            {
                // This shard holds nothing to evict: evict from the others, one lock at a
                // time (never two shard locks at once), then look again: the key may have
                // been inserted meanwhile.
                drop(table);
                self.evict_from_other_shards(shard, now);
                searched_elsewhere = true;
                table = write(shard);
                continue;
            }
            table.insert_unique(
                hash,
                Entry {
                    key: key.clone(),
                    bucket: Bucket::new(),
                },
                prehash,
            );
            self.len.fetch_add(1, Ordering::Relaxed);
            break;
        }
        let entry = table
            .find(hash, |entry| entry.key == *key)
            .expect("the bucket was just inserted");
        let result = f(&entry.bucket);
        drop(table);
        if self.len.load(Ordering::Relaxed) > self.max_keys {
            // Inserts of other shards raced this one past the cap: bring it back before
            // returning (from the other shards, so this key's fresh charge is never dropped).
            self.evict_from_other_shards(shard, now);
        }
        result
    }

    /// Removes every full bucket (exactly safe: a full bucket equals a new one).
    pub(crate) fn sweep(&self, now: u64) -> usize {
        let mut removed = 0;
        for shard in self.shards.iter() {
            write(shard).retain(|entry| {
                let keep = !entry.bucket.is_full(now);
                removed += usize::from(!keep);
                keep
            });
        }
        self.len.fetch_sub(removed, Ordering::Relaxed);
        removed
    }

    /// Over the cap with no full bucket left anywhere: evict the buckets of this shard closest
    /// to full (a sixteenth of the shard, at least one). Their keys restart with a full
    /// bucket, which may admit up to one burst early: the price of a hard memory bound.
    /// Returns whether it evicted any (not when the shard is empty).
    #[cold]
    fn evict_closest_to_full(&self, table: &mut HashTable<Entry>, now: u64) -> bool {
        let mut candidates: Vec<(u64, Key)> = table
            .iter()
            .map(|entry| (entry.bucket.latest_tat(), entry.key.clone()))
            .collect();
        let count = (candidates.len() / 16).max(1).min(candidates.len());
        if count == 0 {
            return false;
        }
        candidates.select_nth_unstable_by_key(count - 1, |(tat, _)| *tat);
        for (_, key) in candidates.into_iter().take(count) {
            if let Ok(entry) = table.find_entry(key.prehash(), |entry| entry.key == key) {
                entry.remove();
            }
        }
        self.len.fetch_sub(count, Ordering::Relaxed);
        tracing::debug!(
            evicted = count,
            now_nanos = now,
            "pace: local limiter over its key cap; evicted the buckets closest to full"
        );
        true
    }

    /// Evicts from the first other shard (in order after `skip`) that holds any bucket.
    #[cold]
    fn evict_from_other_shards(&self, skip: &Shard, now: u64) {
        let start = self
            .shards
            .iter()
            .position(|shard| std::ptr::eq(shard, skip))
            .unwrap_or(0);
        for offset in 1..SHARDS {
            let shard = &self.shards[(start + offset) % SHARDS];
            if self.evict_closest_to_full(&mut write(shard), now) {
                return;
            }
        }
    }

    pub(crate) fn tat(&self, key: &Key, index: usize) -> Option<u64> {
        let hash = key.prehash();
        read(self.shard(hash))
            .find(hash, |entry| entry.key == *key)
            .map(|entry| entry.bucket.tat(index))
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

/// Poison-tolerant locks: buckets are inserted and removed whole, and their atomics are never
/// left half-updated by a panic (no user code runs under these locks).
fn read<T>(lock: &ShardedLock<T>) -> ShardedLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &ShardedLock<T>) -> ShardedLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::quota::Quota;
    use std::time::Duration;

    const MS: u64 = 1_000_000;

    /// Regression: a new key whose own shard was empty used to be inserted over the cap
    /// (the eviction looked only in that shard), about once in 60 runs of the test below.
    #[test]
    fn the_cap_holds_when_the_new_keys_shard_is_empty() {
        let map = BucketMap::new(4);
        let quota = [Quota::per_second(10).unwrap().burst(2).unwrap()];
        let shard_of = |key: &Key| (key.prehash() >> 40) as usize % SHARDS;
        // Four keys in one shard, then a key of another (empty) shard, all still in debt.
        let first = Key::new("k0");
        let mut same = vec![first.clone()];
        let mut other = None;
        for i in 1.. {
            let key = Key::new(format!("k{i}"));
            if shard_of(&key) == shard_of(&first) {
                if same.len() < 4 {
                    same.push(key);
                }
            } else if other.is_none() {
                other = Some(key);
            }
            if same.len() == 4 && other.is_some() {
                break;
            }
        }
        for key in &same {
            map.with(key, 0, |b| b.acquire(&quota, 1, 0)).unwrap();
        }
        let other = other.unwrap();
        map.with(&other, 10 * MS, |b| b.acquire(&quota, 1, 10 * MS))
            .unwrap();
        assert_eq!(map.len(), 4);
        assert_eq!(
            map.shards
                .iter()
                .map(|shard| read(shard).len())
                .sum::<usize>(),
            4
        );
        assert!(map.tat(&other, 0).is_some(), "the new key is in");
    }

    /// Threads inserting keys of different shards at the cap leave the map at the cap once
    /// they return (each rechecks after its insert).
    #[test]
    fn racing_inserts_at_the_cap_leave_it_respected() {
        let map = BucketMap::new(64);
        let quota = [Quota::per_second(10).unwrap().burst(2).unwrap()];
        for round in 0..20 {
            std::thread::scope(|scope| {
                for thread in 0..4 {
                    let map = &map;
                    scope.spawn(move || {
                        for i in 0..64 {
                            let key = Key::new(format!("r{round}-t{thread}-{i}"));
                            map.with(&key, 0, |b| b.acquire(&quota, 1, 0)).unwrap();
                        }
                    });
                }
            });
            let held: usize = map.shards.iter().map(|shard| read(shard).len()).sum();
            assert_eq!(held, map.len(), "len is exact once the calls returned");
            assert!(map.len() <= 64, "round {round}: {} keys", map.len());
        }
    }

    #[test]
    fn full_buckets_are_swept_and_the_cap_holds() {
        let map = BucketMap::new(64);
        let quota = [Quota::per_second(10).unwrap().burst(2).unwrap()];
        for i in 0..64 {
            map.with(&Key::new(format!("k{i}")), 0, |b| b.acquire(&quota, 1, 0))
                .unwrap();
        }
        assert_eq!(map.len(), 64);
        // At 50 ms every bucket still holds a debt (tat = 100 ms): none may be dropped, so
        // the cap evicts the closest to full from one shard.
        map.with(&Key::new("new"), 50 * MS, |b| b.acquire(&quota, 1, 50 * MS))
            .unwrap();
        assert!(map.len() <= 64);
        // At 100 ms every old bucket is full again: a sweep drops them all, and the one
        // charged at 50 ms (tat 150 ms) stays.
        let before = map.len();
        assert_eq!(map.sweep(100 * MS), before - 1);
        assert_eq!(map.len(), 1);
        assert_eq!(map.tat(&Key::new("new"), 0), Some(150 * MS));
        // Dropping a full bucket changes no decision: a new one answers the same.
        let again = map.with(&Key::new("k1"), 100 * MS, |b| {
            b.acquire(&quota, 2, 100 * MS)
        });
        assert_eq!(again, Ok(()));
        assert_eq!(
            map.with(&Key::new("k1"), 100 * MS, |b| b.acquire(
                &quota,
                1,
                100 * MS
            )),
            Err(Duration::from_millis(100).as_nanos() as u64)
        );
    }
}
