//! The retry layer against `ratewise-testkit`'s MockApi, on tokio's paused clock.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{Empty, Full, StreamBody};
use ratewise_retry::{ErrorClass, ReplayBody, RetryLayer};
use ratewise_testkit::{
    ConnectionReset, EndpointConfig, Faults, MockApi, MockConfig, Quota, RetryAfterFormat,
};
use tower::{Layer, ServiceExt};

fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::get(path).body(Empty::new()).unwrap()
}

fn always_503() -> MockApi {
    MockApi::new(
        MockConfig::new()
            .default_status(StatusCode::SERVICE_UNAVAILABLE)
            .endpoint(EndpointConfig::new("/items")),
    )
}

#[tokio::test(start_paused = true)]
async fn budget_bounds_attempts_of_1000_concurrent_requests_against_an_always_503_api() {
    let api = always_503();
    let layer = RetryLayer::builder().seed(1).build().unwrap();
    let requests = 1000;
    let tasks: Vec<_> = (0..requests)
        .map(|i| {
            let client = layer.layer(api.clone());
            tokio::spawn(client.oneshot(get(&format!("/items/{i}"))))
        })
        .collect();
    for task in tasks {
        let response = task.await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let attempts = api.count();
    // Finagle budget: 20% of requests + 10 retries/s over its 10 s window.
    let floor = 10 * 10;
    let bound = requests + requests / 5 + floor;
    println!("MockApi budget: {requests} requests -> {attempts} attempts (bound {bound})");
    assert!(attempts > requests);
    assert!(attempts <= bound, "{attempts} > {bound}");
}

#[tokio::test(start_paused = true)]
async fn post_is_sent_once_without_a_key_and_retried_with_one() {
    let api = always_503();
    let client = RetryLayer::new().layer(api.clone());
    let post = |key: Option<&str>| {
        let mut builder = Request::post("/items");
        if let Some(key) = key {
            builder = builder.header("idempotency-key", key);
        }
        builder
            .body(Full::new(Bytes::from_static(b"{\"n\":1}")))
            .unwrap()
    };
    client.clone().oneshot(post(None)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(api.count(), 1);
    client.oneshot(post(Some("abc"))).await.unwrap();
    let log = api.requests();
    assert_eq!(log.len(), 4);
    assert!(
        log[1..]
            .iter()
            .all(|r| r.headers["idempotency-key"] == "abc")
    );
}

#[tokio::test(start_paused = true)]
async fn retries_wait_for_the_mock_quota_reset_and_never_arrive_early() {
    let api = MockApi::new(MockConfig::new().endpoint(
        EndpointConfig::new("/repos").quota(Quota::fixed_window(5, Duration::from_secs(10))),
    ));
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
        .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!(
        refused.len(),
        1,
        "one refusal, then the retry waits for the new window"
    );
    let retry = log
        .iter()
        .find(|r| r.at > refused[0].at)
        .expect("the refused request was retried");
    assert_eq!(
        retry.since_start,
        Duration::from_secs(10),
        "exactly at the window reset"
    );
    assert_eq!(api.max_in_window("/repos", Duration::from_secs(10)), 5);
}

#[tokio::test(start_paused = true)]
async fn http_date_retry_after_from_the_mock_is_read_relative_to_its_date() {
    // The mock's wall clock is years away from ours; only Retry-After - Date matters.
    let api = MockApi::new(
        MockConfig::new()
            .wall_clock_start(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000))
            .endpoint(
                EndpointConfig::new("/search")
                    .quota(Quota::fixed_window(1, Duration::from_secs(4)))
                    .retry_after(RetryAfterFormat::HttpDate),
            ),
    );
    let client = RetryLayer::new().layer(api.clone());
    client.clone().oneshot(get("/search")).await.unwrap();
    let response = client.oneshot(get("/search")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let log = api.requests();
    assert_eq!(log.len(), 3);
    assert_eq!(log[1].status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(log[2].since_start, Duration::from_secs(4));
}

#[tokio::test(start_paused = true)]
async fn replay_body_is_replayed_byte_identical_to_the_mock() {
    // Every second admitted request fails: the warm-up passes, our PUT fails, its retry passes.
    let api = MockApi::new(MockConfig::new().endpoint(
        EndpointConfig::new("/blobs").faults(Faults::new().error_every(2, StatusCode::BAD_GATEWAY)),
    ));
    let client = RetryLayer::new().layer(api.clone());
    client.clone().oneshot(get("/blobs/warm-up")).await.unwrap();

    let chunks: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> = (0..50u8)
        .map(|i| {
            Ok(http_body::Frame::data(Bytes::from(vec![
                b'a' + i % 26;
                1000
            ])))
        })
        .collect();
    let body = ReplayBody::with_default_cap(StreamBody::new(futures_util::stream::iter(chunks)));
    let request = Request::put("/blobs/1").body(body).unwrap();
    let response = client.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let log = api.requests();
    assert_eq!(log.len(), 3);
    assert_eq!(log[1].status, StatusCode::BAD_GATEWAY);
    assert_eq!(log[1].body_len, 50_000);
    assert_eq!(
        log[1].body, log[2].body,
        "the server sees the same body twice"
    );

    // Over the cap: sent once, the failure is returned.
    let chunks: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> = (0..100u8)
        .map(|_| Ok(http_body::Frame::data(Bytes::from(vec![b'z'; 1000]))))
        .collect();
    let body = ReplayBody::with_default_cap(StreamBody::new(futures_util::stream::iter(chunks)));
    let request = Request::put("/blobs/2").body(body).unwrap();
    let response = client.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let log = api.requests();
    assert_eq!(log.len(), 4);
    assert_eq!(log[3].body_len, 100_000);
}

#[tokio::test(start_paused = true)]
async fn connection_resets_are_retried_with_a_classifier_that_knows_them() {
    let api = MockApi::new(
        MockConfig::new()
            .endpoint(EndpointConfig::new("/items").faults(Faults::new().reset_every(2))),
    );
    let client = RetryLayer::builder()
        .classify_errors(|error: &(dyn std::error::Error + 'static)| {
            if error.is::<ConnectionReset>() {
                ErrorClass::ConnectionLost
            } else {
                ErrorClass::Fatal
            }
        })
        .build()
        .unwrap()
        .layer(api.clone());
    for i in 0..10 {
        let response = client
            .clone()
            .oneshot(get(&format!("/items/{i}")))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    // Every 2nd arrival is reset: after the first request, each first attempt lands on an even
    // arrival and its retry on the next odd one.
    assert_eq!(api.count(), 1 + 9 * 2);
}
