//! Loom models of the circuit state: every interleaving of two callers.
//!
//! `RUSTFLAGS="--cfg loom" cargo test -p ratewise-breaker --lib --release loom`

use std::time::Duration;

use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use ratewise_core::Key;
use tokio::time::Instant;

use crate::classify::Outcome;
use crate::config::{SeededJitter, Settings};
use crate::state::{CircuitState, KeyState, Policy};

fn key_state(settings: Settings, transitions: Option<Arc<AtomicUsize>>) -> KeyState {
    let listeners: Vec<crate::state::Listener> = match transitions {
        Some(count) => vec![std::sync::Arc::new(move |_: &crate::state::StateChange| {
            count.fetch_add(1, Ordering::SeqCst);
        })],
        None => Vec::new(),
    };
    let policy = Policy {
        settings: Settings {
            jitter: 0.0,
            ..settings
        },
        jitter: std::sync::Arc::new(SeededJitter::new(1)),
        listeners,
    };
    KeyState::new(Key::new("k"), std::sync::Arc::new(policy))
}

/// Two callers on the closed fast path, each failing once, with one failure enough to trip:
/// the circuit trips exactly once, whichever order the loads, locks and stores interleave in;
/// a caller admitted before the trip cannot count again after it.
#[test]
fn loom_fast_path_trips_once() {
    loom::model(|| {
        let transitions = Arc::new(AtomicUsize::new(0));
        let settings = Settings {
            minimum_calls: 1,
            failure_rate: 1.0,
            ..Settings::default()
        };
        let state = Arc::new(key_state(settings, Some(Arc::clone(&transitions))));
        let t0 = Instant::now();
        let callers: Vec<_> = (0..2)
            .map(|_| {
                let state = Arc::clone(&state);
                loom::thread::spawn(move || {
                    if let Ok(ticket) = state.admit_at_fast(t0) {
                        state.complete(ticket, Outcome::Failure, false, Some(t0));
                    }
                })
            })
            .collect();
        for caller in callers {
            caller.join().unwrap();
        }
        assert_eq!(state.state_at(t0), CircuitState::Open);
        assert_eq!(transitions.load(Ordering::SeqCst), 1);
    });
}

/// Two callers at the half-open instant with one probe slot: exactly one is admitted; after it
/// is cancelled the slot is free again.
#[test]
fn loom_half_open_admits_exactly_one_probe() {
    loom::model(|| {
        let settings = Settings {
            minimum_calls: 1,
            failure_rate: 1.0,
            ..Settings::default()
        };
        let state = Arc::new(key_state(settings, None));
        let t0 = Instant::now();
        let ticket = state.admit_at(t0).unwrap();
        state.complete(ticket, Outcome::Failure, false, Some(t0));
        let half_open = t0 + Duration::from_secs(30);

        let callers: Vec<_> = (0..2)
            .map(|_| {
                let state = Arc::clone(&state);
                loom::thread::spawn(move || state.admit_at_fast(half_open).ok())
            })
            .collect();
        let admitted: Vec<_> = callers
            .into_iter()
            .filter_map(|caller| caller.join().unwrap())
            .collect();
        assert_eq!(admitted.len(), 1);
        state.release(admitted[0]);
        assert!(
            state.admit_at(half_open).is_ok(),
            "the cancelled probe's slot is free"
        );
    });
}

/// A success on the lock-free path of a clean window races a failure under the lock: in every
/// interleaving the window ends with one failure of two calls and the clean bit cleared, as
/// if the two had been recorded one after the other.
#[test]
fn loom_clean_success_races_a_failure() {
    loom::model(|| {
        let settings = Settings {
            window: crate::config::Window::count(2),
            minimum_calls: 2,
            failure_rate: 1.0,
            ..Settings::default()
        };
        let state = Arc::new(key_state(settings, None));
        let t0 = Instant::now();
        for _ in 0..2 {
            let ticket = state.admit_at(t0).unwrap();
            state.complete(ticket, Outcome::Success, false, Some(t0));
        }
        assert!(state.window_and_clean(t0).1);
        let callers: Vec<_> = [Outcome::Success, Outcome::Failure]
            .into_iter()
            .map(|outcome| {
                let state = Arc::clone(&state);
                loom::thread::spawn(move || {
                    let ticket = state.admit_at_fast(t0).unwrap();
                    state.complete(ticket, outcome, false, Some(t0));
                })
            })
            .collect();
        for caller in callers {
            caller.join().unwrap();
        }
        let (counts, clean) = state.window_and_clean(t0);
        assert_eq!((counts.total, counts.failures), (2, 1));
        assert!(!clean);
        assert_eq!(state.state_at(t0), CircuitState::Closed);
    });
}
