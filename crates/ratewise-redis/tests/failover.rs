//! The failure policy against a private `redis-server` that is killed, frozen and restarted.
//!
//! These tests need a real Redis and real sockets. While Redis answers they run on tokio's
//! real clock with a generous timeout, so a loaded CI machine never degrades a healthy Redis
//! by accident; they assert counts and sources of decisions there, never durations. While
//! Redis is dead or frozen they pause tokio's clock: nothing real can answer then, so the
//! clock only moves to the next timer, and "no acquire waits past the timeout" is asserted
//! exactly, in virtual time, however slow the machine is.

mod support;

use std::time::Duration;

use metrics::{SharedString, Unit};
use metrics_util::CompositeKey;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use ratewise_core::Key;
use ratewise_core::metric_names::{REDIS_FALLBACK_TOTAL, REDIS_MODE_SWITCHES_TOTAL};
use ratewise_redis::{
    DecisionSource, FailurePolicy, Quota, RateLimiter, RedisConnection, RedisGcra, RedisUnavailable,
};
use support::RedisServer;
use tokio::time::{Instant, sleep};

/// The per-call timeout of these tests: far above the 50 ms default so that a loaded CI
/// machine does not degrade a healthy Redis by accident. While Redis is down the clock is
/// paused, so waiting for it costs no real time.
const TIMEOUT: Duration = Duration::from_secs(2);
/// On the real clock (Redis answering or restarting), only a hang guard: the exact bound is
/// checked while the clock is paused.
const HANG_GUARD: Duration = Duration::from_secs(15);
/// How long the recovery loops wait for shared mode, on the real clock.
const RECOVERY: Duration = Duration::from_secs(30);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn limiter(url: &str, policy: FailurePolicy) -> RedisGcra {
    limiter_with_timeout(url, policy, TIMEOUT)
}

fn limiter_with_timeout(url: &str, policy: FailurePolicy, timeout: Duration) -> RedisGcra {
    let client = redis::Client::open(url).expect("url");
    RedisGcra::builder(RedisConnection::single(client).expect("connection"))
        .timeout(timeout)
        .probe_interval(Duration::from_millis(100))
        .failure_policy(policy)
        .build()
        .expect("valid settings")
}

type Metrics = Vec<(CompositeKey, Option<Unit>, Option<SharedString>, DebugValue)>;

fn counter(metrics: &Metrics, name: &str, label: (&str, &str)) -> u64 {
    metrics
        .iter()
        .filter(|(key, _, _, _)| {
            key.key().name() == name
                && key
                    .key()
                    .labels()
                    .any(|l| l.key() == label.0 && l.value() == label.1)
        })
        .map(|(_, _, _, value)| match value {
            DebugValue::Counter(n) => *n,
            _ => 0,
        })
        .sum()
}

/// What a burst of concurrent acquires saw.
#[derive(Debug, Default)]
struct Round {
    sources: Vec<DecisionSource>,
    errors: usize,
    slow: usize,
}

/// 8 concurrent acquires, each timed; `slow` counts those that took longer than `bound`.
async fn round(limiter: &RedisGcra, quotas: &[Quota], bound: Duration) -> Round {
    let mut tasks = Vec::new();
    for task in 0..8 {
        let limiter = limiter.clone();
        let quotas = quotas.to_vec();
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            let result = limiter
                .check(&Key::new(format!("k{task}")), &quotas, 1)
                .await;
            (start.elapsed(), result.map(|decision| decision.source()))
        }));
    }
    let mut round = Round::default();
    for task in tasks {
        let (elapsed, result) = task.await.expect("task");
        round.slow += usize::from(elapsed > bound);
        match result {
            Ok(source) => round.sources.push(source),
            Err(error) => {
                assert!(
                    error.downcast_ref::<RedisUnavailable>().is_some(),
                    "{error}"
                );
                round.errors += 1;
            }
        }
    }
    round
}

#[test]
fn killed_redis_falls_back_within_the_timeout_and_recovers_after_restart() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let rt = runtime();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let Some(mut server) = RedisServer::start("killed_redis_falls_back").await else {
                return;
            };
            let limiter = limiter(
                &server.url(),
                FailurePolicy::FallbackLocal {
                    expected_workers: 4,
                },
            );
            let quotas = [Quota::per_second(10_000)
                .and_then(|q| q.burst(1_000))
                .expect("quota")];

            for _ in 0..5 {
                let round = round(&limiter, &quotas, HANG_GUARD).await;
                assert!(
                    round.sources.iter().all(|s| *s == DecisionSource::Shared),
                    "{round:?}"
                );
            }

            server.kill();
            // Nothing can answer now: virtual time makes the bound exact.
            tokio::time::pause();
            let mut fallback = 0;
            for _ in 0..10 {
                let round = round(&limiter, &quotas, TIMEOUT).await;
                assert_eq!(
                    round.slow, 0,
                    "no acquire waits past the timeout: {round:?}"
                );
                assert_eq!(round.errors, 0);
                fallback += round
                    .sources
                    .iter()
                    .filter(|s| **s == DecisionSource::FallbackLocal)
                    .count();
                sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(
                fallback, 80,
                "every acquire after the kill is answered by the fallback"
            );
            assert!(limiter.is_degraded());

            // A cooldown while Redis is down still holds in this process (the drain itself
            // may spend up to the timeout trying Redis).
            let cooled = Key::new("cooled-locally");
            limiter
                .drain(&cooled, &quotas, Instant::now() + Duration::from_secs(30))
                .await
                .expect("the fallback takes the cooldown");
            let decision = limiter.check(&cooled, &quotas, 1).await.expect("fallback");
            assert_eq!(decision.source(), DecisionSource::FallbackLocal);
            assert!(!decision.is_allowed());
            assert!(decision.retry_after() >= Duration::from_secs(30) - 2 * TIMEOUT);

            tokio::time::resume();
            server.restart().await;
            let deadline = Instant::now() + RECOVERY;
            loop {
                let round = round(&limiter, &quotas, HANG_GUARD).await;
                assert_eq!(round.slow, 0, "{round:?}");
                if round.sources.iter().all(|s| *s == DecisionSource::Shared) {
                    break;
                }
                assert!(Instant::now() < deadline, "never back to shared mode");
                sleep(Duration::from_millis(50)).await;
            }
            assert!(!limiter.is_degraded());
        });
    });
    // Taking a snapshot resets the counters: one snapshot for every assertion.
    let metrics = snapshotter.snapshot().into_vec();
    if metrics.is_empty() {
        return; // skipped: no Redis
    }
    assert_eq!(
        counter(&metrics, REDIS_MODE_SWITCHES_TOTAL, ("to", "degraded")),
        1
    );
    assert_eq!(
        counter(&metrics, REDIS_MODE_SWITCHES_TOTAL, ("to", "shared")),
        1
    );
    assert!(counter(&metrics, REDIS_FALLBACK_TOTAL, ("policy", "fallback_local")) >= 80);
}

#[test]
fn frozen_redis_never_holds_an_acquire_past_the_timeout() {
    let rt = runtime();
    rt.block_on(async {
        let Some(server) = RedisServer::start("frozen_redis").await else {
            return;
        };
        let limiter = limiter(&server.url(), FailurePolicy::FailClosed);
        let quotas = [Quota::per_second(10_000)
            .and_then(|q| q.burst(1_000))
            .expect("quota")];
        let round_before = round(&limiter, &quotas, HANG_GUARD).await;
        assert_eq!(round_before.errors, 0);

        // SIGSTOP: the socket stays open and nothing answers; virtual time makes the bound
        // exact.
        server.freeze();
        tokio::time::pause();
        let mut refused = 0;
        for _ in 0..5 {
            let round = round(&limiter, &quotas, TIMEOUT).await;
            assert_eq!(round.slow, 0, "{round:?}");
            refused += round.errors;
        }
        assert_eq!(
            refused, 40,
            "fail closed refuses every acquire while Redis hangs"
        );
        let drained = limiter
            .drain(
                &Key::new("k0"),
                &quotas,
                Instant::now() + Duration::from_secs(1),
            )
            .await;
        let error = drained.expect_err("fail closed cannot share the cooldown");
        assert!(
            error.downcast_ref::<RedisUnavailable>().is_some(),
            "{error}"
        );
        tokio::time::resume();
        server.thaw();

        let deadline = Instant::now() + RECOVERY;
        while round(&limiter, &quotas, HANG_GUARD).await.errors > 0 {
            assert!(Instant::now() < deadline, "never recovered after SIGCONT");
            sleep(Duration::from_millis(50)).await;
        }
        assert!(!limiter.is_degraded());
    });
}

#[test]
fn fail_open_lets_everything_through_while_redis_is_down() {
    let rt = runtime();
    rt.block_on(async {
        let Some(mut server) = RedisServer::start("fail_open").await else {
            return;
        };
        let limiter = limiter(&server.url(), FailurePolicy::FailOpen);
        // Burst 1 and one per hour: with Redis, the second request is denied however slow
        // the machine.
        let quotas = [Quota::per_hour(1).expect("quota")];
        let key = Key::new("open");
        assert!(
            limiter
                .acquire(&key, &quotas, 1)
                .await
                .expect("acquire")
                .is_allowed()
        );
        assert!(
            !limiter
                .acquire(&key, &quotas, 1)
                .await
                .expect("acquire")
                .is_allowed()
        );
        server.kill();
        for _ in 0..20 {
            let decision = limiter.check(&key, &quotas, 1).await.expect("fail open");
            assert!(decision.is_allowed());
            assert_eq!(decision.source(), DecisionSource::FailOpen);
        }
    });
}

/// A closed loopback port: nothing listens there.
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    drop(listener);
    format!("redis://127.0.0.1:{port}/")
}

/// With Redis unreachable, each of the expected workers gets its share of the rate: 100/s burst
/// 8 over 4 workers is 25/s burst 2 here, on a paused clock.
#[tokio::test(start_paused = true)]
async fn fallback_paces_at_the_rate_divided_by_the_expected_workers() {
    let client = redis::Client::open(dead_url()).expect("url");
    // One probe at most in these 2 s: probes would spend (virtual) time waiting on Redis.
    let limiter = RedisGcra::builder(RedisConnection::single(client).expect("connection"))
        .timeout(Duration::from_millis(150))
        .probe_interval(Duration::from_secs(10))
        .failure_policy(FailurePolicy::FallbackLocal {
            expected_workers: 4,
        })
        .build()
        .expect("settings");
    let quotas = [Quota::per_second(100)
        .and_then(|q| q.burst(8))
        .expect("quota")];
    let key = Key::new("fallback");
    let start = Instant::now();
    let mut admitted = 0;
    while start.elapsed() < Duration::from_secs(2) {
        match limiter
            .acquire(&key, &quotas, 1)
            .await
            .expect("fallback decides")
        {
            ratewise_redis::Decision::Allowed => admitted += 1,
            ratewise_redis::Decision::Denied { retry_after } => sleep(retry_after).await,
        }
    }
    assert!(limiter.is_degraded());
    // Degraded after at most the timeout (150 ms), then 2 at once and one every 40 ms until
    // 2 s: 48 to 52, never more than 2 + 2 s / 40 ms.
    assert!((48..=52).contains(&admitted), "admitted {admitted}");
}

/// A weighted cost above this process's share of the burst still takes its whole cost from
/// the fallback: the local rate stays `rate / expected_workers` in units, not in requests.
#[tokio::test(start_paused = true)]
async fn fallback_counts_a_large_cost_in_full() {
    let client = redis::Client::open(dead_url()).expect("url");
    let limiter = RedisGcra::builder(RedisConnection::single(client).expect("connection"))
        .timeout(Duration::from_millis(150))
        .probe_interval(Duration::from_secs(10))
        .failure_policy(FailurePolicy::FallbackLocal {
            expected_workers: 4,
        })
        .build()
        .expect("settings");
    // 100 units/s, burst 8, over 4 workers: this one's share is 25 units/s, burst 2.
    let quotas = [Quota::per_second(100)
        .and_then(|q| q.burst(8))
        .expect("quota")];
    let key = Key::new("weighted");
    let cost = 8;
    let start = Instant::now();
    let mut units = 0;
    while start.elapsed() < Duration::from_secs(4) {
        match limiter
            .acquire(&key, &quotas, cost)
            .await
            .expect("fallback decides")
        {
            ratewise_redis::Decision::Allowed => units += cost,
            ratewise_redis::Decision::Denied { retry_after } => sleep(retry_after).await,
        }
    }
    assert!(limiter.is_degraded());
    // 4 s at 25 units/s plus one request at once: at most 108 units (a cost counted as the
    // share's burst of 2 would let 4 times as many through), at least 4 s minus the timeout.
    assert!((88..=108).contains(&units), "admitted {units} units");
}

/// A cooldown reaches every worker through Redis, and the fallback keeps honouring it.
#[test]
fn a_cooldown_written_by_one_worker_stops_the_others() {
    let rt = runtime();
    rt.block_on(async {
        let Some(server) = RedisServer::start("shared_cooldown").await else {
            return;
        };
        // A generous timeout: this test checks decisions, not the failure policy.
        let timeout = Duration::from_secs(2);
        let worker_a = limiter_with_timeout(&server.url(), FailurePolicy::default(), timeout);
        let worker_b = limiter_with_timeout(&server.url(), FailurePolicy::default(), timeout);
        let quotas = [Quota::per_second(100)
            .and_then(|q| q.burst(10))
            .expect("quota")];
        let key = Key::new("cooled");
        assert!(
            worker_b
                .acquire(&key, &quotas, 1)
                .await
                .expect("acquire")
                .is_allowed()
        );
        worker_a
            .drain(&key, &quotas, Instant::now() + Duration::from_secs(30))
            .await
            .expect("drain");
        let decision = worker_b.check(&key, &quotas, 1).await.expect("acquire");
        assert!(!decision.is_allowed() && decision.is_cooldown());
        // Less the time between the two scripts, which a loaded machine can stretch.
        assert!(decision.retry_after() > Duration::from_secs(20));
        assert!(decision.retry_after() <= Duration::from_secs(30));
    });
}

/// The units of `key`'s first GCRA quota taken so far, read from its TAT in Redis (for a
/// quota of one per hour, whose refill is negligible during a test).
async fn units_taken(server: &RedisServer, key: &str) -> u64 {
    let tat = server
        .command(format!("GET {{ratewise:{key}}}:gcra:0\r\n").as_bytes())
        .await
        .expect("GET");
    let tat: f64 = tat.lines().nth(1).unwrap_or("0").parse().expect("a TAT");
    let time = server.command(b"TIME\r\n").await.expect("TIME");
    let parts: Vec<f64> = time
        .lines()
        .filter(|line| !line.starts_with(['*', '$']))
        .map(|line| line.parse().expect("TIME parts"))
        .collect();
    let now = (parts[0] - 1_483_228_800.0) * 1e6 + parts[1];
    ((tat - now) / 3_600e6).round() as u64
}

/// Cancel safety: a dropped acquire takes its cost at most once (the script it sent may run
/// when Redis resumes; nothing sends it twice), and a dropped probe frees the probe slot so
/// the limiter still recovers.
#[test]
fn dropped_acquires_take_their_cost_at_most_once_and_free_the_probe() {
    let rt = runtime();
    rt.block_on(async {
        let Some(server) = RedisServer::start("dropped_acquires").await else {
            return;
        };
        let client = redis::Client::open(server.url()).expect("url");
        let limiter = RedisGcra::builder(RedisConnection::single(client).expect("connection"))
            .timeout(TIMEOUT)
            .probe_interval(Duration::from_millis(50))
            .build()
            .expect("settings");
        // One unit per hour, burst 100: every acquire passes and its unit shows in the TAT.
        let quotas = [Quota::per_hour(1)
            .and_then(|q| q.burst(100))
            .expect("quota")];
        let key = Key::new("dropped");
        let mut allowed_by_redis = 0;
        let warm_up = limiter.check(&key, &quotas, 1).await.expect("warm up");
        assert!(warm_up.is_allowed() && warm_up.source() == DecisionSource::Shared);
        allowed_by_redis += 1;

        // Dropped before it was ever polled: nothing is sent.
        drop(limiter.acquire(&key, &quotas, 1));
        assert_eq!(units_taken(&server, "dropped").await, 1);

        // Three scripts sent to a frozen Redis: a dropped acquire, the acquire that times out
        // and degrades the limiter, and a dropped probe. Nothing answers, so the clock is
        // paused: each timeout fires at its virtual instant, after the script was written.
        server.freeze();
        tokio::time::pause();
        let pending = limiter.acquire(&key, &quotas, 1);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), pending)
                .await
                .is_err()
        );
        let degraded = limiter.check(&key, &quotas, 1).await.expect("fallback");
        assert_eq!(degraded.source(), DecisionSource::FallbackLocal);
        sleep(Duration::from_millis(60)).await;
        let probe = limiter.check(&key, &quotas, 1);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), probe)
                .await
                .is_err()
        );
        tokio::time::resume();
        server.thaw();

        let deadline = Instant::now() + RECOVERY;
        loop {
            let decision = limiter.check(&key, &quotas, 1).await.expect("acquire");
            if decision.source() == DecisionSource::Shared {
                assert!(decision.is_allowed());
                allowed_by_redis += 1;
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the dropped probe kept the slot: no recovery"
            );
            sleep(Duration::from_millis(20)).await;
        }
        let abandoned = units_taken(&server, "dropped").await - allowed_by_redis;
        assert!(
            abandoned <= 3,
            "{abandoned} units for 3 abandoned scripts: one ran twice"
        );
    });
}
