//! Pacing against `MockApi` enforcing the same GCRA quotas, on tokio's paused clock: no 429,
//! and at least 99% of the allowed rate.
//!
//! `MockApi`'s GCRA follows nginx `limit_req`, where `burst` counts the requests *beyond* the
//! first; our `burst(b)` is the number at once, so `b` here is `b - 1` there.
#![cfg(not(loom))]

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Empty;
use ratewise_core::{ByRoute, RouteTable};
use ratewise_pace::{PaceLayer, Quota, QuotaTable, Quotas};
use ratewise_testkit::{EndpointConfig, MockApi, MockConfig, Quota as MockQuota};
use support::Lcg;
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};

const HOUR: Duration = Duration::from_secs(3600);

fn get(path: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(format!("http://api.test{path}"))
        .body(Empty::new())
        .unwrap()
}

/// Admitted (non-429) requests of `endpoint` that arrived within the first `horizon`.
fn admitted_within(api: &MockApi, endpoint: &str, horizon: Duration) -> usize {
    api.requests()
        .iter()
        .filter(|r| r.endpoint.as_deref() == Some(endpoint))
        .filter(|r| r.since_start <= horizon && r.status != StatusCode::TOO_MANY_REQUESTS)
        .count()
}

#[tokio::test(start_paused = true)]
async fn three_hours_of_5000_per_hour_with_48_callers() {
    let api = MockApi::new(
        MockConfig::new()
            .endpoint(EndpointConfig::new("/repos").quota(MockQuota::gcra(5000, HOUR, 49)))
            .log_capacity(100_000),
    );
    let layer = PaceLayer::new(Quota::per_hour(5000).unwrap().burst(50).unwrap());
    let client = ServiceBuilder::new().layer(layer).service(api.clone());
    let start = Instant::now();
    let horizon = 3 * HOUR;
    let callers: Vec<_> = (0..48)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                while start.elapsed() < horizon {
                    let response = client.clone().oneshot(get("/repos/a/b")).await.unwrap();
                    assert_eq!(response.status(), StatusCode::OK);
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
    assert_eq!(api.count_status(StatusCode::TOO_MANY_REQUESTS), 0);
    // Allowed in [0, 3 h]: the burst plus one every 720 ms.
    let allowed = 50 + 3 * 5000;
    let admitted = admitted_within(&api, "/repos", horizon);
    println!("5000/h for 3 h, 48 callers: admitted {admitted} of {allowed} allowed, 0 rejected");
    assert!(
        admitted * 100 >= allowed * 99,
        "admitted {admitted} of {allowed} allowed"
    );
    assert!(admitted <= allowed + 1);
}

#[tokio::test(start_paused = true)]
async fn the_seed_table_under_mixed_traffic() {
    let api = MockApi::new(
        MockConfig::new()
            .endpoint(EndpointConfig::new("/repos").quota(MockQuota::gcra(5000, HOUR, 49)))
            .endpoint(EndpointConfig::new("/search").quota(MockQuota::gcra(
                30,
                Duration::from_secs(60),
                4,
            )))
            .endpoint(EndpointConfig::new("/graphql").quota(MockQuota::gcra(5000, HOUR, 19)))
            .log_capacity(100_000),
    );
    let routes = RouteTable::builder()
        .route("/repos/{owner}/{repo}", "repos")
        .unwrap()
        .prefix("/search", "search")
        .unwrap()
        .route("/graphql", "graphql")
        .unwrap()
        .build();
    let table = QuotaTable::new()
        .with("repos", Quota::per_hour(5000).unwrap().burst(50).unwrap())
        .with("search", Quota::per_minute(30).unwrap().burst(5).unwrap())
        .with("graphql", Quota::per_hour(5000).unwrap().burst(20).unwrap());
    let client = ServiceBuilder::new()
        .layer(PaceLayer::keyed(ByRoute(routes), table))
        .service(api.clone());
    let start = Instant::now();
    let horizon = HOUR;
    let paths = ["/repos/rust-lang/rust", "/search/code", "/graphql"];
    // 48 callers, 16 per endpoint, each sending a fifth of its requests elsewhere.
    let callers: Vec<_> = (0..48u64)
        .map(|caller| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut rng = Lcg(caller + 1);
                while start.elapsed() < horizon {
                    let endpoint = if rng.below(5) == 0 {
                        rng.below(3)
                    } else {
                        caller % 3
                    };
                    let path = paths[endpoint as usize];
                    let response = client.clone().oneshot(get(path)).await.unwrap();
                    assert_eq!(response.status(), StatusCode::OK, "{path}");
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
    assert_eq!(api.count_status(StatusCode::TOO_MANY_REQUESTS), 0);
    for (endpoint, allowed) in [
        ("/repos", 50 + 5000),
        ("/search", 5 + 30 * 60),
        ("/graphql", 20 + 5000),
    ] {
        let admitted = admitted_within(&api, endpoint, horizon);
        println!("seed table, 1 h: {endpoint} admitted {admitted} of {allowed} allowed");
        assert!(
            admitted * 100 >= allowed * 99 && admitted <= allowed + 1,
            "{endpoint}: admitted {admitted} of {allowed} allowed"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn chained_quotas_against_a_server_enforcing_both() {
    let api = MockApi::new(
        MockConfig::new().endpoint(
            EndpointConfig::new("/api")
                .quota(MockQuota::gcra(10, Duration::from_secs(1), 9))
                .quota(MockQuota::gcra(100, Duration::from_secs(60), 19)),
        ),
    );
    let quotas = Quotas::new(&[
        Quota::per_second(10).unwrap().burst(10).unwrap(),
        Quota::per_minute(100).unwrap().burst(20).unwrap(),
    ])
    .unwrap();
    let client = ServiceBuilder::new()
        .layer(PaceLayer::new(quotas))
        .service(api.clone());
    let start = Instant::now();
    let horizon = Duration::from_secs(600);
    let callers: Vec<_> = (0..16)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                while start.elapsed() < horizon {
                    let response = client.clone().oneshot(get("/api/x")).await.unwrap();
                    assert_eq!(response.status(), StatusCode::OK);
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
    assert_eq!(api.count_status(StatusCode::TOO_MANY_REQUESTS), 0);
    let allowed = 20 + 10 * 100;
    let admitted = admitted_within(&api, "/api", horizon);
    println!("chained 10/s and 100/min, 10 min: admitted {admitted} of {allowed} allowed");
    assert!(
        admitted * 100 >= allowed * 99 && admitted <= allowed + 1,
        "admitted {admitted} of {allowed} allowed"
    );
    // The fast quota still holds within the first burst.
    assert!(api.max_in_window("/api", Duration::from_millis(999)) <= 10 + 9);
}
