//! The vendor examples of the reference (A.3, A.4) and the epoch/delta rule, dialect by dialect.

use std::time::Duration;

use http::StatusCode;
use ratewise_headers::{
    Dialect, HeaderFamily, IgnoreReason, Parser, RateLimitInfo, ResetFormat, Unit,
};

mod common;

use common::{RECV, at, headers, parse_lines, secs};

fn policy<'a>(info: &'a RateLimitInfo, name: &str) -> &'a ratewise_headers::Policy {
    info.policies()
        .iter()
        .find(|p| p.name() == Some(name))
        .unwrap_or_else(|| panic!("no policy {name}: {info:?}"))
}

#[test]
fn anthropic_fixture_with_reset_in_the_past() {
    let info = parse_lines(
        200,
        &[
            ("date", "Thu, 21 Aug 2025 12:41:00 GMT"),
            ("anthropic-ratelimit-input-tokens-limit", "80000"),
            ("anthropic-ratelimit-input-tokens-remaining", "80000"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "2025-08-21T12:40:59Z",
            ),
            (
                "anthropic-ratelimit-output-tokens-reset",
                "2025-08-21T12:41:00Z",
            ),
            ("anthropic-ratelimit-requests-limit", "1000"),
            ("anthropic-ratelimit-requests-remaining", "999"),
            ("anthropic-ratelimit-tokens-limit", "96000"),
            (
                "anthropic-ratelimit-tokens-reset",
                "2025-08-21T07:42:00-05:00",
            ),
        ],
    );
    let input = policy(&info, "input-tokens");
    assert_eq!(input.dialect(), Dialect::Anthropic);
    assert_eq!(input.unit(), Unit::InputTokens);
    assert_eq!(input.reset_after(), secs(0), "a reset in the past is now");
    assert_eq!(policy(&info, "output-tokens").unit(), Unit::OutputTokens);
    let requests = policy(&info, "requests");
    assert_eq!(
        (requests.limit(), requests.remaining()),
        (Some(1000), Some(999))
    );
    let tokens = policy(&info, "tokens");
    assert_eq!(
        (tokens.unit(), tokens.reset_after()),
        (Unit::Tokens, secs(60))
    );
    assert_eq!(info.policies().len(), 4);
    assert_eq!(info.wait(), None);
}

#[test]
fn anthropic_unified_reset_is_an_epoch() {
    let info = parse_lines(
        429,
        &[
            ("anthropic-ratelimit-unified-remaining", "0"),
            (
                "anthropic-ratelimit-unified-reset",
                &(RECV + 300).to_string(),
            ),
            ("anthropic-ratelimit-unified-status", "rejected"),
        ],
    );
    assert_eq!(info.wait(), secs(300));
}

#[test]
fn azure_openai_integer_resets_and_retry_after_ms() {
    let info = parse_lines(
        429,
        &[
            ("x-ratelimit-remaining-requests", "5"),
            ("x-ratelimit-reset-requests", "10"),
            ("retry-after-ms", "2500.5"),
            ("retry-after", "3"),
        ],
    );
    assert_eq!(policy(&info, "requests").reset_after(), secs(10));
    assert_eq!(info.retry_after(), Some(Duration::from_micros(2_500_500)));
    assert!(
        info.is_rate_limited(),
        "429 with remaining > 0 (10-second sub-window)"
    );
}

#[test]
fn openai_extra_buckets() {
    let info = parse_lines(
        200,
        &[
            ("x-ratelimit-limit-tokens_usage_based", "100"),
            ("x-ratelimit-remaining-tokens_usage_based", "0"),
            ("x-ratelimit-reset-tokens_usage_based", "1m30s"),
            ("x-ratelimit-remaining-project-tokens", "50"),
        ],
    );
    let usage = policy(&info, "tokens_usage_based");
    assert_eq!(
        (usage.unit(), usage.reset_after()),
        (Unit::Tokens, secs(90))
    );
    assert_eq!(policy(&info, "project-tokens").remaining(), Some(50));
    assert_eq!(info.wait(), secs(90));
}

#[test]
fn twitter_and_okta_epoch_resets() {
    let info = parse_lines(
        429,
        &[
            ("x-rate-limit-limit", "900"),
            ("x-rate-limit-remaining", "0"),
            ("x-rate-limit-reset", &(RECV + 420).to_string()),
        ],
    );
    let [policy] = info.policies() else {
        panic!("one policy: {info:?}");
    };
    assert_eq!(policy.dialect(), Dialect::XRateLimitHyphenated);
    assert_eq!(
        (policy.limit(), policy.reset_after()),
        (Some(900), secs(420))
    );
    assert_eq!(info.wait(), secs(420));
}

#[test]
fn prisjakt_delta_milliseconds_need_an_override() {
    let lines = [
        ("X-Rate-Limit-Remaining", "0"),
        ("X-Rate-Limit-Reset", "600000"),
    ];
    // Auto reads 600000 as seconds (about a week) and clamps it.
    let auto = parse_lines(429, &lines);
    assert!(auto.is_clamped());
    let parser = Parser::new().reset_format(
        HeaderFamily::XRateLimitHyphenatedReset,
        ResetFormat::DeltaMilliseconds,
    );
    let info = parser.parse(StatusCode::TOO_MANY_REQUESTS, &headers(&lines), at(RECV));
    assert_eq!(info.wait(), secs(600));
    assert!(!info.is_clamped());
}

#[test]
fn reset_format_overrides_magnitude() {
    let lines = [("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "30")];
    let as_epoch = Parser::new()
        .reset_format(HeaderFamily::XRateLimitReset, ResetFormat::EpochSeconds)
        .parse(StatusCode::OK, &headers(&lines), at(RECV));
    assert_eq!(
        as_epoch.wait(),
        None,
        "epoch 30 is 1970: implausible, ignored"
    );
    assert!(
        as_epoch
            .ignored()
            .iter()
            .any(|n| n.reason() == IgnoreReason::ImplausibleEpoch)
    );
    let lines = [
        ("x-ratelimit-remaining", "0"),
        ("x-ratelimit-reset", "1700000042000"),
    ];
    let millis = Parser::new()
        .reset_format(
            HeaderFamily::XRateLimitReset,
            ResetFormat::EpochMilliseconds,
        )
        .parse(StatusCode::OK, &headers(&lines), at(RECV));
    assert_eq!(millis.wait(), secs(42));
    let lines = [("ratelimit-remaining", "0"), ("ratelimit-reset", "1500")];
    let delta_ms = Parser::new()
        .reset_format(HeaderFamily::RateLimitReset, ResetFormat::DeltaMilliseconds)
        .parse(StatusCode::OK, &headers(&lines), at(RECV));
    assert_eq!(delta_ms.wait(), Some(Duration::from_millis(1500)));
}

#[test]
fn epoch_slightly_in_the_past_is_zero_far_in_the_past_is_ignored() {
    let slightly = parse_lines(
        200,
        &[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", &(RECV - 5).to_string()),
        ],
    );
    assert_eq!(slightly.wait(), secs(0));
    let far = parse_lines(
        200,
        &[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", &(RECV - 2 * 86_400).to_string()),
        ],
    );
    assert_eq!(far.wait(), None);
}

#[test]
fn twitch_ratelimit_reset_epoch_by_magnitude() {
    let info = parse_lines(
        200,
        &[
            ("Ratelimit-Limit", "800"),
            ("Ratelimit-Remaining", "0"),
            ("Ratelimit-Reset", &(RECV + 12).to_string()),
        ],
    );
    assert_eq!(info.policies()[0].dialect(), Dialect::IetfLegacy);
    assert_eq!(info.wait(), secs(12));
}

#[test]
fn express_rate_limit_draft6_and_draft7() {
    let draft6 = parse_lines(
        200,
        &[
            ("RateLimit-Policy", "10;w=60"),
            ("RateLimit-Limit", "10"),
            ("RateLimit-Remaining", "9"),
            ("RateLimit-Reset", "60"),
        ],
    );
    let [policy] = draft6.policies() else {
        panic!("one policy: {draft6:?}");
    };
    assert_eq!((policy.limit(), policy.window()), (Some(10), secs(60)));
    assert_eq!(
        (policy.remaining(), policy.reset_after()),
        (Some(9), secs(60))
    );

    let draft7 = parse_lines(
        200,
        &[
            ("RateLimit-Policy", "10;w=60"),
            ("RateLimit", "limit=10, remaining=9, reset=60"),
        ],
    );
    let [policy] = draft7.policies() else {
        panic!("one policy: {draft7:?}");
    };
    assert_eq!(policy.dialect(), Dialect::IetfDraft7);
    assert_eq!((policy.window(), policy.remaining()), (secs(60), Some(9)));
}

#[test]
fn express_rate_limit_legacy_epoch_with_date() {
    let info = parse_lines(
        429,
        &[
            ("X-RateLimit-Limit", "10"),
            ("X-RateLimit-Remaining", "0"),
            ("X-RateLimit-Reset", "1700000100"),
            ("Date", "Tue, 14 Nov 2023 22:14:20 GMT"), // 1700000060
            ("Retry-After", "40"),
        ],
    );
    assert_eq!(info.policies()[0].reset_after(), secs(40));
    assert_eq!(info.wait(), secs(40));
}

#[test]
fn whoop_limit_list_with_window_parameter() {
    let info = parse_lines(
        200,
        &[
            (
                "X-RateLimit-Limit",
                "100, 100;window=60, 10000;window=86400",
            ),
            ("X-RateLimit-Remaining", "98"),
        ],
    );
    let [minute, day] = info.policies() else {
        panic!("two policies: {info:?}");
    };
    assert_eq!(
        (minute.limit(), minute.window(), minute.remaining()),
        (Some(100), secs(60), Some(98))
    );
    assert_eq!(
        (day.limit(), day.window(), day.remaining()),
        (Some(10_000), secs(86_400), None)
    );
}

#[test]
fn jira_beta_ratelimit_and_reason() {
    let info = parse_lines(
        200,
        &[
            (
                "Beta-Ratelimit-Policy",
                r#""tenant-app-quota";q=100100;w=3600"#,
            ),
            ("Beta-Ratelimit", r#""tenant-app-quota";r=17842;t=2107"#),
            ("X-Beta-Ratelimit-Reason", "jira-quota-tenant-based"),
            ("X-Beta-Ratelimit-Nearlimit", "true"),
            ("X-Ratelimit-Limit", "350"),
            ("X-Ratelimit-Remaining", "349"),
        ],
    );
    let quota = policy(&info, "tenant-app-quota");
    assert_eq!(
        (quota.limit(), quota.remaining()),
        (Some(100_100), Some(17_842))
    );
    assert_eq!(
        (quota.window(), quota.reset_after()),
        (secs(3600), secs(2107))
    );
    assert_eq!(
        info.policies().len(),
        2,
        "and the independent X-RateLimit policy"
    );
    assert_eq!(info.reason(), Some("jira-quota-tenant-based"));
}

#[test]
fn ietf_units_and_unmatched_items() {
    let info = parse_lines(
        200,
        &[
            (
                "RateLimit-Policy",
                r#""bytes";q=1000000;qu="content-bytes", "conc";q=10;qu="concurrent-requests", "odd";q=1;qu="widgets""#,
            ),
            ("RateLimit", r#""lonely";r=3;t=4"#),
        ],
    );
    assert_eq!(policy(&info, "bytes").unit(), Unit::Bytes);
    assert_eq!(policy(&info, "conc").unit(), Unit::ConcurrentRequests);
    assert_eq!(policy(&info, "odd").unit(), Unit::Other);
    let lonely = policy(&info, "lonely");
    assert_eq!((lonely.limit(), lonely.remaining()), (None, Some(3)));
}

#[test]
fn ietf_negative_values_are_ignored() {
    let info = parse_lines(200, &[("RateLimit", r#""a";r=-1;t=-5"#)]);
    assert!(
        info.policies().is_empty(),
        "nothing valid is left: {info:?}"
    );
    assert!(
        info.ignored()
            .iter()
            .any(|n| n.reason() == IgnoreReason::Negative)
    );
}

#[test]
fn ietf_remaining_above_quota_is_lowered() {
    let info = parse_lines(
        200,
        &[
            ("RateLimit-Policy", r#""a";q=10"#),
            ("RateLimit", r#""a";r=50"#),
        ],
    );
    assert_eq!(info.policies()[0].remaining(), Some(10));
    assert!(
        info.ignored()
            .iter()
            .any(|n| n.reason() == IgnoreReason::RemainingAboveLimit)
    );
}

#[test]
fn salesforce_used_of_limit() {
    let info = parse_lines(
        200,
        &[(
            "Sforce-Limit-Info",
            "api-usage=25/5000; per-app-api-usage=17/250(appName=sample-connected-app)",
        )],
    );
    let api = policy(&info, "api-usage");
    assert_eq!(api.dialect(), Dialect::Salesforce);
    assert_eq!((api.limit(), api.remaining()), (Some(5000), Some(4975)));
    let app = policy(&info, "per-app-api-usage");
    assert_eq!((app.limit(), app.remaining()), (Some(250), Some(233)));
}

#[test]
fn salesforce_exhausted_403_is_rate_limited() {
    let info = parse_lines(
        403,
        &[(
            "Sforce-Limit-Info",
            "api-usage=100000/100000; api-bursts=1/750",
        )],
    );
    assert!(info.is_rate_limited());
    assert_eq!(policy(&info, "api-bursts").remaining(), Some(749));
}

#[test]
fn azure_resource_manager() {
    let info = parse_lines(
        200,
        &[
            ("x-ms-ratelimit-remaining-subscription-reads", "11999"),
            (
                "x-ms-ratelimit-remaining-resource",
                "Microsoft.Compute/GetVMScaleSet3Min;197,Microsoft.Compute/GetVMScaleSet30Min;1297",
            ),
        ],
    );
    assert_eq!(
        policy(&info, "subscription-reads").remaining(),
        Some(11_999)
    );
    assert_eq!(
        policy(&info, "Microsoft.Compute/GetVMScaleSet3Min").remaining(),
        Some(197)
    );
    let thirty = policy(&info, "Microsoft.Compute/GetVMScaleSet30Min");
    assert_eq!(
        (thirty.remaining(), thirty.dialect()),
        (Some(1297), Dialect::AzureResourceManager)
    );
}

#[test]
fn hubspot() {
    let info = parse_lines(
        200,
        &[
            ("X-HubSpot-RateLimit-Daily", "250000"),
            ("X-HubSpot-RateLimit-Daily-Remaining", "249999"),
            ("X-HubSpot-RateLimit-Interval-Milliseconds", "10000"),
            ("X-HubSpot-RateLimit-Max", "100"),
            ("X-HubSpot-RateLimit-Remaining", "0"),
            ("X-HubSpot-RateLimit-Secondly", "10"),
            ("X-HubSpot-RateLimit-Secondly-Remaining", "9"),
        ],
    );
    let daily = policy(&info, "daily");
    assert_eq!(
        (daily.limit(), daily.remaining()),
        (Some(250_000), Some(249_999))
    );
    let interval = policy(&info, "interval");
    assert_eq!((interval.limit(), interval.window()), (Some(100), secs(10)));
    assert_eq!(interval.remaining(), Some(0));
    assert_eq!(policy(&info, "secondly").window(), secs(1));
}

#[test]
fn zendesk() {
    let info = parse_lines(
        200,
        &[
            ("X-Rate-Limit", "700"),
            ("X-Rate-Limit-Remaining", "699"),
            (
                "zendesk-ratelimit-tickets-index",
                "total=100; remaining=99; resets=41",
            ),
        ],
    );
    let tickets = policy(&info, "tickets-index");
    assert_eq!(
        (tickets.limit(), tickets.remaining()),
        (Some(100), Some(99))
    );
    assert_eq!(tickets.reset_after(), secs(41));
    let account = info
        .policies()
        .iter()
        .find(|p| p.dialect() == Dialect::XRateLimitHyphenated)
        .unwrap();
    assert_eq!(
        (account.limit(), account.remaining()),
        (Some(700), Some(699))
    );
}

#[test]
fn stripe_reason_and_should_retry() {
    let info = parse_lines(
        429,
        &[
            ("Stripe-Rate-Limited-Reason", "endpoint-concurrency"),
            ("Stripe-Should-Retry", "true"),
        ],
    );
    assert!(info.is_rate_limited());
    assert_eq!(info.reason(), Some("endpoint-concurrency"));
    assert_eq!(info.should_retry(), Some(true));
    assert_eq!(info.wait(), None, "no documented Retry-After");
}

#[test]
fn slack_and_kubernetes_retry_after_only() {
    let info = parse_lines(
        429,
        &[
            ("Retry-After", "30"),
            ("X-Kubernetes-PF-FlowSchema-UID", "abc"),
        ],
    );
    assert_eq!(info.wait(), secs(30));
    assert!(info.policies().is_empty());
}

#[test]
fn overload_statuses_are_not_rate_limits() {
    for status in [503, 529] {
        let info = parse_lines(status, &[("Retry-After", "5")]);
        assert!(!info.is_rate_limited());
        assert_eq!(info.retry_after(), secs(5));
    }
}

#[test]
fn invalid_date_header_falls_back_to_receive_time() {
    let info = parse_lines(
        200,
        &[
            ("Date", "yesterday"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", &(RECV + 7).to_string()),
        ],
    );
    assert_eq!(info.wait(), secs(7));
    assert!(info.ignored().iter().any(|n| n.header() == "date"));
}

#[test]
fn vimeo_and_lemlist_dates_do_not_panic() {
    let info = parse_lines(
        200,
        &[
            ("x-ratelimit-remaining", "0"),
            (
                "x-ratelimit-reset",
                "Tue Feb 16 2021 09:02:42 GMT+0100 (Central European Standard Time)",
            ),
        ],
    );
    assert_eq!(info.wait(), None);
    assert!(
        info.ignored()
            .iter()
            .any(|n| n.reason() == IgnoreReason::Malformed)
    );
}

#[test]
fn empty_response_has_no_information() {
    let info = parse_lines(200, &[("content-type", "text/plain")]);
    assert!(info.is_empty());
    assert!(!info.is_rate_limited());
    assert_eq!(info.wait(), None);
}

#[test]
fn proxy_merged_duplicate_lines_read_the_first_value() {
    let info = parse_lines(
        429,
        &[
            ("Retry-After", "30, 30"),
            ("x-ratelimit-remaining", "0, 0"),
            ("x-ratelimit-reset", "254, 254"),
        ],
    );
    assert_eq!(info.retry_after(), secs(30));
    assert_eq!(info.policies()[0].reset_after(), secs(254));
    // HTTP-dates contain a comma and still parse as dates.
    let date = parse_lines(
        429,
        &[
            ("Retry-After", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("Date", "Sun, 06 Nov 1994 08:49:07 GMT"),
        ],
    );
    assert_eq!(date.retry_after(), secs(30));
}
