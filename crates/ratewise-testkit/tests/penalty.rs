//! Penalty blocks: a client that keeps calling while refused is refused everything for a while.

mod common;

use std::time::Duration;

use common::{at_ms, get, header_u64};
use http::StatusCode;
use ratewise_testkit::{EndpointConfig, MockApi, MockConfig, Penalty, Quota, Reason};

const OK: StatusCode = StatusCode::OK;
const LIMITED: StatusCode = StatusCode::FORBIDDEN;

fn api(quota: Quota, penalty: Option<Penalty>) -> MockApi {
    let mut endpoint = EndpointConfig::new("/api")
        .quota(quota)
        .limited_status(LIMITED);
    if let Some(penalty) = penalty {
        endpoint = endpoint.penalty(penalty);
    }
    MockApi::new(MockConfig::new().endpoint(endpoint))
}

/// Sends one GET at `ms` after t0 and checks its status, logged reason and `Retry-After`.
async fn expect(
    api: &MockApi,
    ms: u64,
    status: StatusCode,
    reason: Reason,
    retry_after: Option<u64>,
) {
    at_ms(api, ms).await;
    let response = get(api, "/api").await;
    assert_eq!(response.status(), status, "status at {ms} ms");
    let logged = api.requests().pop().unwrap();
    assert_eq!(logged.reason, reason, "reason at {ms} ms");
    assert_eq!(logged.counted, status == OK, "counted at {ms} ms");
    match retry_after {
        Some(secs) => assert_eq!(header_u64(&response, "retry-after"), secs, "at {ms} ms"),
        None => assert!(
            response.headers().get("retry-after").is_none(),
            "at {ms} ms"
        ),
    }
}

#[tokio::test(start_paused = true)]
async fn block_starts_at_the_nth_refusal_and_lasts_exactly_block_for() {
    let api = api(
        Quota::fixed_window(2, Duration::from_secs(1)),
        Some(Penalty::block_after(
            3,
            Duration::from_millis(500),
            Duration::from_secs(5),
        )),
    );
    expect(&api, 0, OK, Reason::Ok, None).await;
    expect(&api, 0, OK, Reason::Ok, None).await;
    expect(&api, 100, LIMITED, Reason::Limited, Some(1)).await;
    expect(&api, 200, LIMITED, Reason::Limited, Some(1)).await;
    // The third refusal within 500 ms is still a quota refusal, but announces the block.
    expect(&api, 300, LIMITED, Reason::Limited, Some(5)).await;
    expect(&api, 300, LIMITED, Reason::Blocked, Some(5)).await;
    // A new window has opened and the quota would admit, but the block refuses.
    expect(&api, 1_000, LIMITED, Reason::Blocked, Some(5)).await;
    expect(&api, 5_299, LIMITED, Reason::Blocked, Some(1)).await;
    // The block is [300 ms, 5300 ms): the quota judges again at its end.
    expect(&api, 5_300, OK, Reason::Ok, None).await;

    let stats = api.stats();
    assert_eq!(stats.blocked, 3);
    assert_eq!(stats.limited, 6);
    assert_eq!(stats.counted, 3);
    assert_eq!(api.count_limited(), 6);
    assert_eq!(api.count_status(LIMITED), 6);
}

#[tokio::test(start_paused = true)]
async fn only_refusals_inside_the_window_count() {
    let api = api(
        Quota::fixed_window(1, Duration::from_secs(10)),
        Some(Penalty::block_after(
            2,
            Duration::from_millis(500),
            Duration::from_secs(5),
        )),
    );
    expect(&api, 0, OK, Reason::Ok, None).await;
    expect(&api, 100, LIMITED, Reason::Limited, Some(10)).await;
    // The refusal at 100 ms is outside (600 - 500, 600]: no block.
    expect(&api, 600, LIMITED, Reason::Limited, Some(10)).await;
    // 600 ms is inside (1099 - 500, 1099]: this second refusal starts the block.
    expect(&api, 1_099, LIMITED, Reason::Limited, Some(9)).await;
    expect(&api, 1_099, LIMITED, Reason::Blocked, Some(5)).await;
}

#[tokio::test(start_paused = true)]
async fn requests_during_a_block_neither_extend_it_nor_count_toward_the_next() {
    let api = api(
        Quota::fixed_window(1, Duration::from_secs(1)),
        Some(Penalty::block_after(
            2,
            Duration::from_secs(10),
            Duration::from_secs(3),
        )),
    );
    expect(&api, 0, OK, Reason::Ok, None).await;
    expect(&api, 10, LIMITED, Reason::Limited, Some(1)).await;
    expect(&api, 20, LIMITED, Reason::Limited, Some(3)).await;
    // Hammering through the block [20 ms, 3020 ms) does not push its end.
    for ms in (100..3_020u64).step_by(100) {
        let left_secs = (3_020 - ms).div_ceil(1_000);
        expect(&api, ms, LIMITED, Reason::Blocked, Some(left_secs)).await;
    }
    expect(&api, 3_020, OK, Reason::Ok, None).await;
    // The count restarted empty when the block started: one refusal does not block again...
    expect(&api, 3_030, LIMITED, Reason::Limited, Some(1)).await;
    // ...the second does.
    expect(&api, 3_040, LIMITED, Reason::Limited, Some(3)).await;
    expect(&api, 3_050, LIMITED, Reason::Blocked, Some(3)).await;
}

#[tokio::test(start_paused = true)]
async fn without_a_penalty_refusals_cost_nothing() {
    let api = api(Quota::fixed_window(1, Duration::from_secs(1)), None);
    expect(&api, 0, OK, Reason::Ok, None).await;
    for _ in 0..1_000 {
        expect(&api, 999, LIMITED, Reason::Limited, Some(1)).await;
    }
    expect(&api, 1_000, OK, Reason::Ok, None).await;
    assert_eq!(api.stats().blocked, 0);
}

fn charged_api(charge: bool) -> MockApi {
    let long = Quota::fixed_window(3, Duration::from_secs(10));
    let long = if charge { long.charge_refusals() } else { long };
    MockApi::new(
        MockConfig::new().endpoint(
            EndpointConfig::new("/api")
                .quota(Quota::fixed_window(1, Duration::from_secs(1)))
                .quota(long)
                .limited_status(LIMITED),
        ),
    )
}

#[tokio::test(start_paused = true)]
async fn charge_refusals_consumes_where_the_quota_has_room() {
    let api = charged_api(true);
    expect(&api, 0, OK, Reason::Ok, None).await;
    // Refused by the 1 per second quota, charged to the 3 per 10 s one.
    expect(&api, 100, LIMITED, Reason::Limited, Some(1)).await;
    expect(&api, 200, LIMITED, Reason::Limited, Some(1)).await;
    // A new second: the short quota has room, but the refusals spent the long one.
    expect(&api, 1_000, LIMITED, Reason::Limited, Some(9)).await;
    // A full quota is not charged into debt: its next window is whole.
    expect(&api, 10_000, OK, Reason::Ok, None).await;
    expect(&api, 11_000, OK, Reason::Ok, None).await;
    expect(&api, 12_000, OK, Reason::Ok, None).await;
    assert_eq!(api.stats().counted, 4);
}

#[tokio::test(start_paused = true)]
async fn without_charge_refusals_refused_requests_consume_nothing() {
    let api = charged_api(false);
    expect(&api, 0, OK, Reason::Ok, None).await;
    expect(&api, 100, LIMITED, Reason::Limited, Some(1)).await;
    expect(&api, 200, LIMITED, Reason::Limited, Some(1)).await;
    expect(&api, 1_000, OK, Reason::Ok, None).await;
    expect(&api, 2_000, OK, Reason::Ok, None).await;
    expect(&api, 3_000, LIMITED, Reason::Limited, Some(7)).await;
}
