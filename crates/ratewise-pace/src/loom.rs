//! The atomics of the GCRA buckets: `std`'s, or `loom`'s when built with `--cfg loom` so that
//! the model checker explores every interleaving of the hand-written compare-and-swap loops.

#[cfg(loom)]
pub(crate) use loom::sync::Mutex;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};

#[cfg(not(loom))]
pub(crate) use std::sync::Mutex;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
