//! Tests of segment files on a real file system: recovery and every
//! error path, appends, reads and syncs (creation is in `create.rs`).

use std::fs;

use segwal_format::{
    BatchMeta, RECORD_HEADER_LEN, RecordDecoder, RecordEncoder, SEGMENT_HEADER_LEN, SegmentHeader,
    SegmentIdentity,
};
use segwal_segment::{
    BatchRef, Error, OpenOptions, Preallocation, RELEASE_BLOCK, RecoveryMode, Segment,
    parse_segment_file_name, segment_file_name,
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

#[test]
fn append_past_capacity_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(segment_file_name(7));
    let capacity = (SEGMENT_HEADER_LEN + 2 * (RECORD_HEADER_LEN + 4 + 100)) as u64;
    let mut segment = Segment::create(&path, HEADER, capacity, Preallocation::Zeroed).unwrap();
    let payload = [7u8; 100];
    append(&mut segment, 1, 1, &[&payload]);
    let big = [7u8; 101];
    let err = segment
        .append(&BatchRef {
            region_id: 1,
            table_id: 1,
            first_sequence: 2,
            entries: &[&big[..]],
        })
        .unwrap_err();
    assert!(
        matches!(err, Error::AppendPastCapacity { len, .. } if len == (RECORD_HEADER_LEN + 4 + 101) as u64),
        "{err}"
    );
    assert_eq!(segment.remaining(), (RECORD_HEADER_LEN + 4 + 100) as u64);
    let last = append(&mut segment, 1, 2, &[&payload]);
    assert_eq!((last.end, segment.remaining()), (capacity, 0));
    segment.close().unwrap();
    let (_, firsts, report) = open(&path, RecoveryMode::Strict).unwrap();
    assert_eq!((firsts, report.end), (vec![1, 2], capacity));
}

#[test]
fn empty_or_invalid_batches_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_path, mut segment) = new_segment(dir.path());
    let empty: [&[u8]; 0] = [];
    let err = segment
        .append(&BatchRef {
            region_id: 1,
            table_id: 1,
            first_sequence: 1,
            entries: &empty,
        })
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Encode {
                source: segwal_format::Error::EmptyBatch,
                ..
            }
        ),
        "{err}"
    );
    let err = segment
        .append(&BatchRef {
            region_id: 1,
            table_id: 1,
            first_sequence: 0,
            entries: &[b"x"],
        })
        .unwrap_err();
    assert!(matches!(err, Error::Encode { .. }), "{err}");
    // In a multi-batch append, one bad batch refuses them all.
    let mut placed = Vec::new();
    let batches = [
        BatchRef {
            region_id: 1,
            table_id: 1,
            first_sequence: 1,
            entries: &[b"x".as_slice()][..],
        },
        BatchRef {
            region_id: 1,
            table_id: 1,
            first_sequence: 2,
            entries: &[][..],
        },
    ];
    assert!(segment.append_batches(&batches, &mut placed).is_err());
    assert!(placed.is_empty());
    assert_eq!(segment.written_len(), SEGMENT_HEADER_LEN as u64);
}

#[test]
fn reads_past_the_written_data_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_path, mut segment) = new_segment(dir.path());
    let placed = append(&mut segment, 1, 1, &[b"payload"]);
    let handle = segment.handle();
    assert_eq!(&handle.read(placed.end - 7, 7).unwrap(), b"payload");
    for (offset, len) in [
        (placed.end, 1),
        (placed.end - 1, 2),
        (u64::MAX, 2),
        (CAPACITY, 0),
    ] {
        let err = handle.read(offset, len).unwrap_err();
        assert!(matches!(err, Error::ReadPastEnd { .. }), "{err}");
    }
    assert!(matches!(
        handle.records_from(placed.end + 1),
        Err(Error::ReadPastEnd { .. })
    ));
    assert!(matches!(
        handle.records_from(0),
        Err(Error::ReadPastEnd { .. })
    ));
    assert_eq!(handle.records_from(placed.end).unwrap().count(), 0);
}

#[test]
fn records_are_stamped_with_the_last_completed_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (_path, mut segment) = new_segment(dir.path());
    let first = append(&mut segment, 1, 1, &[b"a"]);
    assert_eq!(
        (segment.written_len(), segment.durable_len()),
        (first.end, SEGMENT_HEADER_LEN as u64)
    );
    assert_eq!(segment.sync().unwrap(), first.end);
    assert_eq!(segment.durable_len(), first.end);
    let mut placed = Vec::new();
    let entries: [&[u8]; 1] = [b"b"];
    let batches = [
        BatchRef {
            region_id: 1,
            table_id: 1,
            first_sequence: 2,
            entries: &entries[..],
        },
        BatchRef {
            region_id: 1,
            table_id: 2,
            first_sequence: 3,
            entries: &entries[..],
        },
    ];
    let whole = segment.append_batches(&batches, &mut placed).unwrap();
    assert_eq!((placed[0].start, placed[1].end), (whole.start, whole.end));
    let handle = segment.handle();
    let decoder = RecordDecoder::new(&segment.header());
    for range in placed {
        let bytes = handle.read(range.start, range.end - range.start).unwrap();
        let record = decoder.decode(bytes, range.start).unwrap();
        assert_eq!(record.header().meta.durable_offset, first.end);
    }
}

/// Proves that `append_durable` returns with its record durable, and with
/// every record appended before it durable too, both when it can carry its
/// own sync (everything before it durable already) and when it cannot (an
/// unsynced append before it); and that the records read back after a
/// reopen.
#[test]
fn append_durable_leaves_everything_appended_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (path, mut segment) = new_segment(dir.path());
    let durable = |segment: &mut Segment, first_sequence: u64, entries: &[&[u8]]| {
        segment
            .append_durable(&BatchRef {
                region_id: 1,
                table_id: 1,
                first_sequence,
                entries,
            })
            .unwrap()
    };
    assert_eq!(segment.durable_len(), segment.written_len());
    let first = durable(&mut segment, 1, &[b"one", b"two"]);
    assert_eq!(segment.durable_len(), first.end);
    let plain = append(&mut segment, 1, 3, &[b"three"]);
    assert_eq!(segment.durable_len(), first.end);
    let last = durable(&mut segment, 4, &[b"four"]);
    assert_eq!(plain.end, last.start);
    assert_eq!(
        (segment.durable_len(), segment.written_len()),
        (last.end, last.end)
    );
    drop(segment);
    let (_segment, firsts, report) = open(&path, RecoveryMode::Strict).unwrap();
    assert_eq!(firsts, [1, 3, 4]);
    assert_eq!(report.end, last.end);
}

#[test]
fn handles_outlive_close_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let (path, mut segment) = new_segment(dir.path());
    let placed = append(&mut segment, 5, 1, &[b"kept"]);
    let handle = segment.handle();
    segment.delete().unwrap();
    assert!(!path.exists());
    let record = handle.records_from(placed.start).unwrap().next().unwrap();
    assert_eq!(
        record.borrowed_entries().unwrap().next().unwrap().payload,
        b"kept"
    );
    assert!(matches!(
        Segment::delete_file(&path),
        Err(Error::Delete { .. })
    ));
}

#[test]
fn concurrent_readers_and_syncs_see_only_whole_records() {
    let dir = tempfile::tempdir().unwrap();
    let (_path, mut segment) = new_segment(dir.path());
    let handle = segment.handle();
    std::thread::scope(|s| {
        for _ in 0..2 {
            let handle = handle.clone();
            s.spawn(move || {
                let mut seen = 0;
                while seen < 200 {
                    let mut scanner = handle.records_from(SEGMENT_HEADER_LEN as u64).unwrap();
                    let mut count = 0;
                    for record in scanner.by_ref() {
                        count += 1;
                        let entry = record.borrowed_entries().unwrap().next().unwrap();
                        assert_eq!(entry.payload, entry.sequence.to_le_bytes().repeat(8));
                    }
                    assert!(matches!(
                        scanner.end(),
                        Some(segwal_format::ScanEnd::Clean { .. })
                    ));
                    seen = seen.max(count);
                }
            });
        }
        let syncer = handle.clone();
        s.spawn(move || while syncer.sync().unwrap() < 5000 {});
        for sequence in 1..=200u64 {
            let payload = sequence.to_le_bytes().repeat(8);
            append(&mut segment, 1, sequence, &[&payload]);
        }
    });
}

#[test]
fn segment_file_names_sort_numerically_and_strays_are_ignored() {
    assert_eq!(segment_file_name(42), "00000000000000000042.seg");
    assert_eq!(segment_file_name(u64::MAX), "18446744073709551615.seg");
    for id in [0, 1, 42, u64::MAX] {
        assert_eq!(parse_segment_file_name(&segment_file_name(id)), Some(id));
    }
    assert!(segment_file_name(9) < segment_file_name(10));
    for stray in [
        "42.seg",
        "0000000000000000004x.seg",
        "00000000000000000042.tmp",
        "lock",
        "99999999999999999999.seg",
        "+0000000000000000042.seg",
    ] {
        assert_eq!(parse_segment_file_name(stray), None, "{stray}");
    }
}

#[test]
fn a_segment_has_one_writer_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let (path, segment) = new_segment(dir.path());
    let read_only = OpenOptions {
        recovery_mode: RecoveryMode::default(),
        writable: false,
        end: None,
    };
    for options in [OpenOptions::default(), read_only] {
        let err = Segment::open(&path, HEADER, &options, |_| {}).unwrap_err();
        assert!(matches!(err, Error::Locked { .. }), "{err}");
        assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
    }
    segment.close().unwrap();
    // Readers share; a writer waits for them all to close.
    let (first, _) = Segment::open(&path, HEADER, &read_only, |_| {}).unwrap();
    let (second, _) = Segment::open(&path, HEADER, &read_only, |_| {}).unwrap();
    assert!(matches!(
        open(&path, RecoveryMode::default()),
        Err(Error::Locked { .. })
    ));
    drop((first, second));
    open(&path, RecoveryMode::default()).unwrap();
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

#[test]
fn a_renamed_segment_keeps_its_identity_and_records() {
    // Proves that a segment prepared under a temporary name can be put in
    // place: the old name is gone, appends and recovery work under the new
    // one, and renaming onto a missing directory fails without moving it.
    let dir = tempfile::tempdir().unwrap();
    let spare = dir.path().join("spare.tmp");
    let mut segment = Segment::create(&spare, HEADER, CAPACITY, Preallocation::Zeroed).unwrap();
    let missing = dir.path().join("no-such-dir").join("x.seg");
    assert!(matches!(
        segment.rename(&missing),
        Err(Error::Rename { .. })
    ));
    assert_eq!(segment.path(), spare);

    let path = dir.path().join(segment_file_name(HEADER.segment_id));
    segment.rename(&path).unwrap();
    assert_eq!(segment.path(), path);
    assert!(!spare.exists());
    append(&mut segment, 1, 1, &[b"after rename"]);
    segment.close().unwrap();
    let (_, firsts, _) = open(&path, RecoveryMode::Strict).unwrap();
    assert_eq!(firsts, [1]);
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

/// Proves that a slice shared out of a handle names the same bytes at the
/// same offsets, stays readable after the segment is deleted, and that a
/// slice from elsewhere cannot be passed off as the segment's.
#[test]
fn shared_bytes_outlive_the_segment_and_only_its_own_slices_are_shared() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut segment) = new_segment(dir.path());
    let entries: [&[u8]; 2] = [b"kept", b"shared"];
    let placed = segment
        .append(&BatchRef {
            region_id: 1,
            table_id: 1,
            first_sequence: 1,
            entries: &entries,
        })
        .unwrap();
    let handle = segment.handle();
    let record = handle.records_from(placed.start).unwrap().next().unwrap();
    let payload = record.borrowed_entries().unwrap().nth(1).unwrap().payload;
    let shared = handle.share(payload);
    assert_eq!(&*shared, b"shared");
    assert!(placed.start < shared.offsets().start && shared.offsets().end <= placed.end);
    segment.delete().unwrap();
    drop(handle);
    assert_eq!(&*shared, b"shared");

    let foreign = b"shared".to_vec();
    let (_, other) = new_segment(dir.path());
    let outside = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        other.handle().share(&foreign)
    }));
    assert!(outside.is_err(), "a slice from the heap was shared");
}

/// Proves that `SegmentBytes::written` covers the shared slice and the
/// whole segment written so far, from its header on, and not what is
/// appended after it.
#[test]
fn written_bytes_cover_the_segment_up_to_its_written_end_then() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut segment) = new_segment(dir.path());
    let placed = segment
        .append(&BatchRef {
            region_id: 1,
            table_id: 1,
            first_sequence: 1,
            entries: &[b"first".as_slice()],
        })
        .unwrap();
    let handle = segment.handle();
    let record = handle.records_from(placed.start).unwrap().next().unwrap();
    let shared = handle.share(record.borrowed_entries().unwrap().next().unwrap().payload);
    let written = shared.written();
    assert_eq!(written.offsets(), 0..placed.end);
    assert_eq!(&*written, handle.read(0, placed.end).unwrap());
    let inside = shared.offsets();
    assert_eq!(
        &written[inside.start as usize..inside.end as usize],
        b"first"
    );
    let later = segment
        .append(&BatchRef {
            region_id: 1,
            table_id: 1,
            first_sequence: 2,
            entries: &[b"second".as_slice()],
        })
        .unwrap();
    assert_eq!(written.offsets().end, placed.end, "a view never grows");
    assert_eq!(shared.written().offsets(), 0..later.end);
}

/// Minor page faults of the calling thread so far (field 10 of
/// `/proc/thread-self/stat`).
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // The command name (field 2) is in parentheses and may hold spaces.
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    after_name.split(' ').nth(7).unwrap().parse().unwrap()
}

/// Reads every byte of `handle`'s written data; returns the minor page
/// faults that took.
fn faults_reading(handle: &segwal_segment::SegmentHandle) -> u64 {
    let before = minor_faults();
    let bytes = handle.read(0, handle.written_len()).unwrap();
    let sum = bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b));
    std::hint::black_box(sum);
    minor_faults() - before
}

/// Proves that `populate` maps a segment's written data ahead of reads:
/// reading 4 MiB through a populated mapping takes a fraction of the page
/// faults that reading a fresh mapping of the same kind takes.
#[test]
fn populate_maps_the_written_data_ahead_of_reads() {
    let dir = tempfile::tempdir().unwrap();
    let payload = vec![7u8; 64 * 1024];
    let mut handles = Vec::new();
    for segment_id in [1, 2] {
        let identity = SegmentIdentity {
            stream_id: 1,
            segment_id,
        };
        let path = dir.path().join(format!("{segment_id}.seg"));
        let mut segment = Segment::create(&path, identity, 8 << 20, Preallocation::Zeroed).unwrap();
        for batch in 0..64 {
            segment
                .append(&BatchRef {
                    region_id: 1,
                    table_id: 1,
                    first_sequence: batch + 1,
                    entries: &[payload.as_slice()],
                })
                .unwrap();
        }
        // Appends are `pwrite`s: the mapping itself is untouched so far.
        handles.push(segment.handle());
    }
    if let Err(err) = handles[1].populate() {
        eprintln!("skipped: the kernel refuses MADV_POPULATE_READ ({err})");
        return;
    }
    let fresh = faults_reading(&handles[0]);
    let populated = faults_reading(&handles[1]);
    assert!(
        fresh >= 16,
        "a fresh 4 MiB mapping took only {fresh} faults"
    );
    assert!(
        populated * 4 <= fresh,
        "populated: {populated} faults, fresh: {fresh}"
    );
}
