//! The configurable [`Parser`] and the dispatch over every dialect.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::info::{
    Dialect, IgnoreReason, Ignored, Policy, RateLimitInfo, Scope, Unit, policy_name,
};
use crate::sf::{self, Draft7, SfEntry, SfNumber};
use crate::value::{
    Decimal, NANOS_PER_SEC, ValueError, duration_from_nanos, imf_fixdate, parse_decimal,
    parse_go_duration, parse_http_date, parse_rfc3339, plain_integer, trim_ows, unix_nanos,
};

/// Header values longer than this many bytes are ignored unread ([`IgnoreReason::TooLong`]).
pub const MAX_VALUE_LEN: usize = 8 * 1024;
/// The lines of one structured field are read up to this many bytes in all.
const MAX_FIELD_LEN: usize = 4 * MAX_VALUE_LEN;
/// At most this many policies are kept per response ([`IgnoreReason::TooManyPolicies`]).
pub const MAX_POLICIES: usize = 64;
/// At most this many [`Ignored`] notes are kept per response.
pub const MAX_IGNORED: usize = 32;
/// The default clamp for every duration: one day (see [`Parser::max_duration`]).
pub const DEFAULT_MAX_DURATION: Duration = Duration::from_secs(86_400);

/// Values at or above this are epoch milliseconds (13 digits, until the year 33658).
const EPOCH_MILLIS_THRESHOLD: u64 = 1_000_000_000_000;
/// Values at or above this are epoch seconds (10 digits: 2001-09-09 onward).
const EPOCH_SECS_THRESHOLD: u64 = 1_000_000_000;
/// An epoch more than this before `Date` is not a reset but a misreading.
const EPOCH_PAST_TOLERANCE_NANOS: i128 = 86_400 * NANOS_PER_SEC as i128;

/// A header whose bare-number reset values are ambiguous, so a caller may fix their meaning
/// (see [`Parser::reset_format`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HeaderFamily {
    /// `RateLimit-Reset`: a delta in the IETF drafts and Persona, an epoch at GitLab and Twitch.
    RateLimitReset,
    /// `X-RateLimit-Reset`: an epoch at GitHub, Discord and express-rate-limit, a delta at
    /// Reddit.
    XRateLimitReset,
    /// Named resets: `x-ratelimit-reset-<name>` (OpenAI, Azure OpenAI) and
    /// `x-ratelimit-<name>-reset` (Linear, epoch milliseconds).
    XRateLimitNamedReset,
    /// `X-Rate-Limit-Reset`: an epoch at Twitter/X and Okta, delta milliseconds at Prisjakt.
    XRateLimitHyphenatedReset,
    /// `anthropic-ratelimit-*-reset` (RFC 3339; `unified-reset` is an epoch).
    AnthropicReset,
}

impl HeaderFamily {
    const COUNT: usize = 5;

    const fn index(self) -> usize {
        match self {
            Self::RateLimitReset => 0,
            Self::XRateLimitReset => 1,
            Self::XRateLimitNamedReset => 2,
            Self::XRateLimitHyphenatedReset => 3,
            Self::AnthropicReset => 4,
        }
    }
}

/// How to read a bare-number reset value. Dates (RFC 3339, HTTP-date) and Go durations are
/// unambiguous and always read as such.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResetFormat {
    /// Dialect knowledge, then magnitude: `>= 1e12` epoch milliseconds, `>= 1e9` epoch
    /// seconds, else delta seconds; epochs are then checked against `Date`.
    #[default]
    Auto,
    /// Seconds from receipt.
    DeltaSeconds,
    /// Milliseconds from receipt.
    DeltaMilliseconds,
    /// Unix seconds (fraction allowed).
    EpochSeconds,
    /// Unix milliseconds.
    EpochMilliseconds,
}

/// A configurable parser. [`parse`](crate::parse) uses `Parser::default()`.
///
/// Keep one `Parser` per upstream host when a host needs an override (the parser does not see
/// the request's URI).
///
/// # Clone
///
/// A `Parser` is a few bytes of configuration; cloning it is free and shares nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parser {
    max_duration: Duration,
    lenient: bool,
    honor_age: bool,
    reset_formats: [ResetFormat; HeaderFamily::COUNT],
}

impl Default for Parser {
    fn default() -> Self {
        Self::new()
    }
}

impl Parser {
    /// The defaults: durations clamped to [`DEFAULT_MAX_DURATION`] (one day), lenient
    /// structured-field fallback on, `Age > 0` honoured, every reset format [`ResetFormat::Auto`].
    pub const fn new() -> Self {
        Self {
            max_duration: DEFAULT_MAX_DURATION,
            lenient: true,
            honor_age: true,
            reset_formats: [ResetFormat::Auto; HeaderFamily::COUNT],
        }
    }

    /// Clamps every duration (Retry-After, resets, windows) to `max`, recording
    /// [`IgnoreReason::Clamped`] and setting [`RateLimitInfo::is_clamped`].
    ///
    /// One day by default: long enough for daily quotas (OpenAI's `23h47m36.648s`, a
    /// `w=86400` window) to be reported faithfully, short enough that no arithmetic on the
    /// result can overflow. The layers clamp further with their own `max_wait`.
    pub const fn max_duration(mut self, max: Duration) -> Self {
        self.max_duration = max;
        self
    }

    /// The clamp set with [`max_duration`](Self::max_duration).
    pub const fn get_max_duration(&self) -> Duration {
        self.max_duration
    }

    /// Whether an IETF field that fails the strict RFC 9651 parse is read by the lenient
    /// fallback ([`IgnoreReason::ReadLeniently`]) or ignored
    /// ([`IgnoreReason::InvalidStructuredField`]), as the draft requires. On by default: a
    /// server's `"x" ;r=5` still says r=5.
    pub const fn lenient(mut self, lenient: bool) -> Self {
        self.lenient = lenient;
        self
    }

    /// Whether rate-limit fields of a cached response (`Age > 0`) are ignored, as the IETF
    /// draft requires. On by default. When off, they are kept with every policy's reset
    /// shortened by `Age` (they were counted from when the origin sent the response).
    /// `Retry-After` is kept either way: RFC 9110 counts it from receipt.
    pub const fn honor_age(mut self, honor: bool) -> Self {
        self.honor_age = honor;
        self
    }

    /// Fixes how bare numbers in one header family are read, overriding the magnitude rule
    /// (e.g. `X-Rate-Limit-Reset` as [`ResetFormat::DeltaMilliseconds`] for Prisjakt).
    pub const fn reset_format(mut self, family: HeaderFamily, format: ResetFormat) -> Self {
        self.reset_formats[family.index()] = format;
        self
    }

    /// Parses a response's status and headers. `received_at` is the local (wall-clock) time
    /// the response arrived; absolute times are converted through the response's `Date`.
    ///
    /// Never panics; everything unreadable is skipped and listed in
    /// [`RateLimitInfo::ignored`].
    pub fn parse(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        received_at: SystemTime,
    ) -> RateLimitInfo {
        let mut seen = Seen::default();
        for (name, value) in headers {
            seen.record(name, value);
        }
        // Filled in place: the result is a few hundred bytes, not worth copying out.
        let mut out = RateLimitInfo::new(status);
        let mut cx = Context {
            parser: self,
            received_at,
            base: None,
            cached: false,
            kept_age: None,
            out: &mut out,
        };
        cx.run(&seen);
        out
    }

    /// Reads a retry delay from a response body (opt-in: bodies are not headers), clamped to
    /// [`max_duration`](Self::max_duration). See [`retry_delay_from_body`](crate::retry_delay_from_body).
    pub fn retry_delay_from_body(&self, body: &[u8]) -> Option<Duration> {
        crate::body::retry_delay(body).map(|delay| delay.min(self.max_duration))
    }
}

type Field<'h> = Option<(&'h HeaderName, &'h HeaderValue)>;
type Line<'h> = (&'h HeaderName, &'h HeaderValue);

fn first<'h>(slot: &mut Field<'h>, name: &'h HeaderName, value: &'h HeaderValue) {
    if slot.is_none() {
        *slot = Some((name, value));
    }
}

/// A list whose first `N` items live inline, so the few lines a response usually sends of a
/// family cost no allocation; later items go to `spill`, keeping the order.
#[derive(Debug)]
struct Small<T, const N: usize> {
    inline: [Option<T>; N],
    len: usize,
    spill: Vec<T>,
}

impl<T, const N: usize> Default for Small<T, N> {
    fn default() -> Self {
        Self {
            inline: [const { None }; N],
            len: 0,
            spill: Vec::new(),
        }
    }
}

impl<T, const N: usize> Small<T, N> {
    fn push(&mut self, item: T) {
        match self.inline.get_mut(self.len) {
            Some(slot) => *slot = Some(item),
            None => self.spill.push(item),
        }
        self.len += 1;
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn first(&self) -> Option<&T> {
        self.iter().next()
    }

    fn iter(&self) -> impl Iterator<Item = &T> {
        let inline = &self.inline[..self.len.min(N)];
        inline.iter().flatten().chain(&self.spill)
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.inline.iter_mut().flatten().chain(&mut self.spill)
    }

    fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        match self.inline.get_mut(index) {
            Some(slot) => slot.as_mut(),
            None => self.spill.get_mut(index - N),
        }
    }

    fn into_iter(self) -> impl Iterator<Item = T> {
        self.inline.into_iter().flatten().chain(self.spill)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Limit,
    Remaining,
    Reset,
}

#[derive(Clone, Copy, Debug)]
struct NamedPart<'h> {
    dialect: Dialect,
    name: &'h str,
    part: Part,
    line: Line<'h>,
}

/// The lines of one field, inline for the one or two a server sends.
type Lines<'h> = Small<Line<'h>, 2>;

#[derive(Debug, Default)]
struct IetfLines<'h> {
    limit: Lines<'h>,
    policy: Lines<'h>,
}

#[derive(Debug, Default)]
struct LegacyFields<'h> {
    limit: Field<'h>,
    remaining: Field<'h>,
    reset: Field<'h>,
    observed: Field<'h>,
    reset_time: Field<'h>,
    name: Field<'h>,
}

impl<'h> LegacyFields<'h> {
    /// The header a legacy policy is reported under; `None` when there is no policy to read.
    fn header(&self) -> Option<&'h HeaderName> {
        [self.limit, self.remaining, self.reset, self.reset_time]
            .into_iter()
            .flatten()
            .next()
            .map(|line| line.0)
    }
}

#[derive(Debug, Default)]
struct XFields<'h> {
    limit: Field<'h>,
    remaining: Field<'h>,
    reset: Field<'h>,
    used: Field<'h>,
    reset_after: Field<'h>,
    resource: Field<'h>,
    bucket: Field<'h>,
    global: Field<'h>,
    scope: Field<'h>,
}

#[derive(Debug, Default)]
struct HyphenFields<'h> {
    limit: Field<'h>,
    remaining: Field<'h>,
    reset: Field<'h>,
}

#[derive(Debug, Default)]
struct HubSpotFields<'h> {
    daily: Field<'h>,
    daily_remaining: Field<'h>,
    interval_ms: Field<'h>,
    max: Field<'h>,
    remaining: Field<'h>,
    secondly: Field<'h>,
    secondly_remaining: Field<'h>,
}

/// Which families of [`Seen`] may hold lines, so that `Context::run` skips the others (each
/// dialect step is a no-op without its lines: marking too much is harmless, too little not).
mod family {
    /// `RateLimit`, `RateLimit-Policy`, `RateLimit-*` (and `RateLimit-Reason`).
    pub(super) const IETF: u16 = 1;
    /// `Beta-RateLimit`, `Beta-RateLimit-Policy`.
    pub(super) const BETA: u16 = 1 << 1;
    /// `X-RateLimit-*`, named ones included.
    pub(super) const X: u16 = 1 << 2;
    /// `X-Rate-Limit-*`.
    pub(super) const HYPHEN: u16 = 1 << 3;
    /// `anthropic-ratelimit-*`.
    pub(super) const ANTHROPIC: u16 = 1 << 4;
    /// Shopify, Salesforce, Azure Resource Manager, HubSpot, Zendesk, Stripe and Jira reasons.
    pub(super) const OTHER: u16 = 1 << 5;
}

/// The relevant header lines, gathered in one pass over the map.
#[derive(Debug, Default)]
struct Seen<'h> {
    /// The [`family`] bits of the lines recorded.
    families: u16,
    retry_after: Field<'h>,
    retry_after_ms: Field<'h>,
    date: Field<'h>,
    age: Field<'h>,
    ietf: IetfLines<'h>,
    beta_ietf: IetfLines<'h>,
    legacy: LegacyFields<'h>,
    x: XFields<'h>,
    hyphen: HyphenFields<'h>,
    /// OpenAI sends six lines (three parts of two policies).
    named: Small<NamedPart<'h>, 6>,
    hubspot: HubSpotFields<'h>,
    shopify: Field<'h>,
    salesforce: Field<'h>,
    arm: Vec<(&'h str, Line<'h>)>,
    zendesk: Vec<(&'h str, Line<'h>)>,
    reason: Field<'h>,
    stripe_should_retry: Field<'h>,
}

impl<'h> Seen<'h> {
    fn record(&mut self, name: &'h HeaderName, value: &'h HeaderValue) {
        // `http` keeps names lowercase. The first byte sorts out most of a response's other
        // headers (`content-type`, `etag`, `vary`, ...) before any string comparison.
        let text = name.as_str();
        match text.as_bytes().first() {
            Some(b'x') => self.record_x_prefixed(text, name, value),
            Some(b'r') if text.starts_with("retry-after") => {
                match text {
                    "retry-after" => first(&mut self.retry_after, name, value),
                    "retry-after-ms" => first(&mut self.retry_after_ms, name, value),
                    _ => {}
                }
                return;
            }
            Some(b'r') => match text {
                "ratelimit" => self.ietf.limit.push((name, value)),
                "ratelimit-policy" => self.ietf.policy.push((name, value)),
                "ratelimit-limit" => first(&mut self.legacy.limit, name, value),
                "ratelimit-remaining" => first(&mut self.legacy.remaining, name, value),
                "ratelimit-reset" => first(&mut self.legacy.reset, name, value),
                "ratelimit-observed" => first(&mut self.legacy.observed, name, value),
                "ratelimit-resettime" => first(&mut self.legacy.reset_time, name, value),
                "ratelimit-name" => first(&mut self.legacy.name, name, value),
                "ratelimit-reason" => first(&mut self.reason, name, value),
                _ => return,
            },
            Some(b'd') => {
                if text == "date" {
                    first(&mut self.date, name, value);
                }
                return;
            }
            Some(b'a') => {
                if text == "age" {
                    first(&mut self.age, name, value);
                } else if let Some(rest) = text.strip_prefix("anthropic-ratelimit-") {
                    self.families |= family::ANTHROPIC;
                    self.record_named(Dialect::Anthropic, rest, name, value);
                }
                return;
            }
            Some(b'b') => match text {
                "beta-ratelimit" => self.beta_ietf.limit.push((name, value)),
                "beta-ratelimit-policy" => self.beta_ietf.policy.push((name, value)),
                _ => return,
            },
            Some(b's') => match text {
                "sforce-limit-info" => first(&mut self.salesforce, name, value),
                "stripe-rate-limited-reason" => first(&mut self.reason, name, value),
                "stripe-should-retry" => first(&mut self.stripe_should_retry, name, value),
                _ => return,
            },
            Some(b'z') => match text.strip_prefix("zendesk-ratelimit-") {
                Some(rest) => self.zendesk.push((rest, (name, value))),
                None => return,
            },
            _ => return,
        }
        // Only the arms that recorded a line of a dialect get here.
        self.families |= match text.as_bytes()[0] {
            b'r' => family::IETF,
            b'b' => family::BETA,
            _ => family::OTHER,
        };
    }

    /// The names starting with `x`: the third byte picks the family.
    fn record_x_prefixed(&mut self, text: &'h str, name: &'h HeaderName, value: &'h HeaderValue) {
        let bytes = text.as_bytes();
        if bytes.get(1) != Some(&b'-') {
            return;
        }
        match bytes.get(2) {
            Some(b'r') => {
                if let Some(rest) = text.strip_prefix("x-ratelimit-") {
                    self.families |= family::X;
                    self.record_x(rest, name, value);
                    return;
                }
                match text {
                    "x-rate-limit" | "x-rate-limit-limit" => {
                        first(&mut self.hyphen.limit, name, value);
                    }
                    "x-rate-limit-remaining" => first(&mut self.hyphen.remaining, name, value),
                    "x-rate-limit-reset" => first(&mut self.hyphen.reset, name, value),
                    _ => return,
                }
                self.families |= family::HYPHEN;
                return;
            }
            Some(b's') if text == "x-shopify-shop-api-call-limit" => {
                first(&mut self.shopify, name, value);
            }
            Some(b'b') if text == "x-beta-ratelimit-reason" => first(&mut self.reason, name, value),
            Some(b'm') => match text.strip_prefix("x-ms-ratelimit-remaining-") {
                Some(rest) => self.arm.push((rest, (name, value))),
                None => return,
            },
            Some(b'h') => match text.strip_prefix("x-hubspot-ratelimit-") {
                Some(rest) => self.record_hubspot(rest, name, value),
                None => return,
            },
            _ => return,
        }
        self.families |= family::OTHER;
    }

    fn record_x(&mut self, rest: &'h str, name: &'h HeaderName, value: &'h HeaderValue) {
        let x = &mut self.x;
        let slot = match rest {
            "limit" => &mut x.limit,
            "remaining" => &mut x.remaining,
            "reset" => &mut x.reset,
            "used" => &mut x.used,
            "reset-after" => &mut x.reset_after,
            "resource" => &mut x.resource,
            "bucket" => &mut x.bucket,
            "global" => &mut x.global,
            "scope" => &mut x.scope,
            _ => {
                // OpenAI `limit-requests`, Linear `requests-limit`.
                let named = [
                    ("limit-", Part::Limit),
                    ("remaining-", Part::Remaining),
                    ("reset-", Part::Reset),
                ]
                .into_iter()
                .find_map(|(prefix, part)| Some((rest.strip_prefix(prefix)?, part)))
                .or_else(|| {
                    [
                        ("-limit", Part::Limit),
                        ("-remaining", Part::Remaining),
                        ("-reset", Part::Reset),
                    ]
                    .into_iter()
                    .find_map(|(suffix, part)| Some((rest.strip_suffix(suffix)?, part)))
                });
                if let Some((policy, part)) = named
                    && !policy.is_empty()
                {
                    self.named.push(NamedPart {
                        dialect: Dialect::XRateLimitNamed,
                        name: policy,
                        part,
                        line: (name, value),
                    });
                }
                return;
            }
        };
        first(slot, name, value);
    }

    fn record_named(
        &mut self,
        dialect: Dialect,
        rest: &'h str,
        name: &'h HeaderName,
        value: &'h HeaderValue,
    ) {
        let named = [
            ("-limit", Part::Limit),
            ("-remaining", Part::Remaining),
            ("-reset", Part::Reset),
        ]
        .into_iter()
        .find_map(|(suffix, part)| Some((rest.strip_suffix(suffix)?, part)));
        if let Some((policy, part)) = named
            && !policy.is_empty()
        {
            self.named.push(NamedPart {
                dialect,
                name: policy,
                part,
                line: (name, value),
            });
        }
    }

    fn record_hubspot(&mut self, rest: &str, name: &'h HeaderName, value: &'h HeaderValue) {
        let h = &mut self.hubspot;
        let slot = match rest {
            "daily" => &mut h.daily,
            "daily-remaining" => &mut h.daily_remaining,
            "interval-milliseconds" => &mut h.interval_ms,
            "max" => &mut h.max,
            "remaining" => &mut h.remaining,
            "secondly" => &mut h.secondly,
            "secondly-remaining" => &mut h.secondly_remaining,
            _ => return,
        };
        first(slot, name, value);
    }
}

/// A quota policy without state (drafts <= 07 `RateLimit-Policy` items, the extra items of
/// `RateLimit-Limit: 10, 10;w=1`).
#[derive(Debug)]
struct Quota {
    limit: u64,
    window: Option<Duration>,
}

/// The parse state of one response.
struct Context<'p, 'o> {
    parser: &'p Parser,
    /// The server's "now" in Unix nanoseconds: `Date` when valid, else (filled in by
    /// [`base`](Self::base) on first use) the receive time.
    base: Option<i128>,
    received_at: SystemTime,
    cached: bool,
    /// The `Age` of a cached response whose fields are kept (`honor_age(false)`).
    kept_age: Option<Duration>,
    out: &'o mut RateLimitInfo,
}

impl Context<'_, '_> {
    fn run(&mut self, seen: &Seen<'_>) {
        self.date(seen.date);
        self.age(seen.age);
        self.retry_after(seen.retry_after_ms, seen.retry_after);

        // The steps in their fixed order (it orders the policies and notes), each skipped
        // when none of its lines came.
        let has = |families: u16| seen.families & families != 0;
        if has(family::IETF) {
            self.ietf(&seen.ietf, Some(&seen.legacy));
        }
        if has(family::BETA) {
            self.ietf(&seen.beta_ietf, None);
        }
        if has(family::X) {
            self.x_ratelimit(&seen.x);
        }
        if has(family::HYPHEN) {
            self.hyphenated(&seen.hyphen);
        }
        if has(family::X | family::ANTHROPIC) {
            self.named(&seen.named);
        }
        if has(family::OTHER) {
            self.shopify(seen.shopify);
            self.salesforce(seen.salesforce);
            self.azure_resource_manager(&seen.arm);
            self.hubspot(&seen.hubspot);
            self.zendesk(&seen.zendesk);
        }
        if has(family::X) {
            self.discord(&seen.x);
        }
        if has(family::IETF | family::OTHER) {
            self.reason(seen.reason, seen.stripe_should_retry);
        }

        let status = self.out.status;
        self.out.rate_limited = status == StatusCode::TOO_MANY_REQUESTS
            || (status == StatusCode::FORBIDDEN
                && (self.out.retry_after.is_some()
                    || self.out.policies().iter().any(Policy::is_exhausted)));
    }

    // ---- helpers -------------------------------------------------------------------------

    /// The server's "now" in Unix nanoseconds: `Date` when valid, else the receive time (read
    /// only when an absolute time needs it).
    fn base(&mut self) -> i128 {
        *self
            .base
            .get_or_insert_with(|| unix_nanos(self.received_at))
    }

    fn note(&mut self, header: &HeaderName, reason: IgnoreReason) {
        if self.out.ignored.len() < MAX_IGNORED {
            self.out.ignored.push(Ignored {
                header: header.clone(),
                reason,
            });
        }
    }

    /// The value as text, or `None` (noted) when too long or not UTF-8.
    fn text<'v>(&mut self, (name, value): Line<'v>) -> Option<&'v str> {
        if value.len() > MAX_VALUE_LEN {
            self.note(name, IgnoreReason::TooLong);
            return None;
        }
        // Visible ASCII is the norm; Go durations may carry a UTF-8 `µ`.
        let text = match value.to_str() {
            Ok(text) => text,
            Err(_) => match std::str::from_utf8(value.as_bytes()) {
                Ok(text) => text,
                Err(_) => {
                    self.note(name, IgnoreReason::NotUtf8);
                    return None;
                }
            },
        };
        Some(trim_ows(text))
    }

    /// When a family's fields are present on a cached response: note it and say "skip".
    fn skip_cached(&mut self, header: Option<&HeaderName>) -> bool {
        match header {
            Some(header) if self.cached => {
                self.note(header, IgnoreReason::CachedResponse);
                true
            }
            _ => false,
        }
    }

    fn clamp(&mut self, header: &HeaderName, duration: Duration) -> Duration {
        if duration > self.parser.max_duration {
            self.out.clamped = true;
            self.note(header, IgnoreReason::Clamped);
            self.parser.max_duration
        } else {
            duration
        }
    }

    fn number_error(&mut self, header: &HeaderName, error: ValueError) {
        let reason = match error {
            ValueError::Malformed => IgnoreReason::Malformed,
            ValueError::Negative => IgnoreReason::Negative,
        };
        self.note(header, reason);
    }

    /// A count from an already-read number (floats floored: Reddit's `596.0`).
    fn count_of(&mut self, header: &HeaderName, number: SfNumber) -> Option<u64> {
        match number {
            Ok(decimal) if decimal.saturated => {
                self.note(header, IgnoreReason::TooLarge);
                None
            }
            Ok(decimal) => Some(decimal.whole),
            Err(error) => {
                self.number_error(header, error);
                None
            }
        }
    }

    fn count_text(&mut self, header: &HeaderName, text: &str) -> Option<u64> {
        self.count_of(header, parse_number(text))
    }

    fn count(&mut self, field: Field<'_>) -> Option<u64> {
        let line = field?;
        if let Some(count) = plain_integer(line.1.as_bytes()) {
            return Some(count);
        }
        let text = self.text(line)?;
        self.count_text(line.0, text)
    }

    /// A delta in (possibly fractional) seconds from an already-read number, clamped.
    fn delta_of(&mut self, header: &HeaderName, number: SfNumber) -> Option<Duration> {
        match number {
            Ok(decimal) => Some(self.clamp(header, decimal.as_secs())),
            Err(error) => {
                self.number_error(header, error);
                None
            }
        }
    }

    fn delta(&mut self, field: Field<'_>) -> Option<Duration> {
        let line = field?;
        if let Some(whole) = plain_integer(line.1.as_bytes()) {
            return self.delta_of(line.0, Ok(Decimal::integer(whole)));
        }
        let text = self.text(line)?;
        self.delta_of(line.0, parse_number(text))
    }

    /// The time from the server's "now" (`Date`, else receipt) until `at`; past times give
    /// zero, implausibly old epochs are dropped.
    fn until(&mut self, header: &HeaderName, at: i128) -> Option<Duration> {
        let ahead = at - self.base();
        if ahead < -EPOCH_PAST_TOLERANCE_NANOS {
            self.note(header, IgnoreReason::ImplausibleEpoch);
            return None;
        }
        let ahead = u128::try_from(ahead).unwrap_or(0);
        Some(self.clamp(header, duration_from_nanos(ahead)))
    }

    /// A reset value in any notation, read per `format` (see the crate docs' epoch/delta rule).
    fn reset_text(
        &mut self,
        header: &HeaderName,
        text: &str,
        format: ResetFormat,
    ) -> Option<Duration> {
        // A value ending in a unit or a zone (`6m0s`, `...Z`, `... GMT`) is no number: go
        // straight to the other notations, as `parse_number` would find it malformed.
        let number = match text.as_bytes().last() {
            Some(last)
                if !matches!(last, b'0'..=b'9' | b'.' | b' ' | b'\t') && !text.contains(',') =>
            {
                Err(ValueError::Malformed)
            }
            _ => parse_number(text),
        };
        match number {
            Ok(decimal) => self.reset_number(header, decimal, format),
            Err(ValueError::Negative) => {
                self.note(header, IgnoreReason::Negative);
                None
            }
            Err(ValueError::Malformed) => {
                if let Ok(duration) = parse_go_duration(text) {
                    return Some(self.clamp(header, duration));
                }
                if let Some(at) = parse_rfc3339(text).or_else(|| parse_http_date(text)) {
                    return self.until(header, at);
                }
                self.note(header, IgnoreReason::Malformed);
                None
            }
        }
    }

    fn reset_number(
        &mut self,
        header: &HeaderName,
        decimal: Decimal,
        format: ResetFormat,
    ) -> Option<Duration> {
        let format = match format {
            ResetFormat::Auto if decimal.whole >= EPOCH_MILLIS_THRESHOLD => {
                ResetFormat::EpochMilliseconds
            }
            ResetFormat::Auto if decimal.whole >= EPOCH_SECS_THRESHOLD => ResetFormat::EpochSeconds,
            ResetFormat::Auto => ResetFormat::DeltaSeconds,
            other => other,
        };
        let nanos = match format {
            ResetFormat::DeltaMilliseconds | ResetFormat::EpochMilliseconds => {
                decimal.as_millis().as_nanos()
            }
            _ => decimal.as_secs().as_nanos(),
        };
        match format {
            ResetFormat::EpochSeconds | ResetFormat::EpochMilliseconds => {
                // At most ~1.8e28 (u64::MAX seconds), far inside i128.
                self.until(header, nanos as i128)
            }
            _ => Some(self.clamp(header, duration_from_nanos(nanos))),
        }
    }

    fn reset(&mut self, field: Field<'_>, format: ResetFormat) -> Option<Duration> {
        let line = field?;
        if let Some(whole) = plain_integer(line.1.as_bytes()) {
            return self.reset_number(line.0, Decimal::integer(whole), format);
        }
        let text = self.text(line)?;
        self.reset_text(line.0, text, format)
    }

    fn format(&self, family: HeaderFamily) -> ResetFormat {
        self.parser.reset_formats[family.index()]
    }

    /// Keeps the policy if it says anything, enforcing `remaining <= limit` and the cap.
    fn push_policy(&mut self, header: &HeaderName, mut policy: Policy) {
        if policy.limit.is_none()
            && policy.remaining.is_none()
            && policy.reset_after.is_none()
            && policy.window.is_none()
        {
            return;
        }
        if let Some(age) = self.kept_age {
            // A cached response's resets were counted from its generation, Age ago.
            policy.reset_after = policy.reset_after.map(|reset| reset.saturating_sub(age));
        }
        if let (Some(limit), Some(remaining)) = (policy.limit, policy.remaining)
            && remaining > limit
        {
            self.note(header, IgnoreReason::RemainingAboveLimit);
            policy.remaining = Some(limit);
        }
        if self.out.policies.len() >= MAX_POLICIES {
            self.note(header, IgnoreReason::TooManyPolicies);
            return;
        }
        self.out.policies.push(policy);
    }

    // ---- Date, Age, Retry-After ------------------------------------------------------------

    fn date(&mut self, field: Field<'_>) {
        let Some(line) = field else { return };
        // The IMF-fixdate every server sends, read from the bytes: each byte of one is visible
        // ASCII and neither end is whitespace, so `text` would hand it over unchanged.
        if let Some(date) = imf_fixdate(line.1.as_bytes()) {
            match date {
                Some(date) => self.base = Some(date),
                None => self.note(line.0, IgnoreReason::Malformed),
            }
            return;
        }
        let Some(text) = self.text(line) else { return };
        match parse_http_date(text) {
            Some(date) => self.base = Some(date),
            None => self.note(line.0, IgnoreReason::Malformed),
        }
    }

    fn age(&mut self, field: Field<'_>) {
        let Some(line) = field else { return };
        let Some(text) = self.text(line) else { return };
        match parse_number(text) {
            Ok(decimal) => {
                self.out.age = Some(self.clamp(line.0, decimal.as_secs()));
                if self.out.is_cached() {
                    self.cached = self.parser.honor_age;
                    self.kept_age = (!self.parser.honor_age).then_some(decimal.as_secs());
                }
            }
            Err(error) => self.number_error(line.0, error),
        }
    }

    fn retry_after(&mut self, ms: Field<'_>, seconds: Field<'_>) {
        if let Some(line) = ms
            && let Some(text) = self.text(line)
        {
            match parse_number(text) {
                Ok(decimal) => {
                    self.out.retry_after = Some(self.clamp(line.0, decimal.as_millis()));
                    return;
                }
                Err(error) => self.number_error(line.0, error),
            }
        }
        let Some(line) = seconds else { return };
        let Some(text) = self.text(line) else { return };
        self.out.retry_after = match parse_number(text) {
            Ok(decimal) => Some(self.clamp(line.0, decimal.as_secs())),
            Err(ValueError::Negative) => {
                self.note(line.0, IgnoreReason::Negative);
                None
            }
            Err(ValueError::Malformed) => match parse_http_date(text) {
                // An HTTP-date is "retry at": relative to Date, past dates mean now.
                Some(at) => self.until_date(line.0, at),
                None => {
                    self.note(line.0, IgnoreReason::Malformed);
                    None
                }
            },
        };
    }

    fn until_date(&mut self, header: &HeaderName, at: i128) -> Option<Duration> {
        let ahead = u128::try_from(at - self.base()).unwrap_or(0);
        Some(self.clamp(header, duration_from_nanos(ahead)))
    }

    // ---- IETF ----------------------------------------------------------------------------

    /// The texts of a field's lines, up to [`MAX_FIELD_LEN`] bytes in all.
    fn texts<'v>(&mut self, lines: &Lines<'v>) -> Small<&'v str, 2> {
        let mut texts = Small::default();
        let mut total = 0;
        for line in lines.iter() {
            if let Some(text) = self.text(*line) {
                total += text.len() + 2;
                if total > MAX_FIELD_LEN {
                    self.note(line.0, IgnoreReason::TooLong);
                    break;
                }
                texts.push(text);
            }
        }
        texts
    }

    /// The lines of one SF List field, strict (joined, as RFC 9651 combines field lines) then
    /// lenient per line.
    fn sf_list(&mut self, lines: &Lines<'_>) -> Vec<SfEntry> {
        let Some(&(header, _)) = lines.first() else {
            return Vec::new();
        };
        let texts = self.texts(lines);
        if let Some(entries) = sf::strict_list(&joined(&texts)) {
            return entries;
        }
        if !self.parser.lenient {
            self.note(header, IgnoreReason::InvalidStructuredField);
            return Vec::new();
        }
        self.note(header, IgnoreReason::ReadLeniently);
        texts
            .into_iter()
            .flat_map(|text| sf::lenient(text).0)
            .collect()
    }

    /// `RateLimit`: an SF List (draft-08+), else the draft-07 Dictionary, else lenient.
    fn sf_ratelimit(&mut self, lines: &Lines<'_>) -> (Vec<SfEntry>, Option<Draft7>) {
        let Some(&(header, _)) = lines.first() else {
            return (Vec::new(), None);
        };
        let texts = self.texts(lines);
        let joined = joined(&texts);
        if let Some(entries) = sf::strict_list(&joined) {
            return (entries, None);
        }
        if let Some(draft7) = sf::strict_dict(&joined) {
            return (Vec::new(), Some(draft7));
        }
        if !self.parser.lenient {
            self.note(header, IgnoreReason::InvalidStructuredField);
            return (Vec::new(), None);
        }
        self.note(header, IgnoreReason::ReadLeniently);
        let mut entries = Vec::new();
        let mut draft7 = None;
        for text in texts.into_iter() {
            let (mut line_entries, line_draft7) = sf::lenient(text);
            entries.append(&mut line_entries);
            draft7 = draft7.or(line_draft7);
        }
        (entries, draft7)
    }

    fn optional_count(&mut self, header: &HeaderName, number: Option<SfNumber>) -> Option<u64> {
        number.and_then(|number| self.count_of(header, number))
    }

    fn optional_delta(
        &mut self,
        header: &HeaderName,
        number: Option<SfNumber>,
    ) -> Option<Duration> {
        number.and_then(|number| self.delta_of(header, number))
    }

    fn ietf<'h>(&mut self, lines: &IetfLines<'h>, legacy: Option<&LegacyFields<'h>>) {
        if lines.limit.is_empty() && lines.policy.is_empty() {
            // No structured field: at most the legacy fields, kept clear of the bulky state
            // below (the same steps as the general path takes when both fields are absent).
            let Some(legacy) = legacy else { return };
            let mut quotas = Vec::new();
            if let Some((header, primary)) = self.legacy(legacy, &mut quotas) {
                let dialect = primary.dialect;
                self.merge_quotas(header, Some(primary), quotas, dialect);
            }
            return;
        }
        let first_header = lines
            .limit
            .first()
            .or(lines.policy.first())
            .map(|line| line.0);
        if self.skip_cached(first_header) {
            return;
        }
        let policy_entries = if lines.policy.is_empty() {
            Vec::new()
        } else {
            self.sf_list(&lines.policy)
        };
        let policy_header = lines.policy.first().map(|line| line.0);
        let mut quotas = Vec::new();
        let mut named_quotas: Small<(SfEntry, bool), 2> = Small::default();
        for entry in policy_entries {
            let Some(header) = policy_header else { break };
            if entry.name.is_some() {
                named_quotas.push((entry, false));
            } else if let Some(number) = entry.number
                && let Some(limit) = self.count_of(header, number)
            {
                let window = self.optional_delta(header, entry.window);
                quotas.push(Quota { limit, window });
            }
        }

        let mut primary = None;
        if let Some(&(limit_header, _)) = lines.limit.first() {
            let (entries, draft7) = self.sf_ratelimit(&lines.limit);
            for entry in entries {
                let Some(name) = entry.name else {
                    self.note(limit_header, IgnoreReason::Malformed);
                    continue;
                };
                let mut policy = Policy::new(Dialect::Ietf);
                if let Some((quota, used)) = named_quotas
                    .iter_mut()
                    .find(|(quota, used)| !*used && quota.name.as_deref() == Some(&*name))
                {
                    *used = true;
                    let quota = std::mem::take(quota);
                    let header = policy_header.unwrap_or(limit_header);
                    self.apply_quota(header, &mut policy, quota);
                }
                if entry.remaining.is_none() {
                    self.note(limit_header, IgnoreReason::MissingParameter);
                }
                policy.remaining = self.optional_count(limit_header, entry.remaining);
                policy.reset_after = self.optional_delta(limit_header, entry.reset);
                if entry.partition_key.is_some() {
                    policy.partition_key = entry.partition_key;
                }
                policy.name = Some(name);
                self.push_policy(limit_header, policy);
            }
            if let Some(draft7) = draft7 {
                let mut policy = Policy::new(Dialect::IetfDraft7);
                policy.limit = self.optional_count(limit_header, draft7.limit);
                policy.remaining = self.optional_count(limit_header, draft7.remaining);
                policy.reset_after = self.optional_delta(limit_header, draft7.reset);
                primary = Some((limit_header, policy));
            }
        }
        for (quota, used) in named_quotas.into_iter() {
            if used {
                continue;
            }
            let Some(header) = policy_header else { break };
            let mut policy = Policy::new(Dialect::Ietf);
            self.apply_quota(header, &mut policy, quota);
            self.push_policy(header, policy);
        }

        if primary.is_none()
            && let Some(legacy) = legacy
        {
            primary = self.legacy(legacy, &mut quotas);
        }
        let dialect = primary
            .as_ref()
            .map_or(Dialect::IetfLegacy, |(_, p)| p.dialect);
        let header = primary.as_ref().map(|(h, _)| *h).or(policy_header);
        if let Some(header) = header {
            self.merge_quotas(header, primary.map(|(_, p)| p), quotas, dialect);
        }
    }

    fn apply_quota(&mut self, header: &HeaderName, policy: &mut Policy, quota: SfEntry) {
        policy.name = quota.name;
        policy.limit = self.optional_count(header, quota.quota);
        policy.window = self.optional_delta(header, quota.window);
        policy.partition_key = quota.partition_key;
        if let Some(unit) = quota.unit {
            policy.unit = match unit.as_str() {
                "requests" => Unit::Requests,
                "content-bytes" => Unit::Bytes,
                "concurrent-requests" => Unit::ConcurrentRequests,
                _ => Unit::Other,
            };
        }
    }

    /// Pushes the primary (expiring) policy and the quota policies, giving the primary the
    /// window of the one quota with the same limit.
    fn merge_quotas(
        &mut self,
        header: &HeaderName,
        primary: Option<Policy>,
        mut quotas: Vec<Quota>,
        dialect: Dialect,
    ) {
        if let Some(mut primary) = primary {
            let mut matching = quotas
                .iter()
                .enumerate()
                .filter(|(_, quota)| Some(quota.limit) == primary.limit && quota.window.is_some());
            if primary.window.is_none()
                && let Some((index, _)) = matching.next()
                && matching.next().is_none()
            {
                primary.window = quotas.remove(index).window;
            }
            self.push_policy(header, primary);
        }
        for quota in quotas {
            let mut policy = Policy::new(dialect);
            policy.limit = Some(quota.limit);
            policy.window = quota.window;
            self.push_policy(header, policy);
        }
    }

    /// A `limit` value that may be a list (`10, 10;w=1, 1000;w=3600`, WHOOP's `window=`): the
    /// first plain number is the expiring limit, the others are quota policies.
    fn limit_list(&mut self, line: Line<'_>, quotas: &mut Vec<Quota>) -> Option<u64> {
        if let Some(limit) = plain_integer(line.1.as_bytes()) {
            return Some(limit);
        }
        let text = self.text(line)?;
        if !text.contains([',', ';']) {
            return self.count_text(line.0, text);
        }
        let mut lines = Lines::default();
        lines.push(line);
        let entries = self.sf_list(&lines);
        let mut limit = None;
        for entry in entries {
            let Some(number) = entry.number else { continue };
            let Some(value) = self.count_of(line.0, number) else {
                continue;
            };
            if entry.window.is_none() && limit.is_none() {
                limit = Some(value);
            } else {
                let window = self.optional_delta(line.0, entry.window);
                quotas.push(Quota {
                    limit: value,
                    window,
                });
            }
        }
        limit
    }

    /// `RateLimit-Limit/-Remaining/-Reset` (drafts <= 06, Twitch, Zendesk lists) and GitLab.
    fn legacy<'h>(
        &mut self,
        fields: &LegacyFields<'h>,
        quotas: &mut Vec<Quota>,
    ) -> Option<(&'h HeaderName, Policy)> {
        let header = fields.header()?;
        if self.skip_cached(Some(header)) {
            return None;
        }
        let gitlab =
            fields.observed.is_some() || fields.reset_time.is_some() || fields.name.is_some();
        let mut policy = Policy::new(if gitlab {
            Dialect::GitLab
        } else {
            Dialect::IetfLegacy
        });
        policy.limit = fields.limit.and_then(|line| self.limit_list(line, quotas));
        policy.remaining = self.count(fields.remaining);
        let observed = self.count(fields.observed);
        if policy.remaining.is_none()
            && let (Some(limit), Some(observed)) = (policy.limit, observed)
        {
            policy.remaining = Some(limit.saturating_sub(observed));
        }
        let format = match self.format(HeaderFamily::RateLimitReset) {
            // Dialect knowledge: GitLab's RateLimit-Reset is an epoch.
            ResetFormat::Auto if gitlab => ResetFormat::EpochSeconds,
            format => format,
        };
        policy.reset_after = self.reset(fields.reset, format);
        if policy.reset_after.is_none()
            && let Some(line) = fields.reset_time
            && let Some(text) = self.text(line)
        {
            policy.reset_after = match parse_http_date(text) {
                Some(at) => self.until(line.0, at),
                None => {
                    self.note(line.0, IgnoreReason::Malformed);
                    None
                }
            };
        }
        if let Some(line) = fields.name
            && let Some(text) = self.text(line)
        {
            let name = policy_name(text);
            if self.out.bucket.is_none() {
                self.out.bucket = Some(name.clone());
            }
            policy.name = Some(name);
        }
        Some((header, policy))
    }

    // ---- X-RateLimit-* and X-Rate-Limit-* ---------------------------------------------------

    fn x_ratelimit(&mut self, x: &XFields<'_>) {
        let Some(header) = [x.limit, x.remaining, x.reset, x.used, x.reset_after]
            .into_iter()
            .flatten()
            .next()
            .map(|line| line.0)
        else {
            return;
        };
        if self.skip_cached(Some(header)) {
            return;
        }
        let mut quotas = Vec::new();
        let mut policy = Policy::new(Dialect::XRateLimit);
        policy.limit = x.limit.and_then(|line| self.limit_list(line, &mut quotas));
        policy.remaining = self.count(x.remaining);
        let used = self.count(x.used);
        match (policy.limit, policy.remaining, used) {
            (None, Some(remaining), Some(used)) => {
                policy.limit = Some(remaining.saturating_add(used));
            }
            (Some(limit), None, Some(used)) => policy.remaining = Some(limit.saturating_sub(used)),
            _ => {}
        }
        // Discord's float delta avoids clock skew; prefer it to the epoch.
        policy.reset_after = self.delta(x.reset_after);
        if policy.reset_after.is_none() {
            policy.reset_after = self.reset(x.reset, self.format(HeaderFamily::XRateLimitReset));
        }
        let resource = x.resource.and_then(|line| self.text(line));
        if resource == Some("graphql") {
            policy.unit = Unit::Points;
        }
        let bucket = x.bucket.and_then(|line| self.text(line));
        policy.name = bucket.or(resource).map(policy_name);
        if self.out.bucket.is_none() {
            self.out.bucket.clone_from(&policy.name);
        }
        self.merge_quotas(header, Some(policy), quotas, Dialect::XRateLimit);
    }

    fn hyphenated(&mut self, fields: &HyphenFields<'_>) {
        let Some(header) = [fields.limit, fields.remaining, fields.reset]
            .into_iter()
            .flatten()
            .next()
            .map(|line| line.0)
        else {
            return;
        };
        if self.skip_cached(Some(header)) {
            return;
        }
        let mut policy = Policy::new(Dialect::XRateLimitHyphenated);
        policy.limit = self.count(fields.limit);
        policy.remaining = self.count(fields.remaining);
        policy.reset_after = self.reset(
            fields.reset,
            self.format(HeaderFamily::XRateLimitHyphenatedReset),
        );
        self.push_policy(header, policy);
    }

    // ---- named policies: OpenAI, Azure OpenAI, Linear, Anthropic ----------------------------

    fn named(&mut self, parts: &Small<NamedPart<'_>, 6>) {
        let Some(first_part) = parts.first() else {
            return;
        };
        if self.skip_cached(Some(first_part.line.0)) {
            return;
        }
        // OpenAI's requests and tokens, Anthropic's first four.
        let mut policies: Small<(&HeaderName, Policy), 4> = Small::default();
        for part in parts.iter() {
            let found = policies.iter().position(|(_, policy)| {
                policy.dialect == part.dialect && policy.name.as_deref() == Some(part.name)
            });
            let index = match found {
                Some(index) => index,
                // No more can be kept: skip new names, which also keeps this scan short (a
                // hostile map of 20 000 names would otherwise cost 200 million comparisons).
                None if policies.len() >= MAX_POLICIES => {
                    self.note(part.line.0, IgnoreReason::TooManyPolicies);
                    continue;
                }
                None => {
                    let mut policy = Policy::new(part.dialect);
                    policy.name = Some(policy_name(part.name));
                    policy.unit = unit_from_name(part.name);
                    policies.push((part.line.0, policy));
                    policies.len() - 1
                }
            };
            let Some((_, policy)) = policies.get_mut(index) else {
                continue;
            };
            let family = match part.dialect {
                Dialect::Anthropic => HeaderFamily::AnthropicReset,
                _ => HeaderFamily::XRateLimitNamedReset,
            };
            match part.part {
                Part::Limit => policy.limit = self.count(Some(part.line)),
                Part::Remaining => policy.remaining = self.count(Some(part.line)),
                Part::Reset => {
                    policy.reset_after = self.reset(Some(part.line), self.format(family));
                }
            }
        }
        for (header, policy) in policies.into_iter() {
            self.push_policy(header, policy);
        }
    }

    // ---- used/limit dialects ---------------------------------------------------------------

    /// `used/limit`, optionally followed by `(details)`.
    fn used_of_limit(
        &mut self,
        header: &HeaderName,
        text: &str,
        dialect: Dialect,
    ) -> Option<Policy> {
        let text = text.split('(').next().unwrap_or("").trim();
        let Some((used, limit)) = text.split_once('/') else {
            self.note(header, IgnoreReason::Malformed);
            return None;
        };
        let used = self.count_text(header, used)?;
        let limit = self.count_text(header, limit)?;
        let mut policy = Policy::new(dialect);
        policy.limit = Some(limit);
        policy.remaining = Some(limit.saturating_sub(used));
        Some(policy)
    }

    fn shopify(&mut self, field: Field<'_>) {
        let Some(line) = field else { return };
        if self.skip_cached(Some(line.0)) {
            return;
        }
        let Some(text) = self.text(line) else { return };
        if let Some(policy) = self.used_of_limit(line.0, text, Dialect::Shopify) {
            self.push_policy(line.0, policy);
        }
    }

    fn salesforce(&mut self, field: Field<'_>) {
        let Some(line) = field else { return };
        if self.skip_cached(Some(line.0)) {
            return;
        }
        let Some(text) = self.text(line) else { return };
        for part in text.split(';') {
            let Some((name, value)) = part.split_once('=') else {
                continue;
            };
            if let Some(mut policy) = self.used_of_limit(line.0, value, Dialect::Salesforce) {
                policy.name = Some(policy_name(name.trim()));
                self.push_policy(line.0, policy);
            }
        }
    }

    fn azure_resource_manager(&mut self, fields: &[(&str, Line<'_>)]) {
        let Some((_, first_line)) = fields.first() else {
            return;
        };
        if self.skip_cached(Some(first_line.0)) {
            return;
        }
        for &(suffix, line) in fields {
            let Some(text) = self.text(line) else {
                continue;
            };
            if suffix == "resource" {
                // `Microsoft.Compute/GetVMScaleSet3Min;197,Microsoft.Compute/GetVMScaleSet30Min;1297`
                for item in text.split(',') {
                    let Some((name, remaining)) = item.rsplit_once(';') else {
                        self.note(line.0, IgnoreReason::Malformed);
                        continue;
                    };
                    let mut policy = Policy::new(Dialect::AzureResourceManager);
                    policy.name = Some(policy_name(name.trim()));
                    policy.remaining = self.count_text(line.0, remaining);
                    self.push_policy(line.0, policy);
                }
            } else {
                let mut policy = Policy::new(Dialect::AzureResourceManager);
                policy.name = Some(policy_name(suffix));
                policy.remaining = self.count_text(line.0, text);
                self.push_policy(line.0, policy);
            }
        }
    }

    fn hubspot(&mut self, fields: &HubSpotFields<'_>) {
        let groups = [
            ("daily", fields.daily, fields.daily_remaining, None),
            ("interval", fields.max, fields.remaining, fields.interval_ms),
            ("secondly", fields.secondly, fields.secondly_remaining, None),
        ];
        for (name, limit, remaining, interval) in groups {
            let Some(header) = [limit, remaining].into_iter().flatten().next().map(|l| l.0) else {
                continue;
            };
            if self.skip_cached(Some(header)) {
                return;
            }
            let mut policy = Policy::new(Dialect::HubSpot);
            policy.name = Some(Cow::Borrowed(name));
            policy.limit = self.count(limit);
            policy.remaining = self.count(remaining);
            // The window lengths are what the header names say.
            policy.window = match name {
                "daily" => Some(Duration::from_secs(86_400)),
                "secondly" => Some(Duration::from_secs(1)),
                _ => interval.and_then(|line| {
                    let text = self.text(line)?;
                    match parse_decimal(text) {
                        Ok(ms) => Some(self.clamp(line.0, ms.as_millis())),
                        Err(error) => {
                            self.number_error(line.0, error);
                            None
                        }
                    }
                }),
            };
            let window = policy.window;
            policy.window = window.map(|w| self.clamp(header, w));
            self.push_policy(header, policy);
        }
    }

    fn zendesk(&mut self, fields: &[(&str, Line<'_>)]) {
        for &(name, line) in fields {
            if self.skip_cached(Some(line.0)) {
                return;
            }
            let Some(text) = self.text(line) else {
                continue;
            };
            let mut policy = Policy::new(Dialect::Zendesk);
            policy.name = Some(policy_name(name));
            for pair in text.split(';') {
                let Some((key, value)) = pair.split_once('=') else {
                    continue;
                };
                match key.trim() {
                    "total" => policy.limit = self.count_text(line.0, value),
                    "remaining" => policy.remaining = self.count_text(line.0, value),
                    "resets" => policy.reset_after = self.delta_of(line.0, parse_decimal(value)),
                    _ => {}
                }
            }
            self.push_policy(line.0, policy);
        }
    }

    // ---- Discord, reasons ------------------------------------------------------------------

    fn discord(&mut self, x: &XFields<'_>) {
        if let Some(line) = x.bucket
            && let Some(text) = self.text(line)
        {
            // The Discord bucket is the most specific key a server gives (usually already
            // taken as the bucket by `x_ratelimit`: keep that copy).
            if self.out.bucket.as_deref() != Some(text) {
                self.out.bucket = Some(policy_name(text));
            }
        }
        if let Some(line) = x.global
            && let Some(text) = self.text(line)
        {
            self.out.global = text.eq_ignore_ascii_case("true");
        }
        if let Some(line) = x.scope
            && let Some(text) = self.text(line)
        {
            self.out.scope = match text.to_ascii_lowercase().as_str() {
                "user" => Some(Scope::User),
                "global" => Some(Scope::Global),
                "shared" => Some(Scope::Shared),
                _ => {
                    self.note(line.0, IgnoreReason::Malformed);
                    None
                }
            };
            if self.out.scope == Some(Scope::Global) {
                self.out.global = true;
            }
        }
        // Retry-After is rounded up to whole seconds; the float Reset-After is the real
        // figure, but never trust it below Retry-After - 1 s. A global limit's Retry-After is
        // about the global bucket, not the route's Reset-After.
        if !self.out.global
            && let Some(retry_after) = self.out.retry_after
            && let Some(line) = x.reset_after
            && let Some(text) = self.text(line)
            && let Ok(decimal) = parse_number(text)
        {
            let reset_after = self.clamp(line.0, decimal.as_secs());
            let floor = retry_after.saturating_sub(Duration::from_secs(1));
            self.out.retry_after = Some(reset_after.max(floor));
        }
    }

    fn reason(&mut self, reason: Field<'_>, should_retry: Field<'_>) {
        if let Some(line) = reason
            && let Some(text) = self.text(line)
        {
            self.out.reason = Some(text.to_owned());
        }
        if let Some(line) = should_retry
            && let Some(text) = self.text(line)
        {
            self.out.should_retry = match text.to_ascii_lowercase().as_str() {
                "true" => Some(true),
                "false" => Some(false),
                _ => {
                    self.note(line.0, IgnoreReason::Malformed);
                    None
                }
            };
        }
    }
}

/// A number, also from a value a proxy merged from duplicate lines (`5, 5`: the first wins,
/// as for every single-valued field).
fn parse_number(text: &str) -> Result<Decimal, ValueError> {
    match parse_decimal(text) {
        Err(ValueError::Malformed) => match text.split_once(',') {
            Some((first, _)) => parse_decimal(first),
            None => Err(ValueError::Malformed),
        },
        result => result,
    }
}

/// The lines of a field combined as RFC 9651 says (`, `), without a copy for a single line.
fn joined<'t>(texts: &Small<&'t str, 2>) -> Cow<'t, str> {
    if texts.len() == 1
        && let Some(single) = texts.first()
    {
        return Cow::Borrowed(single);
    }
    let mut joined = String::new();
    for (index, text) in texts.iter().enumerate() {
        if index > 0 {
            joined.push_str(", ");
        }
        joined.push_str(text);
    }
    Cow::Owned(joined)
}

fn unit_from_name(name: &str) -> Unit {
    // The names sent on every response, without the substring searches below.
    match name {
        "requests" => return Unit::Requests,
        "tokens" => return Unit::Tokens,
        "input-tokens" => return Unit::InputTokens,
        "output-tokens" => return Unit::OutputTokens,
        _ => {}
    }
    if name.contains("input-tokens") || name.contains("input_tokens") {
        Unit::InputTokens
    } else if name.contains("output-tokens") || name.contains("output_tokens") {
        Unit::OutputTokens
    } else if name.contains("token") {
        Unit::Tokens
    } else if name.contains("complexity") || name.contains("points") {
        Unit::Points
    } else {
        Unit::Requests
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::time::{Duration, UNIX_EPOCH};

    use http::{HeaderMap, HeaderValue, StatusCode};

    use super::*;

    fn map(lines: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    /// What a parse keeps on the heap: the policy list past its inline slots and owned names.
    /// A counting allocator would need `unsafe`, which the workspace forbids, so the parse's
    /// own temporaries are counted with callgrind instead (see `benches/parse.rs`).
    fn heap_parts(info: &RateLimitInfo) -> usize {
        let owned =
            |name: &Option<Cow<'static, str>>| usize::from(matches!(name, Some(Cow::Owned(_))));
        usize::from(info.policies.len() > 2)
            + owned(&info.bucket)
            + info
                .policies()
                .iter()
                .map(|policy| owned(&policy.name))
                .sum::<usize>()
    }

    #[test]
    fn common_responses_keep_nothing_on_the_heap() {
        let received = UNIX_EPOCH + Duration::from_secs(1_350_084_794);
        let github = map(&[
            ("date", "Fri, 12 Oct 2012 23:33:14 GMT"),
            ("content-type", "application/json; charset=utf-8"),
            ("x-ratelimit-limit", "5000"),
            ("x-ratelimit-remaining", "4987"),
            ("x-ratelimit-reset", "1350085394"),
            ("x-ratelimit-used", "13"),
            ("x-ratelimit-resource", "core"),
        ]);
        let openai = map(&[
            ("x-ratelimit-limit-requests", "5000"),
            ("x-ratelimit-remaining-requests", "4999"),
            ("x-ratelimit-reset-requests", "12ms"),
            ("x-ratelimit-limit-tokens", "160000"),
            ("x-ratelimit-remaining-tokens", "159000"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        let legacy = map(&[
            ("ratelimit-limit", "100"),
            ("ratelimit-remaining", "42"),
            ("ratelimit-reset", "30"),
        ]);
        for (name, headers, policies) in [
            ("github", github, 1),
            ("openai", openai, 2),
            ("legacy", legacy, 1),
        ] {
            let info = Parser::new().parse(StatusCode::OK, &headers, received);
            assert_eq!(info.policies().len(), policies, "{name}");
            assert_eq!(heap_parts(&info), 0, "{name}: {info:?}");
        }
        // A third policy and an unknown name do go to the heap.
        let discord = map(&[
            ("x-ratelimit-remaining", "1"),
            ("x-ratelimit-bucket", "41f9cd5d28af77da04563bcb1d67fdfd"),
        ]);
        let info = Parser::new().parse(StatusCode::OK, &discord, received);
        assert_eq!(heap_parts(&info), 2);
    }
}
