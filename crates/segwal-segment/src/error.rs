//! The segment crate's one error type. Every variant names the file.

use std::io;
use std::path::PathBuf;

use segwal_format::SegmentIdentity;
use snafu::Snafu;

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong with a segment file.
#[derive(Debug, Snafu)]
#[snafu(visibility(pub(crate)))]
#[non_exhaustive]
pub enum Error {
    /// The requested capacity cannot hold a segment.
    #[snafu(display("invalid segment capacity {capacity} bytes: {reason}"))]
    InvalidCapacity {
        /// The capacity asked for.
        capacity: u64,
        /// Why it is refused.
        reason: &'static str,
    },

    /// Creating the segment file failed (it may already exist).
    #[snafu(display("cannot create segment {}: {source}", path.display()))]
    Create {
        /// The segment file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },

    /// Writing the zero-filled body of a new segment, or reserving its
    /// blocks, failed; on a full disk this is `ENOSPC`. The partial file has
    /// been removed.
    #[snafu(display("cannot preallocate {capacity} bytes for segment {}: {source}", path.display()))]
    Preallocate {
        /// The segment file.
        path: PathBuf,
        /// The capacity asked for.
        capacity: u64,
        /// The OS error.
        source: io::Error,
    },

    /// Giving back the blocks past a sealed segment's records failed. The
    /// records are untouched; the blocks may stay allocated.
    #[snafu(display(
        "cannot give back the blocks of segment {} past offset {offset}: {source}",
        path.display()
    ))]
    Release {
        /// The segment file.
        path: PathBuf,
        /// Where the blocks given back were to start.
        offset: u64,
        /// The OS error.
        source: io::Error,
    },

    /// Syncing a directory after creating or removing a file in it failed.
    #[snafu(display("cannot sync directory {}: {source}", dir.display()))]
    SyncDir {
        /// The directory.
        dir: PathBuf,
        /// The OS error.
        source: io::Error,
    },

    /// Opening, reading or mapping an existing segment file failed.
    #[snafu(display("cannot open segment {}: {source}", path.display()))]
    Open {
        /// The segment file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },

    /// The file's header is not a valid segment header of this version.
    #[snafu(display("segment {} has an invalid header: {source}", path.display()))]
    BadHeader {
        /// The segment file.
        path: PathBuf,
        /// What is wrong with the header.
        source: segwal_format::Error,
    },

    /// The header is valid but names another stream or segment than the
    /// file's place says: a file copied or renamed by mistake.
    #[snafu(display(
        "segment {} belongs to stream {} segment {}, expected stream {} segment {}",
        path.display(), found.stream_id, found.segment_id, expected.stream_id, expected.segment_id
    ))]
    WrongIdentity {
        /// The segment file.
        path: PathBuf,
        /// The identity its place implies.
        expected: SegmentIdentity,
        /// The identity its header holds.
        found: SegmentIdentity,
    },

    /// Another open of the file holds a conflicting lock: it is open for
    /// writing elsewhere, or open for reading while a writer asked for it.
    #[snafu(display(
        "segment {} is locked by another open (in this process or another)",
        path.display()
    ))]
    Locked {
        /// The segment file.
        path: PathBuf,
    },

    /// The file's length is not the capacity its header records: it was cut
    /// (or extended) after creation, which no crash does. Refused unless
    /// the recovery mode is
    /// [`RecoveryMode::SkipCorrupted`](crate::RecoveryMode::SkipCorrupted).
    #[snafu(display(
        "segment {} ends at offset {len} but its header records a length of {capacity} bytes \
         (the file was {}, and records past offset {} may be lost)",
        path.display(),
        if len < capacity { "cut short" } else { "extended" },
        len.min(capacity)
    ))]
    WrongLength {
        /// The segment file.
        path: PathBuf,
        /// The file's length.
        len: u64,
        /// The length its header records.
        capacity: u64,
    },

    /// Recovery found damage to data that had been synced.
    #[snafu(display("segment {} is corrupted at offset {offset}: {source}", path.display()))]
    Corrupted {
        /// The segment file.
        path: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// What the decoder found.
        source: segwal_format::Error,
    },

    /// Recovery found an incomplete write at the tail and the recovery mode
    /// is [`RecoveryMode::Strict`](crate::RecoveryMode::Strict).
    #[snafu(display(
        "segment {} has a torn tail at offset {offset} (refused by strict recovery): {source}",
        path.display()
    ))]
    TornTail {
        /// The segment file.
        path: PathBuf,
        /// Where the incomplete data starts.
        offset: u64,
        /// What the decoder found.
        source: segwal_format::Error,
    },

    /// Zeroing a torn tail during recovery failed.
    #[snafu(display("cannot clear the torn tail of segment {} at offset {offset}: {source}", path.display()))]
    ClearTail {
        /// The segment file.
        path: PathBuf,
        /// Where the torn tail starts.
        offset: u64,
        /// The OS error.
        source: io::Error,
    },

    /// A batch could not be encoded (empty, or too large).
    #[snafu(display("cannot encode a batch for segment {}: {source}", path.display()))]
    Encode {
        /// The segment file.
        path: PathBuf,
        /// What the encoder refused.
        source: segwal_format::Error,
    },

    /// The batches do not fit in the space left in the segment. Nothing was
    /// written.
    #[snafu(display(
        "segment {} is full: {len} bytes do not fit at offset {offset} of {capacity}",
        path.display()
    ))]
    AppendPastCapacity {
        /// The segment file.
        path: PathBuf,
        /// The write offset.
        offset: u64,
        /// The bytes to append.
        len: u64,
        /// The segment's capacity.
        capacity: u64,
    },

    /// Writing to the segment failed. The segment refuses further writes.
    #[snafu(display("cannot write {len} bytes to segment {} at offset {offset}: {source}", path.display()))]
    Write {
        /// The segment file.
        path: PathBuf,
        /// The write offset.
        offset: u64,
        /// The bytes that were to be written.
        len: u64,
        /// The OS error.
        source: io::Error,
    },

    /// A write that was to sync itself failed, in the write or in its
    /// sync: the bytes may be readable without being on the disk, so, as
    /// after a failed sync, nothing past the last successful sync may be
    /// assumed durable, and the segment refuses further work.
    #[snafu(display(
        "cannot write and sync {len} bytes to segment {} at offset {offset}: {source}",
        path.display()
    ))]
    WriteSynced {
        /// The segment file.
        path: PathBuf,
        /// The write offset.
        offset: u64,
        /// The bytes that were to be written.
        len: u64,
        /// The OS error.
        source: io::Error,
    },

    /// Syncing the segment failed: nothing written since the last successful
    /// sync may be assumed durable, and the segment refuses further work.
    #[snafu(display("cannot sync segment {}: {source}", path.display()))]
    Sync {
        /// The segment file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },

    /// An earlier write or sync of this segment failed; after that the
    /// kernel may have dropped the data while reporting later syncs as
    /// successful, so the segment accepts no more writes or syncs.
    #[snafu(display(
        "segment {} is unusable after an earlier failed {} (durable up to offset {durable})",
        path.display(),
        if *sync_failed { "sync" } else { "write" }
    ))]
    Poisoned {
        /// The segment file.
        path: PathBuf,
        /// The offset up to which data was synced before the failure.
        durable: u64,
        /// Whether the failure was a sync's (or a synced write's): then
        /// nothing past `durable` may be trusted, whatever the page cache
        /// shows. After a failed plain write, data synced or not before it
        /// is as good as it was.
        sync_failed: bool,
    },

    /// The segment was opened read-only.
    #[snafu(display("segment {} is open read-only", path.display()))]
    ReadOnly {
        /// The segment file.
        path: PathBuf,
    },

    /// A read asked for bytes beyond the written data.
    #[snafu(display(
        "read of {len} bytes at offset {offset} is past the end of segment {} (written up to {written})",
        path.display()
    ))]
    ReadPastEnd {
        /// The segment file.
        path: PathBuf,
        /// The requested offset.
        offset: u64,
        /// The requested length.
        len: u64,
        /// How far the segment is written.
        written: u64,
    },

    /// Removing the segment file failed.
    #[snafu(display("cannot delete segment {}: {source}", path.display()))]
    Delete {
        /// The segment file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },

    /// Renaming the segment file failed; it keeps its old name.
    #[snafu(display("cannot rename segment {} to {}: {source}", from.display(), to.display()))]
    Rename {
        /// The current name.
        from: PathBuf,
        /// The new name.
        to: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

impl Error {
    /// What kind of trouble this is, as a metric label: `invalid_argument`
    /// (the call was wrong; nothing was written), `io` (the operating
    /// system refused a file operation), `corruption` (bytes on disk are
    /// not what segwal wrote), `failed` (an earlier failure poisoned the
    /// segment) or `data_dir` (another process holds the file).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidCapacity { .. }
            | Error::Encode { .. }
            | Error::AppendPastCapacity { .. }
            | Error::ReadOnly { .. }
            | Error::ReadPastEnd { .. } => "invalid_argument",
            Error::BadHeader { .. }
            | Error::WrongIdentity { .. }
            | Error::WrongLength { .. }
            | Error::Corrupted { .. }
            | Error::TornTail { .. } => "corruption",
            Error::Poisoned { .. } => "failed",
            Error::Locked { .. } => "data_dir",
            Error::Create { .. }
            | Error::Preallocate { .. }
            | Error::Release { .. }
            | Error::SyncDir { .. }
            | Error::Open { .. }
            | Error::ClearTail { .. }
            | Error::Write { .. }
            | Error::WriteSynced { .. }
            | Error::Sync { .. }
            | Error::Delete { .. }
            | Error::Rename { .. } => "io",
        }
    }
}
