//! The data dir's META log: what must outlive the segments that proved it.
//!
//! Delete marks, each table's largest sequence number, per-region sequence
//! floors (after a failed write) and the end of good data of a segment
//! whose sync failed. One append-only file, `META`, in the data dir
//! (docs/FORMAT.md has the bytes): a delete appends one small record, so
//! its cost does not grow with the number of tables or regions. Every value
//! merges by maximum, so the order in which entries were appended never
//! matters, and a snapshot of the merged state is as good as the log.
//!
//! Callers that append at the same time share one write and one
//! `fdatasync` (a small group commit of its own: see [`MetaLog::append`]).
//! When the file has grown to several times its snapshot, it is replaced
//! by the snapshot (temporary file, sync, rename, directory sync). It is
//! also replaced at every open, so the file a running WAL appends to was
//! always written whole by this process.
//!
//! # Invariants
//!
//! - `MetaFile::recorded` is exactly what a recovery would read from the
//!   file (every entry appended and synced, merged).
//! - After an append or a sync of the file fails, the log refuses every
//!   later append: the kernel may have dropped the failed write while
//!   showing it in the page cache, so no later sync could be trusted to
//!   cover it.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use rustc_hash::FxHashMap as HashMap;
use segwal_format::{
    MetaEntry, MetaLogEnd, decode_meta_log, encode_meta_log_header, encode_meta_record,
};
use segwal_segment::{RecoveryMode, disk};
use snafu::ResultExt;

use crate::error::{
    DirectorySnafu, MetaCorruptedSnafu, MetaFailedSnafu, MetaInvalidSnafu, MetaIoSnafu,
    MetaTornSnafu, Result,
};
use crate::locks::lock;

/// Name of the META log in the data dir.
pub const META_FILE: &str = "META";
const META_TMP_FILE: &str = "META.tmp";

/// The log is replaced by its snapshot once it is larger than this and
/// larger than [`COMPACT_RATIO`] times the snapshot.
const COMPACT_MIN_BYTES: u64 = 1 << 20;
const COMPACT_RATIO: u64 = 4;

/// What a failure's report could not record in the META log (the disk
/// refused that write too), by data dir: segment ends learnt from a failed
/// sync, and the sequence floors of the failed stream's regions. They
/// outlive the manager that learnt them: the next open of the data dir in
/// this process records them before it reads any segment, or does not
/// open.
static UNRECORDED: Mutex<BTreeMap<PathBuf, Vec<MetaEntry>>> = Mutex::new(BTreeMap::new());

/// What the META log says about one table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TableRecord {
    pub(crate) max_sequence: u64,
    pub(crate) deleted_up_to: u64,
}

/// The merged content of a META log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MetaState {
    /// By (region, table).
    pub(crate) tables: HashMap<(u64, u64), TableRecord>,
    /// By region: no sequence number below this one may be assigned again.
    pub(crate) floors: HashMap<u64, u64>,
    /// By segment: where its trustworthy records end.
    pub(crate) segment_ends: BTreeMap<u64, u64>,
}

impl MetaState {
    /// Merges one entry in: every value by maximum.
    pub(crate) fn apply(&mut self, entry: &MetaEntry) {
        match *entry {
            MetaEntry::DeleteMark {
                region_id,
                table_id,
                deleted_up_to,
            } => {
                let table = self.tables.entry((region_id, table_id)).or_default();
                table.deleted_up_to = table.deleted_up_to.max(deleted_up_to);
                // A mark never lies past the table's largest sequence.
                table.max_sequence = table.max_sequence.max(deleted_up_to);
            }
            MetaEntry::TableMax {
                region_id,
                table_id,
                max_sequence,
            } => {
                let table = self.tables.entry((region_id, table_id)).or_default();
                table.max_sequence = table.max_sequence.max(max_sequence);
            }
            MetaEntry::SequenceFloor {
                region_id,
                next_sequence,
            } => {
                let floor = self.floors.entry(region_id).or_default();
                *floor = (*floor).max(next_sequence);
            }
            MetaEntry::SegmentEnd { segment_id, end } => {
                let recorded = self.segment_ends.entry(segment_id).or_insert(end);
                *recorded = (*recorded).max(end);
            }
            _ => unreachable!("segwal-format decodes only the kinds this build writes"),
        }
    }

    /// Entries whose merge is this state, smallest first by key.
    fn snapshot(&self) -> Vec<MetaEntry> {
        let mut tables: Vec<_> = self.tables.iter().collect();
        tables.sort_unstable_by_key(|(key, _)| **key);
        let mut floors: Vec<_> = self.floors.iter().collect();
        floors.sort_unstable();
        let mut entries = Vec::with_capacity(2 * tables.len() + floors.len());
        for (&(region_id, table_id), table) in tables {
            entries.push(MetaEntry::TableMax {
                region_id,
                table_id,
                max_sequence: table.max_sequence,
            });
            if table.deleted_up_to > 0 {
                entries.push(MetaEntry::DeleteMark {
                    region_id,
                    table_id,
                    deleted_up_to: table.deleted_up_to,
                });
            }
        }
        for (&region_id, &next_sequence) in floors {
            entries.push(MetaEntry::SequenceFloor {
                region_id,
                next_sequence,
            });
        }
        for (&segment_id, &end) in &self.segment_ends {
            entries.push(MetaEntry::SegmentEnd { segment_id, end });
        }
        entries
    }
}

/// The open file and what it holds.
#[derive(Debug)]
struct MetaFile {
    file: File,
    len: u64,
    recorded: MetaState,
}

/// Callers waiting to append, and how far the file is durable.
#[derive(Debug, Default)]
struct Queue {
    /// Entries not written yet, of tickets `written..next_ticket`.
    pending: Vec<MetaEntry>,
    next_ticket: u64,
    /// Every ticket below this is durable.
    durable: u64,
    /// A caller is writing a group right now.
    writing: bool,
    /// Set by the first failed write or sync; every later append fails.
    failed: Option<String>,
}

/// The META log of a data dir, open for appending.
#[derive(Debug)]
pub(crate) struct MetaLog {
    dir: PathBuf,
    path: PathBuf,
    file: Mutex<MetaFile>,
    queue: Mutex<Queue>,
    appended: Condvar,
}

impl MetaLog {
    /// Reads the META log of `dir` (none yet is an empty log), records the
    /// segment ends this process learnt but could not record, and replaces
    /// the file by a snapshot of what it holds. A torn last record (a crash
    /// during an append) is dropped with a warning; damage before the end
    /// is an error naming the file and offset, unless `mode` skips damage.
    pub(crate) fn open(dir: &Path, mode: RecoveryMode) -> Result<(MetaLog, MetaState)> {
        let path = dir.join(META_FILE);
        let mut state = read_meta_log(&path, mode)?;
        let unrecorded = lock(&UNRECORDED).get(dir).cloned();
        for entry in unrecorded.iter().flatten() {
            state.apply(entry);
        }
        let (file, len) = write_snapshot(dir, &state)?;
        lock(&UNRECORDED).remove(dir);
        let log = MetaLog {
            dir: dir.to_path_buf(),
            path,
            file: Mutex::new(MetaFile {
                file,
                len,
                recorded: state.clone(),
            }),
            queue: Mutex::default(),
            appended: Condvar::new(),
        };
        Ok((log, state))
    }

    /// Appends `entries` durably (written and `fdatasync`ed) and returns
    /// once they are. Callers that come while a group is being written
    /// wait, and the next of them writes every entry queued meanwhile with
    /// one write and one sync.
    pub(crate) fn append(&self, entries: &[MetaEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut queue = lock(&self.queue);
        let ticket = queue.next_ticket;
        queue.next_ticket += 1;
        queue.pending.extend_from_slice(entries);
        loop {
            if queue.durable > ticket {
                return Ok(());
            }
            if let Some(reason) = &queue.failed {
                return MetaFailedSnafu {
                    path: &self.path,
                    reason: reason.clone(),
                }
                .fail();
            }
            if queue.writing {
                queue = self.appended.wait(queue).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            queue.writing = true;
            let group = std::mem::take(&mut queue.pending);
            let covers = queue.next_ticket;
            drop(queue);
            let written = self.write_group(&group);
            queue = lock(&self.queue);
            queue.writing = false;
            match &written {
                Ok(()) => queue.durable = covers,
                Err(err) => queue.failed = Some(err.to_string()),
            }
            self.appended.notify_all();
            written?;
        }
    }

    /// Writes one record holding `group` at the end of the file and syncs
    /// it; then, if the file has grown large next to what it holds,
    /// replaces it by a snapshot.
    fn write_group(&self, group: &[MetaEntry]) -> Result<()> {
        let mut file = lock(&self.file);
        let mut bytes = Vec::with_capacity(group.len() * segwal_format::META_ENTRY_LEN + 8);
        encode_meta_record(group, &mut bytes);
        let path = &self.path;
        disk::write_at(&file.file, path, &bytes, file.len).context(MetaIoSnafu { path })?;
        disk::sync_data(&file.file, path).context(MetaIoSnafu { path })?;
        file.len += bytes.len() as u64;
        for entry in group {
            file.recorded.apply(entry);
        }
        let snapshot_len = snapshot_len(&file.recorded);
        if file.len > COMPACT_MIN_BYTES && file.len > COMPACT_RATIO * snapshot_len {
            let (new_file, len) = write_snapshot(&self.dir, &file.recorded)?;
            file.file = new_file;
            file.len = len;
        }
        Ok(())
    }

    /// `TableMax` entries for every table in `tables` whose largest
    /// sequence number the log does not hold yet: what must be appended
    /// before the segments that prove those numbers are removed.
    pub(crate) fn unrecorded_maxes(
        &self,
        tables: impl IntoIterator<Item = ((u64, u64), u64)>,
    ) -> Vec<MetaEntry> {
        let file = lock(&self.file);
        tables
            .into_iter()
            .filter(|(key, max)| file.recorded.tables.get(key).map_or(0, |t| t.max_sequence) < *max)
            .map(
                |((region_id, table_id), max_sequence)| MetaEntry::TableMax {
                    region_id,
                    table_id,
                    max_sequence,
                },
            )
            .collect()
    }

    /// Forgets the ends of removed segments, so the next snapshot leaves
    /// them out.
    pub(crate) fn forget_segments(&self, segment_ids: &[u64]) {
        let mut file = lock(&self.file);
        for id in segment_ids {
            file.recorded.segment_ends.remove(id);
        }
    }

    /// Keeps `entries` for the next open of this data dir in this process,
    /// in case the append that should record them fails (see
    /// [`UNRECORDED`]); [`recorded`](MetaLog::recorded) forgets them once
    /// it succeeds.
    pub(crate) fn keep_unrecorded(&self, entries: &[MetaEntry]) {
        lock(&UNRECORDED)
            .entry(self.dir.clone())
            .or_default()
            .extend_from_slice(entries);
    }

    /// Forgets entries kept by [`keep_unrecorded`](MetaLog::keep_unrecorded)
    /// that the META log now holds.
    pub(crate) fn recorded(&self, entries: &[MetaEntry]) {
        let mut unrecorded = lock(&UNRECORDED);
        if let Some(kept) = unrecorded.get_mut(&self.dir) {
            kept.retain(|e| !entries.contains(e));
            if kept.is_empty() {
                unrecorded.remove(&self.dir);
            }
        }
    }

    /// Bytes the file takes now.
    pub(crate) fn len(&self) -> u64 {
        lock(&self.file).len
    }
}

/// The encoded size of a snapshot of `state`.
fn snapshot_len(state: &MetaState) -> u64 {
    let entries = 2 * state.tables.len() + state.floors.len() + state.segment_ends.len();
    (segwal_format::META_LOG_HEADER_LEN
        + segwal_format::META_RECORD_HEADER_LEN
        + entries * segwal_format::META_ENTRY_LEN) as u64
}

/// Reads and merges the META log at `path`; a missing file is an empty
/// log. A leftover temporary file (a replacement that never completed) is
/// removed.
pub(crate) fn read_meta_log(path: &Path, mode: RecoveryMode) -> Result<MetaState> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(MetaState::default()),
        Err(source) => return Err(source).context(MetaIoSnafu { path }),
    };
    let log = decode_meta_log(&bytes).context(MetaInvalidSnafu { path })?;
    match log.end {
        MetaLogEnd::Clean { .. } => {}
        MetaLogEnd::TornTail { offset } => {
            // As for a segment's torn tail: `Strict` wants a person to look.
            if mode == RecoveryMode::Strict {
                return MetaTornSnafu { path, offset }.fail();
            }
            log::warn!(
                "dropped an incomplete record at offset {offset} of {} (a crash during an append)",
                path.display()
            );
        }
        MetaLogEnd::Corruption { offset, cause } => {
            if mode != RecoveryMode::SkipCorrupted {
                return Err(cause).context(MetaCorruptedSnafu { path, offset });
            }
            log::error!(
                "skipped damaged records from offset {offset} of {} ({cause})",
                path.display()
            );
        }
    }
    let mut state = MetaState::default();
    for entry in &log.entries {
        state.apply(entry);
    }
    Ok(state)
}

/// Replaces `dir`'s META log by a snapshot of `state`, durably: a
/// temporary file, synced, renamed over the log, the directory synced.
/// Returns the new file (still open for appends) and its length.
fn write_snapshot(dir: &Path, state: &MetaState) -> Result<(File, u64)> {
    let path = dir.join(META_FILE);
    let tmp = dir.join(META_TMP_FILE);
    match disk::remove_file(&tmp) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            return Err(err).context(MetaIoSnafu { path: &tmp });
        }
        _ => {}
    }
    let mut bytes = encode_meta_log_header().to_vec();
    let entries = state.snapshot();
    if !entries.is_empty() {
        encode_meta_record(&entries, &mut bytes);
    }
    let file = disk::create_new(&tmp).context(MetaIoSnafu { path: &tmp })?;
    disk::write_at(&file, &tmp, &bytes, 0).context(MetaIoSnafu { path: &tmp })?;
    disk::sync_all(&file, &tmp).context(MetaIoSnafu { path: &tmp })?;
    disk::rename(&tmp, &path).context(MetaIoSnafu { path: &path })?;
    disk::sync_dir(dir).context(DirectorySnafu { dir })?;
    Ok((file, bytes.len() as u64))
}
