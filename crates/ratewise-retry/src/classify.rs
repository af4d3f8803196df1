//! Which transport errors are safe to retry: [`ClassifyError`] and its default
//! [`SafeTransportErrors`].

use std::error::Error;

use std::io;

/// What a transport error says about the request that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorClass {
    /// The request never left: the connection could not be made (refused, DNS, TLS), or the
    /// client dropped the request before writing it. Always safe to retry.
    NotSent,
    /// The connection broke (reset, aborted, closed) and the request may or may not have been
    /// processed. Safe to retry only because the layer retries idempotent requests (or ones
    /// carrying an idempotency key) and nothing else.
    ConnectionLost,
    /// The attempt timed out (a per-attempt timeout below this layer). Retried; the token
    /// quota charges it double.
    Timeout,
    /// Anything else: returned to the caller as is.
    Fatal,
}

/// Classifies a transport error of the inner service.
///
/// Implemented by [`SafeTransportErrors`] (the default), by `()` (never retry an error) and by
/// closures `Fn(&(dyn Error + 'static)) -> ErrorClass`.
///
/// ```
/// use ratewise_retry::{ErrorClass, RetryLayer};
///
/// // Retry only errors whose message says the pool was closed; a toy rule.
/// let layer = RetryLayer::builder()
///     .classify_errors(|error: &(dyn std::error::Error + 'static)| {
///         if error.to_string().contains("pool closed") {
///             ErrorClass::NotSent
///         } else {
///             ErrorClass::Fatal
///         }
///     })
///     .build()
///     .unwrap();
/// # let _ = layer;
/// ```
pub trait ClassifyError: Send + Sync + 'static {
    /// The class of `error` (the inner service's error, converted to a `BoxError`).
    fn classify(&self, error: &(dyn Error + 'static)) -> ErrorClass;
}

impl ClassifyError for () {
    fn classify(&self, _error: &(dyn Error + 'static)) -> ErrorClass {
        ErrorClass::Fatal
    }
}

impl<F> ClassifyError for F
where
    F: Fn(&(dyn Error + 'static)) -> ErrorClass + Send + Sync + 'static,
{
    fn classify(&self, error: &(dyn Error + 'static)) -> ErrorClass {
        self(error)
    }
}

/// The default error classifier: walks the `source()` chain and retries errors that are
/// connection-level rather than application-level.
///
/// - `NotSent`: `std::io::ErrorKind::ConnectionRefused`; with the `hyper-util` feature,
///   `hyper_util::client::legacy::Error::is_connect()` (the connect phase failed, so nothing
///   was written) and `hyper::Error::is_canceled()` (dropped before dispatch).
/// - `ConnectionLost`: `ConnectionReset`, `ConnectionAborted`, `BrokenPipe`, `NotConnected`,
///   `UnexpectedEof`; with `hyper-util`, `hyper::Error::is_incomplete_message()`.
/// - `Timeout`: `io::ErrorKind::TimedOut` and `tower::timeout::error::Elapsed`.
/// - everything else is `Fatal`, including the refusals of lower ratewise layers
///   (`PaceWaitTooLong`, `AdaptWaitTooLong`, `CircuitOpen`): they already say that waiting is
///   not worth it, so retrying them at once would only spin.
#[derive(Clone, Copy, Debug, Default)]
pub struct SafeTransportErrors;

impl ClassifyError for SafeTransportErrors {
    fn classify(&self, error: &(dyn Error + 'static)) -> ErrorClass {
        let mut current = Some(error);
        while let Some(error) = current {
            if let Some(class) = classify_one(error) {
                return class;
            }
            current = error.source();
        }
        ErrorClass::Fatal
    }
}

fn classify_one(error: &(dyn Error + 'static)) -> Option<ErrorClass> {
    if let Some(io) = error.downcast_ref::<io::Error>() {
        return match io.kind() {
            io::ErrorKind::ConnectionRefused => Some(ErrorClass::NotSent),
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::NotConnected
            | io::ErrorKind::UnexpectedEof => Some(ErrorClass::ConnectionLost),
            io::ErrorKind::TimedOut => Some(ErrorClass::Timeout),
            // An io::Error may wrap a more specific error; keep walking.
            _ => None,
        };
    }
    if error.is::<tower::timeout::error::Elapsed>() {
        return Some(ErrorClass::Timeout);
    }
    #[cfg(feature = "hyper-util")]
    {
        if let Some(client) = error.downcast_ref::<hyper_util::client::legacy::Error>()
            && client.is_connect()
        {
            return Some(ErrorClass::NotSent);
        }
        if let Some(hyper) = error.downcast_ref::<hyper::Error>() {
            if hyper.is_canceled() {
                return Some(ErrorClass::NotSent);
            }
            if hyper.is_incomplete_message() {
                return Some(ErrorClass::ConnectionLost);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    #[derive(Debug)]
    struct Wrapped(io::Error);
    impl fmt::Display for Wrapped {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.pad("client error")
        }
    }
    impl Error for Wrapped {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn default_classification_walks_the_chain() {
        let classify = SafeTransportErrors;
        let refused = Wrapped(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(classify.classify(&refused), ErrorClass::NotSent);
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(classify.classify(&reset), ErrorClass::ConnectionLost);
        let timeout = tower::timeout::error::Elapsed::new();
        assert_eq!(classify.classify(&timeout), ErrorClass::Timeout);
        let other = io::Error::other("bad certificate");
        assert_eq!(classify.classify(&other), ErrorClass::Fatal);
        assert_eq!(().classify(&reset), ErrorClass::Fatal);
    }
}
