//! Tests of segment files on a real file system: appends, reads, syncs
//! and their error paths (creation is in `create.rs`, recovery in
//! `recovery.rs`).

use segwal_format::{RECORD_HEADER_LEN, RecordDecoder, SEGMENT_HEADER_LEN, SegmentIdentity};
use segwal_segment::{
    BatchRef, Error, OpenOptions, Preallocation, RecoveryMode, Segment, parse_segment_file_name,
    segment_file_name,
};

mod support;
use support::*;

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
