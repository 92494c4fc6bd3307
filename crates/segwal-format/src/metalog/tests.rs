//! Unit tests of the meta log codec: golden bytes, round trips, every cut,
//! every bit flip, and records that verify but break a rule.

use super::*;

const DELETE: MetaEntry = MetaEntry::DeleteMark {
    region_id: 0x0102_0304_0506_0708,
    table_id: 0x1112_1314_1516_1718,
    deleted_up_to: 0x2122_2324_2526_2728,
};
const TABLE_MAX_ENTRY: MetaEntry = MetaEntry::TableMax {
    region_id: 0x0102_0304_0506_0708,
    table_id: 0x1112_1314_1516_1718,
    max_sequence: 0x3132_3334_3536_3738,
};
const FLOOR: MetaEntry = MetaEntry::SequenceFloor {
    region_id: 0x0102_0304_0506_0708,
    next_sequence: 0x4142_4344_4546_4748,
};
const END: MetaEntry = MetaEntry::SegmentEnd {
    segment_id: 0x5152_5354_5556_5758,
    end: 0x6162_6364_6566_6768,
};

/// A log of the header and one record per slice; returns it with each
/// record's start offset.
fn log(records: &[&[MetaEntry]]) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = encode_meta_log_header().to_vec();
    let mut starts = Vec::new();
    for entries in records {
        starts.push(bytes.len());
        encode_meta_record(entries, &mut bytes);
    }
    (bytes, starts)
}

const THREE: [&[MetaEntry]; 3] = [&[DELETE, FLOOR], &[TABLE_MAX_ENTRY], &[END, DELETE, FLOOR]];

fn entries_of(records: &[&[MetaEntry]]) -> Vec<MetaEntry> {
    records.iter().flat_map(|r| r.iter().copied()).collect()
}

/// Pins the meta log header: if this test fails, the format changed and
/// FORMAT_VERSION must change with it. The checksum was computed
/// independently with zlib's crc32.
#[test]
fn golden_header_bytes() {
    let expected: [u8; META_LOG_HEADER_LEN] = [
        0x89, b'S', b'E', b'G', b'M', b'L', b'G', b'\n', // magic
        0x03,  // version
        0x00, 0x00, 0x00, // reserved
        0xbb, 0xcf, 0xec, 0xde, // crc32 of the 12 bytes before
    ];
    assert_eq!(encode_meta_log_header(), expected);
    let decoded = decode_meta_log(&expected).unwrap();
    assert_eq!(
        decoded,
        MetaLog {
            entries: Vec::new(),
            end: MetaLogEnd::Clean { len: 16 }
        }
    );
}

/// An entry, then its record's checksum, kind byte and fields a, b, c.
type Golden = (MetaEntry, [u8; 4], u8, [u8; 8], [u8; 8], [u8; 8]);

/// Pins one record of each kind: if this test fails, the format changed
/// and FORMAT_VERSION must change with it. The checksums were computed
/// independently with zlib's crc32.
#[test]
fn golden_record_bytes() {
    #[rustfmt::skip]
    let cases: [Golden; 4] = [
        (
            DELETE, [0x56, 0x59, 0x8b, 0xe1], 1,
            [0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01], // region_id
            [0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11], // table_id
            [0x28, 0x27, 0x26, 0x25, 0x24, 0x23, 0x22, 0x21], // deleted_up_to
        ),
        (
            TABLE_MAX_ENTRY, [0xcf, 0x9f, 0x8d, 0x4b], 2,
            [0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01], // region_id
            [0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11], // table_id
            [0x38, 0x37, 0x36, 0x35, 0x34, 0x33, 0x32, 0x31], // max_sequence
        ),
        (
            FLOOR, [0xef, 0xd6, 0x8e, 0x95], 3,
            [0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01], // region_id
            [0; 8],                                           // unused
            [0x48, 0x47, 0x46, 0x45, 0x44, 0x43, 0x42, 0x41], // next_sequence
        ),
        (
            END, [0xb9, 0x78, 0xd6, 0x3f], 4,
            [0x58, 0x57, 0x56, 0x55, 0x54, 0x53, 0x52, 0x51], // segment_id
            [0; 8],                                           // unused
            [0x68, 0x67, 0x66, 0x65, 0x64, 0x63, 0x62, 0x61], // end
        ),
    ];
    for (entry, crc, kind, a, b, c) in cases {
        let mut expected = Vec::new();
        expected.extend_from_slice(&crc); // record_crc
        expected.extend_from_slice(&[1, 0, 0, 0]); // entry_count = 1
        expected.push(kind);
        expected.extend_from_slice(&[0; 7]); // reserved
        expected.extend_from_slice(&a);
        expected.extend_from_slice(&b);
        expected.extend_from_slice(&c);
        let mut bytes = Vec::new();
        encode_meta_record(&[entry], &mut bytes);
        assert_eq!(bytes, expected, "{entry:?}");
    }
}

#[test]
fn round_trip() {
    let (bytes, _) = log(&THREE);
    let decoded = decode_meta_log(&bytes).unwrap();
    assert_eq!(decoded.entries, entries_of(&THREE));
    assert_eq!(
        decoded.end,
        MetaLogEnd::Clean {
            len: bytes.len() as u64
        }
    );
    assert_eq!(
        decoded.entries.capacity(),
        decoded.entries.len(),
        "decoding allocates exactly the entries"
    );
    for extreme in [0, u64::MAX] {
        let entries = [
            MetaEntry::DeleteMark {
                region_id: extreme,
                table_id: extreme,
                deleted_up_to: extreme,
            },
            MetaEntry::SegmentEnd {
                segment_id: extreme,
                end: extreme,
            },
        ];
        let (bytes, _) = log(&[&entries]);
        assert_eq!(decode_meta_log(&bytes).unwrap().entries, entries);
    }
}

#[test]
#[should_panic(expected = "at least one entry")]
fn an_empty_record_is_a_bug() {
    encode_meta_record(&[], &mut Vec::new());
}

/// Proves that a crash during any append, wherever it cut the file,
/// loses only the record being appended: every complete record before
/// the cut is returned and the log ends cleanly or as a torn tail where
/// the cut record starts.
#[test]
fn a_cut_at_every_offset_is_a_torn_tail() {
    let (bytes, starts) = log(&THREE);
    for cut in 0..META_LOG_HEADER_LEN {
        assert_eq!(
            decode_meta_log(&bytes[..cut]),
            Err(Error::ShortMetaLogHeader { len: cut })
        );
    }
    let ends: Vec<usize> = starts[1..].iter().copied().chain([bytes.len()]).collect();
    for cut in META_LOG_HEADER_LEN..=bytes.len() {
        let complete = ends.iter().take_while(|&&end| end <= cut).count();
        let decoded = decode_meta_log(&bytes[..cut]).unwrap();
        assert_eq!(decoded.entries, entries_of(&THREE[..complete]), "cut {cut}");
        let expected = if complete == 0 && cut == META_LOG_HEADER_LEN
            || complete > 0 && ends[complete - 1] == cut
        {
            MetaLogEnd::Clean { len: cut as u64 }
        } else {
            MetaLogEnd::TornTail {
                offset: starts[complete] as u64,
            }
        };
        assert_eq!(decoded.end, expected, "cut {cut}");
    }
}

#[test]
fn zeros_after_the_last_record_are_a_torn_tail() {
    let (mut bytes, _) = log(&THREE);
    let data_end = bytes.len();
    for zeros in [1, 7, 8, 40, 4096] {
        bytes.resize(data_end + zeros, 0);
        let decoded = decode_meta_log(&bytes).unwrap();
        assert_eq!(decoded.entries, entries_of(&THREE));
        assert_eq!(
            decoded.end,
            MetaLogEnd::TornTail {
                offset: data_end as u64
            }
        );
    }
}

#[test]
fn damage_to_a_middle_record_is_corruption_at_its_offset() {
    let (mut bytes, starts) = log(&THREE);
    bytes[starts[1] + META_RECORD_HEADER_LEN + 20] ^= 0x10;
    let decoded = decode_meta_log(&bytes).unwrap();
    assert_eq!(decoded.entries, entries_of(&THREE[..1]));
    let MetaLogEnd::Corruption { offset, cause } = decoded.end else {
        panic!("expected corruption, got {:?}", decoded.end);
    };
    assert_eq!(offset, starts[1] as u64);
    assert!(
        matches!(cause, Error::MetaRecordChecksum { offset, .. } if offset == starts[1] as u64),
        "{cause}"
    );
    assert!(
        cause.to_string().starts_with(&format!(
            "meta log record checksum mismatch at offset {offset}"
        )),
        "{cause}"
    );
}

#[test]
fn damage_to_the_last_record_is_a_torn_tail() {
    let (mut bytes, starts) = log(&THREE);
    bytes[starts[2] + 1] ^= 0x01;
    let decoded = decode_meta_log(&bytes).unwrap();
    assert_eq!(decoded.entries, entries_of(&THREE[..2]));
    assert_eq!(
        decoded.end,
        MetaLogEnd::TornTail {
            offset: starts[2] as u64
        }
    );
}

/// Every single-bit flip is detected: in the header as an error, in a
/// record as the end of the log at that record, called corruption
/// exactly when a later record is intact.
#[test]
fn every_bit_flip_is_detected() {
    let (bytes, starts) = log(&THREE);
    for bit in 0..bytes.len() * 8 {
        let mut flipped = bytes.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let byte = bit / 8;
        if byte < META_LOG_HEADER_LEN {
            assert!(decode_meta_log(&flipped).is_err(), "bit {bit}");
            continue;
        }
        let damaged = starts.iter().rposition(|&s| s <= byte).unwrap();
        let decoded = decode_meta_log(&flipped).unwrap();
        assert_eq!(decoded.entries, entries_of(&THREE[..damaged]), "bit {bit}");
        let offset = starts[damaged] as u64;
        if damaged + 1 < starts.len() {
            assert!(
                matches!(decoded.end, MetaLogEnd::Corruption { offset: o, .. } if o == offset),
                "bit {bit}: {:?}",
                decoded.end
            );
        } else {
            assert_eq!(decoded.end, MetaLogEnd::TornTail { offset }, "bit {bit}");
        }
    }
}

/// Re-signs the record at `at` after a test edits it, to reach the
/// checks behind the checksum.
fn reseal(bytes: &mut [u8], at: usize) {
    let len =
        META_RECORD_HEADER_LEN + read_u32(bytes, at + ENTRY_COUNT_AT) as usize * META_ENTRY_LEN;
    let crc = crc32fast::hash(&bytes[at + ENTRY_COUNT_AT..at + len]);
    bytes[at..at + ENTRY_COUNT_AT].copy_from_slice(&crc.to_le_bytes());
}

/// A record, entry, byte, value and the error that the edit causes.
type EntryEdit = (usize, usize, usize, u8, fn(u64) -> Error);

#[test]
fn validly_signed_but_invalid_records_end_the_log() {
    let (good, starts) = log(&THREE);
    // Which record, which of its entries, which byte of the entry gets
    // which value, and the error the entry's offset then gets.
    let cases: [EntryEdit; 4] = [
        (1, 0, KIND_AT, 9, |offset| Error::UnknownMetaEntryKind {
            offset,
            kind: 9,
        }),
        (1, 0, A_AT - 1, 1, |offset| Error::MetaEntryReserved {
            offset,
        }),
        // The sequence floor (record 0, entry 1) does not use field b.
        (0, 1, B_AT, 1, |offset| Error::MetaEntryReserved { offset }),
        // Nor does the segment end (record 2, entry 0).
        (2, 0, C_AT - 1, 1, |offset| Error::MetaEntryReserved {
            offset,
        }),
    ];
    for (record, entry, byte, value, cause) in cases {
        let entry_at = starts[record] + META_RECORD_HEADER_LEN + entry * META_ENTRY_LEN;
        let mut bytes = good.clone();
        bytes[entry_at + byte] = value;
        reseal(&mut bytes, starts[record]);
        let decoded = decode_meta_log(&bytes).unwrap();
        assert_eq!(decoded.entries, entries_of(&THREE[..record]));
        let offset = starts[record] as u64;
        let expected = if record + 1 < starts.len() {
            MetaLogEnd::Corruption {
                offset,
                cause: cause(entry_at as u64),
            }
        } else {
            MetaLogEnd::TornTail { offset }
        };
        assert_eq!(decoded.end, expected);
        assert_eq!(
            verify_record(&bytes, starts[record]),
            Err(cause(entry_at as u64))
        );
    }

    let mut bytes = good.clone();
    bytes[starts[1] + ENTRY_COUNT_AT..starts[1] + META_RECORD_HEADER_LEN].fill(0);
    reseal(&mut bytes, starts[1]);
    assert_eq!(
        decode_meta_log(&bytes).unwrap().end,
        MetaLogEnd::Corruption {
            offset: starts[1] as u64,
            cause: Error::EmptyMetaRecord {
                offset: starts[1] as u64
            }
        }
    );

    let mut bytes = good;
    bytes[starts[2] + ENTRY_COUNT_AT] = 4;
    assert_eq!(
        decode_meta_log(&bytes).unwrap().end,
        MetaLogEnd::TornTail {
            offset: starts[2] as u64
        },
        "a count larger than the bytes left is a torn tail at the end"
    );
    assert_eq!(
        verify_record(&bytes, starts[2]),
        Err(Error::MetaRecordTruncated {
            offset: starts[2] as u64,
            needed: (META_RECORD_HEADER_LEN + 4 * META_ENTRY_LEN) as u64,
            available: (bytes.len() - starts[2]) as u64,
        })
    );
}

#[test]
fn header_errors_are_named() {
    let header = encode_meta_log_header();

    let err = decode_meta_log(&[b'x'; 64]).unwrap_err();
    assert!(matches!(err, Error::MetaLogMagic { found } if found == [b'x'; 8]));
    assert!(
        err.to_string().starts_with("not a segwal meta log"),
        "{err}"
    );

    let mut bytes = header;
    bytes[VERSION_AT] = 2;
    let err = decode_meta_log(&bytes).unwrap_err();
    assert_eq!(err, Error::UnsupportedVersion { found: 2 });
    assert_eq!(
        err.to_string(),
        "unsupported format version 2 (this build reads version 3)"
    );

    let mut bytes = header;
    bytes[HEADER_CRC_AT] ^= 1;
    let err = decode_meta_log(&bytes).unwrap_err();
    assert!(matches!(err, Error::MetaLogHeaderChecksum { .. }), "{err}");

    let mut bytes = header;
    bytes[RESERVED_AT + 2] = 1;
    let crc = crc32fast::hash(&bytes[..HEADER_CRC_AT]);
    bytes[HEADER_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(
        decode_meta_log(&bytes),
        Err(Error::MetaLogHeaderReserved { found: [0, 0, 1] })
    );
}
