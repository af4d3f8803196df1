//! Per-key circuit breaker for tower with failure-rate windows and bounded half-open probes.
//!
//! # Status
//!
//! This crate is being built (see the project's issue "ratewise-breaker"). It will hold
//! `CircuitBreakerLayer`: per key (by host by default), count- and time-based failure-rate
//! windows, an open duration that grows on repeated trips, exactly N half-open probes that can
//! never leak or get stuck, and fast `CircuitOpen { key, retry_after }` refusals.
#![cfg_attr(docsrs, feature(doc_cfg))]
