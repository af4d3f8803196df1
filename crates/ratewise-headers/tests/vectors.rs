//! Every test vector of the reference (rate-limit-headers.md, "Test vectors"), by number.

use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode};
use ratewise_headers::{
    Dialect, IgnoreReason, Parser, RateLimitInfo, Scope, Unit, parse, retry_delay_from_body,
};

mod common;

use common::{RECV, at, headers, parse_lines, secs};

fn http_date(unix_secs: u64) -> String {
    httpdate::fmt_http_date(at(unix_secs))
}

fn has_note(info: &RateLimitInfo, header: &str, reason: IgnoreReason) -> bool {
    info.ignored()
        .iter()
        .any(|note| note.header().as_str() == header && note.reason() == reason)
}

#[test]
fn vector_01_draft8_policies_and_exhausted_burst() {
    let info = parse_lines(
        200,
        &[
            (
                "RateLimit-Policy",
                r#""burst";q=100;w=60,"daily";q=1000;w=86400"#,
            ),
            ("RateLimit", r#""burst";r=0;t=30"#),
        ],
    );
    let [burst, daily] = info.policies() else {
        panic!("two policies expected: {info:?}");
    };
    assert_eq!(burst.name(), Some("burst"));
    assert_eq!((burst.limit(), burst.remaining()), (Some(100), Some(0)));
    assert_eq!((burst.window(), burst.reset_after()), (secs(60), secs(30)));
    assert_eq!(burst.dialect(), Dialect::Ietf);
    assert_eq!(daily.name(), Some("daily"));
    assert_eq!((daily.limit(), daily.remaining()), (Some(1000), None));
    assert_eq!(daily.window(), secs(86_400));
    assert_eq!(info.wait(), secs(30));
    assert!(!info.is_rate_limited());
    assert!(info.ignored().is_empty(), "{:?}", info.ignored());
}

#[test]
fn vector_01_with_age_zero_is_not_cached() {
    let info = parse_lines(200, &[("Age", "0"), ("RateLimit", r#""burst";r=0;t=30"#)]);
    assert!(!info.is_cached());
    assert_eq!(info.wait(), secs(30));
}

#[test]
fn vector_02_express_rate_limit_draft8_space_after_semicolon() {
    let info = parse_lines(
        200,
        &[
            ("RateLimit", r#""100-in-1min"; r=99; t=60"#),
            (
                "RateLimit-Policy",
                r#""100-in-1min"; q=100; w=60; pk=:M2E4ZjBiZDk2ZjQ3:"#,
            ),
        ],
    );
    let [policy] = info.policies() else {
        panic!("one policy expected: {info:?}");
    };
    assert_eq!(policy.name(), Some("100-in-1min"));
    assert_eq!((policy.limit(), policy.remaining()), (Some(100), Some(99)));
    assert_eq!(
        (policy.window(), policy.reset_after()),
        (secs(60), secs(60))
    );
    assert_eq!(policy.partition_key(), Some(&b"3a8f0bd96f47"[..]));
    assert_eq!(policy.partition_key().map(<[u8]>::len), Some(12));
    // Valid SF: the strict path read it, nothing was noted.
    assert!(info.ignored().is_empty(), "{:?}", info.ignored());
    assert_eq!(info.wait(), None);
}

#[test]
fn vector_03_multiple_lines_combine() {
    let info = parse_lines(
        200,
        &[
            ("RateLimit", r#""a";r=5;t=1"#),
            ("RateLimit", r#""b";r=0;t=3600"#),
        ],
    );
    assert_eq!(info.policies().len(), 2);
    let names: Vec<_> = info.exhausted_policies().map(|p| p.name()).collect();
    assert_eq!(names, [Some("b")]);
    assert_eq!(info.wait(), secs(3600));
}

#[test]
fn vector_04_space_before_semicolon_is_invalid_sf() {
    let lines = [("RateLimit", r#""x" ;r=5;t=10"#)];
    // Lenient (default): read, and flagged.
    let info = parse_lines(200, &lines);
    let [policy] = info.policies() else {
        panic!("one policy expected: {info:?}");
    };
    assert_eq!(
        (policy.remaining(), policy.reset_after()),
        (Some(5), secs(10))
    );
    assert!(has_note(&info, "ratelimit", IgnoreReason::ReadLeniently));
    // Strict: ignored, as the draft says for malformed fields.
    let strict = Parser::new()
        .lenient(false)
        .parse(StatusCode::OK, &headers(&lines), at(RECV));
    assert!(strict.policies().is_empty());
    assert!(has_note(
        &strict,
        "ratelimit",
        IgnoreReason::InvalidStructuredField
    ));
}

#[test]
fn vector_05_token_name_and_missing_r() {
    let info = parse_lines(
        200,
        &[
            ("RateLimit-Policy", "quota;q=100;w=1"),
            ("RateLimit", "quota;t=1"),
        ],
    );
    let [policy] = info.policies() else {
        panic!("one policy expected: {info:?}");
    };
    assert_eq!(policy.name(), Some("quota"));
    assert_eq!((policy.limit(), policy.window()), (Some(100), secs(1)));
    assert_eq!(policy.remaining(), None);
    assert_eq!(policy.reset_after(), secs(1));
    assert!(has_note(&info, "ratelimit", IgnoreReason::MissingParameter));
    assert_eq!(info.wait(), None, "unknown remaining is not exhausted");
}

#[test]
fn vector_06_draft7_dictionary() {
    let info = parse_lines(200, &[("RateLimit", "limit=100, remaining=0, reset=5")]);
    let [policy] = info.policies() else {
        panic!("one policy expected: {info:?}");
    };
    assert_eq!(policy.dialect(), Dialect::IetfDraft7);
    assert_eq!((policy.limit(), policy.remaining()), (Some(100), Some(0)));
    assert_eq!(info.wait(), secs(5));
}

#[test]
fn vector_06_draft7_with_policy_window() {
    let info = parse_lines(
        200,
        &[
            ("RateLimit", "limit=100, remaining=50, reset=5"),
            ("RateLimit-Policy", "100;w=10"),
        ],
    );
    let [policy] = info.policies() else {
        panic!("one policy expected: {info:?}");
    };
    assert_eq!(policy.window(), secs(10));
    assert_eq!(policy.remaining(), Some(50));
}

#[test]
fn vector_07_legacy_drafts_delta_reset() {
    let info = parse_lines(
        200,
        &[
            ("RateLimit-Limit", "10, 10;w=1, 1000;w=3600"),
            ("RateLimit-Remaining", "0"),
            ("RateLimit-Reset", "7"),
        ],
    );
    let [expiring, hourly] = info.policies() else {
        panic!("two policies expected: {info:?}");
    };
    assert_eq!(expiring.dialect(), Dialect::IetfLegacy);
    assert_eq!((expiring.limit(), expiring.window()), (Some(10), secs(1)));
    assert_eq!(
        (expiring.remaining(), expiring.reset_after()),
        (Some(0), secs(7))
    );
    assert_eq!((hourly.limit(), hourly.window()), (Some(1000), secs(3600)));
    assert_eq!(info.wait(), secs(7));
}

#[test]
fn vector_08_gitlab_epoch_reset_and_retry_after_precedence() {
    // 2021-01-05T11:00:00Z is 1609844400; receive one minute earlier, no Date header.
    let info = parse(
        StatusCode::TOO_MANY_REQUESTS,
        &headers(&[
            ("RateLimit-Limit", "60"),
            ("RateLimit-Observed", "67"),
            ("RateLimit-Remaining", "0"),
            ("RateLimit-Reset", "1609844400"),
            ("RateLimit-ResetTime", "Tue, 05 Jan 2021 11:00:00 GMT"),
            ("Retry-After", "30"),
        ]),
        at(1_609_844_400 - 60),
    );
    let [policy] = info.policies() else {
        panic!("one policy expected: {info:?}");
    };
    assert_eq!(policy.dialect(), Dialect::GitLab);
    assert_eq!(
        policy.reset_after(),
        secs(60),
        "an epoch, not a 50-year delta"
    );
    assert_eq!(policy.remaining(), Some(0));
    assert_eq!(info.retry_after(), secs(30));
    assert_eq!(info.wait(), secs(30), "Retry-After takes precedence");
    assert!(!info.is_clamped());
}

#[test]
fn vector_08_gitlab_reset_time_alone() {
    let info = parse(
        StatusCode::OK,
        &headers(&[
            ("RateLimit-Remaining", "0"),
            ("RateLimit-ResetTime", "Tue, 05 Jan 2021 11:00:00 GMT"),
        ]),
        at(1_609_844_400 - 45),
    );
    assert_eq!(info.wait(), secs(45));
}

#[test]
fn vector_09_github_primary_limit_on_403() {
    let reset = 1_350_085_394;
    let date = reset - 1200;
    // The local clock is an hour ahead of the server: Date cancels the skew.
    let info = parse(
        StatusCode::FORBIDDEN,
        &headers(&[
            ("x-ratelimit-limit", "5000"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-used", "5000"),
            ("x-ratelimit-reset", "1350085394"),
            ("x-ratelimit-resource", "core"),
            ("Date", &http_date(date)),
        ]),
        at(date + 3600),
    );
    assert!(info.is_rate_limited(), "not an auth error");
    assert_eq!(info.bucket(), Some("core"));
    let [policy] = info.policies() else {
        panic!("one policy expected: {info:?}");
    };
    assert_eq!(policy.dialect(), Dialect::XRateLimit);
    assert_eq!((policy.name(), policy.limit()), (Some("core"), Some(5000)));
    assert_eq!(
        policy.reset_after(),
        secs(1200),
        "(reset - Date), so recv + 1200 s"
    );
    assert_eq!(info.wait(), secs(1200));
}

#[test]
fn vector_09_github_graphql_counts_points() {
    let info = parse_lines(
        200,
        &[
            ("x-ratelimit-limit", "5000"),
            ("x-ratelimit-remaining", "4990"),
            ("x-ratelimit-resource", "graphql"),
        ],
    );
    assert_eq!(info.policies()[0].unit(), Unit::Points);
    assert!(!info.is_rate_limited());
}

#[test]
fn vector_09_github_403_without_rate_limit_signal_is_not_rate_limited() {
    let info = parse_lines(
        403,
        &[
            ("x-ratelimit-limit", "5000"),
            ("x-ratelimit-remaining", "4999"),
        ],
    );
    assert!(!info.is_rate_limited());
}

#[test]
fn vector_10_github_secondary_limit() {
    let info = parse_lines(
        403,
        &[("retry-after", "60"), ("x-ratelimit-remaining", "4100")],
    );
    assert!(info.is_rate_limited());
    assert_eq!(info.wait(), secs(60), "even though remaining > 0");
    assert_eq!(info.policies()[0].remaining(), Some(4100));
}

#[test]
fn vector_11_openai_go_durations_two_buckets() {
    let info = parse_lines(
        200,
        &[
            ("x-ratelimit-limit-requests", "5000"),
            ("x-ratelimit-remaining-requests", "4999"),
            ("x-ratelimit-reset-requests", "12ms"),
            ("x-ratelimit-limit-tokens", "160000"),
            ("x-ratelimit-remaining-tokens", "159976"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ],
    );
    let [requests, tokens] = info.policies() else {
        panic!("two buckets expected: {info:?}");
    };
    assert_eq!(
        (requests.name(), requests.unit()),
        (Some("requests"), Unit::Requests)
    );
    assert_eq!(requests.reset_after(), Some(Duration::from_millis(12)));
    assert_eq!(
        (requests.limit(), requests.remaining()),
        (Some(5000), Some(4999))
    );
    assert_eq!(
        (tokens.name(), tokens.unit()),
        (Some("tokens"), Unit::Tokens)
    );
    assert_eq!(tokens.reset_after(), secs(360));
    assert_eq!(tokens.dialect(), Dialect::XRateLimitNamed);
    assert_eq!(info.wait(), None);
}

#[test]
fn vector_11_openai_other_durations() {
    let cases = [
        ("1s", Duration::from_secs(1)),
        ("1h2m3s", Duration::from_secs(3723)),
        ("23h47m36.648s", Duration::from_millis(85_656_648)),
        ("500\u{b5}s", Duration::from_micros(500)),
    ];
    for (text, expected) in cases {
        let mut map = HeaderMap::new();
        // `µ` is not visible ASCII: servers send it as raw UTF-8 bytes.
        map.insert(
            "x-ratelimit-reset-tokens",
            HeaderValue::from_bytes(text.as_bytes()).unwrap(),
        );
        map.insert(
            "x-ratelimit-remaining-tokens",
            HeaderValue::from_static("0"),
        );
        let info = parse(StatusCode::OK, &map, at(RECV));
        assert_eq!(info.wait(), Some(expected), "{text}: {info:?}");
    }
}

#[test]
fn vector_13_discord_bucket_and_float_reset_after() {
    let info = parse_lines(
        429,
        &[
            ("Retry-After", "65"),
            ("X-RateLimit-Limit", "10"),
            ("X-RateLimit-Remaining", "0"),
            ("X-RateLimit-Reset", "1470173023.123"),
            ("X-RateLimit-Reset-After", "64.57"),
            ("X-RateLimit-Bucket", "abcd1234"),
            ("X-RateLimit-Scope", "user"),
        ],
    );
    assert!(info.is_rate_limited());
    assert_eq!(info.wait(), Some(Duration::from_millis(64_570)));
    assert_eq!(info.retry_after(), Some(Duration::from_millis(64_570)));
    assert_eq!(info.bucket(), Some("abcd1234"));
    assert_eq!(info.scope(), Some(Scope::User));
    assert!(!info.is_global());
    assert!(info.counts_as_invalid_request());
    assert_eq!(
        info.policies()[0].reset_after(),
        Some(Duration::from_millis(64_570))
    );
}

#[test]
fn vector_13_discord_reset_after_never_below_retry_after_minus_one() {
    let info = parse_lines(
        429,
        &[("Retry-After", "65"), ("X-RateLimit-Reset-After", "10.5")],
    );
    assert_eq!(info.wait(), secs(64));
}

#[test]
fn vector_13_discord_fractional_epoch_reset() {
    // Without Reset-After the fractional epoch is read through Date.
    let info = parse(
        StatusCode::OK,
        &headers(&[
            ("X-RateLimit-Remaining", "0"),
            ("X-RateLimit-Reset", "1470173023.123"),
            ("Date", &http_date(1_470_173_000)),
        ]),
        at(RECV),
    );
    assert_eq!(info.wait(), Some(Duration::from_millis(23_123)));
}

#[test]
fn vector_14_discord_global() {
    let info = parse_lines(
        429,
        &[
            ("X-RateLimit-Global", "true"),
            ("X-RateLimit-Scope", "global"),
            ("Retry-After", "65"),
        ],
    );
    assert!(info.is_global());
    assert_eq!(info.scope(), Some(Scope::Global));
    assert_eq!(info.wait(), secs(65));
}

#[test]
fn vector_15_discord_shared_scope() {
    let info = parse_lines(
        429,
        &[
            ("X-RateLimit-Remaining", "9"),
            ("X-RateLimit-Scope", "shared"),
            ("Retry-After", "1337"),
        ],
    );
    assert!(info.is_rate_limited(), "limited despite remaining 9");
    assert_eq!(info.policies()[0].remaining(), Some(9));
    assert_eq!(info.wait(), secs(1337));
    assert_eq!(info.scope(), Some(Scope::Shared));
    assert!(!info.counts_as_invalid_request());
    assert!(!info.is_global());
}

#[test]
fn vector_16_reddit_float_remaining_delta_reset() {
    let info = parse_lines(
        200,
        &[
            ("X-Ratelimit-Used", "4"),
            ("X-Ratelimit-Remaining", "596.0"),
            ("X-Ratelimit-Reset", "254"),
        ],
    );
    let [policy] = info.policies() else {
        panic!("one policy expected: {info:?}");
    };
    assert_eq!((policy.remaining(), policy.limit()), (Some(596), Some(600)));
    assert_eq!(policy.reset_after(), secs(254), "a delta");
}

#[test]
fn vector_17_shopify_used_of_size_and_float_retry_after() {
    let info = parse_lines(
        429,
        &[
            ("X-Shopify-Shop-Api-Call-Limit", "32/40"),
            ("Retry-After", "2.0"),
        ],
    );
    let [policy] = info.policies() else {
        panic!("one policy expected: {info:?}");
    };
    assert_eq!(policy.dialect(), Dialect::Shopify);
    assert_eq!((policy.limit(), policy.remaining()), (Some(40), Some(8)));
    assert_eq!(info.retry_after(), secs(2));
    assert_eq!(info.wait(), secs(2));
}

#[test]
fn vector_20_all_three_http_date_formats() {
    for date in [
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
    ] {
        let info = parse_lines(
            503,
            &[
                ("Retry-After", date),
                ("Date", "Sun, 06 Nov 1994 08:49:07 GMT"),
            ],
        );
        assert_eq!(info.retry_after(), secs(30), "{date}");
        assert_eq!(info.wait(), secs(30), "{date}");
    }
}

#[test]
fn vector_20_http_date_without_date_header_uses_receive_time() {
    let info = parse_lines(429, &[("Retry-After", &http_date(RECV + 90))]);
    assert_eq!(info.retry_after(), secs(90));
    let past = parse_lines(429, &[("Retry-After", &http_date(RECV - 90))]);
    assert_eq!(past.retry_after(), secs(0), "a past date means now");
}

#[test]
fn vector_21_retry_after_ms_wins() {
    let info = parse_lines(429, &[("retry-after-ms", "1500"), ("retry-after", "2")]);
    assert_eq!(info.retry_after(), Some(Duration::from_millis(1500)));
    let invalid_ms = parse_lines(429, &[("retry-after-ms", "soon"), ("retry-after", "2")]);
    assert_eq!(
        invalid_ms.retry_after(),
        secs(2),
        "an invalid ms header falls back"
    );
}

#[test]
fn vector_22_invalid_retry_after_values() {
    let negative = parse_lines(429, &[("Retry-After", "-5")]);
    assert_eq!(negative.retry_after(), None);
    assert!(has_note(&negative, "retry-after", IgnoreReason::Negative));

    let word = parse_lines(429, &[("Retry-After", "abc")]);
    assert_eq!(word.retry_after(), None);
    assert!(has_note(&word, "retry-after", IgnoreReason::Malformed));

    let huge = parse_lines(429, &[("Retry-After", "99999999")]);
    assert_eq!(
        huge.retry_after(),
        Some(ratewise_headers::DEFAULT_MAX_DURATION)
    );
    assert!(huge.is_clamped(), "surfaced as wait too long");
    assert!(has_note(&huge, "retry-after", IgnoreReason::Clamped));

    let capped = Parser::new().max_duration(Duration::from_secs(60)).parse(
        StatusCode::TOO_MANY_REQUESTS,
        &headers(&[("Retry-After", "99999999")]),
        at(RECV),
    );
    assert_eq!(capped.retry_after(), secs(60));
    assert!(capped.is_clamped());
}

#[test]
fn vector_22_invalid_retry_after_falls_back_to_other_headers() {
    let info = parse_lines(
        429,
        &[
            ("Retry-After", "-5"),
            ("RateLimit", r#""default";r=0;t=12"#),
        ],
    );
    assert_eq!(info.wait(), secs(12));
}

#[test]
fn vector_23_linear_epoch_milliseconds() {
    // 1714560000000 ms = 2024-05-01T10:40:00Z; receive at 10:39:00Z.
    let info = parse(
        StatusCode::OK,
        &headers(&[
            ("X-RateLimit-Requests-Limit", "1500"),
            ("X-RateLimit-Requests-Remaining", "0"),
            ("X-RateLimit-Requests-Reset", "1714560000000"),
        ]),
        at(1_714_560_000 - 60),
    );
    let [policy] = info.policies() else {
        panic!("one policy expected: {info:?}");
    };
    assert_eq!(policy.name(), Some("requests"));
    assert_eq!(policy.reset_after(), secs(60));
    assert_eq!(info.wait(), secs(60));
}

#[test]
fn vector_24_jira_rfc3339_without_seconds() {
    let info = parse(
        StatusCode::TOO_MANY_REQUESTS,
        &headers(&[
            ("X-RateLimit-Remaining", "0"),
            ("X-RateLimit-Reset", "2026-03-26T16:00Z"),
            ("Date", "Thu, 26 Mar 2026 15:58:30 GMT"),
        ]),
        at(RECV),
    );
    assert_eq!(info.policies()[0].reset_after(), secs(90), "16:00:00Z");
    assert_eq!(info.wait(), secs(90));
}

#[test]
fn vector_27_azure_openai_minus_one_is_unknown() {
    let info = parse_lines(
        200,
        &[
            ("x-ratelimit-limit-tokens", "-1"),
            ("x-ratelimit-remaining-tokens", "-1"),
        ],
    );
    assert!(
        info.policies()
            .iter()
            .all(|p| p.remaining().is_none() && p.limit().is_none())
    );
    assert_eq!(info.exhausted_policies().count(), 0, "not exhausted");
    assert_eq!(info.wait(), None);
    assert!(has_note(
        &info,
        "x-ratelimit-remaining-tokens",
        IgnoreReason::Negative
    ));
}

#[test]
fn vector_28_google_retry_info_body() {
    let body = br#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"1.5s"}]}}"#;
    assert_eq!(
        retry_delay_from_body(body),
        Some(Duration::from_millis(1500))
    );
}

#[test]
fn vector_28_other_bodies() {
    let object = br#"{"error":{"details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure"},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":{"seconds":37,"nanos":500000000}}]}}"#;
    assert_eq!(
        retry_delay_from_body(object),
        Some(Duration::from_millis(37_500))
    );
    let discord =
        br#"{"message": "You are being rate limited.", "retry_after": 64.57, "global": false}"#;
    assert_eq!(
        retry_delay_from_body(discord),
        Some(Duration::from_millis(64_570))
    );
    for bad in [
        &b"not json"[..],
        br#"{"retry_after": -1}"#,
        br#"{"error":{"details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"-3s"}]}}"#,
        br#"{"error":{"details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":{"nanos":2000000000}}]}}"#,
        br#"[]"#,
    ] {
        assert_eq!(retry_delay_from_body(bad), None, "{}", String::from_utf8_lossy(bad));
    }
    let huge = br#"{"retry_after": 1e300}"#;
    assert_eq!(retry_delay_from_body(huge), None);
    let long = br#"{"retry_after": 999999999}"#;
    assert_eq!(
        retry_delay_from_body(long),
        Some(ratewise_headers::DEFAULT_MAX_DURATION)
    );
}

#[test]
fn vector_29_cached_response_ignores_ratelimit_fields() {
    let info = parse_lines(
        200,
        &[("Age", "120"), ("RateLimit", r#""default";r=0;t=30"#)],
    );
    assert!(info.is_cached());
    assert!(info.policies().is_empty());
    assert_eq!(info.wait(), None);
    assert!(has_note(&info, "ratelimit", IgnoreReason::CachedResponse));
    let ignoring_age = Parser::new().honor_age(false).parse(
        StatusCode::OK,
        &headers(&[("Age", "120"), ("RateLimit", r#""default";r=0;t=30"#)]),
        at(RECV),
    );
    assert_eq!(ignoring_age.wait(), secs(0), "t=30 counted from 120 s ago");
}

#[test]
fn vector_01_minus_age_when_cached_fields_are_kept() {
    let info = Parser::new().honor_age(false).parse(
        StatusCode::OK,
        &headers(&[
            ("Age", "10"),
            ("RateLimit-Policy", r#""burst";q=100;w=60"#),
            ("RateLimit", r#""burst";r=0;t=30"#),
        ]),
        at(RECV),
    );
    assert!(info.is_cached());
    assert_eq!(info.wait(), secs(20), "30 s minus Age");
    assert_eq!(
        info.policies()[0].window(),
        secs(60),
        "windows are not shortened"
    );
}
