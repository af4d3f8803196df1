//! The retry layer over a real hyper-util client: connection errors are classified from the
//! client's own error, and a `ReplayBody` is replayed over the wire to MockApi's loopback server.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use http_body_util::StreamBody;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ratewise_retry::{Backoff, ErrorClass, ReplayBody, RetryLayer};
use ratewise_testkit::{EndpointConfig, Faults, MockApi, MockConfig};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

fn streaming(len: usize) -> ReplayBody {
    let chunks: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> = (0..len / 1000)
        .map(|i| {
            Ok(http_body::Frame::data(Bytes::from(vec![
                b'0' + (i % 10)
                    as u8;
                1000
            ])))
        })
        .collect();
    ReplayBody::with_default_cap(StreamBody::new(futures_util::stream::iter(chunks)))
}

#[tokio::test(start_paused = true)]
async fn connect_refused_is_retried_and_returned_as_the_clients_error() {
    // Bind then drop a listener: its port now refuses connections.
    let addr = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody>();
    let attempts = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&attempts);
    let counting = ServiceBuilder::new()
        .map_request(move |request: Request<ReplayBody>| {
            counted.fetch_add(1, Ordering::SeqCst);
            request
        })
        .service(client);
    let retrying = RetryLayer::builder()
        .backoff(Backoff::none())
        .build()
        .unwrap()
        .layer(counting);
    let request = Request::put(format!("http://{addr}/items/1"))
        .body(streaming(3000))
        .unwrap();
    let error = retrying.oneshot(request).await.unwrap_err();
    let client_error = error
        .downcast_ref::<hyper_util::client::legacy::Error>()
        .expect("the client's error is returned as is");
    assert!(client_error.is_connect());
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn replay_body_is_replayed_over_http_to_the_loopback_mock() {
    // Every second admitted request fails with 503: a warm-up passes, the PUT fails, its
    // replay passes.
    let api = MockApi::new(
        MockConfig::new().endpoint(
            EndpointConfig::new("/blobs")
                .faults(Faults::new().error_every(2, StatusCode::SERVICE_UNAVAILABLE)),
        ),
    );
    let server = api.serve().await.unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody>();
    let mut retrying = RetryLayer::builder()
        .backoff(Backoff::none())
        .build()
        .unwrap()
        .layer(client);
    let base = server.base_url();
    let warm_up = Request::get(format!("{base}/blobs/0"))
        .body(streaming(0))
        .unwrap();
    let response = retrying.ready().await.unwrap().call(warm_up).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let request = Request::put(format!("{base}/blobs/1"))
        .body(streaming(20_000))
        .unwrap();
    let response = retrying.ready().await.unwrap().call(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let log = api.requests();
    assert_eq!(log.len(), 3);
    assert_eq!(log[1].status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(log[1].body_len, 20_000);
    assert_eq!(
        log[1].body, log[2].body,
        "the server saw the same body twice"
    );
    server.shutdown().await;
}

/// A server that reads each request's head and hangs up without answering: the request was
/// written (and, for all the client knows, processed). Counts the requests it read.
async fn hang_up_server() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&received);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let counted = Arc::clone(&counted);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    if socket.readable().await.is_err() {
                        return;
                    }
                    match socket.try_read(&mut buf) {
                        Ok(0) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => return,
                    }
                }
                counted.fetch_add(1, Ordering::SeqCst);
                // Dropping the socket closes the connection before any response.
            });
        }
    });
    (addr, received)
}

#[tokio::test(start_paused = true)]
async fn a_post_whose_connection_broke_after_it_was_written_reaches_the_server_once() {
    let (addr, received) = hang_up_server().await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    // A classifier that calls every error safe: idempotency alone must prevent the duplicate.
    let retrying = RetryLayer::builder()
        .backoff(Backoff::none())
        .classify_errors(|_: &(dyn std::error::Error + 'static)| ErrorClass::NotSent)
        .build()
        .unwrap()
        .layer(client);
    let post = Request::post(format!("http://{addr}/charges"))
        .body(Full::new(Bytes::from_static(b"amount=10")))
        .unwrap();
    retrying.clone().oneshot(post).await.unwrap_err();
    assert_eq!(received.load(Ordering::SeqCst), 1, "the POST was sent once");

    // The same failure on a GET is retried, so the server would have seen a duplicate.
    let get = Request::get(format!("http://{addr}/charges"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    retrying.oneshot(get).await.unwrap_err();
    assert_eq!(received.load(Ordering::SeqCst), 1 + 3);
}
