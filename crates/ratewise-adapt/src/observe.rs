//! The normalized view of one response that the key state learns from.
//!
//! The layer turns `ratewise_headers::parse`'s `RateLimitInfo` into an [`Observation`]; the
//! state machine only ever sees observations, so it is tested without HTTP.

use std::hash::{Hash, Hasher};
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
}

impl ObservedPolicy {
    pub(crate) fn id_of(name: Option<&str>, position: usize) -> u64 {
        let mut hasher = std::hash::DefaultHasher::new();
        match name {
            Some(name) => name.hash(&mut hasher),
            None => position.hash(&mut hasher),
        }
        hasher.finish()
    }
}

/// What one response says about its key.
#[derive(Clone, Debug, Default)]
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

    pub(crate) fn bucket_id(bucket: &str) -> u64 {
        let mut hasher = std::hash::DefaultHasher::new();
        bucket.hash(&mut hasher);
        hasher.finish()
    }
}

/// A hash of the first segment of `path` (`"search"` for `/search/code`): the part of a
/// route key's paths that a server-declared bucket is remembered for. FNV-1a: no allocation,
/// a few nanoseconds.
pub(crate) fn path_segment(path: &str) -> u64 {
    let segment = path.trim_start_matches('/').split('/').next().unwrap_or("");
    segment
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// Whether a response came from a cache (`Age > 0`): its rate-limit fields describe the past.
pub(crate) fn is_cached(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::AGE)
        .and_then(|age| age.to_str().ok())
        .and_then(|age| age.trim().parse::<u64>().ok())
        .is_some_and(|age| age > 0)
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
        for (position, policy) in info.policies().iter().enumerate() {
            let pushed = observation.push(ObservedPolicy {
                id: ObservedPolicy::id_of(policy.name(), position),
                limit: policy.limit(),
                remaining: policy.remaining(),
                reset_after: policy.reset_after(),
                window: policy.window(),
                counts_requests: matches!(policy.unit(), ratewise_headers::Unit::Requests),
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
