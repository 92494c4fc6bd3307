//! Full-disk behaviour on a real, size-limited tmpfs.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use segwal_format::SegmentIdentity;
use segwal_segment::{BatchRef, Error, OpenOptions, Preallocation, Segment, segment_file_name};

/// A tmpfs of `size` mounted on a fresh temporary directory, unmounted on
/// drop.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    /// Mounting needs root (CI runs as root): without it the test fails,
    /// saying so.
    fn mount(size: &str) -> SmallFs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status();
        match status {
            Ok(s) if s.success() => SmallFs { dir },
            other => panic!(
                "the full-disk test mounts a size-limited tmpfs, which needs root ({other:?}); \
                 run the tests as root (`sudo -E cargo xtask test`), as CI does"
            ),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn fill(path: &Path) {
    let mut file = fs::File::create(path).unwrap();
    let chunk = vec![1u8; 4096];
    loop {
        if let Err(err) = file.write_all(&chunk) {
            assert_eq!(err.kind(), ErrorKind::StorageFull, "{err}");
            return;
        }
    }
}

/// Proves that a full disk is an error, never a crash or a half-made file:
/// creating a segment that does not fit fails with ENOSPC and leaves no file
/// (refused before any block is set aside, so the error names the free
/// space, and the disk is never filled by a segment that could not fit),
/// while a segment preallocated before the disk filled up takes appends to
/// its last byte and syncs them (no SIGBUS, no ENOSPC: its blocks are real),
/// whether its blocks were zero-filled or reserved with `fallocate`.
#[test]
fn full_disk_fails_creation_cleanly_and_never_appends() {
    for preallocation in [Preallocation::Zeroed, Preallocation::Reserved] {
        let fs_ = SmallFs::mount("1m");
        full_disk_case(&fs_, preallocation);
    }
}

fn full_disk_case(fs_: &SmallFs, preallocation: Preallocation) {
    let header = SegmentIdentity {
        stream_id: 1,
        segment_id: 1,
    };

    let too_big = fs_.path(&segment_file_name(9));
    let err = Segment::create(&too_big, header, 4 << 20, preallocation).unwrap_err();
    match &err {
        Error::Preallocate { source, .. } => assert_eq!(source.kind(), ErrorKind::StorageFull),
        other => panic!("expected ENOSPC while preallocating ({preallocation:?}), got {other}"),
    }
    assert!(
        err.to_string().contains(&*too_big.to_string_lossy()),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("No space left on device: the file system has"),
        "refused before anything is set aside: {err}"
    );
    assert!(!too_big.exists(), "a failed create leaves no file behind");

    let path = fs_.path(&segment_file_name(1));
    let mut segment = Segment::create(&path, header, 256 << 10, preallocation).unwrap();
    fill(&fs_.path("filler"));

    let payload = vec![0xabu8; 1000];
    let mut sequence = 1;
    loop {
        let batch = BatchRef {
            region_id: 1,
            table_id: 1,
            first_sequence: sequence,
            entries: &[&payload],
        };
        match segment.append(&batch) {
            Ok(_) => sequence += 1,
            Err(Error::AppendPastCapacity { .. }) => break,
            Err(other) => panic!("append on a full disk failed ({preallocation:?}): {other}"),
        }
        if sequence % 16 == 0 {
            segment.sync().unwrap();
        }
    }
    assert!(sequence > 200, "only {sequence} appends fit");
    segment.close().unwrap();

    let err = Segment::create(
        &fs_.path(&segment_file_name(2)),
        header,
        64 << 10,
        preallocation,
    )
    .unwrap_err();
    assert!(matches!(err, Error::Preallocate { .. }), "{err}");
    assert!(!fs_.path(&segment_file_name(2)).exists());

    let mut count = 0;
    let (_, report) =
        Segment::open(&path, header, &OpenOptions::default(), |_| count += 1).unwrap();
    assert_eq!((count, report.torn_tail), (sequence - 1, None));
}
