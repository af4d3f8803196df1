//! The request log and the statistics.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use tokio::time::Instant;

/// How the mock answered a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response with [`LoggedRequest::status`].
    Responded,
    /// The connection was reset (an injected fault or an outage configured with
    /// [`Outage::reset`](crate::Outage::reset)); no response was sent.
    ConnectionReset,
}

/// Why a request got the answer it got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Admitted by every quota and answered with the configured status.
    Ok,
    /// Refused by a quota (429, or the endpoint's limited status).
    Limited,
    /// Refused because the endpoint is blocking the client after too many refusals (see
    /// [`Penalty`](crate::Penalty)); answered with the endpoint's limited status.
    Blocked,
    /// Answered 304 Not Modified to a conditional request.
    NotModified,
    /// An injected fault (error status or reset).
    Fault,
    /// Inside an outage window.
    Outage,
    /// No endpoint matches the path (404).
    NotFound,
}

/// One request as the mock saw it.
///
/// # Clone
///
/// Cheap apart from the header map; the body is a [`Bytes`].
#[derive(Clone, Debug)]
pub struct LoggedRequest {
    /// The tokio instant of arrival (once the body was read).
    pub at: Instant,
    /// Time since `t0` (the creation of the [`MockApi`](crate::MockApi)).
    pub since_start: Duration,
    /// The request method.
    pub method: Method,
    /// The path with the query.
    pub path: String,
    /// The prefix of the endpoint that matched, if any.
    pub endpoint: Option<String>,
    /// The response status (for [`Outcome::ConnectionReset`], the status is 503 but nothing
    /// was sent).
    pub status: StatusCode,
    /// How the mock answered.
    pub outcome: Outcome,
    /// Why it answered that way.
    pub reason: Reason,
    /// Whether the request consumed quota (admitted by the quotas; see
    /// [`MockApi::max_in_window`](crate::MockApi::max_in_window)).
    pub counted: bool,
    /// Request headers of interest: `if-none-match`, `if-modified-since`, `idempotency-key`,
    /// `x-request-id`, `user-agent`, `retry-attempt`/`x-retry-attempt`, and `authorization`
    /// (its value replaced with `present`).
    pub headers: HeaderMap,
    /// The body length in bytes.
    pub body_len: usize,
    /// The body.
    pub body: Bytes,
    /// The latency the mock added before answering.
    pub latency: Duration,
}

impl LoggedRequest {
    /// Whether the request was refused for rate limiting: by a quota ([`Reason::Limited`]) or
    /// by a [`Penalty`](crate::Penalty) block ([`Reason::Blocked`]).
    pub fn is_limited(&self) -> bool {
        matches!(self.reason, Reason::Limited | Reason::Blocked)
    }
}

/// Counters since the mock was created (or since [`MockApi::reset_log`](crate::MockApi::reset_log)).
/// Unlike the log they never drop anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Every request received.
    pub total: usize,
    /// Responses by status code (connection resets are not in here).
    pub by_status: BTreeMap<u16, usize>,
    /// Requests refused for rate limiting: by a quota or by a [`Penalty`](crate::Penalty)
    /// block (those are also in [`blocked`](Self::blocked)).
    pub limited: usize,
    /// Requests refused during a [`Penalty`](crate::Penalty) block.
    pub blocked: usize,
    /// 304 Not Modified answers.
    pub not_modified: usize,
    /// Requests that consumed quota.
    pub counted: usize,
    /// Injected faults (error statuses and resets).
    pub faults: usize,
    /// Requests that fell in an outage window.
    pub outage: usize,
    /// Connection resets (faults and outages).
    pub resets: usize,
    /// Log entries dropped because the log was full.
    pub dropped_log_entries: usize,
}

/// The bounded log plus the stats.
#[derive(Debug)]
pub(crate) struct Log {
    entries: VecDeque<LoggedRequest>,
    capacity: usize,
    pub(crate) stats: Stats,
}

impl Log {
    pub(crate) fn new(capacity: usize) -> Self {
        Log {
            entries: VecDeque::new(),
            capacity,
            stats: Stats::default(),
        }
    }

    pub(crate) fn push(&mut self, entry: LoggedRequest) {
        let stats = &mut self.stats;
        stats.total += 1;
        match entry.outcome {
            Outcome::Responded => *stats.by_status.entry(entry.status.as_u16()).or_default() += 1,
            Outcome::ConnectionReset => stats.resets += 1,
        }
        match entry.reason {
            Reason::Limited => stats.limited += 1,
            Reason::Blocked => {
                stats.limited += 1;
                stats.blocked += 1;
            }
            Reason::NotModified => stats.not_modified += 1,
            Reason::Fault => stats.faults += 1,
            Reason::Outage => stats.outage += 1,
            Reason::Ok | Reason::NotFound => {}
        }
        if entry.counted {
            stats.counted += 1;
        }
        if self.capacity == 0 {
            stats.dropped_log_entries += 1;
            return;
        }
        if self.entries.len() >= self.capacity {
            self.entries.pop_front();
            stats.dropped_log_entries += 1;
        }
        self.entries.push_back(entry);
    }

    pub(crate) fn entries(&self) -> &VecDeque<LoggedRequest> {
        &self.entries
    }

    pub(crate) fn drain(&mut self) -> Vec<LoggedRequest> {
        self.entries.drain(..).collect()
    }

    pub(crate) fn reset(&mut self) {
        self.entries.clear();
        self.stats = Stats::default();
    }
}

/// Whether `entry` belongs to `endpoint` ("" or "*" = every request).
pub(crate) fn matches_endpoint(entry: &LoggedRequest, endpoint: &str) -> bool {
    endpoint.is_empty() || endpoint == "*" || entry.endpoint.as_deref() == Some(endpoint)
}

/// The most instants of `times` (sorted) inside any half-open window `[s, s + window)`.
pub(crate) fn max_in_window(times: impl Iterator<Item = Instant>, window: Duration) -> usize {
    let mut queue: VecDeque<Instant> = VecDeque::new();
    let mut best = 0;
    for t in times {
        while let Some(&first) = queue.front() {
            if t.saturating_duration_since(first) >= window {
                queue.pop_front();
            } else {
                break;
            }
        }
        queue.push_back(t);
        best = best.max(queue.len());
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn max_in_window_matches_brute_force(
            mut offsets in proptest::collection::vec(0u64..5_000, 0..80),
            window in 1u64..2_000,
        ) {
            offsets.sort_unstable();
            let base = Instant::now();
            let times: Vec<Instant> = offsets.iter().map(|&ms| base + Duration::from_millis(ms)).collect();
            let brute = offsets
                .iter()
                .map(|&s| offsets.iter().filter(|&&t| t >= s && t < s + window).count())
                .max()
                .unwrap_or(0);
            prop_assert_eq!(max_in_window(times.into_iter(), Duration::from_millis(window)), brute);
        }
    }
}
