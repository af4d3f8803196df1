//! [`RetryLayer`] and its builder.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http::{HeaderName, StatusCode};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tower::Layer;

use crate::backoff::Backoff;
use crate::budget::RetryBudget;
use crate::classify::{ClassifyError, SafeTransportErrors};
use crate::error::ConfigError;
use crate::policy::{RetryPolicy, Shared, StatusSet};
use crate::service::Retry;

/// The default retryable statuses: 408, 429, 500, 502, 503, 504.
pub const DEFAULT_STATUSES: [u16; 6] = [408, 429, 500, 502, 503, 504];

/// Retries failed HTTP requests: exponential backoff with jitter, `Retry-After` honoured
/// exactly, idempotent requests only, under a shared retry budget. See the
/// [crate docs](crate) for an example and the full semantics.
///
/// # Clone
///
/// The configuration, the retry budget and the random generator live in one `Arc` created
/// when the layer is built: cloning this layer will not create a new budget, and every
/// service it makes (and their clones) draws from the same one.
#[derive(Clone, Debug)]
#[must_use]
pub struct RetryLayer {
    shared: Arc<Shared>,
}

impl Default for RetryLayer {
    fn default() -> Self {
        RetryLayer::new()
    }
}

impl RetryLayer {
    /// The defaults: 3 attempts, full jitter (base 100 ms, cap 20 s), statuses 408, 429, 500,
    /// 502, 503, 504 and [`SafeTransportErrors`], `Idempotency-Key`, requests that are not
    /// idempotent retried only when an attempt was never sent, `max_wait` 60 s, no default
    /// total timeout, budget 20% + 10 retries/s.
    pub fn new() -> Self {
        RetryLayer::builder()
            .build()
            .expect("the default configuration is valid")
    }

    /// A builder starting from the defaults of [`RetryLayer::new`].
    pub fn builder() -> RetryLayerBuilder {
        RetryLayerBuilder::new()
    }

    /// A [`RetryPolicy`] sharing this layer's configuration and budget, to use with
    /// `tower::retry::Retry` directly (over a service whose error is a `BoxError`).
    pub fn policy(&self) -> RetryPolicy {
        RetryPolicy::new(Arc::clone(&self.shared))
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry::new(inner, self)
    }
}

/// Builds a [`RetryLayer`]; every setter consumes and returns the builder, and
/// [`build`](RetryLayerBuilder::build) validates the whole configuration.
#[must_use]
pub struct RetryLayerBuilder {
    max_attempts: u32,
    backoff: Backoff,
    statuses: Vec<u16>,
    idempotency_header: HeaderName,
    max_wait: Duration,
    server_jitter: Duration,
    total_timeout: Option<Duration>,
    classify: Box<dyn ClassifyError>,
    retry_unsent: bool,
    budget: RetryBudget,
    rng: Option<Box<dyn rand::Rng + Send>>,
}

impl fmt::Debug for RetryLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayerBuilder")
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("statuses", &self.statuses)
            .field("idempotency_header", &self.idempotency_header)
            .field("max_wait", &self.max_wait)
            .field("server_jitter", &self.server_jitter)
            .field("total_timeout", &self.total_timeout)
            .field("retry_unsent", &self.retry_unsent)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl Default for RetryLayerBuilder {
    fn default() -> Self {
        RetryLayerBuilder::new()
    }
}

impl RetryLayerBuilder {
    /// The defaults of [`RetryLayer::new`].
    pub fn new() -> Self {
        RetryLayerBuilder {
            max_attempts: 3,
            backoff: Backoff::new(),
            statuses: DEFAULT_STATUSES.to_vec(),
            idempotency_header: HeaderName::from_static("idempotency-key"),
            max_wait: Duration::from_secs(60),
            server_jitter: Duration::ZERO,
            total_timeout: None,
            classify: Box::new(SafeTransportErrors),
            retry_unsent: true,
            budget: RetryBudget::default(),
            rng: None,
        }
    }

    /// Attempts in total, the first included (default: 3); 1 disables retries.
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// The backoff when the server gives no delay (default: full jitter, 100 ms, x2, 20 s).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The retryable statuses (default: 408, 429, 500, 502, 503, 504), replacing the defaults.
    ///
    /// A 403 that the headers mark as a rate-limit refusal counts as a 429: it is retried when
    /// 429 is in the set. Leave 429 out to retry neither.
    pub fn statuses(mut self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        self.statuses = statuses.into_iter().map(|status| status.as_u16()).collect();
        self
    }

    /// The header whose presence makes a POST or PATCH retryable (default: `Idempotency-Key`).
    pub fn idempotency_header(mut self, name: HeaderName) -> Self {
        self.idempotency_header = name;
        self
    }

    /// The longest server-directed delay (`Retry-After` and the like) the layer waits for
    /// (default: 60 s); beyond it the response is returned at once.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// A uniform random delay in `[0, jitter]` added to server-directed delays (default: 0), so that
    /// callers refused together do not return together (some servers round `Retry-After`
    /// down). It is only ever added: a retry never starts before the server's instant.
    pub fn server_delay_jitter(mut self, jitter: Duration) -> Self {
        self.server_jitter = jitter;
        self
    }

    /// A total time budget per request, used when the request carries no
    /// [`Deadline`](ratewise_core::Deadline) (the earlier of the two applies) (default: none). A retry
    /// whose delay would end past it is not attempted; the last response is returned.
    pub fn total_timeout(mut self, timeout: Duration) -> Self {
        self.total_timeout = Some(timeout);
        self
    }

    /// Which transport errors are retried (default: [`SafeTransportErrors`]).
    pub fn classify_errors(mut self, classify: impl ClassifyError) -> Self {
        self.classify = Box::new(classify);
        self
    }

    /// Whether a request that is not idempotent (a POST or PATCH without an idempotency key)
    /// is retried when an attempt failed before anything was written (default: `true`).
    ///
    /// Such an attempt is retried, with the usual backoff and budget, only when the
    /// configured classifier calls its error [`ErrorClass::NotSent`](crate::ErrorClass) and
    /// the built-in rules of [`SafeTransportErrors`] agree (a refused connection, no local
    /// address left, and with the `hyper-util` feature a connect-phase client error or a
    /// request hyper gave back undispatched); any response, and any other error, ends it.
    /// This is what Envoy's `connect-failure` and `reset-before-request` conditions and
    /// hyper-util's own retry of canceled requests allow.
    ///
    /// To be able to send the request again, the layer keeps a copy of it (the header map is
    /// cloned, as for every retryable request). `false` sends such requests exactly once and
    /// copies nothing.
    pub fn retry_unsent(mut self, retry: bool) -> Self {
        self.retry_unsent = retry;
        self
    }

    /// The retry budget shared by every clone (default: 20% + 10/s).
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = budget;
        self
    }

    /// The random generator behind the jitter (default: a `SmallRng` seeded from the OS via
    /// std's `RandomState`).
    pub fn rng(mut self, rng: impl rand::Rng + Send + 'static) -> Self {
        self.rng = Some(Box::new(rng));
        self
    }

    /// A deterministic generator seeded with `seed` (for tests and simulations).
    pub fn seed(self, seed: u64) -> Self {
        self.rng(SmallRng::seed_from_u64(seed))
    }

    /// Validates the configuration and builds the layer with its shared state.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for zero attempts, an invalid backoff, a status outside 100..=599 or a
    /// server delay jitter above `max_wait`.
    pub fn build(self) -> Result<RetryLayer, ConfigError> {
        if self.max_attempts == 0 {
            return Err(ConfigError::ZeroAttempts);
        }
        self.backoff.validate()?;
        if self.server_jitter > self.max_wait {
            return Err(ConfigError::ServerJitterAboveMaxWait {
                jitter: self.server_jitter,
                max_wait: self.max_wait,
            });
        }
        let mut statuses = StatusSet::empty();
        for code in self.statuses {
            if !(100..=599).contains(&code) {
                return Err(ConfigError::InvalidStatus(code));
            }
            let status =
                StatusCode::from_u16(code).map_err(|_| ConfigError::InvalidStatus(code))?;
            statuses.insert(status);
        }
        let rng = self.rng.unwrap_or_else(|| {
            // std's RandomState is seeded from the OS; no extra dependency needed.
            let seed = std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish();
            Box::new(SmallRng::seed_from_u64(seed))
        });
        Ok(RetryLayer {
            shared: Arc::new(Shared {
                max_attempts: self.max_attempts,
                backoff: self.backoff,
                statuses,
                idempotency_header: self.idempotency_header,
                max_wait: self.max_wait,
                server_jitter: self.server_jitter,
                total_timeout: self.total_timeout,
                classify: self.classify,
                retry_unsent: self.retry_unsent,
                budget: self.budget,
                rng: Mutex::new(rng),
                attempts_counter: OnceLock::new(),
            }),
        })
    }
}
