//! Disk held by cold tables: the report of which tables pin the oldest
//! segments, and the rewrite that copies their live records forward so
//! those segments can go, including under power loss at every point of a
//! rewrite.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use segwal_manager::{EntryIter, ManagerConfig, SegmentManager, SyncMode, TablePin};
use segwal_segment::powerloss::{Fate, Recorder};

const SEGMENT: u64 = 16 * 1024;

fn config(dir: &Path) -> ManagerConfig {
    ManagerConfig {
        segment_size_bytes: SEGMENT,
        max_dead_bytes: u64::MAX,
        ..ManagerConfig::new(dir)
    }
}

fn drain(mut iter: EntryIter) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    while iter
        .next_batch(64, |e| out.push((e.sequence, e.payload.to_vec())))
        .unwrap()
        > 0
    {}
    out
}

fn segment_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".seg")
        })
        .count()
}

fn payload(region: u64, table: u64, i: u64) -> Vec<u8> {
    format!("{region}/{table}/{i}:").repeat(60).into_bytes()
}

/// Writes a cold table (region 1, table 1: a few entries, never deleted)
/// among hot ones (regions 2..=5, table 7: many entries, deleted as they
/// go), so the cold table's entries pin the oldest segments. Returns what
/// the cold table holds.
fn cold_among_hot(wal: &SegmentManager) -> Vec<(u64, Vec<u8>)> {
    let mut cold = Vec::new();
    for round in 0..40u64 {
        if round % 10 == 0 {
            let seq = wal.write(1, 1, &[payload(1, 1, round)]).unwrap();
            cold.push((seq, payload(1, 1, round)));
        }
        for region in 2..=5u64 {
            let last = wal
                .write(
                    region,
                    7,
                    &[payload(region, 7, round), payload(region, 7, round + 1)],
                )
                .unwrap();
            wal.mark_delete_entries_up_to(region, 7, last).unwrap();
        }
    }
    cold
}

/// Proves the WAL names the tables that pin its oldest segments, oldest
/// first, with the bytes each keeps alive, and lists them in its
/// statistics: a cold table among deleted hot ones keeps every segment
/// from its first entry on.
#[test]
fn the_tables_pinning_the_oldest_segments_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let wal = SegmentManager::open(config(dir.path())).unwrap();
    let cold = cold_among_hot(&wal);
    let pins: Vec<TablePin> = wal.oldest_pins(10);
    assert_eq!(pins.len(), 1, "{pins:?}");
    let pin = pins[0];
    assert_eq!(
        (pin.region_id, pin.table_id, pin.oldest_segment_id),
        (1, 1, 1)
    );
    assert!(pin.live_bytes >= (cold.len() as u64 - 1) * cold[0].1.len() as u64);
    assert!(
        segment_count(dir.path()) > 4,
        "the cold table pins segments"
    );
    let statistics = wal.statistics();
    assert_eq!(statistics.oldest_pins, pins);
    assert!(
        statistics
            .to_string()
            .contains("segment 1 and later pinned by region 1 table 1"),
        "{statistics}"
    );
    wal.mark_delete_entries_up_to(1, 1, u64::MAX).unwrap();
    assert!(wal.oldest_pins(10).is_empty());
}

/// Proves a rewrite copies a cold table's live entries forward and removes
/// the segments they pinned: the table reads back exactly, before and
/// after a reopen, its numbers are unchanged, and the disk held shrinks to
/// a couple of segments.
#[test]
fn a_rewrite_frees_the_segments_a_cold_table_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let wal = SegmentManager::open(config(dir.path())).unwrap();
    let cold = cold_among_hot(&wal);
    let before = segment_count(dir.path());
    let rewritten = wal.rewrite_cold_segments(0).unwrap();
    assert!(rewritten >= 1);
    let after = segment_count(dir.path());
    assert!(after < before && after <= 3, "{before} -> {after} segments");
    assert_eq!(drain(wal.read(1, 1, 0, u64::MAX).unwrap()), cold);
    let statistics = wal.statistics();
    assert!(statistics.rewritten_records >= cold.len() as u64 - 1);
    assert_eq!(statistics.segments_rewritten, rewritten);
    let next = wal.write(1, 1, &[b"after".as_slice()]).unwrap();
    assert_eq!(next, cold.last().unwrap().0 + 1);
    wal.close().unwrap();

    let wal = SegmentManager::open(config(dir.path())).unwrap();
    let mut expected = cold.clone();
    expected.push((next, b"after".to_vec()));
    assert_eq!(drain(wal.read(1, 1, 0, u64::MAX).unwrap()), expected);
    for region in 2..=5u64 {
        assert!(drain(wal.scan(region).unwrap()).is_empty());
        assert_eq!(wal.sequence_num(region, 7).unwrap(), 80);
    }
}

/// Proves the background thread enforces `max_dead_bytes` by itself: with
/// a bound of two segments, the data dir of a cold table among deleted hot
/// ones comes back to a few segments without any call but the deletes.
#[test]
fn the_background_rewrite_keeps_dead_bytes_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let config = ManagerConfig {
        max_dead_bytes: 2 * SEGMENT,
        ..config(dir.path())
    };
    let wal = SegmentManager::open(config).unwrap();
    let cold = cold_among_hot(&wal);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let statistics = wal.statistics();
        let sealed = statistics.disk_bytes.saturating_sub(2 * SEGMENT);
        if statistics.segments_rewritten > 0 && sealed <= statistics.live_bytes + 2 * SEGMENT {
            break;
        }
        assert!(Instant::now() < deadline, "no rewrite: {statistics}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(drain(wal.read(1, 1, 0, u64::MAX).unwrap()), cold);
}

/// Proves a rewrite of a closed region's records keeps them: the region
/// reopens (from the segments now holding its records) with every entry.
#[test]
fn a_rewrite_moves_a_closed_regions_records_too() {
    let dir = tempfile::tempdir().unwrap();
    let wal = SegmentManager::open(config(dir.path())).unwrap();
    let cold = cold_among_hot(&wal);
    wal.close_region(1).unwrap();
    assert!(wal.rewrite_cold_segments(0).unwrap() >= 1);
    assert_eq!(drain(wal.read(1, 1, 0, u64::MAX).unwrap()), cold);
    assert!(segment_count(dir.path()) <= 3);
}

/// Proves a rewrite is atomic under power loss: at every point of a
/// recorded rewrite, crash images with the unsynced writes kept, dropped
/// or torn, and unsynced directory changes partly lost, recover to a log
/// where the cold table holds exactly its entries (never one twice, never
/// one missing), no deleted entry of a hot table comes back, and numbers
/// continue where they were.
#[test]
fn a_rewrite_survives_power_loss_at_every_point() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    std::fs::create_dir(&root).unwrap();
    let config = ManagerConfig {
        sync_mode: SyncMode::Always,
        ..config(&root)
    };
    let cold = {
        let wal = SegmentManager::open(config.clone()).unwrap();
        let cold = cold_among_hot(&wal);
        wal.close().unwrap();
        cold
    };
    let (recorder, guard) = Recorder::start(&root).unwrap();
    {
        let wal = SegmentManager::open(config.clone()).unwrap();
        assert!(wal.rewrite_cold_segments(0).unwrap() >= 1);
        wal.close().unwrap();
    }
    drop(guard);
    let mut replay = recorder.replay();
    let fates = [
        Fate::KeepAll,
        Fate::DropAll,
        Fate::Random(7),
        Fate::Random(11),
    ];
    let mut images = 0;
    for position in 0..=replay.len() {
        replay.advance_to(position);
        for fate in fates {
            let image = dir.path().join(format!("image-{position}-{fate:?}"));
            replay.write_image(fate, &image).unwrap();
            let wal = SegmentManager::open(ManagerConfig {
                dir: image.clone(),
                ..config.clone()
            })
            .unwrap_or_else(|e| panic!("open after {position}:\n{}\n{e}", replay.recent(8)));
            let read = drain(wal.read(1, 1, 0, u64::MAX).unwrap());
            assert_eq!(
                read,
                cold,
                "cold table after {position}:\n{}",
                replay.recent(8)
            );
            let mut hot = BTreeMap::new();
            for region in 2..=5u64 {
                hot.insert(region, drain(wal.scan(region).unwrap()).len());
                assert_eq!(wal.write(region, 7, &[b"x".as_slice()]).unwrap(), 81);
            }
            assert!(hot.values().all(|&n| n == 0), "deletes undone: {hot:?}");
            wal.close().unwrap();
            std::fs::remove_dir_all(&image).unwrap();
            images += 1;
        }
    }
    assert!(images > 20, "{images} images");
}

/// Per region, the entries a writer did not delete.
type Kept = BTreeMap<u64, Vec<(u64, Vec<u8>)>>;

/// Proves rewrites race safely with writers, deletes and region closes:
/// while 4 threads write and delete in 8 regions and another closes them
/// now and then, rewrites run again and again; afterwards, and after a
/// reopen, every region reads back exactly the entries it did not delete,
/// and the cold table all of its own.
#[test]
fn rewrites_race_writers_deletes_and_closes() {
    let dir = tempfile::tempdir().unwrap();
    let wal = SegmentManager::open(ManagerConfig {
        sync_mode: SyncMode::Never,
        ..config(dir.path())
    })
    .unwrap();
    let cold: Vec<(u64, Vec<u8>)> = (0..5u64)
        .map(|i| {
            (
                wal.write(1, 1, &[payload(1, 1, i)]).unwrap(),
                payload(1, 1, i),
            )
        })
        .collect();
    let done = std::sync::atomic::AtomicBool::new(false);
    let kept: Vec<Kept> = std::thread::scope(|scope| {
        let rewriter = scope.spawn(|| {
            let mut passes = 0;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                wal.rewrite_cold_segments(0).unwrap();
                passes += 1;
            }
            passes
        });
        let closer = scope.spawn(|| {
            let mut round = 0u64;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                wal.close_region(2 + round % 8).unwrap();
                round += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let writers: Vec<_> = (0..4u64)
            .map(|w| {
                let wal = &wal;
                scope.spawn(move || {
                    // Writer w owns regions 2 + w and 6 + w.
                    let mut kept = Kept::new();
                    for i in 0..300u64 {
                        let region = 2 + w + 4 * (i % 2);
                        let entry = payload(region, 7, i);
                        let seq = wal.write(region, 7, std::slice::from_ref(&entry)).unwrap();
                        let list = kept.entry(region).or_default();
                        list.push((seq, entry));
                        if i % 10 == 9 {
                            // Delete all but the newest two of the region.
                            let upto = list[list.len() - 3].0;
                            wal.mark_delete_entries_up_to(region, 7, upto).unwrap();
                            list.retain(|(s, _)| *s > upto);
                        }
                    }
                    kept
                })
            })
            .collect();
        let kept: Vec<_> = writers.into_iter().map(|w| w.join()).collect();
        // Set before any panic is raised, so the other threads end.
        done.store(true, std::sync::atomic::Ordering::Release);
        let kept = kept.into_iter().map(|k| k.unwrap()).collect();
        assert!(rewriter.join().unwrap() > 0);
        closer.join().unwrap();
        kept
    });
    let check = |wal: &SegmentManager| {
        assert_eq!(drain(wal.read(1, 1, 0, u64::MAX).unwrap()), cold);
        for regions in &kept {
            for (&region, entries) in regions {
                assert_eq!(
                    &drain(wal.read(region, 7, 0, u64::MAX).unwrap()),
                    entries,
                    "region {region}"
                );
            }
        }
    };
    check(&wal);
    assert!(wal.statistics().segments_rewritten > 0);
    wal.close().unwrap();
    let wal = SegmentManager::open(config(dir.path())).unwrap();
    check(&wal);
}
