//! [`RetryBudget`]: caps retries relative to traffic so that a failing upstream cannot turn
//! into a retry storm.
//!
//! # Why not tower's `TpsBudget`
//!
//! tower 0.5.3's `TpsBudget` (the Finagle budget ported to tower) truncates
//! `1.0 / retry_percent` to an integer withdrawal cost, so any percentage whose reciprocal is not
//! an integer over-allocates: `0.6` allows a retry per request, `0.3` allows 33% (tower#857,
//! fix pending in tower#863). Its withdrawal also reads the balance and subtracts in two separate
//! steps, so concurrent retries can overdraw it, and every deposit takes a mutex. The
//! [`RetryBudget::percent`] budget here keeps the Finagle semantics with exact fixed-point
//! amounts (a deposit is worth `percent * 1000` milli-retries, a retry costs 1000), withdraws
//! under a lock (retries are the slow path) and deposits with one atomic add, reading the clock
//! only once every 16 requests.

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::ConfigError;
use crate::sync::{AtomicI64, AtomicU32, AtomicU64, Mutex, MutexGuard};

const SLOTS: usize = 10;
const MILLI: i64 = 1000;

/// What kind of failure a retry answers; the token quota charges timeouts more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RetryCost {
    Normal,
    Timeout,
}

/// A retry budget shared by every clone of a [`RetryLayer`](crate::RetryLayer) and of the
/// services it makes.
///
/// - [`RetryBudget::percent`] (default, Finagle style): retries may add at most `percent` of the
///   requests seen over a sliding window (10 s), plus a floor of `min_per_sec` retries per second
///   of the window, so a quiet client can still retry. The default is 20% + 10/s: over any 10 s,
///   retries <= 0.2 x requests + 100 (deposits are batched 16 at a time to keep the clock off
///   the hot path, which may count up to 15 requests late: at most 3 more retries at 20%).
/// - [`RetryBudget::token_quota`] (AWS SDK standard mode): a bucket of tokens (500); a retry
///   costs 5 (10 after a timeout); a success refunds the retry cost it spent, or 1 when it needed
///   no retry.
/// - [`RetryBudget::unlimited`]: only `max_attempts` limits retries.
///
/// When the budget is spent the layer returns the last response (or error) as it is, records
/// [`RETRY_BUDGET_EXHAUSTED_TOTAL`](ratewise_core::metric_names::RETRY_BUDGET_EXHAUSTED_TOTAL)
/// and emits a `tracing` event.
pub struct RetryBudget {
    kind: Kind,
}

enum Kind {
    Unlimited,
    Percent(PercentBudget),
    Tokens(TokenQuota),
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Unlimited => f.write_str("RetryBudget::Unlimited"),
            Kind::Percent(p) => f
                .debug_struct("RetryBudget::Percent")
                .field("deposit_milli", &p.deposit)
                .field("reserve_milli", &p.reserve)
                .field("window", &(p.slot * SLOTS as u32))
                .field("balance_milli", &p.balance())
                .finish(),
            Kind::Tokens(t) => f
                .debug_struct("RetryBudget::TokenQuota")
                .field("capacity", &t.capacity)
                .field("available", &t.available.load(Ordering::Relaxed))
                .finish(),
        }
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget::percent(0.2, 10).expect("the default budget is valid")
    }
}

impl RetryBudget {
    /// No budget: only `max_attempts` limits retries.
    pub fn unlimited() -> Self {
        RetryBudget {
            kind: Kind::Unlimited,
        }
    }

    /// Finagle style: retries <= `percent` x requests + `min_per_sec` x 10 s over a sliding
    /// 10 s window. `percent` is a fraction (`0.2` = 20%).
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidPercent`] unless `percent` is finite and in `0.0..=1000.0`.
    pub fn percent(percent: f64, min_per_sec: u32) -> Result<Self, ConfigError> {
        RetryBudget::percent_with_window(percent, min_per_sec, Duration::from_secs(10))
    }

    /// [`percent`](RetryBudget::percent) with another window (1 s to 60 s).
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidPercent`] or [`ConfigError::InvalidBudgetWindow`].
    pub fn percent_with_window(
        percent: f64,
        min_per_sec: u32,
        window: Duration,
    ) -> Result<Self, ConfigError> {
        if !percent.is_finite() || !(0.0..=1000.0).contains(&percent) {
            return Err(ConfigError::InvalidPercent(percent));
        }
        if window < Duration::from_secs(1) || window > Duration::from_secs(60) {
            return Err(ConfigError::InvalidBudgetWindow(window));
        }
        let reserve = i64::from(min_per_sec)
            .saturating_mul(window.as_millis() as i64)
            .saturating_mul(MILLI)
            / 1000;
        Ok(RetryBudget {
            kind: Kind::Percent(PercentBudget {
                deposit: (percent * MILLI as f64).round() as i64,
                reserve,
                slot: window / SLOTS as u32,
                start: Instant::now(),
                epoch: AtomicU64::new(0),
                slots: std::array::from_fn(|_| AtomicI64::new(0)),
                pending: AtomicI64::new(0),
                withdraw_lock: Mutex::new(()),
            }),
        })
    }

    /// AWS SDK standard retry mode: 500 tokens, a retry costs 5 (10 after a timeout), a
    /// success refunds 1 (or the cost of its retries).
    pub fn aws_standard() -> Self {
        RetryBudget::token_quota(500, 5, 1).expect("the AWS defaults are valid")
    }

    /// A token quota of `capacity` tokens; a retry costs `retry_cost` (twice that after a
    /// timeout); a success refunds `success_refund` when it needed no retry, or the cost its
    /// retries spent.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidTokenQuota`] unless `0 < retry_cost <= capacity`.
    pub fn token_quota(
        capacity: u32,
        retry_cost: u32,
        success_refund: u32,
    ) -> Result<Self, ConfigError> {
        if capacity == 0 || retry_cost == 0 || retry_cost > capacity {
            return Err(ConfigError::InvalidTokenQuota);
        }
        Ok(RetryBudget {
            kind: Kind::Tokens(TokenQuota {
                capacity,
                retry_cost,
                timeout_cost: retry_cost.saturating_mul(2),
                success_refund,
                available: AtomicU32::new(capacity),
            }),
        })
    }

    /// Called once per logical request (retries excluded).
    pub(crate) fn deposit(&self) {
        if let Kind::Percent(p) = &self.kind {
            p.deposit();
        }
    }

    /// Takes the cost of one retry; returns the tokens taken (0 for non-token budgets), or
    /// `None` when the budget is spent.
    pub(crate) fn withdraw(&self, cost: RetryCost) -> Option<u32> {
        match &self.kind {
            Kind::Unlimited => Some(0),
            Kind::Percent(p) => p.withdraw().then_some(0),
            Kind::Tokens(t) => t.withdraw(cost),
        }
    }

    /// A request session ended in success after spending `spent` tokens on retries.
    pub(crate) fn on_success(&self, spent: u32) {
        if let Kind::Tokens(t) = &self.kind {
            t.refund(if spent == 0 { t.success_refund } else { spent });
        }
    }
}

struct PercentBudget {
    /// Milli-retries earned per request.
    deposit: i64,
    /// Milli-retries always available in a window (the per-second floor).
    reserve: i64,
    slot: Duration,
    start: Instant,
    /// The slot epoch (time since `start` / `slot`) the ring was last rotated to.
    epoch: AtomicU64,
    /// Net milli-retries (deposits minus withdrawals) per slot of the window.
    slots: [AtomicI64; SLOTS],
    /// Deposits (counted, not weighted) not yet assigned to a slot: they are flushed into the
    /// current slot every [`FLUSH_EVERY`] deposits and before every withdrawal, so the hot path
    /// reads no clock.
    pending: AtomicI64,
    withdraw_lock: Mutex<()>,
}

/// How many deposits may wait in `pending` before one of them reads the clock. A flush
/// attributes waiting deposits to the current slot, so at most this many requests may count
/// later than they happened (at 20%, at most 3 extra retries, well under the floor).
const FLUSH_EVERY: i64 = 16;

impl PercentBudget {
    fn current_epoch(&self) -> u64 {
        let elapsed = Instant::now()
            .saturating_duration_since(self.start)
            .as_nanos();
        (elapsed / self.slot.as_nanos().max(1)) as u64
    }

    /// Rotates the ring to epoch `now`, zeroing the slots that fell out of the window. Called
    /// with `withdraw_lock` held, so rotations, flushes and withdrawals never race.
    fn rotate_locked(&self, now: u64) {
        let seen = self.epoch.load(Ordering::Acquire);
        if now > seen {
            // At most one full turn of the ring, however long the budget sat idle.
            let steps = (now - seen).min(SLOTS as u64);
            for step in 1..=steps {
                self.slots[((seen + step) % SLOTS as u64) as usize].store(0, Ordering::Release);
            }
            self.epoch.store(now, Ordering::Release);
        }
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.withdraw_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn balance(&self) -> i64 {
        self.slots
            .iter()
            .map(|slot| slot.load(Ordering::Acquire))
            .fold(self.reserve, i64::saturating_add)
    }

    fn deposit(&self) {
        if self.deposit > 0 {
            let before = self.pending.fetch_add(1, Ordering::AcqRel);
            if before >= FLUSH_EVERY - 1 {
                let _guard = self.lock();
                self.flush_locked(self.current_epoch());
            }
        }
    }

    /// Rotates to `now` and moves the waiting deposits into the current slot.
    fn flush_locked(&self, now: u64) {
        self.rotate_locked(now);
        let pending = self.pending.swap(0, Ordering::AcqRel);
        self.slots[(now % SLOTS as u64) as usize]
            .fetch_add(pending.saturating_mul(self.deposit), Ordering::AcqRel);
    }

    fn withdraw(&self) -> bool {
        // Concurrent deposits only raise the balance, so checking and subtracting under this
        // lock can never overdraw.
        let _guard = self.lock();
        let now = self.current_epoch();
        self.flush_locked(now);
        if self.balance() >= MILLI {
            self.slots[(now % SLOTS as u64) as usize].fetch_sub(MILLI, Ordering::AcqRel);
            true
        } else {
            false
        }
    }
}

struct TokenQuota {
    capacity: u32,
    retry_cost: u32,
    timeout_cost: u32,
    success_refund: u32,
    available: AtomicU32,
}

impl TokenQuota {
    fn withdraw(&self, cost: RetryCost) -> Option<u32> {
        let cost = match cost {
            RetryCost::Normal => self.retry_cost,
            RetryCost::Timeout => self.timeout_cost,
        };
        self.available
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |available| {
                available.checked_sub(cost)
            })
            .ok()
            .map(|_| cost)
    }

    fn refund(&self, amount: u32) {
        let _ = self
            .available
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |available| {
                Some(available.saturating_add(amount).min(self.capacity))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn percent_budget_is_exact_below_one() {
        // tower#857: 0.6 must allow 6 retries for 10 requests, not 10.
        let budget = RetryBudget::percent_with_window(0.6, 0, Duration::from_secs(1)).unwrap();
        for _ in 0..10 {
            budget.deposit();
        }
        let allowed = (0..10)
            .filter(|_| budget.withdraw(RetryCost::Normal).is_some())
            .count();
        assert_eq!(allowed, 6);

        let budget = RetryBudget::percent(0.3, 0).unwrap();
        for _ in 0..100 {
            budget.deposit();
        }
        let allowed = (0..100)
            .filter(|_| budget.withdraw(RetryCost::Normal).is_some())
            .count();
        assert_eq!(allowed, 30);
    }

    #[tokio::test(start_paused = true)]
    async fn floor_and_window_expiry() {
        let budget = RetryBudget::percent(0.2, 10).unwrap();
        // The floor: 10/s over a 10 s window.
        let allowed = (0..1000)
            .filter(|_| budget.withdraw(RetryCost::Normal).is_some())
            .count();
        assert_eq!(allowed, 100);
        // Withdrawals age out with the window, restoring the floor.
        tokio::time::advance(Duration::from_secs(11)).await;
        let allowed = (0..1000)
            .filter(|_| budget.withdraw(RetryCost::Normal).is_some())
            .count();
        assert_eq!(allowed, 100);
        // Deposits age out too: 50 requests earn 10 retries, but not 11 s later.
        tokio::time::advance(Duration::from_secs(11)).await;
        let budget = RetryBudget::percent(0.2, 0).unwrap();
        for _ in 0..50 {
            budget.deposit();
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(budget.withdraw(RetryCost::Normal).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn long_idle_rotation_is_bounded() {
        let budget = RetryBudget::percent(0.2, 0).unwrap();
        budget.deposit();
        tokio::time::advance(Duration::from_secs(86_400 * 365)).await;
        assert!(budget.withdraw(RetryCost::Normal).is_none());
        for _ in 0..5 {
            budget.deposit();
        }
        assert!(budget.withdraw(RetryCost::Normal).is_some());
        assert!(budget.withdraw(RetryCost::Normal).is_none());
    }

    #[test]
    fn token_quota_charges_and_refunds() {
        let budget = RetryBudget::aws_standard();
        let spent: u32 = (0..200)
            .filter_map(|_| budget.withdraw(RetryCost::Normal))
            .sum();
        assert_eq!(spent, 500, "100 retries of cost 5 drain 500 tokens");
        assert!(budget.withdraw(RetryCost::Normal).is_none());
        budget.on_success(0);
        budget.on_success(5);
        assert_eq!(budget.withdraw(RetryCost::Normal), Some(5));
        assert!(budget.withdraw(RetryCost::Normal).is_none());
        // Timeouts cost twice as much; refunds never exceed the capacity.
        let budget = RetryBudget::token_quota(20, 5, 1).unwrap();
        assert_eq!(budget.withdraw(RetryCost::Timeout), Some(10));
        budget.on_success(100);
        assert_eq!(budget.withdraw(RetryCost::Timeout), Some(10));
        assert_eq!(budget.withdraw(RetryCost::Timeout), Some(10));
        assert!(budget.withdraw(RetryCost::Normal).is_none());
    }

    #[test]
    fn invalid_budgets_are_rejected() {
        assert!(RetryBudget::percent(f64::NAN, 10).is_err());
        assert!(RetryBudget::percent(-0.1, 10).is_err());
        assert!(RetryBudget::percent_with_window(0.2, 10, Duration::from_millis(10)).is_err());
        assert!(RetryBudget::token_quota(10, 0, 1).is_err());
        assert!(RetryBudget::token_quota(10, 11, 1).is_err());
    }
}
