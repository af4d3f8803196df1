//! The names of every metric the ratewise layers record through the
//! [`metrics`](https://docs.rs/metrics) facade, and their labels.
//!
//! They live here, in the crate every layer depends on, so a layer records without depending on
//! `ratewise-metrics`; that crate documents and re-exports the whole list.
//!
//! Labels are bounded: `key` is a key name from a [`KeyFn`](crate::KeyFn) (route buckets,
//! hosts interned up to a cap), never a raw URL; other labels take the few values listed.

/// Counter: logical requests seen by `MetricsLayer`. Labels: `key`, `status_class`
/// (`1xx`..`5xx`, `error`).
pub const REQUESTS_TOTAL: &str = "ratewise_requests_total";
/// Histogram (seconds): latency of logical requests seen by `MetricsLayer`. Labels: `key`.
pub const REQUEST_DURATION_SECONDS: &str = "ratewise_request_duration_seconds";
/// Counter: responses with status 429 seen by `MetricsLayer`. Labels: `key`.
pub const RESPONSES_429_TOTAL: &str = "ratewise_responses_429_total";

/// Histogram (seconds): time requests waited for a pacing slot. Labels: `key`.
pub const PACE_WAIT_SECONDS: &str = "ratewise_pace_wait_seconds";
/// Counter: requests refused by pacing (wait beyond `max_wait`, reserve). Labels: `key`.
pub const PACE_REFUSED_TOTAL: &str = "ratewise_pace_refused_total";

/// Counter: cooldowns entered on a server's request (429/503 with Retry-After, r=0). Labels:
/// `key`, `scope` (`key`, `global`).
pub const ADAPT_COOLDOWNS_TOTAL: &str = "ratewise_adapt_cooldowns_total";
/// Histogram (seconds): time requests waited in the adaptation layer. Labels: `key`, `reason`
/// (`cooldown`, `exhausted`, `spread`, `slow_start`, `cubic`).
pub const ADAPT_WAIT_SECONDS: &str = "ratewise_adapt_wait_seconds";
/// Counter: requests refused by the adaptation layer (wait beyond `max_wait`). Labels: `key`.
pub const ADAPT_REFUSED_TOTAL: &str = "ratewise_adapt_refused_total";
/// Gauge (requests per second): the rate learned by the header-less (CUBIC) mode. Labels: `key`.
pub const ADAPT_LEARNED_RATE: &str = "ratewise_adapt_learned_rate";

/// Counter: attempts sent by the retry layer, first attempts included. Labels: none.
pub const RETRY_ATTEMPTS_TOTAL: &str = "ratewise_retry_attempts_total";
/// Counter: retries scheduled. Labels: `reason` (`status`, `transport`), `delay_source`
/// (`backoff`, `retry_after`).
pub const RETRIES_TOTAL: &str = "ratewise_retries_total";
/// Counter: retries skipped because the retry budget was spent. Labels: none.
pub const RETRY_BUDGET_EXHAUSTED_TOTAL: &str = "ratewise_retry_budget_exhausted_total";
/// Counter: retries given up for another reason. Labels: `reason` (`not_idempotent`,
/// `body_not_replayable`, `deadline`, `wait_too_long`, `attempts`).
pub const RETRY_GIVEN_UP_TOTAL: &str = "ratewise_retry_given_up_total";

/// Gauge: breaker state per key: 0 closed, 1 half-open, 2 open. Labels: `key`.
pub const BREAKER_STATE: &str = "ratewise_breaker_state";
/// Counter: breaker state transitions. Labels: `key`, `from`, `to` (`closed`, `half_open`,
/// `open`).
pub const BREAKER_TRANSITIONS_TOTAL: &str = "ratewise_breaker_transitions_total";
/// Counter: requests rejected by an open (or saturated half-open) breaker. Labels: `key`.
pub const BREAKER_REJECTIONS_TOTAL: &str = "ratewise_breaker_rejections_total";

/// Counter: cache lookups by outcome. Labels: `status` (`hit`, `miss`, `revalidated`,
/// `stale`, `coalesced`, `uncacheable`).
pub const CACHE_REQUESTS_TOTAL: &str = "ratewise_cache_requests_total";
/// Counter: single lookups and upstream batches of `BatchLayer`. Labels: `kind` (`item`,
/// `batch`).
pub const BATCH_TOTAL: &str = "ratewise_batch_total";

/// Counter: acquires answered by the Redis limiter's failure policy instead of Redis. Labels:
/// `policy` (`fallback_local`, `fail_open`, `fail_closed`).
pub const REDIS_FALLBACK_TOTAL: &str = "ratewise_redis_fallback_total";
/// Counter: switches between shared (Redis) and degraded mode. Labels: `to` (`shared`,
/// `degraded`).
pub const REDIS_MODE_SWITCHES_TOTAL: &str = "ratewise_redis_mode_switches_total";
