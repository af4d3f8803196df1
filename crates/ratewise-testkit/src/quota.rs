//! Exact quota state machines. Times are nanoseconds since `t0`; all arithmetic is integer
//! (GCRA works in time scaled by the rate, so `period / limit` needs no rounding).

use std::collections::VecDeque;
use std::time::Duration;

use crate::config::{Algorithm, Quota};

/// What a quota reports in headers at an instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct QuotaStatus {
    pub(crate) limit: u64,
    pub(crate) remaining: u64,
    /// Time until the quota is fully restored.
    pub(crate) reset: Duration,
}

#[derive(Clone, Debug)]
pub(crate) enum QuotaState {
    /// Aligned fixed window: the index of the current window and its count.
    Fixed { window: u64, count: u64 },
    /// Fixed window from the first request: the window start (if one is open) and its count.
    FromFirst { start: Option<u64>, count: u64 },
    /// Admitted instants in the rolling window, oldest first; never more than `limit`.
    Sliding { log: VecDeque<u64> },
    /// Theoretical arrival time, in nanoseconds multiplied by the rate `limit`.
    Gcra { tat_scaled: u128 },
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn ceil_div(a: u128, b: u128) -> u128 {
    a.div_ceil(b.max(1))
}

fn duration_from_u128(ns: u128) -> Duration {
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

impl QuotaState {
    pub(crate) fn new(quota: &Quota) -> Self {
        match quota.algorithm {
            Algorithm::FixedWindow => QuotaState::Fixed {
                window: 0,
                count: 0,
            },
            Algorithm::FixedWindowFromFirst => QuotaState::FromFirst {
                start: None,
                count: 0,
            },
            Algorithm::SlidingLog => QuotaState::Sliding {
                log: VecDeque::new(),
            },
            Algorithm::Gcra { .. } => QuotaState::Gcra { tat_scaled: 0 },
        }
    }

    /// Forgets what has expired at `now`. Amortised O(1).
    pub(crate) fn roll(&mut self, quota: &Quota, now: u64) {
        let period = nanos(quota.period);
        match self {
            QuotaState::Fixed { window, count } => {
                let current = now / period;
                if current != *window {
                    *window = current;
                    *count = 0;
                }
            }
            QuotaState::FromFirst { start, count } => {
                if let Some(s) = *start
                    && now >= s.saturating_add(period)
                {
                    *start = None;
                    *count = 0;
                }
            }
            QuotaState::Sliding { log } => {
                // An instant `ts` counts while `ts > now - period`, i.e. `now < ts + period`.
                while let Some(&oldest) = log.front() {
                    if now >= oldest.saturating_add(period) {
                        log.pop_front();
                    } else {
                        break;
                    }
                }
            }
            QuotaState::Gcra { .. } => {}
        }
    }

    /// `None` if a request at `now` would be admitted, else how long until it would be.
    /// Call [`roll`](Self::roll) first.
    pub(crate) fn check(&self, quota: &Quota, now: u64) -> Option<Duration> {
        let period = nanos(quota.period);
        if quota.limit == 0 {
            return Some(quota.period);
        }
        match self {
            QuotaState::Fixed { window, count } => (*count >= quota.limit).then(|| {
                let end = window.saturating_add(1).saturating_mul(period);
                Duration::from_nanos(end.saturating_sub(now))
            }),
            QuotaState::FromFirst { start, count } => (*count >= quota.limit).then(|| {
                let end = start.unwrap_or(now).saturating_add(period);
                Duration::from_nanos(end.saturating_sub(now))
            }),
            QuotaState::Sliding { log } => (log.len() as u64 >= quota.limit).then(|| {
                let oldest = log.front().copied().unwrap_or(now);
                Duration::from_nanos(oldest.saturating_add(period).saturating_sub(now))
            }),
            QuotaState::Gcra { tat_scaled } => {
                let burst = gcra_burst(quota);
                let now_scaled = u128::from(now) * u128::from(quota.limit);
                let tolerance = u128::from(burst) * u128::from(period);
                let earliest = tat_scaled.saturating_sub(tolerance);
                (earliest > now_scaled).then(|| {
                    duration_from_u128(ceil_div(earliest - now_scaled, u128::from(quota.limit)))
                })
            }
        }
    }

    /// Records an admitted request at `now` (after [`check`](Self::check) said yes).
    pub(crate) fn consume(&mut self, quota: &Quota, now: u64) {
        match self {
            QuotaState::Fixed { count, .. } => *count = count.saturating_add(1),
            QuotaState::FromFirst { start, count } => {
                if start.is_none() {
                    *start = Some(now);
                }
                *count = count.saturating_add(1);
            }
            QuotaState::Sliding { log } => {
                if (log.len() as u64) < quota.limit {
                    log.push_back(now);
                }
            }
            QuotaState::Gcra { tat_scaled } => {
                let now_scaled = u128::from(now) * u128::from(quota.limit);
                *tat_scaled = (*tat_scaled).max(now_scaled) + u128::from(nanos(quota.period));
            }
        }
    }

    /// The header view at `now`. Call [`roll`](Self::roll) first.
    pub(crate) fn status(&self, quota: &Quota, now: u64) -> QuotaStatus {
        let period = nanos(quota.period);
        let limit = quota.header_limit();
        let (remaining, reset) = match self {
            QuotaState::Fixed { window, count } => {
                let end = window.saturating_add(1).saturating_mul(period);
                (
                    quota.limit.saturating_sub(*count),
                    Duration::from_nanos(end.saturating_sub(now)),
                )
            }
            QuotaState::FromFirst { start, count } => match start {
                Some(s) => (
                    quota.limit.saturating_sub(*count),
                    Duration::from_nanos(s.saturating_add(period).saturating_sub(now)),
                ),
                None => (quota.limit, quota.period),
            },
            QuotaState::Sliding { log } => (
                quota.limit.saturating_sub(log.len() as u64),
                log.back().map_or(Duration::ZERO, |&newest| {
                    Duration::from_nanos(newest.saturating_add(period).saturating_sub(now))
                }),
            ),
            QuotaState::Gcra { tat_scaled } => {
                if quota.limit == 0 {
                    (0, quota.period)
                } else {
                    let burst = gcra_burst(quota);
                    let now_scaled = u128::from(now) * u128::from(quota.limit);
                    let backlog = tat_scaled.saturating_sub(now_scaled);
                    let tolerance = u128::from(burst) * u128::from(period);
                    let remaining = if backlog <= tolerance {
                        (tolerance - backlog) / u128::from(period).max(1) + 1
                    } else {
                        0
                    };
                    (
                        u64::try_from(remaining).unwrap_or(u64::MAX),
                        duration_from_u128(ceil_div(backlog, u128::from(quota.limit))),
                    )
                }
            }
        };
        QuotaStatus {
            limit,
            remaining,
            reset,
        }
    }
}

fn gcra_burst(quota: &Quota) -> u64 {
    match quota.algorithm {
        Algorithm::Gcra { burst } => burst,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;

    fn admit(state: &mut QuotaState, quota: &Quota, now: u64) -> bool {
        state.roll(quota, now);
        if state.check(quota, now).is_none() {
            state.consume(quota, now);
            true
        } else {
            false
        }
    }

    /// nginx's limit_req in milli-requests (the reference the GCRA must match).
    fn nginx(excess: &mut Option<(i128, u64)>, rate_per_s: i128, burst: i128, now_ms: u64) -> bool {
        match *excess {
            None => {
                *excess = Some((0, now_ms));
                true
            }
            Some((e, last)) => {
                let elapsed = i128::from(now_ms - last);
                let mut next = e - rate_per_s * elapsed + 1000;
                if next < 0 {
                    next = 0;
                }
                if next > burst * 1000 {
                    false
                } else {
                    *excess = Some((next, now_ms));
                    true
                }
            }
        }
    }

    proptest! {
        #[test]
        fn gcra_matches_nginx(
            rate in 1u64..50,
            burst in 0u64..5,
            gaps in proptest::collection::vec(0u64..400, 1..60),
        ) {
            let quota = Quota::gcra(rate, Duration::from_secs(1), burst);
            let mut state = QuotaState::new(&quota);
            let mut reference = None;
            let mut now = 0;
            for gap in gaps {
                now += gap;
                let ours = admit(&mut state, &quota, now * MS);
                let theirs = nginx(&mut reference, i128::from(rate), i128::from(burst), now);
                prop_assert_eq!(ours, theirs, "at {} ms", now);
            }
        }

        #[test]
        fn sliding_log_never_exceeds_limit(
            limit in 1u64..8,
            gaps in proptest::collection::vec(0u64..300, 1..100),
        ) {
            let quota = Quota::sliding_log(limit, Duration::from_secs(1));
            let mut state = QuotaState::new(&quota);
            let mut admitted: Vec<u64> = Vec::new();
            let mut now = 0;
            for gap in gaps {
                now += gap * MS;
                let in_window = admitted.iter().filter(|&&t| t + 1000 * MS > now).count() as u64;
                let ours = admit(&mut state, &quota, now);
                prop_assert_eq!(ours, in_window < limit);
                if ours {
                    admitted.push(now);
                }
            }
        }

        #[test]
        fn retry_after_is_exact(
            limit in 1u64..6,
            algo in 0u8..4,
            gaps in proptest::collection::vec(0u64..200, 1..40),
        ) {
            let period = Duration::from_millis(700);
            let quota = match algo {
                0 => Quota::fixed_window(limit, period),
                1 => Quota::fixed_window_from_first(limit, period),
                2 => Quota::sliding_log(limit, period),
                _ => Quota::gcra(limit, period, limit - 1),
            };
            let mut state = QuotaState::new(&quota);
            let mut now = 0;
            for gap in gaps {
                now += gap * MS;
                state.roll(&quota, now);
                if let Some(wait) = state.check(&quota, now) {
                    prop_assert!(wait > Duration::ZERO);
                    let at = now + nanos(wait);
                    let mut probe = state.clone();
                    probe.roll(&quota, at - 1);
                    prop_assert!(probe.check(&quota, at - 1).is_some(), "admitted early");
                    probe.roll(&quota, at);
                    prop_assert!(probe.check(&quota, at).is_none(), "not admitted at retry time");
                } else {
                    state.consume(&quota, now);
                }
            }
        }
    }

    #[test]
    fn gcra_remaining_counts_what_passes_now() {
        let quota = Quota::gcra(10, Duration::from_secs(1), 4);
        let mut state = QuotaState::new(&quota);
        assert_eq!(state.status(&quota, 0).remaining, 5);
        let mut passed = 0;
        while admit(&mut state, &quota, 0) {
            passed += 1;
        }
        assert_eq!(passed, 5);
        let status = state.status(&quota, 0);
        assert_eq!(status.remaining, 0);
        assert_eq!(status.reset, Duration::from_millis(500));
        let status = state.status(&quota, 100 * MS);
        assert_eq!(status.remaining, 1);
        assert_eq!(status.reset, Duration::from_millis(400));
    }
}
