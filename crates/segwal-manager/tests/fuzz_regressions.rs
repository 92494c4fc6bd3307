//! Bugs found by the fuzz targets of `fuzz/` (`cargo xtask fuzz`), each
//! pinned by the smallest sequence of calls that shows it.
//!
//! A test here that is `#[ignore]`d reproduces a bug that is not fixed yet
//! run it with `cargo test -p segwal-manager --test fuzz_regressions --
//! --ignored`, and remove the `ignore` with the fix.

use std::path::Path;

use segwal_manager::{EntryIter, ManagerConfig, SegmentManager};

fn config(dir: &Path) -> ManagerConfig {
    ManagerConfig {
        segment_size_bytes: 16 << 10,
        ..ManagerConfig::new(dir)
    }
}

fn drain(mut iter: EntryIter) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    while iter
        .next_batch(16, |e| out.push((e.sequence, e.payload.to_vec())))
        .unwrap()
        > 0
    {}
    out
}

/// Proves that an iterator kept from before `close` neither stops the data
/// dir from being opened again nor loses its snapshot. Found by `wal_ops`
/// (a write, a scan kept open, a drop and a reopen): the iterator's segment
/// handles keep the files open and `flock`ed, so recovery's writable open
/// of the newest segment fails with "locked by another open".
#[test]
fn an_iterator_held_across_close_does_not_block_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let wal = SegmentManager::open(config(dir.path())).unwrap();
    wal.write(0, 0, &[b"kept".as_slice()]).unwrap();
    let held = wal.scan(0).unwrap();
    wal.close().unwrap();
    drop(wal);

    let wal = SegmentManager::open(config(dir.path()))
        .unwrap_or_else(|e| panic!("reopening with an old iterator alive: {e}"));
    assert_eq!(drain(held), [(1, b"kept".to_vec())]);
    assert_eq!(
        drain(wal.read(0, 0, 0, u64::MAX).unwrap()),
        [(1, b"kept".to_vec())]
    );
    assert_eq!(wal.write(0, 0, &[b"next".as_slice()]).unwrap(), 2);
}

/// Proves the same for `close_region`: a region whose reader outlives
/// `close_region` can be used again (its next use recovers it from disk).
#[test]
fn an_iterator_held_across_close_region_does_not_block_the_region() {
    let dir = tempfile::tempdir().unwrap();
    let wal = SegmentManager::open(config(dir.path())).unwrap();
    wal.write(0, 0, &[b"kept".as_slice()]).unwrap();
    let held = wal.read(0, 0, 0, u64::MAX).unwrap();
    wal.close_region(0).unwrap();

    let last = wal
        .write(0, 0, &[b"next".as_slice()])
        .unwrap_or_else(|e| panic!("writing to a closed region with a reader alive: {e}"));
    assert_eq!(last, 2);
    assert_eq!(drain(held), [(1, b"kept".to_vec())]);
    assert_eq!(
        drain(wal.read(0, 0, 0, u64::MAX).unwrap()),
        [(1, b"kept".to_vec()), (2, b"next".to_vec())]
    );
}
