//! Unit tests of group commit: leaders, the flusher, waiters that yield.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use segwal_format::SegmentIdentity;
use segwal_segment::disk::{self, Hook, Op};
use segwal_segment::{BatchRef, Preallocation, Segment};

use super::*;

/// Stands in for `SegmentHandle::sync`: counts the syncs, notes which
/// thread made each, can hold a sync before or after it writes (so that
/// writers appending meanwhile are covered by it, or not) and can panic.
#[derive(Default)]
struct Probe {
    started: AtomicUsize,
    syncs: AtomicUsize,
    threads: Mutex<Vec<String>>,
    hold: Mutex<Option<Hold>>,
    released: Condvar,
    /// Panic in the next sync made on a thread whose name starts so.
    panic_on: Mutex<Option<String>>,
    /// While set, a sync made on a thread whose name starts so waits
    /// after writing.
    hold_on: Mutex<Option<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    BeforeWriting,
    AfterWriting,
}

impl Probe {
    fn sync(&self, handle: &SegmentHandle) -> segwal_segment::Result<u64> {
        self.started.fetch_add(1, Ordering::SeqCst);
        self.wait_while(Hold::BeforeWriting);
        let name = thread::current().name().unwrap_or("").to_owned();
        let panics = lock(&self.panic_on)
            .take_if(|prefix| name.starts_with(prefix.as_str()))
            .is_some();
        if panics {
            panic!("a sync on thread {name:?} blew up");
        }
        let outcome = handle.sync();
        self.syncs.fetch_add(1, Ordering::SeqCst);
        lock(&self.threads).push(name.clone());
        self.wait_while(Hold::AfterWriting);
        let mut held = lock(&self.hold_on);
        while held.as_deref().is_some_and(|p| name.starts_with(p)) {
            held = self.released.wait(held).unwrap();
        }
        outcome
    }

    fn wait_while(&self, hold: Hold) {
        let mut held = lock(&self.hold);
        while *held == Some(hold) {
            held = self.released.wait(held).unwrap();
        }
    }

    fn hold(&self, hold: Hold) {
        *lock(&self.hold) = Some(hold);
    }

    fn release(&self) {
        *lock(&self.hold) = None;
        self.released.notify_all();
    }

    fn hold_on(&self, prefix: Option<&str>) {
        *lock(&self.hold_on) = prefix.map(str::to_owned);
        self.released.notify_all();
    }
}

/// A writer thread, returning the outcome of the sync made for it.
type Writer = thread::JoinHandle<Option<segwal_segment::Result<u64>>>;

struct Fixture {
    dir: tempfile::TempDir,
    segment: Mutex<Segment>,
    group: GroupCommit,
    probe: Arc<Probe>,
}

impl Fixture {
    fn new(threaded: bool) -> Arc<Fixture> {
        Fixture::with_idle(threaded, Duration::from_millis(50))
    }

    /// With a flusher thread, and waiters that yield before they park.
    fn spinning() -> Arc<Fixture> {
        Fixture::build(true, true, Duration::from_millis(50))
    }

    fn with_idle(threaded: bool, idle: Duration) -> Arc<Fixture> {
        Fixture::build(threaded, false, idle)
    }

    fn build(threaded: bool, spin: bool, idle: Duration) -> Arc<Fixture> {
        let dir = tempfile::tempdir().unwrap();
        let identity = SegmentIdentity {
            stream_id: 1,
            segment_id: 1,
        };
        let path = dir.path().join("segment");
        let segment = Segment::create(&path, identity, 1 << 20, Preallocation::Zeroed).unwrap();
        let probe = Arc::new(Probe::default());
        let sync = {
            let probe = Arc::clone(&probe);
            Box::new(move |handle: &SegmentHandle| probe.sync(handle))
        };
        Arc::new(Fixture {
            dir,
            segment: Mutex::new(segment),
            group: GroupCommit::with_sync(1, threaded, spin, idle, sync),
            probe,
        })
    }

    /// Appends one record; returns the handle and the record's end.
    fn append(&self) -> (SegmentHandle, u64) {
        let mut segment = self.segment.lock().unwrap();
        let range = segment
            .append(&BatchRef {
                region_id: 1,
                table_id: 1,
                first_sequence: 1,
                entries: &[b"entry"],
            })
            .unwrap();
        (segment.handle(), range.end)
    }

    /// Appends a record and waits for it; returns the outcome of the
    /// sync made for it, if one was.
    fn write(&self) -> Option<segwal_segment::Result<u64>> {
        let (handle, end) = self.append();
        let outcome = self.group.wait(&handle, end).map(|synced| synced.outcome);
        if !matches!(outcome, Some(Err(_))) {
            assert!(handle.durable_len() >= end, "returned before durable");
        }
        outcome
    }

    /// Starts a writer thread.
    fn spawn_writer(self: &Arc<Fixture>) -> Writer {
        let fixture = Arc::clone(self);
        thread::spawn(move || fixture.write())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.group.shared.state)
    }

    fn wait_until(&self, done: impl Fn(&State) -> bool) {
        while !done(&self.state()) {
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// Starts a leader whose sync is held at `hold`, then `behind`
    /// writers, one at a time, that append meanwhile and park: covered
    /// by that sync if it is held before writing, not if after. The
    /// sync stays held.
    fn held_leader(self: &Arc<Fixture>, hold: Hold, behind: usize) -> (Writer, Vec<Writer>) {
        self.probe.hold(hold);
        let count = match hold {
            Hold::BeforeWriting => &self.probe.started,
            Hold::AfterWriting => &self.probe.syncs,
        };
        let reached = count.load(Ordering::SeqCst) + 1;
        let leader = self.spawn_writer();
        while count.load(Ordering::SeqCst) < reached {
            thread::sleep(Duration::from_millis(1));
        }
        let behind = (1..=behind)
            .map(|parked| {
                let writer = self.spawn_writer();
                self.wait_until(|s| s.waiters.len() == parked);
                writer
            })
            .collect();
        (leader, behind)
    }

    fn assert_at_rest(&self) {
        let state = self.state();
        assert!(!state.syncing);
        assert!(state.waiters.is_empty());
        assert!(state.outcomes.is_empty());
        assert!(state.to_wake.is_empty());
    }
}

#[test]
fn a_waiter_yields_through_a_short_sync() {
    // Proves a waiter behind a short sync can return without parking:
    // it yields until its record is durable, and is acknowledged only
    // then. Scheduling decides whether a given try spins through, so
    // the test tries until one does.
    for _ in 0..200 {
        let fixture = Fixture::spinning();
        fixture
            .group
            .shared
            .sync_nanos
            .store(SPIN_MAX_SYNC.as_nanos() as u64, Ordering::Relaxed);
        let (leader, _) = fixture.held_leader(Hold::BeforeWriting, 0);
        let behind = fixture.spawn_writer();
        // Released the moment the waiter is in the group, well within
        // its time to yield (twice the mean sync).
        while fixture.state().waiters.is_empty() {
            thread::yield_now();
        }
        fixture.probe.release();
        assert!(matches!(leader.join().unwrap(), Some(Ok(_))));
        assert!(behind.join().unwrap().is_none(), "a covered waiter synced");
        fixture.assert_at_rest();
        if fixture.group.shared.spun.load(Ordering::Relaxed) > 0 {
            return;
        }
    }
    panic!("no waiter ever yielded through a sync");
}

#[test]
fn waiters_yield_only_while_syncs_are_short() {
    // Proves the yielding is bounded: not before a sync has been timed,
    // not when syncs average more than `SPIN_MAX_SYNC`, not when turned
    // off, and otherwise for twice the mean sync.
    let fixture = Fixture::spinning();
    let shared = &fixture.group.shared;
    assert!(shared.spin_deadline().is_none(), "no sync timed yet");
    let slow = 2 * SPIN_MAX_SYNC.as_nanos() as u64;
    shared.sync_nanos.store(slow, Ordering::Relaxed);
    assert!(
        shared.spin_deadline().is_none(),
        "syncs too slow to yield for"
    );
    shared.sync_nanos.store(100_000, Ordering::Relaxed);
    let before = Instant::now();
    let until = shared.spin_deadline().expect("short syncs");
    assert!(until >= before + Duration::from_micros(200));
    assert!(until <= Instant::now() + Duration::from_micros(200));
    let off = Fixture::new(true);
    off.group
        .shared
        .sync_nanos
        .store(100_000, Ordering::Relaxed);
    assert!(off.group.shared.spin_deadline().is_none(), "turned off");
    // A timed sync folds into the mean: the first sets it.
    shared.sync_nanos.store(0, Ordering::Relaxed);
    let (handle, _) = fixture.append();
    shared.timed_sync(&handle, false).outcome.unwrap();
    assert!(shared.sync_nanos.load(Ordering::Relaxed) > 0);
}

fn both_ways(test: impl Fn(bool)) {
    test(true);
    test(false);
}

#[test]
fn waiters_appended_before_a_sync_are_covered_by_it() {
    // Proves one sync acknowledges every record appended before it
    // started: writers that park behind a leader return without a sync
    // of their own, with a flusher thread or without.
    both_ways(|threaded| {
        let fixture = Fixture::new(threaded);
        let (leader, waiters) = fixture.held_leader(Hold::BeforeWriting, 4);
        fixture.probe.release();
        assert!(matches!(leader.join().unwrap(), Some(Ok(_))));
        for waiter in waiters {
            assert!(waiter.join().unwrap().is_none(), "a covered waiter synced");
        }
        assert_eq!(fixture.probe.syncs.load(Ordering::SeqCst), 1);
        fixture.assert_at_rest();
    });
}

#[test]
fn waiters_appended_during_a_sync_get_the_next_one() {
    // Proves writers that append while a sync runs are not left
    // waiting: one more sync covers them all, made by the flusher
    // thread if there is one, else by the oldest of them.
    both_ways(|threaded| {
        let fixture = Fixture::new(threaded);
        let (leader, late) = fixture.held_leader(Hold::AfterWriting, 3);
        fixture.probe.release();
        assert!(matches!(leader.join().unwrap(), Some(Ok(_))));
        let synced_for: usize = late
            .into_iter()
            .map(|w| usize::from(w.join().unwrap().is_some()))
            .sum();
        assert_eq!(synced_for, 1, "one sync covered the three late writers");
        assert_eq!(fixture.probe.syncs.load(Ordering::SeqCst), 2);
        let second = lock(&fixture.probe.threads)[1].clone();
        assert_eq!(second.starts_with("segwal-flush-"), threaded, "{second}");
        fixture.assert_at_rest();
    });
}

#[test]
fn the_flusher_exits_when_idle_and_starts_again() {
    // Proves the flusher thread costs nothing once its region is idle,
    // and that a group after that still gets its next sync.
    let fixture = Fixture::new(true);
    for round in 1..=2 {
        let (leader, late) = fixture.held_leader(Hold::AfterWriting, 1);
        fixture.probe.release();
        assert!(matches!(leader.join().unwrap(), Some(Ok(_))));
        for writer in late {
            assert!(matches!(writer.join().unwrap(), Some(Ok(_))));
        }
        assert!(lock(&fixture.probe.threads)[2 * round - 1].starts_with("segwal-flush-"));
        fixture.wait_until(|s| s.flusher == Flusher::Absent);
    }
    fixture.assert_at_rest();
}

#[test]
fn dropping_the_group_stops_its_idle_flusher() {
    // Proves a closed region's flusher thread does not linger until its
    // idle timeout: dropping the group commit wakes it to exit.
    let fixture = Fixture::with_idle(true, Duration::from_secs(600));
    let (leader, late) = fixture.held_leader(Hold::AfterWriting, 1);
    fixture.probe.release();
    assert!(matches!(leader.join().unwrap(), Some(Ok(_))));
    for writer in late {
        assert!(matches!(writer.join().unwrap(), Some(Ok(_))));
    }
    fixture.wait_until(|s| s.flusher == Flusher::Idle);
    let shared = Arc::clone(&fixture.group.shared);
    drop(Arc::into_inner(fixture).expect("no writer holds the fixture"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while lock(&shared.state).flusher != Flusher::Absent {
        assert!(Instant::now() < deadline, "the flusher outlived its group");
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn dropping_the_group_waits_for_the_flusher_s_sync_in_flight() {
    // Proves a closed region lets go of its files: a group dropped
    // while the flusher is still in a sync (made for a writer that left,
    // covered) returns only once that sync has ended.
    let fixture = Fixture::new(true);
    let (leader, late) = fixture.held_leader(Hold::AfterWriting, 1);
    fixture.probe.hold_on(Some("segwal-flush-"));
    fixture.probe.release();
    assert!(matches!(leader.join().unwrap(), Some(Ok(_))));
    // The flusher's sync for the late writer has written and is held;
    // the writer, woken, finds its record durable and leaves.
    while fixture.probe.syncs.load(Ordering::SeqCst) < 2 {
        thread::sleep(Duration::from_millis(1));
    }
    let parked = fixture.state().waiters[0].thread.clone();
    parked.unpark();
    for writer in late {
        assert!(writer.join().unwrap().is_none(), "covered, not synced for");
    }
    let shared = Arc::clone(&fixture.group.shared);
    let fixture = Arc::into_inner(fixture).expect("no writer holds the fixture");
    let probe = Arc::clone(&fixture.probe);
    let dropping = thread::spawn(move || drop(fixture));
    thread::sleep(Duration::from_millis(50));
    assert!(
        !dropping.is_finished(),
        "the drop did not wait for the sync"
    );
    assert_eq!(lock(&shared.state).flusher, Flusher::Busy);
    probe.hold_on(None);
    dropping.join().unwrap();
    assert_ne!(lock(&shared.state).flusher, Flusher::Busy);
}

/// Fails every `fdatasync` under its directory while armed.
struct FailSyncs(AtomicBool);

impl Hook for FailSyncs {
    fn run(&self, op: &Op<'_>, perform: &mut dyn FnMut() -> io::Result<()>) -> io::Result<()> {
        if matches!(op, Op::Sync { .. }) && self.0.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        perform()
    }
}

#[test]
fn a_failed_flusher_sync_reaches_every_writer_it_left_waiting() {
    // Proves a failed sync made by the flusher is reported to the
    // writer it was made for, and the writers after it are refused by
    // the poisoned segment rather than acknowledged.
    let fixture = Fixture::new(true);
    let hook = Arc::new(FailSyncs(AtomicBool::new(false)));
    let _guard = disk::install(fixture.dir.path(), Arc::clone(&hook) as Arc<dyn Hook>);
    let (leader, late) = fixture.held_leader(Hold::AfterWriting, 2);
    let [first, second] = <[Writer; 2]>::try_from(late).unwrap();
    hook.0.store(true, Ordering::SeqCst);
    fixture.probe.release();
    assert!(matches!(leader.join().unwrap(), Some(Ok(_))));
    let first = first.join().unwrap();
    assert!(
        matches!(first, Some(Err(segwal_segment::Error::Sync { .. }))),
        "{first:?}"
    );
    let second = second.join().unwrap();
    assert!(
        matches!(
            second,
            Some(Err(segwal_segment::Error::Poisoned {
                sync_failed: true,
                ..
            }))
        ),
        "{second:?}"
    );
    fixture.assert_at_rest();
}

#[test]
fn a_leader_that_panics_hands_the_group_on() {
    // Proves a panic inside a leader's sync does not strand the writers
    // parked behind it: the group passes on as the leader unwinds.
    both_ways(|threaded| {
        let fixture = Fixture::new(threaded);
        // The leader panics once it is let go, before it writes.
        let (leader, behind) = fixture.held_leader(Hold::BeforeWriting, 1);
        *lock(&fixture.probe.panic_on) = Some(String::new());
        fixture.probe.release();
        assert!(leader.join().is_err());
        for writer in behind {
            assert!(matches!(writer.join().unwrap(), Some(Ok(_))));
        }
        fixture.assert_at_rest();
    });
}

#[test]
fn a_flusher_that_panics_leaves_its_waiters_to_lead() {
    // Proves a panic on the flusher thread does not strand the writers
    // it was syncing for: they are woken and one of them syncs.
    let fixture = Fixture::new(true);
    let (leader, late) = fixture.held_leader(Hold::AfterWriting, 1);
    *lock(&fixture.probe.panic_on) = Some("segwal-flush-".to_owned());
    fixture.probe.release();
    assert!(matches!(leader.join().unwrap(), Some(Ok(_))));
    for writer in late {
        assert!(matches!(writer.join().unwrap(), Some(Ok(_))));
    }
    assert_eq!(fixture.probe.syncs.load(Ordering::SeqCst), 2);
    assert!(!lock(&fixture.probe.threads)[1].starts_with("segwal-flush-"));
    fixture.wait_until(|s| s.flusher == Flusher::Absent);
    fixture.assert_at_rest();
}
