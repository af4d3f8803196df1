//! The tower contract, auto traits and metrics of the breaker.

mod support;

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use ratewise_breaker::{
    CircuitBreaker, CircuitBreakerHandle, CircuitBreakerLayer, CircuitOpen, CircuitState, Key,
    future::ResponseFuture,
};
use ratewise_core::metric_names::{
    BREAKER_REJECTIONS_TOTAL, BREAKER_STATE, BREAKER_TRANSITIONS_TOTAL,
};
use tokio::time::advance;
use tokio_test::{assert_pending, assert_ready_ok};
use tower::Layer;
use tower_test::mock;

const HOST: &str = "api.example.com";

#[test]
fn traits() {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_clone<T: Clone>() {}
    type Svc = CircuitBreaker<
        tower::util::BoxCloneSyncService<http::Request<()>, http::Response<()>, std::io::Error>,
    >;
    assert_send_sync::<Svc>();
    assert_clone::<Svc>();
    assert_send_sync::<CircuitBreakerLayer>();
    assert_clone::<CircuitBreakerLayer>();
    assert_send_sync::<CircuitBreakerHandle>();
    assert_send_sync::<
        ResponseFuture<
            std::future::Ready<Result<http::Response<()>, std::io::Error>>,
            ratewise_breaker::DefaultClassifier,
        >,
    >();
}

#[tokio::test(start_paused = true)]
async fn poll_ready_never_refuses_and_refusals_skip_the_inner_service() {
    let layer = CircuitBreakerLayer::builder()
        .jitter(0.0)
        .consecutive_failures(Some(1))
        .build()
        .unwrap();
    let (mut service, mut server) =
        mock::spawn_layer::<http::Request<()>, http::Response<()>, _>(layer);

    // Backpressure of the inner service passes through.
    server.allow(0);
    assert_pending!(service.poll_ready());
    server.allow(1);
    assert_ready_ok!(service.poll_ready());
    let call = service.call(support::get(HOST));
    let (request, send_response) = server.next_request().await.unwrap();
    assert_eq!(request.uri().host(), Some(HOST));
    send_response.send_response(http::Response::builder().status(500).body(()).unwrap());
    call.await.unwrap();

    // Open now: poll_ready is still Ok (the readied inner is kept for the next call), and the
    // call fails fast without reaching the inner service.
    server.allow(1);
    assert_ready_ok!(service.poll_ready());
    let error = service.call(support::get(HOST)).await.unwrap_err();
    let open = error.downcast_ref::<CircuitOpen>().unwrap();
    assert_eq!(open.retry_after(), Duration::from_secs(30));
    assert_ready_ok!(service.poll_ready());
    assert!(server.poll_request().is_pending());

    // After the open duration, the probe uses that same readied inner.
    advance(Duration::from_secs(30)).await;
    let probe = service.call(support::get(HOST));
    let (_request, send_response) = server.next_request().await.unwrap();
    send_response.send_response(http::Response::builder().status(200).body(()).unwrap());
    assert_eq!(probe.await.unwrap().status(), 200);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_probe_before_it_is_polled_releases_its_slot() {
    let upstream = support::Upstream::new();
    let layer = CircuitBreakerLayer::builder().jitter(0.0).build().unwrap();
    let handle = layer.handle();
    let mut client = layer.layer(upstream.service());
    upstream.status(500);
    for _ in 0..10 {
        support::send(&client, HOST).await.unwrap();
    }
    advance(Duration::from_secs(30)).await;
    upstream.status(200);
    let never_polled = tower::Service::call(&mut client, support::get(HOST));
    assert!(
        support::send(&client, HOST).await.is_err(),
        "the slot is taken"
    );
    drop(never_polled);
    assert_eq!(support::send(&client, HOST).await.unwrap().status(), 200);
    assert_eq!(handle.state(&Key::new(HOST)), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn metrics_report_state_transitions_and_rejections() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let upstream = support::Upstream::new();
    let layer = CircuitBreakerLayer::builder().jitter(0.0).build().unwrap();
    let client = layer.layer(upstream.service());
    upstream.status(500);
    for _ in 0..10 {
        support::send(&client, HOST).await.unwrap();
    }
    for _ in 0..3 {
        assert!(support::send(&client, HOST).await.is_err());
    }
    let snapshot = snapshotter.snapshot().into_vec();
    let find = |name: &str, labels: &[(&str, &str)]| {
        snapshot
            .iter()
            .find(|(key, ..)| {
                let key = key.key();
                key.name() == name
                    && labels.iter().all(|(k, v)| {
                        key.labels()
                            .any(|label| label.key() == *k && label.value() == *v)
                    })
            })
            .map(|(.., value)| value)
    };
    assert_eq!(
        find(BREAKER_STATE, &[("key", HOST)]),
        Some(&DebugValue::Gauge(2.0.into()))
    );
    assert_eq!(
        find(
            BREAKER_TRANSITIONS_TOTAL,
            &[("key", HOST), ("from", "closed"), ("to", "open")]
        ),
        Some(&DebugValue::Counter(1))
    );
    assert_eq!(
        find(BREAKER_REJECTIONS_TOTAL, &[("key", HOST)]),
        Some(&DebugValue::Counter(3))
    );
}
