//! Property tests: arbitrary header maps never make `parse` panic, and its output keeps its
//! invariants. Plus deterministic hostile inputs (10 MB values, non-UTF-8, 40 digits, ...).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use proptest::prelude::*;
use ratewise_headers::{
    HeaderFamily, IgnoreReason, MAX_IGNORED, MAX_POLICIES, Parser, RateLimitInfo, ResetFormat,
};

/// Every header name a dialect reads, so random values land where the parser looks.
const KNOWN_NAMES: &[&str] = &[
    "retry-after",
    "retry-after-ms",
    "date",
    "age",
    "ratelimit",
    "ratelimit-policy",
    "beta-ratelimit",
    "beta-ratelimit-policy",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "ratelimit-observed",
    "ratelimit-resettime",
    "ratelimit-name",
    "ratelimit-reason",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-ratelimit-used",
    "x-ratelimit-resource",
    "x-ratelimit-reset-after",
    "x-ratelimit-bucket",
    "x-ratelimit-global",
    "x-ratelimit-scope",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "x-ratelimit-requests-limit",
    "x-ratelimit-requests-remaining",
    "x-ratelimit-requests-reset",
    "x-rate-limit",
    "x-rate-limit-limit",
    "x-rate-limit-remaining",
    "x-rate-limit-reset",
    "anthropic-ratelimit-requests-limit",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-tokens-reset",
    "anthropic-ratelimit-unified-reset",
    "x-shopify-shop-api-call-limit",
    "sforce-limit-info",
    "x-ms-ratelimit-remaining-resource",
    "x-ms-ratelimit-remaining-subscription-reads",
    "x-hubspot-ratelimit-daily",
    "x-hubspot-ratelimit-daily-remaining",
    "x-hubspot-ratelimit-interval-milliseconds",
    "x-hubspot-ratelimit-max",
    "x-hubspot-ratelimit-remaining",
    "zendesk-ratelimit-tickets-index",
    "stripe-rate-limited-reason",
    "stripe-should-retry",
];

/// Prefixes the dispatcher matches on, for random names that reach its fallbacks.
const PREFIXES: &[&str] = &[
    "x-ratelimit-",
    "x-ratelimit-limit-",
    "x-ratelimit-reset-",
    "anthropic-ratelimit-",
    "x-ms-ratelimit-remaining-",
    "x-hubspot-ratelimit-",
    "zendesk-ratelimit-",
    "x-",
];

const SAMPLES: &[&str] = &[
    "limit=100, remaining=0, reset=5",
    "-1",
    "NaN",
    "inf",
    "true",
    "shared",
    "global",
    "api-usage=25/5000; per-app-api-usage=17/250(appName=x)",
    "10, 10;w=1, 1000;w=3600",
    "100, 100;window=60, 10000;window=86400",
    "total=100; remaining=99; resets=41",
    "A;197,B;1297",
    "1e308",
    "0",
    "",
    "quota;t=1",
    "\"x\" ;r=5;t=10",
    "500\u{b5}s",
];

/// One header line as primitives (cheap to generate and to shrink in debug builds, where
/// 100k cases must run on a loaded two-core machine); [`line`] builds the name and value.
type RawLine = (u16, u8, u64, u64);

fn line((name_pick, kind, a, b): RawLine) -> (HeaderName, Vec<u8>) {
    let name_pick = usize::from(name_pick);
    let name = if name_pick < KNOWN_NAMES.len() * 4 {
        HeaderName::from_static(KNOWN_NAMES[name_pick % KNOWN_NAMES.len()])
    } else {
        let tail = if a & 1 == 1 { "-reset" } else { "" };
        let prefix = PREFIXES[name_pick % PREFIXES.len()];
        HeaderName::from_bytes(format!("{prefix}{:x}{tail}", b as u32).as_bytes()).unwrap()
    };
    let value = match kind % 14 {
        // Raw bytes: non-UTF-8, controls (invalid header bytes are dropped by the caller).
        0 | 1 => {
            let bytes = [a.to_le_bytes(), b.to_le_bytes()].concat();
            bytes[..(kind as usize / 14) % 17].to_vec()
        }
        2 | 3 => a.to_string().into_bytes(),
        4 => (a as i64).to_string().into_bytes(),
        5 => f64::from_bits(a).to_string().into_bytes(),
        6 => format!("{}.{:03}", a % 3_000, b % 1000).into_bytes(),
        7 => format!("{a}{b}{a}").into_bytes(),
        8 => {
            // httpdate formats years 1970..=9999.
            let time = UNIX_EPOCH + Duration::from_secs(a % 253_402_300_800);
            httpdate::fmt_http_date(time).into_bytes()
        }
        9 => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}Z",
            a % 10_000,
            1 + b % 12,
            1 + (b >> 8) % 28,
            (b >> 16) % 24,
            (b >> 24) % 60
        )
        .into_bytes(),
        10 => format!("{}m{}.5s", a % 100_000, b % 60).into_bytes(),
        11 => {
            let (r, t) = (a as i64 % 1_000_000_000_000_000, b as i64 % 10_000_000_000);
            let name = ["a", "", "b\\\"", "Q"][(a >> 62) as usize];
            format!("\"{name}\";r={r};t={t}, {name};q={t};w={r}").into_bytes()
        }
        12 => format!("{}/{}", a % 100, b % 100).into_bytes(),
        _ => SAMPLES[(a % SAMPLES.len() as u64) as usize]
            .as_bytes()
            .to_vec(),
    };
    (name, value)
}

fn header_map(lines: Vec<RawLine>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for raw in lines {
        let (name, value) = line(raw);
        if let Ok(value) = HeaderValue::from_bytes(&value) {
            map.append(name, value);
        }
    }
    map
}

fn status_strategy() -> impl Strategy<Value = StatusCode> {
    prop::sample::select(vec![200u16, 304, 403, 429, 500, 503, 529])
        .prop_map(|code| StatusCode::from_u16(code).unwrap())
}

fn check_invariants(info: &RateLimitInfo, max: Duration, honor_age: bool) {
    let durations = info
        .policies()
        .iter()
        .flat_map(|p| [p.reset_after(), p.window()])
        .chain([info.retry_after(), info.wait(), info.age()])
        .flatten();
    for duration in durations {
        assert!(duration <= max, "{duration:?} > {max:?}: {info:?}");
    }
    for policy in info.policies() {
        if let (Some(limit), Some(remaining)) = (policy.limit(), policy.remaining()) {
            assert!(remaining <= limit, "{info:?}");
        }
    }
    assert!(info.policies().len() <= MAX_POLICIES);
    assert!(info.ignored().len() <= MAX_IGNORED);
    if info.retry_after().is_some() {
        assert_eq!(info.wait(), info.retry_after(), "Retry-After wins");
    }
    if honor_age && info.is_cached() {
        assert!(info.policies().is_empty(), "{info:?}");
    }
    if info.status() == StatusCode::TOO_MANY_REQUESTS {
        assert!(info.is_rate_limited());
    }
}

/// One case of the property: parse an arbitrary map with an arbitrary parser configuration and
/// check every invariant.
fn parse_keeps_invariants(
    status: StatusCode,
    lines: Vec<RawLine>,
    received_secs: u64,
    max_secs: u64,
    lenient: bool,
    honor_age: bool,
    override_format: bool,
) {
    let max = Duration::from_secs(max_secs);
    let mut parser = Parser::new()
        .max_duration(max)
        .lenient(lenient)
        .honor_age(honor_age);
    if override_format {
        parser = parser
            .reset_format(
                HeaderFamily::XRateLimitReset,
                ResetFormat::EpochMilliseconds,
            )
            .reset_format(HeaderFamily::RateLimitReset, ResetFormat::DeltaMilliseconds);
    }
    // Receive times from 1970 to far beyond 9999; SystemTime holds any u64 seconds here.
    let received_at = UNIX_EPOCH + Duration::from_secs(received_secs >> 20);
    let map = header_map(lines);
    let info = parser.parse(status, &map, received_at);
    check_invariants(&info, max, honor_age);
    if !ratewise_headers::may_describe_limits(status, &map) {
        // What the name scan lets a caller skip holds nothing.
        assert!(info.policies().is_empty(), "{info:?}");
        assert_eq!(info.retry_after(), None, "{info:?}");
        assert_eq!(info.bucket(), None, "{info:?}");
        assert!(!info.is_rate_limited(), "{info:?}");
    }
}

/// Every name a dialect reads for a policy, a wait or a refusal is found by the name scan
/// (`Date` and `Age` only qualify what others say).
#[test]
fn the_name_scan_finds_every_name_the_parser_reads() {
    for name in KNOWN_NAMES
        .iter()
        .filter(|name| !matches!(**name, "date" | "age"))
    {
        let mut headers = HeaderMap::new();
        headers.insert(HeaderName::from_static(name), HeaderValue::from_static("1"));
        assert!(
            ratewise_headers::may_describe_limits(StatusCode::OK, &headers),
            "{name}"
        );
    }
    assert!(ratewise_headers::may_describe_limits(
        StatusCode::TOO_MANY_REQUESTS,
        &HeaderMap::new()
    ));
    assert!(!ratewise_headers::may_describe_limits(
        StatusCode::OK,
        &HeaderMap::new()
    ));
}

// 100k cases in all, as two tests of 50k (strict and lenient structured fields) so that the
// test harness runs them on both cores of a CI machine.
proptest! {
    #![proptest_config(ProptestConfig::with_cases(50_000))]

    #[test]
    fn arbitrary_header_maps_keep_invariants_strict(
        status in status_strategy(),
        lines in prop::collection::vec(any::<RawLine>(), 0..10),
        received_secs in any::<u64>(),
        max_secs in prop::sample::select(vec![0u64, 1, 60, 86_400, 31_536_000]),
        honor_age in any::<bool>(),
        override_format in any::<bool>(),
    ) {
        parse_keeps_invariants(status, lines, received_secs, max_secs, false, honor_age, override_format);
    }

    #[test]
    fn arbitrary_header_maps_keep_invariants_lenient(
        status in status_strategy(),
        lines in prop::collection::vec(any::<RawLine>(), 0..10),
        received_secs in any::<u64>(),
        max_secs in prop::sample::select(vec![0u64, 1, 60, 86_400, 31_536_000]),
        honor_age in any::<bool>(),
        override_format in any::<bool>(),
    ) {
        parse_keeps_invariants(status, lines, received_secs, max_secs, true, honor_age, override_format);
    }
}

fn one(name: &'static str, value: &[u8]) -> RateLimitInfo {
    let mut map = HeaderMap::new();
    map.insert(name, HeaderValue::from_bytes(value).unwrap());
    Parser::new().parse(StatusCode::TOO_MANY_REQUESTS, &map, SystemTime::now())
}

#[test]
fn ten_megabyte_values_are_not_read() {
    let huge = vec![b'9'; 10 * 1024 * 1024];
    for name in [
        "retry-after",
        "ratelimit",
        "x-ratelimit-reset",
        "sforce-limit-info",
    ] {
        let info = one(name, &huge);
        assert!(info.policies().is_empty() && info.retry_after().is_none());
        assert!(
            info.ignored()
                .iter()
                .any(|n| n.reason() == IgnoreReason::TooLong)
        );
    }
}

#[test]
fn non_utf8_values_are_ignored() {
    let info = one("retry-after", b"\xff\xfe30");
    assert_eq!(info.retry_after(), None);
    assert_eq!(info.ignored()[0].reason(), IgnoreReason::NotUtf8);
}

#[test]
fn forty_digit_numbers_never_overflow() {
    let forty = "9".repeat(40);
    assert!(one("retry-after", forty.as_bytes()).is_clamped());
    assert!(one("retry-after-ms", forty.as_bytes()).is_clamped());
    let mut map = HeaderMap::new();
    map.insert("x-ratelimit-limit", forty.parse().unwrap());
    map.insert("x-ratelimit-remaining", "0".parse().unwrap());
    map.insert("x-ratelimit-reset", forty.parse().unwrap());
    let info = Parser::new().parse(StatusCode::OK, &map, SystemTime::now());
    let policy = &info.policies()[0];
    assert_eq!(policy.limit(), None, "too large to be a count");
    assert_eq!(
        policy.reset_after(),
        Some(ratewise_headers::DEFAULT_MAX_DURATION)
    );
    assert!(
        info.ignored()
            .iter()
            .any(|n| n.reason() == IgnoreReason::TooLarge)
    );
}

#[test]
fn nan_and_infinities_are_malformed() {
    for value in ["NaN", "inf", "-inf", "1e9", "0x10", ""] {
        let info = one("retry-after", value.as_bytes());
        assert_eq!(info.retry_after(), None, "{value}");
    }
}

#[test]
fn year_9999_dates_are_clamped() {
    let info = one("retry-after", b"Fri, 31 Dec 9999 23:59:59 GMT");
    assert_eq!(
        info.retry_after(),
        Some(ratewise_headers::DEFAULT_MAX_DURATION)
    );
    assert!(info.is_clamped());
    let info = one("x-ratelimit-reset", b"9999-12-31T23:59:59Z");
    assert_eq!(
        info.policies()[0].reset_after(),
        Some(ratewise_headers::DEFAULT_MAX_DURATION)
    );
}

#[test]
fn receive_times_before_1970_do_not_panic() {
    let mut map = HeaderMap::new();
    map.insert("x-ratelimit-reset", "1350085394".parse().unwrap());
    map.insert(
        "retry-after",
        "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
    );
    let info = Parser::new().parse(
        StatusCode::TOO_MANY_REQUESTS,
        &map,
        UNIX_EPOCH - Duration::from_secs(1_000_000),
    );
    check_invariants(&info, ratewise_headers::DEFAULT_MAX_DURATION, true);
}

#[test]
fn thousands_of_lines_stay_bounded() {
    let mut map = HeaderMap::new();
    for i in 0..2_000 {
        map.append("ratelimit", format!("\"p{i}\";r=0;t=1").parse().unwrap());
        map.append("x-ms-ratelimit-remaining-resource", "bad".parse().unwrap());
    }
    let info = Parser::new().parse(StatusCode::OK, &map, SystemTime::now());
    assert_eq!(info.policies().len(), MAX_POLICIES);
    assert_eq!(info.ignored().len(), MAX_IGNORED);
}

/// A hostile server may send tens of thousands of distinct vendor names (a `HeaderMap` holds
/// more than 20 000): grouping them into policies must stay linear, not compare each new
/// name with every name before it.
#[test]
fn tens_of_thousands_of_named_policies_stay_bounded() {
    let mut map = HeaderMap::new();
    for i in 0..20_000 {
        let name = HeaderName::from_bytes(format!("x-ratelimit-limit-p{i}").as_bytes()).unwrap();
        map.append(name, HeaderValue::from_static("10"));
    }
    let info = Parser::new().parse(StatusCode::OK, &map, SystemTime::now());
    assert_eq!(info.policies().len(), MAX_POLICIES);
    assert!(
        info.ignored()
            .iter()
            .any(|note| note.reason() == IgnoreReason::TooManyPolicies)
    );
}
