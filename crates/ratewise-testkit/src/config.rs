//! Configuration: [`MockConfig`], [`EndpointConfig`] and the pieces they hold.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::StatusCode;

/// The default wall-clock instant of `t0`: 2026-01-01T00:00:00Z.
///
/// Fixed so that epoch headers and `Date` are deterministic in tests.
pub const DEFAULT_WALL_CLOCK_START_SECS: u64 = 1_767_225_600;

/// The configuration of a [`MockApi`](crate::MockApi): endpoints, an optional shared quota and
/// the log capacity. Builder methods consume `self`.
///
/// # Clone
///
/// A plain value; cloning it copies the configuration.
#[derive(Clone, Debug)]
#[must_use]
pub struct MockConfig {
    pub(crate) endpoints: Vec<EndpointConfig>,
    pub(crate) shared_quotas: Vec<Quota>,
    pub(crate) default_status: StatusCode,
    pub(crate) log_capacity: usize,
    pub(crate) wall_clock_start: SystemTime,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl MockConfig {
    /// An API with no endpoints (every path answers 404), a log of 1 000 000 entries and the
    /// wall clock starting at [`DEFAULT_WALL_CLOCK_START_SECS`].
    pub fn new() -> Self {
        MockConfig {
            endpoints: Vec::new(),
            shared_quotas: Vec::new(),
            default_status: StatusCode::OK,
            log_capacity: 1_000_000,
            wall_clock_start: UNIX_EPOCH + Duration::from_secs(DEFAULT_WALL_CLOCK_START_SECS),
        }
    }

    /// Adds an endpoint. A request goes to the endpoint with the longest matching prefix.
    pub fn endpoint(mut self, endpoint: EndpointConfig) -> Self {
        self.endpoints.push(endpoint);
        self
    }

    /// Adds a quota shared by every endpoint (on top of each endpoint's own quotas). Several
    /// calls chain: all shared quotas must pass. Requests to unknown paths (404) do not use it.
    pub fn shared_quota(mut self, quota: Quota) -> Self {
        self.shared_quotas.push(quota);
        self
    }

    /// The status of an admitted request (default 200 OK).
    pub fn default_status(mut self, status: StatusCode) -> Self {
        self.default_status = status;
        self
    }

    /// The most entries the request log keeps; older entries are dropped and counted in
    /// [`Stats::dropped_log_entries`](crate::Stats::dropped_log_entries). Default 1 000 000.
    pub fn log_capacity(mut self, capacity: usize) -> Self {
        self.log_capacity = capacity;
        self
    }

    /// The wall-clock time of `t0` (the tokio instant at which the [`MockApi`](crate::MockApi)
    /// was created). Epoch headers and `Date` are this plus the tokio time elapsed since `t0`.
    /// Default: [`DEFAULT_WALL_CLOCK_START_SECS`] after the Unix epoch.
    pub fn wall_clock_start(mut self, start: SystemTime) -> Self {
        self.wall_clock_start = start;
        self
    }
}

/// One endpoint: a path prefix with its quotas, header dialect, faults and cache headers.
///
/// The prefix matches on a segment boundary: `/repos` matches `/repos`, `/repos/a` and
/// `/repos?x=1` but not `/reposx`. `/` matches everything. The longest matching prefix wins.
#[derive(Clone, Debug)]
#[must_use]
pub struct EndpointConfig {
    pub(crate) prefix: String,
    pub(crate) quotas: Vec<Quota>,
    pub(crate) dialect: Dialect,
    pub(crate) retry_after: RetryAfterFormat,
    pub(crate) limited_status: StatusCode,
    pub(crate) latency: Latency,
    pub(crate) faults: Faults,
    pub(crate) outages: Vec<Outage>,
    pub(crate) cache: Option<CacheHeaders>,
    pub(crate) resource: Option<String>,
    pub(crate) penalty: Option<Penalty>,
}

impl EndpointConfig {
    /// An endpoint at `prefix` with no quota, no headers, no faults.
    pub fn new(prefix: impl Into<String>) -> Self {
        let mut prefix = prefix.into();
        while prefix.len() > 1 && prefix.ends_with('/') {
            prefix.pop();
        }
        if !prefix.starts_with('/') {
            prefix.insert(0, '/');
        }
        EndpointConfig {
            prefix,
            quotas: Vec::new(),
            dialect: Dialect::None,
            retry_after: RetryAfterFormat::Seconds,
            limited_status: StatusCode::TOO_MANY_REQUESTS,
            latency: Latency::None,
            faults: Faults::new(),
            outages: Vec::new(),
            cache: None,
            resource: None,
            penalty: None,
        }
    }

    /// Adds a quota. Several calls chain: a request is admitted only if every quota admits it,
    /// and only then does it consume from each of them.
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quotas.push(quota);
        self
    }

    /// The rate-limit header dialect of the responses (default [`Dialect::None`]).
    pub fn dialect(mut self, dialect: Dialect) -> Self {
        self.dialect = dialect;
        self
    }

    /// How `Retry-After` is written on refused responses (default seconds).
    pub fn retry_after(mut self, format: RetryAfterFormat) -> Self {
        self.retry_after = format;
        self
    }

    /// The status of a refused request (default 429; GitHub also uses 403).
    pub fn limited_status(mut self, status: StatusCode) -> Self {
        self.limited_status = status;
        self
    }

    /// The resource name for GitHub's `x-ratelimit-resource` and Discord's bucket, when the
    /// quota itself has no [`name`](Quota::name). Default: `core` for GitHub, a name derived
    /// from the prefix for Discord.
    pub fn resource(mut self, name: impl Into<String>) -> Self {
        self.resource = Some(name.into());
        self
    }

    /// A fixed latency added to every response of this endpoint (tokio sleep).
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = Latency::Fixed(latency);
        self
    }

    /// A latency drawn uniformly from `[min, max]` with the endpoint's seeded RNG (see
    /// [`Faults::seed`]).
    pub fn latency_uniform(mut self, min: Duration, max: Duration) -> Self {
        let (min, max) = if min <= max { (min, max) } else { (max, min) };
        self.latency = Latency::Uniform(min, max);
        self
    }

    /// Fault injection for this endpoint.
    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Adds an outage window.
    pub fn outage(mut self, outage: Outage) -> Self {
        self.outages.push(outage);
        self
    }

    /// Punishes clients that keep calling while refused (default: no penalty, refusals cost
    /// nothing). See [`Penalty`].
    pub fn penalty(mut self, penalty: Penalty) -> Self {
        self.penalty = Some(penalty);
        self
    }

    /// Sends `ETag` / `Last-Modified` / `Cache-Control` and answers matching conditional
    /// requests with 304.
    pub fn cache(mut self, cache: CacheHeaders) -> Self {
        self.cache = Some(cache);
        self
    }
}

/// What an endpoint does to a client that keeps calling while it is refused.
///
/// Real APIs punish it: Cloudflare's API blocks every call for 5 minutes once its limit is
/// exceeded, GitHub warns that requests made while rate limited lead to secondary limits and
/// bans, Discord bans an IP after 10 000 invalid requests in 10 minutes. Without a penalty the
/// mock charges nothing for a refusal, so a client that hammers through refusals still gets
/// every window in full.
///
/// # Semantics of [`Penalty::block_after`]`(n, within, block_for)`
///
/// Instants are the tokio instants of arrival, per endpoint (quotas shared between endpoints
/// do not share the penalty).
///
/// - The block starts at the *quota refusal* (step 4 of [`MockApi`](crate::MockApi)'s
///   decision) at `t` that makes `n` quota refusals in `(t - within, t]`. That `n`-th
///   refusal is still logged as [`Reason::Limited`](crate::Reason::Limited), but its
///   `Retry-After` already announces the block (the longer of the quota's wait and
///   `block_for`).
/// - The block covers `[t, t + block_for)`: every request to the endpoint that arrives in it
///   (outages aside) is refused with the endpoint's limited status, `Retry-After` = the time
///   left in the block, the rate-limit headers of the moment, consumes no quota, and is logged
///   as [`Reason::Blocked`](crate::Reason::Blocked). Conditional requests get no free 304.
/// - Requests during a block do **not** extend it and do not count toward the next one (a
///   fixed-length block, like Cloudflare's): the refusal count restarts empty when a block
///   starts. At `t + block_for` exactly, requests are judged by the quotas again.
///
/// `n = 0` is treated as 1 (the first refusal blocks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct Penalty {
    pub(crate) refusals: u64,
    pub(crate) within: Duration,
    pub(crate) block_for: Duration,
}

impl Penalty {
    /// After `refusals` quota refusals within `within`, refuse everything for `block_for`
    /// (see the type docs for the exact semantics).
    pub fn block_after(refusals: u64, within: Duration, block_for: Duration) -> Self {
        Penalty {
            refusals: refusals.max(1),
            within,
            block_for,
        }
    }

    /// The number of quota refusals that starts a block.
    pub fn refusals(&self) -> u64 {
        self.refusals
    }

    /// The span in which those refusals must fall.
    pub fn within(&self) -> Duration {
        self.within
    }

    /// The length of a block.
    pub fn block_for(&self) -> Duration {
        self.block_for
    }
}

/// The algorithm of a [`Quota`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// Windows `[t0 + k·period, t0 + (k+1)·period)` aligned to the clock from `t0`; at most
    /// `limit` requests are admitted in each.
    FixedWindow,
    /// A window of `period` starts at the first request that arrives after the previous
    /// window expired (express-rate-limit's memory store); at most `limit` per window.
    FixedWindowFromFirst,
    /// A strict rolling window: a request at `t` is admitted if fewer than `limit` admitted
    /// requests arrived in `(t - period, t]`. Stores at most `limit` instants.
    SlidingLog,
    /// The generic cell rate algorithm with nginx `limit_req ... burst=b nodelay` semantics:
    /// emission interval `T = period / limit`; a request at `t` is admitted iff
    /// `TAT - t <= burst·T`, and then `TAT = max(TAT, t) + T`.
    ///
    /// So from an idle state `burst + 1` requests pass back to back, then one every `T`.
    /// `burst = 0` means requests must be at least `T` apart.
    Gcra {
        /// The number of requests admitted on top of the first one when idle.
        burst: u64,
    },
}

/// A quota: at most `limit` requests per `period` under an [`Algorithm`].
///
/// # What the headers report
///
/// - fixed windows: limit = `limit`; remaining = what is left in the current window; reset =
///   the end of the current window (for [`Algorithm::FixedWindowFromFirst`] with no window
///   open: remaining = limit, reset = period).
/// - sliding log: limit = `limit`; remaining = `limit` minus the admitted requests in
///   `(now - period, now]`; reset = when all of those have left the window (quota fully
///   restored).
/// - GCRA: limit = `burst + 1` (what the bucket holds) and window = `(burst + 1)·T`, so
///   limit / window is the rate; remaining = how many more requests would pass right now;
///   reset = `TAT - now`, the time until the bucket is full again.
///
/// On a refusal, `Retry-After` is instead the time until this request would be admitted
/// (window end, oldest entry leaving the log, or `TAT - burst·T`), rounded up.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct Quota {
    pub(crate) limit: u64,
    pub(crate) period: Duration,
    pub(crate) algorithm: Algorithm,
    pub(crate) name: Option<String>,
    pub(crate) hidden: bool,
    pub(crate) charge_refusals: bool,
}

impl Quota {
    fn with(limit: u64, period: Duration, algorithm: Algorithm) -> Self {
        // A zero period would divide by zero; a nanosecond is the smallest meaningful one.
        let period = period.max(Duration::from_nanos(1));
        Quota {
            limit,
            period,
            algorithm,
            name: None,
            hidden: false,
            charge_refusals: false,
        }
    }

    /// GCRA at `rate` requests per `period` with `burst` extra requests (nginx `limit_req`
    /// semantics, see [`Algorithm::Gcra`]). A `rate` of 0 refuses everything.
    pub fn gcra(rate: u64, period: Duration, burst: u64) -> Self {
        Self::with(rate, period, Algorithm::Gcra { burst })
    }

    /// Fixed windows aligned to the clock from `t0`.
    pub fn fixed_window(limit: u64, period: Duration) -> Self {
        Self::with(limit, period, Algorithm::FixedWindow)
    }

    /// Fixed windows that start at the first request after the previous window expired.
    pub fn fixed_window_from_first(limit: u64, period: Duration) -> Self {
        Self::with(limit, period, Algorithm::FixedWindowFromFirst)
    }

    /// A strict rolling window.
    pub fn sliding_log(limit: u64, period: Duration) -> Self {
        Self::with(limit, period, Algorithm::SlidingLog)
    }

    /// The policy name used in headers (draft-8 item names, GitHub's resource, Discord's
    /// bucket). Default: generated as `"{limit}-in-{window}s"`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Enforce this quota without reporting it in any header, like GitHub's secondary limits:
    /// a refusal by a hidden quota carries `Retry-After` while the headers may still show
    /// `remaining > 0`.
    pub fn hidden(mut self) -> Self {
        self.hidden = true;
        self
    }

    /// Charge refused requests to this quota where it has room, like OpenAI, whose unsuccessful
    /// requests count against the per-minute limit (default: a refused request consumes
    /// nothing).
    ///
    /// When another quota of the request refuses it (step 4 of
    /// [`MockApi`](crate::MockApi)'s decision), this quota still consumes one unit if it
    /// would have admitted the request; a quota that is full itself is not charged (no debt).
    /// Such a request stays a refusal: it is not [`counted`](crate::LoggedRequest::counted).
    /// Requests refused by a [`Penalty`] block are never charged.
    pub fn charge_refusals(mut self) -> Self {
        self.charge_refusals = true;
        self
    }

    /// The number of requests per period (the rate for GCRA).
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The limit reported in headers (see the type docs).
    pub fn header_limit(&self) -> u64 {
        match self.algorithm {
            Algorithm::Gcra { burst } => burst.saturating_add(1),
            _ => self.limit,
        }
    }

    /// The window reported in policy headers: the period, or `(burst + 1)·T` for GCRA.
    pub fn header_window(&self) -> Duration {
        match self.algorithm {
            Algorithm::Gcra { burst } if self.limit > 0 => {
                let nanos = self.period.as_nanos().saturating_mul(u128::from(burst) + 1)
                    / u128::from(self.limit);
                Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
            }
            _ => self.period,
        }
    }
}

/// The rate-limit header dialect an endpoint speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Dialect {
    /// No rate-limit headers (only `Retry-After` on refusals, per [`RetryAfterFormat`]).
    #[default]
    None,
    /// GitHub REST: `x-ratelimit-limit`, `-remaining`, `-used`, `-reset` (epoch seconds,
    /// rounded up), `-resource`.
    GitHub,
    /// IETF draft-08..10: `RateLimit: "name";r=R;t=T` and `RateLimit-Policy:
    /// "name";q=Q;w=W`, one list member per quota (t and w in seconds, rounded up).
    Draft8,
    /// IETF draft-07: `RateLimit: limit=L, remaining=R, reset=T` (the most restrictive quota)
    /// and `RateLimit-Policy: Q;w=W, ...`.
    Draft7,
    /// `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (epoch seconds,
    /// rounded up).
    LegacyXRateLimit,
    /// OpenAI: `x-ratelimit-limit-requests`, `x-ratelimit-remaining-requests`,
    /// `x-ratelimit-reset-requests` as a Go duration (`6m0s`, `1s`, `12ms`), rounded up to the
    /// millisecond.
    OpenAi,
    /// Discord: `X-RateLimit-Limit`, `-Remaining`, `-Reset` (epoch, float with milliseconds),
    /// `-Reset-After` (float seconds), `-Bucket`; on refusals `X-RateLimit-Scope` (`user`, or
    /// `global` with `X-RateLimit-Global: true` when a shared quota refused) and a JSON body
    /// with `retry_after`.
    Discord,
}

/// How `Retry-After` is written on refused responses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RetryAfterFormat {
    /// Delay in whole seconds, rounded up (never early).
    #[default]
    Seconds,
    /// An IMF-fixdate, rounded up to the next whole second.
    HttpDate,
    /// No `Retry-After`.
    Omit,
}

/// Latency added to responses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Latency {
    #[default]
    None,
    Fixed(Duration),
    Uniform(Duration, Duration),
}

/// Fault injection: error statuses and connection resets, at random (seeded) or every n-th
/// request.
///
/// Faults apply to requests the quotas admitted, and those requests consume quota (the server
/// accepted them, then failed). Random draws use a xoshiro256++ RNG seeded with
/// [`seed`](Faults::seed) (default 0), one per endpoint, so a run is reproducible as long as
/// the requests arrive in the same order.
#[derive(Clone, Debug, Default, PartialEq)]
#[must_use]
pub struct Faults {
    pub(crate) random: Vec<(f64, FaultKind)>,
    pub(crate) every: Vec<(u64, FaultKind)>,
    pub(crate) seed: u64,
    pub(crate) retry_after: Option<Duration>,
}

/// What an injected fault does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FaultKind {
    Status(StatusCode),
    Reset,
}

impl Faults {
    /// No faults.
    pub fn new() -> Self {
        Faults::default()
    }

    /// Fails a random fraction `rate` (0..=1) of admitted requests with `status`. Several calls
    /// add up (one draw per request picks at most one fault).
    pub fn error_rate(mut self, rate: f64, status: StatusCode) -> Self {
        self.random
            .push((clamp_rate(rate), FaultKind::Status(status)));
        self
    }

    /// Fails every `n`-th admitted request (the n-th, 2n-th, ...) with `status`. Deterministic.
    pub fn error_every(mut self, n: u64, status: StatusCode) -> Self {
        self.every.push((n.max(1), FaultKind::Status(status)));
        self
    }

    /// Resets the connection for a random fraction `rate` of admitted requests (server mode: the
    /// TCP connection is closed with RST and no response; in process: the response future fails
    /// with [`ConnectionReset`](crate::ConnectionReset)).
    pub fn reset_rate(mut self, rate: f64) -> Self {
        self.random.push((clamp_rate(rate), FaultKind::Reset));
        self
    }

    /// Resets the connection on every `n`-th admitted request.
    pub fn reset_every(mut self, n: u64) -> Self {
        self.every.push((n.max(1), FaultKind::Reset));
        self
    }

    /// Send `Retry-After` (whole seconds, rounded up) on injected error statuses, as a server
    /// shedding load with 503 would.
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// The RNG seed for random faults and uniform latency.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

fn clamp_rate(rate: f64) -> f64 {
    if rate.is_nan() {
        0.0
    } else {
        rate.clamp(0.0, 1.0)
    }
}

/// An outage: every request to the endpoint in `[from, until)` (measured from `t0`) fails with
/// 503 (the default) or a connection reset. Requests in an outage consume no quota.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct Outage {
    pub(crate) from: Duration,
    pub(crate) until: Duration,
    pub(crate) reset: bool,
    pub(crate) status: StatusCode,
    pub(crate) retry_after: bool,
}

impl Outage {
    /// An outage over `[from, until)` after `t0`, answering 503.
    pub fn new(from: Duration, until: Duration) -> Self {
        Outage {
            from,
            until,
            reset: false,
            status: StatusCode::SERVICE_UNAVAILABLE,
            retry_after: false,
        }
    }

    /// Fail with a connection reset instead of a status (an error in process).
    pub fn reset(mut self) -> Self {
        self.reset = true;
        self
    }

    /// Fail with `status` instead of 503.
    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Send `Retry-After` (seconds until the outage ends, rounded up) on outage responses.
    pub fn with_retry_after(mut self) -> Self {
        self.retry_after = true;
        self
    }

    pub(crate) fn contains(&self, since_start: Duration) -> bool {
        self.from <= since_start && since_start < self.until
    }
}

/// Cache validators and freshness on an endpoint's successful responses.
///
/// The resource behind each path has a version that changes every
/// [`change_every`](CacheHeaders::change_every) (never, by default). The `ETag` is derived from
/// the path and the version, `Last-Modified` is the wall-clock time the version started
/// (whole seconds). A GET or HEAD whose `If-None-Match` matches the current ETag (weak
/// comparison, `*` matches) or, without `If-None-Match`, whose `If-Modified-Since` is not
/// before `Last-Modified`, gets `304 Not Modified`.
///
/// A 304 does not consume quota by default (GitHub's behaviour); see
/// [`not_modified_consumes_quota`](CacheHeaders::not_modified_consumes_quota).
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct CacheHeaders {
    pub(crate) max_age: Option<Duration>,
    pub(crate) etag: bool,
    pub(crate) last_modified: bool,
    pub(crate) change_every: Option<Duration>,
    pub(crate) not_modified_consumes_quota: bool,
    pub(crate) private: bool,
}

impl Default for CacheHeaders {
    fn default() -> Self {
        Self::new()
    }
}

impl CacheHeaders {
    /// ETag and Last-Modified on, no `Cache-Control` max-age, resource never changes.
    pub fn new() -> Self {
        CacheHeaders {
            max_age: None,
            etag: true,
            last_modified: true,
            change_every: None,
            not_modified_consumes_quota: false,
            private: false,
        }
    }

    /// `Cache-Control: max-age=N` (seconds, rounded down); without it `Cache-Control: no-cache`.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// Send `ETag` (and honour `If-None-Match`).
    pub fn etag(mut self, on: bool) -> Self {
        self.etag = on;
        self
    }

    /// Send `Last-Modified` (and honour `If-Modified-Since`).
    pub fn last_modified(mut self, on: bool) -> Self {
        self.last_modified = on;
        self
    }

    /// The resource changes (new ETag, new Last-Modified, new body) every `interval` from `t0`.
    pub fn change_every(mut self, interval: Duration) -> Self {
        self.change_every = Some(interval.max(Duration::from_millis(1)));
        self
    }

    /// Whether a 304 consumes quota like any other request (default false, as GitHub).
    pub fn not_modified_consumes_quota(mut self, consumes: bool) -> Self {
        self.not_modified_consumes_quota = consumes;
        self
    }

    /// Mark responses `private` in `Cache-Control`.
    pub fn private(mut self, private: bool) -> Self {
        self.private = private;
        self
    }
}
