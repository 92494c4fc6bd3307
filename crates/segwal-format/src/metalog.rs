//! The data dir's meta log: what the shared log must remember after the
//! segments holding it are removed.
//!
//! ```text
//!  file header:
//!  0          8     9          12           16
//!  +----------+-----+----------+------------+
//!  |  magic   | ver | reserved | header_crc |
//!  +----------+-----+----------+------------+
//!  16: records, back to back, each written by one append:
//!  0            4             8
//!  +------------+-------------+----------------------------------+
//!  | record_crc | entry_count | entry_count x entry (32 bytes)   |
//!  +------------+-------------+----------------------------------+
//!  entry:
//!  0      1          8     16    24    32
//!  +------+----------+-----+-----+-----+
//!  | kind | reserved |  a  |  b  |  c  |
//!  +------+----------+-----+-----+-----+
//! ```
//!
//! A delete appends one small record and syncs it, so its cost does not
//! grow with the number of tables; now and then the owner compacts the
//! file by writing a full snapshot to a temporary file and renaming it over
//! the old one. Every value merges by maximum, so the order of the entries
//! never matters and a snapshot is just the merged entries.
//!
//! Records are appended one synced write at a time, so only the last one
//! can be torn by a crash. A record that does not verify therefore ends the
//! log as a torn tail when nothing valid follows it, and as corruption when
//! a valid record does: that record was written after the damaged one was
//! synced.

use snafu::ensure;

use crate::error::{
    EmptyMetaRecordSnafu, Error, MetaEntryReservedSnafu, MetaLogHeaderChecksumSnafu,
    MetaLogHeaderReservedSnafu, MetaLogMagicSnafu, MetaRecordChecksumSnafu,
    MetaRecordTruncatedSnafu, Result, ShortMetaLogHeaderSnafu, UnknownMetaEntryKindSnafu,
    UnsupportedVersionSnafu,
};
use crate::header::FORMAT_VERSION;
use crate::{read_u32, read_u64};

/// The first eight bytes of a meta log.
///
/// Like the segment magic, it starts with `0x89` and ends with `\n`, so
/// transfers that strip the eighth bit or convert line endings are caught.
pub const META_LOG_MAGIC: [u8; 8] = *b"\x89SEGMLG\n";

const MAGIC_AT: usize = 0;
const VERSION_AT: usize = MAGIC_AT + META_LOG_MAGIC.len();
const RESERVED_AT: usize = VERSION_AT + size_of::<u8>();
const RESERVED_LEN: usize = 3;
const HEADER_CRC_AT: usize = RESERVED_AT + RESERVED_LEN;

/// Length of the meta log's file header; the first record follows it.
pub const META_LOG_HEADER_LEN: usize = HEADER_CRC_AT + size_of::<u32>();

const RECORD_CRC_AT: usize = 0;
const ENTRY_COUNT_AT: usize = RECORD_CRC_AT + size_of::<u32>();

/// Length of a meta record's header (checksum and entry count); its
/// entries follow it.
pub const META_RECORD_HEADER_LEN: usize = ENTRY_COUNT_AT + size_of::<u32>();

const KIND_AT: usize = 0;
const ENTRY_RESERVED_AT: usize = KIND_AT + size_of::<u8>();
const ENTRY_RESERVED_LEN: usize = 7;
const A_AT: usize = ENTRY_RESERVED_AT + ENTRY_RESERVED_LEN;
const B_AT: usize = A_AT + size_of::<u64>();
const C_AT: usize = B_AT + size_of::<u64>();

/// Length of one meta log entry.
pub const META_ENTRY_LEN: usize = C_AT + size_of::<u64>();

const _: () = assert!(META_LOG_HEADER_LEN == 8 + 1 + 3 + 4);
const _: () = assert!(META_LOG_HEADER_LEN == 16);
const _: () = assert!(META_RECORD_HEADER_LEN == 4 + 4);
const _: () = assert!(META_RECORD_HEADER_LEN == 8);
const _: () = assert!(META_ENTRY_LEN == 1 + 7 + 8 + 8 + 8);
const _: () = assert!(META_ENTRY_LEN == 32);

/// The smallest valid record: a header and one entry.
const MIN_RECORD_LEN: usize = META_RECORD_HEADER_LEN + META_ENTRY_LEN;

const DELETE_MARK: u8 = 1;
const TABLE_MAX: u8 = 2;
const SEQUENCE_FLOOR: u8 = 3;
const SEGMENT_END: u8 = 4;

/// One fact the meta log remembers.
///
/// Every kind merges by maximum: of two entries for the same key (region
/// and table, region, or segment) the larger value wins, so entries may be
/// replayed in any order and a compacted snapshot holds one per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MetaEntry {
    /// Entries of the table with sequence numbers up to `deleted_up_to`
    /// are deleted (kind 1).
    DeleteMark {
        /// The region of the table.
        region_id: u64,
        /// The table.
        table_id: u64,
        /// The largest deleted sequence number.
        deleted_up_to: u64,
    },
    /// The largest sequence number ever assigned to an entry of the table
    /// (kind 2), kept so that it survives the segments that held it.
    TableMax {
        /// The region of the table.
        region_id: u64,
        /// The table.
        table_id: u64,
        /// The largest sequence number assigned.
        max_sequence: u64,
    },
    /// The region's next sequence number is at least `next_sequence`
    /// (kind 3), so numbers are never reused once every segment holding
    /// them is gone.
    SequenceFloor {
        /// The region.
        region_id: u64,
        /// A lower bound for the region's next sequence number.
        next_sequence: u64,
    },
    /// The segment's valid records end at `end` (kind 4), whatever the file
    /// holds after it. Recorded after a failed sync: the kernel may have
    /// dropped writes after the last good sync while still showing them in
    /// its page cache, so nothing past `end` may be read or trusted.
    SegmentEnd {
        /// The segment.
        segment_id: u64,
        /// Offset just past its last valid record.
        end: u64,
    },
}

impl MetaEntry {
    /// The entry's on-disk bytes.
    fn encode(&self) -> [u8; META_ENTRY_LEN] {
        let (kind, a, b, c) = match *self {
            MetaEntry::DeleteMark {
                region_id,
                table_id,
                deleted_up_to,
            } => (DELETE_MARK, region_id, table_id, deleted_up_to),
            MetaEntry::TableMax {
                region_id,
                table_id,
                max_sequence,
            } => (TABLE_MAX, region_id, table_id, max_sequence),
            MetaEntry::SequenceFloor {
                region_id,
                next_sequence,
            } => (SEQUENCE_FLOOR, region_id, 0, next_sequence),
            MetaEntry::SegmentEnd { segment_id, end } => (SEGMENT_END, segment_id, 0, end),
        };
        let mut bytes = [0u8; META_ENTRY_LEN];
        bytes[KIND_AT] = kind;
        bytes[A_AT..B_AT].copy_from_slice(&a.to_le_bytes());
        bytes[B_AT..C_AT].copy_from_slice(&b.to_le_bytes());
        bytes[C_AT..].copy_from_slice(&c.to_le_bytes());
        bytes
    }

    /// Decodes the entry in `bytes` (exactly [`META_ENTRY_LEN`] of them),
    /// which sits at file offset `offset`. The kind is checked first, as in
    /// segment records; fields a kind does not use are reserved, like the
    /// reserved bytes, and must be zero.
    fn decode(bytes: &[u8], offset: u64) -> Result<MetaEntry> {
        assert_eq!(bytes.len(), META_ENTRY_LEN);
        let kind = bytes[KIND_AT];
        ensure!(
            (DELETE_MARK..=SEGMENT_END).contains(&kind),
            UnknownMetaEntryKindSnafu { offset, kind }
        );
        let (a, b, c) = (
            read_u64(bytes, A_AT),
            read_u64(bytes, B_AT),
            read_u64(bytes, C_AT),
        );
        let uses_b = matches!(kind, DELETE_MARK | TABLE_MAX);
        ensure!(
            bytes[ENTRY_RESERVED_AT..A_AT] == [0; ENTRY_RESERVED_LEN] && (uses_b || b == 0),
            MetaEntryReservedSnafu { offset }
        );
        Ok(match kind {
            DELETE_MARK => MetaEntry::DeleteMark {
                region_id: a,
                table_id: b,
                deleted_up_to: c,
            },
            TABLE_MAX => MetaEntry::TableMax {
                region_id: a,
                table_id: b,
                max_sequence: c,
            },
            SEQUENCE_FLOOR => MetaEntry::SequenceFloor {
                region_id: a,
                next_sequence: c,
            },
            SEGMENT_END => MetaEntry::SegmentEnd {
                segment_id: a,
                end: c,
            },
            _ => unreachable!("the kind was checked above"),
        })
    }
}

/// A decoded meta log: the entries of every record that verified, in file
/// order, and how the log ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaLog {
    /// The entries of the valid records before [`MetaLog::end`].
    pub entries: Vec<MetaEntry>,
    /// Where and how the valid records end.
    pub end: MetaLogEnd,
}

/// How a meta log ends. Offsets are file offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaLogEnd {
    /// Every record verified, up to the end of the bytes.
    Clean {
        /// The length of the log: where the next record is appended.
        len: u64,
    },
    /// The record at `offset` is incomplete or damaged, or the bytes from
    /// there are zeros, and no valid record follows: an append interrupted
    /// by a crash. The bytes from `offset` on are to be discarded.
    TornTail {
        /// Where the torn bytes begin.
        offset: u64,
    },
    /// The record at `offset` is damaged although a valid record follows
    /// it: that record was appended after the damaged one had been synced,
    /// so synced data was lost.
    Corruption {
        /// Where the damaged record begins.
        offset: u64,
        /// Why the record at `offset` did not verify.
        cause: Error,
    },
}

/// The meta log's file header for this format version.
pub fn encode_meta_log_header() -> [u8; META_LOG_HEADER_LEN] {
    let mut bytes = [0u8; META_LOG_HEADER_LEN];
    bytes[MAGIC_AT..VERSION_AT].copy_from_slice(&META_LOG_MAGIC);
    bytes[VERSION_AT] = FORMAT_VERSION;
    let crc = crc32fast::hash(&bytes[..HEADER_CRC_AT]);
    bytes[HEADER_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// Appends one record holding `entries` to `out`.
///
/// # Panics
///
/// If `entries` is empty or holds more than `u32::MAX` entries: a record
/// with no entries does not verify, so writing one is a bug in the caller.
pub fn encode_meta_record(entries: &[MetaEntry], out: &mut Vec<u8>) {
    assert!(
        !entries.is_empty(),
        "a meta record needs at least one entry"
    );
    let count = u32::try_from(entries.len()).expect("a meta record holds at most u32::MAX entries");
    let start = out.len();
    out.reserve(META_RECORD_HEADER_LEN + entries.len() * META_ENTRY_LEN);
    out.extend_from_slice(&[0; ENTRY_COUNT_AT]);
    out.extend_from_slice(&count.to_le_bytes());
    for entry in entries {
        out.extend_from_slice(&entry.encode());
    }
    let crc = crc32fast::hash(&out[start + ENTRY_COUNT_AT..]);
    out[start + RECORD_CRC_AT..start + ENTRY_COUNT_AT].copy_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(verify_record(out, start), Ok(out.len() - start));
}

/// Decodes a whole meta log: its header, then every record up to the first
/// that does not verify, which ends the log as [`MetaLogEnd::TornTail`] or
/// [`MetaLogEnd::Corruption`] (see the module docs).
///
/// A damaged or foreign header is an error: without it nothing can be read.
/// Nothing is allocated but the returned entries, exactly as many as the
/// valid records hold (so at most `bytes.len() / 32`); no entry count is used
/// before its record's checksum matched, except to bound that checksum.
pub fn decode_meta_log(bytes: &[u8]) -> Result<MetaLog> {
    decode_header(bytes)?;
    // First pass: verify records and count their entries, so that the
    // second can allocate exactly once.
    let mut at = META_LOG_HEADER_LEN;
    let mut count = 0;
    let end = loop {
        if at == bytes.len() {
            break MetaLogEnd::Clean { len: at as u64 };
        }
        match verify_record(bytes, at) {
            Ok(len) => {
                count += (len - META_RECORD_HEADER_LEN) / META_ENTRY_LEN;
                at += len;
            }
            Err(cause) => break classify(bytes, at, cause),
        }
    };
    let mut entries = Vec::with_capacity(count);
    let mut pos = META_LOG_HEADER_LEN;
    while pos < at {
        let len = META_RECORD_HEADER_LEN
            + read_u32(bytes, pos + ENTRY_COUNT_AT) as usize * META_ENTRY_LEN;
        for (i, entry) in bytes[pos + META_RECORD_HEADER_LEN..pos + len]
            .chunks_exact(META_ENTRY_LEN)
            .enumerate()
        {
            let offset = (pos + META_RECORD_HEADER_LEN + i * META_ENTRY_LEN) as u64;
            entries.push(MetaEntry::decode(entry, offset).expect("verified by the first pass"));
        }
        pos += len;
    }
    assert_eq!(pos, at);
    assert_eq!(entries.len(), count);
    Ok(MetaLog { entries, end })
}

/// Validates the file header: magic (is this a meta log at all?), version
/// (before the checksum, since another version may lay its header out
/// differently), checksum, reserved bytes.
fn decode_header(bytes: &[u8]) -> Result<()> {
    ensure!(
        bytes.len() >= META_LOG_HEADER_LEN,
        ShortMetaLogHeaderSnafu { len: bytes.len() }
    );
    let mut magic = [0u8; 8];
    magic.copy_from_slice(&bytes[MAGIC_AT..VERSION_AT]);
    ensure!(magic == META_LOG_MAGIC, MetaLogMagicSnafu { found: magic });
    let version = bytes[VERSION_AT];
    ensure!(
        version == FORMAT_VERSION,
        UnsupportedVersionSnafu { found: version }
    );
    let stored = read_u32(bytes, HEADER_CRC_AT);
    let computed = crc32fast::hash(&bytes[..HEADER_CRC_AT]);
    ensure!(
        stored == computed,
        MetaLogHeaderChecksumSnafu { stored, computed }
    );
    let mut reserved = [0u8; RESERVED_LEN];
    reserved.copy_from_slice(&bytes[RESERVED_AT..HEADER_CRC_AT]);
    ensure!(
        reserved == [0; RESERVED_LEN],
        MetaLogHeaderReservedSnafu { found: reserved }
    );
    Ok(())
}

/// Verifies the record starting at `bytes[at]` and returns its length.
///
/// The entry count is checked against zero and against the bytes left
/// before it bounds the checksum; the entries are parsed only after the
/// checksum matched.
fn verify_record(bytes: &[u8], at: usize) -> Result<usize> {
    let offset = at as u64;
    let rest = &bytes[at..];
    ensure!(
        rest.len() >= META_RECORD_HEADER_LEN,
        MetaRecordTruncatedSnafu {
            offset,
            needed: META_RECORD_HEADER_LEN as u64,
            available: rest.len() as u64,
        }
    );
    let count = read_u32(rest, ENTRY_COUNT_AT);
    ensure!(count >= 1, EmptyMetaRecordSnafu { offset });
    // In u64, so that no count can overflow on any target.
    let needed = META_RECORD_HEADER_LEN as u64 + u64::from(count) * META_ENTRY_LEN as u64;
    ensure!(
        needed <= rest.len() as u64,
        MetaRecordTruncatedSnafu {
            offset,
            needed,
            available: rest.len() as u64,
        }
    );
    let len = needed as usize;
    let stored = read_u32(rest, RECORD_CRC_AT);
    let computed = crc32fast::hash(&rest[ENTRY_COUNT_AT..len]);
    ensure!(
        stored == computed,
        MetaRecordChecksumSnafu {
            offset,
            stored,
            computed,
        }
    );
    for (i, entry) in rest[META_RECORD_HEADER_LEN..len]
        .chunks_exact(META_ENTRY_LEN)
        .enumerate()
    {
        MetaEntry::decode(
            entry,
            offset + (META_RECORD_HEADER_LEN + i * META_ENTRY_LEN) as u64,
        )?;
    }
    Ok(len)
}

/// Decides how the log ends, given that the record at `at` failed with
/// `cause`: corruption if a valid record starts at any later offset, else a
/// torn tail.
///
/// Only the last record can be torn, since each is appended by one synced
/// write; a valid record after the damage was therefore written after the
/// damaged one was synced. A run of zeros reads as an empty record, which
/// never verifies, so zeros a crash left after the last record are a torn
/// tail too.
fn classify(bytes: &[u8], at: usize, cause: Error) -> MetaLogEnd {
    let offset = at as u64;
    let last_start = bytes.len().saturating_sub(MIN_RECORD_LEN);
    let later = (at + 1..=last_start).any(|from| {
        // Cheap filter before the checksum: a valid record's first entry
        // has a known kind and zero reserved bytes. It rejects nothing that
        // `verify_record` would accept.
        let first = &bytes[from + META_RECORD_HEADER_LEN..from + MIN_RECORD_LEN];
        (DELETE_MARK..=SEGMENT_END).contains(&first[KIND_AT])
            && first[ENTRY_RESERVED_AT..A_AT] == [0; ENTRY_RESERVED_LEN]
            && verify_record(bytes, from).is_ok()
    });
    if later {
        MetaLogEnd::Corruption { offset, cause }
    } else {
        MetaLogEnd::TornTail { offset }
    }
}

#[cfg(test)]
mod tests;
