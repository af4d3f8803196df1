//! GCRA pacing for tower: per-endpoint quotas, chained quotas, weighted costs, FIFO waiting.
//!
//! # Overview
//!
//! [`PaceLayer`] spaces the requests of each key (endpoint, host, bucket) so that a server
//! enforcing a known quota never has to refuse one: the seed's token bucket, done right.
//!
//! - **Quotas**: [`Quota::per_second`], [`per_minute`](Quota::per_minute),
//!   [`per_hour`](Quota::per_hour), [`with_period`](Quota::with_period), and
//!   [`.burst(b)`](Quota::burst): at most *b* at once, then one every *period / n* (the exact
//!   GCRA rule is on [`Quota`]). Invalid quotas are construction errors ([`QuotaError`]).
//! - **Keys**: [`PaceLayer::new`] paces everything through one bucket;
//!   [`PaceLayer::keyed`] takes a [`KeyFn`](ratewise_core::KeyFn) (for example
//!   [`ByRoute`](ratewise_core::ByRoute) over a [`RouteTable`](ratewise_core::RouteTable)) and a
//!   [`QuotaTable`] giving each key its quotas. A key may chain up to
//!   [`MAX_CHAINED_QUOTAS`] quotas ([`Quotas`]: `10/s AND 5000/h`): a request passes when all
//!   pass, and a refusal by one consumes none of the others.
//! - **Costs**: a [`CostFn`] weighs each request (GraphQL points, LLM tokens), 1 by default.
//! - **Waiting**: over quota, a request waits until its slot is due (the default), in FIFO order
//!   among the waiters of its key, higher [`Priority`] first. With
//!   [`max_wait`](PaceLayer::max_wait), or when the request carries a
//!   [`Deadline`], a request whose wait would pass it fails **at once**
//!   with [`PaceWaitTooLong`] (its key and `retry_after`). A
//!   [reserve](PaceLayer::reserve) keeps part of each burst for requests above
//!   [`Priority::Low`].
//! - **Concurrency**: [`max_concurrency`](PaceLayer::max_concurrency) caps the requests of a
//!   key in flight (GitHub allows 100).
//! - **Runtime changes**: a [`PaceHandle`] changes quotas and drains keys (a cooldown until an
//!   instant, used by the adaptation layer on `Retry-After`).
//! - **Stores**: the layer asks a [`RateLimiter`]; [`LocalLimiter`] is the in-memory one (one
//!   lock-free `AtomicU64` compare-and-swap per key and quota, like governor), and
//!   `ratewise-redis` shares a quota between processes through the same trait.
//! - **Clocks**: [`LocalLimiter`] reads tokio's clock ([`TokioClock`]), so paused-clock tests
//!   pace exactly. Where a few nanoseconds per request matter, the `tsc-clock` feature's
//!   `TscClock` reads the CPU's counter instead (kept in step with tokio's clock, not with a
//!   paused one): `PaceLayer::keyed(key_fn, table).limiter(LocalLimiter::with_clock(TscClock::new(), 100_000))`.
//!
//! # Example
//!
//! The seed's three GitHub endpoints, each with its own bucket:
//!
//! ```
//! use std::time::Duration;
//! use ratewise_core::{ByRoute, RouteTable};
//! use ratewise_pace::{PaceLayer, Quota, QuotaTable};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), ratewise_core::BoxError> {
//! let routes = RouteTable::builder()
//!     .route("/repos/{owner}/{repo}", "repos")?
//!     .prefix("/search", "search")?
//!     .route("/graphql", "graphql")?
//!     .build();
//! let quotas = QuotaTable::new()
//!     .with("repos", Quota::per_hour(5000)?.burst(50)?)
//!     .with("search", Quota::per_minute(30)?.burst(5)?)
//!     .with("graphql", Quota::per_hour(5000)?.burst(20)?);
//!
//! let client = ServiceBuilder::new()
//!     .layer(PaceLayer::keyed(ByRoute(routes), quotas).max_wait(Duration::from_secs(60)))
//!     .service_fn(|request: http::Request<()>| async move {
//!         Ok::<_, std::convert::Infallible>(format!("sent {}", request.uri()))
//!     });
//!
//! let start = tokio::time::Instant::now();
//! for _ in 0..6 {
//!     let request = http::Request::get("https://api.github.com/search/code?q=tower").body(())?;
//!     client.clone().oneshot(request).await?;
//! }
//! // A burst of 5, then one every 2 s.
//! assert_eq!(start.elapsed(), Duration::from_secs(2));
//! # Ok(())
//! # }
//! ```
//!
//! # Order
//!
//! Put `PaceLayer` closest to the wire (below retry, breaker and adaptation): a slot is taken
//! right before the attempt is sent, and every retry is paced again. Time spent waiting here
//! is inside the response future, so a `tower::timeout::Timeout` *above* this layer covers it
//! (one below does not).
//!
//! # Design notes
//!
//! - **Denials consume nothing; only the head of a key's queue asks the limiter.** A waiting
//!   request sleeps until the limiter's `retry_after`, then asks again. A dropped waiting
//!   request therefore never took a slot, and leaves the bucket exactly as if it never came
//!   (tested with random drops). Reserving future slots up front (governor's `until_ready`)
//!   would need a refund on drop, which a remote store cannot do exactly.
//! - **FIFO and priorities live in the layer** (a small queue per key, created only when a
//!   request has to wait), so every [`RateLimiter`] gets them and a limiter stays one atomic
//!   step (one CAS locally, one script on Redis).
//! - **The quotas travel with each acquire**, so runtime changes need no limiter support.
//! - **Fast path**: when the key's queue is empty and the limiter admits at once
//!   ([`RateLimiter::acquire_now`]), `call` calls the inner service directly: no clone of the
//!   inner service, no allocation, no lock held across an await. Requests that wait box their
//!   state once.
//! - **`max_wait` is decided up front** from the limiter's answer and the queue ahead
//!   (`retry_after` of the head plus one interval per unit of cost queued ahead); a waiter
//!   pushed back later by higher-priority requests fails when its limit passes.
//! - **The clock is tokio's by default, on purpose, and the TSC on request.** [`LocalLimiter`]
//!   reads a [`Clock`]. The default, [`TokioClock`], reads `tokio::time::Instant::now()` on every
//!   decision (DESIGN.md's time rule), so pacing follows a paused clock in tests (an hour of a
//!   5000/h quota simulated exactly in milliseconds), and a `drain` until a tokio instant (a
//!   `Retry-After` cooldown) lines up with the timers that wait for it. That read is most of an
//!   acquire: about 22 ns of 43 here, where governor reads the TSC through quanta (about 9 ns;
//!   `cargo bench -p ratewise-pace --bench pace --features tsc-clock -- clock`). So, departing
//!   from the time rule as an opt-in, the `tsc-clock` feature adds `TscClock`: the same counter
//!   governor reads, but put back in step with tokio's clock every 100 ms (governor's is
//!   calibrated once and drifts from tokio's timers). It does not follow a paused clock, which is
//!   why it is not the default: choose it where the stack is built and keep [`TokioClock`] in
//!   paused-clock tests. Everything else in an acquire is cheaper than in governor's keyed limiter
//!   (no hashing per lookup: keys carry their hash; one line-aligned entry per key): on the same
//!   clock ours takes about 0.8x governor's time per keyed decision (both on the TSC, or both on
//!   the monotonic clock), and [`LocalLimiter::direct`] (one bucket, no lookup: what
//!   [`PaceLayer::new`] uses) on the TSC clock matches governor's direct limiter (each decision is
//!   the counter read and one compare-and-swap). BENCHMARKS.md has the rows.
//! - Waits are recorded in [`PACE_WAIT_SECONDS`](ratewise_core::metric_names::PACE_WAIT_SECONDS)
//!   (requests that waited) and refusals in
//!   [`PACE_REFUSED_TOTAL`](ratewise_core::metric_names::PACE_REFUSED_TOTAL), both labelled by
//!   key; `tracing` debug events name the key and the wait.
//!
//! # Supported Rust versions
//!
//! The minimum supported Rust version is the workspace's `rust-version` (1.88).
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod clock;
pub mod future;
mod layer;
mod limiter;
mod local;
mod loom;
mod queue;
mod quota;
mod request;
mod service;
mod store;

#[cfg(feature = "tsc-clock")]
#[cfg_attr(docsrs, doc(cfg(feature = "tsc-clock")))]
pub use clock::TscClock;
pub use clock::{Clock, TokioClock};
pub use layer::{PaceConfigError, PaceHandle, PaceLayer, QuotaTable};
pub use limiter::{CostExceedsBurst, Decision, InvalidQuotaChain, MAX_CHAINED_QUOTAS, RateLimiter};
pub use local::LocalLimiter;
pub use quota::{Quota, QuotaError, Quotas};
#[doc(no_inline)]
pub use ratewise_core::{BoxError, Deadline, Key, PaceWaitTooLong};
pub use request::{CostFn, Priority, UnitCost};
pub use service::Pace;
