//! `RedisGcra`: GCRA in one Lua script, one round trip per acquire.

use std::sync::Arc;

use crate::connection::RedisConnection;
use crate::limiter::{Engine, Settings};

/// A GCRA rate limiter on Redis: every process using the same Redis, prefix and key shares
/// one quota.
///
/// Each acquire is one `EVALSHA` of one Lua script that reads Redis' own clock (`TIME`), checks
/// the key's shared cooldown and all its chained quotas, and either takes the cost from every
/// quota or, on a denial, writes nothing and returns how long to wait (to the microsecond).
/// Memory: one small string per quota per key (its theoretical arrival time), expiring once the
/// bucket is full again, plus the cooldown key while one runs.
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
pub struct RedisGcra {
    pub(crate) engine: Arc<Engine>,
}

impl RedisGcra {
    /// A limiter with the default settings (prefix "ratewise", timeout 50 ms, fallback to a
    /// local limiter at the full rate: set `expected_workers` through [`Self::builder`]).
    pub fn new(connection: RedisConnection) -> Self {
        let engine = Engine::new(
            crate::limiter::Algorithm::Gcra,
            connection,
            Settings::default(),
        )
        .expect("the default settings are valid");
        Self {
            engine: Arc::new(engine),
        }
    }
}

crate::shared_impl::redis_limiter!(RedisGcra);
