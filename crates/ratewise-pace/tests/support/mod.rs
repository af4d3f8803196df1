//! Shared helpers of the pace integration tests.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

/// The id of a test request, carried as an extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub usize);

/// A ready service that records when each request reached it (and, optionally, stays busy
/// for `latency`), tracking the peak number in flight.
#[derive(Clone, Default)]
pub struct Recorder {
    pub log: Arc<Mutex<Vec<(Id, String, Instant)>>>,
    pub latency: Duration,
    in_flight: Arc<AtomicUsize>,
    pub peak: Arc<AtomicUsize>,
}

impl Recorder {
    pub fn with_latency(latency: Duration) -> Self {
        Recorder {
            latency,
            ..Recorder::default()
        }
    }

    pub fn admissions(&self) -> Vec<(Id, String, Instant)> {
        self.log.lock().unwrap().clone()
    }

    pub fn ids(&self) -> Vec<usize> {
        self.admissions().iter().map(|(id, _, _)| id.0).collect()
    }

    pub fn times_of(&self, path: &str) -> Vec<Instant> {
        self.admissions()
            .into_iter()
            .filter(|(_, p, _)| p == path)
            .map(|(_, _, t)| t)
            .collect()
    }
}

impl<B> tower::Service<http::Request<B>> for Recorder {
    type Response = Id;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Id, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let id = request
            .extensions()
            .get::<Id>()
            .copied()
            .unwrap_or(Id(usize::MAX));
        self.log
            .lock()
            .unwrap()
            .push((id, request.uri().path().to_owned(), Instant::now()));
        let in_flight = Arc::clone(&self.in_flight);
        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let latency = self.latency;
        Box::pin(async move {
            tokio::time::sleep(latency).await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok(id)
        })
    }
}

pub fn request(id: usize, path: &str) -> http::Request<()> {
    let mut request = http::Request::get(format!("http://api.test{path}"))
        .body(())
        .unwrap();
    request.extensions_mut().insert(Id(id));
    request
}

/// The most admissions within any window `[t, t + window]`.
pub fn max_in_window(times: &[Instant], window: Duration) -> usize {
    let mut sorted = times.to_vec();
    sorted.sort();
    let mut best = 0;
    let mut start = 0;
    for end in 0..sorted.len() {
        while sorted[end] - sorted[start] > window {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

/// A tiny deterministic generator (no dependency, seeded per test).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
