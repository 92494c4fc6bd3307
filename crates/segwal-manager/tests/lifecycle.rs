//! Segment lifecycle inside the manager: the open-segment cache, segments
//! prepared ahead of need, and group commit.

use std::fs;
use std::path::Path;
use std::sync::{Arc, Barrier};

use segwal_manager::{EntryIter, ManagerConfig, SegmentManager, SyncMode};

fn drain(mut iter: EntryIter) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    while iter
        .next_batch(64, |e| out.push((e.sequence, e.payload.to_vec())))
        .unwrap()
        > 0
    {}
    out
}

fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(suffix))
        .collect();
    names.sort();
    names
}

/// Proves that the open-segment cache bounds the files kept open between
/// reads, that evicted segments come back (verified) when a read needs
/// them, and that an iterator keeps reading segments evicted or deleted
/// after it was created.
#[test]
fn reads_reopen_segments_evicted_from_a_small_cache() {
    let dir = tempfile::tempdir().unwrap();
    let config = ManagerConfig {
        segment_size_bytes: 4096,
        cache_size: 2,
        ..ManagerConfig::new(dir.path())
    };
    let wal = SegmentManager::open(config.clone()).unwrap();
    let payload = |table: u64, i: u64| format!("t{table}-{i:04}-{}", "x".repeat(200)).into_bytes();
    let mut expected: Vec<Vec<(u64, Vec<u8>)>> = vec![Vec::new(); 3];
    for i in 0..150 {
        let table = i % 3;
        let p = payload(table, i);
        let seq = wal.write(1, table, &[&p]).unwrap();
        expected[table as usize].push((seq, p));
    }
    let stats = wal.statistics();
    assert!(stats.segments_live >= 8, "{stats}");
    assert!(
        stats.segments_open <= 3,
        "cache of 2 plus the active: {stats}"
    );

    for (table, want) in expected.iter().enumerate() {
        assert_eq!(
            &drain(wal.read(1, table as u64, 0, u64::MAX).unwrap()),
            want
        );
        assert!(wal.statistics().segments_open <= 3);
    }

    // An iterator made now holds its segments: evicting them (by reading
    // another table) and deleting them does not disturb it.
    let held = wal.read(1, 0, 0, u64::MAX).unwrap();
    assert_eq!(drain(wal.scan(1).unwrap()).len(), 150);
    for table in 0..3 {
        wal.mark_delete_entries_up_to(1, table, u64::MAX).unwrap();
    }
    assert!(wal.statistics().segments_live <= 1);
    assert_eq!(drain(held), expected[0]);

    // After a restart, segments are reopened from the recovered lengths.
    wal.close().unwrap();
    let wal = SegmentManager::open(config).unwrap();
    let seq = wal.write(1, 5, &[b"after"]).unwrap();
    assert_eq!(seq, 151);
    assert_eq!(drain(wal.read(1, 0, 0, u64::MAX).unwrap()), []);
    assert_eq!(drain(wal.scan(1).unwrap()), [(151, b"after".to_vec())]);
}

/// Proves that a read takes every segment the cache holds before it
/// reopens any other: after a restart, a scan of a region with more
/// segments than the cache holds maps again only those recovery could
/// not keep, instead of evicting each cached one just before reaching
/// it; and that with a cache large enough it maps none again.
#[test]
fn a_scan_reopens_only_the_segments_the_cache_does_not_hold() {
    let dir = tempfile::tempdir().unwrap();
    let config = |cache_size| ManagerConfig {
        segment_size_bytes: 4096,
        cache_size,
        ..ManagerConfig::new(dir.path())
    };
    let wal = SegmentManager::open(config(2)).unwrap();
    for i in 0..40u64 {
        wal.write(1, i % 3, &[vec![i as u8; 500]]).unwrap();
    }
    wal.close().unwrap();

    let wal = SegmentManager::open(config(2)).unwrap();
    let segments = wal.statistics().segments_live;
    assert!(segments >= 6, "{}", wal.statistics());
    assert_eq!(wal.statistics().segments_reopened, 0);
    assert_eq!(drain(wal.scan(1).unwrap()).len(), 40);
    assert_eq!(wal.statistics().segments_reopened, segments - 2);
    wal.close().unwrap();

    let wal = SegmentManager::open(config(segments as usize)).unwrap();
    assert_eq!(drain(wal.scan(1).unwrap()).len(), 40);
    assert_eq!(wal.statistics().segments_reopened, 0);
}

/// Proves that the next segment is prepared in the background so that
/// most rollovers only switch to it, that closing removes an unused one,
/// and that recovery removes a spare a crash left behind, being prepared
/// under its temporary name (here: a copy of the data dir taken while one
/// existed, two regions writing), without mistaking the segment before it
/// for a sealed one.
#[test]
fn rollovers_use_segments_prepared_ahead_and_leave_no_spares_behind() {
    let dir = tempfile::tempdir().unwrap();
    let config = ManagerConfig {
        segment_size_bytes: 16 << 10,
        sync_mode: SyncMode::Never,
        ..ManagerConfig::new(dir.path())
    };
    let wal = SegmentManager::open(config.clone()).unwrap();
    let entry = vec![7u8; 1000];
    for i in 0..200u64 {
        wal.write(3 + i % 2, 1, &[&entry]).unwrap();
    }
    let stats = wal.statistics();
    assert!(stats.segments_created >= 10, "{stats}");
    assert!(stats.spares_used >= 1, "{stats}");

    // Write until a spare is being prepared (under its temporary name, for
    // a moment: it is renamed into place once ready), then take a copy of
    // the files as a crash would leave them.
    let crash = tempfile::tempdir().unwrap();
    for i in 0.. {
        wal.write(3 + i % 2, 1, &[&entry]).unwrap();
        if files_with_suffix(dir.path(), ".spare").is_empty() {
            continue;
        }
        // The spare may still be being written: a copy of a partly
        // created file is what a crash can leave, too. If it was renamed
        // into place between the listing and the copy, the copy is not a
        // state a crash leaves (a file missing), or holds no spare (renamed
        // before the copy listed the files): try again at the next one.
        let copied = fs::read_dir(dir.path()).unwrap().all(|name| {
            let name = name.unwrap().file_name();
            match fs::copy(dir.path().join(&name), crash.path().join(&name)) {
                Ok(_) => true,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => false,
                Err(err) => panic!("copying {name:?}: {err}"),
            }
        });
        if copied && !files_with_suffix(crash.path(), ".spare").is_empty() {
            break;
        }
        for name in fs::read_dir(crash.path()).unwrap() {
            fs::remove_file(name.unwrap().path()).unwrap();
        }
    }
    let last = [3, 4].map(|region| (region, wal.sequence_num(region, 1).unwrap()));
    wal.close().unwrap();
    assert_eq!(
        files_with_suffix(dir.path(), ".spare"),
        Vec::<String>::new()
    );
    assert!(!files_with_suffix(crash.path(), ".spare").is_empty());

    // The open prepares a spare of its own for the first write (under the
    // crashed spare's name, the next id): at most one is there, and once
    // closed, none.
    let recovered = SegmentManager::open(ManagerConfig::new(crash.path())).unwrap();
    assert!(files_with_suffix(crash.path(), ".spare").len() <= 1);
    for (region, last) in last {
        assert_eq!(recovered.sequence_num(region, 1).unwrap(), last);
        assert_eq!(
            drain(recovered.read(region, 1, 0, u64::MAX).unwrap()).len() as u64,
            last
        );
        assert_eq!(recovered.write(region, 1, &[b"after"]).unwrap(), last + 1);
    }
    recovered.close().unwrap();
    assert_eq!(
        files_with_suffix(crash.path(), ".spare"),
        Vec::<String>::new()
    );
}

/// Proves group commit across regions: with many writers, each to a
/// region of its own, under SyncMode::Always, one sync of the shared log
/// covers several batches. (A round where no
/// two writers ever overlap a sync is possible in principle, so rounds
/// repeat; in practice the first one shows it.)
#[test]
fn concurrent_writers_share_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Arc::new(SegmentManager::open(ManagerConfig::new(dir.path())).unwrap());
    let writers = 16;
    let per_writer = 50;
    for round in 0..20 {
        let before = wal.statistics();
        let barrier = Arc::new(Barrier::new(writers));
        let threads: Vec<_> = (0..writers as u64)
            .map(|t| {
                let (wal, barrier) = (Arc::clone(&wal), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    for i in 0..per_writer {
                        wal.write(t, 1, &[format!("{t}-{i}").as_bytes()]).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let after = wal.statistics();
        let batches = after.batches_written - before.batches_written;
        let syncs = after.syncs - before.syncs;
        assert_eq!(batches, (writers * per_writer) as u64);
        assert!(syncs <= batches, "{after}");
        if syncs < batches {
            return;
        }
        eprintln!("round {round}: no sync was shared, retrying");
    }
    panic!("twenty rounds of 16 concurrent writers never shared a sync");
}

/// Proves the write-back policy: under `Never` and `Interval` the
/// manager starts write-back of the active segment each time
/// WRITEBACK_CHUNK_BYTES more have been written, so the disk is not
/// handed a whole segment at rollover; under `Always` every write is
/// synced anyway and it never does. Everything stays readable.
#[test]
fn unsynced_segments_start_write_back_as_they_fill_and_synced_ones_never() {
    let payload = vec![0x5a_u8; 64 << 10];
    let batch: Vec<&[u8]> = vec![&payload; 16]; // 1 MiB
    let batches = 2 * segwal_manager::WRITEBACK_CHUNK_BYTES / (1 << 20) + 2;
    for sync_mode in [
        SyncMode::Never,
        SyncMode::Interval(std::time::Duration::from_secs(60)),
        SyncMode::Always,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ManagerConfig::new(dir.path());
        config.sync_mode = sync_mode;
        let wal = SegmentManager::open(config).unwrap();
        for _ in 0..batches {
            wal.write(1, 1, &batch).unwrap();
        }
        let stats = wal.statistics();
        if sync_mode == SyncMode::Always {
            assert_eq!(stats.writebacks, 0, "{sync_mode:?}: {stats}");
        } else {
            assert_eq!(stats.writebacks, 2, "{sync_mode:?}: {stats}");
        }
        let read = drain(wal.read(1, 1, 0, u64::MAX).unwrap());
        assert_eq!(read.len() as u64, batches * 16);
        assert!(read.iter().all(|(_, bytes)| bytes == &payload));
        wal.close().unwrap();
    }
}

/// A segment file's bytes from `len` on are all zeros: where its records
/// end, found the way a test can (the last non-zero byte).
fn written_end(path: &Path) -> usize {
    let bytes = fs::read(path).unwrap();
    bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)
}

/// Writes region 1 under `SyncMode::Always` until a spare stands renamed
/// into place after the active segment, and returns a copy of the data
/// dir taken then (what a crash leaves: every write acknowledged), the
/// entries written, and the active segment's and the spare's names.
fn image_with_prepared_spare() -> (tempfile::TempDir, Vec<(u64, Vec<u8>)>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let wal = SegmentManager::open(ManagerConfig {
        segment_size_bytes: 16 << 10,
        ..ManagerConfig::new(dir.path())
    })
    .unwrap();
    let mut written = Vec::new();
    for i in 0.. {
        let payload = format!("entry {i} {}", "x".repeat(700)).into_bytes();
        let sequence = wal.write(1, 1, &[&payload]).unwrap();
        written.push((sequence, payload));
        let segments = files_with_suffix(dir.path(), ".seg");
        if i >= 30 && segments.len() >= 2 {
            let spare = segments.last().unwrap();
            if written_end(&dir.path().join(spare)) == 48 {
                // A spare is in place: copy before the next write uses it.
                let image = tempfile::tempdir().unwrap();
                for name in files_with_suffix(dir.path(), "") {
                    fs::copy(dir.path().join(&name), image.path().join(&name)).unwrap();
                }
                let active = segments[segments.len() - 2].clone();
                return (image, written, active, spare.clone());
            }
        }
        assert!(i < 10_000, "no spare was ever put in place");
    }
    unreachable!()
}

/// Proves that a spare renamed into place, which no write reached, does
/// not make the segment before it look sealed: a crash image whose active
/// segment ends in a torn write (bytes past its last record that no record
/// decodes from) and is followed by a prepared spare opens under the
/// default recovery mode with every acknowledged entry, the torn bytes cut
/// and the spare removed, and `Strict` reports the torn tail naming the
/// active segment rather than calling it corruption; `inspect` notes both,
/// as no damage.
#[test]
fn a_prepared_spare_does_not_hide_a_torn_tail_before_it() {
    let (image, written, active, spare) = image_with_prepared_spare();
    let active_path = image.path().join(&active);
    let end = written_end(&active_path);
    let mut bytes = fs::read(&active_path).unwrap();
    bytes[end..end + 40].fill(0xA5);
    fs::write(&active_path, &bytes).unwrap();

    let strict = tempfile::tempdir().unwrap();
    for name in files_with_suffix(image.path(), "") {
        fs::copy(image.path().join(&name), strict.path().join(&name)).unwrap();
    }
    let err = SegmentManager::open(ManagerConfig {
        recovery_mode: segwal_manager::RecoveryMode::Strict,
        ..ManagerConfig::new(strict.path())
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(&active) && err.contains("torn"),
        "Strict names the torn tail of {active}: {err}"
    );

    // `inspect` judges as recovery does: two notes, no damage.
    let report = segwal_manager::inspect(image.path()).unwrap();
    let notes: Vec<_> = report
        .problems()
        .map(|p| (p.path.clone(), p.is_damage, p.message.clone()))
        .collect();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes.iter().all(|(_, damage, _)| !damage), "{notes:?}");
    assert!(
        notes
            .iter()
            .any(|(path, _, message)| path.ends_with(&spare) && message.contains("prepared ahead"))
    );
    assert!(notes.iter().any(|(path, _, _)| path.ends_with(&active)));

    let wal = SegmentManager::open(ManagerConfig::new(image.path())).unwrap();
    assert!(!image.path().join(&spare).exists(), "the spare is removed");
    assert_eq!(drain(wal.read(1, 1, 0, u64::MAX).unwrap()), written);
    let next = written.len() as u64 + 1;
    assert_eq!(wal.write(1, 1, &[b"after"]).unwrap(), next);
    wal.close().unwrap();
    assert_eq!(written_end(&active_path), end, "the torn bytes were zeroed");
}

/// Proves that a newest segment whose first record is damaged (zeroed, as
/// a spare's bytes are) but whose later records are intact is not taken
/// for a prepared spare and removed: the open refuses it as corruption
/// naming the file, the file stays as it was, and `SkipCorrupted` reads
/// the records after the damage.
#[test]
fn a_newest_segment_with_its_first_record_zeroed_is_not_taken_for_a_spare() {
    let (image, written, active, spare) = image_with_prepared_spare();
    fs::remove_file(image.path().join(&spare)).unwrap();
    let active_path = image.path().join(&active);
    let mut bytes = fs::read(&active_path).unwrap();
    bytes[48..48 + 64].fill(0);
    fs::write(&active_path, &bytes).unwrap();

    let err = SegmentManager::open(ManagerConfig::new(image.path()))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&active), "{err}");
    assert_eq!(fs::read(&active_path).unwrap(), bytes, "the file is kept");

    let wal = SegmentManager::open(ManagerConfig {
        recovery_mode: segwal_manager::RecoveryMode::SkipCorrupted,
        ..ManagerConfig::new(image.path())
    })
    .unwrap();
    let read = drain(wal.read(1, 1, 0, u64::MAX).unwrap());
    assert_eq!(read.len() + 1, written.len(), "one record is skipped");
    let missing = read
        .iter()
        .zip(&written)
        .position(|(r, w)| r != w)
        .unwrap_or(read.len());
    assert_eq!(read[..missing], written[..missing]);
    assert_eq!(read[missing..], written[missing + 1..]);
    wal.close().unwrap();
}
