//! A bound on how long a writer waits for a stream's writer lock.
//!
//! A mutex that lets a running thread take the lock ahead of a sleeping
//! waiter is fast on a busy machine: two threads keep writing while the
//! others sleep. But with many more writers than cores and large batches,
//! one writer could find `std`'s mutex taken for over a second (16 writers
//! of 256 KiB batches on 2 cores, docs/DESIGN.md).
//!
//! So the writer lock (`Stream::writer`) is `parking_lot`'s mutex, and a
//! writer waits for it at most [`STARVING_AFTER`] (`try_lock_for`: asleep,
//! woken when the lock is let go). Then it *starves*: it copies its batch
//! into this queue, and the next writer to hold the lock appends every
//! starving batch, oldest first, before it lets go, and hands each its
//! outcome. A starving writer therefore waits for one more holder of the
//! lock, however often it would lose the race for it. It also keeps
//! trying the lock itself, in case no other writer comes. The copy is made
//! only by a writer that has already waited that long, so a short wait
//! costs what it costs on a plain mutex.
//!
//! # Invariants
//!
//! - A waiter is in `queue` exactly while it is [`State::Starving`];
//!   `starving` counts them (it changes only under `queue`'s lock, and is
//!   read without it as a hint).
//! - Only a holder of the writer lock takes a waiter out of `Starving`
//!   (into [`State::Done`]), and only with the lock held can its owner
//!   [`leave`](StarvingQueue::leave): each batch is appended once, by its
//!   owner or by one holder of the lock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, Thread};
use std::time::Duration;

use crate::index::Region;
use crate::locks::lock;

/// How long a writer tries to take the writer lock itself before it asks
/// the holder to append its batch.
pub(crate) const STARVING_AFTER: Duration = Duration::from_micros(500);

/// A batch copied out of a starving writer's hands, for the lock holder to
/// append.
#[derive(Debug)]
pub(crate) struct OwnedBatch {
    /// The region the batch is for; its index is where the holder
    /// publishes the record.
    pub(crate) region: Arc<Region>,
    pub(crate) table_id: u64,
    /// Every entry's bytes, back to back.
    data: Vec<u8>,
    /// Where each entry ends in `data`.
    ends: Vec<usize>,
}

impl OwnedBatch {
    pub(crate) fn copy<E: AsRef<[u8]>>(
        region: &Arc<Region>,
        table_id: u64,
        entries: &[E],
    ) -> OwnedBatch {
        let mut data = Vec::with_capacity(entries.iter().map(|e| e.as_ref().len()).sum());
        let mut ends = Vec::with_capacity(entries.len());
        for entry in entries {
            data.extend_from_slice(entry.as_ref());
            ends.push(data.len());
        }
        OwnedBatch {
            region: Arc::clone(region),
            table_id,
            data,
            ends,
        }
    }

    /// The entries, as slices of the copy.
    pub(crate) fn entries(&self) -> Vec<&[u8]> {
        let mut start = 0;
        self.ends
            .iter()
            .map(|&end| {
                let entry = &self.data[start..end];
                start = end;
                entry
            })
            .collect()
    }
}

/// Where a starving writer stands.
#[derive(Debug)]
enum State<T> {
    /// Its batch waits for the next holder of the lock.
    Starving(OwnedBatch),
    /// A holder of the lock took the batch, to append it.
    Taken,
    /// Appended (or refused) by a holder of the lock; the owner has not
    /// taken the outcome yet.
    Done(T),
    /// The outcome was taken, or the owner left the queue to append its
    /// batch itself.
    Gone,
}

/// One starving writer. `T` is what appending its batch gave.
#[derive(Debug)]
pub(crate) struct Waiter<T> {
    thread: Thread,
    state: Mutex<State<T>>,
}

/// The starving writers of one region, oldest first.
#[derive(Debug)]
pub(crate) struct StarvingQueue<T> {
    queue: Mutex<VecDeque<Arc<Waiter<T>>>>,
    starving: AtomicUsize,
}

impl<T> Default for StarvingQueue<T> {
    fn default() -> StarvingQueue<T> {
        StarvingQueue {
            queue: Mutex::new(VecDeque::new()),
            starving: AtomicUsize::new(0),
        }
    }
}

impl<T> StarvingQueue<T> {
    /// Queues the calling thread's `batch` for the next holder of the lock.
    pub(crate) fn starve(&self, batch: OwnedBatch) -> Arc<Waiter<T>> {
        let waiter = Arc::new(Waiter {
            thread: thread::current(),
            state: Mutex::new(State::Starving(batch)),
        });
        let mut queue = lock(&self.queue);
        queue.push_back(Arc::clone(&waiter));
        self.starving.fetch_add(1, Ordering::Relaxed);
        waiter
    }

    /// Called by `waiter`'s owner once it holds the lock: takes its batch
    /// out of the queue, to append it itself. `false` if a holder of the
    /// lock appended it already (its outcome is waiting in
    /// [`take_done`](StarvingQueue::take_done)).
    pub(crate) fn leave(&self, waiter: &Arc<Waiter<T>>) -> bool {
        let mut queue = lock(&self.queue);
        let mut state = lock(&waiter.state);
        if !matches!(*state, State::Starving(_)) {
            return false;
        }
        *state = State::Gone;
        queue.retain(|w| !Arc::ptr_eq(w, waiter));
        self.starving.fetch_sub(1, Ordering::Relaxed);
        true
    }

    /// Called by the lock holder: every starving writer's batch, oldest
    /// first, each taken out of the queue. The holder appends each one and
    /// [`complete`](StarvingQueue::complete)s it before it lets go of the
    /// lock.
    pub(crate) fn take(&self) -> Vec<(Arc<Waiter<T>>, OwnedBatch)> {
        if self.starving.load(Ordering::Relaxed) == 0 {
            return Vec::new();
        }
        let mut queue = lock(&self.queue);
        self.starving.store(0, Ordering::Relaxed);
        queue
            .drain(..)
            .map(|waiter| {
                let state = std::mem::replace(&mut *lock(&waiter.state), State::Taken);
                let State::Starving(batch) = state else {
                    unreachable!("only starving waiters are queued")
                };
                (waiter, batch)
            })
            .collect()
    }

    /// Hands `outcome` to a waiter taken by [`take`](StarvingQueue::take),
    /// and wakes it.
    pub(crate) fn complete(&self, waiter: &Waiter<T>, outcome: T) {
        *lock(&waiter.state) = State::Done(outcome);
        waiter.thread.unpark();
    }

    /// The outcome a holder of the lock left for `waiter`, if any.
    pub(crate) fn take_done(&self, waiter: &Waiter<T>) -> Option<T> {
        let mut state = lock(&waiter.state);
        if !matches!(*state, State::Done(_)) {
            return None;
        }
        match std::mem::replace(&mut *state, State::Gone) {
            State::Done(outcome) => Some(outcome),
            _ => unreachable!("checked above"),
        }
    }

    /// How many writers are starving (for tests).
    #[cfg(test)]
    pub(crate) fn starving(&self) -> usize {
        self.starving.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::RegionState;

    fn region() -> Arc<Region> {
        Arc::new(Region::new(1, RegionState::default()))
    }

    /// Proves a starving writer's batch goes to the lock holder intact and
    /// once: after it is taken, its owner can no longer leave to append it
    /// again, and the outcome is handed over once.
    #[test]
    fn a_starving_batch_is_taken_once_and_its_owner_gets_the_outcome() {
        let queue: StarvingQueue<u64> = StarvingQueue::default();
        let waiter = queue.starve(OwnedBatch::copy(
            &region(),
            7,
            &[b"ab".as_slice(), b"", b"cde"],
        ));
        assert_eq!(queue.starving(), 1);
        let taken = queue.take();
        assert_eq!(taken.len(), 1);
        let (taken_waiter, batch) = &taken[0];
        assert_eq!(batch.table_id, 7);
        assert_eq!(batch.entries(), [b"ab".as_slice(), b"", b"cde"]);
        assert!(queue.take().is_empty());
        assert!(!queue.leave(&waiter), "a taken batch is not appended twice");
        assert_eq!(queue.take_done(&waiter), None);
        queue.complete(taken_waiter, 42);
        assert_eq!(queue.take_done(&waiter), Some(42));
        assert_eq!(queue.take_done(&waiter), None, "an outcome is taken once");
    }

    /// Proves a starving writer that gets the lock itself leaves no batch
    /// behind for a holder to append.
    #[test]
    fn a_writer_that_leaves_is_not_appended_by_the_holder() {
        let queue: StarvingQueue<u64> = StarvingQueue::default();
        let first = queue.starve(OwnedBatch::copy(&region(), 1, &[b"1"]));
        let second = queue.starve(OwnedBatch::copy(&region(), 2, &[b"2"]));
        assert!(queue.leave(&first));
        assert!(!queue.leave(&first), "left once");
        assert_eq!(queue.starving(), 1);
        let taken: Vec<u64> = queue.take().iter().map(|(_, b)| b.table_id).collect();
        assert_eq!(taken, [2]);
        assert!(!queue.leave(&second));
        assert_eq!(queue.starving(), 0);
    }

    /// Proves the holder takes starving batches oldest first.
    #[test]
    fn the_holder_takes_starving_batches_oldest_first() {
        let queue: StarvingQueue<u64> = StarvingQueue::default();
        for table_id in 1..=3 {
            queue.starve(OwnedBatch::copy(&region(), table_id, &[b"x"]));
        }
        let taken: Vec<u64> = queue.take().iter().map(|(_, b)| b.table_id).collect();
        assert_eq!(taken, [1, 2, 3]);
    }
}
