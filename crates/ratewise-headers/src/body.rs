//! Opt-in retry hints from response bodies (bodies are not headers, so `parse` never reads them).

use std::time::Duration;

use serde_json::Value;

use crate::value::{parse_decimal, parse_go_duration};

/// Bodies larger than this are not parsed: retry hints live in small error documents.
pub const MAX_BODY_LEN: usize = 64 * 1024;

/// Reads a retry delay from a JSON error body, clamped to
/// [`DEFAULT_MAX_DURATION`](crate::DEFAULT_MAX_DURATION):
///
/// - Google APIs: `error.details[]` entry of `@type`
///   `type.googleapis.com/google.rpc.RetryInfo` with `retryDelay` as a protobuf Duration string
///   (`"37s"`, `"1.5s"`) or object (`{"seconds": 1, "nanos": 500000000}`);
/// - Discord: a top-level float `retry_after` in seconds (more precise than the header).
///
/// Returns `None` for anything else, for malformed or negative values and for bodies over
/// [`MAX_BODY_LEN`] bytes. Never panics (serde_json also bounds nesting depth).
///
/// ```
/// use std::time::Duration;
///
/// let body = br#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[
///     {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"1.5s"}]}}"#;
/// assert_eq!(
///     ratewise_headers::retry_delay_from_body(body),
///     Some(Duration::from_millis(1500))
/// );
/// ```
pub fn retry_delay_from_body(body: &[u8]) -> Option<Duration> {
    crate::Parser::new().retry_delay_from_body(body)
}

pub(crate) fn retry_delay(body: &[u8]) -> Option<Duration> {
    if body.len() > MAX_BODY_LEN {
        return None;
    }
    let document: Value = serde_json::from_slice(body).ok()?;
    if let Some(details) = document
        .get("error")
        .and_then(|error| error.get("details"))
        .and_then(Value::as_array)
    {
        let retry_info = details.iter().find(|detail| {
            detail
                .get("@type")
                .and_then(Value::as_str)
                .is_some_and(|kind| kind.ends_with("google.rpc.RetryInfo"))
        });
        if let Some(delay) = retry_info.and_then(|info| info.get("retryDelay")) {
            return protobuf_duration(delay);
        }
    }
    // Discord: `{"message": "...", "retry_after": 64.57, "global": false}`.
    let seconds = document.get("retry_after")?.as_f64()?;
    Duration::try_from_secs_f64(seconds).ok()
}

fn protobuf_duration(value: &Value) -> Option<Duration> {
    match value {
        // The JSON mapping of google.protobuf.Duration: decimal seconds with an `s` suffix.
        Value::String(text) => {
            let seconds = text.strip_suffix('s')?;
            match parse_decimal(seconds) {
                Ok(decimal) => Some(decimal.as_secs()),
                // Some gateways write other Go-style units.
                Err(_) => parse_go_duration(text).ok(),
            }
        }
        Value::Object(fields) => {
            let seconds = fields.get("seconds").map_or(Some(0), |s| {
                s.as_u64()
                    .or_else(|| s.as_str().and_then(|s| s.parse().ok()))
            })?;
            let nanos = fields.get("nanos").map_or(Some(0), Value::as_u64)?;
            let nanos = u32::try_from(nanos).ok().filter(|n| *n < 1_000_000_000)?;
            Some(Duration::new(seconds, nanos))
        }
        _ => None,
    }
}
