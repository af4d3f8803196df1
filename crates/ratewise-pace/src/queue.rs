//! The per-key waiter queue (FIFO within a priority) and the concurrency cap.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::request::Priority;

/// The layer's state of one key: its waiters and its concurrency semaphore.
#[derive(Debug)]
pub(crate) struct KeyState {
    queue: Mutex<Queue>,
    /// `queue.entries.len()`, readable without the lock.
    queued: AtomicUsize,
    pub(crate) semaphore: Option<Arc<Semaphore>>,
}

#[derive(Debug, Default)]
struct Queue {
    /// Sorted by priority (highest first), then arrival. The head is `entries[0]`: the only
    /// waiter that asks the limiter.
    entries: Vec<Entry>,
    next_id: u64,
    /// When the head expects to pass (its last denial's `retry_after` from then).
    head_due: Option<Instant>,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    priority: Priority,
    cost: u32,
    waker: Option<Waker>,
}

/// Where a request landed in its key's queue.
pub(crate) struct Enqueued {
    pub(crate) id: u64,
    pub(crate) is_head: bool,
    /// A lower bound of the wait: the head's remaining wait plus one `interval` per unit of
    /// cost queued ahead (the head's excluded) and of this request.
    pub(crate) estimate: Duration,
}

impl KeyState {
    pub(crate) fn new(max_concurrency: Option<usize>) -> Self {
        KeyState {
            queue: Mutex::new(Queue::default()),
            queued: AtomicUsize::new(0),
            semaphore: max_concurrency.map(|n| Arc::new(Semaphore::new(n))),
        }
    }

    pub(crate) fn has_waiters(&self) -> bool {
        self.waiting() > 0
    }

    pub(crate) fn waiting(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Entries are pushed and removed whole: a panic elsewhere cannot leave them torn.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Inserts a waiter after every waiter of the same or higher priority.
    pub(crate) fn enqueue(
        &self,
        priority: Priority,
        cost: u32,
        interval: Duration,
        now: Instant,
    ) -> Enqueued {
        let mut queue = self.lock();
        let id = queue.next_id;
        queue.next_id += 1;
        let position = queue
            .entries
            .iter()
            .position(|entry| entry.priority < priority)
            .unwrap_or(queue.entries.len());
        let head_wait = queue
            .head_due
            .map_or(Duration::ZERO, |due| due.saturating_duration_since(now));
        let units_ahead: u64 = queue.entries[..position]
            .iter()
            .skip(1)
            .map(|entry| u64::from(entry.cost))
            .sum::<u64>()
            + u64::from(cost);
        let estimate = if position == 0 {
            Duration::ZERO
        } else {
            head_wait.saturating_add(
                interval.saturating_mul(units_ahead.min(u64::from(u32::MAX)) as u32),
            )
        };
        queue.entries.insert(
            position,
            Entry {
                id,
                priority,
                cost,
                waker: None,
            },
        );
        if position == 0 {
            queue.head_due = None;
        }
        self.queued.store(queue.entries.len(), Ordering::Release);
        Enqueued {
            id,
            is_head: position == 0,
            estimate,
        }
    }

    /// Whether `id` is the head; if not, remembers `waker` to be woken when it becomes head.
    pub(crate) fn is_head_or_park(&self, id: u64, waker: &Waker) -> bool {
        let mut queue = self.lock();
        if queue.entries.first().is_some_and(|entry| entry.id == id) {
            return true;
        }
        if let Some(entry) = queue.entries.iter_mut().find(|entry| entry.id == id) {
            match &entry.waker {
                Some(old) if old.will_wake(waker) => {}
                _ => entry.waker = Some(waker.clone()),
            }
        }
        false
    }

    /// Records when the head expects to pass.
    pub(crate) fn set_head_due(&self, id: u64, due: Instant) {
        let mut queue = self.lock();
        if queue.entries.first().is_some_and(|entry| entry.id == id) {
            queue.head_due = Some(due);
        }
    }

    /// Removes `id`; if it was the head, wakes the new head.
    pub(crate) fn remove(&self, id: u64) {
        let mut queue = self.lock();
        let Some(position) = queue.entries.iter().position(|entry| entry.id == id) else {
            return;
        };
        queue.entries.remove(position);
        self.queued.store(queue.entries.len(), Ordering::Release);
        if position == 0 {
            queue.head_due = None;
            if let Some(waker) = queue.entries.first_mut().and_then(|head| head.waker.take()) {
                drop(queue);
                waker.wake();
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

/// A place in a key's queue; dropping it leaves the queue (and wakes the next head), so a
/// dropped waiting request leaves no trace.
#[derive(Debug)]
pub(crate) struct Ticket {
    pub(crate) key_state: Arc<KeyState>,
    pub(crate) id: u64,
    pub(crate) total_waiting: Arc<AtomicUsize>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.key_state.remove(self.id);
        self.total_waiting.fetch_sub(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::task::Wake;

    struct Count(AtomicU32);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn priorities_then_fifo_and_head_handover() {
        let state = KeyState::new(None);
        let now = Instant::now();
        let second = Duration::from_secs(1);
        let a = state.enqueue(Priority::Normal, 1, second, now);
        assert!(a.is_head);
        state.set_head_due(a.id, now + second * 3);
        let b = state.enqueue(Priority::Normal, 2, second, now);
        assert_eq!(b.estimate, second * 5);
        // A higher priority goes before everyone, the current head included.
        let c = state.enqueue(Priority::High, 1, second, now);
        assert!(c.is_head);
        assert_eq!(c.estimate, Duration::ZERO);
        let d = state.enqueue(Priority::Low, 1, second, now);
        assert_eq!(d.estimate, second * 4);

        let counter = Arc::new(Count(AtomicU32::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        assert!(!state.is_head_or_park(a.id, &waker));
        assert!(!state.is_head_or_park(b.id, &waker));
        assert!(state.is_head_or_park(c.id, &waker));
        // The head leaves: the next head (a) is woken, nobody else.
        state.remove(c.id);
        assert_eq!(counter.0.load(Ordering::Relaxed), 1);
        assert!(state.is_head_or_park(a.id, &waker));
        // A non-head leaving wakes nobody.
        state.remove(d.id);
        assert_eq!(counter.0.load(Ordering::Relaxed), 1);
        state.remove(a.id);
        assert_eq!(counter.0.load(Ordering::Relaxed), 2);
        assert!(state.is_head_or_park(b.id, &waker));
        state.remove(b.id);
        state.remove(b.id);
        assert_eq!(state.len(), 0);
        assert!(!state.has_waiters());
    }
}
