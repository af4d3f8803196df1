//! `loadgen`: a closed-loop load client for any HTTP server, with or without ratewise layers,
//! that prints one JSON line of results, so that ratewise can be compared with other clients
//! against the same server.
//!
//! ```text
//! cargo run --release --example loadgen -- --base-url http://127.0.0.1:PORT --path /a \
//!     --concurrency 16 --duration 10 --layers pace,retry --rate 20 --burst 1
//! ```
//!
//! `N` workers send GET requests in a closed loop (each sends its next request when the
//! previous one is done), worker `i` to path `i mod paths`, until `--duration` passes or
//! `--requests` logical requests have been started; at the deadline, waiting and in-flight
//! requests are cancelled. Run `loadgen --help` for every flag.
//!
//! # The layers
//!
//! `--layers` picks any of `pace,adapt,retry,breaker,cache` (or `none`). They are always stacked
//! in the order of `ratewise::stack()`: cache, retry, breaker, adapt, pace, then a 30 s attempt
//! timeout and the hyper-util legacy client. Each position holds a `tower::util::Either` of the
//! layer and `Identity`, so the choice is made at run time while the stack keeps one type. The
//! cache needs `--features cache`, `--redis` needs `--features redis` (`--all-features` has both).
//!
//! # The report
//!
//! ```text
//! {"sent":…,"ok_2xx":…,"status_429":…,"other_errors":…,"retries":…,"requests":…,"elapsed_s":…,
//!  "achieved_ok_rate_per_s":…,"lat_p50_ms":…,"lat_p99_ms":…,
//!  "per_path":{"/a":{"sent":…,"ok_2xx":…,"status_429":…,"other_errors":…}},"label":…}
//! ```
//!
//! - `sent` and `status_429` count HTTP attempts, in a small counting layer right above the
//!   client: what the server saw, retries included, cache hits and local refusals excluded.
//! - `ok_2xx` and `other_errors` count logical requests (what the caller got): a request that
//!   ended in a 2xx, or in anything but a 2xx or a 429 (another status, a transport error, a
//!   layer's refusal). `requests` is the number of logical requests that finished.
//! - `retries`: attempts beyond the first, summed over logical requests.
//! - Latencies are per logical request, waits for a pacing slot and retries included.
//!
//! The base URL must be a loopback address unless `--allow-remote` is given.

#[path = "engine.rs"]
mod engine;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match engine::parse_args(std::env::args().skip(1)) {
        Ok(engine::Command::Help) => {
            print!("{}", engine::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(engine::Command::Run(config)) => config,
        Err(message) => {
            eprintln!("loadgen: {message}");
            return ExitCode::from(2);
        }
    };
    // A live line on a terminal; nothing otherwise, so stderr stays clean in scripts.
    let live = std::io::stderr().is_terminal();
    let duration = config.duration;
    let result = engine::run_config(&config, |snapshot, elapsed| {
        if live {
            let line = engine::progress_line("loadgen", snapshot, elapsed, duration);
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r{line}");
            let _ = stderr.flush();
        }
    })
    .await;
    if live {
        eprint!("\r\x1b[2K");
    }
    match result {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("loadgen: {error}");
            ExitCode::FAILURE
        }
    }
}
