//! The engine shared by both Redis limiters: key naming, the script call under a timeout, the
//! failure policy and the switch between shared and degraded mode.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ratewise_core::metric_names::{REDIS_FALLBACK_TOTAL, REDIS_MODE_SWITCHES_TOTAL};
use ratewise_core::{BoxError, Key};
use ratewise_pace::{
    CostExceedsBurst, Decision, InvalidQuotaChain, LocalLimiter, MAX_CHAINED_QUOTAS, Quota,
};
use redis::Value;
use tokio::time::Instant;

use crate::connection::RedisConnection;
use crate::error::{ConfigError, RedisUnavailable};
use crate::policy::FailurePolicy;
use crate::scripts::{self, LuaScript};

/// Which script decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Algorithm {
    Gcra,
    SlidingWindow,
}

/// Where a decision came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecisionSource {
    /// Redis decided, for every worker sharing the quota.
    Shared,
    /// Redis was unavailable; the local fallback limiter decided
    /// ([`FailurePolicy::FallbackLocal`]).
    FallbackLocal,
    /// Redis was unavailable; the request was let through ([`FailurePolicy::FailOpen`]).
    FailOpen,
}

/// The answer of a Redis limiter to one acquire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedisDecision {
    allowed: bool,
    retry_after: Duration,
    remaining: u64,
    cooldown: bool,
    source: DecisionSource,
}

impl RedisDecision {
    /// Whether the request may go now (its cost has been consumed). A denial consumed nothing.
    pub fn is_allowed(&self) -> bool {
        self.allowed
    }

    /// For a denial, how long until the same request could pass (rounded up to the
    /// nanosecond, never early); zero when allowed.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// Requests of cost 1 that could still pass at once after this decision, for the tightest
    /// quota (0 while in a cooldown; 0 for decisions not made by Redis).
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Whether the denial comes from a shared cooldown rather than from a quota.
    pub fn is_cooldown(&self) -> bool {
        self.cooldown
    }

    /// Who decided.
    pub fn source(&self) -> DecisionSource {
        self.source
    }
}

impl RedisDecision {
    /// The pace crate's view of this decision.
    pub fn into_decision(self) -> Decision {
        if self.allowed {
            Decision::Allowed
        } else {
            Decision::Denied {
                retry_after: self.retry_after,
            }
        }
    }
}

/// Settings shared by both limiters.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) prefix: String,
    pub(crate) timeout: Duration,
    pub(crate) policy: FailurePolicy,
    pub(crate) probe_interval: Duration,
    pub(crate) max_local_keys: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            prefix: "ratewise".to_owned(),
            timeout: Duration::from_millis(50),
            policy: FailurePolicy::default(),
            probe_interval: Duration::from_millis(500),
            max_local_keys: 10_000,
        }
    }
}

impl Settings {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.prefix.contains(['{', '}']) {
            return Err(ConfigError::BraceInPrefix);
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::ZeroTimeout);
        }
        if self.probe_interval.is_zero() {
            return Err(ConfigError::ZeroProbeInterval);
        }
        if let FailurePolicy::FallbackLocal {
            expected_workers: 0,
        } = self.policy
        {
            return Err(ConfigError::ZeroWorkers);
        }
        Ok(())
    }
}

/// The shared state behind a `RedisGcra` or `RedisSlidingWindow` and all its clones.
pub(crate) struct Engine {
    algorithm: Algorithm,
    connection: RedisConnection,
    settings: Settings,
    local: Option<Fallback>,
    degraded: AtomicBool,
    probing: AtomicBool,
    next_probe: Mutex<Instant>,
    unique: AtomicU64,
    process_tag: u64,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("algorithm", &self.algorithm)
            .field("connection", &self.connection)
            .field("settings", &self.settings)
            .field("degraded", &self.degraded.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Releases the probe slot when the probing acquire ends, even if it is dropped mid-call.
struct ProbeGuard<'a>(&'a AtomicBool);

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Why a script call failed.
pub(crate) enum CallError {
    Timeout,
    Redis(redis::RedisError),
    Reply(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.pad("timed out"),
            Self::Redis(error) => write!(f, "{error}"),
            Self::Reply(what) => write!(f, "unexpected reply: {what}"),
        }
    }
}

impl Engine {
    pub(crate) fn new(
        algorithm: Algorithm,
        connection: RedisConnection,
        settings: Settings,
    ) -> Result<Self, ConfigError> {
        settings.validate()?;
        let local = match settings.policy {
            FailurePolicy::FallbackLocal { expected_workers } => Some(Fallback {
                // The default store: it drops a key only once its bucket is full again, so
                // the fallback never forgets a debt that an idle timeout would.
                limiter: match settings.max_local_keys {
                    0 => return Err(ConfigError::ZeroLocalKeys),
                    max_keys => LocalLimiter::with_max_keys(max_keys),
                },
                share: expected_workers,
            }),
            _ => None,
        };
        Ok(Self {
            algorithm,
            connection,
            local,
            degraded: AtomicBool::new(false),
            probing: AtomicBool::new(false),
            next_probe: Mutex::new(Instant::now()),
            unique: AtomicU64::new(0),
            process_tag: process_tag(),
            settings,
        })
    }

    pub(crate) fn connection(&self) -> &RedisConnection {
        &self.connection
    }

    pub(crate) fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    /// The hash-tagged base of every Redis key of `key`: all of them hash to one slot.
    fn tag(&self, key: &Key) -> String {
        format!("{{{}:{}}}", self.settings.prefix, key.as_str())
    }

    /// Acquires `cost` against every quota of `key`, all or nothing.
    pub(crate) async fn acquire(
        &self,
        key: &Key,
        quotas: &[Quota],
        cost: u32,
    ) -> Result<RedisDecision, BoxError> {
        self.check_cost(key, quotas, cost)?;
        if self.is_degraded() {
            let Some(_guard) = self.claim_probe() else {
                return self.by_policy(key, quotas, cost);
            };
            return match self.call(key, quotas, cost, None).await {
                Ok(decision) => {
                    self.switch_to_shared();
                    Ok(decision)
                }
                Err(error) => {
                    tracing::debug!(%error, "redis still unavailable");
                    self.by_policy(key, quotas, cost)
                }
            };
        }
        match self.call(key, quotas, cost, None).await {
            Ok(decision) => Ok(decision),
            Err(error) => {
                self.switch_to_degraded(&error);
                self.by_policy(key, quotas, cost)
            }
        }
    }

    fn check_cost(&self, key: &Key, quotas: &[Quota], cost: u32) -> Result<(), BoxError> {
        if quotas.is_empty() || quotas.len() > MAX_CHAINED_QUOTAS {
            return Err(Box::new(InvalidQuotaChain::new(quotas.len())));
        }
        let capacity = quotas
            .iter()
            .map(|quota| match self.algorithm {
                Algorithm::Gcra => quota.burst_size(),
                Algorithm::SlidingWindow => quota.count(),
            })
            .min()
            .unwrap_or(u32::MAX);
        if cost > capacity {
            return Err(Box::new(CostExceedsBurst::new(key.clone(), cost, capacity)));
        }
        Ok(())
    }

    /// One script call under the timeout. `now_us` overrides Redis' clock (tests only).
    pub(crate) async fn call(
        &self,
        key: &Key,
        quotas: &[Quota],
        cost: u32,
        now_us: Option<f64>,
    ) -> Result<RedisDecision, CallError> {
        let tag = self.tag(key);
        let mut keys = Vec::with_capacity(quotas.len() + 1);
        keys.push(format!("{tag}:cooldown"));
        let mut args = Vec::with_capacity(2 * quotas.len() + 3);
        args.push(cost.to_string());
        args.push(now_us.map(|now| format!("{now}")).unwrap_or_default());
        let script: &LuaScript = match self.algorithm {
            Algorithm::Gcra => {
                for (index, quota) in quotas.iter().enumerate() {
                    keys.push(format!("{tag}:gcra:{index}"));
                    args.push(interval_us(quota));
                    args.push(quota.burst_size().to_string());
                }
                &scripts::GCRA
            }
            Algorithm::SlidingWindow => {
                let unique = self.unique.fetch_add(1, Ordering::Relaxed);
                args.push(format!("{:x}.{unique:x}", self.process_tag));
                for (index, quota) in quotas.iter().enumerate() {
                    keys.push(format!("{tag}:log:{index}"));
                    args.push(quota.count().to_string());
                    args.push(format!("{}", quota.period().as_secs_f64() * 1e6));
                }
                &scripts::SLIDING_WINDOW
            }
        };
        let reply = tokio::time::timeout(
            self.settings.timeout,
            self.connection.eval(script, &keys, &args),
        )
        .await
        .map_err(|_| CallError::Timeout)?
        .map_err(CallError::Redis)?;
        parse_decision(reply)
    }

    /// A shared cooldown: `key` admits nothing for `duration` (a longer cooldown in place is
    /// kept), and each GCRA quota restarts with one unit at its end. `now_us` overrides Redis'
    /// clock (tests only).
    pub(crate) async fn drain(
        &self,
        key: &Key,
        quotas: &[Quota],
        duration: Duration,
        now_us: Option<f64>,
    ) -> Result<(), BoxError> {
        if let Some(local) = &self.local {
            // The fallback honours the cooldown too, should Redis fail before it ends.
            local.drain(key, quotas, Instant::now() + duration);
        }
        let tag = self.tag(key);
        let mut keys = vec![format!("{tag}:cooldown")];
        let mut args = vec![
            format!("{}", duration.as_secs_f64() * 1e6),
            now_us.map(|now| format!("{now}")).unwrap_or_default(),
        ];
        if self.algorithm == Algorithm::Gcra {
            for (index, quota) in quotas.iter().enumerate() {
                keys.push(format!("{tag}:gcra:{index}"));
                args.push(interval_us(quota));
                args.push(quota.burst_size().to_string());
            }
        }
        let result = tokio::time::timeout(
            self.settings.timeout,
            self.connection.eval(&scripts::DRAIN, &keys, &args),
        )
        .await;
        let error = match result {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(error)) => CallError::Redis(error),
            Err(_) => CallError::Timeout,
        };
        self.switch_to_degraded(&error);
        tracing::warn!(key = %key, %error, "shared cooldown not written to redis");
        match self.settings.policy {
            // The local fallback honours the cooldown (above); failing open needs none.
            FailurePolicy::FallbackLocal { .. } | FailurePolicy::FailOpen => Ok(()),
            FailurePolicy::FailClosed => Err(Box::new(RedisUnavailable::new(
                key.clone(),
                self.settings.probe_interval,
            ))),
        }
    }

    /// The slot for the one acquire that may try Redis while degraded, if it is due.
    fn claim_probe(&self) -> Option<ProbeGuard<'_>> {
        let now = Instant::now();
        {
            let next = self.next_probe.lock().unwrap_or_else(|p| p.into_inner());
            if now < *next {
                return None;
            }
        }
        if self
            .probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return None;
        }
        *self.next_probe.lock().unwrap_or_else(|p| p.into_inner()) =
            now + self.settings.probe_interval;
        Some(ProbeGuard(&self.probing))
    }

    fn switch_to_degraded(&self, error: &CallError) {
        if self
            .degraded
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            *self.next_probe.lock().unwrap_or_else(|p| p.into_inner()) =
                Instant::now() + self.settings.probe_interval;
            tracing::warn!(
                policy = %self.settings.policy,
                %error,
                "redis limiter degraded: redis unavailable, deciding by the failure policy"
            );
            metrics::counter!(REDIS_MODE_SWITCHES_TOTAL, "to" => "degraded").increment(1);
        }
    }

    fn switch_to_shared(&self) {
        if self
            .degraded
            .compare_exchange(true, false, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            tracing::info!("redis limiter back to shared mode: redis answers again");
            metrics::counter!(REDIS_MODE_SWITCHES_TOTAL, "to" => "shared").increment(1);
        }
    }

    fn by_policy(&self, key: &Key, quotas: &[Quota], cost: u32) -> Result<RedisDecision, BoxError> {
        let policy = self.settings.policy;
        metrics::counter!(REDIS_FALLBACK_TOTAL, "policy" => policy.label()).increment(1);
        match policy {
            FailurePolicy::FailOpen => Ok(allowed(DecisionSource::FailOpen, 0)),
            FailurePolicy::FailClosed => Err(Box::new(RedisUnavailable::new(
                key.clone(),
                self.settings.probe_interval,
            ))),
            FailurePolicy::FallbackLocal { .. } => {
                let local = self.local.as_ref().expect("built with the fallback policy");
                Ok(match local.acquire(key, quotas, cost)? {
                    Decision::Allowed => allowed(DecisionSource::FallbackLocal, 0),
                    Decision::Denied { retry_after } => RedisDecision {
                        allowed: false,
                        retry_after,
                        remaining: 0,
                        cooldown: false,
                        source: DecisionSource::FallbackLocal,
                    },
                })
            }
        }
    }
}

/// The emission interval in microseconds, as the scripts read it (fractions allowed).
fn interval_us(quota: &Quota) -> String {
    format!("{}", quota.emission_interval_nanos() as f64 / 1_000.0)
}

/// The local limiter of `FailurePolicy::FallbackLocal`: each quota slowed down to this
/// process's share.
#[derive(Debug)]
struct Fallback {
    limiter: LocalLimiter,
    share: u32,
}

impl Fallback {
    /// `quota` at `rate / share` with `burst / share`, widened to `cost` (at least 1); the
    /// quota itself if the share cannot be expressed (a period beyond the quota's limits).
    ///
    /// Widening the burst to the cost, rather than clamping the cost to the burst, keeps the
    /// rate: a request larger than this process's share of the burst waits until the bucket
    /// is full and then takes its whole cost, so it is never refused forever and never
    /// counted as less than it is.
    fn share_of(&self, quota: &Quota, cost: u32) -> Quota {
        let Some(slower) = quota
            .period()
            .checked_mul(self.share)
            .and_then(|period| Quota::new(quota.count(), period).ok())
        else {
            return *quota;
        };
        let burst = (quota.burst_size() / self.share).max(cost).max(1);
        slower.burst(burst).unwrap_or(*quota)
    }

    fn shares(&self, quotas: &[Quota], cost: u32) -> [Quota; MAX_CHAINED_QUOTAS] {
        let mut shares = [quotas[0]; MAX_CHAINED_QUOTAS];
        for (share, quota) in shares.iter_mut().zip(quotas) {
            *share = self.share_of(quota, cost);
        }
        shares
    }

    fn acquire(&self, key: &Key, quotas: &[Quota], cost: u32) -> Result<Decision, BoxError> {
        let shares = self.shares(quotas, cost);
        self.limiter.check(key, &shares[..quotas.len()], cost)
    }

    fn drain(&self, key: &Key, quotas: &[Quota], until: Instant) {
        if quotas.is_empty() || quotas.len() > MAX_CHAINED_QUOTAS {
            return;
        }
        let shares = self.shares(quotas, 0);
        let _ = self.limiter.drain_now(key, &shares[..quotas.len()], until);
    }
}

fn allowed(source: DecisionSource, remaining: u64) -> RedisDecision {
    RedisDecision {
        allowed: true,
        retry_after: Duration::ZERO,
        remaining,
        cooldown: false,
        source,
    }
}

/// Reads `{allowed, retry_after_us, remaining, reason}`. Never panics on a strange reply.
pub(crate) fn parse_decision(reply: Value) -> Result<RedisDecision, CallError> {
    let (allowed, retry_after_us, remaining, reason): (i64, String, i64, String) =
        redis::from_redis_value(reply).map_err(|error| CallError::Reply(error.to_string()))?;
    let retry_after_us: f64 = retry_after_us
        .parse()
        .map_err(|_| CallError::Reply(format!("retry_after {retry_after_us:?}")))?;
    Ok(RedisDecision {
        allowed: allowed == 1,
        retry_after: micros_to_duration(retry_after_us),
        remaining: u64::try_from(remaining).unwrap_or(0),
        cooldown: reason == "cooldown",
        source: DecisionSource::Shared,
    })
}

/// Microseconds (a float from Redis) to a duration rounded up to the nanosecond, clamped to
/// [0, 1 year] so a corrupt key cannot make anyone sleep forever.
pub(crate) fn micros_to_duration(micros: f64) -> Duration {
    const MAX_US: f64 = 365.0 * 24.0 * 3600.0 * 1e6;
    if !micros.is_finite() || micros <= 0.0 {
        return Duration::ZERO;
    }
    let nanos = (micros.min(MAX_US) * 1_000.0).ceil();
    Duration::from_nanos(nanos as u64)
}

/// Distinguishes this process's sliding-log members from every other process's.
fn process_tag() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish()
}
