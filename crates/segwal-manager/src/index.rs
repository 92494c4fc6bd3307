//! The index: where every live batch of every table is, and what each
//! segment of the shared log holds.
//!
//! Per region, per table: the locations of its live records in sequence
//! order, its largest sequence number and its delete mark ([`Region`]).
//! Per segment: its stream, whether it is being written, how far it may be
//! read, and how many live records and bytes it holds ([`SegmentInfo`]), so
//! that a segment is known to be removable the moment its last live record
//! is deleted, without looking at any table.
//!
//! # Invariants
//!
//! - A table's `records` are ascending by sequence number and disjoint;
//!   each has at least one entry above the table's delete mark.
//! - A segment's `live` counts exactly the records of open regions' tables
//!   that point into it, plus those of closed regions (which keep counting
//!   while their index is dropped, see [`ClosedRegion`]), plus copies a
//!   rewrite appended there and has not yet pointed the index at
//!   (`rewrite.rs`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use rustc_hash::FxHashMap as HashMap;
use segwal_segment::SegmentHandle;

use crate::config::SyncMode;
use crate::read::RecordLoc;

/// What the index knows about one table.
#[derive(Debug, Default)]
pub(crate) struct TableState {
    /// Live records (at least one entry above `deleted_up_to`), ascending.
    pub(crate) records: VecDeque<RecordLoc>,
    /// The largest sequence number ever assigned to the table.
    pub(crate) max_sequence: u64,
    /// Entries up to this sequence number are deleted.
    pub(crate) deleted_up_to: u64,
}

impl TableState {
    /// Appends a record written after every record the table has, or, for
    /// one that recovery found out of order, notes that the table must be
    /// sorted (see [`RegionState::sort_tables`]).
    pub(crate) fn push(&mut self, loc: RecordLoc) -> bool {
        let in_order = self.records.back().is_none_or(|back| back.last < loc.first);
        self.records.push_back(loc);
        in_order
    }
}

/// The tables of one region.
#[derive(Debug, Default)]
pub(crate) struct RegionState {
    pub(crate) tables: HashMap<u64, TableState>,
}

impl RegionState {
    /// Sorts the records of `tables` by sequence number and drops
    /// duplicates (the same batch found in two segments: a rewrite's copy
    /// and its original), keeping the copy `keep` says. Returns the
    /// dropped copies.
    pub(crate) fn sort_tables(&mut self, tables: &BTreeSet<u64>, keep: Keep) -> Vec<RecordLoc> {
        let mut dropped = Vec::new();
        for table_id in tables {
            let Some(table) = self.tables.get_mut(table_id) else {
                continue;
            };
            let records = table.records.make_contiguous();
            match keep {
                Keep::Newest => records
                    .sort_unstable_by_key(|loc| (loc.first, std::cmp::Reverse(loc.segment_id))),
                Keep::Oldest => records.sort_unstable_by_key(|loc| (loc.first, loc.segment_id)),
            }
            let mut kept: VecDeque<RecordLoc> = VecDeque::with_capacity(records.len());
            for &loc in records.iter() {
                if kept.back().is_some_and(|back| back.first == loc.first) {
                    dropped.push(loc);
                } else {
                    kept.push_back(loc);
                }
            }
            table.records = kept;
        }
        dropped
    }
}

/// Which of two copies of a batch the index keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keep {
    /// Recovery: the copy in the newer segment, so that a rewrite cut
    /// short by a crash still frees the old one.
    Newest,
    /// Reopening a closed region while a rewrite has appended a copy but
    /// not yet pointed the index at it: the original, which the rewrite
    /// will find and swap.
    Oldest,
}

/// One region's part of the index.
#[derive(Debug)]
pub(crate) struct Region {
    pub(crate) id: u64,
    pub(crate) state: RwLock<RegionState>,
    /// Set by `close_region` under the stream's writer lock and this
    /// region's state lock: a write that finds it set (under the writer
    /// lock) is refused before it uses a number, so nothing is published
    /// into an index that has been dropped.
    pub(crate) closed: AtomicBool,
    /// Held by a delete of the region from before its META append until
    /// its index has dropped the records, and by `close_region` while it
    /// sums the index up: a delete never lands in an index that a close
    /// has already summed up, and a close waits for at most one delete's
    /// sync rather than having deletes retry after theirs.
    pub(crate) deleting: Mutex<()>,
}

impl Region {
    pub(crate) fn new(id: u64, state: RegionState) -> Region {
        Region {
            id,
            state: RwLock::new(state),
            closed: AtomicBool::new(false),
            deleting: Mutex::new(()),
        }
    }
}

/// What stays in memory of a closed region: each table's largest sequence
/// number and delete mark, and which segments hold its live records (with
/// how many bytes of them), so that opening it again reads only those
/// segments.
#[derive(Debug, Default)]
pub(crate) struct ClosedRegion {
    pub(crate) tables: HashMap<u64, (u64, u64)>,
    /// Per segment, per table: live bytes of the region's records there.
    pub(crate) segments: BTreeMap<u64, HashMap<u64, u64>>,
}

impl ClosedRegion {
    /// What stays of `state` once its region is closed.
    pub(crate) fn of(state: &RegionState) -> ClosedRegion {
        let mut segments: BTreeMap<u64, HashMap<u64, u64>> = BTreeMap::new();
        for (&table_id, table) in &state.tables {
            for loc in &table.records {
                *segments
                    .entry(loc.segment_id)
                    .or_default()
                    .entry(table_id)
                    .or_default() += u64::from(loc.len);
            }
        }
        ClosedRegion {
            tables: state
                .tables
                .iter()
                .map(|(&id, t)| (id, (t.max_sequence, t.deleted_up_to)))
                .collect(),
            segments,
        }
    }
}

/// A region in the manager's map.
#[derive(Debug)]
pub(crate) enum RegionSlot {
    Open(Arc<Region>),
    Closed(ClosedRegion),
}

/// Live records and bytes of one segment, updated without the segment
/// map's lock.
#[derive(Debug, Default)]
pub(crate) struct Live {
    records: AtomicU64,
    bytes: AtomicU64,
}

impl Live {
    pub(crate) fn add(&self, len: u64) {
        self.records.fetch_add(1, Ordering::AcqRel);
        self.bytes.fetch_add(len, Ordering::AcqRel);
    }

    pub(crate) fn remove(&self, len: u64) {
        let before = self.records.fetch_sub(1, Ordering::AcqRel);
        assert!(before > 0, "a segment's live count never goes below zero");
        self.bytes.fetch_sub(len, Ordering::AcqRel);
    }

    pub(crate) fn records(&self) -> u64 {
        self.records.load(Ordering::Acquire)
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }
}

/// A segment of the shared log, as the index sees it.
#[derive(Debug)]
pub(crate) struct SegmentInfo {
    pub(crate) stream_id: u64,
    /// The segment being written, open for as long as it is; `None` once
    /// sealed (a sealed segment is open only while the cache or a reader
    /// holds a handle to it).
    pub(crate) active: Option<SegmentHandle>,
    /// Sealed: the end of its records, what it is reopened with.
    pub(crate) len: u64,
    /// The disk the file holds: its capacity, or less once sealed with
    /// room it gave back (`Segment::release_unused`).
    pub(crate) file_bytes: u64,
    pub(crate) live: Arc<Live>,
}

impl SegmentInfo {
    /// How far readers may read: a sealed segment to its end; the active
    /// one to its last sync under `SyncMode::Always` (nothing a crash could
    /// take away is ever visible), else to its last append.
    pub(crate) fn visible_len(&self, sync_mode: SyncMode) -> u64 {
        match &self.active {
            None => self.len,
            Some(handle) if sync_mode == SyncMode::Always => handle.durable_len(),
            Some(handle) => handle.written_len(),
        }
    }

    /// Sealed and holding nothing live: the file can go.
    pub(crate) fn is_dead(&self) -> bool {
        self.active.is_none() && self.live.records() == 0
    }
}

/// Every segment of the data dir, by id (ids are unique across streams).
pub(crate) type Segments = BTreeMap<u64, SegmentInfo>;
