//! Parse `Retry-After` and every common rate-limit header dialect into one normalized
//! [`RateLimitInfo`].
//!
//! # Overview
//!
//! [`parse`] turns a response's status and headers into a [`RateLimitInfo`]: the delay the
//! server asked for ([`retry_after`](RateLimitInfo::retry_after)), the time before the next
//! request may go ([`wait`](RateLimitInfo::wait)), whether the response is a rate-limit
//! refusal, the server's bucket, and every [`Policy`] found (limit, remaining, reset, window,
//! unit). The crate is pure — no tokio, no tower — so any HTTP client can use it and it can be
//! fuzzed; the `ratewise-adapt` and `ratewise-retry` layers build on it (their crate docs hold
//! the `ServiceBuilder` examples).
//!
//! Dialects read:
//!
//! | Dialect | Fields |
//! |---|---|
//! | RFC 9110 + SDKs | `Retry-After` (seconds, float seconds, HTTP-date in all three formats), `retry-after-ms` |
//! | IETF draft-08..10 | `RateLimit`, `RateLimit-Policy` as RFC 9651 lists, several lines combined; Jira `Beta-RateLimit*`; Cloudflare |
//! | IETF draft-07 | `RateLimit: limit=, remaining=, reset=` dictionary |
//! | IETF drafts <= 06 | `RateLimit-Limit`/`-Remaining`/`-Reset`/`-Policy` (also Twitch, Zendesk lists) |
//! | GitLab | `RateLimit-*` plus `Observed`, `ResetTime`, `Name` (reset is an epoch) |
//! | GitHub, Discord, Reddit, Jira, express-rate-limit | `X-RateLimit-Limit/-Remaining/-Reset/-Used/-Resource/-Bucket/-Reset-After/-Global/-Scope` |
//! | OpenAI, Azure OpenAI, Linear | `x-ratelimit-{limit,remaining,reset}-<name>` (Go durations, `-1` = unknown), `x-ratelimit-<name>-{limit,remaining,reset}` (epoch ms) |
//! | Anthropic | `anthropic-ratelimit-<name>-{limit,remaining,reset}` (RFC 3339) |
//! | Twitter/X, Okta, Zendesk | `X-Rate-Limit-*`, `X-Rate-Limit` |
//! | Shopify, Salesforce | `X-Shopify-Shop-Api-Call-Limit: 32/40`, `Sforce-Limit-Info: api-usage=25/5000` (used/limit, converted to remaining) |
//! | Azure Resource Manager, HubSpot, Zendesk | `x-ms-ratelimit-remaining-*`, `X-HubSpot-RateLimit-*`, `zendesk-ratelimit-*` |
//! | Stripe, Slack, Kubernetes | `Retry-After`, `Stripe-Rate-Limited-Reason`, `Stripe-Should-Retry` |
//! | Google APIs, Discord bodies | opt-in [`retry_delay_from_body`] (`RetryInfo.retryDelay`, `retry_after`) |
//!
//! # Examples
//!
//! GitHub: an epoch reset, converted through the response's `Date`.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use http::{HeaderMap, StatusCode};
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("date", "Fri, 12 Oct 2012 23:33:14 GMT".parse().unwrap()); // epoch 1350084794
//! headers.insert("x-ratelimit-limit", "5000".parse().unwrap());
//! headers.insert("x-ratelimit-remaining", "0".parse().unwrap());
//! headers.insert("x-ratelimit-used", "5000".parse().unwrap());
//! headers.insert("x-ratelimit-reset", "1350085394".parse().unwrap());
//! headers.insert("x-ratelimit-resource", "core".parse().unwrap());
//!
//! let info = ratewise_headers::parse(StatusCode::FORBIDDEN, &headers, SystemTime::now());
//! assert!(info.is_rate_limited()); // GitHub's 403 with nothing left, not an auth error
//! assert_eq!(info.bucket(), Some("core"));
//! assert_eq!(info.wait(), Some(Duration::from_secs(600))); // reset - Date
//! ```
//!
//! IETF draft-08 (Cloudflare, express-rate-limit): named policies joined across both fields.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use http::{HeaderMap, StatusCode};
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("ratelimit-policy", r#""burst";q=100;w=60,"daily";q=1000;w=86400"#.parse().unwrap());
//! headers.append("ratelimit", r#""burst";r=0;t=30"#.parse().unwrap());
//!
//! let info = ratewise_headers::parse(StatusCode::OK, &headers, SystemTime::now());
//! let burst = &info.policies()[0];
//! assert_eq!((burst.name(), burst.limit(), burst.remaining()), (Some("burst"), Some(100), Some(0)));
//! assert_eq!(burst.window(), Some(Duration::from_secs(60)));
//! assert_eq!(info.wait(), Some(Duration::from_secs(30)));
//! ```
//!
//! OpenAI: two buckets with Go-duration resets; and a per-host override of the epoch/delta rule.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use http::{HeaderMap, StatusCode};
//! use ratewise_headers::{HeaderFamily, Parser, ResetFormat, Unit};
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("x-ratelimit-limit-requests", "5000".parse().unwrap());
//! headers.insert("x-ratelimit-remaining-requests", "4999".parse().unwrap());
//! headers.insert("x-ratelimit-reset-requests", "12ms".parse().unwrap());
//! headers.insert("x-ratelimit-limit-tokens", "160000".parse().unwrap());
//! headers.insert("x-ratelimit-remaining-tokens", "0".parse().unwrap());
//! headers.insert("x-ratelimit-reset-tokens", "6m0s".parse().unwrap());
//!
//! let info = ratewise_headers::parse(StatusCode::OK, &headers, SystemTime::now());
//! let tokens = info.policies().iter().find(|p| p.unit() == Unit::Tokens).unwrap();
//! assert_eq!(tokens.reset_after(), Some(Duration::from_secs(360)));
//! assert_eq!(info.wait(), Some(Duration::from_secs(360))); // only the tokens bucket is empty
//!
//! // Prisjakt writes `X-Rate-Limit-Reset` in delta milliseconds: say so for that host.
//! let prisjakt = Parser::new()
//!     .reset_format(HeaderFamily::XRateLimitHyphenatedReset, ResetFormat::DeltaMilliseconds);
//! let mut headers = HeaderMap::new();
//! headers.insert("x-rate-limit-remaining", "0".parse().unwrap());
//! headers.insert("x-rate-limit-reset", "600000".parse().unwrap());
//! let info = prisjakt.parse(StatusCode::TOO_MANY_REQUESTS, &headers, SystemTime::now());
//! assert_eq!(info.wait(), Some(Duration::from_secs(600)));
//! ```
//!
//! # Epoch or delta: how reset values are read
//!
//! The same header name means different things at different vendors (`X-RateLimit-Reset` is an
//! epoch at GitHub and a delta at Reddit; `RateLimit-Reset` a delta in the IETF drafts and an
//! epoch at GitLab). A bare number is resolved in this order:
//!
//! 1. **Dialect knowledge**: IETF `t`/`reset`, Discord `Reset-After`, `Retry-After` and
//!    `zendesk-ratelimit-*` `resets` are deltas; `retry-after-ms` and HubSpot intervals are
//!    milliseconds; GitLab's `RateLimit-Reset` (recognised by `RateLimit-Observed`,
//!    `-ResetTime` or `-Name`) is an epoch. A caller's [`Parser::reset_format`] for a
//!    [`HeaderFamily`] overrides this for the ambiguous families.
//! 2. **Magnitude**: `>= 1e12` is epoch milliseconds (Linear), `>= 1e9` epoch seconds (GitHub,
//!    Discord's `1470173023.123`, Twitter), anything smaller a delta in seconds (Reddit's
//!    `254`). A delta of 1e9 s would be 31 years, so the rule never mistakes a real delta.
//! 3. **Date cross-check**: an epoch is converted as `reset − Date` (the server's own clock, so
//!    client clock skew cancels out: the local reset instant is `reset − Date + received_at`);
//!    without a valid `Date`, as `reset − received_at`. A reset in the past gives zero; one
//!    more than a day before `Date` is not a reset at all and is ignored
//!    ([`IgnoreReason::ImplausibleEpoch`]).
//!
//! Strings are unambiguous: Go durations (`6m0s`, `12ms`, `500µs`), RFC 3339 (`2025-08-21T12:40:59Z`,
//! Jira's `2026-03-26T16:00Z`) and HTTP-dates are read as such in every family.
//!
//! # Rules
//!
//! - `Retry-After` always wins ([`RateLimitInfo::wait`]); `retry-after-ms` wins over it.
//! - A cached response (`Age > 0`) yields no policies, as the IETF draft requires
//!   ([`Parser::honor_age`]).
//! - `remaining <= limit` whenever both are known; used/limit dialects become remaining;
//!   negative counts (Azure OpenAI's `-1`) mean unknown, never exhausted.
//! - Every duration is at most [`Parser::max_duration`] (one day by default); clamping sets
//!   [`RateLimitInfo::is_clamped`] so a layer can report "wait too long" instead of sleeping.
//! - Hostile input (negative, NaN, 40-digit numbers, 10 MB values, non-UTF-8 bytes, year-9999
//!   dates) never panics or overflows: it is skipped or clamped and listed in
//!   [`RateLimitInfo::ignored`] for a `tracing` event in the layer. Values over
//!   [`MAX_VALUE_LEN`] bytes are not read at all.
//!
//! # Dependencies
//!
//! - `sfv`: the strict RFC 9651 parser for the IETF fields (a hand-written lenient fallback
//!   handles the deviations servers send, such as `"x" ;r=5`);
//! - `httpdate`: the three HTTP-date formats of RFC 9110, allocation-free;
//! - `base64` (already a dependency of `sfv`): byte sequences in the lenient path;
//! - `serde_json`: only for the opt-in body hook.
//!
//! Written by hand, because no crate does it well here: Go durations (no maintained crate
//! accepts all of Go's units, `µs`/`μs` included), RFC 3339 (Jira omits the seconds, which the
//! strict parsers of `time` and `chrono` reject, and a 60-line parser avoids a date crate for
//! one conversion), and decimal numbers (read exactly into seconds and nanoseconds, so
//! `64.57` is never `64.569999`).
#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod info;
mod parser;
mod sf;
mod value;

use std::time::SystemTime;

pub use body::{MAX_BODY_LEN, retry_delay_from_body};
pub use info::{Dialect, IgnoreReason, Ignored, Policy, RateLimitInfo, Scope, Unit};
pub use parser::{
    DEFAULT_MAX_DURATION, HeaderFamily, MAX_IGNORED, MAX_POLICIES, MAX_VALUE_LEN, Parser,
    ResetFormat,
};

/// Parses a response's status and headers with the default [`Parser`].
///
/// `received_at` is the local wall-clock time the response arrived; absolute reset times are
/// converted through the response's `Date` header relative to it. Never panics.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::{HeaderMap, StatusCode};
///
/// let mut headers = HeaderMap::new();
/// headers.insert("retry-after", "120".parse().unwrap());
/// let info = ratewise_headers::parse(StatusCode::TOO_MANY_REQUESTS, &headers, SystemTime::now());
/// assert!(info.is_rate_limited());
/// assert_eq!(info.wait(), Some(Duration::from_secs(120)));
/// ```
pub fn parse(
    status: http::StatusCode,
    headers: &http::HeaderMap,
    received_at: SystemTime,
) -> RateLimitInfo {
    Parser::new().parse(status, headers, received_at)
}

/// Whether [`parse`] could find anything in this response: a 429 (a refusal even without
/// headers), or a header whose name mentions `rate`, `retry` or `limit`. Every field the
/// parser reads besides `Date` and `Age` does (`ratelimit*`, `x-rate-limit-*`,
/// `retry-after*`, `x-shopify-shop-api-call-limit`, `sforce-limit-info`,
/// `stripe-should-retry`, ...), and `Date` or `Age` alone describe nothing.
///
/// A scan of the names only, for callers that see every response (the adaptation layer):
/// most APIs send no rate-limit header on most responses, and this lets them skip `parse`.
/// A `true` only means "parse it"; a `false` means `parse` would find no policy, no wait, no
/// bucket and no refusal.
///
/// ```
/// use http::{HeaderMap, StatusCode};
///
/// let mut headers = HeaderMap::new();
/// headers.insert("content-type", "application/json".parse().unwrap());
/// assert!(!ratewise_headers::may_describe_limits(StatusCode::OK, &headers));
/// headers.insert("x-ratelimit-remaining", "10".parse().unwrap());
/// assert!(ratewise_headers::may_describe_limits(StatusCode::OK, &headers));
/// ```
pub fn may_describe_limits(status: http::StatusCode, headers: &http::HeaderMap) -> bool {
    status == http::StatusCode::TOO_MANY_REQUESTS
        || headers
            .keys()
            .any(|name| mentions_limits(name.as_str().as_bytes()))
}

/// Whether `name` contains `rate`, `retry` or `limit`, in one pass over its bytes (three
/// substring searches cost several times more on every response).
fn mentions_limits(name: &[u8]) -> bool {
    name.iter().enumerate().any(|(index, &byte)| {
        let rest = &name[index..];
        match byte {
            b'r' => rest.starts_with(b"rate") || rest.starts_with(b"retry"),
            b'l' => rest.starts_with(b"limit"),
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        /// The one-pass scan finds exactly what three substring searches find.
        #[test]
        fn name_scan_matches_substring_search(name in "[-ratelimyx]{0,12}") {
            let reference = name.contains("rate") || name.contains("retry") || name.contains("limit");
            prop_assert_eq!(super::mentions_limits(name.as_bytes()), reference);
        }
    }
}
