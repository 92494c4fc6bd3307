//! Proves that the segment header, region meta and meta log decoders and
//! the scanner never panic or allocate beyond their input on any bytes,
//! that the records a scan yields lie inside the input at increasing,
//! contiguous offsets, that every scan ends (clean, torn tail or corruption
//! at the right offset) exactly as docs/FORMAT.md defines it, and that a
//! meta log ends the same way and yields the same entries as FORMAT.md's
//! rules read independently.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use segwal_format::{
    BatchMeta, META_LOG_HEADER_LEN, MIN_SEGMENT_CAPACITY, MetaEntry, RECORD_HEADER_LEN,
    RecordEncoder, SEGMENT_HEADER_LEN, SegmentHeader, encode_meta_log_header, encode_meta_record,
};
use segwal_fuzz::format::{
    check_meta_log, check_scan, check_segment_image, seal_meta_log_header,
    seal_meta_record, seal_record, seal_segment_header,
};

#[derive(Debug, Arbitrary)]
enum Input<'a> {
    /// Any bytes as a segment file: header, then records.
    Raw {
        /// Whether to give the header a valid checksum first.
        seal_header: bool,
        bytes: &'a [u8],
    },
    /// Any bytes scanned as records at any segment offset.
    Window {
        base: u64,
        salt: u64,
        bytes: &'a [u8],
    },
    /// A segment written by the encoder, then damaged.
    Built(Built),
    /// Any bytes as a meta log.
    MetaLogRaw {
        /// Whether to give the header a valid checksum first.
        seal_header: bool,
        /// Whether to give the record right after the header a valid
        /// checksum, so that the rules behind it get fuzzed too.
        seal_first_record: bool,
        bytes: &'a [u8],
    },
    /// A meta log written by the encoder, then damaged.
    MetaLogBuilt(BuiltMetaLog),
}

/// A meta log: records as the owner appends them, then damage.
#[derive(Debug, Arbitrary)]
struct BuiltMetaLog {
    /// Each record's entries, as (kind, a, b, c); empty records are
    /// skipped, since encoding one is a bug.
    records: Vec<Vec<(u8, u64, u64, u64)>>,
    damage: Vec<Damage>,
    /// Zero bytes after the records (a crash that extended the file).
    zero_tail: u8,
}

/// A segment image: records as a writer appends them, then damage.
#[derive(Debug, Arbitrary)]
struct Built {
    segment_id: u8,
    salt: u64,
    records: Vec<BuiltRecord>,
    damage: Vec<Damage>,
    /// Zero bytes after the records (the unwritten rest of the file).
    zero_tail: u16,
}

#[derive(Debug, Arbitrary)]
struct BuiltRecord {
    table: u8,
    /// Payload sizes, one per entry.
    sizes: Vec<u8>,
    /// Picks the record's durable offset: the segment's start or the
    /// start of this or an earlier record.
    durable: u8,
    /// Written for another segment (stale bytes from a reused file).
    foreign: bool,
    /// The first payload holds a valid record of this segment, as if a
    /// client knew the salt (the forgery the salt exists to prevent).
    nested: bool,
}

#[derive(Debug, Arbitrary)]
enum Damage {
    FlipBit(u32),
    Zero {
        at: u32,
        len: u8,
    },
    Fill {
        at: u32,
        len: u8,
        byte: u8,
    },
    Truncate(u32),
    Copy {
        from: u32,
        to: u32,
        len: u16,
    },
    /// Recomputes the checksums of the record starting there (a segment
    /// record or a meta log record, by image), so that damaged fields
    /// verify and the rules behind the checksums are reached.
    Reseal {
        at: u32,
    },
}

const MAX_RECORDS: usize = 12;
const MAX_META_RECORDS: usize = 8;
const MAX_ENTRIES: usize = 6;
const MAX_DAMAGE: usize = 4;

impl Built {
    fn image(&self) -> Vec<u8> {
        let segment = SegmentHeader {
            stream_id: 1,
            segment_id: u64::from(self.segment_id),
            salt: self.salt,
            capacity: 0,
        };
        let encoder = RecordEncoder::new(&segment);
        let foreign = RecordEncoder::new(&SegmentHeader {
            segment_id: segment.segment_id + 1,
            salt: !segment.salt,
            ..segment
        });
        let mut image = segment.encode().to_vec();
        let mut starts = vec![SEGMENT_HEADER_LEN as u64];
        let mut sequence = 1u64;
        for record in self.records.iter().take(MAX_RECORDS) {
            let start = image.len() as u64;
            starts.push(start);
            let durable_offset = starts[usize::from(record.durable) % starts.len()];
            let mut entries: Vec<Vec<u8>> = record
                .sizes
                .iter()
                .take(MAX_ENTRIES)
                .map(|&size| vec![sequence as u8; usize::from(size)])
                .collect();
            if entries.is_empty() {
                entries.push(Vec::new());
            }
            if record.nested {
                let meta = BatchMeta {
                    region_id: 9,
                    table_id: 99,
                    first_sequence: sequence,
                    durable_offset: 0,
                };
                let mut forged = Vec::new();
                encoder.encode(&meta, &[b"forged"], &mut forged).unwrap();
                entries[0] = forged;
            }
            let meta = BatchMeta {
                region_id: u64::from(record.table / 4 % 2),
                table_id: u64::from(record.table % 4),
                first_sequence: sequence,
                durable_offset,
            };
            let writer = if record.foreign { &foreign } else { &encoder };
            writer.encode(&meta, &entries, &mut image).unwrap();
            sequence += entries.len() as u64;
        }
        image.resize(image.len() + usize::from(self.zero_tail % 512), 0);
        // The header records the image's final length, as a real segment's
        // records its file length (at least the minimum, so it decodes).
        let capacity = (image.len() as u64).max(MIN_SEGMENT_CAPACITY);
        image[..SEGMENT_HEADER_LEN].copy_from_slice(
            &SegmentHeader {
                capacity,
                ..segment
            }
            .encode(),
        );
        let reseal = |bytes: &mut [u8]| {
            if bytes.len() >= RECORD_HEADER_LEN {
                seal_record(bytes, segment.salt);
            }
        };
        for damage in self.damage.iter().take(MAX_DAMAGE) {
            damage.apply(&mut image, &reseal);
        }
        image
    }
}

impl BuiltMetaLog {
    fn image(&self) -> Vec<u8> {
        let mut image = encode_meta_log_header().to_vec();
        for record in self.records.iter().take(MAX_META_RECORDS) {
            let entries: Vec<MetaEntry> = record
                .iter()
                .take(MAX_ENTRIES)
                .map(|&(kind, a, b, c)| match kind % 4 {
                    0 => MetaEntry::DeleteMark {
                        region_id: a,
                        table_id: b,
                        deleted_up_to: c,
                    },
                    1 => MetaEntry::TableMax {
                        region_id: a,
                        table_id: b,
                        max_sequence: c,
                    },
                    2 => MetaEntry::SequenceFloor {
                        region_id: a,
                        next_sequence: c,
                    },
                    _ => MetaEntry::SegmentEnd {
                        segment_id: a,
                        end: c,
                    },
                })
                .collect();
            if !entries.is_empty() {
                encode_meta_record(&entries, &mut image);
            }
        }
        image.resize(image.len() + usize::from(self.zero_tail), 0);
        for damage in self.damage.iter().take(MAX_DAMAGE) {
            damage.apply(&mut image, &seal_meta_record);
        }
        image
    }
}

impl Damage {
    /// Applies the damage to `image`; `reseal` recomputes the checksums of
    /// the record at the start of the bytes it is given.
    fn apply(&self, image: &mut Vec<u8>, reseal: &dyn Fn(&mut [u8])) {
        if image.is_empty() {
            return;
        }
        let len = image.len();
        let at = |x: u32| x as usize % len;
        match *self {
            Damage::FlipBit(bit) => {
                let bit = bit as usize % (len * 8);
                image[bit / 8] ^= 1 << (bit % 8);
            }
            Damage::Zero { at: x, len: n } => {
                let from = at(x);
                let to = (from + usize::from(n)).min(len);
                image[from..to].fill(0);
            }
            Damage::Fill {
                at: x,
                len: n,
                byte,
            } => {
                let from = at(x);
                let to = (from + usize::from(n)).min(len);
                image[from..to].fill(byte);
            }
            Damage::Truncate(x) => image.truncate(at(x)),
            Damage::Copy { from, to, len: n } => {
                let (from, to) = (at(from), at(to));
                let n = usize::from(n).min(len - from).min(len - to);
                image.copy_within(from..from + n, to);
            }
            Damage::Reseal { at: x } => reseal(&mut image[at(x)..]),
        }
    }
}

fuzz_target!(|input: Input<'_>| match input {
    Input::Raw { seal_header, bytes } => {
        let mut bytes = bytes.to_vec();
        if seal_header {
            seal_segment_header(&mut bytes);
        }
        check_segment_image(&bytes);
    }
    Input::Window { base, salt, bytes } => {
        let segment = SegmentHeader {
            stream_id: 1,
            segment_id: 0,
            salt,
            capacity: 0,
        };
        check_scan(bytes, base, &segment);
    }
    Input::Built(built) => check_segment_image(&built.image()),
    Input::MetaLogRaw {
        seal_header,
        seal_first_record,
        bytes,
    } => {
        let mut bytes = bytes.to_vec();
        if seal_header {
            seal_meta_log_header(&mut bytes);
        }
        if seal_first_record && bytes.len() > META_LOG_HEADER_LEN {
            seal_meta_record(&mut bytes[META_LOG_HEADER_LEN..]);
        }
        check_meta_log(&bytes);
    }
    Input::MetaLogBuilt(built) => check_meta_log(&built.image()),
});
