//! The connection to Redis: one server through a reconnecting `ConnectionManager`, or a
//! Redis Cluster through the cluster client; scripts run with `EVALSHA` and fall back to `EVAL`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{ErrorKind, RedisResult, ServerErrorKind, Value};

use crate::scripts::LuaScript;

/// A connection to Redis (one server) or to a Redis Cluster, shared by every clone.
///
/// Build it with [`RedisConnection::single`] (lazy: it connects on first use and reconnects by
/// itself after a restart) or [`RedisConnection::cluster`], or wrap a connection you already
/// have with [`RedisConnection::from_manager`] / [`RedisConnection::from_cluster`].
///
/// # Clone
///
/// Cloning is cheap and every clone shares the underlying multiplexed connection.
#[derive(Clone)]
pub struct RedisConnection {
    inner: Inner,
    counters: Arc<Counters>,
}

#[derive(Clone)]
enum Inner {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) round_trips: AtomicU64,
    pub(crate) script_reloads: AtomicU64,
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.inner {
            Inner::Single(_) => "single",
            Inner::Cluster(_) => "cluster",
        };
        f.debug_struct("RedisConnection")
            .field("kind", &kind)
            .field(
                "round_trips",
                &self.counters.round_trips.load(Ordering::Relaxed),
            )
            .finish()
    }
}

impl RedisConnection {
    /// A lazily connected, self-reconnecting connection to one Redis (or Valkey) server.
    ///
    /// Nothing is sent until the first acquire, so this never fails because Redis is down: an
    /// unreachable Redis is the failure policy's business, not the constructor's. Reconnection
    /// attempts back off from 50 ms to at most 1 s.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime (the manager spawns its reconnection task).
    ///
    /// # Errors
    ///
    /// Only for a malformed URL or client configuration.
    pub fn single(client: redis::Client) -> RedisResult<Self> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1))
            .set_number_of_retries(3);
        let manager = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self::from_manager(manager))
    }

    /// Connects to a Redis Cluster. Every script touches keys of one hash slot (see the crate
    /// docs), so the cluster client routes each call to the node that owns the limiter key.
    ///
    /// # Errors
    ///
    /// When no node of the cluster can be reached.
    pub async fn cluster(client: &redis::cluster::ClusterClient) -> RedisResult<Self> {
        Ok(Self::from_cluster(client.get_async_connection().await?))
    }

    /// Wraps an existing `ConnectionManager`.
    pub fn from_manager(manager: ConnectionManager) -> Self {
        Self {
            inner: Inner::Single(manager),
            counters: Arc::default(),
        }
    }

    /// Wraps an existing cluster connection.
    pub fn from_cluster(connection: ClusterConnection) -> Self {
        Self {
            inner: Inner::Cluster(connection),
            counters: Arc::default(),
        }
    }

    /// Commands sent to Redis through this connection (and its clones) so far: one per
    /// `EVALSHA` or `EVAL`. Useful to check the cost of an algorithm.
    pub fn round_trips(&self) -> u64 {
        self.counters.round_trips.load(Ordering::Relaxed)
    }

    /// Times a script had to be sent again because Redis answered `NOSCRIPT` (after a restart,
    /// a failover or `SCRIPT FLUSH`).
    pub fn script_reloads(&self) -> u64 {
        self.counters.script_reloads.load(Ordering::Relaxed)
    }

    async fn query(&self, cmd: &redis::Cmd) -> RedisResult<Value> {
        self.counters.round_trips.fetch_add(1, Ordering::Relaxed);
        match &self.inner {
            Inner::Single(manager) => cmd.query_async(&mut manager.clone()).await,
            Inner::Cluster(cluster) => cmd.query_async(&mut cluster.clone()).await,
        }
    }

    /// Runs `script` with `EVALSHA`; on `NOSCRIPT` sends the whole script with `EVAL`, which
    /// carries the keys (so a cluster routes it to the slot's owner, where `SCRIPT LOAD`, having
    /// no key, is broadcast to every node) and caches the script on that node again.
    pub(crate) async fn eval(
        &self,
        script: &LuaScript,
        keys: &[String],
        args: &[String],
    ) -> RedisResult<Value> {
        let mut evalsha = redis::cmd("EVALSHA");
        evalsha
            .arg(script.script.get_hash())
            .arg(keys.len())
            .arg(keys)
            .arg(args);
        match self.query(&evalsha).await {
            Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.counters.script_reloads.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    sha = script.script.get_hash(),
                    "redis answered NOSCRIPT; sending the script with EVAL"
                );
                let mut eval = redis::cmd("EVAL");
                eval.arg(script.code).arg(keys.len()).arg(keys).arg(args);
                self.query(&eval).await
            }
            other => other,
        }
    }
}
