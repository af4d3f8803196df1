//! Behaviour tests of the retry layer, on tokio's paused clock.

mod support;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use ratewise_core::{BoxError, Deadline};
use ratewise_retry::{
    Backoff, ErrorClass, Idempotent, Jitter, ReplayBody, Retry, RetryBudget, RetryLayer,
};
use support::{Upstream, get, response};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

fn layer() -> ratewise_retry::RetryLayerBuilder {
    RetryLayer::builder().seed(7)
}

fn post(key: Option<&str>) -> Request<Full<Bytes>> {
    let mut builder = Request::post("https://api.example.com/charges");
    if let Some(key) = key {
        builder = builder.header("idempotency-key", key);
    }
    builder
        .body(Full::new(Bytes::from_static(b"amount=10")))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn post_without_idempotency_key_is_sent_exactly_once_on_503() {
    let upstream = Upstream::always(StatusCode::SERVICE_UNAVAILABLE, &[]);
    let client = layer().build().unwrap().layer(upstream.clone());
    let response = client.oneshot(post(None)).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(upstream.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn post_with_idempotency_key_or_opt_in_is_retried() {
    let upstream = Upstream::always(StatusCode::SERVICE_UNAVAILABLE, &[]);
    let client = layer().build().unwrap().layer(upstream.clone());
    let response = client.clone().oneshot(post(Some("k-1"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(upstream.count(), 3, "3 attempts in total by default");
    assert!(
        upstream
            .log()
            .iter()
            .all(|seen| seen.headers["idempotency-key"] == "k-1" && seen.body == "amount=10")
    );

    let mut request = post(None);
    request.extensions_mut().insert(Idempotent);
    client.oneshot(request).await.unwrap();
    assert_eq!(upstream.count(), 6);
}

#[tokio::test(start_paused = true)]
async fn idempotency_header_name_is_configurable() {
    let upstream = Upstream::always(StatusCode::BAD_GATEWAY, &[]);
    let client = layer()
        .idempotency_header(http::HeaderName::from_static("x-request-id"))
        .build()
        .unwrap()
        .layer(upstream.clone());
    client
        .clone()
        .oneshot(post(Some("ignored-name")))
        .await
        .unwrap();
    assert_eq!(upstream.count(), 1);
    let request = Request::patch("https://api.example.com/x")
        .header("x-request-id", "r-1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    client.oneshot(request).await.unwrap();
    assert_eq!(upstream.count(), 1 + 3);
}

#[tokio::test(start_paused = true)]
async fn retry_after_seconds_is_waited_exactly_never_before() {
    let upstream = Upstream::new(|n, _| {
        Ok(if n == 0 {
            response(StatusCode::SERVICE_UNAVAILABLE, &[("retry-after", "7")])
        } else {
            response(StatusCode::OK, &[])
        })
    });
    let client = layer().build().unwrap().layer(upstream.clone());
    let start = Instant::now();
    let response = client
        .oneshot(get("https://api.example.com/a"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let log = upstream.log();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].at, start);
    assert_eq!(log[1].at - log[0].at, Duration::from_secs(7));
}

#[tokio::test(start_paused = true)]
async fn retry_after_ms_is_rounded_up_and_jitter_only_adds() {
    let upstream = Upstream::new(|n, _| {
        Ok(if n % 2 == 0 {
            response(StatusCode::TOO_MANY_REQUESTS, &[("retry-after-ms", "1500")])
        } else {
            response(StatusCode::OK, &[])
        })
    });
    let client = layer()
        .server_delay_jitter(Duration::from_millis(200))
        .build()
        .unwrap()
        .layer(upstream.clone());
    for _ in 0..20 {
        client
            .clone()
            .oneshot(get("https://api.example.com/a"))
            .await
            .unwrap();
    }
    let log = upstream.log();
    let mut gaps = Vec::new();
    for pair in log.chunks(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_millis(1500),
            "early retry after {gap:?}"
        );
        assert!(
            gap <= Duration::from_millis(1701),
            "jitter too large: {gap:?}"
        );
        gaps.push(gap);
    }
    gaps.dedup();
    assert!(gaps.len() > 1, "the positive jitter spreads callers");
}

#[tokio::test(start_paused = true)]
async fn ratelimit_reset_on_429_is_honoured() {
    // Draft RateLimit: the "default" policy is exhausted and resets in 3 s.
    let upstream = Upstream::new(|n, _| {
        Ok(if n == 0 {
            response(
                StatusCode::TOO_MANY_REQUESTS,
                &[
                    ("ratelimit-policy", "\"default\";q=100;w=60"),
                    ("ratelimit", "\"default\";r=0;t=3"),
                ],
            )
        } else {
            response(StatusCode::OK, &[])
        })
    });
    let client = layer().build().unwrap().layer(upstream.clone());
    client
        .oneshot(get("https://api.example.com/a"))
        .await
        .unwrap();
    let log = upstream.log();
    assert_eq!(log[1].at - log[0].at, Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn retry_after_beyond_the_deadline_returns_immediately() {
    let upstream = Upstream::always(StatusCode::SERVICE_UNAVAILABLE, &[("retry-after", "30")]);
    let client = layer().build().unwrap().layer(upstream.clone());
    let mut request = get("https://api.example.com/a");
    request
        .extensions_mut()
        .insert(Deadline::after(Duration::from_secs(10)));
    let start = Instant::now();
    let response = client.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(upstream.count(), 1);

    // The layer's default total timeout does the same without an extension.
    let client = layer()
        .total_timeout(Duration::from_secs(20))
        .build()
        .unwrap()
        .layer(upstream.clone());
    client
        .oneshot(get("https://api.example.com/a"))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(upstream.count(), 2);
}

#[tokio::test(start_paused = true)]
async fn retry_after_beyond_max_wait_returns_immediately() {
    let upstream = Upstream::always(StatusCode::TOO_MANY_REQUESTS, &[("retry-after", "3600")]);
    let client = layer().build().unwrap().layer(upstream.clone());
    let start = Instant::now();
    let response = client
        .oneshot(get("https://api.example.com/a"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(upstream.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_absurd_retry_after_is_never_cut_to_the_parsers_clamp() {
    // The parser clamps 99999999 s to one day; with a max_wait above a day the layer must
    // not wait that day and retry years before the server's instant.
    const CASES: [(StatusCode, &[(&str, &str)]); 3] = [
        (
            StatusCode::SERVICE_UNAVAILABLE,
            &[("retry-after", "99999999")],
        ),
        (
            StatusCode::TOO_MANY_REQUESTS,
            &[("retry-after-ms", "99999999999999")],
        ),
        (StatusCode::FORBIDDEN, &[("retry-after", "99999999")]),
    ];
    for (status, header) in CASES {
        let upstream = Upstream::always(status, header);
        let client = layer()
            .max_wait(Duration::from_secs(2 * 86_400))
            .build()
            .unwrap()
            .layer(upstream.clone());
        let start = Instant::now();
        let response = client
            .oneshot(get("https://api.example.com/a"))
            .await
            .unwrap();
        assert_eq!(response.status(), status);
        assert_eq!(start.elapsed(), Duration::ZERO, "{header:?}");
        tokio::time::sleep(Duration::from_secs(3 * 86_400)).await;
        assert_eq!(upstream.count(), 1, "{header:?}");
    }
    // A real wait of more than a day within max_wait is still honoured exactly.
    let upstream = Upstream::new(|n, _| {
        Ok(if n == 0 {
            response(StatusCode::SERVICE_UNAVAILABLE, &[("retry-after", "86000")])
        } else {
            response(StatusCode::OK, &[])
        })
    });
    let client = layer()
        .max_wait(Duration::from_secs(2 * 86_400))
        .build()
        .unwrap()
        .layer(upstream.clone());
    let response = client
        .oneshot(get("https://api.example.com/a"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let log = upstream.log();
    assert_eq!(log[1].at - log[0].at, Duration::from_secs(86_000));
}

#[tokio::test(start_paused = true)]
async fn http_date_retry_after_is_read_relative_to_date() {
    // The server's clock is far from ours: only the difference Retry-After - Date counts.
    let upstream = Upstream::new(|n, _| {
        Ok(if n == 0 {
            response(
                StatusCode::SERVICE_UNAVAILABLE,
                &[
                    ("date", "Wed, 21 Oct 2015 07:28:00 GMT"),
                    ("retry-after", "Wed, 21 Oct 2015 07:28:05 GMT"),
                ],
            )
        } else {
            response(StatusCode::OK, &[])
        })
    });
    let client = layer().build().unwrap().layer(upstream.clone());
    let response = client
        .oneshot(get("https://api.example.com/a"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let log = upstream.log();
    assert_eq!(log[1].at - log[0].at, Duration::from_secs(5));
    assert!(SystemTime::now() > SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_485));
}

#[tokio::test(start_paused = true)]
async fn attempts_exhausted_return_the_last_response() {
    let upstream = Upstream::new(|n, _| {
        let mut response = response(StatusCode::BAD_GATEWAY, &[]);
        response
            .headers_mut()
            .insert("x-attempt", n.to_string().parse().unwrap());
        Ok(response)
    });
    let client = layer()
        .max_attempts(4)
        .build()
        .unwrap()
        .layer(upstream.clone());
    let response = client
        .oneshot(get("https://api.example.com/a"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(response.headers()["x-attempt"], "3");
    assert_eq!(upstream.count(), 4);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "upstream");
}

#[tokio::test(start_paused = true)]
async fn full_jitter_backoff_stays_under_the_exponential_ceiling() {
    let upstream = Upstream::always(StatusCode::INTERNAL_SERVER_ERROR, &[]);
    let client = layer()
        .max_attempts(6)
        .budget(RetryBudget::unlimited())
        .build()
        .unwrap()
        .layer(upstream.clone());
    let mut gaps_seen = Vec::new();
    for _ in 0..10 {
        client
            .clone()
            .oneshot(get("https://api.example.com/a"))
            .await
            .unwrap();
    }
    for attempts in upstream.log().chunks(6) {
        for (retry, pair) in attempts.windows(2).enumerate() {
            let gap = pair[1].at - pair[0].at;
            let ceiling = Duration::from_millis(100 * (1 << retry));
            assert!(gap <= ceiling, "retry {retry}: {gap:?} > {ceiling:?}");
            gaps_seen.push(gap);
        }
    }
    gaps_seen.sort();
    gaps_seen.dedup();
    assert!(gaps_seen.len() > 10, "full jitter randomises the delays");
}

#[tokio::test(start_paused = true)]
async fn the_same_seed_gives_the_same_schedule() {
    async fn schedule(seed: u64) -> Vec<Duration> {
        let upstream = Upstream::always(StatusCode::SERVICE_UNAVAILABLE, &[]);
        let client = RetryLayer::builder()
            .seed(seed)
            .max_attempts(5)
            .backoff(Backoff::new().jitter(Jitter::Decorrelated))
            .build()
            .unwrap()
            .layer(upstream.clone());
        client
            .oneshot(get("https://api.example.com/a"))
            .await
            .unwrap();
        let log = upstream.log();
        log.windows(2).map(|pair| pair[1].at - pair[0].at).collect()
    }
    assert_eq!(schedule(42).await, schedule(42).await);
    assert_ne!(schedule(42).await, schedule(43).await);
}

#[tokio::test(start_paused = true)]
async fn safe_transport_errors_are_retried_and_the_last_error_is_returned() {
    let upstream = Upstream::new(|_, _| {
        Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into())
    });
    let client = layer().build().unwrap().layer(upstream.clone());
    let error = client
        .oneshot(get("https://api.example.com/a"))
        .await
        .unwrap_err();
    let io = error.downcast_ref::<std::io::Error>().unwrap();
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
    assert_eq!(upstream.count(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_post_that_failed_after_it_was_written_is_never_sent_again() {
    // The upstream reads the whole request, then the connection breaks: the server may have
    // acted on it. Even a classifier that calls every error safe cannot make the layer repeat
    // a request that is not idempotent.
    let upstream =
        Upstream::new(|_, _| Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset).into()));
    for class in [
        ErrorClass::ConnectionLost,
        ErrorClass::NotSent,
        ErrorClass::Timeout,
    ] {
        let before = upstream.count();
        let client = layer()
            .classify_errors(move |_: &(dyn std::error::Error + 'static)| class)
            .build()
            .unwrap()
            .layer(upstream.clone());
        let error = client.clone().oneshot(post(None)).await.unwrap_err();
        assert!(error.is::<std::io::Error>());
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(upstream.count() - before, 1, "{class:?}: sent once");
        // The same failure on a request that may be repeated is retried.
        client.oneshot(post(Some("k-1"))).await.unwrap_err();
        assert_eq!(
            upstream.count() - before,
            1 + 3,
            "{class:?}: retried with a key"
        );
    }
}

/// A streaming body of `n` chunks of 1 KiB (chunk `i` filled with byte `i`), kept up to `cap`.
fn kib_chunks(n: u8, cap: usize) -> ReplayBody {
    let chunks: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> = (0..n)
        .map(|i| Ok(http_body::Frame::data(Bytes::from(vec![i; 1024]))))
        .collect();
    ReplayBody::new(StreamBody::new(futures_util::stream::iter(chunks)), cap)
}

/// The error a client returns when the connection was refused: a client error wrapping the
/// socket's `io::Error`, as hyper-util's connector does.
#[derive(Debug)]
struct ConnectFailed(std::io::Error);

impl std::fmt::Display for ConnectFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad("client error (Connect)")
    }
}

impl std::error::Error for ConnectFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

fn refused() -> BoxError {
    ConnectFailed(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)).into()
}

/// An upstream whose first attempt is refused at connect and whose later ones get `then()`.
fn refused_first(then: fn() -> Result<http::Response<Full<Bytes>>, BoxError>) -> Upstream {
    Upstream::new(move |n, _| if n == 0 { Err(refused()) } else { then() })
}

#[tokio::test(start_paused = true)]
async fn a_post_refused_at_connect_is_retried_and_reaches_the_server_once() {
    // The first attempt never left (the connection was refused); the second one is served.
    let upstream = refused_first(|| Ok(response(StatusCode::CREATED, &[])));
    let client = layer().build().unwrap().layer(upstream.clone());
    let start = Instant::now();
    let response = client.oneshot(post(None)).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let log = upstream.log();
    assert_eq!(log.len(), 2, "one refused attempt, one served");
    assert_eq!(log[1].body, "amount=10", "the body is sent whole again");
    assert!(
        log[1].at - start <= Duration::from_millis(100),
        "after the usual backoff (full jitter under the 100 ms base)"
    );
}

#[tokio::test(start_paused = true)]
async fn a_post_is_retried_only_while_its_attempts_never_left() {
    // Refused, then a 503: the 503 came from a server that saw the POST, so it ends there.
    let upstream = refused_first(|| Ok(response(StatusCode::SERVICE_UNAVAILABLE, &[])));
    let client = layer().build().unwrap().layer(upstream.clone());
    let response = client.oneshot(post(None)).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(upstream.count(), 2);

    // Refused, then reset after it was written: the server may have acted on it.
    let upstream =
        refused_first(|| Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset).into()));
    let client = layer().build().unwrap().layer(upstream.clone());
    let error = client.oneshot(post(None)).await.unwrap_err();
    assert_eq!(
        error.downcast_ref::<std::io::Error>().unwrap().kind(),
        std::io::ErrorKind::ConnectionReset
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(upstream.count(), 2);

    // Refused every time: the usual attempts, then the client's error.
    let upstream = Upstream::new(|_, _| Err(refused()));
    let client = layer().build().unwrap().layer(upstream.clone());
    let error = client.oneshot(post(None)).await.unwrap_err();
    assert!(error.is::<ConnectFailed>());
    assert_eq!(upstream.count(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_post_reset_after_it_was_sent_is_not_retried() {
    let upstream =
        Upstream::new(|_, _| Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset).into()));
    let client = layer().build().unwrap().layer(upstream.clone());
    client.clone().oneshot(post(None)).await.unwrap_err();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(upstream.count(), 1, "sent once");
    // The same reset on the same POST with a key is retried.
    client.oneshot(post(Some("k-1"))).await.unwrap_err();
    assert_eq!(upstream.count(), 1 + 3);
}

#[tokio::test(start_paused = true)]
async fn retry_unsent_false_sends_a_post_once_even_when_refused() {
    let upstream = Upstream::new(|_, _| Err(refused()));
    let client = layer()
        .retry_unsent(false)
        .build()
        .unwrap()
        .layer(upstream.clone());
    client.clone().oneshot(post(None)).await.unwrap_err();
    assert_eq!(upstream.count(), 1);
    // Idempotent requests keep their retries.
    client.oneshot(post(Some("k-1"))).await.unwrap_err();
    assert_eq!(upstream.count(), 1 + 3);
}

#[tokio::test(start_paused = true)]
async fn a_post_body_over_the_replay_cap_is_resent_whole_when_it_was_never_read() {
    // A client that fails at connect does not read the body; the second attempt reads it all.
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&bodies);
    let attempts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&attempts);
    let upstream = tower::service_fn(move |request: Request<ReplayBody>| {
        let n = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let seen = std::sync::Arc::clone(&seen);
        async move {
            if n == 0 {
                return Err(refused());
            }
            let body = request.into_body().collect().await?.to_bytes();
            seen.lock().unwrap().push(body);
            Ok::<_, BoxError>(response(StatusCode::CREATED, &[]))
        }
    });
    // A cap of 0 keeps nothing in memory: only a body never read can be sent again.
    let body = kib_chunks(4, 0);
    let request = Request::post("https://api.example.com/uploads")
        .body(body)
        .unwrap();
    let response = layer()
        .build()
        .unwrap()
        .layer(upstream)
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(attempts.load(std::sync::atomic::Ordering::SeqCst), 2);
    let bodies = bodies.lock().unwrap();
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies[0].len(), 4 * 1024);
}

#[tokio::test(start_paused = true)]
async fn a_replay_body_that_fails_mid_stream_is_not_replayed() {
    // The body breaks after its first chunk; the upstream reports the body's error, which
    // the default classifier calls retryable (a reset). The broken body cannot be replayed,
    // so the error is returned after one attempt instead of a truncated or failing replay.
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&calls);
    let upstream = tower::service_fn(move |request: Request<ReplayBody>| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            request.into_body().collect().await?;
            Ok::<_, BoxError>(http::Response::new(()))
        }
    });
    let client = layer()
        .backoff(Backoff::none())
        .build()
        .unwrap()
        .layer(upstream);
    let chunks: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> = vec![
        Ok(http_body::Frame::data(Bytes::from_static(b"first"))),
        Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
    ];
    let body = ReplayBody::new(StreamBody::new(futures_util::stream::iter(chunks)), 1024);
    let probe = body.clone();
    let request = Request::put("https://api.example.com/blob")
        .body(body)
        .unwrap();
    let error = client.oneshot(request).await.unwrap_err();
    assert_eq!(
        error.downcast_ref::<std::io::Error>().map(|e| e.kind()),
        Some(std::io::ErrorKind::ConnectionReset)
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(!probe.is_replayable());
}

#[tokio::test(start_paused = true)]
async fn fatal_errors_are_not_retried_and_classification_is_pluggable() {
    let upstream = Upstream::new(|_, _| Err("certificate expired".into()));
    let client = layer().build().unwrap().layer(upstream.clone());
    client
        .oneshot(get("https://api.example.com/a"))
        .await
        .unwrap_err();
    assert_eq!(upstream.count(), 1);

    let client = layer()
        .classify_errors(|error: &(dyn std::error::Error + 'static)| {
            if error.to_string().contains("certificate") {
                ErrorClass::NotSent
            } else {
                ErrorClass::Fatal
            }
        })
        .build()
        .unwrap()
        .layer(upstream.clone());
    client
        .oneshot(get("https://api.example.com/a"))
        .await
        .unwrap_err();
    assert_eq!(upstream.count(), 4);
}

#[tokio::test(start_paused = true)]
async fn success_and_other_statuses_are_returned_at_once() {
    let upstream = Upstream::always(StatusCode::NOT_FOUND, &[("retry-after", "1")]);
    let client = layer().build().unwrap().layer(upstream.clone());
    let response = client
        .oneshot(get("https://api.example.com/a"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(upstream.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn budget_caps_attempts_under_1000_concurrent_requests() {
    let upstream = Upstream::always(StatusCode::SERVICE_UNAVAILABLE, &[]);
    let layer = layer().build().unwrap();
    let requests = 1000;
    let mut tasks = Vec::new();
    for _ in 0..requests {
        // Each task gets its own service from the layer: they still share one budget.
        let client = layer.layer(upstream.clone());
        tasks.push(tokio::spawn(
            client.oneshot(get("https://api.example.com/a")),
        ));
    }
    for task in tasks {
        let response = task.await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let attempts = upstream.count();
    // 20% of the requests plus the floor of 10 retries/s over the 10 s window.
    let bound = requests + requests / 5 + 100;
    println!("budget: {requests} logical requests, {attempts} attempts (bound {bound})");
    assert!(attempts > requests, "some retries happen");
    assert!(attempts <= bound, "{attempts} attempts > {bound}");
}

#[tokio::test(start_paused = true)]
async fn aws_token_quota_drains_and_refunds() {
    let upstream = Upstream::new(|n, _| {
        Ok(if n < 400 {
            response(StatusCode::SERVICE_UNAVAILABLE, &[])
        } else {
            response(StatusCode::OK, &[])
        })
    });
    let layer = layer()
        .max_attempts(2)
        .budget(RetryBudget::aws_standard())
        .build()
        .unwrap();
    let client = layer.layer(upstream.clone());
    // 500 tokens / cost 5 = 100 retries; later failures are returned without a retry.
    for _ in 0..200 {
        client
            .clone()
            .oneshot(get("https://api.example.com/a"))
            .await
            .unwrap();
    }
    assert_eq!(upstream.count(), 300);
}

#[tokio::test(start_paused = true)]
async fn successes_of_requests_never_retried_refill_the_token_quota() {
    // GETs fail, POSTs (not idempotent, so never retried) succeed.
    let upstream = Upstream::new(|_, seen| {
        Ok(if seen.method == http::Method::POST {
            response(StatusCode::CREATED, &[])
        } else {
            response(StatusCode::SERVICE_UNAVAILABLE, &[])
        })
    });
    let client = layer()
        .max_attempts(2)
        .budget(RetryBudget::token_quota(10, 5, 5).unwrap())
        .build()
        .unwrap()
        .layer(upstream.clone());
    let get_attempts = |client: Retry<Upstream>| {
        let upstream = upstream.clone();
        async move {
            let before = upstream.count();
            client
                .oneshot(get("https://api.example.com/a"))
                .await
                .unwrap();
            upstream.count() - before
        }
    };
    // Two retries drain the 10 tokens; the third GET is not retried.
    assert_eq!(get_attempts(client.clone()).await, 2);
    assert_eq!(get_attempts(client.clone()).await, 2);
    assert_eq!(get_attempts(client.clone()).await, 1);
    // A POST's success refunds like any success (AWS standard mode), so a retry is possible
    // again.
    let response = client.clone().oneshot(post(None)).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(get_attempts(client.clone()).await, 2);
    assert_eq!(get_attempts(client).await, 1);
}

#[tokio::test(start_paused = true)]
async fn replay_body_under_the_cap_is_replayed_byte_identical() {
    let upstream = Upstream::new(|n, _| {
        Ok(if n == 0 {
            response(StatusCode::SERVICE_UNAVAILABLE, &[])
        } else {
            response(StatusCode::OK, &[])
        })
    });
    let client = layer().build().unwrap().layer(upstream.clone());
    let chunks: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> = (0..64u8)
        .map(|i| Ok(http_body::Frame::data(Bytes::from(vec![i; 100]))))
        .collect();
    let body = ReplayBody::new(
        StreamBody::new(futures_util::stream::iter(chunks)),
        64 * 1024,
    );
    let request = Request::put("https://api.example.com/blob")
        .body(body)
        .unwrap();
    let response = client.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let log = upstream.log();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].body.len(), 6400);
    assert_eq!(
        log[0].body, log[1].body,
        "the server sees the same body twice"
    );
}

#[tokio::test(start_paused = true)]
async fn replay_body_over_the_cap_is_sent_once() {
    let upstream = Upstream::always(StatusCode::SERVICE_UNAVAILABLE, &[]);
    let client = layer().build().unwrap().layer(upstream.clone());
    let body = kib_chunks(10, 4096);
    let request = Request::put("https://api.example.com/blob")
        .body(body)
        .unwrap();
    let response = client.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let log = upstream.log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].body.len(), 10 * 1024, "sent once, whole");
}

#[tokio::test(start_paused = true)]
async fn retries_re_drive_readiness_of_the_inner_service() {
    use tokio_test::{assert_pending, assert_ready_ok};
    let layer = layer().backoff(Backoff::none()).build().unwrap();
    let (mut service, mut handle) =
        tower_test::mock::spawn_layer::<Request<String>, http::Response<String>, _>(layer);
    handle.allow(1);
    assert_ready_ok!(service.poll_ready());
    let mut future = tokio_test::task::spawn(
        service.call(
            Request::get("https://api.example.com/a")
                .body(String::new())
                .unwrap(),
        ),
    );
    assert_pending!(future.poll());
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(
        http::Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .body(String::new())
            .unwrap(),
    );
    // The retry waits for readiness of its own clone of the mock, which has no capacity.
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_pending!(future.poll());
    assert!(
        tokio_test::task::spawn(handle.next_request())
            .poll()
            .is_pending()
    );
    handle.allow(1);
    assert_pending!(future.poll());
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(http::Response::new("done".to_string()));
    let response = future.await.unwrap();
    assert_eq!(response.into_body(), "done");
}

#[tokio::test(start_paused = true)]
async fn dropping_the_future_during_the_backoff_sends_nothing_more() {
    let upstream = Upstream::always(StatusCode::SERVICE_UNAVAILABLE, &[("retry-after", "5")]);
    let client = layer().build().unwrap().layer(upstream.clone());
    let chunks: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> =
        vec![Ok(http_body::Frame::data(Bytes::from_static(b"payload")))];
    let body = ReplayBody::new(StreamBody::new(futures_util::stream::iter(chunks)), 1024);
    let probe = body.clone();
    let request = Request::put("https://api.example.com/blob")
        .body(body)
        .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(2), client.oneshot(request)).await;
    assert!(result.is_err(), "still sleeping towards the retry");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(upstream.count(), 1);
    // The buffered body was handed back: the probe clone can still replay it.
    assert!(probe.is_replayable());
    assert_eq!(probe.collect().await.unwrap().to_bytes(), "payload");
}

#[test]
fn services_and_futures_are_send_and_sync() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let layer = RetryLayer::new();
    send_sync(&layer);
    let client: Retry<Upstream> = layer.layer(Upstream::always(StatusCode::OK, &[]));
    send_sync(&client);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let future = client.clone().oneshot(get("https://api.example.com/a"));
    send(&future);
    let body = ReplayBody::new(Full::new(Bytes::new()), 16);
    send_sync(&body);
    let _: Result<(), BoxError> = Ok(());
}

#[test]
fn invalid_configuration_is_rejected_at_build() {
    use ratewise_retry::ConfigError;
    assert_eq!(
        RetryLayer::builder().max_attempts(0).build().unwrap_err(),
        ConfigError::ZeroAttempts
    );
    assert!(matches!(
        RetryLayer::builder()
            .server_delay_jitter(Duration::from_secs(120))
            .build(),
        Err(ConfigError::ServerJitterAboveMaxWait { .. })
    ));
    assert!(matches!(
        RetryLayer::builder()
            .statuses([StatusCode::from_u16(999).unwrap()])
            .build(),
        Err(ConfigError::InvalidStatus(999))
    ));
    assert!(matches!(
        RetryLayer::builder()
            .backoff(Backoff::new().multiplier(f64::INFINITY))
            .build(),
        Err(ConfigError::InvalidMultiplier(_))
    ));
}
