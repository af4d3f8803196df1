//! Server mode with a real hyper-util client over loopback (real clock; no timing asserts).

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ratewise_testkit::{
    Dialect, EndpointConfig, Faults, MockApi, MockConfig, Outage, Outcome, Quota, Reason,
};

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn get(url: String) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::new(Bytes::new())).unwrap()
}

#[tokio::test]
async fn serves_the_same_mock_over_loopback() {
    let api = MockApi::new(
        MockConfig::new().endpoint(
            EndpointConfig::new("/repos")
                .quota(Quota::fixed_window(3, Duration::from_secs(3600)))
                .dialect(Dialect::GitHub),
        ),
    );
    let server = api.serve().await.unwrap();
    assert!(server.addr().ip().is_loopback());
    assert_eq!(
        server.base_url(),
        format!("http://127.0.0.1:{}", server.addr().port())
    );
    let client = client();
    let mut statuses = Vec::new();
    let mut remaining = Vec::new();
    for _ in 0..5 {
        let response = client
            .request(get(format!("{}/repos/a/b", server.base_url())))
            .await
            .unwrap();
        statuses.push(response.status());
        remaining.push(
            response.headers()["x-ratelimit-remaining"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
        assert!(response.headers().contains_key("date"));
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            let retry: u64 = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=3600).contains(&retry));
        }
        response.into_body().collect().await.unwrap();
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    assert_eq!(remaining, ["2", "1", "0", "0", "0"]);
    assert_eq!(api.count(), 5);
    assert_eq!(api.count_limited(), 2);

    let post = Request::post(format!("{}/repos/x", server.base_url()))
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    client
        .request(post)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    assert_eq!(
        api.requests().last().unwrap().body,
        Bytes::from_static(b"hello")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn injected_resets_close_the_connection_without_a_response() {
    let api = MockApi::new(
        MockConfig::new()
            .endpoint(EndpointConfig::new("/api").faults(Faults::new().reset_every(2))),
    );
    let server = api.serve().await.unwrap();
    let client = client();
    let url = || format!("{}/api", server.base_url());
    let first = client.request(get(url())).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    first.into_body().collect().await.unwrap();
    let second = client.request(get(url())).await;
    assert!(
        second.is_err(),
        "a reset must not produce a response: {second:?}"
    );
    let third = client.request(get(url())).await.unwrap();
    assert_eq!(third.status(), StatusCode::OK);
    let log = api.requests();
    assert_eq!(log.len(), 3);
    assert_eq!(log[1].outcome, Outcome::ConnectionReset);
    server.shutdown().await;
}

#[tokio::test]
async fn outage_as_resets_and_as_503_over_loopback() {
    let api = MockApi::new(
        MockConfig::new()
            .endpoint(
                EndpointConfig::new("/down")
                    .outage(Outage::new(Duration::ZERO, Duration::from_secs(3600)).reset()),
            )
            .endpoint(
                EndpointConfig::new("/busy")
                    .outage(Outage::new(Duration::ZERO, Duration::from_secs(3600))),
            ),
    );
    let server = api.serve().await.unwrap();
    let client = client();
    assert!(
        client
            .request(get(format!("{}/down", server.base_url())))
            .await
            .is_err()
    );
    let busy = client
        .request(get(format!("{}/busy", server.base_url())))
        .await
        .unwrap();
    assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(api.requests().iter().all(|r| r.reason == Reason::Outage));
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_accepting_and_drop_stops_too() {
    let api = MockApi::new(MockConfig::new().endpoint(EndpointConfig::new("/")));
    let server = api.serve().await.unwrap();
    let url = format!("{}/anything", server.base_url());
    let response = client().request(get(url.clone())).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    drop(response);
    server.clone().shutdown().await;
    // A fresh client (no pooled connection) cannot connect any more.
    assert!(client().request(get(url)).await.is_err());

    let second = api.serve().await.unwrap();
    let url = format!("{}/x", second.base_url());
    drop(second);
    // The accept loop stops once the last handle is dropped; poll until it has.
    let mut refused = false;
    for _ in 0..200 {
        if client().request(get(url.clone())).await.is_err() {
            refused = true;
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(refused);
}

#[tokio::test]
async fn resets_are_tcp_rst_on_the_wire() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let api = MockApi::new(
        MockConfig::new()
            .endpoint(EndpointConfig::new("/api").faults(Faults::new().reset_every(1))),
    );
    let server = api.serve().await.unwrap();
    let mut stream = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    stream
        .write_all(b"GET /api HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = Vec::new();
    let read = stream.read_to_end(&mut buffer).await;
    let error = read.expect_err("no orderly close and no response");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset);
    assert!(buffer.is_empty());
    server.shutdown().await;
}
