//! segwal's on-disk format: the segment header, batch records and the
//! segment scanner.
//!
//! This crate is pure computation over byte slices. It never performs I/O,
//! never reads a clock and contains no `unsafe`; everything that touches a
//! file lives in `segwal-segment`. `docs/FORMAT.md` is the byte-level
//! specification of what is encoded here, and golden-byte tests pin it.
//!
//! The pieces, in the order a segment file is laid out:
//!
//! - [`SegmentHeader`]: the first [`SEGMENT_HEADER_LEN`] bytes of every
//!   segment file (magic, format version, stream and segment ids, checksum).
//! - [`RecordEncoder`] / [`RecordDecoder`]: one *record* holds one batch of
//!   entries for one table of one region under two checksums, so a batch is
//!   atomic on disk: after a torn write either every entry of it decodes or
//!   none does. A record's body may be compressed ([`RecordCodec`]: lz4,
//!   zstd); [`Record::body`] hands out its entries either way.
//! - [`decode_meta_log`] / [`encode_meta_record`]: the data dir's meta log,
//!   one append-only file of [`MetaEntry`] records that remembers delete
//!   marks, sequence numbers and segment ends after the segments holding
//!   them are gone.
//! - [`Scanner`]: walks a segment's bytes record by record and ends with an
//!   explicit [`ScanEnd`]: a clean end, a torn tail, or corruption, each with
//!   its offset.
//!
//! ```
//! use segwal_format::{BatchMeta, RecordEncoder, ScanEnd, Scanner, SegmentHeader};
//!
//! let segment = SegmentHeader { stream_id: 1, segment_id: 7, salt: 0x5eed, capacity: 1 << 20 };
//! let mut image = Vec::new();
//! let meta = BatchMeta { region_id: 2, table_id: 3, first_sequence: 1, durable_offset: 0 };
//! RecordEncoder::new(&segment)
//!     .encode(&meta, &[b"hello".as_slice(), b"world"], &mut image)
//!     .unwrap();
//! image.resize(image.len() + 64, 0); // the zero-filled rest of a preallocated file
//!
//! let mut scanner = Scanner::new(&image, 0, &segment);
//! let record = scanner.next().unwrap();
//! let body = record.body().unwrap(); // borrowed: stored without compression
//! let entries: Vec<_> = body.entries().map(|e| (e.sequence, e.payload)).collect();
//! assert_eq!(entries, [(1, b"hello".as_slice()), (2, b"world".as_slice())]);
//! assert!(scanner.next().is_none());
//! assert!(matches!(scanner.end(), Some(ScanEnd::Clean { .. })));
//! ```

#![forbid(unsafe_code)]

mod codec;
mod entries;
mod error;
mod header;
mod metalog;
mod record;
mod scan;

pub use codec::{MIN_COMPRESSED_BODY_LEN, ZSTD_LEVEL};
pub use entries::{Body, Entries, Entry};
pub use error::{Error, Result};
pub use header::{
    FORMAT_VERSION, MAGIC, MIN_SEGMENT_CAPACITY, SEGMENT_HEADER_LEN, SegmentHeader, SegmentIdentity,
};
pub use metalog::{
    META_ENTRY_LEN, META_LOG_HEADER_LEN, META_LOG_MAGIC, META_RECORD_HEADER_LEN, MetaEntry,
    MetaLog, MetaLogEnd, decode_meta_log, encode_meta_log_header, encode_meta_record,
};
pub use record::{
    BatchMeta, ENTRY_LEN_PREFIX, MAX_BODY_LEN, RECORD_HEADER_LEN, Record, RecordCodec,
    RecordDecoder, RecordEncoder, RecordHeader, RecordKind, record_len,
};
pub use scan::{ScanEnd, Scanner, written_len};

/// Reads a little-endian `u32` at `at`. Callers have checked the bounds.
fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(raw)
}

/// Reads a little-endian `u64` at `at`. Callers have checked the bounds.
fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}
