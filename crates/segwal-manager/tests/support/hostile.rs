//! What the hostile-argument tests share: a WAL of small segments, and
//! reading everything back.

#![allow(dead_code, unreachable_pub)]

use std::path::Path;

use segwal_format::MetaEntry;
use segwal_manager::{EntryIter, ManagerConfig, SegmentManager};

pub const MAX: u64 = u64::MAX;

pub fn config(dir: &Path) -> ManagerConfig {
    ManagerConfig {
        segment_size_bytes: 4096,
        ..ManagerConfig::new(dir)
    }
}

pub fn open(dir: &Path) -> SegmentManager {
    SegmentManager::open(config(dir)).unwrap()
}

/// Every entry of `iter` as (table, sequence, payload).
pub fn drain(iter: EntryIter) -> Vec<(u64, u64, Vec<u8>)> {
    drain_by(iter, 100)
}

/// Every entry of `iter`, fetched `batch` at a time.
pub fn drain_by(mut iter: EntryIter, batch: usize) -> Vec<(u64, u64, Vec<u8>)> {
    let mut out = Vec::new();
    while iter
        .next_batch(batch, |e| {
            out.push((e.table_id, e.sequence, e.payload.to_vec()));
        })
        .unwrap()
        > 0
    {}
    out
}

pub fn sequences(wal: &SegmentManager, region: u64, table: u64, start: u64, end: u64) -> Vec<u64> {
    drain(wal.read(region, table, start, end).unwrap())
        .into_iter()
        .map(|e| e.1)
        .collect()
}

/// A META log entry that puts region `region_id` at the top of the
/// sequence space, as a WAL records it after a failed write: no number
/// below `next_sequence` is assigned. Written into a META log with
/// `write_meta_log`, encoded by the format crate; writing 2^64 entries is
/// the only other way there.
pub fn floor(region_id: u64, next_sequence: u64) -> MetaEntry {
    MetaEntry::SequenceFloor {
        region_id,
        next_sequence,
    }
}
