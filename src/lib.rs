//! Client-side traffic shaping for Rust programs that consume rate-limited HTTP APIs.
//!
//! # Overview
//!
//! [`stack()`] assembles every enabled layer in the recommended order (cache, metrics, total
//! deadline, retry, circuit breaker, adaptation, pacing, attempt timeout; see its `# Order`
//! section for the reason behind each position) and validates the configuration once.
//! [`ServiceBuilderExt`] adds one `ServiceBuilder` method per layer for those who mix layers
//! themselves, and [`prelude`] imports the usual names.
//!
//! # Example
//!
//! ```
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), ratewise::BoxError> {
//! let client = ServiceBuilder::new()
//!     .layer(ratewise::stack().build()?)
//!     // Your HTTP client goes here, e.g. hyper-util's legacy `Client`.
//!     .service_fn(|_request: http::Request<String>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(String::from("ok")))
//!     });
//! let response = client
//!     .oneshot(http::Request::get("https://api.example.com/users").body(String::new())?)
//!     .await?;
//! assert_eq!(response.status(), 200);
//! # Ok(())
//! # }
//! ```
//!
//! # Feature flags
//!
//! `ratewise` is a stack of independent [`tower`](https://docs.rs/tower) layers, each in its own
//! crate and re-exported here behind a same-named cargo feature:
//!
//! | feature   | crate              | what it does |
//! |-----------|--------------------|--------------|
//! | (always)  | [`core`]           | keys, route tables, bounded keyed state, refusal errors |
//! | `pace`    | `ratewise-pace`    | GCRA pacing per endpoint |
//! | `adapt`   | `ratewise-adapt`   | learns limits from rate-limit headers, shared cooldowns |
//! | `retry`   | `ratewise-retry`   | backoff with jitter, exact `Retry-After`, budgets |
//! | `breaker` | `ratewise-breaker` | per-host circuit breaking |
//! | `cache`   | `ratewise-cache`   | RFC 9111 cache, coalescing, batching |
//! | `redis`   | `ratewise-redis`   | one quota shared by many workers through Redis |
//! | `metrics` | `ratewise-metrics` | metrics for every layer |
//!
//! `full` enables all of them; the default is `pace`, `adapt`, `retry` and `breaker`. One more,
//! `tsc-clock` (not in `full`), adds `pace::TscClock`: pacing on the CPU's counter, about 13 ns
//! cheaper per decision than tokio's clock, but blind to tokio's paused clock in tests.
//!
//! # Supported Rust versions
//!
//! The minimum supported Rust version is the workspace's `rust-version` (1.88).
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

#[doc(inline)]
pub use ratewise_core as core;

#[cfg(any(feature = "adapt", feature = "retry"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "adapt", feature = "retry"))))]
#[doc(inline)]
pub use ratewise_headers as headers;

#[cfg(feature = "pace")]
#[cfg_attr(docsrs, doc(cfg(feature = "pace")))]
#[doc(inline)]
pub use ratewise_pace as pace;

#[cfg(feature = "adapt")]
#[cfg_attr(docsrs, doc(cfg(feature = "adapt")))]
#[doc(inline)]
pub use ratewise_adapt as adapt;

#[cfg(feature = "retry")]
#[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
#[doc(inline)]
pub use ratewise_retry as retry;

#[cfg(feature = "breaker")]
#[cfg_attr(docsrs, doc(cfg(feature = "breaker")))]
#[doc(inline)]
pub use ratewise_breaker as breaker;

#[cfg(feature = "cache")]
#[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
#[doc(inline)]
pub use ratewise_cache as cache;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
#[doc(inline)]
pub use ratewise_redis as redis;

#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
#[doc(inline)]
pub use ratewise_metrics as metrics;

// The README's code blocks are compiled as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

mod ext;
mod stack;
mod timeouts;

pub use ext::ServiceBuilderExt;
pub use ratewise_core::{BoxError, Deadline, Key, KeyFn, Refusal, find_refusal};
pub use stack::{DEFAULT_ATTEMPT_TIMEOUT, StackBuilder, StackError, StackLayer, stack};
pub use timeouts::{
    AttemptTimeout, AttemptTimeoutElapsed, AttemptTimeoutLayer, SetDeadline, SetDeadlineLayer,
    TimeoutFuture, TotalTimeoutElapsed,
};

/// The names most programs need: the extension trait, the stack builder and every enabled
/// layer with its refusal errors.
pub mod prelude {
    pub use crate::ServiceBuilderExt;
    pub use crate::{BoxError, Deadline, stack};
    pub use ratewise_core::{
        AdaptWaitTooLong, ByHost, ByHostAndRoute, ByRoute, CircuitOpen, Global, Key, KeyFn,
        PaceWaitTooLong, RouteTable,
    };

    #[cfg(feature = "adapt")]
    pub use ratewise_adapt::AdaptLayer;
    #[cfg(feature = "breaker")]
    pub use ratewise_breaker::CircuitBreakerLayer;
    #[cfg(feature = "cache")]
    pub use ratewise_cache::{BatchLayer, CacheLayer, CacheStatus};
    #[cfg(feature = "metrics")]
    pub use ratewise_metrics::MetricsLayer;
    #[cfg(feature = "pace")]
    pub use ratewise_pace::{PaceLayer, Priority, Quota, QuotaTable};
    #[cfg(feature = "redis")]
    pub use ratewise_redis::{RedisGcra, RedisSlidingWindow};
    #[cfg(feature = "retry")]
    pub use ratewise_retry::{Idempotent, RetryLayer};
}
