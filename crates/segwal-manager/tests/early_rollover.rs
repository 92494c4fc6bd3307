//! The early rollover: the writes leave a reserved segment for a
//! zero-filled spare once it is ready, and a segment sealed with room left
//! gives back the blocks past its records, best effort.

use std::io;
use std::sync::Arc;

use segwal_format::SEGMENT_HEADER_LEN;
use segwal_manager::SegmentManager;
use segwal_segment::disk::{self, Hook, Op};
use segwal_segment::segment_file_name;

#[path = "support/counting.rs"]
mod counting;

use counting::{allocated, count_in, read_back, real_disk_dir, segment_id, sized};

/// Proves that on a real disk under `SyncMode::Always` the writes leave
/// the reserved first segment for the zero-filled second one as soon as
/// that is ready, long before the first is full (`early_rollovers`); that
/// the first then gives back the blocks past its records, its length
/// unchanged, and the statistics count only the disk it keeps; that a
/// close does the same for the active segment; and that every entry reads
/// back after a reopen, which counts the same disk.
#[test]
fn the_writes_leave_the_reserved_first_segment_once_a_zeroed_one_is_ready() {
    const BIG: u64 = 8 << 20;
    let Some(dir) = real_disk_dir() else {
        return;
    };
    let (counter, guard) = count_in(dir.path(), false);
    let config = sized(dir.path(), BIG);
    let payload = vec![0x7eu8; 4000];
    let mut written = 0;
    let wal = SegmentManager::open(config.clone()).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while wal.statistics().early_rollovers == 0 {
        assert!(std::time::Instant::now() < deadline, "{}", wal.statistics());
        wal.write(1, 1, &[&payload]).unwrap();
        written += 1;
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let stats = wal.statistics();
    assert_eq!(
        (
            stats.segments_created,
            stats.spares_used,
            stats.spares_hurried
        ),
        (2, 2, 0),
        "{stats}"
    );
    let first = dir.path().join(segment_file_name(1));
    assert_eq!(std::fs::metadata(&first).unwrap().len(), BIG);
    let kept = allocated(&first);
    assert!(kept < BIG / 4, "segment 1 keeps {kept} bytes");
    // Segment 1 counts what it kept, segment 2 its whole length.
    assert!(
        stats.disk_bytes >= BIG && stats.disk_bytes < BIG + BIG / 4,
        "{stats}"
    );
    for _ in 0..10 {
        wal.write(1, 1, &[&payload]).unwrap();
        written += 1;
    }
    wal.close().unwrap();
    let seen = std::mem::take(&mut *counter.seen.lock().unwrap());
    assert!(seen.reserved.contains(&1), "{seen:?}");
    assert_eq!(
        seen.zero_filled.get(&2),
        Some(&(BIG - SEGMENT_HEADER_LEN as u64)),
        "{seen:?}"
    );
    assert_eq!(seen.released.keys().copied().collect::<Vec<_>>(), [1, 2]);
    let second = dir.path().join(segment_file_name(2));
    assert!(allocated(&second) < BIG / 4, "{seen:?}");

    let wal = SegmentManager::open(config).unwrap();
    assert_eq!(read_back(&wal, &payload), written);
    // Both kept only what their records use, after a reopen too.
    let stats = wal.statistics();
    assert!(stats.disk_bytes < BIG / 2, "{stats}");
    wal.close().unwrap();
    drop(guard);
}

/// Fails every call to give blocks back, with `EIO`, counting them.
#[derive(Default)]
struct RefuseRelease {
    refused: std::sync::atomic::AtomicUsize,
}

impl Hook for RefuseRelease {
    fn run(&self, op: &Op<'_>, perform: &mut dyn FnMut() -> io::Result<()>) -> io::Result<()> {
        match op {
            Op::Deallocate { .. } => {
                self.refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(io::Error::from_raw_os_error(libc::EIO))
            }
            _ => perform(),
        }
    }
}

/// Proves that giving back the blocks past a sealed segment's records is
/// best effort: when the file system fails it, the close still succeeds,
/// the segment keeps its blocks (and the statistics count them), and
/// every entry reads back after a reopen.
#[test]
fn a_failure_to_give_blocks_back_loses_nothing() {
    const BIG: u64 = 4 << 20;
    let dir = tempfile::tempdir().unwrap();
    let hook = Arc::new(RefuseRelease::default());
    let _guard = disk::install(dir.path(), Arc::clone(&hook) as Arc<dyn Hook>);
    let config = sized(dir.path(), BIG);
    let payload = vec![0x42u8; 3000];
    let wal = SegmentManager::open(config.clone()).unwrap();
    for _ in 0..20 {
        wal.write(1, 1, &[&payload]).unwrap();
    }
    wal.close().unwrap();
    let refused = hook.refused.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        refused >= 1,
        "the close gives back the active segment's room"
    );
    let segments: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "seg"))
        .collect();
    for segment in &segments {
        assert!(allocated(segment) >= BIG - 4096, "{}", segment.display());
    }
    let wal = SegmentManager::open(config).unwrap();
    assert_eq!(read_back(&wal, &payload), 20);
    let kept: u64 = segments
        .iter()
        .map(|segment| allocated(segment).min(BIG))
        .sum();
    assert_eq!(wal.statistics().disk_bytes, kept);
    wal.close().unwrap();
}

/// Fails putting segment 2 in place (the rename of its spare file).
struct FailSecondSpare;

impl Hook for FailSecondSpare {
    fn run(&self, op: &Op<'_>, perform: &mut dyn FnMut() -> io::Result<()>) -> io::Result<()> {
        match op {
            Op::Rename { from, .. } if segment_id(from) == Some(2) => {
                Err(io::Error::from_raw_os_error(libc::EIO))
            }
            _ => perform(),
        }
    }
}

/// Proves that a zero-filled spare whose creation failed never makes the
/// writes leave the reserved first segment early: they stay in it, with
/// no segment created while they wait, and every entry reads back.
#[test]
fn a_failed_spare_is_no_reason_to_leave_a_segment_early() {
    const BIG: u64 = 8 << 20;
    let Some(dir) = real_disk_dir() else {
        return;
    };
    let _guard = disk::install(dir.path(), Arc::new(FailSecondSpare) as Arc<dyn Hook>);
    let config = sized(dir.path(), BIG);
    let payload = vec![0x24u8; 2000];
    let wal = SegmentManager::open(config.clone()).unwrap();
    // Far longer than segment 2's zeros take (8 MiB at 128 MiB/s).
    for _ in 0..100 {
        wal.write(1, 1, &[&payload]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let stats = wal.statistics();
    assert_eq!(
        (stats.segments_created, stats.early_rollovers),
        (1, 0),
        "{stats}"
    );
    wal.close().unwrap();
    let wal = SegmentManager::open(config).unwrap();
    assert_eq!(read_back(&wal, &payload), 100);
}
