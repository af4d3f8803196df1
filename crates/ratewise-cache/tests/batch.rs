//! Behaviour of `BatchLayer` (virtual time).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ratewise_cache::{Batch, BatchConfig, BatchLayer, SharedError};
use ratewise_core::BoxError;
use tokio::time::{Instant, sleep};
use tower::{Layer, ServiceExt, service_fn};

type Calls = Arc<Mutex<Vec<(Duration, Vec<String>)>>>;

/// An upstream "GET /api/users?ids=..." that records each batch (time since start, keys),
/// answers every id except "ghost", and fails any batch containing "bad".
fn users_api(
    calls: Calls,
    start: Instant,
    latency: Duration,
) -> impl tower::Service<Vec<String>, Response = HashMap<String, String>, Error = BoxError, Future: Send>
+ Clone
+ Send
+ 'static {
    service_fn(move |ids: Vec<String>| {
        let calls = calls.clone();
        async move {
            calls.lock().unwrap().push((start.elapsed(), ids.clone()));
            sleep(latency).await;
            if ids.iter().any(|id| id == "bad") {
                return Err::<HashMap<String, String>, BoxError>("upstream 500".into());
            }
            Ok(ids
                .into_iter()
                .filter(|id| id != "ghost")
                .map(|id| (id.clone(), format!("user {id}")))
                .collect())
        }
    })
}

fn batch_of<S>(inner: S) -> Batch<S, String, String> {
    BatchLayer::new().layer(inner)
}

#[tokio::test(start_paused = true)]
async fn thousand_concurrent_lookups_make_ten_batches_of_a_hundred() {
    let calls = Calls::default();
    let users = batch_of(users_api(
        calls.clone(),
        Instant::now(),
        Duration::from_millis(20),
    ));
    let handles: Vec<_> = (0..1000)
        .map(|i| tokio::spawn(users.clone().oneshot(format!("u{i}"))))
        .collect();
    for (i, handle) in handles.into_iter().enumerate() {
        assert_eq!(handle.await.unwrap().unwrap(), Some(format!("user u{i}")));
    }
    let calls = calls.lock().unwrap();
    assert_eq!(calls.len(), 10);
    assert!(calls.iter().all(|(_, ids)| ids.len() == 100));
    // Full batches go at once, without waiting for max_delay.
    assert!(calls.iter().all(|(at, _)| *at == Duration::ZERO));
}

#[tokio::test(start_paused = true)]
async fn lookups_spread_over_time_respect_max_delay() {
    let calls = Calls::default();
    let start = Instant::now();
    let users = batch_of(users_api(calls.clone(), start, Duration::ZERO));
    let lookup = |id: &str, after_ms: u64| {
        let users = users.clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            sleep(Duration::from_millis(after_ms)).await;
            let asked = Instant::now();
            let item = users.oneshot(id).await.unwrap();
            (item, asked.elapsed())
        })
    };
    let handles = [
        lookup("a", 0),
        lookup("b", 3),
        lookup("c", 6),
        lookup("d", 9),
        lookup("e", 20),
    ];
    for handle in handles {
        let (item, waited) = handle.await.unwrap();
        assert!(item.is_some());
        assert!(waited <= Duration::from_millis(5), "waited {waited:?}");
    }
    let calls = calls.lock().unwrap();
    let expected = [
        (Duration::from_millis(5), vec!["a", "b"]),
        (Duration::from_millis(11), vec!["c", "d"]),
        (Duration::from_millis(25), vec!["e"]),
    ];
    assert_eq!(calls.len(), expected.len(), "{calls:?}");
    for ((at, ids), (want_at, want_ids)) in calls.iter().zip(expected) {
        assert_eq!(*at, want_at);
        assert_eq!(ids, &want_ids);
    }
}

#[tokio::test(start_paused = true)]
async fn an_upstream_error_reaches_exactly_the_callers_of_that_batch() {
    let calls = Calls::default();
    let users = batch_of(users_api(
        calls.clone(),
        Instant::now(),
        Duration::from_millis(1),
    ));
    let first: Vec<_> = ["a", "bad", "a"]
        .iter()
        .map(|id| tokio::spawn(users.clone().oneshot(id.to_string())))
        .collect();
    sleep(Duration::from_millis(7)).await; // the first window (5 ms) is gone
    let second: Vec<_> = ["b", "c"]
        .iter()
        .map(|id| tokio::spawn(users.clone().oneshot(id.to_string())))
        .collect();
    for handle in first {
        let err = handle.await.unwrap().unwrap_err();
        assert!(err.downcast_ref::<SharedError>().is_some());
        assert_eq!(err.to_string(), "upstream 500");
    }
    for handle in second {
        assert!(handle.await.unwrap().unwrap().is_some());
    }
    assert_eq!(calls.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn duplicates_are_fetched_once_and_missing_keys_are_none() {
    let calls = Calls::default();
    let users = batch_of(users_api(calls.clone(), Instant::now(), Duration::ZERO));
    let ids = ["a", "a", "ghost", "b", "a"];
    let handles: Vec<_> = ids
        .iter()
        .map(|id| tokio::spawn(users.clone().oneshot(id.to_string())))
        .collect();
    let mut answers = Vec::new();
    for handle in handles {
        answers.push(handle.await.unwrap().unwrap());
    }
    assert_eq!(answers[0].as_deref(), Some("user a"));
    assert_eq!(answers[1].as_deref(), Some("user a"));
    assert_eq!(answers[2], None);
    assert_eq!(answers[3].as_deref(), Some("user b"));
    assert_eq!(answers[4].as_deref(), Some("user a"));
    assert_eq!(calls.lock().unwrap()[0].1, vec!["a", "ghost", "b"]);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_caller_does_not_break_the_batch() {
    let calls = Calls::default();
    let users = batch_of(users_api(
        calls.clone(),
        Instant::now(),
        Duration::from_millis(2),
    ));
    let kept = tokio::spawn(users.clone().oneshot("a".to_string()));
    let dropped = tokio::spawn(users.clone().oneshot("leaver".to_string()));
    let dropped_during_flight = tokio::spawn(users.clone().oneshot("b".to_string()));
    tokio::task::yield_now().await;
    dropped.abort();
    sleep(Duration::from_millis(6)).await; // batch sent at 5 ms, answered at 7 ms
    dropped_during_flight.abort();
    assert_eq!(kept.await.unwrap().unwrap().as_deref(), Some("user a"));
    // The key whose only caller left before sending was not requested.
    assert_eq!(calls.lock().unwrap()[0].1, vec!["a", "b"]);
}

#[tokio::test(start_paused = true)]
async fn a_lone_caller_gets_the_upstream_error_itself() {
    let users = batch_of(users_api(Calls::default(), Instant::now(), Duration::ZERO));
    let err = users.oneshot("bad".to_string()).await.unwrap_err();
    assert!(err.downcast_ref::<SharedError>().is_none());
    assert_eq!(err.to_string(), "upstream 500");
}

#[tokio::test(start_paused = true)]
async fn custom_size_and_delay() {
    let calls = Calls::default();
    let layer = BatchLayer::with_config(
        BatchConfig::new()
            .max_size(2)
            .max_delay(Duration::from_millis(50)),
    )
    .unwrap();
    let users: Batch<_, String, String> =
        layer.layer(users_api(calls.clone(), Instant::now(), Duration::ZERO));
    let handles: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|id| tokio::spawn(users.clone().oneshot(id.to_string())))
        .collect();
    for handle in handles {
        handle.await.unwrap().unwrap();
    }
    let calls = calls.lock().unwrap();
    assert_eq!(
        calls[0],
        (Duration::ZERO, vec!["a".to_string(), "b".to_string()])
    );
    assert_eq!(calls[1], (Duration::from_millis(50), vec!["c".to_string()]));
    assert!(BatchLayer::<String, String>::with_config(BatchConfig::new().max_size(0)).is_err());
}

#[test]
fn traits() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<BatchLayer<String, String>>();
    assert_send_sync::<
        Batch<
            tower::util::ServiceFn<
                fn(Vec<String>) -> std::future::Ready<Result<HashMap<String, u8>, BoxError>>,
            >,
            String,
            u8,
        >,
    >();
    fn assert_send<T: Send>() {}
    assert_send::<ratewise_cache::batch::future::ResponseFuture<u8>>();
}
