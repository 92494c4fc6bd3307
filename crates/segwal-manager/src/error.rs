//! The manager's one error type. Messages name the data dir, region, table,
//! file or offset involved.

use std::io;
use std::path::PathBuf;

use snafu::Snafu;

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in the segment manager.
#[derive(Debug, Snafu)]
#[snafu(visibility(pub(crate)))]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is invalid. Nothing was opened or written.
    #[snafu(display("invalid configuration: {reason}"))]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },

    /// The data dir path exists but is not a directory.
    #[snafu(display("data dir {} is not a directory", dir.display()))]
    NotADirectory {
        /// The data dir.
        dir: PathBuf,
    },

    /// The directory holds no segwal lock file, so it is not a data dir
    /// (tools refuse it rather than report an empty WAL).
    #[snafu(display("{} is not a segwal data dir (it has no {} file)", dir.display(), crate::LOCK_FILE))]
    NotADataDir {
        /// The directory.
        dir: PathBuf,
    },

    /// A directory could not be created, listed or synced.
    #[snafu(display("cannot access directory {}: {source}", dir.display()))]
    Directory {
        /// The directory.
        dir: PathBuf,
        /// The OS error.
        source: io::Error,
    },

    /// Another process (or another manager in this one) has the data dir open.
    #[snafu(display(
        "data dir {} is in use by another segwal instance (lock file {} is held)",
        dir.display(), lock.display()
    ))]
    DataDirLocked {
        /// The data dir.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },

    /// A segment operation failed; the segment error names the file.
    #[snafu(display("{source}"))]
    Segment {
        /// What failed.
        source: segwal_segment::Error,
    },

    /// Writing a batch failed; the segment error names the file. The
    /// batch's sequence numbers are used (its bytes may yet be on disk).
    #[snafu(display("region {region_id} table {table_id}: {source}"))]
    Write {
        /// The region.
        region_id: u64,
        /// The table.
        table_id: u64,
        /// What failed.
        source: segwal_segment::Error,
    },

    /// The data dir's META log could not be read, written or replaced.
    #[snafu(display("META log {}: {source}", path.display()))]
    MetaIo {
        /// The META log (or its temporary replacement).
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },

    /// The META log's header is damaged or foreign.
    #[snafu(display("META log {} is invalid: {source}", path.display()))]
    MetaInvalid {
        /// The META log.
        path: PathBuf,
        /// What the decoder found.
        source: segwal_format::Error,
    },

    /// A record of the META log that was synced is damaged.
    #[snafu(display("META log {} is damaged at offset {offset}: {source}", path.display()))]
    MetaCorrupted {
        /// The META log.
        path: PathBuf,
        /// Where the damaged record starts.
        offset: u64,
        /// What the decoder found.
        source: segwal_format::Error,
    },

    /// The META log ends in an incomplete record (a crash during an append),
    /// which `RecoveryMode::Strict` refuses to drop.
    #[snafu(display(
        "META log {} ends in an incomplete record at offset {offset} (a crash during an append); \
         the strict recovery mode does not drop it",
        path.display()
    ))]
    MetaTorn {
        /// The META log.
        path: PathBuf,
        /// Where the incomplete record starts.
        offset: u64,
    },

    /// An earlier append to the META log failed, so no later one can be
    /// trusted to be durable: deletes are refused until the WAL is reopened.
    #[snafu(display(
        "META log {} refuses appends after an earlier write or sync failed ({reason}); reopen the WAL",
        path.display()
    ))]
    MetaFailed {
        /// The META log.
        path: PathBuf,
        /// The first failure.
        reason: String,
    },

    /// The data dir holds the layout of an older format version (one
    /// directory per region), which this build does not read.
    #[snafu(display(
        "{} is a segment of format version {found} (a data dir with one directory per region); \
         this build reads format version {}, and no release ever wrote version {found}, so there is no migration",
        path.display(), segwal_format::FORMAT_VERSION
    ))]
    OldLayout {
        /// A segment file of the old layout.
        path: PathBuf,
        /// The version byte in its header.
        found: u8,
    },

    /// A segment that is not the newest of its stream ends in a torn write.
    /// Sealed segments are synced before their successor is written, so
    /// this is damage, not a crash.
    #[snafu(display(
        "sealed segment {} ends in damaged data at offset {offset}: {source}",
        path.display()
    ))]
    SealedSegmentDamaged {
        /// The segment file.
        path: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// What the decoder found.
        source: segwal_format::Error,
    },

    /// A record the index points at no longer verifies.
    #[snafu(display("record at offset {offset} of segment {} does not verify: {reason}", path.display()))]
    ReadCorrupted {
        /// The segment file.
        path: PathBuf,
        /// The record's offset.
        offset: u64,
        /// What the scanner reported.
        reason: String,
    },

    /// A compressed record the index points at verified (its checksums
    /// match) but does not decompress to the entries its header declares.
    #[snafu(display(
        "record at offset {offset} of segment {} does not decompress: {source}",
        path.display()
    ))]
    Decompress {
        /// The segment file.
        path: PathBuf,
        /// The record's offset.
        offset: u64,
        /// What the decoder found.
        source: segwal_format::Error,
    },

    /// A batch with no entries was refused. No sequence number was used.
    #[snafu(display("region {region_id} table {table_id}: cannot write an empty batch"))]
    EmptyBatch {
        /// The region.
        region_id: u64,
        /// The table.
        table_id: u64,
    },

    /// An entry exceeds the configured maximum. No sequence number was used.
    #[snafu(display(
        "region {region_id} table {table_id}: entry {index} is {len} bytes, more than the maximum of {max}"
    ))]
    EntryTooLarge {
        /// The region.
        region_id: u64,
        /// The table.
        table_id: u64,
        /// The entry's position in the batch.
        index: usize,
        /// Its length.
        len: usize,
        /// The configured maximum entry size.
        max: u64,
    },

    /// A batch exceeds the format's record limit. No sequence number was used.
    #[snafu(display(
        "region {region_id} table {table_id}: batch encodes to {len} bytes, more than the limit of {max}"
    ))]
    BatchTooLarge {
        /// The region.
        region_id: u64,
        /// The table.
        table_id: u64,
        /// The encoded length.
        len: u64,
        /// The limit.
        max: u64,
    },

    /// The region has used up its sequence numbers.
    #[snafu(display("region {region_id}: sequence numbers exhausted"))]
    SequenceExhausted {
        /// The region.
        region_id: u64,
    },

    /// An earlier write or sync of the region's stream of the shared log
    /// failed. The stream refuses writes until the WAL is closed and opened
    /// again (recovered from disk); reads go on.
    #[snafu(display(
        "region {region_id}: the log refuses writes after an earlier write or sync failed; close and reopen the WAL to recover it from disk"
    ))]
    RegionFailed {
        /// The region.
        region_id: u64,
    },

    /// The manager was closed; nothing more can be done with it.
    #[snafu(display("the WAL is closed"))]
    Closed,
}

impl Error {
    /// What kind of trouble this is, as a metric label (the `errors_total`
    /// metric of the `segwal` crate): `invalid_argument` (the call or the
    /// configuration was wrong; nothing was written), `data_dir` (the dir
    /// is not a data dir of this version, or another process holds it),
    /// `io` (the operating system refused a file operation), `corruption`
    /// (bytes on disk are not what segwal wrote), `failed` (an earlier
    /// failure stopped the log until it is reopened) or `closed`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidConfig { .. }
            | Error::NotADirectory { .. }
            | Error::EmptyBatch { .. }
            | Error::EntryTooLarge { .. }
            | Error::BatchTooLarge { .. }
            | Error::SequenceExhausted { .. } => "invalid_argument",
            Error::NotADataDir { .. } | Error::DataDirLocked { .. } | Error::OldLayout { .. } => {
                "data_dir"
            }
            Error::Directory { .. } | Error::MetaIo { .. } => "io",
            Error::Segment { source } | Error::Write { source, .. } => source.kind(),
            Error::MetaInvalid { .. }
            | Error::MetaCorrupted { .. }
            | Error::MetaTorn { .. }
            | Error::SealedSegmentDamaged { .. }
            | Error::ReadCorrupted { .. }
            | Error::Decompress { .. } => "corruption",
            Error::MetaFailed { .. } | Error::RegionFailed { .. } => "failed",
            Error::Closed => "closed",
        }
    }
}
