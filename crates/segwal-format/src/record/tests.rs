//! Unit tests of the record codec: golden bytes, round trips, every error.

use super::*;
use crate::{Entry, Error};

pub(super) const SEGMENT: SegmentHeader = SegmentHeader {
    stream_id: 1,
    segment_id: 5,
    salt: 0xa1a2_a3a4_a5a6_a7a8,
    capacity: 64 << 20,
};
pub(super) const META: BatchMeta = BatchMeta {
    region_id: 0x2122_2324_2526_2728,
    table_id: 0x1122_3344_5566_7788,
    first_sequence: 10,
    durable_offset: 32,
};

fn encode(meta: &BatchMeta, entries: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    RecordEncoder::new(&SEGMENT)
        .encode(meta, entries, &mut out)
        .unwrap();
    out
}

/// Pins the byte encoding of a batch record: if this test fails, the
/// on-disk format changed and FORMAT_VERSION must change with it. The
/// checksums were computed independently with zlib's crc32.
#[test]
fn golden_bytes() {
    let bytes = encode(&META, &[b"ab", b""]);
    #[rustfmt::skip]
    let expected: Vec<u8> = vec![
        0x39, 0x58, 0xaa, 0x35, // header_crc (salt included)
        0x01, // kind = batch
        0x00, // codec = none
        0x00, 0x00, // reserved
        0x02, 0x00, 0x00, 0x00, // entry_count = 2
        0x0a, 0x00, 0x00, 0x00, // body_len = 4 + 2 + 4 + 0
        0x99, 0x40, 0x25, 0xc7, // body_crc
        0x00, 0x00, 0x00, 0x00, // reserved
        0x05, 0, 0, 0, 0, 0, 0, 0, // segment_id = 5
        0x28, 0x27, 0x26, 0x25, 0x24, 0x23, 0x22, 0x21, // region_id
        0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // table_id
        0x0a, 0, 0, 0, 0, 0, 0, 0, // first_sequence = 10
        0x20, 0, 0, 0, 0, 0, 0, 0, // durable_offset = 32
        0x02, 0x00, 0x00, 0x00, b'a', b'b', // entry 1
        0x00, 0x00, 0x00, 0x00, // entry 2 (empty payload)
    ];
    assert_eq!(bytes, expected);
    let record = RecordDecoder::new(&SEGMENT).decode(&bytes, 64).unwrap();
    assert_eq!(record.header().meta, META);
    assert_eq!(record.header().codec, RecordCodec::None);
    assert_eq!(record.region_id(), META.region_id);
}

#[test]
fn round_trip_borrows_payloads() {
    let bytes = encode(&META, &[b"first", b"", b"third"]);
    let record = RecordDecoder::new(&SEGMENT).decode(&bytes, 64).unwrap();
    assert_eq!(record.offset(), 64);
    assert_eq!(record.end_offset(), 64 + bytes.len() as u64);
    assert_eq!((record.first_sequence(), record.last_sequence()), (10, 12));
    let entries: Vec<_> = record.borrowed_entries().unwrap().collect();
    assert_eq!(
        entries,
        [
            Entry {
                table_id: META.table_id,
                sequence: 10,
                payload: b"first"
            },
            Entry {
                table_id: META.table_id,
                sequence: 11,
                payload: b""
            },
            Entry {
                table_id: META.table_id,
                sequence: 12,
                payload: b"third"
            },
        ]
    );
}

/// Proves a header decoded alone equals the one a full decode gives,
/// needs only the header's bytes, ignores the body, and still catches
/// any damage to the header itself.
#[test]
fn a_header_decodes_alone_and_is_verified() {
    let mut bytes = encode(&META, &[b"first", b"", b"third"]);
    let decoder = RecordDecoder::new(&SEGMENT);
    let full = *decoder.decode(&bytes, 64).unwrap().header();
    let header = decoder
        .decode_header(&bytes[..RECORD_HEADER_LEN], 64)
        .unwrap();
    assert_eq!(header, full);
    assert_eq!(header.meta.region_id, META.region_id);
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert_eq!(decoder.decode_header(&bytes, 64).unwrap(), full);
    for at in 0..RECORD_HEADER_LEN {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x10;
        assert!(decoder.decode_header(&damaged, 64).is_err(), "byte {at}");
    }
    assert!(matches!(
        decoder.decode_header(&bytes[..RECORD_HEADER_LEN - 1], 64),
        Err(Error::Truncated { .. })
    ));
}

/// Proves that entries resumed from the bytes an earlier iterator left
/// are exactly the ones it would have handed out next, and that
/// resuming over arbitrary bytes ends early instead of panicking.
#[test]
fn resumed_entries_continue_where_they_stopped() {
    let bytes = encode(&META, &[b"first", b"", b"third", b"fourth"]);
    let record = RecordDecoder::new(&SEGMENT).decode(&bytes, 64).unwrap();
    let all: Vec<_> = record.borrowed_entries().unwrap().collect();
    for taken in 0..=all.len() {
        let mut entries = record.borrowed_entries().unwrap();
        entries.by_ref().take(taken).for_each(drop);
        let rest = &bytes[bytes.len() - entries.remaining_len()..];
        let resumed =
            Entries::resume(rest, entries.table_id(), entries.next_sequence()).collect::<Vec<_>>();
        assert_eq!(resumed, all[taken..], "after {taken} entries");
    }
    for garbage in [
        &[1u8][..],
        &[5, 0, 0, 0, b'a'],
        &[0xff; 9],
        &[0, 0, 0, 0, 2, 0],
    ] {
        let entries: Vec<_> = Entries::resume(garbage, 1, 1).collect();
        assert!(entries.len() <= 1, "{garbage:?}");
    }
}

#[test]
fn empty_batch_is_refused() {
    let mut out = vec![1, 2, 3];
    let err = RecordEncoder::new(&SEGMENT)
        .encode::<&[u8]>(&META, &[], &mut out)
        .unwrap_err();
    assert_eq!(err, Error::EmptyBatch);
    assert_eq!(out, [1, 2, 3], "a failed encode leaves the buffer alone");
}

#[test]
fn oversized_batch_is_refused_before_encoding() {
    let encoder = RecordEncoder::new(&SEGMENT).with_max_body_len(16);
    let entries: [&[u8]; 2] = [&[0; 8], &[0; 1]];
    let err = encoder.encoded_len(&entries).unwrap_err();
    assert_eq!(
        err,
        Error::BatchTooLarge {
            entries: 2,
            len: 17,
            max: 16
        }
    );
    let mut out = Vec::new();
    assert!(encoder.encode(&META, &entries, &mut out).is_err());
    assert!(out.is_empty());
}

#[test]
fn sequence_range_is_checked() {
    let mut out = Vec::new();
    for (first, count) in [(0u64, 1usize), (u64::MAX, 1), (u64::MAX - 1, 2)] {
        let meta = BatchMeta {
            first_sequence: first,
            ..META
        };
        let entries = vec![b"x".as_slice(); count];
        let err = RecordEncoder::new(&SEGMENT)
            .encode(&meta, &entries, &mut out)
            .unwrap_err();
        assert_eq!(
            err,
            Error::SequenceOutOfRange {
                first,
                count: count as u64
            }
        );
    }
    // The largest assignable sequence number is u64::MAX - 1.
    let meta = BatchMeta {
        first_sequence: u64::MAX - 1,
        ..META
    };
    RecordEncoder::new(&SEGMENT)
        .encode(&meta, &[b"x"], &mut out)
        .unwrap();
    let record = RecordDecoder::new(&SEGMENT).decode(&out, 64).unwrap();
    assert_eq!(record.last_sequence(), u64::MAX - 1);
}

#[test]
fn truncated_input_names_what_is_missing() {
    let bytes = encode(&META, &[b"payload"]);
    let decoder = RecordDecoder::new(&SEGMENT);
    assert_eq!(
        decoder.decode(&bytes[..10], 100),
        Err(Error::Truncated {
            offset: 100,
            needed: 64,
            available: 10
        })
    );
    assert_eq!(
        decoder.decode(&bytes[..bytes.len() - 1], 100),
        Err(Error::Truncated {
            offset: 100,
            needed: 75,
            available: 74
        })
    );
}

#[test]
fn garbage_length_is_caught_by_the_header_checksum() {
    let mut bytes = encode(&META, &[b"payload"]);
    bytes[BODY_LEN_AT..BODY_LEN_AT + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = RecordDecoder::new(&SEGMENT)
        .decode(&bytes, 100)
        .unwrap_err();
    assert!(
        matches!(err, Error::RecordHeaderChecksum { offset: 100, .. }),
        "{err}"
    );
}

#[test]
fn record_of_another_segment_is_rejected() {
    let bytes = encode(&META, &[b"payload"]);
    // Another segment has another salt: its records fail the checksum.
    let other = SegmentHeader {
        segment_id: 6,
        salt: 1,
        ..SEGMENT
    };
    let err = RecordDecoder::new(&other).decode(&bytes, 100).unwrap_err();
    assert!(
        matches!(err, Error::RecordHeaderChecksum { offset: 100, .. }),
        "{err}"
    );
    // With the same salt (never the case in practice) the id still differs.
    let same_salt = SegmentHeader {
        segment_id: 6,
        ..SEGMENT
    };
    let err = RecordDecoder::new(&same_salt)
        .decode(&bytes, 100)
        .unwrap_err();
    assert_eq!(
        err,
        Error::WrongSegment {
            offset: 100,
            expected: 6,
            found: 5
        }
    );
}

#[test]
fn durable_offset_beyond_the_record_is_malformed() {
    let bytes = encode(&META, &[b"payload"]);
    let err = RecordDecoder::new(&SEGMENT).decode(&bytes, 31).unwrap_err();
    assert!(
        matches!(err, Error::MalformedRecord { offset: 31, .. }),
        "{err}"
    );
}

/// Re-signs a header after a test edits it, to reach the checks behind
/// the header checksum.
pub(super) fn reseal(bytes: &mut [u8]) {
    let crc = header_crc(SEGMENT.salt, bytes);
    bytes[..KIND_AT].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn validly_signed_but_inconsistent_headers_are_rejected() {
    let decoder = RecordDecoder::new(&SEGMENT);
    let good = encode(&META, &[b"payload"]);

    let mut bytes = good.clone();
    bytes[KIND_AT] = 9;
    reseal(&mut bytes);
    assert_eq!(
        decoder.decode(&bytes, 0),
        Err(Error::UnknownRecordKind { offset: 0, kind: 9 })
    );

    let mut bytes = good.clone();
    bytes[CODEC_AT] = 3;
    reseal(&mut bytes);
    assert_eq!(
        decoder.decode(&bytes, 0),
        Err(Error::UnknownCodec {
            offset: 0,
            codec: 3
        })
    );

    // An uncompressed record's raw_len field is reserved.
    for reserved in [RESERVED_A_AT, RESERVED_A_AT + 1, RAW_LEN_AT] {
        let mut bytes = good.clone();
        bytes[reserved] = 1;
        reseal(&mut bytes);
        assert_eq!(
            decoder.decode(&bytes, 0),
            Err(Error::RecordReserved { offset: 0 })
        );
    }

    let mut bytes = good.clone();
    bytes[ENTRY_COUNT_AT..BODY_LEN_AT].copy_from_slice(&0u32.to_le_bytes());
    reseal(&mut bytes);
    assert!(matches!(
        decoder.decode(&bytes, 0),
        Err(Error::MalformedRecord { .. })
    ));

    let mut bytes = good.clone();
    bytes[ENTRY_COUNT_AT..BODY_LEN_AT].copy_from_slice(&2u32.to_le_bytes());
    reseal(&mut bytes);
    assert!(matches!(
        decoder.decode(&bytes, 0),
        Err(Error::MalformedRecord { .. })
    ));

    let mut bytes = good.clone();
    bytes[FIRST_SEQUENCE_AT..DURABLE_OFFSET_AT].copy_from_slice(&u64::MAX.to_le_bytes());
    reseal(&mut bytes);
    assert!(matches!(
        decoder.decode(&bytes, 64),
        Err(Error::MalformedRecord { .. })
    ));

    let mut bytes = good.clone();
    bytes[BODY_LEN_AT..BODY_CRC_AT].copy_from_slice(&(MAX_BODY_LEN + 1).to_le_bytes());
    reseal(&mut bytes);
    assert_eq!(
        decoder.decode(&bytes, 0),
        Err(Error::RecordTooLarge {
            offset: 0,
            len: MAX_BODY_LEN + 1,
            max: MAX_BODY_LEN
        })
    );
}

#[test]
fn every_bit_flip_is_detected() {
    let bytes = encode(&META, &[b"some", b"entries", b"here"]);
    let decoder = RecordDecoder::new(&SEGMENT);
    for bit in 0..bytes.len() * 8 {
        let mut flipped = bytes.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        assert!(
            decoder.decode(&flipped, 64).is_err(),
            "flip of bit {bit} went unnoticed"
        );
    }
}
