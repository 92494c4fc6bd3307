//! Hostile data dirs, for the segment manager and the read-only tools:
//! paths that are files or cannot be made, read-only file systems, a disk
//! too small for one segment, strays and impostors among the segments, and
//! what a crash during a segment's creation leaves. Each must give a clear
//! error naming the file, or be ignored as documented; never a panic, never
//! a lost entry (SPEC section 4).

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use segwal_manager::{
    Error, LOCK_FILE, ManagerConfig, RecoveryMode, SegmentManager, dump_table, inspect,
};

#[path = "support/hostile.rs"]
mod hostile;
#[path = "support/layout.rs"]
mod layout;

use hostile::{MAX, config, drain, open, sequences};
use layout::{files_with_lengths, segment_files, spare_files};
/// Proves that files the WAL does not own are left alone (names that are
/// not UTF-8, in the data dir and in a directory in it, and other notes),
/// while a foreign file or a directory named like a segment stops the open
/// with an error naming it (docs/OPERATIONS.md), and `inspect` reports it
/// as damage without failing: at offset 0 for a file whose header does not
/// decode, at no offset for a directory, which cannot be read at all.
#[test]
fn strays_are_ignored_and_impostors_named_like_segments_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = open(dir.path());
        wal.write(1, 1, &[b"kept"]).unwrap();
    }
    let notes = dir.path().join("notes");
    fs::create_dir(&notes).unwrap();
    let not_utf8 = std::ffi::OsStr::from_bytes(b"\xff\xfe.seg");
    let strays = [
        dir.path().join(not_utf8),
        notes.join(not_utf8),
        notes.join("00000000000000000003.seg"),
        dir.path().join("notes.txt"),
    ];
    for stray in &strays {
        fs::write(stray, b"stray").unwrap();
    }
    {
        let wal = open(dir.path());
        assert_eq!(
            drain(wal.read(1, 1, 0, MAX).unwrap()),
            [(1, 1, b"kept".to_vec())]
        );
    }
    for stray in &strays {
        assert_eq!(fs::read(stray).unwrap(), b"stray");
    }

    let path = dir.path().join("00000000000000000000.seg");
    for (impostor, offset) in [("file", Some(0)), ("dir", None)] {
        if impostor == "file" {
            fs::write(&path, b"not a segment").unwrap();
        } else {
            fs::create_dir(&path).unwrap();
        }
        let err = SegmentManager::open(config(dir.path())).unwrap_err();
        assert!(matches!(err, Error::Segment { .. }), "{err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        let report = inspect(dir.path()).unwrap();
        let problems: Vec<_> = report
            .problems()
            .map(|p| (p.path.clone(), p.offset, p.is_damage))
            .collect();
        assert_eq!(problems, [(path.clone(), offset, true)], "{impostor}");
        if impostor == "file" {
            fs::remove_file(&path).unwrap();
        } else {
            fs::remove_dir(&path).unwrap();
        }
    }
    let wal = open(dir.path());
    assert_eq!(wal.write(1, 1, &[b"again"]).unwrap(), 2);
}

/// Proves that a data dir path that cannot be a data dir is refused with
/// an error naming it, before anything is created: empty, a file, below a
/// file, and a `LOCK` that is a directory. A missing parent is created.
#[test]
fn unusable_data_dir_paths_are_refused_with_their_name() {
    let dir = tempfile::tempdir().unwrap();
    let err = SegmentManager::open(ManagerConfig::new("")).unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
    assert!(err.to_string().contains("data dir path is empty"), "{err}");

    let file = dir.path().join("file");
    fs::write(&file, b"x").unwrap();
    let err = SegmentManager::open(ManagerConfig::new(&file)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("data dir {} is not a directory", file.display())
    );
    let below = file.join("wal");
    let err = SegmentManager::open(ManagerConfig::new(&below)).unwrap_err();
    assert!(matches!(err, Error::Directory { .. }), "{err}");
    assert!(
        err.to_string().contains(&below.display().to_string()),
        "{err}"
    );
    assert!(err.to_string().contains("Not a directory"), "{err}");
    for tool in [inspect(&file).unwrap_err(), inspect(&below).unwrap_err()] {
        assert!(
            tool.to_string().contains(&file.display().to_string()),
            "{tool}"
        );
    }

    let lock_dir = dir.path().join("lock-is-a-dir");
    fs::create_dir_all(lock_dir.join(LOCK_FILE)).unwrap();
    let err = SegmentManager::open(ManagerConfig::new(&lock_dir)).unwrap_err();
    assert!(
        err.to_string().contains(&lock_dir.display().to_string()),
        "{err}"
    );
    assert!(err.to_string().contains("Is a directory"), "{err}");

    let nested = dir.path().join("a").join("b").join("c");
    let wal = SegmentManager::open(config(&nested)).unwrap();
    assert_eq!(wal.write(1, 1, &[b"x"]).unwrap(), 1);
    assert!(nested.join(LOCK_FILE).is_file());
}

/// A tmpfs mounted on a fresh temporary directory, unmounted on drop.
///
/// Mounted with the `mount` system call rather than the `mount` program:
/// a child process holds copies of this process's descriptors until it has
/// exec'ed, among them other tests' data-dir lock files, and with them
/// their locks. Mounting needs root (CI runs as root): without it the
/// tests that need a mount fail, saying so.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str, test: &str) -> Tmpfs {
        use rustix::mount::{MountFlags, mount};
        let dir = tempfile::tempdir().unwrap();
        let data = CString::new(format!("size={size}")).unwrap();
        if let Err(err) = mount("tmpfs", dir.path(), "tmpfs", MountFlags::empty(), &*data) {
            panic!(
                "{test} mounts a tmpfs, which needs root: {err}; run the tests as root \
                 (`sudo -E cargo xtask test`), as CI does"
            );
        }
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount_read_only(&self) {
        use rustix::mount::{MountFlags, mount_remount};
        mount_remount(self.path(), MountFlags::RDONLY, c"").unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        use rustix::mount::{UnmountFlags, unmount};
        if let Err(err) = unmount(self.path(), UnmountFlags::DETACH) {
            eprintln!("cannot unmount {}: {err}", self.path().display());
        }
    }
}

/// Proves that a data dir on a read-only file system is refused by the WAL
/// with an error naming the dir, nothing modified, while `inspect` and
/// `dump_table` (which only read) work on it; and that a new data dir there
/// is refused with its name.
///
/// Tests run as root, whom permission bits do not stop, so a directory
/// with mode 0555 would prove nothing; the read-only file system is a real
/// one (a tmpfs remounted read-only). Without the privilege to mount, the
/// test says so and returns.
#[test]
fn a_read_only_data_dir_is_refused_and_still_inspected() {
    let fs = Tmpfs::mount("4m", "a_read_only_data_dir_is_refused_and_still_inspected");
    let data = fs.path().join("wal");
    {
        let wal = open(&data);
        wal.write(1, 1, &[b"one"]).unwrap();
        wal.write(1, 2, &[b"two"]).unwrap();
        wal.mark_delete_entries_up_to(1, 1, 1).unwrap();
        wal.close().unwrap();
    }
    let before = files_with_lengths(&data);
    fs.remount_read_only();

    for mode in [RecoveryMode::Strict, RecoveryMode::SkipCorrupted] {
        let err = SegmentManager::open(ManagerConfig {
            recovery_mode: mode,
            ..config(&data)
        })
        .unwrap_err();
        assert!(matches!(err, Error::Directory { .. }), "{err}");
        assert!(
            err.to_string().contains(&data.display().to_string()),
            "{err}"
        );
        assert!(err.to_string().contains("Read-only file system"), "{err}");
    }
    let fresh = fs.path().join("new");
    let err = SegmentManager::open(config(&fresh)).unwrap_err();
    assert!(
        err.to_string().contains(&fresh.display().to_string()),
        "{err}"
    );
    assert!(!fresh.exists());

    let report = inspect(&data).unwrap();
    assert!(report.is_clean());
    let mut dumped = Vec::new();
    for table in [1, 2] {
        dump_table(&data, 1, table, 0, MAX, |e| {
            dumped.push((e.table_id, e.sequence, e.payload.to_vec()));
        })
        .unwrap();
    }
    assert_eq!(dumped, [(2, 2, b"two".to_vec())]);
    assert_eq!(files_with_lengths(&data), before);
}

/// Proves that a segment size the disk cannot hold (1 TiB on a 1 MiB file
/// system) is an error naming the segment when the first segment is
/// created, with no number used, no file left behind and the WAL still
/// usable for reads and deletes.
#[test]
fn a_segment_larger_than_the_disk_is_an_error_not_a_crash() {
    let fs = Tmpfs::mount(
        "1m",
        "a_segment_larger_than_the_disk_is_an_error_not_a_crash",
    );
    let wal = SegmentManager::open(ManagerConfig {
        segment_size_bytes: 1 << 40,
        ..ManagerConfig::new(fs.path())
    })
    .unwrap();
    for _ in 0..2 {
        let err = wal.write(1, 1, &[b"x"]).unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot preallocate 1099511627776 bytes for segment"),
            "{err}"
        );
        assert!(err.to_string().contains("No space left on device"), "{err}");
        assert_eq!(
            (segment_files(fs.path()), spare_files(fs.path())),
            (vec![], vec![]),
            "no segment file is left"
        );
    }
    assert_eq!(wal.sequence_num(1, 1).unwrap(), 0);
    assert!(
        wal.statistics()
            .regions
            .iter()
            .all(|&(region, next)| region != 1 || next == 1),
        "no number was used: {}",
        wal.statistics()
    );
    assert!(sequences(&wal, 1, 1, 0, MAX).is_empty());
    wal.mark_delete_entries_up_to(1, 1, MAX).unwrap();
    wal.close().unwrap();
}

/// Proves that what a crash during a segment's creation leaves, an empty or
/// all-zero file, is harmless: segments are created under the temporary
/// `.seg.spare` name and renamed only once whole and synced (the power-loss
/// test found that creating under the final name left an empty `.seg` that
/// blocked every open), so recovery removes such a file, whether it has
/// the next id (which the open's own spare then takes) or an older one,
/// and the WAL opens. An empty file under a segment's own name, which
/// segwal never makes, is refused naming the file, in every recovery mode.
#[test]
fn a_segment_left_empty_by_a_crash_during_creation_does_not_stop_the_open() {
    for content in [Vec::new(), vec![0u8; 4096]] {
        let dir = tempfile::tempdir().unwrap();
        {
            let wal = open(dir.path());
            wal.write(1, 1, &[b"acknowledged"]).unwrap();
            wal.close().unwrap();
        }
        let next = dir.path().join("00000000000000000002.seg.spare");
        let older = dir.path().join("00000000000000000005.seg.spare");
        for unfinished in [&next, &older] {
            fs::write(unfinished, &content).unwrap();
        }
        let wal = SegmentManager::open(config(dir.path()))
            .unwrap_or_else(|e| panic!("{} bytes: {e}", content.len()));
        assert!(!older.exists(), "the unfinished segment is removed");
        assert_eq!(
            drain(wal.read(1, 1, 0, MAX).unwrap()),
            [(1, 1, b"acknowledged".to_vec())]
        );
        assert_eq!(wal.write(1, 1, &[b"next"]).unwrap(), 2);
        wal.close().unwrap();
        assert_eq!(spare_files(dir.path()), Vec::<String>::new());
        assert_eq!(
            segment_files(dir.path()),
            ["00000000000000000001.seg", "00000000000000000002.seg"],
            "the open's own spare took the next id"
        );

        let foreign = dir.path().join("00000000000000000009.seg");
        fs::write(&foreign, &content).unwrap();
        for mode in [
            RecoveryMode::Strict,
            RecoveryMode::TolerateTornTail,
            RecoveryMode::SkipCorrupted,
        ] {
            let err = SegmentManager::open(ManagerConfig {
                recovery_mode: mode,
                ..config(dir.path())
            })
            .unwrap_err();
            assert!(
                err.to_string().contains("00000000000000000009.seg"),
                "{mode:?}: the refusal names the file: {err}"
            );
        }
    }
}
