//! The loadgen example's engine (`examples/loadgen/engine.rs`, included here with `#[path]`)
//! against MockApi over loopback: the JSON schema, zero 429s when pacing, the attempt counts
//! against the server's own log, and the refusal of remote hosts.
//!
//! These runs go through real sockets, so they use tokio's real clock (a paused clock would
//! fire the deadline while sockets are busy); they assert counts, never durations.

// The engine is shared by the loadgen example and the demo; this test uses most of it.
#[allow(dead_code)]
#[path = "../examples/loadgen/engine.rs"]
mod engine;

use std::time::Duration;

use http::StatusCode;
use ratewise_testkit::{EndpointConfig, MockApi, MockConfig, Quota};
use serde_json::Value;

/// MockApi with GCRA 20/s, burst 1 on `/a` (nginx semantics: 2 back to back, then one per
/// 50 ms).
fn server_config() -> MockConfig {
    MockConfig::new().endpoint(EndpointConfig::new("/a").quota(Quota::gcra(
        20,
        Duration::from_secs(1),
        1,
    )))
}

fn config(args: &[&str]) -> engine::Config {
    match engine::parse_args(args.iter().copied()) {
        Ok(engine::Command::Run(config)) => config,
        other => panic!("{args:?} parsed as {other:?}"),
    }
}

fn uint(report: &Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not an unsigned integer in {report}"))
}

/// Every field of the report, with its type.
fn assert_schema(report: &Value, paths: &[&str]) {
    for field in [
        "sent",
        "ok_2xx",
        "status_429",
        "other_errors",
        "retries",
        "requests",
    ] {
        uint(report, field);
    }
    for field in [
        "elapsed_s",
        "achieved_ok_rate_per_s",
        "lat_p50_ms",
        "lat_p99_ms",
    ] {
        let value = report[field]
            .as_f64()
            .unwrap_or_else(|| panic!("{field} is not a number in {report}"));
        assert!(value >= 0.0, "{field} = {value}");
    }
    assert!(
        report["label"].is_string() || report["label"].is_null(),
        "label in {report}"
    );
    let per_path = report["per_path"]
        .as_object()
        .unwrap_or_else(|| panic!("per_path is not an object in {report}"));
    assert_eq!(per_path.len(), paths.len(), "{report}");
    for path in paths {
        let entry = &per_path[*path];
        for field in ["sent", "ok_2xx", "status_429", "other_errors"] {
            uint(entry, field);
        }
    }
    // The per-path counts add up to the totals.
    for field in ["sent", "ok_2xx", "status_429", "other_errors"] {
        let sum: u64 = per_path.values().map(|entry| uint(entry, field)).sum();
        assert_eq!(sum, uint(report, field), "{field} in {report}");
    }
    assert!(
        report["lat_p50_ms"].as_f64() <= report["lat_p99_ms"].as_f64(),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_loadgen_reports_every_field_and_no_429() {
    let api = MockApi::new(server_config());
    let server = api.serve().await.unwrap();
    let base_url = server.base_url();
    // The issue's command (`--duration 10`), shortened to 3 s.
    let config = config(&[
        "--base-url",
        &base_url,
        "--path",
        "/a",
        "--concurrency",
        "16",
        "--duration",
        "3",
        "--layers",
        "pace,retry",
        "--rate",
        "20",
        "--burst",
        "1",
        "--label",
        "paced",
    ]);
    let line = engine::run_config(&config, |_, _| {}).await.unwrap();

    // The report is one JSON line, fields in the documented order.
    assert!(!line.contains('\n'));
    println!("{line}");
    assert!(line.starts_with(r#"{"sent":"#), "{line}");
    let report: Value = serde_json::from_str(&line).unwrap();
    assert_schema(&report, &["/a"]);
    assert_eq!(report["label"], "paced");

    assert_eq!(uint(&report, "status_429"), 0, "{report}");
    assert_eq!(api.count_status(StatusCode::TOO_MANY_REQUESTS), 0);
    let ok = uint(&report, "ok_2xx");
    assert!(ok >= 10, "{report}");
    // Every 2xx the caller counted is one the server sent; every attempt the server logged was
    // counted as sent (attempts cancelled at the deadline may never have reached it).
    assert!(ok <= api.count_status(StatusCode::OK) as u64, "{report}");
    assert!(api.count() as u64 <= uint(&report, "sent"), "{report}");
    assert!(uint(&report, "sent") >= ok);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaced_loadgen_counts_the_servers_429s_at_the_wire() {
    let api = MockApi::new(server_config());
    let server = api.serve().await.unwrap();
    let base_url = server.base_url();
    let config = config(&[
        "--base-url",
        &base_url,
        "--path",
        "/a",
        "--path",
        "/a?second",
        "--concurrency",
        "4",
        "--duration",
        "10",
        "--requests",
        "200",
        "--layers",
        "none",
    ]);
    let line = engine::run_config(&config, |_, _| {}).await.unwrap();
    let report: Value = serde_json::from_str(&line).unwrap();
    assert_schema(&report, &["/a", "/a?second"]);
    // 200 requests in a closed loop of 4 over loopback is far faster than 20/s: most are
    // refused, and the counting layer saw exactly what the server logged.
    assert_eq!(uint(&report, "requests"), 200, "{report}");
    assert_eq!(uint(&report, "sent"), 200, "{report}");
    assert_eq!(uint(&report, "retries"), 0, "{report}");
    assert_eq!(api.count(), 200);
    let refused = api.count_status(StatusCode::TOO_MANY_REQUESTS) as u64;
    assert!(refused > 0);
    assert_eq!(uint(&report, "status_429"), refused, "{report}");
    assert_eq!(
        uint(&report, "ok_2xx"),
        api.count_status(StatusCode::OK) as u64,
        "{report}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn remote_hosts_are_refused_unless_allowed() {
    for url in [
        "http://example.com",
        "http://10.0.0.1:8080",
        "http://[2001:db8::1]:80",
        "http://localhost.example.com",
    ] {
        let config = config(&[
            "--base-url",
            url,
            "--path",
            "/a",
            "--concurrency",
            "1",
            "--duration",
            "1",
            "--layers",
            "none",
        ]);
        let error = engine::run_config(&config, |_, _| {}).await.unwrap_err();
        assert!(
            error.to_string().contains("not a loopback"),
            "{url}: {error}"
        );
        let mut allowed = config.clone();
        allowed.allow_remote = true;
        assert_eq!(engine::check_base_url(&allowed), Ok(()), "{url}");
    }
    for url in [
        "http://127.0.0.1:1",
        "http://127.1.2.3",
        "http://localhost:8080",
        "http://[::1]:9000",
    ] {
        let config = config(&[
            "--base-url",
            url,
            "--path",
            "/a",
            "--concurrency",
            "1",
            "--duration",
            "1",
            "--layers",
            "none",
        ]);
        assert_eq!(engine::check_base_url(&config), Ok(()), "{url}");
    }
}

#[test]
fn the_command_line_is_checked() {
    let base = ["--base-url", "http://127.0.0.1:1", "--path", "/a"];
    let run = |extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        engine::parse_args(args)
    };
    let full = config(&[
        "--base-url",
        "http://127.0.0.1:1/",
        "--path",
        "/a",
        "--path",
        "/b",
        "--concurrency=8",
        "--duration",
        "2.5",
        "--requests",
        "100",
        "--rate",
        "0.5",
        "--burst",
        "3",
        "--limit",
        "/b=20:2",
        "--layers",
        "pace,adapt,retry,breaker,cache",
        "--max-retries",
        "4",
        "--label",
        "x",
    ]);
    assert_eq!(full.base_url, "http://127.0.0.1:1");
    assert_eq!(full.paths, ["/a", "/b"]);
    assert_eq!(full.concurrency, 8);
    assert_eq!(full.duration, Duration::from_millis(2500));
    assert_eq!(full.requests, Some(100));
    assert_eq!(full.rate, Some(0.5));
    assert_eq!(full.burst, 3);
    assert_eq!(
        full.limits,
        [engine::Limit {
            path: "/b".into(),
            rate: 20.0,
            burst: 2
        }]
    );
    assert!(full.layers.pace && full.layers.adapt && full.layers.retry);
    assert!(full.layers.breaker && full.layers.cache);
    assert_eq!(full.max_retries, 4);
    assert_eq!(full.label.as_deref(), Some("x"));

    for (extra, message) in [
        (&["--concurrency", "1", "--duration", "1"][..], "--layers"),
        (
            &[
                "--concurrency",
                "1",
                "--duration",
                "1",
                "--layers",
                "pace,warp",
            ],
            "unknown layer",
        ),
        (
            &["--concurrency", "1", "--duration", "1", "--layers", "pace"],
            "--rate or --limit",
        ),
        (
            &["--concurrency", "0", "--duration", "1", "--layers", "none"],
            "at least 1",
        ),
        (
            &["--concurrency", "1", "--duration", "0", "--layers", "none"],
            "--duration",
        ),
        (
            &[
                "--concurrency",
                "1",
                "--duration",
                "1",
                "--layers",
                "pace",
                "--limit",
                "/a=fast",
            ],
            "PATH=RATE:BURST",
        ),
        (
            &[
                "--concurrency",
                "1",
                "--duration",
                "1",
                "--layers",
                "none",
                "--bogus",
            ],
            "unknown argument",
        ),
    ] {
        let error = run(extra).unwrap_err();
        assert!(error.contains(message), "{extra:?}: {error}");
    }
    assert!(matches!(
        engine::parse_args(["--help"]),
        Ok(engine::Command::Help)
    ));
    // The help names every flag.
    for flag in [
        "--base-url",
        "--path",
        "--concurrency",
        "--duration",
        "--requests",
        "--rate",
        "--burst",
        "--limit",
        "--layers",
        "--max-retries",
        "--redis",
        "--label",
        "--allow-remote",
    ] {
        assert!(engine::USAGE.contains(flag), "{flag}");
    }
}

/// `--redis` paces through one Redis GCRA quota. Without a Redis on 6379 the limiter falls back
/// to a local one (its failure policy), so this passes either way; with one, it checks the
/// shared path.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paced_loadgen_gets_no_429() {
    let api = MockApi::new(server_config());
    let server = api.serve().await.unwrap();
    let base_url = server.base_url();
    let config = config(&[
        "--base-url",
        &base_url,
        "--path",
        "/a",
        "--concurrency",
        "8",
        "--duration",
        "2",
        "--layers",
        "pace",
        "--rate",
        "20",
        "--burst",
        "1",
        "--redis",
        "redis://127.0.0.1:6379/",
    ]);
    let line = engine::run_config(&config, |_, _| {}).await.unwrap();
    let report: Value = serde_json::from_str(&line).unwrap();
    assert_schema(&report, &["/a"]);
    assert_eq!(uint(&report, "status_429"), 0, "{report}");
    assert_eq!(api.count_status(StatusCode::TOO_MANY_REQUESTS), 0);
    assert!(uint(&report, "ok_2xx") > 0, "{report}");
    server.shutdown().await;
}
