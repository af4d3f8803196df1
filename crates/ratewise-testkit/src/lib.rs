//! MockApi: a rate-limited HTTP API simulator for tests, in process (virtual time) or on
//! loopback.
//!
//! # Overview
//!
//! [`MockApi`] answers HTTP requests like a rate-limited API would:
//!
//! - **endpoints** by path prefix ([`EndpointConfig`]), each with [`Quota`]s enforced exactly:
//!   fixed windows aligned to the clock or opened by the first request, a strict sliding log,
//!   or GCRA with nginx `limit_req` semantics (see [`Algorithm`]); several quotas chain, and
//!   [`MockConfig::shared_quota`] adds quotas shared by every endpoint. A refused request
//!   consumes no quota;
//! - **headers** in a [`Dialect`] (none, GitHub, IETF draft-8 and draft-7, legacy
//!   `X-RateLimit-*`, OpenAI Go durations, Discord), `Retry-After` on refusals
//!   ([`RetryAfterFormat`]) and a `Date` header on every response. Epoch values are
//!   [`MockConfig::wall_clock_start`] plus the tokio time since `t0`, so they are deterministic;
//! - **faults** ([`Faults`]: error statuses and connection resets at a seeded random rate or
//!   every n-th request), **latency** (fixed or uniform) and **outages** ([`Outage`]);
//! - **cache validators** ([`CacheHeaders`]: `ETag`, `Last-Modified`, `Cache-Control`, 304 on
//!   matching conditional requests, by default without consuming quota);
//! - a bounded **log** of every request ([`LoggedRequest`]) with helpers such as
//!   [`MockApi::max_in_window`] ("no 60 s window held more than 100 admitted requests") and
//!   [`MockApi::count_status`], plus cumulative [`Stats`].
//!
//! It runs two ways with the same configuration and state: as an in-process
//! `tower::Service<http::Request<B>>` on tokio's clock (paused-time tests are exact and
//! instant), and as a loopback HTTP/1.1 server ([`MockApi::serve`], hyper 1 on `127.0.0.1`
//! with an ephemeral port) for tests with a real client.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//!
//! use http::{Request, StatusCode};
//! use http_body_util::Empty;
//! use bytes::Bytes;
//! use ratewise_testkit::{Dialect, EndpointConfig, MockApi, MockConfig, Quota};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), ratewise_core::BoxError> {
//! // 10 requests per second, burst 1: two back to back, then one every 100 ms.
//! let api = MockApi::new(
//!     MockConfig::new().endpoint(
//!         EndpointConfig::new("/repos")
//!             .quota(Quota::gcra(10, Duration::from_secs(1), 1))
//!             .dialect(Dialect::GitHub),
//!     ),
//! );
//! let service = ServiceBuilder::new().service(api.clone());
//!
//! let get = || Request::get("/repos/tokio-rs/tower").body(Empty::<Bytes>::new()).unwrap();
//! assert_eq!(service.clone().oneshot(get()).await?.status(), StatusCode::OK);
//! assert_eq!(service.clone().oneshot(get()).await?.status(), StatusCode::OK);
//! let refused = service.clone().oneshot(get()).await?;
//! assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
//! assert_eq!(refused.headers()["retry-after"], "1"); // 100 ms, rounded up
//!
//! tokio::time::sleep(Duration::from_millis(100)).await; // virtual time
//! assert_eq!(service.clone().oneshot(get()).await?.status(), StatusCode::OK);
//!
//! assert_eq!(api.count_status(StatusCode::TOO_MANY_REQUESTS), 1);
//! assert_eq!(api.max_in_window("/repos", Duration::from_millis(100)), 2);
//! # Ok(())
//! # }
//! ```
//!
//! # Exactness
//!
//! Quotas use integer nanoseconds since `t0` (GCRA scales time by the rate, so `period /
//! rate` is never rounded). Arrival times are read under the state lock, so the log is in
//! arrival order and quota decisions see a monotonic clock. Header values that must not make
//! a client early are rounded up: delta seconds, epoch seconds, `Retry-After`, and Go
//! durations / Discord floats at millisecond precision.
//!
//! # Performance
//!
//! Per request: a linear scan of the endpoint prefixes, amortised O(1) quota work (the sliding
//! log stores at most `limit` instants per quota) and one log push under a mutex; the log is a
//! bounded ring ([`MockConfig::log_capacity`]), and [`MockApi::drain`] empties it. Queries such
//! as [`MockApi::max_in_window`] scan the log once.
//!
//! # Design notes
//!
//! DESIGN.md asks for per-endpoint quotas; per-client keys (by token) are not modelled because
//! the ratewise layers act for one client. The in-process service reads the body before
//! deciding, so the arrival instant of a request is its first poll after the body completed
//! (immediately for `Full`/`Empty` bodies).
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod api;
mod config;
mod headers;
mod log;
mod quota;
mod server;

pub use api::{ConnectionReset, MockApi, ResponseFuture};
pub use config::{
    Algorithm, CacheHeaders, DEFAULT_WALL_CLOCK_START_SECS, Dialect, EndpointConfig, Faults,
    MockConfig, Outage, Penalty, Quota, RetryAfterFormat,
};
pub use headers::go_duration;
pub use log::{LoggedRequest, Outcome, Reason, Stats};
pub use server::MockServer;
