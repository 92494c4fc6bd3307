//! Batch records: one record holds one batch of entries for one table of
//! one region.
//!
//! ```text
//!  0          4    5     6         8            12         16         20         24
//!  +----------+----+-----+---------+------------+----------+----------+----------+
//!  |header_crc|kind|codec|reserved | entry_count| body_len | body_crc | raw_len  |
//!  +----------+----+-----+---------+------------+----------+----------+----------+
//!  24            32           40           48               56                64
//!  +-------------+------------+------------+----------------+----------------+
//!  | segment_id  | region_id  | table_id   | first_sequence | durable_offset |
//!  +-------------+------------+------------+----------------+----------------+
//!  64: body = entry_count x ( len: u32 | payload: len bytes ), stored as
//!      `codec` says: as it is (none, raw_len 0) or compressed (lz4, zstd;
//!      raw_len is then the length of the entries once decompressed)
//! ```
//!
//! Every region of a data dir writes into one shared log, so each record
//! names its region as well as its table.
//!
//! `header_crc` covers the segment's salt (see [`SegmentHeader::salt`])
//! followed by header bytes `[4, 64)`, which include `body_len` and
//! `body_crc`; `body_crc` covers the body as stored (compressed, if it is).
//! So every byte of a record except `header_crc` itself is checksummed, the
//! decoder trusts no length until the header checksum has matched, and no
//! decompressor ever sees bytes whose checksum has not matched. A record is the unit of atomicity: a
//! torn write damages the record's checksums and the whole batch is dropped,
//! never a prefix of its entries.

use std::borrow::Cow;
use std::ops::Range;

use snafu::ensure;

use crate::codec;
use crate::entries::{Body, Entries};
use crate::error::{
    BatchTooLargeSnafu, EmptyBatchSnafu, MalformedRecordSnafu, RecordBodyChecksumSnafu,
    RecordHeaderChecksumSnafu, RecordReservedSnafu, RecordTooLargeSnafu, Result,
    SequenceOutOfRangeSnafu, TruncatedSnafu, UnknownCodecSnafu, UnknownRecordKindSnafu,
    WrongSegmentSnafu,
};
use crate::header::SegmentHeader;
use crate::{read_u32, read_u64};

const HEADER_CRC_AT: usize = 0;
const KIND_AT: usize = HEADER_CRC_AT + size_of::<u32>();
const CODEC_AT: usize = KIND_AT + size_of::<u8>();
const RESERVED_A_AT: usize = CODEC_AT + size_of::<u8>();
const RESERVED_A_LEN: usize = 2;
const ENTRY_COUNT_AT: usize = RESERVED_A_AT + RESERVED_A_LEN;
const BODY_LEN_AT: usize = ENTRY_COUNT_AT + size_of::<u32>();
const BODY_CRC_AT: usize = BODY_LEN_AT + size_of::<u32>();
const RAW_LEN_AT: usize = BODY_CRC_AT + size_of::<u32>();
const SEGMENT_ID_AT: usize = RAW_LEN_AT + size_of::<u32>();
const REGION_ID_AT: usize = SEGMENT_ID_AT + size_of::<u64>();
const TABLE_ID_AT: usize = REGION_ID_AT + size_of::<u64>();
const FIRST_SEQUENCE_AT: usize = TABLE_ID_AT + size_of::<u64>();
const DURABLE_OFFSET_AT: usize = FIRST_SEQUENCE_AT + size_of::<u64>();

/// Length in bytes of a record header; the body follows it directly.
pub const RECORD_HEADER_LEN: usize = DURABLE_OFFSET_AT + size_of::<u64>();

/// Length of the prefix before each entry's payload in a record body.
pub const ENTRY_LEN_PREFIX: usize = size_of::<u32>();

/// The largest record body the format allows (1 GiB). Encoders may be
/// configured with a smaller limit, never a larger one.
pub const MAX_BODY_LEN: u32 = 1 << 30;

const _: () = assert!(RECORD_HEADER_LEN == 4 + 1 + 1 + 2 + 4 + 4 + 4 + 4 + 8 + 8 + 8 + 8 + 8);
const _: () = assert!(RECORD_HEADER_LEN == 64);

/// What a record holds. Versions 1 to 3 define one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordKind {
    /// A batch of entries for one table with consecutive sequence numbers.
    Batch = 1,
}

/// How a record's body is stored.
///
/// The codec byte is format version 3's extension point: builds that
/// predate a codec refuse records written with it (`UnknownCodec`) rather
/// than hand out bytes they cannot interpret. [`RecordCodec::Lz4`] and
/// [`RecordCodec::Zstd`] were added within version 3 in this way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RecordCodec {
    /// The body is stored as it is: length-prefixed entries.
    #[default]
    None = 0,
    /// The body is one LZ4 block (the block format, no frame).
    Lz4 = 1,
    /// The body is a Zstandard frame.
    Zstd = 2,
}

impl RecordCodec {
    /// Every codec, in the order of their bytes.
    pub const ALL: [RecordCodec; 3] = [RecordCodec::None, RecordCodec::Lz4, RecordCodec::Zstd];

    /// The codec with byte `byte`, if this build knows it.
    pub fn from_byte(byte: u8) -> Option<RecordCodec> {
        RecordCodec::ALL.into_iter().find(|c| *c as u8 == byte)
    }

    /// Its name as configurations spell it: `none`, `lz4`, `zstd`.
    pub fn name(self) -> &'static str {
        match self {
            RecordCodec::None => "none",
            RecordCodec::Lz4 => "lz4",
            RecordCodec::Zstd => "zstd",
        }
    }

    /// The codec named `name` (as [`name`](RecordCodec::name) spells it).
    pub fn from_name(name: &str) -> Option<RecordCodec> {
        RecordCodec::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl std::fmt::Display for RecordCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The fields of a batch record that the writer chooses; the segment id,
/// lengths and checksums are filled in by the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    /// The region all entries belong to. Every region of a data dir shares
    /// one log, so a record names its region for recovery to route it.
    pub region_id: u64,
    /// The table all entries belong to.
    pub table_id: u64,
    /// Sequence number of the first entry; the others follow consecutively.
    pub first_sequence: u64,
    /// Segment offset up to which the file was known to be durable (covered
    /// by a completed sync) when this record was written. Recovery uses it to
    /// tell a torn tail from corruption; see `docs/FORMAT.md`.
    pub durable_offset: u64,
}

/// A decoded and verified record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// The record's kind.
    pub kind: RecordKind,
    /// How the body is stored.
    pub codec: RecordCodec,
    /// Number of entries in the body (at least one).
    pub entry_count: u32,
    /// Length of the body in bytes, as stored (compressed, if it is).
    pub body_len: u32,
    /// Length of the body's entries, uncompressed: `body_len` for
    /// [`RecordCodec::None`] (whose `raw_len` field on disk is zero), more
    /// than `body_len` for a compressed body.
    pub raw_len: u32,
    /// The segment the record was written into.
    pub segment_id: u64,
    /// The writer-chosen fields.
    pub meta: BatchMeta,
}

impl RecordHeader {
    /// The sequence number of the record's last entry.
    pub fn last_sequence(&self) -> u64 {
        self.meta.first_sequence + u64::from(self.entry_count) - 1
    }

    /// Total encoded length of the record: header plus stored body.
    pub fn record_len(&self) -> usize {
        RECORD_HEADER_LEN + self.body_len as usize
    }
}

/// The encoded length of a record holding `entries`, uncompressed: the
/// header plus a length prefix and the payload for each entry. A record
/// compressed by its encoder is shorter (compression is kept only when it
/// is), so this is an upper bound for every codec. No limit is checked;
/// see [`RecordEncoder::encoded_len`].
pub fn record_len<E: AsRef<[u8]>>(entries: &[E]) -> u64 {
    let body: u64 = entries
        .iter()
        .map(|e| (ENTRY_LEN_PREFIX + e.as_ref().len()) as u64)
        .sum();
    RECORD_HEADER_LEN as u64 + body
}

/// The header checksum: CRC-32 of the segment's salt, then header bytes
/// `[4, 64)`.
fn header_crc(salt: u64, header: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&salt.to_le_bytes());
    crc.update(&header[KIND_AT..RECORD_HEADER_LEN]);
    crc.finalize()
}

/// Encodes batches into records of one segment.
///
/// The encoder appends to a caller-owned buffer, so a writer can reuse one
/// buffer for every batch (and put several records in it for one write)
/// without allocating per entry.
#[derive(Debug, Clone, Copy)]
pub struct RecordEncoder {
    segment_id: u64,
    salt: u64,
    max_body_len: u32,
    codec: RecordCodec,
}

impl RecordEncoder {
    /// An encoder for records of the segment with `header`, enforcing the
    /// format's limit, [`MAX_BODY_LEN`].
    pub fn new(header: &SegmentHeader) -> Self {
        RecordEncoder {
            segment_id: header.segment_id,
            salt: header.salt,
            max_body_len: MAX_BODY_LEN,
            codec: RecordCodec::None,
        }
    }

    /// The same encoder, compressing bodies with `codec`. A body that
    /// `codec` does not make smaller (or that is shorter than
    /// [`MIN_COMPRESSED_BODY_LEN`](crate::MIN_COMPRESSED_BODY_LEN)) is
    /// stored with [`RecordCodec::None`]: the codec byte of each record
    /// says how that record is stored.
    pub fn with_codec(self, codec: RecordCodec) -> Self {
        RecordEncoder { codec, ..self }
    }

    /// The codec this encoder compresses with.
    pub fn codec(&self) -> RecordCodec {
        self.codec
    }

    /// The same encoder with a smaller body limit (clamped to
    /// [`MAX_BODY_LEN`]).
    pub fn with_max_body_len(self, max_body_len: u32) -> Self {
        RecordEncoder {
            max_body_len: max_body_len.min(MAX_BODY_LEN),
            ..self
        }
    }

    /// The encoded length of a record holding `entries` without
    /// compression, after checking that the batch can be encoded at all
    /// (the limit applies to the uncompressed body). Nothing is written.
    /// [`encode`](RecordEncoder::encode) produces at most this many bytes.
    pub fn encoded_len<E: AsRef<[u8]>>(&self, entries: &[E]) -> Result<usize> {
        ensure!(!entries.is_empty(), EmptyBatchSnafu);
        let body_len = record_len(entries) - RECORD_HEADER_LEN as u64;
        ensure!(
            body_len <= u64::from(self.max_body_len),
            BatchTooLargeSnafu {
                entries: entries.len(),
                len: body_len,
                max: self.max_body_len,
            }
        );
        Ok(RECORD_HEADER_LEN + body_len as usize)
    }

    /// Appends the record for `entries` to `out` and returns its range in
    /// `out`, compressed with the encoder's codec where that makes it
    /// shorter. On error `out` is left unchanged.
    pub fn encode<E: AsRef<[u8]>>(
        &self,
        meta: &BatchMeta,
        entries: &[E],
        out: &mut Vec<u8>,
    ) -> Result<Range<usize>> {
        let record_len = self.encoded_len(entries)?;
        let count = entries.len() as u64;
        ensure!(
            meta.first_sequence >= 1 && meta.first_sequence.checked_add(count).is_some(),
            SequenceOutOfRangeSnafu {
                first: meta.first_sequence,
                count,
            }
        );
        let start = out.len();
        out.reserve(record_len);
        out.resize(start + RECORD_HEADER_LEN, 0);
        let mut body_crc = crc32fast::Hasher::new();
        for entry in entries {
            let payload = entry.as_ref();
            let prefix = (payload.len() as u32).to_le_bytes();
            body_crc.update(&prefix);
            body_crc.update(payload);
            out.extend_from_slice(&prefix);
            out.extend_from_slice(payload);
        }
        debug_assert_eq!(out.len() - start, record_len);
        let body_start = start + RECORD_HEADER_LEN;
        let raw_len = (record_len - RECORD_HEADER_LEN) as u32;
        let (codec, stored_raw_len, body_crc) =
            if codec::compress_in_place(self.codec, out, body_start) {
                (self.codec, raw_len, crc32fast::hash(&out[body_start..]))
            } else {
                (RecordCodec::None, 0, body_crc.finalize())
            };
        let record_len = out.len() - start;
        debug_assert!(record_len <= RECORD_HEADER_LEN + raw_len as usize);

        let header = &mut out[start..body_start];
        header[KIND_AT] = RecordKind::Batch as u8;
        header[CODEC_AT] = codec as u8;
        header[ENTRY_COUNT_AT..BODY_LEN_AT].copy_from_slice(&(count as u32).to_le_bytes());
        let body_len = (record_len - RECORD_HEADER_LEN) as u32;
        header[BODY_LEN_AT..BODY_CRC_AT].copy_from_slice(&body_len.to_le_bytes());
        header[BODY_CRC_AT..RAW_LEN_AT].copy_from_slice(&body_crc.to_le_bytes());
        header[RAW_LEN_AT..SEGMENT_ID_AT].copy_from_slice(&stored_raw_len.to_le_bytes());
        header[SEGMENT_ID_AT..REGION_ID_AT].copy_from_slice(&self.segment_id.to_le_bytes());
        header[REGION_ID_AT..TABLE_ID_AT].copy_from_slice(&meta.region_id.to_le_bytes());
        header[TABLE_ID_AT..FIRST_SEQUENCE_AT].copy_from_slice(&meta.table_id.to_le_bytes());
        header[FIRST_SEQUENCE_AT..DURABLE_OFFSET_AT]
            .copy_from_slice(&meta.first_sequence.to_le_bytes());
        header[DURABLE_OFFSET_AT..].copy_from_slice(&meta.durable_offset.to_le_bytes());
        let crc = header_crc(self.salt, header);
        header[HEADER_CRC_AT..KIND_AT].copy_from_slice(&crc.to_le_bytes());
        Ok(start..start + record_len)
    }
}

/// Decodes and verifies records of one segment.
#[derive(Debug, Clone, Copy)]
pub struct RecordDecoder {
    segment_id: u64,
    salt: u64,
    max_body_len: u32,
}

impl RecordDecoder {
    /// A decoder for records of the segment with `header`. Records of any
    /// other segment fail their header checksum (another salt) or are
    /// rejected for their segment id.
    pub fn new(header: &SegmentHeader) -> Self {
        RecordDecoder {
            segment_id: header.segment_id,
            salt: header.salt,
            max_body_len: MAX_BODY_LEN,
        }
    }

    /// Decodes the record at the start of `bytes`, which sits at segment
    /// offset `offset`. `bytes` may extend past the record.
    ///
    /// Verification order: the header checksum first, over the fixed-size
    /// header, so no length is used before it is trusted; then the kind and
    /// the codec, so that bytes of a layout this build does not know are
    /// never interpreted; then the header's other rules; then the bounds of
    /// the body; then the body checksum, over the body as stored; for an
    /// uncompressed body, that its entry lengths tile it. Nothing is
    /// allocated and nothing decompressed: the returned [`Record`] borrows
    /// from `bytes`, and [`Record::body`] decompresses a compressed body
    /// (checking its entries) when its entries are wanted.
    pub fn decode<'a>(&self, bytes: &'a [u8], offset: u64) -> Result<Record<'a>> {
        let header = self.decode_header(bytes, offset)?;
        let record_len = header.record_len();
        ensure!(
            bytes.len() >= record_len,
            TruncatedSnafu {
                offset,
                needed: record_len as u64,
                available: bytes.len() as u64,
            }
        );
        let body = &bytes[RECORD_HEADER_LEN..record_len];
        let stored = read_u32(bytes, BODY_CRC_AT);
        let computed = crc32fast::hash(body);
        ensure!(
            stored == computed,
            RecordBodyChecksumSnafu {
                offset,
                stored,
                computed,
            }
        );
        if header.codec == RecordCodec::None {
            check_entry_lengths(body, header.entry_count, offset)?;
        }
        Ok(Record {
            offset,
            header,
            body,
        })
    }

    /// Verifies and parses the header of the record at the start of
    /// `bytes` (at least [`RECORD_HEADER_LEN`] of them), which sits at
    /// segment offset `offset`, without looking at its body: for a reader
    /// that only needs to know whose record it is and how long, and skips
    /// the bodies of records it does not want. The body is not verified.
    pub fn decode_header(&self, bytes: &[u8], offset: u64) -> Result<RecordHeader> {
        ensure!(
            bytes.len() >= RECORD_HEADER_LEN,
            TruncatedSnafu {
                offset,
                needed: RECORD_HEADER_LEN as u64,
                available: bytes.len() as u64,
            }
        );
        let bytes = &bytes[..RECORD_HEADER_LEN];
        let stored = read_u32(bytes, HEADER_CRC_AT);
        let computed = header_crc(self.salt, bytes);
        ensure!(
            stored == computed,
            RecordHeaderChecksumSnafu {
                offset,
                stored,
                computed,
            }
        );
        let kind = match bytes[KIND_AT] {
            1 => RecordKind::Batch,
            kind => return UnknownRecordKindSnafu { offset, kind }.fail(),
        };
        let Some(codec) = RecordCodec::from_byte(bytes[CODEC_AT]) else {
            return UnknownCodecSnafu {
                offset,
                codec: bytes[CODEC_AT],
            }
            .fail();
        };
        let stored_raw_len = read_u32(bytes, RAW_LEN_AT);
        // An uncompressed record's raw_len field is reserved: zero.
        ensure!(
            bytes[RESERVED_A_AT..ENTRY_COUNT_AT] == [0; RESERVED_A_LEN]
                && (codec != RecordCodec::None || stored_raw_len == 0),
            RecordReservedSnafu { offset }
        );
        let segment_id = read_u64(bytes, SEGMENT_ID_AT);
        let meta = BatchMeta {
            region_id: read_u64(bytes, REGION_ID_AT),
            table_id: read_u64(bytes, TABLE_ID_AT),
            first_sequence: read_u64(bytes, FIRST_SEQUENCE_AT),
            durable_offset: read_u64(bytes, DURABLE_OFFSET_AT),
        };
        ensure!(
            segment_id == self.segment_id,
            WrongSegmentSnafu {
                offset,
                expected: self.segment_id,
                found: segment_id,
            }
        );
        let body_len = read_u32(bytes, BODY_LEN_AT);
        ensure!(
            body_len <= self.max_body_len,
            RecordTooLargeSnafu {
                offset,
                len: body_len,
                max: self.max_body_len,
            }
        );
        let raw_len = self.raw_len(codec, body_len, stored_raw_len, offset)?;
        let entry_count = read_u32(bytes, ENTRY_COUNT_AT);
        ensure!(
            entry_count >= 1
                && u64::from(entry_count) * ENTRY_LEN_PREFIX as u64 <= u64::from(raw_len),
            MalformedRecordSnafu {
                offset,
                reason: "entry count is zero or does not fit the body",
            }
        );
        ensure!(
            meta.first_sequence >= 1
                && meta
                    .first_sequence
                    .checked_add(u64::from(entry_count))
                    .is_some(),
            MalformedRecordSnafu {
                offset,
                reason: "sequence numbers fall outside 1..u64::MAX",
            }
        );
        ensure!(
            meta.durable_offset <= offset,
            MalformedRecordSnafu {
                offset,
                reason: "durable offset lies beyond the record itself",
            }
        );
        Ok(RecordHeader {
            kind,
            codec,
            entry_count,
            body_len,
            raw_len,
            segment_id,
            meta,
        })
    }

    /// The uncompressed length of a body stored with `codec` in `body_len`
    /// bytes, whose header's `raw_len` field holds `stored_raw_len`: the
    /// body's own length when it is not compressed; otherwise the field,
    /// which must lie within the limit (it sizes the buffer the body is
    /// decompressed into) and above `body_len` (an encoder stores a body
    /// compressed only when that makes it shorter).
    fn raw_len(
        &self,
        codec: RecordCodec,
        body_len: u32,
        stored_raw_len: u32,
        offset: u64,
    ) -> Result<u32> {
        if codec == RecordCodec::None {
            return Ok(body_len);
        }
        ensure!(
            stored_raw_len <= self.max_body_len,
            RecordTooLargeSnafu {
                offset,
                len: stored_raw_len,
                max: self.max_body_len,
            }
        );
        ensure!(
            body_len < stored_raw_len,
            MalformedRecordSnafu {
                offset,
                reason: "compressed body is not shorter than its entries",
            }
        );
        Ok(stored_raw_len)
    }
}

/// Fails with `MalformedRecord` unless exactly `entry_count` entries fill
/// `body` exactly.
fn check_entry_lengths(body: &[u8], entry_count: u32, offset: u64) -> Result<()> {
    ensure!(
        entry_lengths_fit(body, entry_count),
        MalformedRecordSnafu {
            offset,
            reason: "entry lengths do not add up to the body length",
        }
    );
    Ok(())
}

/// Walks the length prefixes of a body and checks that exactly
/// `entry_count` entries fill it exactly.
fn entry_lengths_fit(body: &[u8], entry_count: u32) -> bool {
    // In u64, so that no length can overflow on any target.
    let body_len = body.len() as u64;
    let mut at = 0u64;
    for _ in 0..entry_count {
        if at + ENTRY_LEN_PREFIX as u64 > body_len {
            return false;
        }
        let len = u64::from(read_u32(body, at as usize));
        at += ENTRY_LEN_PREFIX as u64 + len;
        if at > body_len {
            return false;
        }
    }
    at == body_len
}

/// A verified record borrowed from the bytes it was decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    offset: u64,
    header: RecordHeader,
    body: &'a [u8],
}

impl<'a> Record<'a> {
    /// Segment offset of the record's first byte.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Segment offset just past the record.
    pub fn end_offset(&self) -> u64 {
        self.offset + self.header.record_len() as u64
    }

    /// The verified header.
    pub fn header(&self) -> &RecordHeader {
        &self.header
    }

    /// The region every entry belongs to.
    pub fn region_id(&self) -> u64 {
        self.header.meta.region_id
    }

    /// The table every entry belongs to.
    pub fn table_id(&self) -> u64 {
        self.header.meta.table_id
    }

    /// Sequence number of the first entry.
    pub fn first_sequence(&self) -> u64 {
        self.header.meta.first_sequence
    }

    /// Sequence number of the last entry.
    pub fn last_sequence(&self) -> u64 {
        self.header.last_sequence()
    }

    /// Number of entries.
    pub fn entry_count(&self) -> u32 {
        self.header.entry_count
    }

    /// How the body is stored.
    pub fn codec(&self) -> RecordCodec {
        self.header.codec
    }

    /// The body as stored in the segment (compressed, if it is); its
    /// checksum has matched.
    pub fn stored_body(&self) -> &'a [u8] {
        self.body
    }

    /// The entries of a record stored uncompressed, borrowed from the
    /// segment's bytes for as long as they live; `None` for a compressed
    /// record, whose entries only [`body`](Record::body) hands out.
    pub fn borrowed_entries(&self) -> Option<Entries<'a>> {
        (self.header.codec == RecordCodec::None).then(|| {
            Entries::resume(
                self.body,
                self.header.meta.table_id,
                self.header.meta.first_sequence,
            )
        })
    }

    /// The body's entries: borrowed from the segment's bytes for an
    /// uncompressed record (no copy, no allocation), decompressed into a
    /// buffer of the header's `raw_len` bytes for a compressed one.
    ///
    /// Only a compressed body can fail here, with `Decompress` (it does not
    /// decompress to `raw_len` bytes) or `MalformedRecord` (its entry
    /// lengths do not tile it): damage that matched the body checksum,
    /// which a writer of this format never produces.
    pub fn body(&self) -> Result<Body<'a>> {
        let bytes = match self.header.codec {
            RecordCodec::None => Cow::Borrowed(self.body),
            codec => {
                let raw = codec::decompress(codec, self.body, self.header.raw_len, self.offset)?;
                check_entry_lengths(&raw, self.header.entry_count, self.offset)?;
                Cow::Owned(raw)
            }
        };
        Ok(Body::new(
            bytes,
            self.header.meta.table_id,
            self.header.meta.first_sequence,
        ))
    }
}

#[cfg(test)]
mod compressed_tests;
#[cfg(test)]
mod tests;
