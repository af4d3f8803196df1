//! [`Cache`]: the service made by [`CacheLayer`](crate::CacheLayer).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{
    IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, RANGE,
};
use http::{HeaderMap, HeaderName, Method, Request, Response, StatusCode};
use http_body::Body;
use http_cache_semantics::{AfterResponse, BeforeRequest};
use ratewise_core::{BoxError, find_refusal};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tower_service::Service;

use crate::cache::body::{CacheBody, Collected, collect_capped};
use crate::cache::future::ResponseFuture;
use crate::cache::key::{PolicyRequest, PrimaryKey, VariantKey, policy_headers, vary_names};
use crate::cache::status::{CacheStatus, StaleReason};
use crate::cache::store::{
    Entry, FollowerOutcome, Head, Shared, Waiter, sanitize_response_headers,
};
use crate::error::{SharedError, UpstreamTaskLost};

/// Caches the responses of the inner HTTP service; made by [`CacheLayer`](crate::CacheLayer).
///
/// See the [crate docs](crate) for the behaviour and an example.
///
/// Upstream requests of cacheable requests run in spawned tasks (so that coalesced callers
/// survive the leader's cancellation), hence the `Send + 'static` bounds on the inner
/// service, its future and the bodies. Called outside a tokio runtime, a fresh hit is still
/// served, and every request that would go upstream passes through uncached.
///
/// # Clone
///
/// Clones share one store, one in-flight table and one clock (an `Arc` created by the
/// layer), so every clone of an axum router or hyper client sees the same cache.
///
/// # Cancel safety
///
/// Dropping a response future never loses work other callers depend on: the upstream request
/// of a cache miss runs in its own spawned task, so when the first caller (the leader) drops
/// its future, the followers that joined it still get the answer, and the response is still
/// stored. Dropping a follower only drops its receiver.
///
/// # Errors
///
/// Upstream errors are returned as they are to a caller that waited alone. When several
/// callers shared the upstream request, each receives a [`SharedError`] whose `source()` is
/// the upstream error (use [`find_refusal`] or walk the chain). [`UpstreamTaskLost`] reports
/// a spawned upstream task that ended without an answer (runtime shutdown, panic).
#[derive(Clone, Debug)]
pub struct Cache<S> {
    pub(crate) inner: S,
    pub(crate) shared: Arc<Shared>,
}

impl<S> Cache<S> {
    /// A cache layer with `config`; see [`CacheLayer::with_config`](crate::CacheLayer::with_config).
    ///
    /// # Errors
    ///
    /// [`ConfigError`](crate::ConfigError) for an invalid configuration.
    pub fn layer(config: crate::CacheConfig) -> Result<crate::CacheLayer, crate::ConfigError> {
        crate::CacheLayer::with_config(config)
    }

    ratewise_core::define_inner_service_accessors!();

    /// Bytes currently counted in the store (see [`CacheLayer::resident_bytes`](crate::CacheLayer::resident_bytes)).
    pub fn resident_bytes(&self) -> u64 {
        self.shared.store.weighted_size()
    }
}

/// A request the caller made conditional or partial is passed through: its answer (a 304 or
/// 206) belongs to the caller's own validators, not to the cache.
fn is_cacheable_request(method: &Method, headers: &HeaderMap) -> bool {
    const CALLER_CONDITIONALS: [HeaderName; 6] = [
        IF_NONE_MATCH,
        IF_MODIFIED_SINCE,
        IF_MATCH,
        IF_UNMODIFIED_SINCE,
        IF_RANGE,
        RANGE,
    ];
    (method == Method::GET || method == Method::HEAD)
        && !CALLER_CONDITIONALS.iter().any(|h| headers.contains_key(h))
        && !headers
            .get_all(http::header::CACHE_CONTROL)
            .iter()
            .any(|v| {
                v.to_str()
                    .is_ok_and(|v| v.to_ascii_lowercase().contains("no-store"))
            })
}

/// Whether the caller's request carries cache directives of its own (`Cache-Control`,
/// `Pragma`): then the cache never answers stale on its own initiative.
fn has_request_directives(headers: &HeaderMap) -> bool {
    headers.contains_key(http::header::CACHE_CONTROL) || headers.contains_key(http::header::PRAGMA)
}

fn is_unsafe(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

fn from_head<B>(head: Head, body: CacheBody<B>, status: CacheStatus) -> Response<CacheBody<B>> {
    let mut response = Response::new(body);
    *response.status_mut() = head.status;
    *response.version_mut() = head.version;
    *response.headers_mut() = head.headers;
    response.extensions_mut().insert(status);
    response
}

/// Everything the upstream task needs about the request.
struct Flight {
    shared: Arc<Shared>,
    key: VariantKey,
    method: Method,
    uri: http::Uri,
    policy_headers: HeaderMap,
    /// The stale entry being revalidated, if any.
    stale: Option<Arc<Entry>>,
    /// Set once the waiters were taken; otherwise `Drop` removes them (task panicked or was
    /// dropped at runtime shutdown), so followers get [`UpstreamTaskLost`] instead of hanging.
    answered: AtomicBool,
    /// Whether this flight is in the in-flight table (not when coalescing is off).
    registered: bool,
}

impl Flight {
    /// The flight of `request`; `registered` says whether `key` was put in the in-flight
    /// table for it.
    fn new<B>(
        shared: &Arc<Shared>,
        key: VariantKey,
        request: &Request<B>,
        policy_headers: HeaderMap,
        stale: Option<Arc<Entry>>,
        registered: bool,
    ) -> Self {
        Flight {
            shared: shared.clone(),
            key,
            method: request.method().clone(),
            uri: request.uri().clone(),
            policy_headers,
            stale,
            answered: AtomicBool::new(false),
            registered,
        }
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        if !*self.answered.get_mut() {
            drop(self.take_waiters());
        }
    }
}

type LeaderTx<B> = oneshot::Sender<Result<Response<CacheBody<B>>, BoxError>>;

impl<S, ReqB, ResB> Service<Request<ReqB>> for Cache<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    ReqB: Send + 'static,
    ResB: Body + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<CacheBody<ResB>>;
    type Error = BoxError;
    type Future = ResponseFuture<ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<ReqB>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = &self.shared;
        let isolation = &shared.config.isolation_headers;

        if !is_cacheable_request(request.method(), request.headers()) {
            return passthrough(shared, inner, request);
        }

        let now = Instant::now();
        let primary = PrimaryKey::new(
            request.method(),
            request.uri(),
            request.headers(),
            isolation,
        );
        let (key, entry) = shared.lookup(primary, request.headers());
        // The hot path: a fresh entry and a request without directives of its own need no
        // policy evaluation, no copy of the request headers and no runtime.
        if let Some(entry) = &entry
            && entry.is_fresh_for(request.headers(), now)
        {
            return hit(entry, now);
        }

        // Coalescing and background revalidation spawn tasks: without a runtime, pass through.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!(target: "ratewise::cache", "no tokio runtime; request passed through uncached");
            return passthrough(shared, inner, request);
        };
        // Owned: the request is changed (conditionals) and moved upstream below.
        let headers = policy_headers(request.headers(), isolation).into_owned();

        let mut stale = None;
        let mut conditionals = Vec::new();
        if let Some(entry) = entry {
            let policy_request = PolicyRequest {
                method: request.method(),
                uri: request.uri(),
                headers: &headers,
            };
            match entry
                .policy
                .before_request(&policy_request, shared.clock.system(now))
            {
                // A fresh answer to a request with directives of its own (`max-stale`...).
                BeforeRequest::Fresh(_) => return hit(&entry, now),
                BeforeRequest::Stale {
                    request: revalidation,
                    matches: true,
                } => {
                    for name in [IF_NONE_MATCH, IF_MODIFIED_SINCE] {
                        if let Some(value) = revalidation.headers.get(&name) {
                            conditionals.push((name, value.clone()));
                        }
                    }
                    let staleness = entry.staleness(now);
                    // Only on the server's explicit permission, never against a
                    // `must-revalidate`/`no-cache` response nor a caller's own directives
                    // (`no-cache`, `max-age=0`...), which demand a validated answer.
                    if !entry.must_revalidate
                        && !entry.stale_while_revalidate.is_zero()
                        && staleness <= entry.stale_while_revalidate
                        && !has_request_directives(request.headers())
                    {
                        // RFC 5861: answer now, refresh in the background (once).
                        let status = CacheStatus::Stale(StaleReason::WhileRevalidate);
                        status.record();
                        tracing::info!(target: "ratewise::cache", reason = "stale-while-revalidate", staleness_ms = staleness.as_millis() as u64, path = request.uri().path(), "serving stale response");
                        let response = from_head(
                            entry.head_at(now),
                            CacheBody::full(entry.body.clone()),
                            status,
                        );
                        let leads = {
                            let mut in_flight =
                                shared.in_flight.lock().unwrap_or_else(|e| e.into_inner());
                            if in_flight.contains_key(&key) {
                                false
                            } else {
                                in_flight.insert(key.clone(), Vec::new());
                                true
                            }
                        };
                        if leads {
                            add_conditionals(&mut request, &conditionals);
                            let flight =
                                Flight::new(shared, key, &request, headers, Some(entry), true);
                            let upstream = inner.call(request);
                            runtime.spawn(drive::<S, ReqB, ResB>(flight, upstream, None));
                        }
                        return ResponseFuture::ready(Ok(response));
                    }
                    stale = Some(entry);
                }
                BeforeRequest::Stale { matches: false, .. } => {}
            }
        }

        // Join the identical request in flight, or lead a new one.
        if shared.config.coalesce {
            let mut in_flight = shared.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(waiters) = in_flight.get_mut(&key) {
                let (tx, rx) = oneshot::channel();
                waiters.push(Waiter { tx, headers });
                drop(in_flight);
                return ResponseFuture::boxed(follow(rx, inner, request));
            }
            in_flight.insert(key.clone(), Vec::new());
        }
        add_conditionals(&mut request, &conditionals);
        let flight = Flight::new(
            shared,
            key,
            &request,
            headers,
            stale,
            shared.config.coalesce,
        );
        let upstream = inner.call(request);
        let (tx, rx) = oneshot::channel();
        runtime.spawn(drive::<S, ReqB, ResB>(flight, upstream, Some(tx)));
        ResponseFuture::boxed(async move {
            rx.await
                .unwrap_or_else(|_| Err(Box::new(UpstreamTaskLost) as BoxError))
        })
    }
}

/// Answers from a fresh stored entry.
fn hit<B>(entry: &Entry, now: Instant) -> ResponseFuture<B> {
    CacheStatus::Hit.record();
    ResponseFuture::ready(Ok(from_head(
        entry.head_at(now),
        CacheBody::full(entry.body.clone()),
        CacheStatus::Hit,
    )))
}

fn add_conditionals<B>(request: &mut Request<B>, conditionals: &[(HeaderName, http::HeaderValue)]) {
    for (name, value) in conditionals {
        request.headers_mut().insert(name.clone(), value.clone());
    }
}

fn passthrough<S, ReqB, ResB>(
    shared: &Arc<Shared>,
    mut inner: S,
    request: Request<ReqB>,
) -> ResponseFuture<ResB>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    ResB: Send + 'static,
{
    CacheStatus::Uncacheable.record();
    let invalidate = is_unsafe(request.method()).then(|| {
        let isolation = &shared.config.isolation_headers;
        let get = PrimaryKey::new(&Method::GET, request.uri(), request.headers(), isolation);
        let head = PrimaryKey {
            method: Method::HEAD,
            ..get.clone()
        };
        (shared.clone(), get, head)
    });
    let upstream = inner.call(request);
    ResponseFuture::boxed(async move {
        let response = upstream.await.map_err(Into::into)?;
        if let Some((shared, get, head)) = invalidate {
            // RFC 9111 §4.4: a successful unsafe request invalidates the stored target URI.
            if response.status().is_success() || response.status().is_redirection() {
                shared.invalidate(&get);
                shared.invalidate(&head);
            }
        }
        let (parts, body) = response.into_parts();
        let mut response = Response::from_parts(parts, CacheBody::passthrough(body));
        response.extensions_mut().insert(CacheStatus::Uncacheable);
        Ok(response)
    })
}

/// A follower: waits for the leader's flight; sends its own request only if the shared
/// response cannot serve it (too large, or varying on headers where it differs).
async fn follow<S, ReqB, ResB>(
    rx: oneshot::Receiver<FollowerOutcome>,
    mut inner: S,
    request: Request<ReqB>,
) -> Result<Response<CacheBody<ResB>>, BoxError>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
{
    match rx.await {
        Ok(FollowerOutcome::Response { head, body, status }) => {
            Ok(from_head((*head).clone(), CacheBody::full(body), status))
        }
        Ok(FollowerOutcome::Error(err)) => Err(Box::new(err)),
        Ok(FollowerOutcome::NotShared) => {
            // `inner` was readied for this request and never used: send it ourselves.
            let response = inner.call(request).await.map_err(Into::into)?;
            let (parts, body) = response.into_parts();
            let mut response = Response::from_parts(parts, CacheBody::passthrough(body));
            response.extensions_mut().insert(CacheStatus::Miss);
            Ok(response)
        }
        Err(_) => Err(Box::new(UpstreamTaskLost)),
    }
}

/// Whether a response varying on `vary` (`None`: `Vary: *`) may answer a request with
/// `follower` headers, given that it answers `leader`'s: every named header has the same values.
fn same_variant(vary: Option<&[HeaderName]>, leader: &HeaderMap, follower: &HeaderMap) -> bool {
    vary.is_some_and(|names| {
        names.iter().all(|name| {
            leader
                .get_all(name)
                .iter()
                .eq(follower.get_all(name).iter())
        })
    })
}

/// Is this upstream answer an error for `stale-if-error` (RFC 5861 §4)?
fn is_error_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

impl Flight {
    fn request_host(&self) -> Option<http::HeaderValue> {
        self.policy_headers.get(http::header::HOST).cloned()
    }

    fn take_waiters(&self) -> Vec<Waiter> {
        self.answered.store(true, Ordering::Relaxed);
        if !self.registered {
            return Vec::new();
        }
        let mut in_flight = self
            .shared
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        in_flight.remove(&self.key).unwrap_or_default()
    }

    /// Publishes one shared response to every waiter.
    fn publish<B>(
        &self,
        leader: Option<LeaderTx<B>>,
        head: Head,
        leader_response: Option<Response<CacheBody<B>>>,
        body: Bytes,
        status: CacheStatus,
    ) {
        let waiters = self.take_waiters();
        let follower_status = match status {
            CacheStatus::Stale(_) => status,
            _ => CacheStatus::Coalesced,
        };
        let vary = vary_names(&head.headers);
        let head = Arc::new(head);
        for waiter in waiters {
            if !same_variant(vary.as_deref(), &self.policy_headers, &waiter.headers) {
                let _ = waiter.tx.send(FollowerOutcome::NotShared);
                continue;
            }
            follower_status.record();
            let _ = waiter.tx.send(FollowerOutcome::Response {
                head: head.clone(),
                body: body.clone(),
                status: follower_status,
            });
        }
        if let Some(leader) = leader {
            status.record();
            let response = leader_response
                .unwrap_or_else(|| from_head((*head).clone(), CacheBody::full(body), status));
            let _ = leader.send(Ok(response));
        }
    }

    fn publish_error<B>(&self, leader: Option<LeaderTx<B>>, err: BoxError) {
        let waiters = self.take_waiters();
        if waiters.is_empty() {
            if let Some(leader) = leader {
                let _ = leader.send(Err(err));
            }
            return;
        }
        let shared = SharedError::new(err);
        for waiter in waiters {
            let _ = waiter.tx.send(FollowerOutcome::Error(shared.clone()));
        }
        if let Some(leader) = leader {
            let _ = leader.send(Err(Box::new(shared)));
        }
    }

    /// Serves the stale entry instead of a failure, when allowed.
    fn try_serve_stale<B>(
        &self,
        leader: &mut Option<LeaderTx<B>>,
        refused: bool,
        now: Instant,
    ) -> bool {
        let Some(entry) = &self.stale else {
            return false;
        };
        let staleness = entry.staleness(now);
        let reason = if staleness <= entry.stale_if_error && !refused {
            StaleReason::Error
        } else if refused
            && !entry.must_revalidate
            && self
                .shared
                .config
                .stale_on_refusal
                .is_some_and(|max| staleness <= max)
        {
            StaleReason::Refused
        } else if refused && staleness <= entry.stale_if_error {
            StaleReason::Error
        } else {
            return false;
        };
        tracing::warn!(target: "ratewise::cache", reason = ?reason, staleness_ms = staleness.as_millis() as u64, path = self.uri.path(), "serving stale response");
        let head = entry.head_at(now);
        self.publish::<B>(
            leader.take(),
            head,
            None,
            entry.body.clone(),
            CacheStatus::Stale(reason),
        );
        true
    }
}

/// Drives one upstream request to the end, stores what may be stored, and answers the leader
/// (if still there) and every follower.
async fn drive<S, ReqB, ResB>(
    flight: Flight,
    upstream: S::Future,
    mut leader: Option<LeaderTx<ResB>>,
) where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    ResB: Body,
    ResB::Error: Into<BoxError>,
{
    let result = upstream.await.map_err(Into::into);
    let now = Instant::now();
    let now_system = flight.shared.clock.system(now);
    let response = match result {
        Ok(response) => response,
        Err(err) => {
            let refused = find_refusal(&*err).is_some();
            if !flight.try_serve_stale(&mut leader, refused, now) {
                flight.publish_error(leader, err);
            }
            return;
        }
    };
    if is_error_status(response.status()) && flight.try_serve_stale(&mut leader, false, now) {
        return;
    }
    let (mut parts, body) = response.into_parts();
    sanitize_response_headers(&mut parts.headers);
    let policy_request = PolicyRequest {
        method: &flight.method,
        uri: &flight.uri,
        headers: &flight.policy_headers,
    };
    let max_stale = flight.shared.config.max_stale;

    if parts.status == StatusCode::NOT_MODIFIED
        && let Some(entry) = &flight.stale
        && let AfterResponse::NotModified(policy, refreshed) =
            entry
                .policy
                .after_response(&policy_request, &parts, now_system)
    {
        let mut headers = refreshed.headers;
        headers.remove(http::header::AGE);
        // The policy stamps `Date` with the current time in RFC 2822 form (`+0000`), which is
        // no HTTP-date: keep the origin's, the 304's if it sent one (RFC 9111 §4.3.4).
        match (parts.headers.get(http::header::DATE))
            .or_else(|| entry.head.headers.get(http::header::DATE))
        {
            Some(date) => {
                headers.insert(http::header::DATE, date.clone());
            }
            None => {
                headers.remove(http::header::DATE);
            }
        }
        let head = Head {
            status: refreshed.status,
            version: entry.head.version,
            headers,
        };
        let new_entry = Entry::new(
            policy,
            head.clone(),
            entry.body.clone(),
            flight.request_host(),
            now,
            now_system,
            max_stale,
        );
        let vary = vary_names(&head.headers).unwrap_or_else(|| Arc::from(Vec::new()));
        flight.shared.insert(
            &flight.key.primary,
            &vary,
            &flight.policy_headers,
            new_entry,
        );
        tracing::debug!(target: "ratewise::cache", path = flight.uri.path(), "revalidated (304)");
        flight.publish::<ResB>(
            leader,
            head,
            None,
            entry.body.clone(),
            CacheStatus::Revalidated,
        );
        return;
    }

    if parts.status == StatusCode::NOT_MODIFIED && flight.stale.is_some() {
        // The 304's validators select no stored response (RFC 9111 §4.3.4): it cannot refresh
        // the entry. Forget the entry so the next request is unconditional; this caller gets
        // the 304 as it is (re-sending needs a request body we no longer have).
        tracing::warn!(target: "ratewise::cache", path = flight.uri.path(), "304 does not match the stored validators; entry dropped");
        flight.shared.invalidate_variant(&flight.key);
    }

    let content_length = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match collect_capped(body, flight.shared.config.max_entry_bytes, content_length).await {
        Collected::Full(bytes) => {
            let policy = flight
                .shared
                .new_policy(&policy_request, &parts, now_system);
            let vary = vary_names(&parts.headers);
            let head = Head {
                status: parts.status,
                version: parts.version,
                headers: parts.headers.clone(),
            };
            match vary {
                Some(vary)
                    if parts.status != StatusCode::TOO_MANY_REQUESTS && policy.is_storable() =>
                {
                    let entry = Entry::new(
                        policy,
                        head.clone(),
                        bytes.clone(),
                        flight.request_host(),
                        now,
                        now_system,
                        max_stale,
                    );
                    flight
                        .shared
                        .insert(&flight.key.primary, &vary, &flight.policy_headers, entry);
                }
                _ => {
                    tracing::trace!(target: "ratewise::cache", status = parts.status.as_u16(), "response not storable");
                }
            }
            let mut leader_response = Response::from_parts(parts, CacheBody::full(bytes.clone()));
            leader_response.extensions_mut().insert(CacheStatus::Miss);
            flight.publish(
                leader,
                head,
                Some(leader_response),
                bytes,
                CacheStatus::Miss,
            );
        }
        Collected::TooLarge { prefix, rest } => {
            tracing::debug!(target: "ratewise::cache", path = flight.uri.path(), "response larger than max_entry_bytes; streamed uncached");
            for waiter in flight.take_waiters() {
                let _ = waiter.tx.send(FollowerOutcome::NotShared);
            }
            if let Some(leader) = leader {
                CacheStatus::Miss.record();
                let mut response = Response::from_parts(parts, CacheBody::oversized(prefix, rest));
                response.extensions_mut().insert(CacheStatus::Miss);
                let _ = leader.send(Ok(response));
            }
        }
        Collected::Failed(err) => flight.publish_error(leader, err),
    }
}
