//! Every ratewise metric in Prometheus text format.
//!
//! ```text
//! cargo run --example metrics_prometheus --features full
//! cargo run --example metrics_prometheus --features full -- --serve 127.0.0.1:9898
//! ```
//!
//! Installs `metrics-exporter-prometheus`' recorder, runs a short workload through the whole
//! stack (metrics, retry, breaker, adaptation, pacing and the cache) against an in-process
//! MockApi with faults and a tight quota, then prints the rendered metrics once. With
//! `--serve ADDR` (loopback only) it then serves them at `http://ADDR/metrics` until Ctrl-C.
//!
//! The `key` label comes from the route table (`items`, `search`), never from raw URLs. In
//! `ratewise::stack()` the metrics layer sits below the cache, so `ratewise_requests_total`
//! counts the requests the cache passed on; `ratewise_cache_requests_total` counts the rest.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use metrics_exporter_prometheus::PrometheusBuilder;
use ratewise::BoxError;
use ratewise::adapt::AdaptLayer;
use ratewise::cache::CacheLayer;
use ratewise::metrics::MetricsLayer;
use ratewise::pace::{PaceLayer, Quota, QuotaTable};
use ratewise::prelude::{ByHostAndRoute, ByRoute, RouteTable};
use ratewise::retry::{Backoff, RetryLayer};
use ratewise_testkit::{
    CacheHeaders, Dialect, EndpointConfig, Faults, MockApi, MockConfig, Quota as ServerQuota,
};
use tower::{ServiceBuilder, ServiceExt};

fn serve_address() -> Result<Option<SocketAddr>, BoxError> {
    let mut args = std::env::args().skip(1);
    let mut addr = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--serve" => {
                let value: SocketAddr = args.next().ok_or("--serve needs ADDR")?.parse()?;
                if !value.ip().is_loopback() {
                    return Err("--serve only binds loopback addresses".into());
                }
                addr = Some(value);
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(addr)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let serve = serve_address()?;
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)?;

    let api = MockApi::new(
        MockConfig::new()
            .endpoint(
                EndpointConfig::new("/items")
                    .quota(ServerQuota::gcra(50, Duration::from_secs(1), 4))
                    .dialect(Dialect::Draft8)
                    .cache(CacheHeaders::new().max_age(Duration::from_secs(60)))
                    .faults(
                        Faults::new()
                            .error_rate(0.1, StatusCode::SERVICE_UNAVAILABLE)
                            .seed(5),
                    ),
            )
            // GitHub headers; the client paces at the same rate.
            .endpoint(
                EndpointConfig::new("/search")
                    .quota(ServerQuota::gcra(10, Duration::from_secs(1), 4))
                    .dialect(Dialect::GitHub),
            ),
    );
    let routes = RouteTable::builder()
        .prefix("/items", "items")?
        .prefix("/search", "search")?
        .build();
    let stack = ratewise::stack()
        .cache(CacheLayer::new())
        .metrics(MetricsLayer::with_key_fn(ByRoute(routes.clone())))
        .retry(
            RetryLayer::builder()
                .backoff(Backoff::new().base(Duration::from_millis(10)))
                .build()?,
        )
        .adapt(
            AdaptLayer::builder()
                .key_fn(ByHostAndRoute::new(routes.clone()))
                .build()?,
        )
        .pace(
            PaceLayer::keyed(
                ByRoute(routes),
                QuotaTable::new()
                    .with("items", Quota::per_second(50)?.burst(5)?)
                    .with("search", Quota::per_second(10)?.burst(5)?),
            )
            .max_wait(Duration::from_secs(5)),
        )
        .attempt_timeout(Duration::from_secs(5))
        .build()?;
    let client = ServiceBuilder::new().layer(stack).service(api.clone());

    let mut tasks = Vec::new();
    for worker in 0..8u64 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..15u64 {
                let path = if worker % 2 == 0 {
                    format!("/items/{}", (worker * 31 + n) % 20)
                } else {
                    format!("/search?q={n}")
                };
                let request = Request::get(format!("http://api.local{path}"))
                    .body(Full::new(Bytes::new()))
                    .map_err(BoxError::from)?;
                let _ = client.clone().oneshot(request).await;
            }
            Ok::<_, BoxError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let stats = api.stats();
    println!(
        "# workload done: the server saw {} requests ({} refused, {} faults)",
        stats.total, stats.limited, stats.faults
    );
    println!("{}", handle.render());

    if let Some(addr) = serve {
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let handle = handle.clone();
                async move { handle.render() }
            }),
        );
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("# serving http://{addr}/metrics until Ctrl-C");
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
    }
    Ok(())
}
