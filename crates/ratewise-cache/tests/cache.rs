//! Behaviour of `CacheLayer`, against a tiny origin service (virtual time).

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use ratewise_cache::{
    Cache, CacheBody, CacheConfig, CacheLayer, CacheStatus, SharedError, StaleReason,
};
use ratewise_core::{BoxError, CircuitOpen, Key, find_refusal};
use support::{Origin, body_of, get, response};
use tokio::time::advance;
use tower::{Layer, ServiceExt};

const URL: &str = "http://api.test/repos/a/b";

fn status<B>(response: &Response<B>) -> CacheStatus {
    *response
        .extensions()
        .get::<CacheStatus>()
        .expect("CacheStatus extension")
}

fn cached(origin: &Origin) -> Cache<Origin> {
    CacheLayer::new().layer(origin.clone())
}

fn send(
    service: &Cache<Origin>,
    request: Request<Full<Bytes>>,
) -> impl std::future::Future<Output = Result<Response<CacheBody<Full<Bytes>>>, BoxError>> + Send + 'static
{
    service.clone().oneshot(request)
}

#[tokio::test(start_paused = true)]
async fn max_age_freshness() {
    let origin = Origin::new(Duration::from_millis(10), |_, n| {
        Ok(response("max-age=60", if n == 0 { "v1" } else { "v2" }))
    });
    let service = cached(&origin);

    let first = send(&service, get(URL)).await.unwrap();
    assert_eq!(status(&first), CacheStatus::Miss);
    assert_eq!(body_of(first).await, "v1");

    advance(Duration::from_secs(59)).await;
    let hit = send(&service, get(URL)).await.unwrap();
    assert_eq!(status(&hit), CacheStatus::Hit);
    assert_eq!(hit.headers()["age"], "59");
    assert_eq!(body_of(hit).await, "v1");
    assert_eq!(origin.calls(), 1);

    advance(Duration::from_secs(2)).await;
    let expired = send(&service, get(URL)).await.unwrap();
    assert_eq!(status(&expired), CacheStatus::Miss);
    assert_eq!(body_of(expired).await, "v2");
    assert_eq!(origin.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn no_store_is_never_stored() {
    let origin = Origin::new(Duration::ZERO, |_, _| {
        Ok(response("no-store, max-age=60", "secret"))
    });
    let service = cached(&origin);
    for _ in 0..3 {
        let r = send(&service, get(URL)).await.unwrap();
        assert_eq!(status(&r), CacheStatus::Miss);
    }
    assert_eq!(origin.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn request_no_store_and_caller_conditionals_pass_through() {
    let origin = Origin::new(Duration::ZERO, |_, _| Ok(response("max-age=60", "x")));
    let service = cached(&origin);
    let no_store = Request::get(URL)
        .header("cache-control", "no-store")
        .body(Full::default())
        .unwrap();
    assert_eq!(
        status(&send(&service, no_store).await.unwrap()),
        CacheStatus::Uncacheable
    );
    let conditional = Request::get(URL)
        .header("if-none-match", "\"abc\"")
        .body(Full::default())
        .unwrap();
    assert_eq!(
        status(&send(&service, conditional).await.unwrap()),
        CacheStatus::Uncacheable
    );
    assert_eq!(origin.calls(), 2);
    // Nothing was stored by either.
    assert_eq!(
        status(&send(&service, get(URL)).await.unwrap()),
        CacheStatus::Miss
    );
}

#[tokio::test(start_paused = true)]
async fn private_responses_are_stored_by_this_private_cache() {
    let origin = Origin::new(Duration::ZERO, |_, _| {
        Ok(response("private, max-age=60", "mine"))
    });
    let service = cached(&origin);
    assert_eq!(
        status(&send(&service, get(URL)).await.unwrap()),
        CacheStatus::Miss
    );
    let hit = send(&service, get(URL)).await.unwrap();
    assert_eq!(status(&hit), CacheStatus::Hit);
    assert_eq!(body_of(hit).await, "mine");
    assert_eq!(origin.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn vary_keeps_one_variant_per_header_value() {
    let origin = Origin::new(Duration::ZERO, |req, _| {
        let body = if req.headers().get("accept").is_some_and(|a| a == "text/xml") {
            "<xml/>"
        } else {
            "{}"
        };
        Ok(Response::builder()
            .header("cache-control", "max-age=60")
            .header("vary", "Accept")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap())
    });
    let service = cached(&origin);
    let with_accept = |accept: &'static str| {
        Request::get(URL)
            .header("accept", accept)
            .body(Full::default())
            .unwrap()
    };

    assert_eq!(
        status(
            &send(&service, with_accept("application/json"))
                .await
                .unwrap()
        ),
        CacheStatus::Miss
    );
    assert_eq!(
        status(&send(&service, with_accept("text/xml")).await.unwrap()),
        CacheStatus::Miss
    );
    let json = send(&service, with_accept("application/json"))
        .await
        .unwrap();
    assert_eq!(status(&json), CacheStatus::Hit);
    assert_eq!(body_of(json).await, "{}");
    let xml = send(&service, with_accept("text/xml")).await.unwrap();
    assert_eq!(status(&xml), CacheStatus::Hit);
    assert_eq!(body_of(xml).await, "<xml/>");
    // No Accept at all is another variant.
    assert_eq!(
        status(&send(&service, get(URL)).await.unwrap()),
        CacheStatus::Miss
    );
    assert_eq!(origin.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn vary_star_is_never_served_from_cache() {
    let origin = Origin::new(Duration::ZERO, |_, _| {
        Ok(Response::builder()
            .header("cache-control", "max-age=60")
            .header("vary", "*")
            .body(Full::default())
            .unwrap())
    });
    let service = cached(&origin);
    send(&service, get(URL)).await.unwrap();
    assert_eq!(
        status(&send(&service, get(URL)).await.unwrap()),
        CacheStatus::Miss
    );
    assert_eq!(origin.calls(), 2);
}

fn last_modified_only(
    _: &Request<Full<Bytes>>,
    _: usize,
) -> Result<Response<Full<Bytes>>, BoxError> {
    // Modified 10 days before the response's date; no explicit freshness.
    let now = std::time::SystemTime::now();
    Ok(Response::builder()
        .header("date", httpdate::fmt_http_date(now))
        .header(
            "last-modified",
            httpdate::fmt_http_date(now - Duration::from_secs(10 * 86400)),
        )
        .body(Full::new(Bytes::from_static(b"doc")))
        .unwrap())
}

#[tokio::test(start_paused = true)]
async fn heuristic_freshness_is_off_by_default() {
    let origin = Origin::new(Duration::ZERO, last_modified_only);
    let service = cached(&origin);
    send(&service, get(URL)).await.unwrap();
    advance(Duration::from_secs(1)).await;
    let second = send(&service, get(URL)).await.unwrap();
    assert_ne!(status(&second), CacheStatus::Hit);
    assert_eq!(origin.calls(), 2);
    // Stored for revalidation: the second request was conditional.
    assert!(origin.seen()[1].contains_key("if-modified-since"));
}

#[tokio::test(start_paused = true)]
async fn heuristic_freshness_can_be_turned_on() {
    let origin = Origin::new(Duration::ZERO, last_modified_only);
    let layer = CacheLayer::with_config(CacheConfig::new().heuristic_freshness(Some(0.1))).unwrap();
    let service = layer.layer(origin.clone());
    send(&service, get(URL)).await.unwrap();
    advance(Duration::from_secs(3600)).await; // 10% of 10 days = 1 day of freshness
    assert_eq!(
        status(&send(&service, get(URL)).await.unwrap()),
        CacheStatus::Hit
    );
    assert_eq!(origin.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn stale_entry_is_revalidated_and_304_serves_the_stored_200() {
    let origin = Origin::new(Duration::from_millis(5), |req, _| {
        if req
            .headers()
            .get("if-none-match")
            .is_some_and(|v| v == "\"v1\"")
        {
            return Ok(Response::builder()
                .status(StatusCode::NOT_MODIFIED)
                .header("etag", "\"v1\"")
                .header("cache-control", "max-age=10")
                .header("x-served-by", "revalidation")
                .body(Full::default())
                .unwrap());
        }
        Ok(Response::builder()
            .header("etag", "\"v1\"")
            .header("cache-control", "max-age=10")
            .header("x-served-by", "first")
            .body(Full::new(Bytes::from_static(b"full body")))
            .unwrap())
    });
    let service = cached(&origin);
    assert_eq!(
        status(&send(&service, get(URL)).await.unwrap()),
        CacheStatus::Miss
    );

    advance(Duration::from_secs(11)).await;
    let revalidated = send(&service, get(URL)).await.unwrap();
    assert_eq!(status(&revalidated), CacheStatus::Revalidated);
    assert_eq!(revalidated.status(), StatusCode::OK);
    // Headers of the 304 replace the stored ones (http-cache-semantics updates the headers the
    // stored response has).
    assert_eq!(revalidated.headers()["x-served-by"], "revalidation");
    assert_eq!(body_of(revalidated).await, "full body");
    assert_eq!(origin.not_modified(), 1);
    assert_eq!(origin.seen()[1]["if-none-match"], "\"v1\"");

    // The 304 refreshed the entry: fresh again for 10 s.
    advance(Duration::from_secs(5)).await;
    let hit = send(&service, get(URL)).await.unwrap();
    assert_eq!(status(&hit), CacheStatus::Hit);
    assert_eq!(body_of(hit).await, "full body");
    assert_eq!(origin.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_revalidated_entry_keeps_the_origins_http_date() {
    const FIRST: &str = "Thu, 26 Nov 2026 10:00:00 GMT";
    const LATER: &str = "Thu, 26 Nov 2026 10:00:11 GMT";
    let origin = Origin::new(Duration::ZERO, |req, _| {
        let builder = Response::builder()
            .header("etag", "\"v1\"")
            .header("cache-control", "max-age=10");
        if req.headers().contains_key("if-none-match") {
            return Ok(builder
                .status(StatusCode::NOT_MODIFIED)
                .header("date", LATER)
                .body(Full::default())
                .unwrap());
        }
        Ok(builder
            .header("date", FIRST)
            .body(Full::new(Bytes::from_static(b"body")))
            .unwrap())
    });
    let service = cached(&origin);
    let first = send(&service, get(URL)).await.unwrap();
    assert_eq!(first.headers()["date"], FIRST);
    advance(Duration::from_secs(11)).await;
    let revalidated = send(&service, get(URL)).await.unwrap();
    assert_eq!(status(&revalidated), CacheStatus::Revalidated);
    assert_eq!(revalidated.headers()["date"], LATER);
    advance(Duration::from_secs(2)).await;
    let hit = send(&service, get(URL)).await.unwrap();
    assert_eq!(status(&hit), CacheStatus::Hit);
    let date = hit.headers()["date"].to_str().unwrap();
    assert_eq!(date, LATER);
    assert!(httpdate::parse_http_date(date).is_ok());
    assert_eq!(hit.headers()["age"], "2");
}

#[tokio::test(start_paused = true)]
async fn a_304_with_other_validators_drops_the_entry() {
    let origin = Origin::new(Duration::ZERO, |req, _| {
        if req.headers().contains_key("if-none-match") {
            // A 304 for another version than the one stored.
            return Ok(Response::builder()
                .status(StatusCode::NOT_MODIFIED)
                .header("etag", "\"v2\"")
                .body(Full::default())
                .unwrap());
        }
        Ok(Response::builder()
            .header("etag", "\"v1\"")
            .header("cache-control", "max-age=10")
            .body(Full::new(Bytes::from_static(b"v1")))
            .unwrap())
    });
    let service = cached(&origin);
    send(&service, get(URL)).await.unwrap();
    advance(Duration::from_secs(11)).await;
    let odd = send(&service, get(URL)).await.unwrap();
    assert_eq!(odd.status(), StatusCode::NOT_MODIFIED);
    assert_ne!(status(&odd), CacheStatus::Revalidated);
    // The entry is gone: the next request is unconditional and gets the full response.
    let full = send(&service, get(URL)).await.unwrap();
    assert_eq!(full.status(), StatusCode::OK);
    assert!(!origin.seen()[2].contains_key("if-none-match"));
}

#[tokio::test(start_paused = true)]
async fn authorization_isolates_users() {
    let origin = Origin::new(Duration::ZERO, |req, _| {
        let user = req
            .headers()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        Ok(Response::builder()
            .header("cache-control", "private, max-age=60")
            .body(Full::new(Bytes::from(format!("data of {user}"))))
            .unwrap())
    });
    let service = cached(&origin);
    let as_user = |token: &str| {
        Request::get(URL)
            .header("authorization", token)
            .body(Full::default())
            .unwrap()
    };

    let a = send(&service, as_user("Bearer alice")).await.unwrap();
    assert_eq!(body_of(a).await, "data of Bearer alice");
    let b = send(&service, as_user("Bearer bob")).await.unwrap();
    assert_eq!(status(&b), CacheStatus::Miss);
    assert_eq!(body_of(b).await, "data of Bearer bob");
    let anonymous = send(&service, get(URL)).await.unwrap();
    assert_eq!(status(&anonymous), CacheStatus::Miss);

    let a_again = send(&service, as_user("Bearer alice")).await.unwrap();
    assert_eq!(status(&a_again), CacheStatus::Hit);
    assert_eq!(body_of(a_again).await, "data of Bearer alice");
    let b_again = send(&service, as_user("Bearer bob")).await.unwrap();
    assert_eq!(body_of(b_again).await, "data of Bearer bob");
    assert_eq!(origin.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn concurrent_identical_gets_share_one_upstream_request() {
    let origin = Origin::new(Duration::from_millis(100), |_, _| {
        Ok(response("max-age=60", "shared"))
    });
    let service = cached(&origin);
    let calls = (0..100).map(|_| send(&service, get(URL)));
    let responses = futures_join_all(calls).await;
    assert_eq!(origin.calls(), 1);
    let mut statuses = std::collections::HashMap::new();
    for r in responses {
        let r = r.unwrap();
        *statuses.entry(status(&r)).or_insert(0) += 1;
        assert_eq!(body_of(r).await, "shared");
    }
    assert_eq!(statuses[&CacheStatus::Miss], 1);
    assert_eq!(statuses[&CacheStatus::Coalesced], 99);
}

#[tokio::test(start_paused = true)]
async fn coalesced_followers_get_only_a_response_that_varies_their_way() {
    let origin = Origin::new(Duration::from_millis(100), |request, _| {
        let accept = request.headers()["accept"].to_str().unwrap().to_owned();
        Ok(Response::builder()
            .header("cache-control", "max-age=60")
            .header("vary", "Accept")
            .body(Full::new(Bytes::from(accept)))
            .unwrap())
    });
    let service = cached(&origin);
    let with_accept = |accept: &'static str| {
        Request::get(URL)
            .header("accept", accept)
            .body(Full::default())
            .unwrap()
    };
    // Nothing is stored yet, so the three requests share a key until the response says
    // `Vary: Accept`: the XML caller must not receive the JSON answer.
    let answers = futures_join_all([
        send(&service, with_accept("application/json")),
        send(&service, with_accept("text/xml")),
        send(&service, with_accept("application/json")),
    ])
    .await;
    let mut seen = Vec::new();
    for answer in answers {
        let answer = answer.unwrap();
        seen.push((status(&answer), body_of(answer).await));
    }
    assert_eq!(
        seen,
        [
            (CacheStatus::Miss, Bytes::from("application/json")),
            (CacheStatus::Miss, Bytes::from("text/xml")),
            (CacheStatus::Coalesced, Bytes::from("application/json")),
        ]
    );
    assert_eq!(origin.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn dropped_leader_does_not_lose_the_request_for_followers() {
    let origin = Origin::new(Duration::from_millis(100), |_, _| {
        Ok(response("max-age=60", "survived"))
    });
    let service = cached(&origin);

    let mut leader = Box::pin(send(&service, get(URL)));
    // Poll the leader once so it is in flight, then drop it.
    assert!(futures_poll_once(&mut leader).await.is_none());
    let followers: Vec<_> = (0..3)
        .map(|_| tokio::spawn(send(&service, get(URL))))
        .collect();
    tokio::task::yield_now().await;
    drop(leader);

    for follower in followers {
        let r = follower.await.unwrap().unwrap();
        assert_eq!(status(&r), CacheStatus::Coalesced);
        assert_eq!(body_of(r).await, "survived");
    }
    assert_eq!(origin.calls(), 1);
    // And the response was stored although its leader left.
    assert_eq!(
        status(&send(&service, get(URL)).await.unwrap()),
        CacheStatus::Hit
    );
}

#[tokio::test(start_paused = true)]
async fn upstream_errors_reach_every_follower() {
    let origin = Origin::new(Duration::from_millis(50), |_, _| {
        Err("connection reset".into())
    });
    let service = cached(&origin);
    let results = futures_join_all((0..5).map(|_| send(&service, get(URL)))).await;
    assert_eq!(origin.calls(), 1);
    for result in results {
        let err = result.unwrap_err();
        assert!(err.downcast_ref::<SharedError>().is_some());
        assert_eq!(err.to_string(), "connection reset");
    }
    // A caller alone gets the upstream error itself.
    let err = send(&service, get(URL)).await.unwrap_err();
    assert!(err.downcast_ref::<SharedError>().is_none());
    assert_eq!(err.to_string(), "connection reset");
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_serves_stale_during_an_outage() {
    let origin = Origin::new(Duration::ZERO, |_, n| match n {
        0 => Ok(response("max-age=10, stale-if-error=60", "good")),
        1 => Ok(Response::builder()
            .status(503)
            .body(Full::default())
            .unwrap()),
        _ => Err("connection refused".into()),
    });
    let service = cached(&origin);
    send(&service, get(URL)).await.unwrap();

    advance(Duration::from_secs(20)).await;
    let during_503 = send(&service, get(URL)).await.unwrap();
    assert_eq!(status(&during_503), CacheStatus::Stale(StaleReason::Error));
    assert_eq!(during_503.status(), StatusCode::OK);
    assert_eq!(during_503.headers()["age"], "20");
    assert_eq!(body_of(during_503).await, "good");

    let during_reset = send(&service, get(URL)).await.unwrap();
    assert_eq!(
        status(&during_reset),
        CacheStatus::Stale(StaleReason::Error)
    );

    // Past the window the error reaches the caller.
    advance(Duration::from_secs(60)).await;
    assert!(send(&service, get(URL)).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn refusals_below_serve_stale_data_when_allowed() {
    let origin = Origin::new(Duration::ZERO, |_, n| match n {
        0 => Ok(response("max-age=10", "cached")),
        _ => Err(Box::new(CircuitOpen::new(
            Key::new("api.test"),
            Duration::from_secs(30),
        ))),
    });
    let service = cached(&origin);
    send(&service, get(URL)).await.unwrap();
    advance(Duration::from_secs(15)).await;
    let r = send(&service, get(URL)).await.unwrap();
    assert_eq!(status(&r), CacheStatus::Stale(StaleReason::Refused));
    assert_eq!(body_of(r).await, "cached");

    // Turned off: the refusal reaches the caller, still recognisable.
    let origin2 = Origin::new(Duration::ZERO, |_, n| match n {
        0 => Ok(response("max-age=10", "cached")),
        _ => Err(Box::new(CircuitOpen::new(
            Key::new("api.test"),
            Duration::from_secs(30),
        ))),
    });
    let strict = CacheLayer::with_config(CacheConfig::new().stale_on_refusal(None))
        .unwrap()
        .layer(origin2);
    strict.clone().oneshot(get(URL)).await.unwrap();
    advance(Duration::from_secs(15)).await;
    let err = strict.clone().oneshot(get(URL)).await.unwrap_err();
    assert!(find_refusal(&*err).is_some());
}

#[tokio::test(start_paused = true)]
async fn must_revalidate_is_not_served_stale_on_refusal() {
    let origin = Origin::new(Duration::ZERO, |_, n| match n {
        0 => Ok(response("max-age=10, must-revalidate", "strict")),
        _ => Err(Box::new(CircuitOpen::new(
            Key::new("api.test"),
            Duration::from_secs(30),
        ))),
    });
    let service = cached(&origin);
    send(&service, get(URL)).await.unwrap();
    advance(Duration::from_secs(15)).await;
    assert!(send(&service, get(URL)).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn stale_while_revalidate_answers_at_once_and_refreshes_in_background() {
    let origin = Origin::new(Duration::from_millis(200), |_, n| {
        Ok(response(
            "max-age=10, stale-while-revalidate=30",
            if n == 0 { "old" } else { "new" },
        ))
    });
    let service = cached(&origin);
    send(&service, get(URL)).await.unwrap();
    advance(Duration::from_secs(15)).await;

    let start = tokio::time::Instant::now();
    let stale = send(&service, get(URL)).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(
        status(&stale),
        CacheStatus::Stale(StaleReason::WhileRevalidate)
    );
    assert_eq!(body_of(stale).await, "old");
    // A second stale read does not start a second refresh.
    send(&service, get(URL)).await.unwrap();

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(origin.calls(), 2);
    let fresh = send(&service, get(URL)).await.unwrap();
    assert_eq!(status(&fresh), CacheStatus::Hit);
    assert_eq!(body_of(fresh).await, "new");
}

#[tokio::test(start_paused = true)]
async fn a_caller_demanding_revalidation_is_never_answered_stale() {
    let origin = Origin::new(Duration::from_millis(200), |_, n| {
        Ok(response(
            "max-age=10, stale-while-revalidate=30",
            if n == 0 { "old" } else { "new" },
        ))
    });
    let service = cached(&origin);
    send(&service, get(URL)).await.unwrap();

    for directive in ["no-cache", "max-age=0"] {
        // Fresh for the cache (age 1 s of 10), not for this caller.
        advance(Duration::from_secs(1)).await;
        let start = tokio::time::Instant::now();
        let request = Request::get(URL)
            .header("cache-control", directive)
            .body(Full::default())
            .unwrap();
        let answer = send(&service, request).await.unwrap();
        assert_eq!(status(&answer), CacheStatus::Miss, "{directive}");
        assert_eq!(start.elapsed(), Duration::from_millis(200), "{directive}");
        assert_eq!(body_of(answer).await, "new", "{directive}");
    }
    assert_eq!(origin.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn must_revalidate_overrides_stale_while_revalidate() {
    let origin = Origin::new(Duration::from_millis(200), |_, n| {
        Ok(response(
            "max-age=10, stale-while-revalidate=30, must-revalidate",
            if n == 0 { "old" } else { "new" },
        ))
    });
    let service = cached(&origin);
    send(&service, get(URL)).await.unwrap();
    advance(Duration::from_secs(15)).await;
    let answer = send(&service, get(URL)).await.unwrap();
    assert_eq!(status(&answer), CacheStatus::Miss);
    assert_eq!(body_of(answer).await, "new");
    assert_eq!(origin.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn too_many_requests_is_never_stored() {
    let origin = Origin::new(Duration::ZERO, |_, _| {
        Ok(Response::builder()
            .status(429)
            .header("cache-control", "max-age=60")
            .header("retry-after", "1")
            .body(Full::default())
            .unwrap())
    });
    let service = cached(&origin);
    for _ in 0..2 {
        let r = send(&service, get(URL)).await.unwrap();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(status(&r), CacheStatus::Miss);
    }
    assert_eq!(origin.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn oversized_bodies_stream_through_uncached() {
    static BIG: [u8; 4096] = [b'x'; 4096];
    let origin = Origin::new(Duration::from_millis(10), |_, _| {
        Ok(Response::builder()
            .header("cache-control", "max-age=60")
            .body(Full::new(Bytes::from_static(&BIG)))
            .unwrap())
    });
    let layer = CacheLayer::with_config(
        CacheConfig::new()
            .max_bytes(64 * 1024)
            .max_entry_bytes(1024),
    )
    .unwrap();
    let service = layer.layer(origin.clone());
    let results = futures_join_all((0..3).map(|_| send(&service, get(URL)))).await;
    for r in results {
        let r = r.unwrap();
        assert_eq!(status(&r), CacheStatus::Miss);
        assert_eq!(body_of(r).await.len(), 4096);
    }
    // The leader's request plus one own request per follower; nothing stored.
    assert_eq!(origin.calls(), 3);
    assert_eq!(
        status(&send(&service, get(URL)).await.unwrap()),
        CacheStatus::Miss
    );
}

#[tokio::test(start_paused = true)]
async fn memory_stays_under_the_byte_bound() {
    const BOUND: u64 = 64 * 1024;
    static BODY: [u8; 1024] = [b'y'; 1024];
    let origin = Origin::new(Duration::ZERO, |_, _| {
        Ok(Response::builder()
            .header("cache-control", "max-age=600")
            .body(Full::new(Bytes::from_static(&BODY)))
            .unwrap())
    });
    let layer =
        CacheLayer::with_config(CacheConfig::new().max_bytes(BOUND).max_entry_bytes(4096)).unwrap();
    let service = layer.layer(origin.clone());
    // 10x the bound in bodies alone.
    for i in 0..640 {
        send(&service, get(&format!("http://api.test/items/{i}")))
            .await
            .unwrap();
    }
    layer.run_pending_tasks();
    assert!(
        layer.resident_bytes() <= BOUND,
        "resident {} > bound {BOUND}",
        layer.resident_bytes()
    );
    assert!(
        layer.resident_bytes() > BOUND / 2,
        "the store is used: {}",
        layer.resident_bytes()
    );
    assert!(layer.entry_count() < 64);
}

#[tokio::test(start_paused = true)]
async fn unsafe_methods_invalidate_the_stored_uri() {
    let origin = Origin::new(Duration::ZERO, |_, _| Ok(response("max-age=60", "x")));
    let service = cached(&origin);
    send(&service, get(URL)).await.unwrap();
    assert_eq!(
        status(&send(&service, get(URL)).await.unwrap()),
        CacheStatus::Hit
    );
    let post = Request::post(URL)
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    assert_eq!(
        status(&send(&service, post).await.unwrap()),
        CacheStatus::Uncacheable
    );
    assert_eq!(
        status(&send(&service, get(URL)).await.unwrap()),
        CacheStatus::Miss
    );
}

#[tokio::test(start_paused = true)]
async fn counters_are_recorded() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let origin = Origin::new(Duration::from_millis(10), |_, _| {
        Ok(response("max-age=60", "m"))
    });
    let service = cached(&origin);
    futures_join_all((0..3).map(|_| send(&service, get(URL)))).await;
    send(&service, get(URL)).await.unwrap();

    let mut counts = std::collections::HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        assert_eq!(
            key.name(),
            ratewise_core::metric_names::CACHE_REQUESTS_TOTAL
        );
        let label = key
            .labels()
            .find(|l| l.key() == "status")
            .unwrap()
            .value()
            .to_owned();
        if let metrics_util::debugging::DebugValue::Counter(n) = value {
            counts.insert(label, n);
        }
    }
    assert_eq!(counts.get("miss"), Some(&1));
    assert_eq!(counts.get("coalesced"), Some(&2));
    assert_eq!(counts.get("hit"), Some(&1));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_upstream_frees_its_followers_and_the_key() {
    let origin = Origin::new(Duration::from_millis(10), |_, n| {
        if n == 0 {
            panic!("upstream bug");
        }
        Ok(response("max-age=60", "after"))
    });
    let service = cached(&origin);
    let results = futures_join_all((0..3).map(|_| send(&service, get(URL)))).await;
    for result in results {
        assert!(
            result
                .unwrap_err()
                .downcast_ref::<ratewise_cache::UpstreamTaskLost>()
                .is_some()
        );
    }
    // The in-flight slot was released: the next request goes upstream again.
    let r = send(&service, get(URL)).await.unwrap();
    assert_eq!(status(&r), CacheStatus::Miss);
    assert_eq!(origin.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn coalescing_can_be_turned_off() {
    let origin = Origin::new(Duration::from_millis(10), |_, _| {
        Ok(response("max-age=60", "x"))
    });
    let layer = CacheLayer::with_config(CacheConfig::new().coalesce(false)).unwrap();
    let service = layer.layer(origin.clone());
    let results = futures_join_all((0..3).map(|_| send(&service, get(URL)))).await;
    assert!(
        results
            .iter()
            .all(|r| status(r.as_ref().unwrap()) == CacheStatus::Miss)
    );
    assert_eq!(origin.calls(), 3);
    assert_eq!(
        status(&send(&service, get(URL)).await.unwrap()),
        CacheStatus::Hit
    );
}

#[test]
fn traits() {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}
    assert_send_sync::<CacheLayer>();
    assert_send_sync::<Cache<Origin>>();
    assert_send::<ratewise_cache::cache::future::ResponseFuture<Full<Bytes>>>();
    assert_send_sync::<CacheBody<Full<Bytes>>>();
}

// Small future helpers, to avoid a futures-util dev-dependency.
async fn futures_join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

async fn futures_poll_once<F: std::future::Future + Unpin>(future: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| match std::pin::Pin::new(&mut *future).poll(cx) {
        std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

#[allow(dead_code)]
fn _body_is_collectable(b: CacheBody<Full<Bytes>>) -> impl std::future::Future {
    b.collect()
}
