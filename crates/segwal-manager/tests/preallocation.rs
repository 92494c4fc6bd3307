//! How new segments' blocks are set aside: the first segment after an
//! open is reserved with `fallocate` (nearly free, so the first write does
//! not wait for zeros), and later ones are zero-filled under
//! `SyncMode::Always` unless segments are known to fill fast (here writes
//! are paced), reserved under the other modes and in memory, and
//! zero-filled after all where the file system cannot reserve. The
//! fill-rate rule itself is unit-tested in `config.rs`; leaving a reserved
//! segment early for a zero-filled one is tested in `early_rollover.rs`.

use std::path::Path;
use std::sync::Arc;

use segwal_format::SEGMENT_HEADER_LEN;
use segwal_manager::{ManagerConfig, Preallocation, SegmentManager, SyncMode};
use segwal_segment::disk;

#[path = "support/counting.rs"]
mod counting;

use counting::{Seen, count_in, read_back, real_disk_dir, sized};

const SEGMENT_SIZE: u64 = 64 << 10;

/// The zeros a zero-filled segment gets: everything past its header.
const ZEROS: u64 = SEGMENT_SIZE - SEGMENT_HEADER_LEN as u64;

/// Writes 200 KiB of payload (three segments' worth, so two rollovers at
/// least) into one table with `sync_mode` and `preallocation`, closes, and
/// reads it back after a reopen; returns what the disk saw while the WAL
/// was open for writing, and while it was open again for reading.
fn write_three_segments(
    dir: &Path,
    sync_mode: SyncMode,
    preallocation: Option<Preallocation>,
    refuse: bool,
) -> (Seen, Seen) {
    let (counter, guard) = count_in(dir, refuse);
    let config = ManagerConfig {
        segment_size_bytes: SEGMENT_SIZE,
        sync_mode,
        preallocation,
        ..ManagerConfig::new(dir)
    };
    let payload = vec![0x5au8; 1000];
    {
        let wal = SegmentManager::open(config.clone()).unwrap();
        for _ in 0..200 {
            wal.write(1, 1, &[&payload]).unwrap();
            // Slow enough (at most 5 MB/s) that `SyncMode::Always` keeps
            // zero-filling even where a sync costs nothing (tmpfs).
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        assert!(wal.statistics().segments_created >= 3);
        wal.close().unwrap();
    }
    let writing = std::mem::take(&mut *counter.seen.lock().unwrap());
    let wal = SegmentManager::open(config).unwrap();
    assert_eq!(read_back(&wal, &payload), 200);
    wal.close().unwrap();
    drop(guard);
    let reading = Arc::into_inner(counter).unwrap().seen.into_inner().unwrap();
    (writing, reading)
}

/// Proves that the first segment after each open is reserved (wanted at
/// once, it must not wait for zeros), and that later ones follow the sync
/// mode: under `SyncMode::Always`, filled slowly, every later segment is
/// written whole (zero-filled, so a synced append has no
/// metadata to commit), while under `SyncMode::Never` and
/// `SyncMode::Interval` every segment is reserved and only the records are
/// written: the data is not written twice. On a file system in memory
/// (tmpfs: `/dev/shm`, and the temporary dir if it is one), segments are
/// reserved under `Always` too.
#[test]
fn the_sync_mode_and_the_medium_pick_how_segments_are_preallocated() {
    let payload_bytes = 200 * 1000;
    let temp = tempfile::tempdir().unwrap();
    let shm = Path::new("/dev/shm");
    let in_memory = disk::is_memory_backed(shm).then(|| tempfile::tempdir_in(shm).unwrap());
    for dir in [Some(&temp), in_memory.as_ref()].into_iter().flatten() {
        let memory_backed = disk::is_memory_backed(dir.path());
        let (always, reopened) =
            write_three_segments(&dir.path().join("always"), SyncMode::Always, None, false);
        assert!(always.created.len() >= 3, "{always:?}");
        let first = always.created[0];
        assert!(always.reserved.contains(&first), "{always:?}");
        assert!(!always.zero_filled.contains_key(&first), "{always:?}");
        // The reopen prepared a first segment too (never used: no write).
        assert_eq!(reopened.created.len(), 1, "{reopened:?}");
        assert_eq!(reopened.not_reserved(), [], "{reopened:?}");
        assert!(reopened.zero_filled.is_empty(), "{reopened:?}");
        if memory_backed {
            assert_eq!(always.not_reserved(), [], "{always:?}");
            assert!(always.zero_filled.is_empty(), "{always:?}");
            assert!(
                always.bytes_written < payload_bytes + payload_bytes / 10,
                "{always:?}"
            );
        } else {
            let later = &always.kept()[1..];
            assert!(!later.is_empty(), "{always:?}");
            for id in later {
                assert!(!always.reserved.contains(id), "{always:?}");
                assert_eq!(always.zero_filled.get(id), Some(&ZEROS), "{always:?}");
            }
            assert!(
                always.bytes_written >= later.len() as u64 * ZEROS + payload_bytes,
                "{always:?}"
            );
        }
        for mode in [
            SyncMode::Never,
            SyncMode::Interval(std::time::Duration::from_millis(5)),
        ] {
            let (reserved, reopened) =
                write_three_segments(&dir.path().join("other"), mode, None, false);
            assert!(reserved.created.len() >= 2, "{mode:?}: {reserved:?}");
            for seen in [&reserved, &reopened] {
                assert_eq!(seen.not_reserved(), [], "{mode:?}: {seen:?}");
                assert!(seen.zero_filled.is_empty(), "{mode:?}: {seen:?}");
            }
            // Records (payload plus framing) and headers, nothing more.
            assert!(
                reserved.bytes_written < payload_bytes + payload_bytes / 10,
                "{mode:?}: {reserved:?}"
            );
            std::fs::remove_dir_all(dir.path().join("other")).unwrap();
        }
    }
    if in_memory.is_none() {
        eprintln!("no tmpfs at /dev/shm: the in-memory case was not tried here");
    }
}

/// Proves that on a real disk under `SyncMode::Always` the first segment
/// is prepared at open, before any write, and reserved, so that the first
/// write finds it ready; that the second, prepared while the first fills
/// at a rate not known yet, is zero-filled (a rollover would hurry it
/// rather than wait); and that the third, prepared once the first has
/// filled slowly, is zero-filled too.
#[test]
fn the_first_segment_is_reserved_and_the_next_ones_zero_filled() {
    let Some(dir) = real_disk_dir() else {
        return;
    };
    let (counter, _guard) = count_in(dir.path(), false);
    let wal = SegmentManager::open(sized(dir.path(), SEGMENT_SIZE)).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !counter.seen.lock().unwrap().reserved.contains(&1) {
        assert!(
            std::time::Instant::now() < deadline,
            "no segment was prepared at open"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(wal.statistics().segments_created, 0, "no write yet");
    let payload = vec![0xa5u8; 1000];
    wal.write(1, 1, &[&payload]).unwrap();
    let stats = wal.statistics();
    assert_eq!(
        (stats.segments_created, stats.spares_used),
        (1, 1),
        "{stats}"
    );
    let mut n = 1;
    while wal.statistics().segments_created < 3 {
        wal.write(1 + n % 3, 1, &[&payload]).unwrap();
        n += 1;
        // Paced, so that the fill rate stays far below the rate at which
        // zero-filling stops.
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    assert_eq!(wal.statistics().spares_used, 3, "{}", wal.statistics());
    wal.close().unwrap();
    let seen = counter.seen.lock().unwrap();
    assert_eq!(seen.created[..3], [1, 2, 3], "{seen:?}");
    assert!(seen.reserved.contains(&1), "{seen:?}");
    assert_eq!(seen.zero_filled.get(&1), None, "{seen:?}");
    for id in [2, 3] {
        assert!(!seen.reserved.contains(&id), "{seen:?}");
        assert_eq!(seen.zero_filled.get(&id), Some(&ZEROS), "{seen:?}");
    }
}

/// Proves that an explicit setting wins over the sync mode's default, both
/// ways, for the first segment after an open too.
#[test]
fn an_explicit_preallocation_overrides_the_sync_mode() {
    let (reserved, reopened) = write_three_segments(
        tempfile::tempdir().unwrap().path(),
        SyncMode::Always,
        Some(Preallocation::Reserved),
        false,
    );
    assert!(reserved.created.len() >= 2, "{reserved:?}");
    for seen in [&reserved, &reopened] {
        assert_eq!(seen.not_reserved(), [], "{seen:?}");
        assert!(seen.zero_filled.is_empty(), "{seen:?}");
    }
    let (zeroed, reopened) = write_three_segments(
        tempfile::tempdir().unwrap().path(),
        SyncMode::Never,
        Some(Preallocation::Zeroed),
        false,
    );
    assert!(zeroed.kept().len() >= 2, "{zeroed:?}");
    for id in zeroed.kept() {
        assert!(!zeroed.reserved.contains(&id), "{zeroed:?}");
        assert_eq!(zeroed.zero_filled.get(&id), Some(&ZEROS), "{zeroed:?}");
    }
    // The reopen only read: its one segment, prepared at open, was removed
    // unused at close. It was zero-filled as set, and not reserved unless
    // the close came before its zeros were done.
    assert_eq!(reopened.created.len(), 1, "{reopened:?}");
    assert_eq!(reopened.kept(), [], "{reopened:?}");
    let id = reopened.created[0];
    assert!(
        reopened.zero_filled.get(&id) == Some(&ZEROS) || reopened.reserved.contains(&id),
        "{reopened:?}"
    );
    assert!(zeroed.bytes_written >= 2 * SEGMENT_SIZE, "{zeroed:?}");
}

/// Proves that where the file system cannot reserve blocks (`fallocate`
/// unsupported), segments are zero-filled instead, the first one after an
/// open too, and the WAL works as usual, rather than failing or leaving
/// sparse files behind.
#[test]
fn segments_are_zero_filled_where_blocks_cannot_be_reserved() {
    let (seen, reopened) = write_three_segments(
        tempfile::tempdir().unwrap().path(),
        SyncMode::Never,
        None,
        true,
    );
    assert!(seen.created.len() >= 2, "{seen:?}");
    for seen in [&seen, &reopened] {
        assert_eq!(seen.refused, seen.created.len() as u64, "{seen:?}");
        assert!(seen.reserved.is_empty(), "{seen:?}");
        for id in &seen.created {
            assert_eq!(seen.zero_filled.get(id), Some(&ZEROS), "{seen:?}");
        }
    }
    assert!(seen.bytes_written >= 2 * SEGMENT_SIZE, "{seen:?}");
}

/// Proves that on a real disk under `SyncMode::Always` a rollover that
/// finds its spare's zeros unfinished does not wait for them: the zeros of
/// segment 3 are spread over half the time segment 1 was expected to take
/// to fill at the pace it was written (over a second), segment 2 then
/// fills as fast as the disk syncs, and the rollover to segment 3 hurries
/// it. The rest of its blocks are
/// reserved instead, `spares_hurried` counts it, and every entry reads
/// back after a reopen.
#[test]
fn a_rollover_hurries_a_spare_whose_zeros_are_unfinished() {
    const BIG: u64 = 4 << 20;
    let Some(dir) = real_disk_dir() else {
        return;
    };
    let (counter, guard) = count_in(dir.path(), false);
    let config = sized(dir.path(), BIG);
    let payload = vec![0x3cu8; 64 << 10];
    let mut written = 0;
    {
        let wal = SegmentManager::open(config.clone()).unwrap();
        let mut write = || {
            wal.write(1, 1, &[&payload]).unwrap();
            written += 1;
        };
        // Segment 1 (left early for segment 2 once its zeros are written),
        // written slowly.
        while wal.statistics().segments_created < 2 {
            write();
            std::thread::sleep(std::time::Duration::from_millis(45));
        }
        while wal.statistics().segments_created < 3 {
            write();
        }
        let stats = wal.statistics();
        assert!(stats.spares_hurried >= 1, "{stats}");
        wal.close().unwrap();
    }
    let seen = std::mem::take(&mut *counter.seen.lock().unwrap());
    assert_eq!(seen.created[..3], [1, 2, 3], "{seen:?}");
    assert!(seen.reserved.contains(&3), "{seen:?}");
    let zeroed = seen.zero_filled.get(&3).copied().unwrap_or(0);
    assert!(zeroed < BIG - SEGMENT_HEADER_LEN as u64, "{seen:?}");

    let wal = SegmentManager::open(config).unwrap();
    assert_eq!(read_back(&wal, &payload), written);
    drop(guard);
}
