//! AdaptLayer against MockApi, in virtual time: the client is never told the limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use ratewise_adapt::{Adapt, AdaptLayer, AdaptWaitTooLong};
use ratewise_core::{BoxError, ByRoute, Key, RouteTable};
use ratewise_testkit::{
    Dialect, EndpointConfig, LoggedRequest, MockApi, MockConfig, Outage, Quota, RetryAfterFormat,
};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

const HOST: &str = "http://api.test";

type Body = Empty<Bytes>;

async fn send(
    service: &mut Adapt<MockApi>,
    request: Request<Body>,
) -> Result<http::Response<http_body_util::Full<Bytes>>, BoxError> {
    ServiceExt::<Request<Body>>::ready(service)
        .await?
        .call(request)
        .await
}

/// Runs `callers` tasks that each send requests to `paths` (round robin) through `layer` until
/// `duration` of virtual time has passed. Returns the number of refusals by the layer.
async fn drive(
    api: &MockApi,
    layer: &AdaptLayer,
    callers: usize,
    paths: &'static [&'static str],
    duration: Duration,
) -> usize {
    let end = Instant::now() + duration;
    let refusals = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for caller in 0..callers {
        let mut service = layer.layer(api.clone());
        let refusals = Arc::clone(&refusals);
        tasks.push(tokio::spawn(async move {
            let mut n = caller;
            while Instant::now() < end {
                let path = paths[n % paths.len()];
                n += 1;
                // A full URL as is (to spell the host differently), else a path on HOST.
                let uri = if path.starts_with("http") {
                    path.to_owned()
                } else {
                    format!("{HOST}{path}")
                };
                let request = Request::get(uri).body(Empty::<Bytes>::new()).unwrap();
                match send(&mut service, request).await {
                    Ok(_) => {}
                    Err(error) if error.is::<AdaptWaitTooLong>() => {
                        refusals.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => panic!("unexpected error: {error}"),
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    refusals.load(Ordering::Relaxed)
}

/// Admitted requests and 429s per window of `period` (by arrival since `t0`).
fn per_window(log: &[LoggedRequest], period: Duration, windows: usize) -> Vec<(usize, usize)> {
    let mut counts = vec![(0usize, 0usize); windows];
    for entry in log {
        let index = (entry.since_start.as_nanos() / period.as_nanos()) as usize;
        if index >= windows {
            continue;
        }
        if entry.status == StatusCode::TOO_MANY_REQUESTS {
            counts[index].1 += 1;
        } else if entry.status.is_success() {
            counts[index].0 += 1;
        }
    }
    counts
}

/// The Done-when check for a header dialect: >= 95% of the allowed rate over `windows`
/// windows, at most one 429 in the first window and none after.
async fn dialect_case(
    dialect: Dialect,
    limit: u64,
    period: Duration,
    windows: u32,
    callers: usize,
) {
    let api = MockApi::new(
        MockConfig::new().endpoint(
            EndpointConfig::new("/items")
                .quota(Quota::fixed_window(limit, period).name("items"))
                .dialect(dialect)
                .latency(Duration::from_millis(20)),
        ),
    );
    let layer = AdaptLayer::new();
    let refusals = drive(&api, &layer, callers, &["/items/1"], period * windows).await;
    let log = api.requests();
    let counts = per_window(&log, period, windows as usize);
    let admitted: usize = counts.iter().map(|(ok, _)| ok).sum();
    let allowed = limit as usize * windows as usize;
    let ratio = admitted as f64 / allowed as f64;
    println!(
        "{dialect:?}: admitted {admitted} of {allowed} ({ratio:.4}), per window {counts:?}, refusals {refusals}"
    );
    assert!(
        ratio >= 0.95,
        "{dialect:?}: only {ratio:.4} of the allowed rate"
    );
    assert!(
        counts[0].1 <= 1,
        "{dialect:?}: {} 429s in the first window",
        counts[0].1
    );
    for (index, (_, limited)) in counts.iter().enumerate().skip(1) {
        assert_eq!(*limited, 0, "{dialect:?}: 429s in window {index}");
    }
    assert_eq!(refusals, 0);
}

#[tokio::test(start_paused = true)]
async fn github_dialect_uses_the_quota_without_429s() {
    dialect_case(Dialect::GitHub, 100, Duration::from_secs(30), 20, 32).await;
}

#[tokio::test(start_paused = true)]
async fn draft8_dialect_uses_the_quota_without_429s() {
    dialect_case(Dialect::Draft8, 100, Duration::from_secs(30), 20, 64).await;
}

#[tokio::test(start_paused = true)]
async fn draft7_dialect_uses_the_quota_without_429s() {
    dialect_case(Dialect::Draft7, 100, Duration::from_secs(30), 20, 16).await;
}

#[tokio::test(start_paused = true)]
async fn legacy_epoch_dialect_uses_the_quota_without_429s() {
    dialect_case(
        Dialect::LegacyXRateLimit,
        100,
        Duration::from_secs(30),
        20,
        32,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn openai_durations_dialect_uses_the_quota_without_429s() {
    dialect_case(Dialect::OpenAi, 50, Duration::from_secs(10), 20, 48).await;
}

/// 24 windows of 5 s against a Discord server whose `/channels/1` and `/channels/2` share one
/// bucket (10 per window, named `abcd1234`), through a layer that keys the two routes apart,
/// 32 callers sending to `paths` in turn. Checks what every such run must show: before the
/// server named the bucket each route probed on its own (at most one 429, the second route's
/// probe, in the first window, none after), no caller refused, and both routes resolved to the
/// server's bucket. Returns the (admitted, 429) counts per window, and the allowed total.
async fn two_channels_share_one_bucket(
    paths: &'static [&'static str],
) -> (Vec<(usize, usize)>, usize) {
    let (period, windows, limit) = (Duration::from_secs(5), 24usize, 10u64);
    let channel = |path| {
        EndpointConfig::new(path)
            .dialect(Dialect::Discord)
            .latency(Duration::from_millis(20))
    };
    let api = MockApi::new(
        MockConfig::new()
            .endpoint(channel("/channels/1"))
            .endpoint(channel("/channels/2"))
            .shared_quota(Quota::fixed_window(limit, period).name("abcd1234")),
    );
    let routes = RouteTable::builder()
        .prefix("/channels/1", "channel-1")
        .unwrap()
        .prefix("/channels/2", "channel-2")
        .unwrap()
        .build();
    let layer = AdaptLayer::builder()
        .key_fn(ByRoute(routes))
        .build()
        .unwrap();
    let refusals = drive(&api, &layer, 32, paths, period * windows as u32).await;
    let counts = per_window(&api.requests(), period, windows);
    assert!(counts[0].1 <= 1, "{} 429s in the first window", counts[0].1);
    assert!(
        counts.iter().skip(1).all(|(_, limited)| *limited == 0),
        "{counts:?}"
    );
    assert_eq!(refusals, 0);
    let one = layer.snapshot(&Key::new("channel-1")).unwrap();
    let two = layer.snapshot(&Key::new("channel-2")).unwrap();
    assert_eq!(one.key(), two.key());
    assert_eq!(one.key().as_str(), "api.test bucket:abcd1234");
    (counts, limit as usize * windows)
}

/// Discord: two routes the client keys separately, which the server says share one bucket.
#[tokio::test(start_paused = true)]
async fn discord_buckets_are_shared_between_routes() {
    let (counts, allowed) =
        two_channels_share_one_bucket(&["/channels/1/messages", "/channels/2/messages"]).await;
    let admitted: usize = counts.iter().map(|(ok, _)| ok).sum();
    let ratio = admitted as f64 / allowed as f64;
    println!("Discord: admitted {admitted} of {allowed} ({ratio:.4}), per window {counts:?}");
    assert!(ratio >= 0.95, "only {ratio:.4} of the allowed rate");
}

/// The same server bucket reached through two spellings of one host (capitals, the default
/// port): one namespace, so the routes share what the server declares. Before the fix, the
/// bucket was namespaced by the raw authority, each spelling had its own copy of the bucket,
/// and together they sent twice the limit.
#[tokio::test(start_paused = true)]
async fn one_server_bucket_whatever_the_spelling_of_its_host() {
    two_channels_share_one_bucket(&[
        "http://user@API.Test:80/channels/1/messages",
        "http://api.test/channels/2/messages",
    ])
    .await;
}

/// One 429 with `Retry-After: 30`: no request of the key reaches the server for 30 s after it,
/// not even a millisecond early, and every caller waits (not only the one refused).
#[tokio::test(start_paused = true)]
async fn retry_after_cooldown_holds_every_caller_for_exactly_30_seconds() {
    let latency = Duration::from_millis(5);
    let api = MockApi::new(
        MockConfig::new().endpoint(
            EndpointConfig::new("/items")
                .quota(Quota::fixed_window(100, Duration::from_secs(1)))
                .dialect(Dialect::OpenAi)
                .latency(latency)
                .outage(
                    Outage::new(Duration::from_secs(10), Duration::from_secs(40))
                        .status(StatusCode::TOO_MANY_REQUESTS)
                        .with_retry_after(),
                ),
        ),
    );
    let layer = AdaptLayer::new();
    let start = api.t0();
    drive(&api, &layer, 32, &["/items/1"], Duration::from_secs(50)).await;
    let log = api.requests();
    let refused: Vec<&LoggedRequest> = log
        .iter()
        .filter(|entry| entry.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!(
        refused.len(),
        1,
        "exactly one request hit the server's refusal"
    );
    let refused = refused[0];
    let retry_after = Duration::from_secs(30);
    // The window's probe found the outage: Retry-After is 30 s (40 s - 10.005 s, rounded up).
    assert!(refused.at - start > Duration::from_secs(10));
    assert!(refused.at - start < Duration::from_secs(11));
    // The client got the 429 one latency after it arrived; 30 s from then, not one ms less.
    let cooldown_end = refused.at + refused.latency + retry_after;
    let next = log
        .iter()
        .filter(|entry| entry.at > refused.at)
        .map(|entry| entry.at)
        .min()
        .expect("requests resume after the cooldown");
    assert!(
        next >= cooldown_end,
        "a request arrived {:?} early",
        cooldown_end - next
    );
    assert!(
        next - cooldown_end < Duration::from_millis(1),
        "resumed late: {:?}",
        next - cooldown_end
    );
    // 32 callers kept sending before the cooldown and after it: all of them waited.
    let before = log.iter().filter(|entry| entry.at < refused.at).count();
    let after = log.iter().filter(|entry| entry.at >= cooldown_end).count();
    assert!(
        before >= 900 && after >= 900,
        "{before} before, {after} after"
    );
}

/// A server that sends no rate-limit headers and refuses with bare 429s (GCRA 20/s): the
/// header-less CUBIC mode finds the rate.
#[tokio::test(start_paused = true)]
async fn header_less_cubic_finds_the_rate() {
    let api = MockApi::new(
        MockConfig::new().endpoint(
            EndpointConfig::new("/items")
                .quota(Quota::gcra(20, Duration::from_secs(1), 5))
                .dialect(Dialect::None)
                .retry_after(RetryAfterFormat::Omit)
                .latency(Duration::from_millis(20)),
        ),
    );
    let layer = AdaptLayer::new();
    let minutes = 10;
    let duration = Duration::from_secs(60 * minutes);
    drive(&api, &layer, 32, &["/items/1"], duration).await;
    let stats = api.stats();
    let total = api.count();
    let limited = api.count_status(StatusCode::TOO_MANY_REQUESTS);
    let admitted = api.count_status(StatusCode::OK);
    let allowed = 20 * duration.as_secs() as usize;
    let ratio = admitted as f64 / allowed as f64;
    let limited_share = limited as f64 / total as f64;
    let rate = layer.learned_rate(&Key::new("api.test default"));
    println!(
        "CUBIC: admitted {admitted} of {allowed} ({ratio:.4}); 429s {limited} of {total} ({limited_share:.4}); learned rate {rate:?}; {stats:?}"
    );
    assert!(ratio >= 0.85, "only {ratio:.4} of the allowed rate");
    assert!(
        limited_share <= 0.03,
        "{limited_share:.4} of requests were 429s"
    );
    let rate = rate.expect("the header-less mode is on");
    assert!(rate > 5.0 && rate < 60.0, "learned rate {rate}");
}

/// Two keys with different limits: the throttled one waits for its reset while the other runs
/// at its full rate.
#[tokio::test(start_paused = true)]
async fn keys_do_not_slow_each_other() {
    let period = Duration::from_secs(60);
    let api = MockApi::new(
        MockConfig::new()
            .endpoint(
                EndpointConfig::new("/tight")
                    .quota(Quota::fixed_window(10, period / 2))
                    .dialect(Dialect::Draft8)
                    .latency(Duration::from_millis(20)),
            )
            .endpoint(
                EndpointConfig::new("/generous")
                    .quota(Quota::fixed_window(6000, period))
                    .dialect(Dialect::Draft8)
                    .latency(Duration::from_millis(20)),
            ),
    );
    let routes = RouteTable::builder()
        .prefix("/tight", "tight")
        .unwrap()
        .prefix("/generous", "generous")
        .unwrap()
        .build();
    let layer = AdaptLayer::builder()
        .key_fn(ByRoute(routes))
        .build()
        .unwrap();
    let windows = 5u32;
    let tight_layer = layer.clone();
    let tight_api = api.clone();
    let tight = tokio::spawn(async move {
        drive(
            &tight_api,
            &tight_layer,
            16,
            &["/tight/x"],
            period * windows,
        )
        .await
    });
    let generous = drive(&api, &layer, 16, &["/generous/x"], period * windows).await;
    assert_eq!(tight.await.unwrap(), 0);
    assert_eq!(generous, 0);
    let log = api.requests();
    let admitted = |endpoint: &str| {
        log.iter()
            .filter(|entry| {
                entry.endpoint.as_deref() == Some(endpoint)
                    && entry.status.is_success()
                    && entry.since_start < period * windows
            })
            .count()
    };
    let tight_ratio = admitted("/tight") as f64 / (20.0 * f64::from(windows));
    let generous_ratio = admitted("/generous") as f64 / (6000.0 * f64::from(windows));
    println!("tight {tight_ratio:.4}, generous {generous_ratio:.4}");
    assert!(tight_ratio >= 0.95, "tight key at {tight_ratio:.4}");
    assert!(
        generous_ratio >= 0.95,
        "generous key at {generous_ratio:.4}"
    );
    assert_eq!(api.count_status(StatusCode::TOO_MANY_REQUESTS), 0);
}

/// A cooldown longer than `max_wait` fails fast with the server's `retry_after`.
#[tokio::test(start_paused = true)]
async fn waits_beyond_max_wait_fail_fast() -> Result<(), BoxError> {
    let api = MockApi::new(
        MockConfig::new().endpoint(
            EndpointConfig::new("/items")
                .quota(Quota::fixed_window(1, Duration::from_secs(3600)))
                .dialect(Dialect::GitHub),
        ),
    );
    let layer = AdaptLayer::builder()
        .max_wait(Duration::from_secs(10))
        .build()?;
    let mut service = layer.layer(api.clone());
    let get = || {
        Request::get(format!("{HOST}/items/1"))
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    assert_eq!(send(&mut service, get()).await?.status(), StatusCode::OK);
    let started = Instant::now();
    let error = send(&mut service, get()).await.unwrap_err();
    let refusal = error.downcast_ref::<AdaptWaitTooLong>().expect("a refusal");
    assert_eq!(Instant::now(), started, "failed fast, without waiting");
    assert!(refusal.retry_after() > Duration::from_secs(3590));
    assert_eq!(
        api.count(),
        1,
        "the refused request never reached the server"
    );
    Ok(())
}

/// GitHub with zero configuration: one host key, but `/search` and `/repos` are different
/// server resources (`search`, `core`) with different limits. The layer remembers the resource
/// per path segment, so each uses its own quota fully and neither slows the other.
#[tokio::test(start_paused = true)]
async fn github_resources_under_one_host_key_stay_apart() {
    let period = Duration::from_secs(30);
    let windows = 10u32;
    let api = MockApi::new(
        MockConfig::new()
            .endpoint(
                EndpointConfig::new("/search")
                    .quota(Quota::fixed_window(10, period).name("search"))
                    .dialect(Dialect::GitHub)
                    .latency(Duration::from_millis(20)),
            )
            .endpoint(
                EndpointConfig::new("/repos")
                    .quota(Quota::fixed_window(300, period).name("core"))
                    .dialect(Dialect::GitHub)
                    .latency(Duration::from_millis(20)),
            ),
    );
    let layer = AdaptLayer::new();
    let search = {
        let (api, layer) = (api.clone(), layer.clone());
        tokio::spawn(
            async move { drive(&api, &layer, 16, &["/search/code"], period * windows).await },
        )
    };
    let repos = drive(&api, &layer, 16, &["/repos/a/b"], period * windows).await;
    assert_eq!(search.await.unwrap(), 0);
    assert_eq!(repos, 0);
    let log = api.requests();
    for (endpoint, limit) in [("/search", 10usize), ("/repos", 300)] {
        let entries: Vec<LoggedRequest> = log
            .iter()
            .filter(|entry| entry.endpoint.as_deref() == Some(endpoint))
            .cloned()
            .collect();
        let counts = per_window(&entries, period, windows as usize);
        let admitted: usize = counts.iter().map(|(ok, _)| ok).sum();
        let ratio = admitted as f64 / (limit * windows as usize) as f64;
        println!("{endpoint}: {ratio:.4} {counts:?}");
        assert!(ratio >= 0.95, "{endpoint} at {ratio:.4}");
        assert!(counts[0].1 <= 1, "{endpoint}: {counts:?}");
        assert!(
            counts.iter().skip(1).all(|(_, limited)| *limited == 0),
            "{endpoint}: {counts:?}"
        );
    }
    let core = layer.snapshot(&Key::new("api.test default")).unwrap();
    assert!(core.key().as_str().starts_with("api.test bucket:"));
}

/// GitHub GraphQL counts points, not requests: requests in flight must still be reserved
/// against the remaining points (each costs at least one), or concurrent callers overshoot the
/// window. Regression: 4 callers sent 3 requests past `remaining: 0`.
#[tokio::test(start_paused = true)]
async fn points_policies_reserve_for_requests_in_flight() {
    let api = MockApi::new(
        MockConfig::new().endpoint(
            EndpointConfig::new("/graphql")
                .quota(Quota::fixed_window(5, Duration::from_secs(60)))
                .dialect(Dialect::GitHub)
                .latency(Duration::from_millis(40))
                .resource("graphql"),
        ),
    );
    let layer = AdaptLayer::new();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut service = layer.layer(api.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..3 {
                let request = Request::post(format!("{HOST}/graphql"))
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                send(&mut service, request).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(api.count_status(StatusCode::TOO_MANY_REQUESTS), 0);
    assert_eq!(api.count_status(StatusCode::FORBIDDEN), 0);
    assert_eq!(api.count_status(StatusCode::OK), 12);
}
