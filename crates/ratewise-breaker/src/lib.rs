//! Per-key circuit breaker for tower with failure-rate windows and bounded half-open probes.
//!
//! # Overview
//!
//! [`CircuitBreakerLayer`] fails fast while an upstream is down, probes it carefully, and
//! recovers by itself. Each key (by default the request's host, see [`ByHost`]) has its own
//! circuit, shared by every clone of the layer and of its services:
//!
//! - **Closed**: calls pass; each result is classified ([`Classify`], [`DefaultClassifier`]:
//!   5xx, timeouts and connection errors are failures, `429` is not) and recorded in a
//!   [`Window`]: the last 20 calls by default, or the calls of the last `length` in buckets.
//!   The circuit trips when failures reach 50% of the window once it holds 10 calls
//!   (`minimum_calls`: a first failure never trips it), or, if configured, after N failures
//!   in a row or when slow calls reach a share of the window.
//! - **Open**: every call fails at once with [`CircuitOpen`]` { key, retry_after }`, without
//!   reaching the inner service. The circuit stays open for 30 s, doubled on each consecutive
//!   trip up to 5 min, lengthened by a random jitter of up to 10% (injectable, seedable
//!   [`JitterSource`]; never shorter than the configured open duration nor longer than the
//!   cap); the growth resets after a healthy close.
//! - **Half-open**: exactly `half_open_probes` (default: 1) calls pass as probes, everyone else is
//!   refused at once. Their success closes the circuit, any failure re-opens it. A probe whose
//!   future is dropped gives its slot back without counting; a probe that does not answer
//!   within `probe_timeout` (default: 30 s) counts as failed, so the circuit can never stay half-open.
//!
//! A [`CircuitBreakerHandle`] reads each key's [`CircuitState`] and forces circuits open or
//! closed; [`on_state_change`](CircuitBreakerBuilder::on_state_change) callbacks, `tracing`
//! events (target `ratewise_breaker`, fields `key`, `from`, `to`, `open_for`) and the metrics
//! [`BREAKER_STATE`](ratewise_core::metric_names::BREAKER_STATE),
//! [`BREAKER_TRANSITIONS_TOTAL`](ratewise_core::metric_names::BREAKER_TRANSITIONS_TOTAL) and
//! [`BREAKER_REJECTIONS_TOTAL`](ratewise_core::metric_names::BREAKER_REJECTIONS_TOTAL) (through
//! the `metrics` facade) report every transition.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use ratewise_breaker::{CircuitBreakerLayer, CircuitOpen, Window};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let breaker = CircuitBreakerLayer::builder()
//!     .window(Window::count(20))
//!     .minimum_calls(10)
//!     .failure_rate(0.5)
//!     .open_duration(Duration::from_secs(30))
//!     .build()?;
//! let handle = breaker.handle();
//!
//! // An upstream that is down.
//! let client = ServiceBuilder::new().layer(breaker).service(service_fn(|_req: http::Request<()>| async {
//!     Ok::<_, std::io::Error>(http::Response::builder().status(503).body(()).unwrap())
//! }));
//!
//! for _ in 0..10 {
//!     let request = http::Request::get("https://api.example.com/items").body(())?;
//!     let response = client.clone().oneshot(request).await?;
//!     assert_eq!(response.status(), 503);
//! }
//! // Ten failures out of ten: the circuit is open and refuses at once.
//! let request = http::Request::get("https://api.example.com/items").body(())?;
//! let error = client.clone().oneshot(request).await.unwrap_err();
//! let open = error.downcast_ref::<CircuitOpen>().expect("refused by the breaker");
//! assert_eq!(open.key().as_str(), "api.example.com");
//! // Open for 30 s at least, plus up to 10% of jitter.
//! assert!(open.retry_after() >= Duration::from_secs(30));
//! assert!(open.retry_after() <= Duration::from_secs(33));
//! assert_eq!(handle.state(open.key()).as_str(), "open");
//! # Ok(())
//! # }
//! ```
//!
//! # Cancel safety
//!
//! Dropping a response future at any point releases what it holds: a half-open probe gives
//! its slot back at once without counting as a success or a failure, so the next caller
//! probes; a closed-state call leaves no trace. A probe future kept but never polled again is
//! bounded by `probe_timeout`. See [`future::ResponseFuture`].
//!
//! # Order
//!
//! Put the breaker below retries and above adaptation and pacing (see the workspace design):
//! every retry attempt goes through the breaker again, and a call the circuit would refuse
//! never waits for a pacing token first. Refusals of the layers below (ratewise refusals such
//! as `PaceWaitTooLong`) are [`Outcome::Ignored`], not failures: the upstream never saw them.
//!
//! # Design notes
//!
//! - **Fast path.** A closed circuit admits a call with one atomic load (the phase and an
//!   epoch packed in one `AtomicU64`). In the steady state (a count window full of successes)
//!   a success completes with one more load and no lock: recording a success there changes
//!   nothing. Other outcomes are recorded under a short mutex that is never held across an
//!   await or while user callbacks run. Loom models check these interleavings
//!   (`RUSTFLAGS="--cfg loom" cargo test -p ratewise-breaker --lib --release loom`). Nothing is
//!   allocated per call: the future is a named `pin-project-lite` enum, key lookup goes
//!   through [`ratewise_core::KeyedState`]. Calls carry the epoch they were admitted in, so the
//!   late result of a call admitted before a transition never counts in the next phase (the
//!   over-admission of Resilience4j #1432 and the unbounded half-open of tower PR #855 cannot
//!   happen: probe slots are counted under the lock).
//! - **Lazy time transitions.** Open becomes half-open when the first call (or a handle read)
//!   arrives after the open duration, and that call becomes the probe; no timer task runs.
//!   A probe past `probe_timeout` is judged the same way, so a probe future that is never
//!   polled again cannot keep the circuit half-open.
//! - **tower-http classification.** [`TowerHttpClassifier`] adapts any
//!   `tower_http::classify::ClassifyResponse`. The default is our own [`DefaultClassifier`]
//!   rather than `ServerErrorsAsFailures` because the breaker needs a third answer,
//!   [`Outcome::Ignored`] (refusals of lower layers), and a configurable 429, and because
//!   `ClassifyResponse::classify_error` allocates a `String` per error that we would discard.
//! - **Growth reset.** The count of consecutive trips (which drives the open-duration growth)
//!   resets after a *healthy* close: once `minimum_calls` calls were recorded in the closed
//!   state without tripping again, not at the instant of closing, so a flapping upstream keeps
//!   its longer open durations.
//! - **Forced states** are kept apart from the normal ones ([`CircuitState::ForcedOpen`],
//!   [`CircuitState::ForcedClosed`]) and only a handle leaves them. Metrics report them as
//!   `open` and `closed`. They are remembered apart from the capped per-key map, so a forced
//!   key whose circuit the key cap or idle eviction drops comes back forced at its next call;
//!   a normal open circuit that is evicted comes back closed (see
//!   [`max_keys`](CircuitBreakerBuilder::max_keys)).
//!
//! # Supported Rust versions
//!
//! The minimum supported Rust version is the workspace's `rust-version` (1.88).
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod classify;
mod config;
pub mod future;
mod handle;
mod layer;
#[cfg(all(test, loom))]
mod loom_tests;
mod service;
mod state;
mod sync;

pub use classify::{Classify, DefaultClassifier, Outcome, TowerHttpClassifier};
pub use config::{ConfigError, JitterSource, SeededJitter, Window};
pub use handle::CircuitBreakerHandle;
pub use layer::{CircuitBreakerBuilder, CircuitBreakerLayer};
#[doc(no_inline)]
pub use ratewise_core::{BoxError, ByHost, CircuitOpen, Key, KeyFn};
pub use service::CircuitBreaker;
pub use state::{CircuitState, StateChange};
