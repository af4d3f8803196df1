//! Script-level tests against a private `redis-server`, replaying chosen arrival times through
//! the scripts' time override (production always uses Redis `TIME`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use ratewise_core::Key;

use crate::connection::RedisConnection;
use crate::limiter::{Algorithm, Engine, Settings};
use ratewise_pace::{LocalLimiter, Quota};

#[path = "../tests/support/mod.rs"]
mod support;

/// A rebased "now" in microseconds (late 2026), as the scripts compute from `TIME`.
const BASE_US: u64 = 310_000_000_000_000;

static NEXT_KEY: AtomicU64 = AtomicU64::new(0);

fn unique_key() -> Key {
    Key::new(format!("k{}", NEXT_KEY.fetch_add(1, Ordering::Relaxed)))
}

fn engine(
    rt: &tokio::runtime::Runtime,
    algorithm: Algorithm,
    server: &support::RedisServer,
) -> Engine {
    let _runtime = rt.enter();
    let client = redis::Client::open(server.url()).expect("url");
    let connection = RedisConnection::single(client).expect("connection");
    let settings = Settings {
        // Generous: these tests check decisions, not the failure policy.
        timeout: Duration::from_secs(2),
        ..Settings::default()
    };
    Engine::new(algorithm, connection, settings).expect("engine")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// `burst` per `burst · interval_us` µs: an emission interval of whole microseconds, so the
/// script's doubles and the pace crate's integer nanoseconds are both exact.
fn gcra_quota(interval_us: u64, burst: u32) -> Quota {
    Quota::new(1, Duration::from_micros(interval_us))
        .and_then(|quota| quota.burst(burst))
        .expect("valid quota")
}

fn quotas_strategy() -> impl Strategy<Value = Vec<Quota>> {
    prop::collection::vec((1u64..=200_000, 1u32..=8), 1..=3).prop_map(|specs| {
        specs
            .into_iter()
            .map(|(interval_us, burst)| gcra_quota(interval_us, burst))
            .collect()
    })
}

fn arrivals_strategy() -> impl Strategy<Value = Vec<(u64, u32)>> {
    // (gap since the previous arrival in µs, cost)
    prop::collection::vec((0u64..=150_000, 0u32..=3), 1..=40)
}

/// For the same arrivals (a replayed clock on both sides), the Redis script and the pace
/// crate's `LocalLimiter` admit and deny the same requests, with the same `retry_after`.
#[test]
fn gcra_script_agrees_with_the_local_gcra_for_the_same_arrivals() {
    let rt = runtime();
    let Some(server) = rt.block_on(support::RedisServer::start("gcra_script_agrees")) else {
        return;
    };
    let engine = engine(&rt, Algorithm::Gcra, &server);
    // The local limiter runs on a paused clock that the test advances by the same gaps.
    let paused = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("paused runtime");
    let local = LocalLimiter::new();
    let config = ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(quotas in quotas_strategy(), arrivals in arrivals_strategy())| {
        let key = unique_key();
        let min_burst = quotas.iter().map(Quota::burst_size).min().unwrap_or(1);
        let mut now_us = BASE_US;
        for (gap, cost) in arrivals {
            now_us += gap;
            let cost = cost.min(min_burst);
            let remote = rt
                .block_on(engine.call(&key, &quotas, cost, Some(now_us as f64)))
                .map_err(|error| TestCaseError::fail(error.to_string()))?;
            let here = paused.block_on(async {
                tokio::time::advance(Duration::from_micros(gap)).await;
                local.check(&key, &quotas, cost)
            }).map_err(|error| TestCaseError::fail(error.to_string()))?;
            prop_assert_eq!(remote.into_decision(), here, "at +{} µs, cost {}", now_us - BASE_US, cost);
        }
    });
}

fn window_quota(limit: u32, period_us: u64) -> Quota {
    Quota::new(limit, Duration::from_micros(period_us)).expect("valid quota")
}

#[test]
fn sliding_log_is_exact_at_window_boundaries() {
    let rt = runtime();
    let Some(server) = rt.block_on(support::RedisServer::start("sliding_log_is_exact")) else {
        return;
    };
    let engine = engine(&rt, Algorithm::SlidingWindow, &server);
    let key = unique_key();
    let quotas = [window_quota(3, 1_000_000)];
    let at = |offset_us: u64, cost: u32| {
        rt.block_on(engine.call(&key, &quotas, cost, Some((BASE_US + offset_us) as f64)))
            .map_err(|error| error.to_string())
            .expect("script call")
    };
    // Three requests in the same microsecond are three entries (unique members), not one.
    for _ in 0..3 {
        assert!(at(0, 1).is_allowed());
    }
    let denied = at(0, 1);
    assert!(!denied.is_allowed());
    assert_eq!(denied.retry_after(), Duration::from_secs(1));
    // One microsecond before the window has passed, they all still count.
    let denied = at(999_999, 1);
    assert!(!denied.is_allowed());
    assert_eq!(denied.retry_after(), Duration::from_micros(1));
    // At exactly t + period they stop counting: the window is (now - period, now].
    assert!(at(1_000_000, 1).is_allowed());
    assert!(at(1_200_000, 1).is_allowed());
    // One slot left: a cost of 2 waits until the entry of 1.0 s leaves, and writes nothing.
    let denied = at(1_500_000, 2);
    assert!(!denied.is_allowed());
    assert_eq!(denied.retry_after(), Duration::from_millis(500));
    assert!(at(1_500_000, 1).is_allowed());
    assert!(!at(1_999_999, 1).is_allowed());
    let allowed = at(2_000_000, 1);
    assert!(allowed.is_allowed());
    assert_eq!(allowed.remaining(), 0);
    // Memory is bounded by the limit however many requests are denied.
    for offset in 0..50 {
        let _ = at(2_000_000 + offset, 1);
    }
    let zcard = rt
        .block_on(server.command(format!("ZCARD {{ratewise:{key}}}:log:0\r\n").as_bytes()))
        .expect("ZCARD");
    assert_eq!(zcard.trim(), ":3");
}

/// A token budget's cost runs to tens of thousands of units: the script must add them all
/// (Lua's `unpack` alone fails beyond about 8000 values, which would degrade the limiter).
#[test]
fn sliding_log_admits_a_cost_of_tens_of_thousands_of_units() {
    let rt = runtime();
    let Some(server) = rt.block_on(support::RedisServer::start("sliding_log_large_cost")) else {
        return;
    };
    let engine = engine(&rt, Algorithm::SlidingWindow, &server);
    let key = unique_key();
    // OpenAI-like: 30 000 tokens per minute.
    let quotas = [window_quota(30_000, 60_000_000)];
    let at = |offset_us: u64, cost: u32| {
        rt.block_on(engine.call(&key, &quotas, cost, Some((BASE_US + offset_us) as f64)))
            .map_err(|error| error.to_string())
            .expect("a large cost is a decision, not a script error")
    };
    let allowed = at(0, 20_000);
    assert!(allowed.is_allowed());
    assert_eq!(allowed.remaining(), 10_000);
    let denied = at(1, 10_001);
    assert!(!denied.is_allowed());
    assert_eq!(
        denied.retry_after(),
        Duration::from_secs(60) - Duration::from_micros(1)
    );
    assert!(at(2, 10_000).is_allowed());
    let zcard = rt
        .block_on(server.command(format!("ZCARD {{ratewise:{key}}}:log:0\r\n").as_bytes()))
        .expect("ZCARD");
    assert_eq!(zcard.trim(), ":30000", "one member per unit");
}

#[test]
fn sliding_log_chained_windows_are_all_or_nothing() {
    let rt = runtime();
    let Some(server) = rt.block_on(support::RedisServer::start("sliding_log_chained")) else {
        return;
    };
    let engine = engine(&rt, Algorithm::SlidingWindow, &server);
    let key = unique_key();
    // 2 per 100 ms and 3 per second.
    let quotas = [window_quota(2, 100_000), window_quota(3, 1_000_000)];
    let at = |offset_us: u64| {
        rt.block_on(engine.call(&key, &quotas, 1, Some((BASE_US + offset_us) as f64)))
            .map_err(|error| error.to_string())
            .expect("script call")
    };
    assert!(at(0).is_allowed());
    assert!(at(0).is_allowed());
    let denied = at(50_000);
    assert_eq!(denied.retry_after(), Duration::from_millis(50));
    assert!(at(100_000).is_allowed());
    // The short window has room again, the long one does not: nothing is written anywhere.
    let denied = at(150_000);
    assert!(!denied.is_allowed());
    assert_eq!(denied.retry_after(), Duration::from_millis(850));
    let zcard = rt
        .block_on(server.command(format!("ZCARD {{ratewise:{key}}}:log:0\r\n").as_bytes()))
        .expect("ZCARD");
    assert_eq!(
        zcard.trim(),
        ":1",
        "the denied request left no entry in the short window"
    );
    assert!(at(1_000_000).is_allowed());
}

#[test]
fn drain_denies_until_its_end_then_refills_at_the_rate() {
    let rt = runtime();
    let Some(server) = rt.block_on(support::RedisServer::start("drain")) else {
        return;
    };
    let engine = engine(&rt, Algorithm::Gcra, &server);
    let key = unique_key();
    // 10 per second (T = 100 ms), burst 5.
    let quotas = [gcra_quota(100_000, 5)];
    let at = |offset_us: u64| {
        rt.block_on(engine.call(&key, &quotas, 1, Some((BASE_US + offset_us) as f64)))
            .map_err(|error| error.to_string())
            .expect("script call")
    };
    assert!(at(0).is_allowed());
    rt.block_on(engine.drain(&key, &quotas, Duration::from_secs(2), Some(BASE_US as f64)))
        .expect("drain");
    let denied = at(1_000_000);
    assert!(denied.is_cooldown());
    assert_eq!(denied.retry_after(), Duration::from_secs(1));
    // A shorter drain never shortens the running one.
    rt.block_on(engine.drain(
        &key,
        &quotas,
        Duration::from_millis(10),
        Some(BASE_US as f64),
    ))
    .expect("drain");
    assert!(!at(1_999_999).is_allowed());
    // At its end exactly one unit, then one per 100 ms: no burst after a cooldown.
    assert!(at(2_000_000).is_allowed());
    let denied = at(2_000_000);
    assert!(!denied.is_allowed() && !denied.is_cooldown());
    assert_eq!(denied.retry_after(), Duration::from_millis(100));
    assert!(at(2_100_000).is_allowed());
}

#[test]
fn noscript_after_script_flush_mid_run_reloads_and_keeps_the_state() {
    let rt = runtime();
    let Some(server) = rt.block_on(support::RedisServer::start("noscript")) else {
        return;
    };
    let engine = engine(&rt, Algorithm::Gcra, &server);
    let key = unique_key();
    // 10 per second, burst 10: at one instant exactly 10 pass, flush or not.
    let quotas = [gcra_quota(100_000, 10)];
    let mut allowed = 0;
    for i in 0..20 {
        if i == 5 || i == 12 {
            let reply = rt
                .block_on(server.command(b"SCRIPT FLUSH\r\n"))
                .expect("flush");
            assert!(reply.starts_with("+OK"), "{reply}");
        }
        let decision = rt
            .block_on(engine.call(&key, &quotas, 1, Some(BASE_US as f64)))
            .map_err(|error| error.to_string())
            .expect("no error after SCRIPT FLUSH");
        allowed += usize::from(decision.is_allowed());
    }
    assert_eq!(allowed, 10);
    assert_eq!(
        engine.connection().script_reloads(),
        3,
        "first use and two flushes"
    );
    assert!(!engine.is_degraded());
}

/// The sliding-window rule, as a log per window in integer microseconds.
#[derive(Debug, Default)]
struct ModelLog {
    logs: Vec<std::collections::VecDeque<u64>>,
}

impl ModelLog {
    fn acquire(&mut self, now: u64, windows: &[(u32, u64)], cost: u32) -> Result<(), u64> {
        self.logs.resize(windows.len(), Default::default());
        let mut wait = 0;
        for (&(limit, period), log) in windows.iter().zip(&mut self.logs) {
            while log.front().is_some_and(|&t| t + period <= now) {
                log.pop_front();
            }
            let count = log.len() as u32;
            if count + cost > limit {
                let leaving = log[(count + cost - limit - 1) as usize];
                wait = wait.max(leaving + period - now);
            }
        }
        if wait > 0 {
            return Err(wait);
        }
        for log in &mut self.logs {
            log.extend(std::iter::repeat_n(now, cost as usize));
        }
        Ok(())
    }
}

/// The sliding-log script against the model for random arrivals and chained windows.
#[test]
fn sliding_log_script_matches_the_model_for_the_same_arrivals() {
    let rt = runtime();
    let Some(server) = rt.block_on(support::RedisServer::start("sliding_log_matches")) else {
        return;
    };
    let engine = engine(&rt, Algorithm::SlidingWindow, &server);
    let config = ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let windows_strategy = prop::collection::vec((1u32..=6, 1u64..=500_000), 1..=3);
    proptest!(config, |(windows in windows_strategy, arrivals in arrivals_strategy())| {
        let key = unique_key();
        let quotas: Vec<Quota> = windows
            .iter()
            .map(|&(limit, period)| window_quota(limit, period))
            .collect();
        let min_limit = windows.iter().map(|w| w.0).min().unwrap_or(1);
        let mut model = ModelLog::default();
        let mut now_us = BASE_US;
        for (gap, cost) in arrivals {
            now_us += gap;
            let cost = cost.min(min_limit);
            let remote = rt
                .block_on(engine.call(&key, &quotas, cost, Some(now_us as f64)))
                .map_err(|error| TestCaseError::fail(error.to_string()))?;
            match model.acquire(now_us, &windows, cost) {
                Ok(()) => prop_assert!(remote.is_allowed(), "model allows at {now_us}"),
                Err(wait) => {
                    prop_assert!(!remote.is_allowed(), "model denies at {now_us}");
                    prop_assert_eq!(remote.retry_after(), Duration::from_micros(wait));
                }
            }
        }
    });
}

#[test]
fn traits() {
    fn assert_send_sync_clone<T: Send + Sync + Clone + 'static>() {}
    fn assert_send<T: Send + 'static>() {}
    assert_send_sync_clone::<crate::RedisGcra>();
    assert_send_sync_clone::<crate::RedisSlidingWindow>();
    assert_send_sync_clone::<RedisConnection>();
    assert_send::<crate::future::AcquireFuture>();
    assert_send::<crate::future::DrainFuture>();
}

#[test]
fn replies_from_redis_never_panic_and_waits_are_clamped() {
    use crate::limiter::{micros_to_duration, parse_decision};
    use redis::Value;

    assert_eq!(micros_to_duration(f64::NAN), Duration::ZERO);
    assert_eq!(micros_to_duration(-5.0), Duration::ZERO);
    assert_eq!(
        micros_to_duration(0.0001),
        Duration::from_nanos(1),
        "rounded up, never early"
    );
    assert_eq!(micros_to_duration(1.5), Duration::from_nanos(1_500));
    assert_eq!(
        micros_to_duration(f64::INFINITY),
        Duration::ZERO,
        "not a number of microseconds"
    );
    assert_eq!(
        micros_to_duration(1e30),
        Duration::from_secs(365 * 24 * 3600)
    );

    let bulk = |text: &str| Value::BulkString(text.as_bytes().to_vec());
    for garbage in [
        Value::Nil,
        Value::Int(1),
        Value::Array(vec![Value::Int(1)]),
        Value::Array(vec![
            Value::Int(0),
            bulk("soon"),
            Value::Int(0),
            bulk("quota"),
        ]),
    ] {
        assert!(parse_decision(garbage).is_err());
    }
    let decision = parse_decision(Value::Array(vec![
        Value::Int(0),
        bulk("2500.25"),
        Value::Int(-3),
        bulk("cooldown"),
    ]))
    .map_err(|error| error.to_string())
    .expect("a well-formed reply");
    assert!(!decision.is_allowed() && decision.is_cooldown());
    assert_eq!(decision.retry_after(), Duration::from_nanos(2_500_250));
    assert_eq!(decision.remaining(), 0, "a negative count is clamped");
}
