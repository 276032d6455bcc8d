//! A bounded queue of batches that worker threads make ahead of the trainer. Besides the batch the trainer holds, at
//! most `depth` exist at once (being made, or made and waiting), whatever the epoch's length or the number of
//! workers, so the memory a streamed source holds is `depth + 1` batches, not the dataset.
//!
//! Batches come out in order whatever order the workers finish them in, so the trainer sees the same batches as
//! a single thread would make them.

use anyhow::{anyhow, Result};
use std::collections::BTreeMap;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Makes batch `k` of a range of batches.
pub type MakeBatch<T> = dyn Fn(usize) -> Result<T> + Send + Sync;

/// Batches `range` made by `workers` threads, at most `depth` of them ahead of [`Prefetch::next`].
pub struct Prefetch<T: Send + 'static> {
    shared: Arc<Shared<T>>,
    threads: Vec<JoinHandle<()>>,
    next: usize,
    end: usize,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    changed: Condvar,
    depth: usize,
    end: usize,
}

struct State<T> {
    /// The next batch a worker will start.
    next_start: usize,
    /// The next batch the consumer takes: batches from here on count against the depth.
    taken: usize,
    ready: BTreeMap<usize, Result<T>>,
    stop: bool,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A worker that panicked did so outside the lock (its panic is caught around the batch), so the state is whole.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, State<T>>) -> MutexGuard<'a, State<T>> {
        self.changed.wait(guard).unwrap_or_else(|p| p.into_inner())
    }

    /// The next batch this worker makes; `None` when there is none left or the queue is dropped.
    fn claim(&self) -> Option<usize> {
        let mut s = self.lock();
        loop {
            if s.stop || s.next_start >= self.end {
                return None;
            }
            if s.next_start < s.taken + self.depth {
                s.next_start += 1;
                return Some(s.next_start - 1);
            }
            s = self.wait(s);
        }
    }
}

impl<T: Send + 'static> Prefetch<T> {
    /// Starts the workers on the first batches of `range`.
    pub fn start(range: Range<usize>, workers: usize, depth: usize, make: Arc<MakeBatch<T>>) -> Prefetch<T> {
        let state = State { next_start: range.start, taken: range.start, ready: BTreeMap::new(), stop: false };
        let shared = Arc::new(Shared { state: Mutex::new(state), changed: Condvar::new(), depth: depth.max(1), end: range.end });
        let threads = (0..workers.clamp(1, depth.max(1)))
            .map(|_| {
                let (shared, make) = (Arc::clone(&shared), Arc::clone(&make));
                std::thread::spawn(move || {
                    while let Some(k) = shared.claim() {
                        let made = catch_unwind(AssertUnwindSafe(|| make(k))).unwrap_or_else(|_| Err(anyhow!("a data loading thread failed on batch {k}")));
                        shared.lock().ready.insert(k, made);
                        shared.changed.notify_all();
                    }
                })
            })
            .collect();
        Prefetch { shared, threads, next: range.start, end: range.end }
    }

    /// The next batch in order, waiting for it if need be; `None` after the last.
    pub fn next(&mut self) -> Option<Result<T>> {
        if self.next >= self.end {
            return None;
        }
        let mut s = self.shared.lock();
        loop {
            if let Some(made) = s.ready.remove(&self.next) {
                self.next += 1;
                s.taken = self.next;
                drop(s);
                self.shared.changed.notify_all();
                return Some(made);
            }
            s = self.shared.wait(s);
        }
    }
}

impl<T: Send + 'static> Drop for Prefetch<T> {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn batches_come_in_order_and_never_more_than_depth_ahead() {
        let live = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (l, p) = (Arc::clone(&live), Arc::clone(&peak));
        let make: Arc<MakeBatch<usize>> = Arc::new(move |k| {
            let now = l.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            // Later batches finish first, so ordering is exercised.
            std::thread::sleep(std::time::Duration::from_micros(((7 - k % 7) * 200) as u64));
            Ok(k * 10)
        });
        let mut q = Prefetch::start(3..40, 4, 3, make);
        let mut got = Vec::new();
        while let Some(v) = q.next() {
            got.push(v.unwrap());
            // The batch in use, while the workers make the next ones.
            std::thread::sleep(std::time::Duration::from_micros(300));
            live.fetch_sub(1, Ordering::SeqCst);
        }
        assert_eq!(got, (3..40).map(|k| k * 10).collect::<Vec<_>>());
        let peak = peak.load(Ordering::SeqCst);
        assert!((3..=4).contains(&peak), "{peak} batches were alive at once; the depth is 3, plus the one in use");
    }

    #[test]
    fn a_failing_or_panicking_batch_is_an_error_not_a_hang() {
        let make: Arc<MakeBatch<usize>> = Arc::new(|k| match k {
            1 => Err(anyhow!("bad sample")),
            2 => panic!("boom"),
            _ => Ok(k),
        });
        let mut q = Prefetch::start(0..4, 2, 2, make);
        assert_eq!(q.next().unwrap().unwrap(), 0);
        assert_eq!(q.next().unwrap().unwrap_err().to_string(), "bad sample");
        assert!(q.next().unwrap().unwrap_err().to_string().contains("batch 2"));
        // Dropped with a batch still queued: the workers stop and are joined.
    }
}
