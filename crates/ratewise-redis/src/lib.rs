//! Distributed rate limiting on Redis for ratewise: GCRA and an exact sliding log in atomic Lua
//! scripts.
//!
//! # Status
//!
//! This crate is being built (see the project's issue "ratewise-redis"). It will hold
//! `RedisGcra` and `RedisSlidingWindow`, implementations of the pace crate's `RateLimiter` that
//! decide in one Lua script and one round trip with Redis' own clock, hash-tagged keys for Redis
//! Cluster, shared cooldowns, and a failure policy (local fallback, fail open, fail closed) for
//! when Redis is slow or down.
#![cfg_attr(docsrs, feature(doc_cfg))]
