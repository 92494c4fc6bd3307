//! A real write error from the kernel inside the manager: `RLIMIT_FSIZE`
//! makes `pwrite` past the limit fail with `EFBIG` even inside a
//! preallocated segment. The limit is process-wide, so this file holds a
//! single test and runs as its own process.

#![allow(unsafe_code)]

use segwal_manager::{Error, ManagerConfig, SegmentManager};

fn set_file_size_limit(bytes: u64) {
    use rustix::process::{Resource, Rlimit, setrlimit};
    // SAFETY: ignoring SIGXFSZ (whose default action kills the process)
    // touches no memory of ours.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let limit = Rlimit {
        current: (bytes != u64::MAX).then_some(bytes),
        maximum: None,
    };
    setrlimit(Resource::Fsize, limit).expect("the file size limit can be set");
}

/// Every entry of table 1 of `region`, as (sequence, payload).
fn read_all(wal: &SegmentManager, region: u64) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut iter = wal.read(region, 1, 0, u64::MAX).unwrap();
    while iter
        .next_batch(100, |e| out.push((e.sequence, e.payload.to_vec())))
        .unwrap()
        > 0
    {}
    out
}

/// Proves that a failed write reaches the caller, that its stream of the
/// shared log then refuses every write, of every region on it (fail-stop:
/// nothing after the failure is ever acknowledged), even after
/// `close_region`, while reads keep returning what was acknowledged and
/// the other stream writes on; and that once the WAL is closed and opened
/// again (recovered from disk) nothing acknowledged is lost and the failed
/// write's sequence number is not given again.
#[test]
fn a_failed_write_stops_the_stream_until_the_wal_is_reopened() {
    let dir = tempfile::tempdir().unwrap();
    // Regions 1 and 3 write to stream 1, region 2 to stream 0.
    let config = ManagerConfig {
        segment_size_bytes: 64 << 10,
        streams: 2,
        ..ManagerConfig::new(dir.path())
    };
    let wal = SegmentManager::open(config.clone()).unwrap();
    let payload = |i: u64| vec![i as u8; 1000];
    let mut acknowledged = Vec::new();
    for i in 0..8 {
        let seq = wal.write(1, 1, &[payload(i)]).unwrap();
        acknowledged.push((seq, payload(i)));
    }
    let mut neighbour = Vec::new();
    for i in 0..2 {
        let seq = wal.write(3, 1, &[payload(100 + i)]).unwrap();
        neighbour.push((seq, payload(100 + i)));
    }

    // The next append straddles the limit: part of it reaches the file.
    // (Stream 1's segment holds every record written so far.)
    let end = segwal_format::SEGMENT_HEADER_LEN as u64 + wal.statistics().bytes_written;
    set_file_size_limit(end + 500);
    let err = wal.write(1, 1, &[payload(8)]).unwrap_err();
    set_file_size_limit(u64::MAX);
    assert!(
        matches!(
            err,
            Error::Write {
                region_id: 1,
                table_id: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(".seg"), "names the file: {err}");
    let torn = std::fs::read_dir(dir.path()).unwrap().any(|entry| {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        bytes.len() as u64 > end && bytes[end as usize..].iter().any(|&b| b != 0)
    });
    assert!(torn, "no part of the failed write reached the file");
    assert!(
        err.to_string()
            .contains(&*std::io::Error::from_raw_os_error(libc::EFBIG).to_string()),
        "names the cause: {err}"
    );

    // The whole stream refuses writes, before using a number.
    for region in [1, 3] {
        let err = wal.write(region, 2, &[payload(9)]).unwrap_err();
        assert!(
            matches!(err, Error::RegionFailed { region_id } if region_id == region),
            "{err}"
        );
    }
    assert_eq!(wal.sequence_num(1, 1).unwrap(), 8);
    assert_eq!(read_all(&wal, 1), acknowledged);
    // The other stream is unaffected.
    assert_eq!(wal.write(2, 1, &[b"elsewhere"]).unwrap(), 1);
    // Closing a region does not recover it: its stream still refuses, and
    // its next read re-reads what was acknowledged.
    wal.close_region(1).unwrap();
    let err = wal.write(1, 1, &[payload(9)]).unwrap_err();
    assert!(matches!(err, Error::RegionFailed { region_id: 1 }), "{err}");
    assert_eq!(read_all(&wal, 1), acknowledged);

    // Closing and opening the WAL recovers it from disk.
    let _ = wal.close();
    let wal = SegmentManager::open(config.clone()).unwrap();
    assert_eq!(read_all(&wal, 1), acknowledged);
    assert_eq!(read_all(&wal, 3), neighbour);
    let next = wal.write(1, 1, &[payload(10)]).unwrap();
    assert_eq!(next, 10, "sequence 9 went to the failed write");
    acknowledged.push((next, payload(10)));
    assert_eq!(read_all(&wal, 1), acknowledged);
    assert_eq!(wal.write(3, 1, &[payload(102)]).unwrap(), 3);
    assert_eq!(wal.write(2, 1, &[b"elsewhere"]).unwrap(), 2);

    // And so does a restart.
    drop(wal);
    let wal = SegmentManager::open(config).unwrap();
    assert_eq!(read_all(&wal, 1), acknowledged);
    assert_eq!(wal.write(1, 1, &[b"more"]).unwrap(), 11);
}
