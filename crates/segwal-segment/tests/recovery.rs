//! Tests of segment recovery on a real file system: what reopening a
//! segment finds after clean closes, torn tails, damage, cut files,
//! recorded ends and blocks given back.

use std::fs;

use segwal_format::{BatchMeta, RECORD_HEADER_LEN, RecordEncoder, SegmentHeader, SegmentIdentity};
use segwal_segment::{
    BatchRef, Error, OpenOptions, Preallocation, RELEASE_BLOCK, RecoveryMode, Segment,
    segment_file_name,
};

mod support;
use support::*;

#[test]
fn reopen_recovers_every_record_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let (path, mut segment) = new_segment(dir.path());
    append(&mut segment, 1, 1, &[b"a", b"b"]);
    let second = append(&mut segment, 2, 3, &[b"c"]);
    segment.close().unwrap();

    let (mut segment, firsts, report) = open(&path, RecoveryMode::Strict).unwrap();
    assert_eq!(firsts, [1, 3]);
    assert_eq!(
        (report.records, report.end, report.torn_tail, report.skipped),
        (2, second.end, None, vec![])
    );
    assert_eq!(segment.written_len(), second.end);
    assert_eq!(
        segment.durable_len(),
        second.end,
        "recovered data is synced on open"
    );
    let third = append(&mut segment, 1, 4, &[b"d"]);
    assert_eq!(third.start, second.end);
    segment.close().unwrap();
    let (_, firsts, _) = open(&path, RecoveryMode::Strict).unwrap();
    assert_eq!(firsts, [1, 3, 4]);
}

/// Proves that `release_unused` gives back every whole block past the
/// records of a zero-filled and of a reserved segment, keeps the file's
/// length and the records, and that recovery then finds the same records
/// and its end where it was; and that a segment whose records reach its
/// last block gives nothing back.
#[test]
fn released_blocks_leave_the_records_and_the_length_as_they_were() {
    use std::os::unix::fs::MetadataExt;
    let capacity = 1 << 20;
    for preallocation in [Preallocation::Zeroed, Preallocation::Reserved] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(segment_file_name(HEADER.segment_id));
        let mut segment = Segment::create(&path, HEADER, capacity, preallocation).unwrap();
        append(&mut segment, 1, 1, &[&[0x11; 5000]]);
        let end = append(&mut segment, 2, 2, &[b"last"]).end;
        segment.sync().unwrap();
        let allocated = segment.allocated_bytes();
        let kept = segment.release_unused().unwrap();
        if kept == capacity {
            eprintln!("the temporary dir's file system cannot punch holes: not tried here");
            return;
        }
        assert_eq!(
            kept,
            end.next_multiple_of(RELEASE_BLOCK),
            "{preallocation:?}"
        );
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), capacity, "{preallocation:?}");
        assert!(
            meta.blocks() * 512 <= kept && kept < allocated,
            "{preallocation:?}: {} bytes allocated, {kept} kept, {allocated} before",
            meta.blocks() * 512
        );
        let (segment, firsts, report) = open(&path, RecoveryMode::Strict).unwrap();
        assert_eq!(firsts, [1, 2], "{preallocation:?}");
        assert_eq!((report.end, report.torn_tail), (end, None));
        assert_eq!(segment.allocated_bytes(), meta.blocks() * 512);
    }
    // Full to its last block: nothing to give back.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(segment_file_name(HEADER.segment_id));
    let mut segment = Segment::create(&path, HEADER, 8192, Preallocation::Zeroed).unwrap();
    append(&mut segment, 1, 1, &[&[0x22; 5000]]);
    assert!(segment.written_len() > 8192 - RELEASE_BLOCK);
    assert_eq!(segment.release_unused().unwrap(), 8192);
}

#[test]
fn torn_tail_is_cut_zeroed_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (path, mut segment) = new_segment(dir.path());
    append(&mut segment, 1, 1, &[b"one"]);
    let second = append(&mut segment, 1, 2, &[b"two"]);
    segment.sync().unwrap();
    let torn = append(&mut segment, 1, 3, &[b"three, never synced"]);
    drop(segment);
    // A crash persisted the record's first sector but not its last bytes.
    patch(&path, torn.end - 4, &[0; 4]);

    let strict = open(&path, RecoveryMode::Strict).unwrap_err();
    assert!(
        matches!(&strict, Error::TornTail { offset, .. } if *offset == torn.start),
        "{strict}"
    );
    assert!(
        strict.to_string().contains(&*path.to_string_lossy()),
        "{strict}"
    );

    let read_only = OpenOptions {
        recovery_mode: RecoveryMode::TolerateTornTail,
        writable: false,
        end: None,
    };
    let before = fs::read(&path).unwrap();
    let (segment, report) = Segment::open(&path, HEADER, &read_only, |_| {}).unwrap();
    assert_eq!(
        report.torn_tail.as_ref().map(|t| t.offset),
        Some(torn.start)
    );
    assert_eq!(
        fs::read(&path).unwrap(),
        before,
        "a read-only open changes nothing"
    );
    let err = segment_append_err(segment);
    assert!(matches!(err, Error::ReadOnly { .. }), "{err}");

    let (mut segment, firsts, report) = open(&path, RecoveryMode::TolerateTornTail).unwrap();
    assert_eq!(firsts, [1, 2]);
    let tail = report.torn_tail.unwrap();
    assert_eq!((tail.offset, report.end), (torn.start, second.end));
    assert_eq!(tail.discarded_bytes, torn.end - 4 - torn.start);
    let bytes = fs::read(&path).unwrap();
    assert!(
        bytes[torn.start as usize..].iter().all(|&b| b == 0),
        "the torn tail is zeroed"
    );

    // A shorter record written over the cut leaves no stale bytes behind.
    append(&mut segment, 1, 3, &[b"3"]);
    segment.close().unwrap();
    let (_, firsts, report) = open(&path, RecoveryMode::Strict).unwrap();
    assert_eq!((firsts, report.torn_tail), (vec![1, 2, 3], None));
}

fn segment_append_err(mut segment: Segment) -> Error {
    segment
        .append(&BatchRef {
            region_id: 1,
            table_id: 1,
            first_sequence: 9,
            entries: &[b"x"],
        })
        .unwrap_err()
}

#[test]
fn damage_to_synced_data_follows_the_recovery_mode() {
    let dir = tempfile::tempdir().unwrap();
    let (path, mut segment) = new_segment(dir.path());
    append(&mut segment, 1, 1, &[b"first"]);
    let second = append(&mut segment, 1, 2, &[b"second"]);
    segment.sync().unwrap();
    // This record is stamped with a durable offset that covers `second`.
    let third = append(&mut segment, 1, 3, &[b"third"]);
    segment.close().unwrap();
    patch(&path, second.start + RECORD_HEADER_LEN as u64 + 5, b"X");

    for mode in [RecoveryMode::Strict, RecoveryMode::TolerateTornTail] {
        let err = open(&path, mode).unwrap_err();
        assert!(
            matches!(&err, Error::Corrupted { offset, source: segwal_format::Error::RecordBodyChecksum { .. }, .. } if *offset == second.start),
            "{mode:?}: {err}"
        );
        let message = err.to_string();
        assert!(
            message.contains(&*path.to_string_lossy())
                && message.contains(&format!("offset {}", second.start)),
            "{message}"
        );
    }

    let (_, firsts, report) = open(&path, RecoveryMode::SkipCorrupted).unwrap();
    assert_eq!(firsts, [1, 3]);
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].range, second.start..third.start);
    assert_eq!(report.end, third.end);
    // The damaged bytes are left in place for inspection.
    assert_eq!(
        fs::read(&path).unwrap()[(second.start + RECORD_HEADER_LEN as u64 + 5) as usize],
        b'X'
    );
}

/// Proves that a segment whose file was cut exactly at a record boundary,
/// or extended, is refused by `Strict` and `TolerateTornTail` (the records
/// could not show the cut) and read up to the shorter length, with the
/// length reported, by `SkipCorrupted`.
#[test]
fn a_file_of_another_length_than_its_header_records_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (path, mut segment) = new_segment(dir.path());
    append(&mut segment, 1, 1, &[b"first"]);
    let second = append(&mut segment, 1, 2, &[b"second"]);
    segment.close().unwrap();
    let pristine = fs::read(&path).unwrap();

    for (what, len) in [("cut", second.start), ("extended", CAPACITY + 512)] {
        let mut bytes = pristine.clone();
        bytes.resize(len as usize, 0);
        fs::write(&path, &bytes).unwrap();
        for mode in [RecoveryMode::Strict, RecoveryMode::TolerateTornTail] {
            let err = open(&path, mode).unwrap_err();
            assert!(
                matches!(&err, Error::WrongLength { len: l, capacity: CAPACITY, .. } if *l == len),
                "{what}, {mode:?}: {err}"
            );
            let message = err.to_string();
            assert!(
                message.contains(&*path.to_string_lossy())
                    && message.contains(&format!("ends at offset {len}"))
                    && message.contains(&format!("length of {CAPACITY} bytes")),
                "{message}"
            );
        }
        let (segment, firsts, report) = open(&path, RecoveryMode::SkipCorrupted).unwrap();
        let expected: &[u64] = if len < CAPACITY { &[1] } else { &[1, 2] };
        assert_eq!(firsts, expected, "{what}");
        assert_eq!(report.wrong_length, Some(len), "{what}");
        assert_eq!(segment.capacity(), len.min(CAPACITY), "{what}");
        segment.close().unwrap();
        // Recovery never changes the length back: the evidence stays.
        assert_eq!(fs::metadata(&path).unwrap().len(), len, "{what}");
    }
}

/// Proves that a payload crafted to contain a well-formed record of the same
/// segment (everything but the secret salt) cannot be taken for a record
/// when recovery searches past a torn write: the crash stays a torn tail,
/// and no mode ever yields the forged record.
#[test]
fn a_record_hidden_in_a_payload_is_never_taken_for_one() {
    let dir = tempfile::tempdir().unwrap();
    let (path, mut segment) = new_segment(dir.path());
    let first = append(&mut segment, 1, 1, &[b"synced"]);
    segment.sync().unwrap();
    // The forger knows the segment id and offsets, not the salt, and claims
    // a durable offset that would prove corruption of the outer record.
    let payload_at = first.end + (RECORD_HEADER_LEN + 4) as u64;
    let mut forged = vec![0u8; 64];
    for salt in [0, 1, u64::MAX] {
        let guess = SegmentHeader {
            stream_id: HEADER.stream_id,
            segment_id: HEADER.segment_id,
            salt,
            capacity: CAPACITY,
        };
        let meta = BatchMeta {
            region_id: 1,
            table_id: 666,
            first_sequence: 999,
            durable_offset: payload_at,
        };
        RecordEncoder::new(&guess)
            .encode(&meta, &[b"forged"], &mut forged)
            .unwrap();
    }
    let outer = append(&mut segment, 1, 2, &[&forged]);
    drop(segment);
    // A crash loses the outer record's first bytes (never synced).
    patch(&path, outer.start, &[0; 8]);

    for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::SkipCorrupted] {
        let mut tables = Vec::new();
        let options = OpenOptions {
            recovery_mode: mode,
            writable: false,
            end: None,
        };
        let (_, report) =
            Segment::open(&path, HEADER, &options, |r| tables.push(r.table_id())).unwrap();
        assert_eq!(tables, [1], "{mode:?}");
        assert_eq!(
            report.torn_tail.map(|t| t.offset),
            Some(outer.start),
            "{mode:?}"
        );
        assert!(report.skipped.is_empty(), "{mode:?}");
    }
}

#[test]
fn open_sealed_reads_a_recovered_segment_without_scanning_it() {
    // Proves that a sealed segment can come back from an open-segment cache
    // by its header alone: its records read back and verify, nothing past
    // the given end is readable, and a wrong identity or length is refused.
    let dir = tempfile::tempdir().unwrap();
    let (path, mut segment) = new_segment(dir.path());
    let first = append(&mut segment, 1, 10, &[b"alpha", b"beta"]);
    let second = append(&mut segment, 2, 12, &[b"gamma"]);
    segment.close().unwrap();

    let handle = Segment::open_sealed(&path, HEADER, second.end).unwrap();
    assert_eq!(handle.written_len(), second.end);
    assert_eq!(handle.durable_len(), second.end);
    let records: Vec<(u64, u64)> = handle
        .records_from(first.start)
        .unwrap()
        .map(|r| (r.table_id(), r.first_sequence()))
        .collect();
    assert_eq!(records, [(1, 10), (2, 12)]);

    // Only the first record, when told the data ends there.
    let short = Segment::open_sealed(&path, HEADER, first.end).unwrap();
    assert_eq!(short.records_from(first.start).unwrap().count(), 1);
    assert!(matches!(
        short.read(first.end, 1),
        Err(Error::ReadPastEnd { .. })
    ));

    let elsewhere = SegmentIdentity {
        stream_id: HEADER.stream_id,
        segment_id: HEADER.segment_id + 1,
    };
    assert!(matches!(
        Segment::open_sealed(&path, elsewhere, second.end),
        Err(Error::WrongIdentity { .. })
    ));
    assert!(matches!(
        Segment::open_sealed(&path, HEADER, CAPACITY + 1),
        Err(Error::ReadPastEnd { .. })
    ));
    assert!(matches!(
        Segment::open_sealed(&dir.path().join("missing.seg"), HEADER, second.end),
        Err(Error::Open { .. })
    ));
}

/// Proves that a recorded end (what the manager keeps after a failed sync)
/// hides every record past it, whatever the file holds there: a read-only
/// open ignores those bytes and leaves them, a writable open zeroes them,
/// and later opens without the end then find the segment ending cleanly.
#[test]
fn records_past_a_recorded_end_are_ignored_and_zeroed() {
    let dir = tempfile::tempdir().unwrap();
    let (path, mut segment) = new_segment(dir.path());
    let first = append(&mut segment, 1, 1, &[b"synced"]);
    append(&mut segment, 1, 2, &[b"never durable"]);
    append(&mut segment, 2, 3, &[b"nor this"]);
    segment.close().unwrap();
    let before = fs::read(&path).unwrap();

    let options = |writable| OpenOptions {
        recovery_mode: RecoveryMode::Strict,
        writable,
        end: Some(first.end),
    };
    let mut seen = Vec::new();
    let (segment, report) = Segment::open(&path, HEADER, &options(false), |r| {
        seen.push(r.first_sequence());
    })
    .unwrap();
    assert_eq!((seen.as_slice(), report.end), ([1].as_slice(), first.end));
    assert!(report.past_end_bytes > 0);
    drop(segment);
    assert_eq!(
        fs::read(&path).unwrap(),
        before,
        "read-only opens change nothing"
    );

    let (segment, report) = Segment::open(&path, HEADER, &options(true), |_| {}).unwrap();
    assert_eq!(report.records, 1);
    drop(segment);
    let after = fs::read(&path).unwrap();
    assert!(after[first.end as usize..].iter().all(|&b| b == 0));
    let (_, firsts, report) = open(&path, RecoveryMode::Strict).unwrap();
    assert_eq!(
        (firsts, report.end, report.past_end_bytes),
        (vec![1], first.end, 0)
    );
}
