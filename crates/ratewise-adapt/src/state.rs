//! Per-key state: learned policies, in-flight accounting, cooldowns and the CUBIC limiter.
//!
//! # The accounting model
//!
//! Every reservation gets a sequence number from its key. A response to the request with
//! sequence `s` that says "remaining `r`" means: after the server counted this request, `r` were
//! left. Requests reserved *before* `s` reached the server before it (requests are sent in
//! reservation order), so they are already in `r`; requests reserved *after* `s` may not be. The
//! budget left for new requests is therefore `r - (reservations after s)`, and every new
//! reservation takes one from it. Only the freshest response (highest `s`) updates the
//! estimate, so a late response of an old request cannot undo newer information. This counts
//! every request in flight exactly once: 16 tasks that see `remaining = 5` send 5.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use ratewise_core::{Key, KeyedState, metric_names};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::AdaptConfig;
use crate::cubic::AdaptiveRate;
use crate::observe::{MAX_POLICIES, Observation, tightness_of};

/// Longest cooldown stored from a server's value; callers fail fast long before (`max_wait`).
const MAX_COOLDOWN: Duration = Duration::from_secs(24 * 3600);
/// Longest pause after refusals the headers do not explain, however many in a row.
const MAX_UNEXPLAINED_PAUSE: Duration = Duration::from_secs(3600);
/// Shortest pause after a refusal the headers do not explain, when a policy in other units
/// says it resets sooner.
const MIN_PAUSE: Duration = Duration::from_secs(1);
/// Longest reset stored from a server's value.
const MAX_RESET: Duration = Duration::from_secs(7 * 24 * 3600);

/// The state shared by an [`AdaptLayer`](crate::AdaptLayer), its clones and its services.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: AdaptConfig,
    pub(crate) routes: KeyedState<KeyState>,
    pub(crate) buckets: KeyedState<KeyState>,
    epoch: Instant,
    wall_epoch: SystemTime,
    /// Nanoseconds after `epoch` until which every key cools down (0: none).
    global_until: AtomicU64,
    /// Until when each key the server blocked (a cooldown, an exhausted window) must send
    /// nothing, kept apart from the key's state: the keyed maps evict idle states after
    /// minutes, and a state made anew must not forget a cooldown of an hour.
    blocked: Mutex<HashMap<Key, Instant>>,
}

impl Shared {
    pub(crate) fn new(config: AdaptConfig) -> Result<Self, ratewise_core::KeyedStateError> {
        Ok(Shared {
            routes: KeyedState::new(config.keyed)?,
            buckets: KeyedState::new(config.keyed)?,
            config,
            epoch: Instant::now(),
            wall_epoch: SystemTime::now(),
            global_until: AtomicU64::new(0),
            blocked: Mutex::new(HashMap::new()),
        })
    }

    /// Remembers that `key` may send nothing until `until`, beyond its state's eviction.
    fn remember_block(&self, key: &Key, until: Instant, now: Instant) {
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        let cap = self.config.keyed.get_max_keys();
        if blocked.len() >= cap && !blocked.contains_key(key) {
            blocked.retain(|_, until| *until > now);
            if blocked.len() >= cap {
                // Full of live blocks: drop the one that ends first.
                if let Some(first) = blocked
                    .iter()
                    .min_by_key(|(_, until)| **until)
                    .map(|(key, _)| key.clone())
                {
                    blocked.remove(&first);
                }
            }
        }
        let entry = blocked.entry(key.clone()).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// Forgets the block `remembered` for `key`, unless a later one replaced it (a state made
    /// anew while this one lived on in a request).
    fn forget_block(&self, key: &Key, remembered: Instant) {
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        if blocked.get(key).is_some_and(|until| *until <= remembered) {
            blocked.remove(key);
        }
    }

    /// Until when `key` must send nothing, if a block remembered for it is still running.
    fn remembered_block(&self, key: &Key, now: Instant) -> Option<Instant> {
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        match blocked.get(key) {
            Some(until) if *until > now => Some(*until),
            Some(_) => {
                blocked.remove(key);
                None
            }
            None => None,
        }
    }

    /// The wall-clock time of `now`, advancing with tokio's clock (so a paused test clock and
    /// a server simulated on it agree on `Date` arithmetic).
    pub(crate) fn wall_clock(&self, now: Instant) -> SystemTime {
        self.wall_epoch + now.saturating_duration_since(self.epoch)
    }

    fn seconds(&self, now: Instant) -> f64 {
        now.saturating_duration_since(self.epoch).as_secs_f64()
    }

    fn global_until(&self) -> Option<Instant> {
        match self.global_until.load(Ordering::Acquire) {
            0 => None,
            nanos => Some(self.epoch + Duration::from_nanos(nanos)),
        }
    }

    fn extend_global(&self, until: Instant) {
        let nanos = u64::try_from(until.saturating_duration_since(self.epoch).as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        self.global_until.fetch_max(nanos, Ordering::AcqRel);
    }
}

/// The `key` label of a metric: the key's shared name (no copy of the string).
pub(crate) fn key_label(key: &Key) -> metrics::SharedString {
    metrics::SharedString::from_shared(key.to_shared())
}

/// Why a request waits (the `reason` label of the wait histogram).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitReason {
    Cooldown,
    Exhausted,
    Spread,
    SlowStart,
    Cubic,
}

impl WaitReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            WaitReason::Cooldown => "cooldown",
            WaitReason::Exhausted => "exhausted",
            WaitReason::Spread => "spread",
            WaitReason::SlowStart => "slow_start",
            WaitReason::Cubic => "cubic",
        }
    }
}

/// A request may not go yet: retry at `until`, or when the key changes (`None`: only then).
///
/// For [`WaitReason::SlowStart`], `until` is when the claim of the requests in flight expires;
/// the wait is for their response, capped by `max_wait` from when it began. Any other `until`
/// is an instant the key may not send before (a cooldown, a reset, the learned rate).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Wait {
    pub(crate) until: Option<Instant>,
    pub(crate) reason: WaitReason,
}

/// The state of one key (a route key, or a server-declared bucket several routes share).
#[derive(Debug)]
pub(crate) struct KeyState {
    key: Key,
    /// The host part of bucket keys made from this route key.
    namespace: Box<str>,
    /// Whether `Inner::aliases` holds any: until then, resolving takes no lock.
    has_aliases: AtomicBool,
    inner: Mutex<Inner>,
    notify: Arc<Notify>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    id: u64,
    limit: Option<u64>,
    window: Option<Duration>,
    /// Requests that may still be sent in this window (may go negative).
    available: i64,
    known_remaining: bool,
    reset_at: Option<Instant>,
    /// Sequence number of the reservation whose response set `available`.
    info_seq: u64,
    counts_requests: bool,
    /// One unit is reserved per request in flight (see `ObservedPolicy::spent_per_request`).
    spent_per_request: bool,
    /// The reset passed when the key's sequence was at this value: the slot is being
    /// re-learned from the responses of later requests.
    expired_at_seq: Option<u64>,
    /// Kept for a window no response described (see the expired-slot loop of `apply`).
    assumed: bool,
}

#[derive(Debug)]
struct Inner {
    /// The buckets the server declared for this route, by the first segment of the path.
    aliases: [Option<Alias>; MAX_ALIASES],
    /// The alias set last (replaced first when all are taken).
    last_alias: usize,
    seq: u64,
    in_flight: u32,
    /// When the last reservation was granted: slow start's claim runs from it.
    last_sent: Option<Instant>,
    responses: u64,
    waiters: u32,
    slots: [Slot; MAX_POLICIES],
    slot_count: usize,
    cooldown_until: Option<Instant>,
    /// Refusals in a row that the headers did not explain (see `unexplained_refusal`).
    unexplained_refusals: u32,
    /// The key's sequence when the last of them started a pause: refusals of requests
    /// reserved before it are the same refusal.
    unexplained_since_seq: u64,
    /// The block last given to `Shared::remember_block` (only changes are written).
    remembered_until: Option<Instant>,
    spread_next: Option<Instant>,
    adaptive: AdaptiveRate,
    /// Last learned rate published as a gauge, in half-second steps of the clock.
    rate_published_at: f64,
}

/// Server-declared buckets remembered per route key: 16, so that the top-level resources an
/// application uses on one host (GitHub: `repos`, `users`, `orgs`, `search`, ...) fit without
/// evicting one another (a request on an evicted segment probes on the route's own state).
const MAX_ALIASES: usize = 16;

/// A route's path segment that the server put in a bucket.
#[derive(Debug)]
struct Alias {
    segment: u64,
    bucket: u64,
    state: Arc<KeyState>,
}

/// A snapshot of one learned policy (see [`KeySnapshot`](crate::KeySnapshot)).
pub(crate) struct SlotView {
    pub(crate) limit: Option<u64>,
    pub(crate) remaining: Option<i64>,
    pub(crate) reset_in: Option<Duration>,
    pub(crate) window: Option<Duration>,
}

impl KeyState {
    pub(crate) fn new(key: Key, namespace: &str, shared: &Shared) -> Self {
        // A state made anew (the key was evicted while blocked) keeps the block.
        let blocked_until = shared.remembered_block(&key, Instant::now());
        KeyState {
            key,
            namespace: namespace.into(),
            has_aliases: AtomicBool::new(false),
            inner: Mutex::new(Inner {
                aliases: Default::default(),
                last_alias: 0,
                seq: 0,
                in_flight: 0,
                last_sent: None,
                responses: 0,
                waiters: 0,
                slots: [Slot::default(); MAX_POLICIES],
                slot_count: 0,
                cooldown_until: blocked_until,
                unexplained_refusals: 0,
                unexplained_since_seq: 0,
                remembered_until: None,
                spread_next: None,
                adaptive: AdaptiveRate::new(shared.seconds(Instant::now())),
                rate_published_at: f64::NEG_INFINITY,
            }),
            notify: Arc::new(Notify::new()),
        }
    }

    pub(crate) fn key(&self) -> &Key {
        &self.key
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The state is plain counters; a panic elsewhere cannot leave it unusable.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The state requests of this route whose path starts with `segment` (a hash, see
    /// [`path_segment`](crate::observe::path_segment)) count against: the server-declared
    /// bucket once known, else the route's own.
    pub(crate) fn resolve(self: &Arc<Self>, segment: u64) -> Arc<KeyState> {
        if !self.has_aliases.load(Ordering::Acquire) {
            return Arc::clone(self);
        }
        let inner = self.lock();
        match inner
            .aliases
            .iter()
            .flatten()
            .find(|alias| alias.segment == segment)
        {
            Some(alias) => Arc::clone(&alias.state),
            None => Arc::clone(self),
        }
    }

    /// The bucket this route was last found to share, else the route's own state.
    pub(crate) fn resolve_latest(self: &Arc<Self>) -> Arc<KeyState> {
        let inner = self.lock();
        match &inner.aliases[inner.last_alias] {
            Some(alias) => Arc::clone(&alias.state),
            None => Arc::clone(self),
        }
    }

    pub(crate) fn notified(&self) -> tokio::sync::futures::OwnedNotified {
        Arc::clone(&self.notify).notified_owned()
    }

    pub(crate) fn add_waiter(&self, delta: i32) {
        let mut inner = self.lock();
        inner.waiters = inner.waiters.saturating_add_signed(delta);
    }

    fn wake(&self, waiters: u32) {
        if waiters > 0 {
            self.notify.notify_waiters();
        }
    }

    /// Reserves a request now, or says how long to wait.
    pub(crate) fn try_reserve(&self, shared: &Shared, now: Instant) -> Result<u64, Wait> {
        if let Some(until) = shared.global_until()
            && now < until
        {
            return Err(Wait {
                until: Some(until),
                reason: WaitReason::Cooldown,
            });
        }
        let config = &shared.config;
        let mut inner = self.lock();
        if let Some(until) = inner.cooldown_until {
            if now < until {
                return Err(Wait {
                    until: Some(until),
                    reason: WaitReason::Cooldown,
                });
            }
            inner.cooldown_until = None;
            tracing::debug!(key = %self.key, "adapt: cooldown left");
        }
        let seq = inner.seq;
        let mut relearning = inner.responses == 0;
        let mut exhausted_until: Option<Instant> = None;
        let mut spread_interval: Option<Duration> = None;
        for slot in inner.slots_mut() {
            if slot.expired_at_seq.is_none() && slot.reset_at.is_some_and(|reset| now >= reset) {
                slot.expired_at_seq = Some(seq);
            }
            if slot.expired_at_seq.is_some() {
                relearning = true;
                continue;
            }
            if !slot.known_remaining {
                continue;
            }
            let margin = if slot.counts_requests {
                config.safety_margin.requests(slot.limit)
            } else {
                0
            };
            if slot.available <= margin {
                // A server that states no reset (Shopify, a bare remaining count) gets the
                // unknown-reset pause, then a probe; a wait that is already over would spin.
                let until = *slot.reset_at.get_or_insert(now + config.unknown_reset);
                exhausted_until = Some(exhausted_until.map_or(until, |u| u.max(until)));
            } else if config.spread
                && slot.counts_requests
                && let Some(reset) = slot.reset_at
            {
                let budget = u32::try_from(slot.available - margin).unwrap_or(u32::MAX);
                let interval = reset.saturating_duration_since(now) / budget;
                spread_interval = Some(spread_interval.map_or(interval, |i| i.max(interval)));
            }
        }
        if let Some(until) = exhausted_until {
            return Err(Wait {
                until: Some(until),
                reason: WaitReason::Exhausted,
            });
        }
        if relearning && inner.in_flight >= config.slow_start {
            // The requests in flight claim slow start until they answer, or until none was
            // sent for `probe_timeout`: a probe that never completes cannot stall the key, and
            // the key still gets one request more per `probe_timeout`, never a burst.
            let expiry = inner.last_sent.map(|sent| sent + config.probe_timeout);
            if expiry.is_none_or(|expiry| now < expiry) {
                return Err(Wait {
                    until: expiry,
                    reason: WaitReason::SlowStart,
                });
            }
            tracing::debug!(key = %self.key, in_flight = inner.in_flight, "adapt: slow start's probes unanswered for probe_timeout; one more probes");
        }
        // The learned rate applies once a throttle turned it on (its clock is read only then).
        let adaptive = config.header_less && inner.slot_count == 0 && inner.adaptive.is_enabled();
        let seconds = if adaptive { shared.seconds(now) } else { 0.0 };
        if adaptive {
            let wait = inner.adaptive.wait(seconds);
            if wait > 0.0 {
                // At least a microsecond, so that a wait never rounds down to a busy loop.
                let wait = Duration::from_secs_f64(wait).max(Duration::from_micros(1));
                return Err(Wait {
                    until: Some(now + wait),
                    reason: WaitReason::Cubic,
                });
            }
        }
        if let Some(next) = inner.spread_next
            && spread_interval.is_some()
            && now < next
        {
            return Err(Wait {
                until: Some(next),
                reason: WaitReason::Spread,
            });
        }
        // Commit.
        inner.seq += 1;
        inner.in_flight += 1;
        inner.last_sent = Some(now);
        for slot in inner.slots_mut() {
            if slot.spent_per_request && slot.expired_at_seq.is_none() {
                slot.available = slot.available.saturating_sub(1);
            }
        }
        if adaptive {
            inner.adaptive.take(seconds);
        }
        inner.spread_next = spread_interval.map(|interval| now + interval);
        Ok(inner.seq)
    }

    /// Frees the in-flight slot of a reservation whose request got no usable response
    /// (failed, cancelled, or answered from a cache).
    ///
    /// Its unit of quota stays spent: the request may have reached the server and been counted
    /// (a timeout above this layer drops a future whose request the server already has; tower's
    /// `Buffer` and many clients send in `call`, before the first poll). Giving the unit back
    /// would let one more request go than the server allows. The next fresher response corrects
    /// the estimate if the request never arrived.
    pub(crate) fn release(&self) {
        let mut inner = self.lock();
        inner.in_flight = inner.in_flight.saturating_sub(1);
        let waiters = inner.waiters;
        drop(inner);
        self.wake(waiters);
    }

    /// Applies a response to the request reserved as `seq` on `reserved_on`.
    ///
    /// `self` is the route's state; the observation lands on the bucket the response declares,
    /// or on the state the request was reserved on.
    // One call per response, from one place; a parameter struct would only rename these.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn complete(
        self: &Arc<Self>,
        reserved_on: &Arc<KeyState>,
        seq: u64,
        observation: &Observation,
        bucket_name: Option<&str>,
        segment: u64,
        shared: &Shared,
        now: Instant,
    ) {
        let target = match (observation.bucket, bucket_name) {
            (Some(bucket), Some(name)) => Some(self.bucket_state(segment, bucket, name, shared)),
            _ => None,
        };
        match target {
            Some(target) if !Arc::ptr_eq(&target, reserved_on) => {
                reserved_on.release();
                target.apply(observation, seq, false, shared, now);
            }
            // The common case: one lock for the release and the update.
            _ => reserved_on.apply(observation, seq, true, shared, now),
        }
    }

    /// The state of the server-declared bucket `name` (hash `bucket`), remembered as this
    /// route's alias so the next requests of the route count against it before they are sent.
    ///
    /// Aliases are kept per first path segment, so one route key whose paths the server puts in
    /// different buckets (GitHub's `/search` and `/repos` under one host key) keeps them apart.
    fn bucket_state(
        self: &Arc<Self>,
        segment: u64,
        bucket: u64,
        name: &str,
        shared: &Shared,
    ) -> Arc<Self> {
        let mut inner = self.lock();
        if let Some(alias) = inner
            .aliases
            .iter()
            .flatten()
            .find(|alias| alias.segment == segment && alias.bucket == bucket)
        {
            return Arc::clone(&alias.state);
        }
        drop(inner);
        let key = Key::from(format!("{} bucket:{}", self.namespace, name));
        let state = shared
            .buckets
            .get_or_insert_with(&key, || KeyState::new(key.clone(), &self.namespace, shared));
        tracing::debug!(route = %self.key, bucket = %key, "adapt: route shares a server-declared bucket");
        inner = self.lock();
        let index = inner
            .aliases
            .iter()
            .position(|alias| alias.as_ref().is_none_or(|alias| alias.segment == segment))
            .unwrap_or((inner.last_alias + 1) % MAX_ALIASES);
        inner.aliases[index] = Some(Alias {
            segment,
            bucket,
            state: Arc::clone(&state),
        });
        inner.last_alias = index;
        self.has_aliases.store(true, Ordering::Release);
        let waiters = inner.waiters;
        drop(inner);
        // Waiters of the route re-resolve to the bucket.
        self.wake(waiters);
        state
    }

    /// Learns from one response. `same_state`: `seq` is a sequence number of this state, whose
    /// in-flight slot this also frees (under the same lock).
    fn apply(
        &self,
        observation: &Observation,
        seq: u64,
        same_state: bool,
        shared: &Shared,
        now: Instant,
    ) {
        let config = &shared.config;
        let mut inner = self.lock();
        if same_state {
            inner.in_flight = inner.in_flight.saturating_sub(1);
        }
        inner.responses += 1;
        let current_seq = inner.seq;
        let in_flight = i64::from(inner.in_flight);
        // The requests reserved after this one: not counted in the server's remaining yet.
        let after = if same_state {
            i64::try_from(current_seq.saturating_sub(seq)).unwrap_or(i64::MAX)
        } else {
            in_flight
        };
        let info_seq = if same_state { seq } else { current_seq };
        let mut seed_rate: Option<f64> = None;
        let mut learned_any = false;
        let mut overflow = 0usize;
        for policy in observation.policies() {
            let index = match inner.slots().iter().position(|slot| slot.id == policy.id) {
                Some(index) => index,
                None if inner.slot_count < MAX_POLICIES => {
                    let index = inner.slot_count;
                    inner.slots[index] = Slot {
                        id: policy.id,
                        ..Slot::default()
                    };
                    inner.slot_count += 1;
                    index
                }
                None => {
                    // Full: a tighter policy takes the place of the loosest one this response
                    // does not mention (the one that binds must not be the one dropped).
                    let tighter = tightness_of(policy.remaining, policy.limit);
                    let loosest = (0..inner.slot_count)
                        .filter(|&index| {
                            let id = inner.slots[index].id;
                            !observation.policies().iter().any(|p| p.id == id)
                        })
                        .max_by_key(|&index| inner.slots[index].tightness());
                    match loosest {
                        Some(index) if inner.slots[index].tightness() > tighter => {
                            inner.slots[index] = Slot {
                                id: policy.id,
                                ..Slot::default()
                            };
                            index
                        }
                        _ => {
                            overflow += 1;
                            continue;
                        }
                    }
                }
            };
            let slot = &mut inner.slots[index];
            let new_slot = slot.info_seq == 0 && !slot.known_remaining && slot.reset_at.is_none();
            let fresher = !same_state
                || seq >= slot.info_seq
                || slot.expired_at_seq.is_some_and(|expired| seq > expired);
            slot.limit = policy.limit.or(slot.limit);
            slot.window = policy.window.or(slot.window);
            slot.counts_requests = policy.counts_requests;
            slot.spent_per_request = policy.spent_per_request;
            if !fresher {
                continue;
            }
            learned_any = true;
            slot.assumed = false;
            let was_expired = slot.expired_at_seq.take().is_some();
            match policy.remaining {
                Some(remaining) => {
                    let remaining = i64::try_from(remaining).unwrap_or(i64::MAX);
                    slot.available = if slot.spent_per_request {
                        remaining.saturating_sub(after)
                    } else {
                        remaining
                    };
                    slot.known_remaining = true;
                }
                None => slot.known_remaining = false,
            }
            slot.reset_at = match policy.reset_after {
                Some(after) => Some(now + after.min(MAX_RESET)),
                None if slot.known_remaining && slot.available <= 0 => {
                    Some(now + config.unknown_reset)
                }
                None => None,
            };
            slot.info_seq = info_seq;
            if new_slot || was_expired {
                tracing::debug!(
                    key = %self.key,
                    limit = ?slot.limit,
                    remaining = ?policy.remaining,
                    reset_in = ?policy.reset_after,
                    "adapt: state learned"
                );
                if let (Some(limit), Some(window)) = (slot.limit, slot.window)
                    && slot.counts_requests
                    && !window.is_zero()
                {
                    seed_rate = Some(limit as f64 / window.as_secs_f64());
                }
            } else {
                tracing::trace!(
                    key = %self.key,
                    limit = ?slot.limit,
                    remaining = ?policy.remaining,
                    reset_in = ?policy.reset_after,
                    "adapt: state updated"
                );
            }
        }
        if overflow > 0 {
            tracing::debug!(key = %self.key, ignored = overflow, "adapt: more policies than tracked; extra ones ignored");
        }
        // Expired slots that a request sent after the expiry did not mention are gone: the
        // server stopped describing them (a response without headers is not "unlimited", but a
        // fresh response without them after the reset is the best information there is).
        let mentioned = |inner: &Inner, index: usize| {
            observation
                .policies()
                .iter()
                .any(|policy| policy.id == inner.slots[index].id)
        };
        let mut index = 0;
        while index < inner.slot_count {
            let stale = inner.slots[index]
                .expired_at_seq
                .is_some_and(|expired| !same_state || seq > expired);
            if stale && !mentioned(&inner, index) {
                let slot = &mut inner.slots[index];
                // Once: a slot assumed already and expired again is forgotten (the server may
                // have stopped limiting); and never on a refusal (a bare 429 must not become a
                // block of a whole window: the refusal paths below handle it).
                if let (Some(limit), Some(window)) = (slot.limit, slot.window)
                    && slot.spent_per_request
                    && !window.is_zero()
                    && !slot.assumed
                    && !observation.rate_limited
                {
                    // A known window whose reset passed, answered without headers (a CDN, a
                    // server that describes limits only sometimes): the policy is assumed to
                    // hold for another window, counted from now, with this request spent.
                    // Forgetting it would release every waiter at once.
                    slot.available = i64::try_from(limit)
                        .unwrap_or(i64::MAX)
                        .saturating_sub(1 + after);
                    slot.known_remaining = true;
                    slot.reset_at = Some(now + window);
                    slot.info_seq = info_seq;
                    slot.expired_at_seq = None;
                    slot.assumed = true;
                    tracing::debug!(key = %self.key, limit, window = ?window, "adapt: expired policy not described again; assumed for another window");
                    index += 1;
                    continue;
                }
                let last = inner.slot_count - 1;
                inner.slots.swap(index, last);
                inner.slot_count = last;
                tracing::debug!(key = %self.key, "adapt: expired policy no longer described; forgotten");
            } else {
                index += 1;
            }
        }
        // A refusal without any usable timing on a key with learned policies: the server's
        // count is spent (GitHub: "remaining 0 and no retry-after: wait until the reset").
        if observation.rate_limited && observation.cooldown().is_none() && !learned_any {
            let unknown_reset = now + config.unknown_reset;
            for slot in inner.slots_mut() {
                if slot.spent_per_request && slot.expired_at_seq.is_none() {
                    slot.available = slot.available.min(0);
                    slot.known_remaining = true;
                    slot.reset_at = Some(slot.reset_at.map_or(unknown_reset, |r| r.max(now)));
                }
            }
        }
        // A refusal the headers do not explain (no Retry-After, and every policy it describes
        // says it has requests left: GitHub's secondary limits) would slow nothing down: pause
        // the key, doubling with each such refusal in a row. Refusals of requests sent before
        // the pause began are the same refusal, not another in a row (16 in flight must not
        // make 2^16 minutes). A policy in other units (tokens) that resets sooner bounds it.
        let unexplained = observation.rate_limited
            && observation.cooldown().is_none()
            && learned_any
            && observation
                .policies()
                .iter()
                .all(|policy| policy.remaining.is_some_and(|remaining| remaining > 0));
        let mut unexplained_wait = None;
        if unexplained {
            let new_in_a_row =
                inner.unexplained_refusals == 0 || !same_state || seq > inner.unexplained_since_seq;
            if new_in_a_row {
                inner.unexplained_refusals = inner.unexplained_refusals.saturating_add(1);
                inner.unexplained_since_seq = inner.seq;
            }
            if !config.unexplained_refusal.is_zero() {
                let doublings = (inner.unexplained_refusals - 1).min(16);
                let other_units_reset = observation
                    .policies()
                    .iter()
                    .filter(|policy| !policy.counts_requests)
                    .filter_map(|policy| policy.reset_after)
                    .max();
                let wait = config
                    .unexplained_refusal
                    .saturating_mul(1 << doublings)
                    .min(MAX_UNEXPLAINED_PAUSE);
                let wait = other_units_reset.map_or(wait, |reset| wait.min(reset.max(MIN_PAUSE)));
                unexplained_wait = Some(wait);
                tracing::warn!(key = %self.key, wait = ?wait, in_a_row = inner.unexplained_refusals, "adapt: refusal the headers do not explain (no Retry-After, quota left); pausing the key");
            }
        } else if !observation.rate_limited {
            inner.unexplained_refusals = 0;
        }
        if let Some(wait) = observation.cooldown().or(unexplained_wait) {
            let wait = wait.min(MAX_COOLDOWN);
            let until = now + wait;
            let scope = if observation.global { "global" } else { "key" };
            if observation.global {
                shared.extend_global(until);
            } else {
                inner.cooldown_until = Some(inner.cooldown_until.map_or(until, |c| c.max(until)));
            }
            tracing::info!(key = %self.key, scope, wait = ?wait, "adapt: cooldown entered");
            metrics::counter!(
                metric_names::ADAPT_COOLDOWNS_TOTAL,
                "key" => key_label(&self.key),
                "scope" => scope
            )
            .increment(1);
        }
        if config.header_less && (seed_rate.is_some() || inner.slot_count == 0) {
            let seconds = shared.seconds(now);
            if let Some(rate) = seed_rate {
                inner.adaptive.seed(rate, seconds);
            }
            if inner.slot_count == 0 {
                let throttled = observation.rate_limited;
                let was_enabled = inner.adaptive.is_enabled();
                let rate = inner.adaptive.on_response(throttled, seconds);
                if throttled || (was_enabled && seconds - inner.rate_published_at >= 0.5) {
                    inner.rate_published_at = seconds;
                    if throttled {
                        tracing::debug!(key = %self.key, rate, "adapt: throttled; learned rate lowered");
                    }
                    metrics::gauge!(metric_names::ADAPT_LEARNED_RATE, "key" => key_label(&self.key))
                        .set(rate);
                }
            }
        }
        // Until when the server said nothing may go (a cooldown, an exhausted window with a
        // known reset): kept past this state's eviction.
        let blocked_until = inner
            .slots()
            .iter()
            .filter(|slot| slot.known_remaining && slot.available <= 0)
            .filter_map(|slot| slot.reset_at)
            .chain(inner.cooldown_until)
            .max()
            .filter(|until| *until > now);
        match blocked_until {
            Some(until)
                if inner
                    .remembered_until
                    .is_none_or(|remembered| until > remembered) =>
            {
                inner.remembered_until = Some(until);
                shared.remember_block(&self.key, until, now);
            }
            // No longer blocked (a new window, a shorter wait): a state made anew must not wait
            // for the old block either.
            None => {
                if let Some(remembered) = inner.remembered_until.take() {
                    shared.forget_block(&self.key, remembered);
                }
            }
            _ => {}
        }
        let waiters = inner.waiters;
        drop(inner);
        self.wake(waiters);
    }

    /// A pause the server asked for in a response that says nothing else current (a refusal
    /// served from a cache): the cooldown, remembered past eviction, and nothing learned.
    pub(crate) fn pause(&self, until: Instant, global: bool, shared: &Shared, now: Instant) {
        if global {
            shared.extend_global(until);
        }
        let mut inner = self.lock();
        if !global {
            inner.cooldown_until = Some(inner.cooldown_until.map_or(until, |c| c.max(until)));
            if inner
                .remembered_until
                .is_none_or(|remembered| until > remembered)
            {
                inner.remembered_until = Some(until);
                shared.remember_block(&self.key, until, now);
            }
        }
        let waiters = inner.waiters;
        drop(inner);
        self.wake(waiters);
    }

    /// The learned CUBIC rate, when the header-less mode is active for this key.
    pub(crate) fn learned_rate(&self) -> Option<f64> {
        self.lock().adaptive.rate()
    }

    pub(crate) fn in_flight(&self) -> u32 {
        self.lock().in_flight
    }

    pub(crate) fn cooldown_until(&self) -> Option<Instant> {
        self.lock().cooldown_until
    }

    pub(crate) fn slot_views(&self, now: Instant) -> Vec<SlotView> {
        self.lock()
            .slots()
            .iter()
            .map(|slot| SlotView {
                limit: slot.limit,
                remaining: slot.known_remaining.then_some(slot.available),
                reset_in: slot.reset_at.map(|r| r.saturating_duration_since(now)),
                window: slot.window,
            })
            .collect()
    }
}

impl Slot {
    /// How close to refusing (lower is tighter), as `observe::tightness_of`.
    fn tightness(&self) -> u64 {
        let remaining = self
            .known_remaining
            .then(|| u64::try_from(self.available.max(0)).unwrap_or(0));
        tightness_of(remaining, self.limit)
    }
}

impl Inner {
    fn slots(&self) -> &[Slot] {
        &self.slots[..self.slot_count]
    }

    fn slots_mut(&mut self) -> &mut [Slot] {
        &mut self.slots[..self.slot_count]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SafetyMargin;
    use crate::observe::ObservedPolicy;

    fn shared(config: AdaptConfig) -> Shared {
        Shared::new(config).unwrap()
    }

    fn state(shared: &Shared) -> Arc<KeyState> {
        Arc::new(KeyState::new(Key::new("k"), "host", shared))
    }

    fn observation(remaining: u64, reset_secs: u64) -> Observation {
        let mut observation = Observation::default();
        observation.push(ObservedPolicy {
            id: ObservedPolicy::id_of(Some("p"), 0),
            limit: Some(100),
            remaining: Some(remaining),
            reset_after: Some(Duration::from_secs(reset_secs)),
            window: Some(Duration::from_secs(60)),
            counts_requests: true,
            spent_per_request: true,
        });
        observation
    }

    #[tokio::test(start_paused = true)]
    async fn sixteen_callers_that_see_five_remaining_send_five() {
        let shared = shared(AdaptConfig::new());
        let state = state(&shared);
        let now = Instant::now();
        // Slow start: one request until the first response.
        let first = state.try_reserve(&shared, now).unwrap();
        let wait = state.try_reserve(&shared, now).unwrap_err();
        assert_eq!(wait.reason, WaitReason::SlowStart);
        state.complete(&state, first, &observation(5, 30), None, 0, &shared, now);
        let granted = (0..16)
            .filter(|_| state.try_reserve(&shared, now).is_ok())
            .count();
        assert_eq!(granted, 5);
        let wait = state.try_reserve(&shared, now).unwrap_err();
        assert_eq!(wait.reason, WaitReason::Exhausted);
        assert_eq!(wait.until, Some(now + Duration::from_secs(30)));
    }

    /// A server that states `remaining` but no reset (Shopify's leaky bucket, a bare
    /// `X-RateLimit-Remaining`): once the client spends it, requests wait a while and probe,
    /// they never get a wait that is already over (a busy loop in `poll`).
    #[tokio::test(start_paused = true)]
    async fn spent_policies_without_reset_wait_for_the_unknown_reset() {
        let config = AdaptConfig::new().unknown_reset(Duration::from_millis(500));
        let shared = shared(config);
        let state = state(&shared);
        let now = Instant::now();
        let mut no_reset = observation(2, 0);
        no_reset.policies[0].reset_after = None;
        let first = state.try_reserve(&shared, now).unwrap();
        state.complete(&state, first, &no_reset, None, 0, &shared, now);
        state.try_reserve(&shared, now).unwrap();
        state.try_reserve(&shared, now).unwrap();
        let wait = state.try_reserve(&shared, now).unwrap_err();
        assert_eq!(wait.reason, WaitReason::Exhausted);
        assert_eq!(wait.until, Some(now + Duration::from_millis(500)));
        state.release();
        state.release();
        // Then one request probes the server.
        let later = now + Duration::from_millis(500);
        assert!(state.try_reserve(&shared, later).is_ok());
        assert_eq!(
            state.try_reserve(&shared, later).unwrap_err().reason,
            WaitReason::SlowStart
        );
    }

    /// Probes that never answer claim slow start for `probe_timeout` from the last request
    /// sent: then one more may go, and the claim runs again from it.
    #[tokio::test(start_paused = true)]
    async fn slow_start_claims_expire_after_the_probe_timeout() {
        let timeout = Duration::from_secs(5);
        let shared = shared(AdaptConfig::new().slow_start(2).probe_timeout(timeout));
        let state = state(&shared);
        let start = Instant::now();
        state.try_reserve(&shared, start).unwrap();
        let later = start + Duration::from_secs(1);
        state.try_reserve(&shared, later).unwrap();
        let wait = state.try_reserve(&shared, later).unwrap_err();
        assert_eq!(wait.reason, WaitReason::SlowStart);
        assert_eq!(wait.until, Some(later + timeout));
        assert!(state.try_reserve(&shared, later + timeout / 2).is_err());
        let expired = later + timeout;
        state.try_reserve(&shared, expired).unwrap();
        assert_eq!(state.in_flight(), 3);
        let wait = state.try_reserve(&shared, expired).unwrap_err();
        assert_eq!(wait.until, Some(expired + timeout));
        // One answer describes the key: slow start is over.
        state.complete(&state, 3, &observation(50, 30), None, 0, &shared, expired);
        assert!(state.try_reserve(&shared, expired).is_ok());
        assert_eq!(
            AdaptConfig::new()
                .probe_timeout(Duration::ZERO)
                .build()
                .unwrap_err(),
            crate::ConfigError::ZeroProbeTimeout
        );
    }

    #[tokio::test(start_paused = true)]
    async fn responses_count_only_requests_sent_after_them() {
        let shared = shared(AdaptConfig::new());
        let state = state(&shared);
        let now = Instant::now();
        let first = state.try_reserve(&shared, now).unwrap();
        state.complete(&state, first, &observation(10, 30), None, 0, &shared, now);
        let seqs: Vec<u64> = (0..4)
            .map(|_| state.try_reserve(&shared, now).unwrap())
            .collect();
        // The server counted the first two of the four; the later two are still on their way.
        state.complete(&state, seqs[1], &observation(8, 30), None, 0, &shared, now);
        // 8 left minus the 2 reserved after seqs[1]: 6 more may go.
        let granted = (0..10)
            .filter(|_| state.try_reserve(&shared, now).is_ok())
            .count();
        assert_eq!(granted, 6);
        // A late response of an older request does not raise the budget again.
        state.complete(&state, seqs[0], &observation(9, 30), None, 0, &shared, now);
        assert!(state.try_reserve(&shared, now).is_err());
    }

    /// A cancelled request may have reached the server (a timeout above the layer): its slot
    /// is freed, its unit stays spent, so the request after it cannot be one too many.
    #[tokio::test(start_paused = true)]
    async fn cancelled_reservations_keep_their_unit_spent() {
        let shared = shared(AdaptConfig::new());
        let state = state(&shared);
        let now = Instant::now();
        let first = state.try_reserve(&shared, now).unwrap();
        state.complete(&state, first, &observation(2, 30), None, 0, &shared, now);
        let _a = state.try_reserve(&shared, now).unwrap();
        let b = state.try_reserve(&shared, now).unwrap();
        assert!(state.try_reserve(&shared, now).is_err());
        // a is dropped.
        state.release();
        assert_eq!(state.in_flight(), 1);
        let wait = state.try_reserve(&shared, now).unwrap_err();
        assert_eq!(wait.reason, WaitReason::Exhausted);
        assert_eq!(wait.until, Some(now + Duration::from_secs(30)));
        // b's response (the server counted a and b: 0 left) confirms the estimate.
        state.complete(&state, b, &observation(0, 30), None, 0, &shared, now);
        assert!(state.try_reserve(&shared, now).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn margin_and_reset_expiry_then_probe() {
        let config = AdaptConfig::new().safety_margin(SafetyMargin::Fraction(0.1));
        let shared = shared(config);
        let state = state(&shared);
        let start = Instant::now();
        let first = state.try_reserve(&shared, start).unwrap();
        state.complete(&state, first, &observation(15, 10), None, 0, &shared, start);
        // Margin ceil(100 * 0.1) = 10: 5 of the 15 may go.
        let granted: Vec<u64> = (0..20)
            .filter_map(|_| state.try_reserve(&shared, start).ok())
            .collect();
        assert_eq!(granted.len(), 5);
        for _ in granted {
            state.release();
        }
        // After the reset: one probe until a fresh response arrives.
        let later = start + Duration::from_secs(10);
        let probe = state.try_reserve(&shared, later).unwrap();
        assert_eq!(
            state.try_reserve(&shared, later).unwrap_err().reason,
            WaitReason::SlowStart
        );
        state.complete(&state, probe, &observation(99, 60), None, 0, &shared, later);
        let granted = (0..100)
            .filter(|_| state.try_reserve(&shared, later).is_ok())
            .count();
        assert_eq!(granted, 99 - 10);
    }

    #[tokio::test(start_paused = true)]
    async fn refusal_cools_the_key_down_but_retry_after_on_success_does_not() {
        let shared = shared(AdaptConfig::new());
        let state = state(&shared);
        let now = Instant::now();
        let first = state.try_reserve(&shared, now).unwrap();
        let mut ok = observation(50, 30);
        ok.retry_after = Some(Duration::from_secs(5));
        state.complete(&state, first, &ok, None, 0, &shared, now);
        let second = state.try_reserve(&shared, now).unwrap();
        let mut refusal = observation(0, 30);
        refusal.rate_limited = true;
        refusal.retry_after = Some(Duration::from_secs(7));
        state.complete(&state, second, &refusal, None, 0, &shared, now);
        let wait = state.try_reserve(&shared, now).unwrap_err();
        assert_eq!(wait.reason, WaitReason::Cooldown);
        assert_eq!(wait.until, Some(now + Duration::from_secs(7)));
        assert_eq!(state.cooldown_until(), Some(now + Duration::from_secs(7)));
    }

    #[tokio::test(start_paused = true)]
    async fn global_refusals_cool_every_key_down() {
        let shared = shared(AdaptConfig::new());
        let a = state(&shared);
        let b = Arc::new(KeyState::new(Key::new("other"), "host", &shared));
        let now = Instant::now();
        let seq = a.try_reserve(&shared, now).unwrap();
        let mut refusal = Observation {
            rate_limited: true,
            global: true,
            retry_after: Some(Duration::from_secs(3)),
            ..Observation::default()
        };
        refusal.policy_count = 0;
        a.complete(&a, seq, &refusal, None, 0, &shared, now);
        let wait = b.try_reserve(&shared, now).unwrap_err();
        assert_eq!(wait.until, Some(now + Duration::from_secs(3)));
        assert!(b.try_reserve(&shared, now + Duration::from_secs(3)).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn declared_buckets_are_shared_between_routes() {
        let shared = shared(AdaptConfig::new());
        let route_a = state(&shared);
        let route_b = Arc::new(KeyState::new(Key::new("k2"), "host", &shared));
        let now = Instant::now();
        let mut declared = observation(3, 30);
        declared.bucket = Some(Observation::bucket_id("abcd"));
        let a = route_a.try_reserve(&shared, now).unwrap();
        route_a.complete(&route_a, a, &declared, Some("abcd"), 0, &shared, now);
        let b = route_b.try_reserve(&shared, now).unwrap();
        route_b.complete(&route_b, b, &declared, Some("abcd"), 0, &shared, now);
        let bucket = route_a.resolve(0);
        assert!(Arc::ptr_eq(&bucket, &route_b.resolve(0)));
        assert_eq!(bucket.key().as_str(), "host bucket:abcd");
        // Three remaining in the shared bucket, whichever route asks.
        assert!(route_a.resolve(0).try_reserve(&shared, now).is_ok());
        assert!(route_b.resolve(0).try_reserve(&shared, now).is_ok());
        assert!(route_a.resolve(0).try_reserve(&shared, now).is_ok());
        assert!(route_b.resolve(0).try_reserve(&shared, now).is_err());
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// A caller asks to send.
        Reserve,
        /// The server processes the oldest undelivered request and the client gets the answer
        /// (unless its caller dropped it: then the server counts it, nobody hears back).
        Deliver,
        /// A caller drops an undelivered request (index among those in flight, modulo) that
        /// had already reached the server (`true`) or had not.
        Cancel(usize, bool),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            3 => Just(Op::Reserve),
            2 => Just(Op::Deliver),
            1 => (any::<usize>(), any::<bool>()).prop_map(|(index, reached)| Op::Cancel(index, reached)),
        ]
    }

    /// One request on its way: its sequence number, and whether its caller dropped it.
    type Sent = (u64, bool);

    /// The server's answer to the oldest request on the wire.
    fn deliver(
        state: &Arc<KeyState>,
        shared: &Shared,
        now: Instant,
        limit: u64,
        (seq, dropped): Sent,
        server_remaining: &mut u64,
    ) -> bool {
        let refused = *server_remaining == 0;
        *server_remaining = server_remaining.saturating_sub(1);
        if !dropped {
            let mut observation = observation(0, 3600);
            observation.rate_limited = refused;
            observation.policies[0].limit = Some(limit);
            observation.policies[0].remaining = Some(*server_remaining);
            state.complete(state, seq, &observation, None, 0, shared, now);
        }
        refused
    }

    proptest::proptest! {
        /// Against a server with one window of `limit` that processes requests in the order
        /// they were reserved, whatever the interleaving of reservations, answers and
        /// cancellations (before or after the request reached the server): the client never
        /// sends a request the server must refuse, and once everything is answered, a refused
        /// reservation means the quota is spent, give or take the cancelled requests that
        /// never arrived (their units stay spent until a fresher response).
        #[test]
        fn never_oversends_and_wastes_only_cancelled_units(
            limit in 1u64..40,
            ops in proptest::collection::vec(op(), 1..300),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
            let _guard = runtime.enter();
            let shared = shared(AdaptConfig::new().slow_start(3));
            let state = state(&shared);
            let now = Instant::now();
            let mut server_remaining = limit;
            let mut wire: std::collections::VecDeque<Sent> = Default::default();
            let mut refused = 0usize;
            let mut dropped_on_wire = 0usize;
            let mut never_arrived = 0u64;
            for op in ops {
                match op {
                    Op::Reserve => {
                        if let Ok(seq) = state.try_reserve(&shared, now) {
                            wire.push_back((seq, false));
                        }
                    }
                    Op::Deliver => {
                        if let Some(sent) = wire.pop_front()
                            && deliver(&state, &shared, now, limit, sent, &mut server_remaining)
                        {
                            refused += 1;
                        }
                    }
                    Op::Cancel(index, reached) => {
                        let live: Vec<usize> = (0..wire.len()).filter(|&i| !wire[i].1).collect();
                        if !live.is_empty() {
                            let position = live[index % live.len()];
                            if reached {
                                wire[position].1 = true;
                                dropped_on_wire += 1;
                            } else {
                                wire.remove(position);
                                never_arrived += 1;
                            }
                            state.release();
                        }
                    }
                }
                let live = wire.iter().filter(|(_, dropped)| !dropped).count();
                proptest::prop_assert_eq!(state.in_flight() as usize, live);
            }
            // Slow start sends at most 3 before the server has said anything (more only when
            // callers dropped requests the server had, freeing their slots).
            proptest::prop_assert!(refused <= 3usize.saturating_sub(limit as usize) + dropped_on_wire,
                "{} refused with limit {}", refused, limit);
            // Answer everything, then the layer uses what is left.
            while let Some(sent) = wire.pop_front() {
                deliver(&state, &shared, now, limit, sent, &mut server_remaining);
            }
            if state.slot_views(now).first().and_then(|slot| slot.remaining).is_some() {
                let mut granted = 0;
                while state.try_reserve(&shared, now).is_ok() {
                    granted += 1;
                    proptest::prop_assert!(granted <= server_remaining, "granted past the server's remaining");
                }
                proptest::prop_assert!(granted + never_arrived >= server_remaining,
                    "granted {} of {} with {} cancelled", granted, server_remaining, never_arrived);
            }
        }
    }
}
