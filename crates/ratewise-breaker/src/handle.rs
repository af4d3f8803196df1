//! [`CircuitBreakerHandle`]: read and steer the circuits of a layer.

use std::fmt;
use std::sync::Arc;

use ratewise_core::Key;
use tokio::time::Instant;

use crate::layer::Registry;
use crate::state::CircuitState;

/// Reads and steers the circuits of one [`CircuitBreakerLayer`](crate::CircuitBreakerLayer),
/// from [`CircuitBreakerLayer::handle`](crate::CircuitBreakerLayer::handle).
///
/// Forcing a key creates its circuit if needed and keeps it from idle eviction until
/// [`reset`](Self::reset).
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
        self.registry
            .states
            .get(key)
            .map_or(CircuitState::Closed, |state| state.state_at(Instant::now()))
    }

    /// The state of every key held now.
    pub fn states(&self) -> Vec<(Key, CircuitState)> {
        let mut held = Vec::new();
        self.registry
            .states
            .for_each(|key, state| held.push((key.clone(), Arc::clone(state))));
        let now = Instant::now();
        held.into_iter()
            .map(|(key, state)| (key, state.state_at(now)))
            .collect()
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
        let pinned = self.pinned().remove(key);
        let state = pinned.or_else(|| self.registry.states.get(key));
        if let Some(state) = state {
            state.force(CircuitState::Closed, Instant::now());
        }
    }

    fn force(&self, key: &Key, to: CircuitState) {
        let state = self.registry.state_of(key);
        self.pinned().insert(key.clone(), Arc::clone(&state));
        state.force(to, Instant::now());
    }

    fn pinned(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<Key, Arc<crate::state::KeyState>>>
    {
        self.registry
            .pinned
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
