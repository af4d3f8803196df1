//! The normalized result of a parse: [`RateLimitInfo`], its [`Policy`] list and the notes on
//! what was ignored.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use http::{HeaderName, StatusCode};

/// What a policy counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Unit {
    /// Requests (the default of every dialect).
    Requests,
    /// Model tokens, input and output together (OpenAI, Anthropic `tokens`).
    Tokens,
    /// Input (prompt) tokens (Anthropic `input-tokens`).
    InputTokens,
    /// Output (completion) tokens (Anthropic `output-tokens`).
    OutputTokens,
    /// Cost points (GitHub GraphQL, Linear complexity, Jira points quotas).
    Points,
    /// Bytes of content (IETF `qu="content-bytes"`).
    Bytes,
    /// Requests in flight at once (IETF `qu="concurrent-requests"`).
    ConcurrentRequests,
    /// A unit the parser does not know (an unregistered IETF `qu`).
    Other,
}

/// The header family a policy was read from, kept for debugging and metrics labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dialect {
    /// IETF draft-08..10 `RateLimit` / `RateLimit-Policy` structured-field lists (also Jira's
    /// `Beta-RateLimit`, Cloudflare, express-rate-limit `draft-8`).
    Ietf,
    /// IETF draft-07 `RateLimit` dictionary (`limit=, remaining=, reset=`).
    IetfDraft7,
    /// IETF drafts up to 06: `RateLimit-Limit`, `-Remaining`, `-Reset`, `-Policy` (also Twitch
    /// and Zendesk list endpoints).
    IetfLegacy,
    /// GitLab's `RateLimit-*` fields (`Observed`, `ResetTime`, `Name`; reset is an epoch).
    GitLab,
    /// `X-RateLimit-Limit/-Remaining/-Reset/-Used` (GitHub, Discord, Reddit, Jira,
    /// express-rate-limit legacy, ...).
    XRateLimit,
    /// Named `X-RateLimit-*` policies: OpenAI / Azure OpenAI `x-ratelimit-limit-requests`,
    /// Linear `x-ratelimit-requests-limit`.
    XRateLimitNamed,
    /// `X-Rate-Limit-*` (Twitter/X, Okta, Zendesk `X-Rate-Limit`).
    XRateLimitHyphenated,
    /// `anthropic-ratelimit-<name>-{limit,remaining,reset}`.
    Anthropic,
    /// Shopify REST `X-Shopify-Shop-Api-Call-Limit: used/size`.
    Shopify,
    /// Salesforce `Sforce-Limit-Info: api-usage=used/limit`.
    Salesforce,
    /// Azure Resource Manager `x-ms-ratelimit-remaining-*`.
    AzureResourceManager,
    /// HubSpot `X-HubSpot-RateLimit-*`.
    HubSpot,
    /// Zendesk `zendesk-ratelimit-<name>: total=; remaining=; resets=`.
    Zendesk,
}

/// The scope of a Discord rate limit (`X-RateLimit-Scope`, sent on 429 only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scope {
    /// The per-user (per-token) limit of the route's bucket.
    User,
    /// The global limit of the token: every route is blocked.
    Global,
    /// A limit on a shared resource: the 429 does not count toward the invalid-request budget.
    Shared,
}

/// One quota the server declared: limit, remaining, time to reset, window, unit.
///
/// Every field is optional because every dialect omits something. `remaining` is always at most
/// `limit` when both are known; used/limit dialects (Shopify `32/40`, Salesforce, GitLab
/// `Observed`, Reddit `Used`) are converted to remaining.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Borrowed for the names servers send on every response (`core`, `requests`, ...), so
    /// the common dialects allocate nothing (see `policy_name`).
    pub(crate) name: Option<Cow<'static, str>>,
    pub(crate) limit: Option<u64>,
    pub(crate) remaining: Option<u64>,
    pub(crate) reset_after: Option<Duration>,
    pub(crate) window: Option<Duration>,
    pub(crate) unit: Unit,
    pub(crate) dialect: Dialect,
    pub(crate) partition_key: Option<Vec<u8>>,
}

impl Policy {
    pub(crate) const fn new(dialect: Dialect) -> Self {
        Self {
            name: None,
            limit: None,
            remaining: None,
            reset_after: None,
            window: None,
            unit: Unit::Requests,
            dialect,
            partition_key: None,
        }
    }

    /// The policy's name: the IETF item name, GitHub's resource, Discord's bucket, OpenAI's
    /// `requests`/`tokens`, Salesforce's `api-usage`, ...
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The quota per window.
    pub fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// Units left in the current window (never above [`limit`](Self::limit)).
    pub fn remaining(&self) -> Option<u64> {
        self.remaining
    }

    /// Time from the response's receipt until quota is available again. Absolute reset times are
    /// converted through the response's `Date` header; past times give zero; the value is
    /// clamped to [`Parser::max_duration`](crate::Parser::max_duration).
    pub fn reset_after(&self) -> Option<Duration> {
        self.reset_after
    }

    /// The length of the policy's window, when the server declares it.
    pub fn window(&self) -> Option<Duration> {
        self.window
    }

    /// What the policy counts.
    pub fn unit(&self) -> Unit {
        self.unit
    }

    /// The header family the policy came from.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The IETF partition key (`pk`), decoded from its byte sequence.
    pub fn partition_key(&self) -> Option<&[u8]> {
        self.partition_key.as_deref()
    }

    /// True when the server says nothing is left (`remaining == 0`).
    pub fn is_exhausted(&self) -> bool {
        self.remaining == Some(0)
    }
}

/// Why a header (or part of one) was ignored, clamped or read leniently.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IgnoreReason {
    /// The value is not UTF-8.
    NotUtf8,
    /// The value is longer than the parser reads (see [`MAX_VALUE_LEN`](crate::MAX_VALUE_LEN)).
    TooLong,
    /// The value does not have the dialect's syntax.
    Malformed,
    /// A negative number: invalid, or Azure OpenAI's `-1` meaning "unknown".
    Negative,
    /// A number too large to be meaningful (more than `u64`).
    TooLarge,
    /// A duration above the parser's maximum; the maximum was used instead.
    Clamped,
    /// An epoch timestamp more than a day before the response's `Date`: not a plausible reset.
    ImplausibleEpoch,
    /// A rate-limit field on a cached response (`Age > 0`), ignored as the IETF draft requires.
    CachedResponse,
    /// The strict structured-field parse failed and the lenient fallback read the value.
    ReadLeniently,
    /// The strict structured-field parse failed and lenient parsing is off.
    InvalidStructuredField,
    /// A required parameter is missing (the IETF draft's own `RateLimit: quota;t=1` lacks `r`).
    MissingParameter,
    /// The server said more remains than the limit; remaining was lowered to the limit.
    RemainingAboveLimit,
    /// More policies than the parser keeps (see [`MAX_POLICIES`](crate::MAX_POLICIES)).
    TooManyPolicies,
}

impl fmt::Display for IgnoreReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::NotUtf8 => "value is not utf-8",
            Self::TooLong => "value is too long",
            Self::Malformed => "value is malformed",
            Self::Negative => "negative value (unknown)",
            Self::TooLarge => "number is too large",
            Self::Clamped => "duration clamped to the maximum",
            Self::ImplausibleEpoch => "epoch timestamp far before the response date",
            Self::CachedResponse => "rate-limit field on a cached response",
            Self::ReadLeniently => "invalid structured field read leniently",
            Self::InvalidStructuredField => "invalid structured field",
            Self::MissingParameter => "required parameter missing",
            Self::RemainingAboveLimit => "remaining above limit",
            Self::TooManyPolicies => "too many policies",
        })
    }
}

/// A note on one header the parser ignored, clamped or read leniently, for a `tracing` event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ignored {
    pub(crate) header: HeaderName,
    pub(crate) reason: IgnoreReason,
}

impl Ignored {
    /// The header's (lowercase) name.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// Why it was ignored.
    pub fn reason(&self) -> IgnoreReason {
        self.reason
    }
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.header, self.reason)
    }
}

/// Everything a response said about rate limits, normalized across dialects.
///
/// Built by [`parse`](crate::parse) or [`Parser::parse`](crate::Parser::parse). All durations
/// are relative to the moment the response was received and are at most the parser's
/// [`max_duration`](crate::Parser::max_duration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitInfo {
    pub(crate) status: StatusCode,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) policies: Policies,
    pub(crate) bucket: Option<Cow<'static, str>>,
    pub(crate) global: bool,
    pub(crate) scope: Option<Scope>,
    pub(crate) age: Option<Duration>,
    pub(crate) rate_limited: bool,
    pub(crate) clamped: bool,
    pub(crate) reason: Option<String>,
    pub(crate) should_retry: Option<bool>,
    pub(crate) ignored: Vec<Ignored>,
}

impl RateLimitInfo {
    pub(crate) fn new(status: StatusCode) -> Self {
        Self {
            status,
            retry_after: None,
            policies: Policies::new(),
            bucket: None,
            global: false,
            scope: None,
            age: None,
            rate_limited: false,
            clamped: false,
            reason: None,
            should_retry: None,
            ignored: Vec::new(),
        }
    }

    /// The delay the server asked for: `retry-after-ms` (float milliseconds), else `Retry-After`
    /// (integer or float seconds, or an HTTP-date in any of the three formats, taken relative to
    /// the response's `Date`). Negative or unreadable values are ignored; huge ones are clamped
    /// (see [`is_clamped`](Self::is_clamped)).
    ///
    /// On a Discord 429 the float `X-RateLimit-Reset-After` refines the rounded integer
    /// `Retry-After` (never below `Retry-After - 1 s`), unless the limit is global.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// How long before the next request on this bucket may be sent: [`retry_after`]
    /// (Retry-After always wins), else the longest reset among the exhausted policies
    /// (`remaining == 0`), else `None` when nothing is binding.
    ///
    /// [`retry_after`]: Self::retry_after
    pub fn wait(&self) -> Option<Duration> {
        if self.retry_after.is_some() {
            return self.retry_after;
        }
        self.exhausted_policies()
            .filter_map(Policy::reset_after)
            .max()
    }

    /// True when the server says this response is a rate-limit refusal: a 429, or a 403 that
    /// carries `Retry-After` or an exhausted policy (GitHub primary and secondary limits,
    /// Salesforce `REQUEST_LIMIT_EXCEEDED`). 503 and 529 are overload, not rate limits, and do
    /// not count; [`retry_after`](Self::retry_after) is still reported for them.
    pub fn is_rate_limited(&self) -> bool {
        self.rate_limited
    }

    /// Every policy found, in every dialect present, in header order per dialect. Empty on a
    /// cached response (`Age > 0`).
    pub fn policies(&self) -> &[Policy] {
        self.policies.as_slice()
    }

    /// The policies with nothing left.
    pub fn exhausted_policies(&self) -> impl Iterator<Item = &Policy> {
        self.policies()
            .iter()
            .filter(|policy| policy.is_exhausted())
    }

    /// The bucket the server declared: Discord `X-RateLimit-Bucket`, GitHub
    /// `x-ratelimit-resource`, GitLab `RateLimit-Name`.
    pub fn bucket(&self) -> Option<&str> {
        self.bucket.as_deref()
    }

    /// True when the limit applies to every route of the client (Discord `X-RateLimit-Global:
    /// true` or `X-RateLimit-Scope: global`).
    pub fn is_global(&self) -> bool {
        self.global
    }

    /// Discord's `X-RateLimit-Scope`.
    pub fn scope(&self) -> Option<Scope> {
        self.scope
    }

    /// True when Discord counts this response toward its invalid-request budget (10,000 401, 403
    /// or 429 responses per 10 minutes ban the IP): a 401, 403 or 429, except a 429 with
    /// `X-RateLimit-Scope: shared`.
    pub fn counts_as_invalid_request(&self) -> bool {
        match self.status.as_u16() {
            401 | 403 => true,
            429 => self.scope != Some(Scope::Shared),
            _ => false,
        }
    }

    /// True when the response came from a cache (`Age > 0`); its rate-limit fields were ignored.
    pub fn is_cached(&self) -> bool {
        self.age.is_some_and(|age| !age.is_zero())
    }

    /// The response's `Age`, when present and valid.
    pub fn age(&self) -> Option<Duration> {
        self.age
    }

    /// True when some duration exceeded the parser's maximum and was clamped: the server asked
    /// for an absurd wait, which a layer should surface as "wait too long" rather than sleep.
    pub fn is_clamped(&self) -> bool {
        self.clamped
    }

    /// The server's reason for the limit: Stripe `Stripe-Rate-Limited-Reason` (`global-rate`,
    /// `endpoint-concurrency`, ...), Jira `RateLimit-Reason`.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// Stripe's `Stripe-Should-Retry`, when present.
    pub fn should_retry(&self) -> Option<bool> {
        self.should_retry
    }

    /// The response status the information came with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// What the parser ignored, clamped or read leniently, and why (at most
    /// [`MAX_IGNORED`](crate::MAX_IGNORED) notes).
    pub fn ignored(&self) -> &[Ignored] {
        &self.ignored
    }

    /// True when the response carried no rate-limit information at all.
    pub fn is_empty(&self) -> bool {
        self.retry_after.is_none() && self.policies().is_empty() && self.bucket.is_none()
    }
}

/// How many policies a [`RateLimitInfo`] holds without allocating: GitHub, the legacy drafts
/// and Discord send one, OpenAI and a typical draft-08 response two.
const INLINE_POLICIES: usize = 2;

/// The policy list: inline up to [`INLINE_POLICIES`], then all on the heap. Compares, clones
/// and prints as the slice it holds, so `RateLimitInfo`'s derived impls are those of a `Vec`.
#[derive(Clone)]
pub(crate) struct Policies {
    /// While `heap` is empty, `inline[..len]` are the policies (the rest are placeholders).
    len: usize,
    inline: [Policy; INLINE_POLICIES],
    /// Every policy, once there are more than [`INLINE_POLICIES`].
    heap: Vec<Policy>,
}

impl Policies {
    const EMPTY: Policy = Policy::new(Dialect::Ietf);

    pub(crate) const fn new() -> Self {
        Self {
            len: 0,
            inline: [Self::EMPTY; INLINE_POLICIES],
            heap: Vec::new(),
        }
    }

    pub(crate) fn as_slice(&self) -> &[Policy] {
        if self.heap.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.heap
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub(crate) fn push(&mut self, policy: Policy) {
        if !self.heap.is_empty() {
            self.heap.push(policy);
        } else if let Some(slot) = self.inline.get_mut(self.len) {
            *slot = policy;
            self.len += 1;
        } else {
            let mut heap = Vec::with_capacity(2 * INLINE_POLICIES);
            let inline = self.inline.iter_mut();
            heap.extend(inline.map(|item| std::mem::replace(item, Self::EMPTY)));
            heap.push(policy);
            self.heap = heap;
            self.len = 0;
        }
    }
}

impl fmt::Debug for Policies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl PartialEq for Policies {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Policies {}

/// A policy or bucket name, borrowed (no allocation) when it is one servers send on every
/// response: GitHub's resources, the named dialects' units, the IETF draft's examples.
pub(crate) fn policy_name(text: &str) -> Cow<'static, str> {
    let known = match text {
        // GitHub `x-ratelimit-resource`.
        "core" => "core",
        "search" => "search",
        "graphql" => "graphql",
        "code_search" => "code_search",
        "integration_manifest" => "integration_manifest",
        "source_import" => "source_import",
        "code_scanning_upload" => "code_scanning_upload",
        "code_scanning_autofix" => "code_scanning_autofix",
        "actions_runner_registration" => "actions_runner_registration",
        "scim" => "scim",
        "dependency_snapshots" => "dependency_snapshots",
        "dependency_sbom" => "dependency_sbom",
        "audit_log" => "audit_log",
        "audit_log_streaming" => "audit_log_streaming",
        // OpenAI, Azure OpenAI, Anthropic, Linear.
        "requests" => "requests",
        "tokens" => "tokens",
        "input-tokens" => "input-tokens",
        "output-tokens" => "output-tokens",
        "complexity" => "complexity",
        // The IETF draft's examples.
        "default" => "default",
        "burst" => "burst",
        "daily" => "daily",
        _ => return Cow::Owned(text.to_owned()),
    };
    Cow::Borrowed(known)
}
