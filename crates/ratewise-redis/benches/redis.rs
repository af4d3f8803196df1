//! Acquires per second and Redis round trips per acquire, against the Redis on 127.0.0.1:6379
//! (skipped with a message when it is not running): `RedisGcra` and `RedisSlidingWindow` next to
//! the seed's sorted-set pipeline (`ZREMRANGEBYSCORE; ZCARD; ZADD; EXPIRE` in MULTI/EXEC, plus a
//! `ZREM` when denied), all three on the same quota, one key, from one connection: once under
//! the quota (most acquires pass) and once over it (most are denied: the throttled case).
//!
//! `cargo bench -p ratewise-redis --bench redis -- --warm-up-time 1 --measurement-time 3`

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, Throughput};
use ratewise_core::Key;
use ratewise_pace::Quota;
use ratewise_redis::{DecisionSource, RedisConnection, RedisGcra, RedisSlidingWindow};

const URL: &str = "redis://127.0.0.1:6379/";
/// Under the quota: 20 000 per second, more than one connection can ask for.
const UNDER: u32 = 20_000;
/// Over the quota: 100 per second, so nearly every acquire is denied.
const OVER: u32 = 100;

static SEED_ROUND_TRIPS: AtomicU64 = AtomicU64::new(0);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn redis_available(rt: &tokio::runtime::Runtime) -> bool {
    rt.block_on(async {
        let Ok(client) = redis::Client::open(URL) else {
            return false;
        };
        let connect = client.get_multiplexed_async_connection();
        match tokio::time::timeout(Duration::from_secs(1), connect).await {
            Ok(Ok(mut connection)) => redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
                .is_ok(),
            _ => false,
        }
    })
}

/// The seed's limiter: the decision in the client, the client's clock, timestamp members.
async fn seed_acquire(
    connection: &mut redis::aio::MultiplexedConnection,
    key: &str,
    limit: u32,
) -> bool {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|now| now.as_millis() as u64)
        .unwrap_or(0);
    let member = now_ms.to_string();
    SEED_ROUND_TRIPS.fetch_add(1, Ordering::Relaxed);
    let (_, count, _, _): (i64, u64, i64, i64) = redis::pipe()
        .atomic()
        .cmd("ZREMRANGEBYSCORE")
        .arg(key)
        .arg(0)
        .arg(now_ms.saturating_sub(1_000))
        .cmd("ZCARD")
        .arg(key)
        .cmd("ZADD")
        .arg(key)
        .arg(now_ms)
        .arg(&member)
        .cmd("EXPIRE")
        .arg(key)
        .arg(1)
        .query_async(connection)
        .await
        .expect("seed pipeline");
    if count < u64::from(limit) {
        return true;
    }
    SEED_ROUND_TRIPS.fetch_add(1, Ordering::Relaxed);
    let _: i64 = redis::cmd("ZREM")
        .arg(key)
        .arg(&member)
        .query_async(connection)
        .await
        .expect("seed ZREM");
    false
}

fn main() {
    let rt = runtime();
    if !redis_available(&rt) {
        eprintln!("SKIPPED redis benches: no Redis answers PING at {URL}");
        return;
    }
    let mut criterion = Criterion::default().configure_from_args();
    let connect = || {
        let _runtime = rt.enter();
        RedisConnection::single(redis::Client::open(URL).expect("url")).expect("connection")
    };
    // Generous timeouts: measure Redis, not the fallback.
    let gcra = RedisGcra::builder(connect())
        .prefix("bench")
        .timeout(Duration::from_secs(1))
        .build()
        .expect("limiter");
    let window = RedisSlidingWindow::builder(connect())
        .prefix("bench")
        .timeout(Duration::from_secs(1))
        .build()
        .expect("limiter");
    let seed = rt
        .block_on(
            redis::Client::open(URL)
                .expect("url")
                .get_multiplexed_async_connection(),
        )
        .expect("seed connection");

    for (case, limit) in [("under_quota", UNDER), ("over_quota", OVER)] {
        let quota = [Quota::per_second(limit)
            .and_then(|quota| quota.burst(limit))
            .expect("quota")];
        let key = Key::new(case);
        let seed_key = format!("bench-seed-{case}");

        let mut group = criterion.benchmark_group(format!("redis_acquire_{case}"));
        group.throughput(Throughput::Elements(1));
        group.bench_function("redis_gcra", |b| {
            b.to_async(&rt).iter(|| async {
                let decision = gcra.check(&key, &quota, 1).await.expect("acquire");
                assert_eq!(decision.source(), DecisionSource::Shared);
            });
        });
        group.bench_function("redis_sliding_window", |b| {
            b.to_async(&rt).iter(|| async {
                let decision = window.check(&key, &quota, 1).await.expect("acquire");
                assert_eq!(decision.source(), DecisionSource::Shared);
            });
        });
        group.bench_function("seed_zset_pipeline", |b| {
            b.to_async(&rt).iter(|| {
                let mut seed = seed.clone();
                let seed_key = seed_key.clone();
                async move { seed_acquire(&mut seed, &seed_key, limit).await }
            });
        });
        group.finish();

        // Round trips per acquire over the same number of back-to-back acquires.
        const N: u64 = 5_000;
        let (trips, allowed) = rt.block_on(async {
            let mut trips = [0u64; 3];
            let mut allowed = [0u64; 3];
            let before = gcra.connection().round_trips();
            for _ in 0..N {
                let decision = gcra.check(&key, &quota, 1).await.expect("acquire");
                allowed[0] += u64::from(decision.is_allowed());
            }
            trips[0] = gcra.connection().round_trips() - before;
            let before = window.connection().round_trips();
            for _ in 0..N {
                let decision = window.check(&key, &quota, 1).await.expect("acquire");
                allowed[1] += u64::from(decision.is_allowed());
            }
            trips[1] = window.connection().round_trips() - before;
            let before = SEED_ROUND_TRIPS.load(Ordering::Relaxed);
            let mut seed = seed.clone();
            for _ in 0..N {
                allowed[2] += u64::from(seed_acquire(&mut seed, &seed_key, limit).await);
            }
            trips[2] = SEED_ROUND_TRIPS.load(Ordering::Relaxed) - before;
            (trips, allowed)
        });
        println!("{case} ({limit}/s): round trips per acquire, share allowed, over {N} acquires");
        for (index, name) in ["redis_gcra", "redis_sliding_window", "seed_zset_pipeline"]
            .iter()
            .enumerate()
        {
            println!(
                "  {name:<22} {:.3}  {:>5.1}%",
                trips[index] as f64 / N as f64,
                100.0 * allowed[index] as f64 / N as f64
            );
        }
    }
    criterion.final_summary();
}
