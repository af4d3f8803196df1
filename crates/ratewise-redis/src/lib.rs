//! Distributed rate limiting on Redis for ratewise: GCRA and an exact sliding log in atomic Lua
//! scripts.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod builder;
mod connection;
mod error;
pub mod future;
mod gcra;
mod limiter;
mod policy;
mod scripts;
mod shared_impl;
mod window;

pub use builder::RedisLimiterBuilder;
pub use connection::RedisConnection;
pub use error::{ConfigError, RedisUnavailable};
pub use gcra::RedisGcra;
pub use limiter::{DecisionSource, RedisDecision};
pub use policy::FailurePolicy;
#[doc(no_inline)]
pub use ratewise_pace::{CostExceedsBurst, Decision, InvalidQuotaChain, Quota, RateLimiter};
pub use window::RedisSlidingWindow;

#[cfg(test)]
mod tests;
