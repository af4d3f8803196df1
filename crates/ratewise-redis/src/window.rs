//! `RedisSlidingWindow`: an exact rolling-window log in one Lua script.

use std::sync::Arc;

use crate::connection::RedisConnection;
use crate::limiter::{Engine, Settings};

/// An exact sliding-window log on Redis, for APIs that count strictly over a rolling window:
/// at most `count` units in any window of length `period` (each quota's `count` and `period`;
/// its burst is not used).
///
/// Each acquire is one `EVALSHA` of one Lua script that reads Redis' clock (`TIME`), drops the
/// entries older than the window, and adds `cost` members with unique names (this process's
/// random tag, a counter and the unit's index: never two requests under one member, unlike a
/// timestamp member) only if every window has room. A unit admitted at `t` counts for every
/// request in `(t - period, t]` and stops counting at `t + period` exactly. Memory per quota
/// per key is bounded by its `count` members (about 50 bytes each).
///
/// Prefer [`RedisGcra`](crate::RedisGcra) unless the upstream API really counts a rolling
/// window: the log admits a whole window's quota in one burst.
///
/// With weighted costs, give the quota a burst at least as large as the largest cost:
/// `PaceLayer` refuses a cost above the burst before asking any limiter. While Redis is
/// unavailable, [`FailurePolicy::FallbackLocal`](crate::FailurePolicy::FallbackLocal) paces
/// locally with the quota's GCRA, its rate and burst divided among the workers.
///
/// # Clone
///
/// Cloning is cheap; every clone shares the connection, the mode (shared or degraded) and the
/// fallback limiter.
///
/// # Cancel safety
///
/// Dropping an acquire future before it completes either leaves Redis unchanged or, when the
/// script already ran, has taken the cost once: never twice. A dropped probe frees the probe
/// slot for the next acquire.
#[derive(Clone, Debug)]
pub struct RedisSlidingWindow {
    pub(crate) engine: Arc<Engine>,
}

impl RedisSlidingWindow {
    /// A limiter with the default settings (prefix "ratewise", timeout 50 ms, fallback to a
    /// local limiter at the full rate: set `expected_workers` through [`Self::builder`]).
    pub fn new(connection: RedisConnection) -> Self {
        let engine = Engine::new(
            crate::limiter::Algorithm::SlidingWindow,
            connection,
            Settings::default(),
        )
        .expect("the default settings are valid");
        Self {
            engine: Arc::new(engine),
        }
    }
}

crate::shared_impl::redis_limiter!(RedisSlidingWindow);
