//! HTTP retry policy for tower: backoff with jitter, `Retry-After` honoured exactly,
//! idempotency-aware, retry budgets and replayable bodies.
//!
//! # Overview
//!
//! [`RetryLayer`] wraps any `tower::Service<http::Request<B>>` (a hyper-util client, a
//! `ServiceBuilder` stack) and retries failed attempts. It is tower's own
//! `tower::retry::Retry` driven by an HTTP [`RetryPolicy`]:
//!
//! - **What is retried**: responses with status 408, 429, 500, 502, 503 or 504; a 403 that
//!   the headers mark as a rate-limit refusal (GitHub: `Retry-After`, or
//!   `x-ratelimit-remaining: 0` with its reset), treated like a 429; and transport errors a
//!   [`ClassifyError`] calls safe (the default [`SafeTransportErrors`]: connect failures,
//!   resets, timeouts). Anything else, a plain 403 included, is returned at once.
//! - **Only what may be repeated**: GET, HEAD, OPTIONS, PUT, DELETE and TRACE; POST and PATCH
//!   only with an `Idempotency-Key` header (the name is configurable) or the [`Idempotent`]
//!   extension. Any other request reaches the server at most once: it is retried only after
//!   an attempt that provably never left (a refused connection, no local address left, and
//!   with the `hyper-util` feature any connect-phase error of hyper-util's client or a
//!   request hyper gave back undispatched), which the configured [`ClassifyError`] and the
//!   built-in rules of [`SafeTransportErrors`] must both call [`ErrorClass::NotSent`]. A reset,
//!   a timeout or a response after the request may have been written ends it, whatever the
//!   status. A refused connection proves nothing was sent over TCP (the only state that
//!   reports it is the handshake); a client on a connected UDP socket (QUIC) can see one after
//!   sending, so give such a transport a [`ClassifyError`] that never says `NotSent`, or use
//!   `retry_unsent(false)`. Envoy's `connect-failure`/`reset-before-request` conditions draw
//!   the same line;
//!   [`retry_unsent(false)`](RetryLayerBuilder::retry_unsent) sends such requests once
//!   without exception.
//! - **How long to wait**: the server's word first — `retry-after-ms`, `Retry-After` (seconds,
//!   or an HTTP-date read relative to the response's `Date`), and on a rate-limit refusal the
//!   reset of an exhausted policy (draft `RateLimit` `t=`, GitHub `x-ratelimit-reset`) — parsed by `ratewise-headers`, rounded up to the millisecond and never shortened (an
//!   optional positive jitter only lengthens it). Beyond `max_wait` (default: 60 s), or past the request's
//!   [`Deadline`] (or the layer's default total timeout), the response is returned now instead
//!   of sleeping in vain. Without a server delay, [`Backoff`]: full jitter (the default), equal,
//!   decorrelated or none, base 100 ms, multiplier 2, cap 20 s, from an injectable seeded RNG.
//! - **No retry storms**: a [`RetryBudget`] shared by every clone, Finagle style (default: 20% of
//!   requests + 10 retries/s) or an AWS-style token quota (500 tokens, cost 5, refund 1). When it is
//!   spent the last response is returned and `ratewise_retry_budget_exhausted_total` counts it.
//! - **Bodies**: `B: Clone` bodies (`Full<Bytes>`, `String`, ...) are replayed directly. Wrap a
//!   streaming body in [`ReplayBody`]: it keeps what it sends up to a cap (default: 64 KiB) so that it
//!   can be replayed; over the cap it is sent once and not retried.
//! - **When retrying stops**: the caller gets the last response (not an error); a transport
//!   error after the last attempt is returned as that error.
//!
//! Every retry emits a `tracing` event (target `ratewise_retry`, fields `attempt`, `reason`,
//! `status`, `error_class`, `delay_ms`, `delay_source`) and the counters of
//! [`metric_names`](ratewise_core::metric_names) `RETRY_*`. The per-attempt counter
//! (`ratewise_retry_attempts_total`) is registered with the `metrics` recorder at a layer's
//! first request and then held, so install the recorder before sending requests.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use ratewise_retry::{Backoff, RetryLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), ratewise_retry::BoxError> {
//! let calls = Arc::new(AtomicUsize::new(0));
//! let seen = calls.clone();
//! // A flaky upstream: the first call gets 503 with Retry-After: 2, the next one succeeds.
//! let upstream = tower::service_fn(move |_request: Request<Full<Bytes>>| {
//!     let n = seen.fetch_add(1, Ordering::SeqCst);
//!     async move {
//!         let status = if n == 0 { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
//!         let response = Response::builder().status(status).header("retry-after", "2");
//!         Ok::<_, std::io::Error>(response.body(()).expect("a valid response"))
//!     }
//! });
//!
//! let client = ServiceBuilder::new()
//!     .layer(
//!         RetryLayer::builder()
//!             .max_attempts(3)
//!             .backoff(Backoff::new().base(Duration::from_millis(50)))
//!             .build()?,
//!     )
//!     .service(upstream);
//!
//! let start = tokio::time::Instant::now();
//! let response = client
//!     .oneshot(Request::get("https://api.example.com/items").body(Full::new(Bytes::new()))?)
//!     .await?;
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(calls.load(Ordering::SeqCst), 2);
//! assert_eq!(start.elapsed(), Duration::from_secs(2)); // exactly what the server asked
//! # Ok(())
//! # }
//! ```
//!
//! # Order
//!
//! In a ratewise stack the retry layer sits above the breaker, adaptation and pacing layers,
//! so that every attempt passes through them again, and below the cache and metrics layers,
//! so that a logical request is observed once. A per-attempt timeout goes below it (its
//! `Elapsed` error is classified as a retryable timeout).
//!
//! # Design notes
//!
//! - **tower's `Retry` serves**: the policy computes the delay (tower's `Backoff` yields a
//!   `Sleep`, which cannot be combined with `Retry-After`, so the delay math is ours) and
//!   returns `tokio::time::sleep_until` as the policy future. tower re-drives the inner
//!   service's readiness on a clone before each retry and drops the failed response before
//!   the backoff starts, so nothing of it is held while sleeping. The layer only adds a thin
//!   error conversion to `BoxError` and a named response future.
//! - **Failed bodies are dropped, not drained**: `Policy::retry` sees the response by
//!   reference and cannot take a body out of it (hyper's `Incoming` has no `Default` to leave
//!   in its place). hyper closes a connection whose response body was not read to the end
//!   instead of pooling it, so each retried failure costs a new connection (retries are the
//!   slow path). A stack that wants the connection back can collect short error bodies below
//!   this layer (an `and_then` or `map_future` layer that reads them into a `Full`).
//! - **Server delays are used as given**: never shortened, and only lengthened by the optional
//!   `server_delay_jitter`. AWS's 2026 rule clamps the server's delay to
//!   `[backoff, backoff + 5 s]`, which retries early whenever the server asked for more than
//!   the backoff plus 5 s; an exact `Retry-After` never does, and `max_wait` bounds it instead.
//! - **Budget**: tower's `TpsBudget` is not used; see [`RetryBudget`] for why (tower#857).
//! - **Allocation**: like every retry layer built on `Policy::clone_request`, each retryable
//!   request is copied once before it is first sent (the header map is cloned). That includes
//!   requests that are not idempotent, which a connect failure may retry; with
//!   `retry_unsent(false)` they are not copied, nor is anything when `max_attempts` is 1.
//! - **Cancellation**: dropping the response future drops the attempt and the request copy;
//!   nothing else is held.
//! - **Concurrency**: the budgets' atomics and lock are model-checked with loom
//!   (`RUSTFLAGS="--cfg loom" cargo test -p ratewise-retry --lib --release loom`).
//!
//! # Feature flags
//!
//! - `hyper-util`: [`SafeTransportErrors`] also recognises
//!   `hyper_util::client::legacy::Error::is_connect()` and hyper's canceled and
//!   incomplete-message errors. Without it, a connect failure of hyper-util's client is still
//!   recognised when its cause is a refused connection (an `io::Error` in the error's chain),
//!   but not when it is a DNS or TLS failure.
//!
//! # Supported Rust versions
//!
//! The minimum supported Rust version is the workspace's `rust-version` (1.88).
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod backoff;
mod budget;
mod classify;
pub mod error;
pub mod future;
mod layer;
mod policy;
mod replay;
mod service;
mod sync;

#[cfg(all(test, loom))]
mod loom_tests;

pub use backoff::{Backoff, Jitter};
pub use budget::RetryBudget;
pub use classify::{ClassifyError, ErrorClass, SafeTransportErrors};
pub use error::{BoxError, ConfigError};
pub use layer::{DEFAULT_STATUSES, RetryLayer, RetryLayerBuilder};
pub use policy::{HttpResponse, Idempotent, RetryPolicy};
pub use ratewise_core::Deadline;
pub use replay::{BodyNotReplayable, DEFAULT_REPLAY_CAP, ReplayBody};
pub use service::Retry;
