//! The seed's three-endpoint GitHub scenario: 64 workers share `/repos` (5000/h, burst 50),
//! `/search` (30/min, burst 5) and `/graphql` (5000/h, burst 20) through `ratewise::stack()`
//! with the pace route table, against a MockApi that enforces the same limits in fixed windows,
//! as GitHub does, and speaks GitHub's headers. Two simulated hours on a paused clock.
//!
//! Checked: no request is refused (neither 429 nor 403), and the hottest endpoint uses at
//! least 98% of what its quota allows over the run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use ratewise::adapt::AdaptLayer;
use ratewise::pace::{PaceLayer, Quota, QuotaTable};
use ratewise::prelude::{ByHostAndRoute, ByRoute, RouteTable};
use ratewise_testkit::{Dialect, EndpointConfig, MockApi, MockConfig, Quota as ServerQuota};
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};

const HOUR: Duration = Duration::from_secs(3600);
const RUN: Duration = Duration::from_secs(2 * 3600);
const WORKERS: usize = 64;

/// GitHub's limits as GitHub enforces them: fixed windows (an hour for `core` and `graphql`, a
/// minute for `search`) reported in `x-ratelimit-*` headers with the epoch reset of the window,
/// each endpoint its own `x-ratelimit-resource`.
fn github_api() -> MockApi {
    let endpoint = |prefix: &str, limit: u64, period: Duration, resource: &str| {
        EndpointConfig::new(prefix)
            .quota(ServerQuota::fixed_window(limit, period))
            .dialect(Dialect::GitHub)
            .resource(resource)
            .latency(Duration::from_millis(40))
    };
    MockApi::new(
        MockConfig::new()
            .endpoint(endpoint("/repos", 5000, HOUR, "core"))
            .endpoint(endpoint("/search", 30, Duration::from_secs(60), "search"))
            // GitHub's resource name `graphql` means *points* to the header parser; adaptation
            // reserves one point per request in flight, a lower bound of every query's cost.
            .endpoint(endpoint("/graphql", 5000, HOUR, "graphql")),
    )
}

fn routes() -> RouteTable {
    RouteTable::builder()
        .route("/repos/{owner}/{repo}", "repos")
        .unwrap()
        .prefix("/search", "search")
        .unwrap()
        .route("/graphql", "graphql")
        .unwrap()
        .build()
}

fn quotas() -> QuotaTable {
    QuotaTable::new()
        .with("repos", Quota::per_hour(5000).unwrap().burst(50).unwrap())
        .with("search", Quota::per_minute(30).unwrap().burst(5).unwrap())
        .with("graphql", Quota::per_hour(5000).unwrap().burst(20).unwrap())
}

/// Worker `i`'s request: half the workers read repositories, a quarter search, a quarter
/// query GraphQL.
fn request(worker: usize, n: u64) -> Request<Full<Bytes>> {
    match worker % 4 {
        0 | 1 => Request::get(format!(
            "https://api.github.com/repos/rust-lang/repo{}",
            n % 16
        ))
        .body(Full::new(Bytes::new())),
        2 => Request::get(format!(
            "https://api.github.com/search/code?q=tower+{}",
            n % 7
        ))
        .body(Full::new(Bytes::new())),
        _ => Request::post("https://api.github.com/graphql")
            .header("idempotency-key", format!("w{worker}-{n}"))
            .body(Full::new(Bytes::from_static(
                b"{\"query\":\"{viewer{login}}\"}",
            ))),
    }
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn sixty_four_workers_use_the_quota_without_a_rejection() {
    let api = github_api();
    let routes = routes();
    let stack = ratewise::stack()
        .adapt(
            AdaptLayer::builder()
                .key_fn(ByHostAndRoute::new(routes.clone()))
                .build()
                .unwrap(),
        )
        .pace(PaceLayer::keyed(ByRoute(routes), quotas()))
        .attempt_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let client = ServiceBuilder::new().layer(stack).service(api.clone());

    let start = Instant::now();
    let ok = Arc::new(AtomicU64::new(0));
    let not_ok = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let client = client.clone();
        let (ok, not_ok) = (ok.clone(), not_ok.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0;
            while start.elapsed() < RUN {
                n += 1;
                let response = client.clone().oneshot(request(worker, n)).await.unwrap();
                if response.status() == StatusCode::OK {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    not_ok.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }

    let stats = api.stats();
    println!("server: {stats:?}");
    println!(
        "client: {} ok, {} not ok",
        ok.load(Ordering::Relaxed),
        not_ok.load(Ordering::Relaxed)
    );
    assert_eq!(api.count_status(StatusCode::TOO_MANY_REQUESTS), 0);
    assert_eq!(api.count_status(StatusCode::FORBIDDEN), 0);
    assert_eq!(stats.limited, 0);
    assert_eq!(not_ok.load(Ordering::Relaxed), 0);

    // Quota use: admitted requests per endpoint within the run, over what the server's windows
    // allow in that time (the run covers whole windows).
    let log = api.requests();
    let used = |endpoint: &str| {
        log.iter()
            .filter(|e| e.counted && e.endpoint.as_deref() == Some(endpoint))
            .filter(|e| e.since_start < RUN)
            .count() as f64
    };
    let allowed =
        |limit: f64, period: Duration| limit * (RUN.as_secs_f64() / period.as_secs_f64()).ceil();
    let repos = used("/repos") / allowed(5000.0, HOUR);
    let search = used("/search") / allowed(30.0, Duration::from_secs(60));
    let graphql = used("/graphql") / allowed(5000.0, HOUR);
    println!(
        "quota use: /repos {:.2}% ({} requests), /search {:.2}% ({}), /graphql {:.2}% ({})",
        repos * 100.0,
        used("/repos"),
        search * 100.0,
        used("/search"),
        graphql * 100.0,
        used("/graphql"),
    );
    assert!(
        repos >= 0.98,
        "/repos used {:.2}% of its quota",
        repos * 100.0
    );
    assert!(repos <= 1.0, "/repos over its quota: {repos}");
    // The other endpoints are saturated too.
    assert!(search >= 0.95, "/search used {:.2}%", search * 100.0);
    assert!(graphql >= 0.95, "/graphql used {:.2}%", graphql * 100.0);
}
