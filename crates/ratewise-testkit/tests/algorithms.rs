//! Quota enforcement is exact at the boundaries, for every algorithm.

mod common;

use std::time::Duration;

use common::{at_ms, get, header, status};
use http::StatusCode;
use ratewise_testkit::{EndpointConfig, MockApi, MockConfig, Quota};

const OK: StatusCode = StatusCode::OK;
const LIMITED: StatusCode = StatusCode::TOO_MANY_REQUESTS;

fn api_with(quota: Quota) -> MockApi {
    MockApi::new(MockConfig::new().endpoint(EndpointConfig::new("/api").quota(quota)))
}

/// Sends one request at each (ms, expected status) and checks it.
async fn script(api: &MockApi, steps: &[(u64, StatusCode)]) {
    for &(ms, expected) in steps {
        at_ms(api, ms).await;
        assert_eq!(status(api, "/api/x").await, expected, "request at {ms} ms");
    }
}

#[tokio::test(start_paused = true)]
async fn gcra_10_per_second_burst_1_boundaries() {
    let api = api_with(Quota::gcra(10, Duration::from_secs(1), 1));
    // t=0: TAT 100; t=99: backlog 1 ms <= 100 ms -> ok, TAT 200; t=100: backlog 100 ms = burst
    // tolerance -> ok, TAT 300; a second at t=100: backlog 200 ms -> refused (no consumption);
    // t=199: backlog 101 ms -> refused; t=200: backlog 100 -> ok.
    script(
        &api,
        &[
            (0, OK),
            (99, OK),
            (100, OK),
            (100, LIMITED),
            (199, LIMITED),
            (200, OK),
            (200, LIMITED),
        ],
    )
    .await;
    assert_eq!(api.count_limited(), 3);
}

#[tokio::test(start_paused = true)]
async fn gcra_burst_b_admits_b_plus_one_back_to_back() {
    let api = api_with(Quota::gcra(10, Duration::from_secs(1), 4));
    for _ in 0..5 {
        assert_eq!(status(&api, "/api").await, OK);
    }
    let refused = get(&api, "/api").await;
    assert_eq!(refused.status(), LIMITED);
    // next slot at 100 ms: Retry-After rounds up to 1 s
    assert_eq!(header(&refused, "retry-after"), "1");
    script(&api, &[(99, LIMITED), (100, OK), (100, LIMITED), (200, OK)]).await;
}

#[tokio::test(start_paused = true)]
async fn gcra_burst_0_spaces_requests_by_the_emission_interval() {
    let api = api_with(Quota::gcra(10, Duration::from_secs(1), 0));
    script(
        &api,
        &[
            (0, OK),
            (0, LIMITED),
            (99, LIMITED),
            (100, OK),
            (150, LIMITED),
            (250, OK),
            (349, LIMITED),
            (350, OK),
        ],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn gcra_with_a_rate_that_does_not_divide_the_period() {
    // T = 1/3 s = 333_333_333.33 ns: no rounding of T, so no request passes a nanosecond early.
    let api = api_with(Quota::gcra(3, Duration::from_secs(1), 0));
    // tokio timers have millisecond resolution; `advance` moves the paused clock exactly.
    let mut now = Duration::ZERO;
    for (at_ns, expected) in [
        (0, OK),
        (333_333_333, LIMITED),
        (333_333_334, OK),
        // the second came 2/3 ns late, so TAT = 333_333_334 + 333_333_333.33 = 666_666_667.33
        (666_666_667, LIMITED),
        (666_666_668, OK),
    ] {
        let target = Duration::from_nanos(at_ns);
        tokio::time::advance(target - now).await;
        now = target;
        assert_eq!(
            status(&api, "/api").await,
            expected,
            "request at {at_ns} ns"
        );
        assert_eq!(api.requests().last().unwrap().since_start, now);
    }
}

#[tokio::test(start_paused = true)]
async fn fixed_window_aligned_to_the_clock() {
    let api = api_with(Quota::fixed_window(3, Duration::from_secs(1)));
    // The first request comes at 500 ms, but the window is [0, 1 s).
    script(
        &api,
        &[
            (500, OK),
            (500, OK),
            (999, OK),
            (999, LIMITED),
            (1000, OK),
            (1000, OK),
            (1999, OK),
            (1999, LIMITED),
            (2000, OK),
        ],
    )
    .await;
    // Across the 1 s edge the algorithm allows 2n in a window of one period.
    assert_eq!(api.max_in_window("/api", Duration::from_secs(1)), 5);
}

#[tokio::test(start_paused = true)]
async fn fixed_window_aligned_retry_after_is_the_window_end() {
    let api = api_with(Quota::fixed_window(1, Duration::from_secs(10)));
    at_ms(&api, 2_500).await;
    assert_eq!(status(&api, "/api").await, OK);
    let refused = get(&api, "/api").await;
    assert_eq!(header(&refused, "retry-after"), "8"); // 7.5 s, rounded up
}

#[tokio::test(start_paused = true)]
async fn fixed_window_from_first_request() {
    let api = api_with(Quota::fixed_window_from_first(3, Duration::from_secs(1)));
    script(
        &api,
        &[
            (500, OK),
            (600, OK),
            (700, OK),
            (1000, LIMITED), // an aligned window would have reset here
            (1499, LIMITED),
            (1500, OK), // window [1500, 2500)
            (2499, OK),
            (2499, OK),
            (2499, LIMITED),
            (2500, OK),
        ],
    )
    .await;
    let refused_at = api.requests().into_iter().find(|r| r.is_limited()).unwrap();
    assert_eq!(refused_at.since_start, Duration::from_millis(1000));
}

#[tokio::test(start_paused = true)]
async fn fixed_window_from_first_waits_for_a_new_first_request() {
    let api = api_with(Quota::fixed_window_from_first(1, Duration::from_secs(1)));
    // After a long idle gap the window starts at the new request, not at a multiple of 1 s.
    script(&api, &[(0, OK), (5_300, OK), (6_299, LIMITED), (6_300, OK)]).await;
}

#[tokio::test(start_paused = true)]
async fn sliding_log_is_a_strict_rolling_window() {
    let api = api_with(Quota::sliding_log(3, Duration::from_secs(1)));
    script(
        &api,
        &[
            (0, OK),
            (300, OK),
            (600, OK),
            (900, LIMITED),
            (999, LIMITED),
            (1000, OK), // the request at 0 left the window (t - 1 s, t]
            (1000, LIMITED),
            (1299, LIMITED),
            (1300, OK),
            (1600, OK),
        ],
    )
    .await;
    assert_eq!(api.max_in_window("/api", Duration::from_secs(1)), 3);
    // [300 ms, 1300 ms) saw 300, 600, 900, 999, 1000, 1000, 1299.
    assert_eq!(api.max_sent_in_window("/api", Duration::from_secs(1)), 7);
}

#[tokio::test(start_paused = true)]
async fn sliding_log_retry_after_is_when_the_oldest_leaves() {
    let api = api_with(Quota::sliding_log(2, Duration::from_secs(10)));
    script(&api, &[(0, OK), (4_000, OK)]).await;
    at_ms(&api, 6_500).await;
    let refused = get(&api, "/api").await;
    assert_eq!(refused.status(), LIMITED);
    assert_eq!(header(&refused, "retry-after"), "4"); // 3.5 s until the request at 0 leaves
}

#[tokio::test(start_paused = true)]
async fn refused_requests_consume_no_quota() {
    let api = api_with(Quota::sliding_log(2, Duration::from_secs(1)));
    script(&api, &[(0, OK), (0, OK)]).await;
    for ms in (1..1000).step_by(7) {
        at_ms(&api, ms).await;
        assert_eq!(status(&api, "/api").await, LIMITED);
    }
    // Had refusals counted, the log would still be full at 1 s.
    script(&api, &[(1000, OK), (1000, OK), (1000, LIMITED)]).await;
}

#[tokio::test(start_paused = true)]
async fn chained_quotas_all_must_pass_and_only_admitted_requests_consume() {
    let api = MockApi::new(
        MockConfig::new().endpoint(
            EndpointConfig::new("/api")
                .quota(Quota::gcra(10, Duration::from_secs(1), 2)) // 3 at once, then 1 per 100 ms
                .quota(Quota::fixed_window(4, Duration::from_secs(1))),
        ),
    );
    script(
        &api,
        &[
            (0, OK),
            (0, OK),
            (0, OK),
            (0, LIMITED),   // GCRA refuses; must not use the window's fourth slot
            (100, OK),      // GCRA slot and the window's fourth
            (200, LIMITED), // window exhausted; must not consume the GCRA slot
            (1000, OK),
            (1000, OK),
            (1000, OK),
            (1000, LIMITED), // GCRA burst back (refill 800 ms) but the 4th slot: TAT check
        ],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn shared_quota_spans_endpoints() {
    let api = MockApi::new(
        MockConfig::new()
            .endpoint(
                EndpointConfig::new("/a").quota(Quota::fixed_window(10, Duration::from_secs(1))),
            )
            .endpoint(EndpointConfig::new("/b"))
            .shared_quota(Quota::fixed_window(3, Duration::from_secs(1))),
    );
    assert_eq!(status(&api, "/a").await, OK);
    assert_eq!(status(&api, "/b").await, OK);
    assert_eq!(status(&api, "/b/1").await, OK);
    assert_eq!(status(&api, "/a").await, LIMITED);
    assert_eq!(status(&api, "/b").await, LIMITED);
    assert_eq!(status(&api, "/unknown").await, StatusCode::NOT_FOUND);
    at_ms(&api, 1000).await;
    assert_eq!(status(&api, "/a").await, OK);
}

#[tokio::test(start_paused = true)]
async fn longest_prefix_wins_on_segment_boundaries() {
    let api = MockApi::new(
        MockConfig::new()
            .endpoint(
                EndpointConfig::new("/repos")
                    .quota(Quota::fixed_window(1, Duration::from_secs(60))),
            )
            .endpoint(
                EndpointConfig::new("/repos/search/")
                    .quota(Quota::fixed_window(2, Duration::from_secs(60))),
            ),
    );
    assert_eq!(status(&api, "/repos/search?q=x").await, OK);
    assert_eq!(status(&api, "/repos/search/code").await, OK);
    assert_eq!(status(&api, "/repos/search").await, LIMITED);
    assert_eq!(status(&api, "/repos/a/b").await, OK);
    assert_eq!(status(&api, "/repos").await, LIMITED);
    assert_eq!(status(&api, "/reposx").await, StatusCode::NOT_FOUND);
    assert_eq!(api.count_for("/repos/search"), 3);
    assert_eq!(api.count_for("/repos"), 2);
    assert_eq!(api.count_for("*"), 6);
}
