//! How new segments' blocks are set aside: zero-filled under
//! `SyncMode::Always` while segments fill slowly (as here, where writes
//! are paced), reserved with `fallocate` under the other modes,
//! and zero-filled after all where the file system cannot reserve. The
//! fill-rate rule itself is unit-tested in `config.rs`.

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use segwal_manager::{ManagerConfig, Preallocation, SegmentManager, SyncMode};
use segwal_segment::disk::{self, Hook, Op};

const SEGMENT_SIZE: u64 = 64 << 10;

/// What the disk saw of segment files (`.seg` and `.seg.spare`).
#[derive(Debug, Default)]
struct Seen {
    /// Bytes written to segment files.
    bytes_written: u64,
    /// Reservations performed (not refused).
    allocations: u64,
    /// Reservations refused as unsupported.
    refused: u64,
}

/// Performs every call, counting those on segment files; refuses
/// reservations as unsupported when `refuse` is set.
struct Counter {
    seen: Mutex<Seen>,
    refuse: bool,
}

impl Hook for Counter {
    fn run(&self, op: &Op<'_>, perform: &mut dyn FnMut() -> io::Result<()>) -> io::Result<()> {
        let segment_file = op.path().to_string_lossy().contains(".seg");
        let mut seen = self.seen.lock().unwrap();
        match *op {
            Op::Allocate { .. } if self.refuse => {
                seen.refused += 1;
                return Err(io::ErrorKind::Unsupported.into());
            }
            Op::Allocate { .. } => seen.allocations += 1,
            Op::Write { data, .. } | Op::WriteSynced { data, .. } if segment_file => {
                seen.bytes_written += data.len() as u64;
            }
            _ => {}
        }
        drop(seen);
        perform()
    }
}

/// Writes 100 KiB of payload (two segments' worth, so one rollover at
/// least) into one table with `sync_mode` and `preallocation`, reads it back,
/// and returns what the disk saw.
fn write_two_segments(
    dir: &Path,
    sync_mode: SyncMode,
    preallocation: Option<Preallocation>,
    refuse: bool,
) -> Seen {
    let counter = Arc::new(Counter {
        seen: Mutex::default(),
        refuse,
    });
    let guard = disk::install(dir, Arc::clone(&counter) as Arc<dyn Hook>);
    let config = ManagerConfig {
        segment_size_bytes: SEGMENT_SIZE,
        sync_mode,
        preallocation,
        ..ManagerConfig::new(dir)
    };
    let payload = vec![0x5au8; 1000];
    {
        let wal = SegmentManager::open(config.clone()).unwrap();
        for _ in 0..100 {
            wal.write(1, 1, &[&payload]).unwrap();
            // Slow enough (at most 5 MB/s) that `SyncMode::Always` keeps
            // zero-filling even where a sync costs nothing (tmpfs).
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        assert!(wal.statistics().segments_created >= 2);
        wal.close().unwrap();
    }
    let wal = SegmentManager::open(config).unwrap();
    let mut iter = wal.read(1, 1, 0, u64::MAX).unwrap();
    let mut entries = 0;
    while iter
        .next_batch(64, |entry| {
            assert_eq!(entry.payload, payload.as_slice());
            entries += 1;
        })
        .unwrap()
        > 0
    {}
    assert_eq!(entries, 100);
    wal.close().unwrap();
    drop(guard);
    Arc::into_inner(counter).unwrap().seen.into_inner().unwrap()
}

/// Proves that under `SyncMode::Always` every new segment is written whole
/// (zero-filled, so a synced append has no metadata to commit), while under
/// `SyncMode::Never` and `SyncMode::Interval` segments are reserved and only
/// the records are written: the data is not written twice. On a file
/// system in memory (tmpfs: `/dev/shm`, and the temporary dir if it is
/// one), segments are reserved under `Always` too.
#[test]
fn the_sync_mode_and_the_medium_pick_how_segments_are_preallocated() {
    let payload_bytes = 100 * 1000;
    let temp = tempfile::tempdir().unwrap();
    let shm = Path::new("/dev/shm");
    let in_memory = disk::is_memory_backed(shm).then(|| tempfile::tempdir_in(shm).unwrap());
    for dir in [Some(&temp), in_memory.as_ref()].into_iter().flatten() {
        let memory_backed = disk::is_memory_backed(dir.path());
        let always = write_two_segments(&dir.path().join("always"), SyncMode::Always, None, false);
        if memory_backed {
            assert!(always.allocations >= 2, "{always:?}");
            assert!(
                always.bytes_written < payload_bytes + payload_bytes / 10,
                "{always:?}"
            );
        } else {
            assert_eq!(always.allocations, 0);
            assert!(
                always.bytes_written >= 2 * SEGMENT_SIZE + payload_bytes,
                "{always:?}"
            );
        }
        for mode in [
            SyncMode::Never,
            SyncMode::Interval(std::time::Duration::from_millis(5)),
        ] {
            let reserved = write_two_segments(&dir.path().join("other"), mode, None, false);
            assert!(reserved.allocations >= 2, "{mode:?}: {reserved:?}");
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

/// Proves that an explicit setting wins over the sync mode's default, both
/// ways.
#[test]
fn an_explicit_preallocation_overrides_the_sync_mode() {
    let reserved = write_two_segments(
        tempfile::tempdir().unwrap().path(),
        SyncMode::Always,
        Some(Preallocation::Reserved),
        false,
    );
    assert!(reserved.allocations >= 2, "{reserved:?}");
    let zeroed = write_two_segments(
        tempfile::tempdir().unwrap().path(),
        SyncMode::Never,
        Some(Preallocation::Zeroed),
        false,
    );
    assert_eq!(zeroed.allocations, 0);
    assert!(zeroed.bytes_written >= 2 * SEGMENT_SIZE, "{zeroed:?}");
}

/// Proves that where the file system cannot reserve blocks (`fallocate`
/// unsupported), segments are zero-filled instead and the WAL works as
/// usual, rather than failing or leaving sparse files behind.
#[test]
fn segments_are_zero_filled_where_blocks_cannot_be_reserved() {
    let seen = write_two_segments(
        tempfile::tempdir().unwrap().path(),
        SyncMode::Never,
        None,
        true,
    );
    assert!(seen.refused >= 2, "{seen:?}");
    assert_eq!(seen.allocations, 0);
    assert!(seen.bytes_written >= 2 * SEGMENT_SIZE, "{seen:?}");
}
