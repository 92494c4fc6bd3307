//! Property tests of the codec, the scanner and the meta log over
//! arbitrary batches and entries, arbitrary bytes, every cut point and
//! every single-bit flip.

use proptest::prelude::*;
use segwal_format::{
    BatchMeta, META_ENTRY_LEN, META_LOG_HEADER_LEN, MetaEntry, MetaLogEnd, RecordCodec,
    RecordDecoder, RecordEncoder, SEGMENT_HEADER_LEN, ScanEnd, Scanner, SegmentHeader,
    decode_meta_log, encode_meta_log_header, encode_meta_record, written_len,
};

const SEGMENT: SegmentHeader = SegmentHeader {
    stream_id: 3,
    segment_id: 11,
    salt: 0x7e57_5a17_0000_0001,
    capacity: 1 << 20,
};
const BASE: u64 = SEGMENT_HEADER_LEN as u64;

/// One batch as a writer would hand it to the encoder.
#[derive(Debug, Clone)]
struct Batch {
    region_id: u64,
    table_id: u64,
    entries: Vec<Vec<u8>>,
    /// Whether the writer synced the segment before writing this batch.
    synced_before: bool,
    /// What the encoder compresses with (the record may still be stored
    /// uncompressed, where that is not smaller).
    codec: RecordCodec,
}

/// An entry's payload: arbitrary bytes (which seldom compress), or runs
/// and repeats of a few bytes (which do).
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        (prop::collection::vec(any::<u8>(), 1..8), 0usize..60)
            .prop_map(|(pattern, repeats)| pattern.repeat(repeats)),
    ]
}

fn batch() -> impl Strategy<Value = Batch> {
    (
        any::<u64>(),
        any::<u64>(),
        prop::collection::vec(payload(), 1..6),
        any::<bool>(),
        prop::sample::select(RecordCodec::ALL.to_vec()),
    )
        .prop_map(
            |(region_id, table_id, entries, synced_before, codec)| Batch {
                region_id,
                table_id,
                entries,
                synced_before,
                codec,
            },
        )
}

/// A segment image (the bytes after the segment header) as a writer builds
/// it, with a zero-filled tail like a preallocated file.
#[derive(Debug)]
struct Image {
    bytes: Vec<u8>,
    /// For each record: start offset, end offset, durable offset, batch.
    records: Vec<(u64, u64, u64, Batch)>,
    data_end: u64,
}

fn build(batches: &[Batch], zero_tail: usize) -> Image {
    let mut bytes = Vec::new();
    let mut records = Vec::new();
    let mut durable = BASE;
    let mut sequence = 1;
    for batch in batches {
        let start = BASE + bytes.len() as u64;
        if batch.synced_before {
            durable = start;
        }
        let meta = BatchMeta {
            region_id: batch.region_id,
            table_id: batch.table_id,
            first_sequence: sequence,
            durable_offset: durable,
        };
        RecordEncoder::new(&SEGMENT)
            .with_codec(batch.codec)
            .encode(&meta, &batch.entries, &mut bytes)
            .unwrap();
        sequence += batch.entries.len() as u64;
        records.push((start, BASE + bytes.len() as u64, durable, batch.clone()));
    }
    let data_end = BASE + bytes.len() as u64;
    bytes.resize(bytes.len() + zero_tail, 0);
    Image {
        bytes,
        records,
        data_end,
    }
}

/// A scanned record: (offset, region, table, entry payloads).
type Scanned = (u64, u64, u64, Vec<Vec<u8>>);

/// Scans `bytes` and returns each record and how the scan ended.
fn scan(bytes: &[u8]) -> (Vec<Scanned>, ScanEnd) {
    let mut scanner = Scanner::new(bytes, BASE, &SEGMENT);
    let records = scanner
        .by_ref()
        .map(|r| {
            (
                r.offset(),
                r.region_id(),
                r.table_id(),
                r.body()
                    .expect("a verified record the encoder wrote decompresses")
                    .entries()
                    .map(|e| e.payload.to_vec())
                    .collect(),
            )
        })
        .collect();
    (
        records,
        scanner.end().cloned().expect("a finished scan has an end"),
    )
}

fn expected(image: &Image, count: usize) -> Vec<Scanned> {
    image.records[..count]
        .iter()
        .map(|(start, _, _, b)| (*start, b.region_id, b.table_id, b.entries.clone()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// `written_len` (zeros skipped 64 bytes at a time) agrees with a
    /// byte-by-byte search for the last non-zero byte, wherever the
    /// non-zero bytes fall relative to the 64-byte steps.
    #[test]
    fn written_len_is_one_past_the_last_non_zero_byte(
        len in 0usize..600,
        marks in prop::collection::vec((any::<prop::sample::Index>(), 1u8..), 0..4),
    ) {
        let mut data = vec![0u8; len];
        for (at, value) in marks {
            if len > 0 {
                data[at.index(len)] = value;
            }
        }
        let expected = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        prop_assert_eq!(written_len(&data), expected);
    }

    /// decode(encode(x)) == x for arbitrary batches, metadata included,
    /// with every codec; a compressed record is shorter than the
    /// uncompressed encoding (the bound `encoded_len` gives), which is how
    /// it is stored otherwise.
    #[test]
    fn record_round_trip(
        b in batch(),
        first_sequence in 1u64..u64::MAX - 16,
        durable_offset in 0u64..1 << 40,
        gap in 0u64..1 << 20,
    ) {
        let offset = durable_offset + gap;
        let meta = BatchMeta { region_id: b.region_id, table_id: b.table_id, first_sequence, durable_offset };
        let mut out = vec![0xAA; 3];
        let encoder = RecordEncoder::new(&SEGMENT).with_codec(b.codec);
        let range = encoder.encode(&meta, &b.entries, &mut out).unwrap();
        let bound = encoder.encoded_len(&b.entries).unwrap();
        let record = RecordDecoder::new(&SEGMENT).decode(&out[range.clone()], offset).unwrap();
        let codec = record.codec();
        prop_assert!(codec == RecordCodec::None || codec == b.codec);
        prop_assert_eq!(codec == RecordCodec::None, range.len() == bound);
        prop_assert!(range.len() <= bound);
        prop_assert_eq!(record.header().raw_len as usize, bound - 64);
        prop_assert_eq!(record.header().meta, meta);
        prop_assert_eq!(record.region_id(), b.region_id);
        prop_assert_eq!(record.end_offset(), offset + range.len() as u64);
        let body = record.body().unwrap();
        prop_assert_eq!(body.is_decompressed(), codec != RecordCodec::None);
        let decoded: Vec<_> = body.entries().collect();
        prop_assert_eq!(decoded.len(), b.entries.len());
        for (i, entry) in decoded.iter().enumerate() {
            prop_assert_eq!(entry.table_id, b.table_id);
            prop_assert_eq!(entry.sequence, first_sequence + i as u64);
            prop_assert_eq!(entry.payload, b.entries[i].as_slice());
        }
    }

    /// A segment image of many batches scans back to exactly those batches.
    #[test]
    fn image_round_trip(batches in prop::collection::vec(batch(), 0..12), tail in 0usize..200) {
        let image = build(&batches, tail);
        let (records, end) = scan(&image.bytes);
        prop_assert_eq!(records, expected(&image, batches.len()));
        prop_assert_eq!(end, ScanEnd::Clean { offset: image.data_end });
    }

    /// Arbitrary bytes never panic the header decoder, the record decoder or
    /// the scanner, and the scanner ends within the input.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048), base in prop_oneof![0u64..1 << 40, u64::MAX - 4096..=u64::MAX]) {
        let _ = SegmentHeader::decode(&bytes);
        let _ = RecordDecoder::new(&SEGMENT).decode(&bytes, base);
        let mut scanner = Scanner::new(&bytes, base, &SEGMENT);
        let limit = base.saturating_add(bytes.len() as u64);
        for record in scanner.by_ref() {
            prop_assert!(record.end_offset() <= limit);
        }
        let end = scanner.end().unwrap().offset();
        prop_assert!(end >= base && end <= limit);
        while scanner.skip_corruption().is_some() {
            for _ in scanner.by_ref() {}
        }
    }

    /// Valid images with arbitrary spans overwritten never panic the scanner,
    /// and whatever it yields is an original record, unchanged.
    #[test]
    fn mangled_images_yield_only_original_records(
        batches in prop::collection::vec(batch(), 1..8),
        edits in prop::collection::vec((any::<prop::sample::Index>(), prop::collection::vec(any::<u8>(), 1..16)), 1..4),
    ) {
        let image = build(&batches, 64);
        let original = expected(&image, batches.len());
        let mut bytes = image.bytes.clone();
        for (at, patch) in edits {
            let at = at.index(bytes.len());
            let end = (at + patch.len()).min(bytes.len());
            bytes[at..end].copy_from_slice(&patch[..end - at]);
        }
        let mut scanner = Scanner::new(&bytes, BASE, &SEGMENT);
        loop {
            for r in scanner.by_ref() {
                let body = r.body().expect("a verified record the encoder wrote decompresses");
                let got = (r.offset(), r.region_id(), r.table_id(), body.entries().map(|e| e.payload.to_vec()).collect::<Vec<_>>());
                prop_assert!(original.contains(&got), "yielded a record that was never written: {:?}", got);
            }
            if scanner.skip_corruption().is_none() {
                break;
            }
        }
    }

    /// A cut at every offset of a valid image (a crash mid-append into a
    /// file that is not preallocated) yields every record that is complete
    /// before the cut, intact, and ends cleanly or with a torn tail exactly
    /// where the first incomplete record starts.
    #[test]
    fn cut_at_every_offset_is_a_torn_tail(batches in prop::collection::vec(batch(), 1..6)) {
        let image = build(&batches, 0);
        for cut in 0..=image.bytes.len() {
            let cut_offset = BASE + cut as u64;
            let complete = image.records.iter().take_while(|r| r.1 <= cut_offset).count();
            let (records, end) = scan(&image.bytes[..cut]);
            prop_assert_eq!(&records, &expected(&image, complete), "cut at {}", cut_offset);
            let boundary = image.records.get(complete).map_or(image.data_end, |r| r.0);
            match end {
                ScanEnd::Clean { offset } | ScanEnd::TornTail { offset, .. } => {
                    prop_assert_eq!(offset, boundary, "cut at {}", cut_offset)
                }
                ScanEnd::Corruption { .. } => prop_assert!(false, "cut at {} read as corruption: {:?}", cut_offset, end),
            }
        }
    }

    /// Every single-bit flip anywhere in an image (records and zero tail) is
    /// detected: the scan stops at or before the damaged record, yields only
    /// unchanged records before it, and never reports a clean end of the
    /// original data. Damage is called corruption exactly when a later
    /// record proves the damaged bytes had been synced.
    #[test]
    fn every_single_bit_flip_is_detected(batches in prop::collection::vec(batch(), 1..5)) {
        let image = build(&batches, 24);
        for bit in 0..image.bytes.len() * 8 {
            let mut bytes = image.bytes.clone();
            bytes[bit / 8] ^= 1 << (bit % 8);
            let flipped_at = BASE + (bit / 8) as u64;
            let damaged = image.records.iter().position(|r| flipped_at < r.1).unwrap_or(batches.len());
            let (records, end) = scan(&bytes);
            prop_assert_eq!(&records, &expected(&image, damaged), "bit {}", bit);
            let start = image.records.get(damaged).map_or(image.data_end, |r| r.0);
            let proven_durable = image.records[damaged.min(batches.len())..]
                .iter()
                .skip(1)
                .any(|r| r.2 > start);
            match end {
                ScanEnd::Corruption { offset, resume_at, .. } => {
                    prop_assert!(proven_durable, "bit {}: corruption without proof", bit);
                    prop_assert_eq!(offset, start);
                    prop_assert_eq!(resume_at, image.records[damaged + 1].0);
                }
                ScanEnd::TornTail { offset, .. } => {
                    prop_assert!(!proven_durable, "bit {}: synced damage called torn", bit);
                    prop_assert_eq!(offset, start);
                }
                ScanEnd::Clean { .. } => prop_assert!(false, "bit {} went unnoticed", bit),
            }
        }
    }
}

fn meta_entry() -> impl Strategy<Value = MetaEntry> {
    prop_oneof![
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
            |(region_id, table_id, deleted_up_to)| {
                MetaEntry::DeleteMark {
                    region_id,
                    table_id,
                    deleted_up_to,
                }
            }
        ),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
            |(region_id, table_id, max_sequence)| {
                MetaEntry::TableMax {
                    region_id,
                    table_id,
                    max_sequence,
                }
            }
        ),
        (any::<u64>(), any::<u64>()).prop_map(|(region_id, next_sequence)| {
            MetaEntry::SequenceFloor {
                region_id,
                next_sequence,
            }
        }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(segment_id, end)| MetaEntry::SegmentEnd { segment_id, end }),
    ]
}

fn meta_records() -> impl Strategy<Value = Vec<Vec<MetaEntry>>> {
    prop::collection::vec(prop::collection::vec(meta_entry(), 1..6), 0..8)
}

/// A meta log of `records`, with the offset just past each record.
fn meta_log(records: &[Vec<MetaEntry>]) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = encode_meta_log_header().to_vec();
    let mut ends = Vec::new();
    for entries in records {
        encode_meta_record(entries, &mut bytes);
        ends.push(bytes.len());
    }
    (bytes, ends)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// decode(encode(x)) == x for arbitrary records of arbitrary entries.
    #[test]
    fn meta_log_round_trip(records in meta_records()) {
        let (bytes, _) = meta_log(&records);
        let log = decode_meta_log(&bytes).unwrap();
        prop_assert_eq!(log.entries, records.concat());
        prop_assert_eq!(log.end, MetaLogEnd::Clean { len: bytes.len() as u64 });
    }

    /// Arbitrary bytes after a valid header never panic the decoder, and
    /// what it returns lies within the input: no more entries than the
    /// bytes can hold, and an end inside the bytes. Arbitrary bytes with no
    /// header never panic it either.
    #[test]
    fn meta_log_arbitrary_bytes_never_panic(tail in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode_meta_log(&tail);
        let mut bytes = encode_meta_log_header().to_vec();
        bytes.extend_from_slice(&tail);
        let log = decode_meta_log(&bytes).unwrap();
        prop_assert!(log.entries.len() <= bytes.len() / META_ENTRY_LEN);
        match log.end {
            MetaLogEnd::Clean { len } => prop_assert_eq!(len, bytes.len() as u64),
            MetaLogEnd::TornTail { offset } | MetaLogEnd::Corruption { offset, .. } => {
                prop_assert!(offset >= META_LOG_HEADER_LEN as u64 && offset < bytes.len() as u64)
            }
        }
    }

    /// A valid log with arbitrary spans overwritten never panics the
    /// decoder, and what it returns is a prefix of the entries written.
    #[test]
    fn mangled_meta_logs_yield_only_written_entries(
        records in meta_records(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), prop::collection::vec(any::<u8>(), 1..16)), 1..4),
    ) {
        let (mut bytes, _) = meta_log(&records);
        for (at, patch) in edits {
            let at = at.index(bytes.len());
            let end = (at + patch.len()).min(bytes.len());
            bytes[at..end].copy_from_slice(&patch[..end - at]);
        }
        if let Ok(log) = decode_meta_log(&bytes) {
            let written = records.concat();
            prop_assert!(written.starts_with(&log.entries), "returned entries never written");
        }
    }

    /// A cut at every offset (a crash during an append) returns every
    /// record complete before the cut and ends cleanly or as a torn tail
    /// exactly where the first incomplete record starts.
    #[test]
    fn meta_log_cut_at_every_offset_is_a_torn_tail(records in meta_records()) {
        let (bytes, ends) = meta_log(&records);
        for cut in META_LOG_HEADER_LEN..=bytes.len() {
            let complete = ends.iter().take_while(|&&end| end <= cut).count();
            let log = decode_meta_log(&bytes[..cut]).unwrap();
            prop_assert_eq!(&log.entries, &records[..complete].concat(), "cut {}", cut);
            let boundary = if complete == 0 { META_LOG_HEADER_LEN } else { ends[complete - 1] };
            let expected = if boundary == cut {
                MetaLogEnd::Clean { len: cut as u64 }
            } else {
                MetaLogEnd::TornTail { offset: boundary as u64 }
            };
            prop_assert_eq!(log.end, expected, "cut {}", cut);
        }
    }
}
