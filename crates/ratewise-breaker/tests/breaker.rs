//! Behaviour tests of the circuit breaker on tokio's paused clock.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ratewise_breaker::{
    CircuitBreakerLayer, CircuitState, DefaultClassifier, Key, SeededJitter, StateChange, Window,
};
use ratewise_core::{BoxError, Global, PaceWaitTooLong};
use support::{Upstream, refusal, send};
use tokio::time::advance;
use tower::{Layer, ServiceExt};

const HOST: &str = "api.example.com";

fn key(host: &str) -> Key {
    Key::new(host)
}

/// Default settings without jitter, so open durations are exact.
fn exact() -> ratewise_breaker::CircuitBreakerBuilder {
    CircuitBreakerLayer::builder().jitter(0.0)
}

/// Sends `n` requests one after another and returns how many the breaker refused.
async fn send_many<S>(service: &S, host: &str, n: usize) -> usize
where
    S: tower::Service<http::Request<()>, Response = http::Response<()>, Error = BoxError> + Clone,
{
    let mut refused = 0;
    for _ in 0..n {
        if refusal(&send(service, host).await).is_some() {
            refused += 1;
        }
    }
    refused
}

#[tokio::test(start_paused = true)]
async fn minimum_calls_no_trip_on_the_first_failures() {
    let upstream = Upstream::new();
    let layer = exact().build().unwrap();
    let handle = layer.handle();
    let client = layer.layer(upstream.service());

    upstream.status(500);
    assert_eq!(send_many(&client, HOST, 1).await, 0);
    assert_eq!(
        handle.state(&key(HOST)),
        CircuitState::Closed,
        "one failure never trips"
    );
    assert_eq!(send_many(&client, HOST, 8).await, 0);
    assert_eq!(
        handle.state(&key(HOST)),
        CircuitState::Closed,
        "9 calls < minimum 10"
    );
    assert_eq!(send_many(&client, HOST, 1).await, 0);
    assert_eq!(
        handle.state(&key(HOST)),
        CircuitState::Open,
        "10 of 10 failed"
    );
    assert_eq!(upstream.calls(), 10);
    assert_eq!(send_many(&client, HOST, 5).await, 5);
    assert_eq!(
        upstream.calls(),
        10,
        "refused calls never reach the upstream"
    );
}

#[tokio::test(start_paused = true)]
async fn count_window_trips_at_the_failure_rate_over_the_last_calls() {
    let upstream = Upstream::new();
    let layer = exact().build().unwrap();
    let handle = layer.handle();
    let client = layer.layer(upstream.service());

    send_many(&client, HOST, 30).await;
    upstream.status(503);
    // 9 failures in the last 20 calls: 45%.
    assert_eq!(send_many(&client, HOST, 9).await, 0);
    assert_eq!(handle.state(&key(HOST)), CircuitState::Closed);
    upstream.status(200);
    send_many(&client, HOST, 2).await;
    assert_eq!(
        handle.state(&key(HOST)),
        CircuitState::Closed,
        "still 9 of the last 20"
    );
    // One more failure: 10 of the last 20 (9 successes, 9 failures, 2 successes, 1 failure
    // minus the oldest success) is 50%.
    upstream.status(503);
    assert_eq!(send_many(&client, HOST, 1).await, 0);
    assert_eq!(handle.state(&key(HOST)), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn several_probes_all_must_succeed_and_one_failure_reopens() {
    let upstream = Upstream::new();
    let layer = exact().half_open_probes(3).build().unwrap();
    let handle = layer.handle();
    let client = layer.layer(upstream.service());
    upstream.status(500);
    send_many(&client, HOST, 10).await;
    advance(Duration::from_secs(30)).await;

    // Two probes succeed: still half-open (3 needed); the third fails: open again, for 60 s.
    upstream.status(200);
    send(&client, HOST).await.unwrap();
    send(&client, HOST).await.unwrap();
    assert_eq!(handle.state(&key(HOST)), CircuitState::HalfOpen);
    upstream.status(500);
    send(&client, HOST).await.unwrap();
    assert_eq!(handle.state(&key(HOST)), CircuitState::Open);
    let refused = send(&client, HOST).await;
    assert_eq!(
        refusal(&refused).unwrap().retry_after(),
        Duration::from_secs(60)
    );

    // Three successes close it; a fourth call in the same half-open period would have been
    // refused.
    advance(Duration::from_secs(60)).await;
    upstream.status(200);
    for _ in 0..3 {
        send(&client, HOST).await.unwrap();
    }
    assert_eq!(handle.state(&key(HOST)), CircuitState::Closed);
    assert_eq!(upstream.calls(), 10 + 3 + 3);
}

#[tokio::test(start_paused = true)]
async fn failures_leave_the_count_window() {
    let upstream = Upstream::new();
    let layer = exact().build().unwrap();
    let handle = layer.handle();
    let client = layer.layer(upstream.service());

    send_many(&client, HOST, 11).await;
    upstream.status(500);
    send_many(&client, HOST, 9).await;
    upstream.status(200);
    send_many(&client, HOST, 20).await;
    upstream.status(500);
    // The first 9 failures left the window: 9 new failures over the last 20 are 45% (with
    // the old ones still counted there would be 18).
    send_many(&client, HOST, 9).await;
    assert_eq!(handle.state(&key(HOST)), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn time_window_forgets_old_buckets() {
    let upstream = Upstream::new();
    let layer = exact()
        .window(Window::time_in_buckets(Duration::from_secs(30), 10))
        .minimum_calls(4)
        .build()
        .unwrap();
    let handle = layer.handle();
    let client = layer.layer(upstream.service());

    // t = 0: 5 failures and 6 successes (45%): closed.
    send_many(&client, HOST, 6).await;
    upstream.status(500);
    send_many(&client, HOST, 5).await;
    assert_eq!(handle.state(&key(HOST)), CircuitState::Closed);

    // 31 s later the whole first bucket has left the window.
    advance(Duration::from_secs(31)).await;
    upstream.status(200);
    send_many(&client, HOST, 3).await;
    upstream.status(500);
    send_many(&client, HOST, 2).await;
    assert_eq!(
        handle.state(&key(HOST)),
        CircuitState::Closed,
        "2 of 5 in the window"
    );

    // Failures spread over several buckets add up: 2 + 2 of 7 calls within 30 s.
    advance(Duration::from_secs(10)).await;
    send_many(&client, HOST, 2).await;
    assert_eq!(handle.state(&key(HOST)), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn time_window_needs_minimum_calls() {
    let upstream = Upstream::new();
    let layer = exact()
        .window(Window::time(Duration::from_secs(10)))
        .minimum_calls(5)
        .build()
        .unwrap();
    let handle = layer.handle();
    let client = layer.layer(upstream.service());
    upstream.status(500);
    // 4 failures every 11 s: never 5 calls within one window.
    for _ in 0..5 {
        send_many(&client, HOST, 4).await;
        assert_eq!(handle.state(&key(HOST)), CircuitState::Closed);
        advance(Duration::from_secs(11)).await;
    }
    send_many(&client, HOST, 5).await;
    assert_eq!(handle.state(&key(HOST)), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_rule() {
    let upstream = Upstream::new();
    let layer = exact()
        .failure_rate(1.0)
        .minimum_calls(20)
        .consecutive_failures(Some(3))
        .build()
        .unwrap();
    let handle = layer.handle();
    let client = layer.layer(upstream.service());

    upstream.status(500);
    send_many(&client, HOST, 2).await;
    upstream.status(200);
    send_many(&client, HOST, 1).await;
    upstream.status(500);
    send_many(&client, HOST, 2).await;
    assert_eq!(
        handle.state(&key(HOST)),
        CircuitState::Closed,
        "a success breaks the streak"
    );
    send_many(&client, HOST, 1).await;
    assert_eq!(handle.state(&key(HOST)), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn connection_errors_are_failures() {
    let upstream = Upstream::new();
    let layer = exact().consecutive_failures(Some(2)).build().unwrap();
    let handle = layer.handle();
    let client = layer.layer(upstream.service());
    upstream.connection_errors();
    let first = send(&client, HOST).await.unwrap_err();
    assert!(
        first.downcast_ref::<std::io::Error>().is_some(),
        "errors pass through"
    );
    send_many(&client, HOST, 1).await;
    assert_eq!(handle.state(&key(HOST)), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn slow_call_rate_trips() {
    let upstream = Upstream::new();
    let layer = exact()
        .minimum_calls(4)
        .slow_calls(Duration::from_secs(1), 0.5)
        .build()
        .unwrap();
    let handle = layer.handle();
    let client = layer.layer(upstream.service());

    upstream.latency(Duration::from_millis(999));
    send_many(&client, HOST, 10).await;
    assert_eq!(
        handle.state(&key(HOST)),
        CircuitState::Closed,
        "under the threshold"
    );
    upstream.latency(Duration::from_secs(2));
    send_many(&client, HOST, 9).await;
    assert_eq!(
        handle.state(&key(HOST)),
        CircuitState::Closed,
        "9 slow of 20"
    );
    send_many(&client, HOST, 1).await;
    assert_eq!(
        handle.state(&key(HOST)),
        CircuitState::Open,
        "10 slow of 20"
    );
}

#[tokio::test(start_paused = true)]
async fn too_many_requests_is_not_a_failure_by_default() {
    let upstream = Upstream::new();
    let layer = exact().build().unwrap();
    let handle = layer.handle();
    let client = layer.layer(upstream.service());
    upstream.status(429);
    assert_eq!(send_many(&client, HOST, 50).await, 0);
    assert_eq!(handle.state(&key(HOST)), CircuitState::Closed);
    assert_eq!(upstream.calls(), 50);

    // Configurable.
    let upstream = Upstream::new();
    let layer = exact()
        .classifier(DefaultClassifier::new().too_many_requests_is_failure(true))
        .build()
        .unwrap();
    let handle = layer.handle();
    let client = layer.layer(upstream.service());
    upstream.status(429);
    send_many(&client, HOST, 10).await;
    assert_eq!(handle.state(&key(HOST)), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn refusals_of_lower_layers_are_ignored() {
    let refusing = tower::service_fn(|_req: http::Request<()>| async {
        Err::<http::Response<()>, BoxError>(Box::new(PaceWaitTooLong::new(
            Key::new(HOST),
            Duration::from_secs(5),
        )))
    });
    let layer = exact().consecutive_failures(Some(1)).build().unwrap();
    let handle = layer.handle();
    let client = layer.layer(refusing);
    for _ in 0..30 {
        let error = send(&client, HOST).await.unwrap_err();
        assert!(error.downcast_ref::<PaceWaitTooLong>().is_some());
    }
    assert_eq!(handle.state(&key(HOST)), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn open_half_open_closed_cycle_with_events() {
    let upstream = Upstream::new();
    let changes: Arc<Mutex<Vec<StateChange>>> = Arc::default();
    let recorded = Arc::clone(&changes);
    let layer = exact()
        .on_state_change(move |change| recorded.lock().unwrap().push(change.clone()))
        .build()
        .unwrap();
    let handle = layer.handle();
    let client = layer.layer(upstream.service());

    upstream.status(500);
    send_many(&client, HOST, 10).await;
    let refused = send(&client, HOST).await;
    let open = refusal(&refused).expect("refused");
    assert_eq!(open.key(), &key(HOST));
    assert_eq!(open.retry_after(), Duration::from_secs(30));

    advance(Duration::from_secs(29)).await;
    let refused = send(&client, HOST).await;
    assert_eq!(
        refusal(&refused).unwrap().retry_after(),
        Duration::from_secs(1)
    );
    assert_eq!(upstream.calls(), 10);

    advance(Duration::from_secs(1)).await;
    upstream.status(200);
    let probe = send(&client, HOST).await.unwrap();
    assert_eq!(probe.status(), 200);
    assert_eq!(upstream.calls(), 11, "the probe reached the upstream");
    assert_eq!(handle.state(&key(HOST)), CircuitState::Closed);
    assert_eq!(send_many(&client, HOST, 10).await, 0);

    let changes = changes.lock().unwrap();
    let path: Vec<_> = changes.iter().map(|c| (c.from, c.to)).collect();
    assert_eq!(
        path,
        [
            (CircuitState::Closed, CircuitState::Open),
            (CircuitState::Open, CircuitState::HalfOpen),
            (CircuitState::HalfOpen, CircuitState::Closed),
        ]
    );
    assert_eq!(changes[0].open_for, Some(Duration::from_secs(30)));
    assert_eq!(changes[1].at - changes[0].at, Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn open_duration_grows_on_consecutive_trips_and_resets_after_a_healthy_close() {
    let upstream = Upstream::new();
    let opened: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let recorded = Arc::clone(&opened);
    let layer = exact()
        .max_open_duration(Duration::from_secs(100))
        .on_state_change(move |change| {
            if let Some(open_for) = change.open_for {
                recorded.lock().unwrap().push(open_for);
            }
        })
        .build()
        .unwrap();
    let client = layer.layer(upstream.service());

    upstream.status(500);
    send_many(&client, HOST, 10).await;
    // Each failed probe re-opens for twice as long, capped at 100 s.
    for expected in [60, 100, 100] {
        let previous = *opened.lock().unwrap().last().unwrap();
        advance(previous).await;
        send(&client, HOST).await.unwrap();
        assert_eq!(
            opened.lock().unwrap().last(),
            Some(&Duration::from_secs(expected))
        );
        // Just before the end, still refused.
        let refused = send(&client, HOST).await;
        assert_eq!(
            refusal(&refused).unwrap().retry_after(),
            Duration::from_secs(expected)
        );
    }

    // A successful probe closes; tripping again at once keeps the growth (not healthy yet).
    advance(Duration::from_secs(100)).await;
    upstream.status(200);
    send(&client, HOST).await.unwrap();
    upstream.status(500);
    send_many(&client, HOST, 10).await;
    assert_eq!(
        opened.lock().unwrap().last(),
        Some(&Duration::from_secs(100))
    );

    // A healthy close (10 calls recorded without a trip) resets it to 30 s.
    advance(Duration::from_secs(100)).await;
    upstream.status(200);
    send_many(&client, HOST, 11).await;
    upstream.status(500);
    send_many(&client, HOST, 20).await;
    assert_eq!(
        opened.lock().unwrap().last(),
        Some(&Duration::from_secs(30))
    );
}

#[tokio::test(start_paused = true)]
async fn jitter_is_bounded_and_reproducible_with_a_seed() {
    async fn open_durations(seed: u64) -> Vec<Duration> {
        let upstream = Upstream::new();
        let opened: Arc<Mutex<Vec<Duration>>> = Arc::default();
        let recorded = Arc::clone(&opened);
        let layer = CircuitBreakerLayer::builder()
            .jitter(0.5)
            .jitter_source(SeededJitter::new(seed))
            .on_state_change(move |change| {
                if let Some(open_for) = change.open_for {
                    recorded.lock().unwrap().push(open_for);
                }
            })
            .build()
            .unwrap();
        let client = layer.layer(upstream.service());
        upstream.status(500);
        send_many(&client, HOST, 10).await;
        for _ in 0..5 {
            let last = *opened.lock().unwrap().last().unwrap();
            advance(last).await;
            send(&client, HOST).await.unwrap();
        }
        opened.lock().unwrap().clone()
    }
    let a = open_durations(42).await;
    assert_eq!(a, open_durations(42).await);
    assert_ne!(a, open_durations(43).await);
    for (trip, d) in a.iter().enumerate() {
        let full = Duration::from_secs(30 * 2u64.pow(trip as u32)).min(Duration::from_secs(300));
        // Never shorter than the configured 30 s nor longer than the 300 s cap; up to 50%
        // longer than the nominal duration, or up to 50% shorter at the cap.
        assert!(
            *d >= Duration::from_secs(30) && *d <= Duration::from_secs(300),
            "trip {trip}: {d:?}"
        );
        assert!(
            *d >= full / 2 && *d <= full + full / 2,
            "trip {trip}: {d:?} vs {full:?}"
        );
        if full < Duration::from_secs(200) {
            assert!(
                *d >= full,
                "trip {trip}: jitter shortened {full:?} to {d:?}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn keys_are_isolated() {
    let upstream = Upstream::new();
    let layer = exact().build().unwrap();
    let handle = layer.handle();
    let client = layer.layer(upstream.service());
    upstream.status(500);
    send_many(&client, "a.example.com", 10).await;
    assert_eq!(handle.state(&key("a.example.com")), CircuitState::Open);
    assert_eq!(handle.state(&key("b.example.com")), CircuitState::Closed);
    upstream.status(200);
    assert_eq!(send_many(&client, "b.example.com", 20).await, 0);
    assert_eq!(send_many(&client, "a.example.com", 5).await, 5);
    assert_eq!(upstream.calls_for("a.example.com"), 10);
    assert_eq!(upstream.calls_for("b.example.com"), 20);

    // A closure key function groups hosts as it likes.
    let layer = exact().key_fn(Global::new()).build().unwrap();
    let client = layer.layer(upstream.service());
    upstream.status(500);
    send_many(&client, "a.example.com", 5).await;
    send_many(&client, "b.example.com", 5).await;
    assert_eq!(
        layer.handle().state(&Key::new("global")),
        CircuitState::Open
    );
}

#[tokio::test(start_paused = true)]
async fn all_clones_share_the_circuit() {
    let upstream = Upstream::new();
    let layer = exact().build().unwrap();
    let first = layer.clone().layer(upstream.service());
    let second = layer.layer(upstream.service());
    upstream.status(500);
    send_many(&first, HOST, 5).await;
    send_many(&second.clone(), HOST, 5).await;
    assert_eq!(send_many(&first, HOST, 1).await, 1);
    assert_eq!(send_many(&second, HOST, 1).await, 1);
}

#[tokio::test(start_paused = true)]
async fn handle_forces_and_resets() {
    let upstream = Upstream::new();
    let layer = exact().build().unwrap();
    let handle = layer.handle();
    let client = layer.layer(upstream.service());

    handle.force_open(&key(HOST));
    assert_eq!(handle.state(&key(HOST)), CircuitState::ForcedOpen);
    let refused = send(&client, HOST).await;
    assert_eq!(
        refusal(&refused).unwrap().retry_after(),
        Duration::from_secs(30)
    );
    advance(Duration::from_secs(3600)).await;
    assert_eq!(
        send_many(&client, HOST, 3).await,
        3,
        "forced open does not half-open"
    );
    assert_eq!(upstream.calls(), 0);

    handle.force_closed(&key(HOST));
    upstream.status(500);
    assert_eq!(send_many(&client, HOST, 50).await, 0);
    assert_eq!(
        handle.state(&key(HOST)),
        CircuitState::ForcedClosed,
        "nothing counts"
    );

    handle.reset(&key(HOST));
    assert_eq!(handle.state(&key(HOST)), CircuitState::Closed);
    send_many(&client, HOST, 10).await;
    assert_eq!(handle.state(&key(HOST)), CircuitState::Open);
    handle.reset(&key(HOST));
    assert_eq!(send_many(&client, HOST, 1).await, 0);
    assert_eq!(
        handle.states(),
        vec![(key(HOST), CircuitState::Closed)],
        "one key held"
    );
}

#[tokio::test(start_paused = true)]
async fn forced_keys_survive_idle_eviction() {
    let upstream = Upstream::new();
    let layer = exact()
        .idle_timeout(Some(Duration::from_secs(600)))
        .build()
        .unwrap();
    let handle = layer.handle();
    let client = layer.layer(upstream.service());
    handle.force_open(&key(HOST));
    advance(Duration::from_secs(3600)).await;
    // New keys trigger sweeps of idle keys.
    send_many(&client, "other.example.com", 1).await;
    assert_eq!(handle.state(&key(HOST)), CircuitState::ForcedOpen);
    assert_eq!(send_many(&client, HOST, 1).await, 1);
}

#[tokio::test(start_paused = true)]
async fn a_hung_probe_times_out_and_reopens() {
    let upstream = Upstream::new();
    let layer = exact()
        .probe_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let handle = layer.handle();
    let client = layer.layer(upstream.service());
    upstream.status(500);
    send_many(&client, HOST, 10).await;
    advance(Duration::from_secs(30)).await;

    upstream.hang();
    let probe_client = client.clone();
    let probe = tokio::spawn(probe_client.oneshot(support::get(HOST)));
    tokio::task::yield_now().await;
    assert_eq!(upstream.in_flight(), 1);
    assert_eq!(handle.state(&key(HOST)), CircuitState::HalfOpen);
    let refused = send(&client, HOST).await;
    assert_eq!(
        refusal(&refused).unwrap().retry_after(),
        Duration::from_secs(10)
    );

    advance(Duration::from_secs(10)).await;
    // The probe never answered: the circuit re-opened (for longer), without waiting for it.
    assert_eq!(handle.state(&key(HOST)), CircuitState::Open);
    let refused = send(&client, HOST).await;
    assert_eq!(
        refusal(&refused).unwrap().retry_after(),
        Duration::from_secs(60)
    );

    // Its late success counts for nothing.
    upstream.status(200);
    upstream.release();
    assert_eq!(probe.await.unwrap().unwrap().status(), 200);
    assert_eq!(handle.state(&key(HOST)), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn late_results_of_calls_admitted_before_a_trip_do_not_count() {
    let upstream = Upstream::new();
    let layer = exact().build().unwrap();
    let handle = layer.handle();
    let client = layer.layer(upstream.service());

    // Three calls admitted while closed, still in flight through a whole open/half-open cycle.
    upstream.status(500);
    upstream.hang();
    let late: Vec<_> = (0..3)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(client.oneshot(support::get(HOST)))
        })
        .collect();
    tokio::task::yield_now().await;
    assert_eq!(upstream.in_flight(), 3);
    upstream.stop_hanging();
    send_many(&client, HOST, 10).await;
    assert_eq!(handle.state(&key(HOST)), CircuitState::Open);
    advance(Duration::from_secs(30)).await;
    upstream.status(200);
    send(&client, HOST).await.unwrap();
    assert_eq!(handle.state(&key(HOST)), CircuitState::Closed);

    // Their failures arrive now, in the new closed period: ignored.
    upstream.status(500);
    upstream.release();
    for task in late {
        assert_eq!(task.await.unwrap().unwrap().status(), 500);
    }
    send_many(&client, HOST, 9).await;
    assert_eq!(
        handle.state(&key(HOST)),
        CircuitState::Closed,
        "9 failures < minimum 10: the 3 late ones were not counted"
    );
}
