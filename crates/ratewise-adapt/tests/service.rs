//! The tower contract, cancel safety, deadlines, cached responses and spreading, with
//! `tower_test` mocks under a paused clock.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use ratewise_adapt::{Adapt, AdaptLayer, AdaptWaitTooLong, future::ResponseFuture};
use ratewise_core::{Deadline, Key};
use ratewise_testkit::{Dialect, EndpointConfig, MockApi, MockConfig, Quota};
use tokio::time::Instant;
use tokio_test::{assert_pending, assert_ready, assert_ready_ok, task};
use tower::{Layer, Service, ServiceExt};
use tower_test::mock;

type Mock = mock::Mock<Request<()>, Response<()>>;
type Handle = mock::Handle<Request<()>, Response<()>>;

fn get() -> Request<()> {
    Request::get("https://api.test/items").body(()).unwrap()
}

/// A draft-8 response: `remaining` of `limit` left, reset in `reset` seconds.
fn draft8(limit: u64, remaining: u64, reset: u64) -> Response<()> {
    Response::builder()
        .header("ratelimit", format!("\"p\";r={remaining};t={reset}"))
        .header("ratelimit-policy", format!("\"p\";q={limit};w={reset}"))
        .body(())
        .unwrap()
}

/// GitHub's headers: `remaining` of 5000 left, reset far ahead, and the resource if given.
fn github(status: StatusCode, remaining: u64, resource: Option<&str>) -> Response<()> {
    let mut response = Response::builder()
        .status(status)
        .header("x-ratelimit-limit", "5000")
        .header("x-ratelimit-remaining", remaining.to_string())
        .header("x-ratelimit-reset", "4102444800");
    if let Some(resource) = resource {
        response = response.header("x-ratelimit-resource", resource);
    }
    response.body(()).unwrap()
}

fn setup(layer: &AdaptLayer) -> (Adapt<Mock>, Handle) {
    let (mock, handle) = mock::pair::<Request<()>, Response<()>>();
    (layer.layer(mock), handle)
}

/// Sends one request and answers it with `response`, so the key learns from it.
async fn learn(service: &mut Adapt<Mock>, handle: &mut Handle, response: Response<()>) {
    let future = service.ready().await.unwrap().call(get());
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_response(response);
    future.await.unwrap();
}

fn key() -> Key {
    Key::new("api.test default")
}

#[test]
fn services_and_futures_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<AdaptLayer>();
    send_sync::<Adapt<Mock>>();
    send_sync::<ResponseFuture<<Mock as Service<Request<()>>>::Future, Mock, Request<()>>>();
}

/// A waiting request keeps the readied inner service (moved out with `mem::replace`) and calls
/// it later; `tower_test`'s mock panics if a clone that was never readied is called.
#[tokio::test(start_paused = true)]
async fn waiting_requests_call_the_readied_inner_service() {
    let layer = AdaptLayer::new();
    let (mut service, mut handle) = setup(&layer);
    // Slow start: the first request goes, the second waits for its response.
    let first = service.ready().await.unwrap().call(get());
    let mut second = task::spawn(service.ready().await.unwrap().call(get()));
    assert_pending!(second.poll());
    let (_, reply) = handle.next_request().await.unwrap();
    assert!(
        handle.poll_request().is_pending(),
        "the second request waits"
    );
    reply.send_response(draft8(10, 9, 60));
    first.await.unwrap();
    assert!(second.is_woken());
    assert_pending!(second.poll());
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_response(draft8(10, 8, 60));
    assert_ready_ok!(second.poll());
}

/// Dropping in-flight futures frees their slots and wakes the waiters, but keeps their units
/// spent: the server has both requests (here it received them in `call`), so a third one
/// before the reset would be refused.
#[tokio::test(start_paused = true)]
async fn dropped_in_flight_futures_free_their_slots_and_keep_their_quota_spent() {
    let layer = AdaptLayer::new();
    let (mut service, mut handle) = setup(&layer);
    learn(&mut service, &mut handle, draft8(10, 2, 60)).await;
    let learned_at = Instant::now();
    let a = service.ready().await.unwrap().call(get());
    let b = service.ready().await.unwrap().call(get());
    let _a_sent = handle.next_request().await.unwrap();
    let _b_sent = handle.next_request().await.unwrap();
    assert_eq!(layer.snapshot(&key()).unwrap().in_flight(), 2);
    let mut c = task::spawn(service.ready().await.unwrap().call(get()));
    assert_pending!(c.poll(), "the quota is spent by the two in flight");
    assert!(handle.poll_request().is_pending());
    drop(a);
    drop(b);
    assert_eq!(layer.snapshot(&key()).unwrap().in_flight(), 0);
    assert!(c.is_woken(), "releasing wakes the waiter");
    assert_pending!(c.poll());
    assert!(
        handle.poll_request().is_pending(),
        "the server counted a and b: nothing more before the reset"
    );
    assert_eq!(
        layer.snapshot(&key()).unwrap().policies()[0].remaining(),
        Some(0)
    );
    // c goes at the reset, not a millisecond before.
    tokio::time::sleep_until(learned_at + Duration::from_secs(60) - Duration::from_millis(1)).await;
    assert_pending!(c.poll());
    assert!(handle.poll_request().is_pending());
    tokio::time::sleep_until(learned_at + Duration::from_secs(60)).await;
    assert!(c.is_woken());
    assert_pending!(c.poll());
    assert!(assert_ready!(handle.poll_request()).is_some());
    assert_eq!(layer.snapshot(&key()).unwrap().in_flight(), 1);
}

/// A new key whose first request is dropped (or fails) is not blocked by slow start: the
/// next request goes.
#[tokio::test(start_paused = true)]
async fn slow_start_survives_a_dropped_first_request() {
    let layer = AdaptLayer::new();
    let (mut service, mut handle) = setup(&layer);
    let first = service.ready().await.unwrap().call(get());
    let _first_sent = handle.next_request().await.unwrap();
    let mut second = task::spawn(service.ready().await.unwrap().call(get()));
    assert_pending!(
        second.poll(),
        "slow start: one request until the first response"
    );
    assert!(handle.poll_request().is_pending());
    drop(first);
    assert!(second.is_woken());
    assert_pending!(second.poll());
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_response(draft8(10, 8, 60));
    assert_ready_ok!(second.poll());
}

/// A new key whose first request fails is not blocked by slow start either.
#[tokio::test(start_paused = true)]
async fn slow_start_survives_a_failed_first_request() {
    let layer = AdaptLayer::new();
    let (mut service, mut handle) = setup(&layer);
    let first = service.ready().await.unwrap().call(get());
    let (_, reply) = handle.next_request().await.unwrap();
    let mut second = task::spawn(service.ready().await.unwrap().call(get()));
    assert_pending!(
        second.poll(),
        "slow start: one request until the first response"
    );
    reply.send_error("connection reset");
    assert!(first.await.is_err());
    assert_eq!(layer.snapshot(&key()).unwrap().in_flight(), 0);
    assert!(second.is_woken());
    assert_pending!(second.poll());
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_response(draft8(10, 8, 60));
    assert_ready_ok!(second.poll());
}

/// A first request that never completes (no timeout anywhere) does not hold a new key's slow
/// start until `max_wait`: its claim expires after `probe_timeout` (10 s by default) and one
/// waiter probes, then another 10 s later if that one hangs too. Never a burst: the 8 other
/// callers go only once a probe's response described the key.
#[tokio::test(start_paused = true)]
async fn a_probe_that_never_completes_holds_slow_start_only_for_the_probe_timeout() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    let start = Instant::now();
    let sent: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let client = {
        let sent = Arc::clone(&sent);
        tower::service_fn(move |_request: Request<()>| {
            sent.lock().unwrap().push(start.elapsed());
            let hangs = calls.fetch_add(1, Ordering::Relaxed) < 2;
            async move {
                if hangs {
                    std::future::pending::<()>().await;
                }
                Ok::<_, std::convert::Infallible>(draft8(100, 90, 60))
            }
        })
    };
    let layer = AdaptLayer::new();
    let service = layer.layer(client);
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let call = service.clone().oneshot(get());
        tasks.push(tokio::spawn(async move {
            call.await.expect("not refused");
            start.elapsed()
        }));
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    let secs = Duration::from_secs;
    let sent = sent.lock().unwrap().clone();
    assert_eq!(
        &sent[..3],
        &[secs(0), secs(10), secs(20)],
        "one probe per 10 s"
    );
    assert_eq!(sent.len(), 10);
    // The two hanging probes never finish; the 8 others answer at 20 s.
    let (finished, hanging): (Vec<_>, Vec<_>) = tasks.into_iter().partition(|t| t.is_finished());
    let mut answered = Vec::new();
    for task in finished {
        answered.push(task.await.unwrap());
    }
    assert_eq!(answered, vec![secs(20); 8]);
    assert_eq!(layer.snapshot(&key()).unwrap().in_flight(), 2);
    for task in hanging {
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
    }
    assert_eq!(layer.snapshot(&key()).unwrap().in_flight(), 0);
}

/// A dropped waiting future holds nothing: the key's counts are as if it never came.
#[tokio::test(start_paused = true)]
async fn dropped_waiting_futures_hold_nothing() {
    let layer = AdaptLayer::new();
    let (mut service, mut handle) = setup(&layer);
    let first = service.ready().await.unwrap().call(get());
    let mut waiting = task::spawn(service.ready().await.unwrap().call(get()));
    assert_pending!(waiting.poll());
    drop(waiting);
    assert_eq!(layer.snapshot(&key()).unwrap().in_flight(), 1);
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_response(draft8(10, 9, 60));
    first.await.unwrap();
    assert_eq!(layer.snapshot(&key()).unwrap().in_flight(), 0);
    let policies = layer.snapshot(&key()).unwrap().policies().to_vec();
    assert_eq!(policies[0].remaining(), Some(9));
}

/// Sixteen concurrent callers that learned `remaining = 5` send five.
#[tokio::test(start_paused = true)]
async fn sixteen_callers_see_five_remaining_and_send_five() {
    let layer = AdaptLayer::new();
    let (mut service, mut handle) = setup(&layer);
    learn(&mut service, &mut handle, draft8(100, 5, 30)).await;
    let mut callers: Vec<_> = (0..16)
        .map(|_| task::spawn(service.clone().oneshot(get())))
        .collect();
    for caller in &mut callers {
        assert_pending!(caller.poll());
    }
    let mut sent = 0;
    while let std::task::Poll::Ready(Some(_)) = handle.poll_request() {
        sent += 1;
    }
    assert_eq!(sent, 5);
}

/// A wait past the request's deadline fails at once with the time to wait.
#[tokio::test(start_paused = true)]
async fn waits_past_the_deadline_fail_fast() {
    let layer = AdaptLayer::new();
    let (mut service, mut handle) = setup(&layer);
    learn(&mut service, &mut handle, draft8(10, 0, 30)).await;
    let mut request = get();
    request
        .extensions_mut()
        .insert(Deadline::after(Duration::from_secs(5)));
    let started = Instant::now();
    let error = service
        .ready()
        .await
        .unwrap()
        .call(request)
        .await
        .unwrap_err();
    assert_eq!(Instant::now(), started);
    let refusal = error.downcast_ref::<AdaptWaitTooLong>().unwrap();
    assert_eq!(refusal.retry_after(), Duration::from_secs(30));
    assert_eq!(refusal.key(), &key());
}

/// Responses served from a cache (`Age > 0`) do not teach the key anything.
#[tokio::test(start_paused = true)]
async fn cached_responses_are_ignored() {
    let layer = AdaptLayer::new();
    let (mut service, mut handle) = setup(&layer);
    learn(&mut service, &mut handle, draft8(10, 9, 30)).await;
    let mut cached = draft8(10, 0, 30);
    cached
        .headers_mut()
        .insert("age", http::HeaderValue::from_static("120"));
    learn(&mut service, &mut handle, cached).await;
    let policies = layer.snapshot(&key()).unwrap().policies().to_vec();
    assert_eq!(
        policies[0].remaining(),
        Some(8),
        "the cached r=0 was ignored"
    );
    let mut next = task::spawn(service.ready().await.unwrap().call(get()));
    assert_pending!(next.poll());
    assert!(
        assert_ready!(handle.poll_request()).is_some(),
        "sent without waiting"
    );
}

/// A refusal served from a cache (a CDN's stored 429) still pauses the key for what is left of
/// its `Retry-After`; its counts are ignored like any cached response's. (Before: ignored whole,
/// so callers kept sending while the origin asked for a pause.)
#[tokio::test(start_paused = true)]
async fn a_cached_refusal_keeps_the_rest_of_its_pause() {
    let layer = AdaptLayer::new();
    let (mut service, mut handle) = setup(&layer);
    learn(&mut service, &mut handle, draft8(10, 9, 60)).await;
    let mut cached = draft8(10, 0, 60);
    *cached.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    for (name, value) in [("retry-after", "30"), ("age", "10")] {
        cached
            .headers_mut()
            .insert(name, http::HeaderValue::from_static(value));
    }
    learn(&mut service, &mut handle, cached).await;
    assert_eq!(
        layer.snapshot(&key()).unwrap().cooldown(),
        Some(Duration::from_secs(20))
    );
    // A cached refusal whose pause is over by now changes nothing.
    tokio::time::advance(Duration::from_secs(20)).await;
    let stale = Response::builder()
        .status(StatusCode::TOO_MANY_REQUESTS)
        .header("retry-after", "5")
        .header("age", "9")
        .body(())
        .unwrap();
    let started = Instant::now();
    learn(&mut service, &mut handle, stale).await;
    learn(&mut service, &mut handle, draft8(10, 8, 40)).await;
    assert_eq!(Instant::now(), started, "nothing waited");
}

/// More policies than tracked (4): the tightest are kept, so an exhausted fifth policy binds,
/// whether it comes in the first response or after four loose ones took every slot. (Before:
/// the fifth was dropped and the key sent into it.)
#[tokio::test(start_paused = true)]
async fn a_fifth_policy_that_binds_is_tracked() {
    // `names` with 90 of 100 left per 60 s, and "e" with `e_left` of 100, reset in 30 s.
    let policies = |names: &[&str], e_left: Option<u64>| {
        let mut limits: Vec<String> = names.iter().map(|n| format!("\"{n}\";r=90;t=60")).collect();
        let mut quotas: Vec<String> = names
            .iter()
            .map(|n| format!("\"{n}\";q=100;w=60"))
            .collect();
        if let Some(left) = e_left {
            limits.push(format!("\"e\";r={left};t=30"));
            quotas.push("\"e\";q=100;w=30".to_owned());
        }
        Response::builder()
            .header("ratelimit", limits.join(", "))
            .header("ratelimit-policy", quotas.join(", "))
            .body(())
            .unwrap()
    };
    for e_first in [true, false] {
        let layer = AdaptLayer::builder()
            .max_wait(Duration::from_secs(600))
            .build()
            .unwrap();
        let (mut service, mut handle) = setup(&layer);
        if !e_first {
            // Four loose policies take every slot first.
            learn(
                &mut service,
                &mut handle,
                policies(&["a", "b", "c", "d"], None),
            )
            .await;
        }
        learn(
            &mut service,
            &mut handle,
            policies(&["a", "b", "c", "d"], Some(0)),
        )
        .await;
        // "e" is exhausted until its reset: the next request waits for it.
        let started = Instant::now();
        let future = tokio::spawn(service.ready().await.unwrap().call(get()));
        let Ok(Some((_, reply))) =
            tokio::time::timeout(Duration::from_secs(100), handle.next_request()).await
        else {
            panic!("not sent: {:?}", future.await.unwrap().err());
        };
        assert_eq!(Instant::now() - started, Duration::from_secs(30));
        reply.send_response(policies(&["a", "b", "c", "d"], Some(99)));
        future.await.unwrap().unwrap();
    }
}

/// A 429 with Retry-After cools the key down for every caller; a Retry-After on a 200 does not.
#[tokio::test(start_paused = true)]
async fn only_refusals_start_cooldowns() {
    let layer = AdaptLayer::new();
    let (mut service, mut handle) = setup(&layer);
    let mut ok = draft8(100, 50, 60);
    ok.headers_mut()
        .insert("retry-after", http::HeaderValue::from_static("20"));
    learn(&mut service, &mut handle, ok).await;
    assert_eq!(layer.snapshot(&key()).unwrap().cooldown(), None);
    let refused = Response::builder()
        .status(StatusCode::TOO_MANY_REQUESTS)
        .header("retry-after", "7")
        .body(())
        .unwrap();
    learn(&mut service, &mut handle, refused).await;
    assert_eq!(
        layer.snapshot(&key()).unwrap().cooldown(),
        Some(Duration::from_secs(7))
    );
    let started = Instant::now();
    let future = tokio::spawn(service.ready().await.unwrap().call(get()));
    let (_, reply) = handle.next_request().await.unwrap();
    assert_eq!(Instant::now() - started, Duration::from_secs(7));
    reply.send_response(draft8(100, 49, 53));
    future.await.unwrap().unwrap();
}

/// GitHub's secondary limit without `Retry-After`: a 429 whose headers say quota is left.
/// Nothing in it explains the refusal, so the key pauses 60 s, then 120 s after a second one
/// in a row, and a success starts over. (Before: no pause at all; every caller kept sending
/// into the limit.) A 403 like it is not a refusal (it may be a permission error): no pause.
#[tokio::test(start_paused = true)]
async fn refusals_the_headers_do_not_explain_pause_the_key_and_back_off() {
    // Callers wait through the pauses (by default they would fail fast past 60 s).
    let layer = AdaptLayer::builder()
        .max_wait(Duration::from_secs(600))
        .build()
        .unwrap();
    let (mut service, mut handle) = setup(&layer);
    let github = |status, remaining| github(status, remaining, Some("core"));
    // Sends one request; returns how long it waited before reaching the server.
    async fn send(
        service: &mut Adapt<Mock>,
        handle: &mut Handle,
        answer: Response<()>,
    ) -> Duration {
        let started = Instant::now();
        let future = tokio::spawn(service.ready().await.unwrap().call(get()));
        let (_, reply) = handle.next_request().await.unwrap();
        let waited = Instant::now() - started;
        reply.send_response(answer);
        future.await.unwrap().unwrap();
        waited
    }
    let too_many = StatusCode::TOO_MANY_REQUESTS;
    let mut remaining = 4200;
    let mut next = |status| {
        remaining -= 1;
        github(status, remaining)
    };
    for (answer, expected_wait) in [
        (StatusCode::OK, 0),
        (StatusCode::FORBIDDEN, 0),
        (too_many, 0),
        (too_many, 60),
        (StatusCode::OK, 120),
        (too_many, 0),
        (StatusCode::OK, 60),
        (StatusCode::OK, 0),
    ] {
        let waited = send(&mut service, &mut handle, next(answer)).await;
        assert_eq!(
            waited,
            Duration::from_secs(expected_wait),
            "before the {answer}"
        );
    }
}

/// A key whose state is evicted while the server has it blocked (here by the key cap; idle
/// eviction after 10 minutes is the same) keeps the block: a `Retry-After: 600` is honoured
/// to the end even though nobody held the key's state. (Before: the state made anew had no
/// cooldown and sent at once.)
#[tokio::test(start_paused = true)]
async fn a_cooldown_outlives_the_eviction_of_its_state() {
    let layer = AdaptLayer::builder()
        .keyed_state(ratewise_core::KeyedStateConfig::new().max_keys(1))
        .build()
        .unwrap();
    let (mut service, mut handle) = setup(&layer);
    let refused = Response::builder()
        .status(StatusCode::TOO_MANY_REQUESTS)
        .header("retry-after", "600")
        .body(())
        .unwrap();
    learn(&mut service, &mut handle, refused).await;
    // Another host takes the only key slot: the refused key's state is evicted.
    let other = Request::get("https://other.test/items").body(()).unwrap();
    let future = service.ready().await.unwrap().call(other);
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_response(Response::new(()));
    future.await.unwrap();
    assert!(layer.snapshot(&key()).is_none(), "the state was evicted");
    tokio::time::advance(Duration::from_secs(100)).await;
    // Back on the blocked key: 500 s are left, past max_wait, so it fails fast, unsent.
    let call = service.ready().await.unwrap().call(get());
    let error = tokio::time::timeout(Duration::from_secs(1), call)
        .await
        .expect("sent to the server instead of failing fast")
        .unwrap_err();
    let refusal = error.downcast_ref::<AdaptWaitTooLong>().unwrap();
    assert_eq!(refusal.retry_after(), Duration::from_secs(500));
    // At the end of the cooldown it goes.
    tokio::time::advance(Duration::from_secs(500)).await;
    learn(&mut service, &mut handle, Response::new(())).await;
}

/// An exhausted window whose reset passes is probed; a probe answered without headers (a CDN,
/// a server that describes its limits only sometimes) leaves the policy in force for another
/// window instead of releasing every waiter at once. (Before: the policy was forgotten and all
/// five waiters went together, into a server that allows three per window.)
#[tokio::test(start_paused = true)]
async fn a_probe_answered_without_headers_keeps_the_policy_for_another_window() {
    let layer = AdaptLayer::builder()
        .max_wait(Duration::from_secs(600))
        .build()
        .unwrap();
    let (mut service, mut handle) = setup(&layer);
    learn(&mut service, &mut handle, draft8(3, 0, 10)).await;
    let start = Instant::now();
    let callers: Vec<_> = (0..6)
        .map(|_| {
            let mut service = service.clone();
            tokio::spawn(async move { service.ready().await.unwrap().call(get()).await })
        })
        .collect();
    // Requests that reach the server within `within` from now.
    async fn arrivals(
        handle: &mut Handle,
        within: Duration,
    ) -> Vec<mock::SendResponse<Response<()>>> {
        let mut replies = Vec::new();
        let end = Instant::now() + within;
        while let Ok(Some((_, reply))) = tokio::time::timeout_at(end, handle.next_request()).await {
            replies.push(reply);
        }
        replies
    }
    // The reset at 10 s: one probe.
    let probe = arrivals(
        &mut handle,
        Duration::from_secs(10) + Duration::from_millis(1),
    )
    .await;
    assert_eq!(probe.len(), 1);
    assert_eq!(
        Instant::now() - start,
        Duration::from_secs(10) + Duration::from_millis(1)
    );
    for reply in probe {
        reply.send_response(Response::new(()));
    }
    // The policy (3 per 10 s) holds for the window counted from the probe's answer: two more.
    let second = arrivals(&mut handle, Duration::from_secs(5)).await;
    assert_eq!(second.len(), 2, "the waiters burst");
    for reply in second {
        reply.send_response(Response::new(()));
    }
    let third = arrivals(&mut handle, Duration::from_secs(10)).await;
    assert!(third.len() <= 3, "{} in the next window", third.len());
    for reply in third {
        reply.send_response(Response::new(()));
    }
    let rest = arrivals(&mut handle, Duration::from_secs(30)).await;
    for reply in rest {
        reply.send_response(Response::new(()));
    }
    for caller in callers {
        caller.await.unwrap().unwrap();
    }
}

/// Refusals of requests that were all in flight together are one refusal, not several in a
/// row: 4 concurrent 429s without `Retry-After` pause the key 60 s, not 60 × 2^3.
#[tokio::test(start_paused = true)]
async fn concurrent_unexplained_refusals_count_once() {
    let layer = AdaptLayer::builder().slow_start(8).build().unwrap();
    let (service, mut handle) = setup(&layer);
    let github = |status| github(status, 4100, None);
    let mut warm = service.clone();
    learn(&mut warm, &mut handle, github(StatusCode::OK)).await;
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let mut service = service.clone();
            tokio::spawn(async move { service.ready().await.unwrap().call(get()).await })
        })
        .collect();
    let mut replies = Vec::new();
    for _ in 0..4 {
        replies.push(handle.next_request().await.unwrap().1);
    }
    for reply in replies {
        reply.send_response(github(StatusCode::TOO_MANY_REQUESTS));
    }
    for caller in callers {
        caller.await.unwrap().unwrap();
    }
    assert_eq!(
        layer.snapshot(&key()).unwrap().cooldown(),
        Some(Duration::from_secs(60))
    );
}

/// A bare refusal (no headers at all) answering the probe after a long window's reset does not
/// turn the expired policy into a block of a whole window (a day here): the refusal paths
/// handle it, and the key sends again within seconds.
#[tokio::test(start_paused = true)]
async fn a_bare_refusal_after_a_reset_does_not_block_a_whole_window() {
    let layer = AdaptLayer::builder()
        .max_wait(Duration::from_secs(600))
        .build()
        .unwrap();
    let (mut service, mut handle) = setup(&layer);
    let daily = Response::builder()
        .header("ratelimit", "\"day\";r=0;t=10")
        .header("ratelimit-policy", "\"day\";q=1000;w=86400")
        .body(())
        .unwrap();
    learn(&mut service, &mut handle, daily).await;
    let bare_429 = || {
        Response::builder()
            .status(StatusCode::TOO_MANY_REQUESTS)
            .body(())
            .unwrap()
    };
    // The probe at the reset (10 s) is refused without headers.
    let future = tokio::spawn(service.ready().await.unwrap().call(get()));
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_response(bare_429());
    future.await.unwrap().unwrap();
    // The next request goes within a minute, not a day later.
    let started = Instant::now();
    let future = tokio::spawn(service.ready().await.unwrap().call(get()));
    let Ok(Some((_, reply))) =
        tokio::time::timeout(Duration::from_secs(60), handle.next_request()).await
    else {
        panic!("blocked: {:?}", future.await.unwrap().err());
    };
    assert!(Instant::now() - started < Duration::from_secs(60));
    reply.send_response(Response::new(()));
    future.await.unwrap().unwrap();
}

/// `spread` paces the remaining budget evenly until the reset instead of bursting it.
#[tokio::test(start_paused = true)]
async fn spread_paces_the_budget_until_the_reset() {
    let period = Duration::from_secs(10);
    let api = MockApi::new(
        MockConfig::new().endpoint(
            EndpointConfig::new("/items")
                .quota(Quota::fixed_window(20, period))
                .dialect(Dialect::Draft8)
                .latency(Duration::from_millis(10)),
        ),
    );
    let layer = AdaptLayer::builder().spread(true).build().unwrap();
    let end = Instant::now() + period * 6;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let service = layer.layer(api.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let request = Request::get("http://api.test/items")
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                service.clone().oneshot(request).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let admitted = api
        .requests()
        .iter()
        .filter(|entry| entry.status.is_success() && entry.since_start < period * 6)
        .count();
    assert_eq!(api.count_status(StatusCode::TOO_MANY_REQUESTS), 0);
    // 20 per 10 s spread out: never more than 2 in any half second (a burst would send 20).
    let densest = api.max_sent_in_window("/items", Duration::from_millis(500));
    assert!(densest <= 2, "{densest} requests within 500 ms");
    assert!(admitted >= 6 * 20 * 90 / 100, "only {admitted} admitted");
}
