//! The request log: bounded, drainable, with the helpers.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{at_ms, status};
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use ratewise_testkit::{EndpointConfig, MockApi, MockConfig, Quota};
use tower::ServiceExt;

#[tokio::test(start_paused = true)]
async fn bounded_log_drops_the_oldest_and_counts_them() {
    let api = MockApi::new(
        MockConfig::new()
            .endpoint(EndpointConfig::new("/api"))
            .log_capacity(3),
    );
    for i in 0..5 {
        status(&api, &format!("/api/{i}")).await;
    }
    let paths: Vec<String> = api.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/api/2", "/api/3", "/api/4"]);
    let stats = api.stats();
    assert_eq!(stats.total, 5);
    assert_eq!(stats.dropped_log_entries, 2);
    assert_eq!(stats.by_status[&200], 5);
    assert_eq!(api.count(), 3);
}

#[tokio::test(start_paused = true)]
async fn drain_takes_the_log_and_stats_keep_counting() {
    let api = MockApi::new(MockConfig::new().endpoint(
        EndpointConfig::new("/api").quota(Quota::fixed_window(2, Duration::from_secs(1))),
    ));
    for _ in 0..3 {
        status(&api, "/api").await;
    }
    let drained = api.drain();
    assert_eq!(drained.len(), 3);
    assert_eq!(drained[2].status, StatusCode::TOO_MANY_REQUESTS);
    assert!(drained[2].is_limited());
    assert_eq!(api.count(), 0);
    assert_eq!(api.stats().limited, 1);
    status(&api, "/api").await;
    assert_eq!(api.count_limited(), 1);
    assert_eq!(api.stats().total, 4);
    api.reset_log();
    assert_eq!(api.stats().total, 0);
    assert_eq!(api.count(), 0);
}

#[tokio::test(start_paused = true)]
async fn entries_record_arrival_method_path_headers_and_body() {
    let api = MockApi::new(MockConfig::new().endpoint(EndpointConfig::new("/api")));
    at_ms(&api, 1_234).await;
    let request = Request::post("/api/items?x=1")
        .header("idempotency-key", "abc")
        .header("authorization", "Bearer secret")
        .header("x-unrelated", "no")
        .body(Full::new(Bytes::from_static(b"payload")))
        .unwrap();
    api.clone().oneshot(request).await.unwrap();
    let entry = &api.requests()[0];
    assert_eq!(entry.since_start, Duration::from_millis(1_234));
    assert_eq!(entry.at, api.t0() + Duration::from_millis(1_234));
    assert_eq!(entry.method, Method::POST);
    assert_eq!(entry.path, "/api/items?x=1");
    assert_eq!(entry.endpoint.as_deref(), Some("/api"));
    assert_eq!(entry.headers["idempotency-key"], "abc");
    assert_eq!(entry.headers["authorization"], "present");
    assert!(entry.headers.get("x-unrelated").is_none());
    assert_eq!(entry.body_len, 7);
    assert_eq!(entry.body, Bytes::from_static(b"payload"));
}

#[tokio::test(start_paused = true)]
async fn max_in_window_counts_admitted_per_endpoint() {
    let api = MockApi::new(
        MockConfig::new()
            .endpoint(
                EndpointConfig::new("/a").quota(Quota::fixed_window(2, Duration::from_secs(1))),
            )
            .endpoint(EndpointConfig::new("/b")),
    );
    // /a: 2 admitted at 900 ms, 2 admitted at 1000 ms (new aligned window), 1 refused.
    at_ms(&api, 900).await;
    status(&api, "/a").await;
    status(&api, "/a").await;
    at_ms(&api, 1_000).await;
    status(&api, "/a").await;
    status(&api, "/a").await;
    status(&api, "/a").await;
    status(&api, "/b").await;
    assert_eq!(api.max_in_window("/a", Duration::from_secs(1)), 4);
    assert_eq!(api.max_in_window("/a", Duration::from_millis(100)), 2); // [900, 1000) excludes 1000
    assert_eq!(api.max_in_window("/a", Duration::from_millis(101)), 4);
    assert_eq!(api.max_sent_in_window("/a", Duration::from_secs(1)), 5);
    assert_eq!(api.max_in_window("*", Duration::from_secs(1)), 5);
    assert_eq!(api.max_sent_in_window("", Duration::from_secs(1)), 6);
    assert_eq!(api.count_for("/b"), 1);
}
