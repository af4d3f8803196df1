//! `CacheLayer` against `ratewise-testkit`'s MockApi (virtual time).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use ratewise_cache::{CacheLayer, CacheStatus, StaleReason};
use ratewise_core::BoxError;
use ratewise_testkit::{CacheHeaders, EndpointConfig, MockApi, MockConfig, Outage};
use tokio::time::advance;
use tower::{Layer, ServiceBuilder, ServiceExt};

const URL: &str = "http://api.test/repos/octo/cat";

fn get() -> Request<Full<Bytes>> {
    Request::get(URL).body(Full::default()).unwrap()
}

fn status<B>(response: &Response<B>) -> CacheStatus {
    *response.extensions().get::<CacheStatus>().unwrap()
}

async fn body<B: http_body::Body>(response: Response<B>) -> Bytes
where
    B::Error: std::fmt::Debug,
{
    response.into_body().collect().await.unwrap().to_bytes()
}

#[tokio::test(start_paused = true)]
async fn a_304_refreshes_the_entry_and_the_caller_gets_the_full_200() {
    let api = MockApi::new(
        MockConfig::new().endpoint(
            EndpointConfig::new("/repos").cache(
                CacheHeaders::new()
                    .max_age(Duration::from_secs(60))
                    .etag(true),
            ),
        ),
    );
    let service = CacheLayer::new().layer(api.clone());

    let first = service.clone().oneshot(get()).await.unwrap();
    assert_eq!(status(&first), CacheStatus::Miss);
    let original = body(first).await;

    advance(Duration::from_secs(30)).await;
    assert_eq!(
        status(&service.clone().oneshot(get()).await.unwrap()),
        CacheStatus::Hit
    );

    advance(Duration::from_secs(31)).await;
    let revalidated = service.clone().oneshot(get()).await.unwrap();
    assert_eq!(status(&revalidated), CacheStatus::Revalidated);
    assert_eq!(revalidated.status(), StatusCode::OK);
    assert_eq!(body(revalidated).await, original);

    let stats = api.stats();
    assert_eq!(stats.total, 2);
    assert_eq!(stats.not_modified, 1);
    let log = api.requests();
    assert!(log[1].headers.contains_key("if-none-match"));

    // Fresh again after the 304.
    advance(Duration::from_secs(59)).await;
    assert_eq!(
        status(&service.clone().oneshot(get()).await.unwrap()),
        CacheStatus::Hit
    );
    assert_eq!(api.stats().total, 2);
}

#[tokio::test(start_paused = true)]
async fn a_hundred_concurrent_gets_reach_the_api_once() {
    let api = MockApi::new(
        MockConfig::new().endpoint(
            EndpointConfig::new("/repos")
                .latency(Duration::from_millis(50))
                .cache(CacheHeaders::new().max_age(Duration::from_secs(60))),
        ),
    );
    let service = CacheLayer::new().layer(api.clone());
    let handles: Vec<_> = (0..100)
        .map(|_| tokio::spawn(service.clone().oneshot(get())))
        .collect();
    for handle in handles {
        assert_eq!(handle.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    assert_eq!(api.count(), 1);
}

/// The MockApi does not send RFC 5861 directives; this stands for a server that does.
fn with_stale_if_error(mut response: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    if let Some(cc) = response
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
    {
        let value = HeaderValue::from_str(&format!("{cc}, stale-if-error=300")).unwrap();
        response.headers_mut().insert("cache-control", value);
    }
    response
}

async fn outage_scenario(outage: Outage) {
    let api = MockApi::new(
        MockConfig::new().endpoint(
            EndpointConfig::new("/repos")
                .cache(CacheHeaders::new().max_age(Duration::from_secs(10)))
                .outage(outage),
        ),
    );
    let service = ServiceBuilder::new()
        .layer(CacheLayer::new())
        .map_response(with_stale_if_error)
        .service(api.clone());

    let first = service.clone().oneshot(get()).await.unwrap();
    let original = body(first).await;

    // In the outage [30 s, 90 s): the API fails, the stale copy is served and marked.
    advance(Duration::from_secs(40)).await;
    let during = service.clone().oneshot(get()).await.unwrap();
    assert_eq!(status(&during), CacheStatus::Stale(StaleReason::Error));
    assert_eq!(during.status(), StatusCode::OK);
    assert_eq!(body(during).await, original);
    assert_eq!(api.stats().outage, 1);

    // After the outage: the stale entry is revalidated (the mock's ETag still matches).
    advance(Duration::from_secs(60)).await;
    let after = service.clone().oneshot(get()).await.unwrap();
    assert_eq!(status(&after), CacheStatus::Revalidated);
    assert_eq!(body(after).await, original);
    assert_eq!(api.stats().not_modified, 1);
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_during_a_503_outage() {
    outage_scenario(Outage::new(
        Duration::from_secs(30),
        Duration::from_secs(90),
    ))
    .await;
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_during_a_connection_reset_outage() {
    outage_scenario(Outage::new(Duration::from_secs(30), Duration::from_secs(90)).reset()).await;
}

#[tokio::test(start_paused = true)]
async fn without_stale_if_error_the_outage_reaches_the_caller() {
    let api = MockApi::new(
        MockConfig::new().endpoint(
            EndpointConfig::new("/repos")
                .cache(CacheHeaders::new().max_age(Duration::from_secs(10)))
                .outage(Outage::new(
                    Duration::from_secs(30),
                    Duration::from_secs(90),
                )),
        ),
    );
    let service = CacheLayer::new().layer(api.clone());
    service.clone().oneshot(get()).await.unwrap();
    advance(Duration::from_secs(40)).await;
    let during: Result<Response<_>, BoxError> = service.clone().oneshot(get()).await;
    assert_eq!(during.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
}
