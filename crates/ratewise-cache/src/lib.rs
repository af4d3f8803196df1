//! The cheapest request is the one not sent: an RFC 9111 client cache with request
//! coalescing and stale fallbacks, and DataLoader-style batching, as tower layers.
//!
//! # Overview
//!
//! [`CacheLayer`] is a **private** (single-user-agent) HTTP cache for `http::Request` /
//! `http::Response` services such as a hyper-util client:
//!
//! - **Freshness and storability** come from [`http-cache-semantics`] (RFC 9111/7234 rules:
//!   `max-age`, `Expires`, `no-store`, `no-cache`, `private` — storable here since the cache
//!   is private —, `Vary`, request `Cache-Control`); nothing is hand-written.
//!   *Heuristic freshness is off by default* ([`CacheConfig::heuristic_freshness`]): a
//!   response without explicit freshness is stored but stale at once, so it is only
//!   revalidated or served as a fallback. `429 Too Many Requests` and every response the
//!   policy calls non-storable are never stored.
//! - **Storage** is a `moka` cache bounded by bytes ([`CacheConfig::max_bytes`], 64 MiB),
//!   weighing each entry by its body, headers and a fixed overhead; bodies larger than
//!   [`CacheConfig::max_entry_bytes`] (4 MiB) are streamed to the caller uncached, never
//!   buffered past the cap. `moka`'s own expiry (which runs on its own clock) is not used:
//!   it only bounds memory, freshness always comes from the policy.
//! - **Keys** are method + URI + a SHA-256 digest of the request headers the response's
//!   `Vary` names; requests carrying an isolation header ([`CacheConfig::isolation_headers`]:
//!   `Authorization`, `Proxy-Authorization`, `Cookie`) are keyed by a SHA-256 digest of those
//!   too, so one user's response is never served to another. Raw tokens are kept neither in
//!   keys nor in stored requests.
//! - **Revalidation**: a stale entry with `ETag`/`Last-Modified` is revalidated with
//!   `If-None-Match`/`If-Modified-Since`; a `304` refreshes the entry and the caller receives
//!   the full stored `200` ([`CacheStatus::Revalidated`]).
//! - **Coalescing**: concurrent identical cacheable requests (GET/HEAD, same key) share one
//!   upstream request, driven in a spawned task so that the leader dropping its future loses
//!   nothing for the followers ([`Cache#cancel-safety`]). Upstream errors reach every
//!   follower as a [`SharedError`]. Before the first response of a resource nobody knows its
//!   `Vary`: a follower whose request differs from the leader's in a header the response
//!   varies on does not get the leader's response, it sends its own request.
//! - **Hits** are served without re-running the policy when the entry is fresh and the
//!   request has no `Cache-Control`/`Pragma` of its own (every other case asks the policy):
//!   the stored head without its hop-by-hop fields, the origin's `Date`, and an `Age`
//!   brought up to date (RFC 9111 §4.2.3).
//! - **Degradation** (RFC 5861): `stale-while-revalidate` answers at once from a stale entry
//!   and refreshes it in the background; `stale-if-error` serves the stale entry when the
//!   upstream request fails (transport error, 500/502/503/504). In addition, when a layer
//!   below refuses (pacing or adaptation wait too long, circuit open, detected with
//!   [`ratewise_core::find_refusal`]), a stale entry is served
//!   ([`CacheConfig::stale_on_refusal`]). Stale responses carry
//!   [`CacheStatus::Stale`] with a [`StaleReason`], and a `tracing` event
//!   (`target: "ratewise::cache"`, message `serving stale response`) is emitted.
//! - **Observability**: every response carries a [`CacheStatus`] extension, and
//!   [`CACHE_REQUESTS_TOTAL`](ratewise_core::metric_names::CACHE_REQUESTS_TOTAL) counts `hit`,
//!   `miss`, `revalidated`, `stale`, `coalesced` and `uncacheable` through `metrics`.
//!
//! Requests the caller made conditional or partial (`If-None-Match`, `If-Modified-Since`,
//! `If-Match`, `If-Unmodified-Since`, `If-Range`, `Range`), requests with
//! `Cache-Control: no-store` and methods other than GET/HEAD pass through untouched
//! ([`CacheStatus::Uncacheable`]); a successful unsafe method (POST, PUT, PATCH, DELETE)
//! invalidates what is stored for its URI (RFC 9111 §4.4).
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use ratewise_cache::{CacheLayer, CacheStatus};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), ratewise_core::BoxError> {
//! // Any HTTP client service; here a stand-in that answers with a cacheable response.
//! let client = service_fn(|_req: Request<Full<Bytes>>| async {
//!     Ok::<_, ratewise_core::BoxError>(
//!         Response::builder()
//!             .header("cache-control", "max-age=60")
//!             .body(Full::new(Bytes::from_static(b"{\"login\":\"octocat\"}")))?,
//!     )
//! });
//! let service = ServiceBuilder::new().layer(CacheLayer::new()).service(client);
//!
//! let get = || Request::get("https://api.github.com/users/octocat").body(Full::default()).unwrap();
//! let first = service.clone().oneshot(get()).await?;
//! assert_eq!(first.extensions().get::<CacheStatus>(), Some(&CacheStatus::Miss));
//! let second = service.clone().oneshot(get()).await?;
//! assert_eq!(second.extensions().get::<CacheStatus>(), Some(&CacheStatus::Hit));
//! assert_eq!(second.into_body().collect().await?.to_bytes(), "{\"login\":\"octocat\"}");
//! # Ok(())
//! # }
//! ```
//!
//! # Order
//!
//! Put the cache outermost (`ratewise::stack()` does): hits and coalesced requests then never
//! spend quota, retries or breaker permits, and refusals of the layers below reach it so that
//! it can fall back to stale data.
//!
//! # Time
//!
//! `http-cache-semantics` reckons in `SystemTime`, which tokio cannot pause. The cache takes
//! one `SystemTime` when it is created and adds the time elapsed on tokio's clock
//! (`tokio::time::Instant`) since then; every age, freshness lifetime and stale window is
//! therefore measured on tokio's clock, and tests with a paused clock age stored responses
//! exactly. Dates the server sends (`Date`, `Expires`, `Last-Modified`) are compared with
//! each other by the policy, as RFC 9111 prescribes.
//!
//! # Response body
//!
//! The layer answers `Response<`[`CacheBody<B>`]`>`, where `B` is the inner body: stored and
//! shared responses are one reference-counted [`Bytes`](bytes::Bytes), the rest streams the
//! inner body unboxed (see [`CacheBody`]).
//!
//! # Batching
//!
//! [`BatchLayer`] turns a `Service<Vec<K>>` (answering any `IntoIterator<Item = (K, V)>`)
//! into a `Service<K>` answering `Option<V>`: single lookups arriving within
//! [`max_delay`](BatchConfig::max_delay) (5 ms) of the first, or up to
//! [`max_size`](BatchConfig::max_size) (100) distinct keys, go upstream as one request; each
//! caller gets its own item or `None`; duplicate keys in one window are fetched once.
//! A `Service<K>` fits `tower` better than a `load(key)` method: it composes with timeouts,
//! buffers and `ServiceExt::oneshot`, and a per-item error is just `V = Result<T, E>`.
//!
//! The seed's `GET /api/users?ids=a,b,c`:
//!
//! ```
//! use std::collections::HashMap;
//! use ratewise_cache::BatchLayer;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), ratewise_core::BoxError> {
//! // One upstream call for many ids: GET /api/users?ids=a,b,c (an HTTP client in real use).
//! let users_api = service_fn(|ids: Vec<String>| async move {
//!     let url = format!("/api/users?ids={}", ids.join(","));
//!     // ... send `url` and parse the JSON array; here every id but "ghost" exists.
//!     let _ = url;
//!     let found: HashMap<String, String> = ids
//!         .into_iter()
//!         .filter(|id| id != "ghost")
//!         .map(|id| (id.clone(), format!("user {id}")))
//!         .collect();
//!     Ok::<_, ratewise_core::BoxError>(found)
//! });
//! let users = ServiceBuilder::new().layer(BatchLayer::new()).service(users_api);
//!
//! // Three concurrent single lookups become one upstream request.
//! let (a, b, ghost) = tokio::join!(
//!     users.clone().oneshot("a".to_string()),
//!     users.clone().oneshot("b".to_string()),
//!     users.clone().oneshot("ghost".to_string()),
//! );
//! assert_eq!(a?, Some("user a".to_string()));
//! assert_eq!(b?, Some("user b".to_string()));
//! assert_eq!(ghost?, None);
//! # Ok(())
//! # }
//! ```
//!
//! # Feature flags
//!
//! None: the crate needs `tokio` (time, spawning) and `moka`'s `sync` cache.
//!
//! # Supported Rust versions
//!
//! The minimum supported Rust version is the workspace's `rust-version` (1.88).
//!
//! [`http-cache-semantics`]: https://docs.rs/http-cache-semantics
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

pub mod batch;
pub mod cache;
pub mod error;

pub use batch::{Batch, BatchConfig, BatchLayer};
pub use cache::{Cache, CacheBody, CacheConfig, CacheLayer, CacheStatus, StaleReason};
pub use error::{ConfigError, SharedError, UpstreamTaskLost};
#[doc(no_inline)]
pub use ratewise_core::{AdaptWaitTooLong, BoxError, CircuitOpen, PaceWaitTooLong, find_refusal};
