//! A GitHub REST client built on the ratewise stack.
//!
//! ```text
//! cargo run --example github_client --features full
//! cargo run --example github_client --features full -- --base-url http://127.0.0.1:8080 --token TOKEN
//! ```
//!
//! - **Route table** with GitHub's documented limits: `core` (`/repos/...`, `/users/...`) 5000
//!   requests per hour with a burst of 50, `search` 30 per minute with a burst of 5.
//! - **Conditional requests through the cache**: GitHub answers every read with an `ETag`; the
//!   cache stores it and revalidates with `If-None-Match`, and a `304 Not Modified` does not
//!   count against the quota (the caller still gets the full `200`).
//! - **The server's word**: the adaptation layer reads `x-ratelimit-*` (and the
//!   `x-ratelimit-resource` bucket), and a 403/429 with `Retry-After` cools the key down.
//!
//! By default it starts a MockApi on loopback that answers like GitHub and sends nothing
//! anywhere else. `--base-url` (plain `http://`: this example uses hyper-util's HTTP connector;
//! for `https://api.github.com` plug a TLS connector such as `hyper-rustls` into the client)
//! and `--token` point it at a real server.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ratewise::BoxError;
use ratewise::adapt::AdaptLayer;
use ratewise::cache::{CacheLayer, CacheStatus};
use ratewise::pace::{PaceLayer, Quota, QuotaTable};
use ratewise::prelude::{ByHostAndRoute, ByRoute, RouteTable};
use ratewise_testkit::{CacheHeaders, Dialect, EndpointConfig, MockApi, MockConfig};
use tower::{ServiceBuilder, ServiceExt};

const USER_AGENT: &str = "ratewise-github-client-example";

/// GitHub's REST buckets: which paths count against which quota.
fn github_routes() -> Result<RouteTable, BoxError> {
    Ok(RouteTable::builder()
        .prefix("/search", "search")?
        .route("/graphql", "graphql")?
        .default_bucket("core")
        .build())
}

/// GitHub's documented primary limits for an authenticated user.
fn github_quotas() -> Result<QuotaTable, BoxError> {
    Ok(QuotaTable::new()
        .with("core", Quota::per_hour(5000)?.burst(50)?)
        .with("search", Quota::per_minute(30)?.burst(5)?)
        .with("graphql", Quota::per_hour(5000)?.burst(20)?))
}

/// A MockApi that answers like GitHub: hourly and per-minute fixed windows, GitHub's headers
/// (403 when a window is spent), ETags everywhere.
fn mock_github() -> MockApi {
    use ratewise_testkit::Quota as ServerQuota;
    MockApi::new(
        MockConfig::new()
            .endpoint(
                EndpointConfig::new("/repos")
                    .quota(ServerQuota::fixed_window(5000, Duration::from_secs(3600)).name("core"))
                    .dialect(Dialect::GitHub)
                    .limited_status(http::StatusCode::FORBIDDEN)
                    .cache(CacheHeaders::new().private(true))
                    .latency(Duration::from_millis(15)),
            )
            .endpoint(
                EndpointConfig::new("/search")
                    .quota(ServerQuota::fixed_window(30, Duration::from_secs(60)).name("search"))
                    .dialect(Dialect::GitHub)
                    .limited_status(http::StatusCode::FORBIDDEN)
                    .latency(Duration::from_millis(40)),
            ),
    )
}

struct Options {
    base_url: Option<String>,
    token: Option<String>,
}

fn options() -> Result<Options, BoxError> {
    let mut options = Options {
        base_url: None,
        token: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--base-url" => options.base_url = Some(args.next().ok_or("--base-url needs a URL")?),
            "--token" => options.token = Some(args.next().ok_or("--token needs a value")?),
            "-h" | "--help" => {
                println!("usage: github_client [--base-url http://HOST:PORT --token TOKEN]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if let Some(base) = &options.base_url
        && !base.starts_with("http://")
    {
        return Err(
            "this example speaks plain http:// only (add a TLS connector for https)".into(),
        );
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let options = options()?;
    let mut mock = None;
    let base_url = match &options.base_url {
        Some(base) => base.trim_end_matches('/').to_owned(),
        None => {
            let api = mock_github();
            let server = api.serve().await?;
            println!(
                "no --base-url: talking to a MockApi that answers like GitHub at {}",
                server.base_url()
            );
            let base = server.base_url();
            mock = Some((api, server));
            base
        }
    };

    let routes = github_routes()?;
    let stack = ratewise::stack()
        .cache(CacheLayer::new())
        .adapt(
            AdaptLayer::builder()
                .key_fn(ByHostAndRoute::new(routes.clone()))
                .build()?,
        )
        .pace(PaceLayer::keyed(ByRoute(routes), github_quotas()?).max_wait(Duration::from_secs(30)))
        .total_timeout(Duration::from_secs(60))
        .attempt_timeout(Duration::from_secs(15))
        .build()?;
    let github = ServiceBuilder::new()
        .layer(stack)
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());

    let authorization = options
        .token
        .as_deref()
        .map(|token| HeaderValue::from_str(&format!("Bearer {token}")))
        .transpose()?;
    let get = |path: &str| -> Result<Request<Full<Bytes>>, BoxError> {
        let mut request = Request::get(format!("{base_url}{path}"))
            .header(header::USER_AGENT, USER_AGENT)
            .header(header::ACCEPT, "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .body(Full::new(Bytes::new()))?;
        if let Some(value) = &authorization {
            request
                .headers_mut()
                .insert(header::AUTHORIZATION, value.clone());
        }
        Ok(request)
    };

    let repos = [
        "tokio-rs/tokio",
        "tokio-rs/axum",
        "tower-rs/tower",
        "hyperium/hyper",
    ];
    let searches = [
        "tower layer",
        "rate limit",
        "retry after",
        "circuit breaker",
        "etag",
        "gcra",
    ];
    for round in 1..=2 {
        println!("-- round {round}: repositories");
        for repo in repos {
            let response = github
                .clone()
                .oneshot(get(&format!("/repos/{repo}"))?)
                .await?;
            let cache = response.extensions().get::<CacheStatus>().copied();
            let remaining = response
                .headers()
                .get("x-ratelimit-remaining")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("?")
                .to_owned();
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            println!(
                "GET /repos/{repo:<16} {status} cache={cache:?} remaining={remaining} ({} bytes)",
                body.len()
            );
        }
    }
    println!("-- searches (30/min, burst 5: the sixth waits for its slot)");
    let started = tokio::time::Instant::now();
    for query in searches {
        let q = query.replace(' ', "+");
        let response = github
            .clone()
            .oneshot(get(&format!("/search/repositories?q={q}"))?)
            .await?;
        println!(
            "GET /search/repositories?q={q:<16} {} after {:>5.1} s",
            response.status(),
            started.elapsed().as_secs_f64()
        );
    }

    if let Some((api, server)) = mock {
        let stats = api.stats();
        println!(
            "MockApi saw {} requests: {} counted against the quota, {} answered 304 (free), {} refused",
            stats.total, stats.counted, stats.not_modified, stats.limited
        );
        server.shutdown().await;
    }
    Ok(())
}
