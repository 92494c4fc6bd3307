//! The segment header: the first [`SEGMENT_HEADER_LEN`] bytes of a segment.
//!
//! ```text
//!  0        8    9        12           20            28         36         44         48
//!  +--------+----+--------+------------+-------------+----------+----------+----------+
//!  | magic  |ver |reserved| stream_id  | segment_id  |   salt   | capacity |header_crc|
//!  +--------+----+--------+------------+-------------+----------+----------+----------+
//! ```

use snafu::ensure;

use crate::error::{
    BadMagicSnafu, Result, SegmentCapacityTooSmallSnafu, SegmentHeaderChecksumSnafu,
    SegmentHeaderReservedSnafu, ShortSegmentHeaderSnafu, UnsupportedVersionSnafu,
};
use crate::record::{ENTRY_LEN_PREFIX, RECORD_HEADER_LEN};
use crate::{read_u32, read_u64};

/// The first eight bytes of every segment file.
///
/// The leading `0x89` has the high bit set, so a transfer that strips the
/// eighth bit is caught; the trailing `\n` catches line-ending conversion
/// (the same trick as PNG's signature).
pub const MAGIC: [u8; 8] = *b"\x89SEGWAL\n";

/// The format version this build writes and the only one it reads.
///
/// Version 3 made every record name its region (one log is shared by all
/// regions of a data dir) and carry a codec byte, and replaced the region
/// meta file by the data dir's meta log; older files are refused.
pub const FORMAT_VERSION: u8 = 3;

const MAGIC_AT: usize = 0;
const VERSION_AT: usize = MAGIC_AT + MAGIC.len();
const RESERVED_AT: usize = VERSION_AT + size_of::<u8>();
const RESERVED_LEN: usize = 3;
const STREAM_ID_AT: usize = RESERVED_AT + RESERVED_LEN;
const SEGMENT_ID_AT: usize = STREAM_ID_AT + size_of::<u64>();
const SALT_AT: usize = SEGMENT_ID_AT + size_of::<u64>();
const CAPACITY_AT: usize = SALT_AT + size_of::<u64>();
const CRC_AT: usize = CAPACITY_AT + size_of::<u64>();

/// Length in bytes of the segment header; records start right after it.
pub const SEGMENT_HEADER_LEN: usize = CRC_AT + size_of::<u32>();

/// The smallest capacity a segment can have: its header and one record
/// holding one empty entry.
pub const MIN_SEGMENT_CAPACITY: u64 =
    (SEGMENT_HEADER_LEN + RECORD_HEADER_LEN + ENTRY_LEN_PREFIX) as u64;

const _: () = assert!(SEGMENT_HEADER_LEN == 8 + 1 + 3 + 8 + 8 + 8 + 8 + 4);
const _: () = assert!(SEGMENT_HEADER_LEN == 48);

/// Which log a segment belongs to and where in it.
///
/// Recovery compares a header's identity with the one the file's name and
/// directory imply, so a segment copied or renamed into the wrong place is
/// caught instead of being replayed as part of another stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SegmentIdentity {
    /// The stream of the data dir's shared log that this segment belongs
    /// to. Every region's records share one log; a data dir may split it
    /// into a few independent streams, each its own sequence of segments.
    pub stream_id: u64,
    /// The segment's id, unique and increasing within its stream.
    pub segment_id: u64,
}

/// The header of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SegmentHeader {
    /// The stream of the shared log that this segment belongs to (see
    /// [`SegmentIdentity::stream_id`]).
    pub stream_id: u64,
    /// The segment's id, unique and increasing within its stream.
    pub segment_id: u64,
    /// A random value chosen when the segment is created and mixed into
    /// every record's header checksum. Nobody who only supplies payloads
    /// knows it, so bytes inside a payload can never pass for a record of
    /// this segment when recovery searches past damage; and a record copied
    /// from another segment never verifies here.
    pub salt: u64,
    /// The file's length in bytes, header included, fixed when the segment
    /// is created (segments are preallocated and never resized). A file
    /// whose length differs lost its end, or gained bytes, after creation:
    /// without this field a cut exactly at a record boundary would look
    /// like a segment that simply holds fewer records.
    pub capacity: u64,
}

impl SegmentHeader {
    /// The stream and segment ids.
    pub fn identity(&self) -> SegmentIdentity {
        SegmentIdentity {
            stream_id: self.stream_id,
            segment_id: self.segment_id,
        }
    }

    /// Encodes the header into its on-disk bytes.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut bytes = [0u8; SEGMENT_HEADER_LEN];
        bytes[MAGIC_AT..VERSION_AT].copy_from_slice(&MAGIC);
        bytes[VERSION_AT] = FORMAT_VERSION;
        bytes[STREAM_ID_AT..SEGMENT_ID_AT].copy_from_slice(&self.stream_id.to_le_bytes());
        bytes[SEGMENT_ID_AT..SALT_AT].copy_from_slice(&self.segment_id.to_le_bytes());
        bytes[SALT_AT..CAPACITY_AT].copy_from_slice(&self.salt.to_le_bytes());
        bytes[CAPACITY_AT..CRC_AT].copy_from_slice(&self.capacity.to_le_bytes());
        let crc = crc32fast::hash(&bytes[..CRC_AT]);
        bytes[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Decodes and validates a header from the start of `bytes`.
    ///
    /// The checks run in the order that gives the most useful error: a file
    /// that is not a segment at all (magic), then one from another format
    /// version (whose header may be laid out differently, so its checksum is
    /// not checked), then damage (checksum), then flags this build ignores,
    /// then a capacity too small to hold a record.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader> {
        ensure!(
            bytes.len() >= SEGMENT_HEADER_LEN,
            ShortSegmentHeaderSnafu { len: bytes.len() }
        );
        let bytes = &bytes[..SEGMENT_HEADER_LEN];
        let mut magic = [0u8; 8];
        magic.copy_from_slice(&bytes[MAGIC_AT..VERSION_AT]);
        ensure!(magic == MAGIC, BadMagicSnafu { found: magic });
        let version = bytes[VERSION_AT];
        ensure!(
            version == FORMAT_VERSION,
            UnsupportedVersionSnafu { found: version }
        );
        let stored = read_u32(bytes, CRC_AT);
        let computed = crc32fast::hash(&bytes[..CRC_AT]);
        ensure!(
            stored == computed,
            SegmentHeaderChecksumSnafu { stored, computed }
        );
        let mut reserved = [0u8; RESERVED_LEN];
        reserved.copy_from_slice(&bytes[RESERVED_AT..STREAM_ID_AT]);
        ensure!(
            reserved == [0; RESERVED_LEN],
            SegmentHeaderReservedSnafu { found: reserved }
        );
        let capacity = read_u64(bytes, CAPACITY_AT);
        ensure!(
            capacity >= MIN_SEGMENT_CAPACITY,
            SegmentCapacityTooSmallSnafu { capacity }
        );
        Ok(SegmentHeader {
            stream_id: read_u64(bytes, STREAM_ID_AT),
            segment_id: read_u64(bytes, SEGMENT_ID_AT),
            salt: read_u64(bytes, SALT_AT),
            capacity,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    const HEADER: SegmentHeader = SegmentHeader {
        stream_id: 0x0102_0304_0506_0708,
        segment_id: 42,
        salt: 0xa1a2_a3a4_a5a6_a7a8,
        capacity: 0x0400_0000,
    };

    /// Pins the byte encoding of the segment header: if this test fails, the
    /// on-disk format changed and FORMAT_VERSION must change with it. The
    /// checksum was computed independently with zlib's crc32.
    #[test]
    fn golden_bytes() {
        let expected: [u8; SEGMENT_HEADER_LEN] = [
            0x89, b'S', b'E', b'G', b'W', b'A', b'L', b'\n', // magic
            0x03,  // version
            0x00, 0x00, 0x00, // reserved
            0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // stream_id
            0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // segment_id
            0xa8, 0xa7, 0xa6, 0xa5, 0xa4, 0xa3, 0xa2, 0xa1, // salt
            0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, // capacity (64 MiB)
            0x1f, 0x1e, 0xa1, 0x37, // crc32 of the 44 bytes before
        ];
        assert_eq!(HEADER.encode(), expected);
        assert_eq!(SegmentHeader::decode(&expected), Ok(HEADER));
    }

    #[test]
    fn short_input_is_rejected() {
        for len in 0..SEGMENT_HEADER_LEN {
            let bytes = &HEADER.encode()[..len];
            assert_eq!(
                SegmentHeader::decode(bytes),
                Err(Error::ShortSegmentHeader { len })
            );
        }
    }

    #[test]
    fn foreign_file_is_rejected_by_magic() {
        let mut bytes = [0u8; SEGMENT_HEADER_LEN];
        bytes[..8].copy_from_slice(b"#!/bin/s");
        let err = SegmentHeader::decode(&bytes).unwrap_err();
        assert!(matches!(err, Error::BadMagic { found } if &found == b"#!/bin/s"));
        assert!(err.to_string().starts_with("not a segwal segment"), "{err}");
    }

    #[test]
    fn unknown_version_is_named() {
        let mut bytes = HEADER.encode();
        bytes[VERSION_AT] = 2;
        let err = SegmentHeader::decode(&bytes).unwrap_err();
        assert_eq!(err, Error::UnsupportedVersion { found: 2 });
        assert_eq!(
            err.to_string(),
            "unsupported format version 2 (this build reads version 3)"
        );
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let bytes = HEADER.encode();
        for bit in 0..SEGMENT_HEADER_LEN * 8 {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                SegmentHeader::decode(&flipped).is_err(),
                "flip of bit {bit} went unnoticed"
            );
        }
    }

    #[test]
    fn reserved_bytes_with_valid_checksum_are_rejected() {
        let mut bytes = HEADER.encode();
        bytes[RESERVED_AT] = 1;
        let crc = crc32fast::hash(&bytes[..CRC_AT]);
        bytes[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            SegmentHeader::decode(&bytes),
            Err(Error::SegmentHeaderReserved { found: [1, 0, 0] })
        );
    }

    #[test]
    fn a_capacity_that_cannot_hold_a_record_is_rejected() {
        for capacity in [0, MIN_SEGMENT_CAPACITY - 1] {
            let bytes = SegmentHeader { capacity, ..HEADER }.encode();
            assert_eq!(
                SegmentHeader::decode(&bytes),
                Err(Error::SegmentCapacityTooSmall { capacity })
            );
        }
        let smallest = SegmentHeader {
            capacity: MIN_SEGMENT_CAPACITY,
            ..HEADER
        };
        assert_eq!(SegmentHeader::decode(&smallest.encode()), Ok(smallest));
    }
}
