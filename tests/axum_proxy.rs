//! The `axum_proxy` example's app over loopback: an axum server calling a MockApi upstream
//! through the ratewise stack (real clock; the test asserts statuses and counts only).

#[path = "../examples/axum_proxy/app.rs"]
mod app;

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ratewise_testkit::{EndpointConfig, MockApi, MockConfig, Outage};

struct Proxy {
    base: String,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Proxy {
    async fn start(upstream_base: &str, max_wait: Duration) -> Proxy {
        let state = app::upstream(upstream_base, max_wait).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app::app(state)).await });
        Proxy {
            base: format!("http://{addr}"),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// GET `path` on the proxy: status, `x-cache`, `retry-after` and body.
    async fn get(&self, path: &str) -> (StatusCode, String, Option<String>, Bytes) {
        let request = http::Request::get(format!("{}{path}", self.base))
            .body(Empty::new())
            .unwrap();
        let response = self.client.request(request).await.unwrap();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let (cache, retry_after) = (header("x-cache").unwrap_or_default(), header("retry-after"));
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, cache, retry_after, body)
    }
}

#[tokio::test]
async fn the_proxy_caches_paces_and_refuses_locally() {
    let api = app::upstream_api();
    let upstream = api.serve().await.unwrap();
    let proxy = Proxy::start(&upstream.base_url(), Duration::from_millis(200)).await;

    assert_eq!(proxy.get("/healthz").await.0, StatusCode::OK);

    // The cache answers repeated reads: one upstream request per repository.
    let (status, cache, _, body) = proxy.get("/repos/tokio-rs/axum").await;
    assert_eq!((status, cache.as_str()), (StatusCode::OK, "Miss"));
    assert!(!body.is_empty());
    for _ in 0..4 {
        let (status, cache, _, again) = proxy.get("/repos/tokio-rs/axum").await;
        assert_eq!((status, cache.as_str()), (StatusCode::OK, "Hit"));
        assert_eq!(again, body);
    }
    assert_eq!(proxy.get("/repos/tower-rs/tower").await.0, StatusCode::OK);
    assert_eq!(api.count_for("/repos"), 2);

    // Eight concurrent searches against 2/s with a burst of 2 and a 200 ms wait limit: the
    // first pass, the rest are refused by the proxy itself, with Retry-After, before reaching
    // the upstream.
    let mut handles = Vec::new();
    for n in 0..8 {
        let client = proxy.client.clone();
        let url = format!("{}/search?q=term{n}", proxy.base);
        handles.push(tokio::spawn(async move {
            let response = client
                .request(http::Request::get(url).body(Empty::new()).unwrap())
                .await
                .unwrap();
            (
                response.status(),
                response.headers().contains_key("retry-after"),
            )
        }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for handle in handles {
        match handle.await.unwrap() {
            (StatusCode::OK, _) => ok += 1,
            (StatusCode::TOO_MANY_REQUESTS, true) => refused += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(ok >= 2, "{ok} ok, {refused} refused");
    assert!(refused >= 4, "{ok} ok, {refused} refused");
    assert_eq!(ok + refused, 8);
    assert_eq!(api.count_for("/search"), ok);
    assert_eq!(api.count_limited(), 0);
    upstream.shutdown().await;
}

#[tokio::test]
async fn the_proxy_fails_fast_while_the_upstream_is_down() {
    let api = MockApi::new(
        MockConfig::new().endpoint(
            EndpointConfig::new("/repos")
                .outage(Outage::new(Duration::ZERO, Duration::from_secs(3600))),
        ),
    );
    let upstream = api.serve().await.unwrap();
    let proxy = Proxy::start(&upstream.base_url(), Duration::from_millis(200)).await;

    let mut statuses = Vec::new();
    for n in 0..12 {
        let (status, _, retry_after, _) = proxy.get(&format!("/repos/o/r{n}")).await;
        statuses.push((status, retry_after.is_some()));
    }
    // The 503s are retried (3 attempts each) until the breaker has seen 5 failures; then the
    // proxy answers 503 with Retry-After without calling the upstream.
    let upstream_calls = api.count();
    assert!(upstream_calls <= 6, "{upstream_calls} upstream calls");
    assert!(
        statuses
            .iter()
            .all(|(s, _)| *s == StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
    let fast = statuses.iter().filter(|(_, retry)| *retry).count();
    assert!(fast >= 10, "{statuses:?}");
    upstream.shutdown().await;
}
