//! N worker processes share one quota through Redis.
//!
//! ```text
//! cargo run --example distributed_workers --features full
//! cargo run --example distributed_workers --features full -- --workers 6 --seconds 8
//! ```
//!
//! The parent starts a MockApi on loopback that enforces 20 requests per second (burst 5, plus
//! one request of slack for network jitter),
//! then runs this same binary `--workers` times as child processes. Each child paces its
//! requests with `PaceLayer` over `ratewise_redis::RedisGcra` (one Lua script per acquire, on
//! Redis' clock), so together they send at the shared rate and the server refuses nothing,
//! however many processes there are. The parent prints each worker's counts and the total.
//!
//! Needs Redis on `127.0.0.1:6379`; without one the example says so and exits cleanly.

use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ratewise::BoxError;
use ratewise::pace::{PaceLayer, Quota};
use ratewise::redis::{FailurePolicy, RedisConnection, RedisGcra};
use ratewise_testkit::{EndpointConfig, MockApi, MockConfig, Quota as ServerQuota};
use serde::{Deserialize, Serialize};
use tower::{ServiceBuilder, ServiceExt};

const REDIS_ADDR: &str = "127.0.0.1:6379";
/// The shared quota, on the server and in every worker.
const RATE_PER_SECOND: u32 = 20;
const BURST: u32 = 5;
/// Concurrent tasks in each worker process.
const TASKS_PER_WORKER: usize = 8;

#[derive(Debug, Serialize, Deserialize)]
struct WorkerReport {
    worker: usize,
    sent: u64,
    ok: u64,
    limited: u64,
    other: u64,
}

struct Args {
    workers: usize,
    seconds: u64,
    /// Set in child processes: `(index, base_url, redis key prefix)`.
    child: Option<(usize, String, String)>,
}

fn args() -> Result<Args, BoxError> {
    let mut parsed = Args {
        workers: 4,
        seconds: 8,
        child: None,
    };
    let (mut index, mut base_url, mut prefix) = (None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--workers" => parsed.workers = value()?.parse()?,
            "--seconds" => parsed.seconds = value()?.parse()?,
            "--worker" => index = Some(value()?.parse()?),
            "--base-url" => base_url = Some(value()?),
            "--prefix" => prefix = Some(value()?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if !(1..=32).contains(&parsed.workers) || !(1..=60).contains(&parsed.seconds) {
        return Err("--workers must be 1..=32 and --seconds 1..=60".into());
    }
    if let (Some(index), Some(base_url), Some(prefix)) = (index, base_url, prefix) {
        parsed.child = Some((index, base_url, prefix));
    }
    Ok(parsed)
}

/// Whether a Redis answers `PING` on 127.0.0.1:6379 within half a second.
async fn redis_answers() -> bool {
    let probe = || {
        use std::io::{Read, Write};
        let timeout = Duration::from_millis(500);
        let mut stream =
            std::net::TcpStream::connect_timeout(&REDIS_ADDR.parse().ok()?, timeout).ok()?;
        stream.set_read_timeout(Some(timeout)).ok()?;
        stream.write_all(b"PING\r\n").ok()?;
        let mut reply = [0u8; 5];
        stream.read_exact(&mut reply).ok()?;
        Some(&reply == b"+PONG")
    };
    matches!(tokio::task::spawn_blocking(probe).await, Ok(Some(true)))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args = args()?;
    match args.child.take() {
        Some((index, base_url, prefix)) => worker(index, &base_url, &prefix, args).await,
        None => parent(args).await,
    }
}

async fn parent(args: Args) -> Result<(), BoxError> {
    if !redis_answers().await {
        println!(
            "no Redis answered on {REDIS_ADDR}: start one (e.g. `redis-server`) to run this example; skipping"
        );
        return Ok(());
    }
    let api = MockApi::new(
        MockConfig::new().endpoint(EndpointConfig::new("/items").quota(ServerQuota::gcra(
            u64::from(RATE_PER_SECOND),
            Duration::from_secs(1),
            // One request of slack over the workers' burst: a slot is taken on Redis' clock and
            // the request reaches the server a little later, with some jitter.
            u64::from(BURST),
        ))),
    );
    let server = api.serve().await?;
    // A fresh key prefix per run, so the buckets of an earlier run do not count.
    let prefix = format!(
        "ratewise-example-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
    );
    println!(
        "{} workers x {TASKS_PER_WORKER} tasks share {RATE_PER_SECOND} req/s (burst {BURST}) through Redis for {} s against {}",
        args.workers,
        args.seconds,
        server.base_url()
    );

    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for index in 0..args.workers {
        let child = Command::new(&exe)
            .args(["--worker", &index.to_string()])
            .args(["--workers", &args.workers.to_string()])
            .args(["--seconds", &args.seconds.to_string()])
            .args(["--base-url", &server.base_url()])
            .args(["--prefix", &prefix])
            .stdout(Stdio::piped())
            .spawn()?;
        children.push(child);
    }
    // Waiting blocks a thread per child; the server keeps running on the runtime.
    let outputs = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|child| child.wait_with_output())
            .collect::<Result<Vec<_>, _>>()
    })
    .await??;

    let mut total = WorkerReport {
        worker: 0,
        sent: 0,
        ok: 0,
        limited: 0,
        other: 0,
    };
    println!(
        "{:>6} {:>6} {:>6} {:>8} {:>6}",
        "worker", "sent", "2xx", "429", "other"
    );
    for output in outputs {
        if !output.status.success() {
            return Err(format!("a worker failed: {}", output.status).into());
        }
        let line = String::from_utf8(output.stdout)?;
        let report: WorkerReport = serde_json::from_str(line.trim())?;
        println!(
            "{:>6} {:>6} {:>6} {:>8} {:>6}",
            report.worker, report.sent, report.ok, report.limited, report.other
        );
        total.sent += report.sent;
        total.ok += report.ok;
        total.limited += report.limited;
        total.other += report.other;
    }
    println!(
        "{:>6} {:>6} {:>6} {:>8} {:>6}",
        "total", total.sent, total.ok, total.limited, total.other
    );
    let allowed = u64::from(BURST) + u64::from(RATE_PER_SECOND) * args.seconds;
    println!(
        "the quota allowed about {allowed} in {} s; the server refused {} and saw at most {} in any 1 s window",
        args.seconds,
        api.count_limited(),
        api.max_in_window("/items", Duration::from_secs(1))
    );
    server.shutdown().await;
    Ok(())
}

async fn worker(index: usize, base_url: &str, prefix: &str, args: Args) -> Result<(), BoxError> {
    let client = redis::Client::open(format!("redis://{REDIS_ADDR}/"))?;
    let limiter = RedisGcra::builder(RedisConnection::single(client)?)
        .prefix(prefix)
        .failure_policy(FailurePolicy::FallbackLocal {
            expected_workers: u32::try_from(args.workers)?,
        })
        .build()?;
    let quota = Quota::per_second(RATE_PER_SECOND)?.burst(BURST)?;
    let service = ServiceBuilder::new()
        .layer(PaceLayer::new(quota).limiter(limiter))
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());

    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.seconds);
    let url = format!("{base_url}/items/{index}");
    let mut tasks = Vec::new();
    for _ in 0..TASKS_PER_WORKER {
        let service = service.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut report = WorkerReport {
                worker: index,
                sent: 0,
                ok: 0,
                limited: 0,
                other: 0,
            };
            loop {
                let request = Request::get(url.as_str()).body(Full::new(Bytes::new()))?;
                // The wait for a shared slot ends at the deadline: what is still waiting then
                // is not sent.
                let Ok(result) =
                    tokio::time::timeout_at(deadline, service.clone().oneshot(request)).await
                else {
                    break;
                };
                report.sent += 1;
                match result.map(|response| response.status()) {
                    Ok(status) if status.is_success() => report.ok += 1,
                    Ok(StatusCode::TOO_MANY_REQUESTS) => report.limited += 1,
                    _ => report.other += 1,
                }
            }
            Ok::<_, BoxError>(report)
        }));
    }
    let mut total = WorkerReport {
        worker: index,
        sent: 0,
        ok: 0,
        limited: 0,
        other: 0,
    };
    for task in tasks {
        let report = task.await??;
        total.sent += report.sent;
        total.ok += report.ok;
        total.limited += report.limited;
        total.other += report.other;
    }
    println!("{}", serde_json::to_string(&total)?);
    Ok(())
}
