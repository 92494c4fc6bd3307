//! What the preallocation and early-rollover tests share: a hook that
//! notes what the disk sees of segment files, a real-disk temporary dir,
//! a config with segments of a given size, and reading one table back.
//! A test file takes it with `#[path = "support/counting.rs"] mod counting;`.

#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use segwal_format::SEGMENT_HEADER_LEN;
use segwal_manager::{ManagerConfig, SegmentManager};
use segwal_segment::disk::{self, Hook, Op};

/// What the disk saw of segment files (`.seg` and `.seg.spare`) while one
/// WAL was open.
#[derive(Debug, Default)]
pub struct Seen {
    /// Segment ids in the order their files were created.
    pub created: Vec<u64>,
    /// Segments whose blocks were reserved (the reservation performed).
    pub reserved: BTreeSet<u64>,
    /// Per segment, bytes written past the header while it was being
    /// prepared (under its `.seg.spare` name): its zero-fill.
    pub zero_filled: BTreeMap<u64, u64>,
    /// Bytes written to segment files.
    pub bytes_written: u64,
    /// Reservations refused as unsupported.
    pub refused: u64,
    /// Segments removed: here, only the spare a close finds unused.
    pub removed: BTreeSet<u64>,
    /// Per segment, where the blocks it gave back start.
    pub released: BTreeMap<u64, u64>,
}

impl Seen {
    /// Segments created and not reserved.
    pub fn not_reserved(&self) -> Vec<u64> {
        self.created
            .iter()
            .copied()
            .filter(|id| !self.reserved.contains(id))
            .collect()
    }

    /// Segments created and still there: those that were written, not the
    /// spare that a close removed unused (whose preparation it may have
    /// cut short).
    pub fn kept(&self) -> Vec<u64> {
        self.created
            .iter()
            .copied()
            .filter(|id| !self.removed.contains(id))
            .collect()
    }
}

/// Performs every call, noting those on segment files; refuses
/// reservations as unsupported when `refuse` is set.
pub struct Counter {
    pub seen: Mutex<Seen>,
    pub refuse: bool,
}

/// The segment id in a segment file's name, if `path` is one.
pub fn segment_id(path: &Path) -> Option<u64> {
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
pub fn count_in(dir: &Path, refuse: bool) -> (Arc<Counter>, disk::HookGuard) {
    let counter = Arc::new(Counter {
        seen: Mutex::default(),
        refuse,
    });
    let guard = disk::install(dir, Arc::clone(&counter) as Arc<dyn Hook>);
    (counter, guard)
}

/// A temporary dir on a real disk, or `None` (saying so) where the
/// temporary dir is in memory, where every segment is reserved.
pub fn real_disk_dir() -> Option<tempfile::TempDir> {
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
pub fn read_back(wal: &SegmentManager, payload: &[u8]) -> u64 {
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

/// The default config for `dir`, with segments of `segment_size` bytes.
pub fn sized(dir: &Path, segment_size: u64) -> ManagerConfig {
    ManagerConfig {
        segment_size_bytes: segment_size,
        ..ManagerConfig::new(dir)
    }
}

/// The bytes of disk a file holds (its allocated blocks).
pub fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}
