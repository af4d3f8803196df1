//! GCRA pacing for tower: per-endpoint quotas, chained quotas, weighted costs, FIFO waiting.
//!
//! # Status
//!
//! This crate is being built (see the project's issue "ratewise-pace"). It will hold:
//!
//! - `Quota` (`per_second`, `per_minute`, `per_hour`, `with_period`, `burst`), validated at
//!   construction;
//! - `PaceLayer`: one shared bucket or one per key through a `KeyFn` and a `RouteTable` of
//!   chained quotas, waiting in FIFO order or failing fast past `max_wait`;
//! - the async `RateLimiter` trait with a lock-free in-memory GCRA as its default
//!   implementation, so that the Redis limiter fits behind the same layer.
#![cfg_attr(docsrs, feature(doc_cfg))]
