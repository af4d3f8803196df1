//! `ratewise::stack()` as a whole over MockApi (in process, paused clock).

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use ratewise::pace::{PaceLayer, Quota};
use ratewise::{StackError, TotalTimeoutElapsed};
use ratewise_testkit::{Dialect, EndpointConfig, MockApi, MockConfig, Quota as ServerQuota};
use tower::{ServiceBuilder, ServiceExt};

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://api.test{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_default_stack_paces_to_the_server_quota_without_429s() {
    let api = MockApi::new(
        MockConfig::new().endpoint(
            EndpointConfig::new("/items")
                // Draft-8 speaks whole seconds: a server that allowed no burst would say
                // "r=0, t=1" after every request, and adaptation would rightly believe it.
                .quota(ServerQuota::gcra(10, Duration::from_secs(1), 10))
                .dialect(Dialect::Draft8),
        ),
    );
    let stack = ratewise::stack()
        .pace(PaceLayer::new(Quota::per_second(10).unwrap()))
        .total_timeout(Duration::from_secs(120))
        .attempt_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let client = ServiceBuilder::new().layer(stack).service(api.clone());

    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..25 {
                let response = client.clone().oneshot(get("/items/1")).await.unwrap();
                statuses.push(response.status());
            }
            statuses
        }));
    }
    let mut ok = 0;
    for task in tasks {
        ok += task
            .await
            .unwrap()
            .iter()
            .filter(|s| **s == StatusCode::OK)
            .count();
    }
    assert_eq!(ok, 400);
    assert_eq!(api.count_status(StatusCode::TOO_MANY_REQUESTS), 0);
    // 400 requests at 10/s: 39.9 s of virtual time, give or take the first slot.
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(39_900), "{elapsed:?}");
    assert!(elapsed <= Duration::from_secs(41), "{elapsed:?}");
}

#[tokio::test(start_paused = true)]
async fn the_total_deadline_bounds_a_logical_request() {
    let api = MockApi::new(
        MockConfig::new().endpoint(EndpointConfig::new("/slow").latency(Duration::from_secs(20))),
    );
    let stack = ratewise::stack()
        .total_timeout(Duration::from_secs(3))
        .attempt_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let client = ServiceBuilder::new().layer(stack).service(api.clone());
    let start = tokio::time::Instant::now();
    let err = client.oneshot(get("/slow")).await.unwrap_err();
    // The attempt times out at 2 s; the retry would start after the 3 s deadline... or is cut
    // by it: either way the caller hears back by the deadline.
    assert!(
        start.elapsed() <= Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(
        err.is::<TotalTimeoutElapsed>() || err.is::<ratewise::AttemptTimeoutElapsed>(),
        "{err}"
    );
}

#[test]
fn invalid_timeouts_are_rejected_at_build() {
    let err = ratewise::stack()
        .attempt_timeout(Duration::from_secs(10))
        .total_timeout(Duration::from_secs(5))
        .build()
        .unwrap_err();
    assert!(matches!(err, StackError::AttemptLongerThanTotal { .. }));
    let err = ratewise::stack()
        .total_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err, StackError::ZeroTimeout("total_timeout"));
}

/// Regression: the total deadline sat above the metrics layer, so a request it cut short was
/// dropped inside metrics and never counted: timeouts were invisible in the request counter.
#[cfg(feature = "metrics")]
#[tokio::test(start_paused = true)]
async fn metrics_count_a_request_cut_by_the_total_deadline() {
    use ratewise::core::metric_names::REQUESTS_TOTAL;

    let recorder = counting::CountingRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let api = MockApi::new(
        MockConfig::new().endpoint(EndpointConfig::new("/slow").latency(Duration::from_secs(20))),
    );
    let stack = ratewise::stack()
        .total_timeout(Duration::from_secs(3))
        .no_attempt_timeout()
        .build()
        .unwrap();
    let client = ServiceBuilder::new().layer(stack).service(api);
    let err = client.oneshot(get("/slow")).await.unwrap_err();
    assert!(err.is::<TotalTimeoutElapsed>(), "{err}");
    assert_eq!(
        recorder.counter(
            REQUESTS_TOTAL,
            &[("key", "api.test"), ("status_class", "error")]
        ),
        1
    );
}

/// A recorder that keeps every counter, for the assertions above (metrics-util is not a
/// dev-dependency of the facade).
#[cfg(feature = "metrics")]
mod counting {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use metrics::{
        Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };

    #[derive(Default)]
    pub(crate) struct CountingRecorder {
        counters: Mutex<Vec<(Key, Arc<AtomicU64>)>>,
    }

    impl CountingRecorder {
        /// The sum of the counters named `name` that carry every label of `labels`.
        pub(crate) fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
            self.counters
                .lock()
                .unwrap()
                .iter()
                .filter(|(key, _)| key.name() == name)
                .filter(|(key, _)| {
                    labels.iter().all(|(k, v)| {
                        key.labels()
                            .any(|label| label.key() == *k && label.value() == *v)
                    })
                })
                .map(|(_, value)| value.load(Ordering::Relaxed))
                .sum()
        }
    }

    impl Recorder for CountingRecorder {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let value = Arc::new(AtomicU64::new(0));
            self.counters
                .lock()
                .unwrap()
                .push((key.clone(), Arc::clone(&value)));
            Counter::from_arc(value)
        }

        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }

        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }
}
