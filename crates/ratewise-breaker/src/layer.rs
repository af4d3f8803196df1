//! [`CircuitBreakerLayer`] and its builder.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ratewise_core::{ByHost, Key, KeyFn, KeyedState, KeyedStateConfig};
use tower_layer::Layer;

use crate::classify::{Classify, DefaultClassifier};
use crate::config::{ConfigError, JitterSource, SeededJitter, Settings, SlowCall, Window};
use crate::handle::CircuitBreakerHandle;
use crate::service::CircuitBreaker;
use crate::state::{CircuitState, KeyState, Listener, Policy, StateChange};

/// The per-key circuits of one layer, shared by the layer, its services and its handles.
pub(crate) struct Registry {
    pub(crate) states: KeyedState<KeyState>,
    pub(crate) policy: Arc<Policy>,
    /// What each key forced by a handle is forced to. The source of truth for forced states:
    /// `states` may evict a forced key (by idle time or, under pressure, by the key cap), and
    /// its circuit is then recreated from here, still forced. Only handles write it, so it holds
    /// at most one small entry per key an operator forced.
    ///
    /// A leaf lock: it is taken (briefly) while a shard of `states` is locked to create a
    /// circuit, so nothing may touch `states` while holding it.
    pub(crate) forced: Mutex<HashMap<Key, CircuitState>>,
    /// `forced.len()`, written under its lock: creating a circuit skips the lock while no key
    /// is forced.
    pub(crate) forced_len: AtomicUsize,
    /// Serializes the handle's writes, so that `forced` and the live circuit of a key agree
    /// after racing `force_*` and `reset` calls. Never taken on the request path.
    pub(crate) steering: Mutex<()>,
}

impl Registry {
    /// The circuit of `key`, created if the key is new (or was evicted): closed, or in its
    /// forced state if a handle forced it.
    #[inline]
    pub(crate) fn state_of(&self, key: &Key) -> Arc<KeyState> {
        self.states.get_or_insert_with(key, || self.create(key))
    }

    /// A new circuit for `key`, forced if `forced` says so. Runs under the lock of a shard of
    /// `states`.
    #[cold]
    fn create(&self, key: &Key) -> KeyState {
        let policy = Arc::clone(&self.policy);
        match self.forced_to(key) {
            Some(to) => {
                tracing::debug!(key = %key, state = to.as_str(), "forced circuit recreated after eviction");
                KeyState::new_forced(key.clone(), policy, to)
            }
            None => KeyState::new(key.clone(), policy),
        }
    }

    /// What `key` is forced to, if a handle forced it.
    pub(crate) fn forced_to(&self, key: &Key) -> Option<CircuitState> {
        if self.forced_len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        lock(&self.forced).get(key).copied()
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps behind these locks are only inserted into and removed from: a panic cannot
    // leave them half-updated, so a poisoned lock is still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("states", &self.states)
            .field("policy", &self.policy)
            .field("forced", &self.forced_len.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Wraps a service in a per-key [`CircuitBreaker`].
///
/// See the [crate docs](crate) for the behaviour and an example.
///
/// # Clone
///
/// Cloning this layer will not create new circuits: every clone, and every service it makes,
/// shares the same per-key state (created once, in [`CircuitBreakerBuilder::build`]). Build a
/// second layer for an independent breaker.
#[must_use]
pub struct CircuitBreakerLayer<K = ByHost, C = DefaultClassifier> {
    pub(crate) key_fn: Arc<K>,
    pub(crate) classifier: C,
    pub(crate) registry: Arc<Registry>,
}

impl<K, C: Clone> Clone for CircuitBreakerLayer<K, C> {
    fn clone(&self) -> Self {
        CircuitBreakerLayer {
            key_fn: Arc::clone(&self.key_fn),
            classifier: self.classifier.clone(),
            registry: Arc::clone(&self.registry),
        }
    }
}

impl<K, C: fmt::Debug> fmt::Debug for CircuitBreakerLayer<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("classifier", &self.classifier)
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl CircuitBreakerLayer {
    /// A breaker with the default settings: keyed by host, a count window of 20 calls,
    /// tripping at 50% failures once 10 calls are in the window, open for 30 s (doubling on
    /// consecutive trips up to 5 min, lengthened by up to 10% of jitter), one half-open probe
    /// with a 30 s timeout, and the [`DefaultClassifier`].
    pub fn new() -> Self {
        match CircuitBreakerLayer::builder().build() {
            Ok(layer) => layer,
            // The defaults are checked by a unit test.
            Err(err) => unreachable!("default breaker settings are valid: {err}"),
        }
    }

    /// A builder starting from the defaults of [`new`](Self::new).
    pub fn builder() -> CircuitBreakerBuilder {
        CircuitBreakerBuilder::new()
    }
}

impl Default for CircuitBreakerLayer {
    fn default() -> Self {
        CircuitBreakerLayer::new()
    }
}

impl<K, C> CircuitBreakerLayer<K, C> {
    /// A handle on this layer's circuits: read states, force them open or closed, reset them.
    pub fn handle(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle {
            registry: Arc::clone(&self.registry),
        }
    }
}

impl<S, K, C: Clone> Layer<S> for CircuitBreakerLayer<K, C> {
    type Service = CircuitBreaker<S, K, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker {
            inner,
            key_fn: Arc::clone(&self.key_fn),
            classifier: self.classifier.clone(),
            registry: Arc::clone(&self.registry),
        }
    }
}

/// Builds a [`CircuitBreakerLayer`]; every setting starts at the default in brackets.
///
/// Invalid combinations are rejected by [`build`](Self::build) with a [`ConfigError`].
#[must_use]
pub struct CircuitBreakerBuilder<K = ByHost, C = DefaultClassifier> {
    key_fn: K,
    classifier: C,
    settings: Settings,
    jitter: Option<Arc<dyn JitterSource>>,
    listeners: Vec<Listener>,
    max_keys: usize,
    idle_timeout: Option<Duration>,
}

impl<K, C: fmt::Debug> fmt::Debug for CircuitBreakerBuilder<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerBuilder")
            .field("classifier", &self.classifier)
            .field("settings", &self.settings)
            .field("listeners", &self.listeners.len())
            .field("max_keys", &self.max_keys)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl CircuitBreakerBuilder {
    /// The defaults (see [`CircuitBreakerLayer::new`]).
    pub fn new() -> Self {
        CircuitBreakerBuilder {
            key_fn: ByHost::new(),
            classifier: DefaultClassifier::new(),
            settings: Settings::default(),
            jitter: None,
            listeners: Vec::new(),
            max_keys: 10_000,
            idle_timeout: Some(Duration::from_secs(600)),
        }
    }
}

impl Default for CircuitBreakerBuilder {
    fn default() -> Self {
        CircuitBreakerBuilder::new()
    }
}

impl<K, C> CircuitBreakerBuilder<K, C> {
    /// How requests are split into circuits (default: [`ByHost`]): any [`KeyFn`] (`ByRoute`, `Global`,
    /// a closure).
    pub fn key_fn<K2: KeyFn>(self, key_fn: K2) -> CircuitBreakerBuilder<K2, C> {
        CircuitBreakerBuilder {
            key_fn,
            classifier: self.classifier,
            settings: self.settings,
            jitter: self.jitter,
            listeners: self.listeners,
            max_keys: self.max_keys,
            idle_timeout: self.idle_timeout,
        }
    }

    /// Which results are failures (default: [`DefaultClassifier`]).
    pub fn classifier<C2: Classify>(self, classifier: C2) -> CircuitBreakerBuilder<K, C2> {
        CircuitBreakerBuilder {
            key_fn: self.key_fn,
            classifier,
            settings: self.settings,
            jitter: self.jitter,
            listeners: self.listeners,
            max_keys: self.max_keys,
            idle_timeout: self.idle_timeout,
        }
    }

    /// The window the rates are computed over (default: [`Window::count(20)`](Window::count)).
    pub fn window(mut self, window: Window) -> Self {
        self.settings.window = window;
        self
    }

    /// The rates are not evaluated before the window holds this many calls (default: 10), so one early
    /// failure cannot trip the circuit. At most the size of a count window.
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.settings.minimum_calls = calls;
        self
    }

    /// The circuit trips when failures reach this share of the window, in `(0, 1]` (default: 0.5).
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.settings.failure_rate = rate;
        self
    }

    /// Also trip after this many failures in a row, whatever the window says (default: off).
    pub fn consecutive_failures(mut self, failures: Option<u32>) -> Self {
        self.settings.consecutive_failures = failures;
        self
    }

    /// Calls slower than `threshold` are slow; trip when slow calls reach `rate` of the window
    /// (default: off). A slow half-open probe re-opens the circuit.
    pub fn slow_calls(mut self, threshold: Duration, rate: f64) -> Self {
        self.settings.slow_call = Some(SlowCall { threshold, rate });
        self
    }

    /// How long the circuit stays open after a trip, at least (default: 30 s): jitter never
    /// shortens it.
    pub fn open_duration(mut self, duration: Duration) -> Self {
        self.settings.open_duration = duration;
        self
    }

    /// The cap of the growing open duration, jitter included (default: 5 min).
    pub fn max_open_duration(mut self, duration: Duration) -> Self {
        self.settings.max_open_duration = duration;
        self
    }

    /// Each consecutive trip multiplies the open duration by this, at least 1 (default: 2.0). The count
    /// of consecutive trips resets after a healthy close: `minimum_calls` calls recorded in the
    /// closed state without a trip.
    pub fn open_multiplier(mut self, multiplier: f64) -> Self {
        self.settings.open_multiplier = multiplier;
        self
    }

    /// Each open duration is lengthened by a random share of up to this fraction, in `[0, 1)`
    /// (default: 0.1), so that many clients do not probe in lockstep; at the cap the share is
    /// taken below it instead, never below [`open_duration`](Self::open_duration). 0 disables
    /// jitter.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.settings.jitter = fraction;
        self
    }

    /// The random source of the jitter (default: a [`SeededJitter`] seeded from entropy); inject a
    /// [`SeededJitter::new(seed)`](SeededJitter::new) for reproducible runs.
    pub fn jitter_source(mut self, source: impl JitterSource) -> Self {
        self.jitter = Some(Arc::new(source));
        self
    }

    /// How many probe calls a half-open circuit lets through at once (default: 1). That many
    /// successes close the circuit; any failure re-opens it.
    pub fn half_open_probes(mut self, probes: u32) -> Self {
        self.settings.half_open_probes = probes;
        self
    }

    /// A probe without an answer after this long counts as failed and re-opens the circuit
    /// (default: 30 s), so a half-open circuit never gets stuck.
    pub fn probe_timeout(mut self, timeout: Duration) -> Self {
        self.settings.probe_timeout = timeout;
        self
    }

    /// Calls `callback` after every state change of every key (outside the breaker's lock,
    /// so it may use a [`CircuitBreakerHandle`]). May be called several times.
    pub fn on_state_change(
        mut self,
        callback: impl Fn(&StateChange) + Send + Sync + 'static,
    ) -> Self {
        self.listeners.push(Arc::new(callback));
        self
    }

    /// The most keys (circuits) held at once (default: 10 000); past it the least recently used keys
    /// are evicted (see [`KeyedState`]).
    ///
    /// An evicted key's circuit starts again closed, with an empty window, at its next call.
    /// For an open circuit that means forgetting the trip (the next calls reach the upstream
    /// until `minimum_calls` of them fail again, and the growth of the open duration starts
    /// over). That is accepted: the cap evicts the least recently used keys first, and every
    /// call an open circuit refuses counts as a use, so a circuit that callers still hit is
    /// among the last to go. Forced states are
    /// different: an operator's [`force_open`](CircuitBreakerHandle::force_open) or
    /// [`force_closed`](CircuitBreakerHandle::force_closed) survives eviction, and the
    /// circuit is recreated forced.
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// Keys unused for this long are forgotten (their circuit starts closed again) (default: 10 min);
    /// `None` keeps them until `max_keys` pushes them out. Must be at least
    /// `max_open_duration`, so an open circuit is never forgotten before it could half-open.
    /// Keys forced by a [`CircuitBreakerHandle`] stay forced until the handle resets them,
    /// whether or not their circuit is evicted meanwhile.
    pub fn idle_timeout(mut self, idle_timeout: Option<Duration>) -> Self {
        self.idle_timeout = idle_timeout;
        self
    }

    /// The layer.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when a setting is out of range or settings contradict each other.
    pub fn build(self) -> Result<CircuitBreakerLayer<K, C>, ConfigError> {
        self.settings.validate()?;
        if let Some(idle) = self.idle_timeout
            && !idle.is_zero()
            && idle < self.settings.max_open_duration
        {
            return Err(ConfigError::IdleTimeoutBelowMaxOpen);
        }
        let config = KeyedStateConfig::new()
            .max_keys(self.max_keys)
            .idle_timeout(self.idle_timeout);
        let states = KeyedState::new(config).map_err(ConfigError::KeyedState)?;
        let jitter = self
            .jitter
            .unwrap_or_else(|| Arc::new(SeededJitter::from_entropy()));
        Ok(CircuitBreakerLayer {
            key_fn: Arc::new(self.key_fn),
            classifier: self.classifier,
            registry: Arc::new(Registry {
                states,
                policy: Arc::new(Policy {
                    settings: self.settings,
                    jitter,
                    listeners: self.listeners,
                }),
                forced: Mutex::new(HashMap::new()),
                forced_len: AtomicUsize::new(0),
                steering: Mutex::new(()),
            }),
        })
    }
}
