//! Per-request cost of the in-process MockApi, next to a bare `service_fn` that builds a
//! similar response (the floor any in-process mock pays).
#![allow(missing_docs)]

use std::convert::Infallible;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{Empty, Full};
use ratewise_testkit::{Dialect, EndpointConfig, MockApi, MockConfig, Quota};
use tower::ServiceExt;

fn request() -> Request<Empty<Bytes>> {
    Request::get("/repos/tokio-rs/tower")
        .body(Empty::new())
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("in_process_request");

    group.bench_function("service_fn_baseline", |b| {
        let service = tower::service_fn(|_req: Request<Empty<Bytes>>| async {
            let mut response = Response::new(Full::new(Bytes::from_static(b"{\"ok\": true}")));
            let date = httpdate::fmt_http_date(SystemTime::now());
            response
                .headers_mut()
                .insert(http::header::DATE, date.parse().unwrap());
            Ok::<_, Infallible>(response)
        });
        b.iter(|| runtime.block_on(service.oneshot(request())).unwrap());
    });

    let _guard = runtime.enter();
    let admitted = MockApi::new(
        MockConfig::new().log_capacity(10_000).endpoint(
            EndpointConfig::new("/repos")
                .quota(Quota::gcra(1_000_000_000, Duration::from_secs(1), 1_000))
                .dialect(Dialect::GitHub),
        ),
    );
    group.bench_function("mockapi_github_gcra_admitted", |b| {
        b.iter(|| {
            runtime
                .block_on(admitted.clone().oneshot(request()))
                .unwrap()
        });
    });

    let refused = MockApi::new(
        MockConfig::new().log_capacity(10_000).endpoint(
            EndpointConfig::new("/repos")
                .quota(Quota::sliding_log(5000, Duration::from_secs(3600)))
                .dialect(Dialect::Draft8),
        ),
    );
    for _ in 0..5000 {
        runtime
            .block_on(refused.clone().oneshot(request()))
            .unwrap();
    }
    group.bench_function("mockapi_draft8_sliding_log_5000_refused", |b| {
        b.iter(|| {
            runtime
                .block_on(refused.clone().oneshot(request()))
                .unwrap()
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
