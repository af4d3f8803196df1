//! Each layer used ALONE over hyper-util's legacy `Client` against MockApi in server mode
//! (real loopback, real clock): mixing individual layers is how most programs start.
//!
//! The tests assert counts and statuses, never durations.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ratewise::adapt::AdaptLayer;
use ratewise::breaker::{CircuitBreakerLayer, CircuitOpen};
use ratewise::cache::{CacheLayer, CacheStatus};
use ratewise::metrics::MetricsLayer;
use ratewise::pace::{PaceLayer, Quota};
use ratewise::retry::{Backoff, RetryLayer};
use ratewise_testkit::{
    CacheHeaders, Dialect, EndpointConfig, Faults, MockApi, MockConfig, Outage,
    Quota as ServerQuota, Reason,
};
use tower::{Service, ServiceBuilder, ServiceExt};

type HyperClient = Client<HttpConnector, Full<Bytes>>;

fn hyper_client() -> HyperClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn get(url: String) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::new(Bytes::new())).unwrap()
}

/// Sends `count` GETs to `url` from `tasks` concurrent tasks; returns the statuses.
async fn send_concurrently<S>(client: S, url: &str, tasks: usize, count: usize) -> Vec<StatusCode>
where
    S: Service<Request<Full<Bytes>>, Response = http::Response<hyper::body::Incoming>>
        + Clone
        + Send
        + 'static,
    S::Error: std::fmt::Debug + Send,
    S::Future: Send,
{
    let mut handles = Vec::new();
    for task in 0..tasks {
        let client = client.clone();
        let url = url.to_owned();
        let share = count / tasks + usize::from(task < count % tasks);
        handles.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..share {
                let response = client.clone().oneshot(get(url.clone())).await.unwrap();
                statuses.push(response.status());
            }
            statuses
        }));
    }
    let mut statuses = Vec::new();
    for handle in handles {
        statuses.extend(handle.await.unwrap());
    }
    statuses
}

#[tokio::test]
async fn pace_alone_keeps_a_known_quota() {
    // 20/s with a small burst on the server; the client paces at 20/s with a burst of 1.
    let api = MockApi::new(MockConfig::new().endpoint(
        EndpointConfig::new("/items").quota(ServerQuota::gcra(20, Duration::from_secs(1), 2)),
    ));
    let server = api.serve().await.unwrap();
    let url = format!("{}/items", server.base_url());

    // Without pacing, 8 tasks at once overrun the burst.
    let bare = send_concurrently(hyper_client(), &url, 8, 16).await;
    assert!(bare.contains(&StatusCode::TOO_MANY_REQUESTS), "{bare:?}");
    api.reset_log();
    tokio::time::sleep(Duration::from_millis(200)).await; // the server bucket refills

    let paced = ServiceBuilder::new()
        .layer(PaceLayer::new(Quota::per_second(20).unwrap()))
        .service(hyper_client());
    let statuses = send_concurrently(paced, &url, 8, 24).await;
    assert_eq!(statuses.len(), 24);
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(api.count_limited(), 0);
    assert_eq!(api.count(), 24);
    server.shutdown().await;
}

#[tokio::test]
async fn adapt_alone_learns_the_limit_from_the_headers() {
    // The client is told nothing: the server's OpenAI-style headers (durations in ms) say
    // 10 per 400 ms window.
    let api = MockApi::new(
        MockConfig::new().endpoint(
            EndpointConfig::new("/v1/chat")
                .quota(ServerQuota::fixed_window(10, Duration::from_millis(400)))
                .dialect(Dialect::OpenAi),
        ),
    );
    let server = api.serve().await.unwrap();
    let url = format!("{}/v1/chat", server.base_url());

    let adapted = ServiceBuilder::new()
        .layer(AdaptLayer::new())
        .service(hyper_client());
    let statuses = send_concurrently(adapted, &url, 8, 30).await;
    assert_eq!(statuses.len(), 30);
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(api.count_limited(), 0);
    assert_eq!(api.count(), 30);
    server.shutdown().await;
}

#[tokio::test]
async fn retry_alone_recovers_idempotent_requests_and_sends_writes_once() {
    // Every second admitted request fails with 503.
    let api = MockApi::new(
        MockConfig::new().endpoint(
            EndpointConfig::new("/flaky")
                .faults(Faults::new().error_every(2, StatusCode::SERVICE_UNAVAILABLE)),
        ),
    );
    let server = api.serve().await.unwrap();
    let url = format!("{}/flaky", server.base_url());

    let retrying = ServiceBuilder::new()
        .layer(
            RetryLayer::builder()
                .backoff(Backoff::new().base(Duration::from_millis(5)))
                .seed(1)
                .build()
                .unwrap(),
        )
        .service(hyper_client());
    for _ in 0..10 {
        let response = retrying.clone().oneshot(get(url.clone())).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    // Arrivals alternate OK, 503: the first GET passed at once, each later one met a 503 and
    // was retried.
    assert_eq!(api.count_status(StatusCode::OK), 10);
    assert_eq!(api.count_status(StatusCode::SERVICE_UNAVAILABLE), 9);

    // A POST without an Idempotency-Key gets its 503 back: it was sent once.
    api.reset_log();
    let mut statuses = Vec::new();
    for n in 0..2 {
        let post = Request::post(url.clone())
            .header("x-request-id", format!("post-{n}"))
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        statuses.push(retrying.clone().oneshot(post).await.unwrap().status());
    }
    assert!(
        statuses.contains(&StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
    assert_eq!(api.count(), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn breaker_alone_stops_calling_a_dead_upstream() {
    let api = MockApi::new(MockConfig::new().endpoint(
        EndpointConfig::new("/down").outage(Outage::new(Duration::ZERO, Duration::from_secs(3600))),
    ));
    let server = api.serve().await.unwrap();
    let url = format!("{}/down", server.base_url());

    let breaker = CircuitBreakerLayer::new();
    let handle = breaker.handle();
    let guarded = ServiceBuilder::new().layer(breaker).service(hyper_client());
    let mut responses = 0;
    let mut open = 0;
    for _ in 0..30 {
        match guarded.clone().oneshot(get(url.clone())).await {
            Ok(response) => {
                assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
                responses += 1;
            }
            Err(err) => {
                let refusal = err.downcast_ref::<CircuitOpen>().expect("a CircuitOpen");
                assert_eq!(handle.state(refusal.key()).as_str(), "open");
                open += 1;
            }
        }
    }
    // The default breaker trips once 10 calls in its window are all failures.
    assert_eq!(responses, 10);
    assert_eq!(open, 20);
    assert_eq!(api.count(), 10);
    server.shutdown().await;
}

#[tokio::test]
async fn cache_alone_serves_hits_and_revalidates_with_etags() {
    let api = MockApi::new(
        MockConfig::new()
            .endpoint(
                EndpointConfig::new("/fresh")
                    .cache(CacheHeaders::new().max_age(Duration::from_secs(60))),
            )
            // No freshness: every reuse is a conditional request answered 304.
            .endpoint(EndpointConfig::new("/validated").cache(CacheHeaders::new().etag(true))),
    );
    let server = api.serve().await.unwrap();
    let base = server.base_url();

    let cache = CacheLayer::new();
    let cached = ServiceBuilder::new()
        .layer(cache.clone())
        .service(hyper_client());
    let mut statuses = Vec::new();
    let mut first_body = None;
    for _ in 0..5 {
        let response = cached
            .clone()
            .oneshot(get(format!("{base}/fresh/octocat")))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        statuses.push(*response.extensions().get::<CacheStatus>().unwrap());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(first_body.get_or_insert_with(|| body.clone()), &body);
    }
    assert_eq!(statuses[0], CacheStatus::Miss);
    assert!(
        statuses[1..].iter().all(|s| *s == CacheStatus::Hit),
        "{statuses:?}"
    );
    assert_eq!(api.count_for("/fresh"), 1);

    let mut statuses = Vec::new();
    for _ in 0..4 {
        let response = cached
            .clone()
            .oneshot(get(format!("{base}/validated/tower")))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        statuses.push(*response.extensions().get::<CacheStatus>().unwrap());
    }
    assert_eq!(statuses[0], CacheStatus::Miss);
    assert!(
        statuses[1..].iter().all(|s| *s == CacheStatus::Revalidated),
        "{statuses:?}"
    );
    let validated: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|e| e.path.starts_with("/validated"))
        .collect();
    assert_eq!(validated.len(), 4);
    assert_eq!(
        validated
            .iter()
            .filter(|e| e.reason == Reason::NotModified)
            .count(),
        3
    );
    assert!(validated[1].headers.contains_key("if-none-match"));
    assert!(cache.entry_count() <= 2);
    server.shutdown().await;
}

#[tokio::test]
async fn metrics_alone_counts_requests_by_status_class() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    // The only test of this binary that installs a recorder.
    metrics::set_global_recorder(recorder).unwrap();

    let api = MockApi::new(
        MockConfig::new()
            .endpoint(EndpointConfig::new("/ok"))
            .endpoint(
                EndpointConfig::new("/limited")
                    .quota(ServerQuota::fixed_window(1, Duration::from_secs(3600))),
            ),
    );
    let server = api.serve().await.unwrap();
    let base = server.base_url();

    let measured = ServiceBuilder::new()
        .layer(MetricsLayer::new())
        .service(hyper_client());
    for _ in 0..5 {
        let response = measured
            .clone()
            .oneshot(get(format!("{base}/ok")))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    for _ in 0..3 {
        measured
            .clone()
            .oneshot(get(format!("{base}/limited")))
            .await
            .unwrap();
    }
    // A transport error: nothing listens on the port once the server is gone.
    server.shutdown().await;
    assert!(
        measured
            .clone()
            .oneshot(get(format!("{base}/ok")))
            .await
            .is_err()
    );

    let text = handle.render();
    let value = |name: &str, label: &str| -> f64 {
        text.lines()
            .filter(|line| line.starts_with(&format!("{name}{{")) && line.contains(label))
            .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    assert_eq!(
        value("ratewise_requests_total", "status_class=\"2xx\""),
        6.0,
        "{text}"
    );
    assert_eq!(
        value("ratewise_requests_total", "status_class=\"4xx\""),
        2.0,
        "{text}"
    );
    assert_eq!(
        value("ratewise_requests_total", "status_class=\"error\""),
        1.0,
        "{text}"
    );
    assert_eq!(value("ratewise_responses_429_total", ""), 2.0, "{text}");
    assert_eq!(
        value("ratewise_request_duration_seconds_count", ""),
        9.0,
        "{text}"
    );
}
