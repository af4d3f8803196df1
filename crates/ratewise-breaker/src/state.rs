//! The state machine of one key: closed, open, half-open (and the forced states).
//!
//! The authoritative state lives in a `Mutex<Core>`, held only for a few field updates and never
//! across an await. A mirror of the phase and epoch in one `AtomicU64` lets a closed circuit
//! admit a call with one atomic load. A call captures the epoch it was admitted in; its outcome
//! only counts if the epoch is still current, so a call admitted just before a transition can
//! never count against the next phase.
//!
//! The mirror also carries a *clean* bit: the circuit is closed, its count window is full of
//! successes (none slow), and nothing else is pending (no failure streak, no trip to forget).
//! Recording one more success then changes nothing (it replaces a success by a success), so a
//! successful call of a clean circuit completes without the lock. That is linearizable: such
//! a success takes effect at its load of the mirror, before any failure recorded later under
//! the lock.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::sync::{AtomicU64, Mutex, MutexGuard};
use std::time::Duration;

use metrics::{Counter, Gauge};
use ratewise_core::{CircuitOpen, Key, metric_names};
use tokio::time::Instant;

use crate::classify::Outcome;
use crate::config::{JitterSource, Settings, Window};

/// The state of one key's circuit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CircuitState {
    /// Calls pass and are counted.
    Closed,
    /// Calls are rejected with [`CircuitOpen`] until the open duration ends.
    Open,
    /// A bounded number of probe calls pass; the others are rejected.
    HalfOpen,
    /// Forced open by a [`CircuitBreakerHandle`](crate::CircuitBreakerHandle): every call is
    /// rejected until the handle closes or resets it.
    ForcedOpen,
    /// Forced closed by a handle: every call passes and nothing is counted.
    ForcedClosed,
}

impl CircuitState {
    /// A stable lowercase name: `closed`, `open`, `half_open`, `forced_open`, `forced_closed`.
    pub const fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
            CircuitState::ForcedOpen => "forced_open",
            CircuitState::ForcedClosed => "forced_closed",
        }
    }

    /// The label used in metrics, which know only `closed`, `half_open` and `open`.
    const fn metric_label(self) -> &'static str {
        match self {
            CircuitState::Closed | CircuitState::ForcedClosed => "closed",
            CircuitState::HalfOpen => "half_open",
            CircuitState::Open | CircuitState::ForcedOpen => "open",
        }
    }

    /// The value of the `BREAKER_STATE` gauge: 0 closed, 1 half-open, 2 open.
    const fn gauge_value(self) -> f64 {
        match self {
            CircuitState::Closed | CircuitState::ForcedClosed => 0.0,
            CircuitState::HalfOpen => 1.0,
            CircuitState::Open | CircuitState::ForcedOpen => 2.0,
        }
    }

    const fn code(self) -> u64 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::Open => 1,
            CircuitState::HalfOpen => 2,
            CircuitState::ForcedOpen => 3,
            CircuitState::ForcedClosed => 4,
        }
    }
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A transition of one key's circuit, given to state-change callbacks.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StateChange {
    /// The key whose circuit changed.
    pub key: Key,
    /// The state before.
    pub from: CircuitState,
    /// The state after.
    pub to: CircuitState,
    /// When it changed (tokio's clock).
    pub at: Instant,
    /// For a transition to [`CircuitState::Open`]: how long the circuit stays open.
    pub open_for: Option<Duration>,
}

/// A state-change callback.
pub(crate) type Listener = Arc<dyn Fn(&StateChange) + Send + Sync + 'static>;

/// What every key's state shares: the settings, the jitter source and the callbacks.
pub(crate) struct Policy {
    pub(crate) settings: Settings,
    pub(crate) jitter: Arc<dyn JitterSource>,
    pub(crate) listeners: Vec<Listener>,
}

impl Policy {
    /// Whether completed calls need the clock (time window or slow-call rule).
    pub(crate) fn needs_clock(&self) -> bool {
        self.settings.slow_call.is_some() || matches!(self.settings.window, Window::Time { .. })
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("settings", &self.settings)
            .field("listeners", &self.listeners.len())
            .finish_non_exhaustive()
    }
}

/// What a call was admitted as; decides what its outcome does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ticket {
    /// Forced closed: nothing to count.
    Untracked,
    /// A call of the closed circuit of `epoch`.
    Closed { epoch: u64 },
    /// A half-open probe.
    Probe { epoch: u64, id: u64 },
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen,
    ForcedOpen,
    ForcedClosed,
}

impl Phase {
    fn state(self) -> CircuitState {
        match self {
            Phase::Closed => CircuitState::Closed,
            Phase::Open { .. } => CircuitState::Open,
            Phase::HalfOpen => CircuitState::HalfOpen,
            Phase::ForcedOpen => CircuitState::ForcedOpen,
            Phase::ForcedClosed => CircuitState::ForcedClosed,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Probe {
    id: u64,
    deadline: Instant,
}

/// The mutable state of one key, under the mutex.
#[derive(Debug)]
struct Core {
    phase: Phase,
    epoch: u64,
    window: CallWindow,
    consecutive_failures: u32,
    /// Trips since the last healthy close (drives the open-duration growth).
    trips: u32,
    /// Calls recorded since the circuit last closed.
    calls_since_close: u32,
    probes: Vec<Probe>,
    probe_successes: u32,
    next_probe_id: u64,
}

/// At most two transitions happen in one decision (open -> half-open -> open when a probe
/// timed out), so they fit in a fixed array: no allocation.
#[derive(Debug, Default)]
#[must_use = "transitions must be emitted"]
pub(crate) struct Transitions {
    items: [Option<StateChange>; 2],
}

impl Transitions {
    fn push(&mut self, change: StateChange) {
        if let Some(slot) = self.items.iter_mut().find(|slot| slot.is_none()) {
            *slot = Some(change);
        }
    }
}

/// One key's circuit.
pub(crate) struct KeyState {
    key: Key,
    policy: Arc<Policy>,
    /// `epoch << 4 | clean << 3 | state code`, written under the mutex.
    mirror: AtomicU64,
    core: Mutex<Core>,
    state_gauge: Gauge,
    rejections: Counter,
}

impl fmt::Debug for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyState")
            .field("key", &self.key)
            .field("core", &*self.lock())
            .finish_non_exhaustive()
    }
}

const CLOSED_CODE: u64 = CircuitState::Closed.code();
const CODE_MASK: u64 = 0b111;
const CLEAN_BIT: u64 = 0b1000;
const EPOCH_SHIFT: u32 = 4;
/// Epochs wrap within the bits the mirror has for them.
const EPOCH_MASK: u64 = u64::MAX >> EPOCH_SHIFT;
const FORCED_CLOSED_CODE: u64 = CircuitState::ForcedClosed.code();

impl KeyState {
    pub(crate) fn new(key: Key, policy: Arc<Policy>) -> Self {
        let labels = [("key", key.as_str().to_owned())];
        let state_gauge = metrics::gauge!(metric_names::BREAKER_STATE, &labels);
        let rejections = metrics::counter!(metric_names::BREAKER_REJECTIONS_TOTAL, &labels);
        state_gauge.set(CircuitState::Closed.gauge_value());
        let probes = Vec::with_capacity(policy.settings.half_open_probes as usize);
        KeyState {
            key,
            mirror: AtomicU64::new(CLOSED_CODE),
            core: Mutex::new(Core {
                phase: Phase::Closed,
                epoch: 0,
                window: CallWindow::new(policy.settings.window),
                consecutive_failures: 0,
                trips: 0,
                calls_since_close: 0,
                probes,
                probe_successes: 0,
                next_probe_id: 0,
            }),
            policy,
            state_gauge,
            rejections,
        }
    }

    /// A circuit created already forced into `to` ([`CircuitState::ForcedOpen`] or
    /// [`CircuitState::ForcedClosed`]; anything else gives a normal closed circuit), without a
    /// transition: the key was forced before, and the map evicted and now recreates its state.
    pub(crate) fn new_forced(key: Key, policy: Arc<Policy>, to: CircuitState) -> Self {
        let state = KeyState::new(key, policy);
        let phase = match to {
            CircuitState::ForcedOpen => Phase::ForcedOpen,
            CircuitState::ForcedClosed => Phase::ForcedClosed,
            _ => return state,
        };
        {
            let mut core = state.lock();
            core.phase = phase;
            state.mirror.store(to.code(), Ordering::Release);
        }
        state.state_gauge.set(to.gauge_value());
        state
    }

    pub(crate) fn key(&self) -> &Key {
        &self.key
    }

    pub(crate) fn policy(&self) -> &Policy {
        &self.policy
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        // Every update of the core is a few plain stores that cannot panic halfway in a way
        // that breaks an invariant the next user relies on, so a poisoned lock is still usable.
        self.core
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Admits a call or refuses it. A closed circuit admits with one atomic load.
    #[inline]
    pub(crate) fn admit(&self) -> Result<Ticket, CircuitOpen> {
        self.admit_with(Instant::now)
    }

    /// [`admit`](Self::admit) with the clock read only off the fast path.
    #[inline]
    fn admit_with(&self, now: impl FnOnce() -> Instant) -> Result<Ticket, CircuitOpen> {
        let mirror = self.mirror.load(Ordering::Acquire);
        match mirror & CODE_MASK {
            CLOSED_CODE => Ok(Ticket::Closed {
                epoch: mirror >> EPOCH_SHIFT,
            }),
            FORCED_CLOSED_CODE => Ok(Ticket::Untracked),
            _ => self.admit_at(now()),
        }
    }

    /// The fast path of [`admit`](Self::admit) at a given instant, for the loom models.
    #[cfg(loom)]
    pub(crate) fn admit_at_fast(&self, now: Instant) -> Result<Ticket, CircuitOpen> {
        self.admit_with(|| now)
    }

    /// The slow path of [`admit`](Self::admit), at `now`.
    #[cold]
    pub(crate) fn admit_at(&self, now: Instant) -> Result<Ticket, CircuitOpen> {
        let mut transitions = Transitions::default();
        let decision = {
            let mut core = self.lock();
            self.refresh(&mut core, now, &mut transitions);
            match core.phase {
                Phase::Closed => Ok(Ticket::Closed { epoch: core.epoch }),
                Phase::ForcedClosed => Ok(Ticket::Untracked),
                Phase::Open { until } => Err(until.saturating_duration_since(now)),
                Phase::ForcedOpen => Err(self.policy.settings.open_duration),
                Phase::HalfOpen => {
                    let taken = core.probe_successes as usize + core.probes.len();
                    if taken < self.policy.settings.half_open_probes as usize {
                        let id = core.next_probe_id;
                        core.next_probe_id += 1;
                        let deadline = saturating_add(now, self.policy.settings.probe_timeout);
                        core.probes.push(Probe { id, deadline });
                        Ok(Ticket::Probe {
                            epoch: core.epoch,
                            id,
                        })
                    } else {
                        // Every slot is taken: the answer comes at the latest when the first
                        // probe times out.
                        let first_deadline = core.probes.iter().map(|p| p.deadline).min();
                        Err(first_deadline
                            .map_or(Duration::ZERO, |d| d.saturating_duration_since(now)))
                    }
                }
            }
        };
        self.emit(transitions);
        decision.map_err(|retry_after| {
            self.rejections.increment(1);
            tracing::trace!(key = %self.key, ?retry_after, "circuit open: call rejected");
            CircuitOpen::new(self.key.clone(), retry_after)
        })
    }

    /// Applies the transitions due by time alone: an open circuit whose time is up becomes
    /// half-open; a half-open circuit with a probe past its timeout re-opens (the probe counts
    /// as a failure: an upstream that does not answer is not healthy).
    fn refresh(&self, core: &mut Core, now: Instant, transitions: &mut Transitions) {
        if let Phase::Open { until } = core.phase
            && now >= until
        {
            self.transition(core, Phase::HalfOpen, now, transitions);
        }
        if let Phase::HalfOpen = core.phase
            && core.probes.iter().any(|probe| probe.deadline <= now)
        {
            tracing::debug!(key = %self.key, "half-open probe timed out");
            self.trip(core, now, transitions);
        }
    }

    /// The current state at `now`, after the transitions due by time.
    pub(crate) fn state_at(&self, now: Instant) -> CircuitState {
        let mut transitions = Transitions::default();
        let state = {
            let mut core = self.lock();
            self.refresh(&mut core, now, &mut transitions);
            core.phase.state()
        };
        self.emit(transitions);
        state
    }

    /// Records the outcome of a completed call. `slow` says whether the call was slower than the
    /// slow-call threshold; `now` is read only when the policy needs the clock.
    pub(crate) fn complete(
        &self,
        ticket: Ticket,
        outcome: Outcome,
        slow: bool,
        now: Option<Instant>,
    ) {
        if let Ticket::Untracked = ticket {
            return;
        }
        if outcome == Outcome::Ignored {
            self.release(ticket);
            return;
        }
        let failed = outcome == Outcome::Failure;
        if let Ticket::Closed { epoch } = ticket
            && !failed
            && !slow
            && self.mirror.load(Ordering::Acquire)
                == (epoch << EPOCH_SHIFT) | CLEAN_BIT | CLOSED_CODE
        {
            // A success in a window full of successes: nothing changes, no lock needed.
            return;
        }
        let mut transitions = Transitions::default();
        {
            let mut core = self.lock();
            match ticket {
                Ticket::Untracked => {}
                Ticket::Closed { epoch } => {
                    if core.epoch != epoch || !matches!(core.phase, Phase::Closed) {
                        return;
                    }
                    let now = now.unwrap_or_else(Instant::now);
                    self.record_closed(&mut core, failed, slow, now, &mut transitions);
                }
                Ticket::Probe { epoch, id } => {
                    if core.epoch != epoch || !remove_probe(&mut core, id) {
                        return;
                    }
                    let now = now.unwrap_or_else(Instant::now);
                    let slow_counts = slow && self.policy.settings.slow_call.is_some();
                    if failed || slow_counts {
                        self.trip(&mut core, now, &mut transitions);
                    } else {
                        core.probe_successes += 1;
                        if core.probe_successes >= self.policy.settings.half_open_probes {
                            self.transition(&mut core, Phase::Closed, now, &mut transitions);
                        }
                    }
                }
            }
        }
        self.emit(transitions);
    }

    /// Gives back a probe slot without counting anything (the call was dropped, or its outcome
    /// is ignored).
    pub(crate) fn release(&self, ticket: Ticket) {
        if let Ticket::Probe { epoch, id } = ticket {
            let mut core = self.lock();
            if core.epoch == epoch {
                remove_probe(&mut core, id);
            }
        }
    }

    fn record_closed(
        &self,
        core: &mut Core,
        failed: bool,
        slow: bool,
        now: Instant,
        transitions: &mut Transitions,
    ) {
        let settings = &self.policy.settings;
        let slow = slow && settings.slow_call.is_some();
        core.window.record(failed, slow, now);
        core.consecutive_failures = if failed {
            core.consecutive_failures.saturating_add(1)
        } else {
            0
        };
        core.calls_since_close = core.calls_since_close.saturating_add(1);

        let counts = core.window.counts(now);
        let by_rate = counts.total >= u64::from(settings.minimum_calls)
            && (rate_reached(counts.failures, counts.total, settings.failure_rate)
                || settings
                    .slow_call
                    .is_some_and(|s| rate_reached(counts.slow, counts.total, s.rate)));
        let by_streak = settings
            .consecutive_failures
            .is_some_and(|n| core.consecutive_failures >= n);
        if by_rate || by_streak {
            self.trip(core, now, transitions);
            return;
        }
        if core.trips > 0 && core.calls_since_close >= settings.minimum_calls {
            // A healthy close: the circuit has stayed closed over a full minimum of calls.
            core.trips = 0;
        }
        let clean =
            core.window.is_full_of_successes() && core.consecutive_failures == 0 && core.trips == 0;
        let mirror = (core.epoch << EPOCH_SHIFT) | CLOSED_CODE | if clean { CLEAN_BIT } else { 0 };
        // Written only on change: readers on the fast path keep the cache line shared.
        if self.mirror.load(Ordering::Relaxed) != mirror {
            self.mirror.store(mirror, Ordering::Release);
        }
    }

    fn trip(&self, core: &mut Core, now: Instant, transitions: &mut Transitions) {
        core.trips = core.trips.saturating_add(1);
        let settings = &self.policy.settings;
        let base = settings.open_duration_for(core.trips);
        let open_for = settings.jittered(base, self.policy.jitter.next_unit());
        self.transition(
            core,
            Phase::Open {
                until: saturating_add(now, open_for),
            },
            now,
            transitions,
        );
    }

    fn transition(&self, core: &mut Core, to: Phase, now: Instant, transitions: &mut Transitions) {
        let from = core.phase.state();
        core.phase = to;
        core.epoch = core.epoch.wrapping_add(1) & EPOCH_MASK;
        core.probes.clear();
        core.probe_successes = 0;
        if let Phase::Closed = to {
            core.window.clear();
            core.consecutive_failures = 0;
            core.calls_since_close = 0;
        }
        let state = to.state();
        self.mirror.store(
            (core.epoch << EPOCH_SHIFT) | state.code(),
            Ordering::Release,
        );
        transitions.push(StateChange {
            key: self.key.clone(),
            from,
            to: state,
            at: now,
            open_for: match to {
                Phase::Open { until } => Some(until.saturating_duration_since(now)),
                _ => None,
            },
        });
    }

    /// Forces the circuit into `to` (open, closed, or back to a normal closed circuit with its
    /// history forgotten when `to` is [`CircuitState::Closed`]). Forcing a circuit into the
    /// forced state it is already in changes nothing. Returns the transition for
    /// [`emit`](Self::emit), which the caller calls once it holds no lock.
    pub(crate) fn force(&self, to: CircuitState, now: Instant) -> Transitions {
        let mut transitions = Transitions::default();
        let mut core = self.lock();
        let phase = match (to, core.phase) {
            (CircuitState::ForcedOpen, Phase::ForcedOpen)
            | (CircuitState::ForcedClosed, Phase::ForcedClosed) => return transitions,
            (CircuitState::ForcedOpen, _) => Phase::ForcedOpen,
            (CircuitState::ForcedClosed, _) => Phase::ForcedClosed,
            _ => {
                core.trips = 0;
                Phase::Closed
            }
        };
        self.transition(&mut core, phase, now, &mut transitions);
        transitions
    }

    /// Reports transitions: gauge, counter, tracing event, callbacks. Called with the lock
    /// released, so a callback may use the handle.
    pub(crate) fn emit(&self, transitions: Transitions) {
        for change in transitions.items.into_iter().flatten() {
            self.state_gauge.set(change.to.gauge_value());
            metrics::counter!(
                metric_names::BREAKER_TRANSITIONS_TOTAL,
                "key" => self.key.as_str().to_owned(),
                "from" => change.from.metric_label(),
                "to" => change.to.metric_label(),
            )
            .increment(1);
            tracing::info!(
                key = %change.key,
                from = change.from.as_str(),
                to = change.to.as_str(),
                open_for = ?change.open_for,
                "circuit state changed"
            );
            for listener in &self.policy.listeners {
                listener(&change);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn in_flight_probes(&self) -> usize {
        self.lock().probes.len()
    }

    /// The window's counts and whether the clean bit is set, for tests.
    #[cfg(test)]
    pub(crate) fn window_and_clean(&self, now: Instant) -> (Counts, bool) {
        let counts = self.lock().window.counts(now);
        (counts, self.mirror.load(Ordering::Acquire) & CLEAN_BIT != 0)
    }
}

/// `now + duration`, or about a century from now when that does not fit in an `Instant`
/// (a configured duration such as `Duration::MAX` must not panic mid-request).
fn saturating_add(now: Instant, duration: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(duration)
        .or_else(|| now.checked_add(CENTURY))
        .unwrap_or(now)
}

fn remove_probe(core: &mut Core, id: u64) -> bool {
    match core.probes.iter().position(|probe| probe.id == id) {
        Some(index) => {
            core.probes.swap_remove(index);
            true
        }
        None => false,
    }
}

/// `part / total >= rate`, for `total > 0`.
fn rate_reached(part: u64, total: u64, rate: f64) -> bool {
    total > 0 && part as f64 >= rate * total as f64
}

/// The counts over the window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) total: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

const FAILED: u8 = 0b01;
const SLOW: u8 = 0b10;

/// The calls in the window: a ring of the last N outcomes, or time buckets.
#[derive(Debug)]
pub(crate) enum CallWindow {
    Count {
        ring: Box<[u8]>,
        next: usize,
        len: usize,
        counts: Counts,
    },
    Time {
        buckets: Box<[Counts]>,
        bucket_nanos: u64,
        origin: Option<Instant>,
        /// The absolute index (since `origin`) of the newest bucket.
        head: u64,
        counts: Counts,
    },
}

impl CallWindow {
    pub(crate) fn new(window: Window) -> Self {
        match window {
            Window::Count { calls } => CallWindow::Count {
                ring: vec![0; calls as usize].into_boxed_slice(),
                next: 0,
                len: 0,
                counts: Counts::default(),
            },
            Window::Time { length, buckets } => {
                let bucket_nanos =
                    u64::try_from(length.as_nanos() / u128::from(buckets)).unwrap_or(u64::MAX);
                CallWindow::Time {
                    buckets: vec![Counts::default(); buckets as usize].into_boxed_slice(),
                    bucket_nanos: bucket_nanos.max(1),
                    origin: None,
                    head: 0,
                    counts: Counts::default(),
                }
            }
        }
    }

    pub(crate) fn record(&mut self, failed: bool, slow: bool, now: Instant) {
        let flags = (u8::from(failed) * FAILED) | (u8::from(slow) * SLOW);
        match self {
            CallWindow::Count {
                ring,
                next,
                len,
                counts,
            } => {
                if *len == ring.len() {
                    let old = ring[*next];
                    counts.total -= 1;
                    counts.failures -= u64::from(old & FAILED != 0);
                    counts.slow -= u64::from(old & SLOW != 0);
                } else {
                    *len += 1;
                }
                ring[*next] = flags;
                *next = (*next + 1) % ring.len();
                counts.total += 1;
                counts.failures += u64::from(failed);
                counts.slow += u64::from(slow);
            }
            CallWindow::Time { .. } => {
                self.advance(now);
                if let CallWindow::Time {
                    buckets,
                    head,
                    counts,
                    ..
                } = self
                {
                    let index = (*head % buckets.len() as u64) as usize;
                    let bucket = &mut buckets[index];
                    for c in [bucket, counts] {
                        c.total += 1;
                        c.failures += u64::from(failed);
                        c.slow += u64::from(slow);
                    }
                }
            }
        }
    }

    /// Moves a time window forward to `now`, dropping the buckets that left it.
    fn advance(&mut self, now: Instant) {
        if let CallWindow::Time {
            buckets,
            bucket_nanos,
            origin,
            head,
            counts,
        } = self
        {
            let origin = *origin.get_or_insert(now);
            let elapsed = now.saturating_duration_since(origin).as_nanos();
            let index = u64::try_from(elapsed / u128::from(*bucket_nanos)).unwrap_or(u64::MAX);
            if index <= *head {
                return;
            }
            let len = buckets.len() as u64;
            let stale = (index - *head).min(len);
            for step in 1..=stale {
                let slot = ((*head + step) % len) as usize;
                let old = std::mem::take(&mut buckets[slot]);
                counts.total -= old.total;
                counts.failures -= old.failures;
                counts.slow -= old.slow;
            }
            *head = index;
        }
    }

    /// Whether recording a success would leave the window unchanged: a full count window of
    /// successes, none slow. Never for a time window (a success adds to its total).
    fn is_full_of_successes(&self) -> bool {
        match self {
            CallWindow::Count {
                ring, len, counts, ..
            } => *len == ring.len() && counts.failures == 0 && counts.slow == 0,
            CallWindow::Time { .. } => false,
        }
    }

    pub(crate) fn counts(&mut self, now: Instant) -> Counts {
        self.advance(now);
        match self {
            CallWindow::Count { counts, .. } | CallWindow::Time { counts, .. } => *counts,
        }
    }

    pub(crate) fn clear(&mut self) {
        match self {
            CallWindow::Count {
                ring,
                next,
                len,
                counts,
            } => {
                ring.fill(0);
                *next = 0;
                *len = 0;
                *counts = Counts::default();
            }
            CallWindow::Time {
                buckets,
                origin,
                head,
                counts,
                ..
            } => {
                buckets.fill(Counts::default());
                *origin = None;
                *head = 0;
                *counts = Counts::default();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SeededJitter;
    use proptest::prelude::*;
    use std::sync::Barrier;

    fn key_state(probes: u32) -> Arc<KeyState> {
        let policy = Policy {
            settings: Settings {
                half_open_probes: probes,
                jitter: 0.0,
                ..Settings::default()
            },
            jitter: Arc::new(SeededJitter::new(1)),
            listeners: Vec::new(),
        };
        Arc::new(KeyState::new(Key::new("k"), Arc::new(policy)))
    }

    /// Trips `state` at `t0` with 10 failures; it half-opens at `t0 + 30 s`.
    fn trip(state: &KeyState, t0: Instant) {
        for _ in 0..10 {
            let ticket = state.admit_at(t0).unwrap();
            state.complete(ticket, Outcome::Failure, false, Some(t0));
        }
        assert_eq!(state.state_at(t0), CircuitState::Open);
    }

    #[test]
    fn huge_durations_do_not_overflow() {
        let policy = Policy {
            settings: Settings {
                open_duration: Duration::MAX,
                max_open_duration: Duration::MAX,
                probe_timeout: Duration::MAX,
                minimum_calls: 1,
                jitter: 0.0,
                ..Settings::default()
            },
            jitter: Arc::new(SeededJitter::new(1)),
            listeners: Vec::new(),
        };
        policy.settings.validate().unwrap();
        let state = KeyState::new(Key::new("k"), Arc::new(policy));
        let now = Instant::now();
        let ticket = state.admit_at(now).unwrap();
        state.complete(ticket, Outcome::Failure, false, Some(now));
        let refused = state.admit_at(now).unwrap_err();
        assert!(refused.retry_after() > Duration::from_secs(3600 * 24 * 365));
    }

    #[test]
    fn successes_of_a_clean_window_skip_the_lock_without_changing_the_counts() {
        let state = key_state(1);
        let now = Instant::now();
        let record = |outcome| {
            let ticket = state.admit_at(now).unwrap();
            state.complete(ticket, outcome, false, Some(now));
        };
        for _ in 0..19 {
            record(Outcome::Success);
        }
        assert!(!state.window_and_clean(now).1, "not full yet");
        record(Outcome::Success);
        assert!(state.window_and_clean(now).1, "20 successes: clean");
        for _ in 0..100 {
            record(Outcome::Success);
        }
        let (counts, clean) = state.window_and_clean(now);
        assert_eq!(
            counts,
            Counts {
                total: 20,
                failures: 0,
                slow: 0
            }
        );
        assert!(clean);
        record(Outcome::Failure);
        let (counts, clean) = state.window_and_clean(now);
        assert_eq!(
            counts,
            Counts {
                total: 20,
                failures: 1,
                slow: 0
            }
        );
        assert!(!clean, "a failure clears the bit");
        // The failure leaves the window after 20 more successes; then clean again.
        for _ in 0..19 {
            record(Outcome::Success);
        }
        assert!(!state.window_and_clean(now).1);
        record(Outcome::Success);
        assert!(state.window_and_clean(now).1);
        for _ in 0..9 {
            record(Outcome::Failure);
        }
        assert_eq!(state.state_at(now), CircuitState::Closed);
        record(Outcome::Failure);
        assert_eq!(
            state.state_at(now),
            CircuitState::Open,
            "10 of 20 after a clean run"
        );
    }

    #[test]
    fn racing_threads_at_the_half_open_instant_admit_exactly_n_probes() {
        const THREADS: usize = 8;
        for probes in [1u32, 3] {
            for _round in 0..100 {
                let state = key_state(probes);
                let t0 = Instant::now();
                trip(&state, t0);
                let half_open_at = t0 + Duration::from_secs(30);
                let barrier = Barrier::new(THREADS);
                let admitted: usize = std::thread::scope(|scope| {
                    let workers: Vec<_> = (0..THREADS)
                        .map(|_| {
                            scope.spawn(|| {
                                barrier.wait();
                                (0..25)
                                    .filter(|_| state.admit_at(half_open_at).is_ok())
                                    .count()
                            })
                        })
                        .collect();
                    workers.into_iter().map(|w| w.join().unwrap()).sum()
                });
                assert_eq!(admitted, probes as usize, "200 callers, {probes} probes");
                assert_eq!(state.in_flight_probes(), probes as usize);
            }
        }
    }

    #[test]
    fn racing_probes_cancelled_and_completed_never_leak_slots() {
        const THREADS: usize = 4;
        let probes = 2u32;
        let state = key_state(probes);
        let t0 = Instant::now();
        trip(&state, t0);
        let half_open_at = t0 + Duration::from_secs(30);
        let barrier = Barrier::new(THREADS);
        std::thread::scope(|scope| {
            for thread in 0..THREADS {
                let state = &state;
                let barrier = &barrier;
                scope.spawn(move || {
                    let rng = SeededJitter::new(thread as u64);
                    barrier.wait();
                    for _ in 0..2_000 {
                        if let Ok(ticket) = state.admit_at(half_open_at) {
                            assert!(state.in_flight_probes() <= probes as usize);
                            // Cancel or ignore: the slot comes back, nothing is counted.
                            if rng.next_unit() < 0.5 {
                                state.release(ticket);
                            } else {
                                state.complete(ticket, Outcome::Ignored, false, Some(half_open_at));
                            }
                        }
                    }
                });
            }
        });
        assert_eq!(state.in_flight_probes(), 0, "every slot came back");
        assert_eq!(state.state_at(half_open_at), CircuitState::HalfOpen);
        // Still able to close: both probes succeed.
        let a = state.admit_at(half_open_at).unwrap();
        let b = state.admit_at(half_open_at).unwrap();
        assert!(state.admit_at(half_open_at).is_err());
        state.complete(a, Outcome::Success, false, Some(half_open_at));
        state.complete(b, Outcome::Success, false, Some(half_open_at));
        assert_eq!(state.state_at(half_open_at), CircuitState::Closed);
    }

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn count_window_keeps_the_last_n_calls() {
        let now = Instant::now();
        let mut w = CallWindow::new(Window::count(3));
        w.record(true, false, now);
        w.record(true, true, now);
        assert_eq!(
            w.counts(now),
            Counts {
                total: 2,
                failures: 2,
                slow: 1
            }
        );
        w.record(false, false, now);
        w.record(false, false, now);
        assert_eq!(
            w.counts(now),
            Counts {
                total: 3,
                failures: 1,
                slow: 1
            }
        );
        w.record(false, false, now);
        assert_eq!(
            w.counts(now),
            Counts {
                total: 3,
                failures: 0,
                slow: 0
            }
        );
        w.clear();
        assert_eq!(w.counts(now), Counts::default());
    }

    #[test]
    fn time_window_drops_whole_buckets() {
        let t0 = Instant::now();
        // 10 s in 10 buckets of 1 s.
        let mut w = CallWindow::new(Window::time(Duration::from_secs(10)));
        w.record(true, false, at(t0, 0));
        w.record(false, false, at(t0, 500));
        w.record(true, false, at(t0, 4_000));
        assert_eq!(w.counts(at(t0, 9_999)).total, 3);
        // The first bucket [0, 1 s) leaves at 10 s.
        assert_eq!(
            w.counts(at(t0, 10_000)),
            Counts {
                total: 1,
                failures: 1,
                slow: 0
            }
        );
        assert_eq!(w.counts(at(t0, 14_000)), Counts::default());
        // A long gap clears everything without looping over it.
        w.record(true, false, at(t0, 1_000_000_000));
        assert_eq!(w.counts(at(t0, 1_000_000_000)).total, 1);
    }

    /// A reference model: keep every call with its time, count those in the window (buckets
    /// start at the first call).
    fn model_counts(calls: &[(u64, bool)], now_ms: u64, bucket_ms: u64, buckets: u64) -> u64 {
        let origin = calls.first().map_or(0, |c| c.0);
        let head = (now_ms - origin) / bucket_ms;
        calls
            .iter()
            .filter(|(t, _)| (t - origin) / bucket_ms + buckets > head)
            .count() as u64
    }

    proptest! {
        #[test]
        fn time_window_matches_a_model(steps in proptest::collection::vec((0u64..3_000, any::<bool>()), 1..200)) {
            let t0 = Instant::now();
            let mut w = CallWindow::new(Window::time_in_buckets(Duration::from_secs(10), 5));
            let mut now_ms = 0;
            let mut calls = Vec::new();
            for (gap, failed) in steps {
                now_ms += gap;
                w.record(failed, false, at(t0, now_ms));
                calls.push((now_ms, failed));
                let counts = w.counts(at(t0, now_ms));
                prop_assert_eq!(counts.total, model_counts(&calls, now_ms, 2_000, 5));
                let origin = calls[0].0;
                let head = (now_ms - origin) / 2_000;
                let failures = calls.iter().filter(|c| c.1 && (c.0 - origin) / 2_000 + 5 > head).count();
                prop_assert_eq!(counts.failures, failures as u64);
            }
        }

        #[test]
        fn count_window_matches_a_model(outcomes in proptest::collection::vec(any::<(bool, bool)>(), 0..100), size in 1u32..30) {
            let now = Instant::now();
            let mut w = CallWindow::new(Window::count(size));
            for (i, &(failed, slow)) in outcomes.iter().enumerate() {
                w.record(failed, slow, now);
                let start = (i + 1).saturating_sub(size as usize);
                let last = &outcomes[start..=i];
                let counts = w.counts(now);
                prop_assert_eq!(counts.total, last.len() as u64);
                prop_assert_eq!(counts.failures, last.iter().filter(|c| c.0).count() as u64);
                prop_assert_eq!(counts.slow, last.iter().filter(|c| c.1).count() as u64);
            }
        }
    }
}
