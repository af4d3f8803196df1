//! The layer's metrics, through a local debugging recorder.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use ratewise_adapt::{AdaptLayer, AdaptWaitTooLong};
use ratewise_core::metric_names;
use ratewise_testkit::{EndpointConfig, MockApi, MockConfig, Quota};
use tower::{Layer, ServiceExt};

fn get() -> Request<Empty<Bytes>> {
    Request::get("http://api.test/items")
        .body(Empty::new())
        .unwrap()
}

#[test]
fn cooldowns_waits_refusals_and_the_learned_rate_are_recorded() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            // No rate-limit headers, one request per 10 s window, Retry-After on 429.
            let api = MockApi::new(
                MockConfig::new().endpoint(
                    EndpointConfig::new("/items")
                        .quota(Quota::fixed_window(1, Duration::from_secs(10))),
                ),
            );
            let service = AdaptLayer::new().layer(api.clone());
            assert_eq!(
                service.clone().oneshot(get()).await.unwrap().status(),
                StatusCode::OK
            );
            let refused = service.clone().oneshot(get()).await.unwrap();
            assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
            // The cooldown holds the next request until the window ends.
            assert_eq!(
                service.clone().oneshot(get()).await.unwrap().status(),
                StatusCode::OK
            );
            assert_eq!(api.count_status(StatusCode::TOO_MANY_REQUESTS), 1);

            // A layer that accepts no wait that long refuses instead.
            let impatient = AdaptLayer::builder()
                .max_wait(Duration::from_secs(1))
                .build()
                .unwrap()
                .layer(api.clone());
            let _ = impatient.clone().oneshot(get()).await.unwrap();
            let error = impatient.clone().oneshot(get()).await.unwrap_err();
            assert!(error.is::<AdaptWaitTooLong>());
        });
    });
    let mut seen = std::collections::HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let name = key.key().name().to_owned();
        let labels: Vec<String> = key
            .key()
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        println!("{name} {labels:?} {value:?}");
        seen.insert(name, value);
    }
    assert!(
        matches!(seen.get(metric_names::ADAPT_COOLDOWNS_TOTAL), Some(DebugValue::Counter(n)) if *n >= 2)
    );
    assert!(matches!(
        seen.get(metric_names::ADAPT_REFUSED_TOTAL),
        Some(DebugValue::Counter(1))
    ));
    assert!(
        matches!(seen.get(metric_names::ADAPT_WAIT_SECONDS), Some(DebugValue::Histogram(values)) if !values.is_empty())
    );
    assert!(matches!(
        seen.get(metric_names::ADAPT_LEARNED_RATE),
        Some(DebugValue::Gauge(_))
    ));
}
