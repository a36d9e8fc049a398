//! A sleep that wakes within about 0.1 ms of its deadline.
//!
//! tokio's timer counts in whole milliseconds and rounds every deadline up, so a task sleeping
//! 10 ms wakes 1-3 ms late; a fixture whose time to first token is off by that much would bias
//! every latency measurement made against it. Here one background thread keeps the pending
//! deadlines in a heap and waits on a condition variable with a nanosecond timeout (a futex:
//! the kernel's timer slack, ~50 µs), then wakes the tasks whose time has come. It costs one
//! thread for the whole process and no busy waiting, however many streams are open.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// One pending sleep, shared by the future and the timer thread.
#[derive(Debug, Default)]
struct Entry {
    fired: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

/// Heap item: earliest deadline first, then registration order.
struct Pending {
    deadline: Instant,
    seq: u64,
    entry: Arc<Entry>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.seq) == (other.deadline, other.seq)
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.deadline, self.seq).cmp(&(other.deadline, other.seq))
    }
}

#[derive(Default)]
struct State {
    heap: BinaryHeap<Reverse<Pending>>,
    seq: u64,
}

#[derive(Default)]
struct Timer {
    state: Mutex<State>,
    changed: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Timer {
    /// The process-wide timer; its thread starts on first use. If the thread cannot be
    /// started, `None` (callers fall back to tokio's timer).
    fn global() -> Option<&'static Arc<Timer>> {
        static TIMER: OnceLock<Option<Arc<Timer>>> = OnceLock::new();
        TIMER
            .get_or_init(|| {
                let timer = Arc::new(Timer::default());
                let worker = timer.clone();
                std::thread::Builder::new()
                    .name("model-fixture-timer".to_owned())
                    .spawn(move || worker.run())
                    .ok()
                    .map(|_| timer)
            })
            .as_ref()
    }

    fn register(&self, deadline: Instant, entry: Arc<Entry>) {
        let mut state = lock(&self.state);
        let earliest = state
            .heap
            .peek()
            .is_none_or(|Reverse(top)| deadline < top.deadline);
        let seq = state.seq;
        state.seq += 1;
        state.heap.push(Reverse(Pending {
            deadline,
            seq,
            entry,
        }));
        drop(state);
        if earliest {
            self.changed.notify_one();
        }
    }

    fn run(&self) {
        let mut state = lock(&self.state);
        loop {
            let now = Instant::now();
            let mut due = Vec::new();
            while state
                .heap
                .peek()
                .is_some_and(|Reverse(top)| top.deadline <= now)
            {
                if let Some(Reverse(p)) = state.heap.pop() {
                    due.push(p.entry);
                }
            }
            if !due.is_empty() {
                drop(state);
                for entry in due {
                    entry.fired.store(true, Ordering::Release);
                    if let Some(waker) = lock(&entry.waker).take() {
                        waker.wake();
                    }
                }
                state = lock(&self.state);
                continue;
            }
            state = match state.heap.peek().map(|Reverse(top)| top.deadline) {
                None => self
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    self.changed
                        .wait_timeout(state, deadline.saturating_duration_since(now))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }
}

/// Completes at `deadline`, within about 0.1 ms.
pub(crate) async fn sleep_until(deadline: tokio::time::Instant) {
    let deadline = deadline.into_std();
    if deadline <= Instant::now() {
        return;
    }
    let Some(timer) = Timer::global() else {
        tokio::time::sleep_until(deadline.into()).await;
        return;
    };
    let entry = Arc::new(Entry::default());
    timer.register(deadline, entry.clone());
    Sleep { entry }.await;
}

/// Completes after `duration`, within about 0.1 ms.
pub(crate) async fn sleep(duration: std::time::Duration) {
    sleep_until(tokio::time::Instant::now() + duration).await;
}

struct Sleep {
    entry: Arc<Entry>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.entry.fired.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        *lock(&self.entry.waker) = Some(cx.waker().clone());
        // The timer may have fired between the check and storing the waker.
        if self.entry.fired.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wakes_close_to_the_deadline_in_order() {
        let start = tokio::time::Instant::now();
        let mut worst = Duration::ZERO;
        for ms in [5u64, 10, 3, 20, 1] {
            let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
            sleep_until(deadline).await;
            let late = tokio::time::Instant::now() - deadline;
            worst = worst.max(late);
        }
        // Typically ~0.1 ms; the bound is loose because other test processes share the CPUs.
        assert!(worst < Duration::from_millis(20), "late by {worst:?}");
        // Concurrent sleeps all complete; a past deadline completes at once.
        let joins: Vec<_> = (1..=20u64)
            .map(|i| tokio::spawn(sleep(Duration::from_micros(i * 300))))
            .collect();
        for j in joins {
            j.await.unwrap();
        }
        sleep_until(start).await;
    }
}
