//! The state a segment's writer and its handles share, and recovery.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use memmap2::MmapRaw;
use segwal_format::{Record, SEGMENT_HEADER_LEN, ScanEnd, Scanner, SegmentHeader, written_len};
use snafu::{ResultExt, ensure};

use crate::disk;
use crate::error::{
    ClearTailSnafu, CorruptedSnafu, PoisonedSnafu, Result, SyncSnafu, TornTailSnafu,
};

use super::options::{RecoveryMode, RecoveryReport, SkippedRange, TornTail, ZERO_CHUNK};

/// The state shared by a segment's writer and its handles.
///
/// # Invariants
///
/// - `durable <= written <= capacity <= map.len()` (`durable` is 0 only
///   for the moment between recovery and the sync that ends `open`).
///   `capacity` is the header's, or the file's length if that is smaller
///   (a cut file opened under `SkipCorrupted`).
/// - Bytes in `[0, written)` are never modified while this value exists:
///   appends write at or after `written`, and recovery clears a torn tail
///   before the first handle exists and only at or after the recovered end.
/// - The file is never truncated: its length is the header's capacity from
///   creation to deletion.
/// - Once `failed` is set it stays set. `durable` then moves at most once
///   more, for a sync that was already under way and covers only data
///   written before the failure.
/// - The file is locked (`flock`): exclusively when writable, shared when
///   read-only, so no other open in this or another process writes it.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) path: PathBuf,
    pub(super) header: SegmentHeader,
    pub(super) file: File,
    pub(super) map: MmapRaw,
    pub(super) capacity: u64,
    pub(super) writable: bool,
    /// End of the appended bytes; readers may read below it.
    pub(super) written: AtomicU64,
    /// End of the bytes covered by a completed sync.
    pub(super) durable: AtomicU64,
    /// Set by the first failed write or sync.
    pub(super) failed: AtomicBool,
    /// Set, before `failed`, if that failure was a sync's (or a synced
    /// write's).
    pub(super) sync_failed: AtomicBool,
    /// Serialises syncs, so that a sync can never report success after a
    /// concurrent one failed. Appends do not take it.
    pub(super) sync_lock: Mutex<()>,
}

impl Shared {
    /// The bytes `[start, end)` of the mapping.
    ///
    /// Callers guarantee `start <= end <= written`.
    pub(super) fn bytes(&self, start: u64, end: u64) -> &[u8] {
        assert!(start <= end && end <= self.written.load(Ordering::Acquire));
        self.bytes_unpublished(start, end)
    }

    /// The bytes `[start, end)` of the mapping, without checking them
    /// against `written`. Only recovery uses this directly, before any handle
    /// exists and before any write.
    #[allow(unsafe_code)]
    pub(super) fn bytes_unpublished(&self, start: u64, end: u64) -> &[u8] {
        assert!(start <= end && end <= self.capacity);
        let data = self.map.as_ptr().wrapping_add(start as usize);
        // SAFETY: `[start, end)` lies within the mapping (`end <= capacity
        // == map.len()`, asserted above), which lives as long as `self`
        // because the slice borrows `self`. The file is never truncated while
        // mapped (see `Shared`'s invariants; no other process writes segment
        // files, and `flock` keeps every other open of this file in segwal
        // read-only while this one writes), so the pages stay
        // valid. The bytes do not change while the slice lives: either they
        // lie below `written`, which nothing modifies, or (recovery) no write
        // happens until the slice is dropped.
        unsafe { std::slice::from_raw_parts(data, (end - start) as usize) }
    }

    /// Poisons the segment after a failed write, or a failed sync or
    /// synced write if `sync`.
    pub(super) fn fail(&self, sync: bool) {
        if sync {
            self.sync_failed.store(true, Ordering::Release);
        }
        self.failed.store(true, Ordering::Release);
    }

    pub(super) fn check_not_failed(&self) -> Result<()> {
        ensure!(
            !self.failed.load(Ordering::Acquire),
            PoisonedSnafu {
                path: &self.path,
                durable: self.durable.load(Ordering::Acquire),
                sync_failed: self.sync_failed.load(Ordering::Acquire),
            }
        );
        Ok(())
    }

    pub(super) fn sync(&self) -> Result<u64> {
        // A poisoned lock only means another sync panicked; the state it
        // protects is the atomics, which stay consistent.
        let _guard = self.sync_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.check_not_failed()?;
        let target = self.written.load(Ordering::Acquire);
        if self.durable.load(Ordering::Acquire) >= target {
            return Ok(target);
        }
        if let Err(source) = disk::sync_data(&self.file, &self.path) {
            self.fail(true);
            return Err(source).context(SyncSnafu { path: &self.path });
        }
        self.durable.fetch_max(target, Ordering::AcqRel);
        Ok(target)
    }

    /// Scans the file after the header, up to `end` if given, and applies
    /// `mode`.
    pub(super) fn recover(
        &self,
        mode: RecoveryMode,
        end: Option<u64>,
        visit: &mut impl FnMut(&Record<'_>),
    ) -> Result<RecoveryReport> {
        let base = SEGMENT_HEADER_LEN as u64;
        let limit = end.map_or(self.capacity, |end| end.clamp(base, self.capacity));
        let past_end = self.bytes_unpublished(limit, self.capacity);
        let past_end_bytes = written_len(past_end);
        let data = self.bytes_unpublished(base, limit);
        let mut scanner = Scanner::new(data, base, &self.header);
        let mut report = RecoveryReport {
            records: 0,
            end: base,
            torn_tail: None,
            skipped: Vec::new(),
            past_end_bytes: past_end_bytes as u64,
            wrong_length: None,
        };
        loop {
            for record in scanner.by_ref() {
                visit(&record);
                report.records += 1;
                report.end = record.end_offset();
            }
            match scanner.end().cloned() {
                None => unreachable!("a finished scan has an end"),
                Some(ScanEnd::Clean { offset }) => {
                    report.end = offset;
                    return Ok(report);
                }
                Some(ScanEnd::TornTail { offset, cause }) => {
                    if mode == RecoveryMode::Strict {
                        return Err(cause).context(TornTailSnafu {
                            path: &self.path,
                            offset,
                        });
                    }
                    let tail = &data[(offset - base) as usize..];
                    let nonzero = written_len(tail);
                    report.end = offset;
                    report.torn_tail = Some(TornTail {
                        offset,
                        discarded_bytes: nonzero as u64,
                        cause,
                    });
                    return Ok(report);
                }
                Some(ScanEnd::Corruption { offset, cause, .. }) => {
                    if mode != RecoveryMode::SkipCorrupted {
                        return Err(cause).context(CorruptedSnafu {
                            path: &self.path,
                            offset,
                        });
                    }
                    let range = scanner
                        .skip_corruption()
                        .expect("a corruption end can be skipped");
                    report.skipped.push(SkippedRange { range, cause });
                }
            }
        }
    }

    /// Overwrites `len` bytes at `offset` with zeros (the torn tail).
    pub(super) fn clear(&self, offset: u64, len: u64) -> Result<()> {
        let zeros = vec![0u8; ZERO_CHUNK.min(len as usize)];
        let mut at = offset;
        while at < offset + len {
            let n = (offset + len - at).min(zeros.len() as u64) as usize;
            disk::write_at(&self.file, &self.path, &zeros[..n], at).context(ClearTailSnafu {
                path: &self.path,
                offset,
            })?;
            at += n as u64;
        }
        Ok(())
    }
}
