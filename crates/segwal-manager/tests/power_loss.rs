//! Power loss: a workload runs against a real data dir while
//! `segwal_segment::powerloss` records every file-system call; then, at
//! every point of that log, crash images are built (unsynced writes kept,
//! dropped or torn sector by sector; unsynced directory changes partly
//! lost) and each image is recovered and checked.
//!
//! `SEGWAL_CRASH_IMAGES` sets roughly how many images to check (default
//! 600; `cargo xtask crash --images N` runs a longer campaign, across
//! several workloads).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;

use segwal_manager::{ManagerConfig, SegmentManager, SyncMode};
use segwal_segment::powerloss::{Fate, ImageStats, Recorder, Replay};

const REGIONS: u64 = 2;
const TABLES: u64 = 3;

fn config(dir: &Path) -> ManagerConfig {
    ManagerConfig {
        segment_size_bytes: 8 << 10,
        sync_mode: SyncMode::Always,
        ..ManagerConfig::new(dir)
    }
}

/// A batch the workload wrote (acknowledged or not).
#[derive(Debug, Clone)]
struct Batch {
    region: u64,
    table: u64,
    entries: Vec<Vec<u8>>,
}

/// Something the workload was told had happened, and the log position by
/// which it had.
#[derive(Debug, Clone, Copy)]
enum Ack {
    /// Batch `batch` was durable with these sequence numbers.
    Write { batch: usize, last: u64 },
    /// A delete of the table's entries up to `up_to` was asked for: from
    /// here on it may be in force.
    Deleting { region: u64, table: u64, up_to: u64 },
    /// That delete was acknowledged: from here on it is in force.
    Delete { region: u64, table: u64, up_to: u64 },
}

/// A workload's record: every batch attempted, every acknowledgement with
/// its log position, and the call log.
struct Run {
    batches: Vec<Batch>,
    acks: Vec<(usize, Ack)>,
    replay: Replay,
    workload: Workload,
}

/// The payload of entry `index` of `count` of batch `batch`: names its
/// batch, so anything read back can be traced to what was written.
fn payload(batch: usize, index: usize, count: usize, pad: usize) -> Vec<u8> {
    let mut p = format!("b{batch}e{index}of{count}-").into_bytes();
    p.resize(p.len() + pad, b'a' + (batch % 26) as u8);
    p
}

/// The batch and entry index a payload names.
fn parse(payload: &[u8]) -> (usize, usize) {
    let text = std::str::from_utf8(payload).expect("payloads are ASCII");
    let head = text.split('-').next().unwrap();
    let (batch, rest) = head[1..].split_once('e').unwrap();
    let (index, _) = rest.split_once("of").unwrap();
    (batch.parse().unwrap(), index.parse().unwrap())
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A workload's shape.
#[derive(Debug, Clone, Copy)]
struct Workload {
    sync_mode: SyncMode,
    /// Writer threads; with more than one, each owns a table (and group
    /// commit shares syncs between them).
    threads: u64,
}

/// The workloads a campaign cycles through.
const WORKLOADS: [Workload; 3] = [
    Workload {
        sync_mode: SyncMode::Always,
        threads: 1,
    },
    Workload {
        sync_mode: SyncMode::Never,
        threads: 1,
    },
    Workload {
        sync_mode: SyncMode::Always,
        threads: 3,
    },
];

/// What the writers have done so far.
#[derive(Default)]
struct Log {
    batches: Vec<Batch>,
    acks: Vec<(usize, Ack)>,
}

/// Runs `workload` for `steps` operations chosen by `seed` under a
/// recorder: writes of 1-3 entries (some large enough to roll segments
/// over), deletes, regions closed and reopened (single-threaded only), and
/// the whole manager closed and reopened half way.
fn record(dir: &Path, seed: u64, steps: u64, workload: Workload) -> Run {
    let (recorder, _guard) = Recorder::start(dir).unwrap();
    let log = Mutex::new(Log::default());
    let config = ManagerConfig {
        sync_mode: workload.sync_mode,
        ..config(dir)
    };
    let per_thread = steps / 2 / workload.threads;
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
        wal.close().unwrap();
    }
    let mut log = log.into_inner().unwrap();
    // Threads append in their own order; positions order them.
    log.acks.sort_by_key(|(position, _)| *position);
    Run {
        batches: log.batches,
        acks: log.acks,
        replay: recorder.replay(),
        workload,
    }
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
    let mut last_acked: HashMap<(u64, u64), u64> = HashMap::new();
    let shared = workload.threads > 1;
    for _ in 0..steps {
        let (region, table) = if shared {
            (thread % REGIONS, thread)
        } else {
            (rng.below(REGIONS), rng.below(TABLES))
        };
        match rng.below(20) {
            0 => {
                let last = last_acked.get(&(region, table)).copied().unwrap_or(0);
                let up_to = last.saturating_sub(rng.below(4));
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
            1 if !shared => wal.close_region(region).unwrap(),
            _ => {
                let count = 1 + rng.below(3) as usize;
                let pads: Vec<usize> = (0..count).map(|_| rng.below(700) as usize).collect();
                let (batch, entries) = {
                    let mut log = log.lock().unwrap();
                    let batch = log.batches.len();
                    let entries: Vec<Vec<u8>> = pads
                        .iter()
                        .enumerate()
                        .map(|(i, &pad)| payload(batch, i, count, pad))
                        .collect();
                    log.batches.push(Batch {
                        region,
                        table,
                        entries: entries.clone(),
                    });
                    (batch, entries)
                };
                let last = wal.write(region, table, &entries).unwrap();
                let position = recorder.position();
                last_acked.insert((region, table), last);
                log.lock()
                    .unwrap()
                    .acks
                    .push((position, Ack::Write { batch, last }));
            }
        }
    }
}

/// Recovers crash image `image` (made at log position `at`) and checks it
/// against what had been acknowledged by then. `label` names the image in
/// failure messages.
fn check(image: &Path, run: &Run, at: usize, label: &str) {
    let config = ManagerConfig {
        sync_mode: run.workload.sync_mode,
        ..config(image)
    };
    let wal =
        SegmentManager::open(config).unwrap_or_else(|e| panic!("{label}: recovery failed: {e}"));
    let mut acked: HashMap<usize, u64> = HashMap::new();
    let mut deleted: HashMap<(u64, u64), u64> = HashMap::new();
    let mut deleting: HashMap<(u64, u64), u64> = HashMap::new();
    for &(_, ack) in run.acks.iter().take_while(|(p, _)| *p <= at) {
        match ack {
            Ack::Deleting {
                region,
                table,
                up_to,
            } => {
                let mark = deleting.entry((region, table)).or_default();
                *mark = (*mark).max(up_to);
            }
            // Only `SyncMode::Always` promises that an acknowledged write
            // survives a power loss.
            Ack::Write { batch, last } if run.workload.sync_mode == SyncMode::Always => {
                acked.insert(batch, last);
            }
            Ack::Write { .. } => {}
            Ack::Delete {
                region,
                table,
                up_to,
            } => {
                let mark = deleted.entry((region, table)).or_default();
                *mark = (*mark).max(up_to);
            }
        }
    }
    let mut max_seen: HashMap<u64, u64> = HashMap::new();
    for region in 0..REGIONS {
        for table in 0..TABLES {
            let mark = deleted.get(&(region, table)).copied().unwrap_or(0);
            // A delete asked for but not acknowledged may be in force.
            let may_be_deleted = deleting.get(&(region, table)).copied().unwrap_or(0);
            let mut entries: Vec<(u64, Vec<u8>)> = Vec::new();
            let mut iter = wal
                .read(region, table, 0, u64::MAX)
                .unwrap_or_else(|e| panic!("{label}: read failed: {e}"));
            while iter
                .next_batch(64, |e| entries.push((e.sequence, e.payload.to_vec())))
                .unwrap_or_else(|e| panic!("{label}: read failed: {e}"))
                > 0
            {}
            // Per batch present: sequence number of each entry index.
            let mut present: BTreeMap<usize, BTreeMap<usize, u64>> = BTreeMap::new();
            for (seq, p) in &entries {
                let (batch, index) = parse(p);
                let written = &run.batches[batch];
                assert!(
                    written.region == region
                        && written.table == table
                        && written.entries.get(index) == Some(p),
                    "{label}: region {region} table {table} seq {seq} holds an entry never written there"
                );
                assert!(
                    *seq > mark,
                    "{label}: region {region} table {table}: seq {seq} came back after delete up to {mark}"
                );
                present.entry(batch).or_default().insert(index, *seq);
                let max = max_seen.entry(region).or_default();
                *max = (*max).max(*seq);
            }
            for (batch, seqs) in &present {
                // Entries of a batch have consecutive numbers, so each
                // present entry implies the same first number; the missing
                // ones, if any, are the leading ones a delete mark hides.
                let count = run.batches[*batch].entries.len();
                let (&min_index, &min_seq) = seqs.iter().next().unwrap();
                let first = min_seq - min_index as u64;
                let consistent = seqs.len() == count - min_index
                    && seqs
                        .iter()
                        .all(|(&index, &seq)| seq == first + index as u64);
                assert!(
                    consistent
                        && (min_index == 0 || first + min_index as u64 - 1 <= may_be_deleted),
                    "{label}: batch {batch} is not whole: {seqs:?} of {count} (delete mark {mark})"
                );
            }
            for (&batch, &last) in &acked {
                let written = &run.batches[batch];
                if (written.region, written.table) != (region, table) {
                    continue;
                }
                let count = written.entries.len() as u64;
                for (index, entry) in written.entries.iter().enumerate() {
                    let seq = last + 1 - count + index as u64;
                    if seq <= may_be_deleted {
                        continue;
                    }
                    assert_eq!(
                        present.get(&batch).and_then(|s| s.get(&index)),
                        Some(&seq),
                        "{label}: acknowledged entry {index} of batch {batch} (seq {seq}, {} bytes) is lost",
                        entry.len()
                    );
                }
                let max = max_seen.entry(region).or_default();
                *max = (*max).max(last);
            }
            let max_acked = acked
                .iter()
                .filter(|(b, _)| {
                    (run.batches[**b].region, run.batches[**b].table) == (region, table)
                })
                .map(|(_, &last)| last)
                .max()
                .unwrap_or(0);
            assert!(
                wal.sequence_num(region, table).unwrap() >= max_acked,
                "{label}: sequence_num of region {region} table {table} went back"
            );
        }
        // Sequence numbers keep increasing: the next write gets a number
        // above everything acknowledged or visible, and is readable.
        let seen = max_seen.get(&region).copied().unwrap_or(0);
        let next = wal
            .write(region, 0, &[b"after the crash".as_slice()])
            .unwrap_or_else(|e| panic!("{label}: write after recovery failed: {e}"));
        assert!(
            next > seen,
            "{label}: region {region} reused sequence {next} (seen {seen})"
        );
    }
    wal.close().unwrap();
}

/// How many images to check, from `SEGWAL_CRASH_IMAGES`.
fn image_budget() -> usize {
    std::env::var("SEGWAL_CRASH_IMAGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(600)
}

/// Proves that after a power loss at any point of a workload with
/// `SyncMode::Always` (rollovers, prepared segments, deletes, a region and
/// the manager reopened), recovery succeeds in the default mode, every
/// acknowledged entry is there and intact, nothing appears that was never
/// written, no acknowledged delete is undone, batches are whole or absent,
/// and the next sequence number is above every one acknowledged or seen.
#[test]
fn every_crash_image_keeps_every_acknowledged_write() {
    let budget = image_budget();
    let runs = (budget / 1500).max(WORKLOADS.len());
    let per_run = budget / runs;
    let mut total = ImageStats::default();
    let mut images = 0;
    for run_index in 0..runs {
        let workload = WORKLOADS[run_index % WORKLOADS.len()];
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("wal");
        std::fs::create_dir(&dir).unwrap();
        let run = record(&dir, 0x5eed_0000 + run_index as u64, 120, workload);
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
                let stats = replay.write_image(fate, &image).unwrap();
                let label = format!(
                    "run {run_index} ({workload:?}), power lost at position {at} of {positions}, \
                     {fate:?}, after these calls:\n{}\n",
                    replay.recent(12)
                );
                check(&image, &run, at, &label);
                std::fs::remove_dir_all(&image).unwrap();
                total.writes_kept += stats.writes_kept;
                total.writes_dropped += stats.writes_dropped;
                total.writes_torn += stats.writes_torn;
                total.dir_changes_lost += stats.dir_changes_lost;
                images += 1;
            }
        }
    }
    eprintln!(
        "{images} crash images over {runs} workload runs, none lost an acknowledged write; \
         unsynced writes kept {}, dropped {}, torn {}; directory changes lost {}",
        total.writes_kept, total.writes_dropped, total.writes_torn, total.dir_changes_lost
    );
}
