//! Each dialect's headers are what the dialect says; parsed by hand here.

mod common;

use std::time::{Duration, UNIX_EPOCH};

use common::{at_ms, body_string, get, header, header_u64};
use http::StatusCode;
use ratewise_testkit::{
    DEFAULT_WALL_CLOCK_START_SECS, Dialect, EndpointConfig, MockApi, MockConfig, Quota,
    RetryAfterFormat,
};

const START: u64 = DEFAULT_WALL_CLOCK_START_SECS; // 2026-01-01T00:00:00Z, a Thursday

fn api(endpoint: EndpointConfig) -> MockApi {
    MockApi::new(MockConfig::new().endpoint(endpoint))
}

fn window_5_per_minute() -> EndpointConfig {
    EndpointConfig::new("/api").quota(Quota::fixed_window(5, Duration::from_secs(60)))
}

/// Splits a structured-field list into members, and a member into (item, params).
fn sf_members(value: &str) -> Vec<(String, Vec<(String, String)>)> {
    value
        .split(',')
        .map(|member| {
            let mut parts = member.trim().split(';');
            let item = parts.next().unwrap().to_owned();
            let params = parts
                .map(|p| {
                    let (k, v) = p.split_once('=').expect("key=value");
                    assert_eq!(k, k.to_lowercase(), "sf keys are lowercase");
                    assert!(
                        !k.starts_with(' '),
                        "no space before a parameter key: {value}"
                    );
                    (k.to_owned(), v.to_owned())
                })
                .collect();
            (item, params)
        })
        .collect()
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> &'a str {
    &params.iter().find(|(k, _)| k == key).unwrap().1
}

#[tokio::test(start_paused = true)]
async fn date_header_on_every_response_follows_the_tokio_clock() {
    let api = api(window_5_per_minute());
    at_ms(&api, 10_000).await;
    let response = get(&api, "/api").await;
    assert_eq!(header(&response, "date"), "Thu, 01 Jan 2026 00:00:10 GMT");
    let not_found = get(&api, "/nowhere").await;
    assert_eq!(not_found.status(), StatusCode::NOT_FOUND);
    assert_eq!(header(&not_found, "date"), "Thu, 01 Jan 2026 00:00:10 GMT");

    let custom = MockApi::new(
        MockConfig::new()
            .wall_clock_start(UNIX_EPOCH + Duration::from_secs(784_111_777)) // 1994-11-06 08:49:37
            .endpoint(window_5_per_minute().dialect(Dialect::GitHub)),
    );
    let response = get(&custom, "/api").await;
    assert_eq!(header(&response, "date"), "Sun, 06 Nov 1994 08:49:37 GMT");
    assert_eq!(header_u64(&response, "x-ratelimit-reset"), 784_111_777 + 60);
}

#[tokio::test(start_paused = true)]
async fn github() {
    let api = api(window_5_per_minute().dialect(Dialect::GitHub));
    at_ms(&api, 10_000).await;
    let response = get(&api, "/api/repos").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header_u64(&response, "x-ratelimit-limit"), 5);
    assert_eq!(header_u64(&response, "x-ratelimit-remaining"), 4);
    assert_eq!(header_u64(&response, "x-ratelimit-used"), 1);
    assert_eq!(header_u64(&response, "x-ratelimit-reset"), START + 60); // epoch, window end
    assert_eq!(header(&response, "x-ratelimit-resource"), "core");
    assert!(response.headers().get("retry-after").is_none());
    for _ in 0..4 {
        get(&api, "/api").await;
    }
    at_ms(&api, 10_500).await;
    let refused = get(&api, "/api").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header_u64(&refused, "x-ratelimit-remaining"), 0);
    assert_eq!(header_u64(&refused, "x-ratelimit-used"), 5);
    assert_eq!(header_u64(&refused, "retry-after"), 50); // 49.5 s rounded up
}

#[tokio::test(start_paused = true)]
async fn github_403_with_named_resource_and_gcra() {
    let api = api(EndpointConfig::new("/search")
        .quota(Quota::gcra(30, Duration::from_secs(60), 9)) // T = 2 s, bucket of 10
        .dialect(Dialect::GitHub)
        .limited_status(StatusCode::FORBIDDEN)
        .resource("search"));
    for expected in (0..10).rev() {
        let response = get(&api, "/search/code").await;
        assert_eq!(header_u64(&response, "x-ratelimit-remaining"), expected);
    }
    let refused = get(&api, "/search").await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(header_u64(&refused, "x-ratelimit-limit"), 10);
    assert_eq!(header(&refused, "x-ratelimit-resource"), "search");
    // the bucket is full again after 10 slots of 2 s
    assert_eq!(header_u64(&refused, "x-ratelimit-reset"), START + 20);
    assert_eq!(header_u64(&refused, "retry-after"), 2);
    assert_eq!(api.count_limited(), 1);
    assert_eq!(api.count_status(StatusCode::FORBIDDEN), 1);
    at_ms(&api, 3_000).await;
    let response = get(&api, "/search").await;
    assert_eq!(response.status(), StatusCode::OK);
    // at 3 s: backlog was 17 s, this one makes it 19 s -> 0 left (next free at 4 s)
    assert_eq!(header_u64(&response, "x-ratelimit-remaining"), 0);
    assert_eq!(header_u64(&response, "x-ratelimit-reset"), START + 22);
}

#[tokio::test(start_paused = true)]
async fn draft8_lists_every_quota_as_named_items() {
    let api = api(EndpointConfig::new("/api")
        .quota(Quota::fixed_window(5, Duration::from_secs(60)).name("burst"))
        .quota(Quota::sliding_log(100, Duration::from_secs(3600)))
        .dialect(Dialect::Draft8));
    at_ms(&api, 10_000).await;
    let response = get(&api, "/api").await;
    let limits = sf_members(header(&response, "ratelimit"));
    assert_eq!(limits.len(), 2);
    assert_eq!(limits[0].0, "\"burst\"");
    assert_eq!(param(&limits[0].1, "r"), "4");
    assert_eq!(param(&limits[0].1, "t"), "50");
    assert_eq!(limits[1].0, "\"100-in-3600s\"");
    assert_eq!(param(&limits[1].1, "r"), "99");
    assert_eq!(param(&limits[1].1, "t"), "3600");
    let policies = sf_members(header(&response, "ratelimit-policy"));
    assert_eq!(policies[0].0, "\"burst\"");
    assert_eq!(param(&policies[0].1, "q"), "5");
    assert_eq!(param(&policies[0].1, "w"), "60");
    assert_eq!(param(&policies[1].1, "q"), "100");
    assert_eq!(param(&policies[1].1, "w"), "3600");
}

#[tokio::test(start_paused = true)]
async fn draft7_dictionary_reports_the_most_restrictive_quota() {
    let api = api(EndpointConfig::new("/api")
        .quota(Quota::sliding_log(100, Duration::from_secs(3600)))
        .quota(Quota::fixed_window(5, Duration::from_secs(60)))
        .dialect(Dialect::Draft7));
    at_ms(&api, 10_000).await;
    let response = get(&api, "/api").await;
    let dict: Vec<(String, String)> = header(&response, "ratelimit")
        .split(", ")
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    assert_eq!(
        dict,
        vec![
            ("limit".to_owned(), "5".to_owned()),
            ("remaining".to_owned(), "4".to_owned()),
            ("reset".to_owned(), "50".to_owned()),
        ]
    );
    assert_eq!(header(&response, "ratelimit-policy"), "100;w=3600, 5;w=60");
}

#[tokio::test(start_paused = true)]
async fn legacy_x_ratelimit_uses_epoch_reset() {
    let api = api(EndpointConfig::new("/api")
        .quota(Quota::sliding_log(2, Duration::from_millis(1500)))
        .dialect(Dialect::LegacyXRateLimit));
    at_ms(&api, 200).await;
    let response = get(&api, "/api").await;
    assert_eq!(header_u64(&response, "x-ratelimit-limit"), 2);
    assert_eq!(header_u64(&response, "x-ratelimit-remaining"), 1);
    // fully restored at 1.7 s -> epoch rounded up to START + 2
    assert_eq!(header_u64(&response, "x-ratelimit-reset"), START + 2);
    assert!(response.headers().get("x-ratelimit-used").is_none());
}

#[tokio::test(start_paused = true)]
async fn openai_go_durations() {
    let api = MockApi::new(
        MockConfig::new()
            .endpoint(
                EndpointConfig::new("/v1/chat")
                    .quota(Quota::gcra(100, Duration::from_secs(1), 9))
                    .dialect(Dialect::OpenAi),
            )
            .endpoint(
                EndpointConfig::new("/v1/files")
                    .quota(Quota::fixed_window(50, Duration::from_secs(600)))
                    .dialect(Dialect::OpenAi),
            ),
    );
    let response = get(&api, "/v1/chat").await;
    assert_eq!(header_u64(&response, "x-ratelimit-limit-requests"), 10);
    assert_eq!(header_u64(&response, "x-ratelimit-remaining-requests"), 9);
    assert_eq!(header(&response, "x-ratelimit-reset-requests"), "10ms");
    at_ms(&api, 240_000).await;
    let response = get(&api, "/v1/files").await;
    assert_eq!(header_u64(&response, "x-ratelimit-remaining-requests"), 49);
    assert_eq!(header(&response, "x-ratelimit-reset-requests"), "6m0s");
    at_ms(&api, 240_500).await;
    let response = get(&api, "/v1/files").await;
    assert_eq!(header(&response, "x-ratelimit-reset-requests"), "5m59.5s");
}

#[tokio::test(start_paused = true)]
async fn discord_buckets_reset_after_and_scope() {
    let api = MockApi::new(
        MockConfig::new()
            .endpoint(
                EndpointConfig::new("/channels")
                    .quota(
                        Quota::fixed_window_from_first(2, Duration::from_millis(1500))
                            .name("abcd1234"),
                    )
                    .dialect(Dialect::Discord),
            )
            .endpoint(EndpointConfig::new("/guilds").dialect(Dialect::Discord))
            .shared_quota(Quota::fixed_window(4, Duration::from_secs(1))),
    );
    let first = get(&api, "/channels/1/messages").await;
    assert_eq!(header_u64(&first, "x-ratelimit-limit"), 2);
    assert_eq!(header_u64(&first, "x-ratelimit-remaining"), 1);
    assert_eq!(header(&first, "x-ratelimit-reset-after"), "1.500");
    assert_eq!(
        header(&first, "x-ratelimit-reset"),
        format!("{}.500", START + 1)
    );
    assert_eq!(header(&first, "x-ratelimit-bucket"), "abcd1234");
    assert!(first.headers().get("x-ratelimit-scope").is_none());
    at_ms(&api, 250).await;
    get(&api, "/channels/1/messages").await;
    let refused = get(&api, "/channels/1/messages").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&refused, "x-ratelimit-scope"), "user");
    assert!(refused.headers().get("x-ratelimit-global").is_none());
    assert_eq!(header(&refused, "x-ratelimit-reset-after"), "1.250");
    assert_eq!(header_u64(&refused, "retry-after"), 2);
    let body = body_string(refused).await;
    assert!(body.contains("\"retry_after\": 1.250"), "{body}");
    assert!(body.contains("\"global\": false"), "{body}");

    // The shared quota (4/s) is global: two more on /guilds exhaust it.
    get(&api, "/guilds/1").await;
    get(&api, "/guilds/1").await;
    let refused = get(&api, "/guilds/1").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&refused, "x-ratelimit-scope"), "global");
    assert_eq!(header(&refused, "x-ratelimit-global"), "true");
    assert_eq!(header(&refused, "x-ratelimit-bucket"), "shared");
    assert!(body_string(refused).await.contains("\"global\": true"));
}

#[tokio::test(start_paused = true)]
async fn dialect_none_sends_only_retry_after() {
    let api =
        api(EndpointConfig::new("/api").quota(Quota::fixed_window(1, Duration::from_secs(10))));
    let ok = get(&api, "/api").await;
    let refused = get(&api, "/api").await;
    for response in [&ok, &refused] {
        assert!(
            response
                .headers()
                .keys()
                .all(|name| !name.as_str().contains("ratelimit")),
            "{:?}",
            response.headers()
        );
    }
    assert_eq!(header_u64(&refused, "retry-after"), 10);
}

#[tokio::test(start_paused = true)]
async fn retry_after_as_http_date_and_omitted() {
    let api = MockApi::new(
        MockConfig::new()
            .endpoint(
                EndpointConfig::new("/date")
                    .quota(Quota::fixed_window(1, Duration::from_secs(10)))
                    .retry_after(RetryAfterFormat::HttpDate),
            )
            .endpoint(
                EndpointConfig::new("/omit")
                    .quota(Quota::gcra(1, Duration::from_millis(2_300), 0))
                    .retry_after(RetryAfterFormat::Omit),
            )
            .endpoint(
                EndpointConfig::new("/frac")
                    .quota(Quota::gcra(1, Duration::from_millis(2_300), 0))
                    .retry_after(RetryAfterFormat::HttpDate),
            ),
    );
    at_ms(&api, 2_500).await;
    get(&api, "/date").await;
    let refused = get(&api, "/date").await;
    let retry_at = httpdate::parse_http_date(header(&refused, "retry-after")).unwrap();
    assert_eq!(retry_at, UNIX_EPOCH + Duration::from_secs(START + 10));
    let date = httpdate::parse_http_date(header(&refused, "date")).unwrap();
    assert_eq!(
        retry_at.duration_since(date).unwrap(),
        Duration::from_secs(8)
    );

    get(&api, "/omit").await;
    let refused = get(&api, "/omit").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().get("retry-after").is_none());

    // Due at 4.8 s: the date rounds up to 5 s, never early.
    get(&api, "/frac").await;
    let refused = get(&api, "/frac").await;
    let retry_at = httpdate::parse_http_date(header(&refused, "retry-after")).unwrap();
    assert_eq!(retry_at, UNIX_EPOCH + Duration::from_secs(START + 5));
}

#[tokio::test(start_paused = true)]
async fn hidden_quota_refuses_with_remaining_above_zero_like_github_secondary_limits() {
    let api = api(EndpointConfig::new("/api")
        .quota(Quota::fixed_window(5000, Duration::from_secs(3600)))
        .quota(Quota::sliding_log(2, Duration::from_secs(60)).hidden())
        .dialect(Dialect::GitHub)
        .limited_status(StatusCode::FORBIDDEN));
    get(&api, "/api").await;
    at_ms(&api, 1_000).await;
    get(&api, "/api").await;
    let refused = get(&api, "/api").await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(header_u64(&refused, "x-ratelimit-remaining"), 4998);
    assert_eq!(header_u64(&refused, "x-ratelimit-limit"), 5000);
    assert_eq!(header_u64(&refused, "retry-after"), 59);
}
