//! Group commit: many writers waiting for durability, one `fdatasync` per
//! group, and no idle gap between one group's sync and the next.
//!
//! A writer that has appended its batch calls [`GroupCommit::wait`]. If no
//! sync is running it becomes the *leader* and syncs for everyone; otherwise
//! it parks. When the leader's sync returns, it first hands the lead to the
//! oldest waiter that sync did not cover (those appended while it ran) and
//! wakes that one, so the next sync starts after a single wake-up; then it
//! wakes the waiters it covered. Nobody else is woken: a waiter sleeps until
//! its record is durable or it is asked to lead.
//!
//! An earlier version woke every waiter with one `Condvar::notify_all` and
//! let them race for the lead. On the project's 2-core VM that wake-up of
//! 15 threads, half of them to find their record not yet covered and sleep
//! again, left the disk idle for a mean 45 µs between syncs of about 170 µs
//! (docs/BENCHMARKS.md).
//!
//! # Invariants
//!
//! - While any waiter is parked, `leading` is true: some thread is syncing,
//!   or has been handed the lead and woken. So every parked waiter is looked
//!   at again when that sync ends.
//! - `next_leader`, when set, names a waiter still in `waiters`; only that
//!   waiter may clear it.
//! - A waiter returns only once its own segment is durable past its record
//!   (whoever synced it), or after leading one sync itself.

use std::sync::Mutex;
use std::thread::{self, Thread};

use segwal_segment::SegmentHandle;

use crate::region::lock;

/// The group-commit state of one region.
#[derive(Debug, Default)]
pub(crate) struct GroupCommit {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Whether a leader is syncing, or has been chosen and is being woken.
    leading: bool,
    /// The ticket of the waiter handed the lead, not yet running.
    next_leader: Option<u64>,
    next_ticket: u64,
    /// Parked writers, oldest first.
    waiters: Vec<Waiter>,
}

#[derive(Debug)]
struct Waiter {
    ticket: u64,
    /// The segment its record is in, and the end of the record: it is done
    /// once `handle.durable_len() >= end`.
    handle: SegmentHandle,
    end: u64,
    thread: Thread,
}

impl GroupCommit {
    /// Returns once `handle` is durable up to `end`. If this thread has to
    /// lead, it calls `sync` once (which must sync `handle`) and returns
    /// its result; `None` means another thread's sync covered the record.
    pub(crate) fn wait<R>(
        &self,
        handle: &SegmentHandle,
        end: u64,
        sync: impl FnOnce() -> R,
    ) -> Option<R> {
        let mut state = lock(&self.state);
        let mut ticket = None;
        loop {
            let handed_lead = ticket.is_some() && state.next_leader == ticket;
            if handle.durable_len() >= end {
                // Covered (by a sync of its own segment that ran outside the
                // group, at rollover, it may even have been handed the lead).
                if let Some(ticket) = ticket {
                    state.waiters.retain(|w| w.ticket != ticket);
                }
                if handed_lead {
                    state.next_leader = None;
                    self.pass_lead(state);
                }
                return None;
            }
            if handed_lead || !state.leading {
                if let Some(ticket) = ticket {
                    state.waiters.retain(|w| w.ticket != ticket);
                }
                state.leading = true;
                state.next_leader = None;
                drop(state);
                let leading = Leading(self);
                let result = sync();
                drop(leading);
                return Some(result);
            }
            if ticket.is_none() {
                let mine = state.next_ticket;
                state.next_ticket += 1;
                state.waiters.push(Waiter {
                    ticket: mine,
                    handle: handle.clone(),
                    end,
                    thread: thread::current(),
                });
                ticket = Some(mine);
            }
            drop(state);
            // An `unpark` that came before this `park` makes it return at
            // once; a spurious return just goes round the loop again.
            thread::park();
            state = lock(&self.state);
        }
    }

    /// Ends a lead: hands it to the oldest waiter not yet durable, if any,
    /// and wakes that one first, then every waiter that is durable now.
    fn pass_lead(&self, mut state: std::sync::MutexGuard<'_, State>) {
        let done: Vec<Thread> = state
            .waiters
            .extract_if(.., |w| w.handle.durable_len() >= w.end)
            .map(|w| w.thread)
            .collect();
        let next = state.waiters.first().map(|w| (w.ticket, w.thread.clone()));
        match &next {
            Some((ticket, _)) => state.next_leader = Some(*ticket),
            None => state.leading = false,
        }
        drop(state);
        if let Some((_, thread)) = next {
            thread.unpark();
        }
        for thread in done {
            thread.unpark();
        }
    }
}

/// Held by the leader while it syncs; passes the lead on when dropped, so
/// that even a panicking sync does not leave the waiters parked forever.
struct Leading<'a>(&'a GroupCommit);

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        self.0.pass_lead(lock(&self.0.state));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use segwal_format::SegmentIdentity;
    use segwal_segment::{BatchRef, Preallocation, Segment};

    use super::*;

    struct Fixture {
        _dir: tempfile::TempDir,
        segment: Mutex<Segment>,
        group: GroupCommit,
        syncs: AtomicUsize,
    }

    impl Fixture {
        fn new() -> Arc<Fixture> {
            let dir = tempfile::tempdir().unwrap();
            let identity = SegmentIdentity {
                region_id: 1,
                segment_id: 1,
            };
            let path = dir.path().join("segment");
            let segment = Segment::create(&path, identity, 1 << 20, Preallocation::Zeroed).unwrap();
            Arc::new(Fixture {
                _dir: dir,
                segment: Mutex::new(segment),
                group: GroupCommit::default(),
                syncs: AtomicUsize::new(0),
            })
        }

        /// Appends one record; returns the handle and the record's end.
        fn append(&self) -> (SegmentHandle, u64) {
            let mut segment = self.segment.lock().unwrap();
            let range = segment
                .append(&BatchRef {
                    table_id: 1,
                    first_sequence: 1,
                    entries: &[b"entry"],
                })
                .unwrap();
            (segment.handle(), range.end)
        }

        /// Appends a record and waits for it; `while_syncing` runs inside
        /// the sync if this thread leads. Returns whether it led.
        fn write(&self, while_syncing: impl FnOnce()) -> bool {
            let (handle, end) = self.append();
            let led = self.group.wait(&handle, end, || {
                self.syncs.fetch_add(1, Ordering::SeqCst);
                let synced = handle.sync().unwrap();
                while_syncing();
                synced
            });
            assert!(handle.durable_len() >= end, "returned before durable");
            led.is_some()
        }

        fn parked(&self) -> usize {
            lock(&self.group.state).waiters.len()
        }

        fn wait_until_parked(&self, n: usize) {
            while self.parked() < n {
                thread::sleep(Duration::from_millis(1));
            }
        }
    }

    #[test]
    fn waiters_appended_before_a_sync_are_covered_by_it_and_lead_nothing() {
        // Proves one sync acknowledges every record appended before it
        // started: writers that park behind a leader return without syncing.
        let fixture = Fixture::new();
        let (handle, end) = fixture.append();
        let mut waiters = Vec::new();
        // The main thread leads; the four others append and park while it
        // leads, and it syncs only then, so their records precede the sync.
        let led = fixture.group.wait(&handle, end, || {
            for _ in 0..4 {
                let fixture = Arc::clone(&fixture);
                waiters.push(thread::spawn(move || fixture.write(|| {})));
            }
            fixture.wait_until_parked(4);
            fixture.syncs.fetch_add(1, Ordering::SeqCst);
            handle.sync().unwrap()
        });
        assert!(led.is_some());
        for waiter in waiters {
            assert!(!waiter.join().unwrap(), "a covered waiter synced");
        }
        assert_eq!(fixture.syncs.load(Ordering::SeqCst), 1);
        assert_eq!(fixture.parked(), 0);
        assert!(!lock(&fixture.group.state).leading);
    }

    #[test]
    fn a_waiter_appended_during_a_sync_is_handed_the_lead() {
        // Proves the lead passes straight to a waiter the sync did not
        // cover: it syncs its own record rather than waiting forever.
        let fixture = Fixture::new();
        let late = {
            let fixture = Arc::clone(&fixture);
            move || {
                let fixture2 = Arc::clone(&fixture);
                let waiter = thread::spawn(move || fixture2.write(|| {}));
                fixture.wait_until_parked(1);
                waiter
            }
        };
        let mut waiter = None;
        // The leader's sync has already captured its end when the second
        // writer appends and parks.
        assert!(fixture.write(|| waiter = Some(late())));
        assert!(
            waiter.unwrap().join().unwrap(),
            "the uncovered waiter did not lead"
        );
        assert_eq!(fixture.syncs.load(Ordering::SeqCst), 2);
        assert!(!lock(&fixture.group.state).leading);
    }

    #[test]
    fn a_leader_that_panics_passes_the_lead_on() {
        // Proves a panic inside a sync does not strand the parked waiters:
        // the lead passes on as the panicking leader unwinds.
        let fixture = Fixture::new();
        let leader = {
            let fixture = Arc::clone(&fixture);
            thread::spawn(move || {
                let (handle, end) = fixture.append();
                fixture.group.wait(&handle, end, || {
                    let fixture2 = Arc::clone(&fixture);
                    // Appended after the leader's (absent) sync: uncovered.
                    let waiter = thread::spawn(move || fixture2.write(|| {}));
                    fixture.wait_until_parked(1);
                    let _keep = waiter;
                    panic!("the sync blew up");
                })
            })
        };
        assert!(leader.join().is_err());
        // The waiter's own sync covers the leader's record too.
        while fixture.syncs.load(Ordering::SeqCst) == 0 {
            thread::sleep(Duration::from_millis(1));
        }
        while lock(&fixture.group.state).leading {
            thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(fixture.parked(), 0);
    }
}
