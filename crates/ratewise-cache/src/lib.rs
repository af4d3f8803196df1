//! RFC 9111 client cache, request coalescing, stale-if-error and DataLoader-style batching for
//! tower.
//!
//! # Status
//!
//! This crate is being built (see the project's issue "ratewise-cache"). It will hold
//! `CacheLayer` (freshness through `http-cache-semantics`, storage bounded by bytes in `moka`,
//! revalidation with `If-None-Match`/`If-Modified-Since`, coalescing of identical requests,
//! `stale-if-error`, `stale-while-revalidate` and serving stale data when the layers below
//! refuse) and `BatchLayer`, which turns a `Service<Vec<K>>` into a `Service<K>`.
#![cfg_attr(docsrs, feature(doc_cfg))]
