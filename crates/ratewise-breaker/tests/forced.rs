//! Forced states against the key cap: a circuit forced by a handle must stay forced even when
//! the per-key map evicts its key to make room.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ratewise_breaker::{
    CircuitBreaker, CircuitBreakerHandle, CircuitBreakerLayer, CircuitState, Key,
};
use support::{Upstream, refusal, send};
use tower::{Layer, ServiceExt};

const CAP: usize = 4;
const FORCED: &str = "forced.example.com";

fn key(host: &str) -> Key {
    Key::new(host)
}

fn other(i: usize) -> String {
    format!("other{i}.example.com")
}

/// Starts one call to each of `CAP + 3` other hosts and leaves them all in flight: each
/// holds its key's state, so the cap must evict held keys, least recently used first. The
/// forced key, forced before any of them, is the least recently used.
async fn fill_past_the_cap(
    upstream: &Upstream,
    client: &Client,
) -> Vec<tokio::task::JoinHandle<()>> {
    upstream.hang();
    let mut calls = Vec::new();
    for i in 0..CAP + 3 {
        let client = client.clone();
        calls.push(tokio::spawn(async move {
            client.oneshot(support::get(&other(i))).await.unwrap();
        }));
        // Each insert at the cap sees the previous ones in flight.
        tokio::time::advance(Duration::from_millis(10)).await;
        tokio::task::yield_now().await;
    }
    assert_eq!(upstream.in_flight(), CAP + 3);
    calls
}

async fn finish(upstream: &Upstream, calls: Vec<tokio::task::JoinHandle<()>>) {
    upstream.release();
    for call in calls {
        call.await.unwrap();
    }
}

type Client = CircuitBreaker<
    tower::util::BoxCloneSyncService<http::Request<()>, http::Response<()>, std::io::Error>,
>;

/// An upstream and a breaker over it holding at most `CAP` keys.
fn capped() -> (Upstream, CircuitBreakerHandle, Client) {
    let upstream = Upstream::new();
    let layer = CircuitBreakerLayer::builder()
        .max_keys(CAP)
        .build()
        .unwrap();
    (
        upstream.clone(),
        layer.handle(),
        layer.layer(upstream.service()),
    )
}

/// Fills the map past its cap with calls in flight, so the forced key is evicted, then lets
/// the calls finish.
async fn evict_forced(upstream: &Upstream, client: &Client) {
    let calls = fill_past_the_cap(upstream, client).await;
    finish(upstream, calls).await;
}

#[tokio::test(start_paused = true)]
async fn forced_open_survives_key_cap_eviction() {
    let (upstream, handle, client) = capped();

    handle.force_open(&key(FORCED));
    let calls = fill_past_the_cap(&upstream, &client).await;
    let states = handle.states();
    let held = states.iter().filter(|(k, _)| *k != key(FORCED)).count();
    assert!(held <= CAP, "the cap holds: {states:?}");
    assert!(
        states.contains(&(key(FORCED), CircuitState::ForcedOpen)),
        "an evicted forced key is still listed: {states:?}"
    );
    finish(&upstream, calls).await;

    assert_eq!(handle.state(&key(FORCED)), CircuitState::ForcedOpen);
    let refused = send(&client, FORCED).await;
    let open = refusal(&refused).expect("a forced-open key is refused after eviction");
    assert_eq!(open.key(), &key(FORCED));
    assert_eq!(open.retry_after(), Duration::from_secs(30));
    assert_eq!(
        upstream.calls_for(FORCED),
        0,
        "nothing reached the upstream"
    );
}

#[tokio::test(start_paused = true)]
async fn forced_open_survives_sequential_traffic_at_a_cap_of_one() {
    let upstream = Upstream::new();
    let layer = CircuitBreakerLayer::builder().max_keys(1).build().unwrap();
    let handle = layer.handle();
    let client = layer.layer(upstream.service());

    handle.force_open(&key(FORCED));
    for i in 0..5 {
        send(&client, &other(i)).await.unwrap();
    }
    assert!(refusal(&send(&client, FORCED).await).is_some());
    assert_eq!(handle.state(&key(FORCED)), CircuitState::ForcedOpen);
    assert_eq!(upstream.calls_for(FORCED), 0);
}

#[tokio::test(start_paused = true)]
async fn forced_closed_survives_key_cap_eviction() {
    let (upstream, handle, client) = capped();

    handle.force_closed(&key(FORCED));
    evict_forced(&upstream, &client).await;

    // Enough failures to trip a normal circuit twice over: a forced-closed one counts nothing.
    upstream.status(500);
    for _ in 0..40 {
        let response = send(&client, FORCED).await.expect("forced closed passes");
        assert_eq!(response.status(), 500);
    }
    assert_eq!(handle.state(&key(FORCED)), CircuitState::ForcedClosed);
}

#[tokio::test(start_paused = true)]
async fn reset_after_eviction_reopens_the_live_circuit() {
    let (upstream, handle, client) = capped();

    handle.force_open(&key(FORCED));
    evict_forced(&upstream, &client).await;
    assert!(refusal(&send(&client, FORCED).await).is_some());

    handle.reset(&key(FORCED));
    assert_eq!(handle.state(&key(FORCED)), CircuitState::Closed);
    assert_eq!(send(&client, FORCED).await.unwrap().status(), 200);
    assert_eq!(upstream.calls_for(FORCED), 1);

    // Reset for good: the key is an ordinary one again, evicted and recreated closed.
    evict_forced(&upstream, &client).await;
    assert_eq!(send(&client, FORCED).await.unwrap().status(), 200);
}

#[tokio::test(start_paused = true)]
async fn forcing_reports_real_changes_once_even_across_eviction() {
    let upstream = Upstream::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handle_slot: Arc<Mutex<Option<CircuitBreakerHandle>>> = Arc::new(Mutex::new(None));
    let layer = CircuitBreakerLayer::builder()
        .max_keys(CAP)
        .on_state_change({
            let seen = Arc::clone(&seen);
            let handle_slot = Arc::clone(&handle_slot);
            move |change| {
                if change.key == key(FORCED) {
                    seen.lock().unwrap().push((change.from, change.to));
                }
                // Callbacks may use the handle: no handle lock is held while they run.
                if let Some(handle) = handle_slot.lock().unwrap().as_ref() {
                    handle.states();
                }
            }
        })
        .build()
        .unwrap();
    let handle = layer.handle();
    *handle_slot.lock().unwrap() = Some(handle.clone());
    let client = layer.layer(upstream.service());

    handle.force_open(&key(FORCED));
    handle.force_open(&key(FORCED));
    evict_forced(&upstream, &client).await;
    // Recreated after eviction: still forced open, not a change.
    assert!(refusal(&send(&client, FORCED).await).is_some());
    // Evicted again, then forced closed while not held: reported from forced open.
    evict_forced(&upstream, &client).await;
    handle.force_closed(&key(FORCED));
    handle.reset(&key(FORCED));
    // Reset while evicted: leaving the forced state is reported too.
    handle.force_open(&key(FORCED));
    evict_forced(&upstream, &client).await;
    handle.reset(&key(FORCED));
    assert_eq!(send(&client, FORCED).await.unwrap().status(), 200);
    use CircuitState::{Closed, ForcedClosed, ForcedOpen};
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            (Closed, ForcedOpen),
            (ForcedOpen, ForcedClosed),
            (ForcedClosed, Closed),
            (Closed, ForcedOpen),
            (ForcedOpen, Closed),
        ]
    );
}
