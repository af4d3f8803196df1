//! [`AdaptLayer`] and [`KeySnapshot`].

use std::sync::Arc;
use std::time::Duration;

use ratewise_core::Key;
use tokio::time::Instant;
use tower_layer::Layer;

use crate::config::{AdaptConfig, ConfigError};
use crate::service::Adapt;
use crate::state::{KeyState, Shared};

/// Applies [`Adapt`] to services: learns each key's limits from the server's rate-limit
/// headers and refusals, and holds requests back so that they stay within them.
///
/// See the [crate docs](crate) for the behaviour and an example.
///
/// # Clone
///
/// Cloning this layer does not create new state: every clone, and every service made from any
/// clone, shares one set of learned limits, in-flight counts and cooldowns. Make a new layer
/// with [`AdaptLayer::new`] for independent state.
#[derive(Clone, Debug)]
#[must_use]
pub struct AdaptLayer {
    pub(crate) shared: Arc<Shared>,
}

impl AdaptLayer {
    /// A layer with the defaults of [`AdaptConfig::new`]: nothing to configure.
    pub fn new() -> Self {
        AdaptLayer::from_config(AdaptConfig::new())
            .unwrap_or_else(|_| unreachable!("the default configuration is valid"))
    }

    /// Starts a configuration; finish it with [`AdaptConfig::build`].
    pub fn builder() -> AdaptConfig {
        AdaptConfig::new()
    }

    pub(crate) fn from_config(config: AdaptConfig) -> Result<Self, ConfigError> {
        let shared = Shared::new(config).map_err(ConfigError::KeyedState)?;
        Ok(AdaptLayer {
            shared: Arc::new(shared),
        })
    }

    /// The state that requests of `key` count against: the key's own, or the server-declared
    /// bucket it was last found to share; `key` may also name a bucket
    /// (`"<host> bucket:<id>"`).
    fn state(&self, key: &Key) -> Option<Arc<KeyState>> {
        match self.shared.routes.get(key) {
            Some(route) => Some(route.resolve_latest()),
            None => self.shared.buckets.get(key),
        }
    }

    /// The rate (requests per second) the header-less mode learned for `key`, once a throttle
    /// turned it on; `None` for unknown keys and keys that never needed it.
    pub fn learned_rate(&self, key: &Key) -> Option<f64> {
        self.state(key)?.learned_rate()
    }

    /// What the layer knows about `key` now; `None` for a key it has not seen (or evicted).
    pub fn snapshot(&self, key: &Key) -> Option<KeySnapshot> {
        let state = self.state(key)?;
        let now = Instant::now();
        Some(KeySnapshot {
            key: state.key().clone(),
            in_flight: state.in_flight(),
            cooldown: state
                .cooldown_until()
                .map(|until| until.saturating_duration_since(now))
                .filter(|left| !left.is_zero()),
            learned_rate: state.learned_rate(),
            policies: state
                .slot_views(now)
                .into_iter()
                .map(|view| PolicySnapshot {
                    limit: view.limit,
                    remaining: view.remaining,
                    reset_in: view.reset_in,
                    window: view.window,
                })
                .collect(),
        })
    }
}

impl Default for AdaptLayer {
    fn default() -> Self {
        AdaptLayer::new()
    }
}

impl<S> Layer<S> for AdaptLayer {
    type Service = Adapt<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Adapt::from_shared(inner, Arc::clone(&self.shared))
    }
}

/// What an [`AdaptLayer`] knows about one key (from [`AdaptLayer::snapshot`]).
#[derive(Clone, Debug)]
pub struct KeySnapshot {
    key: Key,
    in_flight: u32,
    cooldown: Option<Duration>,
    learned_rate: Option<f64>,
    policies: Vec<PolicySnapshot>,
}

impl KeySnapshot {
    /// The key whose state this is (a server-declared bucket key when the route shares one).
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// Requests of this key sent and not yet answered.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// Time left in the key's cooldown, if it is cooling down.
    pub fn cooldown(&self) -> Option<Duration> {
        self.cooldown
    }

    /// The header-less mode's learned rate (requests per second), when active.
    pub fn learned_rate(&self) -> Option<f64> {
        self.learned_rate
    }

    /// The policies learned from the server's headers.
    pub fn policies(&self) -> &[PolicySnapshot] {
        &self.policies
    }
}

/// One learned policy of a [`KeySnapshot`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicySnapshot {
    limit: Option<u64>,
    remaining: Option<i64>,
    reset_in: Option<Duration>,
    window: Option<Duration>,
}

impl PolicySnapshot {
    /// The server's limit for the window, if it said.
    pub fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// Requests that may still be sent before the reset: the server's last remaining minus the
    /// requests sent since (negative when more are in flight than the server allowed).
    pub fn remaining(&self) -> Option<i64> {
        self.remaining
    }

    /// Time until the window resets, if known.
    pub fn reset_in(&self) -> Option<Duration> {
        self.reset_in
    }

    /// The window length, if the server said.
    pub fn window(&self) -> Option<Duration> {
        self.window
    }
}
