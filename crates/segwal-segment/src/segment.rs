//! One segment file: create, open and recover, append, sync, read, close,
//! delete.

use std::fs::{File, TryLockError};
use std::hash::{BuildHasher, Hasher};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use memmap2::{MmapOptions, MmapRaw};
use segwal_format::{
    BatchMeta, MIN_SEGMENT_CAPACITY, Record, RecordCodec, RecordEncoder, SEGMENT_HEADER_LEN,
    ScanEnd, Scanner, SegmentHeader, SegmentIdentity, written_len,
};
use snafu::{ResultExt, ensure};

use crate::disk;
use crate::error::{
    AppendPastCapacitySnafu, BadHeaderSnafu, ClearTailSnafu, CorruptedSnafu, CreateSnafu,
    DeleteSnafu, EncodeSnafu, InvalidCapacitySnafu, LockedSnafu, OpenSnafu, PoisonedSnafu,
    PreallocateSnafu, ReadOnlySnafu, ReadPastEndSnafu, RenameSnafu, Result, SyncDirSnafu,
    SyncSnafu, TornTailSnafu, WriteSnafu, WriteSyncedSnafu, WrongIdentitySnafu, WrongLengthSnafu,
};

/// File name suffix of segment files.
const SUFFIX: &str = ".seg";
/// Digits in a segment file name: enough for any `u64`, so names sort in
/// numeric order.
const NAME_DIGITS: usize = 20;
/// Size of the zero buffer used to preallocate and to clear torn tails.
const ZERO_CHUNK: usize = 1 << 20;

/// How [`Segment::create`] sets aside a new segment's blocks. Either way
/// every block is allocated before the first append, so an append never
/// fails for lack of space (and a read through the map never meets a hole).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Preallocation {
    /// Every byte past the header is written with zeros. The blocks are
    /// then ordinary written blocks, so an `fdatasync` after an append has
    /// only data to write, never the file system's metadata: the fastest
    /// synced appends, bought by writing each segment twice.
    #[default]
    Zeroed,
    /// The blocks are reserved with `fallocate` and not written: creation
    /// costs next to nothing, but on file systems that track unwritten
    /// extents (ext4, XFS) the first sync after an append into one also
    /// commits the extent's conversion to the journal. For segments that
    /// are rarely synced. Where the file system cannot reserve blocks, it
    /// falls back to [`Preallocation::Zeroed`].
    Reserved,
}

/// The file name of segment `segment_id`: twenty zero-padded digits and
/// `.seg`, so that string order is numeric order.
pub fn segment_file_name(segment_id: u64) -> String {
    format!("{segment_id:0NAME_DIGITS$}{SUFFIX}")
}

/// The segment id of a file named by [`segment_file_name`], or `None` for
/// any other name (stray files are ignored, not errors).
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What recovery does with damage it finds in a segment.
///
/// Whatever the mode, recovery never silently drops a valid record: every
/// cut and every skipped range is in the [`RecoveryReport`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecoveryMode {
    /// Any damage is an error, even an incomplete write at the tail: for
    /// deployments that want a person to look after every crash.
    Strict,
    /// An incomplete write at the tail (what a crash leaves) is cut and
    /// reported; damage to data that had been synced is an error naming the
    /// file and offset.
    #[default]
    TolerateTornTail,
    /// As `TolerateTornTail`, but damaged synced data is skipped: recovery
    /// resumes at the next valid record and reports the skipped range.
    SkipCorrupted,
}

/// How to open an existing segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOptions {
    /// What to do with damage.
    pub recovery_mode: RecoveryMode,
    /// Open for appending. A read-only segment is never modified, not even
    /// to clear a torn tail; appends to it fail.
    pub writable: bool,
    /// Where the segment's valid records end, when that is known from
    /// elsewhere (the manager records it after a failed sync: the kernel
    /// may have lost what came after while still showing it). Recovery
    /// reads nothing past it; a writable open zeroes what lies past it.
    pub end: Option<u64>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            recovery_mode: RecoveryMode::default(),
            writable: true,
            end: None,
        }
    }
}

/// A torn tail that recovery cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// Where the incomplete data began; appends continue here.
    pub offset: u64,
    /// Bytes from `offset` to the last non-zero byte of the file.
    pub discarded_bytes: u64,
    /// Why the record at `offset` did not verify.
    pub cause: segwal_format::Error,
}

/// A damaged range that [`RecoveryMode::SkipCorrupted`] skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRange {
    /// The skipped bytes.
    pub range: Range<u64>,
    /// Why the record at `range.start` did not verify.
    pub cause: segwal_format::Error,
}

/// What recovery found in a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Valid records found (and passed to the visitor).
    pub records: u64,
    /// Offset just past the last valid record: where appends continue.
    pub end: u64,
    /// The torn tail that was cut, if any.
    pub torn_tail: Option<TornTail>,
    /// Damaged ranges that were skipped (only under `SkipCorrupted`).
    pub skipped: Vec<SkippedRange>,
    /// Non-zero bytes past [`OpenOptions::end`], ignored (and zeroed by a
    /// writable open).
    pub past_end_bytes: u64,
    /// The file's length when it differs from the capacity its header
    /// records (only under `SkipCorrupted`; other modes refuse such a file).
    /// The segment was read, and is used, as if its capacity were the
    /// smaller of the two.
    pub wrong_length: Option<u64>,
}

/// One batch to append: entries for one table of one region with
/// consecutive sequence numbers starting at `first_sequence`.
#[derive(Debug, Clone, Copy)]
pub struct BatchRef<'a, E> {
    /// The region the entries belong to; the record names it, so that
    /// regions sharing a log can tell their records apart.
    pub region_id: u64,
    /// The table the entries belong to.
    pub table_id: u64,
    /// Sequence number of the first entry.
    pub first_sequence: u64,
    /// The entries' payloads.
    pub entries: &'a [E],
}

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
struct Shared {
    path: PathBuf,
    header: SegmentHeader,
    file: File,
    map: MmapRaw,
    capacity: u64,
    writable: bool,
    /// End of the appended bytes; readers may read below it.
    written: AtomicU64,
    /// End of the bytes covered by a completed sync.
    durable: AtomicU64,
    /// Set by the first failed write or sync.
    failed: AtomicBool,
    /// Set, before `failed`, if that failure was a sync's (or a synced
    /// write's).
    sync_failed: AtomicBool,
    /// Serialises syncs, so that a sync can never report success after a
    /// concurrent one failed. Appends do not take it.
    sync_lock: Mutex<()>,
}

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

/// A shared handle to an open segment: reads and syncs, never appends.
#[derive(Debug, Clone)]
pub struct SegmentHandle {
    shared: Arc<Shared>,
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
                preallocate(&file, path, header, capacity, preallocation)
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
    /// ([`Error::WriteSynced`] or [`Error::Sync`]): the record may be
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

/// Bytes of a segment's written data, shared with the mapping rather than
/// copied (see [`SegmentHandle::share`]).
///
/// They stay readable and unchanged for as long as this value (or a clone)
/// lives, even after the segment is closed or its file deleted: like a
/// [`SegmentHandle`], it keeps the file open and mapped, and so keeps a
/// deleted file's blocks in use and its lock held until it is dropped.
#[derive(Clone)]
pub struct SegmentBytes {
    shared: Arc<Shared>,
    /// `start <= end <= shared.written`: written bytes never change while
    /// `shared` lives (see `Shared`'s invariants).
    start: u64,
    end: u64,
}

impl SegmentBytes {
    /// Where the bytes lie in the segment file.
    pub fn offsets(&self) -> Range<u64> {
        self.start..self.end
    }

    /// All of the segment's written data, from offset 0 (the header) to
    /// its written end now: a wider view of the same mapping, which covers
    /// `self` and everything written before it. One of these can stand for
    /// many entries of a segment (slices of it), where a `SegmentBytes`
    /// each would cost more.
    pub fn written(&self) -> SegmentBytes {
        let end = self.shared.written.load(Ordering::Acquire);
        debug_assert!(self.end <= end, "written data never shrinks");
        SegmentBytes {
            shared: Arc::clone(&self.shared),
            start: 0,
            end,
        }
    }
}

impl AsRef<[u8]> for SegmentBytes {
    fn as_ref(&self) -> &[u8] {
        self.shared.bytes(self.start, self.end)
    }
}

impl std::ops::Deref for SegmentBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_ref()
    }
}

impl std::fmt::Debug for SegmentBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentBytes")
            .field("path", &self.shared.path)
            .field("offsets", &self.offsets())
            .finish()
    }
}

impl SegmentHandle {
    /// The segment file's path.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The segment's header.
    pub fn header(&self) -> SegmentHeader {
        self.shared.header
    }

    /// Offset just past the last appended record.
    pub fn written_len(&self) -> u64 {
        self.shared.written.load(Ordering::Acquire)
    }

    /// Offset up to which a completed sync covers the file.
    pub fn durable_len(&self) -> u64 {
        self.shared.durable.load(Ordering::Acquire)
    }

    /// Makes everything appended before this call durable (`fdatasync`)
    /// and returns the durable length.
    ///
    /// Syncs of one segment run one at a time; appends proceed meanwhile.
    /// If a sync fails, this and every later sync or append of the segment
    /// fails: after a failed `fdatasync` the kernel may have dropped the
    /// dirty pages and report the next sync as a success, so no data after
    /// the last good sync is ever reported durable.
    pub fn sync(&self) -> Result<u64> {
        self.shared.sync()
    }

    /// The bytes `[offset, offset + len)`, borrowed from the mapping without
    /// copying. They must lie within the written data.
    pub fn read(&self, offset: u64, len: u64) -> Result<&[u8]> {
        let written = self.written_len();
        ensure!(
            offset.checked_add(len).is_some_and(|end| end <= written),
            ReadPastEndSnafu {
                path: &self.shared.path,
                offset,
                len,
                written,
            }
        );
        Ok(self.shared.bytes(offset, offset + len))
    }

    /// Maps the written data now (`madvise(MADV_POPULATE_READ)`, reading
    /// it from the disk if it is not cached), so that later reads do not
    /// fault page by page. A hint that changes no data: an error (a kernel
    /// older than 5.14 refuses the advice) only means reads fault as usual.
    pub fn populate(&self) -> std::io::Result<()> {
        let written = usize::try_from(self.written_len()).expect("a mapped length fits usize");
        self.shared
            .map
            .advise_range(memmap2::Advice::PopulateRead, 0, written)
    }

    /// `bytes`, a slice of this segment's written data that this handle
    /// handed out (from [`read`](SegmentHandle::read) or a record from
    /// [`records_from`](SegmentHandle::records_from)), as a
    /// [`SegmentBytes`]: the same bytes, not copied, that stay readable for
    /// as long as the value lives.
    ///
    /// # Panics
    ///
    /// If `bytes` does not lie within this segment's written data (a bug in
    /// the caller).
    pub fn share(&self, bytes: &[u8]) -> SegmentBytes {
        let base = self.shared.map.as_ptr() as usize;
        let start = (bytes.as_ptr() as usize).wrapping_sub(base) as u64;
        let end = start.wrapping_add(bytes.len() as u64);
        assert!(
            start <= end && end <= self.written_len(),
            "a slice outside the written data of {} shared",
            self.shared.path.display()
        );
        SegmentBytes {
            shared: Arc::clone(&self.shared),
            start,
            end,
        }
    }

    /// The records from `offset` (which must be a record boundary) to the
    /// end of the written data, verified as they are read. Reading stops at
    /// the first record that fails to verify, with the scanner's
    /// [`ScanEnd`] saying why.
    pub fn records_from(&self, offset: u64) -> Result<Scanner<'_>> {
        let written = self.written_len();
        ensure!(
            (SEGMENT_HEADER_LEN as u64..=written).contains(&offset),
            ReadPastEndSnafu {
                path: &self.shared.path,
                offset,
                len: 0u64,
                written,
            }
        );
        Ok(Scanner::new(
            self.shared.bytes(offset, written),
            offset,
            &self.shared.header,
        ))
    }
}

impl Shared {
    /// The bytes `[start, end)` of the mapping.
    ///
    /// Callers guarantee `start <= end <= written`.
    fn bytes(&self, start: u64, end: u64) -> &[u8] {
        assert!(start <= end && end <= self.written.load(Ordering::Acquire));
        self.bytes_unpublished(start, end)
    }

    /// The bytes `[start, end)` of the mapping, without checking them
    /// against `written`. Only recovery uses this directly, before any handle
    /// exists and before any write.
    #[allow(unsafe_code)]
    fn bytes_unpublished(&self, start: u64, end: u64) -> &[u8] {
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
    fn fail(&self, sync: bool) {
        if sync {
            self.sync_failed.store(true, Ordering::Release);
        }
        self.failed.store(true, Ordering::Release);
    }

    fn check_not_failed(&self) -> Result<()> {
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

    fn sync(&self) -> Result<u64> {
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
    fn recover(
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
    fn clear(&self, offset: u64, len: u64) -> Result<()> {
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

/// A salt for a new segment: unpredictable to anyone who only supplies
/// payloads. `RandomState` is seeded from the operating system's random
/// source; the identity, clock and process id make each salt distinct.
fn new_salt(identity: SegmentIdentity) -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(identity.stream_id);
    hasher.write_u64(identity.segment_id);
    let now = SystemTime::now().duration_since(UNIX_EPOCH);
    hasher.write_u128(now.map_or(0, |d| d.as_nanos()));
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// Takes an exclusive (writer) or shared (reader) `flock` on the file, so
/// that no two opens can write one segment, in this process or another.
/// The lock goes with the file descriptor.
fn lock(file: &File, path: &Path, exclusive: bool) -> Result<()> {
    let locked = if exclusive {
        file.try_lock()
    } else {
        file.try_lock_shared()
    };
    match locked {
        Ok(()) => Ok(()),
        Err(TryLockError::WouldBlock) => LockedSnafu { path }.fail(),
        Err(TryLockError::Error(source)) => Err(source).context(OpenSnafu { path }),
    }
}

/// Reads and checks the header of an open segment file: valid, and naming
/// `expected`. Returns it with the file's length.
fn read_header(
    file: &File,
    path: &Path,
    expected: SegmentIdentity,
) -> Result<(SegmentHeader, u64)> {
    let len = file.metadata().context(OpenSnafu { path })?.len();
    let mut header_bytes = vec![0u8; len.min(SEGMENT_HEADER_LEN as u64) as usize];
    file.read_exact_at(&mut header_bytes, 0)
        .context(OpenSnafu { path })?;
    let found = SegmentHeader::decode(&header_bytes).context(BadHeaderSnafu { path })?;
    ensure!(
        found.identity() == expected,
        WrongIdentitySnafu {
            path,
            expected,
            found: found.identity(),
        }
    );
    Ok((found, len))
}

/// Writes the header, sets aside `capacity` bytes as `preallocation` says
/// (writing zeros where the file system cannot reserve blocks), then syncs
/// data and size.
///
/// Zeros are sent to the disk chunk by chunk as they are written
/// (`disk::start_writeback`), not left to the final sync or the kernel's
/// write-back: on a disk that the final sync would otherwise flood with a
/// whole segment at once, every `fdatasync` that writers of the active
/// segment wait for meanwhile would queue behind it. And before a chunk
/// is sent, the one before it must have reached the disk
/// (`disk::wait_writeback`): at most two chunks of zeros are ever queued
/// ahead of a writer's sync.
fn preallocate(
    file: &File,
    path: &Path,
    header: SegmentHeader,
    capacity: u64,
    preallocation: Preallocation,
) -> std::io::Result<()> {
    disk::write_at(file, path, &header.encode(), 0)?;
    let reserved = match preallocation {
        Preallocation::Zeroed => false,
        Preallocation::Reserved => match disk::allocate(file, path, capacity) {
            Ok(()) => true,
            Err(err) if err.kind() == std::io::ErrorKind::Unsupported => false,
            Err(err) => return Err(err),
        },
    };
    if !reserved {
        let zeros = vec![0u8; ZERO_CHUNK.min(capacity as usize)];
        let mut at = SEGMENT_HEADER_LEN as u64;
        let mut previous_chunk = None;
        while at < capacity {
            // Chunks end on multiples of the chunk size after the first.
            let n = (capacity - at).min(ZERO_CHUNK as u64 - at % ZERO_CHUNK as u64) as usize;
            disk::write_at(file, path, &zeros[..n], at)?;
            // Hints: a failed write-back is reported by the sync below.
            if let Some(previous) = previous_chunk {
                let _ = disk::wait_writeback(file, previous, at - previous);
            }
            let _ = disk::start_writeback(file, at, n as u64);
            previous_chunk = Some(at);
            at += n as u64;
        }
    }
    disk::sync_all(file, path)
}

/// Maps the whole file read-only. Raw, because the file is written (beyond
/// what readers see) while mapped; slices are made only over stable ranges.
fn map(file: &File, path: &Path) -> Result<MmapRaw> {
    MmapOptions::new()
        .map_raw_read_only(file)
        .context(OpenSnafu { path })
}

/// Syncs the directory holding `path`, making a creation or removal durable.
fn sync_parent_dir(path: &Path) -> Result<()> {
    disk::sync_parent(path).context(SyncDirSnafu {
        dir: path.parent().unwrap_or(Path::new(".")),
    })
}
