//! The engines under test, each behind one small interface, and how each
//! maps segwal's model (regions holding tables, batches of opaque entries)
//! onto its own. docs/BENCHMARKS.md repeats the mappings for readers.
//!
//! Every engine is driven from plain OS threads, one per writer. A batch
//! goes to a [`Location`], a table of a region; a writer knows how many
//! entries it has written to each location, so it passes the index of its
//! batch's first entry there (engines that need one, like raft-engine and
//! the RocksDB keys, use it; segwal allocates its own).
//!
//! This file holds the interface and the choice of engine; each engine's
//! adapter has a file of its own beside it.

use std::fmt;
use std::fs::File;
use std::io::{IoSlice, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::compress::{Codec, Tuning};
use crate::error::{Context, Error, Result};

/// The one region the workloads write to unless they spread writers over
/// regions: each writer owns a table of it, so the writers share one
/// region, as they share one log in raft-engine, okaywal and RocksDB.
pub(crate) const REGION: u64 = 1;

/// Where a batch goes: a table of a region, segwal's model. segwal uses
/// both; raft-engine, okaywal and RocksDB have one flat namespace of logs
/// (raft groups, key prefixes) and take the pair as one number,
/// [`Location::stream_id`]; the floors ignore it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Location {
    pub(crate) region: u64,
    pub(crate) table: u64,
}

impl Location {
    pub(crate) fn new(region: u64, table: u64) -> Location {
        Location { region, table }
    }

    /// The location as one number, for an engine whose logs have one id:
    /// the region in the high 32 bits, the table in the low ones. Distinct
    /// locations get distinct ids, and one region's tables are adjacent.
    pub(crate) fn stream_id(self) -> u64 {
        assert!(
            self.region < 1 << 32 && self.table < 1 << 32,
            "{self:?} does not fit a stream id"
        );
        self.region << 32 | self.table
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "region {} table {}", self.region, self.table)
    }
}

/// An engine under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum EngineKind {
    /// segwal end to end: the async `LocalWal` (`WalManager` API), called
    /// from writer threads through a tokio runtime. The baseline of every
    /// ratio.
    Segwal,
    /// segwal's synchronous `SegmentManager`, the layer under `LocalWal`,
    /// called directly: the difference to `Segwal` is the adapter's cost.
    SegwalManager,
    /// raft-engine 0.4 (TiKV's log store).
    RaftEngine,
    /// okaywal 0.3.
    Okaywal,
    /// RocksDB through the `rocksdb` crate, with its own WAL.
    Rocksdb,
    /// Plain `write` + `fdatasync` on one appended file: what the disk and
    /// kernel allow with no format, no index and no group commit.
    Floor,
    /// The floor with each synced write one system call instead of two: a
    /// file opened `O_DSYNC`, so that each `write` is durable on return, as
    /// segwal's lone synced writes are (`pwritev2` with `RWF_DSYNC`). What
    /// any design pays that makes each write durable on its own; only the
    /// synced workloads run it.
    FloorDsync,
    /// The floor with group commit and nothing else: a writer queues its
    /// batch, and whichever writer finds the file free writes every queued
    /// batch with one `writev` and one `fdatasync`; the others yield their
    /// core until theirs is written. Only the synced workloads run it.
    FloorGroup,
}

impl EngineKind {
    /// Every engine, in the order the runs alternate.
    pub(crate) const ALL: [EngineKind; 8] = [
        EngineKind::Segwal,
        EngineKind::SegwalManager,
        EngineKind::RaftEngine,
        EngineKind::Okaywal,
        EngineKind::Rocksdb,
        EngineKind::Floor,
        EngineKind::FloorDsync,
        EngineKind::FloorGroup,
    ];

    /// The name on the command line and in the results.
    pub(crate) fn name(self) -> &'static str {
        match self {
            EngineKind::Segwal => "segwal",
            EngineKind::SegwalManager => "segwal-manager",
            EngineKind::RaftEngine => "raft-engine",
            EngineKind::Okaywal => "okaywal",
            EngineKind::Rocksdb => "rocksdb",
            EngineKind::Floor => "floor",
            EngineKind::FloorDsync => "floor-dsync",
            EngineKind::FloorGroup => "floor-group",
        }
    }

    /// The engine called `name`.
    pub(crate) fn parse(name: &str) -> Result<EngineKind> {
        EngineKind::ALL
            .into_iter()
            .find(|e| e.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = EngineKind::ALL.iter().map(|e| e.name()).collect();
                Error::msg(format!(
                    "unknown engine {name:?}; the engines are {}",
                    names.join(", ")
                ))
            })
    }

    /// Whether the engine has a notion of reading one table's entries.
    pub(crate) fn reads_tables(self) -> bool {
        !self.is_floor()
    }

    /// Whether this is one of the floors (not a log, a bound on one).
    pub(crate) fn is_floor(self) -> bool {
        matches!(
            self,
            EngineKind::Floor | EngineKind::FloorDsync | EngineKind::FloorGroup
        )
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A log opened for writing or reading, shared by the writer threads.
pub(crate) trait Wal: Send + Sync {
    /// Appends `entries` as one atomic batch to `at`, whose first entry is
    /// the location's `first_index`-th (from 1). Durable on return if the
    /// log was opened `synced`.
    fn write(&self, at: Location, first_index: u64, entries: &[Bytes]) -> Result<()>;

    /// Makes everything written so far durable (segwal: to region
    /// [`REGION`], the only one the workloads that call this write).
    fn sync(&self) -> Result<()>;

    /// Hands every entry of the table at `at` to `visit`, in order.
    fn read_table(&self, at: Location, visit: &mut dyn FnMut(&[u8])) -> Result<()>;

    /// Hands every entry of every table to `visit` (segwal: of region
    /// [`REGION`], the only one the workloads that read write).
    fn read_all(&self, visit: &mut dyn FnMut(&[u8])) -> Result<()>;

    /// Engine counters worth a line in the results (segwal's batches per
    /// sync, for instance).
    fn note(&self) -> Option<String> {
        None
    }

    /// Closes the log, syncing what the engine syncs on close.
    fn close(self: Box<Self>) -> Result<()>;
}

/// What a segwal run notes beside its figures: how many batches a sync
/// covered, and how many rollovers found the spare's zeros unfinished.
fn segwal_note(stats: &segwal_manager::Statistics) -> String {
    format!(
        "{:.1} batches per sync, {} of {} spares hurried, {} early rollovers",
        stats.batches_written as f64 / stats.syncs.max(1) as f64,
        stats.spares_hurried,
        stats.spares_used,
        stats.early_rollovers
    )
}

/// Opens `kind`'s log in `dir` (created if missing). `synced`: every write
/// is durable on return. `entry_len`: the size of every entry (the floor has no framing and needs
/// it to count entries when reading back). `tuning`: the codec, which
/// okaywal and the floors (that have none) ignore, and RocksDB's memtable.
pub(crate) fn open(
    kind: EngineKind,
    dir: &Path,
    synced: bool,
    entry_len: usize,
    tuning: Tuning,
) -> Result<Box<dyn Wal>> {
    std::fs::create_dir_all(dir).context(|| format!("cannot create {}", dir.display()))?;
    let codec = tuning.codec;
    Ok(match kind {
        EngineKind::Segwal => Box::new(segwal_async::AsyncSegwal::open(dir, synced, codec)?),
        EngineKind::SegwalManager => Box::new(segwal_sync::SyncSegwal::open(dir, synced, codec)?),
        EngineKind::RaftEngine => Box::new(raft::Raft::open(dir, synced, codec)?),
        EngineKind::Okaywal => Box::new(okay::Okay::open(dir, None)?.0),
        EngineKind::Rocksdb => Box::new(rocks::Rocks::open(dir, synced, tuning)?),
        EngineKind::Floor => Box::new(Floor::open(dir, synced, false, entry_len)?),
        EngineKind::FloorDsync => Box::new(Floor::open(dir, synced, true, entry_len)?),
        EngineKind::FloorGroup => Box::new(GroupFloor::open(dir, synced, entry_len)?),
    })
}

/// Opens `kind`'s log in `dir` and reads back every entry: the `recover`
/// workload's measured step. Returns the entries and payload bytes read.
pub(crate) fn recover_read_all(
    kind: EngineKind,
    dir: &Path,
    entry_len: usize,
    tuning: Tuning,
) -> Result<(u64, u64)> {
    if kind == EngineKind::Okaywal {
        // okaywal hands every entry to its log manager during recovery, and
        // keeps nothing readable afterwards but positions the caller saved.
        let (wal, entries, bytes) = okay::Okay::open(dir, None)?;
        wal.close_boxed()?;
        return Ok((entries, bytes));
    }
    let (mut entries, mut bytes) = (0u64, 0u64);
    let wal = open(kind, dir, false, entry_len, tuning)?;
    wal.read_all(&mut |payload: &[u8]| {
        entries += 1;
        bytes += payload.len() as u64;
    })?;
    wal.close()?;
    Ok((entries, bytes))
}

/// The 16-byte key (RocksDB) or header chunk (okaywal) naming a location
/// (its stream id) and an entry's index in it, big-endian so byte order is
/// numeric order.
fn location_key(at: Location, index: u64) -> [u8; 16] {
    let mut key = [0; 16];
    key[..8].copy_from_slice(&at.stream_id().to_be_bytes());
    key[8..].copy_from_slice(&index.to_be_bytes());
    key
}

/// segwal through the async `WalManager` API.
mod segwal_async;

/// segwal's synchronous segment manager.
mod segwal_sync;

/// raft-engine: a location (a table of a region) is a raft group, whose id
/// is the location's stream id; entries are `eraftpb::Entry` messages whose
/// `data` is the payload (shared, not copied) and whose `index` counts from
/// 1 within the group.
mod raft;

/// okaywal: one log for all writers and every location (it has no notion
/// of a region or a table). A batch is one okaywal entry: a 16-byte chunk
/// naming the location (its stream id) and the first index, then one chunk
/// per payload. okaywal syncs every commit; it has no unsynced write. It
/// keeps no index: a reader sees entries only in recovery (or at positions
/// the application saved), so reading one table is a recovery that
/// filters. Checkpointing is off (`checkpoint_after_bytes` = u64::MAX) so
/// that the data stays in the log to be read back.
mod okay;

/// Reads every entry of the table at `at` from okaywal's log in `dir`: a
/// recovery that keeps only that location's payloads (okaywal has no
/// index). Returns the entries and payload bytes read.
pub(crate) fn okaywal_read_table(dir: &Path, at: Location) -> Result<(u64, u64)> {
    let (wal, entries, bytes) = okay::Okay::open(dir, Some(at))?;
    wal.close_boxed()?;
    Ok((entries, bytes))
}

/// RocksDB: one database, its WAL on; an entry is the value of the key
/// (the location's stream id, index), big-endian, so a location is a key
/// prefix; a batch is one `WriteBatch`, synced with
/// `WriteOptions::set_sync(true)` in synced workloads. Built with zstd
/// only, for `wal_compression` (`--compression zstd`); its table files
/// stay uncompressed, as snappy, its default, is not built in.
mod rocks;

mod floor;

use floor::{Floor, GroupFloor};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_locations_get_distinct_stream_ids_in_region_then_table_order() {
        // The peers key every log on the stream id alone, so two locations
        // sharing one would merge two logs.
        let mut ids = Vec::new();
        for region in [0, 1, 2, 255, u64::from(u32::MAX)] {
            for table in [0, 1, 2, 100, u64::from(u32::MAX)] {
                ids.push(Location::new(region, table).stream_id());
            }
        }
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, ids);
    }
}
