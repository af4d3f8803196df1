//! Shared vocabulary of the ratewise layers: keys, key functions, route tables, bounded keyed
//! state and refusal errors.
//!
//! # Overview
//!
//! Every ratewise layer that keeps per-endpoint state (pacing, adaptation, circuit breaking)
//! asks a [`KeyFn`] for the [`Key`] of each request and keeps that key's state in a
//! [`KeyedState`]:
//!
//! - [`ByHost`] keys by the request's authority (the breaker's default);
//! - [`ByRoute`] keys by the bucket a [`RouteTable`] assigns to the path
//!   (`/repos/{owner}/{repo}` → `"repos"`, prefix `/search` → `"search"`);
//! - [`ByHostAndRoute`] keys by both; [`Global`] puts every request in one bucket;
//! - any closure `Fn(&http::request::Parts) -> Key` works too.
//!
//! A [`Deadline`] request extension bounds how long any layer may hold a request, and
//! [`metric_names`] lists every metric the layers record.
//!
//! Refusals (a wait longer than `max_wait`, an open circuit) are small structs returned inside
//! a [`BoxError`]; see [`error`] for the conventions and [`find_refusal`].
//!
//! # Example
//!
//! ```
//! use ratewise_core::{ByRoute, Key, KeyFn, KeyedState, KeyedStateConfig, RouteTable};
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let routes = RouteTable::builder()
//!     .route("/repos/{owner}/{repo}", "repos")?
//!     .prefix("/search", "search")?
//!     .build();
//! let key_fn = ByRoute(routes);
//! let counters: KeyedState<AtomicU64> = KeyedState::new(KeyedStateConfig::new().max_keys(1000))?;
//!
//! let request = http::Request::get("https://api.github.com/search/code?q=tower").body(())?;
//! let (key, _request) = key_fn.key_of(request);
//! counters.with_or_insert(&key, || AtomicU64::new(0), |n| n.fetch_add(1, Ordering::Relaxed));
//! assert_eq!(key, Key::new("search"));
//! # Ok(())
//! # }
//! ```
//!
//! # Supported Rust versions
//!
//! The minimum supported Rust version is the workspace's `rust-version` (1.88).
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod deadline;
pub mod error;
mod key;
mod keyed;
mod macros;
pub mod metric_names;
mod route;

pub use deadline::Deadline;
#[doc(inline)]
pub use error::{AdaptWaitTooLong, BoxError, CircuitOpen, PaceWaitTooLong, Refusal, find_refusal};
pub use key::{ByHost, ByHostAndRoute, ByRoute, Global, Key, KeyFn, with_request_host};
pub use keyed::{KeyedState, KeyedStateConfig, KeyedStateError};
pub use route::{RouteError, RouteTable, RouteTableBuilder};
