//! Tests of creating segment files on a real file system: preallocation
//! (zeroed, reserved, paced and hurried), the header, and every way a
//! file that is not a valid segment is refused.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use segwal_format::{RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, SegmentHeader, SegmentIdentity};
use segwal_segment::{
    BatchRef, Error, OpenOptions, Preallocation, RecoveryMode, Segment, ZeroFillPace,
    segment_file_name,
};

mod support;
use support::*;

#[test]
fn create_preallocates_real_blocks_and_writes_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let (path, segment) = new_segment(dir.path());
    assert_eq!(segment.written_len(), SEGMENT_HEADER_LEN as u64);
    assert_eq!(segment.durable_len(), SEGMENT_HEADER_LEN as u64);
    assert_eq!(segment.remaining(), CAPACITY - SEGMENT_HEADER_LEN as u64);
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), CAPACITY);
    // Not sparse: every block is allocated, so appends never allocate.
    assert!(meta.blocks() * 512 >= CAPACITY, "{} blocks", meta.blocks());
    let bytes = fs::read(&path).unwrap();
    assert_eq!(SegmentHeader::decode(&bytes).unwrap(), segment.header());
    assert_eq!(segment.header().identity(), HEADER);
    assert!(bytes[SEGMENT_HEADER_LEN..].iter().all(|&b| b == 0));
}

/// Proves that a segment whose blocks are reserved rather than written has
/// its full length, every block allocated (so appends never meet a hole or
/// a full disk), reads as zeros past its header, and takes appends that a
/// reopen recovers like any other segment's.
#[test]
fn create_reserved_allocates_every_block_and_reads_as_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(segment_file_name(1));
    let mut segment = Segment::create(&path, HEADER, CAPACITY, Preallocation::Reserved).unwrap();
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), CAPACITY);
    assert!(meta.blocks() * 512 >= CAPACITY, "{} blocks", meta.blocks());
    let bytes = fs::read(&path).unwrap();
    assert_eq!(SegmentHeader::decode(&bytes).unwrap(), segment.header());
    assert!(bytes[SEGMENT_HEADER_LEN..].iter().all(|&b| b == 0));

    let entries: [&[u8]; 1] = [b"reserved"];
    let placed = segment
        .append(&BatchRef {
            region_id: 1,
            table_id: 3,
            first_sequence: 1,
            entries: &entries,
        })
        .unwrap();
    segment.sync().unwrap();
    segment.close().unwrap();
    let (_, report) = Segment::open(&path, HEADER, &OpenOptions::default(), |_| {}).unwrap();
    assert_eq!(
        (report.records, report.end, report.torn_tail),
        (1, placed.end, None)
    );
}

/// Checks that `path` is a whole segment of `capacity`: full length, every
/// block allocated, zeros past the header, and an append at its very end
/// that a reopen finds.
fn assert_whole_and_usable(path: &Path, mut segment: Segment, capacity: u64) {
    let meta = fs::metadata(path).unwrap();
    assert_eq!(meta.len(), capacity);
    assert!(meta.blocks() * 512 >= capacity, "{} blocks", meta.blocks());
    let bytes = fs::read(path).unwrap();
    assert!(bytes[SEGMENT_HEADER_LEN..].iter().all(|&b| b == 0));
    let filler = vec![7u8; (capacity as usize) / 2];
    append(&mut segment, 1, 1, &[&filler]);
    let room = segment.remaining() - RECORD_HEADER_LEN as u64 - 64;
    let last = vec![9u8; room as usize];
    let placed = append(&mut segment, 1, 2, &[&last]);
    assert!(
        capacity - placed.end < 128,
        "the last record ends near the end"
    );
    segment.sync().unwrap();
    segment.close().unwrap();
    let (_, firsts, report) = open(path, RecoveryMode::Strict).unwrap();
    assert_eq!((firsts, report.end), (vec![1, 2], placed.end));
}

/// Proves that zeros paced over a spread take at least most of it (chunk
/// k of n is not written before k/n of the spread has passed), and that
/// the segment is then as a zero-filled one must be.
#[test]
fn paced_zeros_are_spread_over_the_time_given() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(segment_file_name(HEADER.segment_id));
    let capacity = 4 << 20;
    let spread = std::time::Duration::from_millis(200);
    let pace = ZeroFillPace::spread_over(spread);
    let started = std::time::Instant::now();
    let segment =
        Segment::create_paced(&path, HEADER, capacity, Preallocation::Zeroed, &pace).unwrap();
    // The last of the sixteen 256 KiB chunks is due at 15/16 of it.
    assert!(
        started.elapsed() >= spread.mul_f64(0.7),
        "{:?}",
        started.elapsed()
    );
    assert!(!pace.is_hurried() && !pace.was_cut_short());
    assert_whole_and_usable(&path, segment, capacity);
}

/// Proves that hurrying a creation whose zeros are spread over longer
/// than the clock can reach ends its pauses at once (the creation returns, the rest of its blocks
/// reserved), and that the segment is whole and usable all the same:
/// full length, zeros past the header, appends up to its end.
#[test]
fn a_hurried_creation_returns_at_once_with_a_whole_segment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(segment_file_name(HEADER.segment_id));
    let capacity = 8 << 20;
    // A spread longer than the clock can reach: only the hurry ends it.
    let pace = std::sync::Arc::new(ZeroFillPace::spread_over(std::time::Duration::MAX));
    let (done, finished) = std::sync::mpsc::channel();
    let creating = {
        let (path, pace) = (path.clone(), std::sync::Arc::clone(&pace));
        std::thread::spawn(move || {
            let segment =
                Segment::create_paced(&path, HEADER, capacity, Preallocation::Zeroed, &pace);
            done.send(()).unwrap();
            segment
        })
    };
    // The first chunk is due at once, the second never.
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(
        finished.try_recv().is_err(),
        "the creation waits for its pace"
    );
    pace.hurry();
    finished
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("a hurried creation returns");
    let segment = creating.join().unwrap().unwrap();
    assert!(pace.is_hurried() && pace.was_cut_short());
    assert_whole_and_usable(&path, segment, capacity);
}

#[test]
fn start_writeback_covers_what_was_written_and_makes_nothing_durable() {
    // Proves `start_writeback` is only a hint: it reports the written end it
    // covered, starts nothing when there is nothing new, and leaves the
    // durable offset (what a crash is known to keep) where it was.
    let dir = tempfile::tempdir().unwrap();
    let (_, mut segment) = new_segment(dir.path());
    let durable = segment.durable_len();
    let first = append(&mut segment, 1, 1, &[b"one", b"two"]);
    let second = append(&mut segment, 1, 3, &[&[7u8; 5000]]);
    assert_eq!(segment.start_writeback(first.start), second.end);
    assert_eq!(segment.start_writeback(second.end), second.end);
    assert_eq!(segment.durable_len(), durable);
    assert_eq!(segment.written_len(), second.end);
    assert_eq!(segment.sync().unwrap(), second.end);
}

#[test]
fn create_refuses_an_existing_file_and_bad_capacities() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _segment) = new_segment(dir.path());
    let err = Segment::create(&path, HEADER, CAPACITY, Preallocation::Zeroed).unwrap_err();
    assert!(matches!(err, Error::Create { .. }), "{err}");
    assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");

    let other = dir.path().join("other.seg");
    for capacity in [0, SEGMENT_HEADER_LEN as u64, u64::MAX] {
        let err = Segment::create(&other, HEADER, capacity, Preallocation::Zeroed).unwrap_err();
        assert!(matches!(err, Error::InvalidCapacity { .. }), "{err}");
    }
    assert!(!other.exists(), "a refused create leaves no file");
}

#[test]
fn zero_length_and_short_files_are_rejected_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(segment_file_name(7));
    for len in [0, 10, SEGMENT_HEADER_LEN - 1] {
        let header = SegmentHeader {
            stream_id: 2,
            segment_id: 7,
            salt: 1,
            capacity: 4096,
        };
        fs::write(&path, &header.encode()[..len]).unwrap();
        let err = open(&path, RecoveryMode::default()).unwrap_err();
        assert!(
            matches!(&err, Error::BadHeader { source: segwal_format::Error::ShortSegmentHeader { len: l }, .. } if *l == len),
            "{err}"
        );
        assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
    }
}

#[test]
fn foreign_file_is_rejected_by_magic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(segment_file_name(7));
    fs::write(&path, vec![b'x'; 4096]).unwrap();
    let err = open(&path, RecoveryMode::default()).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::BadHeader {
                source: segwal_format::Error::BadMagic { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("not a segwal segment"), "{err}");
}

#[test]
fn unknown_version_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (path, segment) = new_segment(dir.path());
    segment.close().unwrap();
    patch(&path, 8, &[9]);
    let err = open(&path, RecoveryMode::default()).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::BadHeader {
                source: segwal_format::Error::UnsupportedVersion { found: 9 },
                ..
            }
        ),
        "{err}"
    );
}

/// Proves that a segment of the previous format version is refused with
/// a message naming the file and both versions, so whoever meets it knows
/// which file is old and which version this build reads.
#[test]
fn a_version_2_segment_is_refused_naming_the_file_and_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let (path, segment) = new_segment(dir.path());
    segment.close().unwrap();
    // A header as version 2 wrote it: same layout, version byte 2 and a
    // checksum that matches, so only the version can be blamed.
    let mut header = fs::read(&path).unwrap()[..SEGMENT_HEADER_LEN].to_vec();
    header[8] = 2;
    let crc_at = SEGMENT_HEADER_LEN - 4;
    let crc = crc32fast::hash(&header[..crc_at]);
    header[crc_at..].copy_from_slice(&crc.to_le_bytes());
    patch(&path, 0, &header);
    let err = open(&path, RecoveryMode::default()).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::BadHeader {
                source: segwal_format::Error::UnsupportedVersion { found: 2 },
                ..
            }
        ),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&path.display().to_string()),
        "the message names the file: {message}"
    );
    assert!(
        message.contains("version 2") && message.contains("reads version 3"),
        "the message names both versions: {message}"
    );
}

#[test]
fn damaged_header_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (path, segment) = new_segment(dir.path());
    segment.close().unwrap();
    patch(&path, 14, &[0xff]);
    let err = open(&path, RecoveryMode::SkipCorrupted).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::BadHeader {
                source: segwal_format::Error::SegmentHeaderChecksum { .. },
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_segment_in_the_wrong_place_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (path, segment) = new_segment(dir.path());
    segment.close().unwrap();
    let expected = SegmentIdentity {
        stream_id: 3,
        ..HEADER
    };
    let err = Segment::open(&path, expected, &OpenOptions::default(), |_| {}).unwrap_err();
    assert!(matches!(err, Error::WrongIdentity { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("belongs to stream 2 segment 7, expected stream 3 segment 7"),
        "{err}"
    );
}
