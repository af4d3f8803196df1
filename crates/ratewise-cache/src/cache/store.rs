//! The shared state: the byte-bounded store, the in-flight table and the clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};
use http_cache_semantics::{CacheOptions, CachePolicy};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::cache::config::CacheConfig;
use crate::cache::key::{PrimaryKey, StoreKey, VariantKey};
use crate::cache::status::CacheStatus;
use crate::error::SharedError;

/// Longest freshness or `Age` we believe (10 years); larger values from a server are clamped.
const MAX_BELIEVABLE: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Fixed per-entry overhead counted by the weigher (policy, maps, key), in bytes.
const ENTRY_OVERHEAD: u64 = 512;

/// Wall-clock time as `http-cache-semantics` needs it, derived from tokio's clock.
///
/// `SystemTime` cannot be paused, so the cache takes one `SystemTime` when it is created and
/// adds the time elapsed on tokio's clock since then. With a paused test clock, advancing
/// tokio time ages stored responses exactly; in production the two clocks agree up to drift.
#[derive(Debug)]
pub(crate) struct Clock {
    base_system: SystemTime,
    base: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Clock {
            base_system: SystemTime::now(),
            base: Instant::now(),
        }
    }

    pub(crate) fn system(&self, at: Instant) -> SystemTime {
        self.base_system + at.saturating_duration_since(self.base)
    }
}

/// The head of a stored or shared response.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
}

/// One stored response.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) policy: CachePolicy,
    pub(crate) head: Head,
    pub(crate) body: Bytes,
    /// When the response turns stale (tokio clock).
    pub(crate) fresh_until: Instant,
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
    /// `must-revalidate` or `no-cache`: never served stale on our own initiative.
    pub(crate) must_revalidate: bool,
    /// The `Host` header of the request that was answered (the policy matches it too).
    request_host: Option<HeaderValue>,
    /// The response's age when stored, and when that was: its age at any later instant
    /// without asking the policy.
    age_at_store: Duration,
    stored_at: Instant,
    pub(crate) weight: u32,
}

impl Entry {
    /// Stores `head` (without its hop-by-hop fields, which belong to one connection) and
    /// `body`, as answered at `now` to a request whose `Host` header was `request_host`.
    pub(crate) fn new(
        policy: CachePolicy,
        mut head: Head,
        body: Bytes,
        request_host: Option<HeaderValue>,
        now: Instant,
        now_system: SystemTime,
        max_stale: Duration,
    ) -> Self {
        strip_hop_by_hop(&mut head.headers);
        let ttl = policy.time_to_live(now_system).min(MAX_BELIEVABLE);
        let age_at_store = policy.age(now_system).min(MAX_BELIEVABLE);
        let windows = StaleWindows::parse(&head.headers, max_stale);
        let header_bytes: u64 = head
            .headers
            .iter()
            .map(|(name, value)| (name.as_str().len() + value.len()) as u64)
            .sum();
        // The policy keeps its own copy of the response and request headers.
        let weight = (body.len() as u64)
            .saturating_add(header_bytes.saturating_mul(3))
            .saturating_add(ENTRY_OVERHEAD)
            .min(u64::from(u32::MAX)) as u32;
        Entry {
            policy,
            head,
            body,
            fresh_until: now + ttl,
            stale_while_revalidate: windows.stale_while_revalidate,
            stale_if_error: windows.stale_if_error,
            must_revalidate: windows.must_revalidate,
            request_host,
            age_at_store,
            stored_at: now,
            weight,
        }
    }

    /// How long the entry has been stale at `now` (zero while fresh).
    pub(crate) fn staleness(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.fresh_until)
    }

    /// Whether a request with `headers` may take this entry at `now` without asking the
    /// policy: the entry is fresh and the request has no cache directives of its own and the
    /// same `Host`. The caller found the entry by method, URI and the `Vary`ed headers, so
    /// `CachePolicy::before_request` would answer `Fresh` too; the other cases go to it.
    #[inline]
    pub(crate) fn is_fresh_for(&self, headers: &HeaderMap, now: Instant) -> bool {
        now < self.fresh_until
            && !headers.contains_key(http::header::CACHE_CONTROL)
            && !headers.contains_key(http::header::PRAGMA)
            && headers.get(http::header::HOST) == self.request_host.as_ref()
    }

    /// The stored head with `Age` brought up to date at `now` (RFC 9111 §5.1); the origin's
    /// `Date` is kept.
    pub(crate) fn head_at(&self, now: Instant) -> Head {
        let mut head = self.head.clone();
        let age = self
            .age_at_store
            .saturating_add(now.saturating_duration_since(self.stored_at))
            .min(MAX_BELIEVABLE)
            .as_secs();
        head.headers
            .insert(http::header::AGE, HeaderValue::from(age));
        head
    }
}

/// Removes the hop-by-hop fields (RFC 9110 §7.6.1): those `Connection` names and the
/// standard ones.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        http::header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        http::header::PROXY_AUTHENTICATE,
        http::header::PROXY_AUTHORIZATION,
        http::header::TE,
        http::header::TRAILER,
        http::header::TRANSFER_ENCODING,
        http::header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// RFC 5861 directives, which `http-cache-semantics` does not read.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct StaleWindows {
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
    pub(crate) must_revalidate: bool,
}

impl StaleWindows {
    pub(crate) fn parse(headers: &HeaderMap, max_stale: Duration) -> Self {
        let mut out = StaleWindows::default();
        for value in headers.get_all(http::header::CACHE_CONTROL) {
            let Ok(value) = value.to_str() else {
                tracing::debug!(target: "ratewise::cache", "unreadable Cache-Control header ignored");
                continue;
            };
            for directive in value.split(',') {
                let mut parts = directive.splitn(2, '=');
                let name = parts.next().unwrap_or("").trim();
                let arg = parts.next().map(|v| v.trim().trim_matches('"'));
                let seconds = || match arg.map(str::parse::<u64>) {
                    Some(Ok(secs)) => Some(Duration::from_secs(secs).min(max_stale)),
                    _ => {
                        tracing::debug!(target: "ratewise::cache", directive = name, "unreadable stale directive ignored");
                        None
                    }
                };
                if name.eq_ignore_ascii_case("stale-while-revalidate") {
                    out.stale_while_revalidate = seconds().unwrap_or_default();
                } else if name.eq_ignore_ascii_case("stale-if-error") {
                    out.stale_if_error = seconds().unwrap_or_default();
                } else if name.eq_ignore_ascii_case("must-revalidate")
                    || name.eq_ignore_ascii_case("no-cache")
                {
                    out.must_revalidate = true;
                }
            }
        }
        out
    }
}

/// Clamps a server's `Age` so that `http-cache-semantics` cannot overflow a `Duration` on it.
pub(crate) fn sanitize_response_headers(headers: &mut HeaderMap) {
    let Some(age) = headers.get(http::header::AGE) else {
        return;
    };
    match age.to_str().ok().and_then(|a| a.trim().parse::<u64>().ok()) {
        Some(secs) if secs <= MAX_BELIEVABLE.as_secs() => {}
        Some(_) => {
            tracing::debug!(target: "ratewise::cache", "absurd Age header clamped");
            headers.insert(
                http::header::AGE,
                HeaderValue::from(MAX_BELIEVABLE.as_secs()),
            );
        }
        None => {
            tracing::debug!(target: "ratewise::cache", "unreadable Age header ignored");
            headers.remove(http::header::AGE);
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum StoreValue {
    Vary(Arc<[HeaderName]>),
    Variant(Arc<Entry>),
}

/// What a follower of a coalesced request receives.
#[derive(Debug, Clone)]
pub(crate) enum FollowerOutcome {
    Response {
        head: Arc<Head>,
        body: Bytes,
        status: CacheStatus,
    },
    /// The response cannot serve this follower (too large to share, or its `Vary` names
    /// request headers in which the follower differs from the leader): send your own request.
    NotShared,
    Error(SharedError),
}

/// A follower waiting on an in-flight request, with its request headers as the policy sees
/// them, so that a response whose `Vary` selects other values is not handed to it.
#[derive(Debug)]
pub(crate) struct Waiter {
    pub(crate) tx: oneshot::Sender<FollowerOutcome>,
    pub(crate) headers: HeaderMap,
}

/// State shared by a layer and every service and clone made from it.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: CacheConfig,
    pub(crate) options: CacheOptions,
    pub(crate) store: moka::sync::Cache<StoreKey, StoreValue>,
    pub(crate) in_flight: Mutex<HashMap<VariantKey, Vec<Waiter>>>,
    pub(crate) clock: Clock,
}

fn key_weight(key: &StoreKey) -> u64 {
    let primary = match key {
        StoreKey::Resource(p) => p,
        StoreKey::Variant(v) => &v.primary,
    };
    primary.uri.to_string().len() as u64 + 128
}

impl Shared {
    pub(crate) fn new(config: CacheConfig) -> Self {
        let options = CacheOptions {
            shared: false,
            cache_heuristic: config.heuristic_fraction.unwrap_or(0.0),
            immutable_min_time_to_live: if config.heuristic_fraction.is_some() {
                CacheOptions::default().immutable_min_time_to_live
            } else {
                Duration::ZERO
            },
            ignore_cargo_cult: false,
        };
        let store = moka::sync::Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(|key: &StoreKey, value: &StoreValue| {
                let value = match value {
                    StoreValue::Vary(names) => {
                        64 + names.iter().map(|n| n.as_str().len() as u64).sum::<u64>()
                    }
                    StoreValue::Variant(entry) => u64::from(entry.weight),
                };
                (value + key_weight(key)).min(u64::from(u32::MAX)) as u32
            })
            .build();
        Shared {
            config,
            options,
            store,
            in_flight: Mutex::new(HashMap::new()),
            clock: Clock::new(),
        }
    }

    /// The variant key for a request with `headers` and its stored entry, if any.
    pub(crate) fn lookup(
        &self,
        primary: PrimaryKey,
        headers: &HeaderMap,
    ) -> (VariantKey, Option<Arc<Entry>>) {
        // The key is built by value and taken back: no clone of the URI on a hit.
        let resource = StoreKey::Resource(primary);
        let found = self.store.get(&resource);
        let primary = resource.into_primary();
        match found {
            Some(StoreValue::Variant(entry)) => (
                VariantKey {
                    primary,
                    vary: None,
                },
                Some(entry),
            ),
            Some(StoreValue::Vary(names)) => {
                let key = VariantKey::new(primary, &names, headers, &self.config.isolation_headers);
                let entry = match self.store.get(&StoreKey::Variant(key.clone())) {
                    Some(StoreValue::Variant(entry)) => Some(entry),
                    _ => None,
                };
                (key, entry)
            }
            None => (
                VariantKey {
                    primary,
                    vary: None,
                },
                None,
            ),
        }
    }

    pub(crate) fn insert(
        &self,
        primary: &PrimaryKey,
        vary: &Arc<[HeaderName]>,
        policy_headers: &HeaderMap,
        entry: Entry,
    ) {
        let resource = StoreKey::Resource(primary.clone());
        let entry = StoreValue::Variant(Arc::new(entry));
        if vary.is_empty() {
            // Replaces a `Vary` record too: the variants it led to become unreachable.
            self.store.insert(resource, entry);
        } else {
            self.store.insert(resource, StoreValue::Vary(vary.clone()));
            let key = VariantKey::new(
                primary.clone(),
                vary,
                policy_headers,
                &self.config.isolation_headers,
            );
            self.store.insert(StoreKey::Variant(key), entry);
        }
    }

    /// Forgets the stored responses a request to `primary`'s URI could be served (RFC 9111
    /// §4.4, after an unsafe method): the response without `Vary`, or the `Vary` record that
    /// leads to the variants (which become unreachable and are evicted in time).
    pub(crate) fn invalidate(&self, primary: &PrimaryKey) {
        self.store.invalidate(&StoreKey::Resource(primary.clone()));
    }

    pub(crate) fn invalidate_variant(&self, key: &VariantKey) {
        match key.vary {
            None => self.invalidate(&key.primary),
            Some(_) => self.store.invalidate(&StoreKey::Variant(key.clone())),
        }
    }

    pub(crate) fn new_policy(
        &self,
        request: &crate::cache::key::PolicyRequest<'_>,
        head: &http::response::Parts,
        now: SystemTime,
    ) -> CachePolicy {
        CachePolicy::new_options(request, head, now, self.options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn stale_windows_never_exceed_the_cap(value in "[ -~]{0,64}", cap in 0u64..100_000) {
            let mut headers = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(http::header::CACHE_CONTROL, v);
            }
            let w = StaleWindows::parse(&headers, Duration::from_secs(cap));
            prop_assert!(w.stale_if_error <= Duration::from_secs(cap));
            prop_assert!(w.stale_while_revalidate <= Duration::from_secs(cap));
        }

        #[test]
        fn any_age_and_max_age_are_safe_for_the_policy(age in any::<u64>(), max_age in any::<u64>(), elapsed in 0u64..1_000_000_000) {
            let mut headers = HeaderMap::new();
            headers.insert(http::header::AGE, HeaderValue::from(age));
            headers.insert(http::header::CACHE_CONTROL, HeaderValue::from_str(&format!("max-age={max_age}, stale-if-error={age}")).unwrap());
            sanitize_response_headers(&mut headers);
            let mut response = http::Response::new(());
            *response.headers_mut() = headers;
            let (head, ()) = response.into_parts();
            let request = http::Request::get("http://a/b").body(()).unwrap();
            let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            let policy = CachePolicy::new_options(&request, &head, t0, CacheOptions { shared: false, ..Default::default() });
            let later = t0 + Duration::from_secs(elapsed);
            let _ = policy.time_to_live(later);
            let _ = policy.is_stale(later);
            let _ = policy.before_request(&request, later);
            let entry = Entry::new(policy, Head { status: head.status, version: head.version, headers: head.headers }, Bytes::new(), None, Instant::now(), later, Duration::from_secs(86400));
            prop_assert!(entry.stale_if_error <= Duration::from_secs(86400));
        }
    }

    fn header_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[ -~]{0,40}",
            Just("Thu, 01 Jan 1970 00:00:00 GMT".to_owned()),
            Just("Fri, 31 Dec 9999 23:59:59 GMT".to_owned()),
            Just("max-age=18446744073709551615, stale-if-error=18446744073709551615".to_owned()),
            Just("max-age=-1, s-maxage=x, no-cache=\"a,b\", immutable".to_owned()),
            Just("W/\"x\", \"y\"".to_owned()),
        ]
    }

    proptest! {
        /// Whatever a server sends in these headers, storing, looking up, revalidating and
        /// serving stale never panic.
        #[test]
        fn hostile_response_headers_never_panic(
            cache_control in header_text(), expires in header_text(), date in header_text(),
            last_modified in header_text(), age in header_text(), etag in header_text(),
            vary in header_text(), later in 0u64..10_000_000_000,
        ) {
            let mut headers = HeaderMap::new();
            for (name, value) in [
                ("cache-control", &cache_control), ("expires", &expires), ("date", &date),
                ("last-modified", &last_modified), ("age", &age), ("etag", &etag), ("vary", &vary),
            ] {
                if let Ok(value) = HeaderValue::from_str(value) {
                    headers.insert(HeaderName::from_static(name), value);
                }
            }
            sanitize_response_headers(&mut headers);
            let mut response = http::Response::new(());
            *response.headers_mut() = headers.clone();
            let (head, ()) = response.into_parts();
            let request = http::Request::get("http://a/b").body(()).unwrap();
            let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            let options = CacheOptions { shared: false, cache_heuristic: 0.1, ..Default::default() };
            let policy = CachePolicy::new_options(&request, &head, t0, options);
            let now = t0 + Duration::from_secs(later);
            let _ = crate::cache::key::vary_names(&headers);
            if let http_cache_semantics::BeforeRequest::Stale { request: revalidation, .. } = policy.before_request(&request, now) {
                let _ = revalidation.headers.get("if-none-match");
            }
            let _ = policy.after_response(&request, &head, now);
            let stored = Instant::now();
            let entry = Entry::new(policy, Head { status: head.status, version: head.version, headers }, Bytes::new(), None, stored, now, Duration::from_secs(86400));
            let _ = entry.head_at(stored + Duration::from_secs(later));
            prop_assert!(entry.stale_if_error <= Duration::from_secs(86400));
        }
    }

    proptest! {
        /// The fast freshness check of a hit agrees with the policy's `before_request`, and the
        /// served head carries the policy's `Age` and no hop-by-hop field.
        #[test]
        fn the_fast_fresh_check_agrees_with_the_policy(
            max_age in 0u64..100_000, age in 0u64..100_000, later in 0u64..200_000,
            stored_host in any::<bool>(), asked_host in any::<bool>(), directive in any::<bool>(),
        ) {
            let mut headers = HeaderMap::new();
            headers.insert(http::header::CACHE_CONTROL, HeaderValue::from_str(&format!("max-age={max_age}")).unwrap());
            headers.insert(http::header::AGE, HeaderValue::from(age));
            headers.insert(http::header::CONNECTION, HeaderValue::from_static("close, x-hop"));
            headers.insert(HeaderName::from_static("x-hop"), HeaderValue::from_static("1"));
            headers.insert(http::header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
            headers.insert(http::header::ETAG, HeaderValue::from_static("\"v1\""));
            let mut response = http::Response::new(());
            *response.headers_mut() = headers;
            let (head, ()) = response.into_parts();
            let request = |host: bool, directive: bool| {
                let mut builder = http::Request::get("http://a/b");
                if host {
                    builder = builder.header(http::header::HOST, "a");
                }
                if directive {
                    builder = builder.header(http::header::CACHE_CONTROL, "max-stale");
                }
                builder.body(()).unwrap()
            };
            let stored_request = request(stored_host, false);
            let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            let policy = CachePolicy::new_options(&stored_request, &head, t0, CacheOptions { shared: false, ..Default::default() });
            let stored = Instant::now();
            let host = stored_request.headers().get(http::header::HOST).cloned();
            let entry = Entry::new(policy, Head { status: head.status, version: head.version, headers: head.headers }, Bytes::new(), host, stored, t0, Duration::from_secs(86400));

            let asked = request(asked_host, directive);
            let at = stored + Duration::from_secs(later);
            let at_system = t0 + Duration::from_secs(later);
            let policy_fresh = matches!(entry.policy.before_request(&asked, at_system), http_cache_semantics::BeforeRequest::Fresh(_));
            if entry.is_fresh_for(asked.headers(), at) {
                prop_assert!(policy_fresh);
            } else if !directive {
                prop_assert!(!policy_fresh);
            }
            let served = entry.head_at(at);
            prop_assert_eq!(served.headers[http::header::AGE].to_str().unwrap(), entry.policy.age(at_system).as_secs().to_string());
            for hop in ["connection", "x-hop", "transfer-encoding"] {
                prop_assert!(!served.headers.contains_key(hop));
            }
            prop_assert!(served.headers.contains_key(http::header::ETAG));
        }
    }

    #[test]
    fn stale_windows_parse() {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static(
                "max-age=60, stale-while-revalidate=30, Stale-If-Error=\"999999\"",
            ),
        );
        let w = StaleWindows::parse(&headers, Duration::from_secs(3600));
        assert_eq!(w.stale_while_revalidate, Duration::from_secs(30));
        assert_eq!(w.stale_if_error, Duration::from_secs(3600));
        assert!(!w.must_revalidate);
        headers.append(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("must-revalidate, stale-if-error=x"),
        );
        let w = StaleWindows::parse(&headers, Duration::from_secs(3600));
        assert!(w.must_revalidate);
        assert_eq!(w.stale_if_error, Duration::ZERO);
    }
}
