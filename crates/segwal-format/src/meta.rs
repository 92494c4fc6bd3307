//! The region meta file: what a region must remember that its segments may
//! no longer hold once they are deleted.
//!
//! ```text
//!  0        8    9         12          16               24         28         32
//!  +--------+----+---------+-----------+----------------+----------+----------+
//!  | magic  |ver |reserved | table_cnt | next_sequence  | end_cnt  | reserved |
//!  +--------+----+---------+-----------+----------------+----------+----------+
//!  32: table_cnt x ( table_id u64 | max_sequence u64 | deleted_up_to u64 )
//!  then: end_cnt x ( segment_id u64 | end u64 )
//!  then: crc u32 over every byte before it
//! ```
//!
//! The file is small and is replaced as a whole (write a temporary file,
//! sync it, rename it over the old one, sync the directory), so it is either
//! the old version or the new one, never a mix.

use snafu::ensure;

use crate::error::{
    MetaChecksumSnafu, MetaLayoutSnafu, MetaMagicSnafu, Result, UnsupportedVersionSnafu,
};
use crate::header::FORMAT_VERSION;
use crate::{read_u32, read_u64};

/// The first eight bytes of a region meta file.
pub const META_MAGIC: [u8; 8] = *b"\x89SEGMET\n";

const VERSION_AT: usize = META_MAGIC.len();
const COUNT_AT: usize = VERSION_AT + 1 + 3;
const NEXT_SEQUENCE_AT: usize = COUNT_AT + size_of::<u32>();
const END_COUNT_AT: usize = NEXT_SEQUENCE_AT + size_of::<u64>();
const RESERVED2_AT: usize = END_COUNT_AT + size_of::<u32>();
/// Length of the fixed part of a region meta file, before the table rows.
pub const META_HEADER_LEN: usize = RESERVED2_AT + size_of::<u32>();
/// Length of one table row of a region meta file.
pub const META_TABLE_LEN: usize = 3 * size_of::<u64>();
/// Length of one segment-end row of a region meta file.
pub const META_END_LEN: usize = 2 * size_of::<u64>();

const _: () = assert!(META_HEADER_LEN == 8 + 1 + 3 + 4 + 8 + 4 + 4);
const _: () = assert!(META_HEADER_LEN == 32);

/// What a region remembers about one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableMeta {
    /// The table.
    pub table_id: u64,
    /// The largest sequence number ever assigned to an entry of the table.
    pub max_sequence: u64,
    /// Entries with sequence numbers up to this one are deleted.
    pub deleted_up_to: u64,
}

/// Where a segment's valid records end, whatever the file holds after it.
///
/// Recorded after a failed sync of the segment: the kernel may have lost
/// the writes after the last good sync while still showing them in its
/// page cache, so nothing after `end` may ever be trusted, read or
/// reported durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentEnd {
    /// The segment.
    pub segment_id: u64,
    /// Offset just past its last valid record.
    pub end: u64,
}

/// The contents of a region meta file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegionMeta {
    /// A lower bound for the region's next sequence number, so numbers are
    /// never reused even when every segment holding them is gone.
    pub next_sequence: u64,
    /// One row per table with deletes, in any order.
    pub tables: Vec<TableMeta>,
    /// Segments whose valid records end before their data does.
    pub segment_ends: Vec<SegmentEnd>,
}

impl RegionMeta {
    /// Encodes the meta file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let len = META_HEADER_LEN
            + self.tables.len() * META_TABLE_LEN
            + self.segment_ends.len() * META_END_LEN
            + size_of::<u32>();
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&META_MAGIC);
        out.extend_from_slice(&[FORMAT_VERSION, 0, 0, 0]);
        out.extend_from_slice(&(self.tables.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.next_sequence.to_le_bytes());
        out.extend_from_slice(&(self.segment_ends.len() as u32).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        for table in &self.tables {
            out.extend_from_slice(&table.table_id.to_le_bytes());
            out.extend_from_slice(&table.max_sequence.to_le_bytes());
            out.extend_from_slice(&table.deleted_up_to.to_le_bytes());
        }
        for end in &self.segment_ends {
            out.extend_from_slice(&end.segment_id.to_le_bytes());
            out.extend_from_slice(&end.end.to_le_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        debug_assert_eq!(out.len(), len);
        out
    }

    /// Decodes and verifies a meta file's bytes.
    pub fn decode(bytes: &[u8]) -> Result<RegionMeta> {
        ensure!(
            bytes.len() >= META_HEADER_LEN + size_of::<u32>(),
            MetaLayoutSnafu { len: bytes.len() }
        );
        ensure!(bytes[..VERSION_AT] == META_MAGIC, MetaMagicSnafu);
        let version = bytes[VERSION_AT];
        ensure!(
            version == FORMAT_VERSION,
            UnsupportedVersionSnafu { found: version }
        );
        let crc_at = bytes.len() - size_of::<u32>();
        let stored = read_u32(bytes, crc_at);
        let computed = crc32fast::hash(&bytes[..crc_at]);
        ensure!(stored == computed, MetaChecksumSnafu { stored, computed });
        let count = read_u32(bytes, COUNT_AT) as usize;
        let end_count = read_u32(bytes, END_COUNT_AT) as usize;
        // Counts are checked against the length before anything is sized
        // from them.
        let tables_len = count.checked_mul(META_TABLE_LEN);
        let ends_len = end_count.checked_mul(META_END_LEN);
        let rows_len = tables_len.zip(ends_len).and_then(|(t, e)| t.checked_add(e));
        ensure!(
            bytes[VERSION_AT + 1..COUNT_AT] == [0; 3]
                && bytes[RESERVED2_AT..META_HEADER_LEN] == [0; 4]
                && crc_at.checked_sub(META_HEADER_LEN) == rows_len,
            MetaLayoutSnafu { len: bytes.len() }
        );
        let ends_at = META_HEADER_LEN + count * META_TABLE_LEN;
        let tables = bytes[META_HEADER_LEN..ends_at]
            .chunks_exact(META_TABLE_LEN)
            .map(|row| TableMeta {
                table_id: read_u64(row, 0),
                max_sequence: read_u64(row, 8),
                deleted_up_to: read_u64(row, 16),
            })
            .collect();
        let segment_ends = bytes[ends_at..crc_at]
            .chunks_exact(META_END_LEN)
            .map(|row| SegmentEnd {
                segment_id: read_u64(row, 0),
                end: read_u64(row, 8),
            })
            .collect();
        Ok(RegionMeta {
            next_sequence: read_u64(bytes, NEXT_SEQUENCE_AT),
            tables,
            segment_ends,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    fn sample() -> RegionMeta {
        RegionMeta {
            next_sequence: 77,
            tables: vec![
                TableMeta {
                    table_id: 1,
                    max_sequence: 70,
                    deleted_up_to: 50,
                },
                TableMeta {
                    table_id: u64::MAX,
                    max_sequence: 76,
                    deleted_up_to: 76,
                },
            ],
            segment_ends: vec![SegmentEnd {
                segment_id: 3,
                end: 4096,
            }],
        }
    }

    #[test]
    fn round_trip() {
        for meta in [RegionMeta::default(), sample()] {
            assert_eq!(RegionMeta::decode(&meta.encode()), Ok(meta));
        }
    }

    #[test]
    fn every_bit_flip_and_every_cut_is_detected() {
        let bytes = sample().encode();
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(RegionMeta::decode(&flipped).is_err(), "bit {bit}");
        }
        for len in 0..bytes.len() {
            assert!(RegionMeta::decode(&bytes[..len]).is_err(), "cut at {len}");
        }
    }

    #[test]
    fn foreign_bytes_are_named() {
        let err = RegionMeta::decode(&[b'x'; 64]).unwrap_err();
        assert_eq!(err, Error::MetaMagic);
        assert_eq!(
            err.to_string(),
            "not a segwal region meta file (bad magic bytes)"
        );
    }
}
