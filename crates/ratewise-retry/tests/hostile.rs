//! Whatever a server sends in its delay headers, the layer never panics and never waits
//! longer than `max_wait` before a retry: absurd delays are refused (the response is returned
//! at once) and unreadable ones fall back to the backoff.

mod support;

use std::time::Duration;

use http::{HeaderValue, StatusCode};
use proptest::prelude::*;
use ratewise_retry::RetryLayer;
use support::{Upstream, get, response};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| f.to_string()),
        "[0-9]{1,40}",
        "[ -~]{0,40}",
        Just("Wed, 21 Oct 2015 07:28:00 GMT".to_string()),
        Just("Fri, 31 Dec 9999 23:59:59 GMT".to_string()),
        Just("\"default\";r=0;t=99999999999999999999".to_string()),
    ]
}

proptest! {
    #[test]
    fn hostile_delay_headers_are_clamped_or_ignored(
        name in prop_oneof![
            Just("retry-after"),
            Just("retry-after-ms"),
            Just("ratelimit"),
            Just("x-ratelimit-reset"),
        ],
        value in header_value(),
        status in prop_oneof![Just(429u16), Just(503u16), Just(403u16)],
    ) {
        let Ok(value) = HeaderValue::from_str(&value) else {
            return Ok(());
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let (gap, attempts) = runtime.block_on(async move {
            let upstream = Upstream::new(move |n, _| {
                let mut response = response(
                    if n == 0 { StatusCode::from_u16(status).unwrap() } else { StatusCode::OK },
                    &[("date", "Wed, 21 Oct 2015 07:28:00 GMT")],
                );
                response.headers_mut().insert(name, value.clone());
                Ok(response)
            });
            let client = RetryLayer::builder()
                .max_wait(Duration::from_secs(60))
                .build()
                .unwrap()
                .layer(upstream.clone());
            let start = Instant::now();
            client.oneshot(get("https://api.example.com/a")).await.unwrap();
            let log = upstream.log();
            let gap = log.get(1).map(|second| second.at - start);
            (gap, log.len())
        });
        prop_assert!(attempts <= 2);
        if let Some(gap) = gap {
            // Either the server's delay (<= max_wait) or the first backoff (<= 100 ms).
            prop_assert!(gap <= Duration::from_secs(60), "waited {gap:?}");
        }
    }
}

proptest! {
    /// The other half of the contract: a readable delay within `max_wait` is waited in full,
    /// rounded up to the millisecond and never cut short, whatever the status that carries it.
    #[test]
    fn readable_delays_within_max_wait_are_never_cut_short(
        millis in 0.0f64..60_000.0,
        header in prop_oneof![Just("retry-after"), Just("retry-after-ms")],
        status in prop_oneof![Just(429u16), Just(503u16), Just(403u16)],
    ) {
        let (value, expected) = if header == "retry-after" {
            let seconds = (millis / 1000.0).floor();
            (format!("{seconds}"), Duration::from_secs(seconds as u64))
        } else {
            let text = format!("{millis:.3}");
            let parsed: f64 = text.parse().unwrap();
            (text, Duration::from_secs_f64(parsed / 1000.0))
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let gap = runtime.block_on(async move {
            let upstream = Upstream::new(move |n, _| {
                let mut response = response(
                    if n == 0 { StatusCode::from_u16(status).unwrap() } else { StatusCode::OK },
                    &[],
                );
                response
                    .headers_mut()
                    .insert(header, HeaderValue::from_str(&value).unwrap());
                Ok(response)
            });
            let client = RetryLayer::builder().build().unwrap().layer(upstream.clone());
            client.oneshot(get("https://api.example.com/a")).await.unwrap();
            let log = upstream.log();
            assert_eq!(log.len(), 2, "retried once, then 200");
            log[1].at - log[0].at
        });
        prop_assert!(gap >= expected, "early: {gap:?} < {expected:?}");
        prop_assert!(gap <= expected + Duration::from_millis(1), "late: {gap:?} for {expected:?}");
    }
}
