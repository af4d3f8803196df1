//! ETag / Last-Modified / Cache-Control and 304s.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{at_ms, body_string, get, header, header_u64};
use http::{Request, Response, StatusCode};
use http_body_util::{Empty, Full};
use ratewise_testkit::{CacheHeaders, Dialect, EndpointConfig, MockApi, MockConfig, Quota, Reason};
use tower::ServiceExt;

async fn conditional(api: &MockApi, path: &str, name: &str, value: &str) -> Response<Full<Bytes>> {
    let request = Request::get(path)
        .header(name, value)
        .body(Empty::<Bytes>::new())
        .unwrap();
    api.clone().oneshot(request).await.unwrap()
}

fn api(cache: CacheHeaders) -> MockApi {
    MockApi::new(
        MockConfig::new().endpoint(
            EndpointConfig::new("/repos")
                .quota(Quota::fixed_window(3, Duration::from_secs(3600)))
                .dialect(Dialect::GitHub)
                .cache(cache),
        ),
    )
}

#[tokio::test(start_paused = true)]
async fn validators_and_cache_control() {
    let api = api(CacheHeaders::new().max_age(Duration::from_secs(60)));
    let response = get(&api, "/repos/a").await;
    let etag = header(&response, "etag").to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'));
    assert_eq!(
        header(&response, "last-modified"),
        "Thu, 01 Jan 2026 00:00:00 GMT"
    );
    assert_eq!(header(&response, "cache-control"), "public, max-age=60");
    let other = get(&api, "/repos/b").await;
    assert_ne!(header(&other, "etag"), etag, "per-resource etags");
}

#[tokio::test(start_paused = true)]
async fn not_modified_does_not_consume_quota_by_default() {
    let api = api(CacheHeaders::new());
    let etag = header(&get(&api, "/repos/a").await, "etag").to_owned();
    for _ in 0..10 {
        let response = conditional(&api, "/repos/a", "if-none-match", &etag).await;
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(header(&response, "etag"), etag);
        assert_eq!(header_u64(&response, "x-ratelimit-remaining"), 2);
        assert!(body_string(response).await.is_empty());
    }
    let weak = conditional(
        &api,
        "/repos/a",
        "if-none-match",
        &format!("\"x\", W/{etag}"),
    )
    .await;
    assert_eq!(weak.status(), StatusCode::NOT_MODIFIED);
    let stale = conditional(&api, "/repos/a", "if-none-match", "\"nope\"").await;
    assert_eq!(stale.status(), StatusCode::OK);
    assert_eq!(api.stats().not_modified, 11);
    assert_eq!(api.count_status(StatusCode::NOT_MODIFIED), 11);
    assert_eq!(api.stats().counted, 2);
    assert_eq!(api.max_in_window("/repos", Duration::from_secs(3600)), 2);
    assert_eq!(
        api.max_sent_in_window("/repos", Duration::from_secs(3600)),
        13
    );
    // The If-None-Match was logged.
    let logged = api.requests();
    assert_eq!(logged[1].headers["if-none-match"], etag.as_str());
    assert_eq!(logged[1].reason, Reason::NotModified);
}

#[tokio::test(start_paused = true)]
async fn not_modified_can_consume_quota() {
    let api = api(CacheHeaders::new().not_modified_consumes_quota(true));
    let etag = header(&get(&api, "/repos/a").await, "etag").to_owned();
    let first = conditional(&api, "/repos/a", "if-none-match", &etag).await;
    assert_eq!(first.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header_u64(&first, "x-ratelimit-remaining"), 1);
    assert_eq!(
        conditional(&api, "/repos/a", "if-none-match", &etag)
            .await
            .status(),
        StatusCode::NOT_MODIFIED
    );
    assert_eq!(
        conditional(&api, "/repos/a", "if-none-match", &etag)
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test(start_paused = true)]
async fn if_modified_since_and_versions_that_change() {
    let api = api(CacheHeaders::new().change_every(Duration::from_secs(30)));
    let first = get(&api, "/repos/a").await;
    let etag = header(&first, "etag").to_owned();
    let modified = header(&first, "last-modified").to_owned();
    assert!(body_string(first).await.contains("\"version\": 0"));
    at_ms(&api, 29_999).await;
    assert_eq!(
        conditional(&api, "/repos/a", "if-modified-since", &modified)
            .await
            .status(),
        StatusCode::NOT_MODIFIED
    );
    at_ms(&api, 30_000).await;
    let changed = conditional(&api, "/repos/a", "if-none-match", &etag).await;
    assert_eq!(changed.status(), StatusCode::OK);
    assert_ne!(header(&changed, "etag"), etag);
    assert_eq!(
        header(&changed, "last-modified"),
        "Thu, 01 Jan 2026 00:00:30 GMT"
    );
    assert!(body_string(changed).await.contains("\"version\": 1"));
    assert_eq!(
        conditional(&api, "/repos/a", "if-modified-since", &modified)
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test(start_paused = true)]
async fn conditional_post_is_not_a_304() {
    let api = api(CacheHeaders::new());
    let etag = header(&get(&api, "/repos/a").await, "etag").to_owned();
    let request = Request::post("/repos/a")
        .header("if-none-match", etag)
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let response = api.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(api.requests()[1].body, Bytes::from_static(b"{}"));
}
