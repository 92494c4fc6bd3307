//! A real write error from the kernel inside the manager: `RLIMIT_FSIZE`
//! makes `pwrite` past the limit fail with `EFBIG` even inside a
//! preallocated segment. The limit is process-wide, so this file holds a
//! single test and runs as its own process.

#![allow(unsafe_code)]

use segwal_manager::{Error, ManagerConfig, SegmentManager};

fn set_file_size_limit(bytes: libc::rlim_t) {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: ignoring SIGXFSZ (whose default action kills the process)
    // touches no memory of ours.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    // SAFETY: changing this process's file size limit touches no memory of
    // ours; `limit` is a valid rlimit that outlives the call.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &limit) };
    assert_eq!(rc, 0);
}

/// Proves that a failed write reaches the caller, that the region then
/// refuses every write (fail-stop: nothing after the failure is ever
/// acknowledged) while reads keep returning what was acknowledged, and that
/// once the region is closed and recovered from disk it has lost nothing
/// acknowledged and does not reuse the failed write's sequence number.
#[test]
fn a_failed_write_stops_the_region_until_it_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let config = ManagerConfig {
        segment_size_bytes: 64 << 10,
        ..ManagerConfig::new(dir.path())
    };
    let wal = SegmentManager::open(config).unwrap();
    let payload = |i: u64| vec![i as u8; 1000];
    let mut acknowledged = Vec::new();
    for i in 0..8 {
        let seq = wal.write(1, 1, &[payload(i)]).unwrap();
        acknowledged.push((seq, payload(i)));
    }
    let read_all = |wal: &SegmentManager| {
        let mut out = Vec::new();
        let mut iter = wal.read(1, 1, 0, u64::MAX).unwrap();
        while iter
            .next_batch(100, |e| out.push((e.sequence, e.payload.to_vec())))
            .unwrap()
            > 0
        {}
        out
    };

    // The next append straddles the limit: part of it reaches the file.
    set_file_size_limit(9000);
    let err = wal.write(1, 1, &[payload(8)]).unwrap_err();
    assert!(matches!(err, Error::Segment { region_id: 1, .. }), "{err}");
    assert!(err.to_string().contains(".seg"), "names the file: {err}");
    set_file_size_limit(libc::RLIM_INFINITY);

    let err = wal.write(1, 2, &[payload(9)]).unwrap_err();
    assert!(matches!(err, Error::RegionFailed { region_id: 1 }), "{err}");
    assert_eq!(wal.sequence_num(1, 1).unwrap(), 8);
    assert_eq!(read_all(&wal), acknowledged);
    // Other regions are unaffected.
    assert_eq!(wal.write(2, 1, &[b"elsewhere"]).unwrap(), 1);

    // Closing fails (the segment cannot be synced) but still closes; the
    // next use recovers the region from disk.
    assert!(wal.close_region(1).is_err());
    assert_eq!(read_all(&wal), acknowledged);
    let next = wal.write(1, 1, &[payload(10)]).unwrap();
    assert_eq!(next, 10, "sequence 9 went to the failed write");
    acknowledged.push((next, payload(10)));
    assert_eq!(read_all(&wal), acknowledged);

    // And so does a restart.
    drop(wal);
    let wal = SegmentManager::open(ManagerConfig::new(dir.path())).unwrap();
    assert_eq!(read_all(&wal), acknowledged);
    assert_eq!(wal.write(1, 1, &[b"more"]).unwrap(), 11);
}
