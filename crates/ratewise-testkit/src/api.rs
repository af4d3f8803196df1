//! [`MockApi`]: the shared state, the per-request decision and the tower `Service`.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{
    CACHE_CONTROL, CONTENT_TYPE, DATE, ETAG, HeaderMap, HeaderValue, IF_MODIFIED_SINCE,
    IF_NONE_MATCH, LAST_MODIFIED,
};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use ratewise_core::BoxError;
use tokio::time::Instant;

use crate::config::{CacheHeaders, Dialect, EndpointConfig, FaultKind, Latency, MockConfig, Quota};
use crate::headers::{
    QuotaView, RefusalInfo, ceil_secs, discord_body, write_rate_limit_headers, write_retry_after,
};
use crate::log::{self, Log, LoggedRequest, Outcome, Reason, Stats};
use crate::quota::QuotaState;

/// The error of a request whose connection the mock reset (an injected fault, or an outage
/// configured with [`Outage::reset`](crate::Outage::reset)). In server mode the client sees
/// the TCP connection closed with RST instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionReset(());

impl fmt::Display for ConnectionReset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("connection reset by mock api")
    }
}

impl std::error::Error for ConnectionReset {}

/// A simulated rate-limited HTTP API.
///
/// Create it with [`MockApi::new`]; `t0`, the origin of fixed windows, outages and epoch
/// headers, is the tokio instant of that call. Use it as a `tower::Service` (in process, on
/// tokio's clock, so paused-time tests are exact) or [`serve`](MockApi::serve) it on loopback.
/// Both share the same state and log.
///
/// # Per request
///
/// At arrival (once the body is read) and under one lock, in this order:
///
/// 1. no endpoint matches: 404, no quota;
/// 2. an [`Outage`](crate::Outage) covers the instant: 503 (or a reset), no quota;
///    then, if the endpoint's [`Penalty`](crate::Penalty) block covers the instant: the
///    limited status with `Retry-After` until the block ends, no quota;
/// 3. a conditional GET/HEAD matches the [`CacheHeaders`] validators and 304s do not consume
///    quota: 304, no quota;
/// 4. any quota (the endpoint's, then the shared ones) refuses: the limited status (429 by
///    default) with `Retry-After`, no quota consumed except by quotas that
///    [`charge_refusals`](crate::Quota::charge_refusals) (this refusal may start a
///    [`Penalty`](crate::Penalty) block);
/// 5. the request consumes one unit from every quota; an injected fault may then fail it;
///    otherwise 304 (conditional match) or the default status.
///
/// The answer is then delayed by the endpoint's latency.
///
/// # Clone
///
/// Clones share the state (an `Arc`): quotas, RNGs and the log.
///
/// # Cancel safety
///
/// Dropping the response future before the body has been read leaves no trace. Once the
/// request has arrived it is logged and has consumed quota, exactly as a real server that
/// received it; dropping the future during the latency sleep only drops the answer.
#[derive(Clone)]
pub struct MockApi {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for MockApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockApi")
            .field("endpoints", &self.inner.config.endpoints.len())
            .field("t0", &self.inner.t0)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    config: MockConfig,
    t0: Instant,
    /// Header names of each endpoint's quotas followed by the shared quotas.
    names: Vec<Vec<String>>,
    state: Mutex<State>,
}

struct State {
    endpoints: Vec<EndpointState>,
    shared: Vec<QuotaState>,
    log: Log,
}

struct EndpointState {
    quotas: Vec<QuotaState>,
    rng: Xoshiro256PlusPlus,
    admitted: u64,
    penalty: PenaltyState,
}

/// The [`Penalty`](crate::Penalty) bookkeeping of one endpoint (nanoseconds since `t0`).
#[derive(Default)]
struct PenaltyState {
    /// Quota refusals in the penalty's window, oldest first; never more than `refusals`.
    refusals: VecDeque<u64>,
    /// The end (exclusive) of the current or last block.
    blocked_until: Option<u64>,
}

/// When a request arrived, in the clocks the answer needs.
#[derive(Clone, Copy)]
struct Arrival {
    head: bool,
    now_ns: u64,
    since_start: Duration,
    wall_now: SystemTime,
}

/// The decided answer, before the latency.
struct Plan {
    result: Result<Response<Full<Bytes>>, ConnectionReset>,
    latency: Duration,
}

fn default_name(quota: &Quota, endpoint: &EndpointConfig, shared: bool) -> String {
    if let Some(name) = &quota.name {
        return name.clone();
    }
    let generated = || {
        let base = format!(
            "{}-in-{}s",
            quota.header_limit(),
            ceil_secs(quota.header_window()).max(1)
        );
        if shared {
            format!("{base}-shared")
        } else {
            base
        }
    };
    if shared {
        return match endpoint.dialect {
            Dialect::GitHub | Dialect::Discord => "shared".to_owned(),
            _ => generated(),
        };
    }
    match endpoint.dialect {
        Dialect::GitHub => endpoint
            .resource
            .clone()
            .unwrap_or_else(|| "core".to_owned()),
        Dialect::Discord => endpoint
            .resource
            .clone()
            .unwrap_or_else(|| format!("{:016x}", fnv1a(endpoint.prefix.as_bytes()))),
        _ => generated(),
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn path_matches(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path == prefix
        || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

fn nanos_since(t0: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(t0).as_nanos()).unwrap_or(u64::MAX)
}

/// Request headers kept in the log.
const LOGGED_HEADERS: &[&str] = &[
    "if-none-match",
    "if-modified-since",
    "idempotency-key",
    "x-request-id",
    "user-agent",
    "retry-attempt",
    "x-retry-attempt",
];

fn headers_of_interest(headers: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::new();
    for name in LOGGED_HEADERS {
        for value in headers.get_all(*name) {
            kept.append(*name, value.clone());
        }
    }
    if headers.contains_key(http::header::AUTHORIZATION) {
        kept.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("present"),
        );
    }
    kept
}

fn json_response(status: StatusCode, body: String, head: bool) -> Response<Full<Bytes>> {
    let body = if head {
        Bytes::new()
    } else {
        Bytes::from(body)
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn empty_response(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// The validators of the resource at `path` at `since_start`.
struct Validators {
    version: u64,
    etag: String,
    last_modified: SystemTime,
}

fn validators(
    cache: &CacheHeaders,
    path: &str,
    since_start: Duration,
    wall_start: SystemTime,
) -> Validators {
    let (version, changed_at) = match cache.change_every {
        Some(interval) => {
            let version = u64::try_from(since_start.as_nanos() / interval.as_nanos().max(1))
                .unwrap_or(u64::MAX);
            let changed_at = interval
                .checked_mul(u32::try_from(version).unwrap_or(u32::MAX))
                .unwrap_or(since_start);
            (version, changed_at)
        }
        None => (0, Duration::ZERO),
    };
    let mut key = path.as_bytes().to_vec();
    key.extend_from_slice(&version.to_le_bytes());
    let wall = wall_start + changed_at;
    // HTTP dates have whole seconds; truncate so If-Modified-Since round-trips.
    let secs = wall
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    Validators {
        version,
        etag: format!("\"{:016x}\"", fnv1a(&key)),
        last_modified: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
    }
}

fn conditional_matches(cache: &CacheHeaders, validators: &Validators, headers: &HeaderMap) -> bool {
    if let Some(inm) = headers.get(IF_NONE_MATCH) {
        let Ok(inm) = inm.to_str() else {
            return false;
        };
        return inm.split(',').map(str::trim).any(|tag| {
            tag == "*" || (cache.etag && tag.trim_start_matches("W/") == validators.etag)
        });
    }
    if cache.last_modified
        && let Some(ims) = headers.get(IF_MODIFIED_SINCE)
        && let Ok(ims) = ims.to_str()
        && let Ok(ims) = httpdate::parse_http_date(ims)
    {
        return ims >= validators.last_modified;
    }
    false
}

fn write_cache_headers(headers: &mut HeaderMap, cache: &CacheHeaders, validators: &Validators) {
    if cache.etag
        && let Ok(value) = HeaderValue::try_from(validators.etag.as_str())
    {
        headers.insert(ETAG, value);
    }
    if cache.last_modified
        && let Ok(value) = HeaderValue::try_from(httpdate::fmt_http_date(validators.last_modified))
    {
        headers.insert(LAST_MODIFIED, value);
    }
    let visibility = if cache.private { "private" } else { "public" };
    let control = match cache.max_age {
        Some(max_age) => format!("{visibility}, max-age={}", max_age.as_secs()),
        None => format!("{visibility}, no-cache"),
    };
    if let Ok(value) = HeaderValue::try_from(control) {
        headers.insert(CACHE_CONTROL, value);
    }
}

impl MockApi {
    /// Creates the mock; `t0` is `tokio::time::Instant::now()` (create it inside the runtime
    /// whose clock the test controls, e.g. after `start_paused = true`).
    pub fn new(config: MockConfig) -> Self {
        let names = config
            .endpoints
            .iter()
            .map(|endpoint| {
                endpoint
                    .quotas
                    .iter()
                    .map(|q| default_name(q, endpoint, false))
                    .chain(
                        config
                            .shared_quotas
                            .iter()
                            .map(|q| default_name(q, endpoint, true)),
                    )
                    .collect()
            })
            .collect();
        let state = State {
            endpoints: config
                .endpoints
                .iter()
                .map(|endpoint| EndpointState {
                    quotas: endpoint.quotas.iter().map(QuotaState::new).collect(),
                    rng: Xoshiro256PlusPlus::seed_from_u64(endpoint.faults.seed),
                    admitted: 0,
                    penalty: PenaltyState::default(),
                })
                .collect(),
            shared: config.shared_quotas.iter().map(QuotaState::new).collect(),
            log: Log::new(config.log_capacity),
        };
        MockApi {
            inner: Arc::new(Inner {
                t0: Instant::now(),
                names,
                state: Mutex::new(state),
                config,
            }),
        }
    }

    /// The tokio instant the mock was created at.
    pub fn t0(&self) -> Instant {
        self.inner.t0
    }

    /// The wall-clock time the mock reports at tokio instant `at` (`wall_clock_start + (at -
    /// t0)`).
    pub fn wall_clock_at(&self, at: Instant) -> SystemTime {
        self.inner.config.wall_clock_start + at.saturating_duration_since(self.inner.t0)
    }

    /// The configuration.
    pub fn config(&self) -> &MockConfig {
        &self.inner.config
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated in a way that
        // matters to a test double; keep serving.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers one request at its arrival (everything but the latency sleep), and logs it.
    fn decide(
        &self,
        method: &Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Plan {
        let inner = &*self.inner;
        let config = &inner.config;
        let head = method == Method::HEAD;
        let path = path_and_query.split('?').next().unwrap_or(path_and_query);
        let endpoint_index = config
            .endpoints
            .iter()
            .enumerate()
            .filter(|(_, e)| path_matches(path, &e.prefix))
            .max_by_key(|(_, e)| e.prefix.len())
            .map(|(i, _)| i);

        let mut guard = self.lock();
        let state = &mut *guard;
        let now = Instant::now();
        let since_start = now.saturating_duration_since(inner.t0);
        let now_ns = nanos_since(inner.t0, now);
        let wall_now = config.wall_clock_start + since_start;

        let mut entry = LoggedRequest {
            at: now,
            since_start,
            method: method.clone(),
            path: path_and_query.to_owned(),
            endpoint: None,
            status: StatusCode::NOT_FOUND,
            outcome: Outcome::Responded,
            reason: Reason::NotFound,
            counted: false,
            headers: headers_of_interest(headers),
            body_len: body.len(),
            body,
            latency: Duration::ZERO,
        };

        let plan = match endpoint_index {
            None => Plan {
                result: Ok(json_response(
                    StatusCode::NOT_FOUND,
                    "{\"message\": \"Not Found\"}".to_owned(),
                    head,
                )),
                latency: Duration::ZERO,
            },
            Some(index) => {
                let endpoint = &config.endpoints[index];
                entry.endpoint = Some(endpoint.prefix.clone());
                let ep_state = &mut state.endpoints[index];
                let latency = match endpoint.latency {
                    Latency::None => Duration::ZERO,
                    Latency::Fixed(d) => d,
                    Latency::Uniform(min, max) => {
                        let span = u64::try_from((max - min).as_nanos()).unwrap_or(u64::MAX);
                        min + Duration::from_nanos(ep_state.rng.random_range(0..=span))
                    }
                };
                entry.latency = latency;
                let result = self.answer(
                    index,
                    ep_state,
                    &mut state.shared,
                    &mut entry,
                    headers,
                    Arrival {
                        head,
                        now_ns,
                        since_start,
                        wall_now,
                    },
                );
                Plan { result, latency }
            }
        };
        entry.status = match &plan.result {
            Ok(response) => response.status(),
            Err(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        if plan.result.is_err() {
            entry.outcome = Outcome::ConnectionReset;
        }
        state.log.push(entry);
        drop(guard);

        let result = plan.result.map(|mut response| {
            if let Ok(date) = HeaderValue::try_from(httpdate::fmt_http_date(wall_now)) {
                response.headers_mut().insert(DATE, date);
            }
            response
        });
        Plan {
            result,
            latency: plan.latency,
        }
    }

    fn answer(
        &self,
        index: usize,
        ep_state: &mut EndpointState,
        shared: &mut [QuotaState],
        entry: &mut LoggedRequest,
        headers: &HeaderMap,
        arrival: Arrival,
    ) -> Result<Response<Full<Bytes>>, ConnectionReset> {
        let Arrival {
            head,
            now_ns,
            since_start,
            wall_now,
        } = arrival;
        let config = &self.inner.config;
        let endpoint = &config.endpoints[index];
        let names = &self.inner.names[index];

        // 2. Outages: no quota.
        if let Some(outage) = endpoint.outages.iter().find(|o| o.contains(since_start)) {
            entry.reason = Reason::Outage;
            if outage.reset {
                return Err(ConnectionReset(()));
            }
            let mut response =
                json_response(outage.status, "{\"message\": \"outage\"}".to_owned(), head);
            if outage.retry_after {
                write_retry_after(
                    response.headers_mut(),
                    crate::RetryAfterFormat::Seconds,
                    wall_now,
                    outage.until.saturating_sub(since_start),
                );
            }
            return Ok(response);
        }

        let all_quotas = || endpoint.quotas.iter().chain(config.shared_quotas.iter());
        let n_own = endpoint.quotas.len();
        for (quota, state) in endpoint.quotas.iter().zip(ep_state.quotas.iter_mut()) {
            state.roll(quota, now_ns);
        }
        for (quota, state) in config.shared_quotas.iter().zip(shared.iter_mut()) {
            state.roll(quota, now_ns);
        }
        let views = |ep_state: &EndpointState, shared: &[QuotaState]| -> Vec<QuotaStatusView> {
            all_quotas()
                .zip(ep_state.quotas.iter().chain(shared.iter()))
                .enumerate()
                .map(|(i, (quota, state))| QuotaStatusView {
                    index: i,
                    window: quota.header_window(),
                    status: state.status(quota, now_ns),
                    hidden: quota.hidden,
                })
                .collect()
        };
        let write_limits = |response: &mut Response<Full<Bytes>>,
                            list: &[QuotaStatusView],
                            refusal: Option<RefusalInfo>| {
            let quota_views: Vec<QuotaView<'_>> = list
                .iter()
                .filter(|v| !v.hidden)
                .map(|v| QuotaView {
                    name: &names[v.index],
                    window: v.window,
                    status: v.status,
                })
                .collect();
            write_rate_limit_headers(
                response.headers_mut(),
                endpoint.dialect,
                &quota_views,
                wall_now,
                refusal,
            );
        };

        // 2b. A penalty block refuses everything, even requests that would get a free 304.
        if let Some(until) = ep_state.penalty.blocked_until
            && now_ns < until
        {
            entry.reason = Reason::Blocked;
            let wait = Duration::from_nanos(until - now_ns);
            return Ok(limited_response(LimitedResponse {
                endpoint,
                head,
                wait,
                global: false,
                wall_now,
                write_limits: &|response| write_limits(response, &views(ep_state, shared), None),
            }));
        }

        // 3. Conditional requests.
        let is_get = entry.method == Method::GET || entry.method == Method::HEAD;
        let cache = endpoint.cache.as_ref();
        let validators =
            cache.map(|c| validators(c, entry.path.as_str(), since_start, config.wall_clock_start));
        let not_modified = match (cache, &validators) {
            (Some(c), Some(v)) if is_get => conditional_matches(c, v, headers),
            _ => false,
        };
        let not_modified_response = |list: &[QuotaStatusView]| {
            let mut response = empty_response(StatusCode::NOT_MODIFIED);
            if let (Some(c), Some(v)) = (cache, &validators) {
                write_cache_headers(response.headers_mut(), c, v);
            }
            write_limits(&mut response, list, None);
            response
        };
        if not_modified && cache.is_some_and(|c| !c.not_modified_consumes_quota) {
            entry.reason = Reason::NotModified;
            return Ok(not_modified_response(&views(ep_state, shared)));
        }

        // 4. Quotas: refuse without consuming.
        let mut wait = Duration::ZERO;
        let mut global = false;
        for (i, (quota, state)) in all_quotas()
            .zip(ep_state.quotas.iter().chain(shared.iter()))
            .enumerate()
        {
            if let Some(w) = state.check(quota, now_ns) {
                wait = wait.max(w);
                global |= i >= n_own;
            }
        }
        if !wait.is_zero() {
            entry.reason = Reason::Limited;
            // OpenAI style: quotas that charge refusals consume where they have room.
            for (quota, state) in
                all_quotas().zip(ep_state.quotas.iter_mut().chain(shared.iter_mut()))
            {
                if quota.charge_refusals && state.check(quota, now_ns).is_none() {
                    state.consume(quota, now_ns);
                }
            }
            if let Some(penalty) = endpoint.penalty {
                let refusals = &mut ep_state.penalty.refusals;
                let within = u64::try_from(penalty.within.as_nanos()).unwrap_or(u64::MAX);
                // A refusal at `r` counts while `r > now - within`.
                while refusals
                    .front()
                    .is_some_and(|&r| now_ns >= r.saturating_add(within))
                {
                    refusals.pop_front();
                }
                refusals.push_back(now_ns);
                if refusals.len() as u64 >= penalty.refusals {
                    refusals.clear();
                    let block = u64::try_from(penalty.block_for.as_nanos()).unwrap_or(u64::MAX);
                    ep_state.penalty.blocked_until = Some(now_ns.saturating_add(block));
                    wait = wait.max(penalty.block_for);
                }
            }
            let refusal = RefusalInfo { global };
            return Ok(limited_response(LimitedResponse {
                endpoint,
                head,
                wait,
                global,
                wall_now,
                write_limits: &|response| {
                    write_limits(response, &views(ep_state, shared), Some(refusal))
                },
            }));
        }

        // 5. Admitted: consume everywhere.
        for (quota, state) in endpoint.quotas.iter().zip(ep_state.quotas.iter_mut()) {
            state.consume(quota, now_ns);
        }
        for (quota, state) in config.shared_quotas.iter().zip(shared.iter_mut()) {
            state.consume(quota, now_ns);
        }
        entry.counted = true;
        ep_state.admitted += 1;
        let list = views(ep_state, shared);

        // Faults on admitted requests: every-n first, then one random draw.
        let faults = &endpoint.faults;
        let draw: Option<f64> = (!faults.random.is_empty()).then(|| ep_state.rng.random::<f64>());
        let fault = faults
            .every
            .iter()
            .find(|(n, _)| ep_state.admitted.is_multiple_of(*n))
            .map(|(_, kind)| *kind)
            .or_else(|| {
                let draw = draw?;
                let mut cumulative = 0.0;
                faults.random.iter().find_map(|(rate, kind)| {
                    cumulative += rate;
                    (draw < cumulative).then_some(*kind)
                })
            });
        match fault {
            Some(FaultKind::Reset) => {
                entry.reason = Reason::Fault;
                return Err(ConnectionReset(()));
            }
            Some(FaultKind::Status(status)) => {
                entry.reason = Reason::Fault;
                let mut response =
                    json_response(status, "{\"message\": \"injected fault\"}".to_owned(), head);
                write_limits(&mut response, &list, None);
                if let Some(after) = faults.retry_after {
                    write_retry_after(
                        response.headers_mut(),
                        crate::RetryAfterFormat::Seconds,
                        wall_now,
                        after,
                    );
                }
                return Ok(response);
            }
            None => {}
        }

        if not_modified {
            entry.reason = Reason::NotModified;
            return Ok(not_modified_response(&list));
        }

        entry.reason = Reason::Ok;
        let version = validators.as_ref().map_or(0, |v| v.version);
        let body = format!(
            "{{\"path\": \"{}\", \"version\": {version}}}",
            entry.path.replace(['"', '\\'], "")
        );
        let mut response = json_response(config.default_status, body, head);
        if let (Some(c), Some(v)) = (cache, &validators) {
            write_cache_headers(response.headers_mut(), c, v);
        }
        write_limits(&mut response, &list, None);
        Ok(response)
    }

    /// A copy of the log, oldest first.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.lock().log.entries().iter().cloned().collect()
    }

    /// Takes the log, oldest first, and clears it (the [`stats`](Self::stats) keep counting).
    pub fn drain(&self) -> Vec<LoggedRequest> {
        self.lock().log.drain()
    }

    /// Clears the log and the statistics.
    pub fn reset_log(&self) {
        self.lock().log.reset();
    }

    /// The number of requests in the log.
    pub fn count(&self) -> usize {
        self.lock().log.entries().len()
    }

    /// The number of logged responses with `status` (connection resets excluded).
    pub fn count_status(&self, status: StatusCode) -> usize {
        self.lock()
            .log
            .entries()
            .iter()
            .filter(|e| e.outcome == Outcome::Responded && e.status == status)
            .count()
    }

    /// The number of logged requests refused for rate limiting (whatever the limited status):
    /// by a quota or by a [`Penalty`](crate::Penalty) block.
    pub fn count_limited(&self) -> usize {
        self.lock()
            .log
            .entries()
            .iter()
            .filter(|e| e.is_limited())
            .count()
    }

    /// The number of logged requests for the endpoint with prefix `endpoint` ("" or "*": all).
    pub fn count_for(&self, endpoint: &str) -> usize {
        self.lock()
            .log
            .entries()
            .iter()
            .filter(|e| log::matches_endpoint(e, endpoint))
            .count()
    }

    /// The most requests that consumed quota ([`LoggedRequest::counted`]) for `endpoint`
    /// ("" or "*": all) in any half-open window `[s, s + window)` of the log.
    ///
    /// With a fixed-window quota of `n` per `period` this can reach `2n` (the algorithm allows
    /// a burst across a window edge); with a sliding log it never exceeds `n`.
    ///
    /// Like every log query, this sees only what the bounded log still holds: a long run that
    /// overflowed [`MockConfig::log_capacity`](crate::MockConfig::log_capacity) (see
    /// [`Stats::dropped_log_entries`]) can hide its worst window, so check that nothing was
    /// dropped before trusting a maximum.
    pub fn max_in_window(&self, endpoint: &str, window: Duration) -> usize {
        let guard = self.lock();
        log::max_in_window(
            guard
                .log
                .entries()
                .iter()
                .filter(|e| e.counted && log::matches_endpoint(e, endpoint))
                .map(|e| e.at),
            window,
        )
    }

    /// Like [`max_in_window`](Self::max_in_window) but counting every request received.
    pub fn max_sent_in_window(&self, endpoint: &str, window: Duration) -> usize {
        let guard = self.lock();
        log::max_in_window(
            guard
                .log
                .entries()
                .iter()
                .filter(|e| log::matches_endpoint(e, endpoint))
                .map(|e| e.at),
            window,
        )
    }

    /// The counters since creation or the last [`reset_log`](Self::reset_log).
    pub fn stats(&self) -> Stats {
        self.lock().log.stats.clone()
    }
}

/// What a refusal (by a quota or a penalty block) needs to build its response.
struct LimitedResponse<'a> {
    endpoint: &'a EndpointConfig,
    head: bool,
    wait: Duration,
    global: bool,
    wall_now: SystemTime,
    write_limits: &'a dyn Fn(&mut Response<Full<Bytes>>),
}

fn limited_response(refusal: LimitedResponse<'_>) -> Response<Full<Bytes>> {
    let LimitedResponse {
        endpoint,
        head,
        wait,
        global,
        wall_now,
        write_limits,
    } = refusal;
    let body = match endpoint.dialect {
        Dialect::Discord => discord_body(wait, global),
        _ => "{\"message\": \"API rate limit exceeded\"}".to_owned(),
    };
    let mut response = json_response(endpoint.limited_status, body, head);
    write_limits(&mut response);
    write_retry_after(response.headers_mut(), endpoint.retry_after, wall_now, wait);
    response
}

#[derive(Clone, Copy)]
struct QuotaStatusView {
    index: usize,
    window: Duration,
    status: crate::quota::QuotaStatus,
    hidden: bool,
}

/// The response future of [`MockApi`].
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture {
    inner: Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, BoxError>> + Send>>,
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<Full<Bytes>>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<B> tower::Service<Request<B>> for MockApi
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Full<Bytes>>;
    type Error = BoxError;
    type Future = ResponseFuture;

    /// Always ready.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let api = self.clone();
        ResponseFuture {
            inner: Box::pin(async move {
                let (parts, body) = request.into_parts();
                let body = body.collect().await.map_err(Into::into)?.to_bytes();
                let path = parts
                    .uri
                    .path_and_query()
                    .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
                let plan = api.decide(&parts.method, &path, &parts.headers, body);
                if !plan.latency.is_zero() {
                    tokio::time::sleep(plan.latency).await;
                }
                plan.result.map_err(BoxError::from)
            }),
        }
    }
}
