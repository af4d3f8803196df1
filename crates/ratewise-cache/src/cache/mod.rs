//! The HTTP cache: [`CacheLayer`], [`Cache`] and their types.

mod body;
mod config;
pub mod future;
mod key;
mod layer;
mod service;
mod status;
mod store;

pub use body::CacheBody;
pub use config::CacheConfig;
pub use layer::CacheLayer;
pub use service::Cache;
pub use status::{CacheStatus, StaleReason};
