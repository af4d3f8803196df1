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

/// A loopback address whose port refuses connections: a listener bound there and dropped.
async fn refused_port() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// The default layer, retrying at once.
fn without_backoff() -> RetryLayer {
    RetryLayer::builder()
        .backoff(Backoff::none())
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn connect_refused_is_retried_and_returned_as_the_clients_error() {
    let addr = refused_port().await;
    let client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody>();
    let attempts = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&attempts);
    let counting = ServiceBuilder::new()
        .map_request(move |request: Request<ReplayBody>| {
            counted.fetch_add(1, Ordering::SeqCst);
            request
        })
        .service(client);
    let retrying = without_backoff().layer(counting);
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
    let mut retrying = without_backoff().layer(client);
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

/// Reads what `socket` has to give into `into`; `false` once the peer closed it or it failed.
async fn read_some(socket: &tokio::net::TcpStream, into: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        if socket.readable().await.is_err() {
            return false;
        }
        match socket.try_read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => {
                into.extend_from_slice(&buf[..n]);
                return true;
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return false,
        }
    }
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
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    if !read_some(&socket, &mut head).await {
                        return;
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

/// Writes all of `bytes` (tokio's `io-util` is not enabled for this crate).
async fn write_all(socket: &tokio::net::TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        socket.writable().await?;
        match socket.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Serves HTTP/1.1 on `listener`: reads each request whole (head and `content-length` body),
/// records it, and answers `201 Created`.
fn serve_created(listener: std::net::TcpListener) -> Arc<std::sync::Mutex<Vec<String>>> {
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let received = Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = Arc::clone(&received);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let recorded = Arc::clone(&recorded);
            tokio::spawn(async move {
                let mut request = Vec::new();
                loop {
                    let text = String::from_utf8_lossy(&request).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text
                            .lines()
                            .find_map(|line| {
                                let (name, value) = line.split_once(':')?;
                                name.eq_ignore_ascii_case("content-length")
                                    .then(|| value.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            recorded.lock().unwrap().push(text);
                            let answer = b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n";
                            if write_all(&socket, answer).await.is_err() {
                                return;
                            }
                            request.clear();
                            continue;
                        }
                    }
                    if !read_some(&socket, &mut request).await {
                        return;
                    }
                }
            });
        }
    });
    received
}

#[tokio::test(start_paused = true)]
async fn a_post_to_a_refused_port_is_retried_once_a_server_listens_there() {
    // The port refuses connections until the server below binds it.
    let addr = refused_port().await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let attempts = Arc::new(AtomicUsize::new(0));
    let server = Arc::new(std::sync::Mutex::new(None));
    let counting = ServiceBuilder::new()
        .map_request({
            let attempts = Arc::clone(&attempts);
            let server = Arc::clone(&server);
            move |request: Request<Full<Bytes>>| {
                // The first attempt finds the port closed; the server appears before the next.
                if attempts.fetch_add(1, Ordering::SeqCst) == 1 {
                    let listener = std::net::TcpListener::bind(addr).unwrap();
                    *server.lock().unwrap() = Some(serve_created(listener));
                }
                request
            }
        })
        .service(client);
    let retrying = without_backoff().layer(counting);
    let post = Request::post(format!("http://{addr}/charges"))
        .body(Full::new(Bytes::from_static(b"amount=10")))
        .unwrap();
    let response = retrying.oneshot(post).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    let received = server.lock().unwrap().clone().expect("the server started");
    let received = received.lock().unwrap();
    assert_eq!(received.len(), 1, "the server saw the POST once");
    assert!(received[0].starts_with("POST /charges HTTP/1.1\r\n"));
    assert!(received[0].ends_with("\r\n\r\namount=10"));
}
