//! How new segments' blocks are set aside: the first segment after an
//! open is reserved with `fallocate` (nearly free, so the first write does
//! not wait for zeros), and later ones are zero-filled under
//! `SyncMode::Always` unless segments are known to fill fast (here writes
//! are paced), reserved under the other modes and in memory, and
//! zero-filled after all where the file system cannot reserve; the writes
//! leave a reserved first segment for a zero-filled spare once it is
//! ready. The fill-rate rule itself is unit-tested in `config.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use segwal_format::SEGMENT_HEADER_LEN;
use segwal_manager::{ManagerConfig, Preallocation, SegmentManager, SyncMode};
use segwal_segment::disk::{self, Hook, Op};
use segwal_segment::segment_file_name;

const SEGMENT_SIZE: u64 = 64 << 10;

/// The zeros a zero-filled segment gets: everything past its header.
const ZEROS: u64 = SEGMENT_SIZE - SEGMENT_HEADER_LEN as u64;

/// What the disk saw of segment files (`.seg` and `.seg.spare`) while one
/// WAL was open.
#[derive(Debug, Default)]
struct Seen {
    /// Segment ids in the order their files were created.
    created: Vec<u64>,
    /// Segments whose blocks were reserved (the reservation performed).
    reserved: BTreeSet<u64>,
    /// Per segment, bytes written past the header while it was being
    /// prepared (under its `.seg.spare` name): its zero-fill.
    zero_filled: BTreeMap<u64, u64>,
    /// Bytes written to segment files.
    bytes_written: u64,
    /// Reservations refused as unsupported.
    refused: u64,
    /// Segments removed: here, only the spare a close finds unused.
    removed: BTreeSet<u64>,
    /// Per segment, where the blocks it gave back start.
    released: BTreeMap<u64, u64>,
}

impl Seen {
    /// Segments created and not reserved.
    fn not_reserved(&self) -> Vec<u64> {
        self.created
            .iter()
            .copied()
            .filter(|id| !self.reserved.contains(id))
            .collect()
    }

    /// Segments created and still there: those that were written, not the
    /// spare that a close removed unused (whose preparation it may have
    /// cut short).
    fn kept(&self) -> Vec<u64> {
        self.created
            .iter()
            .copied()
            .filter(|id| !self.removed.contains(id))
            .collect()
    }
}

/// Performs every call, noting those on segment files; refuses
/// reservations as unsupported when `refuse` is set.
struct Counter {
    seen: Mutex<Seen>,
    refuse: bool,
}

/// The segment id in a segment file's name, if `path` is one.
fn segment_id(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let digits = name
        .strip_suffix(".seg")
        .or(name.strip_suffix(".seg.spare"))?;
    digits.parse().ok()
}

impl Hook for Counter {
    fn run(&self, op: &Op<'_>, perform: &mut dyn FnMut() -> io::Result<()>) -> io::Result<()> {
        let Some(id) = segment_id(op.path()) else {
            return perform();
        };
        let preparing = op.path().to_string_lossy().ends_with(".spare");
        let mut seen = self.seen.lock().unwrap();
        match *op {
            Op::Create { .. } => seen.created.push(id),
            Op::Allocate { .. } if self.refuse => {
                seen.refused += 1;
                return Err(io::ErrorKind::Unsupported.into());
            }
            Op::Allocate { .. } => {
                seen.reserved.insert(id);
            }
            Op::Remove { .. } => {
                seen.removed.insert(id);
            }
            Op::Deallocate { offset, .. } => {
                seen.released.insert(id, offset);
            }
            Op::Write { data, offset, .. } | Op::WriteSynced { data, offset, .. } => {
                seen.bytes_written += data.len() as u64;
                if preparing && offset >= SEGMENT_HEADER_LEN as u64 {
                    assert!(data.iter().all(|&b| b == 0), "a spare is only zero-filled");
                    *seen.zero_filled.entry(id).or_default() += data.len() as u64;
                }
            }
            _ => {}
        }
        drop(seen);
        perform()
    }
}

/// Installs a [`Counter`] on `dir`: what the disk sees there from now on
/// until the guard is dropped.
fn count_in(dir: &Path, refuse: bool) -> (Arc<Counter>, disk::HookGuard) {
    let counter = Arc::new(Counter {
        seen: Mutex::default(),
        refuse,
    });
    let guard = disk::install(dir, Arc::clone(&counter) as Arc<dyn Hook>);
    (counter, guard)
}

/// A temporary dir on a real disk, or `None` (saying so) where the
/// temporary dir is in memory, where every segment is reserved.
fn real_disk_dir() -> Option<tempfile::TempDir> {
    let dir = tempfile::tempdir().unwrap();
    if disk::is_memory_backed(dir.path()) {
        eprintln!(
            "the temporary dir is in memory, where every segment is reserved: \
             the real-disk case was not tried here"
        );
        return None;
    }
    Some(dir)
}

/// Reads table 1 of region 1 whole, checking that every entry is
/// `payload`; returns how many there were.
fn read_back(wal: &SegmentManager, payload: &[u8]) -> u64 {
    let mut iter = wal.read(1, 1, 0, u64::MAX).unwrap();
    let mut entries = 0;
    while iter
        .next_batch(64, |entry| {
            assert_eq!(entry.payload, payload);
            entries += 1;
        })
        .unwrap()
        > 0
    {}
    entries
}

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
    let wal = SegmentManager::open(ManagerConfig {
        segment_size_bytes: SEGMENT_SIZE,
        ..ManagerConfig::new(dir.path())
    })
    .unwrap();
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
/// to fill at the pace it was written (over a second), segment 2 then fills as fast as the disk syncs,
/// and the rollover to segment 3 hurries it. The rest of its blocks are
/// reserved instead, `spares_hurried` counts it, and every entry reads
/// back after a reopen.
#[test]
fn a_rollover_hurries_a_spare_whose_zeros_are_unfinished() {
    const BIG: u64 = 4 << 20;
    let Some(dir) = real_disk_dir() else {
        return;
    };
    let (counter, guard) = count_in(dir.path(), false);
    let config = ManagerConfig {
        segment_size_bytes: BIG,
        ..ManagerConfig::new(dir.path())
    };
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

/// The bytes of disk a file holds (its allocated blocks).
fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

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
    let config = ManagerConfig {
        segment_size_bytes: BIG,
        ..ManagerConfig::new(dir.path())
    };
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
    let config = ManagerConfig {
        segment_size_bytes: BIG,
        ..ManagerConfig::new(dir.path())
    };
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
    let config = ManagerConfig {
        segment_size_bytes: BIG,
        ..ManagerConfig::new(dir.path())
    };
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
