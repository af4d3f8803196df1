//! A contention simulation in the spirit of Marc Brooker's "Exponential Backoff And Jitter"
//! (AWS Architecture Blog, 2015): 100 clients each write once to a resource guarded by
//! optimistic concurrency, on tokio's paused clock.
//!
//! A write reads the version when it starts and commits 10 ms later only if no other write
//! committed in between; otherwise it gets 409 Conflict and the retry layer (409 added to the
//! retryable statuses) backs off and tries again. The test prints, per jitter kind, the total
//! calls and the virtual time until the last client succeeded, and asserts Brooker's ordering:
//! full jitter makes fewer calls than no jitter and finishes sooner.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use ratewise_retry::{Backoff, Jitter, RetryBudget, RetryLayer};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

const CLIENTS: usize = 100;
const WRITE_TIME: Duration = Duration::from_millis(10);

#[derive(Default)]
struct Resource {
    last_commit: Option<Instant>,
    calls: usize,
}

#[derive(Debug, Clone, Copy)]
struct Outcome {
    calls: usize,
    completion: Duration,
}

async fn simulate(jitter: Jitter, seed: u64) -> Outcome {
    let resource = Arc::new(Mutex::new(Resource::default()));
    let shared = Arc::clone(&resource);
    let upstream = tower::service_fn(move |_request: Request<Full<Bytes>>| {
        let resource = Arc::clone(&shared);
        async move {
            let started = Instant::now();
            resource.lock().unwrap().calls += 1;
            tokio::time::sleep(WRITE_TIME).await;
            let mut resource = resource.lock().unwrap();
            let conflict = resource.last_commit.is_some_and(|at| at >= started);
            let status = if conflict {
                StatusCode::CONFLICT
            } else {
                resource.last_commit = Some(Instant::now());
                StatusCode::OK
            };
            let response = Response::builder().status(status).body(()).unwrap();
            Ok::<_, std::io::Error>(response)
        }
    });
    let layer = RetryLayer::builder()
        .seed(seed)
        .max_attempts(10_000)
        .statuses([StatusCode::CONFLICT])
        .budget(RetryBudget::unlimited())
        .backoff(
            Backoff::new()
                .jitter(jitter)
                .base(Duration::from_millis(10))
                .cap(Duration::from_secs(10)),
        )
        .build()
        .unwrap();
    let start = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let client = layer.layer(upstream.clone());
        clients.push(tokio::spawn(async move {
            let request = Request::put("https://db.example.com/row/1")
                .body(Full::new(Bytes::new()))
                .unwrap();
            let response = client.oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            Instant::now()
        }));
    }
    let mut last = start;
    for client in clients {
        last = last.max(client.await.unwrap());
    }
    let calls = resource.lock().unwrap().calls;
    Outcome {
        calls,
        completion: last - start,
    }
}

/// Mean of a few seeded runs, so the ordering is not an accident of one seed.
async fn mean(jitter: Jitter) -> Outcome {
    let runs = 5;
    let mut calls = 0;
    let mut completion = Duration::ZERO;
    for seed in 0..runs {
        let outcome = simulate(jitter, seed).await;
        calls += outcome.calls;
        completion += outcome.completion;
    }
    Outcome {
        calls: calls / runs as usize,
        completion: completion / runs as u32,
    }
}

#[tokio::test(start_paused = true)]
async fn full_jitter_makes_fewer_calls_and_finishes_sooner_than_no_jitter() {
    let mut results = Vec::new();
    for (name, jitter) in [
        ("none", Jitter::None),
        ("full", Jitter::Full),
        ("equal", Jitter::Equal),
        ("decorrelated", Jitter::Decorrelated),
    ] {
        let outcome = mean(jitter).await;
        println!(
            "contention {CLIENTS} clients, jitter {name:>12}: {:>6} calls, completion {:>10.3} s (virtual)",
            outcome.calls,
            outcome.completion.as_secs_f64()
        );
        results.push((name, outcome));
    }
    let none = results[0].1;
    let full = results[1].1;
    assert_eq!(
        none.calls,
        CLIENTS * (CLIENTS + 1) / 2,
        "lockstep: one winner per round"
    );
    assert!(full.calls < none.calls, "{full:?} vs {none:?}");
    assert!(full.completion < none.completion, "{full:?} vs {none:?}");
    assert!(
        full.calls * 2 < none.calls,
        "Brooker: full jitter more than halves the calls"
    );
    // Brooker's finer points, deterministic here because the runs are seeded.
    let equal = results[2].1;
    let decorrelated = results[3].1;
    assert!(
        equal.completion > full.completion,
        "equal jitter is the slowest jittered kind"
    );
    assert!(
        decorrelated.calls > full.calls,
        "decorrelated makes more calls than full"
    );
}
