//! Header-driven pacing for tower: learns the server's limits from its rate-limit headers and
//! its 429s, and shares cooldowns between every caller.
//!
//! # Status
//!
//! This crate is being built (see the project's issue "ratewise-adapt"). It will hold
//! `AdaptLayer`: per-key state learned through `ratewise-headers`, in-flight accounting so
//! concurrent callers never overspend the learned remaining quota, slow start for unknown keys,
//! shared cooldowns on 429/503 with `Retry-After`, and an AIMD/CUBIC mode (the AWS SDK adaptive
//! retry algorithm) for APIs that send no headers.
#![cfg_attr(docsrs, feature(doc_cfg))]
