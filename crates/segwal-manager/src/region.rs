//! One region: its segments, its index, its writer and its delete marks.
//!
//! # Locks
//!
//! Taken only in this order, never the reverse:
//!
//! 1. `writer` — the active segment and sequence allocation. Held while a
//!    batch is encoded and written (one `pwrite`), and while a full segment
//!    is synced and sealed at rollover.
//! 2. `state` — the index, the segment set and the delete marks. Held
//!    briefly: to publish a written record, to snapshot for a read, to apply
//!    a delete mark, to pick dead segments.
//!
//! `meta_lock` serialises deletes (it is taken before `state`, and the meta
//! file is written while holding neither `writer` nor `state`). `group`
//! (group commit) is never held together with another lock, and never
//! across a sync.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use segwal_format::{
    MAX_BODY_LEN, RECORD_HEADER_LEN, RegionMeta, SEGMENT_HEADER_LEN, SegmentIdentity, TableMeta,
};
use segwal_segment::{
    BatchRef, OpenOptions, RecoveryMode, Segment, SegmentHandle, parse_segment_file_name,
    segment_file_name,
};
use snafu::{ResultExt, ensure};

use crate::config::{ManagerConfig, SyncMode};
use crate::error::{
    BatchTooLargeSnafu, ClosedSnafu, DirectorySnafu, EmptyBatchSnafu, EntryTooLargeSnafu,
    MetaInvalidSnafu, MetaIoSnafu, Result, SealedSegmentDamagedSnafu, SegmentSnafu,
    SequenceExhaustedSnafu,
};
use crate::read::{EntryIter, RecordLoc};
use crate::stats::Stats;

/// Name of the region meta file inside a region directory.
pub(crate) const META_FILE: &str = "META";
const META_TMP_FILE: &str = "META.tmp";

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
    pub(crate) handle: SegmentHandle,
    /// For each table with records here, its largest sequence number here.
    tables: HashMap<u64, u64>,
    /// False only for the segment being written.
    sealed: bool,
}

/// The index, the segment set and the delete marks.
#[derive(Debug, Default)]
pub(crate) struct RegionState {
    pub(crate) segments: BTreeMap<u64, SegmentInfo>,
    pub(crate) tables: HashMap<u64, TableState>,
}

/// The writer's side: the active segment and sequence allocation.
#[derive(Debug)]
struct Writer {
    active: Option<Segment>,
    next_segment_id: u64,
}

/// Group-commit state: whether a leader is syncing right now.
#[derive(Debug, Default)]
struct Group {
    syncing: bool,
}

/// One region of the WAL.
#[derive(Debug)]
pub(crate) struct Region {
    pub(crate) id: u64,
    dir: PathBuf,
    writer: Mutex<Writer>,
    /// The next sequence number to assign; written under `writer`, read
    /// without it (deletes record it as the floor in the meta file).
    next_sequence: AtomicU64,
    pub(crate) state: RwLock<RegionState>,
    meta_lock: Mutex<()>,
    group: Mutex<Group>,
    group_done: Condvar,
    /// Set by `close`; later writes to this object fail (the manager opens
    /// the region afresh on its next use).
    closed: AtomicBool,
}

impl Region {
    /// Opens region `id` in `dir`, which may not exist yet, rebuilding its
    /// index and sequence numbers from the segments and the meta file.
    pub(crate) fn recover(
        dir: PathBuf,
        id: u64,
        config: &ManagerConfig,
        stats: &Stats,
    ) -> Result<Region> {
        let meta = read_meta(&dir)?;
        let mut state = RegionState::default();
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
                if let Some(segment_id) =
                    entry.file_name().to_str().and_then(parse_segment_file_name)
                {
                    ids.push(segment_id);
                }
            }
        }
        ids.sort_unstable();
        let mut next_sequence = meta.next_sequence.max(1);
        let newest = ids.last().copied();
        for &segment_id in &ids {
            let path = dir.join(segment_file_name(segment_id));
            let identity = SegmentIdentity {
                region_id: id,
                segment_id,
            };
            // Only the newest segment can end in a torn write; it is opened
            // writable so the tail is cut and zeroed, but never appended to
            // again (see ARCHITECTURE.md: after a restart, appends go to a
            // fresh segment).
            let is_newest = Some(segment_id) == newest;
            let options = OpenOptions {
                recovery_mode: config.recovery_mode,
                writable: is_newest,
            };
            let mut tables: HashMap<u64, u64> = HashMap::new();
            let (segment, report) = Segment::open(&path, identity, &options, |record| {
                let (table_id, first, last) = (
                    record.table_id(),
                    record.first_sequence(),
                    record.last_sequence(),
                );
                next_sequence = next_sequence.max(last + 1);
                let table = state.tables.entry(table_id).or_default();
                table.max_sequence = table.max_sequence.max(last);
                if last > table.deleted_up_to {
                    table.records.push_back(RecordLoc {
                        first,
                        last,
                        segment_id,
                        offset: record.offset(),
                    });
                    let max = tables.entry(table_id).or_default();
                    *max = (*max).max(last);
                }
            })
            .context(SegmentSnafu { region_id: id })?;
            if let Some(torn) = report.torn_tail
                && !is_newest
                && config.recovery_mode != RecoveryMode::SkipCorrupted
            {
                return Err(torn.cause).context(SealedSegmentDamagedSnafu {
                    path,
                    offset: torn.offset,
                });
            }
            let handle = segment.handle();
            drop(segment);
            if tables.is_empty() {
                // Nothing live: the segment goes, now that nothing can
                // point at it.
                drop(handle);
                Segment::delete_file(&path).context(SegmentSnafu { region_id: id })?;
                stats.segments_deleted.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            state.segments.insert(
                segment_id,
                SegmentInfo {
                    handle,
                    tables,
                    sealed: true,
                },
            );
        }
        Ok(Region {
            id,
            dir,
            writer: Mutex::new(Writer {
                active: None,
                next_segment_id: newest.map_or(1, |n| n + 1),
            }),
            next_sequence: AtomicU64::new(next_sequence),
            state: RwLock::new(state),
            meta_lock: Mutex::new(()),
            group: Mutex::new(Group::default()),
            group_done: Condvar::new(),
            closed: AtomicBool::new(false),
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
    /// once the batch is durable per `config.sync_mode`.
    pub(crate) fn write<E: AsRef<[u8]>>(
        &self,
        table_id: u64,
        entries: &[E],
        config: &ManagerConfig,
        stats: &Stats,
    ) -> Result<u64> {
        let region_id = self.id;
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

        let (handle, end, last) = {
            let mut writer = lock(&self.writer);
            ensure!(!self.closed.load(Ordering::Acquire), ClosedSnafu);
            let first = self.next_sequence.load(Ordering::Acquire);
            let count = entries.len() as u64;
            let last = first
                .checked_add(count - 1)
                .filter(|&last| last < u64::MAX)
                .ok_or_else(|| SequenceExhaustedSnafu { region_id }.build())?;
            self.ensure_room(&mut writer, record_len, config, stats)?;
            let segment = writer
                .active
                .as_mut()
                .expect("ensure_room leaves an active segment");
            let segment_id = segment.identity().segment_id;
            let appended = segment.append(&BatchRef {
                table_id,
                first_sequence: first,
                entries,
            });
            // From here the numbers are used, whatever the outcome: a failed
            // write never gives them back.
            self.next_sequence.store(last + 1, Ordering::Release);
            let range = match appended {
                Ok(range) => range,
                Err(source) => {
                    // The segment is poisoned: seal it unsynced so the next
                    // write starts a new one. Writers still waiting on it get
                    // errors from their sync.
                    if let Some(failed) = writer.active.take() {
                        self.seal(failed.identity().segment_id);
                    }
                    return Err(source).context(SegmentSnafu { region_id });
                }
            };
            let handle = segment.handle();
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
            stats.record_write(count, range.end - range.start);
            (handle, range.end, last)
        };
        if config.sync_mode == SyncMode::Always {
            self.wait_durable(&handle, end, stats)?;
        }
        Ok(last)
    }

    /// Makes sure the active segment can take `record_len` more bytes: if
    /// not, syncs and seals it and creates the next one (sized to fit a
    /// batch larger than the configured segment size).
    fn ensure_room(
        &self,
        writer: &mut Writer,
        record_len: u64,
        config: &ManagerConfig,
        stats: &Stats,
    ) -> Result<()> {
        let region_id = self.id;
        if writer
            .active
            .as_ref()
            .is_some_and(|s| s.remaining() >= record_len)
        {
            return Ok(());
        }
        if let Some(full) = writer.active.take() {
            // A sealed segment must be durable before anything in its
            // successor is acknowledged: recovery relies on sealed segments
            // ending cleanly. This is the one sync under the writer lock, once
            // per segment.
            let synced = full.sync();
            self.seal(full.identity().segment_id);
            synced.context(SegmentSnafu { region_id })?;
            stats.syncs.fetch_add(1, Ordering::Relaxed);
        }
        fs::create_dir_all(&self.dir).context(DirectorySnafu { dir: &self.dir })?;
        let segment_id = writer.next_segment_id;
        writer.next_segment_id += 1;
        let capacity = config
            .segment_size_bytes
            .max(SEGMENT_HEADER_LEN as u64 + record_len);
        let path = self.dir.join(segment_file_name(segment_id));
        let segment = Segment::create(
            &path,
            SegmentIdentity {
                region_id,
                segment_id,
            },
            capacity,
        )
        .context(SegmentSnafu { region_id })?;
        let mut state = write(&self.state);
        state.segments.insert(
            segment_id,
            SegmentInfo {
                handle: segment.handle(),
                tables: HashMap::new(),
                sealed: false,
            },
        );
        stats.segments_created.fetch_add(1, Ordering::Relaxed);
        writer.active = Some(segment);
        Ok(())
    }

    fn seal(&self, segment_id: u64) {
        let mut state = write(&self.state);
        if let Some(info) = state.segments.get_mut(&segment_id) {
            info.sealed = true;
        }
    }

    /// Group commit: returns once `handle` is durable up to `end`. The first
    /// waiter that finds no sync running becomes the leader and syncs for
    /// everyone queued behind it; the others sleep until a sync finishes.
    fn wait_durable(&self, handle: &SegmentHandle, end: u64, stats: &Stats) -> Result<()> {
        let mut group = lock(&self.group);
        loop {
            if handle.durable_len() >= end {
                return Ok(());
            }
            if group.syncing {
                group = self
                    .group_done
                    .wait(group)
                    .unwrap_or_else(|e| e.into_inner());
                continue;
            }
            group.syncing = true;
            drop(group);
            let synced = handle.sync();
            group = lock(&self.group);
            group.syncing = false;
            self.group_done.notify_all();
            synced.context(SegmentSnafu { region_id: self.id })?;
            stats.syncs.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Syncs the active segment, if any (for `SyncMode::Interval` and
    /// closing).
    pub(crate) fn sync_active(&self, stats: &Stats) -> Result<()> {
        let handle = lock(&self.writer).active.as_ref().map(Segment::handle);
        if let Some(handle) = handle
            && handle.durable_len() < handle.written_len()
        {
            handle.sync().context(SegmentSnafu { region_id: self.id })?;
            stats.syncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Syncs and seals the active segment; the region then holds no open
    /// writer.
    pub(crate) fn close(&self) -> Result<()> {
        let mut writer = lock(&self.writer);
        self.closed.store(true, Ordering::Release);
        if let Some(active) = writer.active.take() {
            self.seal(active.identity().segment_id);
            active
                .close()
                .context(SegmentSnafu { region_id: self.id })?;
        }
        Ok(())
    }

    /// Deletes `table_id`'s entries up to `sequence` (clamped to the table's
    /// last sequence number), durably, then removes segments left with
    /// nothing live.
    pub(crate) fn mark_delete(&self, table_id: u64, sequence: u64, stats: &Stats) -> Result<()> {
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
            RegionMeta {
                next_sequence: self.next_sequence(),
                tables: state
                    .tables
                    .iter()
                    .filter(|(_, t)| t.deleted_up_to > 0)
                    .map(|(&table_id, t)| TableMeta {
                        table_id,
                        max_sequence: t.max_sequence,
                        deleted_up_to: t.deleted_up_to,
                    })
                    .collect(),
            }
        };
        // The mark is durable before any segment holding the entries goes,
        // so no restart can bring them back or reuse their numbers.
        write_meta(&self.dir, &meta)?;

        let dead: Vec<SegmentInfo> = {
            let mut state = write(&self.state);
            let RegionState { segments, tables } = &mut *state;
            let ids: Vec<u64> = segments
                .iter()
                .filter(|(_, info)| {
                    info.sealed
                        && info
                            .tables
                            .iter()
                            .all(|(t, &max)| tables.get(t).is_some_and(|t| t.deleted_up_to >= max))
                })
                .map(|(&id, _)| id)
                .collect();
            ids.iter().filter_map(|id| segments.remove(id)).collect()
        };
        for info in dead {
            let path = info.handle.path().to_owned();
            drop(info);
            Segment::delete_file(&path).context(SegmentSnafu { region_id: self.id })?;
            stats.segments_deleted.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The live entries of `table_id` with sequence numbers in
    /// `[start, end]`, read lazily.
    pub(crate) fn read(&self, table_id: u64, start: u64, end: u64) -> EntryIter {
        let state = read(&self.state);
        let Some(table) = state.tables.get(&table_id) else {
            return EntryIter::empty();
        };
        let start = start.max(table.deleted_up_to.saturating_add(1));
        if start > end {
            return EntryIter::empty();
        }
        let from = table.records.partition_point(|r| r.last < start);
        let locs: Vec<RecordLoc> = table
            .records
            .range(from..)
            .take_while(|r| r.first <= end)
            .copied()
            .collect();
        EntryIter::new(locs, &state, start, end, HashMap::new())
    }

    /// Every live entry of the region, in ascending sequence order.
    pub(crate) fn scan(&self) -> EntryIter {
        let state = read(&self.state);
        let mut locs: Vec<RecordLoc> = state
            .tables
            .values()
            .flat_map(|t| t.records.iter().copied())
            .collect();
        locs.sort_unstable_by_key(|r| r.first);
        let deleted = state
            .tables
            .iter()
            .map(|(&id, t)| (id, t.deleted_up_to))
            .collect();
        EntryIter::new(locs, &state, 0, u64::MAX, deleted)
    }
}

fn read_meta(dir: &Path) -> Result<RegionMeta> {
    let path = dir.join(META_FILE);
    let tmp = dir.join(META_TMP_FILE);
    // A leftover temporary file is a replacement that never completed.
    let _ = fs::remove_file(&tmp);
    match fs::read(&path) {
        Ok(bytes) => RegionMeta::decode(&bytes).context(MetaInvalidSnafu { path }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(RegionMeta::default()),
        Err(source) => Err(source).context(MetaIoSnafu { path }),
    }
}

/// Replaces the meta file atomically and durably: write a temporary file,
/// sync it, rename it over the old one, sync the directory.
fn write_meta(dir: &Path, meta: &RegionMeta) -> Result<()> {
    use std::io::Write;
    let path = dir.join(META_FILE);
    let tmp = dir.join(META_TMP_FILE);
    fs::create_dir_all(dir).context(DirectorySnafu { dir })?;
    let mut file = fs::File::create(&tmp).context(MetaIoSnafu { path: &tmp })?;
    file.write_all(&meta.encode())
        .context(MetaIoSnafu { path: &tmp })?;
    file.sync_all().context(MetaIoSnafu { path: &tmp })?;
    drop(file);
    fs::rename(&tmp, &path).context(MetaIoSnafu { path: &path })?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .context(DirectorySnafu { dir })
}
