//! Parse `Retry-After` and every common rate-limit header dialect into one normalized
//! `RateLimitInfo`.
//!
//! # Status
//!
//! This crate is being built (see the project's issue "ratewise-headers"). It will hold a pure
//! parser, with no tokio and no tower, so any HTTP client can use it and it can be fuzzed:
//!
//! - `parse(status, headers, received_at) -> RateLimitInfo`, reading `retry-after-ms`,
//!   `Retry-After` (seconds, floats and all three HTTP-date formats), the IETF
//!   `RateLimit`/`RateLimit-Policy` drafts (structured fields, draft-7 dictionaries and the
//!   older triples) and the vendor dialects (GitHub, GitLab, OpenAI, Anthropic, Discord, Reddit,
//!   Shopify, Salesforce, ...);
//! - the epoch-versus-delta rule for reset values, with a per-host override;
//! - hostile-input handling: nothing a server sends can make it panic, overflow or ask for an
//!   absurd wait.
#![cfg_attr(docsrs, feature(doc_cfg))]
