//! Minimal demo: a GitHub-like MockApi on loopback and a naive hyper-util client.
//!
//! Run with `cargo run --release --example demo`. It starts the mock on 127.0.0.1 (ephemeral
//! port), sends a few dozen requests without any ratewise layer, and prints what came back:
//! the naive client runs straight into the limits. The full demo (naive client versus the
//! ratewise stack, side by side) comes with the demo issue.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ratewise_testkit::{Dialect, EndpointConfig, MockApi, MockConfig, Quota};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // GitHub's shape (core and search resources, epoch resets, 403 on search), scaled down so
    // a few dozen requests reach the limits.
    let api = MockApi::new(
        MockConfig::new()
            .endpoint(
                EndpointConfig::new("/repos")
                    .quota(Quota::fixed_window(20, Duration::from_secs(3600)).name("core"))
                    .dialect(Dialect::GitHub),
            )
            .endpoint(
                EndpointConfig::new("/search")
                    .quota(Quota::fixed_window(8, Duration::from_secs(60)).name("search"))
                    .dialect(Dialect::GitHub)
                    .limited_status(StatusCode::FORBIDDEN),
            )
            .endpoint(
                EndpointConfig::new("/user")
                    .quota(Quota::gcra(10, Duration::from_secs(1), 4).name("user"))
                    .dialect(Dialect::GitHub),
            ),
    );
    let server = api.serve().await?;
    println!("MockApi listening on {}", server.base_url());

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let paths = ["/repos/tokio-rs/tokio", "/search/code?q=tower", "/user"];
    let mut rows: BTreeMap<&str, Row> = BTreeMap::new();
    for i in 0..48 {
        let path = paths[i % paths.len()];
        let request = Request::get(format!("{}{path}", server.base_url())).body(Empty::new())?;
        let response = client.request(request).await?;
        let row = rows.entry(path).or_default();
        *row.statuses.entry(response.status().as_u16()).or_default() += 1;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned()
        };
        row.remaining = header("x-ratelimit-remaining");
        row.limit = header("x-ratelimit-limit");
        row.resource = header("x-ratelimit-resource");
        response.into_body().collect().await?;
    }

    println!();
    println!(
        "{:<24} {:<9} {:>5} {:>5} {:>5} {:>10}",
        "path", "resource", "2xx", "403", "429", "remaining"
    );
    for (path, row) in &rows {
        let count = |status: u16| row.statuses.get(&status).copied().unwrap_or(0);
        println!(
            "{:<24} {:<9} {:>5} {:>5} {:>5} {:>6} / {}",
            path,
            row.resource,
            count(200),
            count(403),
            count(429),
            row.remaining,
            row.limit
        );
    }
    let stats = api.stats();
    println!();
    println!(
        "sent {}, limited {} (a naive client ignores the headers); the mock logged {} requests",
        stats.total,
        stats.limited,
        api.count()
    );
    server.shutdown().await;
    Ok(())
}

#[derive(Default)]
struct Row {
    statuses: BTreeMap<u16, usize>,
    remaining: String,
    limit: String,
    resource: String,
}
