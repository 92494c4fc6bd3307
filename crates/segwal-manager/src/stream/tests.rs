//! Unit tests of the write path: starving writers, failures.

use std::time::Duration;

use super::*;
use crate::meta::{META_FILE, read_meta_log};
use crate::{Error, ManagerConfig, RecoveryMode, SegmentManager};

/// Holds region 1's stream's writer lock while a writer on another
/// thread waits for it until it starves, then lets go as a writer does;
/// returns what that writer's call returned.
fn starve_one_writer(
    manager: &Arc<SegmentManager>,
    before_release: impl FnOnce(&Stream, &Region),
) -> Result<u64> {
    let (stream, region, ctx) = manager.stream_for_test(1);
    let held = stream.writer.lock();
    let writer = {
        let manager = Arc::clone(manager);
        std::thread::spawn(move || manager.write(1, 7, &[b"starved".as_slice()]))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while stream.starving.starving() == 0 {
        assert!(Instant::now() < deadline, "the writer never starved");
        std::thread::sleep(Duration::from_millis(1));
    }
    before_release(stream, &region);
    stream.release_writer(held, ctx);
    writer.join().unwrap()
}

/// Proves the end of good data after a failed sync is recorded in the
/// META log even when the stream has already been marked failed by
/// another report (a writer that found the segment poisoned first),
/// and that of two such ends the larger is kept.
#[test]
fn every_report_of_a_failed_sync_records_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let manager = SegmentManager::open(ManagerConfig::new(dir.path())).unwrap();
    manager.write(1, 7, &[b"entry".as_slice()]).unwrap();
    let (stream, _, ctx) = manager.stream_for_test(1);
    stream.record_failure(&stream.writer.lock(), ctx, None);
    assert!(stream.failed.load(Ordering::Acquire));
    let recorded = || {
        let meta = read_meta_log(&dir.path().join(META_FILE), RecoveryMode::Strict).unwrap();
        assert_eq!(meta.floors.get(&1), Some(&2), "the floor is recorded");
        meta.segment_ends.into_iter().collect::<Vec<_>>()
    };
    assert_eq!(recorded(), []);
    stream.record_failure(&stream.writer.lock(), ctx, Some((1, 100)));
    assert_eq!(recorded(), [(1, 100)]);
    stream.record_failure(&stream.writer.lock(), ctx, Some((1, 90)));
    assert_eq!(recorded(), [(1, 100)]);
    stream.record_failure(&stream.writer.lock(), ctx, Some((1, 120)));
    assert_eq!(recorded(), [(1, 120)]);
    let refused = manager.write(1, 7, &[b"refused".as_slice()]);
    assert!(matches!(refused, Err(Error::RegionFailed { region_id: 1 })));
}

/// Proves a writer kept from the writer lock has its batch appended,
/// numbered and made durable by the next holder of the lock, without
/// ever taking the lock itself: the test holds the lock throughout.
#[test]
fn a_starving_writer_is_appended_by_the_next_holder_of_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Arc::new(SegmentManager::open(ManagerConfig::new(dir.path())).unwrap());
    manager.write(1, 8, &[b"first".as_slice()]).unwrap();
    assert_eq!(starve_one_writer(&manager, |_, _| {}).unwrap(), 2);
    assert_eq!(manager.statistics().starved_writes, 1);
    let mut read = Vec::new();
    let mut iter = manager.read(1, 7, 0, u64::MAX).unwrap();
    while iter
        .next_batch(16, |e| read.push((e.sequence, e.payload.to_vec())))
        .unwrap()
        > 0
    {}
    assert_eq!(read, [(2, b"starved".to_vec())]);
    drop(iter);
    drop(manager);
    let reopened = SegmentManager::open(ManagerConfig::new(dir.path())).unwrap();
    assert_eq!(reopened.sequence_num(1, 7).unwrap(), 2);
}

/// Proves a starving writer whose batch the holder of the lock cannot
/// append gets the error, and no sequence number.
#[test]
fn a_starving_writer_gets_the_error_of_its_append() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Arc::new(SegmentManager::open(ManagerConfig::new(dir.path())).unwrap());
    let refused = starve_one_writer(&manager, |stream, _| {
        // As a failed write or sync leaves it: refusing every batch.
        stream.failed.store(true, Ordering::Release);
    });
    assert!(
        matches!(refused, Err(Error::RegionFailed { region_id: 1 })),
        "{refused:?}"
    );
    assert_eq!(manager.statistics().starved_writes, 0);
    assert_eq!(manager.stream_for_test(2).0.next_sequence(1), 1);
}

/// Proves that batches handed over by starving writers, across
/// rollovers and over several regions of one stream, lose nothing and
/// keep every table's entries in order: writers race a thread that
/// keeps taking the lock for 2 ms, so some of them starve, and 16 KiB
/// segments roll over every few batches.
#[test]
fn handed_over_batches_keep_every_table_whole_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let config = ManagerConfig {
        segment_size_bytes: 16 * 1024,
        sync_mode: SyncMode::Never,
        ..ManagerConfig::new(dir.path())
    };
    let manager = Arc::new(SegmentManager::open(config).unwrap());
    let (stream, _, ctx) = manager.stream_for_test(1);
    let done = AtomicBool::new(false);
    let holding = AtomicBool::new(false);
    let batches_per_writer = 200u64;
    // Writer w writes table w of region w % 2.
    let written: Vec<Vec<u64>> = std::thread::scope(|scope| {
        scope.spawn(|| {
            // The first time, the lock is held until a writer starves,
            // however slowly the machine runs the writers.
            let held = stream.writer.lock();
            holding.store(true, Ordering::Release);
            let deadline = Instant::now() + Duration::from_secs(30);
            while stream.starving.starving() == 0 {
                assert!(Instant::now() < deadline, "no writer starved");
                std::thread::sleep(Duration::from_millis(1));
            }
            stream.release_writer(held, ctx);
            while !done.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(1));
                let held = stream.writer.lock();
                std::thread::sleep(Duration::from_millis(2));
                stream.release_writer(held, ctx);
            }
        });
        while !holding.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        let writers: Vec<_> = (0..4u64)
            .map(|table_id| {
                let manager = &manager;
                scope.spawn(move || {
                    (0..batches_per_writer)
                        .map(|i| {
                            let payload = format!("{table_id}:{i}:").repeat(100);
                            let region_id = table_id % 2;
                            manager
                                .write(region_id, table_id, &[payload.as_bytes()])
                                .unwrap()
                        })
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        let written = writers.into_iter().map(|w| w.join().unwrap()).collect();
        done.store(true, Ordering::Release);
        written
    });
    assert!(manager.statistics().starved_writes > 0);
    for region_id in 0..2u64 {
        let mut all: Vec<u64> = written
            .iter()
            .enumerate()
            .filter(|(table_id, _)| *table_id as u64 % 2 == region_id)
            .flat_map(|(_, s)| s.iter().copied())
            .collect();
        all.sort_unstable();
        assert_eq!(all, (1..=2 * batches_per_writer).collect::<Vec<u64>>());
    }
    drop(manager);
    let reopened = SegmentManager::open(ManagerConfig::new(dir.path())).unwrap();
    for (table_id, sequences) in (0..4u64).zip(&written) {
        let mut read = Vec::new();
        let mut iter = reopened.read(table_id % 2, table_id, 0, u64::MAX).unwrap();
        while iter
            .next_batch(64, |e| read.push((e.sequence, e.payload.to_vec())))
            .unwrap()
            > 0
        {}
        let expected: Vec<(u64, Vec<u8>)> = sequences
            .iter()
            .enumerate()
            .map(|(i, &seq)| (seq, format!("{table_id}:{i}:").repeat(100).into_bytes()))
            .collect();
        assert_eq!(read, expected, "table {table_id}");
    }
}
