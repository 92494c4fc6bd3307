//! One segment file: create, open and recover, append, sync, read, close,
//! delete. `Segment` (this file) is the writer; `handle.rs` the readers
//! (`SegmentHandle`, `SegmentBytes`); `shared.rs` the state both share and
//! recovery; `files.rs` the file itself (salt, lock, header,
//! preallocation, mapping); `options.rs` what a segment is created and
//! opened with and what recovery reports.

use std::fs::File;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use segwal_format::{
    BatchMeta, MIN_SEGMENT_CAPACITY, Record, RecordCodec, RecordEncoder, SEGMENT_HEADER_LEN,
    SegmentHeader, SegmentIdentity,
};
use snafu::{ResultExt, ensure};

use crate::disk;
use crate::error::{
    AppendPastCapacitySnafu, CreateSnafu, DeleteSnafu, EncodeSnafu, InvalidCapacitySnafu,
    OpenSnafu, PreallocateSnafu, ReadOnlySnafu, ReadPastEndSnafu, ReleaseSnafu, RenameSnafu,
    Result, WriteSnafu, WriteSyncedSnafu, WrongLengthSnafu,
};

mod files;
mod handle;
mod options;
mod shared;

use files::{lock, map, new_salt, preallocate, read_header, sync_parent_dir};
use shared::Shared;

pub use handle::{SegmentBytes, SegmentHandle};
pub use options::{
    BatchRef, OpenOptions, Preallocation, RecoveryMode, RecoveryReport, SkippedRange, TornTail,
    ZeroFillPace, parse_segment_file_name, segment_file_name,
};

/// The granularity at which [`Segment::release_unused`] gives blocks back:
/// the block size of common file systems (ext4, XFS, tmpfs pages).
pub const RELEASE_BLOCK: u64 = 4096;

/// A segment file open for appending (or read-only, see [`OpenOptions`]).
///
/// There is exactly one `Segment` per open file; appending needs `&mut`.
/// Any number of [`SegmentHandle`]s share the file for reads and syncs, and
/// stay valid after the `Segment` is closed or deleted. Closing consumes the
/// segment, so a closed segment cannot be used by mistake.
#[derive(Debug)]
pub struct Segment {
    shared: Arc<Shared>,
    encoder: RecordEncoder,
    /// Encode buffer, reused across appends.
    buf: Vec<u8>,
}

impl Segment {
    /// Creates segment file `path` for `identity` with a fresh random salt
    /// and `capacity` bytes, whose blocks are set aside as `preallocation`
    /// says, so that an append never fails for lack of space. Writes the
    /// header, syncs the file, then syncs the directory, so the segment
    /// exists durably when this returns.
    ///
    /// Fails if the file exists. On failure no file is left behind.
    pub fn create(
        path: &Path,
        identity: SegmentIdentity,
        capacity: u64,
        preallocation: Preallocation,
    ) -> Result<Segment> {
        Segment::create_paced(
            path,
            identity,
            capacity,
            preallocation,
            &ZeroFillPace::default(),
        )
    }

    /// As [`Segment::create`], with a zero-filled segment's zeros written
    /// at `pace` (see [`ZeroFillPace`]) rather than as fast as the disk
    /// takes them: for a segment prepared ahead of need, whose zeros would
    /// otherwise hold up the syncs of the segment being written meanwhile.
    pub fn create_paced(
        path: &Path,
        identity: SegmentIdentity,
        capacity: u64,
        preallocation: Preallocation,
        pace: &ZeroFillPace,
    ) -> Result<Segment> {
        ensure!(
            capacity >= MIN_SEGMENT_CAPACITY,
            InvalidCapacitySnafu {
                capacity,
                reason: "smaller than a header and one record",
            }
        );
        ensure!(
            usize::try_from(capacity).is_ok_and(|c| c <= isize::MAX as usize),
            InvalidCapacitySnafu {
                capacity,
                reason: "larger than the address space",
            }
        );
        let file = disk::create_new(path).context(CreateSnafu { path })?;
        let header = SegmentHeader {
            stream_id: identity.stream_id,
            segment_id: identity.segment_id,
            salt: new_salt(identity),
            capacity,
        };
        let result = lock(&file, path, true)
            .and_then(|()| {
                preallocate(&file, path, header, capacity, preallocation, pace)
                    .context(PreallocateSnafu { path, capacity })
            })
            .and_then(|()| sync_parent_dir(path))
            .and_then(|()| map(&file, path));
        match result {
            Ok(map) => Ok(Segment::from_parts(Shared {
                path: path.to_owned(),
                header,
                file,
                map,
                capacity,
                writable: true,
                written: AtomicU64::new(SEGMENT_HEADER_LEN as u64),
                durable: AtomicU64::new(SEGMENT_HEADER_LEN as u64),
                failed: AtomicBool::new(false),
                sync_failed: AtomicBool::new(false),
                sync_lock: Mutex::new(()),
            })),
            Err(err) => {
                // Best effort: the error being returned matters more than a
                // failure to clean up after it.
                drop(file);
                let _ = disk::remove_file(path);
                Err(err)
            }
        }
    }

    /// Opens segment file `path`, checks that its header is valid and names
    /// `expected`, locks it, and recovers it: every valid record is passed to `visit`
    /// in file order, and damage is handled per `options.recovery_mode`.
    ///
    /// A writable open cuts a torn tail (zeroing it, so no stale record can
    /// reappear behind later appends). Every open then syncs the file, so
    /// that everything recovery accepted is durable before anything is
    /// appended after it.
    ///
    /// On error, records already passed to `visit` must be disregarded.
    pub fn open(
        path: &Path,
        expected: SegmentIdentity,
        options: &OpenOptions,
        mut visit: impl FnMut(&Record<'_>),
    ) -> Result<(Segment, RecoveryReport)> {
        let file = File::options()
            .read(true)
            .write(options.writable)
            .open(path)
            .context(OpenSnafu { path })?;
        lock(&file, path, options.writable)?;
        let (found, len) = read_header(&file, path, expected)?;
        let wrong_length = (len != found.capacity).then_some(len);
        ensure!(
            wrong_length.is_none() || options.recovery_mode == RecoveryMode::SkipCorrupted,
            WrongLengthSnafu {
                path,
                len,
                capacity: found.capacity,
            }
        );
        let capacity = len.min(found.capacity);
        let map = map(&file, path)?;
        let shared = Shared {
            path: path.to_owned(),
            header: found,
            file,
            map,
            capacity,
            writable: options.writable,
            written: AtomicU64::new(SEGMENT_HEADER_LEN as u64),
            durable: AtomicU64::new(SEGMENT_HEADER_LEN as u64),
            failed: AtomicBool::new(false),
            sync_failed: AtomicBool::new(false),
            sync_lock: Mutex::new(()),
        };
        let mut report = shared.recover(options.recovery_mode, options.end, &mut visit)?;
        report.wrong_length = wrong_length;
        if options.writable {
            if let Some(torn) = &report.torn_tail {
                shared.clear(torn.offset, torn.discarded_bytes)?;
            }
            if report.past_end_bytes > 0 {
                let end = options.end.expect("bytes past an end imply one");
                shared.clear(end, report.past_end_bytes)?;
            }
        }
        shared.written.store(report.end, Ordering::Release);
        // The recovered bytes (and a cleared tail) may still be only in the
        // page cache, as a process crash leaves them. With nothing known
        // durable yet this sync always reaches the disk, and only after it
        // are later records stamped with a durable offset covering them.
        shared.durable.store(0, Ordering::Release);
        shared.sync()?;
        Ok((Segment::from_parts(shared), report))
    }

    /// Reopens, read-only and without scanning, a segment that was
    /// recovered earlier in this process and has not been written since:
    /// checks that its header is valid and names `expected`, maps it, and
    /// takes `len` (the end of its records found by that recovery) as the
    /// end of the readable data.
    ///
    /// Nothing is read beyond the header here; every record is still
    /// verified when it is read. This is how a segment evicted from an
    /// open-segment cache comes back.
    pub fn open_sealed(path: &Path, expected: SegmentIdentity, len: u64) -> Result<SegmentHandle> {
        let file = File::open(path).context(OpenSnafu { path })?;
        lock(&file, path, false)?;
        let (found, file_len) = read_header(&file, path, expected)?;
        let capacity = file_len.min(found.capacity);
        ensure!(
            (SEGMENT_HEADER_LEN as u64..=capacity).contains(&len),
            ReadPastEndSnafu {
                path,
                offset: 0u64,
                len,
                written: capacity,
            }
        );
        let map = map(&file, path)?;
        Ok(SegmentHandle {
            shared: Arc::new(Shared {
                path: path.to_owned(),
                header: found,
                file,
                map,
                capacity,
                writable: false,
                written: AtomicU64::new(len),
                durable: AtomicU64::new(len),
                failed: AtomicBool::new(false),
                sync_failed: AtomicBool::new(false),
                sync_lock: Mutex::new(()),
            }),
        })
    }

    fn from_parts(shared: Shared) -> Segment {
        Segment {
            encoder: RecordEncoder::new(&shared.header),
            shared: Arc::new(shared),
            buf: Vec::new(),
        }
    }

    /// Renames the segment file to `to` and syncs the directory, so the new
    /// name is durable when this returns. This is how a segment prepared
    /// ahead of need under a temporary name is put in place: appends to it
    /// must not be acknowledged before its final name is durable.
    ///
    /// Only a segment without handles can be renamed (a handle reports the
    /// path it was made with); this panics otherwise.
    pub fn rename(&mut self, to: &Path) -> Result<()> {
        let shared = Arc::get_mut(&mut self.shared)
            .expect("a segment is renamed before any handle to it exists");
        disk::rename(&shared.path, to).context(RenameSnafu {
            from: &shared.path,
            to,
        })?;
        shared.path = to.to_owned();
        sync_parent_dir(to)
    }

    /// A shared handle for reads and syncs.
    pub fn handle(&self) -> SegmentHandle {
        SegmentHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The segment file's path.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The segment's header.
    pub fn header(&self) -> SegmentHeader {
        self.shared.header
    }

    /// The stream and segment ids in the segment's header.
    pub fn identity(&self) -> SegmentIdentity {
        self.shared.header.identity()
    }

    /// Total size of the file in bytes.
    pub fn capacity(&self) -> u64 {
        self.shared.capacity
    }

    /// Offset just past the last appended record.
    pub fn written_len(&self) -> u64 {
        self.shared.written.load(Ordering::Acquire)
    }

    /// Offset up to which a completed sync covers the file.
    pub fn durable_len(&self) -> u64 {
        self.shared.durable.load(Ordering::Acquire)
    }

    /// Bytes left for appends.
    pub fn remaining(&self) -> u64 {
        self.shared.capacity - self.written_len()
    }

    /// Has records appended from now on compressed with `codec` where
    /// that makes them shorter (see `RecordEncoder::with_codec`). Each
    /// record says how it is stored, so a segment may hold both kinds.
    pub fn set_codec(&mut self, codec: RecordCodec) {
        self.encoder = self.encoder.with_codec(codec);
    }

    /// The encoded size of a batch of `entries` without compression, to
    /// check whether it fits before choosing a segment for it: an upper
    /// bound on what an append of it takes. Fails for an empty or
    /// oversized batch.
    pub fn encoded_len<E: AsRef<[u8]>>(&self, entries: &[E]) -> Result<u64> {
        let len = self
            .encoder
            .encoded_len(entries)
            .context(EncodeSnafu { path: self.path() })?;
        Ok(len as u64)
    }

    /// Appends one batch as one record and returns the record's range. See
    /// [`Segment::append_batches`].
    pub fn append<E: AsRef<[u8]>>(&mut self, batch: &BatchRef<'_, E>) -> Result<Range<u64>> {
        self.write_records(std::slice::from_ref(batch), false, |_| {})
    }

    /// Appends `batch` as one record, like [`append`](Segment::append), and
    /// returns once it and everything appended before it is durable.
    ///
    /// When everything before it is durable already, the write carries its
    /// own sync: one system call (`pwritev2` with `RWF_DSYNC`) instead of a
    /// write and an `fdatasync`, which is most of what a synced write of a
    /// single writer costs when the medium itself is fast. Otherwise it is
    /// an append and then a [`sync`](Segment::sync).
    ///
    /// A failure poisons the segment as a failed sync does
    /// ([`Error::WriteSynced`](crate::Error::WriteSynced) or [`Error::Sync`](crate::Error::Sync)): the record may be
    /// readable in the page cache without being on the disk.
    pub fn append_durable<E: AsRef<[u8]>>(
        &mut self,
        batch: &BatchRef<'_, E>,
    ) -> Result<Range<u64>> {
        let shared = &*self.shared;
        let all_durable =
            shared.durable.load(Ordering::Acquire) == shared.written.load(Ordering::Acquire);
        if !all_durable {
            let range = self.append(batch)?;
            self.sync()?;
            return Ok(range);
        }
        let range = self.write_records(std::slice::from_ref(batch), true, |_| {})?;
        self.shared.durable.fetch_max(range.end, Ordering::AcqRel);
        Ok(range)
    }

    /// Appends `batches`, one record each, with a single write at the write
    /// offset, pushes each record's range onto `placed` and returns the range
    /// of the whole write.
    ///
    /// The data is readable through handles when this returns, and durable
    /// after the next successful [`sync`](Segment::sync). Every batch is
    /// encoded and checked against the remaining space before anything is
    /// written, so an encoding error or a full segment writes nothing. A
    /// failed write poisons the segment: part of it may have reached the
    /// file, and later appends must not be placed after an unknown tail.
    pub fn append_batches<E: AsRef<[u8]>>(
        &mut self,
        batches: &[BatchRef<'_, E>],
        placed: &mut Vec<Range<u64>>,
    ) -> Result<Range<u64>> {
        let before = placed.len();
        self.write_records(batches, false, |range| placed.push(range))
            .inspect_err(|_| placed.truncate(before))
    }

    /// Encodes `batches` and writes them with one `pwrite` (one that also
    /// syncs what it writes if `synced`), reporting each record's range to
    /// `on_record` (before the write; on error the caller discards them).
    fn write_records<E: AsRef<[u8]>>(
        &mut self,
        batches: &[BatchRef<'_, E>],
        synced: bool,
        mut on_record: impl FnMut(Range<u64>),
    ) -> Result<Range<u64>> {
        let shared = &*self.shared;
        ensure!(shared.writable, ReadOnlySnafu { path: &shared.path });
        shared.check_not_failed()?;
        let offset = shared.written.load(Ordering::Acquire);
        let durable_offset = shared.durable.load(Ordering::Acquire);
        // Sizes first (cheap, and it validates each batch), so that a group
        // that cannot fit is refused before anything is encoded. They are
        // uncompressed sizes, an upper bound on the encoded ones.
        let mut len = 0u64;
        for batch in batches {
            len += self
                .encoder
                .encoded_len(batch.entries)
                .context(EncodeSnafu { path: &shared.path })? as u64;
        }
        ensure!(
            len <= shared.capacity - offset,
            AppendPastCapacitySnafu {
                path: &shared.path,
                offset,
                len,
                capacity: shared.capacity,
            }
        );
        self.buf.clear();
        for batch in batches {
            let meta = BatchMeta {
                region_id: batch.region_id,
                table_id: batch.table_id,
                first_sequence: batch.first_sequence,
                durable_offset,
            };
            let range = self
                .encoder
                .encode(&meta, batch.entries, &mut self.buf)
                .context(EncodeSnafu { path: &shared.path })?;
            on_record(offset + range.start as u64..offset + range.end as u64);
        }
        debug_assert!(self.buf.len() as u64 <= len);
        let len = self.buf.len() as u64;
        if synced {
            if let Err(source) =
                disk::write_at_synced(&shared.file, &shared.path, &self.buf, offset)
            {
                shared.fail(true);
                return Err(source).context(WriteSyncedSnafu {
                    path: &shared.path,
                    offset,
                    len,
                });
            }
        } else if let Err(source) = disk::write_at(&shared.file, &shared.path, &self.buf, offset) {
            shared.fail(false);
            return Err(source).context(WriteSnafu {
                path: &shared.path,
                offset,
                len,
            });
        }
        shared.written.store(offset + len, Ordering::Release);
        Ok(offset..offset + len)
    }

    /// Starts writing the appended bytes from `from` on to the disk, without
    /// waiting and without making them durable, and returns the offset it
    /// covered up to (the written length). Segments filled without syncs
    /// (`SyncMode::Never`, `Interval`) call this as they fill, so that the
    /// sync at rollover, and the disk, do not face the whole segment at once.
    ///
    /// A hint: errors are ignored here, since a write-back that fails is
    /// reported by the next [`sync`](Segment::sync).
    pub fn start_writeback(&self, from: u64) -> u64 {
        let written = self.shared.written.load(Ordering::Acquire);
        if from < written {
            let _ = disk::start_writeback(&self.shared.file, from, written - from);
        }
        written
    }

    /// Makes everything appended so far durable (`fdatasync`) and returns
    /// the durable length. See [`SegmentHandle::sync`].
    pub fn sync(&self) -> Result<u64> {
        self.shared.sync()
    }

    /// Syncs and closes the segment. Handles keep the file open for their
    /// reads until they are dropped.
    pub fn close(self) -> Result<()> {
        if self.shared.writable {
            self.shared.sync()?;
        }
        Ok(())
    }

    /// Removes the segment's file and syncs its directory, so the removal is
    /// durable when this returns. Handles may still read from the mapping.
    pub fn delete(self) -> Result<()> {
        let path = self.shared.path.clone();
        drop(self);
        Segment::delete_file(&path)
    }

    /// Ends appends for good and gives back the file system blocks past
    /// the records: every whole [`RELEASE_BLOCK`] from the first one after
    /// the last record to the end of the file, whose length stays the
    /// capacity. A segment sealed long before it is full (its log closed,
    /// or left for a better-prepared successor) then holds only the disk
    /// its records need. The range held no record, so it reads as zeros
    /// before and after, and recovery finds the same records either way;
    /// the hole need not be durable (a power loss may bring the blocks
    /// back, never other bytes). Returns the bytes that stay allocated,
    /// at most the capacity.
    ///
    /// Where the file system cannot give blocks back, nothing changes and
    /// the whole capacity stays allocated. Any other failure is reported;
    /// the records are untouched.
    pub fn release_unused(self) -> Result<u64> {
        let capacity = self.shared.capacity;
        let from = self
            .written_len()
            .next_multiple_of(RELEASE_BLOCK)
            .min(capacity);
        if from == capacity || !self.shared.writable {
            return Ok(capacity);
        }
        let path = &self.shared.path;
        match disk::deallocate(&self.shared.file, path, from, capacity - from) {
            Ok(()) => Ok(from),
            Err(err) if err.kind() == std::io::ErrorKind::Unsupported => Ok(capacity),
            Err(source) => Err(source).context(ReleaseSnafu { path, offset: from }),
        }
    }

    /// The bytes of disk the file holds (its allocated blocks), at most
    /// its capacity: less once [`Segment::release_unused`] gave some back.
    pub fn allocated_bytes(&self) -> u64 {
        let capacity = self.shared.capacity;
        self.shared
            .file
            .metadata()
            .map_or(capacity, |m| disk::allocated_bytes(&m).min(capacity))
    }

    /// Removes a segment file that is not open here, and syncs its
    /// directory.
    pub fn delete_file(path: &Path) -> Result<()> {
        disk::remove_file(path).context(DeleteSnafu { path })?;
        sync_parent_dir(path)
    }
}

impl Drop for Segment {
    /// The writer is gone: its exclusive lock becomes a shared one, held as
    /// long as handles keep the file open, so that a later read-only open
    /// of the file (the recovery of a closed region, while a reader from
    /// before the close still holds a handle) is not refused.
    fn drop(&mut self) {
        if self.shared.writable {
            // Converting a lock this descriptor holds exclusively cannot
            // wait for another holder; a failure leaves it exclusive, which
            // only makes a later open report "locked".
            let _ = self.shared.file.lock_shared();
        }
    }
}
