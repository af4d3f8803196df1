//! Fixed windows with a small quota (GitHub `/search` style), with many callers sending as fast
//! as the layer lets them: the first requests after each window reset must not be refused.
//!
//! Coverage for a report of 429s "right after a window reset" with 5 s windows, GitHub headers
//! and a pacing burst equal to the window's quota. The bound asked for was ">= 95% of the
//! allowed rate with at most one 429 per key per window"; the layer does better: none at all.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{Empty, Full};
use ratewise_adapt::AdaptLayer;
use ratewise_core::BoxError;
use ratewise_testkit::{
    DEFAULT_WALL_CLOCK_START_SECS, Dialect, EndpointConfig, MockApi, MockConfig, Quota,
};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

const PATH: &str = "http://api.test/search/code?q=tower";
const PERIOD: Duration = Duration::from_secs(5);
const WINDOWS: u32 = 24;

type Body = Empty<Bytes>;

#[derive(Clone, Copy, Debug)]
enum Latency {
    Fixed(u64),
    Uniform(u64, u64),
}

/// A `/search` endpoint with a fixed window of `limit` per 5 s and GitHub headers; the
/// server's wall clock starts `offset` after a whole second (so its resets, stated in whole
/// epoch seconds, may fall between the client's ticks).
fn search_api(limit: u64, latency: Latency, offset: Duration) -> MockApi {
    let endpoint = EndpointConfig::new("/search")
        .quota(Quota::fixed_window(limit, PERIOD).name("search"))
        .dialect(Dialect::GitHub);
    let endpoint = match latency {
        Latency::Fixed(ms) => endpoint.latency(Duration::from_millis(ms)),
        Latency::Uniform(min, max) => {
            endpoint.latency_uniform(Duration::from_millis(min), Duration::from_millis(max))
        }
    };
    let start = UNIX_EPOCH + Duration::from_secs(DEFAULT_WALL_CLOCK_START_SECS) + offset;
    MockApi::new(MockConfig::new().endpoint(endpoint).wall_clock_start(start))
}

/// `callers` tasks send through `layer` over `inner` until `WINDOWS` windows have passed; the
/// layer never refuses (no wait here is longer than `max_wait`).
async fn drive<S>(layer: &AdaptLayer, inner: S, callers: usize)
where
    S: Service<Request<Body>, Response = Response<Full<Bytes>>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    let end = Instant::now() + PERIOD * WINDOWS;
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let mut service = layer.layer(inner.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let request = Request::get(PATH).body(Body::new()).unwrap();
                let ready = ServiceExt::<Request<Body>>::ready(&mut service)
                    .await
                    .unwrap();
                ready.call(request).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// Admitted requests and refusals (429 or GitHub's 403) per server window.
fn per_window(api: &MockApi) -> Vec<(usize, usize)> {
    let mut counts = vec![(0usize, 0usize); WINDOWS as usize];
    for entry in api.requests() {
        let index = (entry.since_start.as_nanos() / PERIOD.as_nanos()) as usize;
        let Some(count) = counts.get_mut(index) else {
            continue;
        };
        if entry.status.is_success() {
            count.0 += 1;
        } else if matches!(
            entry.status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::FORBIDDEN
        ) {
            count.1 += 1;
        }
    }
    counts
}

/// No 429 in any window (the issue allows one per window), and >= 95% of the allowed rate.
fn assert_full_rate_without_refusals(case: &str, limit: u64, counts: &[(usize, usize)]) {
    let admitted: usize = counts.iter().map(|(ok, _)| ok).sum();
    let allowed = limit as usize * counts.len();
    let ratio = admitted as f64 / allowed as f64;
    assert!(
        counts.iter().all(|(_, refused)| *refused == 0),
        "{case}: refusals per window {counts:?}"
    );
    assert!(
        ratio >= 0.95,
        "{case}: only {ratio:.3} of the rate: {counts:?}"
    );
}

/// 16 to 64 callers, limits of 3 to 30 per 5 s window, short and long latencies, the server's
/// resets on and between whole seconds: every window is used in full, never overshot.
#[tokio::test(start_paused = true)]
async fn fixed_windows_reset_without_429s_at_full_rate() {
    for limit in [3u64, 10, 30] {
        for callers in [16usize, 64] {
            for latency in [Latency::Fixed(20), Latency::Uniform(5, 400)] {
                for offset in [Duration::ZERO, Duration::from_millis(700)] {
                    let api = search_api(limit, latency, offset);
                    let layer = AdaptLayer::new();
                    drive(&layer, api.clone(), callers).await;
                    let case = format!("limit {limit}, {callers} callers, {latency:?}, {offset:?}");
                    assert_full_rate_without_refusals(&case, limit, &per_window(&api));
                }
            }
        }
    }
}

/// Local pacing below the layer with a burst of the window's quota (GCRA at `limit / 5 s`,
/// burst `limit`, emulated here; the pacing crate is not a dependency): requests the layer
/// reserved wait in the pacer and may reach the server in the next window. Still no 429.
#[tokio::test(start_paused = true)]
async fn fixed_windows_with_pacing_burst_of_a_window_reset_without_429s() {
    for limit in [3u64, 10, 30] {
        for callers in [16usize, 64] {
            let api = search_api(limit, Latency::Fixed(20), Duration::ZERO);
            let paced = Paced::new(api.clone(), limit, PERIOD);
            let layer = AdaptLayer::new();
            drive(&layer, paced, callers).await;
            let case = format!("paced, limit {limit}, {callers} callers");
            assert_full_rate_without_refusals(&case, limit, &per_window(&api));
        }
    }
}

/// A GCRA pacer (rate `limit / period`, burst `limit`): each request waits for its slot, in
/// call order, then goes to the API.
#[derive(Clone)]
struct Paced {
    api: MockApi,
    tat: Arc<Mutex<Option<Instant>>>,
    interval: Duration,
    tolerance: Duration,
}

impl Paced {
    fn new(api: MockApi, limit: u64, period: Duration) -> Self {
        let limit = u32::try_from(limit).unwrap();
        let interval = period / limit;
        Paced {
            api,
            tat: Arc::default(),
            interval,
            tolerance: interval * (limit - 1),
        }
    }
}

impl Service<Request<Body>> for Paced {
    type Response = Response<Full<Bytes>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let now = Instant::now();
        let at = {
            let mut tat = self.tat.lock().unwrap();
            let due = tat.map_or(now, |tat| tat.max(now));
            *tat = Some(due + self.interval);
            due.checked_sub(self.tolerance)
                .map_or(now, |at| at.max(now))
        };
        let api = self.api.clone();
        Box::pin(async move {
            tokio::time::sleep_until(at).await;
            api.oneshot(request).await
        })
    }
}
