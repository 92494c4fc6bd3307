//! The HoraeDB WAL conformance scenarios and segwal's own semantics
//! (SPEC section 3), run against the segment manager on a real file system.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use segwal_manager::{EntryIter, Error, ManagerConfig, SegmentManager, SyncMode};

#[path = "support/layout.rs"]
mod layout;

use layout::segment_files;

fn config(dir: &Path) -> ManagerConfig {
    ManagerConfig {
        segment_size_bytes: 4096,
        ..ManagerConfig::new(dir)
    }
}

fn open(dir: &Path) -> SegmentManager {
    SegmentManager::open(config(dir)).unwrap()
}

/// All entries of an iterator as (sequence, payload), fetched `batch` at a
/// time; checks that no call returns more than `batch`.
fn drain(mut iter: EntryIter, batch: usize) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        let before = out.len();
        let n = iter
            .next_batch(batch, |e| out.push((e.sequence, e.payload.to_vec())))
            .unwrap();
        assert_eq!(n, out.len() - before);
        assert!(n <= batch);
        if n == 0 {
            return out;
        }
    }
}

fn read_all(wal: &SegmentManager, region: u64, table: u64) -> Vec<(u64, Vec<u8>)> {
    drain(wal.read(region, table, 0, u64::MAX).unwrap(), 7)
}

fn payload(region: u64, table: u64, i: u64) -> Vec<u8> {
    format!("r{region}-t{table}-{i}").into_bytes()
}

/// Proves that a table never written has sequence number 0 and reads and
/// scans as empty.
#[test]
fn empty_wal_has_sequence_zero_and_reads_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path());
    assert_eq!(wal.sequence_num(1, 1).unwrap(), 0);
    assert!(read_all(&wal, 1, 1).is_empty());
    assert!(drain(wal.scan(1).unwrap(), 10).is_empty());
}

/// Proves that batches of one to four entries read back exactly, in
/// order and with their numbers, whatever number of entries each
/// `next_batch` call asks for.
#[test]
fn write_and_read_back_with_every_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path());
    let mut expected = Vec::new();
    for i in 0..40u64 {
        let entries: Vec<Vec<u8>> = (0..(i % 4 + 1))
            .map(|j| payload(1, 2, i * 10 + j))
            .collect();
        let last = wal.write(1, 2, &entries).unwrap();
        let first = last + 1 - entries.len() as u64;
        expected.extend((first..=last).zip(entries));
    }
    for batch in 1..=100 {
        assert_eq!(
            drain(wal.read(1, 2, 0, u64::MAX).unwrap(), batch),
            expected,
            "batch size {batch}"
        );
    }
}

/// Proves that a read handed out a few entries at a time resumes inside a
/// large batch exactly where it stopped, for ranges and delete marks that
/// start and end inside batches: nothing skipped, repeated or past `end`.
#[test]
fn ranges_inside_large_batches_resume_exactly_at_every_read_size() {
    let dir = tempfile::tempdir().unwrap();
    let wal = SegmentManager::open(ManagerConfig::new(dir.path())).unwrap();
    let mut written = Vec::new();
    for (table, len) in [(1, 50u64), (2, 3), (1, 1), (1, 20)] {
        let entries: Vec<Vec<u8>> = (0..len).map(|j| payload(1, table, j)).collect();
        let last = wal.write(1, table, &entries).unwrap();
        written.extend(
            (last + 1 - len..=last)
                .zip(entries)
                .map(|(s, p)| (table, s, p)),
        );
    }
    let of_table = |start: u64, end: u64, after: u64| -> Vec<(u64, Vec<u8>)> {
        written
            .iter()
            .filter(|(t, s, _)| *t == 1 && (start..=end).contains(s) && *s > after)
            .map(|(_, s, p)| (*s, p.clone()))
            .collect()
    };
    for max in [1, 2, 7, 49, 50, 51] {
        for (start, end) in [
            (0, u64::MAX),
            (10, 40),
            (25, 52),
            (50, 54),
            (53, 74),
            (60, 60),
        ] {
            let got = drain(wal.read(1, 1, start, end).unwrap(), max);
            assert_eq!(got, of_table(start, end, 0), "[{start}, {end}] by {max}");
        }
    }
    wal.mark_delete_entries_up_to(1, 1, 30).unwrap();
    for max in [1, 3, 50] {
        let scanned: Vec<u64> = drain(wal.scan(1).unwrap(), max)
            .into_iter()
            .map(|e| e.0)
            .collect();
        let want: Vec<u64> = written
            .iter()
            .filter(|(t, s, _)| *t == 2 || *s > 30)
            .map(|(_, s, _)| *s)
            .collect();
        assert_eq!(scanned, want, "scan by {max}");
        assert_eq!(
            drain(wal.read(1, 1, 0, u64::MAX).unwrap(), max),
            of_table(0, u64::MAX, 30)
        );
    }
}

/// Proves that a read of `[start, end]` returns exactly the entries with
/// numbers in that inclusive range, for every pair of bounds around and
/// beyond the table's first and last numbers.
#[test]
fn every_inclusive_range_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path());
    for i in 1..=10u64 {
        wal.write(1, 1, &[payload(1, 1, i)]).unwrap();
    }
    let bounds = [0, 1, 2, 5, 9, 10, 11, u64::MAX];
    for &start in &bounds {
        for &end in &bounds {
            let got: Vec<u64> = drain(wal.read(1, 1, start, end).unwrap(), 3)
                .into_iter()
                .map(|e| e.0)
                .collect();
            let want: Vec<u64> = (1..=10).filter(|s| (start..=end).contains(s)).collect();
            assert_eq!(got, want, "[{start}, {end}]");
        }
    }
}

/// Proves that a read spanning many batches and several segments of the
/// shared log returns every entry of its range in order, with its own
/// payload.
#[test]
fn reads_cross_batches_and_segments() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path());
    for i in 0..200u64 {
        wal.write(1, 1, &[payload(1, 1, 2 * i), payload(1, 1, 2 * i + 1)])
            .unwrap();
    }
    assert!(
        segment_files(dir.path()).len() > 3,
        "small segments roll over"
    );
    let got = drain(wal.read(1, 1, 150, 251).unwrap(), 13);
    assert_eq!(got.len(), 102);
    for (sequence, bytes) in got {
        assert_eq!(bytes, payload(1, 1, sequence - 1));
    }
}

/// Proves that sequence numbers are per region, shared by the region's
/// tables, and that each table's `sequence_num` is its own largest one,
/// although every region writes to the same log.
#[test]
fn sequence_numbers_are_per_region_and_increase() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path());
    assert_eq!(wal.write(1, 1, &[b"a", b"b"]).unwrap(), 2);
    assert_eq!(wal.write(1, 2, &[b"c"]).unwrap(), 3);
    assert_eq!(wal.write(2, 1, &[b"d"]).unwrap(), 1);
    assert_eq!(wal.sequence_num(1, 1).unwrap(), 2);
    assert_eq!(wal.sequence_num(1, 2).unwrap(), 3);
    assert_eq!(wal.sequence_num(2, 1).unwrap(), 1);
    assert_eq!(wal.sequence_num(2, 2).unwrap(), 0);
}

/// Proves that concurrent writers to several regions of the shared log
/// get distinct numbers, each region using `1..=n` exactly once, and read
/// back exactly what each wrote.
#[test]
fn concurrent_writers_get_distinct_increasing_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Arc::new(open(dir.path()));
    let results: Vec<Vec<(u64, u64, u64)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..10u64)
            .map(|w| {
                let wal = Arc::clone(&wal);
                s.spawn(move || {
                    let (region, table) = (w % 3, w);
                    (0..30)
                        .map(|i| {
                            (
                                region,
                                table,
                                wal.write(region, table, &[payload(region, table, i)])
                                    .unwrap(),
                            )
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut per_region: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for writer in &results {
        assert!(
            writer.windows(2).all(|w| w[0].2 < w[1].2),
            "a writer's sequences increase"
        );
        for &(region, _, seq) in writer {
            per_region.entry(region).or_default().push(seq);
        }
    }
    for (region, mut seqs) in per_region {
        seqs.sort_unstable();
        let n = seqs.len() as u64;
        assert_eq!(
            seqs,
            (1..=n).collect::<Vec<_>>(),
            "region {region} uses 1..=n exactly once"
        );
    }
    for writer in &results {
        let (region, table, _) = writer[0];
        let got = read_all(&wal, region, table);
        assert_eq!(
            got.iter().map(|e| e.0).collect::<Vec<_>>(),
            writer.iter().map(|w| w.2).collect::<Vec<_>>()
        );
    }
}

/// Proves that a reopen reads back every region's entries from the shared
/// log and continues each region's numbering where it stopped.
#[test]
fn reopen_reads_everything_back_and_continues_the_sequence() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = open(dir.path());
        for i in 0..50 {
            wal.write(i % 2, 7, &[payload(i % 2, 7, i)]).unwrap();
        }
        wal.close().unwrap();
    }
    let wal = open(dir.path());
    assert_eq!(read_all(&wal, 0, 7).len(), 25);
    assert_eq!(wal.sequence_num(1, 7).unwrap(), 25);
    assert_eq!(wal.write(1, 7, &[b"next"]).unwrap(), 26);
    let scanned = drain(wal.scan(1).unwrap(), 4);
    assert_eq!(scanned.len(), 26);
}

/// Proves that a delete hides exactly the table's entries up to its mark,
/// leaves the region's other table alone, and is clamped to the table's
/// last entry so that later writes are visible.
#[test]
fn deletes_all_half_and_one_table_of_two() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path());
    for i in 1..=20u64 {
        wal.write(1, i % 2, &[payload(1, i % 2, i)]).unwrap();
    }
    // Half of table 0 (sequences 2, 4, ..., 20): up to 10.
    wal.mark_delete_entries_up_to(1, 0, 10).unwrap();
    assert_eq!(
        read_all(&wal, 1, 0).iter().map(|e| e.0).collect::<Vec<_>>(),
        [12, 14, 16, 18, 20]
    );
    // Table 1 is untouched.
    assert_eq!(read_all(&wal, 1, 1).len(), 10);
    // Past the table's end deletes all of it, and only it.
    wal.mark_delete_entries_up_to(1, 1, u64::MAX).unwrap();
    assert!(read_all(&wal, 1, 1).is_empty());
    assert_eq!(read_all(&wal, 1, 0).len(), 5);
    assert_eq!(
        drain(wal.scan(1).unwrap(), 100)
            .iter()
            .map(|e| e.0)
            .collect::<Vec<_>>(),
        [12, 14, 16, 18, 20]
    );
    // A later write to the deleted table is visible: the mark was clamped.
    let next = wal.write(1, 1, &[b"after"]).unwrap();
    assert_eq!(next, 21);
    assert_eq!(read_all(&wal, 1, 1), [(21, b"after".to_vec())]);
}

/// Proves that deletes survive reopens, and that `sequence_num` and the
/// next number survive the deletion of every entry: numbers are never
/// reused.
#[test]
fn deletes_survive_reopen_and_sequences_are_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = open(dir.path());
        for i in 1..=30u64 {
            wal.write(3, 1, &[payload(3, 1, i)]).unwrap();
        }
        wal.mark_delete_entries_up_to(3, 1, 30).unwrap();
        wal.close().unwrap();
    }
    {
        let wal = open(dir.path());
        assert!(
            read_all(&wal, 3, 1).is_empty(),
            "deleted entries stay deleted"
        );
        assert_eq!(
            wal.sequence_num(3, 1).unwrap(),
            30,
            "sequence_num survives delete and restart"
        );
        assert_eq!(
            wal.write(3, 1, &[b"x"]).unwrap(),
            31,
            "numbers are not reused"
        );
        wal.mark_delete_entries_up_to(3, 1, 31).unwrap();
    }
    let wal = open(dir.path());
    assert!(read_all(&wal, 3, 1).is_empty());
    assert_eq!(wal.write(3, 2, &[b"y"]).unwrap(), 32);
}

/// Proves that a sealed segment of the shared log is removed from disk
/// once every region's records in it are deleted, and not before: two
/// regions write in turn, so every sealed segment holds both; deleting all
/// of one removes no file, then the other's deletes remove the oldest
/// segments they empty, until only the segment being written is left,
/// and on reopen that one (now sealed and dead) goes too.
#[test]
fn a_fully_deleted_segment_disappears_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path());
    for i in 0..100u64 {
        for region in [1, 2] {
            wal.write(region, 1, &[vec![i as u8; 200]]).unwrap();
        }
    }
    let before = segment_files(dir.path());
    assert!(before.len() >= 10, "{before:?}");
    wal.mark_delete_entries_up_to(1, 1, u64::MAX).unwrap();
    assert_eq!(
        segment_files(dir.path()),
        before,
        "region 2's records keep every segment"
    );
    wal.mark_delete_entries_up_to(2, 1, 50).unwrap();
    let after = segment_files(dir.path());
    assert!(after.len() < before.len(), "{after:?}");
    assert_eq!(
        after[..],
        before[before.len() - after.len()..],
        "the oldest segments went"
    );
    wal.mark_delete_entries_up_to(2, 1, 100).unwrap();
    assert_eq!(
        segment_files(dir.path()).len(),
        1,
        "only the segment being written remains"
    );
    assert_eq!(wal.statistics().segments_live, 1);
    drop(wal);
    let wal = open(dir.path());
    assert!(
        segment_files(dir.path()).is_empty(),
        "on reopen the last one, now dead, goes too"
    );
    assert_eq!(wal.write(1, 1, &[b"z"]).unwrap(), 101);
    assert_eq!(wal.write(2, 1, &[b"z"]).unwrap(), 101);
}

/// Proves that a batch larger than the configured segment size is written
/// to a segment of its own, sized to fit, between ordinary batches.
#[test]
fn a_batch_larger_than_a_segment_gets_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path());
    wal.write(1, 1, &[b"small"]).unwrap();
    let big = vec![7u8; 10_000];
    assert_eq!(wal.write(1, 1, &[&big[..], &big[..]]).unwrap(), 3);
    wal.write(1, 1, &[b"small again"]).unwrap();
    let got = read_all(&wal, 1, 1);
    assert_eq!(
        got.iter().map(|e| e.1.len()).collect::<Vec<_>>(),
        [5, 10_000, 10_000, 11]
    );
}

/// Proves that an empty batch and an oversized entry are refused with
/// errors naming the region, table and sizes, before any sequence number
/// is used.
#[test]
fn bad_batches_are_refused_before_a_sequence_number_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let config = ManagerConfig {
        max_entry_size_bytes: 1000,
        ..config(dir.path())
    };
    let wal = SegmentManager::open(config).unwrap();
    let empty: [&[u8]; 0] = [];
    let err = wal.write(1, 5, &empty).unwrap_err();
    assert!(
        matches!(
            err,
            Error::EmptyBatch {
                region_id: 1,
                table_id: 5
            }
        ),
        "{err}"
    );
    let err = wal
        .write(1, 5, &[&[0u8; 10][..], &[0u8; 1001][..]])
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::EntryTooLarge {
                index: 1,
                len: 1001,
                max: 1000,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "region 1 table 5: entry 1 is 1001 bytes, more than the maximum of 1000"
    );
    assert_eq!(wal.write(1, 5, &[b"ok"]).unwrap(), 1, "no number was burnt");
}

/// Proves that a closed region opens again on its next use, that calls
/// after `close` are refused, and that another instance opening the data
/// dir picks the region up where it was left.
#[test]
fn close_region_then_use_it_again_and_move_it_to_another_instance() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path());
    wal.write(4, 1, &[b"a"]).unwrap();
    wal.close_region(4).unwrap();
    assert_eq!(
        wal.write(4, 1, &[b"b"]).unwrap(),
        2,
        "the region opens again on use"
    );
    wal.close_region(4).unwrap();
    wal.close().unwrap();
    assert!(matches!(wal.write(4, 1, &[b"c"]), Err(Error::Closed)));
    assert!(matches!(wal.close(), Err(Error::Closed)));
    drop(wal);
    // The region moves: another instance picks it up where it was left.
    let other = open(dir.path());
    assert_eq!(
        read_all(&other, 4, 1),
        [(1, b"a".to_vec()), (2, b"b".to_vec())]
    );
    assert_eq!(other.write(4, 1, &[b"c"]).unwrap(), 3);
}

/// Proves that a data dir open in one manager cannot be opened by a
/// second one until the first is gone.
#[test]
fn a_second_open_of_the_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path());
    let err = SegmentManager::open(config(dir.path())).unwrap_err();
    assert!(matches!(err, Error::DataDirLocked { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("in use by another segwal instance"),
        "{err}"
    );
    drop(wal);
    open(dir.path());
}

/// Proves that files and directories the WAL does not own are left alone
/// and do not disturb recovery: notes, a `.seg` name that is not 20
/// digits, a directory, and a directory named like a version-2 region that
/// holds no segment.
#[test]
fn stray_files_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = open(dir.path());
        wal.write(1, 1, &[b"kept"]).unwrap();
    }
    let old_looking = dir.path().join(format!("{:020}", 1));
    let strays = [
        dir.path().join("notes.txt"),
        dir.path().join("42.seg"),
        dir.path().join("README"),
        old_looking.join("notes"),
    ];
    fs::create_dir(dir.path().join("not-a-region")).unwrap();
    fs::create_dir(&old_looking).unwrap();
    for stray in &strays {
        fs::write(stray, b"stray").unwrap();
    }
    let wal = open(dir.path());
    assert_eq!(read_all(&wal, 1, 1), [(1, b"kept".to_vec())]);
    assert_eq!(wal.write(1, 1, &[b"more"]).unwrap(), 2);
    wal.close().unwrap();
    for stray in &strays {
        assert_eq!(fs::read(stray).unwrap(), b"stray", "{}", stray.display());
    }
}

/// Proves that invalid configuration values are refused, naming the value,
/// before the data dir is created, and that a data dir path that is a
/// file is refused.
#[test]
fn invalid_configuration_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for (config, what) in [
        (
            ManagerConfig {
                segment_size_bytes: 0,
                ..ManagerConfig::new(&data)
            },
            "segment size",
        ),
        (
            ManagerConfig {
                cache_size: 0,
                ..ManagerConfig::new(&data)
            },
            "cache size",
        ),
        (
            ManagerConfig {
                max_entry_size_bytes: 0,
                ..ManagerConfig::new(&data)
            },
            "maximum entry size",
        ),
        (
            ManagerConfig {
                sync_mode: SyncMode::Interval(std::time::Duration::ZERO),
                ..ManagerConfig::new(&data)
            },
            "interval",
        ),
    ] {
        let err = SegmentManager::open(config).unwrap_err();
        assert!(
            matches!(err, Error::InvalidConfig { .. }) && err.to_string().contains(what),
            "{err}"
        );
    }
    assert!(!data.exists(), "nothing was created");
    let file = dir.path().join("file");
    fs::write(&file, b"x").unwrap();
    let err = SegmentManager::open(ManagerConfig::new(&file)).unwrap_err();
    assert!(matches!(err, Error::NotADirectory { .. }), "{err}");
}

/// Proves that a torn last record of the newest segment (a crash during
/// its write) is cut on reopen without touching the records before it,
/// another region's among them, and that appends then go to a fresh
/// segment.
#[test]
fn a_torn_tail_is_cut_on_reopen_and_writes_go_to_a_fresh_segment() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = open(dir.path());
        wal.write(1, 1, &[b"one"]).unwrap();
        wal.write(2, 1, &[b"other"]).unwrap();
        wal.write(1, 1, &[b"two"]).unwrap();
    }
    let names = segment_files(dir.path());
    assert_eq!(names.len(), 1, "{names:?}");
    let path = dir.path().join(&names[0]);
    let mut bytes = fs::read(&path).unwrap();
    // Tear the last record: zero its last payload byte.
    let end = bytes.iter().rposition(|&b| b != 0).unwrap();
    bytes[end] = 0;
    fs::write(&path, &bytes).unwrap();
    let wal = open(dir.path());
    assert_eq!(read_all(&wal, 1, 1), [(1, b"one".to_vec())]);
    assert_eq!(read_all(&wal, 2, 1), [(1, b"other".to_vec())]);
    assert_eq!(wal.write(1, 1, &[b"again"]).unwrap(), 2);
    assert_eq!(wal.write(2, 1, &[b"more"]).unwrap(), 2);
    assert_eq!(
        segment_files(dir.path()).len(),
        2,
        "appends went to a new segment"
    );
    drop(wal);
    let wal = open(dir.path());
    assert_eq!(
        read_all(&wal, 1, 1),
        [(1, b"one".to_vec()), (2, b"again".to_vec())]
    );
    assert_eq!(
        read_all(&wal, 2, 1),
        [(1, b"other".to_vec()), (2, b"more".to_vec())]
    );
}

/// Proves that the statistics count batches, entries and syncs and list
/// each region's next number, and that their text shows them.
#[test]
fn statistics_count_writes_and_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path());
    for _ in 0..5 {
        wal.write(2, 1, &[b"a", b"b"]).unwrap();
    }
    let stats = wal.statistics();
    assert_eq!((stats.batches_written, stats.entries_written), (5, 10));
    assert!(stats.syncs >= 1 && stats.syncs <= 5, "{stats:?}");
    assert_eq!(stats.regions, [(2, 11)]);
    let text = stats.to_string();
    assert!(
        text.contains("batches written: 5") && text.contains("region 2: next sequence 11"),
        "{text}"
    );
}

/// Proves that damage at the end of a segment that is not the newest is
/// reported, naming the file and offset, instead of being cut like a torn
/// write: sealed segments were synced before their successor was written.
#[test]
fn a_torn_tail_in_a_sealed_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = open(dir.path());
        for i in 0..60u64 {
            wal.write(1, 1, &[vec![i as u8; 300]]).unwrap();
        }
    }
    let names = segment_files(dir.path());
    assert!(names.len() >= 2, "{names:?}");
    let path = dir.path().join(&names[0]);
    let mut bytes = fs::read(&path).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap();
    bytes[end] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    let err = SegmentManager::open(config(dir.path())).unwrap_err();
    assert!(matches!(err, Error::SealedSegmentDamaged { .. }), "{err}");
    assert!(err.to_string().contains(&names[0]), "{err}");
    let skip = ManagerConfig {
        recovery_mode: segwal_manager::RecoveryMode::SkipCorrupted,
        ..config(dir.path())
    };
    let wal = SegmentManager::open(skip).unwrap();
    assert!(
        read_all(&wal, 1, 1).len() < 60,
        "the damaged record is not served"
    );
}
