//! The builder shared by both Redis limiters.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use crate::connection::RedisConnection;
use crate::error::ConfigError;
use crate::limiter::{Algorithm, Engine, Settings};
use crate::policy::FailurePolicy;
use crate::{RedisGcra, RedisSlidingWindow};

/// Configures a [`RedisGcra`] or a [`RedisSlidingWindow`]; see [`RedisGcra::builder`].
#[derive(Debug)]
#[must_use]
pub struct RedisLimiterBuilder<L> {
    connection: RedisConnection,
    settings: Settings,
    _limiter: PhantomData<fn() -> L>,
}

impl<L> RedisLimiterBuilder<L> {
    pub(crate) fn new(connection: RedisConnection) -> Self {
        Self {
            connection,
            settings: Settings::default(),
            _limiter: PhantomData,
        }
    }

    /// The prefix of every Redis key ["ratewise"]. Keys are `{<prefix>:<key>}:<suffix>`; the
    /// braces are a hash tag, so all the keys of one limiter key live in one cluster slot.
    /// Must not contain `{` or `}`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.settings.prefix = prefix.into();
        self
    }

    /// The longest an acquire waits for Redis [50 ms] before the failure policy answers.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.settings.timeout = timeout;
        self
    }

    /// What to do while Redis is slow or down [`FallbackLocal { expected_workers: 1 }`].
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.settings.policy = policy;
        self
    }

    /// While degraded, how often one acquire tries Redis again [500 ms].
    pub fn probe_interval(mut self, interval: Duration) -> Self {
        self.settings.probe_interval = interval;
        self
    }

    /// The most keys the local fallback limiter keeps [10 000].
    pub fn max_local_keys(mut self, max_keys: usize) -> Self {
        self.settings.max_local_keys = max_keys;
        self
    }
}

impl RedisLimiterBuilder<RedisGcra> {
    /// Builds the limiter.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for a prefix with braces, a zero timeout or probe interval, or zero
    /// expected workers.
    pub fn build(self) -> Result<RedisGcra, ConfigError> {
        let engine = Engine::new(Algorithm::Gcra, self.connection, self.settings)?;
        Ok(RedisGcra {
            engine: Arc::new(engine),
        })
    }
}

impl RedisLimiterBuilder<RedisSlidingWindow> {
    /// Builds the limiter.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for a prefix with braces, a zero timeout or probe interval, or zero
    /// expected workers.
    pub fn build(self) -> Result<RedisSlidingWindow, ConfigError> {
        let engine = Engine::new(Algorithm::SlidingWindow, self.connection, self.settings)?;
        Ok(RedisSlidingWindow {
            engine: Arc::new(engine),
        })
    }
}
