//! Chaos: the whole stack over MockApi (in process, paused clock) for 10 simulated minutes of
//! random 5xx, 429 bursts with `Retry-After`, latency spikes, connection resets and two
//! outages.
//!
//! Checked: every logical request ends in a response or a typed error (count in = count out),
//! no POST without an `Idempotency-Key` reaches the server twice, and the keyed state of every
//! layer and the cache stay under their caps while thousands of distinct keys pass through.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use ratewise::adapt::AdaptLayer;
use ratewise::breaker::CircuitBreakerLayer;
use ratewise::cache::{CacheConfig, CacheLayer};
use ratewise::core::KeyedStateConfig;
use ratewise::pace::{LocalLimiter, PaceLayer, Quota, QuotaTable};
use ratewise::prelude::{AdaptWaitTooLong, CircuitOpen, Key, PaceWaitTooLong};
use ratewise::retry::RetryLayer;
use ratewise::{AttemptTimeoutElapsed, TotalTimeoutElapsed};
use ratewise_testkit::{
    CacheHeaders, ConnectionReset, Dialect, EndpointConfig, Faults, MockApi, MockConfig, Outage,
    Quota as ServerQuota, Reason,
};
use tokio::time::{Instant, sleep};
use tower::{ServiceBuilder, ServiceExt};

const RUN: Duration = Duration::from_secs(600);
const WORKERS: u64 = 12;
/// The cap on keys of each keyed layer in this test.
const MAX_KEYS: usize = 128;
/// The cache's byte budget.
const CACHE_BYTES: u64 = 64 * 1024;
/// Distinct URLs under `/things`: far more than the caps above.
const THINGS: u64 = 20_000;

/// A tiny deterministic RNG (xorshift64*), so the workload is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Both outages hit every endpoint: the first answers 503 with `Retry-After`, the second
/// resets connections.
fn with_outages(endpoint: EndpointConfig) -> EndpointConfig {
    endpoint
        .outage(Outage::new(Duration::from_secs(120), Duration::from_secs(150)).with_retry_after())
        .outage(Outage::new(Duration::from_secs(360), Duration::from_secs(400)).reset())
}

fn chaos_api() -> MockApi {
    MockApi::new(
        MockConfig::new()
            // Paced by the client (it knows this quota), and it speaks GitHub headers.
            .endpoint(with_outages(
                EndpointConfig::new("/items")
                    .quota(ServerQuota::gcra(10, Duration::from_secs(1), 9))
                    .dialect(Dialect::GitHub)
                    .latency_uniform(Duration::from_millis(5), Duration::from_millis(60))
                    .faults(
                        Faults::new()
                            .error_rate(0.05, StatusCode::INTERNAL_SERVER_ERROR)
                            .error_rate(0.02, StatusCode::BAD_GATEWAY)
                            .seed(1),
                    ),
            ))
            // Unknown to the client, no headers: fixed windows that fill up and answer 429
            // bursts with Retry-After. Cacheable, with validators.
            .endpoint(with_outages(
                EndpointConfig::new("/things")
                    .quota(ServerQuota::fixed_window(40, Duration::from_secs(10)))
                    .latency_uniform(Duration::from_millis(1), Duration::from_millis(30))
                    .cache(CacheHeaders::new().max_age(Duration::from_secs(20)))
                    .faults(
                        Faults::new()
                            .error_rate(0.03, StatusCode::SERVICE_UNAVAILABLE)
                            .retry_after(Duration::from_secs(1))
                            .seed(2),
                    ),
            ))
            // Latency spikes: up to 5 s, above the 2 s attempt timeout.
            .endpoint(with_outages(
                EndpointConfig::new("/reports")
                    .latency_uniform(Duration::from_millis(10), Duration::from_secs(5)),
            ))
            // Writes: errors and resets after the server accepted the request.
            .endpoint(with_outages(
                EndpointConfig::new("/orders")
                    .quota(ServerQuota::gcra(5, Duration::from_secs(1), 4))
                    .latency_uniform(Duration::from_millis(5), Duration::from_millis(40))
                    .faults(
                        Faults::new()
                            .error_rate(0.1, StatusCode::SERVICE_UNAVAILABLE)
                            .reset_rate(0.05)
                            .seed(3),
                    ),
            )),
    )
}

/// Each `/things/{n}` is its own key (a hostile key function: unbounded key space); the other
/// endpoints are one key each.
fn key_of(parts: &http::request::Parts) -> Key {
    let path = parts.uri.path();
    let endpoint = path.trim_start_matches('/').split('/').next().unwrap_or("");
    if endpoint == "things" {
        Key::new(path)
    } else {
        Key::new(endpoint)
    }
}

#[derive(Debug, Default)]
struct Tally {
    issued: u64,
    by_status: HashMap<u16, u64>,
    errors: HashMap<&'static str, u64>,
    unclassified: Vec<String>,
}

impl Tally {
    fn ended(&self) -> u64 {
        self.by_status.values().sum::<u64>() + self.errors.values().sum::<u64>()
    }
}

/// The typed error at the root of `err` (or in its `source()` chain), by downcasting.
fn classify(err: &(dyn StdError + 'static)) -> Option<&'static str> {
    let mut current = Some(err);
    while let Some(err) = current {
        if err.is::<PaceWaitTooLong>() {
            return Some("pace_wait_too_long");
        }
        if err.is::<AdaptWaitTooLong>() {
            return Some("adapt_wait_too_long");
        }
        if err.is::<CircuitOpen>() {
            return Some("circuit_open");
        }
        if err.is::<TotalTimeoutElapsed>() {
            return Some("total_timeout");
        }
        if err.is::<AttemptTimeoutElapsed>() {
            return Some("attempt_timeout");
        }
        if err.is::<ConnectionReset>() {
            return Some("connection_reset");
        }
        // A coalesced follower gets the leader's error as a SharedError whose source is the
        // original; wrappers in general are looked through.
        current = err.source();
    }
    None
}

#[tokio::test(start_paused = true)]
async fn ten_minutes_of_chaos_keep_every_promise() {
    let api = chaos_api();

    let limiter = LocalLimiter::with_config(KeyedStateConfig::new().max_keys(MAX_KEYS)).unwrap();
    let pace = PaceLayer::keyed(
        key_of,
        QuotaTable::new()
            .with("items", Quota::per_second(10).unwrap().burst(10).unwrap())
            .with("orders", Quota::per_second(5).unwrap().burst(5).unwrap())
            .default_quotas(Quota::per_second(20).unwrap().burst(5).unwrap()),
    )
    .limiter(limiter.clone())
    .max_wait(Duration::from_secs(20));
    let adapt = AdaptLayer::builder()
        .key_fn(key_of)
        .keyed_state(KeyedStateConfig::new().max_keys(MAX_KEYS))
        .max_wait(Duration::from_secs(20))
        .build()
        .unwrap();
    let breaker = CircuitBreakerLayer::builder()
        .open_duration(Duration::from_secs(10))
        .max_keys(MAX_KEYS)
        .build()
        .unwrap();
    let breaker_handle = breaker.handle();
    let cache = CacheLayer::with_config(
        CacheConfig::new()
            .max_bytes(CACHE_BYTES)
            .max_entry_bytes(8 * 1024),
    )
    .unwrap();
    let stack = ratewise::stack()
        .cache(cache.clone())
        .retry(RetryLayer::builder().seed(7).build().unwrap())
        .breaker(breaker)
        .adapt(adapt.clone())
        .pace(pace)
        .total_timeout(Duration::from_secs(30))
        .attempt_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let client = ServiceBuilder::new().layer(stack).service(api.clone());

    let start = Instant::now();
    let tally = Arc::new(Mutex::new(Tally::default()));

    // Samples the keyed state and the cache every simulated 10 s.
    let monitor = {
        let limiter = limiter.clone();
        let cache = cache.clone();
        let breaker_handle = breaker_handle.clone();
        tokio::spawn(async move {
            let mut peaks = (0usize, 0u64, 0usize);
            while start.elapsed() < RUN + Duration::from_secs(60) {
                sleep(Duration::from_secs(10)).await;
                cache.run_pending_tasks();
                peaks.0 = peaks.0.max(limiter.len());
                peaks.1 = peaks.1.max(cache.resident_bytes());
                peaks.2 = peaks.2.max(breaker_handle.states().len());
            }
            peaks
        })
    };

    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let client = client.clone();
        let tally = tally.clone();
        workers.push(tokio::spawn(async move {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (worker + 1));
            let mut n = 0u64;
            while start.elapsed() < RUN {
                n += 1;
                let id = format!("w{worker}-{n}");
                let pick = rng.below(100);
                let request = if pick < 45 {
                    Request::get(format!("http://api.test/items/{}", rng.below(20)))
                        .body(Full::new(Bytes::new()))
                } else if pick < 75 {
                    Request::get(format!("http://api.test/things/{}", rng.below(THINGS)))
                        .body(Full::new(Bytes::new()))
                } else if pick < 85 {
                    Request::get(format!("http://api.test/reports/{}", rng.below(5)))
                        .body(Full::new(Bytes::new()))
                } else {
                    let mut builder =
                        Request::post("http://api.test/orders").header("x-request-id", id.as_str());
                    // One write in three is made safe to retry by its Idempotency-Key.
                    if rng.below(3) == 0 {
                        builder = builder.header("idempotency-key", id.as_str());
                    }
                    builder.body(Full::new(Bytes::from(format!("{{\"order\":\"{id}\"}}"))))
                }
                .unwrap();
                tally.lock().unwrap().issued += 1;
                let result = client.clone().oneshot(request).await;
                {
                    let mut tally = tally.lock().unwrap();
                    match result {
                        Ok(response) => {
                            *tally
                                .by_status
                                .entry(response.status().as_u16())
                                .or_default() += 1;
                        }
                        Err(err) => match classify(&*err) {
                            Some(kind) => *tally.errors.entry(kind).or_default() += 1,
                            None => tally.unclassified.push(format!("{err:?}")),
                        },
                    }
                }
                sleep(Duration::from_millis(50 + rng.below(350))).await;
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let (peak_pace_keys, peak_cache_bytes, peak_breaker_keys) = monitor.await.unwrap();

    let tally = tally.lock().unwrap();
    let stats = api.stats();
    println!("client: {tally:?}");
    println!("server: {stats:?}");
    println!(
        "peaks: pace keys {peak_pace_keys}, cache bytes {peak_cache_bytes}, breaker keys {peak_breaker_keys}"
    );

    // The chaos really happened.
    assert!(stats.faults > 100, "{stats:?}");
    // Both outages were met (the open circuit keeps most requests away from them).
    let log = api.requests();
    let in_outage = |from: u64, until: u64| {
        log.iter()
            .filter(|e| e.reason == Reason::Outage)
            .filter(|e| {
                e.since_start >= Duration::from_secs(from)
                    && e.since_start < Duration::from_secs(until)
            })
            .count()
    };
    assert!(in_outage(120, 150) > 0, "{stats:?}");
    assert!(in_outage(360, 400) > 0, "{stats:?}");
    assert!(stats.resets > 10, "{stats:?}");
    assert!(stats.limited > 10, "{stats:?}");
    assert!(
        tally.errors.get("circuit_open").copied().unwrap_or(0) > 0,
        "{tally:?}"
    );

    // Count in = count out, and every error is one of the typed refusals or timeouts.
    assert!(tally.unclassified.is_empty(), "{:?}", tally.unclassified);
    assert!(tally.issued > 8_000, "{tally:?}");
    assert_eq!(tally.issued, tally.ended(), "{tally:?}");

    // No write without an Idempotency-Key reached the server twice; keyed writes were retried.
    let mut arrivals: HashMap<String, (u32, bool)> = HashMap::new();
    for entry in &log {
        if entry.method != Method::POST {
            continue;
        }
        let id = entry.headers["x-request-id"].to_str().unwrap().to_owned();
        let keyed = entry.headers.contains_key("idempotency-key");
        let slot = arrivals.entry(id).or_insert((0, keyed));
        slot.0 += 1;
    }
    let unkeyed_twice: Vec<_> = arrivals
        .iter()
        .filter(|(_, (count, keyed))| !keyed && *count > 1)
        .collect();
    assert!(unkeyed_twice.is_empty(), "{unkeyed_twice:?}");
    let keyed_retried = arrivals
        .values()
        .filter(|(count, keyed)| *keyed && *count > 1)
        .count();
    assert!(keyed_retried > 0, "no keyed POST was retried");
    println!(
        "writes: {} distinct, {keyed_retried} keyed writes sent more than once",
        arrivals.len()
    );

    // Memory stayed flat: every keyed structure held at most its cap all along.
    assert!(peak_pace_keys <= MAX_KEYS, "{peak_pace_keys}");
    assert!(peak_breaker_keys <= MAX_KEYS, "{peak_breaker_keys}");
    assert!(peak_cache_bytes <= CACHE_BYTES, "{peak_cache_bytes}");
    cache.run_pending_tasks();
    assert!(cache.resident_bytes() <= CACHE_BYTES);
    assert!(cache.entry_count() > 0);
    let adapt_keys = (0..THINGS)
        .filter(|n| adapt.snapshot(&Key::new(format!("/things/{n}"))).is_some())
        .count();
    println!("adapt: {adapt_keys} /things keys resident");
    assert!(adapt_keys <= MAX_KEYS, "{adapt_keys}");
    // The layers did keep state for the keys they see (the caps are not vacuous).
    assert!(limiter.len() > MAX_KEYS / 2, "{}", limiter.len());
    assert!(adapt_keys > 0);
}
