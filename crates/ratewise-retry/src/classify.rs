//! Which transport errors are safe to retry: [`ClassifyError`] and its default
//! [`SafeTransportErrors`].

use std::error::Error;

use std::io;

/// What a transport error says about the request that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorClass {
    /// The request never left: the connection could not be made (refused, DNS, TLS), or the
    /// client dropped the request before writing it. Always safe to retry, even for a request
    /// that is not idempotent: the layer retries such a request on this class too, provided
    /// the built-in rules of [`SafeTransportErrors`] also call the error `NotSent` (so a
    /// custom classifier cannot, by mistake, make the layer send a POST twice).
    NotSent,
    /// The connection broke (reset, aborted, closed) and the request may or may not have been
    /// processed. Safe to retry only because the layer retries idempotent requests (or ones
    /// carrying an idempotency key) on it and nothing else.
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
/// connection-level rather than application-level. The first error of the chain that it
/// recognises decides: a reset reported above a refusal is a reset.
///
/// - `NotSent`, errors that only happen before a request is written:
///   `std::io::ErrorKind::ConnectionRefused` (TCP reports it only for a connection being
///   made; a connection that breaks once made reports a reset) and `AddrNotAvailable` (no
///   local address or port left to connect from); with the `hyper-util` feature,
///   `hyper_util::client::legacy::Error::is_connect()` (the connect phase failed, DNS, TCP,
///   TLS or proxy handshake included, so nothing was written) and
///   `hyper::Error::is_canceled()` (hyper gave the request back before dispatching it).
///   Without the feature, a DNS failure is an `io::Error` of another kind, which does not
///   prove anything: it is `Fatal` (`hyper-util`'s connector wraps a refused connection's
///   `io::Error` in its error's chain, so refusals are recognised either way).
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

/// Whether `error` proves that the request was never written: what the layer requires, on top
/// of the configured classifier, before it sends again a request that is not idempotent.
pub(crate) fn proves_not_sent(error: &(dyn Error + 'static)) -> bool {
    SafeTransportErrors.classify(error) == ErrorClass::NotSent
}

fn classify_one(error: &(dyn Error + 'static)) -> Option<ErrorClass> {
    if let Some(io) = error.downcast_ref::<io::Error>() {
        return match io.kind() {
            io::ErrorKind::ConnectionRefused | io::ErrorKind::AddrNotAvailable => {
                Some(ErrorClass::NotSent)
            }
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

    #[test]
    fn only_errors_of_the_connect_phase_prove_that_nothing_was_sent() {
        for kind in [
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::AddrNotAvailable,
        ] {
            assert!(proves_not_sent(&io::Error::from(kind)), "{kind:?}");
            assert!(proves_not_sent(&Wrapped(io::Error::from(kind))), "{kind:?}");
        }
        for kind in [
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::ConnectionAborted,
            io::ErrorKind::BrokenPipe,
            io::ErrorKind::UnexpectedEof,
            io::ErrorKind::TimedOut,
            // May come from an established connection (an ICMP error while sending).
            io::ErrorKind::HostUnreachable,
            io::ErrorKind::NetworkUnreachable,
            io::ErrorKind::Other,
        ] {
            assert!(!proves_not_sent(&io::Error::from(kind)), "{kind:?}");
        }
        assert!(!proves_not_sent(&tower::timeout::error::Elapsed::new()));
        // The first recognised error decides: a reset wrapping a refusal is a reset.
        let reset_over_refused = io::Error::new(
            io::ErrorKind::ConnectionReset,
            Wrapped(io::Error::from(io::ErrorKind::ConnectionRefused)),
        );
        assert!(!proves_not_sent(&reset_over_refused));
        // An unrecognised wrapper does not hide a refusal.
        let other_over_refused =
            io::Error::other(Wrapped(io::Error::from(io::ErrorKind::ConnectionRefused)));
        assert!(proves_not_sent(&other_over_refused));
    }
}
