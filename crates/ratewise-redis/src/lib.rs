//! Distributed rate limiting on Redis for ratewise: many processes, one quota, decided by
//! atomic Lua scripts on Redis' own clock.
//!
//! # Overview
//!
//! When several processes or machines share one API key, they must share its quota.
//! [`RedisGcra`] and [`RedisSlidingWindow`] implement the pace crate's
//! [`RateLimiter`], so [`PaceLayer`](ratewise_pace::PaceLayer) works unchanged over Redis
//! (`.limiter(redis_limiter)`), with its FIFO waiting, priorities and `max_wait`:
//!
//! - [`RedisGcra`] (the default choice): GCRA in one Lua script. **One round trip per acquire**,
//!   allowed or denied; **O(1) memory** per key and quota (one float, expiring when the bucket
//!   is full again); **time from Redis `TIME`**, so worker clocks never matter; **denials write
//!   nothing**; weighted costs; chained quotas all or nothing; `retry_after` to the microsecond.
//!   It makes the same decisions as the pace crate's
//!   [`LocalLimiter`](ratewise_pace::LocalLimiter) for the same arrivals (a property test
//!   replays random arrivals through both).
//! - [`RedisSlidingWindow`]: an exact rolling-window log for APIs that count strictly ("at most
//!   `n` in any `period`"): one script per acquire, unique members (never two requests under
//!   one timestamp), memory bounded by `n` members per key and quota.
//! - **Shared cooldowns**: [`RateLimiter::drain`] (called by the pacing layer's handle or the
//!   adaptation layer on a 429 / `Retry-After`) writes a cooldown key that every worker's next
//!   acquire checks in the same script; GCRA quotas then restart with one unit, without a
//!   burst.
//! - **Redis Cluster**: every key of a limiter key is `{<prefix>:<key>}:<suffix>`, so one script
//!   touches one hash slot; different limiter keys spread over the slots. Scripts run with
//!   `EVALSHA`; on `NOSCRIPT` (after a restart, a failover or `SCRIPT FLUSH`) the call is
//!   repeated with `EVAL`, which carries the keys and so is routed to the right node.
//! - **Connections**: [`RedisConnection::single`] (the `redis` crate's `ConnectionManager`:
//!   multiplexed, lazy, reconnecting) or [`RedisConnection::cluster`].
//! - **Failure policy** ([`FailurePolicy`]): every call to Redis is bounded by a timeout
//!   \[50 ms\]; when Redis is slow, down or erring, the limiter degrades to
//!   `FallbackLocal { expected_workers }` \[default\] (a local GCRA at `rate / expected_workers`),
//!   `FailOpen` or `FailClosed`, probes Redis again once per probe interval \[500 ms\] and goes
//!   back to the shared quota as soon as Redis answers. Every switch emits a `tracing` event and
//!   increments [`REDIS_MODE_SWITCHES_TOTAL`](ratewise_core::metric_names::REDIS_MODE_SWITCHES_TOTAL);
//!   every decision by the policy increments
//!   [`REDIS_FALLBACK_TOTAL`](ratewise_core::metric_names::REDIS_FALLBACK_TOTAL).
//!
//! # Example
//!
//! Four workers share GitHub's 5000 requests per hour. This runs with or without a Redis on
//! 6379: without one, the limiter paces locally at a quarter of the rate.
//!
//! ```
//! use ratewise_pace::{PaceLayer, Quota};
//! use ratewise_redis::{FailurePolicy, RedisConnection, RedisGcra};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), ratewise_core::BoxError> {
//! let client = redis::Client::open("redis://127.0.0.1:6379/")?;
//! let limiter = RedisGcra::builder(RedisConnection::single(client)?)
//!     .prefix("doc-example")
//!     .failure_policy(FailurePolicy::FallbackLocal { expected_workers: 4 })
//!     .build()?;
//!
//! let github = ServiceBuilder::new()
//!     .layer(PaceLayer::new(Quota::per_hour(5000)?.burst(50)?).limiter(limiter))
//!     .service_fn(|request: http::Request<()>| async move {
//!         Ok::<_, std::convert::Infallible>(format!("sent {}", request.uri()))
//!     });
//!
//! let request = http::Request::get("https://api.github.com/rate_limit").body(())?;
//! assert_eq!(github.oneshot(request).await?, "sent https://api.github.com/rate_limit");
//! # Ok(())
//! # }
//! ```
//!
//! # Semantics
//!
//! - **GCRA** is exactly the rule documented on [`Quota`]: a request of cost `c` at `now`
//!   passes a quota iff `max(tat, now) + c·T − b·T <= now`. The script computes in
//!   microseconds since 2017-01-01 (from `TIME` as `sec·10⁶ + usec`, numerically: the
//!   microseconds of `TIME` are not zero padded), where a double keeps 1/16 µs of precision;
//!   floats travel as strings (Redis truncates Lua numbers) formatted with 17 digits.
//! - **Sliding window**: a unit admitted at `t` counts for every request in `(t − period, t]`
//!   and stops counting at `t + period` exactly. Each quota's `count` and `period` are used;
//!   its burst is not (the log admits a whole window at once: prefer GCRA unless the server
//!   really counts a rolling window).
//! - **Keys**: the `i`-th quota of a key keeps its state under `{<prefix>:<key>}:gcra:<i>`
//!   (or `:log:<i>`), so changing a quota's parameters keeps its state, as the trait requires;
//!   the cooldown is `{<prefix>:<key>}:cooldown`.
//!
//! # Cancel safety
//!
//! Dropping an acquire future either leaves Redis unchanged or, when its script already
//! reached Redis, has taken the cost once: nothing ever sends a script twice. A dropped probe
//! frees the probe slot for the next acquire.
//!
//! # Design notes
//!
//! - **`EVAL` fallback rather than `SCRIPT LOAD`**: the `redis` crate's `ScriptInvocation`
//!   reloads with `SCRIPT LOAD`, which has no key: its cluster client broadcasts it to every
//!   node and fails unless all succeed, so one unreachable node (even one that does not own the
//!   key) would break the reload. `EVAL` carries the keys, goes to the owner of the slot only,
//!   caches the script there again, and costs one extra round trip only after a flush.
//! - **Probes are real acquires**: while degraded, one acquire per probe interval runs the
//!   script (bounded by the timeout) instead of a background `PING`: no task to manage, and
//!   the first success is a shared decision already. The other acquires answer locally at once.
//! - **A cooldown is both a key and a push of the TATs**: the key gives every worker the same
//!   "denied until", checked first in the same script (and understood by the sliding window);
//!   pushing each TAT to `until + (b − 1)·T` gives the trait's "no burst after a cooldown".
//! - **Multi-process figures** (tests/multiprocess.rs: 4 processes × 8 tasks share 50 req/s for
//!   20 s against MockApi enforcing 50 req/s): `PaceLayer` over `RedisGcra` sent 988 to 1003
//!   requests over several runs (the quota is 1000 plus the burst), never a 429; the seed's
//!   sorted-set pipeline, over 20 s, sent 5 200 to 5 900, up to about 400 in one second, and
//!   collected about 4 700 to 5 300 429s: timestamp members collide and a denied request's
//!   `ZREM` can delete an admitted request's entry of the same millisecond. The test now runs
//!   the peer for 5 s only (its flaw shows within the first second: 1 251 sent, 1 020 429s,
//!   336 in one second), which keeps the test near 30 s of wall time.
//!
//! # Supported Rust versions
//!
//! The minimum supported Rust version is the workspace's `rust-version` (1.88).
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod builder;
mod connection;
mod error;
pub mod future;
mod gcra;
mod limiter;
mod policy;
mod scripts;
mod shared_impl;
mod window;

pub use builder::RedisLimiterBuilder;
pub use connection::RedisConnection;
pub use error::{ConfigError, RedisUnavailable};
pub use gcra::RedisGcra;
pub use limiter::{DecisionSource, RedisDecision};
pub use policy::FailurePolicy;
#[doc(no_inline)]
pub use ratewise_pace::{CostExceedsBurst, Decision, InvalidQuotaChain, Quota, RateLimiter};
pub use window::RedisSlidingWindow;

#[cfg(test)]
mod tests;
