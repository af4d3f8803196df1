//! GitHub-style 403 rate-limit refusals are retried like a 429; a plain 403 never is.
//! MockApi on tokio's paused clock.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{Empty, Full};
use ratewise_core::Deadline;
use ratewise_retry::RetryLayer;
use ratewise_testkit::{
    Dialect, EndpointConfig, Faults, MockApi, MockConfig, Quota, RetryAfterFormat,
};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::get(path).body(Empty::new()).unwrap()
}

/// A GitHub-like API: `limit` requests per `window`, refused with 403 and the
/// `x-ratelimit-*` headers (remaining 0, reset as epoch seconds); `retry_after` says whether a
/// `Retry-After` comes with it (GitHub's secondary limits) or not (its primary limit).
fn github(limit: u64, window: Duration, retry_after: RetryAfterFormat) -> MockApi {
    MockApi::new(
        MockConfig::new()
            // A whole second, so that the mock's `Date` and epoch reset are exact.
            .wall_clock_start(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
            .endpoint(
                EndpointConfig::new("/repos")
                    .quota(Quota::fixed_window(limit, window))
                    .dialect(Dialect::GitHub)
                    .limited_status(StatusCode::FORBIDDEN)
                    .retry_after(retry_after),
            ),
    )
}

#[tokio::test(start_paused = true)]
async fn github_403_with_remaining_0_is_retried_at_the_reset_never_before() {
    let api = github(5, Duration::from_secs(10), RetryAfterFormat::Omit);
    let client = RetryLayer::builder()
        .seed(3)
        .build()
        .unwrap()
        .layer(api.clone());
    for _ in 0..8 {
        let response = client.clone().oneshot(get("/repos/a")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let log = api.requests();
    let refused: Vec<_> = log
        .iter()
        .filter(|r| r.status == StatusCode::FORBIDDEN)
        .collect();
    assert_eq!(refused.len(), 1, "one refusal, then the retry waits");
    let retry = log
        .iter()
        .find(|r| r.at > refused[0].at)
        .expect("the refused request was retried");
    assert_eq!(
        retry.since_start,
        Duration::from_secs(10),
        "exactly at x-ratelimit-reset"
    );
    assert_eq!(log.len(), 9);
}

#[tokio::test(start_paused = true)]
async fn github_403_with_retry_after_is_retried_after_it() {
    let api = MockApi::new(
        MockConfig::new().endpoint(
            EndpointConfig::new("/search")
                .quota(Quota::fixed_window(1, Duration::from_secs(4)))
                .limited_status(StatusCode::FORBIDDEN)
                .retry_after(RetryAfterFormat::Seconds),
        ),
    );
    let client = RetryLayer::new().layer(api.clone());
    client.clone().oneshot(get("/search")).await.unwrap();
    let response = client.oneshot(get("/search")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let log = api.requests();
    assert_eq!(log.len(), 3);
    assert_eq!(log[1].status, StatusCode::FORBIDDEN);
    assert_eq!(log[2].since_start, Duration::from_secs(4));
}

#[tokio::test(start_paused = true)]
async fn a_plain_403_is_never_retried_even_with_github_headers() {
    // An authorization error on GitHub still carries x-ratelimit-* (remaining > 0).
    let api = MockApi::new(
        MockConfig::new().endpoint(
            EndpointConfig::new("/repos")
                .quota(Quota::fixed_window(100, Duration::from_secs(60)))
                .dialect(Dialect::GitHub)
                .faults(Faults::new().error_every(1, StatusCode::FORBIDDEN)),
        ),
    );
    let client = RetryLayer::new().layer(api.clone());
    let start = Instant::now();
    let response = client.oneshot(get("/repos/private")).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.headers().contains_key("x-ratelimit-remaining"));
    assert_eq!(start.elapsed(), Duration::ZERO);
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(api.count(), 1);

    // A bare 403 neither.
    let api = MockApi::new(MockConfig::new().endpoint(
        EndpointConfig::new("/repos").faults(Faults::new().error_every(1, StatusCode::FORBIDDEN)),
    ));
    let client = RetryLayer::new().layer(api.clone());
    let response = client.oneshot(get("/repos/private")).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(api.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_403_refusal_beyond_max_wait_or_the_deadline_returns_at_once() {
    // GitHub's primary limit resets hourly: far beyond the default 60 s max_wait.
    let api = github(1, Duration::from_secs(3600), RetryAfterFormat::Omit);
    let client = RetryLayer::new().layer(api.clone());
    client.clone().oneshot(get("/repos/a")).await.unwrap();
    let start = Instant::now();
    let response = client.oneshot(get("/repos/a")).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(api.count(), 2);

    // Within max_wait but past the request's deadline.
    let api = github(1, Duration::from_secs(30), RetryAfterFormat::Omit);
    let client = RetryLayer::new().layer(api.clone());
    client.clone().oneshot(get("/repos/a")).await.unwrap();
    let mut request = get("/repos/a");
    request
        .extensions_mut()
        .insert(Deadline::after(Duration::from_secs(10)));
    let response = client.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(api.count(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_403_refusal_is_not_retried_for_a_post_nor_when_429_is_not_retryable() {
    let api = github(1, Duration::from_secs(10), RetryAfterFormat::Omit);
    let client = RetryLayer::new().layer(api.clone());
    client.clone().oneshot(get("/repos/a")).await.unwrap();
    let post = Request::post("/repos/a/issues")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let response = client.oneshot(post).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(api.count(), 2, "a POST without a key is sent once");

    // "Like a 429": with 429 left out of the retryable statuses, the 403 is final too.
    let api = github(1, Duration::from_secs(10), RetryAfterFormat::Omit);
    let client = RetryLayer::builder()
        .statuses([StatusCode::SERVICE_UNAVAILABLE])
        .build()
        .unwrap()
        .layer(api.clone());
    client.clone().oneshot(get("/repos/a")).await.unwrap();
    let response = client.oneshot(get("/repos/a")).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(api.count(), 2);
}
