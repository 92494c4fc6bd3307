//! Unit tests of compressed records: golden bytes per codec, the choice
//! to store uncompressed, and every way a compressed record can be wrong.

use super::tests::{META, SEGMENT, reseal};
use super::*;
use crate::Error;

/// The golden batch: two rows of a time series, which every codec
/// compresses.
fn rows() -> [Vec<u8>; 2] {
    [
        b"cpu,host=a usage=1.5;".repeat(4),
        b"cpu,host=b usage=2.5;".repeat(4),
    ]
}

fn encode_with(codec: RecordCodec, entries: &[impl AsRef<[u8]>]) -> Vec<u8> {
    let mut out = Vec::new();
    RecordEncoder::new(&SEGMENT)
        .with_codec(codec)
        .encode(&META, entries, &mut out)
        .unwrap();
    out
}

/// Recomputes the body checksum after a test edits a body, then re-signs
/// the header, so that the record reaches the checks behind both
/// checksums.
fn reseal_body(bytes: &mut [u8]) {
    let crc = crc32fast::hash(&bytes[RECORD_HEADER_LEN..]);
    bytes[BODY_CRC_AT..RAW_LEN_AT].copy_from_slice(&crc.to_le_bytes());
    reseal(bytes);
}

/// Checks the golden record of `codec` against `expected` (header fields
/// as documented, body as the compressor writes it), and that `expected`
/// decodes to the golden entries.
fn check_golden(codec: RecordCodec, expected: &[u8]) {
    let rows = rows();
    let decoded = RecordDecoder::new(&SEGMENT).decode(expected, 64).unwrap();
    assert_eq!(decoded.codec(), codec);
    assert_eq!(decoded.header().raw_len, 176);
    let body = decoded.body().unwrap();
    let payloads: Vec<&[u8]> = body.entries().map(|e| e.payload).collect();
    assert_eq!(payloads, [rows[0].as_slice(), rows[1].as_slice()]);
    assert_eq!(expected[CODEC_AT], codec as u8);
    assert_eq!(expected[RAW_LEN_AT..SEGMENT_ID_AT], 176u32.to_le_bytes());
    assert_eq!(encode_with(codec, &rows), expected);
}

/// Pins the lz4 record of the golden batch: the header as documented in
/// docs/FORMAT.md ("Golden bytes"), codec 1 and raw_len 176, and the body
/// as lz4_flex writes an LZ4 block. These bytes must always decode; if
/// only the encoder's output changes (a new lz4_flex), the compressor
/// changed, not the format, and the bytes are updated.
#[test]
fn golden_bytes_lz4() {
    check_golden(RecordCodec::Lz4, &GOLDEN_LZ4);
}

/// Pins the zstd record of the golden batch, as
/// [`golden_bytes_lz4`] does for lz4: codec 2, a Zstandard frame at
/// level [`ZSTD_LEVEL`](crate::ZSTD_LEVEL).
#[test]
fn golden_bytes_zstd() {
    check_golden(RecordCodec::Zstd, &GOLDEN_ZSTD);
}

#[rustfmt::skip]
const GOLDEN_LZ4: [u8; 116] = [
    0xa2, 0x4d, 0x3a, 0xec, // header_crc (salt included)
    0x01, 0x01, 0x00, 0x00, // kind = batch, codec, reserved
    0x02, 0x00, 0x00, 0x00, // entry_count = 2
    0x34, 0x00, 0x00, 0x00, // body_len (compressed)
    0xb7, 0x14, 0x7f, 0x16, // body_crc (of the compressed body)
    0xb0, 0x00, 0x00, 0x00, // raw_len = 176
    0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // segment_id = 5
    0x28, 0x27, 0x26, 0x25, 0x24, 0x23, 0x22, 0x21, // region_id
    0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // table_id
    0x0a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // first_sequence = 10
    0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // durable_offset = 32
    0xff, 0x0a, 0x54, 0x00, 0x00, 0x00, 0x63, 0x70, 0x75, 0x2c, 0x68, 0x6f,
    0x73, 0x74, 0x3d, 0x61, 0x20, 0x75, 0x73, 0x61, 0x67, 0x65, 0x3d, 0x31,
    0x2e, 0x35, 0x3b, 0x15, 0x00, 0x2c, 0x09, 0x58, 0x00, 0x13, 0x62, 0x58,
    0x00, 0x18, 0x32, 0x58, 0x00, 0x0f, 0x15, 0x00, 0x1d, 0x60, 0x65, 0x3d,
    0x32, 0x2e, 0x35, 0x3b, // body
];
#[rustfmt::skip]
const GOLDEN_ZSTD: [u8; 115] = [
    0x74, 0x8b, 0x6a, 0x29, // header_crc (salt included)
    0x01, 0x02, 0x00, 0x00, // kind = batch, codec, reserved
    0x02, 0x00, 0x00, 0x00, // entry_count = 2
    0x33, 0x00, 0x00, 0x00, // body_len (compressed)
    0x02, 0x09, 0x6f, 0x00, // body_crc (of the compressed body)
    0xb0, 0x00, 0x00, 0x00, // raw_len = 176
    0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // segment_id = 5
    0x28, 0x27, 0x26, 0x25, 0x24, 0x23, 0x22, 0x21, // region_id
    0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // table_id
    0x0a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // first_sequence = 10
    0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // durable_offset = 32
    0x28, 0xb5, 0x2f, 0xfd, 0x20, 0xb0, 0x55, 0x01, 0x00, 0xd8, 0x54, 0x00,
    0x00, 0x00, 0x63, 0x70, 0x75, 0x2c, 0x68, 0x6f, 0x73, 0x74, 0x3d, 0x61,
    0x20, 0x75, 0x73, 0x61, 0x67, 0x65, 0x3d, 0x31, 0x2e, 0x35, 0x3b, 0x62,
    0x32, 0x05, 0x00, 0x03, 0x27, 0x00, 0x7e, 0x90, 0xf1, 0x16, 0x0e, 0x1b,
    0x51, 0x9a, 0x63, // body
];

/// Proves that a compressible batch is stored compressed with each codec,
/// shorter than uncompressed, and reads back the same entries from an
/// owned buffer; and that every codec leaves an incompressible or short
/// body uncompressed (codec byte 0, raw_len 0), borrowed on reading.
#[test]
fn compressed_only_where_it_is_smaller() {
    let compressible = [vec![7u8; 4000], b"abc".repeat(300)];
    let mut state = 0x1234_5678_9abc_def1u64;
    let random: Vec<u8> = (0..4000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let plain_len = encode_with(RecordCodec::None, &compressible).len();
    for codec in [RecordCodec::Lz4, RecordCodec::Zstd] {
        let bytes = encode_with(codec, &compressible);
        assert!(
            bytes.len() < plain_len / 10,
            "{codec}: {} bytes",
            bytes.len()
        );
        let record = RecordDecoder::new(&SEGMENT).decode(&bytes, 64).unwrap();
        assert_eq!(record.codec(), codec);
        assert_eq!(record.end_offset(), 64 + bytes.len() as u64);
        assert!(record.borrowed_entries().is_none());
        let body = record.body().unwrap();
        assert!(body.is_decompressed());
        let payloads: Vec<&[u8]> = body.entries().map(|e| e.payload).collect();
        assert_eq!(
            payloads,
            [compressible[0].as_slice(), compressible[1].as_slice()]
        );

        for entries in [vec![random.clone()], vec![b"short".to_vec()]] {
            let bytes = encode_with(codec, &entries[..]);
            assert_eq!(
                bytes,
                encode_with(RecordCodec::None, &entries[..]),
                "{codec}"
            );
            let record = RecordDecoder::new(&SEGMENT).decode(&bytes, 64).unwrap();
            assert_eq!(record.codec(), RecordCodec::None);
            assert!(!record.body().unwrap().is_decompressed());
        }
    }
}

/// Proves the header rules of a compressed record, each reached behind a
/// valid checksum: a raw length over the limit is `RecordTooLarge` (so
/// no buffer is sized by it), one not above the stored length or too
/// small for the entry count is `MalformedRecord`.
#[test]
fn compressed_header_rules_are_checked() {
    let decoder = RecordDecoder::new(&SEGMENT);
    let good = encode_with(RecordCodec::Zstd, &rows());
    let body_len = (good.len() - RECORD_HEADER_LEN) as u32;
    let edited = |raw_len: u32, entry_count: u32| {
        let mut bytes = good.clone();
        bytes[RAW_LEN_AT..SEGMENT_ID_AT].copy_from_slice(&raw_len.to_le_bytes());
        bytes[ENTRY_COUNT_AT..BODY_LEN_AT].copy_from_slice(&entry_count.to_le_bytes());
        reseal(&mut bytes);
        decoder.decode(&bytes, 64).map(|record| *record.header())
    };
    assert_eq!(
        edited(MAX_BODY_LEN + 1, 2),
        Err(Error::RecordTooLarge {
            offset: 64,
            len: MAX_BODY_LEN + 1,
            max: MAX_BODY_LEN
        })
    );
    let not_shorter = "compressed body is not shorter than its entries";
    let no_fit = "entry count is zero or does not fit the body";
    for (raw_len, entry_count, reason) in [
        (0, 2, not_shorter),
        (body_len, 2, not_shorter),
        (body_len + 1, (body_len + 1) / 4 + 1, no_fit),
    ] {
        assert_eq!(
            edited(raw_len, entry_count),
            Err(Error::MalformedRecord { offset: 64, reason }),
            "raw_len {raw_len}"
        );
    }
    let header = edited(MAX_BODY_LEN, 2).unwrap();
    assert_eq!((header.raw_len, header.body_len), (MAX_BODY_LEN, body_len));
}

/// Proves that a compressed body that matches its checksum but is not what
/// its header says (garbage, a raw length off by one either way, entries
/// that do not tile the decompressed bytes) verifies as a record but fails
/// `body()` with an error naming the record's offset, never a panic, for
/// both codecs.
#[test]
fn bodies_that_do_not_decompress_are_errors_at_their_offset() {
    let decoder = RecordDecoder::new(&SEGMENT);
    for codec in [RecordCodec::Lz4, RecordCodec::Zstd] {
        let good = encode_with(codec, &rows());
        let mut garbage = good.clone();
        for byte in &mut garbage[RECORD_HEADER_LEN..] {
            *byte = byte.wrapping_mul(31).wrapping_add(17);
        }
        reseal_body(&mut garbage);
        let mut cases = vec![garbage];
        for raw_len in [175u32, 177] {
            let mut bytes = good.clone();
            bytes[RAW_LEN_AT..SEGMENT_ID_AT].copy_from_slice(&raw_len.to_le_bytes());
            reseal(&mut bytes);
            cases.push(bytes);
        }
        let mut miscounted = good.clone();
        miscounted[ENTRY_COUNT_AT..BODY_LEN_AT].copy_from_slice(&3u32.to_le_bytes());
        reseal(&mut miscounted);
        cases.push(miscounted);
        for (i, bytes) in cases.iter().enumerate() {
            let record = decoder.decode(bytes, 4096).unwrap();
            let err = record.body().unwrap_err();
            assert_eq!(err.offset(), Some(4096), "{codec} case {i}: {err}");
            assert!(
                matches!(
                    err,
                    Error::Decompress { .. } | Error::MalformedRecord { .. }
                ),
                "{codec} case {i}: {err:?}"
            );
            assert!(err.to_string().contains("offset 4096"), "{err}");
        }
    }
}

/// Proves that any single flipped bit of a compressed record, header or
/// compressed body, is caught by a checksum before anything is
/// decompressed.
#[test]
fn every_bit_flip_of_a_compressed_record_is_detected() {
    let decoder = RecordDecoder::new(&SEGMENT);
    for codec in [RecordCodec::Lz4, RecordCodec::Zstd] {
        let bytes = encode_with(codec, &rows());
        assert_eq!(bytes[CODEC_AT], codec as u8);
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                matches!(
                    decoder.decode(&flipped, 64),
                    Err(Error::RecordHeaderChecksum { .. } | Error::RecordBodyChecksum { .. })
                ),
                "{codec}: flip of bit {bit} went unnoticed"
            );
        }
    }
}

/// Proves that codec names and bytes round-trip and that unknown ones are
/// refused.
#[test]
fn codec_names_and_bytes_round_trip() {
    for codec in RecordCodec::ALL {
        assert_eq!(RecordCodec::from_byte(codec as u8), Some(codec));
        assert_eq!(RecordCodec::from_name(codec.name()), Some(codec));
        assert_eq!(codec.to_string(), codec.name());
    }
    assert_eq!(RecordCodec::from_byte(3), None);
    assert_eq!(RecordCodec::from_name("gzip"), None);
}
