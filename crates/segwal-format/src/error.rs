//! The format crate's one error type. Every variant is pure data (no
//! `io::Error`); record errors carry the file offset of the record.

use snafu::Snafu;

use crate::header::{FORMAT_VERSION, MAGIC, MIN_SEGMENT_CAPACITY, SEGMENT_HEADER_LEN};
use crate::metalog::{META_LOG_HEADER_LEN, META_LOG_MAGIC};

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can be wrong with bytes handed to the codec.
///
/// Offsets are byte offsets within the file the bytes come from: a segment
/// or the meta log.
#[derive(Debug, Clone, PartialEq, Eq, Snafu)]
#[snafu(visibility(pub(crate)))]
#[non_exhaustive]
pub enum Error {
    /// The input is shorter than a segment header.
    #[snafu(display("segment header is truncated: {len} bytes, expected {SEGMENT_HEADER_LEN}"))]
    ShortSegmentHeader {
        /// How many bytes there were.
        len: usize,
    },

    /// The first eight bytes are not segwal's magic: not a segwal segment.
    #[snafu(display(
        "not a segwal segment: magic bytes are {found:02x?}, expected {:02x?}",
        MAGIC
    ))]
    BadMagic {
        /// The bytes found where the magic belongs.
        found: [u8; 8],
    },

    /// The file (a segment or a meta file) was written by a format version
    /// this build cannot read. The layer that read it adds the file's path.
    #[snafu(display(
        "unsupported format version {found} (this build reads version {FORMAT_VERSION})"
    ))]
    UnsupportedVersion {
        /// The version byte found in the file's header.
        found: u8,
    },

    /// The segment header's checksum does not match its bytes.
    #[snafu(display(
        "segment header checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
    ))]
    SegmentHeaderChecksum {
        /// The checksum stored in the header.
        stored: u32,
        /// The checksum of the header bytes as read.
        computed: u32,
    },

    /// Reserved header bytes are not zero, although the checksum matches:
    /// a writer from a newer format revision set flags this build ignores.
    #[snafu(display("segment header has non-zero reserved bytes {found:02x?}"))]
    SegmentHeaderReserved {
        /// The reserved bytes as found.
        found: [u8; 3],
    },

    /// The header's checksum matches but its capacity cannot hold a header
    /// and one record (see `MIN_SEGMENT_CAPACITY`).
    #[snafu(display(
        "segment header records a capacity of {capacity} bytes, below the minimum of {MIN_SEGMENT_CAPACITY}"
    ))]
    SegmentCapacityTooSmall {
        /// The capacity as found.
        capacity: u64,
    },

    /// A batch with no entries cannot be encoded.
    #[snafu(display("cannot encode an empty batch"))]
    EmptyBatch,

    /// A batch's encoded body would exceed the size limit.
    #[snafu(display(
        "batch of {entries} entries encodes to {len} bytes, more than the limit of {max}"
    ))]
    BatchTooLarge {
        /// Number of entries in the batch.
        entries: usize,
        /// Encoded body length in bytes.
        len: u64,
        /// The limit in force.
        max: u32,
    },

    /// Sequence numbers of a batch must lie in `1..u64::MAX`.
    #[snafu(display(
        "sequence numbers {first}..{first}+{count} fall outside 1..{}",
        u64::MAX
    ))]
    SequenceOutOfRange {
        /// First sequence number of the batch.
        first: u64,
        /// Number of entries.
        count: u64,
    },

    /// Fewer bytes remain than the record at `offset` needs.
    #[snafu(display(
        "record at offset {offset} is truncated: needs {needed} bytes, {available} remain"
    ))]
    Truncated {
        /// Segment offset of the record.
        offset: u64,
        /// Bytes the record needs (header, or header plus body).
        needed: u64,
        /// Bytes that remain from `offset`.
        available: u64,
    },

    /// The record header's checksum does not match: nothing in it, not even
    /// its length, can be trusted.
    #[snafu(display(
        "record header checksum mismatch at offset {offset}: stored {stored:#010x}, computed {computed:#010x}"
    ))]
    RecordHeaderChecksum {
        /// Segment offset of the record.
        offset: u64,
        /// The checksum stored in the record header.
        stored: u32,
        /// The checksum of the header bytes as read.
        computed: u32,
    },

    /// The record body's checksum does not match.
    #[snafu(display(
        "record body checksum mismatch at offset {offset}: stored {stored:#010x}, computed {computed:#010x}"
    ))]
    RecordBodyChecksum {
        /// Segment offset of the record.
        offset: u64,
        /// The checksum stored in the record header.
        stored: u32,
        /// The checksum of the body bytes as read.
        computed: u32,
    },

    /// The record kind byte names no kind this format version defines.
    #[snafu(display("unknown record kind {kind} at offset {offset}"))]
    UnknownRecordKind {
        /// Segment offset of the record.
        offset: u64,
        /// The kind byte found.
        kind: u8,
    },

    /// The record's codec byte names no codec this build can decode, so
    /// its body cannot be interpreted.
    #[snafu(display("unknown record codec {codec} at offset {offset}"))]
    UnknownCodec {
        /// Segment offset of the record.
        offset: u64,
        /// The codec byte found.
        codec: u8,
    },

    /// A compressed record body matched its checksum but does not
    /// decompress to the length its header declares.
    #[snafu(display(
        "{codec} body of the record at offset {offset} does not decompress: {reason}"
    ))]
    Decompress {
        /// Segment offset of the record.
        offset: u64,
        /// The codec's name (`lz4`, `zstd`).
        codec: &'static str,
        /// What the decompressor reported.
        reason: String,
    },

    /// Reserved record header bytes are not zero.
    #[snafu(display("record at offset {offset} has non-zero reserved bytes"))]
    RecordReserved {
        /// Segment offset of the record.
        offset: u64,
    },

    /// The record belongs to another segment: a stale or misplaced record.
    #[snafu(display(
        "record at offset {offset} belongs to segment {found}, not to segment {expected}"
    ))]
    WrongSegment {
        /// Segment offset of the record.
        offset: u64,
        /// The segment id the reader expected.
        expected: u64,
        /// The segment id stored in the record.
        found: u64,
    },

    /// The record declares a body longer than the limit.
    #[snafu(display(
        "record at offset {offset} declares a body of {len} bytes, more than the limit of {max}"
    ))]
    RecordTooLarge {
        /// Segment offset of the record.
        offset: u64,
        /// The declared body length.
        len: u32,
        /// The limit in force.
        max: u32,
    },

    /// The input is shorter than a meta log header.
    #[snafu(display("meta log header is truncated: {len} bytes, expected {META_LOG_HEADER_LEN}"))]
    ShortMetaLogHeader {
        /// How many bytes there were.
        len: usize,
    },

    /// The first eight bytes are not the meta log's magic.
    #[snafu(display(
        "not a segwal meta log: magic bytes are {found:02x?}, expected {:02x?}",
        META_LOG_MAGIC
    ))]
    MetaLogMagic {
        /// The bytes found where the magic belongs.
        found: [u8; 8],
    },

    /// The meta log header's checksum does not match its bytes.
    #[snafu(display(
        "meta log header checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
    ))]
    MetaLogHeaderChecksum {
        /// The checksum stored in the header.
        stored: u32,
        /// The checksum of the header bytes as read.
        computed: u32,
    },

    /// Reserved meta log header bytes are not zero, although the checksum
    /// matches.
    #[snafu(display("meta log header has non-zero reserved bytes {found:02x?}"))]
    MetaLogHeaderReserved {
        /// The reserved bytes as found.
        found: [u8; 3],
    },

    /// Fewer bytes remain than the meta log record at `offset` needs.
    #[snafu(display(
        "meta log record at offset {offset} is truncated: needs {needed} bytes, {available} remain"
    ))]
    MetaRecordTruncated {
        /// File offset of the record.
        offset: u64,
        /// Bytes the record needs (its header, or its header and entries).
        needed: u64,
        /// Bytes that remain from `offset`.
        available: u64,
    },

    /// The meta log record at `offset` declares no entries (a run of zeros
    /// reads as one).
    #[snafu(display("meta log record at offset {offset} has no entries"))]
    EmptyMetaRecord {
        /// File offset of the record.
        offset: u64,
    },

    /// The meta log record's checksum does not match its count and entries.
    #[snafu(display(
        "meta log record checksum mismatch at offset {offset}: stored {stored:#010x}, computed {computed:#010x}"
    ))]
    MetaRecordChecksum {
        /// File offset of the record.
        offset: u64,
        /// The checksum stored in the record.
        stored: u32,
        /// The checksum of the record's bytes as read.
        computed: u32,
    },

    /// The kind byte of a meta log entry names no kind this format version
    /// defines.
    #[snafu(display("unknown meta log entry kind {kind} at offset {offset}"))]
    UnknownMetaEntryKind {
        /// File offset of the entry.
        offset: u64,
        /// The kind byte found.
        kind: u8,
    },

    /// A meta log entry has non-zero reserved bytes, or a non-zero field
    /// its kind does not use.
    #[snafu(display("meta log entry at offset {offset} has non-zero reserved bytes"))]
    MetaEntryReserved {
        /// File offset of the entry.
        offset: u64,
    },

    /// The record's header fields contradict each other or the format rules
    /// (entry count, sequence range, durable offset, entry lengths).
    #[snafu(display("record at offset {offset} is malformed: {reason}"))]
    MalformedRecord {
        /// Segment offset of the record.
        offset: u64,
        /// Which rule the record breaks.
        reason: &'static str,
    },
}

impl Error {
    /// The file offset of the damaged record (or meta log entry), for
    /// record-level errors of segments and of the meta log.
    pub fn offset(&self) -> Option<u64> {
        match self {
            Error::Truncated { offset, .. }
            | Error::RecordHeaderChecksum { offset, .. }
            | Error::RecordBodyChecksum { offset, .. }
            | Error::UnknownRecordKind { offset, .. }
            | Error::UnknownCodec { offset, .. }
            | Error::Decompress { offset, .. }
            | Error::RecordReserved { offset }
            | Error::WrongSegment { offset, .. }
            | Error::RecordTooLarge { offset, .. }
            | Error::MalformedRecord { offset, .. }
            | Error::MetaRecordTruncated { offset, .. }
            | Error::EmptyMetaRecord { offset }
            | Error::MetaRecordChecksum { offset, .. }
            | Error::UnknownMetaEntryKind { offset, .. }
            | Error::MetaEntryReserved { offset } => Some(*offset),
            _ => None,
        }
    }
}
