//! The half-open instant under load: exactly N probes reach the server, cancelled probes give
//! their slots back, and the circuit never gets stuck.

mod support;

use std::time::Duration;

use ratewise_breaker::{CircuitBreakerLayer, CircuitState, JitterSource, Key, SeededJitter};
use support::{Upstream, get, refusal, send};
use tokio::time::{advance, sleep};
use tower::{Layer, ServiceExt};

const HOST: &str = "api.example.com";
const CALLERS: usize = 200;

#[tokio::test(start_paused = true)]
async fn two_hundred_callers_at_the_half_open_instant_send_exactly_n_probes() {
    for probes in [1u32, 3] {
        let upstream = Upstream::new();
        let layer = CircuitBreakerLayer::builder()
            .jitter(0.0)
            .half_open_probes(probes)
            .build()
            .unwrap();
        let handle = layer.handle();
        let client = layer.layer(upstream.service());
        upstream.status(500);
        for _ in 0..10 {
            send(&client, HOST).await.unwrap();
        }
        advance(Duration::from_secs(30)).await;

        // Every caller arrives at the same instant; the probes hang at the server.
        upstream.status(200);
        upstream.hang();
        let callers: Vec<_> = (0..CALLERS)
            .map(|_| tokio::spawn(client.clone().oneshot(get(HOST))))
            .collect();
        tokio::task::yield_now().await;
        assert_eq!(upstream.calls(), 10 + probes as usize);
        assert_eq!(upstream.in_flight(), probes as usize);
        assert_eq!(handle.state(&Key::new(HOST)), CircuitState::HalfOpen);

        upstream.release();
        let mut refused = 0;
        let mut answered = 0;
        for caller in callers {
            match caller.await.unwrap() {
                Ok(response) => {
                    assert_eq!(response.status(), 200);
                    answered += 1;
                }
                Err(error) => {
                    assert!(
                        error
                            .downcast_ref::<ratewise_breaker::CircuitOpen>()
                            .is_some()
                    );
                    refused += 1;
                }
            }
        }
        assert_eq!(answered, probes as usize);
        assert_eq!(refused, CALLERS - probes as usize);
        assert_eq!(upstream.max_in_flight(), probes as usize);
        assert_eq!(
            handle.state(&Key::new(HOST)),
            CircuitState::Closed,
            "the probes closed it"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn probes_cancelled_at_random_points_leak_no_slot_and_never_stick() {
    for seed in 0..20u64 {
        let probes = 1 + (seed % 3) as u32;
        let rng = SeededJitter::new(seed);
        let upstream = Upstream::new();
        let layer = CircuitBreakerLayer::builder()
            .jitter(0.0)
            .half_open_probes(probes)
            .probe_timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let handle = layer.handle();
        let client = layer.layer(upstream.service());
        upstream.status(500);
        for _ in 0..10 {
            send(&client, HOST).await.unwrap();
        }
        advance(Duration::from_secs(30)).await;
        let before = upstream.calls();

        // 200 callers over 100 ms; each gives up (drops its future) after a random time, some
        // before the request reaches the server, most while the server hangs.
        upstream.status(200);
        upstream.hang();
        let callers: Vec<_> = (0..CALLERS)
            .map(|_| {
                let client = client.clone();
                let start = Duration::from_micros((rng.next_unit() * 100_000.0) as u64);
                let patience = Duration::from_micros((rng.next_unit() * 50_000.0) as u64);
                let abort = rng.next_unit() < 0.2;
                let task = tokio::spawn(async move {
                    sleep(start).await;
                    tokio::time::timeout(patience, client.oneshot(get(HOST))).await
                });
                (task, abort)
            })
            .collect();
        let mut tasks = Vec::new();
        for (task, abort) in callers {
            if abort {
                // Aborted at whatever point it has reached.
                sleep(Duration::from_micros((rng.next_unit() * 1_000.0) as u64)).await;
                task.abort();
            }
            tasks.push(task);
        }
        let mut timed_out = 0;
        for task in tasks {
            match task.await {
                Ok(Err(_elapsed)) => timed_out += 1,
                Ok(Ok(result)) => assert!(refusal(&result).is_some(), "{result:?}"),
                Err(join) => assert!(join.is_cancelled()),
            }
        }
        assert!(
            timed_out > 0,
            "seed {seed}: some probes were cancelled while in flight"
        );
        assert!(
            upstream.max_in_flight() <= probes as usize,
            "seed {seed}: {} in flight > {probes}",
            upstream.max_in_flight()
        );
        assert_eq!(upstream.in_flight(), 0);
        assert!(
            upstream.calls() > before + probes as usize,
            "cancelled probes made room for new ones"
        );
        assert_eq!(handle.state(&Key::new(HOST)), CircuitState::HalfOpen);

        // No slot leaked: the next caller is a probe at once, without waiting for any timeout.
        upstream.release();
        for _ in 0..probes {
            let response = send(&client, HOST).await.unwrap();
            assert_eq!(response.status(), 200, "seed {seed}");
        }
        assert_eq!(
            handle.state(&Key::new(HOST)),
            CircuitState::Closed,
            "seed {seed}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_probe_refused_below_gives_its_slot_back() {
    use ratewise_core::{BoxError, PaceWaitTooLong};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    // The first call after the trip is refused by a (pretend) pacing layer below the breaker.
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let inner = tower::service_fn(move |_req: http::Request<()>| {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        async move {
            match n {
                0..10 => Ok(http::Response::builder().status(500).body(()).unwrap()),
                10 => Err::<_, BoxError>(Box::new(PaceWaitTooLong::new(
                    Key::new(HOST),
                    Duration::from_secs(1),
                ))),
                _ => Ok(http::Response::builder().status(200).body(()).unwrap()),
            }
        }
    });
    let layer = CircuitBreakerLayer::builder().jitter(0.0).build().unwrap();
    let handle = layer.handle();
    let client = layer.layer(inner);
    for _ in 0..10 {
        send(&client, HOST).await.unwrap();
    }
    advance(Duration::from_secs(30)).await;
    let refused_below = send(&client, HOST).await.unwrap_err();
    assert!(refused_below.downcast_ref::<PaceWaitTooLong>().is_some());
    assert_eq!(handle.state(&Key::new(HOST)), CircuitState::HalfOpen);
    // The slot is free again: the next call is the probe.
    assert_eq!(send(&client, HOST).await.unwrap().status(), 200);
    assert_eq!(handle.state(&Key::new(HOST)), CircuitState::Closed);
}
