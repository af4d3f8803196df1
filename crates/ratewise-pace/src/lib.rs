//! GCRA pacing for tower: per-endpoint quotas, chained quotas, weighted costs, FIFO waiting.
//!
//! # Overview
//!
//! - [`Quota`]: `n` requests per period with a burst, validated at construction (see its
//!   docs for the exact admission rule).
//! - [`RateLimiter`]: the async store the pacing layer asks before each request; the quotas
//!   travel with every call, so a remote limiter (`ratewise-redis`) needs no setup.
//! - [`LocalLimiter`]: the in-memory implementation, one lock-free `AtomicU64` GCRA per key
//!   and chained quota.
//!
//! # Example
//!
//! ```
//! use ratewise_core::Key;
//! use ratewise_pace::{Decision, LocalLimiter, Quota, RateLimiter};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), ratewise_core::BoxError> {
//! let limiter = LocalLimiter::new();
//! let search = [Quota::per_minute(30)?.burst(5)?];
//! let key = Key::new("search");
//! for _ in 0..5 {
//!     assert_eq!(limiter.acquire(&key, &search, 1).await?, Decision::Allowed);
//! }
//! assert!(!limiter.acquire(&key, &search, 1).await?.is_allowed());
//! # Ok(())
//! # }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod limiter;
mod local;
mod loom;
mod quota;

pub use limiter::{CostExceedsBurst, Decision, InvalidQuotaChain, MAX_CHAINED_QUOTAS, RateLimiter};
pub use local::LocalLimiter;
pub use quota::{Quota, QuotaError};
#[doc(no_inline)]
pub use ratewise_core::{BoxError, Key, PaceWaitTooLong};
