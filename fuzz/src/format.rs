//! Checks for the codec targets: what must hold for any bytes handed to the
//! record decoder, the segment header and meta decoders, and the scanner.
//!
//! The field offsets below come from the tables in `docs/FORMAT.md`, not
//! from the format crate (which keeps them private): the checks are an
//! independent reading of the spec.

use std::ops::Range;

use segwal_format::{
    Error, RECORD_HEADER_LEN, Record, RecordDecoder, RecordEncoder, RecordKind, RegionMeta,
    SEGMENT_HEADER_LEN, ScanEnd, Scanner, SegmentHeader,
};

use crate::alloc_count::measure;

/// `header_crc` of a record: bytes 0..4.
const RECORD_HEADER_CRC: Range<usize> = 0..4;
/// `body_len` of a record: bytes 12..16.
const RECORD_BODY_LEN: Range<usize> = 12..16;
/// `body_crc` of a record: bytes 16..20.
const RECORD_BODY_CRC: Range<usize> = 16..20;
/// The segment header's checksum: bytes 44..48, over bytes 0..44.
const SEGMENT_HEADER_CRC: Range<usize> = 44..48;

/// Writes valid checksums into the record at the start of `bytes`, as a
/// writer with `salt` would: the body checksum (if the declared body is
/// present), then the header checksum over the salt and header bytes
/// 4..56. Shorter input is left alone.
///
/// Random bytes almost never carry a matching CRC-32, so without this the
/// fuzzer would rarely get past the checksums to the rules behind them.
pub fn seal_record(bytes: &mut [u8], salt: u64) {
    if bytes.len() < RECORD_HEADER_LEN {
        return;
    }
    let body_len = u32::from_le_bytes(bytes[RECORD_BODY_LEN].try_into().unwrap()) as usize;
    if let Some(body) = bytes.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN.saturating_add(body_len)) {
        let crc = crc32fast::hash(body);
        bytes[RECORD_BODY_CRC].copy_from_slice(&crc.to_le_bytes());
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&salt.to_le_bytes());
    crc.update(&bytes[RECORD_HEADER_CRC.end..RECORD_HEADER_LEN]);
    bytes[RECORD_HEADER_CRC].copy_from_slice(&crc.finalize().to_le_bytes());
}

/// Writes a valid checksum into the segment header at the start of
/// `bytes`, if there is one.
pub fn seal_segment_header(bytes: &mut [u8]) {
    if bytes.len() >= SEGMENT_HEADER_LEN {
        let crc = crc32fast::hash(&bytes[..SEGMENT_HEADER_CRC.start]);
        bytes[SEGMENT_HEADER_CRC].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Writes a valid trailing checksum into a region meta file image.
pub fn seal_meta(bytes: &mut [u8]) {
    if let Some(crc_at) = bytes.len().checked_sub(size_of::<u32>()) {
        let crc = crc32fast::hash(&bytes[..crc_at]);
        bytes[crc_at..].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Decodes `bytes` as a record at segment offset `offset` and checks
/// everything that must hold of the outcome; returns the decoded record's
/// length. `flip_bit` picks a bit to flip in an accepted record, which must
/// then be rejected.
///
/// `offset` must leave room for the bytes: `offset + bytes.len()` fits in a
/// `u64`, as for any slice of a real segment (`Scanner::new` guarantees it).
pub fn check_record(
    decoder: &RecordDecoder,
    segment: &SegmentHeader,
    bytes: &[u8],
    offset: u64,
    flip_bit: usize,
) -> Option<usize> {
    assert!(offset.checked_add(bytes.len() as u64).is_some());
    let (decoded, allocations) = measure(|| decoder.decode(bytes, offset));
    assert_eq!(allocations.count, 0, "the record decoder allocated");
    let record = match decoded {
        Ok(record) => record,
        Err(err) => {
            assert_eq!(
                err.offset(),
                Some(offset),
                "error {err:?} names the wrong offset"
            );
            if bytes.len() < RECORD_HEADER_LEN {
                assert!(matches!(err, Error::Truncated { .. }), "{err:?}");
            }
            assert!(!err.to_string().is_empty());
            return None;
        }
    };
    let len = check_accepted_record(decoder, segment, bytes, &record);

    // Any single flipped bit is caught by one of the two CRC-32s.
    let mut flipped = bytes[..len].to_vec();
    let bit = flip_bit % (len * 8);
    flipped[bit / 8] ^= 1 << (bit % 8);
    assert!(
        decoder.decode(&flipped, offset).is_err(),
        "flipping bit {bit} of an accepted record went unnoticed"
    );
    Some(len)
}

/// Checks a record the decoder accepted from the start of `bytes`: its
/// fields obey the format's rules, its entries borrow from `bytes` and tile
/// its body, and encoding its entries again gives back exactly its bytes.
/// Returns its length.
fn check_accepted_record(
    decoder: &RecordDecoder,
    segment: &SegmentHeader,
    bytes: &[u8],
    record: &Record<'_>,
) -> usize {
    let offset = record.offset();
    let header = *record.header();
    let len = header.record_len();
    assert!(
        len <= bytes.len(),
        "record of {len} bytes in {} bytes",
        bytes.len()
    );
    assert_eq!(record.end_offset(), offset + len as u64);
    assert_eq!(header.kind, RecordKind::Batch);
    assert_eq!(header.segment_id, segment.segment_id);
    assert!(header.meta.durable_offset <= offset);
    assert!(header.entry_count >= 1);
    assert!(header.meta.first_sequence >= 1);
    assert!(record.last_sequence() < u64::MAX);
    assert_eq!(
        record.last_sequence() - record.first_sequence() + 1,
        u64::from(record.entry_count())
    );

    let (entries, allocations) = measure(|| {
        let mut count = 0u64;
        let mut body_len = 0usize;
        for entry in record.entries() {
            assert_eq!(entry.table_id, record.table_id());
            assert_eq!(entry.sequence, record.first_sequence() + count);
            let within = bytes.as_ptr_range();
            let payload = entry.payload.as_ptr_range();
            assert!(
                within.start <= payload.start && payload.end <= within.end,
                "an entry's payload does not borrow from the input"
            );
            count += 1;
            body_len += 4 + entry.payload.len();
        }
        (count, body_len)
    });
    assert_eq!(allocations.count, 0, "iterating over entries allocated");
    assert_eq!(entries.0, u64::from(header.entry_count));
    assert_eq!(entries.1, header.body_len as usize);

    let payloads: Vec<&[u8]> = record.entries().map(|e| e.payload).collect();
    let mut encoded = Vec::new();
    let range = RecordEncoder::new(segment)
        .encode(&header.meta, &payloads, &mut encoded)
        .expect("an accepted record encodes again");
    assert_eq!(range, 0..len);
    assert_eq!(
        encoded,
        &bytes[..len],
        "re-encoding changed the record's bytes"
    );

    // The record depends on its own bytes only.
    assert_eq!(decoder.decode(&bytes[..len], offset), Ok(*record));
    assert!(matches!(
        decoder.decode(&bytes[..len - 1], offset),
        Err(Error::Truncated { .. })
    ));
    // Another segment does not accept it, even with the same salt.
    let other = SegmentHeader {
        segment_id: segment.segment_id ^ 1,
        ..*segment
    };
    assert!(RecordDecoder::new(&other).decode(bytes, offset).is_err());
    len
}

/// Decodes `bytes` as a segment file: the header, then the records after
/// it through the scanner. If the header does not decode, the records are
/// scanned anyway, with the ids and salt read from where the header keeps
/// them, so that damaged headers do not hide the scanner from the fuzzer.
pub fn check_segment_image(bytes: &[u8]) {
    let (decoded, allocations) = measure(|| SegmentHeader::decode(bytes));
    assert_eq!(allocations.count, 0, "the segment header decoder allocated");
    let header = match decoded {
        Ok(header) => {
            assert_eq!(
                header.encode(),
                bytes[..SEGMENT_HEADER_LEN],
                "re-encoding changed the segment header"
            );
            header
        }
        Err(err) => {
            if bytes.len() < SEGMENT_HEADER_LEN {
                assert_eq!(err, Error::ShortSegmentHeader { len: bytes.len() });
                return;
            }
            assert!(!err.to_string().is_empty());
            let field = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
            SegmentHeader {
                stream_id: field(12),
                segment_id: field(20),
                salt: field(28),
                capacity: field(36),
            }
        }
    };
    check_scan(
        &bytes[SEGMENT_HEADER_LEN..],
        SEGMENT_HEADER_LEN as u64,
        &header,
    );
}

/// Scans `data`, which starts at segment offset `base`, to its end
/// (skipping every corruption), and checks each record and each end
/// against the rules of `docs/FORMAT.md`: records are contiguous between
/// corruptions, lie inside the input and re-decode to themselves; a clean
/// end is followed by zeros only; a torn tail or corruption is classified
/// as the brute-force [`reference_end`] says.
pub fn check_scan(data: &[u8], base: u64, segment: &SegmentHeader) {
    let decoder = RecordDecoder::new(segment);
    // Bytes past segment offset u64::MAX are not part of any segment.
    let addressable = usize::try_from(u64::MAX - base).unwrap_or(usize::MAX);
    let data = &data[..data.len().min(addressable)];
    let mut scanner = Scanner::new(data, base, segment);
    let mut expected = base;
    // Each corruption skipped moves the scan forward, so this terminates;
    // the bound turns a scanner that loops into a failure.
    let mut steps = 0usize;
    loop {
        steps += 1;
        assert!(steps <= 2 * data.len() + 2, "the scan does not end");
        assert_eq!(scanner.next_offset(), expected);
        let (next, allocations) = measure(|| scanner.next());
        assert_eq!(allocations.count, 0, "the scanner allocated");
        if let Some(record) = next {
            assert_eq!(record.offset(), expected, "records are not contiguous");
            let at = (expected - base) as usize;
            let len = check_accepted_record(&decoder, segment, &data[at..], &record);
            expected += len as u64;
            continue;
        }
        let end = scanner.end().cloned().expect("a finished scan has an end");
        assert_eq!(scanner.next(), None, "a finished scan stays finished");
        assert_eq!(
            end.offset(),
            expected,
            "the scan ended away from its position"
        );
        let at = (expected - base) as usize;
        let want = reference_end(data, base, &decoder, at);
        match end {
            ScanEnd::Clean { .. } => {
                assert!(
                    data[at..].iter().all(|&b| b == 0),
                    "a clean end before data"
                );
                assert_eq!(want, Reference::Clean);
                assert_eq!(scanner.skip_corruption(), None);
                return;
            }
            ScanEnd::TornTail { offset, cause } => {
                assert_eq!(decoder.decode(&data[at..], offset), Err(cause));
                assert_eq!(want, Reference::TornTail, "at offset {offset}");
                assert_eq!(scanner.skip_corruption(), None);
                return;
            }
            ScanEnd::Corruption {
                offset,
                cause,
                resume_at,
            } => {
                assert_eq!(decoder.decode(&data[at..], offset), Err(cause));
                assert_eq!(
                    want,
                    Reference::Corruption { resume_at },
                    "at offset {offset}"
                );
                assert_eq!(scanner.skip_corruption(), Some(offset..resume_at));
                expected = resume_at;
            }
        }
    }
}

/// How a scan must end at a record that fails to verify, per
/// `docs/FORMAT.md`.
#[derive(Debug, PartialEq, Eq)]
enum Reference {
    Clean,
    TornTail,
    Corruption { resume_at: u64 },
}

/// Classifies a failure at index `at` of `data` (segment offset
/// `base + at`) the slow, obvious way FORMAT.md describes it: zeros to the
/// end are a clean end; otherwise walk the valid records after `at` (trying
/// every offset after a failure, without the scanner's shortcuts) until one
/// carries a durable offset past the failure, which makes it corruption
/// resuming at the first valid record; otherwise the tail is torn.
fn reference_end(data: &[u8], base: u64, decoder: &RecordDecoder, at: usize) -> Reference {
    if data[at..].iter().all(|&b| b == 0) {
        return Reference::Clean;
    }
    let failed_at = base + at as u64;
    let valid_from = |from: usize| {
        (from..data.len()).find(|&i| decoder.decode(&data[i..], base + i as u64).is_ok())
    };
    let Some(first_valid) = valid_from(at + 1) else {
        return Reference::TornTail;
    };
    let mut pos = first_valid;
    while pos < data.len() {
        match decoder.decode(&data[pos..], base + pos as u64) {
            Ok(record) if record.header().meta.durable_offset > failed_at => {
                return Reference::Corruption {
                    resume_at: base + first_valid as u64,
                };
            }
            Ok(record) => pos += record.header().record_len(),
            Err(_) => match valid_from(pos + 1) {
                Some(next) => pos = next,
                None => break,
            },
        }
    }
    Reference::TornTail
}

/// Decodes `bytes` as a region meta file and checks that the decoder
/// allocates no more than the input's size and that an accepted file
/// encodes back to exactly its bytes.
pub fn check_meta(bytes: &[u8]) {
    let (decoded, allocations) = measure(|| RegionMeta::decode(bytes));
    assert!(
        allocations.largest_bytes <= bytes.len(),
        "the meta decoder allocated {} bytes for a {}-byte file",
        allocations.largest_bytes,
        bytes.len()
    );
    match decoded {
        Ok(meta) => assert_eq!(meta.encode(), bytes, "re-encoding changed the meta file"),
        Err(err) => assert!(!err.to_string().is_empty()),
    }
}
