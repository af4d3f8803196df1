//! How the cache answered a request: the [`CacheStatus`] response extension.

/// How [`CacheLayer`](crate::CacheLayer) produced a response; every response it returns
/// carries one as an extension (`response.extensions().get::<CacheStatus>()`).
///
/// The same outcomes are counted in
/// [`CACHE_REQUESTS_TOTAL`](ratewise_core::metric_names::CACHE_REQUESTS_TOTAL) with the label
/// `status` = [`as_str`](CacheStatus::as_str).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CacheStatus {
    /// Served from a fresh stored response; nothing was sent upstream.
    Hit,
    /// Sent upstream (no usable stored response); the answer may have been stored.
    Miss,
    /// A stale stored response was revalidated upstream (`304 Not Modified`); the caller got
    /// the stored body with refreshed headers.
    Revalidated,
    /// A stale stored response was served; see [`StaleReason`] for why.
    Stale(StaleReason),
    /// An identical request was already in flight: this caller shared its answer.
    Coalesced,
    /// The request is not cacheable (method, `no-store` request, conditional or range
    /// request from the caller): passed through untouched.
    Uncacheable,
}

/// Why a stale response was served ([`CacheStatus::Stale`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StaleReason {
    /// Within the response's `stale-while-revalidate` window (RFC 5861): served at once while
    /// one background request refreshes the entry.
    WhileRevalidate,
    /// Within the response's `stale-if-error` window (RFC 5861): the upstream request failed
    /// (a transport error or a 500, 502, 503 or 504 response).
    Error,
    /// A layer below refused to send the request (pacing or adaptation wait too long, circuit
    /// open; see [`ratewise_core::find_refusal`]) and the configuration allows serving stale
    /// data then ([`CacheConfig::stale_on_refusal`](crate::CacheConfig::stale_on_refusal)).
    Refused,
}

impl CacheStatus {
    /// The metric label value: `hit`, `miss`, `revalidated`, `stale`, `coalesced` or
    /// `uncacheable`.
    pub const fn as_str(&self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Revalidated => "revalidated",
            CacheStatus::Stale(_) => "stale",
            CacheStatus::Coalesced => "coalesced",
            CacheStatus::Uncacheable => "uncacheable",
        }
    }

    pub(crate) fn record(self) {
        use ratewise_core::metric_names::CACHE_REQUESTS_TOTAL as NAME;
        // Literal labels make static metric keys: no allocation per request.
        let counter = match self {
            CacheStatus::Hit => metrics::counter!(NAME, "status" => "hit"),
            CacheStatus::Miss => metrics::counter!(NAME, "status" => "miss"),
            CacheStatus::Revalidated => metrics::counter!(NAME, "status" => "revalidated"),
            CacheStatus::Stale(_) => metrics::counter!(NAME, "status" => "stale"),
            CacheStatus::Coalesced => metrics::counter!(NAME, "status" => "coalesced"),
            CacheStatus::Uncacheable => metrics::counter!(NAME, "status" => "uncacheable"),
        };
        counter.increment(1);
    }
}
