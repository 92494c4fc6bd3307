//! Hostile arguments at every entry point of the segment manager:
//! sequence numbers and ids at the limits of `u64`, empty and inverted
//! ranges, empty and oversized batches, deletes past the end, calls after
//! close, and every configuration value at and just past its limits. Each
//! call must return a clear error naming its input, or a defined result;
//! never panic, never lose or alter an entry (SPEC sections 3 and 4). Data
//! dirs that are hostile themselves are in `hostile_data_dir.rs`.

use std::fs;
use std::time::Duration;

use segwal_format::{MAX_BODY_LEN, MetaEntry, RECORD_HEADER_LEN};
use segwal_manager::{
    Error, LOCK_FILE, META_FILE, ManagerConfig, SegmentManager, SyncMode, dump_table, inspect,
};

#[path = "support/layout.rs"]
mod layout;

use layout::{files_with_lengths, log_files_with_lengths, segment_files, write_meta_log};

#[path = "support/hostile.rs"]
mod hostile;

use hostile::{MAX, config, drain, drain_by, floor, open, sequences};

/// Proves that the last sequence numbers of `u64` behave as SPEC 3.1 says:
/// `u64::MAX - 1` is the last one assigned, a batch that would need
/// `u64::MAX` is refused with "sequence numbers exhausted" before anything
/// is written, and entries at the top are read, deleted and recovered like
/// any others.
#[test]
fn the_last_sequence_numbers_are_assigned_and_then_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_meta_log(dir.path(), &[floor(3, MAX - 2)]);
    let wal = open(dir.path());
    assert_eq!(wal.write(3, 1, &[b"third to last"]).unwrap(), MAX - 2);
    // Two entries would need MAX - 1 and MAX: refused whole, no number used.
    let err = wal.write(3, 1, &[b"a".as_slice(), b"b"]).unwrap_err();
    assert!(
        matches!(err, Error::SequenceExhausted { region_id: 3 }),
        "{err}"
    );
    assert_eq!(err.to_string(), "region 3: sequence numbers exhausted");
    assert_eq!(wal.write(3, 2, &[b"last"]).unwrap(), MAX - 1);
    for entries in [&[b"x".as_slice()][..], &[b"x", b"y"]] {
        let err = wal.write(3, 1, entries).unwrap_err();
        assert!(matches!(err, Error::SequenceExhausted { .. }), "{err}");
    }
    let empty: [&[u8]; 0] = [];
    assert!(matches!(
        wal.write(3, 1, &empty),
        Err(Error::EmptyBatch { .. })
    ));
    // Other regions are unaffected.
    assert_eq!(wal.write(4, 1, &[b"elsewhere"]).unwrap(), 1);

    let check = |wal: &SegmentManager| {
        assert_eq!(wal.sequence_num(3, 1).unwrap(), MAX - 2);
        assert_eq!(wal.sequence_num(3, 2).unwrap(), MAX - 1);
        assert_eq!(sequences(wal, 3, 1, 0, MAX), [MAX - 2]);
        assert_eq!(sequences(wal, 3, 2, MAX - 1, MAX), [MAX - 1]);
        assert_eq!(sequences(wal, 3, 2, MAX, MAX), Vec::<u64>::new());
        assert_eq!(sequences(wal, 3, 2, MAX - 1, MAX - 1), [MAX - 1]);
        assert_eq!(sequences(wal, 3, 2, 0, MAX - 2), Vec::<u64>::new());
        assert_eq!(
            drain(wal.scan(3).unwrap()),
            [
                (1, MAX - 2, b"third to last".to_vec()),
                (2, MAX - 1, b"last".to_vec())
            ]
        );
    };
    check(&wal);
    wal.close().unwrap();
    drop(wal);

    // Recovery rebuilds the top: the next number is u64::MAX, which is
    // never assigned.
    let wal = open(dir.path());
    check(&wal);
    assert!(wal.statistics().regions.contains(&(3, MAX)));
    assert!(matches!(
        wal.write(3, 1, &[b"x"]),
        Err(Error::SequenceExhausted { .. })
    ));
    wal.mark_delete_entries_up_to(3, 2, MAX).unwrap();
    wal.mark_delete_entries_up_to(3, 1, MAX - 2).unwrap();
    assert!(drain(wal.scan(3).unwrap()).is_empty());
    assert_eq!(wal.sequence_num(3, 2).unwrap(), MAX - 1);
    drop(wal);
    let wal = open(dir.path());
    assert!(drain(wal.scan(3).unwrap()).is_empty());
    assert_eq!(wal.sequence_num(3, 2).unwrap(), MAX - 1);
    assert!(matches!(
        wal.write(3, 1, &[b"x"]),
        Err(Error::SequenceExhausted { .. })
    ));
}

/// Proves that a floor of `u64::MAX` (every number used) refuses the first
/// write, a floor of 0 is the same as none (numbering starts at 1), and a
/// table's recorded largest number of `u64::MAX - 1` leaves its region no
/// number to assign, however its other tables write; and that all of it
/// survives a reopen (the META log is rewritten as a snapshot then).
#[test]
fn sequence_floors_of_zero_and_max() {
    let dir = tempfile::tempdir().unwrap();
    write_meta_log(
        dir.path(),
        &[
            floor(1, MAX),
            floor(2, 0),
            MetaEntry::TableMax {
                region_id: 4,
                table_id: 1,
                max_sequence: MAX - 1,
            },
        ],
    );
    for reopen in [false, true] {
        let wal = open(dir.path());
        assert!(matches!(
            wal.write(1, 1, &[b"x"]),
            Err(Error::SequenceExhausted { region_id: 1 })
        ));
        assert_eq!(wal.sequence_num(1, 1).unwrap(), 0);
        assert_eq!(wal.sequence_num(4, 1).unwrap(), MAX - 1);
        for table in [1, 2] {
            assert!(matches!(
                wal.write(4, table, &[b"x"]),
                Err(Error::SequenceExhausted { region_id: 4 })
            ));
        }
        assert_eq!(wal.sequence_num(4, 2).unwrap(), 0);
        assert!(drain(wal.scan(4).unwrap()).is_empty());
        let next = if reopen { 2 } else { 1 };
        assert_eq!(wal.write(2, 1, &[b"x"]).unwrap(), next);
        wal.close().unwrap();
    }
}

/// Proves that reads with ranges at and beyond the limits (0, 1, the
/// table's first and last numbers, `u64::MAX - 1`, `u64::MAX`), empty and
/// inverted, yield exactly the live entries in `[start, end]`, and that a
/// delete mark is honoured at every such boundary.
#[test]
fn reads_at_every_boundary_return_exactly_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path());
    // Table 5 gets 2, 4, 6, 8; table 6 the odd numbers.
    for i in 1..=8u64 {
        wal.write(1, 5 + (i % 2), &[i.to_le_bytes()]).unwrap();
    }
    let bounds = [0, 1, 2, 3, 4, 7, 8, 9, MAX - 1, MAX];
    for mark in [0, 1, 4, 8] {
        wal.mark_delete_entries_up_to(1, 5, mark).unwrap();
        for start in bounds {
            for end in bounds {
                let want: Vec<u64> = [2, 4, 6, 8]
                    .into_iter()
                    .filter(|&s| s > mark && start <= s && s <= end)
                    .collect();
                let got = drain(wal.read(1, 5, start, end).unwrap());
                assert_eq!(
                    got.iter().map(|e| e.1).collect::<Vec<_>>(),
                    want,
                    "[{start}, {end}] with mark {mark}"
                );
                for (table, sequence, bytes) in got {
                    assert_eq!((table, bytes), (5, sequence.to_le_bytes().to_vec()));
                }
            }
        }
    }
    // Tables and regions never written read as empty, and reading them
    // creates or changes nothing on disk.
    let files = log_files_with_lengths(dir.path());
    assert!(sequences(&wal, 1, 7, 0, MAX).is_empty());
    assert!(sequences(&wal, 9, 5, 0, MAX).is_empty());
    assert!(drain(wal.scan(9).unwrap()).is_empty());
    assert_eq!(wal.sequence_num(9, 5).unwrap(), 0);
    assert_eq!(log_files_with_lengths(dir.path()), files);
}

/// Proves that an iterator asked for zero entries hands out none and loses
/// none: the entries come with the next call that asks for some.
#[test]
fn next_batch_of_zero_entries_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path());
    wal.write(1, 1, &[b"a".as_slice(), b"b", b"c"]).unwrap();
    let mut iter = wal.read(1, 1, 0, MAX).unwrap();
    let mut seen = Vec::new();
    assert_eq!(iter.next_batch(0, |e| seen.push(e.sequence)).unwrap(), 0);
    assert_eq!(iter.next_batch(2, |e| seen.push(e.sequence)).unwrap(), 2);
    assert_eq!(iter.next_batch(0, |e| seen.push(e.sequence)).unwrap(), 0);
    assert_eq!(
        iter.next_batch(usize::MAX, |e| seen.push(e.sequence))
            .unwrap(),
        1
    );
    assert_eq!(iter.next_batch(1, |e| seen.push(e.sequence)).unwrap(), 0);
    assert_eq!(seen, [1, 2, 3]);
}

/// Proves that batches the WAL cannot take are refused with an error naming
/// the region, table and sizes before anything is written or any number is
/// used: empty, an entry one byte over the maximum (for the smallest and
/// the default maximum), and a batch over the format's 1 GiB record limit
/// made of entries that are each allowed. Entries exactly at the maximum,
/// and empty entries, are accepted.
#[test]
fn unacceptable_batches_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let wal = SegmentManager::open(ManagerConfig {
        max_entry_size_bytes: 1,
        ..config(dir.path())
    })
    .unwrap();
    let empty: [&[u8]; 0] = [];
    let err = wal.write(MAX, 0, &empty).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("region {MAX} table 0: cannot write an empty batch")
    );
    let err = wal.write(MAX, 0, &[b"".as_slice(), b"ab"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("region {MAX} table 0: entry 1 is 2 bytes, more than the maximum of 1")
    );
    assert!(
        segment_files(dir.path()).is_empty(),
        "refused batches write nothing"
    );
    assert_eq!(wal.write(MAX, 0, &[b"".as_slice(), b"a"]).unwrap(), 2);
    wal.close().unwrap();
    drop(wal);

    // The default maximum (16 MiB) and the largest allowed one. The
    // buffers are never written to, so they cost no memory.
    let wal = SegmentManager::open(config(dir.path())).unwrap();
    let over = vec![0u8; (16 << 20) + 1];
    let err = wal.write(MAX, 0, &[&over[..]]).unwrap_err();
    assert!(
        matches!(err, Error::EntryTooLarge { index: 0, len, max, .. }
            if len == over.len() && max == 16 << 20),
        "{err}"
    );
    drop(wal);
    let largest = u64::from(MAX_BODY_LEN) - 4;
    let wal = SegmentManager::open(ManagerConfig {
        max_entry_size_bytes: largest,
        ..config(dir.path())
    })
    .unwrap();
    let big = vec![0u8; largest as usize];
    let err = wal.write(MAX, 0, &[&big[..], &big[..]]).unwrap_err();
    assert!(
        matches!(err, Error::BatchTooLarge { region_id: MAX, table_id: 0, len, max }
            if len == RECORD_HEADER_LEN as u64 + 2 * u64::from(MAX_BODY_LEN)
                && max == RECORD_HEADER_LEN as u64 + u64::from(MAX_BODY_LEN)),
        "{err}"
    );
    assert!(err.to_string().contains("more than the limit"), "{err}");
    assert_eq!(wal.write(MAX, 0, &[b"after"]).unwrap(), 3, "no number used");
    assert_eq!(
        segment_files(dir.path()).len(),
        2,
        "{:?}",
        segment_files(dir.path())
    );
}

/// Proves that a batch of 100 000 empty entries (400 KB of length prefixes,
/// far larger than a segment) is one atomic record with consecutive
/// numbers, read back whole, deleted in part, and recovered.
#[test]
fn a_batch_of_many_empty_entries_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path());
    assert_eq!(wal.write(1, 1, &[b"before"]).unwrap(), 1);
    let empty: Vec<&[u8]> = vec![b""; 100_000];
    assert_eq!(wal.write(1, 2, &empty).unwrap(), 100_001);
    assert_eq!(wal.write(1, 1, &[b"after"]).unwrap(), 100_002);
    // Read 25 000 at a time: each `next_batch` verifies and walks the
    // record from its start, so small batches over one huge record cost
    // time quadratic in its size.
    let check = |wal: &SegmentManager, from: u64| {
        let got = drain_by(wal.read(1, 2, 0, MAX).unwrap(), 25_000);
        assert_eq!(got.len() as u64, 100_001 - from + 1);
        for (i, (table, sequence, bytes)) in got.into_iter().enumerate() {
            assert_eq!((table, sequence, bytes.len()), (2, from + i as u64, 0));
        }
        assert_eq!(
            drain(wal.read(1, 1, 0, MAX).unwrap()),
            [(1, 1, b"before".to_vec()), (1, 100_002, b"after".to_vec())]
        );
    };
    check(&wal, 2);
    wal.mark_delete_entries_up_to(1, 2, 50_000).unwrap();
    check(&wal, 50_001);
    drop(wal);
    let wal = open(dir.path());
    check(&wal, 50_001);
    assert_eq!(drain_by(wal.scan(1).unwrap(), 25_000).len(), 50_001 + 2);
}

/// Proves that deletes with hostile numbers have their documented effect:
/// 0 and numbers at or below the current mark change nothing, numbers past
/// the table's last entry (up to `u64::MAX`, and past the region's next
/// number) delete exactly the table's entries and never hide later writes,
/// and deleting in a region or table that was never written succeeds and
/// writes nothing.
#[test]
fn deletes_at_and_past_the_limits() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path());
    for i in 1..=6u64 {
        wal.write(2, i % 2, &[i.to_le_bytes()]).unwrap();
    }
    // What the META log holds: appends, and the file's length.
    let meta = |wal: &SegmentManager| {
        let len = fs::metadata(dir.path().join(META_FILE)).unwrap().len();
        (wal.statistics().meta_writes, len)
    };
    let unchanged = meta(&wal);
    // Table 1 holds 1, 3, 5; table 0 holds 2, 4, 6; the next number is 7.
    wal.mark_delete_entries_up_to(2, 1, 0).unwrap();
    assert_eq!(sequences(&wal, 2, 1, 0, MAX), [1, 3, 5]);
    assert_eq!(meta(&wal), unchanged, "a delete up to 0 writes nothing");
    wal.mark_delete_entries_up_to(2, 1, 3).unwrap();
    let unchanged = meta(&wal);
    wal.mark_delete_entries_up_to(2, 1, 1).unwrap();
    assert_eq!(
        meta(&wal),
        unchanged,
        "a mark at or below the mark writes nothing"
    );
    assert_eq!(
        sequences(&wal, 2, 1, 0, MAX),
        [5],
        "a mark never moves back"
    );
    wal.mark_delete_entries_up_to(2, 1, 1000).unwrap();
    assert!(sequences(&wal, 2, 1, 0, MAX).is_empty());
    wal.mark_delete_entries_up_to(2, 0, MAX).unwrap();
    assert!(drain(wal.scan(2).unwrap()).is_empty());
    assert_eq!(wal.sequence_num(2, 1).unwrap(), 5);
    assert_eq!(wal.sequence_num(2, 0).unwrap(), 6);
    // The marks were clamped to each table's last entry: later writes show.
    assert_eq!(wal.write(2, 1, &[b"seven"]).unwrap(), 7);
    assert_eq!(wal.write(2, 0, &[b"eight"]).unwrap(), 8);
    let unchanged = meta(&wal);
    let files = log_files_with_lengths(dir.path());
    wal.mark_delete_entries_up_to(9, 9, MAX).unwrap();
    wal.mark_delete_entries_up_to(2, 9, MAX).unwrap();
    assert_eq!(meta(&wal), unchanged, "deletes of nothing write nothing");
    assert_eq!(log_files_with_lengths(dir.path()), files);
    assert_eq!(wal.sequence_num(2, 9).unwrap(), 0);
    drop(wal);

    let wal = open(dir.path());
    assert_eq!(
        drain(wal.scan(2).unwrap()),
        [(1, 7, b"seven".to_vec()), (0, 8, b"eight".to_vec())]
    );
    assert_eq!(wal.write(2, 9, &[b"nine"]).unwrap(), 9);
}

/// Proves that region and table ids 0 and `u64::MAX` work end to end: they
/// are written into the records of the shared log and map back to the
/// same ids at recovery, `inspect` and `dump_table` find them, and neither
/// creates a file or directory of its own; names that look like segments
/// or version-2 region directories but are not (`u64::MAX + 1`, too short,
/// a directory without segments) are ignored by the WAL and the tools
/// alike.
#[test]
fn region_and_table_ids_at_the_limits_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let locations = [(0, 0), (0, MAX), (MAX, 0), (MAX, MAX), (1, MAX - 1)];
    {
        let wal = open(dir.path());
        for (i, &(region, table)) in locations.iter().enumerate() {
            let payload = format!("{region}/{table}/{i}");
            wal.write(region, table, &[payload.as_bytes()]).unwrap();
        }
        wal.close().unwrap();
    }
    assert_eq!(
        layout::names(dir.path()),
        [
            "00000000000000000001.seg".to_string(),
            LOCK_FILE.into(),
            META_FILE.into()
        ],
        "one segment holds every region"
    );
    fs::write(dir.path().join("18446744073709551616.seg"), b"stray").unwrap();
    fs::write(dir.path().join("0000000000000000001.seg"), b"stray").unwrap();
    fs::create_dir(dir.path().join("18446744073709551615")).unwrap();
    fs::write(dir.path().join("00000000000000000005"), b"a file").unwrap();

    let report = inspect(dir.path()).unwrap();
    assert!(report.is_clean());
    assert_eq!(
        report.regions().into_iter().collect::<Vec<_>>(),
        [0, 1, MAX]
    );
    assert_eq!(report.segments.len(), 1);
    let tables: Vec<(u64, u64)> = report.segments[0].tables.keys().copied().collect();
    assert_eq!(
        tables,
        [(0, 0), (0, MAX), (1, MAX - 1), (MAX, 0), (MAX, MAX)]
    );
    let mut dumped = Vec::new();
    dump_table(dir.path(), MAX, MAX, 0, MAX, |e| {
        dumped.push((e.sequence, e.payload.to_vec()));
    })
    .unwrap();
    assert_eq!(dumped, [(2, format!("{MAX}/{MAX}/3").into_bytes())]);

    let wal = open(dir.path());
    for (i, &(region, table)) in locations.iter().enumerate() {
        let got = drain(wal.read(region, table, 0, MAX).unwrap());
        assert_eq!(got.len(), 1, "{region}/{table}");
        assert_eq!(got[0].2, format!("{region}/{table}/{i}").into_bytes());
    }
    let regions: Vec<u64> = wal.statistics().regions.iter().map(|r| r.0).collect();
    assert_eq!(regions, [0, 1, MAX]);
    assert_eq!(wal.write(MAX, MAX, &[b"more"]).unwrap(), 3);
    assert_eq!(wal.sequence_num(0, MAX).unwrap(), 2);
}

/// Proves that every configuration value is accepted up to its limit and
/// refused one past it with an error naming the value, before the data dir
/// is created: segment sizes 0, 1, 4095 / 4096 / 1 TiB / 1 TiB + 1 /
/// `u64::MAX`; cache sizes 0 / 1 / `usize::MAX`; maximum entry sizes 0 / 1 /
/// 1 GiB - 4 / 1 GiB - 3 / `u64::MAX`; sync intervals 0 / 1 ns /
/// `Duration::MAX`. The accepted extremes then work: a cache of one
/// segment serves reads over many, and an interval that never elapses
/// still syncs on close. A WAL with 1 TiB segments is opened only on a
/// small tmpfs (`a_segment_larger_than_the_disk_is_an_error_not_a_crash`),
/// never on the disk the other tests share.
#[test]
fn configuration_values_at_and_past_their_limits() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let with = |f: &dyn Fn(&mut ManagerConfig)| {
        let mut config = config(&data);
        f(&mut config);
        config
    };
    let refused = [
        (with(&|c| c.segment_size_bytes = 0), "segment size 0 bytes"),
        (with(&|c| c.segment_size_bytes = 1), "segment size 1 bytes"),
        (
            with(&|c| c.segment_size_bytes = 4095),
            "segment size 4095 bytes",
        ),
        (
            with(&|c| c.segment_size_bytes = (1 << 40) + 1),
            "segment size 1099511627777 bytes",
        ),
        (
            with(&|c| c.segment_size_bytes = MAX),
            "segment size 18446744073709551615 bytes",
        ),
        (with(&|c| c.cache_size = 0), "cache size must be at least 1"),
        (
            with(&|c| c.max_entry_size_bytes = 0),
            "maximum entry size 0 bytes",
        ),
        (
            with(&|c| c.max_entry_size_bytes = u64::from(MAX_BODY_LEN) - 3),
            "maximum entry size 1073741821 bytes",
        ),
        (
            with(&|c| c.max_entry_size_bytes = MAX),
            "maximum entry size 18446744073709551615 bytes",
        ),
        (
            with(&|c| c.sync_mode = SyncMode::Interval(Duration::ZERO)),
            "sync interval must be positive",
        ),
    ];
    for (config, message) in refused {
        let err = SegmentManager::open(config).unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
        assert!(err.to_string().contains(message), "{message}: {err}");
        assert!(!data.exists(), "{message}: nothing is created");
    }

    let accepted = [
        with(&|c| c.segment_size_bytes = 4096),
        with(&|c| c.cache_size = usize::MAX),
        with(&|c| c.max_entry_size_bytes = 1),
        with(&|c| c.max_entry_size_bytes = u64::from(MAX_BODY_LEN) - 4),
        with(&|c| c.sync_mode = SyncMode::Interval(Duration::from_nanos(1))),
        with(&|c| c.sync_mode = SyncMode::Interval(Duration::MAX)),
    ];
    for config in accepted {
        let description = format!("{config:?}");
        let wal = SegmentManager::open(config).unwrap();
        assert_eq!(wal.sequence_num(1, 1).unwrap(), 0, "{description}");
        wal.close().unwrap();
    }

    // A cache of one sealed segment still serves a read over many.
    let wal = SegmentManager::open(with(&|c| c.cache_size = 1)).unwrap();
    for i in 0..40u64 {
        wal.write(1, 1, &[vec![i as u8; 300]]).unwrap();
    }
    assert!(wal.statistics().segments_live >= 3);
    let got = drain(wal.read(1, 1, 0, MAX).unwrap());
    assert_eq!(got.len(), 40);
    assert!(got.iter().all(|(_, s, p)| *p == vec![(*s - 1) as u8; 300]));
    wal.close().unwrap();

    // An interval that never elapses: writes are synced on close.
    let wal = SegmentManager::open(with(&|c| {
        c.sync_mode = SyncMode::Interval(Duration::MAX);
    }))
    .unwrap();
    assert_eq!(wal.write(2, 1, &[b"x"]).unwrap(), 1);
    wal.close().unwrap();
    let wal = SegmentManager::open(config(&data)).unwrap();
    assert_eq!(sequences(&wal, 2, 1, 0, MAX), [1]);
}

/// Proves that calls after `close` fail with the "closed" error and touch
/// nothing, and that closing a region that was never opened succeeds.
#[test]
fn calls_after_close_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path());
    wal.close_region(MAX).unwrap();
    wal.write(1, 1, &[b"x"]).unwrap();
    wal.close().unwrap();
    let files = files_with_lengths(dir.path());
    let results = [
        wal.write(1, 1, &[b"y"]).map(drop),
        wal.sequence_num(1, 1).map(drop),
        wal.mark_delete_entries_up_to(1, 1, MAX),
        wal.read(1, 1, 0, MAX).map(drop),
        wal.read(1, 1, MAX, 0).map(drop),
        wal.scan(1).map(drop),
        wal.close_region(1),
        wal.close_region(2),
        wal.close(),
        wal.check_open(),
    ];
    for result in results {
        let err = result.unwrap_err();
        assert!(matches!(err, Error::Closed), "{err}");
        assert_eq!(err.to_string(), "the WAL is closed");
    }
    assert_eq!(files_with_lengths(dir.path()), files);
}
