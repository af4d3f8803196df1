//! Writing the rate-limit headers of each dialect.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

use crate::config::{Dialect, RetryAfterFormat};
use crate::quota::QuotaStatus;

/// One quota as the headers see it.
#[derive(Clone, Debug)]
pub(crate) struct QuotaView<'a> {
    pub(crate) name: &'a str,
    pub(crate) window: Duration,
    pub(crate) status: QuotaStatus,
}

/// Why a request was refused, for the refusal-only headers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RefusalInfo {
    pub(crate) global: bool,
}

/// Whole seconds, rounded up.
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Milliseconds, rounded up.
fn ceil_millis(d: Duration) -> u128 {
    d.as_nanos().div_ceil(1_000_000)
}

fn since_epoch(t: SystemTime) -> Duration {
    t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO)
}

/// `t` rounded up to the next whole second.
pub(crate) fn ceil_to_second(t: SystemTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(ceil_secs(since_epoch(t)))
}

/// A float with three decimals, from milliseconds.
fn millis_as_float(ms: u128) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// Go's `time.Duration` string of `d` rounded up to the millisecond: `0s`, `12ms`, `1s`,
/// `1.5s`, `6m0s`, `1h2m3s`, `23h47m36.648s`.
pub fn go_duration(d: Duration) -> String {
    let ms = ceil_millis(d);
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let hours = ms / 3_600_000;
    let minutes = (ms / 60_000) % 60;
    let seconds = (ms / 1000) % 60;
    let frac = ms % 1000;
    let mut out = String::new();
    if hours > 0 {
        let _ = write!(out, "{hours}h");
    }
    if hours > 0 || minutes > 0 {
        let _ = write!(out, "{minutes}m");
    }
    let _ = write!(out, "{seconds}");
    if frac > 0 {
        let digits = format!("{frac:03}");
        let _ = write!(out, ".{}", digits.trim_end_matches('0'));
    }
    out.push('s');
    out
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: String) {
    match HeaderValue::try_from(value) {
        Ok(value) => {
            headers.append(HeaderName::from_static(name), value);
        }
        Err(_) => tracing::warn!(header = name, "mock api: header value not representable"),
    }
}

/// The quota closest to exhaustion: least remaining, then the longest reset.
fn most_restrictive<'v, 'a>(quotas: &'v [QuotaView<'a>]) -> Option<&'v QuotaView<'a>> {
    quotas.iter().min_by(|a, b| {
        a.status
            .remaining
            .cmp(&b.status.remaining)
            .then(b.status.reset.cmp(&a.status.reset))
    })
}

/// Sanitises a policy name for a structured-field string (printable ASCII, no `"` or `\`).
fn sf_string(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .filter(|c| (c.is_ascii_graphic() && *c != '"' && *c != '\\') || *c == ' ')
        .collect();
    format!("\"{cleaned}\"")
}

/// Writes the dialect's headers for `quotas` at wall-clock `now`.
pub(crate) fn write_rate_limit_headers(
    headers: &mut HeaderMap,
    dialect: Dialect,
    quotas: &[QuotaView<'_>],
    now: SystemTime,
    refusal: Option<RefusalInfo>,
) {
    let Some(main) = most_restrictive(quotas) else {
        return;
    };
    let status = main.status;
    let epoch_reset_secs = ceil_secs(since_epoch(now) + status.reset);
    match dialect {
        Dialect::None => {}
        Dialect::GitHub => {
            insert(headers, "x-ratelimit-limit", status.limit.to_string());
            insert(
                headers,
                "x-ratelimit-remaining",
                status.remaining.to_string(),
            );
            insert(
                headers,
                "x-ratelimit-used",
                status.limit.saturating_sub(status.remaining).to_string(),
            );
            insert(headers, "x-ratelimit-reset", epoch_reset_secs.to_string());
            insert(headers, "x-ratelimit-resource", main.name.to_owned());
        }
        Dialect::Draft8 => {
            let limits: Vec<String> = quotas
                .iter()
                .map(|q| {
                    format!(
                        "{};r={};t={}",
                        sf_string(q.name),
                        q.status.remaining,
                        ceil_secs(q.status.reset)
                    )
                })
                .collect();
            let policies: Vec<String> = quotas
                .iter()
                .map(|q| {
                    format!(
                        "{};q={};w={}",
                        sf_string(q.name),
                        q.status.limit,
                        ceil_secs(q.window).max(1)
                    )
                })
                .collect();
            insert(headers, "ratelimit", limits.join(", "));
            insert(headers, "ratelimit-policy", policies.join(", "));
        }
        Dialect::Draft7 => {
            insert(
                headers,
                "ratelimit",
                format!(
                    "limit={}, remaining={}, reset={}",
                    status.limit,
                    status.remaining,
                    ceil_secs(status.reset)
                ),
            );
            let policies: Vec<String> = quotas
                .iter()
                .map(|q| format!("{};w={}", q.status.limit, ceil_secs(q.window).max(1)))
                .collect();
            insert(headers, "ratelimit-policy", policies.join(", "));
        }
        Dialect::LegacyXRateLimit => {
            insert(headers, "x-ratelimit-limit", status.limit.to_string());
            insert(
                headers,
                "x-ratelimit-remaining",
                status.remaining.to_string(),
            );
            insert(headers, "x-ratelimit-reset", epoch_reset_secs.to_string());
        }
        Dialect::OpenAi => {
            insert(
                headers,
                "x-ratelimit-limit-requests",
                status.limit.to_string(),
            );
            insert(
                headers,
                "x-ratelimit-remaining-requests",
                status.remaining.to_string(),
            );
            insert(
                headers,
                "x-ratelimit-reset-requests",
                go_duration(status.reset),
            );
        }
        Dialect::Discord => {
            let reset_after_ms = ceil_millis(status.reset);
            let epoch_ms = since_epoch(now).as_millis() + reset_after_ms;
            insert(headers, "x-ratelimit-limit", status.limit.to_string());
            insert(
                headers,
                "x-ratelimit-remaining",
                status.remaining.to_string(),
            );
            insert(headers, "x-ratelimit-reset", millis_as_float(epoch_ms));
            insert(
                headers,
                "x-ratelimit-reset-after",
                millis_as_float(reset_after_ms),
            );
            insert(headers, "x-ratelimit-bucket", main.name.to_owned());
            if let Some(refusal) = refusal {
                if refusal.global {
                    insert(headers, "x-ratelimit-global", "true".to_owned());
                    insert(headers, "x-ratelimit-scope", "global".to_owned());
                } else {
                    insert(headers, "x-ratelimit-scope", "user".to_owned());
                }
            }
        }
    }
}

/// Writes `Retry-After` for a wait of `wait` from wall-clock `now`.
pub(crate) fn write_retry_after(
    headers: &mut HeaderMap,
    format: RetryAfterFormat,
    now: SystemTime,
    wait: Duration,
) {
    let value = match format {
        RetryAfterFormat::Omit => return,
        RetryAfterFormat::Seconds => ceil_secs(wait).to_string(),
        RetryAfterFormat::HttpDate => httpdate::fmt_http_date(ceil_to_second(now + wait)),
    };
    if let Ok(value) = HeaderValue::try_from(value) {
        headers.insert(RETRY_AFTER, value);
    }
}

/// The JSON body of a Discord 429.
pub(crate) fn discord_body(wait: Duration, global: bool) -> String {
    format!(
        "{{\"message\": \"You are being rate limited.\", \"retry_after\": {}, \"global\": {}}}",
        millis_as_float(ceil_millis(wait)),
        global
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Parses a Go duration the way Go's `time.ParseDuration` does (units h, m, s, ms).
    fn parse_go(s: &str) -> Option<Duration> {
        if s == "0s" {
            return Some(Duration::ZERO);
        }
        let mut total = 0f64;
        let mut rest = s;
        while !rest.is_empty() {
            let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
            let number: f64 = rest[..end].parse().ok()?;
            rest = &rest[end..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let scale = match &rest[..unit_len] {
                "h" => 3600.0,
                "m" => 60.0,
                "s" => 1.0,
                "ms" => 0.001,
                _ => return None,
            };
            total += number * scale;
            rest = &rest[unit_len..];
        }
        Some(Duration::from_secs_f64(total))
    }

    #[test]
    fn go_durations_look_like_go() {
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_millis(12)), "12ms");
        assert_eq!(go_duration(Duration::from_micros(11_001)), "12ms");
        assert_eq!(go_duration(Duration::from_secs(1)), "1s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(360)), "6m0s");
        assert_eq!(go_duration(Duration::from_secs(3723)), "1h2m3s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(
            go_duration(Duration::from_millis(85_656_648)),
            "23h47m36.648s"
        );
    }

    proptest! {
        #[test]
        fn go_duration_round_trips_never_early(ns in 0u64..400_000_000_000_000) {
            let d = Duration::from_nanos(ns);
            let text = go_duration(d);
            let parsed = parse_go(&text).expect("parses");
            let exact_ms = Duration::from_millis(u64::try_from(ceil_millis(d)).unwrap());
            // float parsing loses a little; compare at microsecond precision
            prop_assert!(parsed.as_micros().abs_diff(exact_ms.as_micros()) <= 1, "{} -> {:?}", text, parsed);
            prop_assert!(exact_ms >= d);
        }

        #[test]
        fn ceil_secs_never_early(ns in 0u64..u64::MAX / 2) {
            let d = Duration::from_nanos(ns);
            let secs = ceil_secs(d);
            prop_assert!(Duration::from_secs(secs) >= d);
            prop_assert!(Duration::from_secs(secs) < d + Duration::from_secs(1));
        }
    }
}
