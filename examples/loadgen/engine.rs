//! The load engine shared by `examples/loadgen` (its CLI), `examples/demo.rs` and
//! `tests/loadgen.rs`: a closed loop of workers over any HTTP service, an attempt counter at the
//! bottom of the stack, the loadgen command line and its JSON report.
//!
//! Included with `#[path]` (not a library), so every item is `pub(crate)`; each includer uses a
//! part of it.

use std::fmt::Write as _;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ratewise::BoxError;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};
use tower::util::BoxCloneService;
use tower::{Layer, Service, ServiceExt};

/// The request body every worker sends: empty, and cheap to clone for retries.
pub(crate) type ReqBody = Full<Bytes>;
/// The hyper-util legacy client at the bottom of every stack.
pub(crate) type HttpClient = Client<HttpConnector, ReqBody>;
/// A whole stack as the workers see it: a request in, the final status out (the body is
/// read to the end so the connection goes back to the pool).
pub(crate) type StatusService = BoxCloneService<Request<ReqBody>, StatusCode, BoxError>;

/// A hyper-util legacy client with a pool large enough for the workers.
pub(crate) fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build_http()
}

/// Turns a response service into a [`StatusService`] that drains each body.
pub(crate) fn status_service<S, B>(service: S) -> StatusService
where
    S: Service<Request<ReqBody>, Response = Response<B>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    BoxCloneService::new(service.and_then(|response: Response<B>| async move {
        let status = response.status();
        response.into_body().collect().await.map_err(Into::into)?;
        Ok::<_, BoxError>(status)
    }))
}

// ---------------------------------------------------------------------------------------------
// Counting attempts at the bottom of the stack.

/// A request extension marking one logical request: which path it is for and how many HTTP
/// attempts it took. Retries copy the request with its extensions, so every attempt of one
/// logical request shares this tag.
#[derive(Clone, Debug)]
pub(crate) struct Tag(Arc<TagInner>);

#[derive(Debug)]
struct TagInner {
    path: usize,
    attempts: AtomicU32,
}

impl Tag {
    fn new(path: usize) -> Self {
        Tag(Arc::new(TagInner {
            path,
            attempts: AtomicU32::new(0),
        }))
    }

    fn attempts(&self) -> u32 {
        self.0.attempts.load(Ordering::Relaxed)
    }
}

/// Counters per path.
#[derive(Debug, Default)]
pub(crate) struct PathCounters {
    /// HTTP attempts.
    pub(crate) sent: AtomicU64,
    /// Attempts the server answered 429.
    pub(crate) status_429: AtomicU64,
    /// Attempts the server answered 403 (GitHub's primary-limit refusal).
    pub(crate) status_403: AtomicU64,
    /// Logical requests that ended in a 2xx.
    pub(crate) ok_2xx: AtomicU64,
    /// Logical requests that ended in anything but a 2xx or a 429 (other statuses, transport
    /// errors, refusals of a layer).
    pub(crate) other_errors: AtomicU64,
}

/// Every counter of a run, shared by the workers, the counting layer and the progress line.
#[derive(Debug)]
pub(crate) struct Counters {
    /// Per path, in the order of the plan's paths.
    pub(crate) paths: Vec<PathCounters>,
    /// Logical requests finished (with any outcome).
    pub(crate) requests: AtomicU64,
    /// Attempts beyond the first, summed over logical requests.
    pub(crate) retries: AtomicU64,
    latencies: Mutex<Vec<Duration>>,
}

impl Counters {
    pub(crate) fn new(paths: usize) -> Arc<Self> {
        Arc::new(Counters {
            paths: (0..paths).map(|_| PathCounters::default()).collect(),
            requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            latencies: Mutex::new(Vec::new()),
        })
    }

    fn sum(&self, field: impl Fn(&PathCounters) -> &AtomicU64) -> u64 {
        self.paths
            .iter()
            .map(|p| field(p).load(Ordering::Relaxed))
            .sum()
    }

    /// A consistent-enough view for progress lines and the final report.
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            sent: self.sum(|p| &p.sent),
            ok_2xx: self.sum(|p| &p.ok_2xx),
            status_429: self.sum(|p| &p.status_429),
            status_403: self.sum(|p| &p.status_403),
            other_errors: self.sum(|p| &p.other_errors),
            requests: self.requests.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }

    /// The latency of logical requests at quantile `q` (0..=1), in milliseconds.
    pub(crate) fn latency_ms(&self, q: f64) -> f64 {
        let mut latencies = self.latencies.lock().expect("latency lock").clone();
        if latencies.is_empty() {
            return 0.0;
        }
        latencies.sort_unstable();
        // Nearest rank.
        let rank = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
        latencies[rank - 1].as_secs_f64() * 1000.0
    }
}

/// Totals over every path.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) sent: u64,
    pub(crate) ok_2xx: u64,
    pub(crate) status_429: u64,
    pub(crate) status_403: u64,
    pub(crate) other_errors: u64,
    pub(crate) requests: u64,
    pub(crate) retries: u64,
}

/// Counts HTTP attempts right above the client, below every ratewise layer, so retries and
/// nothing else (no cache hit, no refusal) are counted as sent.
#[derive(Clone, Debug)]
pub(crate) struct CountingLayer {
    counters: Arc<Counters>,
}

impl CountingLayer {
    pub(crate) fn new(counters: Arc<Counters>) -> Self {
        CountingLayer { counters }
    }
}

impl<S> Layer<S> for CountingLayer {
    type Service = Counting<S>;

    fn layer(&self, inner: S) -> Counting<S> {
        Counting {
            inner,
            counters: self.counters.clone(),
        }
    }
}

/// The service of [`CountingLayer`].
#[derive(Clone, Debug)]
pub(crate) struct Counting<S> {
    inner: S,
    counters: Arc<Counters>,
}

impl<S, B> Service<Request<ReqBody>> for Counting<S>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<B>;
    type Error = BoxError;
    // An example: one box per attempt keeps it short.
    type Future = Pin<Box<dyn Future<Output = Result<Response<B>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let path = request.extensions().get::<Tag>().map(|tag| {
            tag.0.attempts.fetch_add(1, Ordering::Relaxed);
            tag.0.path
        });
        let counters = self.counters.clone();
        let slot = path.and_then(|p| counters.paths.get(p).map(|_| p));
        if let Some(p) = slot {
            counters.paths[p].sent.fetch_add(1, Ordering::Relaxed);
        }
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await.map_err(Into::into)?;
            if let Some(p) = slot {
                match response.status() {
                    StatusCode::TOO_MANY_REQUESTS => {
                        counters.paths[p].status_429.fetch_add(1, Ordering::Relaxed);
                    }
                    StatusCode::FORBIDDEN => {
                        counters.paths[p].status_403.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
            Ok(response)
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The closed loop.

/// What to run: `concurrency` workers, worker `i` sending to `paths[i % paths.len()]`, until
/// `deadline` or until `requests` logical requests have been started.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub(crate) base_url: String,
    pub(crate) paths: Vec<String>,
    pub(crate) concurrency: usize,
    pub(crate) deadline: Instant,
    pub(crate) requests: Option<u64>,
}

/// Runs `plan` over `service`, calling `progress` every `interval` with the totals so far and
/// the time since the start. At the deadline every worker is cancelled (waiting and in-flight
/// requests are dropped: the ratewise layers are cancel-safe) and the run ends. Returns the
/// run's duration.
pub(crate) async fn run(
    service: StatusService,
    plan: &Plan,
    counters: &Arc<Counters>,
    interval: Duration,
    mut progress: impl FnMut(Snapshot, Duration),
) -> Duration {
    let start = Instant::now();
    let started = Arc::new(AtomicU64::new(0));
    let mut workers = JoinSet::new();
    for i in 0..plan.concurrency {
        let index = i % plan.paths.len();
        let url = format!("{}{}", plan.base_url, plan.paths[index]);
        workers.spawn(worker(
            service.clone(),
            url,
            index,
            counters.clone(),
            started.clone(),
            plan.requests,
        ));
    }
    let mut next_tick = start + interval;
    loop {
        tokio::select! {
            joined = workers.join_next() => {
                if joined.is_none() {
                    break;
                }
            }
            () = sleep_until(plan.deadline) => {
                workers.abort_all();
                break;
            }
            () = sleep_until(next_tick) => {
                progress(counters.snapshot(), start.elapsed());
                next_tick += interval;
            }
        }
    }
    // Let the aborted workers unwind (their futures are dropped, nothing more is sent).
    while workers.join_next().await.is_some() {}
    start.elapsed()
}

async fn worker(
    service: StatusService,
    url: String,
    path: usize,
    counters: Arc<Counters>,
    started: Arc<AtomicU64>,
    limit: Option<u64>,
) {
    loop {
        if let Some(limit) = limit
            && started.fetch_add(1, Ordering::Relaxed) >= limit
        {
            return;
        }
        let tag = Tag::new(path);
        let request = Request::get(url.as_str())
            .extension(tag.clone())
            .body(ReqBody::default())
            .expect("a valid request");
        let begin = Instant::now();
        let result = service.clone().oneshot(request).await;
        let latency = begin.elapsed();
        let slot = &counters.paths[path];
        match result {
            Ok(status) if status.is_success() => {
                slot.ok_2xx.fetch_add(1, Ordering::Relaxed);
            }
            // Counted at the wire by the counting layer.
            Ok(StatusCode::TOO_MANY_REQUESTS) => {}
            Ok(_) | Err(_) => {
                slot.other_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        counters.retries.fetch_add(
            u64::from(tag.attempts().saturating_sub(1)),
            Ordering::Relaxed,
        );
        counters.requests.fetch_add(1, Ordering::Relaxed);
        counters
            .latencies
            .lock()
            .expect("latency lock")
            .push(latency);
    }
}

// ---------------------------------------------------------------------------------------------
// The loadgen command line.

/// The usage text of `loadgen --help`.
pub(crate) const USAGE: &str = "\
loadgen: a closed-loop load client for any HTTP server, with or without ratewise layers.

USAGE:
    loadgen --base-url URL --path P [--path P ...] --concurrency N --duration SECS
            [--requests N] [--rate R --burst B] [--limit PATH=RATE:BURST ...]
            --layers LIST [--max-retries N] [--redis URL] [--label TEXT] [--allow-remote]

OPTIONS:
    --base-url URL          scheme and authority, e.g. http://127.0.0.1:8080 (loopback only
                            unless --allow-remote)
    --path P                a path (with query) to request; repeat for several; worker i
                            sends to path i mod the number of paths
    --concurrency N         workers (closed loop: each sends its next request when the
                            previous one is done)
    --duration SECS         run time (fractions allowed)
    --requests N            stop after N logical requests (whichever comes first)
    --rate R --burst B      pacing quota for every path: R requests per second, burst B [1]
    --limit PATH=RATE:BURST pacing quota for one path (prefix), overriding --rate
    --layers LIST           none, or a comma list of pace,adapt,retry,breaker,cache
                            (always stacked in ratewise::stack()'s order)
    --max-retries N         retries per request when retry is on [2]
    --redis URL             pace through one Redis GCRA quota shared by every process
    --label TEXT            copied into the JSON report
    --allow-remote          allow a base URL that is not a loopback address
    --help                  this text

OUTPUT: one JSON line on stdout. sent and status_429 count HTTP attempts (what the server
saw); ok_2xx and other_errors count logical requests (what the caller got); latencies are
per logical request, waits and retries included.
";

/// The layers of `--layers`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Layers {
    pub(crate) pace: bool,
    pub(crate) adapt: bool,
    pub(crate) retry: bool,
    pub(crate) breaker: bool,
    pub(crate) cache: bool,
}

/// A per-path pacing quota from `--limit`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Limit {
    pub(crate) path: String,
    pub(crate) rate: f64,
    pub(crate) burst: u32,
}

/// The parsed command line.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Config {
    pub(crate) base_url: String,
    pub(crate) paths: Vec<String>,
    pub(crate) concurrency: usize,
    pub(crate) duration: Duration,
    pub(crate) requests: Option<u64>,
    pub(crate) rate: Option<f64>,
    pub(crate) burst: u32,
    pub(crate) limits: Vec<Limit>,
    pub(crate) layers: Layers,
    pub(crate) max_retries: u32,
    pub(crate) redis: Option<String>,
    pub(crate) label: Option<String>,
    pub(crate) allow_remote: bool,
}

/// What the command line asked for.
#[derive(Debug)]
pub(crate) enum Command {
    Help,
    Run(Config),
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{flag}: cannot read {value:?} as a number"))
}

fn positive_rate(flag: &str, value: &str) -> Result<f64, String> {
    let rate: f64 = number(flag, value)?;
    if rate.is_finite() && rate > 0.0 && rate <= 1e9 {
        Ok(rate)
    } else {
        Err(format!("{flag}: the rate must be > 0, got {value}"))
    }
}

/// Parses the arguments (without the program name).
///
/// # Errors
///
/// A message naming the flag that is missing, unknown or malformed.
pub(crate) fn parse_args<I, A>(args: I) -> Result<Command, String>
where
    I: IntoIterator<Item = A>,
    A: Into<String>,
{
    let mut args = args.into_iter().map(Into::into);
    let mut base_url = None;
    let mut paths = Vec::new();
    let mut concurrency = None;
    let mut duration = None;
    let mut requests = None;
    let mut rate = None;
    let mut burst = None;
    let mut limits = Vec::new();
    let mut layers = None;
    let mut max_retries = None;
    let mut redis = None;
    let mut label = None;
    let mut allow_remote = false;
    while let Some(flag) = args.next() {
        let (flag, inline) = match flag.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (flag, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--help" | "-h" => return Ok(Command::Help),
            "--base-url" => base_url = Some(value()?),
            "--path" => {
                let path = value()?;
                if !path.starts_with('/') {
                    return Err(format!("--path must start with '/', got {path:?}"));
                }
                paths.push(path);
            }
            "--concurrency" => {
                let n: usize = number(&flag, &value()?)?;
                if n == 0 {
                    return Err("--concurrency must be at least 1".into());
                }
                concurrency = Some(n);
            }
            "--duration" => {
                let secs: f64 = number(&flag, &value()?)?;
                duration = Some(
                    Duration::try_from_secs_f64(secs)
                        .ok()
                        .filter(|d| !d.is_zero())
                        .ok_or_else(|| format!("--duration must be > 0, got {secs}"))?,
                );
            }
            "--requests" => requests = Some(number(&flag, &value()?)?),
            "--rate" => rate = Some(positive_rate(&flag, &value()?)?),
            "--burst" => {
                let b: u32 = number(&flag, &value()?)?;
                if b == 0 {
                    return Err("--burst must be at least 1".into());
                }
                burst = Some(b);
            }
            "--limit" => {
                let spec = value()?;
                let parsed = spec.split_once('=').and_then(|(path, quota)| {
                    let (r, b) = quota.split_once(':')?;
                    Some((path.to_owned(), r.to_owned(), b.to_owned()))
                });
                let Some((path, r, b)) = parsed else {
                    return Err(format!("--limit wants PATH=RATE:BURST, got {spec:?}"));
                };
                if !path.starts_with('/') {
                    return Err(format!("--limit path must start with '/', got {path:?}"));
                }
                let burst: u32 = number("--limit burst", &b)?;
                if burst == 0 {
                    return Err("--limit burst must be at least 1".into());
                }
                limits.push(Limit {
                    path,
                    rate: positive_rate("--limit rate", &r)?,
                    burst,
                });
            }
            "--layers" => {
                let list = value()?;
                let mut chosen = Layers::default();
                if list != "none" {
                    for name in list.split(',').map(str::trim) {
                        match name {
                            "pace" => chosen.pace = true,
                            "adapt" => chosen.adapt = true,
                            "retry" => chosen.retry = true,
                            "breaker" => chosen.breaker = true,
                            "cache" => chosen.cache = true,
                            other => {
                                return Err(format!(
                                    "--layers: unknown layer {other:?} (none, or pace,adapt,retry,breaker,cache)"
                                ));
                            }
                        }
                    }
                }
                layers = Some(chosen);
            }
            "--max-retries" => max_retries = Some(number(&flag, &value()?)?),
            "--redis" => redis = Some(value()?),
            "--label" => label = Some(value()?),
            "--allow-remote" => allow_remote = true,
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    let required = |name: &str| format!("{name} is required (see --help)");
    let layers = layers.ok_or_else(|| required("--layers"))?;
    if layers.pace && rate.is_none() && limits.is_empty() {
        return Err("--layers pace needs --rate or --limit".into());
    }
    if redis.is_some() && !layers.pace {
        return Err("--redis paces: add pace to --layers".into());
    }
    if paths.is_empty() {
        return Err(required("--path"));
    }
    Ok(Command::Run(Config {
        base_url: base_url
            .ok_or_else(|| required("--base-url"))?
            .trim_end_matches('/')
            .to_owned(),
        paths,
        concurrency: concurrency.ok_or_else(|| required("--concurrency"))?,
        duration: duration.ok_or_else(|| required("--duration"))?,
        requests,
        rate,
        burst: burst.unwrap_or(1),
        limits,
        layers,
        max_retries: max_retries.unwrap_or(2),
        redis,
        label,
        allow_remote,
    }))
}

/// Refuses a base URL whose host is not a loopback address, unless `--allow-remote`: a load
/// generator pointed at someone else's API by mistake is an attack.
///
/// # Errors
///
/// When the URL cannot be read, is not `http`, or names a remote host without
/// `--allow-remote`.
pub(crate) fn check_base_url(config: &Config) -> Result<(), String> {
    let uri: Uri = config
        .base_url
        .parse()
        .map_err(|e| format!("--base-url {:?}: {e}", config.base_url))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "--base-url {:?}: only http:// is supported",
            config.base_url
        ));
    }
    let host = uri
        .host()
        .ok_or_else(|| format!("--base-url {:?} has no host", config.base_url))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback || config.allow_remote {
        Ok(())
    } else {
        Err(format!(
            "refusing to load {host}: not a loopback address (pass --allow-remote if you own it)"
        ))
    }
}

/// One pacing quota of `rate` per second with `burst`.
#[cfg(feature = "pace")]
fn quota(rate: f64, burst: u32) -> Result<ratewise::pace::Quota, String> {
    use ratewise::pace::Quota;
    // Whole rates exactly; fractional ones as `count` per `period` with millisecond grain.
    let quota = if rate.fract() == 0.0 && rate <= f64::from(u32::MAX) {
        Quota::per_second(rate as u32)
    } else {
        let per_1000s = (rate * 1000.0).round().clamp(1.0, f64::from(u32::MAX)) as u32;
        Quota::new(per_1000s, Duration::from_secs(1000))
    };
    quota
        .and_then(|q| q.burst(burst))
        .map_err(|e| format!("quota {rate}/s burst {burst}: {e}"))
}

/// The pacing layer of `config`: a route table with one bucket per `--limit` path, every other
/// path in the `--rate` bucket.
#[cfg(feature = "pace")]
fn pace_layer(
    config: &Config,
) -> Result<ratewise::pace::PaceLayer<ratewise::pace::LocalLimiter, ratewise::core::ByRoute>, String>
{
    use ratewise::core::{ByRoute, RouteTable};
    use ratewise::pace::{PaceLayer, QuotaTable};
    let mut routes = RouteTable::builder().default_bucket("default");
    let mut quotas = QuotaTable::new();
    for limit in &config.limits {
        let prefix = limit.path.split('?').next().unwrap_or(&limit.path);
        routes = routes
            .prefix(prefix, limit.path.as_str())
            .map_err(|e| format!("--limit {}: {e}", limit.path))?;
        quotas = quotas.with(limit.path.as_str(), quota(limit.rate, limit.burst)?);
    }
    if let Some(rate) = config.rate {
        quotas = quotas.default_quotas(quota(rate, config.burst)?);
    }
    Ok(PaceLayer::keyed(ByRoute(routes.build()), quotas))
}

/// Builds the service `config` asks for over `client`: the chosen layers in the order of
/// `ratewise::stack()`, over the counting layer.
///
/// Layers are picked at run time with `tower::util::Either` in each position of
/// `ratewise::stack()` (`Either::Right(Identity)` when a layer is off), so the stack keeps one
/// concrete type and its order; only the cache, which changes the response body type, is
/// chosen after draining bodies into a status.
///
/// # Errors
///
/// A message when a layer is not compiled in (cache, redis) or its configuration is invalid.
pub(crate) fn build_service(
    config: &Config,
    client: HttpClient,
    counters: Arc<Counters>,
) -> Result<StatusService, String> {
    use ratewise::adapt::AdaptLayer;
    use ratewise::breaker::CircuitBreakerLayer;
    use ratewise::retry::RetryLayer;
    use tower::layer::util::Identity;
    use tower::util::Either;

    fn pick<L>(on: bool, layer: impl FnOnce() -> L) -> Either<L, Identity> {
        if on {
            Either::Left(layer())
        } else {
            Either::Right(Identity::new())
        }
    }

    let layers = config.layers;
    let retry = if layers.retry {
        Either::Left(
            RetryLayer::builder()
                .max_attempts(config.max_retries.saturating_add(1))
                .build()
                .map_err(|e| format!("retry: {e}"))?,
        )
    } else {
        Either::Right(Identity::new())
    };
    let pace = if layers.pace {
        Either::Left(paced_limiter(config)?)
    } else {
        Either::Right(Identity::new())
    };
    let stack = ratewise::stack()
        .without_metrics()
        .retry(retry)
        .breaker(pick(layers.breaker, CircuitBreakerLayer::new))
        .adapt(pick(layers.adapt, AdaptLayer::new))
        .pace(pace)
        .attempt_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let service = stack.layer(CountingLayer::new(counters).layer(client));
    if layers.cache {
        with_cache(service)
    } else {
        Ok(status_service(service))
    }
}

#[cfg(feature = "cache")]
fn with_cache<S, B>(service: S) -> Result<StatusService, String>
where
    S: Service<Request<ReqBody>, Response = Response<B>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    Ok(status_service(
        ratewise::cache::CacheLayer::new().layer(service),
    ))
}

#[cfg(not(feature = "cache"))]
fn with_cache<S>(_service: S) -> Result<StatusService, String> {
    Err(
        "the cache layer needs the `cache` feature: cargo run --example loadgen --features cache"
            .into(),
    )
}

/// The pacing layer: local, or through Redis with `--redis`.
#[cfg(feature = "redis")]
fn paced_limiter(
    config: &Config,
) -> Result<
    tower::util::Either<
        ratewise::pace::PaceLayer<ratewise::pace::LocalLimiter, ratewise::core::ByRoute>,
        ratewise::pace::PaceLayer<ratewise::redis::RedisGcra, ratewise::core::ByRoute>,
    >,
    String,
> {
    use ratewise::redis::{RedisConnection, RedisGcra};
    let local = pace_layer(config)?;
    let Some(url) = &config.redis else {
        return Ok(tower::util::Either::Left(local));
    };
    let client = redis::Client::open(url.as_str()).map_err(|e| format!("--redis {url}: {e}"))?;
    let connection = RedisConnection::single(client).map_err(|e| format!("--redis {url}: {e}"))?;
    let limiter = RedisGcra::builder(connection)
        .prefix("ratewise-loadgen")
        .build()
        .map_err(|e| format!("--redis: {e}"))?;
    Ok(tower::util::Either::Right(local.limiter(limiter)))
}

/// The pacing layer (local only: `--redis` needs the `redis` feature).
#[cfg(not(feature = "redis"))]
fn paced_limiter(
    config: &Config,
) -> Result<ratewise::pace::PaceLayer<ratewise::pace::LocalLimiter, ratewise::core::ByRoute>, String>
{
    if config.redis.is_some() {
        return Err(
            "--redis needs the `redis` feature: cargo run --example loadgen --features redis"
                .into(),
        );
    }
    pace_layer(config)
}

/// Runs `config` to the end and returns the JSON line of the report. `progress` gets the totals every
/// second (loadgen prints them on a terminal).
///
/// # Errors
///
/// A refused base URL or an invalid layer configuration.
pub(crate) async fn run_config(
    config: &Config,
    progress: impl FnMut(Snapshot, Duration),
) -> Result<String, BoxError> {
    check_base_url(config)?;
    let counters = Counters::new(config.paths.len());
    let service = build_service(config, http_client(), counters.clone())?;
    let plan = Plan {
        base_url: config.base_url.clone(),
        paths: config.paths.clone(),
        concurrency: config.concurrency,
        deadline: Instant::now() + config.duration,
        requests: config.requests,
    };
    let elapsed = run(service, &plan, &counters, Duration::from_secs(1), progress).await;
    Ok(report(config, &counters, elapsed))
}

/// The JSON report of a run: one line, fields in the documented order.
pub(crate) fn report(config: &Config, counters: &Counters, elapsed: Duration) -> String {
    let total = counters.snapshot();
    let elapsed_s = elapsed.as_secs_f64();
    // Per distinct path, in the order of the command line (a path given twice shares one entry).
    let mut per_path: Vec<(&str, [u64; 4])> = Vec::new();
    for (path, c) in config.paths.iter().zip(&counters.paths) {
        let counts = [&c.sent, &c.ok_2xx, &c.status_429, &c.other_errors]
            .map(|counter| counter.load(Ordering::Relaxed));
        match per_path.iter_mut().find(|(p, _)| *p == path.as_str()) {
            Some((_, sums)) => sums.iter_mut().zip(counts).for_each(|(sum, n)| *sum += n),
            None => per_path.push((path.as_str(), counts)),
        }
    }
    let per_path = per_path
        .iter()
        .map(|(path, [sent, ok, limited, other])| {
            format!(
                "{}:{{\"sent\":{sent},\"ok_2xx\":{ok},\"status_429\":{limited},\"other_errors\":{other}}}",
                json(path)
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    let rate = if elapsed_s > 0.0 {
        total.ok_2xx as f64 / elapsed_s
    } else {
        0.0
    };
    format!(
        "{{\"sent\":{},\"ok_2xx\":{},\"status_429\":{},\"other_errors\":{},\"retries\":{},\
         \"requests\":{},\"elapsed_s\":{},\"achieved_ok_rate_per_s\":{},\"lat_p50_ms\":{},\
         \"lat_p99_ms\":{},\"per_path\":{{{per_path}}},\"label\":{}}}",
        total.sent,
        total.ok_2xx,
        total.status_429,
        total.other_errors,
        total.retries,
        total.requests,
        json(&round3(elapsed_s)),
        json(&round3(rate)),
        json(&round3(counters.latency_ms(0.50))),
        json(&round3(counters.latency_ms(0.99))),
        json(&config.label),
    )
}

/// One JSON value (strings escaped, floats as JSON numbers).
fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("plain values serialize")
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A one-line progress summary.
pub(crate) fn progress_line(
    name: &str,
    snapshot: Snapshot,
    elapsed: Duration,
    total: Duration,
) -> String {
    let mut line = String::new();
    let _ = write!(
        line,
        "{name:<9} {:>5.1}/{:<4.0}s  sent {:>7}  2xx {:>6}  429 {:>6}  403 {:>6}  retries {:>5}",
        elapsed.as_secs_f64().min(total.as_secs_f64()),
        total.as_secs_f64(),
        snapshot.sent,
        snapshot.ok_2xx,
        snapshot.status_429,
        snapshot.status_403,
        snapshot.retries,
    );
    line
}
