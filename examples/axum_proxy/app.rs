//! The app of the `axum_proxy` example, shared with `tests/axum_proxy.rs`.
//!
//! An axum server whose handlers call an upstream API through the ratewise stack. The client
//! service lives in the router's state, so it must be `Clone + Send + Sync + 'static` (axum's
//! `Router::with_state` requirement): ratewise layers share their state through `Arc`s, so one
//! clone per request is cheap and every clone spends the same quotas, learns the same limits,
//! trips the same breaker and fills the same cache.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ratewise::breaker::CircuitBreakerLayer;
use ratewise::cache::{CacheBody, CacheLayer, CacheStatus};
use ratewise::pace::{PaceLayer, Quota, QuotaTable};
use ratewise::prelude::{ByHostAndRoute, ByRoute, CircuitOpen, RouteTable};
use ratewise::retry::RetryLayer;
use ratewise::{AttemptTimeoutElapsed, BoxError, TotalTimeoutElapsed, find_refusal};
use ratewise_testkit::{
    CacheHeaders, Dialect, EndpointConfig, MockApi, MockConfig, Quota as ServerQuota,
};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

/// What a handler gets back from the upstream: the head, the collected body and how the cache
/// answered.
pub(crate) type UpstreamResponse = http::Response<Bytes>;

/// The upstream client behind the whole ratewise stack, type-erased for the router state.
pub(crate) type Upstream =
    BoxCloneSyncService<http::Request<Full<Bytes>>, UpstreamResponse, BoxError>;

/// The router state.
#[derive(Clone)]
pub(crate) struct AppState {
    upstream: Upstream,
    base_url: Arc<str>,
}

/// The upstream the example and its test run against: a MockApi with GitHub-style headers,
/// GCRA quotas of 20/s on `/repos` (cacheable for 60 s) and 2/s on `/search`.
pub(crate) fn upstream_api() -> MockApi {
    MockApi::new(
        MockConfig::new()
            .endpoint(
                EndpointConfig::new("/repos")
                    .quota(ServerQuota::gcra(20, Duration::from_secs(1), 9))
                    .dialect(Dialect::GitHub)
                    .resource("core")
                    .cache(CacheHeaders::new().max_age(Duration::from_secs(60))),
            )
            .endpoint(
                EndpointConfig::new("/search")
                    .quota(ServerQuota::gcra(2, Duration::from_secs(1), 1))
                    .dialect(Dialect::GitHub)
                    .resource("search"),
            ),
    )
}

/// How the upstream's endpoints are grouped into buckets (pacing, adaptation, metrics).
pub(crate) fn routes() -> RouteTable {
    RouteTable::builder()
        .route("/repos/{owner}/{repo}", "repos")
        .expect("a valid template")
        .prefix("/search", "search")
        .expect("a valid prefix")
        .build()
}

/// The upstream client: hyper-util's legacy client under cache, retry, breaker, adaptation and
/// pacing (per route: `repos` 20/s burst 10, `search` 2/s burst 2). A request that would wait
/// more than `max_wait` for a pacing slot is refused at once, so the proxy answers quickly.
///
/// # Errors
///
/// Invalid quotas or timeouts (never with these constants).
pub(crate) fn upstream(base_url: &str, max_wait: Duration) -> Result<AppState, BoxError> {
    let quotas = QuotaTable::new()
        .with("repos", Quota::per_second(20)?.burst(10)?)
        .with("search", Quota::per_second(2)?.burst(2)?);
    let stack = ratewise::stack()
        .cache(CacheLayer::new())
        .retry(
            RetryLayer::builder()
                .backoff(ratewise::retry::Backoff::new().base(Duration::from_millis(20)))
                .build()?,
        )
        .breaker(
            CircuitBreakerLayer::builder()
                .key_fn(ByHostAndRoute::new(routes()))
                .minimum_calls(5)
                .open_duration(Duration::from_secs(30))
                .build()?,
        )
        .adapt(
            ratewise::adapt::AdaptLayer::builder()
                .key_fn(ByHostAndRoute::new(routes()))
                .max_wait(max_wait)
                .build()?,
        )
        .pace(PaceLayer::keyed(ByRoute(routes()), quotas).max_wait(max_wait))
        .total_timeout(Duration::from_secs(10))
        .attempt_timeout(Duration::from_secs(5))
        .build()?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let service = ServiceBuilder::new().layer(stack).service(client).and_then(
        |response: http::Response<CacheBody<Incoming>>| async move {
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, BoxError>(http::Response::from_parts(parts, body))
        },
    );
    Ok(AppState {
        upstream: BoxCloneSyncService::new(service),
        base_url: base_url.trim_end_matches('/').into(),
    })
}

/// The router: `GET /repos/{owner}/{repo}`, `GET /search?q=...` and `GET /healthz`.
pub(crate) fn app(state: AppState) -> Router {
    Router::new()
        .route("/repos/{owner}/{repo}", get(repo))
        .route("/search", get(search))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
}

async fn repo(
    State(state): State<AppState>,
    Path((owner, repo)): Path<(String, String)>,
) -> Response {
    let url = format!("{}/repos/{owner}/{repo}", state.base_url);
    forward(state, url).await
}

async fn search(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    // Only the `q` parameter, and only its letters and digits, go upstream.
    let q: String = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("q="))
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let url = format!("{}/search/code?q={q}", state.base_url);
    forward(state, url).await
}

/// Sends one GET upstream and turns the outcome into the proxy's answer: the upstream status
/// and body, with `x-cache` saying how the cache answered; a ratewise refusal becomes a fast
/// 429 (pacing, adaptation) or 503 (open circuit) with `Retry-After`; timeouts become 504.
async fn forward(state: AppState, url: String) -> Response {
    let request = match http::Request::get(url).body(Full::new(Bytes::new())) {
        Ok(request) => request,
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    match state.upstream.oneshot(request).await {
        Ok(upstream) => {
            let cache = upstream
                .extensions()
                .get::<CacheStatus>()
                .map(|status| format!("{status:?}"))
                .unwrap_or_default();
            let status =
                StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let content_type = upstream
                .headers()
                .get(header::CONTENT_TYPE)
                .cloned()
                .unwrap_or(HeaderValue::from_static("application/octet-stream"));
            let mut response = (status, upstream.into_body()).into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, content_type);
            if let Ok(value) = HeaderValue::from_str(&cache) {
                response.headers_mut().insert("x-cache", value);
            }
            response
        }
        Err(err) => refusal_response(&*err),
    }
}

fn refusal_response(err: &(dyn std::error::Error + Send + Sync + 'static)) -> Response {
    if let Some(refusal) = find_refusal(err) {
        let as_error: &(dyn std::error::Error + 'static) = refusal;
        let status = if as_error.is::<CircuitOpen>() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        let seconds = refusal.retry_after().as_secs_f64().ceil().max(1.0) as u64;
        return (
            status,
            [(header::RETRY_AFTER, seconds.to_string())],
            format!("upstream refused locally: {refusal}"),
        )
            .into_response();
    }
    if err.is::<TotalTimeoutElapsed>() || err.is::<AttemptTimeoutElapsed>() {
        return (StatusCode::GATEWAY_TIMEOUT, "upstream timed out").into_response();
    }
    (StatusCode::BAD_GATEWAY, format!("upstream failed: {err}")).into_response()
}
