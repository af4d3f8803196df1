//! [`Deadline`]: a request extension that bounds how long any layer may hold a request.

use std::time::Duration;

use tokio::time::Instant;

/// The instant by which the caller needs a response, set as a request extension
/// (`request.extensions_mut().insert(Deadline::after(..))`).
///
/// Layers that wait read it: the retry layer does not sleep towards a retry that would start
/// after it, and the pacing and adaptation layers fail fast instead of waiting past it. A layer
/// with its own default total timeout uses the earlier of the two.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(pub Instant);

impl Deadline {
    /// A deadline `timeout` from now (tokio's clock). A timeout too large for the clock (such
    /// as `Duration::MAX`) saturates to about 30 years from now instead of panicking.
    pub fn after(timeout: Duration) -> Self {
        // About 30 years, as tokio's own "far future".
        const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);
        let now = Instant::now();
        Deadline(
            now.checked_add(timeout)
                .or_else(|| now.checked_add(FAR_FUTURE))
                .unwrap_or(now),
        )
    }

    /// The instant.
    pub fn instant(self) -> Instant {
        self.0
    }

    /// Time left until the deadline (zero once it has passed).
    pub fn remaining(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// The deadline of a request, if it carries one.
    pub fn of<B>(request: &http::Request<B>) -> Option<Self> {
        request.extensions().get::<Deadline>().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: `Instant::now() + Duration::MAX` panicked.
    #[tokio::test(start_paused = true)]
    async fn a_huge_timeout_saturates() {
        let deadline = Deadline::after(Duration::MAX);
        assert!(deadline.remaining() > Duration::from_secs(86_400 * 365 * 29));
    }

    #[tokio::test(start_paused = true)]
    async fn remaining_follows_tokio_time() {
        let deadline = Deadline::after(Duration::from_secs(5));
        let mut request = http::Request::new(());
        request.extensions_mut().insert(deadline);
        assert_eq!(Deadline::of(&request), Some(deadline));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(deadline.remaining(), Duration::from_secs(3));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(deadline.remaining(), Duration::ZERO);
    }
}
