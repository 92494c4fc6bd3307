//! Power loss in the META log: a workload of deletes from several threads
//! over many regions (so deletes share META appends, one write and one
//! `fdatasync` per group), flushes that empty segments (so the META log
//! records tables' largest numbers before the segments that proved them
//! are removed), tables deleted whole, and reopens (each replaces the META
//! log by a snapshot: `META.tmp`, sync, rename, directory sync) runs under
//! `segwal_segment::powerloss`'s recorder; then crash images are built at
//! every point where the META log or the data dir changed (torn appends,
//! lost renames of a snapshot, a leftover `META.tmp`, segment removals
//! undone) and at a spread of the others, and each is recovered and
//! checked.
//!
//! `SEGWAL_META_CRASH_IMAGES` sets roughly how many images to check
//! (default 300). Every point in a snapshot gets every fate, and every
//! other point after a change at least one, whatever the budget; a larger
//! one gives those more fates and reaches more of the other points.

mod crash;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Barrier, Mutex};

use crash::{
    Ack, Batch, Log, Rng, Run, check_image, config, data_dir, env_count, payload, write_logged,
};
use segwal_manager::{SegmentManager, SyncMode};
use segwal_segment::powerloss::{Fate, Recorder};

const REGIONS: u64 = 8;
const TABLES: u64 = 2;
/// Threads; each owns the (region, table) pairs `p` with
/// `p % DELETERS == thread`, so regions are shared between threads.
const DELETERS: u64 = 4;
const STREAMS: usize = 2;
/// Opens of the data dir, each with its own META snapshot.
const PHASES: u64 = 4;
const ROUNDS: u64 = 2;

/// One deleter thread's part of a phase: each round it writes a batch to
/// each of its tables, then, after all threads are ready (so that deletes
/// meet in META groups), deletes each of them up to some point, in the
/// last round all of it (through `u64::MAX`, which deletes up to the
/// table's last number).
fn deleter(
    wal: &SegmentManager,
    recorder: &Recorder,
    log: &Mutex<Log>,
    start: &Barrier,
    seed: u64,
    thread: u64,
) {
    let mut rng = Rng(seed | 1);
    let owned: Vec<(u64, u64)> = (0..REGIONS * TABLES)
        .filter(|pair| pair % DELETERS == thread)
        .map(|pair| (pair / TABLES, pair % TABLES))
        .collect();
    let mut last_acked: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for round in 0..ROUNDS {
        for &(region, table) in &owned {
            let count = 1 + rng.below(2) as usize;
            let pads: Vec<usize> = (0..count).map(|_| rng.below(600) as usize).collect();
            let last = write_logged(wal, recorder, log, (region, table), &pads);
            last_acked.insert((region, table), last);
        }
        start.wait();
        for &(region, table) in &owned {
            let last = last_acked[&(region, table)];
            let (asked, up_to) = if round + 1 == ROUNDS {
                (u64::MAX, last)
            } else {
                let up_to = last.saturating_sub(rng.below(3));
                (up_to, up_to)
            };
            let before = recorder.position();
            log.lock().unwrap().acks.push((
                before,
                Ack::Deleting {
                    region,
                    table,
                    up_to,
                },
            ));
            wal.mark_delete_entries_up_to(region, table, asked).unwrap();
            let after = recorder.position();
            log.lock().unwrap().acks.push((
                after,
                Ack::Delete {
                    region,
                    table,
                    up_to,
                },
            ));
        }
    }
}

/// Runs the workload under a recorder: `PHASES` opens of the data dir,
/// each with `DELETERS` threads writing and deleting. Returns the run and
/// how many segments the deletes removed.
fn record(dir: &Path, seed: u64) -> (Run, u64) {
    let (recorder, _guard) = Recorder::start(dir).unwrap();
    let log = Mutex::new(Log::default());
    let mut removed = 0;
    for phase in 0..PHASES {
        let wal = SegmentManager::open(config(dir, STREAMS)).unwrap();
        let start = Barrier::new(DELETERS as usize);
        std::thread::scope(|scope| {
            for thread in 0..DELETERS {
                let (wal, recorder, log, start) = (&wal, &*recorder, &log, &start);
                let seed = seed ^ (phase << 32) ^ (thread << 40);
                scope.spawn(move || deleter(wal, recorder, log, start, seed, thread));
            }
        });
        removed += wal.statistics().segments_deleted;
        wal.close().unwrap();
    }
    let mut log = log.into_inner().unwrap();
    // Threads append in their own order; positions order them.
    log.acks.sort_by_key(|(position, _)| *position);
    let run = Run {
        batches: log.batches,
        acks: log.acks,
        replay: recorder.replay(),
        sync_mode: SyncMode::Always,
        streams: STREAMS,
    };
    (run, removed)
}

/// How much a crash right after a call is worth checking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Point {
    /// The call wrote, synced or renamed a snapshot (`META.tmp`), or synced
    /// the data dir after the rename: every fate is checked.
    Snapshot,
    /// It appended to the META log, removed a file or synced the data dir.
    Change,
    /// Anything else (segments' own writes and syncs).
    Other,
}

/// What kind of point follows the last call of `recent`, the last two
/// calls as `Replay::recent` describes them.
fn point(recent: &str) -> Point {
    let mut calls = recent.lines().rev();
    let last = calls.next().unwrap_or("");
    let before = calls.next().unwrap_or("");
    if last.contains("META.tmp") || (last.contains(": sync dir") && before.contains("META.tmp")) {
        Point::Snapshot
    } else if last.contains("META") || last.contains(": remove ") || last.contains(": sync dir") {
        Point::Change
    } else {
        Point::Other
    }
}

/// Proves that a power loss at any point of a workload of deletes (torn or
/// lost META appends, shared by deletes of several threads; a snapshot's
/// `META.tmp` half written, or its rename lost; segment removals undone)
/// never makes recovery refuse the data dir, never brings back an
/// acknowledged delete, never lets a table's `sequence_num` go back after
/// the segments holding its entries are removed, and keeps every
/// acknowledged write of every region.
#[test]
fn no_crash_image_undoes_an_acknowledged_delete() {
    let budget = env_count("SEGWAL_META_CRASH_IMAGES", 300);
    let (root, dir) = data_dir();
    let (run, removed) = record(&dir, 0x3e7a_0000);
    assert!(removed > 0, "no delete emptied a segment");
    let mut replay = run.replay.clone();
    let positions = replay.len() + 1;
    let mut points = vec![Point::Other; positions];
    for (at, slot) in points.iter_mut().enumerate().skip(1) {
        replay.advance_to(at);
        *slot = point(&replay.recent(2));
    }
    let count = |kind: Point| points.iter().filter(|p| **p == kind).count();
    let (snapshots, changes) = (count(Point::Snapshot), count(Point::Change));
    // Snapshot points get every fate, the other changes as many as the
    // budget allows, and what is left is spread over the other points.
    let left = budget.saturating_sub(4 * snapshots);
    let per_change = (left / changes.max(1)).clamp(1, 4);
    let stride = (positions - snapshots - changes)
        .div_ceil(left.saturating_sub(per_change * changes).max(1))
        .max(1);
    let mut replay = run.replay.clone();
    let (mut images, mut others) = (0, 0);
    for (at, &point) in points.iter().enumerate() {
        let fates = match point {
            Point::Snapshot => 4,
            Point::Change => per_change,
            Point::Other => {
                others += 1;
                usize::from(others % stride == 0)
            }
        };
        if fates == 0 {
            continue;
        }
        replay.advance_to(at);
        for i in 0..fates {
            let fate = match (at + i) % 4 {
                0 => Fate::KeepAll,
                1 => Fate::DropAll,
                k => Fate::Random((at * 10 + i + k) as u64),
            };
            let label = format!(
                "power lost at position {at} of {positions}, {fate:?}, after these calls:\n{}\n",
                replay.recent(12)
            );
            let image = root.path().join(format!("image-{at}-{i}"));
            check_image(&replay, fate, &image, &run, at, &label);
            images += 1;
        }
    }
    eprintln!(
        "{images} crash images over {positions} points ({snapshots} in a META snapshot, {changes} \
         after another change to the META log or the data dir); {removed} segments removed; no \
         acknowledged delete undone"
    );
    assert!(
        snapshots >= 4 * PHASES as usize,
        "a snapshot was not seen: {snapshots} points"
    );
}

/// Proves that a power loss anywhere in a compaction of the META log (the
/// log, grown past its limit by many small delete records, replaced by a
/// snapshot of what it holds while deletes go on) never makes recovery
/// refuse the data dir and never brings back an acknowledged delete.
#[test]
fn a_compaction_of_the_meta_log_loses_no_delete() {
    // Threads, each deleting its own table one entry at a time; they meet
    // in META groups, so the log grows by records of many entries.
    const THREADS: u64 = 64;
    const DELETES: u64 = 640;
    let (root, dir) = data_dir();
    let (recorder, _guard) = Recorder::start(&dir).unwrap();
    let config = segwal_manager::ManagerConfig {
        segment_size_bytes: 1 << 20,
        ..config(&dir, 1)
    };
    let wal = SegmentManager::open(config).unwrap();
    let log = Mutex::new(Log::default());
    std::thread::scope(|scope| {
        for region in 0..THREADS {
            let (wal, recorder, log) = (&wal, &*recorder, &log);
            scope.spawn(move || {
                let batch = {
                    let mut log = log.lock().unwrap();
                    let batch = log.batches.len();
                    let entries = (0..DELETES as usize)
                        .map(|i| payload(batch, i, DELETES as usize, 0))
                        .collect();
                    log.batches.push(Batch {
                        region,
                        table: 0,
                        entries,
                    });
                    batch
                };
                let entries = log.lock().unwrap().batches[batch].entries.clone();
                let last = wal.write(region, 0, &entries).unwrap();
                let position = recorder.position();
                log.lock()
                    .unwrap()
                    .acks
                    .push((position, Ack::Write { batch, last }));
                // A delete may be in force from the moment the one before
                // it returned: this thread does nothing in between. (Each
                // position is taken once: the recorder holds its lock
                // across every call it performs, syncs included.)
                let mut returned = position;
                let mut acks = Vec::with_capacity(2 * DELETES as usize);
                for up_to in last + 1 - DELETES..=last {
                    let table = 0;
                    let asked = Ack::Deleting {
                        region,
                        table,
                        up_to,
                    };
                    acks.push((returned, asked));
                    wal.mark_delete_entries_up_to(region, table, up_to).unwrap();
                    returned = recorder.position();
                    let done = Ack::Delete {
                        region,
                        table,
                        up_to,
                    };
                    acks.push((returned, done));
                }
                log.lock().unwrap().acks.extend(acks);
            });
        }
    });
    wal.close().unwrap();
    let mut log = log.into_inner().unwrap();
    log.acks.sort_by_key(|(position, _)| *position);
    let run = Run {
        batches: log.batches,
        acks: log.acks,
        replay: recorder.replay(),
        sync_mode: SyncMode::Always,
        streams: 1,
    };
    // The points right after a snapshot's rename: the first at open, the
    // next the compaction.
    let mut replay = run.replay.clone();
    let renamed: Vec<usize> = (1..=replay.len())
        .filter(|&at| {
            replay.advance_to(at);
            replay.recent(1).contains("rename META.tmp -> META")
        })
        .collect();
    assert!(renamed.len() >= 2, "the META log was never compacted");
    // From the compaction's first call (creating `META.tmp`, three calls
    // before its rename) to the first append after it.
    let mut replay = run.replay.clone();
    let mut images = 0;
    for at in renamed[1] - 3..=renamed[1] + 2 {
        replay.advance_to(at);
        for (i, fate) in [Fate::KeepAll, Fate::DropAll, Fate::Random(at as u64)]
            .into_iter()
            .enumerate()
        {
            let label = format!(
                "power lost at position {at} in a compaction, {fate:?}, after these calls:\n{}\n",
                replay.recent(12)
            );
            let image = root.path().join(format!("image-{at}-{i}"));
            check_image(&replay, fate, &image, &run, at, &label);
            images += 1;
        }
    }
    eprintln!("{images} crash images around a compaction of the META log");
}
