//! [`BoxError`] and the refusal errors every layer returns when it declines to send a request.
//!
//! # Conventions
//!
//! - Layers that add failure modes use `type Error = BoxError` and require
//!   `S::Error: Into<BoxError>`.
//! - A temporary refusal (the wait would pass `max_wait`, the circuit is open) is an error from
//!   the *response future*, never from `poll_ready`, so the service stays usable.
//! - Each refusal is a small public struct that callers downcast from the [`BoxError`]; each
//!   carries the [`Key`] it concerns and `retry_after`, the time after which the same request
//!   may pass. All of them implement [`Refusal`], and [`find_refusal`] finds one anywhere in an
//!   error's `source()` chain, so a layer above (the cache serving stale data, a metrics layer)
//!   can recognise every refusal of every layer without depending on the layer crates.
//! - Invalid configuration is rejected at construction with a typed error, never mid-request.

use std::error::Error;
use std::fmt;
use std::time::Duration;

use crate::key::Key;

/// The boxed error type of every ratewise layer, as in tower.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// A layer declined to send a request for now; the same request may pass after
/// [`retry_after`](Refusal::retry_after).
pub trait Refusal: Error + Send + Sync + 'static {
    /// The key (endpoint, host, bucket) that refused.
    fn key(&self) -> &Key;
    /// How long from the refusal until the request could pass.
    fn retry_after(&self) -> Duration;
}

macro_rules! refusal {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct $name {
            key: Key,
            retry_after: Duration,
        }

        impl $name {
            /// The refusal of `key`, which could pass after `retry_after`.
            pub fn new(key: Key, retry_after: Duration) -> Self {
                $name { key, retry_after }
            }

            /// The key that refused.
            pub fn key(&self) -> &Key {
                &self.key
            }

            /// How long from the refusal until the request could pass.
            pub fn retry_after(&self) -> Duration {
                self.retry_after
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    concat!($what, " for key `{}`; retry after {:?}"),
                    self.key, self.retry_after
                )
            }
        }

        impl Error for $name {}

        impl Refusal for $name {
            fn key(&self) -> &Key {
                &self.key
            }
            fn retry_after(&self) -> Duration {
                self.retry_after
            }
        }
    };
}

refusal!(
    /// The pacing layer (or a limiter behind it, such as Redis) would have to wait longer than
    /// its `max_wait` for this request's slot.
    PaceWaitTooLong,
    "rate limit wait exceeds max_wait"
);

refusal!(
    /// The adaptation layer would have to wait longer than its `max_wait`: the server's
    /// cooldown (`Retry-After`) or the reset of an exhausted server quota is too far away.
    AdaptWaitTooLong,
    "server-imposed wait exceeds max_wait"
);

refusal!(
    /// The circuit breaker of this key is open (or half-open with every probe slot taken).
    CircuitOpen,
    "circuit open"
);

/// The first ratewise refusal in `err` or its `source()` chain.
///
/// ```
/// use std::time::Duration;
/// use ratewise_core::{find_refusal, BoxError, CircuitOpen, Key};
///
/// let err: BoxError = Box::new(CircuitOpen::new(Key::new("api.example.com"), Duration::from_secs(30)));
/// let refusal = find_refusal(&*err).expect("a refusal");
/// assert_eq!(refusal.retry_after(), Duration::from_secs(30));
/// ```
pub fn find_refusal<'a>(err: &'a (dyn Error + 'static)) -> Option<&'a dyn Refusal> {
    let mut current: Option<&'a (dyn Error + 'static)> = Some(err);
    while let Some(err) = current {
        if let Some(refusal) = err.downcast_ref::<PaceWaitTooLong>() {
            return Some(refusal);
        }
        if let Some(refusal) = err.downcast_ref::<AdaptWaitTooLong>() {
            return Some(refusal);
        }
        if let Some(refusal) = err.downcast_ref::<CircuitOpen>() {
            return Some(refusal);
        }
        current = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(BoxError);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.pad("wrapper")
        }
    }
    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn refusals_downcast_display_and_are_found_in_chains() {
        let err: BoxError = Box::new(PaceWaitTooLong::new(
            Key::new("search"),
            Duration::from_secs(2),
        ));
        assert_eq!(
            err.to_string(),
            "rate limit wait exceeds max_wait for key `search`; retry after 2s"
        );
        let pace = err.downcast_ref::<PaceWaitTooLong>().unwrap();
        assert_eq!(pace.key().as_str(), "search");

        let wrapped = Wrapper(Box::new(AdaptWaitTooLong::new(
            Key::new("core"),
            Duration::from_millis(5),
        )));
        let found = find_refusal(&wrapped).unwrap();
        assert_eq!(found.key().as_str(), "core");
        assert_eq!(found.retry_after(), Duration::from_millis(5));

        let other: BoxError = "connection reset".into();
        assert!(find_refusal(&*other).is_none());
    }
}
