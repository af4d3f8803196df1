//! [`stack()`]: every enabled layer in the recommended order, with defaults, validated once.

use std::fmt;
use std::time::Duration;

use tower::layer::util::{Identity, Stack};
use tower_layer::Layer;

use crate::timeouts::{AttemptTimeoutLayer, SetDeadlineLayer};

/// The default layer of a stack position: the layer crate's `new()` when its feature is on,
/// `Identity` when it is off (so the builder has one type per feature set).
macro_rules! default_position {
    ($feature:literal, $alias:ident, $constructor:ident, $layer:ty) => {
        #[cfg(feature = $feature)]
        type $alias = $layer;
        #[cfg(not(feature = $feature))]
        type $alias = Identity;

        #[cfg(feature = $feature)]
        fn $constructor() -> $alias {
            <$layer>::new()
        }
        #[cfg(not(feature = $feature))]
        fn $constructor() -> $alias {
            Identity::new()
        }
    };
}

default_position!(
    "metrics",
    DefaultMetrics,
    default_metrics,
    ratewise_metrics::MetricsLayer
);
default_position!(
    "retry",
    DefaultRetry,
    default_retry,
    ratewise_retry::RetryLayer
);
default_position!(
    "breaker",
    DefaultBreaker,
    default_breaker,
    ratewise_breaker::CircuitBreakerLayer
);
default_position!(
    "adapt",
    DefaultAdapt,
    default_adapt,
    ratewise_adapt::AdaptLayer
);

/// The attempt timeout of [`stack()`] unless set: long enough for slow API calls (LLM
/// completions take tens of seconds), short enough that a hung connection ends.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

/// Starts a [`StackBuilder`] with the defaults: metrics, retry, circuit breaker and adaptation
/// (each when its feature is enabled) with their own defaults, no cache, no pacing (pacing
/// needs quotas: add it with [`StackBuilder::pace`]), an attempt timeout of 60 s and no total
/// deadline.
///
/// # Order
///
/// Outermost first; each position has a reason:
///
/// | layer | why here |
/// |-------|----------|
/// | cache ([`StackBuilder::cache`]) | hits and coalesced requests never spend quota, retries or breaker permits |
/// | metrics | sees what the caller sees: one observation per logical request, a total timeout included |
/// | total deadline ([`StackBuilder::total_timeout`]) | sets a [`Deadline`](ratewise_core::Deadline) that every layer below respects, and bounds the call |
/// | retry | every attempt below goes through the breaker, adaptation and pacing again |
/// | circuit breaker | fails fast before waiting for a token that would be wasted |
/// | adaptation | the server's word (headers, `Retry-After` cooldowns) before local pacing |
/// | pacing | closest to the wire: a slot is taken right before the attempt is sent |
/// | attempt timeout | one attempt on the wire, not counting waits for a slot |
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use ratewise::pace::{PaceLayer, Quota};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), ratewise::BoxError> {
/// let stack = ratewise::stack()
///     .pace(PaceLayer::new(Quota::per_second(10)?))
///     .total_timeout(Duration::from_secs(30))
///     .attempt_timeout(Duration::from_secs(10))
///     .build()?;
/// let client = ServiceBuilder::new()
///     .layer(stack)
///     .service_fn(|_request: http::Request<String>| async {
///         Ok::<_, std::convert::Infallible>(http::Response::new(String::from("ok")))
///     });
/// let response = client
///     .oneshot(http::Request::get("https://api.example.com/").body(String::new())?)
///     .await?;
/// assert_eq!(response.status(), 200);
/// # Ok(())
/// # }
/// ```
pub fn stack() -> StackBuilder {
    StackBuilder {
        cache: Identity::new(),
        metrics: default_metrics(),
        retry: default_retry(),
        breaker: default_breaker(),
        adapt: default_adapt(),
        pace: Identity::new(),
        attempt_timeout: Some(DEFAULT_ATTEMPT_TIMEOUT),
        total_timeout: None,
    }
}

/// Assembles the ratewise layers in the recommended order; see [`stack()`].
///
/// Each type parameter is one position of the stack (`Identity` when it is off): `C` cache,
/// `M` metrics, `R` retry, `B` circuit breaker, `A` adaptation, `P` pacing. Setting a layer
/// replaces the default at its position; `without_*` turns a position off.
#[must_use]
pub struct StackBuilder<
    C = Identity,
    M = DefaultMetrics,
    R = DefaultRetry,
    B = DefaultBreaker,
    A = DefaultAdapt,
    P = Identity,
> {
    cache: C,
    metrics: M,
    retry: R,
    breaker: B,
    adapt: A,
    pace: P,
    attempt_timeout: Option<Duration>,
    total_timeout: Option<Duration>,
}

impl<C, M, R, B, A, P> fmt::Debug for StackBuilder<C, M, R, B, A, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackBuilder")
            .field("cache", &std::any::type_name::<C>())
            .field("metrics", &std::any::type_name::<M>())
            .field("retry", &std::any::type_name::<R>())
            .field("breaker", &std::any::type_name::<B>())
            .field("adapt", &std::any::type_name::<A>())
            .field("pace", &std::any::type_name::<P>())
            .field("attempt_timeout", &self.attempt_timeout)
            .field("total_timeout", &self.total_timeout)
            .finish()
    }
}

impl<C, M, R, B, A, P> StackBuilder<C, M, R, B, A, P> {
    /// Puts a cache (usually a configured `ratewise::cache::CacheLayer`) at the top of the stack.
    #[cfg(feature = "cache")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
    pub fn cache<L>(self, layer: L) -> StackBuilder<L, M, R, B, A, P> {
        let StackBuilder {
            metrics,
            retry,
            breaker,
            adapt,
            pace,
            attempt_timeout,
            total_timeout,
            ..
        } = self;
        StackBuilder {
            cache: layer,
            metrics,
            retry,
            breaker,
            adapt,
            pace,
            attempt_timeout,
            total_timeout,
        }
    }

    /// Sets the metrics layer (a configured `ratewise::metrics::MetricsLayer`).
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn metrics<L>(self, layer: L) -> StackBuilder<C, L, R, B, A, P> {
        let StackBuilder {
            cache,
            retry,
            breaker,
            adapt,
            pace,
            attempt_timeout,
            total_timeout,
            ..
        } = self;
        StackBuilder {
            metrics: layer,
            cache,
            retry,
            breaker,
            adapt,
            pace,
            attempt_timeout,
            total_timeout,
        }
    }

    /// Turns the metrics position off.
    pub fn without_metrics(self) -> StackBuilder<C, Identity, R, B, A, P> {
        let StackBuilder {
            cache,
            retry,
            breaker,
            adapt,
            pace,
            attempt_timeout,
            total_timeout,
            ..
        } = self;
        StackBuilder {
            metrics: Identity::new(),
            cache,
            retry,
            breaker,
            adapt,
            pace,
            attempt_timeout,
            total_timeout,
        }
    }

    /// Sets the retry layer (a configured `ratewise::retry::RetryLayer`).
    #[cfg(feature = "retry")]
    #[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
    pub fn retry<L>(self, layer: L) -> StackBuilder<C, M, L, B, A, P> {
        let StackBuilder {
            cache,
            metrics,
            breaker,
            adapt,
            pace,
            attempt_timeout,
            total_timeout,
            ..
        } = self;
        StackBuilder {
            retry: layer,
            cache,
            metrics,
            breaker,
            adapt,
            pace,
            attempt_timeout,
            total_timeout,
        }
    }

    /// Turns the retry position off.
    pub fn without_retry(self) -> StackBuilder<C, M, Identity, B, A, P> {
        let StackBuilder {
            cache,
            metrics,
            breaker,
            adapt,
            pace,
            attempt_timeout,
            total_timeout,
            ..
        } = self;
        StackBuilder {
            retry: Identity::new(),
            cache,
            metrics,
            breaker,
            adapt,
            pace,
            attempt_timeout,
            total_timeout,
        }
    }

    /// Sets the circuit breaker (a configured `ratewise::breaker::CircuitBreakerLayer`, e.g. with another key function).
    #[cfg(feature = "breaker")]
    #[cfg_attr(docsrs, doc(cfg(feature = "breaker")))]
    pub fn breaker<L>(self, layer: L) -> StackBuilder<C, M, R, L, A, P> {
        let StackBuilder {
            cache,
            metrics,
            retry,
            adapt,
            pace,
            attempt_timeout,
            total_timeout,
            ..
        } = self;
        StackBuilder {
            breaker: layer,
            cache,
            metrics,
            retry,
            adapt,
            pace,
            attempt_timeout,
            total_timeout,
        }
    }

    /// Turns the breaker position off.
    pub fn without_breaker(self) -> StackBuilder<C, M, R, Identity, A, P> {
        let StackBuilder {
            cache,
            metrics,
            retry,
            adapt,
            pace,
            attempt_timeout,
            total_timeout,
            ..
        } = self;
        StackBuilder {
            breaker: Identity::new(),
            cache,
            metrics,
            retry,
            adapt,
            pace,
            attempt_timeout,
            total_timeout,
        }
    }

    /// Sets the adaptation layer (a configured `ratewise::adapt::AdaptLayer`).
    #[cfg(feature = "adapt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "adapt")))]
    pub fn adapt<L>(self, layer: L) -> StackBuilder<C, M, R, B, L, P> {
        let StackBuilder {
            cache,
            metrics,
            retry,
            breaker,
            pace,
            attempt_timeout,
            total_timeout,
            ..
        } = self;
        StackBuilder {
            adapt: layer,
            cache,
            metrics,
            retry,
            breaker,
            pace,
            attempt_timeout,
            total_timeout,
        }
    }

    /// Turns the adapt position off.
    pub fn without_adapt(self) -> StackBuilder<C, M, R, B, Identity, P> {
        let StackBuilder {
            cache,
            metrics,
            retry,
            breaker,
            pace,
            attempt_timeout,
            total_timeout,
            ..
        } = self;
        StackBuilder {
            adapt: Identity::new(),
            cache,
            metrics,
            retry,
            breaker,
            pace,
            attempt_timeout,
            total_timeout,
        }
    }

    /// Sets the pacing layer (a `ratewise::pace::PaceLayer` with your quotas, or one over `ratewise::redis`).
    #[cfg(feature = "pace")]
    #[cfg_attr(docsrs, doc(cfg(feature = "pace")))]
    pub fn pace<L>(self, layer: L) -> StackBuilder<C, M, R, B, A, L> {
        let StackBuilder {
            cache,
            metrics,
            retry,
            breaker,
            adapt,
            attempt_timeout,
            total_timeout,
            ..
        } = self;
        StackBuilder {
            pace: layer,
            cache,
            metrics,
            retry,
            breaker,
            adapt,
            attempt_timeout,
            total_timeout,
        }
    }

    /// The timeout of each attempt on the wire \[60 s\]; it does not count waits for a pacing
    /// slot or a cooldown.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// No attempt timeout (only the total deadline, if any, bounds an attempt).
    pub fn no_attempt_timeout(mut self) -> Self {
        self.attempt_timeout = None;
        self
    }

    /// The total time of a logical request, waits and retries included \[none\]: every request
    /// gets a [`Deadline`](ratewise_core::Deadline) (unless it has an earlier one) that the
    /// layers below respect, and fails with
    /// [`TotalTimeoutElapsed`](crate::TotalTimeoutElapsed) when it passes.
    pub fn total_timeout(mut self, timeout: Duration) -> Self {
        self.total_timeout = Some(timeout);
        self
    }

    /// Checks the configuration and freezes the stack.
    ///
    /// # Errors
    ///
    /// [`StackError`] when a timeout is zero or the attempt timeout is longer than the total
    /// timeout (an attempt could never use it all; the Polly pipeline validates the same).
    pub fn build(self) -> Result<StackLayer<C, M, R, B, A, P>, StackError> {
        if self.attempt_timeout == Some(Duration::ZERO) {
            return Err(StackError::ZeroTimeout("attempt_timeout"));
        }
        if self.total_timeout == Some(Duration::ZERO) {
            return Err(StackError::ZeroTimeout("total_timeout"));
        }
        if let (Some(attempt), Some(total)) = (self.attempt_timeout, self.total_timeout)
            && attempt > total
        {
            return Err(StackError::AttemptLongerThanTotal { attempt, total });
        }
        let layers = tower::ServiceBuilder::new()
            .layer(self.cache)
            // Metrics above the deadline: a request cut by it is an error the caller sees, and
            // must be counted as one (below it, its future would just be dropped unrecorded).
            .layer(self.metrics)
            .layer(SetDeadlineLayer::new(self.total_timeout))
            .layer(self.retry)
            .layer(self.breaker)
            .layer(self.adapt)
            .layer(self.pace)
            .layer(AttemptTimeoutLayer::new(self.attempt_timeout))
            .into_inner();
        Ok(StackLayer { layers })
    }
}

/// The nesting of [`StackLayer`]: `tower::ServiceBuilder`'s `Stack`, outermost last.
type Layers<C, M, R, B, A, P> = Stack<
    AttemptTimeoutLayer,
    Stack<P, Stack<A, Stack<B, Stack<R, Stack<SetDeadlineLayer, Stack<M, Stack<C, Identity>>>>>>>,
>;

/// The layers of a [`StackBuilder`], ready for `ServiceBuilder::layer`.
///
/// # Clone
///
/// Clones share the state of every layer (budgets, breakers, learned limits, the cache), as
/// each layer's own clones do.
#[derive(Clone)]
#[must_use]
pub struct StackLayer<C, M, R, B, A, P> {
    layers: Layers<C, M, R, B, A, P>,
}

impl<C, M, R, B, A, P> fmt::Debug for StackLayer<C, M, R, B, A, P>
where
    Layers<C, M, R, B, A, P>: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackLayer")
            .field("layers", &self.layers)
            .finish()
    }
}

impl<S, C, M, R, B, A, P> Layer<S> for StackLayer<C, M, R, B, A, P>
where
    Layers<C, M, R, B, A, P>: Layer<S>,
{
    type Service = <Layers<C, M, R, B, A, P> as Layer<S>>::Service;

    fn layer(&self, inner: S) -> Self::Service {
        self.layers.layer(inner)
    }
}

/// A [`StackBuilder`] configuration that cannot work.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StackError {
    /// A timeout was zero; the name says which.
    ZeroTimeout(&'static str),
    /// The attempt timeout was longer than the total timeout.
    AttemptLongerThanTotal {
        /// The attempt timeout.
        attempt: Duration,
        /// The total timeout.
        total: Duration,
    },
}

impl fmt::Display for StackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StackError::ZeroTimeout(name) => write!(f, "{name} must be greater than zero"),
            StackError::AttemptLongerThanTotal { attempt, total } => write!(
                f,
                "attempt_timeout ({attempt:?}) is longer than total_timeout ({total:?})"
            ),
        }
    }
}

impl std::error::Error for StackError {}
