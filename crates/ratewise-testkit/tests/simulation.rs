//! A long paused-clock run with many concurrent callers: the shape of the simulations the
//! other crates run (3 virtual hours at 5000/h with 64 callers).

mod common;

use std::time::Duration;

use common::status;
use http::StatusCode;
use ratewise_testkit::{Dialect, EndpointConfig, MockApi, MockConfig, Quota};
use tokio::task::JoinSet;

#[tokio::test(start_paused = true)]
async fn three_virtual_hours_with_64_callers() {
    let api = MockApi::new(
        MockConfig::new().endpoint(
            EndpointConfig::new("/repos")
                .quota(Quota::sliding_log(5000, Duration::from_secs(3600)))
                .dialect(Dialect::GitHub),
        ),
    );
    let mut callers = JoinSet::new();
    for caller in 0..64u64 {
        let api = api.clone();
        callers.spawn(async move {
            // Each caller sends one request per 64 x 0.75 s, 4800/h together, staggered.
            tokio::time::sleep(Duration::from_millis(750 * caller)).await;
            let mut limited = 0;
            for _ in 0..225 {
                if status(&api, "/repos/a").await == StatusCode::TOO_MANY_REQUESTS {
                    limited += 1;
                }
                tokio::time::sleep(Duration::from_millis(750 * 64)).await;
            }
            limited
        });
    }
    let mut limited = 0;
    while let Some(result) = callers.join_next().await {
        limited += result.unwrap();
    }
    assert_eq!(limited, 0);
    assert_eq!(api.count(), 64 * 225);
    let max = api.max_in_window("/repos", Duration::from_secs(3600));
    assert!((4795..=4800).contains(&max), "{max}");

    // Now overdrive: 64 callers at once, 100 each; the sliding log must hold the line.
    let mut callers = JoinSet::new();
    for _ in 0..64 {
        let api = api.clone();
        callers.spawn(async move {
            for _ in 0..100 {
                status(&api, "/repos/b").await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    while callers.join_next().await.is_some() {}
    assert!(api.max_in_window("/repos", Duration::from_secs(3600)) <= 5000);
    assert!(api.count_limited() > 0);
}
