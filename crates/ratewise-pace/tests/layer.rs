//! Behaviour of `PaceLayer` on tokio's paused clock.

mod support;

use std::time::Duration;

use ratewise_core::{BoxError, ByRoute, Deadline, Key, PaceWaitTooLong, RouteTable};
use ratewise_pace::{
    CostExceedsBurst, LocalLimiter, PaceLayer, Priority, Quota, QuotaTable, Quotas,
};
use support::{Id, Lcg, Recorder, max_in_window, request};
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};

const MS: Duration = Duration::from_millis(1);

async fn ready<S: Service<http::Request<()>>>(svc: &mut S) -> &mut S {
    match ServiceExt::<http::Request<()>>::ready(svc).await {
        Ok(svc) => svc,
        Err(_) => panic!("the pace service never fails poll_ready"),
    }
}

fn is_wait_too_long(err: &BoxError) -> Option<&PaceWaitTooLong> {
    err.downcast_ref::<PaceWaitTooLong>()
}

#[test]
fn traits() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<PaceLayer>();
    send_sync::<
        ratewise_pace::Pace<Recorder, LocalLimiter, ratewise_core::Global, ratewise_pace::UnitCost>,
    >();
    send::<<ratewise_pace::Pace<Recorder, LocalLimiter, ratewise_core::Global, ratewise_pace::UnitCost> as Service<http::Request<()>>>::Future>();
}

#[tokio::test(start_paused = true)]
async fn concurrent_callers_are_paced_smoothly_at_the_full_rate() {
    let recorder = Recorder::default();
    let layer = PaceLayer::new(Quota::per_second(10).unwrap());
    let svc = ServiceBuilder::new().layer(layer).service(recorder.clone());
    let start = Instant::now();
    let tasks: Vec<_> = (0..32)
        .map(|caller| {
            let svc = svc.clone();
            tokio::spawn(async move {
                for i in 0..20 {
                    svc.clone()
                        .oneshot(request(caller * 100 + i, "/x"))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let times = recorder.times_of("/x");
    assert_eq!(times.len(), 640);
    // Burst 1: never two within one interval.
    assert_eq!(max_in_window(&times, Duration::from_millis(999)), 10);
    assert_eq!(max_in_window(&times, Duration::from_millis(99)), 1);
    // And no slot is lost: 640 requests take exactly 639 intervals.
    let last = *times.iter().max().unwrap();
    assert_eq!(last - start, Duration::from_millis(100) * 639);
}

#[tokio::test(start_paused = true)]
async fn waiters_of_a_key_are_served_in_fifo_order() {
    let recorder = Recorder::default();
    let mut svc = ServiceBuilder::new()
        .layer(PaceLayer::new(Quota::per_second(1).unwrap()))
        .service(recorder.clone());
    let mut futures = Vec::new();
    for id in 0..10 {
        ready(&mut svc).await;
        futures.push(svc.call(request(id, "/x")));
    }
    // Poll them in reverse order: the order of `call` decides, not the order of polling.
    let handles: Vec<_> = futures.into_iter().rev().map(tokio::spawn).collect();
    for handle in handles {
        handle.await.unwrap().unwrap();
    }
    assert_eq!(recorder.ids(), (0..10).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn higher_priority_goes_first_and_low_priority_last() {
    let recorder = Recorder::default();
    let mut svc = ServiceBuilder::new()
        .layer(PaceLayer::new(Quota::per_second(1).unwrap()))
        .service(recorder.clone());
    let mut futures = Vec::new();
    for (id, priority) in [
        (0, Priority::Normal),
        (1, Priority::Normal),
        (2, Priority::Low),
        (3, Priority::Normal),
        (4, Priority::High),
        (5, Priority::Normal),
        (6, Priority::High),
    ] {
        let mut request = request(id, "/x");
        request.extensions_mut().insert(priority);
        ready(&mut svc).await;
        futures.push(tokio::spawn(svc.call(request)));
    }
    for future in futures {
        future.await.unwrap().unwrap();
    }
    assert_eq!(recorder.ids(), [0, 4, 6, 1, 3, 5, 2]);
    let times = recorder.times_of("/x");
    assert_eq!(times[6] - times[0], Duration::from_secs(6));
}

#[tokio::test(start_paused = true)]
async fn the_reserve_is_kept_for_requests_above_low_priority() {
    let recorder = Recorder::default();
    let layer = PaceLayer::new(Quota::per_second(1).unwrap().burst(10).unwrap())
        .reserve(0.2)
        .unwrap();
    let mut svc = ServiceBuilder::new().layer(layer).service(recorder.clone());
    let mut outcomes = Vec::new();
    for id in 0..10 {
        let mut request = request(id, "/x");
        request.extensions_mut().insert(Priority::Low);
        outcomes.push(ready(&mut svc).await.call(request).await);
    }
    // 8 of the 10 units are open to low priority; the last two fail fast.
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 8);
    let refused = outcomes[8].as_ref().unwrap_err();
    assert_eq!(
        is_wait_too_long(refused).unwrap().retry_after(),
        Duration::from_secs(1)
    );
    // The reserve is still there for normal and high priority.
    for id in 10..12 {
        let mut request = request(id, "/x");
        request.extensions_mut().insert(Priority::High);
        ready(&mut svc).await.call(request).await.unwrap();
    }
    ready(&mut svc).await.call(request(12, "/x")).await.unwrap();
    assert_eq!(recorder.ids().len(), 11);
    assert_eq!(
        recorder.times_of("/x").last().copied().unwrap() - recorder.times_of("/x")[0],
        Duration::from_secs(1),
        "the normal request waited for its slot instead of failing"
    );
    assert!(matches!(
        PaceLayer::new(Quota::per_second(1).unwrap()).reserve(1.0),
        Err(ratewise_pace::PaceConfigError::InvalidReserve)
    ));
}

#[tokio::test(start_paused = true)]
async fn concurrency_cap_holds_until_the_response_future_ends_or_drops() {
    let recorder = Recorder::with_latency(Duration::from_secs(1));
    let layer = PaceLayer::new(Quota::per_second(1000).unwrap().burst(100).unwrap())
        .max_concurrency(2)
        .unwrap();
    let svc = ServiceBuilder::new().layer(layer).service(recorder.clone());
    let start = Instant::now();
    let tasks: Vec<_> = (0..6)
        .map(|id| tokio::spawn(svc.clone().oneshot(request(id, "/x"))))
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(recorder.peak.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(start.elapsed(), Duration::from_secs(3));

    // A dropped response future releases its permit at once.
    let mut svc = svc;
    ready(&mut svc).await;
    let first = svc.call(request(10, "/x"));
    ready(&mut svc).await;
    let second = svc.call(request(11, "/x"));
    ready(&mut svc).await;
    let third = tokio::spawn(svc.call(request(12, "/x")));
    tokio::time::sleep(MS).await;
    assert!(!recorder.ids().contains(&12));
    drop(first);
    third.await.unwrap().unwrap();
    drop(second);
    assert!(matches!(
        PaceLayer::new(Quota::per_second(1).unwrap()).max_concurrency(0),
        Err(ratewise_pace::PaceConfigError::InvalidConcurrency)
    ));
}

#[tokio::test(start_paused = true)]
async fn max_wait_fails_fast_with_the_key_and_retry_after() {
    let recorder = Recorder::default();
    let layer = PaceLayer::new(Quota::per_second(1).unwrap()).max_wait(Duration::from_millis(1500));
    let mut svc = ServiceBuilder::new().layer(layer).service(recorder.clone());
    let start = Instant::now();
    ready(&mut svc).await.call(request(0, "/x")).await.unwrap();
    ready(&mut svc).await;
    let waiting = tokio::spawn(svc.call(request(1, "/x")));
    tokio::task::yield_now().await;
    // Third in line: would wait 2 s > 1.5 s.
    let err = ready(&mut svc)
        .await
        .call(request(2, "/x"))
        .await
        .unwrap_err();
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "refused at once, not after waiting"
    );
    let refusal = is_wait_too_long(&err).unwrap();
    assert_eq!(refusal.key().as_str(), "global");
    assert_eq!(refusal.retry_after(), Duration::from_secs(2));
    waiting.await.unwrap().unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(1));

    // max_wait zero: never waits.
    let mut svc = ServiceBuilder::new()
        .layer(PaceLayer::new(Quota::per_second(1).unwrap()).max_wait(Duration::ZERO))
        .service(recorder.clone());
    ready(&mut svc).await.call(request(3, "/x")).await.unwrap();
    let err = ready(&mut svc)
        .await
        .call(request(4, "/x"))
        .await
        .unwrap_err();
    assert_eq!(
        is_wait_too_long(&err).unwrap().retry_after(),
        Duration::from_secs(1)
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_deadline_bounds_the_wait() {
    let recorder = Recorder::default();
    let mut svc = ServiceBuilder::new()
        .layer(PaceLayer::new(Quota::per_second(1).unwrap()))
        .service(recorder.clone());
    ready(&mut svc).await.call(request(0, "/x")).await.unwrap();
    let mut late = request(1, "/x");
    late.extensions_mut()
        .insert(Deadline::after(Duration::from_millis(500)));
    let err = ready(&mut svc).await.call(late).await.unwrap_err();
    assert!(is_wait_too_long(&err).is_some());
    let mut fine = request(2, "/x");
    fine.extensions_mut()
        .insert(Deadline::after(Duration::from_secs(2)));
    ready(&mut svc).await.call(fine).await.unwrap();
    assert_eq!(recorder.ids(), [0, 2]);
}

#[tokio::test(start_paused = true)]
async fn weighted_costs() {
    let recorder = Recorder::default();
    let layer = PaceLayer::new(Quota::per_second(10).unwrap().burst(10).unwrap()).cost(
        |parts: &http::request::Parts| {
            parts
                .headers
                .get("x-cost")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(1)
        },
    );
    let mut svc = ServiceBuilder::new().layer(layer).service(recorder.clone());
    let with_cost = |id, cost: u32| {
        let mut request = request(id, "/graphql");
        request.headers_mut().insert("x-cost", cost.into());
        request
    };
    let start = Instant::now();
    ready(&mut svc).await.call(with_cost(0, 10)).await.unwrap();
    ready(&mut svc).await.call(with_cost(1, 5)).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(500));
    ready(&mut svc).await.call(with_cost(2, 0)).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(500));
    let err = ready(&mut svc)
        .await
        .call(with_cost(3, 11))
        .await
        .unwrap_err();
    let err = err.downcast_ref::<CostExceedsBurst>().unwrap();
    assert_eq!((err.cost(), err.burst()), (11, 10));
}

#[tokio::test(start_paused = true)]
async fn chained_quotas_all_must_pass() {
    let recorder = Recorder::default();
    // 2 per second (burst 2) AND 5 per 10 s (burst 5).
    let quotas = Quotas::new(&[
        Quota::per_second(2).unwrap().burst(2).unwrap(),
        Quota::new(5, Duration::from_secs(10))
            .unwrap()
            .burst(5)
            .unwrap(),
    ])
    .unwrap();
    let svc = ServiceBuilder::new()
        .layer(PaceLayer::new(quotas))
        .service(recorder.clone());
    let start = Instant::now();
    let tasks: Vec<_> = (0..9)
        .map(|id| tokio::spawn(svc.clone().oneshot(request(id, "/x"))))
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let offsets: Vec<u64> = recorder
        .times_of("/x")
        .iter()
        .map(|t| (*t - start).as_millis() as u64)
        .collect();
    // The fast quota spaces the first five (after its burst of 2); then the slow one (one
    // every 2 s) binds.
    assert_eq!(offsets, [0, 0, 500, 1000, 1500, 2000, 4000, 6000, 8000]);
}

#[tokio::test(start_paused = true)]
async fn quotas_change_at_runtime_and_keys_drain() {
    let recorder = Recorder::default();
    let layer = PaceLayer::new(Quota::per_second(1).unwrap());
    let handle = layer.handle();
    let mut svc = ServiceBuilder::new().layer(layer).service(recorder.clone());
    let start = Instant::now();
    ready(&mut svc).await.call(request(0, "/x")).await.unwrap();
    ready(&mut svc).await.call(request(1, "/x")).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    let key = Key::new("global");
    handle.set_quotas(key.clone(), Quota::per_second(10).unwrap());
    assert_eq!(
        handle.quotas(&key).unwrap().max_interval(),
        Duration::from_millis(100)
    );
    ready(&mut svc).await.call(request(2, "/x")).await.unwrap();
    ready(&mut svc).await.call(request(3, "/x")).await.unwrap();
    // The bucket state carries over: the old quota had promised nothing before 2 s.
    assert_eq!(start.elapsed(), Duration::from_millis(2100));

    handle
        .drain(&key, Instant::now() + Duration::from_secs(5))
        .await
        .unwrap();
    ready(&mut svc).await.call(request(4, "/x")).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(7100));
    ready(&mut svc).await.call(request(5, "/x")).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(7200));
    assert_eq!(handle.waiting(&key), 0);

    handle.remove_quotas(&key);
    assert!(handle.quotas(&key).is_none());
    for id in 6..20 {
        ready(&mut svc).await.call(request(id, "/x")).await.unwrap();
    }
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(7200),
        "unpaced once removed"
    );
    handle.set_default_quotas(Some(Quota::per_second(1).unwrap().into()));
    assert!(handle.quotas(&key).is_some());
}

fn seed_layer() -> PaceLayer<LocalLimiter, ByRoute> {
    let routes = RouteTable::builder()
        .route("/repos/{owner}/{repo}", "repos")
        .unwrap()
        .prefix("/search", "search")
        .unwrap()
        .route("/graphql", "graphql")
        .unwrap()
        .build();
    let table = QuotaTable::new()
        .with("repos", Quota::per_hour(5000).unwrap().burst(50).unwrap())
        .with("search", Quota::per_minute(30).unwrap().burst(5).unwrap())
        .with("graphql", Quota::per_hour(5000).unwrap().burst(20).unwrap());
    PaceLayer::keyed(ByRoute(routes), table)
}

#[tokio::test(start_paused = true)]
async fn each_endpoint_of_the_seed_table_has_its_own_bucket() {
    let recorder = Recorder::default();
    let svc = ServiceBuilder::new()
        .layer(seed_layer())
        .service(recorder.clone());
    let start = Instant::now();
    let tasks: Vec<_> = (0..60)
        .map(|id| {
            let path = match id % 3 {
                0 => "/repos/a/b",
                1 => "/search/code",
                _ => "/graphql",
            };
            tokio::spawn(svc.clone().oneshot(request(id, path)))
        })
        .collect();
    // Unpaced path: passes at once even while the others wait.
    svc.clone().oneshot(request(1000, "/user")).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    // 20 per endpoint: repos within its burst (all at once), graphql exactly its burst,
    // search 5 at once then one every 2 s.
    assert!(recorder.times_of("/repos/a/b").iter().all(|t| *t == start));
    assert!(recorder.times_of("/graphql").iter().all(|t| *t == start));
    let search = recorder.times_of("/search/code");
    assert_eq!(*search.last().unwrap() - start, Duration::from_secs(30));
    assert_eq!(max_in_window(&search, Duration::from_millis(1999)), 5);
}

/// Requests arrive at random times; some are dropped at random points while waiting. The
/// survivors must be admitted at exactly the times they are admitted when the dropped ones
/// never came, and the bucket must end in the same state.
#[tokio::test(start_paused = true)]
async fn dropped_waiters_leave_the_bucket_as_if_they_never_came() {
    for seed in 1..=12u64 {
        let mut rng = Lcg(seed);
        let plan: Vec<(u64, Option<u64>, Priority)> = (0..40)
            .map(|_| {
                let arrival = rng.below(8_000);
                let drop_after = (rng.below(3) == 0).then(|| rng.below(6_000));
                let priority = match rng.below(4) {
                    0 => Priority::High,
                    1 => Priority::Low,
                    _ => Priority::Normal,
                };
                (arrival, drop_after, priority)
            })
            .collect();
        let (with_drops, dropped, tat_a) = run_plan(&plan, None).await;
        let (baseline, _, tat_b) = run_plan(&plan, Some(&dropped)).await;
        assert_eq!(
            with_drops, baseline,
            "seed {seed}: survivors' admissions differ"
        );
        assert_eq!(tat_a, tat_b, "seed {seed}: bucket state differs");
    }
}

/// Runs a plan; with `skip`, leaves out those requests entirely. Returns the admissions
/// (id, offset in ms), the ids dropped before admission, and the bucket's state at the end.
async fn run_plan(
    plan: &[(u64, Option<u64>, Priority)],
    skip: Option<&[usize]>,
) -> (Vec<(usize, u128)>, Vec<usize>, Duration) {
    let recorder = Recorder::default();
    let limiter = LocalLimiter::new();
    let layer =
        PaceLayer::new(Quota::per_second(4).unwrap().burst(3).unwrap()).limiter(limiter.clone());
    let svc = ServiceBuilder::new().layer(layer).service(recorder.clone());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (id, &(arrival, drop_after, priority)) in plan.iter().enumerate() {
        if skip.is_some_and(|skip| skip.contains(&id)) {
            continue;
        }
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start + Duration::from_millis(arrival)).await;
            let mut request = request(id, "/x");
            request.extensions_mut().insert(priority);
            let future = svc.oneshot(request);
            match drop_after {
                None => {
                    future.await.unwrap();
                    None
                }
                Some(after) => {
                    // Dropped at a random point: before, while or after waiting.
                    match tokio::time::timeout(Duration::from_millis(after), future).await {
                        Ok(result) => {
                            result.unwrap();
                            None
                        }
                        Err(_) => Some(id),
                    }
                }
            }
        }));
    }
    let mut dropped = Vec::new();
    for task in tasks {
        dropped.extend(task.await.unwrap());
    }
    let mut admissions: Vec<(usize, u128)> = recorder
        .admissions()
        .into_iter()
        .map(|(Id(id), _, t)| (id, (t - start).as_millis()))
        .collect();
    admissions.sort();
    let tat = limiter
        .theoretical_arrival(&Key::new("global"), 0)
        .map_or(Duration::ZERO, |t| t - start);
    (admissions, dropped, tat)
}
