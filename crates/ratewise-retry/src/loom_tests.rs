//! Loom models of the retry budgets: every interleaving of two callers.
//!
//! `RUSTFLAGS="--cfg loom" cargo test -p ratewise-retry --lib --release loom`

use loom::sync::Arc;

use crate::budget::{RetryBudget, RetryCost};

/// Two concurrent retries against a token quota with room for one: exactly one gets it.
#[test]
fn loom_token_quota_never_overdraws() {
    loom::model(|| {
        let budget = Arc::new(RetryBudget::token_quota(5, 5, 1).unwrap());
        let other = Arc::clone(&budget);
        let thread = loom::thread::spawn(move || other.withdraw(RetryCost::Normal).is_some());
        let here = budget.withdraw(RetryCost::Normal).is_some();
        let there = thread.join().unwrap();
        assert!(here ^ there, "exactly one retry: {here} {there}");
    });
}

/// A refund racing a withdrawal never lifts the quota above its capacity.
#[test]
fn loom_token_refund_is_capped() {
    loom::model(|| {
        let budget = Arc::new(RetryBudget::token_quota(10, 5, 3).unwrap());
        let other = Arc::clone(&budget);
        let thread = loom::thread::spawn(move || other.on_success(0));
        let took = budget.withdraw(RetryCost::Normal).is_some();
        thread.join().unwrap();
        assert!(took);
        // Withdraw first: 10 - 5 + 3 = 8. Refund first: capped at 10, then 10 - 5 = 5.
        // Either way exactly one more retry fits.
        let mut left = 0;
        while budget.withdraw(RetryCost::Normal).is_some() {
            left += 5;
        }
        assert!(left == 5, "left {left}");
    });
}

/// The percent budget: a deposit racing two withdrawals (one earned retry, no floor) grants
/// exactly one retry when the deposit lands first, and never two.
#[test]
fn loom_percent_budget_never_overdraws() {
    loom::model(|| {
        let budget = Arc::new(RetryBudget::percent(1.0, 0).unwrap());
        budget.deposit();
        let other = Arc::clone(&budget);
        let thread = loom::thread::spawn(move || other.withdraw(RetryCost::Normal).is_some());
        let here = budget.withdraw(RetryCost::Normal).is_some();
        let there = thread.join().unwrap();
        assert!(here ^ there, "exactly one retry: {here} {there}");
    });
}

/// A deposit that triggers a flush racing a withdrawal: the withdrawal sees either none or
/// all of the flushed deposits, never a torn count.
#[test]
fn loom_percent_flush_races_withdrawal() {
    loom::model(|| {
        let budget = Arc::new(RetryBudget::percent(0.2, 0).unwrap());
        // 15 deposits wait; the 16th (in the thread) flushes them: 16 x 0.2 = 3.2 retries.
        for _ in 0..15 {
            budget.deposit();
        }
        let other = Arc::clone(&budget);
        let thread = loom::thread::spawn(move || other.deposit());
        let first = budget.withdraw(RetryCost::Normal).is_some();
        thread.join().unwrap();
        let mut total = usize::from(first);
        while budget.withdraw(RetryCost::Normal).is_some() {
            total += 1;
        }
        assert_eq!(total, 3, "16 deposits at 20% earn 3 whole retries");
    });
}
