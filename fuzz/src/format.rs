//! Checks for the codec targets: what must hold for any bytes handed to the
//! record decoder, the segment header and meta decoders, the scanner and
//! the meta log decoder.
//!
//! The field offsets below come from the tables in `docs/FORMAT.md`, not
//! from the format crate (which keeps them private): the checks are an
//! independent reading of the spec.

use std::ops::Range;

use segwal_format::{
    Entry, Error, MAX_BODY_LEN, MetaEntry, MetaLogEnd, RECORD_HEADER_LEN, Record, RecordCodec,
    RecordDecoder,
    RecordEncoder, RecordKind, SEGMENT_HEADER_LEN, ScanEnd, Scanner, SegmentHeader,
    decode_meta_log, encode_meta_record,
};

use crate::alloc_count::measure;

/// `header_crc` of a record: bytes 0..4.
const RECORD_HEADER_CRC: Range<usize> = 0..4;
/// `body_len` of a record: bytes 12..16.
const RECORD_BODY_LEN: Range<usize> = 12..16;
/// `body_crc` of a record: bytes 16..20.
const RECORD_BODY_CRC: Range<usize> = 16..20;
/// `codec` of a record: byte 5.
const RECORD_CODEC: usize = 5;
/// `raw_len` of a record: bytes 20..24.
const RECORD_RAW_LEN: Range<usize> = 20..24;
/// The segment header's checksum: bytes 44..48, over bytes 0..44.
const SEGMENT_HEADER_CRC: Range<usize> = 44..48;
/// The meta log's file header: 16 bytes, its checksum at 12..16 over 0..12.
const META_LOG_HEADER: usize = 16;
const META_LOG_HEADER_CRC: Range<usize> = 12..16;
/// A meta log record: `record_crc` at 0..4 over the count at 4..8 and the
/// entries after it, 32 bytes each.
const META_RECORD_CRC: Range<usize> = 0..4;
const META_RECORD_COUNT: Range<usize> = 4..8;
const META_ENTRY: usize = 32;

/// Writes valid checksums into the record at the start of `bytes`, as a
/// writer with `salt` would: the body checksum (if the declared body is
/// present), then the header checksum over the salt and header bytes
/// 4..64. Shorter input is left alone.
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

/// Writes a valid checksum into the meta log header at the start of
/// `bytes`, if there is one.
pub fn seal_meta_log_header(bytes: &mut [u8]) {
    if bytes.len() >= META_LOG_HEADER {
        let crc = crc32fast::hash(&bytes[..META_LOG_HEADER_CRC.start]);
        bytes[META_LOG_HEADER_CRC].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Writes a valid checksum into the meta log record at the start of
/// `bytes`, if its count is at least 1 and its entries fit. Otherwise the
/// bytes are left alone.
pub fn seal_meta_record(bytes: &mut [u8]) {
    let Some(count) = bytes.get(META_RECORD_COUNT) else {
        return;
    };
    let count = u32::from_le_bytes(count.try_into().unwrap()) as usize;
    let len = META_RECORD_COUNT.end + count * META_ENTRY;
    if count >= 1 && len <= bytes.len() {
        let crc = crc32fast::hash(&bytes[META_RECORD_COUNT.start..len]);
        bytes[META_RECORD_CRC].copy_from_slice(&crc.to_le_bytes());
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
/// fields obey the format's rules; uncompressed, its entries borrow from
/// `bytes` and tile its body, and encoding them again gives back exactly
/// its bytes; compressed, see [`check_compressed_record`]. Returns its
/// length.
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
    assert_eq!(header.codec as u8, bytes[RECORD_CODEC]);
    assert_eq!(header.segment_id, segment.segment_id);
    assert!(header.meta.durable_offset <= offset);
    assert!(header.entry_count >= 1);
    assert!(header.meta.first_sequence >= 1);
    assert!(record.last_sequence() < u64::MAX);
    assert_eq!(
        record.last_sequence() - record.first_sequence() + 1,
        u64::from(record.entry_count())
    );
    check_same_record_only(decoder, segment, bytes, record);
    if header.codec != RecordCodec::None {
        check_compressed_record(segment, bytes, record);
        return len;
    }
    assert_eq!(bytes[RECORD_RAW_LEN], [0; 4]);

    let (entries, allocations) = measure(|| {
        let mut count = 0u64;
        let mut body_len = 0usize;
        for entry in record.borrowed_entries().expect("stored uncompressed") {
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

    let payloads: Vec<&[u8]> = record.borrowed_entries().unwrap().map(|e| e.payload).collect();
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
    len
}

/// Checks a compressed record the decoder accepted: its declared raw
/// length lies within the format's limit and above its stored length; its
/// body either decompresses into exactly that many bytes of entries that
/// tile them, which encode again (with the same codec) into a record
/// holding the same entries, or fails with an error naming its offset.
fn check_compressed_record(segment: &SegmentHeader, bytes: &[u8], record: &Record<'_>) {
    let header = *record.header();
    let raw_len = u32::from_le_bytes(bytes[RECORD_RAW_LEN].try_into().unwrap());
    assert_eq!(header.raw_len, raw_len);
    assert!(header.body_len < raw_len && raw_len <= MAX_BODY_LEN);
    assert!(record.borrowed_entries().is_none());
    let body = match record.body() {
        Ok(body) => body,
        Err(err) => {
            assert!(
                matches!(err, Error::Decompress { .. } | Error::MalformedRecord { .. }),
                "{err:?}"
            );
            assert_eq!(err.offset(), Some(record.offset()));
            return;
        }
    };
    assert!(body.is_decompressed());
    let entries: Vec<Entry<'_>> = body.entries().collect();
    assert_eq!(entries.len() as u64, u64::from(header.entry_count));
    let raw: usize = entries.iter().map(|e| 4 + e.payload.len()).sum();
    assert_eq!(raw, raw_len as usize);
    let payloads: Vec<&[u8]> = entries.iter().map(|e| e.payload).collect();
    let mut encoded = Vec::new();
    RecordEncoder::new(segment)
        .with_codec(header.codec)
        .encode(&header.meta, &payloads, &mut encoded)
        .expect("an accepted record encodes again");
    let again = RecordDecoder::new(segment)
        .decode(&encoded, record.offset())
        .expect("a record the encoder wrote decodes");
    let again_body = again.body().expect("a record the encoder wrote decompresses");
    assert!(again_body.entries().eq(entries.iter().copied()));
}

/// Checks that a record the decoder accepted depends on its own bytes
/// only, and on its segment.
fn check_same_record_only(
    decoder: &RecordDecoder,
    segment: &SegmentHeader,
    bytes: &[u8],
    record: &Record<'_>,
) {
    let offset = record.offset();
    let len = record.header().record_len();
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

/// Decodes `bytes` as a meta log and checks the outcome against an
/// independent reading of `docs/FORMAT.md` ([`reference_meta_log`]): the
/// same entries, the same end; that the decoder allocates only the entries
/// it returns; and that the valid records are byte for byte what the
/// encoder writes for their entries.
pub fn check_meta_log(bytes: &[u8]) {
    let (decoded, allocations) = measure(|| decode_meta_log(bytes));
    assert!(
        allocations.count <= 1 && allocations.largest_bytes <= bytes.len(),
        "the meta log decoder allocated {} times, up to {} bytes, for {} bytes",
        allocations.count,
        allocations.largest_bytes,
        bytes.len()
    );
    let log = match decoded {
        Ok(log) => log,
        Err(err) => {
            assert!(!err.to_string().is_empty());
            assert!(
                reference_meta_header(bytes).is_err(),
                "a valid meta log header was refused: {err:?}"
            );
            return;
        }
    };
    assert_eq!(reference_meta_header(bytes), Ok(()));
    let (records, end) = reference_meta_log(bytes);
    let entries: Vec<MetaEntry> = records
        .iter()
        .flat_map(|(_, e)| e.iter().copied())
        .collect();
    assert_eq!(log.entries, entries);
    match (&log.end, end) {
        (MetaLogEnd::Clean { len }, ReferenceMetaEnd::Clean) => {
            assert_eq!(*len, bytes.len() as u64)
        }
        (MetaLogEnd::TornTail { offset }, ReferenceMetaEnd::TornTail(at))
        | (MetaLogEnd::Corruption { offset, .. }, ReferenceMetaEnd::Corruption(at)) => {
            assert_eq!(*offset, at as u64)
        }
        (got, want) => panic!("the meta log ended as {got:?}, the reference says {want:?}"),
    }
    if let MetaLogEnd::Corruption { offset, cause } = &log.end {
        assert!(
            cause.offset().is_some_and(|at| at >= *offset),
            "{cause:?} names an offset before the damaged record at {offset}"
        );
    }
    for (range, record_entries) in &records {
        let mut encoded = Vec::new();
        encode_meta_record(record_entries, &mut encoded);
        assert_eq!(
            encoded,
            bytes[range.clone()],
            "re-encoding changed a meta log record"
        );
    }
}

/// A meta log record the reference accepted: its byte range and entries.
type ReferenceMetaRecord = (Range<usize>, Vec<MetaEntry>);

/// How a meta log must end, per `docs/FORMAT.md`, with the offset of the
/// first record that does not verify.
#[derive(Debug)]
enum ReferenceMetaEnd {
    Clean,
    TornTail(usize),
    Corruption(usize),
}

/// The meta log header rules, read from FORMAT.md's table.
fn reference_meta_header(bytes: &[u8]) -> Result<(), ()> {
    let header = bytes.get(..META_LOG_HEADER).ok_or(())?;
    let crc = u32::from_le_bytes(header[META_LOG_HEADER_CRC].try_into().unwrap());
    let valid = header[..8] == *b"\x89SEGMLG\n"
        && header[8] == segwal_format::FORMAT_VERSION
        && header[9..12] == [0, 0, 0]
        && crc == crc32fast::hash(&header[..META_LOG_HEADER_CRC.start]);
    if valid { Ok(()) } else { Err(()) }
}

/// The record at `bytes[at..]`, the slow, obvious way: its range and
/// entries if it verifies completely, else `None`.
fn reference_meta_record(bytes: &[u8], at: usize) -> Option<ReferenceMetaRecord> {
    let rest = &bytes[at..];
    let count = u32::from_le_bytes(rest.get(META_RECORD_COUNT)?.try_into().unwrap()) as usize;
    let len = META_RECORD_COUNT
        .end
        .checked_add(count.checked_mul(META_ENTRY)?)?;
    if count == 0 || len > rest.len() {
        return None;
    }
    let crc = u32::from_le_bytes(rest[META_RECORD_CRC].try_into().unwrap());
    if crc != crc32fast::hash(&rest[META_RECORD_COUNT.start..len]) {
        return None;
    }
    let mut entries = Vec::new();
    for entry in rest[META_RECORD_COUNT.end..len].chunks(META_ENTRY) {
        let field = |at: usize| u64::from_le_bytes(entry[at..at + 8].try_into().unwrap());
        let (a, b, c) = (field(8), field(16), field(24));
        if entry[1..8] != [0; 7] {
            return None;
        }
        entries.push(match (entry[0], b) {
            (1, _) => MetaEntry::DeleteMark {
                region_id: a,
                table_id: b,
                deleted_up_to: c,
            },
            (2, _) => MetaEntry::TableMax {
                region_id: a,
                table_id: b,
                max_sequence: c,
            },
            (3, 0) => MetaEntry::SequenceFloor {
                region_id: a,
                next_sequence: c,
            },
            (4, 0) => MetaEntry::SegmentEnd {
                segment_id: a,
                end: c,
            },
            _ => return None,
        });
    }
    Some((at..at + len, entries))
}

/// Walks a meta log with a valid header record by record; at the first
/// record that does not verify, tries every later offset for a valid one
/// to tell corruption from a torn tail.
fn reference_meta_log(bytes: &[u8]) -> (Vec<ReferenceMetaRecord>, ReferenceMetaEnd) {
    let mut records = Vec::new();
    let mut at = META_LOG_HEADER;
    while at < bytes.len() {
        let Some(record) = reference_meta_record(bytes, at) else {
            let later =
                (at + 1..bytes.len()).any(|from| reference_meta_record(bytes, from).is_some());
            let end = if later {
                ReferenceMetaEnd::Corruption(at)
            } else {
                ReferenceMetaEnd::TornTail(at)
            };
            return (records, end);
        };
        at = record.0.end;
        records.push(record);
    }
    (records, ReferenceMetaEnd::Clean)
}
