//! `parse` allocates nothing for the common dialects (GitHub, legacy `X-RateLimit-*`, OpenAI,
//! 429 + `Retry-After`) nor for a response without any rate-limit header, results included.

use std::alloc::System;
use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    map
}

#[test]
fn common_responses_are_parsed_without_allocating() {
    let received_at = UNIX_EPOCH + Duration::from_secs(1_350_084_794);
    let date = ("date", "Fri, 12 Oct 2012 23:33:14 GMT");
    let cases = [
        (
            "github",
            StatusCode::OK,
            headers(&[
                date,
                ("content-type", "application/json; charset=utf-8"),
                ("x-ratelimit-limit", "5000"),
                ("x-ratelimit-remaining", "4987"),
                ("x-ratelimit-reset", "1350085394"),
                ("x-ratelimit-used", "13"),
                ("x-ratelimit-resource", "core"),
            ]),
        ),
        (
            "legacy",
            StatusCode::OK,
            headers(&[
                date,
                ("x-ratelimit-limit", "100"),
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "30"),
            ]),
        ),
        (
            "openai",
            StatusCode::OK,
            headers(&[
                date,
                ("x-ratelimit-limit-requests", "10000"),
                ("x-ratelimit-remaining-requests", "9999"),
                ("x-ratelimit-reset-requests", "6ms"),
                ("x-ratelimit-limit-tokens", "2000000"),
                ("x-ratelimit-remaining-tokens", "1999000"),
                ("x-ratelimit-reset-tokens", "1m30.5s"),
            ]),
        ),
        (
            "429 + Retry-After",
            StatusCode::TOO_MANY_REQUESTS,
            headers(&[date, ("retry-after", "30")]),
        ),
        (
            "no rate-limit header",
            StatusCode::OK,
            headers(&[
                date,
                ("content-type", "application/json"),
                ("server", "nginx"),
            ]),
        ),
    ];
    for (name, status, map) in &cases {
        // Warm up anything lazily initialised (tracing callsites, tables).
        drop(ratewise_headers::parse(*status, map, received_at));
        let region = Region::new(GLOBAL);
        let info = ratewise_headers::parse(*status, map, received_at);
        assert!(
            info.retry_after().is_some()
                || !info.policies().is_empty()
                || *name == "no rate-limit header",
            "{name}: parsed nothing: {info:?}"
        );
        drop(info);
        let change = region.change();
        assert_eq!(change.allocations, 0, "{name}: {change:?}");
        assert_eq!(change.reallocations, 0, "{name}: {change:?}");
    }
}
