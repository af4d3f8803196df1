//! Keys and key functions: how a layer decides which per-endpoint state a request uses.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::thread::LocalKey;

use arc_swap::ArcSwap;
use http::request::Parts;
use http::uri::Scheme;

use crate::route::RouteTable;

/// The name of a bucket of per-key state: a host, a route bucket such as `"search"`, a
/// server-declared bucket id.
///
/// A `Key` is an `Arc<str>` and its hash, computed once when the key is made: cloning it is one
/// atomic increment and never allocates. Key functions hand out clones of keys they already hold
/// ([`RouteTable`] buckets, interned hosts; for a key a thread asks for often, the thread's own
/// copy, so that threads do not share one reference count), so computing a key allocates
/// nothing on the fast path, and the keyed stores of the layers find a key's state without hashing its name again
/// ([`prehash`](Key::prehash)). Two clones of one key compare equal by pointer, without reading
/// the string; keys made separately compare by hash, then by name.
///
/// `Hash` hashes the name like `str` does, so that a `HashMap<Key, _>` can be searched with a
/// `&str`.
#[derive(Clone)]
pub struct Key {
    name: Arc<str>,
    hash: u64,
}

/// The hasher of [`Key::prehash`]: seeded at random once per process, so that names chosen by
/// a remote party cannot be made to collide (the same reason `std`'s maps are seeded).
static PREHASHER: LazyLock<foldhash::fast::RandomState> =
    LazyLock::new(foldhash::fast::RandomState::default);

impl Key {
    /// Makes a key from a name. This allocates; keep the key and clone it rather than calling
    /// this per request.
    pub fn new(name: impl AsRef<str>) -> Self {
        Key::from_arc(Arc::from(name.as_ref()))
    }

    fn from_arc(name: Arc<str>) -> Self {
        let hash = PREHASHER.hash_one(&*name);
        Key { name, hash }
    }

    /// The key's name.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The shared string behind the key (one atomic increment, no allocation): for labels of
    /// metrics (`metrics::SharedString::from_shared`) and other places that keep the name.
    pub fn to_shared(&self) -> Arc<str> {
        Arc::clone(&self.name)
    }

    /// A hash of the name, computed once when the key was made, with a hasher seeded at random
    /// once per process: equal keys have equal prehashes within one process (never persist
    /// it). Keyed stores index by it, so a lookup never hashes the name.
    #[inline]
    pub fn prehash(&self) -> u64 {
        self.hash
    }

    /// A clone of this key for the calling thread: equal to it, with the same prehash, but, for
    /// a key the thread asks for often, a copy of its own, so that cloning and dropping it
    /// writes a reference count no other thread writes.
    ///
    /// Why: key functions hand out clones of one shared key (a host, a route bucket) to every
    /// request, and every layer computes its key, so on a multi-threaded runtime every thread
    /// sending to one host incremented and decremented one shared count several times per
    /// request: the cache line bounced between cores (`by_host` from two threads: 57 ns a key
    /// instead of 22). The copies compare equal to the shared key by hash and name (a few bytes
    /// of the name), and the stores find states made with either.
    #[inline]
    pub(crate) fn for_this_thread(&self) -> Key {
        #[cfg(test)]
        if tests::NO_THREAD_COPIES.get() {
            return self.clone();
        }
        THREAD_KEYS
            .try_with(|keys| keys.try_borrow_mut().ok()?.find_or_copy(self))
            .ok()
            .flatten()
            .unwrap_or_else(|| self.clone())
    }
}

/// Most keys a thread keeps copies of ([`Key::for_this_thread`]).
const THREAD_KEYS_MAX: usize = 8;

/// A key not among a thread's copies is copied on every this-many-th miss: a thread cycling
/// through more keys than it keeps copies of allocates for one request in eight, not each.
const COPY_EVERY_MISSES: u32 = 8;

/// A thread's copies of the shared keys it asked for, the most recently used first.
struct ThreadKeys {
    /// (the shared key, which keeps its address from being reused; this thread's copy).
    copies: Vec<(Key, Key)>,
    misses: u32,
}

thread_local! {
    static THREAD_KEYS: RefCell<ThreadKeys> = const {
        RefCell::new(ThreadKeys { copies: Vec::new(), misses: 0 })
    };
}

impl ThreadKeys {
    #[inline]
    fn find_or_copy(&mut self, shared: &Key) -> Option<Key> {
        // The common case: the key the thread asked for last.
        if let Some((known, copy)) = self.copies.first()
            && Arc::ptr_eq(&known.name, &shared.name)
        {
            return Some(copy.clone());
        }
        self.find_further(shared)
    }

    #[inline(never)]
    fn find_further(&mut self, shared: &Key) -> Option<Key> {
        let found = self
            .copies
            .iter()
            .position(|(known, _)| Arc::ptr_eq(&known.name, &shared.name));
        match found {
            Some(index) => {
                self.copies.swap(0, index);
                Some(self.copies[0].1.clone())
            }
            None => self.copy(shared),
        }
    }

    #[cold]
    fn copy(&mut self, shared: &Key) -> Option<Key> {
        self.misses += 1;
        if self.misses < COPY_EVERY_MISSES {
            return None;
        }
        self.misses = 0;
        let copy = Key {
            name: Arc::from(&*shared.name),
            hash: shared.hash,
        };
        if self.copies.len() >= THREAD_KEYS_MAX {
            self.copies.pop();
        }
        self.copies.insert(0, (shared.clone(), copy.clone()));
        Some(copy)
    }
}

impl PartialEq for Key {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        // Clones of one key (the common case: key functions hand out clones) are equal without
        // touching the string, which may be a cache miss away.
        Arc::ptr_eq(&self.name, &other.name) || (self.hash == other.hash && self.name == other.name)
    }
}

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Like `str`, for `Borrow<str>`.
        self.name.hash(state);
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.name.cmp(&other.name)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.name, f)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.name)
    }
}

impl Borrow<str> for Key {
    fn borrow(&self) -> &str {
        &self.name
    }
}

impl AsRef<str> for Key {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

impl From<&str> for Key {
    fn from(name: &str) -> Self {
        Key::new(name)
    }
}

impl From<String> for Key {
    fn from(name: String) -> Self {
        Key::from_arc(Arc::from(name))
    }
}

impl From<Arc<str>> for Key {
    fn from(name: Arc<str>) -> Self {
        Key::from_arc(name)
    }
}

/// Computes the [`Key`] of a request from its head.
///
/// Implemented by [`ByHost`], [`ByRoute`], [`ByHostAndRoute`], [`Global`], by `Arc<K>`, and by
/// every closure `Fn(&http::request::Parts) -> Key + Send + Sync + 'static`:
///
/// ```
/// use ratewise_core::{Key, KeyFn};
///
/// let (paid, free) = (Key::new("paid"), Key::new("free"));
/// // Hand out clones of keys the closure holds: no allocation per request.
/// let by_plan = move |parts: &http::request::Parts| -> Key {
///     if parts.headers.contains_key("x-paid-plan") { paid.clone() } else { free.clone() }
/// };
/// let (parts, ()) = http::Request::get("https://api.example.com/x").body(()).unwrap().into_parts();
/// assert_eq!(by_plan.key(&parts).as_str(), "free");
/// ```
pub trait KeyFn: Send + Sync + 'static {
    /// The key of the request whose head is `parts`.
    fn key(&self, parts: &Parts) -> Key;

    /// The key of a whole request. The request is split into its head and body and put back
    /// together, which moves it but allocates nothing.
    fn key_of<B>(&self, request: http::Request<B>) -> (Key, http::Request<B>)
    where
        Self: Sized,
    {
        let (parts, body) = request.into_parts();
        let key = self.key(&parts);
        (key, http::Request::from_parts(parts, body))
    }
}

impl<F> KeyFn for F
where
    F: Fn(&Parts) -> Key + Send + Sync + 'static,
{
    fn key(&self, parts: &Parts) -> Key {
        self(parts)
    }
}

impl<K: KeyFn + ?Sized> KeyFn for Arc<K> {
    fn key(&self, parts: &Parts) -> Key {
        (**self).key(parts)
    }
}

/// Every request has the same key: one bucket for the whole client.
#[derive(Clone, Debug)]
pub struct Global {
    key: Key,
}

impl Global {
    /// All requests share the key `"global"`.
    pub fn new() -> Self {
        Global::named(Key::new("global"))
    }

    /// All requests share `key`.
    pub fn named(key: impl Into<Key>) -> Self {
        Global { key: key.into() }
    }
}

impl Default for Global {
    fn default() -> Self {
        Global::new()
    }
}

impl KeyFn for Global {
    fn key(&self, _parts: &Parts) -> Key {
        self.key.for_this_thread()
    }
}

/// Most hosts a [`ByHost`] or [`ByHostAndRoute`] remembers; the keys of further hosts are still
/// correct but are allocated per request.
const MAX_INTERNED_HOSTS: usize = 4096;

/// The key is the request's authority (`host[:port]`, lowercased), or its `Host` header when the
/// URI is relative, or `""` when there is neither.
///
/// Keys are interned: the first request to a host allocates its key, later ones clone it. Up
/// to 4096 hosts are remembered; beyond that, keys are allocated per request (still correct).
/// Looking up a known host takes no lock (the table is a copy-on-write snapshot), so clones used
/// from many threads at once do not contend; each thread also remembers the last two hosts it
/// looked up, so requests to those skip even the hash lookup.
///
/// The authority is used as written apart from case, userinfo and the scheme's default port:
/// `https://api.example.com:443/` and `https://API.example.com/` share the key
/// `api.example.com`, while `api.example.com:8443` is another key (another server, perhaps
/// with its own quota). A relative URI's `Host` header keeps any port (the scheme is unknown).
///
/// # Clone
///
/// Clones share one intern table.
#[derive(Clone, Debug, Default)]
pub struct ByHost {
    interned: Arc<Interned<()>>,
}

impl ByHost {
    /// A key function by host with an empty intern table.
    pub fn new() -> Self {
        ByHost::default()
    }

    fn intern(&self, host: &str) -> Key {
        if let Some(key) = self
            .interned
            .lookup(&HOST_MEMO, host, |key, ()| Some(key.for_this_thread()))
        {
            return key;
        }
        self.interned.insert_with(host, |map| {
            if let Some((key, ())) = map.get_key_value(host) {
                return (key.clone(), false);
            }
            let key = Key::new(host);
            map.insert(key.clone(), ());
            (key, true)
        })
    }
}

impl KeyFn for ByHost {
    fn key(&self, parts: &Parts) -> Key {
        with_request_host(parts, |host| self.intern(host))
    }
}

/// A host-keyed intern table, read without locks.
///
/// Readers load an immutable snapshot through `arc-swap` (no lock, no write to a shared cache
/// line). A new host copies the map under a mutex and publishes the copy: the copy is cheap
/// (`Key` and `Arc` clones, no allocation per entry), rare (once per host) and bounded by
/// [`MAX_INTERNED_HOSTS`].
struct Interned<V> {
    /// Unique in the process: names the table in the threads' memos.
    id: u64,
    snapshot: ArcSwap<HashMap<Key, V, foldhash::fast::RandomState>>,
    writer: Mutex<()>,
}

/// The next [`Interned::id`].
static NEXT_TABLE_ID: AtomicU64 = AtomicU64::new(0);

impl<V> Default for Interned<V> {
    fn default() -> Self {
        Interned {
            id: NEXT_TABLE_ID.fetch_add(1, Ordering::Relaxed),
            snapshot: ArcSwap::from_pointee(HashMap::default()),
            writer: Mutex::new(()),
        }
    }
}

impl<V> fmt::Debug for Interned<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Interned")
            .field("hosts", &self.snapshot.load().len())
            .finish()
    }
}

/// A host's (bucket, combined key) pairs in a [`ByHostAndRoute`] table.
type Pairs = Arc<[(Key, Key)]>;

/// A host a thread looked up in an intern table, with what the table holds for it.
///
/// Requests of one thread mostly go to the host of one of the last two, so a key function
/// first compares the host with its thread's two memos (the most recent first): no hash, no
/// snapshot load. A memo names its table by [`Interned::id`] (no reference to it, so replacing
/// a memo writes no cache line that other threads share but the entry's own reference counts),
/// and holds one host's entry: what it names stays allocated until the thread has looked up
/// two other hosts, or exits, even if the table is dropped.
struct Memo<V> {
    table: u64,
    host: Key,
    value: V,
}

/// A thread's memos of one kind of table, the most recently used first.
type MemoCell<V> = RefCell<[Option<Memo<V>>; 2]>;

thread_local! {
    static HOST_MEMO: MemoCell<()> = const { RefCell::new([None, None]) };
    static ROUTE_MEMO: MemoCell<Pairs> = const { RefCell::new([None, None]) };
}

impl<V: Clone + 'static> Interned<V> {
    /// What `found` makes of the host's entry (its interned key and value), from the thread's
    /// memos or else from the snapshot (which then replaces the least recent memo); `None`
    /// when the table does not hold the host or `found` finds nothing in its entry.
    #[inline]
    fn lookup<R>(
        &self,
        memo: &'static LocalKey<MemoCell<V>>,
        host: &str,
        found: impl Fn(&Key, &V) -> Option<R>,
    ) -> Option<R> {
        let names = |memo: &Option<Memo<V>>| {
            memo.as_ref()
                .is_some_and(|memo| memo.table == self.id && memo.host.as_str() == host)
        };
        let remembered = memo
            .try_with(|memos| {
                let mut memos = memos.try_borrow_mut().ok()?;
                if !names(&memos[0]) {
                    if !names(&memos[1]) {
                        return None;
                    }
                    memos.swap(0, 1);
                }
                let memo = memos[0].as_ref()?;
                found(&memo.host, &memo.value)
            })
            .ok()
            .flatten();
        if remembered.is_some() {
            return remembered;
        }
        self.lookup_snapshot(memo, host, found)
    }

    fn lookup_snapshot<R>(
        &self,
        memo: &'static LocalKey<MemoCell<V>>,
        host: &str,
        found: impl Fn(&Key, &V) -> Option<R>,
    ) -> Option<R> {
        let snapshot = self.snapshot.load();
        let (key, value) = snapshot.get_key_value(host)?;
        let result = found(key, value);
        let remember = Memo {
            table: self.id,
            host: key.clone(),
            value: value.clone(),
        };
        drop(snapshot);
        // The memo it replaces is dropped after the borrow ends.
        let _replaced = memo
            .try_with(|memos| {
                let mut memos = memos.try_borrow_mut().ok()?;
                let replaced = memos[1].replace(remember);
                memos.swap(0, 1);
                replaced
            })
            .ok()
            .flatten();
        result
    }
}

impl<V: Clone> Interned<V> {
    /// Runs `update` on a copy of the table and publishes the copy when `update` says it changed
    /// it. When the table is full, `update` runs on a scratch map that is thrown away, so the
    /// key it returns is still correct but not remembered.
    #[cold]
    fn insert_with(
        &self,
        host: &str,
        update: impl FnOnce(&mut HashMap<Key, V, foldhash::fast::RandomState>) -> (Key, bool),
    ) -> Key {
        if self.snapshot.load().len() >= MAX_INTERNED_HOSTS
            && !self.snapshot.load().contains_key(host)
        {
            return update(&mut HashMap::default()).0;
        }
        // A poisoned writer lock guards nothing but the publication order: keep going.
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut map = HashMap::clone(&self.snapshot.load());
        let (key, changed) = update(&mut map);
        if changed {
            self.snapshot.store(Arc::new(map));
        }
        key
    }
}

/// Calls `f` with the request's host as every ratewise key names it: the URI's authority (or
/// the `Host` header of a relative URI, or `""`), lowercased (allocating only when it is not
/// already), without userinfo and without the scheme's default port.
///
/// [`ByHost`] keys are these strings; layers that namespace other state by host (the
/// adaptation layer's server-declared buckets) use it too, so that `https://API.example.com:443`
/// and `https://api.example.com` are one server everywhere.
///
/// ```
/// let (parts, ()) = http::Request::get("https://user@API.Example.com:443/x")
///     .body(())
///     .unwrap()
///     .into_parts();
/// ratewise_core::with_request_host(&parts, |host| assert_eq!(host, "api.example.com"));
/// ```
#[inline]
pub fn with_request_host<R>(parts: &Parts, f: impl FnOnce(&str) -> R) -> R {
    let authority = match parts.uri.authority() {
        Some(authority) => authority.as_str(),
        None => parts
            .headers
            .get(http::header::HOST)
            .and_then(|value| value.to_str().ok())
            .unwrap_or(""),
    };
    // Where the host starts (after any userinfo, which must never become part of a key nor a
    // metric label) and whether it has capitals: one pass, eight bytes at a time.
    let (start, upper) = scan_authority(authority.as_bytes());
    let host = authority.get(start..).unwrap_or(authority);
    // `api.github.com:443` over https is `api.github.com`: one server, one key.
    // Parsed URIs hold the two schemes as constants, compared without reading a string; a
    // built one may spell them in capitals.
    let default_port: Option<&[u8]> = match parts.uri.scheme() {
        Some(scheme) if *scheme == Scheme::HTTPS => Some(b":443"),
        Some(scheme) if *scheme == Scheme::HTTP => Some(b":80"),
        Some(scheme) if scheme.as_str().eq_ignore_ascii_case("https") => Some(b":443"),
        Some(scheme) if scheme.as_str().eq_ignore_ascii_case("http") => Some(b":80"),
        _ => None,
    };
    let host = match default_port {
        Some(port) if host.as_bytes().ends_with(port) => {
            host.get(..host.len() - port.len()).unwrap_or(host)
        }
        _ => host,
    };
    if upper {
        lowercase_then(host, f)
    } else {
        f(host)
    }
}

/// Where the host of `authority` starts (past the last `@`) and whether it has ASCII capitals.
#[inline]
fn scan_authority(authority: &[u8]) -> (usize, bool) {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    /// Flags, in the high bit of each byte, the bytes of `chunk` that are `@` (with false
    /// flags only above a true one: good enough to tell whether there is any) or capitals,
    /// and every byte that is not ASCII.
    #[inline]
    fn flags(chunk: &[u8]) -> u64 {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(chunk);
        let word = u64::from_ne_bytes(bytes);
        let ascii = word & !HIGH;
        let at = ascii ^ (ONES * u64::from(b'@'));
        let has_at = at.wrapping_sub(ONES) & !at;
        // For a byte b < 0x80: b + 0x3f has its high bit set when b >= 'A', b + 0x25 when
        // b > 'Z'; neither carries into the next byte.
        let upper = (ascii + ONES * 0x3f) & !(ascii + ONES * 0x25);
        (has_at | upper | word) & HIGH
    }
    let len = authority.len();
    if len >= 8 {
        let mut any = 0;
        let mut chunks = authority.chunks_exact(8);
        for chunk in &mut chunks {
            any |= flags(chunk);
        }
        if !chunks.remainder().is_empty() {
            // The last eight bytes, overlapping the last whole chunk: the flags only tell
            // whether some byte needs a closer look.
            any |= flags(&authority[len - 8..]);
        }
        if any == 0 {
            return (0, false);
        }
    }
    // Short, or with userinfo, capitals or bytes that are not ASCII: byte by byte.
    let mut start = 0;
    let mut upper = false;
    for (at, &byte) in authority.iter().enumerate() {
        if byte == b'@' {
            start = at + 1;
            upper = false;
        }
        upper |= byte.is_ascii_uppercase();
    }
    (start, upper)
}

/// Calls `f` with `host` lowercased, in a buffer on the stack when it fits.
#[cold]
fn lowercase_then<R>(host: &str, f: impl FnOnce(&str) -> R) -> R {
    let mut buffer = [0; 256];
    if let Some(lower) = buffer.get_mut(..host.len()) {
        lower.copy_from_slice(host.as_bytes());
        lower.make_ascii_lowercase();
        if let Ok(lower) = std::str::from_utf8(lower) {
            return f(lower);
        }
    }
    f(&host.to_ascii_lowercase())
}

/// The key is the bucket that a [`RouteTable`] assigns to the request's path.
///
/// Matching allocates nothing: the key is a clone of the bucket held by the table.
#[derive(Clone, Debug)]
pub struct ByRoute(pub RouteTable);

impl KeyFn for ByRoute {
    fn key(&self, parts: &Parts) -> Key {
        self.0.bucket(parts.uri.path()).for_this_thread()
    }
}

/// The key is `host` and the [`RouteTable`] bucket of the path, joined by a space
/// (`"api.github.com search"`): one state per endpoint of each host.
///
/// Combined keys are interned like [`ByHost`]'s (up to 4096 hosts, each with every bucket of
/// the table), and looked up without a lock.
///
/// # Clone
///
/// Clones share one intern table.
#[derive(Clone, Debug)]
pub struct ByHostAndRoute {
    routes: RouteTable,
    /// Per host: (bucket, combined key) pairs, at most one per bucket of `routes`.
    interned: Arc<Interned<Pairs>>,
}

impl ByHostAndRoute {
    /// Keys by host and by the buckets of `routes`.
    pub fn new(routes: RouteTable) -> Self {
        ByHostAndRoute {
            routes,
            interned: Arc::default(),
        }
    }

    /// The route table.
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }
}

impl KeyFn for ByHostAndRoute {
    fn key(&self, parts: &Parts) -> Key {
        let bucket = self.routes.bucket(parts.uri.path());
        with_request_host(parts, |host| {
            let known = |_: &Key, pairs: &Pairs| {
                pairs
                    .iter()
                    .find(|(b, _)| b == bucket)
                    .map(|(_, key)| key.for_this_thread())
            };
            if let Some(key) = self.interned.lookup(&ROUTE_MEMO, host, known) {
                return key;
            }
            self.interned.insert_with(host, |map| {
                let pairs = map.get(host).map_or(&[][..], |pairs| &pairs[..]);
                if let Some((_, key)) = pairs.iter().find(|(b, _)| b == bucket) {
                    return (key.clone(), false);
                }
                let key = Key::from(format!("{host} {bucket}"));
                let mut grown = pairs.to_vec();
                grown.push((bucket.clone(), key.clone()));
                let host_key = map
                    .get_key_value(host)
                    .map_or_else(|| Key::new(host), |(host_key, _)| host_key.clone());
                map.insert(host_key, grown.into());
                (key, true)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// Set by tests about interning, which check which table's key comes out.
        pub(super) static NO_THREAD_COPIES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Whether `key` is `shared` or this thread's copy of it.
    fn is_or_copies(key: &Key, shared: &Key) -> bool {
        Arc::ptr_eq(&key.name, &shared.name)
            || THREAD_KEYS.with(|keys| {
                keys.borrow().copies.iter().any(|(known, copy)| {
                    Arc::ptr_eq(&known.name, &shared.name) && Arc::ptr_eq(&copy.name, &key.name)
                })
            })
    }

    /// Key functions hand each thread its own copy of a key it asks for often: equal, same
    /// prehash, found by the stores, but a different reference count on each thread.
    #[test]
    fn threads_get_their_own_copies_of_hot_keys() {
        let by_host = ByHost::new();
        let global = Global::named("everything");
        let routes = RouteTable::builder().prefix("/a", "a").unwrap().build();
        let by_route = ByRoute(routes.clone());
        let by_host_and_route = ByHostAndRoute::new(routes);
        let request = parts("https://api.test/a/1");
        let state = crate::KeyedState::new(crate::KeyedStateConfig::new()).unwrap();
        let key_fns: [&(dyn KeyFn + Sync); 4] = [&by_host, &global, &by_route, &by_host_and_route];
        let per_thread: Vec<Vec<Key>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    let state = state.clone();
                    let request = &request;
                    scope.spawn(move || {
                        key_fns
                            .iter()
                            .map(|key_fn| {
                                let first = key_fn.key(request);
                                for _ in 0..2 * COPY_EVERY_MISSES {
                                    assert_eq!(key_fn.key(request), first);
                                }
                                let hot = key_fn.key(request);
                                assert!(is_or_copies(&hot, &hot), "{hot}");
                                assert_eq!(hot, first);
                                assert_eq!(hot.prehash(), first.prehash());
                                // Stable once copied: the same copy every time.
                                assert!(Arc::ptr_eq(&key_fn.key(request).name, &hot.name));
                                state.with_or_insert(&hot, || 0u8, |_| ());
                                hot
                            })
                            .collect()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (a, b) in per_thread[0].iter().zip(&per_thread[1]) {
            assert_eq!(a, b);
            assert!(
                !Arc::ptr_eq(&a.name, &b.name),
                "{a}: one count shared by two threads"
            );
        }
        // One state per key, whichever thread's copy made it.
        assert_eq!(state.len(), 4);
    }

    /// A thread cycling through more keys than it keeps copies of copies one miss in
    /// `COPY_EVERY_MISSES` and keeps at most `THREAD_KEYS_MAX`.
    #[test]
    fn thread_copies_are_bounded() {
        let keys: Vec<Key> = (0..3 * THREAD_KEYS_MAX)
            .map(|i| Key::new(format!("k{i}")))
            .collect();
        let mut made = std::collections::HashSet::new();
        for _ in 0..4 {
            for key in &keys {
                let out = key.for_this_thread();
                assert_eq!(&out, key);
                if !Arc::ptr_eq(&out.name, &key.name) {
                    made.insert(Arc::as_ptr(&out.name) as *const u8 as usize);
                }
            }
        }
        THREAD_KEYS.with(|keys| assert!(keys.borrow().copies.len() <= THREAD_KEYS_MAX));
        // Mostly misses (the keys cycle past the copies kept): one in eight makes a copy.
        let calls = 4 * keys.len();
        assert!(
            made.len() <= calls / COPY_EVERY_MISSES as usize + 1,
            "{}",
            made.len()
        );
        assert!(!made.is_empty());
    }

    fn parts(uri: &str) -> Parts {
        http::Request::get(uri).body(()).unwrap().into_parts().0
    }

    #[test]
    fn keys_made_apart_are_equal_by_name_and_share_the_prehash() {
        let made = Key::new("api.github.com");
        let from_string = Key::from(String::from("api.github.com"));
        let from_arc = Key::from(Arc::<str>::from("api.github.com"));
        for other in [&from_string, &from_arc, &made.clone()] {
            assert_eq!(&made, other);
            assert_eq!(made.prehash(), other.prehash());
            assert_eq!(made.cmp(other), std::cmp::Ordering::Equal);
        }
        assert_ne!(made, Key::new("api.github.co"));
        // `Hash` stays the hash of the name, so a map of keys can be searched by `&str`.
        let mut map = std::collections::HashMap::new();
        map.insert(made.clone(), 1);
        assert_eq!(map.get("api.github.com"), Some(&1));
        assert_eq!(map.get(&from_arc), Some(&1));
    }

    proptest::proptest! {
        /// Equality, order and the prehash agree with the names, whatever the names.
        #[test]
        fn equality_order_and_prehash_follow_the_name(a in ".{0,12}", b in ".{0,12}") {
            let (x, y) = (Key::new(&a), Key::new(&b));
            proptest::prop_assert_eq!(x == y, a == b);
            proptest::prop_assert_eq!(x.cmp(&y), a.cmp(&b));
            proptest::prop_assert_eq!(x.partial_cmp(&y), a.partial_cmp(&b));
            if a == b {
                proptest::prop_assert_eq!(x.prehash(), y.prehash());
            }
        }
    }

    /// The host extraction that `with_request_host` replaced (rsplit on `@`, strip the default port,
    /// lowercase), kept as the reference the one-pass scan must agree with.
    fn reference_host(parts: &Parts) -> String {
        let host = parts
            .uri
            .authority()
            .map(|authority| authority.as_str())
            .or_else(|| {
                parts
                    .headers
                    .get(http::header::HOST)
                    .and_then(|value| value.to_str().ok())
            })
            .unwrap_or("");
        let host = host.rsplit_once('@').map_or(host, |(_, host)| host);
        let default_port = match parts.uri.scheme_str() {
            Some(scheme) if scheme.eq_ignore_ascii_case("https") => Some(":443"),
            Some(scheme) if scheme.eq_ignore_ascii_case("http") => Some(":80"),
            _ => None,
        };
        let host = default_port
            .and_then(|port| host.strip_suffix(port))
            .unwrap_or(host);
        host.to_ascii_lowercase()
    }

    /// `scan_authority` byte by byte, as it was written before it read eight bytes at a time.
    fn reference_scan(authority: &[u8]) -> (usize, bool) {
        let start = authority
            .iter()
            .rposition(|&b| b == b'@')
            .map_or(0, |at| at + 1);
        let upper = authority[start..].iter().any(u8::is_ascii_uppercase);
        (start, upper)
    }

    #[test]
    fn scan_authority_sees_every_byte_value_at_every_position() {
        for len in 0..=17 {
            for at in 0..len {
                for byte in 0..=u8::MAX {
                    let mut authority = vec![b'a'; len];
                    authority[at] = byte;
                    assert_eq!(
                        scan_authority(&authority),
                        reference_scan(&authority),
                        "{byte:#x} at {at} of {len}"
                    );
                }
            }
        }
    }

    proptest::proptest! {
        /// The one-pass scan finds the host the reference finds, for any absolute URI the
        /// `http` crate accepts (userinfo, capitals, IPv6 literals, default and other ports).
        #[test]
        fn with_host_agrees_with_the_reference_on_uris(
            scheme in "(http|https|HTTP|HtTpS|ftp|ws)",
            userinfo in "([a-zA-Z0-9:%@._-]{0,8}@)?",
            host in "([a-zA-Z0-9.-]{0,20}|\\[[0-9a-fA-F:]{2,12}\\])",
            port in "(:[0-9]{0,5}|:80|:443|:4430|:8443)?",
            path in "(/[a-zA-Z0-9]{0,6}){0,2}",
        ) {
            let uri = format!("{scheme}://{userinfo}{host}{port}{path}");
            let Ok(request) = http::Request::get(uri.as_str()).body(()) else {
                return Ok(());
            };
            let parts = request.into_parts().0;
            let found = with_request_host(&parts, str::to_owned);
            proptest::prop_assert_eq!(&found, &reference_host(&parts), "uri {}", uri);
            let by_host = ByHost::new();
            let key = by_host.key(&parts);
            proptest::prop_assert_eq!(key.as_str(), found.as_str());
            // The same URI built from its parts keeps the scheme as spelled.
            let built = http::Uri::builder()
                .scheme(scheme.as_str())
                .authority(parts.uri.authority().unwrap().as_str())
                .path_and_query(parts.uri.path())
                .build()
                .unwrap();
            let mut parts = parts;
            parts.uri = built;
            proptest::prop_assert_eq!(&with_request_host(&parts, str::to_owned), &reference_host(&parts));
        }

        /// The word-at-a-time scan agrees with the byte loop on any bytes.
        #[test]
        fn scan_authority_agrees_with_the_byte_loop(
            authority in proptest::collection::vec(
                proptest::prop_oneof![
                    4 => 0u8..128,
                    1 => 0u8..=255,
                    1 => proptest::strategy::Just(b'@'),
                ],
                0..40,
            ),
        ) {
            proptest::prop_assert_eq!(scan_authority(&authority), reference_scan(&authority));
        }

        /// The same for a relative URI's `Host` header, whatever visible ASCII it holds (no
        /// scheme: no port is dropped), including hosts too long for the stack buffer.
        #[test]
        fn with_host_agrees_with_the_reference_on_host_headers(
            value in "([ -~]{0,40}|[a-zA-Z@:]{250,300})",
        ) {
            let mut parts = parts("/relative");
            let Ok(value) = http::HeaderValue::from_str(&value) else {
                return Ok(());
            };
            parts.headers.insert(http::header::HOST, value);
            proptest::prop_assert_eq!(with_request_host(&parts, str::to_owned), reference_host(&parts));
        }
    }

    #[test]
    fn by_host_drops_only_the_schemes_default_port() {
        let by_host = ByHost::new();
        let key = |uri: &str| by_host.key(&parts(uri));
        assert_eq!(
            key("https://api.github.com:443/a").as_str(),
            "api.github.com"
        );
        assert_eq!(
            key("HTTPS://Api.GitHub.com:443/a").as_str(),
            "api.github.com"
        );
        assert_eq!(key("http://api.github.com:80/a").as_str(), "api.github.com");
        assert_eq!(key("http://u:p@[::1]:80/a").as_str(), "[::1]");
        // Not the default port of the scheme: another server.
        assert_eq!(
            key("http://api.github.com:443/a").as_str(),
            "api.github.com:443"
        );
        assert_eq!(
            key("https://api.github.com:8443/a").as_str(),
            "api.github.com:8443"
        );
        assert_eq!(
            key("https://api.github.com:4430/a").as_str(),
            "api.github.com:4430"
        );
        // Default-port and portless requests share one interned key.
        let (a, b) = (key("https://x.test:443/"), key("https://x.test/"));
        assert!(Arc::ptr_eq(&a.name, &b.name));
        let by_route = ByHostAndRoute::new(RouteTable::builder().build());
        assert_eq!(
            by_route.key(&parts("https://x.test:443/")),
            by_route.key(&parts("https://x.test/"))
        );
    }

    #[test]
    fn by_host_uses_authority_and_interns() {
        let by_host = ByHost::new();
        let a = by_host.key(&parts("https://API.github.com/repos/a/b"));
        let b = by_host.key(&parts("https://api.github.com/search"));
        assert_eq!(a.as_str(), "api.github.com");
        assert!(
            Arc::ptr_eq(&a.name, &b.name),
            "second lookup must reuse the interned key"
        );
        let c = by_host.key(&parts("http://127.0.0.1:8080/x"));
        assert_eq!(c.as_str(), "127.0.0.1:8080");
    }

    #[test]
    fn by_host_strips_userinfo_and_falls_back_to_host_header() {
        let by_host = ByHost::new();
        assert_eq!(
            by_host
                .key(&parts("https://user:secret@example.com/"))
                .as_str(),
            "example.com"
        );
        let mut relative = parts("/relative");
        assert_eq!(by_host.key(&relative).as_str(), "");
        relative
            .headers
            .insert(http::header::HOST, "Example.org".parse().unwrap());
        assert_eq!(by_host.key(&relative).as_str(), "example.org");
    }

    #[test]
    fn by_host_and_route_combines_and_interns() {
        let routes = RouteTable::builder()
            .route("/repos/{owner}/{repo}", "repos")
            .unwrap()
            .build();
        let key_fn = ByHostAndRoute::new(routes);
        let a = key_fn.key(&parts("https://api.github.com/repos/a/b"));
        let b = key_fn.key(&parts("https://api.github.com/repos/c/d"));
        let c = key_fn.key(&parts("https://api.github.com/other"));
        assert_eq!(a.as_str(), "api.github.com repos");
        assert!(Arc::ptr_eq(&a.name, &b.name));
        assert_eq!(c.as_str(), "api.github.com default");
    }

    #[test]
    fn interning_is_bounded_and_keys_stay_correct_past_the_cap() {
        let by_host = ByHost::new();
        for i in 0..MAX_INTERNED_HOSTS + 10 {
            let key = by_host.key(&parts(&format!("http://h{i}.example/")));
            assert_eq!(key.as_str(), format!("h{i}.example"));
        }
        assert_eq!(by_host.interned.snapshot.load().len(), MAX_INTERNED_HOSTS);
        let late = by_host.key(&parts("http://Late.example/"));
        assert_eq!(late.as_str(), "late.example");
        assert_eq!(by_host.interned.snapshot.load().len(), MAX_INTERNED_HOSTS);
        let a = by_host.key(&parts("http://h0.example/a"));
        let b = by_host.key(&parts("http://H0.EXAMPLE/b"));
        assert!(Arc::ptr_eq(&a.name, &b.name), "known hosts stay interned");

        // A host already interned still learns new buckets once the table is full.
        let routes = RouteTable::builder().prefix("/a", "a").unwrap().build();
        let key_fn = ByHostAndRoute::new(routes);
        for i in 0..MAX_INTERNED_HOSTS {
            key_fn.key(&parts(&format!("http://h{i}.example/")));
        }
        let a = key_fn.key(&parts("http://h0.example/a/1"));
        let b = key_fn.key(&parts("http://h0.example/a/2"));
        assert_eq!(a.as_str(), "h0.example a");
        assert!(Arc::ptr_eq(&a.name, &b.name));
        let late = key_fn.key(&parts("http://late.example/a"));
        assert_eq!(late.as_str(), "late.example a");
        assert_eq!(key_fn.interned.snapshot.load().len(), MAX_INTERNED_HOSTS);
    }

    /// The per-thread memo of the last host: each table hands out its own interned key,
    /// whichever table the thread used last, and a table learns new buckets of the memo's host.
    #[test]
    fn the_thread_memo_keeps_tables_apart() {
        // About interning: which table's key comes out, not the thread's copies of it.
        NO_THREAD_COPIES.set(true);
        let interned = |by_host: &ByHost, host: &str| {
            by_host
                .interned
                .snapshot
                .load()
                .get_key_value(host)
                .map(|(key, ())| key.clone())
                .unwrap()
        };
        let (a, b) = (ByHost::new(), ByHost::new());
        for _ in 0..3 {
            let from_a = a.key(&parts("https://x.test/"));
            let from_b = b.key(&parts("https://x.test/"));
            let again_b = b.key(&parts("https://X.test/"));
            assert!(Arc::ptr_eq(&from_a.name, &interned(&a, "x.test").name));
            assert!(Arc::ptr_eq(&from_b.name, &interned(&b, "x.test").name));
            assert!(Arc::ptr_eq(&again_b.name, &from_b.name));
            assert!(!Arc::ptr_eq(&from_a.name, &from_b.name));
        }
        // A table dropped while the memo names it, and a new one (perhaps at its address).
        drop(a);
        let c = ByHost::new();
        let from_c = c.key(&parts("https://x.test/"));
        assert!(Arc::ptr_eq(&from_c.name, &interned(&c, "x.test").name));
        assert_eq!(c.key(&parts("https://y.test/")).as_str(), "y.test");
        // Two, then three hosts in turn (hits in either memo, then misses that replace them).
        for hosts in [&["x.test", "y.test"][..], &["x.test", "y.test", "z.test"]] {
            for _ in 0..3 {
                for host in hosts {
                    let key = c.key(&parts(&format!("https://{host}/")));
                    assert!(Arc::ptr_eq(&key.name, &interned(&c, host).name));
                    let other = b.key(&parts(&format!("https://{host}/")));
                    assert!(Arc::ptr_eq(&other.name, &interned(&b, host).name));
                }
            }
        }

        let routes = RouteTable::builder()
            .prefix("/a", "a")
            .unwrap()
            .prefix("/b", "b")
            .unwrap()
            .build();
        let (p, q) = (
            ByHostAndRoute::new(routes.clone()),
            ByHostAndRoute::new(routes),
        );
        let pa = p.key(&parts("https://x.test/a"));
        assert_eq!(pa.as_str(), "x.test a");
        // The memo holds x.test's pairs without "b": the bucket is still learned.
        let pb = p.key(&parts("https://x.test/b"));
        assert_eq!(pb.as_str(), "x.test b");
        assert!(Arc::ptr_eq(
            &p.key(&parts("https://x.test/b/1")).name,
            &pb.name
        ));
        assert!(Arc::ptr_eq(
            &p.key(&parts("https://x.test/a/1")).name,
            &pa.name
        ));
        let qa = q.key(&parts("https://x.test/a"));
        assert_eq!(qa, pa);
        assert!(
            !Arc::ptr_eq(&qa.name, &pa.name),
            "each table interns its own keys"
        );
        assert!(Arc::ptr_eq(
            &p.key(&parts("https://x.test/a")).name,
            &pa.name
        ));
    }

    #[test]
    fn concurrent_interning_hands_out_one_key_per_host() {
        let by_host = ByHost::new();
        let keys: Vec<Vec<Key>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let by_host = by_host.clone();
                    scope.spawn(move || {
                        NO_THREAD_COPIES.set(true);
                        (0..64)
                            .map(|i| by_host.key(&parts(&format!("http://h{i}.example:8080/"))))
                            .collect()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for thread in &keys[1..] {
            for (a, b) in thread.iter().zip(&keys[0]) {
                assert!(Arc::ptr_eq(&a.name, &b.name), "{a} interned twice");
            }
        }
        assert_eq!(by_host.interned.snapshot.load().len(), 64);
    }

    #[test]
    fn ports_and_ipv6_literals_are_part_of_the_host_key() {
        let by_host = ByHost::new();
        assert_eq!(
            by_host.key(&parts("http://[::1]:8080/")).as_str(),
            "[::1]:8080"
        );
        assert_eq!(
            by_host.key(&parts("http://[FE80::1]/")).as_str(),
            "[fe80::1]"
        );
        assert_ne!(
            by_host.key(&parts("https://api.example.com/")),
            by_host.key(&parts("https://api.example.com:8443/"))
        );
    }

    #[test]
    fn closures_and_key_of() {
        let key_fn = |parts: &Parts| Key::new(parts.method.as_str());
        let request = http::Request::post("http://h/").body(7).unwrap();
        let (key, request) = key_fn.key_of(request);
        assert_eq!(key.as_str(), "POST");
        assert_eq!(*request.body(), 7);
        assert_eq!(Global::new().key(&parts("http://h/")).as_str(), "global");
    }
}
