//! The segment scanner: walks records and says exactly how the walk ended.
//!
//! # Torn tail or corruption?
//!
//! When a record fails to verify at offset `X`, the scanner must decide
//! whether a crash interrupted a write there (a *torn tail*: nothing from
//! `X` on was ever acknowledged, so it is cut) or whether bytes that were
//! once durable have been damaged (*corruption*: an error, or skipped under
//! the recovery mode that allows it).
//!
//! Every record carries `durable_offset`, the offset up to which its segment
//! was known to be synced when the record was written. A sync covers a
//! prefix of the file, so if any valid record after `X` says that `X` was
//! already durable when it was written, the damage at `X` hit synced data:
//! corruption. If none does, every byte from `X` on was written after the
//! last sync that any surviving record knows of — exactly what a crash
//! leaves behind — and the tail is torn. Sectors of an unsynced write may
//! persist in any order, so a torn tail may well contain intact records
//! after the tear; they were never acknowledged (acknowledging them needs a
//! sync, which would also have covered `X`) and are cut with it.

use std::ops::Range;

use crate::error::Error;
use crate::header::SegmentHeader;
use crate::record::{RECORD_HEADER_LEN, Record, RecordDecoder, RecordKind};

/// The length of `data` without its trailing zero bytes: where the written
/// part of a preallocated segment ends, at the latest.
///
/// Zeros are skipped 64 bytes at a time (a comparison the compiler makes
/// wide), since a segment's unwritten tail may be most of its 64 MiB: a
/// byte-at-a-time search was a tenth of recovering 1 GiB.
pub fn written_len(data: &[u8]) -> usize {
    const STEP: usize = 64;
    let mut end = data.len();
    while let Some(chunk) = end.checked_sub(STEP).map(|start| &data[start..end]) {
        if chunk.iter().fold(0u8, |any, &b| any | b) != 0 {
            break;
        }
        end -= STEP;
    }
    data[..end]
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i + 1)
}

/// How a scan ended. Offsets are segment offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanEnd {
    /// Every byte from `offset` on is zero (or there are none): the end of
    /// the written data.
    Clean {
        /// Where the written data ends.
        offset: u64,
    },
    /// The record at `offset` is incomplete or damaged and no later record
    /// shows that it was ever durable: a write interrupted by a crash. The
    /// data from `offset` on is to be discarded.
    TornTail {
        /// Where the torn data begins.
        offset: u64,
        /// Why the record at `offset` did not verify.
        cause: Error,
    },
    /// The record at `offset` is damaged although a later record shows it
    /// was durable: real corruption. Valid data resumes at `resume_at`.
    Corruption {
        /// Where the damage begins.
        offset: u64,
        /// Why the record at `offset` did not verify.
        cause: Error,
        /// Offset of the first valid record after the damage.
        resume_at: u64,
    },
}

impl ScanEnd {
    /// The offset at which the scan stopped.
    pub fn offset(&self) -> u64 {
        match self {
            ScanEnd::Clean { offset }
            | ScanEnd::TornTail { offset, .. }
            | ScanEnd::Corruption { offset, .. } => *offset,
        }
    }
}

/// Iterates over the valid records of a byte slice and, once it returns
/// `None`, reports a [`ScanEnd`].
///
/// The scanner never panics on any input and allocates nothing: records
/// borrow from the slice, and no length is used before the checksum that
/// covers it has matched.
#[derive(Debug, Clone)]
pub struct Scanner<'a> {
    data: &'a [u8],
    /// Segment offset of `data[0]`.
    base: u64,
    /// Index in `data` of the next record.
    pos: usize,
    decoder: RecordDecoder,
    end: Option<ScanEnd>,
    /// Index just past the last non-zero byte of `data`, computed on the
    /// first failure (the unwritten tail of a segment can be large, and a
    /// scan that skips corruption may fail many times).
    written_end: Option<usize>,
}

impl<'a> Scanner<'a> {
    /// A scanner over `data`, which starts at segment offset `base` of the
    /// segment with `header`. Bytes that would lie past offset `u64::MAX`
    /// are ignored.
    pub fn new(data: &'a [u8], base: u64, header: &SegmentHeader) -> Self {
        let addressable = usize::try_from(u64::MAX - base).unwrap_or(usize::MAX);
        Scanner {
            data: &data[..data.len().min(addressable)],
            base,
            pos: 0,
            decoder: RecordDecoder::new(header),
            end: None,
            written_end: None,
        }
    }

    /// Segment offset of the next record to be read.
    pub fn next_offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// How the scan ended; `None` while records remain.
    pub fn end(&self) -> Option<&ScanEnd> {
        self.end.as_ref()
    }

    /// After the scan ended in [`ScanEnd::Corruption`], resumes it at the
    /// next valid record and returns the skipped range. Returns `None`, and
    /// changes nothing, after any other end.
    pub fn skip_corruption(&mut self) -> Option<Range<u64>> {
        let Some(ScanEnd::Corruption {
            offset, resume_at, ..
        }) = self.end
        else {
            return None;
        };
        self.pos = (resume_at - self.base) as usize;
        self.end = None;
        Some(offset..resume_at)
    }

    fn offset_of(&self, index: usize) -> u64 {
        self.base + index as u64
    }

    /// Decides how the scan ends, given that the record at `pos` failed to
    /// verify with `cause`. See the module docs for the reasoning.
    fn classify(&mut self, pos: usize, cause: Error) -> ScanEnd {
        let offset = self.offset_of(pos);
        // Candidates for a later record must start before the last non-zero
        // byte: a record begins with a checksum and a non-zero kind byte.
        let data = self.data;
        let written_end = *self.written_end.get_or_insert_with(|| written_len(data));
        if written_end <= pos {
            return ScanEnd::Clean { offset };
        }
        let Some(resume) = self.find_valid(pos + 1, written_end) else {
            return ScanEnd::TornTail { offset, cause };
        };
        let mut at = resume;
        while at < written_end {
            match self.decoder.decode(&self.data[at..], self.offset_of(at)) {
                Ok(record) if record.header().meta.durable_offset > offset => {
                    return ScanEnd::Corruption {
                        offset,
                        cause,
                        resume_at: self.offset_of(resume),
                    };
                }
                Ok(record) => at += record.header().record_len(),
                Err(_) => match self.find_valid(at + 1, written_end) {
                    Some(next) => at = next,
                    None => break,
                },
            }
        }
        ScanEnd::TornTail { offset, cause }
    }

    /// The index of the first valid record starting in `from..written_end`.
    fn find_valid(&self, from: usize, written_end: usize) -> Option<usize> {
        let last_start = self.data.len().checked_sub(RECORD_HEADER_LEN)?;
        (from..written_end.min(last_start + 1)).find(|&at| {
            // Cheap filter before the checksum: records of this version have
            // kind 1 and two zero reserved bytes after the codec byte. The
            // codec is left to the decoder, so a new codec needs no change
            // here.
            self.data[at + 4] == RecordKind::Batch as u8
                && self.data[at + 6..at + 8] == [0, 0]
                && self
                    .decoder
                    .decode(&self.data[at..], self.offset_of(at))
                    .is_ok()
        })
    }
}

impl<'a> Iterator for Scanner<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        if self.end.is_some() {
            return None;
        }
        if self.pos == self.data.len() {
            self.end = Some(ScanEnd::Clean {
                offset: self.next_offset(),
            });
            return None;
        }
        match self
            .decoder
            .decode(&self.data[self.pos..], self.next_offset())
        {
            Ok(record) => {
                self.pos += record.header().record_len();
                Some(record)
            }
            Err(cause) => {
                let end = self.classify(self.pos, cause);
                self.end = Some(end);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BatchMeta, RecordEncoder};

    const SEGMENT: SegmentHeader = SegmentHeader {
        stream_id: 1,
        segment_id: 3,
        salt: 0x0123_4567_89ab_cdef,
        capacity: 1 << 20,
    };
    const BASE: u64 = 40;

    /// Builds an image of records starting at segment offset `BASE`. Each
    /// record is given as `(entries, durable_offset)`; returns the image and
    /// each record's start offset.
    fn image(records: &[(&[&[u8]], u64)], zero_tail: usize) -> (Vec<u8>, Vec<u64>) {
        let mut out = Vec::new();
        let mut starts = Vec::new();
        let mut sequence = 1;
        for (entries, durable_offset) in records {
            starts.push(BASE + out.len() as u64);
            let meta = BatchMeta {
                region_id: 1,
                table_id: 1,
                first_sequence: sequence,
                durable_offset: *durable_offset,
            };
            RecordEncoder::new(&SEGMENT)
                .encode(&meta, entries, &mut out)
                .unwrap();
            sequence += entries.len() as u64;
        }
        out.resize(out.len() + zero_tail, 0);
        (out, starts)
    }

    fn collect(scanner: &mut Scanner<'_>) -> Vec<u64> {
        scanner.map(|r| r.offset()).collect()
    }

    #[test]
    fn zero_tail_is_a_clean_end() {
        let (bytes, starts) = image(&[(&[b"a"], BASE), (&[b"b", b"c"], BASE)], 100);
        let mut scanner = Scanner::new(&bytes, BASE, &SEGMENT);
        assert_eq!(collect(&mut scanner), starts);
        let end = BASE + bytes.len() as u64 - 100;
        assert_eq!(scanner.end(), Some(&ScanEnd::Clean { offset: end }));
    }

    #[test]
    fn empty_input_is_a_clean_end() {
        let mut scanner = Scanner::new(&[], BASE, &SEGMENT);
        assert_eq!(scanner.next(), None);
        assert_eq!(scanner.end(), Some(&ScanEnd::Clean { offset: BASE }));
    }

    #[test]
    fn partial_last_record_is_a_torn_tail() {
        let (mut bytes, starts) = image(&[(&[b"a"], BASE), (&[b"bbbbbbbb"], BASE)], 64);
        // The second record's last bytes never reached the disk.
        let second_end = (starts[1] - BASE) as usize + RECORD_HEADER_LEN + 12;
        bytes[second_end - 4..second_end].fill(0);
        let mut scanner = Scanner::new(&bytes, BASE, &SEGMENT);
        assert_eq!(collect(&mut scanner), &starts[..1]);
        assert!(matches!(
            scanner.end(),
            Some(ScanEnd::TornTail { offset, cause: Error::RecordBodyChecksum { .. } })
                if *offset == starts[1]
        ));
    }

    #[test]
    fn intact_records_after_an_unsynced_tear_are_part_of_the_torn_tail() {
        // Records 2 and 3 were written after the last sync (durable offset
        // still at record 2's start); a crash persisted record 3 but tore 2.
        let (mut bytes, starts) = image(&[(&[b"a"], BASE), (&[b"b"], BASE), (&[b"c"], BASE)], 64);
        let second = (starts[1] - BASE) as usize;
        bytes[second + RECORD_HEADER_LEN] ^= 0xff;
        let mut scanner = Scanner::new(&bytes, BASE, &SEGMENT);
        assert_eq!(collect(&mut scanner), &starts[..1]);
        assert!(
            matches!(scanner.end(), Some(ScanEnd::TornTail { offset, .. }) if *offset == starts[1])
        );
        assert_eq!(
            scanner.skip_corruption(),
            None,
            "a torn tail cannot be skipped"
        );
    }

    #[test]
    fn damage_before_a_later_sync_is_corruption_and_can_be_skipped() {
        // Record 3 was written after a sync that covered record 2, so record
        // 2 was durable: damage to it is corruption, not a torn write.
        let (first_two, starts) = image(&[(&[b"a"], BASE), (&[b"b"], BASE)], 0);
        let synced = BASE + first_two.len() as u64;
        let (mut bytes, starts3) =
            image(&[(&[b"a"], BASE), (&[b"b"], BASE), (&[b"c"], synced)], 64);
        assert_eq!(&starts3[..2], &starts[..]);
        let second = (starts[1] - BASE) as usize;
        bytes[second + 2] ^= 0x01;
        let mut scanner = Scanner::new(&bytes, BASE, &SEGMENT);
        assert_eq!(collect(&mut scanner), &starts[..1]);
        let Some(ScanEnd::Corruption {
            offset,
            cause,
            resume_at,
        }) = scanner.end().cloned()
        else {
            panic!("expected corruption, got {:?}", scanner.end());
        };
        assert_eq!((offset, resume_at), (starts[1], starts3[2]));
        assert!(matches!(cause, Error::RecordHeaderChecksum { .. }));
        assert_eq!(scanner.skip_corruption(), Some(starts[1]..starts3[2]));
        assert_eq!(collect(&mut scanner), &starts3[2..]);
        assert!(matches!(scanner.end(), Some(ScanEnd::Clean { .. })));
    }

    #[test]
    fn garbage_after_the_data_is_a_torn_tail() {
        let (mut bytes, starts) = image(&[(&[b"a"], BASE)], 200);
        let garbage_at = bytes.len() - 150;
        bytes[garbage_at..garbage_at + 7].copy_from_slice(b"garbage");
        let mut scanner = Scanner::new(&bytes, BASE, &SEGMENT);
        assert_eq!(collect(&mut scanner), starts);
        assert!(matches!(scanner.end(), Some(ScanEnd::TornTail { .. })));
    }

    #[test]
    fn a_zeroed_header_before_later_durable_data_is_corruption() {
        let (first, _) = image(&[(&[b"a"], BASE)], 0);
        let synced = BASE + first.len() as u64;
        let (mut bytes, starts) = image(&[(&[b"a"], BASE), (&[b"b"], synced)], 64);
        let first_len = first.len();
        bytes[..first_len].fill(0);
        let mut scanner = Scanner::new(&bytes, BASE, &SEGMENT);
        assert_eq!(collect(&mut scanner), Vec::<u64>::new());
        assert!(matches!(
            scanner.end(),
            Some(ScanEnd::Corruption { offset, resume_at, .. })
                if *offset == BASE && *resume_at == starts[1]
        ));
    }

    #[test]
    fn records_of_another_segment_are_not_resumed_at() {
        let (first, _) = image(&[(&[b"a"], BASE)], 0);
        let synced = BASE + first.len() as u64;
        let (mut bytes, _) = image(&[(&[b"a"], BASE), (&[b"b"], synced)], 64);
        bytes[3] ^= 1;
        let other = SegmentHeader {
            segment_id: 4,
            salt: 7,
            ..SEGMENT
        };
        let mut scanner = Scanner::new(&bytes, BASE, &other);
        assert_eq!(collect(&mut scanner), Vec::<u64>::new());
        assert!(matches!(scanner.end(), Some(ScanEnd::TornTail { .. })));
    }
}
