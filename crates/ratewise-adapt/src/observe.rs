//! The normalized view of one response that the key state learns from.
//!
//! The layer turns `ratewise_headers::parse`'s `RateLimitInfo` into an [`Observation`]; the
//! state machine only ever sees observations, so it is tested without HTTP.

use std::time::Duration;

/// Most policies a key tracks; further policies of one response are ignored (with an event).
pub(crate) const MAX_POLICIES: usize = 4;

/// One quota policy the server described.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct ObservedPolicy {
    /// Hash of the policy name (or of its position when unnamed): matches a policy across
    /// responses without keeping the server's string.
    pub(crate) id: u64,
    pub(crate) limit: Option<u64>,
    pub(crate) remaining: Option<u64>,
    pub(crate) reset_after: Option<Duration>,
    pub(crate) window: Option<Duration>,
    /// Whether one request spends one unit (requests; not tokens, points or bytes).
    pub(crate) counts_requests: bool,
    /// Every request spends at least one unit of this policy (requests, points, tokens,
    /// concurrent requests), so one unit is reserved per request in flight; a lower bound
    /// that keeps concurrent callers from overshooting a points or tokens budget.
    pub(crate) spent_per_request: bool,
}

impl ObservedPolicy {
    pub(crate) fn id_of(name: Option<&str>, position: usize) -> u64 {
        // A tag byte keeps names and positions apart.
        match name {
            Some(name) => fnv1a(fnv1a(FNV_OFFSET, &[1]), name.as_bytes()),
            None => fnv1a(fnv1a(FNV_OFFSET, &[0]), &position.to_le_bytes()),
        }
    }
}

/// What one response says about its key.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Observation {
    /// The response is a rate-limit refusal (429, 503 with Retry-After, GitHub 403, ...).
    pub(crate) rate_limited: bool,
    /// The server's Retry-After (only honoured on refusals).
    pub(crate) retry_after: Option<Duration>,
    /// How long before the next request on this bucket may go, per the server.
    pub(crate) wait: Option<Duration>,
    /// The refusal applies to every key of the client (Discord `X-RateLimit-Global`).
    pub(crate) global: bool,
    /// Hash of the server-declared bucket, if any.
    pub(crate) bucket: Option<u64>,
    pub(crate) policies: [ObservedPolicy; MAX_POLICIES],
    pub(crate) policy_count: usize,
}

impl Observation {
    pub(crate) fn policies(&self) -> &[ObservedPolicy] {
        &self.policies[..self.policy_count]
    }

    /// Adds a policy; returns false (and keeps the observation) when it is full.
    pub(crate) fn push(&mut self, policy: ObservedPolicy) -> bool {
        if self.policy_count == MAX_POLICIES {
            return false;
        }
        self.policies[self.policy_count] = policy;
        self.policy_count += 1;
        true
    }

    /// The time the server asks this key to pause, when the response is a refusal.
    pub(crate) fn cooldown(&self) -> Option<Duration> {
        if !self.rate_limited {
            return None;
        }
        self.retry_after.or(self.wait)
    }

    /// What a refusal served by a cache `age` ago still says: the rest of the pause the origin
    /// asked for, and whether it applies to every key. Nothing when the response is not a
    /// refusal or the pause is over; its counts are stale and never used.
    pub(crate) fn cached_refusal(&self, age: Duration) -> Option<(Duration, bool)> {
        let rest = self
            .cooldown()?
            .checked_sub(age)
            .filter(|rest| !rest.is_zero())?;
        Some((rest, self.global))
    }

    pub(crate) fn bucket_id(bucket: &str) -> u64 {
        fnv1a(FNV_OFFSET, bucket.as_bytes())
    }
}

/// The FNV-1a offset basis: the hash of nothing.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a of `bytes`, continuing from `hash`. The ids it makes are compared within one
/// process only; a few nanoseconds for the short names servers send, where SipHash costs
/// several times more per response. (A server that wants two of its policies to collide can
/// do so with either: `DefaultHasher::new` is not randomly keyed.)
fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A hash of the first segment of `path` (`"search"` for `/search/code`): the part of a
/// route key's paths that a server-declared bucket is remembered for. FNV-1a: no allocation,
/// a few nanoseconds.
pub(crate) fn path_segment(path: &str) -> u64 {
    // One pass over the bytes: skip the leading slashes, hash up to the next one.
    let bytes = path.as_bytes();
    let start = bytes
        .iter()
        .position(|&byte| byte != b'/')
        .unwrap_or(bytes.len());
    let segment = &bytes[start..];
    let end = segment
        .iter()
        .position(|&byte| byte == b'/')
        .unwrap_or(segment.len());
    fnv1a(FNV_OFFSET, &segment[..end])
}

/// How long ago a cache stored the response (`Age`, when above 0): its rate-limit fields
/// describe the past.
pub(crate) fn cached_age(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get(http::header::AGE)
        .and_then(|age| age.to_str().ok())
        .and_then(|age| age.trim().parse::<u64>().ok())
        .filter(|age| *age > 0)
        .map(Duration::from_secs)
}

/// How close a policy is to refusing, for choosing which to track (lower is tighter): the
/// fraction of its limit left, in millionths; an unknown count or limit last.
fn tightness(policy: &ratewise_headers::Policy) -> u64 {
    tightness_of(policy.remaining(), policy.limit())
}

/// [`tightness`] of a remaining count and a limit.
pub(crate) fn tightness_of(remaining: Option<u64>, limit: Option<u64>) -> u64 {
    match (remaining, limit) {
        (Some(0), _) => 0,
        (Some(remaining), Some(limit)) if limit > 0 => {
            1 + u64::try_from(u128::from(remaining.min(limit)) * 1_000_000 / u128::from(limit))
                .unwrap_or(u64::MAX)
        }
        (Some(_), _) => 2_000_000,
        (None, _) => u64::MAX,
    }
}

/// Whether every request spends at least one unit of a policy counted in `unit`. Content
/// bytes (a GET may send none) and unknown units are not reserved.
fn spent_per_request(unit: ratewise_headers::Unit) -> bool {
    use ratewise_headers::Unit;
    matches!(
        unit,
        Unit::Requests
            | Unit::Points
            | Unit::Tokens
            | Unit::InputTokens
            | Unit::OutputTokens
            | Unit::ConcurrentRequests
    )
}

impl Observation {
    /// The observation of a parsed response.
    pub(crate) fn from_info(
        info: &ratewise_headers::RateLimitInfo,
        key: &ratewise_core::Key,
    ) -> Self {
        let status = info.status();
        let retry_after = info.retry_after();
        let mut observation = Observation {
            // 503 with Retry-After is "come back later" for the whole key too.
            rate_limited: info.is_rate_limited()
                || (status == http::StatusCode::SERVICE_UNAVAILABLE && retry_after.is_some()),
            retry_after,
            wait: info.wait(),
            global: info.is_global(),
            bucket: info.bucket().map(Observation::bucket_id),
            ..Observation::default()
        };
        // More policies than tracked: keep the tightest (exhausted first, then the smallest
        // fraction left, unknown counts last), so that the one that binds is never dropped.
        const IN_ORDER: [usize; MAX_POLICIES] = [0, 1, 2, 3];
        let count = info.policies().len();
        let mut sorted = Vec::new();
        let order: &[usize] = if count > MAX_POLICIES {
            sorted.extend(0..count);
            sorted.sort_by_key(|&position| tightness(&info.policies()[position]));
            &sorted
        } else {
            &IN_ORDER[..count]
        };
        for &position in order {
            let policy = &info.policies()[position];
            let pushed = observation.push(ObservedPolicy {
                id: ObservedPolicy::id_of(policy.name(), position),
                limit: policy.limit(),
                remaining: policy.remaining(),
                reset_after: policy.reset_after(),
                window: policy.window(),
                counts_requests: matches!(policy.unit(), ratewise_headers::Unit::Requests),
                spent_per_request: spent_per_request(policy.unit()),
            });
            if !pushed {
                tracing::debug!(%key, policies = info.policies().len(), "adapt: more policies than tracked; extra ones ignored");
                break;
            }
        }
        for ignored in info.ignored() {
            tracing::debug!(%key, header = %ignored.header(), reason = %ignored.reason(), "adapt: header value ignored by the parser");
        }
        observation
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
    use proptest::prelude::*;

    use super::*;

    /// Header names `ratewise_headers` reads, one per family (and some prefixed ones): test
    /// data for the property below.
    const PARSER_NAMES: &[&str] = &[
        "retry-after",
        "retry-after-ms",
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
        "x-shopify-shop-api-call-limit",
        "sforce-limit-info",
        "stripe-rate-limited-reason",
        "ratelimit-reason",
        "x-beta-ratelimit-reason",
        "stripe-should-retry",
        "x-rate-limit",
        "x-rate-limit-limit",
        "x-rate-limit-remaining",
        "x-rate-limit-reset",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "x-ratelimit-reset-after",
        "x-ratelimit-bucket",
        "x-ratelimit-global",
        "x-ratelimit-resource",
        "x-ratelimit-limit-requests",
        "x-ratelimit-reset-tokens",
        "anthropic-ratelimit-requests-remaining",
        "x-ms-ratelimit-remaining-subscription-reads",
        "x-hubspot-ratelimit-daily",
        "zendesk-ratelimit-tickets-index",
    ];

    /// Names of ordinary responses, none of which the parser reads for a policy.
    const OTHER_NAMES: &[&str] = &[
        "date",
        "age",
        "content-type",
        "content-length",
        "cache-control",
        "etag",
        "server",
        "vary",
        "x-request-id",
        "set-cookie",
    ];

    const VALUES: &[&str] = &[
        "0",
        "1",
        "5000",
        "1795715200",
        "\"p\";r=0;t=1",
        "\"p\";q=10;w=1",
        "limit=10, remaining=0, reset=5",
        "12ms",
        "32/40",
        "true",
        "Thu, 26 Nov 2026 18:00:00 GMT",
        "core",
    ];

    fn statuses() -> impl Strategy<Value = StatusCode> {
        prop::sample::select(vec![200u16, 204, 304, 400, 403, 404, 429, 500, 503, 529])
            .prop_map(|code| StatusCode::from_u16(code).unwrap())
    }

    fn headers() -> impl Strategy<Value = Vec<(&'static str, &'static str)>> {
        let names: Vec<&'static str> = PARSER_NAMES.iter().chain(OTHER_NAMES).copied().collect();
        prop::collection::vec(
            (
                prop::sample::select(names),
                prop::sample::select(VALUES.to_vec()),
            ),
            0..6,
        )
    }

    proptest! {
        /// The one-pass segment hash hashes what `trim_start_matches` and `split` find.
        #[test]
        fn path_segment_hashes_the_first_segment(path in "[/ab]{0,10}") {
            let segment = path.trim_start_matches('/').split('/').next().unwrap_or("");
            prop_assert_eq!(path_segment(&path), fnv1a(FNV_OFFSET, segment.as_bytes()));
        }

        /// Skipping the parse when the scan finds nothing changes nothing: the parser would
        /// have found nothing either.
        #[test]
        fn responses_the_scan_skips_describe_nothing(status in statuses(), lines in headers(), secs in 0u64..5_000_000_000) {
            let mut map = HeaderMap::new();
            for (name, value) in lines {
                map.append(HeaderName::from_static(name), HeaderValue::from_static(value));
            }
            if !ratewise_headers::may_describe_limits(status, &map) {
                let received = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
                let info = ratewise_headers::parse(status, &map, received);
                let key = ratewise_core::Key::new("k");
                prop_assert_eq!(Observation::from_info(&info, &key), Observation::default());
                prop_assert!(info.bucket().is_none());
            }
        }
    }
}
