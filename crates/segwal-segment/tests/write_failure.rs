//! A real write error from the kernel, without a fault-injection seam:
//! `RLIMIT_FSIZE` makes `pwrite` past the limit fail with `EFBIG` even
//! inside a preallocated file. The limit is process-wide, so this file holds
//! a single test and runs as its own process.

#![allow(unsafe_code)]

use segwal_format::{SEGMENT_HEADER_LEN, SegmentIdentity};
use segwal_segment::{BatchRef, Error, OpenOptions, Preallocation, Segment, segment_file_name};

/// Sets this process's file size limit (`None`: none).
fn set_file_size_limit(bytes: Option<u64>) {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let limit = Rlimit {
        current: bytes,
        maximum: None,
    };
    setrlimit(Resource::Fsize, limit).expect("the file size limit can be set");
}

/// Proves that a failed write reaches the caller, poisons the segment (no
/// later append or sync succeeds, so nothing after the failure is ever
/// reported durable), leaves what was synced before it readable, and that
/// recovery afterwards keeps every record synced before the failure and
/// cuts the partial write as a torn tail.
#[test]
fn a_failed_write_poisons_the_segment_and_loses_nothing_synced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(segment_file_name(1));
    let header = SegmentIdentity {
        stream_id: 1,
        segment_id: 1,
    };
    let mut segment = Segment::create(&path, header, 64 << 10, Preallocation::Zeroed).unwrap();
    let payload = [0x42u8; 1000];
    let mut sequence = 1;
    while segment.written_len() < 8000 {
        let batch = BatchRef {
            region_id: 1,
            table_id: 1,
            first_sequence: sequence,
            entries: &[&payload[..]],
        };
        segment.append(&batch).unwrap();
        sequence += 1;
    }
    let durable = segment.sync().unwrap();
    let synced_records = sequence - 1;

    // From here on, writes past 9000 bytes fail. The next append straddles
    // the limit, so part of it reaches the file before the error.
    // SAFETY: ignoring SIGXFSZ (whose default action kills the process) and
    // lowering this process's file size limit touch no memory of ours.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    set_file_size_limit(Some(9000));

    let batch = BatchRef {
        region_id: 1,
        table_id: 1,
        first_sequence: sequence,
        entries: &[&payload[..]],
    };
    let err = segment.append(&batch).unwrap_err();
    assert!(
        matches!(&err, Error::Write { source, .. } if source.raw_os_error() == Some(libc::EFBIG)),
        "{err}"
    );
    assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
    assert_eq!(
        segment.written_len(),
        durable,
        "a failed append publishes nothing"
    );

    let err = segment.append(&batch).unwrap_err();
    assert!(
        matches!(err, Error::Poisoned { durable: d, sync_failed: false, .. } if d == durable),
        "{err}"
    );
    assert!(matches!(segment.sync(), Err(Error::Poisoned { .. })));
    assert!(matches!(
        segment.handle().sync(),
        Err(Error::Poisoned { .. })
    ));
    let readable = segment
        .handle()
        .records_from(SEGMENT_HEADER_LEN as u64)
        .unwrap()
        .count() as u64;
    assert_eq!(readable, synced_records);
    assert!(matches!(segment.close(), Err(Error::Poisoned { .. })));

    set_file_size_limit(None);

    let mut recovered = 0;
    let (_, report) =
        Segment::open(&path, header, &OpenOptions::default(), |_| recovered += 1).unwrap();
    assert_eq!(recovered, synced_records);
    let torn = report.torn_tail.expect("the partial write is a torn tail");
    assert_eq!(torn.offset, durable);
}
