//! What the crash tests share: the workload's payloads, the record of what
//! was acknowledged when, and the check every recovered data dir must pass.

#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use segwal_manager::{ManagerConfig, SegmentManager, SyncMode};
use segwal_segment::powerloss::{Fate, ImageStats, Replay};

/// A campaign length from environment variable `name`, or `default`.
pub fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

pub const REGIONS: u64 = 2;
pub const TABLES: u64 = 3;

pub fn config(dir: &Path) -> ManagerConfig {
    ManagerConfig {
        segment_size_bytes: 8 << 10,
        sync_mode: SyncMode::Always,
        ..ManagerConfig::new(dir)
    }
}

/// A batch the workload wrote (acknowledged or not).
#[derive(Debug, Clone)]
pub struct Batch {
    pub region: u64,
    pub table: u64,
    pub entries: Vec<Vec<u8>>,
}

/// Something the workload was told had happened, and the log position by
/// which it had.
#[derive(Debug, Clone, Copy)]
pub enum Ack {
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
pub struct Run {
    pub batches: Vec<Batch>,
    pub acks: Vec<(usize, Ack)>,
    pub replay: Replay,
    pub workload: Workload,
}

/// The payload of entry `index` of `count` of batch `batch`: names its
/// batch, so anything read back can be traced to what was written.
pub fn payload(batch: usize, index: usize, count: usize, pad: usize) -> Vec<u8> {
    let mut p = format!("b{batch}e{index}of{count}-").into_bytes();
    p.resize(p.len() + pad, b'a' + (batch % 26) as u8);
    p
}

/// The batch and entry index a payload names.
pub fn parse(payload: &[u8]) -> (usize, usize) {
    let text = std::str::from_utf8(payload).expect("payloads are ASCII");
    let head = text.split('-').next().unwrap();
    let (batch, rest) = head[1..].split_once('e').unwrap();
    let (index, _) = rest.split_once("of").unwrap();
    (batch.parse().unwrap(), index.parse().unwrap())
}

pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A workload's shape.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub sync_mode: SyncMode,
    /// Writer threads; with more than one, each owns a table (and group
    /// commit shares syncs between them).
    pub threads: u64,
}

/// The workloads a campaign cycles through.
pub const WORKLOADS: [Workload; 3] = [
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

/// Writes the crash image that `replay` gives at its position, with `fate`,
/// into `image`; checks it with [`check`] as of log position `at`; removes
/// it; and returns what the image lost.
pub fn check_image(
    replay: &Replay,
    fate: Fate,
    image: &Path,
    run: &Run,
    at: usize,
    label: &str,
) -> ImageStats {
    let stats = replay.write_image(fate, image).unwrap();
    check(image, run, at, label);
    std::fs::remove_dir_all(image).unwrap();
    stats
}

/// Recovers crash image `image` (made at log position `at`) and checks it
/// against what had been acknowledged by then. `label` names the image in
/// failure messages.
pub fn check(image: &Path, run: &Run, at: usize, label: &str) {
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
