//! Group commit: many writers waiting for durability, one `fdatasync` per
//! group, and the next sync started the moment the last one returns.
//!
//! A writer that has appended its batch calls [`GroupCommit::wait`]. If no
//! sync is running it *leads*: it syncs for everyone itself, so a writer
//! that meets no other pays for nothing but its sync. A writer that comes
//! while a sync runs parks. When the leader's sync returns, the waiters it
//! covered are woken, and if some appended only while it ran (their records
//! are not covered), the leader hands the group to the stream's *flusher*
//! and returns. The flusher is a thread that syncs for the oldest uncovered
//! waiter, wakes one of the waiters that sync covered (which wakes the
//! others), and syncs again at once while anyone is left waiting. So under
//! load the disk never waits for a parked thread to wake up and call
//! `fdatasync`: the flusher is the thread the last sync returned to.
//!
//! Two simpler designs left the disk idle between syncs: waking every
//! waiter at once to race for the lead, and handing the lead to the oldest
//! uncovered waiter, which had to wake and be scheduled before it could
//! sync (docs/DESIGN.md, "Group commit").
//!
//! The flusher starts when a leader first hands a group on, and exits after
//! [`FLUSHER_IDLE`] without work, so a stream that is idle, or written by
//! one writer at a time, costs no thread. If no thread can be started, the
//! leader hands the group to the oldest waiter instead, which leads the
//! next sync.
//!
//! The flusher's gap between syncs is nearly all the one wake-up before
//! each sync: the woken writer takes the flusher's core for a while.
//!
//! A waiter does not park at once: while a sync is expected to end soon
//! (the group's recent syncs took at most [`SPIN_MAX_SYNC`] on average), it
//! yields its core in a loop (`sched_yield`) for up to twice that mean, and
//! returns as soon as its record is durable or the group's state changes;
//! only then does it park. Parking and being woken costs a 2-core VM about
//! as much as a sync (a futex wake-up, an inter-processor interrupt, a
//! core leaving idle), and a yielding waiter gives its core to any thread
//! that can run, so the loop mostly spends time the cores would idle. The
//! same trade as InnoDB's redo-log waiters (which spin while the mean
//! flush time is under a bound) and RocksDB's adaptive yield: more
//! throughput and a lower p99 for more CPU time (docs/DESIGN.md).
//! `ManagerConfig::yield_while_syncing` turns it off.
//!
//! # Invariants
//!
//! - While any waiter is parked in `waiters`, either `syncing` is true (a
//!   leader or the flusher is syncing, or is about to look at the waiters)
//!   or the oldest waiter has been woken to lead (no flusher thread). So
//!   every parked waiter is looked at again when the current sync ends.
//! - A waiter leaves `waiters` once it is durable past its record, or when
//!   a sync made for it returned (its outcome is then in `outcomes`, which
//!   only it takes out).
//! - `flusher` is [`Flusher::Busy`] from the moment a leader hands it a
//!   group until its thread finds no waiter left (or fails to start); it
//!   syncs only for waiters, so it is never busy while `syncing` is false,
//!   and no leader exists while it is busy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use segwal_segment::SegmentHandle;

use crate::locks::lock;

/// How long the flusher thread waits for work before it exits.
pub(crate) const FLUSHER_IDLE: Duration = Duration::from_secs(1);

/// Waiters yield their core instead of parking only while the group's
/// syncs take at most this long on average: beyond it, the wake-up that
/// parking costs is small next to the wait. InnoDB's redo-log waiters use
/// the same bound (`innodb_log_wait_for_flush_spin_hwm`).
pub(crate) const SPIN_MAX_SYNC: Duration = Duration::from_micros(400);

/// What syncs a segment: [`SegmentHandle::sync`] (tests slow it down or
/// fail it).
type SyncFn = dyn Fn(&SegmentHandle) -> segwal_segment::Result<u64> + Send + Sync;

/// The group-commit state of one stream of the shared log.
#[derive(Debug)]
pub(crate) struct GroupCommit {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// The flusher thread waits here for a leader to hand it a group.
    work: Condvar,
    sync: Box<SyncFn>,
    /// Whether a group is handed to a flusher thread (else to the oldest
    /// waiter; tests try both).
    threaded: bool,
    idle: Duration,
    /// Names the flusher thread.
    stream_id: u64,
    /// Whether waiters yield their core before they park (see the module
    /// documentation).
    spin: bool,
    /// The mean duration of the group's syncs, in nanoseconds: a moving
    /// average weighting the newest 1/8; 0 before the first.
    sync_nanos: AtomicU64,
    /// Bumped whenever a sync ends and the state shows it (waiters covered
    /// or handed an outcome, the group ended, a waiter told to lead), so
    /// that a yielding waiter knows to look at the state again.
    changes: AtomicU64,
    /// Batches appended to the stream for group commit, and how many of
    /// them syncs have started to cover: the difference at a sync's start
    /// is the batches it makes durable.
    appended: AtomicU64,
    covered: AtomicU64,
    /// Yielding waiters that saw their record durable or the state change.
    #[cfg(test)]
    spun: AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("state", &self.state)
            .field("threaded", &self.threaded)
            .field("stream_id", &self.stream_id)
            .field("spin", &self.spin)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct State {
    /// Whether a leader or the flusher is syncing for the group.
    syncing: bool,
    flusher: Flusher,
    next_ticket: u64,
    /// Parked writers, oldest first.
    waiters: Vec<Waiter>,
    /// The outcome of a sync the flusher made for a waiter, by ticket.
    outcomes: Vec<(u64, Synced)>,
    /// Waiters taken out of `waiters`, not woken yet. Whoever wakes one of
    /// them (the flusher wakes a single one, to be quick back to the disk)
    /// leaves the rest to it: each waiter wakes the others as it returns.
    to_wake: Vec<Thread>,
    /// Set when the stream is dropped: the flusher thread exits.
    closed: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Flusher {
    /// No flusher thread.
    #[default]
    Absent,
    /// The flusher thread waits for a group.
    Idle,
    /// Handed a group (its thread may still be starting): the flusher
    /// thread syncs while waiters are left.
    Busy,
}

/// A sync made for one waiting writer.
#[derive(Debug)]
pub(crate) struct Synced {
    /// What the sync returned: on success, the segment's new durable end.
    pub(crate) outcome: segwal_segment::Result<u64>,
    /// Made by the flusher thread, not by the writer itself as the leader.
    pub(crate) by_flusher: bool,
    /// How long the sync took.
    pub(crate) nanos: u64,
    /// How many batches it made durable.
    pub(crate) batches: u64,
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
    /// Group commit for stream `stream_id`; `spin` says whether waiters
    /// yield their core before they park.
    pub(crate) fn new(stream_id: u64, spin: bool) -> GroupCommit {
        let sync = Box::new(SegmentHandle::sync);
        GroupCommit::with_sync(stream_id, true, spin, FLUSHER_IDLE, sync)
    }

    /// `threaded` says whether a leader hands a group to a flusher thread
    /// (else to the oldest waiter, as when no thread can be started).
    fn with_sync(
        stream_id: u64,
        threaded: bool,
        spin: bool,
        idle: Duration,
        sync: Box<SyncFn>,
    ) -> GroupCommit {
        GroupCommit {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                work: Condvar::new(),
                sync,
                threaded,
                idle,
                stream_id,
                spin,
                sync_nanos: AtomicU64::new(0),
                changes: AtomicU64::new(0),
                appended: AtomicU64::new(0),
                covered: AtomicU64::new(0),
                #[cfg(test)]
                spun: AtomicU64::new(0),
            }),
        }
    }

    /// Counts a batch appended for group commit (for `batches_per_sync`).
    pub(crate) fn appended(&self) {
        self.shared.appended.fetch_add(1, Ordering::Release);
    }

    /// The batches appended since the last sync started, for a sync made
    /// outside the group (at rollover, or by the interval syncer).
    pub(crate) fn take_batches(&self) -> u64 {
        self.shared.take_batches()
    }

    /// Returns once `handle` is durable up to `end`. `None` means syncs
    /// made for others covered the record; otherwise this is the sync made
    /// for this writer (by itself as the leader, or by the flusher), which
    /// covered the record if it succeeded.
    pub(crate) fn wait(&self, handle: &SegmentHandle, end: u64) -> Option<Synced> {
        let shared = &self.shared;
        let mut state = lock(&shared.state);
        if handle.durable_len() >= end {
            return None;
        }
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        let mut queued = false;
        // Until when this waiter yields before it parks, decided at its
        // first wait (`None`: it parks at once).
        let mut spin_until = None;
        loop {
            if queued {
                if let Some(i) = state.outcomes.iter().position(|(t, _)| *t == ticket) {
                    let (_, synced) = state.outcomes.swap_remove(i);
                    wake_all(state);
                    return Some(synced);
                }
                match state.waiters.iter().position(|w| w.ticket == ticket) {
                    // Taken out by a sync that covered it.
                    None => {
                        wake_all(state);
                        return None;
                    }
                    // Covered by a sync outside the group (at rollover).
                    Some(i) if handle.durable_len() >= end => {
                        state.waiters.remove(i);
                        wake_all(state);
                        return None;
                    }
                    Some(_) => {}
                }
            }
            if !state.syncing {
                if queued {
                    state.waiters.retain(|w| w.ticket != ticket);
                }
                state.syncing = true;
                drop(state);
                let leading = Leading(shared);
                let synced = shared.timed_sync(handle, false);
                drop(leading);
                return Some(synced);
            }
            if !queued {
                state.waiters.push(Waiter {
                    ticket,
                    handle: handle.clone(),
                    end,
                    thread: thread::current(),
                });
                queued = true;
            }
            let seen = shared.changes.load(Ordering::Acquire);
            drop(state);
            let until = *spin_until.get_or_insert_with(|| shared.spin_deadline());
            if !until.is_some_and(|until| shared.yield_until(handle, end, seen, until)) {
                // An `unpark` that came before this `park` makes it return
                // at once; a spurious return just goes round the loop again.
                thread::park();
            }
            state = lock(&shared.state);
        }
    }
}

impl Drop for GroupCommit {
    /// Stops the flusher thread. If it is still finishing a sync (made for
    /// a writer that a sync at rollover covered meanwhile), waits for that:
    /// the sync holds its segment open, with the file's lock, and a region
    /// that is closed must let go of every file before the call returns, or
    /// opening it again at once could find a segment locked.
    fn drop(&mut self) {
        let shared = &self.shared;
        let mut state = lock(&shared.state);
        state.closed = true;
        shared.work.notify_all();
        while state.flusher == Flusher::Busy {
            state = shared.work.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Shared {
    /// Ends a leader's sync: wakes the waiters it covered and hands the
    /// others, if any, to the flusher thread, or else to the oldest of
    /// them.
    fn hand_on(self: &Arc<Shared>) {
        let mut state = lock(&self.state);
        take_covered(&mut state);
        self.changed();
        if state.waiters.is_empty() || !self.threaded {
            end_sync(state);
            return;
        }
        assert_ne!(
            state.flusher,
            Flusher::Busy,
            "the flusher is busy only while it syncs for the group"
        );
        let previous = std::mem::replace(&mut state.flusher, Flusher::Busy);
        wake_all(state);
        if previous == Flusher::Idle {
            self.work.notify_one();
            return;
        }
        let shared = Arc::clone(self);
        let spawned = thread::Builder::new()
            .name(format!("segwal-flush-{}", self.stream_id))
            .spawn(move || shared.run_flusher());
        if spawned.is_err() {
            // No thread: the oldest waiter leads instead.
            let mut state = lock(&self.state);
            state.flusher = Flusher::Absent;
            take_covered(&mut state);
            self.changed();
            end_sync(state);
        }
    }

    /// The flusher thread: syncs while waiters are left, then waits for
    /// the next group, and exits after `idle` without one.
    fn run_flusher(self: Arc<Shared>) {
        let _exit = FlusherExit(&self);
        let mut state = lock(&self.state);
        loop {
            state = self.flush(state);
            state.flusher = Flusher::Idle;
            // A dropped group may be waiting for this sync to end.
            self.work.notify_all();
            wake_all(state);
            state = lock(&self.state);
            let deadline = Instant::now() + self.idle;
            while state.flusher == Flusher::Idle && !state.closed {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                state = self
                    .work
                    .wait_timeout(state, deadline - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            if state.flusher == Flusher::Idle {
                // Closed, or idle too long; the next group starts a thread.
                state.flusher = Flusher::Absent;
                return;
            }
        }
    }

    /// Syncs for the oldest uncovered waiter until none is left, then ends
    /// the group (`syncing` false). Covered waiters are left in `to_wake`.
    fn flush<'a>(&'a self, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        loop {
            take_covered(&mut state);
            let Some(target) = state.waiters.first() else {
                state.syncing = false;
                self.changed();
                return state;
            };
            let (ticket, handle) = (target.ticket, target.handle.clone());
            // One covered waiter is woken now and wakes the others as it
            // returns, so that the next sync starts after a single wake-up.
            let first = state.to_wake.pop();
            drop(state);
            if let Some(thread) = first {
                thread.unpark();
            }
            let synced = self.timed_sync(&handle, true);
            state = lock(&self.state);
            // The target may have left already, covered by a sync outside
            // the group (at rollover), which then wrote everything this
            // sync would have: a failure here would be the segment's next
            // operation's failure too, so nothing is lost by dropping it.
            if let Some(i) = state.waiters.iter().position(|w| w.ticket == ticket) {
                let waiter = state.waiters.remove(i);
                state.outcomes.push((ticket, synced));
                state.to_wake.push(waiter.thread);
            }
            self.changed();
        }
    }

    /// Syncs `handle` and folds the time it took into `sync_nanos`.
    fn timed_sync(&self, handle: &SegmentHandle, by_flusher: bool) -> Synced {
        let batches = self.take_batches();
        let start = Instant::now();
        let outcome = (self.sync)(handle);
        let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        // Leader and flusher may both update it; a lost update only
        // drops one sample.
        let mean = self.sync_nanos.load(Ordering::Relaxed);
        let mean = if mean == 0 {
            nanos
        } else {
            mean - mean / 8 + nanos / 8
        };
        self.sync_nanos.store(mean.max(1), Ordering::Relaxed);
        Synced {
            outcome,
            by_flusher,
            nanos,
            batches,
        }
    }

    /// The batches appended since the last sync started, which a sync
    /// starting now makes durable.
    fn take_batches(&self) -> u64 {
        let appended = self.appended.load(Ordering::Acquire);
        appended.saturating_sub(self.covered.fetch_max(appended, Ordering::AcqRel))
    }

    /// Tells yielding waiters to look at the state again. Called with the
    /// state locked, after the change.
    fn changed(&self) {
        self.changes.fetch_add(1, Ordering::Release);
    }

    /// Until when a waiter that has just parked its record in the group
    /// should yield rather than park: twice the mean sync (a record
    /// appended just after a sync started waits for the rest of it and the
    /// whole next one), or `None` if waiters do not yield here or syncs
    /// take too long for it to pay.
    fn spin_deadline(&self) -> Option<Instant> {
        if !self.spin {
            return None;
        }
        let mean = Duration::from_nanos(self.sync_nanos.load(Ordering::Relaxed));
        (!mean.is_zero() && mean <= SPIN_MAX_SYNC).then(|| Instant::now() + 2 * mean)
    }

    /// Yields the core until `handle` is durable up to `end`, or the state
    /// changed since it showed change count `seen` (true: look again), or
    /// `until` (false: park).
    fn yield_until(&self, handle: &SegmentHandle, end: u64, seen: u64, until: Instant) -> bool {
        loop {
            if handle.durable_len() >= end || self.changes.load(Ordering::Acquire) != seen {
                #[cfg(test)]
                self.spun.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            thread::yield_now();
        }
    }
}

/// Held by the leader while it syncs; hands the group on when dropped,
/// so that even a panicking sync does not leave the waiters parked.
struct Leading<'a>(&'a Arc<Shared>);

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        self.0.hand_on();
    }
}

/// Held by the flusher thread. If it panics (a bug in a sync), its
/// waiters are not left parked: the group ends, and every waiter is woken,
/// for one of them to lead.
struct FlusherExit<'a>(&'a Shared);

impl Drop for FlusherExit<'_> {
    fn drop(&mut self) {
        if !thread::panicking() {
            return;
        }
        let mut state = lock(&self.0.state);
        state.flusher = Flusher::Absent;
        state.syncing = false;
        self.0.changed();
        self.0.work.notify_all();
        let waiters: Vec<Thread> = state.waiters.iter().map(|w| w.thread.clone()).collect();
        state.to_wake.extend(waiters);
        wake_all(state);
    }
}

/// Ends a sync without a flusher to carry on: wakes the covered waiters
/// and, if any waiter is left, the oldest, to lead the next sync (unless a
/// writer that comes first leads it, and looks at every waiter when it
/// ends).
fn end_sync(mut state: MutexGuard<'_, State>) {
    state.syncing = false;
    if let Some(oldest) = state.waiters.first().map(|w| w.thread.clone()) {
        state.to_wake.insert(0, oldest);
    }
    wake_all(state);
}

/// Moves every waiter whose record is durable into `to_wake`.
fn take_covered(state: &mut State) {
    let State {
        waiters, to_wake, ..
    } = state;
    to_wake.extend(
        waiters
            .extract_if(.., |w| w.handle.durable_len() >= w.end)
            .map(|w| w.thread),
    );
}

/// Lets go of the lock and wakes everyone in `to_wake`.
fn wake_all(mut state: MutexGuard<'_, State>) {
    let threads = std::mem::take(&mut state.to_wake);
    drop(state);
    for thread in threads {
        thread.unpark();
    }
}

#[cfg(test)]
mod tests;
