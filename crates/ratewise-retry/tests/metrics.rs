//! The retry layer's metrics, recorded through the `metrics` facade (one test per binary
//! because it installs the global recorder).

mod support;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{Full, StreamBody};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use ratewise_core::Deadline;
use ratewise_core::metric_names::{
    RETRIES_TOTAL, RETRY_ATTEMPTS_TOTAL, RETRY_BUDGET_EXHAUSTED_TOTAL, RETRY_GIVEN_UP_TOTAL,
};
use ratewise_retry::{ReplayBody, RetryBudget, RetryLayer};
use support::{Upstream, get};
use tower::{Layer, ServiceExt};

/// Adds the counter increments since the last snapshot (snapshots take and reset them) to
/// `totals`, keyed by `name{label=value,...}`, and returns the running totals.
fn counters(snapshotter: &Snapshotter, totals: &mut HashMap<String, u64>) -> HashMap<String, u64> {
    let deltas: Vec<(String, u64)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| {
            let DebugValue::Counter(value) = value else {
                return None;
            };
            let key = key.key();
            let mut labels: Vec<String> = key
                .labels()
                .map(|label| format!("{}={}", label.key(), label.value()))
                .collect();
            labels.sort();
            Some((format!("{}{{{}}}", key.name(), labels.join(",")), value))
        })
        .collect();
    for (key, delta) in deltas {
        *totals.entry(key).or_default() += delta;
    }
    totals.clone()
}

#[tokio::test(start_paused = true)]
async fn retries_give_ups_and_budget_exhaustion_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::set_global_recorder(recorder).unwrap();
    let mut totals = HashMap::new();

    let always_503 = Upstream::always(StatusCode::SERVICE_UNAVAILABLE, &[("retry-after", "1")]);
    let client = RetryLayer::builder()
        .seed(5)
        .build()
        .unwrap()
        .layer(always_503.clone());

    // A POST without a key: sent once, counted as not idempotent.
    let post = Request::post("https://api.example.com/x")
        .body(Full::new(Bytes::new()))
        .unwrap();
    client.clone().oneshot(post).await.unwrap();
    let seen = counters(&snapshotter, &mut totals);
    assert_eq!(
        seen[&format!("{RETRY_GIVEN_UP_TOTAL}{{reason=not_idempotent}}")],
        1
    );

    // A GET: three attempts, two retries on the server's delay, then out of attempts.
    client
        .clone()
        .oneshot(get("https://api.example.com/x"))
        .await
        .unwrap();
    let seen = counters(&snapshotter, &mut totals);
    assert_eq!(
        seen[&format!("{RETRIES_TOTAL}{{delay_source=retry_after,reason=status}}")],
        2
    );
    assert_eq!(
        seen[&format!("{RETRY_GIVEN_UP_TOTAL}{{reason=attempts}}")],
        1
    );
    assert_eq!(seen[&format!("{RETRY_ATTEMPTS_TOTAL}{{}}")], 4);
    assert_eq!(always_503.count() as u64, 4);

    // The deadline and max_wait stop a retry before it sleeps.
    let mut request = get("https://api.example.com/x");
    request
        .extensions_mut()
        .insert(Deadline::after(Duration::from_millis(500)));
    client.clone().oneshot(request).await.unwrap();
    let far = Upstream::always(StatusCode::TOO_MANY_REQUESTS, &[("retry-after", "600")]);
    RetryLayer::new()
        .layer(far)
        .oneshot(get("https://api.example.com/x"))
        .await
        .unwrap();
    let seen = counters(&snapshotter, &mut totals);
    assert_eq!(
        seen[&format!("{RETRY_GIVEN_UP_TOTAL}{{reason=deadline}}")],
        1
    );
    assert_eq!(
        seen[&format!("{RETRY_GIVEN_UP_TOTAL}{{reason=wait_too_long}}")],
        1
    );

    // A body over its replay cap is sent once.
    let chunks: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> =
        vec![Ok(http_body::Frame::data(Bytes::from(vec![0u8; 100])))];
    let body = ReplayBody::new(StreamBody::new(futures_util::stream::iter(chunks)), 10);
    let request = Request::put("https://api.example.com/x")
        .body(body)
        .unwrap();
    RetryLayer::new()
        .layer(Upstream::always(StatusCode::BAD_GATEWAY, &[]))
        .oneshot(request)
        .await
        .unwrap();
    let seen = counters(&snapshotter, &mut totals);
    assert_eq!(
        seen[&format!("{RETRY_GIVEN_UP_TOTAL}{{reason=body_not_replayable}}")],
        1
    );

    // A token quota with room for one retry: the second request finds it spent.
    let client = RetryLayer::builder()
        .max_attempts(2)
        .budget(RetryBudget::token_quota(5, 5, 1).unwrap())
        .build()
        .unwrap()
        .layer(Upstream::always(StatusCode::INTERNAL_SERVER_ERROR, &[]));
    client
        .clone()
        .oneshot(get("https://api.example.com/x"))
        .await
        .unwrap();
    client
        .oneshot(get("https://api.example.com/x"))
        .await
        .unwrap();
    let seen = counters(&snapshotter, &mut totals);
    assert_eq!(seen[&format!("{RETRY_BUDGET_EXHAUSTED_TOTAL}{{}}")], 1);
    assert_eq!(
        seen[&format!("{RETRIES_TOTAL}{{delay_source=backoff,reason=status}}")],
        1
    );
}
