//! Header-driven pacing for tower: learns each endpoint's limits from the server's rate-limit
//! headers and refusals, keeps concurrent callers within them, and shares cooldowns.
//!
//! # Overview
//!
//! [`AdaptLayer`] needs no configuration: the client is never told the limit. For every
//! request it finds the request's key ([`KeyFn`](ratewise_core::KeyFn), default by host and
//! route bucket), and:
//!
//! - **after every response** it parses the headers with [`ratewise_headers::parse`] (every
//!   dialect: IETF drafts, GitHub, legacy `X-RateLimit-*`, OpenAI, Discord, ...) and updates the
//!   key's state per policy: limit, remaining, and the reset as a tokio [`Instant`]. The last
//!   known state is kept until its reset passes (a response without headers does not mean
//!   "unlimited"). Cached responses (`Age > 0`) are ignored.
//! - **before every request** it reserves one unit from the learned remaining, counting the
//!   requests already in flight: 16 tasks that see `remaining = 5` send 5, the others wait for
//!   the reset. When the reservation would go at or below the [`SafetyMargin`] (default 0), the request
//!   waits until the reset; with [`spread`](AdaptConfig::spread) the remaining budget is paced
//!   evenly until the reset instead.
//! - **slow start**: a key the server has not described yet gets one request in flight
//!   ([`slow_start`](AdaptConfig::slow_start)) until the first response; then it opens up to
//!   what the headers allow. The same happens after each reset, until a response describes the
//!   new window, so a client whose clock is slightly ahead of the server's spends at most one
//!   request on a stale window. A probe that never answers (a hung connection, no timeout
//!   anywhere) holds the key for [`probe_timeout`](AdaptConfig::probe_timeout) (default
//!   10 s), not for ever: when no request of the key was sent for that long and none of
//!   those in flight has answered, the next waiter probes. A key whose limits are unknown
//!   thus sends at most `slow_start` requests plus one per `probe_timeout`, never a burst.
//! - **cooldowns**: a 429 (or GitHub's 403) with `Retry-After`, a 503 with `Retry-After`, or an
//!   exhausted `RateLimit` (`r=0;t=..`) puts the whole key into a cooldown until the server's
//!   instant, which every caller of the key respects (not only the one that retries). A
//!   `Retry-After` on a successful response is not a refusal. A global refusal (Discord
//!   `X-RateLimit-Global`) cools down every key of the layer.
//! - **server buckets**: when a response declares its bucket (Discord `X-RateLimit-Bucket`,
//!   GitHub `x-ratelimit-resource`), the route key remembers it for the first segment of the
//!   request's path, so the next requests of every route the server put in one bucket count
//!   against one state, before they are sent. With zero configuration this keeps GitHub's
//!   `/search` (resource `search`) and `/repos` (resource `core`) apart under one host key.
//! - **header-less servers**: a key whose server sends no rate-limit headers learns a rate from
//!   its 429s alone with the AWS SDK adaptive algorithm (CUBIC: `rate = 0.7 x W_max` on a
//!   throttle, `0.4 (t - K)^3 + W_max` after), per key; the rate is seeded from the headers when
//!   a server that sent some stops. [`AdaptLayer::learned_rate`] reports it.
//! - **bounded waits**: a wait longer than [`max_wait`](AdaptConfig::max_wait) (default 60 s)
//!   or past the request's [`Deadline`](ratewise_core::Deadline) is not started: the request
//!   fails fast with [`AdaptWaitTooLong`] carrying `retry_after` instead.
//!
//! Keys never block each other: each key has its own small lock, held for a few
//! comparisons, never across an await.
//!
//! # Example
//!
//! ```
//! use http::{Request, Response};
//! use ratewise_adapt::AdaptLayer;
//! use ratewise_core::BoxError;
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! // Any HTTP client works; this one answers like GitHub.
//! let client = service_fn(|_request: Request<String>| async {
//!     let response = Response::builder()
//!         .header("x-ratelimit-limit", "5000")
//!         .header("x-ratelimit-remaining", "4999")
//!         .header("x-ratelimit-reset", "4102444800")
//!         .header("x-ratelimit-resource", "core")
//!         .body(String::new())?;
//!     Ok::<_, BoxError>(response)
//! });
//! let layer = AdaptLayer::new();
//! let mut service = ServiceBuilder::new().layer(layer.clone()).service(client);
//!
//! let request = Request::get("https://api.github.com/user").body(String::new())?;
//! let response = service.ready().await?.call(request).await?;
//! assert!(response.status().is_success());
//! # Ok(())
//! # }
//! ```
//!
//! # Order
//!
//! In a full stack, place `AdaptLayer` below the retry and circuit-breaker layers (every
//! attempt goes through the server's truth again) and above local pacing (`PaceLayer`, closest
//! to the wire).
//!
//! # Design notes
//!
//! - *Accounting.* A response to the request reserved `s`-th says how much the server had left
//!   after counting it; requests reserved after it may not be counted yet, so the budget is
//!   `remaining - (reservations after s)`. Only the freshest response updates it. This is
//!   exact when requests reach the server in the order they were reserved, and conservative
//!   otherwise; see `state.rs`.
//! - *Cancellation.* A request whose future is dropped before its response frees its
//!   in-flight slot, but its unit of quota stays spent until a fresher response says
//!   otherwise: a dropped request may well have reached the server (a timeout above this
//!   layer drops futures whose requests the server is processing), and giving the unit back
//!   would send one request more than the server allows. A failed request keeps it spent too.
//! - *Time.* Reset instants are tokio [`Instant`]s computed at receipt. The parser is given a
//!   wall clock that advances with tokio's clock (the layer's creation time plus tokio's elapsed
//!   time), so absolute resets (epoch seconds, HTTP-dates) convert consistently under a paused
//!   test clock.
//! - *Integer-second resets.* Dialects that state the reset in whole seconds (draft-8 `t`,
//!   draft-7 `reset`, `Retry-After`, legacy epoch resets) cannot express a sub-second reset:
//!   servers round it up, so a server with a tiny burst (say 10/s with a burst of 1) answers
//!   `r=0;t=1` after every request and the layer paces that key at one request per second,
//!   not ten. This is deliberate: the layer never sends before the instant the server
//!   states, because the server may mean exactly that instant, and guessing a shorter reset
//!   from `RateLimit-Policy` (`q=10;w=1`) would cost a 429 whenever the guess is wrong. Use a
//!   dialect with sub-second resets where the server offers one (OpenAI durations, Discord
//!   `Reset-After`, `retry-after-ms`), or, for a server whose rate is known, a local
//!   `PaceLayer` quota for that route below this layer.
//! - *Policies.* Up to 4 policies per key are tracked (IETF lists, OpenAI requests + tokens,
//!   GitHub resources). Policies counted in requests are reserved from; others (tokens, points)
//!   only block when exhausted.
//! - *Allocation.* Reserving, sending and releasing allocate nothing, and neither does a
//!   response without rate-limit headers (a scan of the header names skips the parser); the
//!   parser builds its result for a response that has some. Metric labels share the key's
//!   name; new keys and server buckets allocate their state.
//!
//! # Memory
//!
//! Per key: about 1100 bytes (1048 bytes of state on 64-bit targets: 4 policies, 16
//! server-bucket aliases, the CUBIC limiter; plus its `Notify`, key and host name) and the
//! [`KeyedState`](ratewise_core::KeyedState) overhead; at most 10 000 route keys and as many bucket keys, idle keys evicted after 10
//! minutes ([`keyed_state`](AdaptConfig::keyed_state)). A key the server blocked (a cooldown,
//! an exhausted window) also has an entry of about 60 bytes in a side map until the block
//! ends, at most as many as the key cap, so that eviction never shortens a server's wait.
//!
//! # Supported Rust versions
//!
//! The minimum supported Rust version is the workspace's `rust-version` (1.88).
//!
//! [`Instant`]: tokio::time::Instant
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod config;
mod cubic;
pub mod future;
mod layer;
mod observe;
mod service;
mod state;

pub use config::{AdaptConfig, ConfigError, SafetyMargin};
pub use layer::{AdaptLayer, KeySnapshot, PolicySnapshot};
#[doc(inline)]
pub use ratewise_core::AdaptWaitTooLong;
pub use service::Adapt;
