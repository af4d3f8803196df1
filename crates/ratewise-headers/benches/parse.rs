//! `parse` on typical responses, next to the `rate-limits` crate (the Rust prior art) in the same
//! run. Run: `cargo bench -p ratewise-headers --bench parse -- --warm-up-time 1 --measurement-time 3`.
//!
//! Wall time is noisy on a shared machine; count instructions instead:
//! `CARGO_PROFILE_BENCH_DEBUG=true cargo bench -p ratewise-headers --bench parse --no-run`, then
//! `valgrind --tool=callgrind <binary> --bench --profile-time 2 '^parse/ratewise/github$'` and
//! divide the inclusive Ir of `ratewise_headers::parse` by its call count. Instructions and heap
//! allocations per parse (the allocations are the `malloc` calls beyond criterion's own ~940):
//!
//! | response | before | after |
//! |---|---|---|
//! | github | 5923 Ir, 3 allocations | 2804 Ir, 0 |
//! | draft8 | 11064 Ir, 12 | 9082 Ir, 2 (the entry list of each field) |
//! | retry-after (429) | 2314 Ir, 0 | 913 Ir, 0 |
//! | none (no rate-limit header) | 2278 Ir, 0 | 1099 Ir, 0 |
//! | openai | 9054 Ir, 5 | 4564 Ir, 0 |
//! | legacy (drafts <= 06) | 3606 Ir, 1 | 1579 Ir, 0 |
//!
//! Dropping the result costs 52 Ir on every path (333 for GitHub and 342 for OpenAI before).
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

fn headers(lines: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in lines {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

/// A GitHub REST 200 as sent by api.github.com (rate-limit headers among the usual others).
fn github() -> HeaderMap {
    headers(&[
        ("date", "Fri, 12 Oct 2012 23:33:14 GMT"),
        ("content-type", "application/json; charset=utf-8"),
        ("cache-control", "private, max-age=60, s-maxage=60"),
        ("vary", "Accept, Authorization, Cookie, X-GitHub-OTP"),
        ("etag", "W/\"a1b2c3d4e5f60718293a4b5c6d7e8f90\""),
        ("last-modified", "Fri, 12 Oct 2012 20:00:00 GMT"),
        ("x-oauth-scopes", "repo, user"),
        ("x-accepted-oauth-scopes", "repo"),
        ("x-github-media-type", "github.v3; format=json"),
        ("x-github-api-version-selected", "2022-11-28"),
        ("x-ratelimit-limit", "5000"),
        ("x-ratelimit-remaining", "4987"),
        ("x-ratelimit-reset", "1350085394"),
        ("x-ratelimit-used", "13"),
        ("x-ratelimit-resource", "core"),
        (
            "access-control-expose-headers",
            "ETag, Link, Location, Retry-After",
        ),
        (
            "strict-transport-security",
            "max-age=31536000; includeSubdomains; preload",
        ),
        ("x-content-type-options", "nosniff"),
        ("content-security-policy", "default-src 'none'"),
        ("server", "github.com"),
        ("x-github-request-id", "CAFE:1234:5678AB:9ABCDE:650F0F0F"),
    ])
}

/// A Cloudflare-style IETF draft-08 response, two policies.
fn draft8() -> HeaderMap {
    headers(&[
        ("date", "Thu, 26 Nov 2026 17:00:00 GMT"),
        ("content-type", "application/json"),
        ("cache-control", "no-store"),
        ("server", "cloudflare"),
        ("cf-ray", "8f1c2a3b4d5e6f70-AMS"),
        (
            "ratelimit-policy",
            r#""burst";q=100;w=60, "daily";q=1000;w=86400"#,
        ),
        ("ratelimit", r#""burst";r=50;t=30, "daily";r=999;t=3600"#),
    ])
}

fn bench(c: &mut Criterion) {
    let received_at = UNIX_EPOCH + Duration::from_secs(1_350_084_794);
    let now = SystemTime::now();
    let github = github();
    let draft8 = draft8();
    let retry_after = headers(&[
        ("retry-after", "30"),
        ("date", "Fri, 12 Oct 2012 23:33:14 GMT"),
    ]);
    // A response without any rate-limit header: the parse that finds nothing.
    let plain = headers(&[
        ("date", "Fri, 12 Oct 2012 23:33:14 GMT"),
        ("content-type", "application/json; charset=utf-8"),
        ("cache-control", "private, max-age=60, s-maxage=60"),
        ("vary", "Accept, Authorization, Cookie"),
        ("etag", "W/\"a1b2c3d4e5f60718293a4b5c6d7e8f90\""),
        ("server", "nginx"),
        ("x-request-id", "CAFE:1234:5678AB:9ABCDE:650F0F0F"),
    ]);

    // OpenAI: two named policies with Go-duration resets.
    let openai = headers(&[
        ("date", "Thu, 26 Nov 2026 17:00:00 GMT"),
        ("content-type", "application/json"),
        ("openai-processing-ms", "321"),
        ("x-ratelimit-limit-requests", "5000"),
        ("x-ratelimit-remaining-requests", "4999"),
        ("x-ratelimit-reset-requests", "12ms"),
        ("x-ratelimit-limit-tokens", "160000"),
        ("x-ratelimit-remaining-tokens", "159000"),
        ("x-ratelimit-reset-tokens", "6m0s"),
        ("x-request-id", "req_0123456789abcdef"),
    ]);
    // IETF drafts <= 06 (Twitch, express-rate-limit `draft-6`).
    let legacy = headers(&[
        ("date", "Thu, 26 Nov 2026 17:00:00 GMT"),
        ("content-type", "application/json"),
        ("ratelimit-limit", "100"),
        ("ratelimit-remaining", "42"),
        ("ratelimit-reset", "30"),
    ]);

    let mut group = c.benchmark_group("parse");
    group.bench_function("ratewise/github", |b| {
        b.iter(|| ratewise_headers::parse(StatusCode::OK, black_box(&github), received_at))
    });
    group.bench_function("rate-limits/github", |b| {
        b.iter(|| rate_limits::RateLimit::new(black_box(&github)))
    });
    group.bench_function("ratewise/draft8", |b| {
        b.iter(|| ratewise_headers::parse(StatusCode::OK, black_box(&draft8), now))
    });
    group.bench_function("ratewise/retry-after", |b| {
        b.iter(|| {
            ratewise_headers::parse(StatusCode::TOO_MANY_REQUESTS, black_box(&retry_after), now)
        })
    });
    group.bench_function("ratewise/openai", |b| {
        b.iter(|| ratewise_headers::parse(StatusCode::OK, black_box(&openai), now))
    });
    group.bench_function("ratewise/legacy", |b| {
        b.iter(|| ratewise_headers::parse(StatusCode::OK, black_box(&legacy), now))
    });
    group.bench_function("ratewise/none", |b| {
        b.iter(|| ratewise_headers::parse(StatusCode::OK, black_box(&plain), now))
    });
    group.bench_function("rate-limits/retry-after", |b| {
        b.iter(|| rate_limits::RateLimit::new(black_box(&retry_after)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
