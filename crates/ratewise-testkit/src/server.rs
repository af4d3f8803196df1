//! Server mode: the same [`MockApi`] behind a hyper 1 HTTP/1.1 server on loopback.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::MockApi;

/// How long [`MockServer::shutdown`] waits for open connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running loopback server for a [`MockApi`] (see [`MockApi::serve`]).
///
/// # Clone
///
/// Clones refer to the same server. The server stops when [`shutdown`](Self::shutdown) is
/// called or when the last clone is dropped.
#[derive(Clone)]
pub struct MockServer {
    addr: SocketAddr,
    control: Arc<Control>,
}

struct Control {
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Control {
    fn drop(&mut self) {
        // Dropping the sender stops the accept loop, which then closes connections gracefully.
        if let Ok(mut stop) = self.stop.lock() {
            stop.take();
        }
    }
}

impl fmt::Debug for MockServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl MockServer {
    /// The bound address (127.0.0.1 and an ephemeral port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, lets open connections finish (idle keep-alive connections are closed at
    /// once; at most 5 s for busy ones) and waits for the server task.
    pub async fn shutdown(self) {
        let stop = self.control.stop.lock().ok().and_then(|mut s| s.take());
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
        let task = self.control.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl MockApi {
    /// Serves this mock (same state and log) over HTTP/1.1 on `127.0.0.1` with an ephemeral
    /// port. Connection resets (faults, outages with [`Outage::reset`](crate::Outage::reset))
    /// close the TCP connection with RST without a response.
    ///
    /// Latency and windows follow tokio's clock, which is the real clock unless the runtime's
    /// time is paused.
    ///
    /// # Errors
    ///
    /// Binding the listener failed.
    pub async fn serve(&self) -> io::Result<MockServer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, self.clone(), stop_rx));
        Ok(MockServer {
            addr,
            control: Arc::new(Control {
                stop: Mutex::new(Some(stop_tx)),
                task: Mutex::new(Some(task)),
            }),
        })
    }
}

async fn accept_loop(listener: TcpListener, api: MockApi, mut stop: oneshot::Receiver<()>) {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new());
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    // Zero linger: when a service error drops the connection (an injected
                    // reset), the kernel sends RST instead of FIN.
                    if let Err(error) = stream.set_zero_linger() {
                        tracing::debug!(%error, "mock api: could not set SO_LINGER");
                    }
                    let _ = stream.set_nodelay(true);
                    let connection = builder.serve_connection(
                        TokioIo::new(stream),
                        TowerToHyperService::new(api.clone()),
                    );
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        if let Err(error) = connection.await {
                            tracing::debug!(%error, "mock api: connection ended with an error");
                        }
                    });
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "mock api: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = &mut stop => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("mock api: connections still open after the shutdown grace period");
    }
}
