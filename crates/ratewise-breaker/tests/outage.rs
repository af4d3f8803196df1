//! The outage scenario on MockApi: a 60 s outage under a steady 50 req/s, with and without the
//! breaker. Prints the figures for BENCHMARKS.md (`cargo test -p ratewise-breaker --test outage
//! -- --nocapture`).
#![cfg(not(loom))]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use ratewise_breaker::{CircuitBreakerLayer, CircuitOpen, CircuitState, SeededJitter, StateChange};
use ratewise_core::BoxError;
use ratewise_testkit::{EndpointConfig, MockApi, MockConfig, Outage};
use tokio::time::{Instant, sleep_until};
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

const RATE: u64 = 50;
const OUTAGE_FROM: Duration = Duration::from_secs(60);
const OUTAGE_UNTIL: Duration = Duration::from_secs(120);
const RUN: Duration = Duration::from_secs(300);
const LATENCY: Duration = Duration::from_millis(20);

type Client = BoxCloneSyncService<
    http::Request<Empty<Bytes>>,
    http::Response<http_body_util::Full<Bytes>>,
    BoxError,
>;

#[derive(Debug, Default)]
struct Report {
    sent: usize,
    ok: usize,
    failed: usize,
    refused: usize,
    reached_during_outage: usize,
    /// From the end of the outage until the first request of the uninterrupted run of
    /// successes that lasts to the end.
    recovery: Duration,
}

fn api() -> MockApi {
    MockApi::new(
        MockConfig::new().endpoint(
            EndpointConfig::new("/items")
                .latency(LATENCY)
                .outage(Outage::new(OUTAGE_FROM, OUTAGE_UNTIL)),
        ),
    )
}

/// Sends `RATE` requests per second for `RUN` through `client`, one task per request.
async fn run(api: &MockApi, client: Client) -> Report {
    let t0 = api.t0();
    let interval = Duration::from_secs(1) / RATE as u32;
    let total = (RUN.as_millis() / interval.as_millis()) as u32;
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let at = t0 + interval * i;
        sleep_until(at).await;
        let request = http::Request::get("http://api.test/items")
            .body(Empty::new())
            .unwrap();
        tasks.push((at, tokio::spawn(client.clone().oneshot(request))));
    }
    let mut report = Report::default();
    let mut last_bad: Option<Instant> = None;
    for (at, task) in tasks {
        report.sent += 1;
        match task.await.unwrap() {
            Ok(response) if response.status().is_success() => report.ok += 1,
            Ok(_) => {
                report.failed += 1;
                last_bad = Some(at);
            }
            Err(error) => {
                assert!(error.downcast_ref::<CircuitOpen>().is_some(), "{error}");
                report.refused += 1;
                last_bad = Some(at);
            }
        }
    }
    report.reached_during_outage = api
        .requests()
        .iter()
        .filter(|r| r.since_start >= OUTAGE_FROM && r.since_start < OUTAGE_UNTIL)
        .count();
    report.recovery = last_bad.map_or(Duration::ZERO, |bad| {
        (bad + interval).saturating_duration_since(t0 + OUTAGE_UNTIL)
    });
    report
}

#[tokio::test(start_paused = true)]
async fn outage_under_steady_load_with_and_without_the_breaker() {
    // Naive client: every request goes to the server.
    let naive_api = api();
    let naive = run(&naive_api, BoxCloneSyncService::new(naive_api.clone())).await;

    // The breaker with its defaults (20-call window, minimum 10, 50%, 30 s open doubling,
    // 10% jitter, 1 probe), jitter seeded for a reproducible run.
    let breaker_api = api();
    let changes: Arc<Mutex<Vec<StateChange>>> = Arc::default();
    let recorded = Arc::clone(&changes);
    let layer = CircuitBreakerLayer::builder()
        .jitter_source(SeededJitter::new(2026))
        .on_state_change(move |change| recorded.lock().unwrap().push(change.clone()))
        .build()
        .unwrap();
    let handle = layer.handle();
    let client = BoxCloneSyncService::new(layer.layer(breaker_api.clone()));
    let breaker = run(&breaker_api, client).await;

    let changes = changes.lock().unwrap().clone();
    let t0 = breaker_api.t0();
    let opens: Vec<_> = changes
        .iter()
        .filter(|c| c.to == CircuitState::Open)
        .collect();
    let opens_during_outage = opens
        .iter()
        .filter(|c| c.at - t0 >= OUTAGE_FROM && c.at - t0 < OUTAGE_UNTIL)
        .count();
    // The open interval in force when the upstream recovered.
    let open_at_recovery = opens
        .iter()
        .rfind(|c| c.at - t0 < OUTAGE_UNTIL)
        .and_then(|c| c.open_for)
        .unwrap();

    println!();
    println!(
        "Outage scenario: MockApi, {RATE} req/s for {RUN:?}, 503 outage over [{OUTAGE_FROM:?}, {OUTAGE_UNTIL:?}), latency {LATENCY:?}, paused clock"
    );
    println!(
        "| client | sent | 2xx | 5xx seen | refused fast | reached server during outage | full throughput after recovery |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, r) in [
        ("naive (no breaker)", &naive),
        ("ratewise-breaker (defaults)", &breaker),
    ] {
        println!(
            "| {name} | {} | {} | {} | {} | {} | {:.2} s |",
            r.sent,
            r.ok,
            r.failed,
            r.refused,
            r.reached_during_outage,
            r.recovery.as_secs_f64()
        );
    }
    println!(
        "transitions: {}",
        changes
            .iter()
            .map(|c| format!(
                "{:.2}s {}->{}{}",
                (c.at - t0).as_secs_f64(),
                c.from,
                c.to,
                c.open_for
                    .map(|d| format!(" ({:.1}s)", d.as_secs_f64()))
                    .unwrap_or_default()
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // The naive client hammers the server for the whole outage.
    assert_eq!(
        naive.reached_during_outage,
        (OUTAGE_UNTIL - OUTAGE_FROM).as_secs() as usize * RATE as usize
    );
    // The breaker: at most the trip window (20 calls) plus one probe per open interval.
    let window = 20;
    assert!(
        breaker.reached_during_outage <= window + opens_during_outage,
        "{} > {window} + {opens_during_outage}",
        breaker.reached_during_outage
    );
    assert!(breaker.reached_during_outage < naive.reached_during_outage / 100);
    // Full throughput within one open interval plus one probe round trip after recovery.
    assert!(
        breaker.recovery <= open_at_recovery + LATENCY,
        "recovered after {:?}, open interval {open_at_recovery:?}",
        breaker.recovery
    );
    assert_eq!(
        handle.state(&ratewise_breaker::Key::new("api.test")),
        CircuitState::Closed
    );
}
