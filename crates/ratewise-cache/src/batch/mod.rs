//! DataLoader-style batching: [`BatchLayer`] turns a `Service<Vec<K>>` into a `Service<K>`.

pub mod future;
mod layer;
mod service;

pub use layer::{BatchConfig, BatchLayer};
pub use service::Batch;
