//! Errors of the cache and batch layers.
//!
//! # Conventions
//!
//! Both layers use `type Error = BoxError`. One upstream failure can be the answer of many
//! callers (a coalesced cache miss, a whole batch), but a [`BoxError`] is not `Clone`, so each
//! of those callers receives a [`SharedError`]: a cheap handle to the one upstream error, shared
//! through an `Arc`. Its [`source`](std::error::Error::source) is the upstream error itself, so
//! [`find_refusal`](ratewise_core::find_refusal) and any walk of the `source()` chain still see
//! the original (for example a [`CircuitOpen`](ratewise_core::CircuitOpen)), and
//! [`SharedError::get_ref`] gives direct access for `downcast_ref`.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use ratewise_core::BoxError;

/// One upstream error delivered to every caller that waited on the same upstream request.
///
/// # Clone
///
/// Cloning is cheap: clones share the one upstream error.
#[derive(Clone, Debug)]
pub struct SharedError {
    inner: Arc<BoxError>,
}

impl SharedError {
    pub(crate) fn new(inner: BoxError) -> Self {
        SharedError {
            inner: Arc::new(inner),
        }
    }

    /// The upstream error, for `downcast_ref`.
    pub fn get_ref(&self) -> &(dyn Error + Send + Sync + 'static) {
        &**self.inner
    }
}

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self.inner, f)
    }
}

impl Error for SharedError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&**self.inner)
    }
}

/// Invalid configuration of a [`CacheLayer`](crate::CacheLayer) or
/// [`BatchLayer`](crate::BatchLayer), rejected at construction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    message: &'static str,
}

impl ConfigError {
    pub(crate) const fn new(message: &'static str) -> Self {
        ConfigError { message }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}", self.message)
    }
}

impl Error for ConfigError {}

/// The task driving a shared upstream request ended without an answer (the runtime shut
/// down, or the upstream future panicked).
#[derive(Clone, Debug, Default)]
pub struct UpstreamTaskLost;

impl fmt::Display for UpstreamTaskLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the task driving the shared upstream request ended without an answer")
    }
}

impl Error for UpstreamTaskLost {}

#[cfg(test)]
mod tests {
    use super::*;
    use ratewise_core::{CircuitOpen, Key, find_refusal};
    use std::time::Duration;

    #[test]
    fn shared_error_keeps_the_refusal_visible() {
        let err = SharedError::new(Box::new(CircuitOpen::new(
            Key::new("h"),
            Duration::from_secs(3),
        )));
        let boxed: BoxError = Box::new(err.clone());
        let refusal = find_refusal(&*boxed).expect("refusal in chain");
        assert_eq!(refusal.retry_after(), Duration::from_secs(3));
        assert!(err.get_ref().downcast_ref::<CircuitOpen>().is_some());
        assert_eq!(err.to_string(), boxed.to_string());
    }
}
