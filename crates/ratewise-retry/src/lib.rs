//! HTTP retry policy for tower: backoff with jitter, `Retry-After` honoured exactly,
//! idempotency-aware, retry budgets and replayable bodies.
//!
//! # Status
//!
//! This crate is being built (see the project's issue "ratewise-retry"). It will hold
//! `RetryLayer`, a `tower::retry::Policy` for `http::Request<B>`: full-jitter exponential
//! backoff, server-directed delays that are never early and never past the request deadline,
//! retries of idempotent methods only (POST with an `Idempotency-Key`), a retry budget shared
//! across clones, and a `ReplayBody` that buffers streaming bodies up to a cap.
#![cfg_attr(docsrs, feature(doc_cfg))]
