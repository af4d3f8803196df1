//! Helpers shared by the integration tests: header maps from lines, a fixed receive time.
#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use ratewise_headers::{RateLimitInfo, parse};

/// An arbitrary local receive time (2023-11-14T22:13:20Z).
pub const RECV: u64 = 1_700_000_000;

/// The wall-clock time `unix_secs` seconds after the epoch.
pub fn at(unix_secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(unix_secs)
}

/// A header map with one line per `(name, value)`, in order (repeated names append).
pub fn headers(lines: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in lines {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

/// [`parse`] of `lines` with `status`, received at [`RECV`].
pub fn parse_lines(status: u16, lines: &[(&str, &str)]) -> RateLimitInfo {
    parse(
        StatusCode::from_u16(status).unwrap(),
        &headers(lines),
        at(RECV),
    )
}

/// `Some(s seconds)`.
pub fn secs(s: u64) -> Option<Duration> {
    Some(Duration::from_secs(s))
}
