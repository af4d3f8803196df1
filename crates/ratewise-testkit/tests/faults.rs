//! Fault injection, latency and outages.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{at_ms, get, header_u64, status};
use http::{Request, StatusCode};
use http_body_util::Empty;
use ratewise_testkit::{
    ConnectionReset, EndpointConfig, Faults, MockApi, MockConfig, Outage, Outcome, Quota, Reason,
};
use tokio::time::Instant;
use tower::ServiceExt;

fn api(endpoint: EndpointConfig) -> MockApi {
    MockApi::new(MockConfig::new().endpoint(endpoint))
}

async fn statuses(api: &MockApi, n: usize) -> Vec<StatusCode> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(status(api, "/api").await);
    }
    out
}

#[tokio::test(start_paused = true)]
async fn random_error_rate_is_seeded_and_close_to_the_rate() {
    let faults = Faults::new()
        .error_rate(0.1, StatusCode::SERVICE_UNAVAILABLE)
        .error_rate(0.05, StatusCode::INTERNAL_SERVER_ERROR)
        .seed(7);
    let a = api(EndpointConfig::new("/api").faults(faults.clone()));
    let b = api(EndpointConfig::new("/api").faults(faults.clone()));
    let c = api(EndpointConfig::new("/api").faults(faults.seed(8)));
    let run_a = statuses(&a, 10_000).await;
    let run_b = statuses(&b, 10_000).await;
    let run_c = statuses(&c, 10_000).await;
    assert_eq!(run_a, run_b, "same seed, same sequence");
    assert_ne!(run_a, run_c, "another seed, another sequence");
    let count = |s: StatusCode| run_a.iter().filter(|&&x| x == s).count();
    // 10 000 draws: the binomial standard deviation is 30 (10 %) and 22 (5 %); allow 5 sigma.
    assert!(
        (850..=1150).contains(&count(StatusCode::SERVICE_UNAVAILABLE)),
        "{}",
        count(StatusCode::SERVICE_UNAVAILABLE)
    );
    assert!(
        (390..=610).contains(&count(StatusCode::INTERNAL_SERVER_ERROR)),
        "{}",
        count(StatusCode::INTERNAL_SERVER_ERROR)
    );
    assert_eq!(
        a.stats().faults,
        count(StatusCode::SERVICE_UNAVAILABLE) + count(StatusCode::INTERNAL_SERVER_ERROR)
    );
    assert_eq!(a.count_status(StatusCode::OK), count(StatusCode::OK));
}

#[tokio::test(start_paused = true)]
async fn error_every_is_deterministic_and_consumes_quota() {
    let api = api(EndpointConfig::new("/api")
        .quota(Quota::fixed_window(6, Duration::from_secs(60)))
        .faults(Faults::new().error_every(3, StatusCode::BAD_GATEWAY)));
    use StatusCode as S;
    assert_eq!(
        statuses(&api, 8).await,
        [
            S::OK,
            S::OK,
            S::BAD_GATEWAY,
            S::OK,
            S::OK,
            S::BAD_GATEWAY,
            S::TOO_MANY_REQUESTS,
            S::TOO_MANY_REQUESTS
        ]
    );
    assert_eq!(api.stats().counted, 6);
}

#[tokio::test(start_paused = true)]
async fn faults_carry_rate_limit_headers() {
    let api = api(EndpointConfig::new("/api")
        .quota(Quota::fixed_window(10, Duration::from_secs(60)))
        .dialect(ratewise_testkit::Dialect::GitHub)
        .faults(Faults::new().error_every(1, StatusCode::INTERNAL_SERVER_ERROR)));
    let response = get(&api, "/api").await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(header_u64(&response, "x-ratelimit-remaining"), 9);
}

#[tokio::test(start_paused = true)]
async fn resets_in_process_are_connection_reset_errors() {
    let api = api(EndpointConfig::new("/api").faults(Faults::new().reset_every(2)));
    assert_eq!(status(&api, "/api").await, StatusCode::OK);
    let request = Request::get("/api").body(Empty::<Bytes>::new()).unwrap();
    let error = api.clone().oneshot(request).await.unwrap_err();
    assert!(error.downcast_ref::<ConnectionReset>().is_some(), "{error}");
    let log = api.requests();
    assert_eq!(log[1].outcome, Outcome::ConnectionReset);
    assert_eq!(log[1].reason, Reason::Fault);
    assert_eq!(api.stats().resets, 1);
    assert_eq!(api.count_status(StatusCode::SERVICE_UNAVAILABLE), 0);
}

#[tokio::test(start_paused = true)]
async fn random_resets_at_a_rate() {
    let api = api(EndpointConfig::new("/api").faults(Faults::new().reset_rate(0.2).seed(3)));
    let mut resets = 0;
    for _ in 0..2_000 {
        let request = Request::get("/api").body(Empty::<Bytes>::new()).unwrap();
        if api.clone().oneshot(request).await.is_err() {
            resets += 1;
        }
    }
    // sd = 17.9; 5 sigma
    assert!((310..=490).contains(&resets), "{resets}");
    assert_eq!(api.stats().resets, resets);
}

#[tokio::test(start_paused = true)]
async fn fixed_latency_delays_the_answer_on_the_tokio_clock() {
    let api = api(EndpointConfig::new("/api").latency(Duration::from_millis(250)));
    let start = Instant::now();
    assert_eq!(status(&api, "/api").await, StatusCode::OK);
    assert_eq!(start.elapsed(), Duration::from_millis(250));
    let entry = &api.requests()[0];
    assert_eq!(entry.at, start, "arrival is logged before the latency");
    assert_eq!(entry.latency, Duration::from_millis(250));
}

#[tokio::test(start_paused = true)]
async fn uniform_latency_stays_in_range_and_is_seeded() {
    let config = || {
        EndpointConfig::new("/api")
            .latency_uniform(Duration::from_millis(10), Duration::from_millis(50))
            .faults(Faults::new().seed(11))
    };
    let a = api(config());
    let b = api(config());
    for _ in 0..500 {
        get(&a, "/api").await;
        get(&b, "/api").await;
    }
    let la: Vec<Duration> = a.requests().iter().map(|r| r.latency).collect();
    let lb: Vec<Duration> = b.requests().iter().map(|r| r.latency).collect();
    assert_eq!(la, lb);
    assert!(
        la.iter()
            .all(|l| (Duration::from_millis(10)..=Duration::from_millis(50)).contains(l))
    );
    let below_30 = la
        .iter()
        .filter(|l| **l < Duration::from_millis(30))
        .count();
    assert!((175..=325).contains(&below_30), "{below_30}"); // about half
}

#[tokio::test(start_paused = true)]
async fn outage_window_fails_everything_without_consuming_quota() {
    let api = api(EndpointConfig::new("/api")
        .quota(Quota::fixed_window(2, Duration::from_secs(60)))
        .outage(Outage::new(Duration::from_secs(10), Duration::from_secs(20)).with_retry_after()));
    at_ms(&api, 9_999).await;
    assert_eq!(status(&api, "/api").await, StatusCode::OK);
    at_ms(&api, 10_000).await;
    for _ in 0..5 {
        let response = get(&api, "/api").await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(header_u64(&response, "retry-after"), 10);
    }
    at_ms(&api, 19_999).await;
    assert_eq!(status(&api, "/api").await, StatusCode::SERVICE_UNAVAILABLE);
    at_ms(&api, 20_000).await;
    assert_eq!(status(&api, "/api").await, StatusCode::OK);
    assert_eq!(status(&api, "/api").await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(api.stats().outage, 6);
}

#[tokio::test(start_paused = true)]
async fn outage_as_resets() {
    let api = api(EndpointConfig::new("/api")
        .outage(Outage::new(Duration::ZERO, Duration::from_secs(1)).reset()));
    let request = Request::get("/api").body(Empty::<Bytes>::new()).unwrap();
    assert!(api.clone().oneshot(request).await.is_err());
    at_ms(&api, 1_000).await;
    assert_eq!(status(&api, "/api").await, StatusCode::OK);
    assert_eq!(api.requests()[0].reason, Reason::Outage);
}

#[tokio::test(start_paused = true)]
async fn dropped_future_before_arrival_leaves_no_trace() {
    let api =
        api(EndpointConfig::new("/api").quota(Quota::fixed_window(1, Duration::from_secs(60))));
    let request = Request::get("/api").body(Empty::<Bytes>::new()).unwrap();
    let future = api.clone().oneshot(request);
    drop(future);
    assert_eq!(api.count(), 0);
    assert_eq!(status(&api, "/api").await, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn dropped_future_during_latency_keeps_the_arrival() {
    let api = api(EndpointConfig::new("/api")
        .quota(Quota::fixed_window(1, Duration::from_secs(60)))
        .latency(Duration::from_secs(5)));
    let request = Request::get("/api").body(Empty::<Bytes>::new()).unwrap();
    let cut_short =
        tokio::time::timeout(Duration::from_secs(1), api.clone().oneshot(request)).await;
    assert!(cut_short.is_err(), "the answer was still sleeping");
    // The server saw the request: it is logged and used the quota, like a real API.
    assert_eq!(api.count(), 1);
    assert!(api.requests()[0].counted);
    assert_eq!(status(&api, "/api").await, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test(start_paused = true)]
async fn injected_errors_can_carry_retry_after() {
    let api = api(EndpointConfig::new("/api").faults(
        Faults::new()
            .error_every(1, StatusCode::SERVICE_UNAVAILABLE)
            .retry_after(Duration::from_millis(2_500)),
    ));
    let response = get(&api, "/api").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header_u64(&response, "retry-after"), 3);
}
