//! Power loss: a workload over many regions (one writer, or several
//! sharing regions) runs against a real data dir while
//! `segwal_segment::powerloss` records every file-system call; then, at
//! every point of that log, crash images are built (unsynced writes kept,
//! dropped or torn sector by sector; unsynced directory changes partly
//! lost) and each image is recovered and checked.
//!
//! `SEGWAL_CRASH_IMAGES` sets roughly how many images to check (default
//! 600; `cargo xtask crash --images N` runs a longer campaign, across
//! several workloads).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use segwal_manager::{ManagerConfig, SegmentManager, SyncMode};
use segwal_segment::powerloss::{Fate, ImageStats, Recorder};

mod crash;

use crash::{Ack, Log, Rng, Run, check_image, config, data_dir, env_count, write_logged};

/// A workload's shape.
#[derive(Debug, Clone, Copy)]
struct Workload {
    sync_mode: SyncMode,
    /// Writer threads. Each owns some of the (region, table) pairs, spread
    /// so that threads share regions (and so each region's numbers).
    threads: u64,
    regions: u64,
    tables: u64,
    streams: usize,
}

/// The workloads a campaign cycles through: one writer (which also closes
/// regions) with each sync mode, and four writers sharing regions (group
/// commit), on one stream and on three.
const WORKLOADS: [Workload; 4] = [
    Workload {
        sync_mode: SyncMode::Always,
        threads: 1,
        regions: 8,
        tables: 3,
        streams: 1,
    },
    Workload {
        sync_mode: SyncMode::Never,
        threads: 1,
        regions: 8,
        tables: 3,
        streams: 2,
    },
    Workload {
        sync_mode: SyncMode::Always,
        threads: 4,
        regions: 12,
        tables: 2,
        streams: 1,
    },
    Workload {
        sync_mode: SyncMode::Always,
        threads: 4,
        regions: 16,
        tables: 2,
        streams: 3,
    },
];

/// Runs `workload` for `steps` operations chosen by `seed` under a
/// recorder: writes of 1-3 entries (some large enough to roll segments
/// over) to many regions, deletes of one table and of all of a writer's
/// tables at once (which let segments holding many regions' records die),
/// regions closed and reopened (single-threaded only), and the whole
/// manager closed and reopened half way. Returns the run and how many
/// segments its deletes removed.
fn record(dir: &Path, seed: u64, steps: u64, workload: Workload) -> (Run, u64) {
    let (recorder, _guard) = Recorder::start(dir).unwrap();
    let log = Mutex::new(Log::default());
    let config = ManagerConfig {
        sync_mode: workload.sync_mode,
        ..config(dir, workload.streams)
    };
    let per_thread = steps / 2 / workload.threads;
    let mut removed = 0;
    for phase in 0..2 {
        let wal = SegmentManager::open(config.clone()).unwrap();
        std::thread::scope(|scope| {
            for thread in 0..workload.threads {
                let (wal, recorder, log) = (&wal, &*recorder, &log);
                let seed = seed ^ (phase << 32) ^ (thread << 40);
                scope.spawn(move || {
                    writer(wal, recorder, log, seed, per_thread, thread, workload);
                });
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
        sync_mode: workload.sync_mode,
        streams: workload.streams,
    };
    (run, removed)
}

/// Deletes `table`'s entries up to `up_to`, noting the log positions from
/// which the delete may be, and is, in force.
fn delete(
    wal: &SegmentManager,
    recorder: &Recorder,
    log: &Mutex<Log>,
    (region, table): (u64, u64),
    up_to: u64,
) {
    let before = recorder.position();
    wal.mark_delete_entries_up_to(region, table, up_to).unwrap();
    let after = recorder.position();
    let mut log = log.lock().unwrap();
    log.acks.push((
        before,
        Ack::Deleting {
            region,
            table,
            up_to,
        },
    ));
    log.acks.push((
        after,
        Ack::Delete {
            region,
            table,
            up_to,
        },
    ));
}

/// One writer thread of a workload.
fn writer(
    wal: &SegmentManager,
    recorder: &Recorder,
    log: &Mutex<Log>,
    seed: u64,
    steps: u64,
    thread: u64,
    workload: Workload,
) {
    let mut rng = Rng(seed | 1);
    let owned: Vec<(u64, u64)> = (0..workload.regions * workload.tables)
        .filter(|pair| pair % workload.threads == thread)
        .map(|pair| (pair / workload.tables, pair % workload.tables))
        .collect();
    let mut last_acked: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for _ in 0..steps {
        let (region, table) = owned[rng.below(owned.len() as u64) as usize];
        match rng.below(20) {
            0 => {
                let last = last_acked.get(&(region, table)).copied().unwrap_or(0);
                let up_to = last.saturating_sub(rng.below(4));
                delete(wal, recorder, log, (region, table), up_to);
            }
            // What an engine does after a flush: every table deleted up to
            // what it wrote, so whole segments die.
            1 | 2 => {
                for (&pair, &last) in &last_acked {
                    delete(wal, recorder, log, pair, last);
                }
            }
            3 if workload.threads == 1 => wal.close_region(region).unwrap(),
            _ => {
                let count = 1 + rng.below(3) as usize;
                let pads: Vec<usize> = (0..count).map(|_| rng.below(700) as usize).collect();
                let last = write_logged(wal, recorder, log, (region, table), &pads);
                last_acked.insert((region, table), last);
            }
        }
    }
}

/// Proves that after a power loss at any point of a workload that writes
/// to 8-16 regions of one shared log (rollovers, prepared segments, one or
/// several streams, deletes and the removal of segments they empty, a
/// region and the manager reopened), recovery succeeds in the default
/// mode and, in every region, every entry acknowledged under
/// `SyncMode::Always` is there and intact, nothing appears that was never
/// written, no acknowledged delete is undone, batches are whole or absent,
/// and sequence numbers keep increasing.
#[test]
fn every_crash_image_keeps_every_acknowledged_write() {
    let budget = env_count("SEGWAL_CRASH_IMAGES", 600);
    let runs = (budget / 1500).max(WORKLOADS.len());
    let per_run = budget / runs;
    let mut total = ImageStats::default();
    let mut images = 0;
    let mut segments_removed = 0;
    for run_index in 0..runs {
        let workload = WORKLOADS[run_index % WORKLOADS.len()];
        let (root, dir) = data_dir();
        let (run, removed) = record(&dir, 0x5eed_0000 + run_index as u64, 120, workload);
        segments_removed += removed;
        let mut replay = run.replay.clone();
        let positions = replay.len() + 1;
        // Every position with at least one random image when the budget
        // allows; else an even spread.
        let stride = (positions * 3).div_ceil(per_run.max(1)).max(1);
        let random = (per_run / positions).saturating_sub(2).max(1);
        for at in (run_index % stride..positions).step_by(stride) {
            replay.advance_to(at);
            let mut fates = vec![Fate::KeepAll, Fate::DropAll];
            fates.extend(
                (0..random).map(|i| Fate::Random((run_index * 1_000_000 + at * 100 + i) as u64)),
            );
            for fate in fates {
                let image = root.path().join(format!("image-{at}"));
                let label = format!(
                    "run {run_index} ({workload:?}), power lost at position {at} of {positions}, \
                     {fate:?}, after these calls:\n{}\n",
                    replay.recent(12)
                );
                let stats = check_image(&replay, fate, &image, &run, at, &label);
                total.writes_kept += stats.writes_kept;
                total.writes_dropped += stats.writes_dropped;
                total.writes_torn += stats.writes_torn;
                total.dir_changes_lost += stats.dir_changes_lost;
                images += 1;
            }
        }
    }
    eprintln!(
        "{images} crash images over {runs} workload runs ({segments_removed} segments removed \
         by deletes), none lost an acknowledged write; unsynced writes kept {}, dropped {}, \
         torn {}; directory changes lost {}",
        total.writes_kept, total.writes_dropped, total.writes_torn, total.dir_changes_lost
    );
    assert!(segments_removed > 0, "no delete ever emptied a segment");
}

/// Proves that after a power loss at any point around an early rollover
/// (the writes leaving the reserved first segment for a zero-filled spare
/// once it is ready, the first segment giving back the blocks past its
/// records) and around a close that gives back the active segment's,
/// recovery keeps every acknowledged write and brings back nothing that
/// was never written: a hole given back reads as zeros, as the reserved
/// blocks did, whether it reached the disk or not.
#[test]
fn a_power_loss_around_an_early_rollover_keeps_every_acknowledged_write() {
    let (root, dir) = data_dir();
    if segwal_segment::disk::is_memory_backed(&dir) {
        // In memory no segment is zero-filled, so none is left early.
        eprintln!("the temporary dir is in memory: no early rollover to try here");
        return;
    }
    let (recorder, guard) = Recorder::start(&dir).unwrap();
    let mut recording = crash::Recording::new(&recorder);
    let wal = SegmentManager::open(ManagerConfig {
        segment_size_bytes: 4 << 20,
        ..config(&dir, 1)
    })
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut rng = Rng(0xea71);
    let mut extra = 10;
    while extra > 0 {
        assert!(std::time::Instant::now() < deadline, "{}", wal.statistics());
        let pads: Vec<usize> = (0..1 + rng.below(3))
            .map(|_| rng.below(3000) as usize)
            .collect();
        recording
            .write(&wal, rng.below(4), rng.below(3), &pads)
            .unwrap();
        if wal.statistics().early_rollovers > 0 {
            extra -= 1;
        } else {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    wal.close().unwrap();
    drop(guard);
    let run = recording.run(SyncMode::Always, 1);
    // Every position within a few calls of a hole punched or a spare put
    // in place, and an even sample of the rest.
    let mut replay = run.replay.clone();
    let positions = replay.len() + 1;
    let mut near = std::collections::BTreeSet::new();
    for at in 1..positions {
        replay.advance_to(at);
        let call = replay.recent(1);
        if call.starts_with("deallocate") || call.starts_with("rename") {
            near.extend(at.saturating_sub(3)..(at + 4).min(positions));
        }
    }
    if !replay.recent(positions).contains("deallocate") {
        eprintln!("the temporary dir's file system cannot punch holes: not tried here");
        return;
    }
    let stride = positions.div_ceil(40).max(1);
    near.extend((0..positions).step_by(stride));
    let mut replay = run.replay.clone();
    let mut images = 0;
    for at in near {
        replay.advance_to(at);
        for fate in [Fate::KeepAll, Fate::DropAll, Fate::Random(at as u64)] {
            let image = root.path().join(format!("image-{at}"));
            let label = format!(
                "power lost at position {at} of {positions}, {fate:?}, after these calls:\n{}\n",
                replay.recent(12)
            );
            check_image(&replay, fate, &image, &run, at, &label);
            images += 1;
        }
    }
    eprintln!("{images} crash images around an early rollover, none lost an acknowledged write");
}
