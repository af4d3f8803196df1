//! A tiny controllable upstream for the breaker's behaviour tests.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use ratewise_breaker::{BoxError, CircuitOpen};
use tokio::sync::watch;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

/// What the upstream answers, and what it saw.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

struct Inner {
    status: AtomicU16,
    fail_with_error: AtomicBool,
    latency_ms: AtomicU64,
    hang: AtomicBool,
    release: watch::Sender<u64>,
    calls: AtomicUsize,
    calls_by_host: Mutex<HashMap<String, usize>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

struct InFlight(Arc<Inner>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Upstream {
    pub fn new() -> Self {
        Upstream {
            inner: Arc::new(Inner {
                status: AtomicU16::new(200),
                fail_with_error: AtomicBool::new(false),
                latency_ms: AtomicU64::new(0),
                hang: AtomicBool::new(false),
                release: watch::channel(0).0,
                calls: AtomicUsize::new(0),
                calls_by_host: Mutex::new(HashMap::new()),
                in_flight: AtomicUsize::new(0),
                max_in_flight: AtomicUsize::new(0),
            }),
        }
    }

    /// Answer with this status from now on.
    pub fn status(&self, status: u16) {
        self.inner.status.store(status, Ordering::SeqCst);
        self.inner.fail_with_error.store(false, Ordering::SeqCst);
    }

    /// Fail with a transport error from now on.
    pub fn connection_errors(&self) {
        self.inner.fail_with_error.store(true, Ordering::SeqCst);
    }

    pub fn latency(&self, latency: Duration) {
        self.inner
            .latency_ms
            .store(latency.as_millis() as u64, Ordering::SeqCst);
    }

    /// Requests arriving from now on wait until [`release`](Self::release).
    pub fn hang(&self) {
        self.inner.hang.store(true, Ordering::SeqCst);
    }

    /// New requests no longer hang; those waiting keep waiting until [`release`](Self::release).
    pub fn stop_hanging(&self) {
        self.inner.hang.store(false, Ordering::SeqCst);
    }

    /// Lets every waiting request answer, and stops hanging new ones.
    pub fn release(&self) {
        self.inner.hang.store(false, Ordering::SeqCst);
        self.inner.release.send_modify(|n| *n += 1);
    }

    pub fn calls(&self) -> usize {
        self.inner.calls.load(Ordering::SeqCst)
    }

    pub fn calls_for(&self, host: &str) -> usize {
        self.inner
            .calls_by_host
            .lock()
            .unwrap()
            .get(host)
            .copied()
            .unwrap_or(0)
    }

    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::SeqCst)
    }

    pub fn max_in_flight(&self) -> usize {
        self.inner.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn reset_max_in_flight(&self) {
        self.inner
            .max_in_flight
            .store(self.in_flight(), Ordering::SeqCst);
    }

    pub fn service(&self) -> BoxCloneSyncService<Request<()>, Response<()>, std::io::Error> {
        let upstream = self.clone();
        BoxCloneSyncService::new(tower::service_fn(move |request: Request<()>| {
            let inner = Arc::clone(&upstream.inner);
            async move {
                inner.calls.fetch_add(1, Ordering::SeqCst);
                let host = request.uri().host().unwrap_or("").to_owned();
                *inner.calls_by_host.lock().unwrap().entry(host).or_default() += 1;
                let now = inner.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                inner.max_in_flight.fetch_max(now, Ordering::SeqCst);
                let _in_flight = InFlight(Arc::clone(&inner));
                if inner.hang.load(Ordering::SeqCst) {
                    let mut release = inner.release.subscribe();
                    release.changed().await.ok();
                }
                let latency = inner.latency_ms.load(Ordering::SeqCst);
                if latency > 0 {
                    tokio::time::sleep(Duration::from_millis(latency)).await;
                }
                if inner.fail_with_error.load(Ordering::SeqCst) {
                    return Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
                }
                let status = inner.status.load(Ordering::SeqCst);
                Ok(Response::builder().status(status).body(()).unwrap())
            }
        }))
    }
}

pub fn get(host: &str) -> Request<()> {
    Request::get(format!("https://{host}/items"))
        .body(())
        .unwrap()
}

/// Sends one request through `service` (a clone of it, readied first).
pub async fn send<S>(service: &S, host: &str) -> Result<Response<()>, BoxError>
where
    S: tower::Service<Request<()>, Response = Response<()>, Error = BoxError> + Clone,
{
    service.clone().oneshot(get(host)).await
}

/// The refusal inside `result`, if the breaker refused.
pub fn refusal(result: &Result<Response<()>, BoxError>) -> Option<&CircuitOpen> {
    match result {
        Err(error) => error.downcast_ref::<CircuitOpen>(),
        Ok(_) => None,
    }
}
