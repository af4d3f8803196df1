//! Metrics layer and the metric names every ratewise layer records through the `metrics`
//! facade.
//!
//! # Status
//!
//! This crate is being built (see the project's issue "The ratewise stack"). It will hold
//! `MetricsLayer` (requests, attempts, status classes, 429s and latency per key, with bounded
//! labels) and the documented list of every metric name and label the layers record.
#![cfg_attr(docsrs, feature(doc_cfg))]
