//! An axum server whose handlers call an upstream API through the ratewise stack.
//!
//! ```text
//! cargo run --example axum_proxy --features full                # upstream: a local MockApi
//! cargo run --example axum_proxy --features full -- --serve     # keep serving until Ctrl-C
//! ```
//!
//! The upstream is a MockApi on loopback with GitHub-like limits; the proxy listens on
//! `127.0.0.1` (an ephemeral port). Without `--serve`, the example sends a few requests to its
//! own proxy, prints what happened and exits.

#[path = "axum_proxy/app.rs"]
mod app;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ratewise::BoxError;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let serve_forever = std::env::args().any(|arg| arg == "--serve");

    let upstream_api = app::upstream_api();
    let upstream = upstream_api.serve().await?;
    let state = app::upstream(&upstream.base_url(), Duration::from_millis(500))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!("upstream (MockApi): {}", upstream.base_url());
    println!("proxy:              http://{addr}  (GET /repos/{{owner}}/{{repo}}, GET /search?q=)");
    let server = tokio::spawn(async move { axum::serve(listener, app::app(state)).await });

    if serve_forever {
        tokio::signal::ctrl_c().await?;
        server.abort();
        return Ok(());
    }

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let paths = [
        "/repos/tokio-rs/axum",
        "/repos/tokio-rs/axum",
        "/repos/tower-rs/tower",
        "/search?q=ratelimit",
        "/search?q=ratelimit",
        "/search?q=ratelimit",
        "/search?q=ratelimit",
        "/search?q=ratelimit",
    ];
    for path in paths {
        let request = http::Request::get(format!("http://{addr}{path}")).body(Empty::new())?;
        let response = client.request(request).await?;
        let status = response.status();
        let cache = response
            .headers()
            .get("x-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(|v| format!(" retry-after={v}"))
            .unwrap_or_default();
        let body = response.into_body().collect().await?.to_bytes();
        println!(
            "GET {path:<24} -> {status} cache={cache}{retry_after} ({} bytes)",
            body.len()
        );
    }
    let stats = upstream_api.stats();
    println!(
        "upstream saw {} requests, {} refused by its quotas",
        stats.total, stats.limited
    );
    server.abort();
    upstream.shutdown().await;
    Ok(())
}
