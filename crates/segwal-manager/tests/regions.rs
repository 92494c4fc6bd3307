//! Many regions in one shared log: hundreds of regions written at once,
//! regions that cost no file, segments shared by regions and removed only
//! when every region has deleted its records in them, regions closed and
//! used again while others write, several streams and a stream count that
//! changes between opens, and the refusal of the old per-region layout.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use segwal_format::{FORMAT_VERSION, SEGMENT_HEADER_LEN, SegmentHeader, record_len};
use segwal_manager::{
    EntryIter, Error, LOCK_FILE, META_FILE, ManagerConfig, RecoveryMode, SegmentManager, SyncMode,
    inspect,
};

#[path = "support/layout.rs"]
mod layout;

use layout::{
    check_layout, files_with_lengths, log_files_with_lengths, segment_bytes, segment_files,
};

/// Every live entry of each region: region -> sequence -> (table, payload).
type Model = BTreeMap<u64, BTreeMap<u64, (u64, Vec<u8>)>>;

fn config(dir: &Path, streams: usize, segment_size_bytes: u64) -> ManagerConfig {
    ManagerConfig {
        streams,
        segment_size_bytes,
        ..ManagerConfig::new(dir)
    }
}

/// Every entry of `iter` as (table, sequence, payload).
fn drain(mut iter: EntryIter) -> Vec<(u64, u64, Vec<u8>)> {
    let mut out = Vec::new();
    while iter
        .next_batch(64, |e| {
            out.push((e.table_id, e.sequence, e.payload.to_vec()));
        })
        .unwrap()
        > 0
    {}
    out
}

/// The payload of entry `k` of batch `batch` of a table: names where it
/// belongs, padded with 20 to 419 more bytes.
fn payload(region: u64, table: u64, batch: u64, k: u64) -> Vec<u8> {
    let mut bytes = format!("r{region}t{table}b{batch}e{k}-").into_bytes();
    let pad = (region * 7919 + table * 104_729 + batch * 31 + k * 17) % 400 + 20;
    bytes.resize(bytes.len() + pad as usize, b'a' + (region % 26) as u8);
    bytes
}

/// A batch written: region, table, the batch's number in its table, and
/// its first and last sequence numbers.
type Batch = (u64, u64, u64, u64, u64);

/// Checks that `wal` holds exactly `model` for each of `regions`: a scan
/// of every region, and a read of each of its `tables`, return exactly
/// the live entries, in order. `label` names the moment.
fn check(wal: &SegmentManager, model: &Model, regions: &[u64], tables: u64, label: &str) {
    let empty = BTreeMap::new();
    for &region in regions {
        let live = model.get(&region).unwrap_or(&empty);
        let want: Vec<(u64, u64, Vec<u8>)> = live
            .iter()
            .map(|(&seq, (table, bytes))| (*table, seq, bytes.clone()))
            .collect();
        assert!(
            drain(wal.scan(region).unwrap()) == want,
            "{label}: scan of region {region} differs from what was written"
        );
        for table in 0..tables {
            let want: Vec<(u64, u64, Vec<u8>)> = want
                .iter()
                .filter(|(t, _, _)| *t == table)
                .cloned()
                .collect();
            assert!(
                drain(wal.read(region, table, 0, u64::MAX).unwrap()) == want,
                "{label}: read of region {region} table {table} differs from what was written"
            );
        }
    }
}

/// Checks, with the data dir closed, that every segment names a stream and
/// holds records of that stream's regions only (region R writes stream
/// R mod `streams`), for segments from `first_segment` on.
fn check_streams(dir: &Path, streams: u64, first_segment: u64) {
    let report = inspect(dir).unwrap();
    assert!(
        report.is_clean(),
        "{:?}",
        report.problems().collect::<Vec<_>>()
    );
    for segment in report
        .segments
        .iter()
        .filter(|s| s.segment_id >= first_segment)
    {
        let stream = segment.stream_id.expect("every header names its stream");
        assert!(
            stream < streams,
            "segment {}: stream {stream}",
            segment.segment_id
        );
        for &(region, _) in segment.tables.keys() {
            assert_eq!(
                region % streams,
                stream,
                "segment {} of stream {stream} holds a record of region {region}",
                segment.segment_id
            );
        }
    }
}

/// Writes 256 regions x 4 tables from 8 threads (each region's tables by
/// 4 of them), 4 batches of 1 to 3 entries per table, into 64 KiB
/// segments; checks numbering, content, the data dir's layout and its
/// size; then reopens with `streams`, with `other_streams`, and with
/// `streams` again, checking everything each time and writing one more
/// batch per region in between.
fn many_regions_written_at_once(streams: usize, other_streams: usize) {
    const REGIONS: u64 = 256;
    const TABLES: u64 = 4;
    const BATCHES: u64 = 4;
    const THREADS: u64 = 8;
    const SEGMENT: u64 = 64 << 10;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let wal = SegmentManager::open(config(dir, streams, SEGMENT)).unwrap();
    // Every batch, and the records' encoded lengths: their sum and the
    // largest.
    let written: Mutex<Vec<Batch>> = Mutex::default();
    let record_bytes: Mutex<(u64, u64)> = Mutex::default();
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let (wal, written, record_bytes) = (&wal, &written, &record_bytes);
            scope.spawn(move || {
                let mine: Vec<(u64, u64)> = (0..REGIONS)
                    .flat_map(|r| (0..TABLES).map(move |t| (r, t)))
                    .filter(|(r, t)| (r * TABLES + t) % THREADS == thread)
                    .collect();
                for batch in 0..BATCHES {
                    for &(region, table) in &mine {
                        let entries: Vec<Vec<u8>> = (0..(region + table + batch) % 3 + 1)
                            .map(|k| payload(region, table, batch, k))
                            .collect();
                        let last = wal.write(region, table, &entries).unwrap();
                        let first = last + 1 - entries.len() as u64;
                        written
                            .lock()
                            .unwrap()
                            .push((region, table, batch, first, last));
                        let mut bytes = record_bytes.lock().unwrap();
                        bytes.0 += record_len(&entries);
                        bytes.1 = bytes.1.max(record_len(&entries));
                    }
                }
            });
        }
    });
    let written = written.into_inner().unwrap();
    let (records, largest_record) = record_bytes.into_inner().unwrap();
    assert_eq!(written.len() as u64, REGIONS * TABLES * BATCHES);

    // Every region numbers from 1, consecutively, whatever the others do.
    let mut model = Model::new();
    let mut per_region: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for &(region, table, batch, first, last) in &written {
        per_region.entry(region).or_default().extend(first..=last);
        let live = model.entry(region).or_default();
        for (k, seq) in (first..=last).enumerate() {
            live.insert(seq, (table, payload(region, table, batch, k as u64)));
        }
    }
    for (region, mut seqs) in per_region {
        seqs.sort_unstable();
        let n = seqs.len() as u64;
        assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "region {region}");
        for table in 0..TABLES {
            let max = model[&region]
                .iter()
                .filter(|(_, (t, _))| *t == table)
                .map(|(&s, _)| s)
                .max()
                .unwrap();
            assert_eq!(wal.sequence_num(region, table).unwrap(), max);
        }
    }
    let regions: Vec<u64> = (0..REGIONS).collect();
    check(&wal, &model, &regions, TABLES, "after writing");

    // The data dir: no directory, one log, and no more disk than the
    // records, each segment's header and end (a record that did not fit),
    // and per stream an active segment and a spare.
    let label = format!("{streams} streams, open");
    check_layout(dir, streams, &label);
    let segments = segment_files(dir).len() as u64;
    assert!(
        segments >= 30,
        "{label}: {segments} segments: many rollovers"
    );
    let bound = |segments: u64| {
        records
            + segments * (SEGMENT_HEADER_LEN as u64 + largest_record)
            + 2 * streams as u64 * SEGMENT
    };
    let used = segment_bytes(dir);
    assert!(
        used <= bound(segments),
        "{label}: {used} bytes on disk for {records} bytes of records in {segments} segments"
    );
    let stats = wal.statistics();
    // Spares, prepared or not, are not the log's yet.
    let seg_lengths: u64 = files_with_lengths(dir)
        .iter()
        .filter(|(n, _)| segment_files(dir).contains(n))
        .map(|(_, len)| len)
        .sum();
    assert_eq!(
        (stats.segments_live, stats.disk_bytes),
        (segments, seg_lengths),
        "{stats}"
    );
    assert_eq!(stats.regions.len() as u64, REGIONS, "{stats}");
    wal.close().unwrap();
    check_layout(dir, 0, &format!("{streams} streams, closed"));
    check_streams(dir, streams as u64, 0);

    // Reopened: the same content and disk, numbering continues.
    let wal = SegmentManager::open(config(dir, streams, SEGMENT)).unwrap();
    check(&wal, &model, &regions, TABLES, "after a reopen");
    let label = format!("{streams} streams, reopened");
    check_layout(dir, streams, &label);
    let used = segment_bytes(dir);
    let segments = segment_files(dir).len() as u64;
    assert!(used <= bound(segments), "{label}: {used} bytes on disk");

    // The stream count may change between opens: each open reads every
    // stream, and each region then writes to its stream of the moment,
    // continuing its numbering.
    let mut wal = wal;
    for (round, streams) in [streams, other_streams, streams].into_iter().enumerate() {
        if round > 0 {
            wal = SegmentManager::open(config(dir, streams, SEGMENT)).unwrap();
            check(
                &wal,
                &model,
                &regions,
                TABLES,
                &format!("{streams} streams"),
            );
        }
        let first_new = next_segment_id(dir);
        for &region in &regions {
            let live = model.entry(region).or_default();
            let next = live.keys().next_back().map_or(1, |s| s + 1);
            let table = (region + round as u64) % TABLES;
            let bytes = payload(region, table, BATCHES + round as u64, 0);
            assert_eq!(wal.write(region, table, &[&bytes]).unwrap(), next);
            live.insert(next, (table, bytes));
        }
        check(
            &wal,
            &model,
            &regions,
            TABLES,
            &format!("{streams} streams, written"),
        );
        check_layout(dir, streams, &format!("{streams} streams, written"));
        wal.close().unwrap();
        check_streams(dir, streams as u64, first_new);
    }
}

/// The id the next segment of `dir` would get at least: one past the
/// largest there.
fn next_segment_id(dir: &Path) -> u64 {
    segment_files(dir)
        .last()
        .map_or(1, |name| name[..20].parse::<u64>().unwrap() + 1)
}

/// Proves that 256 regions x 4 tables written at once by 8 threads share
/// one log: every region numbers from 1 consecutively, every scan and read
/// returns exactly what was written, before and after a reopen, and the
/// data dir holds no directory, only segments, META and LOCK (and a spare
/// while open), in no more disk than the records need plus two segments;
/// and that a reopen with 4 streams, and back, reads everything.
#[test]
fn many_regions_written_at_once_share_one_log() {
    many_regions_written_at_once(1, 4);
}

/// Proves the same with 4 streams (region R writes stream R mod 4, and
/// each segment holds its stream's regions only), and a reopen with one
/// stream, and back to 4, reads everything.
#[test]
fn many_regions_written_at_once_over_four_streams() {
    many_regions_written_at_once(4, 1);
}

/// Proves that a new region costs no file: writing to region 1000 after
/// region 1 creates no file and changes none (segments are preallocated,
/// so their lengths stay), writes nothing to META, and creates no segment;
/// and that 1000 more regions of one small entry each fill segments only
/// as their bytes do. With 4 streams, the same holds for a region of a
/// stream already written (region 4, then 1000: both stream 0).
#[test]
fn a_new_region_costs_no_file() {
    for (streams, first) in [(1, 1), (4, 4)] {
        let dir = tempfile::tempdir().unwrap();
        // Unsynced: a thousand synced writes would only cost time here.
        let wal = SegmentManager::open(ManagerConfig {
            sync_mode: SyncMode::Never,
            ..config(dir.path(), streams, 64 << 10)
        })
        .unwrap();
        assert_eq!(wal.write(first, 1, &[b"first region"]).unwrap(), 1);
        let files = log_files_with_lengths(dir.path());
        let before = wal.statistics();
        assert_eq!(wal.write(1000, 1, &[b"new region"]).unwrap(), 1);
        assert_eq!(
            log_files_with_lengths(dir.path()),
            files,
            "{streams} streams"
        );
        let after = wal.statistics();
        assert_eq!(
            (after.segments_created, after.meta_writes, after.meta_bytes),
            (
                before.segments_created,
                before.meta_writes,
                before.meta_bytes
            ),
            "{after}"
        );
        assert_eq!(after.regions, [(first, 2), (1000, 2)]);
        check_layout(dir.path(), streams, "two regions");

        let mut records = 0;
        let mut largest = 0;
        for region in 2000..3000u64 {
            let entry = format!("region {region}").into_bytes();
            assert_eq!(wal.write(region, 7, &[&entry]).unwrap(), 1);
            records += record_len(&[&entry]);
            largest = largest.max(record_len(&[&entry]));
        }
        let per_segment = (64 << 10) - SEGMENT_HEADER_LEN as u64 - largest;
        let created = wal.statistics().segments_created;
        assert!(
            created <= records.div_ceil(per_segment) + streams as u64,
            "{streams} streams: {created} segments for {records} bytes of records"
        );
        assert_eq!(segment_files(dir.path()).len() as u64, created);
        check_layout(dir.path(), streams, "a thousand regions");
        wal.close().unwrap();
    }
}

/// Writes `pairs` entries of 200 bytes to table 1 of regions `a` and `b`
/// in turn, into 4 KiB segments, closes the WAL and returns, per segment
/// file, the last sequence number of each region in it.
fn write_in_turn(dir: &Path, streams: usize, a: u64, b: u64, pairs: u64) -> Spans {
    let wal = SegmentManager::open(config(dir, streams, 4096)).unwrap();
    for i in 0..pairs {
        for region in [a, b] {
            assert_eq!(wal.write(region, 1, &[vec![i as u8; 200]]).unwrap(), i + 1);
        }
    }
    wal.close().unwrap();
    let report = inspect(dir).unwrap();
    assert!(report.is_clean());
    report
        .segments
        .iter()
        .map(|segment| {
            let last = |region| segment.tables.get(&(region, 1)).map(|s| s.last_sequence);
            let name = segment
                .path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (name, (last(a), last(b)))
        })
        .collect()
}

/// Per segment file: the last number of region A's and B's table in it.
type Spans = BTreeMap<String, (Option<u64>, Option<u64>)>;

/// Proves that a segment shared by regions A and B stays on disk until
/// both have deleted their records in it, whichever deletes first, and then
/// disappears; and that both regions' numbers survive the removal and
/// reopens: `sequence_num` and the next write's number. Run with one
/// stream, and with 4 (A and B on the same stream).
#[test]
fn a_segment_shared_by_two_regions_stays_until_both_have_deleted() {
    for (streams, a, b) in [(1, 1, 2), (4, 1, 5)] {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let spans = write_in_turn(dir, streams, a, b, 60);
        assert!(spans.len() >= 6, "{spans:?}");
        assert!(
            spans.values().all(|(a, b)| a.is_some() && b.is_some()),
            "every segment holds both regions: {spans:?}"
        );
        let all: Vec<String> = spans.keys().cloned().collect();
        // B deletes up to the end of the third segment: A keeps them all.
        let b_mark = spans[&all[2]].1.unwrap();
        let wal = SegmentManager::open(config(dir, streams, 4096)).unwrap();
        wal.mark_delete_entries_up_to(b, 1, b_mark).unwrap();
        assert_eq!(segment_files(dir), all, "A's records keep every segment");
        // A deletes everything: the segments holding nothing of B's above
        // its mark go, exactly those.
        wal.mark_delete_entries_up_to(a, 1, u64::MAX).unwrap();
        let kept: Vec<String> = spans
            .iter()
            .filter(|(_, (_, last_b))| last_b.unwrap() > b_mark)
            .map(|(name, _)| name.clone())
            .collect();
        assert_eq!(kept.len(), all.len() - 3, "{spans:?}");
        assert_eq!(segment_files(dir), kept);
        let numbers = |wal: &SegmentManager| {
            (
                wal.sequence_num(a, 1).unwrap(),
                wal.sequence_num(b, 1).unwrap(),
            )
        };
        assert_eq!(numbers(&wal), (60, 60));
        drop(wal);

        // Reopened: the same files, numbers, and content.
        let wal = SegmentManager::open(config(dir, streams, 4096)).unwrap();
        assert_eq!(segment_files(dir), kept);
        assert_eq!(numbers(&wal), (60, 60));
        assert!(drain(wal.scan(a).unwrap()).is_empty());
        let b_seqs: Vec<u64> = drain(wal.scan(b).unwrap()).iter().map(|e| e.1).collect();
        assert_eq!(b_seqs, (b_mark + 1..=60).collect::<Vec<_>>());
        assert_eq!(wal.write(a, 1, &[b"a after"]).unwrap(), 61);
        assert_eq!(wal.write(b, 1, &[b"b after"]).unwrap(), 61);
        // B deletes everything, its new entry too: only the segment being
        // written is left, holding A's new entry.
        wal.mark_delete_entries_up_to(b, 1, u64::MAX).unwrap();
        let left = segment_files(dir);
        assert_eq!(left.len(), 1, "{left:?}");
        assert!(!kept.contains(&left[0]), "{left:?}");
        drop(wal);

        let wal = SegmentManager::open(config(dir, streams, 4096)).unwrap();
        assert_eq!(segment_files(dir), left);
        assert_eq!(numbers(&wal), (61, 61));
        assert_eq!(drain(wal.scan(a).unwrap()), [(1, 61, b"a after".to_vec())]);
        assert!(drain(wal.scan(b).unwrap()).is_empty());
        assert_eq!(wal.write(b, 1, &[b"b again"]).unwrap(), 62);
        wal.mark_delete_entries_up_to(a, 1, u64::MAX).unwrap();
        wal.mark_delete_entries_up_to(b, 1, u64::MAX).unwrap();
        drop(wal);
        let wal = SegmentManager::open(config(dir, streams, 4096)).unwrap();
        assert!(segment_files(dir).is_empty(), "{:?}", segment_files(dir));
        assert_eq!(numbers(&wal), (61, 62));
        assert_eq!(wal.write(a, 1, &[b"x"]).unwrap(), 62);
        assert_eq!(wal.write(b, 1, &[b"x"]).unwrap(), 63);
    }
}

/// Writes batches to `regions` (tables 0 to 2) until `done` is set, or for
/// at most `cap` batches, adding each acknowledged entry to `model`; every
/// seventh batch, deletes all but the last two entries of a table.
fn keep_writing(
    wal: &SegmentManager,
    regions: &[u64],
    model: &Mutex<Model>,
    done: &AtomicBool,
    cap: u64,
) {
    for n in 0..cap {
        if done.load(Ordering::Acquire) {
            return;
        }
        let region = regions[n as usize % regions.len()];
        let table = n % 3;
        let entries: Vec<Vec<u8>> = (0..n % 2 + 1)
            .map(|k| payload(region, table, n, k))
            .collect();
        let last = wal.write(region, table, &entries).unwrap();
        let first = last + 1 - entries.len() as u64;
        let mut model = model.lock().unwrap();
        let live = model.entry(region).or_default();
        live.extend((first..=last).zip(entries.into_iter().map(|e| (table, e))));
        if n % 7 == 6 {
            let up_to = wal.sequence_num(region, table).unwrap().saturating_sub(2);
            wal.mark_delete_entries_up_to(region, table, up_to).unwrap();
            live.retain(|&seq, (t, _)| *t != table || seq > up_to);
        }
    }
}

/// Proves that after `close_region(R)` the region's entries read back
/// exactly, from the segments holding them (a cache of two segments keeps
/// few of them open), while three threads keep writing and deleting in
/// other regions, some on R's stream, so that segments are sealed and
/// removed while R is closed; that deletes on the reopened region work
/// and remove what they empty; and that everything holds after a reopen
/// of the WAL. Run with one stream and with 4.
#[test]
fn a_closed_region_reads_back_exactly_while_others_keep_writing() {
    const R: u64 = 7;
    for streams in [1, 4] {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let config = ManagerConfig {
            cache_size: 2,
            ..config(dir, streams, 4096)
        };
        let wal = SegmentManager::open(config.clone()).unwrap();
        let others: Model = Model::new();
        let others = Mutex::new(others);
        let done = AtomicBool::new(false);
        let mut mine = Model::new();
        std::thread::scope(|scope| {
            let writers: Vec<_> = (0..3u64)
                .map(|w| {
                    let regions: Vec<u64> = (0..8).map(|k| 8 + w + 3 * k).collect();
                    let (wal, others, done) = (&wal, &others, &done);
                    scope.spawn(move || keep_writing(wal, &regions, others, done, 2000))
                })
                .collect();
            let mut batch = 0;
            for round in 0..12u64 {
                for _ in 0..4 {
                    let table = batch % 3;
                    let entry = payload(R, table, batch, 0);
                    let seq = wal.write(R, table, &[&entry]).unwrap();
                    mine.entry(R).or_default().insert(seq, (table, entry));
                    batch += 1;
                }
                wal.close_region(R).unwrap();
                check(&wal, &mine, &[R], 3, &format!("round {round}, closed"));
                if round % 3 == 2 {
                    // A delete on the region just reopened by the reads.
                    let table = round % 3;
                    let up_to = wal.sequence_num(R, table).unwrap() - 1;
                    wal.mark_delete_entries_up_to(R, table, up_to).unwrap();
                    let live = mine.get_mut(&R).unwrap();
                    live.retain(|&seq, (t, _)| *t != table || seq > up_to);
                    check(&wal, &mine, &[R], 3, &format!("round {round}, deleted"));
                    wal.close_region(R).unwrap();
                    check(
                        &wal,
                        &mine,
                        &[R],
                        3,
                        &format!("round {round}, closed again"),
                    );
                }
            }
            done.store(true, Ordering::Release);
            for writer in writers {
                writer.join().unwrap();
            }
        });
        let mut model = others.into_inner().unwrap();
        model.extend(mine);
        let regions: Vec<u64> = model.keys().copied().collect();
        assert_eq!(regions.len(), 25);
        check(
            &wal,
            &model,
            &regions,
            3,
            &format!("{streams} streams, done"),
        );
        wal.close().unwrap();

        let wal = SegmentManager::open(config.clone()).unwrap();
        check(
            &wal,
            &model,
            &regions,
            3,
            &format!("{streams} streams, reopened"),
        );
        // Closed, then everything deleted: only the segments being written
        // are left, and on reopen not even those.
        wal.close_region(R).unwrap();
        for &region in &regions {
            for table in 0..3 {
                wal.mark_delete_entries_up_to(region, table, u64::MAX)
                    .unwrap();
            }
        }
        assert!(
            segment_files(dir).len() <= streams,
            "{:?}",
            segment_files(dir)
        );
        wal.close().unwrap();
        let wal = SegmentManager::open(config).unwrap();
        assert!(segment_files(dir).is_empty(), "{:?}", segment_files(dir));
        for region in regions {
            assert!(drain(wal.scan(region).unwrap()).is_empty());
        }
    }
}

/// Proves that a data dir of format version 2 (one 20-digit directory per
/// region holding its segments) is refused with `Error::OldLayout`, whose
/// message names the segment file and both versions, in every recovery
/// mode, and that nothing in it is changed or added but the lock file.
#[test]
fn a_version_2_data_dir_is_refused_naming_the_file_and_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let region_dir = dir.join(format!("{:020}", 3));
    fs::create_dir(&region_dir).unwrap();
    let header = SegmentHeader {
        stream_id: 3,
        segment_id: 1,
        salt: 0x5eed,
        capacity: 4096,
    };
    let mut bytes = header.encode().to_vec();
    assert_eq!(bytes[8], FORMAT_VERSION);
    bytes[8] = 2;
    bytes.resize(4096, 0);
    let segment = region_dir.join("00000000000000000001.seg");
    fs::write(&segment, &bytes).unwrap();
    fs::write(region_dir.join("META"), b"a version-2 region META").unwrap();
    let region_files = files_with_lengths(&region_dir);
    for mode in [
        RecoveryMode::Strict,
        RecoveryMode::TolerateTornTail,
        RecoveryMode::SkipCorrupted,
    ] {
        let err = SegmentManager::open(ManagerConfig {
            recovery_mode: mode,
            ..config(dir, 1, 4096)
        })
        .unwrap_err();
        assert!(
            matches!(&err, Error::OldLayout { path, found: 2 } if *path == segment),
            "{mode:?}: {err:?}"
        );
        let message = err.to_string();
        for part in [
            segment.display().to_string(),
            "format version 2".to_string(),
            format!("format version {FORMAT_VERSION}"),
        ] {
            assert!(message.contains(&part), "{mode:?}: {message}");
        }
        assert_eq!(
            layout::names(dir),
            [format!("{:020}", 3), LOCK_FILE.to_string()],
            "{mode:?}: no META and no segment is written"
        );
        assert_eq!(files_with_lengths(&region_dir), region_files);
        assert_eq!(fs::read(&segment).unwrap(), bytes);
    }
    assert!(!dir.join(META_FILE).exists());
}

/// Sets its flag when dropped, however the thread holding it ends.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Proves that deletes racing `close_region` of their region neither bring
/// deleted entries back nor lose another region's: region 1 deletes its
/// entries one at a time while another thread keeps closing it (and using
/// it again), and region 2's entries, in the same segments, must all stay
/// readable, before and after a reopen, and region 1's deleted ones gone.
#[test]
fn deletes_racing_close_region_keep_every_count_right() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let wal = SegmentManager::open(config(dir, 1, 4096)).unwrap();
    for i in 0..200u64 {
        for region in [1, 2] {
            assert_eq!(wal.write(region, 1, &[vec![i as u8; 100]]).unwrap(), i + 1);
        }
    }
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let deleter = scope.spawn(|| {
            let _done = SetOnDrop(&done);
            for up_to in 1..=150u64 {
                wal.mark_delete_entries_up_to(1, 1, up_to).unwrap();
            }
        });
        let closer = scope.spawn(|| {
            while !done.load(Ordering::Acquire) {
                wal.close_region(1).unwrap();
                wal.sequence_num(1, 1).unwrap();
            }
        });
        closer.join().unwrap();
        deleter.join().expect("a delete panicked");
    });
    let check = |wal: &SegmentManager, label: &str| {
        let region_1: Vec<u64> = drain(wal.read(1, 1, 0, u64::MAX).unwrap())
            .iter()
            .map(|e| e.1)
            .collect();
        assert_eq!(region_1, (151..=200).collect::<Vec<_>>(), "{label}");
        let region_2 = drain(wal.read(2, 1, 0, u64::MAX).unwrap());
        assert_eq!(region_2.len(), 200, "{label}: region 2 lost entries");
    };
    check(&wal, "after the race");
    wal.mark_delete_entries_up_to(1, 1, 180).unwrap();
    check_layout(dir, 1, "after the race");
    let region_2 = drain(wal.read(2, 1, 0, u64::MAX).unwrap());
    assert_eq!(region_2.len(), 200, "region 2 lost entries to a removal");
    drop(wal);
    let wal = SegmentManager::open(config(dir, 1, 4096)).unwrap();
    let region_2 = drain(wal.read(2, 1, 0, u64::MAX).unwrap());
    assert_eq!(region_2.len(), 200, "region 2 lost entries after a reopen");
}

/// Proves that writes racing `close_region` of their region succeed (the
/// region opens again on its next use) and number on without a gap: one
/// thread writes 300 batches to region 1 while another keeps closing it.
#[test]
fn writes_racing_close_region_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let wal = SegmentManager::open(config(dir.path(), 1, 4096)).unwrap();
    let done = AtomicBool::new(false);
    let written = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let _done = SetOnDrop(&done);
            (0..300u64)
                .map(|i| {
                    wal.write(1, 1, &[vec![i as u8; 100]])
                        .map_err(|e| e.to_string())
                })
                .collect::<Vec<_>>()
        });
        while !done.load(Ordering::Acquire) {
            wal.close_region(1).unwrap();
        }
        writer.join().unwrap()
    });
    let failed: Vec<&String> = written.iter().filter_map(|w| w.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} writes failed, the first: {}",
        failed.len(),
        failed[0]
    );
    let numbers: Vec<u64> = written.into_iter().map(Result::unwrap).collect();
    assert_eq!(numbers, (1..=300).collect::<Vec<_>>());
    let read: Vec<u64> = drain(wal.read(1, 1, 0, u64::MAX).unwrap())
        .iter()
        .map(|e| e.1)
        .collect();
    assert_eq!(read, numbers);
}

/// Proves the statistics' text stays short at many regions while the
/// field keeps every one: 100 regions give 100 entries in
/// `Statistics::regions` and a text naming the first 32 and the count of
/// the rest.
#[test]
fn statistics_text_stays_short_at_many_regions() {
    let dir = tempfile::tempdir().unwrap();
    let wal = SegmentManager::open(ManagerConfig::new(dir.path())).unwrap();
    for region in 0..100u64 {
        wal.write(region, 1, &[b"x".as_slice()]).unwrap();
    }
    let statistics = wal.statistics();
    assert_eq!(statistics.regions.len(), 100);
    let text = statistics.to_string();
    assert!(text.contains("regions: 100"), "{text}");
    assert!(text.contains("region 31: next sequence 2"), "{text}");
    assert!(!text.contains("region 32: next sequence"), "{text}");
    assert!(text.contains("and 68 more regions"), "{text}");
}
