//! Scalar values as servers write them: decimal numbers, Go durations, RFC 3339 and HTTP dates.
//!
//! Every function here is total: any input yields a value or an error, never a panic, and all
//! arithmetic saturates.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(crate) const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Why a scalar could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ValueError {
    /// Not the expected syntax.
    Malformed,
    /// A syntactically valid negative number (Azure OpenAI's `-1` sentinel, a negative delay).
    Negative,
}

/// A non-negative decimal number: `whole` saturates at `u64::MAX` (then `saturated` is set),
/// `nanos` keeps the first nine fractional digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Decimal {
    pub(crate) whole: u64,
    pub(crate) nanos: u32,
    pub(crate) saturated: bool,
}

impl Decimal {
    /// A whole number.
    pub(crate) const fn integer(whole: u64) -> Self {
        Self {
            whole,
            nanos: 0,
            saturated: false,
        }
    }

    /// The value read as seconds.
    pub(crate) fn as_secs(self) -> Duration {
        // nanos < 1e9 by construction, so `Duration::new` cannot carry into an overflow.
        Duration::new(self.whole, self.nanos)
    }

    /// The value read as milliseconds.
    pub(crate) fn as_millis(self) -> Duration {
        let nanos = u128::from(self.whole) * 1_000_000 + u128::from(self.nanos) / 1_000;
        duration_from_nanos(nanos)
    }
}

/// `text` without leading and trailing spaces and tabs (HTTP's optional whitespace), compared
/// byte by byte (both are ASCII, so the cuts are on character boundaries).
pub(crate) fn trim_ows(text: &str) -> &str {
    let bytes = text.as_bytes();
    let is_ows = |b: &u8| matches!(b, b' ' | b'\t');
    let Some(start) = bytes.iter().position(|b| !is_ows(b)) else {
        return "";
    };
    let end = bytes
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |last| last + 1);
    &text[start..end]
}

/// The value of 1 to 19 ASCII digits and nothing else (so it cannot overflow a `u64`): the
/// form almost every count and reset takes, read without the general path.
pub(crate) fn plain_integer(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 19 {
        return None;
    }
    let mut value: u64 = 0;
    for &byte in bytes {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        value = value * 10 + u64::from(digit);
    }
    Some(value)
}

/// Reads `[-]digits[.digits]` (optional surrounding whitespace). A leading `-` on an otherwise
/// valid number gives [`ValueError::Negative`]; `NaN`, `inf`, exponents and empty input are
/// malformed.
pub(crate) fn parse_decimal(input: &str) -> Result<Decimal, ValueError> {
    if let Some(whole) = plain_integer(input.as_bytes()) {
        return Ok(Decimal::integer(whole));
    }
    let text = trim_ows(input);
    let (negative, text) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (whole_text, fraction_text) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (text, ""),
    };
    if whole_text.is_empty() && fraction_text.is_empty() {
        return Err(ValueError::Malformed);
    }
    if !whole_text.bytes().all(|b| b.is_ascii_digit())
        || !fraction_text.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(ValueError::Malformed);
    }
    if negative {
        return Err(ValueError::Negative);
    }
    let mut whole: u64 = 0;
    let mut saturated = false;
    for digit in whole_text.bytes() {
        match whole
            .checked_mul(10)
            .and_then(|w| w.checked_add(u64::from(digit - b'0')))
        {
            Some(next) => whole = next,
            None => {
                whole = u64::MAX;
                saturated = true;
                break;
            }
        }
    }
    let mut nanos: u32 = 0;
    let mut scale: u32 = 100_000_000;
    for digit in fraction_text.bytes().take(9) {
        nanos += u32::from(digit - b'0') * scale;
        scale /= 10;
    }
    Ok(Decimal {
        whole,
        nanos,
        saturated,
    })
}

/// A `Duration` from nanoseconds, saturating at `u64::MAX` seconds.
pub(crate) fn duration_from_nanos(nanos: u128) -> Duration {
    if let Ok(nanos) = u64::try_from(nanos) {
        // Every duration a server means (up to 584 years): 64-bit division, not 128-bit.
        return Duration::from_nanos(nanos);
    }
    let secs = nanos / NANOS_PER_SEC;
    if secs > u128::from(u64::MAX) {
        return Duration::MAX;
    }
    // Both casts are in range: checked above, and the remainder is below 1e9.
    Duration::new(secs as u64, (nanos % NANOS_PER_SEC) as u32)
}

/// Reads a Go `time.Duration` string (`1s`, `6m0s`, `12ms`, `1h2m3s`, `23h47m36.648s`, `500µs`),
/// as OpenAI writes its reset headers. Units: `ns`, `us`, `µs` (U+00B5), `μs` (U+03BC), `ms`, `s`,
/// `m`, `h`; a lone `0` is zero, like Go's `ParseDuration`.
pub(crate) fn parse_go_duration(input: &str) -> Result<Duration, ValueError> {
    let text = trim_ows(input);
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(ValueError::Malformed);
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        if number_len == 0 {
            return Err(ValueError::Malformed);
        }
        let number = parse_decimal(&rest[..number_len])?;
        rest = &rest[number_len..];
        // The first unit that matches, in this order: `ms` before `m`.
        let (unit_len, unit_nanos): (usize, u128) = match rest.as_bytes() {
            [b'n', b's', ..] => (2, 1),
            [b'u', b's', ..] => (2, 1_000),
            // `µ` (U+00B5) and `μ` (U+03BC) in UTF-8.
            [0xC2, 0xB5, b's', ..] | [0xCE, 0xBC, b's', ..] => (3, 1_000),
            [b'm', b's', ..] => (2, 1_000_000),
            [b'h', ..] => (1, 3_600 * NANOS_PER_SEC),
            [b'm', ..] => (1, 60 * NANOS_PER_SEC),
            [b's', ..] => (1, NANOS_PER_SEC),
            _ => return Err(ValueError::Malformed),
        };
        rest = &rest[unit_len..];
        let mut part = u128::from(number.whole).saturating_mul(unit_nanos);
        if number.nanos != 0 {
            part = part.saturating_add(u128::from(number.nanos) * unit_nanos / NANOS_PER_SEC);
        }
        total = total.saturating_add(part);
    }
    if negative {
        return Err(ValueError::Negative);
    }
    Ok(duration_from_nanos(total))
}

/// Nanoseconds since the Unix epoch (negative before it) of a `SystemTime`.
pub(crate) fn unix_nanos(time: SystemTime) -> i128 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_nanos() as i128,
        Err(before) => -(before.duration().as_nanos() as i128),
    }
}

/// Reads an HTTP-date in any of the three formats of RFC 9110 §5.6.7, as Unix nanoseconds.
pub(crate) fn parse_http_date(input: &str) -> Option<i128> {
    let text = trim_ows(input);
    if let Some(fixdate) = imf_fixdate(text.as_bytes()) {
        return fixdate;
    }
    httpdate::parse_http_date(text).ok().map(unix_nanos)
}

/// The IMF-fixdate every server sends (`Sun, 06 Nov 1994 08:49:37 GMT`), read without
/// `httpdate`'s round trip through `SystemTime`, with exactly its verdict: `None` when the
/// text is not shaped as an IMF-fixdate (the caller then asks `httpdate`, which also reads the
/// obsolete formats), `Some(None)` when it is shaped as one but is not a real date (a bad
/// weekday, 31 Apr, a year outside 1970..=9999, 60 seconds), as `httpdate` rejects it.
pub(crate) fn imf_fixdate(b: &[u8]) -> Option<Option<i128>> {
    // Fixed positions, compared byte by byte (no slice comparisons, no bounds checks).
    let b: &[u8; 29] = b.try_into().ok()?;
    if [b[3], b[4], b[7], b[11], b[16], b[19], b[22]] != *b",    ::"
        || [b[25], b[26], b[27], b[28]] != *b" GMT"
    {
        return None;
    }
    let two = |high: u8, low: u8| {
        let (high, low) = (high.wrapping_sub(b'0'), low.wrapping_sub(b'0'));
        (high < 10 && low < 10).then(|| i64::from(high * 10 + low))
    };
    let second = two(b[23], b[24])?;
    let minute = two(b[20], b[21])?;
    let hour = two(b[17], b[18])?;
    let day = two(b[5], b[6])?;
    const MONTHS: [[u8; 3]; 12] = [
        *b"Jan", *b"Feb", *b"Mar", *b"Apr", *b"May", *b"Jun", *b"Jul", *b"Aug", *b"Sep", *b"Oct",
        *b"Nov", *b"Dec",
    ];
    const WEEKDAYS: [[u8; 3]; 7] = [
        *b"Mon", *b"Tue", *b"Wed", *b"Thu", *b"Fri", *b"Sat", *b"Sun",
    ];
    let index_of = |table: &[[u8; 3]], name: [u8; 3]| {
        // At most 12 entries: the index fits any integer.
        table
            .iter()
            .position(|entry| *entry == name)
            .map(|index| index as i64)
    };
    let month = index_of(&MONTHS, [b[8], b[9], b[10]])? + 1;
    let year = two(b[12], b[13])? * 100 + two(b[14], b[15])?;
    // Monday is 0.
    let weekday = index_of(&WEEKDAYS, [b[0], b[1], b[2]])?;
    if second > 59
        || minute > 59
        || hour > 23
        || day < 1
        || day > days_in_month(year, month)
        || !(1970..=9999).contains(&year)
    {
        return Some(None);
    }
    let days = days_from_civil(year, month, day);
    // 1970-01-01 was a Thursday (index 3 from Monday).
    if (days + 3).rem_euclid(7) != weekday {
        return Some(None);
    }
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second;
    Some(Some(i128::from(secs) * NANOS_PER_SEC as i128))
}

/// Reads an RFC 3339 timestamp as Unix nanoseconds. Accepts the forms servers send: `T`, `t` or a
/// space between date and time, optional seconds (Jira's `2026-03-26T16:00Z`), optional fraction,
/// `Z`/`z` or a `±HH:MM` offset. A timestamp without an offset is rejected (its zone is unknown).
pub(crate) fn parse_rfc3339(input: &str) -> Option<i128> {
    let b = trim_ows(input).as_bytes();
    // YYYY-MM-DDTHH:MM is the shortest accepted prefix.
    if b.len() < 17 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    if b[13] != b':' {
        return None;
    }
    let minute = digits(&b[14..16])?;
    let mut rest = &b[16..];
    let mut second = 0;
    let mut nanos: i128 = 0;
    if let [b':', s1, s2, tail @ ..] = rest {
        second = digits(&[*s1, *s2])?;
        rest = tail;
        if let [b'.', tail @ ..] = rest {
            let count = tail.iter().take_while(|c| c.is_ascii_digit()).count();
            if count == 0 {
                return None;
            }
            let mut scale: i128 = 100_000_000;
            for digit in tail[..count].iter().take(9) {
                nanos += i128::from(digit - b'0') * scale;
                scale /= 10;
            }
            rest = &tail[count..];
        }
    }
    let offset_secs: i64 = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = digits(&[*h1, *h2])?;
            let minutes = digits(&[*m1, *m2])?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let magnitude = hours * 3_600 + minutes * 60;
            if *sign == b'+' { magnitude } else { -magnitude }
        }
        _ => return None,
    };
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_secs;
    Some(i128::from(secs) * NANOS_PER_SEC as i128 + nanos)
}

fn digits(bytes: &[u8]) -> Option<i64> {
    let mut value: i64 = 0;
    for b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value * 10 + i64::from(b - b'0');
    }
    Some(value)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn decimals() {
        assert_eq!(
            parse_decimal("64.57").unwrap().as_secs(),
            Duration::new(64, 570_000_000)
        );
        assert_eq!(
            parse_decimal(" 2.0 ").unwrap().as_secs(),
            Duration::from_secs(2)
        );
        assert_eq!(
            parse_decimal("1500").unwrap().as_millis(),
            Duration::from_millis(1500)
        );
        assert_eq!(
            parse_decimal("0.5").unwrap().as_millis(),
            Duration::from_micros(500)
        );
        assert_eq!(parse_decimal("-1"), Err(ValueError::Negative));
        for bad in ["", ".", "abc", "NaN", "inf", "1e3", "1.2.3", "--1", "0x10"] {
            assert_eq!(parse_decimal(bad), Err(ValueError::Malformed), "{bad}");
        }
        let huge = parse_decimal(&"9".repeat(40)).unwrap();
        assert!(huge.saturated);
        assert_eq!(huge.whole, u64::MAX);
    }

    #[test]
    fn go_durations() {
        let cases = [
            ("12ms", secs(0.012)),
            ("6m0s", secs(360.0)),
            ("1s", secs(1.0)),
            ("1h2m3s", secs(3723.0)),
            ("23h47m36.648s", Duration::from_millis(85_656_648)),
            ("500\u{b5}s", Duration::from_micros(500)),
            ("500\u{3bc}s", Duration::from_micros(500)),
            ("500us", Duration::from_micros(500)),
            ("7ns", Duration::from_nanos(7)),
            ("0", Duration::ZERO),
            ("1.5h", secs(5400.0)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_go_duration(text), Ok(expected), "{text}");
        }
        assert_eq!(parse_go_duration("-1s"), Err(ValueError::Negative));
        for bad in ["", "s", "1", "1x", "1s2", "h1"] {
            assert_eq!(parse_go_duration(bad), Err(ValueError::Malformed), "{bad}");
        }
        assert_eq!(
            parse_go_duration(&format!("{}h", "9".repeat(40))),
            Ok(Duration::MAX)
        );
    }

    #[test]
    fn imf_fixdates_take_the_fast_path() {
        // RFC 9110's example; `None` would mean "not shaped as one, ask httpdate".
        let nanos = 784_111_777 * NANOS_PER_SEC as i128;
        assert_eq!(
            imf_fixdate(b"Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Some(nanos))
        );
        assert_eq!(imf_fixdate(b"Mon, 06 Nov 1994 08:49:37 GMT"), Some(None));
        assert_eq!(imf_fixdate(b"Sun, 31 Apr 2024 08:49:37 GMT"), Some(None));
        assert_eq!(imf_fixdate(b"Sunday, 06-Nov-94 08:49:37 GMT"), None);
    }

    #[test]
    fn rfc3339() {
        let noon = 1_755_780_059i128 * 1_000_000_000; // 2025-08-21T12:40:59Z
        assert_eq!(parse_rfc3339("2025-08-21T12:40:59Z"), Some(noon));
        assert_eq!(parse_rfc3339("2025-08-21t12:40:59z"), Some(noon));
        assert_eq!(parse_rfc3339("2025-08-21T07:40:59-05:00"), Some(noon));
        assert_eq!(
            parse_rfc3339("2025-08-21T12:40:59.25Z"),
            Some(noon + 250_000_000)
        );
        assert_eq!(
            parse_rfc3339("2026-03-26T16:00Z"),
            Some(1_774_540_800i128 * 1_000_000_000)
        );
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert!(parse_rfc3339("9999-12-31T23:59:59Z").is_some());
        for bad in [
            "2025-08-21T12:40:59",
            "2025-13-01T00:00Z",
            "2025-02-29T00:00Z",
            "2025-08-21T24:00Z",
            "2025-08-21",
            "2025-08-21T12:40:5Z",
            "2025-08-21T12:40:59.Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn scalar_parsers_never_panic(text in "\\PC{0,40}") {
            let _ = parse_decimal(&text);
            let _ = parse_go_duration(&text);
            let _ = parse_rfc3339(&text);
            let _ = parse_http_date(&text);
        }

        #[test]
        fn decimal_round_trips(whole in any::<u64>(), millis in 0u32..1000) {
            let parsed = parse_decimal(&format!("{whole}.{millis:03}")).unwrap();
            prop_assert_eq!(parsed.whole, whole);
            prop_assert_eq!(parsed.nanos, millis * 1_000_000);
        }

        #[test]
        fn imf_fixdate_agrees_with_httpdate(
            secs in 0u64..253_402_300_800,
            weekday in 0usize..8,
            day in 0u32..40,
            year in prop::sample::select(vec![0u32, 1969, 1970, 2000, 2023, 2024, 2100, 9999]),
            second in 0u32..62,
            padded in any::<bool>(),
        ) {
            // A real date, then the same with a wrong weekday, day, year or second: the fast
            // IMF-fixdate path must give `httpdate`'s verdict on all of them.
            let real = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
            let day_name = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun", "Fr,"][weekday];
            let mutated = [
                format!("{day_name}{}", &real[3..]),
                format!("{}{day:02}{}", &real[..5], &real[7..]),
                format!("{}{year:04}{}", &real[..12], &real[16..]),
                format!("{}{second:02}{}", &real[..23], &real[25..]),
            ];
            for text in std::iter::once(real).chain(mutated) {
                let text = if padded { format!(" \t{text} ") } else { text };
                let expected = httpdate::parse_http_date(text.trim()).ok().map(unix_nanos);
                prop_assert_eq!(parse_http_date(&text), expected, "{}", text);
            }
        }

        #[test]
        fn rfc3339_agrees_with_httpdate(secs in 0u64..253_402_300_799) {
            // IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`; rebuild the same instant in RFC 3339.
            let http = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
            let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
                .iter()
                .position(|m| *m == &http[8..11])
                .unwrap()
                + 1;
            let rfc = format!("{}-{month:02}-{}T{}Z", &http[12..16], &http[5..7], &http[17..25]);
            prop_assert_eq!(parse_rfc3339(&rfc), Some(i128::from(secs) * 1_000_000_000));
        }
    }
}
