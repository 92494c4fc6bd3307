//! One region: its segments, its index, its writer and its delete marks.
//!
//! # Locks
//!
//! Taken only in this order, never the reverse:
//!
//! 1. `writer` — the active segment, the spare being prepared and sequence
//!    allocation. Held while a batch is encoded and written (one `pwrite`),
//!    and while a full segment is synced and sealed at rollover. A synced
//!    write by a writer alone in the region (`writing` is 1) also holds it
//!    across the write's own sync: one system call, `Segment::append_durable`;
//!    a writer that comes meanwhile waits no longer than it would for the
//!    next group's sync (see `Region::write`). A write
//!    waits for it at most `STARVING_AFTER`, then has the next holder
//!    append its batch (`waiting.rs`); the queue's own lock is a leaf.
//! 2. `meta_lock` — serialises meta file replacements (deletes, and the
//!    sequence floor after a failure). The file is written without holding
//!    `state`, so reads and appends go on meanwhile.
//! 3. `state` — the index, the segment set and the delete marks. Held
//!    briefly: to publish a written record, to snapshot for a read, to apply
//!    a delete mark, to pick dead segments.
//! 4. The open-segment cache's lock and `Context::unrecorded_ends`, leaves.
//!
//! `group`'s lock (group commit, `group.rs`) is never held together with
//! another lock, and never across a sync.

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use rustc_hash::FxHashMap as HashMap;
use segwal_format::{
    MAX_BODY_LEN, RECORD_HEADER_LEN, RegionMeta, SEGMENT_HEADER_LEN, SegmentEnd, SegmentIdentity,
    TableMeta,
};
use segwal_segment::{
    BatchRef, OpenOptions, RecoveryMode, Segment, SegmentHandle, disk, parse_segment_file_name,
    segment_file_name,
};
use snafu::{ResultExt, ensure};

use crate::config::SyncMode;
use crate::error::{
    BatchTooLargeSnafu, ClosedSnafu, DirectorySnafu, EmptyBatchSnafu, EntryTooLargeSnafu,
    MetaInvalidSnafu, MetaIoSnafu, RegionFailedSnafu, Result, SealedSegmentDamagedSnafu,
    SegmentSnafu, SequenceExhaustedSnafu,
};
use crate::group::GroupCommit;
use crate::manager::Context;
use crate::read::{EntryIter, RecordLoc};
use crate::waiting::{OwnedBatch, STARVING_AFTER, StarvingQueue, Waiter};

/// Name of the region meta file inside a region directory.
pub(crate) const META_FILE: &str = "META";
const META_TMP_FILE: &str = "META.tmp";
/// Suffix of a segment file prepared ahead of need, before it is renamed
/// into place.
const SPARE_SUFFIX: &str = ".spare";

/// The directory name of region `region_id`: zero-padded like segment names.
pub(crate) fn region_dir_name(region_id: u64) -> String {
    format!("{region_id:020}")
}

/// The region id of a directory named by [`region_dir_name`].
pub(crate) fn parse_region_dir_name(name: &str) -> Option<u64> {
    (name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()))
        .then(|| name.parse().ok())
        .flatten()
}

/// A locked mutex, even if a holder panicked: the protected data is only
/// ever changed in steps that leave it consistent. The same holds for
/// [`read`] and [`write`].
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A read guard, even if a writer panicked (see [`lock`]).
pub(crate) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

/// A write guard, even if a writer panicked (see [`lock`]).
pub(crate) fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

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

/// A segment of the region, as the index sees it.
#[derive(Debug)]
pub(crate) struct SegmentInfo {
    /// For each table with records here, its largest sequence number here.
    tables: HashMap<u64, u64>,
    /// The segment being written, open for as long as it is; `None` once
    /// sealed (a sealed segment is open only while the cache or a reader
    /// holds a handle to it).
    active: Option<SegmentHandle>,
    /// Sealed: the end of its records, what it is reopened with.
    len: u64,
}

impl SegmentInfo {
    /// How far readers may read: a sealed segment to its end; the active
    /// one to its last sync under `SyncMode::Always` (nothing a crash could
    /// take away is ever visible), else to its last append.
    fn visible_len(&self, sync_mode: SyncMode) -> u64 {
        match &self.active {
            None => self.len,
            Some(handle) if sync_mode == SyncMode::Always => handle.durable_len(),
            Some(handle) => handle.written_len(),
        }
    }
}

/// The index, the segment set and the delete marks.
#[derive(Debug, Default)]
pub(crate) struct RegionState {
    pub(crate) segments: BTreeMap<u64, SegmentInfo>,
    pub(crate) tables: HashMap<u64, TableState>,
    /// Segments whose valid records end before their written data, after a
    /// failed sync (see [`SegmentEnd`]).
    pub(crate) segment_ends: BTreeMap<u64, u64>,
}

impl RegionState {
    /// How many segments are being written (0 or 1).
    pub(crate) fn active_segments(&self) -> usize {
        self.segments
            .values()
            .filter(|info| info.active.is_some())
            .count()
    }

    /// What the meta file records: the sequence floor, every table's
    /// maximum and delete mark, and the recorded ends of segments that
    /// still exist.
    fn meta(&self, next_sequence: u64) -> RegionMeta {
        let mut tables: Vec<TableMeta> = self
            .tables
            .iter()
            .filter(|(_, t)| t.max_sequence > 0)
            .map(|(&table_id, t)| TableMeta {
                table_id,
                max_sequence: t.max_sequence,
                deleted_up_to: t.deleted_up_to,
            })
            .collect();
        tables.sort_unstable_by_key(|t| t.table_id);
        let segment_ends = self
            .segment_ends
            .iter()
            .filter(|(id, _)| self.segments.contains_key(id))
            .map(|(&segment_id, &end)| SegmentEnd { segment_id, end })
            .collect();
        RegionMeta {
            next_sequence,
            tables,
            segment_ends,
        }
    }
}

/// A segment being prepared ahead of need, under a temporary name.
#[derive(Debug)]
struct Spare {
    segment_id: u64,
    creating: JoinHandle<segwal_segment::Result<Segment>>,
}

/// How much of a segment written without syncs (`SyncMode::Never`,
/// `Interval`) may be waiting in the page cache before its write-back to
/// disk is started: so that the disk writes a segment while it fills, and
/// the sync at rollover, under the writer lock, waits for one chunk rather
/// than the whole segment. (1 MiB and 4 MiB measured alike on the project's
/// disk; 16 MiB less well. docs/BENCHMARKS.md.)
pub const WRITEBACK_CHUNK_BYTES: u64 = 4 << 20;

/// The writer's side: the active segment and sequence allocation.
#[derive(Debug)]
struct Writer {
    active: Option<Segment>,
    /// When the active segment became the active one: a write needed it.
    active_since: Option<Instant>,
    /// Where in the active segment write-back was last started up to (see
    /// [`WRITEBACK_CHUNK_BYTES`]).
    writeback_from: u64,
    next_segment_id: u64,
    spare: Option<Spare>,
}

/// A segment a read needs, found under the state lock.
#[derive(Debug)]
enum Pin {
    /// Open already: the active segment.
    Open(SegmentHandle),
    /// Sealed: from the cache, or reopened with this length.
    Sealed { len: u64 },
}

/// What appending one batch gave.
#[derive(Debug)]
pub(crate) struct Appended {
    /// The segment the record went to.
    handle: SegmentHandle,
    /// The record's end offset in it.
    end: u64,
    /// The batch's last sequence number.
    last: u64,
}

/// Starving writers' batches a holder of the writer lock took to append.
/// If the holder panics (a bug) before it has appended them all, the rest
/// get an error rather than waiting for ever.
struct Handover<'a> {
    region_id: u64,
    starving: &'a StarvingQueue<Result<Appended>>,
    /// Not appended yet, oldest first.
    batches: VecDeque<(Arc<Waiter<Result<Appended>>>, OwnedBatch)>,
}

impl Drop for Handover<'_> {
    fn drop(&mut self) {
        for (waiter, _) in self.batches.drain(..) {
            let refused = RegionFailedSnafu {
                region_id: self.region_id,
            }
            .fail();
            self.starving.complete(&waiter, refused);
        }
    }
}

/// One region of the WAL.
#[derive(Debug)]
pub(crate) struct Region {
    pub(crate) id: u64,
    dir: PathBuf,
    writer: parking_lot::Mutex<Writer>,
    /// The next sequence number to assign; written under `writer`, read
    /// without it (deletes record it as the floor in the meta file).
    next_sequence: AtomicU64,
    pub(crate) state: RwLock<RegionState>,
    /// Writers that waited too long for `writer` (see `waiting.rs`).
    starving: StarvingQueue<Result<Appended>>,
    meta_lock: Mutex<()>,
    group: GroupCommit,
    /// Threads inside `write` (under `SyncMode::Always` only; else 0).
    writing: AtomicUsize,
    /// Set by `close` (under `state`'s write lock); later writes to this
    /// object fail (the manager opens the region afresh on its next use).
    closed: AtomicBool,
    /// Set (under `writer`) by the first failed write or sync: the region
    /// refuses writes from then on (see `record_failure`).
    failed: AtomicBool,
    /// Set once the region's directory is known to exist durably.
    dir_durable: AtomicBool,
}

impl Region {
    /// Opens region `id` in `dir`, which may not exist yet, rebuilding its
    /// index and sequence numbers from the segments and the meta file.
    /// Segments are opened (and verified) `scan_threads` at a time.
    pub(crate) fn recover(
        dir: PathBuf,
        id: u64,
        ctx: &Context,
        scan_threads: usize,
    ) -> Result<Region> {
        let mut meta = read_meta(&dir)?;
        // Ends learnt from a failed sync in this process but not recorded
        // yet: recorded now, before anything is read past them, or the
        // region does not open.
        let unrecorded = lock(&ctx.unrecorded_ends).get(&id).cloned();
        if let Some(ends) = unrecorded {
            for (segment_id, end) in ends {
                meta.segment_ends.retain(|e| e.segment_id != segment_id);
                meta.segment_ends.push(SegmentEnd { segment_id, end });
            }
            disk::create_dir_all(&dir).context(DirectorySnafu { dir: &dir })?;
            write_meta(&dir, &meta)?;
            ctx.stats.meta_writes.fetch_add(1, Ordering::Relaxed);
            lock(&ctx.unrecorded_ends).remove(&id);
        }
        let mut state = RegionState {
            segment_ends: meta
                .segment_ends
                .iter()
                .map(|e| (e.segment_id, e.end))
                .collect(),
            ..RegionState::default()
        };
        for table in &meta.tables {
            state.tables.insert(
                table.table_id,
                TableState {
                    records: VecDeque::new(),
                    max_sequence: table.max_sequence,
                    deleted_up_to: table.deleted_up_to,
                },
            );
        }
        let mut ids: Vec<u64> = Vec::new();
        if dir.exists() {
            for entry in fs::read_dir(&dir).context(DirectorySnafu { dir: &dir })? {
                let entry = entry.context(DirectorySnafu { dir: &dir })?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if let Some(segment_id) = parse_segment_file_name(name) {
                    ids.push(segment_id);
                } else if is_spare_file_name(name) {
                    // A segment prepared ahead of need and never put in
                    // place holds no records.
                    Segment::delete_file(&entry.path()).context(SegmentSnafu { region_id: id })?;
                }
            }
        }
        ids.sort_unstable();
        let mut next_sequence = meta.next_sequence.max(1);
        let newest = ids.last().copied();
        // Opens (and so verifies) one segment, collecting where its records
        // are. Every segment is opened read-only first (so readers still
        // holding handles from before a close do not block this open).
        let segment_ends = &state.segment_ends;
        let open = |segment_id: u64, writable: bool| {
            let path = dir.join(segment_file_name(segment_id));
            let identity = SegmentIdentity {
                stream_id: id,
                segment_id,
            };
            let options = OpenOptions {
                recovery_mode: ctx.config.recovery_mode,
                writable,
                end: segment_ends.get(&segment_id).copied(),
            };
            let mut records = Vec::new();
            Segment::open(&path, identity, &options, |record| {
                let loc = RecordLoc {
                    first: record.first_sequence(),
                    last: record.last_sequence(),
                    segment_id,
                    offset: record.offset(),
                };
                records.push((record.table_id(), loc));
            })
            .map(|(segment, report)| (segment, report, records))
            .context(SegmentSnafu { region_id: id })
        };
        // Segments are opened `scan_threads` at a time, in parallel, and
        // then taken in id order: the index and every check below see them
        // in order, and only a window's record lists are held at once.
        for window in ids.chunks(scan_threads.max(1)) {
            let opened = parallel_map(window, |&segment_id| open(segment_id, false));
            for (&segment_id, first_open) in window.iter().zip(opened) {
                let path = dir.join(segment_file_name(segment_id));
                // Only the newest segment can end in a torn write. It is opened
                // again, writable, only when there is a tail to cut and zero. It
                // is never appended to again (see ARCHITECTURE.md: after a
                // restart, appends go to a fresh segment).
                let is_newest = Some(segment_id) == newest;
                let (mut segment, mut report, mut records) = first_open?;
                if is_newest && (report.torn_tail.is_some() || report.past_end_bytes > 0) {
                    drop(segment);
                    (segment, report, records) = open(segment_id, true)?;
                }
                let mut tables: HashMap<u64, u64> = HashMap::default();
                for (table_id, loc) in records {
                    next_sequence = next_sequence.max(loc.last + 1);
                    let table = state.tables.entry(table_id).or_default();
                    table.max_sequence = table.max_sequence.max(loc.last);
                    if loc.last > table.deleted_up_to {
                        table.records.push_back(loc);
                        let max = tables.entry(table_id).or_default();
                        *max = (*max).max(loc.last);
                    }
                }
                if let Some(torn) = report.torn_tail {
                    if !is_newest && ctx.config.recovery_mode != RecoveryMode::SkipCorrupted {
                        return Err(torn.cause).context(SealedSegmentDamagedSnafu {
                            path,
                            offset: torn.offset,
                        });
                    }
                    log::warn!(
                        "region {id}: cut {} bytes of an incomplete write at offset {} of {} ({})",
                        torn.discarded_bytes,
                        torn.offset,
                        path.display(),
                        torn.cause
                    );
                }
                for skipped in &report.skipped {
                    log::error!(
                        "region {id}: skipped damaged bytes {}..{} of {} ({})",
                        skipped.range.start,
                        skipped.range.end,
                        path.display(),
                        skipped.cause
                    );
                }
                if let Some(len) = report.wrong_length {
                    log::error!(
                        "region {id}: {} is {len} bytes long but its header records {}; \
                     read only up to offset {}",
                        path.display(),
                        segment.header().capacity,
                        segment.capacity()
                    );
                }
                if report.past_end_bytes > 0 {
                    log::warn!(
                        "region {id}: ignored {} bytes of {} past the end recorded after a failed sync",
                        report.past_end_bytes,
                        path.display()
                    );
                }
                let handle = segment.handle();
                drop(segment);
                if tables.is_empty() {
                    // Nothing live: the segment goes, now that nothing can
                    // point at it.
                    drop(handle);
                    Segment::delete_file(&path).context(SegmentSnafu { region_id: id })?;
                    ctx.stats.segments_deleted.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                // The region is not shared yet, so nothing can race this insert
                // (see `pin`).
                ctx.cache.insert((id, segment_id), handle);
                state.segments.insert(
                    segment_id,
                    SegmentInfo {
                        tables,
                        active: None,
                        len: report.end,
                    },
                );
            }
        }
        Ok(Region {
            id,
            dir,
            writer: parking_lot::Mutex::new(Writer {
                active: None,
                active_since: None,
                writeback_from: 0,
                next_segment_id: newest.map_or(1, |n| n + 1),
                spare: None,
            }),
            next_sequence: AtomicU64::new(next_sequence),
            state: RwLock::new(state),
            starving: StarvingQueue::default(),
            meta_lock: Mutex::new(()),
            group: GroupCommit::new(id, ctx.config.yield_while_syncing),
            writing: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            dir_durable: AtomicBool::new(false),
        })
    }

    /// The next sequence number the region will assign.
    pub(crate) fn next_sequence(&self) -> u64 {
        self.next_sequence.load(Ordering::Acquire)
    }

    /// The largest sequence number ever assigned to `table_id`, 0 if none.
    pub(crate) fn sequence_num(&self, table_id: u64) -> u64 {
        let state = read(&self.state);
        state.tables.get(&table_id).map_or(0, |t| t.max_sequence)
    }

    /// Appends `entries` for `table_id` and returns the last sequence number
    /// once the batch is durable per the sync mode.
    pub(crate) fn write<E: AsRef<[u8]>>(
        &self,
        table_id: u64,
        entries: &[E],
        ctx: &Context,
    ) -> Result<u64> {
        let region_id = self.id;
        let config = &ctx.config;
        // Everything that can be refused is refused before a sequence number
        // is used.
        ensure!(
            !entries.is_empty(),
            EmptyBatchSnafu {
                region_id,
                table_id
            }
        );
        for (index, entry) in entries.iter().enumerate() {
            let len = entry.as_ref().len();
            ensure!(
                len as u64 <= config.max_entry_size_bytes,
                EntryTooLargeSnafu {
                    region_id,
                    table_id,
                    index,
                    len,
                    max: config.max_entry_size_bytes
                }
            );
        }
        let record_len = segwal_format::record_len(entries);
        let max = RECORD_HEADER_LEN as u64 + u64::from(MAX_BODY_LEN);
        ensure!(
            record_len <= max,
            BatchTooLargeSnafu {
                region_id,
                table_id,
                len: record_len,
                max
            }
        );

        if config.sync_mode != SyncMode::Always {
            return Ok(self
                .append_locked(table_id, entries, record_len, false, ctx)?
                .last);
        }
        // A writer alone in the region syncs its write in the same system
        // call (`Segment::append_durable`), holding the writer lock across
        // it. A writer that comes meanwhile waits for the lock instead of
        // appending at once, but no longer than it would have waited for
        // the next group's sync, which cannot start before this one ends.
        // With others about, a write is an append and then group commit.
        let writing = Writing::enter(&self.writing);
        let alone = writing.alone();
        let appended = self.append_locked(table_id, entries, record_len, alone, ctx)?;
        if appended.handle.durable_len() < appended.end {
            self.wait_durable(&appended.handle, appended.end, ctx)?;
        }
        Ok(appended.last)
    }

    /// Appends the batch with the writer lock: taken at once, or, for a
    /// writer kept from it for `STARVING_AFTER`, by its next holder (see
    /// `waiting.rs`).
    fn append_locked<E: AsRef<[u8]>>(
        &self,
        table_id: u64,
        entries: &[E],
        record_len: u64,
        durable: bool,
        ctx: &Context,
    ) -> Result<Appended> {
        match self.writer.try_lock_for(STARVING_AFTER) {
            Some(writer) => {
                self.append_and_release(writer, table_id, entries, record_len, durable, ctx)
            }
            None => self.append_starving(table_id, entries, record_len, ctx),
        }
    }

    /// `append` with the lock `writer`, then `release_writer`.
    fn append_and_release<E: AsRef<[u8]>>(
        &self,
        mut writer: parking_lot::MutexGuard<'_, Writer>,
        table_id: u64,
        entries: &[E],
        record_len: u64,
        durable: bool,
        ctx: &Context,
    ) -> Result<Appended> {
        let appended = self.append(&mut writer, table_id, entries, record_len, durable, ctx);
        self.release_writer(writer, ctx);
        appended
    }

    /// Numbers, encodes and writes one batch (already validated by
    /// `write`) with the writer lock held; if `durable`, makes it durable
    /// too, with everything before it, in one system call where it can
    /// (`Segment::append_durable`).
    fn append<E: AsRef<[u8]>>(
        &self,
        writer: &mut Writer,
        table_id: u64,
        entries: &[E],
        record_len: u64,
        durable: bool,
        ctx: &Context,
    ) -> Result<Appended> {
        let region_id = self.id;
        ensure!(!self.closed.load(Ordering::Acquire), ClosedSnafu);
        ensure!(
            !self.failed.load(Ordering::Acquire),
            RegionFailedSnafu { region_id }
        );
        let first = self.next_sequence.load(Ordering::Acquire);
        let count = entries.len() as u64;
        let last = first
            .checked_add(count - 1)
            .filter(|&last| last < u64::MAX)
            .ok_or_else(|| SequenceExhaustedSnafu { region_id }.build())?;
        self.ensure_room(writer, record_len, ctx)?;
        let segment = writer
            .active
            .as_mut()
            .expect("ensure_room leaves an active segment");
        let segment_id = segment.identity().segment_id;
        let batch = BatchRef {
            region_id: self.id,
            table_id,
            first_sequence: first,
            entries,
        };
        let appended = if durable {
            segment.append_durable(&batch)
        } else {
            segment.append(&batch)
        };
        // From here the numbers are used, whatever the outcome: a failed
        // write never gives them back (its bytes may yet be on disk).
        self.next_sequence.store(last + 1, Ordering::Release);
        let range = match appended {
            Ok(range) => range,
            Err(source) => {
                // The segment is poisoned and stays the active one; the
                // region refuses writes until it is closed and recovered
                // from disk, no further than its last sync if a sync failed.
                let lost_after = lost_after(&source, segment_id, segment.durable_len());
                self.record_failure(writer, ctx, lost_after);
                return Err(source).context(SegmentSnafu { region_id });
            }
        };
        if durable {
            ctx.stats.syncs.fetch_add(1, Ordering::Relaxed);
            ctx.stats.synced_writes.fetch_add(1, Ordering::Relaxed);
        }
        let handle = segment.handle();
        {
            let mut state = write(&self.state);
            let table = state.tables.entry(table_id).or_default();
            table.max_sequence = last;
            table.records.push_back(RecordLoc {
                first,
                last,
                segment_id,
                offset: range.start,
            });
            let info = state
                .segments
                .get_mut(&segment_id)
                .expect("the active segment is indexed");
            info.tables.insert(table_id, last);
        }
        ctx.stats.record_write(count, range.end - range.start);
        if ctx.config.sync_mode != SyncMode::Always
            && range.end - writer.writeback_from >= WRITEBACK_CHUNK_BYTES
        {
            let segment = writer.active.as_ref().expect("appended to it");
            writer.writeback_from = segment.start_writeback(writer.writeback_from);
            ctx.stats.writebacks.fetch_add(1, Ordering::Relaxed);
        }
        self.prepare_spare(writer, ctx);
        Ok(Appended {
            handle,
            end: range.end,
            last,
        })
    }

    /// `append` for a writer that waited [`STARVING_AFTER`] for the writer
    /// lock in vain: its batch is copied for the next holder of the lock
    /// to append, and it keeps trying the lock itself in case no other
    /// writer comes (see `waiting.rs`).
    fn append_starving<E: AsRef<[u8]>>(
        &self,
        table_id: u64,
        entries: &[E],
        record_len: u64,
        ctx: &Context,
    ) -> Result<Appended> {
        let waiter = self
            .starving
            .starve(OwnedBatch::copy(table_id, entries, record_len));
        loop {
            if let Some(appended) = self.starving.take_done(&waiter) {
                return appended;
            }
            if let Some(writer) = self.writer.try_lock() {
                if self.starving.leave(&waiter) {
                    return self
                        .append_and_release(writer, table_id, entries, record_len, false, ctx);
                }
                // A holder appended the batch (and left its outcome) between
                // the check above and this lock.
                self.release_writer(writer, ctx);
                continue;
            }
            std::thread::park_timeout(STARVING_AFTER);
        }
    }

    /// Lets go of the writer lock after a write, having first appended
    /// every starving writer's batch, oldest first.
    fn release_writer(&self, mut writer: parking_lot::MutexGuard<'_, Writer>, ctx: &Context) {
        let batches = self.starving.take();
        if batches.is_empty() {
            // The common case, kept free of the hand-over's bookkeeping.
            return;
        }
        let mut handover = Handover {
            region_id: self.id,
            starving: &self.starving,
            batches: batches.into(),
        };
        while let Some((waiter, batch)) = handover.batches.front() {
            let entries = batch.entries();
            let appended = self.append(
                &mut writer,
                batch.table_id,
                &entries,
                batch.record_len,
                false,
                ctx,
            );
            if appended.is_ok() {
                ctx.stats.starved_writes.fetch_add(1, Ordering::Relaxed);
            }
            self.starving.complete(waiter, appended);
            handover.batches.pop_front();
        }
    }

    /// Makes sure the active segment can take `record_len` more bytes: if
    /// not, syncs and seals it and puts the next one in place (sized to fit
    /// a batch larger than the configured segment size).
    fn ensure_room(&self, writer: &mut Writer, record_len: u64, ctx: &Context) -> Result<()> {
        let region_id = self.id;
        if writer
            .active
            .as_ref()
            .is_some_and(|s| s.remaining() >= record_len)
        {
            return Ok(());
        }
        if let Some(full) = &writer.active {
            // A sealed segment must be durable before anything in its
            // successor is acknowledged: recovery relies on sealed segments
            // ending cleanly. This is the one sync under the writer lock, once
            // per segment. If it fails the segment stays active (and
            // poisoned): the region refuses writes until it is recovered.
            if let Err(source) = full.sync() {
                let lost_after =
                    lost_after(&source, full.identity().segment_id, full.durable_len());
                self.record_failure(writer, ctx, lost_after);
                return Err(source).context(SegmentSnafu { region_id });
            }
            ctx.stats.syncs.fetch_add(1, Ordering::Relaxed);
            let full = writer.active.take().expect("checked above");
            self.seal(&full, ctx);
        }
        let needed = SEGMENT_HEADER_LEN as u64 + record_len;
        let segment = match self.take_spare(writer, needed, ctx) {
            Some(segment) => segment,
            None => {
                self.ensure_dir()?;
                let segment_id = writer.next_segment_id;
                writer.next_segment_id += 1;
                let capacity = ctx.config.segment_size_bytes.max(needed);
                // Under the temporary name first, as a spare is: a crash
                // during creation must not leave a half-written file under
                // a segment's name.
                let mut segment = Segment::create(
                    &self.dir.join(spare_file_name(segment_id)),
                    self.identity(segment_id),
                    capacity,
                    ctx.config.preallocation(None, ctx.memory_backed),
                )
                .context(SegmentSnafu { region_id })?;
                if let Err(source) = segment.rename(&self.dir.join(segment_file_name(segment_id))) {
                    let _ = segment.delete();
                    return Err(source).context(SegmentSnafu { region_id });
                }
                segment
            }
        };
        let segment_id = segment.identity().segment_id;
        write(&self.state).segments.insert(
            segment_id,
            SegmentInfo {
                tables: HashMap::default(),
                active: Some(segment.handle()),
                len: 0,
            },
        );
        ctx.stats.segments_created.fetch_add(1, Ordering::Relaxed);
        writer.active = Some(segment);
        writer.active_since = Some(Instant::now());
        writer.writeback_from = SEGMENT_HEADER_LEN as u64;
        Ok(())
    }

    /// Makes sure the region's directory exists durably before anything is
    /// written into it (once per open region).
    fn ensure_dir(&self) -> Result<()> {
        if !self.dir_durable.load(Ordering::Acquire) {
            disk::create_dir_all(&self.dir).context(DirectorySnafu { dir: &self.dir })?;
            self.dir_durable.store(true, Ordering::Release);
        }
        Ok(())
    }

    fn identity(&self, segment_id: u64) -> SegmentIdentity {
        SegmentIdentity {
            stream_id: self.id,
            segment_id,
        }
    }

    /// Starts preparing the next segment in the background once the active
    /// one is half full, so that a rollover finds it ready (creating a
    /// segment writes its whole length).
    fn prepare_spare(&self, writer: &mut Writer, ctx: &Context) {
        let Some(active) = &writer.active else {
            return;
        };
        if writer.spare.is_some() || active.written_len().saturating_mul(2) < active.capacity() {
            return;
        }
        let segment_id = writer.next_segment_id;
        let path = self.dir.join(spare_file_name(segment_id));
        let identity = self.identity(segment_id);
        let capacity = ctx.config.segment_size_bytes;
        let fill_rate = writer.active_since.map(|since| {
            let written = active.written_len() - SEGMENT_HEADER_LEN as u64;
            written as f64 / since.elapsed().as_secs_f64().max(1e-6)
        });
        let preallocation = ctx.config.preallocation(fill_rate, ctx.memory_backed);
        let spawned = std::thread::Builder::new()
            .name(format!("segwal-spare-{}", self.id))
            .spawn(move || Segment::create(&path, identity, capacity, preallocation));
        // Without a thread the rollover creates the segment itself.
        if let Ok(creating) = spawned {
            writer.next_segment_id += 1;
            writer.spare = Some(Spare {
                segment_id,
                creating,
            });
        }
    }

    /// The prepared segment, renamed into place, if there is one, it was
    /// created successfully and it can hold `needed` bytes. Otherwise the
    /// spare is discarded and the caller creates a segment itself.
    fn take_spare(&self, writer: &mut Writer, needed: u64, ctx: &Context) -> Option<Segment> {
        let spare = writer.spare.take()?;
        let Ok(Ok(mut segment)) = spare.creating.join() else {
            // Creation failed and removed its file; the id stays unused.
            return None;
        };
        if segment.capacity() >= needed
            && segment
                .rename(&self.dir.join(segment_file_name(spare.segment_id)))
                .is_ok()
        {
            ctx.stats.spares_used.fetch_add(1, Ordering::Relaxed);
            return Some(segment);
        }
        // Too small for this batch, or not renamed (it keeps its temporary
        // name, which recovery removes): best effort, the synchronous
        // creation that follows reports any real trouble with the disk.
        let _ = segment.delete();
        None
    }

    /// Marks the active segment `full` sealed (after its final sync) and
    /// hands its handle to the open-segment cache.
    fn seal(&self, full: &Segment, ctx: &Context) {
        let segment_id = full.identity().segment_id;
        let mut state = write(&self.state);
        if let Some(info) = state.segments.get_mut(&segment_id) {
            info.active = None;
            info.len = full.written_len();
            ctx.cache.insert((self.id, segment_id), full.handle());
        }
    }

    /// After a failed write or sync: stops the region (later writes are
    /// refused before they use a sequence number) and records the sequence
    /// floor (and every table's maximum) in the meta file, so that no
    /// restart reuses a number a failed write may have used even if its
    /// bytes are lost. Holding the writer lock (`_writer`) keeps sequence
    /// allocation still while the floor is read.
    ///
    /// After a failed sync, `lost_after` is the segment and its last good
    /// durable offset. The kernel may have dropped the writes after it while
    /// still showing them in the page cache (and may report the next sync of
    /// the file as a success), so that end is recorded too: recovery, in
    /// this process or a later one, reads nothing past it.
    ///
    /// Recording is best effort here: the caller reports the original
    /// error, and if the disk refuses this too, the region already refuses
    /// every write; an end not recorded is kept in memory and recorded by
    /// the region's next recovery, which fails if it cannot.
    fn record_failure(&self, _writer: &Writer, ctx: &Context, lost_after: Option<(u64, u64)>) {
        let first = !self.failed.swap(true, Ordering::AcqRel);
        if !first && lost_after.is_none() {
            return;
        }
        let _serial = lock(&self.meta_lock);
        if let Some((segment_id, end)) = lost_after {
            // Each report's durable offset was read after the failure, and
            // the offset only grows: the largest is the best bound.
            let raise = |ends: &mut BTreeMap<u64, u64>| {
                let recorded = ends.entry(segment_id).or_insert(end);
                *recorded = (*recorded).max(end);
            };
            raise(lock(&ctx.unrecorded_ends).entry(self.id).or_default());
            raise(&mut write(&self.state).segment_ends);
        }
        let meta = read(&self.state).meta(self.next_sequence());
        if self
            .ensure_dir()
            .and_then(|()| write_meta(&self.dir, &meta))
            .is_ok()
        {
            ctx.stats.meta_writes.fetch_add(1, Ordering::Relaxed);
            if let Some((segment_id, _)) = lost_after {
                let mut unrecorded = lock(&ctx.unrecorded_ends);
                if let Some(ends) = unrecorded.get_mut(&self.id) {
                    ends.remove(&segment_id);
                    if ends.is_empty() {
                        unrecorded.remove(&self.id);
                    }
                }
            }
        }
    }

    /// Group commit: returns once `handle` is durable up to `end`, synced
    /// by this writer if it leads, by another's sync, or by the flusher
    /// (see `group.rs`).
    fn wait_durable(&self, handle: &SegmentHandle, end: u64, ctx: &Context) -> Result<()> {
        let Some(synced) = self.group.wait(handle, end) else {
            return Ok(());
        };
        match synced.outcome {
            Ok(durable) => {
                ctx.stats.syncs.fetch_add(1, Ordering::Relaxed);
                if synced.by_flusher {
                    ctx.stats.flusher_syncs.fetch_add(1, Ordering::Relaxed);
                }
                assert!(
                    durable >= end,
                    "a sync of its own segment covers the writer it was made for"
                );
                Ok(())
            }
            Err(source) => {
                let lost_after =
                    lost_after(&source, handle.header().segment_id, handle.durable_len());
                self.record_failure(&self.writer.lock(), ctx, lost_after);
                Err(source).context(SegmentSnafu { region_id: self.id })
            }
        }
    }

    /// Syncs the active segment, if any (for `SyncMode::Interval`).
    pub(crate) fn sync_active(&self, ctx: &Context) -> Result<()> {
        let handle = self.writer.lock().active.as_ref().map(Segment::handle);
        if let Some(handle) = handle
            && handle.durable_len() < handle.written_len()
        {
            if let Err(source) = handle.sync() {
                let lost_after =
                    lost_after(&source, handle.header().segment_id, handle.durable_len());
                self.record_failure(&self.writer.lock(), ctx, lost_after);
                return Err(source).context(SegmentSnafu { region_id: self.id });
            }
            ctx.stats.syncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Syncs and seals the active segment, discards a prepared spare, and
    /// drops the region's segments from the cache; the region then holds no
    /// open file but those readers still use.
    pub(crate) fn close(&self, ctx: &Context) -> Result<()> {
        let mut writer = self.writer.lock();
        {
            // Under the state lock, so that no reader caches a handle of
            // this region after the cache is cleared below (see `pin`).
            let _state = write(&self.state);
            self.closed.store(true, Ordering::Release);
        }
        let mut result = Ok(());
        if let Some(spare) = writer.spare.take()
            && let Ok(Ok(segment)) = spare.creating.join()
        {
            result = segment.delete();
        }
        if let Some(active) = writer.active.take() {
            self.seal(&active, ctx);
            let (segment_id, durable) = (active.identity().segment_id, active.durable_len());
            if let Err(err) = active.close() {
                let lost_after = lost_after(&err, segment_id, durable);
                if lost_after.is_some() {
                    self.record_failure(&writer, ctx, lost_after);
                }
                result = result.and(Err(err));
            }
        }
        ctx.cache.remove_region(self.id);
        result.context(SegmentSnafu { region_id: self.id })
    }

    /// Deletes `table_id`'s entries up to `sequence` (clamped to the table's
    /// last sequence number), durably, then removes segments left with
    /// nothing live.
    pub(crate) fn mark_delete(&self, table_id: u64, sequence: u64, ctx: &Context) -> Result<()> {
        let _serial = lock(&self.meta_lock);
        let meta = {
            let mut state = write(&self.state);
            let Some(table) = state.tables.get_mut(&table_id) else {
                return Ok(());
            };
            let up_to = sequence.min(table.max_sequence);
            if up_to <= table.deleted_up_to {
                return Ok(());
            }
            table.deleted_up_to = up_to;
            while table.records.front().is_some_and(|r| r.last <= up_to) {
                table.records.pop_front();
            }
            state.meta(self.next_sequence())
        };
        // The mark is durable before any segment holding the entries goes,
        // so no restart can bring them back or reuse their numbers.
        self.ensure_dir()?;
        write_meta(&self.dir, &meta)?;
        ctx.stats.meta_writes.fetch_add(1, Ordering::Relaxed);

        let dead: Vec<u64> = {
            let mut state = write(&self.state);
            let RegionState {
                segments, tables, ..
            } = &mut *state;
            let ids: Vec<u64> = segments
                .iter()
                .filter(|(_, info)| {
                    info.active.is_none()
                        && info
                            .tables
                            .iter()
                            .all(|(t, &max)| tables.get(t).is_some_and(|t| t.deleted_up_to >= max))
                })
                .map(|(&id, _)| id)
                .collect();
            for id in &ids {
                segments.remove(id);
                // After the removal from the index, under its lock: no
                // reader can cache the segment again (see `pin`).
                ctx.cache.remove((self.id, *id));
            }
            ids
        };
        for segment_id in dead {
            Segment::delete_file(&self.dir.join(segment_file_name(segment_id)))
                .context(SegmentSnafu { region_id: self.id })?;
            ctx.stats.segments_deleted.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The live entries of `table_id` with sequence numbers in
    /// `[start, end]`, read lazily.
    pub(crate) fn read(
        &self,
        table_id: u64,
        start: u64,
        end: u64,
        ctx: &Context,
    ) -> Result<EntryIter> {
        let (locs, pins) = {
            let state = read(&self.state);
            let Some(table) = state.tables.get(&table_id) else {
                return Ok(EntryIter::empty());
            };
            let start = start.max(table.deleted_up_to.saturating_add(1));
            if start > end {
                return Ok(EntryIter::empty());
            }
            let from = table.records.partition_point(|r| r.last < start);
            let locs = table
                .records
                .range(from..)
                .take_while(|r| r.first <= end)
                .copied();
            visible(&state, locs, ctx.config.sync_mode)
        };
        let handles = self.pin(pins, ctx)?;
        // Marks are read again after pinning: a segment deleted meanwhile
        // held only entries at or below its tables' marks, which this skips.
        let mark = read(&self.state)
            .tables
            .get(&table_id)
            .map_or(0, |t| t.deleted_up_to);
        let start = start.max(mark.saturating_add(1));
        Ok(EntryIter::new(
            locs,
            handles,
            start,
            end,
            HashMap::default(),
        ))
    }

    /// Every live entry of the region, in ascending sequence order.
    pub(crate) fn scan(&self, ctx: &Context) -> Result<EntryIter> {
        let (mut locs, pins) = {
            let state = read(&self.state);
            let locs = state
                .tables
                .values()
                .flat_map(|t| t.records.iter().copied());
            visible(&state, locs, ctx.config.sync_mode)
        };
        locs.sort_unstable_by_key(|r| r.first);
        let handles = self.pin(pins, ctx)?;
        let deleted = read(&self.state)
            .tables
            .iter()
            .map(|(&id, t)| (id, t.deleted_up_to))
            .collect();
        Ok(EntryIter::new(locs, handles, 0, u64::MAX, deleted).populating_ahead())
    }

    /// Handles to the segments a read needs, from the cache or reopened
    /// (without holding the state lock while files are opened). A segment
    /// deleted since the snapshot is left out.
    ///
    /// Every cached handle is taken before any segment is reopened: caching
    /// a reopened segment may evict another one this read needs, and a
    /// handle already taken keeps that one mapped. Taken one at a time in
    /// order, a scan of a region with more segments than the cache holds
    /// would evict each segment just before reaching it, and reopen them
    /// all.
    fn pin(&self, pins: BTreeMap<u64, Pin>, ctx: &Context) -> Result<HashMap<u64, SegmentHandle>> {
        let mut handles = HashMap::with_capacity_and_hasher(pins.len(), Default::default());
        let mut missing = Vec::new();
        for (segment_id, pin) in pins {
            let handle = match pin {
                Pin::Open(handle) => handle,
                Pin::Sealed { len } => match ctx.cache.get((self.id, segment_id)) {
                    Some(handle) => handle,
                    None => {
                        missing.push((segment_id, len));
                        continue;
                    }
                },
            };
            handles.insert(segment_id, handle);
        }
        for (segment_id, len) in missing {
            let path = self.dir.join(segment_file_name(segment_id));
            let opened = Segment::open_sealed(&path, self.identity(segment_id), len);
            // Cached only while the segment is still indexed and the region
            // open, checked under the state lock that deletion and `close`
            // hold when they clear the cache.
            let state = read(&self.state);
            let indexed = state.segments.contains_key(&segment_id);
            let handle = match opened {
                Ok(handle) => {
                    ctx.stats.segments_reopened.fetch_add(1, Ordering::Relaxed);
                    if indexed && !self.closed.load(Ordering::Acquire) {
                        ctx.cache.insert((self.id, segment_id), handle.clone());
                    }
                    handle
                }
                Err(_) if !indexed => continue,
                Err(source) => {
                    return Err(source).context(SegmentSnafu { region_id: self.id });
                }
            };
            handles.insert(segment_id, handle);
        }
        Ok(handles)
    }
}

/// The records among `locs` that readers may see (see
/// [`SegmentInfo::visible_len`]), and the segments they lie in.
fn visible(
    state: &RegionState,
    locs: impl Iterator<Item = RecordLoc>,
    sync_mode: SyncMode,
) -> (Vec<RecordLoc>, BTreeMap<u64, Pin>) {
    let mut pins = BTreeMap::new();
    let locs = locs
        .filter(|loc| {
            let info = &state.segments[&loc.segment_id];
            if loc.offset >= info.visible_len(sync_mode) {
                return false;
            }
            pins.entry(loc.segment_id)
                .or_insert_with(|| match &info.active {
                    Some(handle) => Pin::Open(handle.clone()),
                    None => Pin::Sealed { len: info.len },
                });
            true
        })
        .collect();
    (locs, pins)
}

/// For a failed sync or synced write, or a refusal by a segment poisoned
/// by one, the segment and its last good durable offset, past which
/// nothing may be trusted (see `Region::record_failure`).
///
/// The refusal counts too because the writer that saw the failure itself
/// may not be the first to report it: a writer parked in group commit can
/// find the segment poisoned first.
fn lost_after(err: &segwal_segment::Error, segment_id: u64, durable: u64) -> Option<(u64, u64)> {
    use segwal_segment::Error::{Poisoned, Sync, WriteSynced};
    matches!(
        err,
        Sync { .. }
            | WriteSynced { .. }
            | Poisoned {
                sync_failed: true,
                ..
            }
    )
    .then_some((segment_id, durable))
}

/// A thread inside `Region::write`, counted in `Region::writing` until it
/// leaves (however it leaves).
struct Writing<'a> {
    count: &'a AtomicUsize,
    /// The count, this writer included, when it entered.
    entered_as: usize,
}

impl<'a> Writing<'a> {
    fn enter(count: &'a AtomicUsize) -> Writing<'a> {
        let entered_as = count.fetch_add(1, Ordering::AcqRel) + 1;
        Writing { count, entered_as }
    }

    /// No other writer was inside `write` when this one entered.
    fn alone(&self) -> bool {
        self.entered_as == 1
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The temporary name of a segment prepared ahead of need.
fn spare_file_name(segment_id: u64) -> String {
    format!("{}{SPARE_SUFFIX}", segment_file_name(segment_id))
}

fn is_spare_file_name(name: &str) -> bool {
    name.strip_suffix(SPARE_SUFFIX)
        .and_then(parse_segment_file_name)
        .is_some()
}

fn read_meta(dir: &Path) -> Result<RegionMeta> {
    let path = dir.join(META_FILE);
    let tmp = dir.join(META_TMP_FILE);
    // A leftover temporary file is a replacement that never completed.
    let _ = disk::remove_file(&tmp);
    match fs::read(&path) {
        Ok(bytes) => RegionMeta::decode(&bytes).context(MetaInvalidSnafu { path }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(RegionMeta::default()),
        Err(source) => Err(source).context(MetaIoSnafu { path }),
    }
}

/// Replaces the meta file atomically and durably: write a temporary file,
/// sync it, rename it over the old one, sync the directory (which must
/// exist durably already, see `disk::create_dir_all`).
fn write_meta(dir: &Path, meta: &RegionMeta) -> Result<()> {
    let path = dir.join(META_FILE);
    let tmp = dir.join(META_TMP_FILE);
    // A temporary file left by a replacement that failed half way.
    match disk::remove_file(&tmp) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            return Err(err).context(MetaIoSnafu { path: &tmp });
        }
        _ => {}
    }
    let file = disk::create_new(&tmp).context(MetaIoSnafu { path: &tmp })?;
    disk::write_at(&file, &tmp, &meta.encode(), 0).context(MetaIoSnafu { path: &tmp })?;
    disk::sync_all(&file, &tmp).context(MetaIoSnafu { path: &tmp })?;
    drop(file);
    disk::rename(&tmp, &path).context(MetaIoSnafu { path: &path })?;
    disk::sync_dir(dir).context(DirectorySnafu { dir })
}

/// `f` applied to every item, the first on this thread and each other on a
/// thread of its own; results in `items`' order.
fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let Some((first, rest)) = items.split_first() else {
        return Vec::new();
    };
    std::thread::scope(|scope| {
        let f = &f;
        let others: Vec<_> = rest
            .iter()
            .map(|item| scope.spawn(move || f(item)))
            .collect();
        let mut results = Vec::with_capacity(items.len());
        results.push(f(first));
        results.extend(
            others
                .into_iter()
                .map(|worker| worker.join().expect("segment recovery panicked")),
        );
        results
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{Error, ManagerConfig, SegmentManager};

    /// Holds region 1's writer lock while a writer on another thread waits
    /// for it until it starves, then lets go as a writer does; returns what
    /// that writer's call returned.
    fn starve_one_writer(
        manager: &Arc<SegmentManager>,
        before_release: impl FnOnce(&Region),
    ) -> Result<u64> {
        let (region, ctx) = manager.region_for_test(1);
        let held = region.writer.lock();
        let writer = {
            let manager = Arc::clone(manager);
            std::thread::spawn(move || manager.write(1, 7, &[b"starved".as_slice()]))
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while region.starving.starving() == 0 {
            assert!(Instant::now() < deadline, "the writer never starved");
            std::thread::sleep(Duration::from_millis(1));
        }
        before_release(&region);
        region.release_writer(held, ctx);
        writer.join().unwrap()
    }

    /// Proves the end of good data after a failed sync is recorded even
    /// when the region has already been marked failed by another report
    /// (a writer that found the segment poisoned first), and that of two
    /// such ends the larger, read later, is kept.
    #[test]
    fn every_report_of_a_failed_sync_records_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let manager = Arc::new(SegmentManager::open(ManagerConfig::new(dir.path())).unwrap());
        manager.write(1, 7, &[b"entry".as_slice()]).unwrap();
        let (region, ctx) = manager.region_for_test(1);
        region.record_failure(&region.writer.lock(), ctx, None);
        assert!(region.failed.load(Ordering::Acquire));
        let recorded = || {
            let meta = read_meta(&region.dir).unwrap();
            let ends: Vec<(u64, u64)> = meta
                .segment_ends
                .iter()
                .map(|e| (e.segment_id, e.end))
                .collect();
            let in_memory: Vec<(u64, u64)> = read(&region.state)
                .segment_ends
                .iter()
                .map(|(&id, &end)| (id, end))
                .collect();
            assert_eq!(ends, in_memory);
            ends
        };
        assert_eq!(recorded(), []);
        region.record_failure(&region.writer.lock(), ctx, Some((1, 100)));
        assert_eq!(recorded(), [(1, 100)]);
        region.record_failure(&region.writer.lock(), ctx, Some((1, 90)));
        assert_eq!(recorded(), [(1, 100)]);
        region.record_failure(&region.writer.lock(), ctx, Some((1, 120)));
        assert_eq!(recorded(), [(1, 120)]);
        assert!(lock(&ctx.unrecorded_ends).is_empty());
    }

    /// Proves a writer kept from the writer lock has its batch appended,
    /// numbered and made durable by the next holder of the lock, without
    /// ever taking the lock itself: the test holds the lock throughout.
    #[test]
    fn a_starving_writer_is_appended_by_the_next_holder_of_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let manager = Arc::new(SegmentManager::open(ManagerConfig::new(dir.path())).unwrap());
        manager.write(1, 8, &[b"first".as_slice()]).unwrap();
        assert_eq!(starve_one_writer(&manager, |_| {}).unwrap(), 2);
        assert_eq!(manager.statistics().starved_writes, 1);
        let mut read = Vec::new();
        let mut iter = manager.read(1, 7, 0, u64::MAX).unwrap();
        while iter
            .next_batch(16, |e| read.push((e.sequence, e.payload.to_vec())))
            .unwrap()
            > 0
        {}
        assert_eq!(read, [(2, b"starved".to_vec())]);
        drop(manager);
        let reopened = SegmentManager::open(ManagerConfig::new(dir.path())).unwrap();
        assert_eq!(reopened.sequence_num(1, 7).unwrap(), 2);
    }

    /// Proves a starving writer whose batch the holder of the lock cannot
    /// append gets the error, and no sequence number.
    #[test]
    fn a_starving_writer_gets_the_error_of_its_append() {
        let dir = tempfile::tempdir().unwrap();
        let manager = Arc::new(SegmentManager::open(ManagerConfig::new(dir.path())).unwrap());
        let refused = starve_one_writer(&manager, |region| {
            region.closed.store(true, Ordering::Release);
        });
        assert!(matches!(refused, Err(Error::Closed)), "{refused:?}");
        assert_eq!(manager.statistics().starved_writes, 0);
        assert_eq!(manager.region_for_test(1).0.next_sequence(), 1);
    }

    /// Proves that batches handed over by starving writers, across
    /// rollovers, lose nothing and keep every table's entries in order:
    /// writers race a thread that keeps taking the lock for 2 ms, so some
    /// of them starve, and 16 KiB segments roll over every few batches.
    #[test]
    fn handed_over_batches_keep_every_table_whole_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let config = ManagerConfig {
            segment_size_bytes: 16 * 1024,
            sync_mode: SyncMode::Never,
            ..ManagerConfig::new(dir.path())
        };
        let manager = Arc::new(SegmentManager::open(config).unwrap());
        let (region, ctx) = manager.region_for_test(1);
        let done = std::sync::atomic::AtomicBool::new(false);
        let holding = std::sync::atomic::AtomicBool::new(false);
        let batches_per_writer = 200u64;
        let written: Vec<Vec<u64>> = std::thread::scope(|scope| {
            scope.spawn(|| {
                // The first time, the lock is held until a writer starves,
                // however slowly the machine runs the writers.
                let held = region.writer.lock();
                holding.store(true, Ordering::Release);
                let deadline = Instant::now() + Duration::from_secs(30);
                while region.starving.starving() == 0 {
                    assert!(Instant::now() < deadline, "no writer starved");
                    std::thread::sleep(Duration::from_millis(1));
                }
                region.release_writer(held, ctx);
                while !done.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(1));
                    let held = region.writer.lock();
                    std::thread::sleep(Duration::from_millis(2));
                    region.release_writer(held, ctx);
                }
            });
            while !holding.load(Ordering::Acquire) {
                std::thread::yield_now();
            }
            let writers: Vec<_> = (0..4u64)
                .map(|table_id| {
                    let manager = &manager;
                    scope.spawn(move || {
                        (0..batches_per_writer)
                            .map(|i| {
                                let payload = format!("{table_id}:{i}:").repeat(100);
                                manager.write(1, table_id, &[payload.as_bytes()]).unwrap()
                            })
                            .collect::<Vec<u64>>()
                    })
                })
                .collect();
            let written = writers.into_iter().map(|w| w.join().unwrap()).collect();
            done.store(true, Ordering::Release);
            written
        });
        assert!(manager.statistics().starved_writes > 0);
        let mut all: Vec<u64> = written.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (1..=4 * batches_per_writer).collect::<Vec<u64>>());
        drop(region);
        drop(manager);
        let reopened = SegmentManager::open(ManagerConfig::new(dir.path())).unwrap();
        for (table_id, sequences) in (0..4u64).zip(&written) {
            let mut read = Vec::new();
            let mut iter = reopened.read(1, table_id, 0, u64::MAX).unwrap();
            while iter
                .next_batch(64, |e| read.push((e.sequence, e.payload.to_vec())))
                .unwrap()
                > 0
            {}
            let expected: Vec<(u64, Vec<u8>)> = sequences
                .iter()
                .enumerate()
                .map(|(i, &seq)| (seq, format!("{table_id}:{i}:").repeat(100).into_bytes()))
                .collect();
            assert_eq!(read, expected, "table {table_id}");
        }
    }
}
