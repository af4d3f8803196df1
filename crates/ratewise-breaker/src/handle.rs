//! [`CircuitBreakerHandle`]: read and steer the circuits of a layer.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ratewise_core::Key;
use tokio::time::Instant;

use crate::layer::{Registry, lock};
use crate::state::{CircuitState, KeyState};

/// Reads and steers the circuits of one [`CircuitBreakerLayer`](crate::CircuitBreakerLayer),
/// from [`CircuitBreakerLayer::handle`](crate::CircuitBreakerLayer::handle).
///
/// A forced state lasts until the handle changes it or [`reset`](Self::reset)s the key, even
/// if the key cap or idle eviction drops the key's circuit meanwhile: the circuit is then
/// recreated in its forced state at the key's next call. Forced keys are remembered apart
/// from the capped map, one small entry per key forced.
///
/// # Clone
///
/// Clones steer the same circuits.
#[derive(Clone)]
pub struct CircuitBreakerHandle {
    pub(crate) registry: Arc<Registry>,
}

impl fmt::Debug for CircuitBreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerHandle")
            .field("keys", &self.registry.states.len())
            .finish()
    }
}

impl CircuitBreakerHandle {
    /// The state of `key` now ([`CircuitState::Closed`] for a key never seen). Applies the
    /// transitions due by time first: an open circuit whose time is up reads as half-open, a
    /// half-open one whose probe timed out reads as open again.
    pub fn state(&self, key: &Key) -> CircuitState {
        let registry = &*self.registry;
        match registry.states.get(key) {
            Some(state) => state.state_at(Instant::now()),
            // Not held: evicted (a forced key stays forced) or never seen.
            None => registry.forced_to(key).unwrap_or(CircuitState::Closed),
        }
    }

    /// The state of every key held now, and of every forced key (held or not).
    pub fn states(&self) -> Vec<(Key, CircuitState)> {
        let registry = &*self.registry;
        let mut held = Vec::new();
        registry
            .states
            .for_each(|key, state| held.push((key.clone(), Arc::clone(state))));
        let mut forced = lock(&registry.forced).clone();
        let now = Instant::now();
        let mut states: Vec<_> = held
            .into_iter()
            .map(|(key, state)| {
                forced.remove(&key);
                (key, state.state_at(now))
            })
            .collect();
        // Forced keys whose circuit was evicted: still forced.
        states.extend(forced);
        states
    }

    /// Opens the circuit of `key` until [`force_closed`](Self::force_closed) or
    /// [`reset`](Self::reset): every call is refused with `CircuitOpen`, whose `retry_after` is
    /// the configured `open_duration`.
    pub fn force_open(&self, key: &Key) {
        self.force(key, CircuitState::ForcedOpen);
    }

    /// Closes the circuit of `key` until [`force_open`](Self::force_open) or
    /// [`reset`](Self::reset): every call passes and nothing is counted.
    pub fn force_closed(&self, key: &Key) {
        self.force(key, CircuitState::ForcedClosed);
    }

    /// Returns the circuit of `key` to normal operation, closed, with its window and its count
    /// of consecutive trips forgotten.
    pub fn reset(&self, key: &Key) {
        let registry = &*self.registry;
        let (state, transitions) = {
            let _steering = lock(&registry.steering);
            // A forced key whose circuit was evicted gets it back first, in its forced state,
            // before the key leaves the forced map: a request racing in then finds this
            // circuit rather than making a closed one, and leaving the forced state is
            // reported like any other transition.
            let before = lock(&registry.forced).get(key).copied();
            let live = match before {
                Some(before) => Some(registry.states.get_or_insert_with(key, || {
                    KeyState::new_forced(key.clone(), Arc::clone(&registry.policy), before)
                })),
                None => registry.states.get(key),
            };
            {
                // From here on a circuit created for `key` starts closed; the live one is
                // reset below.
                let mut forced = lock(&registry.forced);
                forced.remove(key);
                registry.forced_len.store(forced.len(), Ordering::Relaxed);
            }
            let Some(state) = live else { return };
            let transitions = state.force(CircuitState::Closed, Instant::now());
            (state, transitions)
        };
        state.emit(transitions);
    }

    fn force(&self, key: &Key, to: CircuitState) {
        let registry = &*self.registry;
        let (state, transitions) = {
            let _steering = lock(&registry.steering);
            let before = {
                let mut forced = lock(&registry.forced);
                let before = forced.insert(key.clone(), to);
                registry.forced_len.store(forced.len(), Ordering::Relaxed);
                before
            };
            // From here on a circuit created for `key` (because it is new, or evicted even
            // while this runs) starts forced. The live one is forced now. If there is none, it
            // is created in the state the key was in (closed, or its earlier forced state), so
            // the transition is reported like any other.
            let state = registry.states.get_or_insert_with(key, || {
                let policy = Arc::clone(&registry.policy);
                match before {
                    Some(before) => KeyState::new_forced(key.clone(), policy, before),
                    None => KeyState::new(key.clone(), policy),
                }
            });
            let transitions = state.force(to, Instant::now());
            (state, transitions)
        };
        // Callbacks run with no lock held: they may use this handle.
        state.emit(transitions);
    }
}
