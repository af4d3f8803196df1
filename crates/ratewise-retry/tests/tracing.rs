//! The `tracing` event of each retry carries the attempt, the reason, the delay and its source.

mod support;

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use ratewise_retry::{Backoff, Jitter, RetryLayer};
use support::{Upstream, get, response};
use tower::{Layer, ServiceExt};

/// Collects formatted events.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn each_retry_emits_an_event_with_reason_delay_and_source() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .without_time()
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let upstream = Upstream::new(|n, _| {
        Ok(match n {
            0 => response(StatusCode::SERVICE_UNAVAILABLE, &[("retry-after", "2")]),
            1 => response(StatusCode::BAD_GATEWAY, &[]),
            _ => response(StatusCode::OK, &[]),
        })
    });
    let client = RetryLayer::builder()
        .backoff(
            Backoff::new()
                .jitter(Jitter::None)
                .base(Duration::from_millis(300)),
        )
        .build()
        .unwrap()
        .layer(upstream);
    client
        .oneshot(get("https://api.example.com/a"))
        .await
        .unwrap();

    let output = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let events: Vec<&str> = output
        .lines()
        .filter(|line| line.contains("retrying"))
        .collect();
    assert_eq!(events.len(), 2, "{output}");
    for (event, expected) in events.iter().zip([
        [
            "attempt=1",
            "reason=\"status\"",
            "status=503",
            "delay_ms=2000",
            "delay_source=\"retry_after\"",
        ],
        [
            "attempt=2",
            "reason=\"status\"",
            "status=502",
            "delay_ms=600",
            "delay_source=\"backoff\"",
        ],
    ]) {
        for field in expected {
            assert!(event.contains(field), "{field} missing from {event}");
        }
    }
}
