//! The async API over the local WAL: what only `LocalWal` has (reopening
//! over the same dir, contexts and timeouts, dropping without closing,
//! that blocking work stays off the async threads, and that hundreds of
//! regions written at once share one log on disk). The conformance
//! scenarios every backend shares run from `crates/segwal-conformance`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use segwal::{
    LocalWal, LocalWalConfig, LogWriteBatch, ReadBoundary, ReadContext, ReadRequest, ScanRequest,
    SyncMode, WalLocation, WalManager, WriteContext,
};

use segwal_conformance::{drain, write};

fn config(dir: &std::path::Path) -> LocalWalConfig {
    LocalWalConfig::new(dir).segment_size(4096)
}

/// The ids of the segment files of the shared log in data dir `dir` (not
/// counting a segment prepared ahead of need, which has nothing past its
/// 64-byte header); fails on any directory in it (a per-region directory
/// of the old layout).
fn segment_files(dir: &std::path::Path) -> Vec<u64> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        assert!(!entry.file_type().unwrap().is_dir(), "a directory {name}");
        let prepared = || {
            let bytes = std::fs::read(entry.path()).unwrap_or_default();
            bytes
                .get(64..128)
                .is_some_and(|b| b.iter().all(|&x| x == 0))
        };
        if let Some(id) = name.strip_suffix(".seg")
            && !prepared()
        {
            ids.push(id.parse().unwrap());
        }
    }
    ids.sort_unstable();
    ids
}

async fn read(
    wal: &impl WalManager,
    location: WalLocation,
    start: ReadBoundary,
    end: ReadBoundary,
    batch_size: usize,
) -> Vec<u64> {
    let ctx = ReadContext {
        batch_size,
        ..ReadContext::default()
    };
    let req = ReadRequest {
        location,
        start,
        end,
    };
    drain(wal.read_batch(&ctx, &req).await.unwrap(), batch_size)
        .await
        .into_iter()
        .map(|(_, seq, _)| seq)
        .collect()
}

#[tokio::test]
async fn concurrent_writers_reopen_scan_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Arc::new(LocalWal::open(config(dir.path())).await.unwrap());
    let mut tasks = Vec::new();
    for writer in 0..10u64 {
        let wal = Arc::clone(&wal);
        tasks.push(tokio::spawn(async move {
            let location = WalLocation::new(writer % 3, writer);
            let mut last = 0;
            for i in 0..20 {
                let seq = write(&*wal, location, &[&format!("w{writer}-{i}")]).await;
                assert!(seq > last);
                last = seq;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let wal = Arc::into_inner(wal).unwrap();
    wal.close_gracefully().await.unwrap();

    let wal = LocalWal::open(config(dir.path())).await.unwrap();
    let ctx = ReadContext::default();
    for region in 0..3u64 {
        let scanned = drain(
            wal.scan(&ctx, &ScanRequest { region_id: region })
                .await
                .unwrap(),
            500,
        )
        .await;
        let writers = (0..10).filter(|w| w % 3 == region).count();
        assert_eq!(scanned.len(), writers * 20);
        let sequences: Vec<u64> = scanned.iter().map(|e| e.1).collect();
        assert_eq!(sequences, (1..=scanned.len() as u64).collect::<Vec<_>>());
        for (table, _, payload) in &scanned {
            assert!(payload.starts_with(&format!("w{table}-")));
        }
    }

    // Delete one table of region 0 entirely and another by half.
    let (a, b) = (WalLocation::new(0, 0), WalLocation::new(0, 3));
    let a_last = wal.sequence_num(a).await.unwrap();
    wal.mark_delete_entries_up_to(a, u64::MAX).await.unwrap();
    let b_seqs = read(&wal, b, ReadBoundary::Min, ReadBoundary::Max, 100).await;
    wal.mark_delete_entries_up_to(b, b_seqs[9]).await.unwrap();
    drop(wal);

    let wal = LocalWal::open(config(dir.path())).await.unwrap();
    assert_eq!(wal.sequence_num(a).await.unwrap(), a_last);
    assert_eq!(
        read(&wal, a, ReadBoundary::Min, ReadBoundary::Max, 100).await,
        Vec::<u64>::new()
    );
    assert_eq!(
        read(&wal, b, ReadBoundary::Min, ReadBoundary::Max, 100).await,
        b_seqs[10..]
    );
    let next = write(&wal, a, &["after"]).await;
    assert!(next > *b_seqs.last().unwrap().max(&a_last));
    assert!(
        wal.get_statistics()
            .await
            .unwrap()
            .contains("batches written: 1")
    );
}

/// Proves that `close_gracefully` frees the data dir at once: another
/// instance opens it while the closed one still exists, and finds its data.
/// (That a closed WAL refuses every call, and that `close_region` reopens
/// on next use, are conformance cases run against `LocalWal`.)
#[tokio::test]
async fn close_gracefully_frees_the_data_dir_for_another_instance() {
    let dir = tempfile::tempdir().unwrap();
    let wal = LocalWal::open(config(dir.path())).await.unwrap();
    let table = WalLocation::new(7, 1);
    write(&wal, table, &["a", "b", "c"]).await;
    wal.close_gracefully().await.unwrap();
    assert!(wal.sequence_num(table).await.unwrap_err().is_closed());

    let other = LocalWal::open(config(dir.path())).await.unwrap();
    assert_eq!(other.sequence_num(table).await.unwrap(), 3);
    drop(wal);
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_uses_no_sequence_number() {
    let dir = tempfile::tempdir().unwrap();
    let wal = LocalWal::open(config(dir.path()).max_entry_size(100))
        .await
        .unwrap();
    let table = WalLocation::new(u64::MAX, u64::MAX);
    let err = wal
        .write(&WriteContext::default(), &LogWriteBatch::new(table))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("empty batch"), "{err}");
    let mut big = LogWriteBatch::new(table);
    big.push(vec![0u8; 101]);
    let err = wal.write(&WriteContext::default(), &big).await.unwrap_err();
    assert!(err.to_string().contains("101 bytes"), "{err}");
    assert_eq!(write(&wal, table, &["ok"]).await, 1);

    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a dir").unwrap();
    let err = LocalWal::open(LocalWalConfig::new(&file))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");
    let err = LocalWal::open(LocalWalConfig::new(dir.path().join("x")).cache_size(0))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cache size"), "{err}");
}

#[tokio::test]
async fn dropping_without_closing_loses_nothing_acknowledged() {
    // Proves that a LocalWal dropped without close_gracefully, even under
    // SyncMode::Never, leaves every acknowledged write readable.
    let dir = tempfile::tempdir().unwrap();
    let table = WalLocation::new(1, 2);
    {
        let wal = LocalWal::open(config(dir.path()).sync_mode(SyncMode::Never))
            .await
            .unwrap();
        for i in 0..50 {
            write(&wal, table, &[&format!("{i}")]).await;
        }
    }
    let wal = LocalWal::open(config(dir.path())).await.unwrap();
    let seqs = read(&wal, table, ReadBoundary::Min, ReadBoundary::Max, 500).await;
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_timed_out_write_reports_a_timeout() {
    // Proves that the write context's timeout is honoured: the caller gets
    // a timeout error naming the operation (the write itself runs on and
    // may still complete, as documented).
    let dir = tempfile::tempdir().unwrap();
    let wal = LocalWal::open(config(dir.path())).await.unwrap();
    let mut batch = LogWriteBatch::new(WalLocation::new(1, 1));
    // 64 MiB: a segment of its own, zero-filled and synced, so far slower
    // than a nanosecond.
    batch.push(vec![1u8; 16 << 20]);
    batch.push(vec![2u8; 16 << 20]);
    batch.push(vec![3u8; 16 << 20]);
    batch.push(vec![4u8; 15 << 20]);
    let ctx = WriteContext {
        timeout: Duration::from_nanos(1),
    };
    let err = wal.write(&ctx, &batch).await.unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(err.to_string().contains("write of 4 entries"), "{err}");
}

#[test]
fn a_slow_disk_operation_does_not_stall_other_tasks() {
    // Proves that blocking work runs off the async threads: on a
    // current-thread runtime (one thread for every task), another task
    // keeps running while a slow write (creating, zero-filling and syncing
    // a 48 MiB segment) is under way. Were the write run on the runtime's
    // thread, the other task could not run until it returned.
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let wal = LocalWal::open(config(dir.path())).await.unwrap();
        let mut batch = LogWriteBatch::new(WalLocation::new(1, 1));
        for _ in 0..3 {
            batch.push(vec![9u8; 16 << 20]);
        }
        let ticks = AtomicU64::new(0);
        let done = std::sync::atomic::AtomicBool::new(false);
        let ticker = async {
            while !done.load(Ordering::Acquire) {
                ticks.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        };
        let writer = async {
            // Not a test of timeouts: a slow disk may take longer than
            // the default 1 s for 48 MiB.
            let ctx = WriteContext {
                timeout: Duration::from_secs(120),
            };
            let seq = wal.write(&ctx, &batch).await.unwrap();
            let during = ticks.load(Ordering::Relaxed);
            done.store(true, Ordering::Release);
            (seq, during)
        };
        let ((seq, during), ()) = tokio::join!(writer, ticker);
        assert_eq!(seq, 3);
        assert!(during > 0, "the other task never ran during the write");
    });
}

#[test]
fn a_write_in_place_does_not_stall_the_workers_other_tasks() {
    // Proves that a write run in place (the default on a multi-threaded
    // runtime) leaves the worker's other tasks running: with one worker
    // thread, a spawned task keeps ticking while a slow write (creating,
    // zero-filling and syncing a 48 MiB segment) runs in a task on that
    // worker, because `block_in_place` hands the worker to another thread
    // first; and the write's result is what the blocking pool would give.
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let wal = LocalWal::open(config(dir.path())).await.unwrap();
        let ticks = Arc::new(AtomicU64::new(0));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ticker = tokio::spawn({
            let (ticks, done) = (Arc::clone(&ticks), Arc::clone(&done));
            async move {
                while !done.load(Ordering::Acquire) {
                    ticks.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            }
        });
        let writer = tokio::spawn({
            let (wal, ticks) = (wal.clone(), Arc::clone(&ticks));
            async move {
                while ticks.load(Ordering::Relaxed) == 0 {
                    tokio::task::yield_now().await;
                }
                let mut batch = LogWriteBatch::new(WalLocation::new(1, 1));
                for _ in 0..3 {
                    batch.push(vec![9u8; 16 << 20]);
                }
                let before = ticks.load(Ordering::Relaxed);
                let seq = wal.write(&WriteContext::default(), &batch).await.unwrap();
                (seq, ticks.load(Ordering::Relaxed) - before)
            }
        });
        let (seq, during) = writer.await.unwrap();
        done.store(true, Ordering::Release);
        ticker.await.unwrap();
        assert_eq!(seq, 3);
        assert!(during > 0, "the other task never ran during the write");
        let location = WalLocation::new(1, 1);
        assert_eq!(wal.sequence_num(location).await.unwrap(), 3);
        wal.close_gracefully().await.unwrap();
    });
}

/// Proves that payloads read from a `LocalWal`, which share the segment
/// files' mappings instead of being copied, stay readable and unchanged
/// after the read ends, after their table is deleted and its segment files
/// are removed from disk, after more writes, and after the WAL is closed.
#[tokio::test]
async fn payloads_outlive_their_read_their_segments_and_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let wal = LocalWal::open(config(dir.path())).await.unwrap();
    let old = WalLocation::new(1, 1);
    let expected: Vec<String> = (0..40).map(|i| format!("{i:03}").repeat(100)).collect();
    for chunk in expected.chunks(4) {
        let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
        write(&wal, old, &chunk).await;
    }
    let ctx = ReadContext {
        batch_size: 7,
        ..ReadContext::default()
    };
    let request = ReadRequest {
        location: old,
        start: ReadBoundary::Min,
        end: ReadBoundary::Max,
    };
    let mut iter = wal.read_batch(&ctx, &request).await.unwrap();
    let mut held = Vec::new();
    while let Some(batch) = iter.next_batch().await.unwrap() {
        held.extend(batch.into_iter().map(|e| e.payload));
    }
    drop(iter);
    let segments_before = segment_files(dir.path()).len();

    // Later writes to another table roll over into new segments; the
    // delete then removes every segment that held only the table.
    let other = WalLocation::new(1, 2);
    for _ in 0..40 {
        write(&wal, other, &[&"x".repeat(400)]).await;
    }
    wal.mark_delete_entries_up_to(old, u64::MAX).await.unwrap();
    let statistics = wal.statistics();
    assert!(
        statistics.segments_deleted >= 2,
        "{segments_before} segment files; {statistics:?}"
    );
    wal.close_gracefully().await.unwrap();

    let held: Vec<String> = held
        .iter()
        .map(|p| String::from_utf8(p.to_vec()).unwrap())
        .collect();
    assert_eq!(held, expected);
}

/// What region `region` is written in [`many_regions_share_one_log`]: per
/// batch its table and entries, in the order written.
fn region_batches(region: u64) -> Vec<(u64, Vec<String>)> {
    (0..6u64)
        .map(|batch| {
            let table = (region + batch) % 3;
            let entries = (0..=(region + batch) % 3)
                .map(|i| format!("r{region}-t{table}-b{batch}-e{i}"))
                .collect();
            (table, entries)
        })
        .collect()
}

/// Proves that 256 regions written at once, each by a tokio task of its
/// own, share one log: each region gets its own numbers from 1, reads and
/// scans back exactly its entries after a restart, loses them all to its
/// deletes while its numbers stay, and the data dir holds one or two
/// segment files, never a file or directory per region.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_regions_share_one_log() {
    const REGIONS: u64 = 256;
    let dir = tempfile::tempdir().unwrap();
    let config = || LocalWalConfig::new(dir.path()).segment_size(1 << 20);
    let wal = Arc::new(LocalWal::open(config()).await.unwrap());
    let tasks: Vec<_> = (0..REGIONS)
        .map(|region| {
            let wal = Arc::clone(&wal);
            tokio::spawn(async move {
                let mut next = 1;
                for (table, entries) in region_batches(region) {
                    let entries: Vec<&str> = entries.iter().map(String::as_str).collect();
                    let last = write(&*wal, WalLocation::new(region, table), &entries).await;
                    assert_eq!(last, next + entries.len() as u64 - 1, "region {region}");
                    next = last + 1;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let segments = segment_files(dir.path());
    assert!((1..=2).contains(&segments.len()), "{segments:?}");
    Arc::into_inner(wal)
        .unwrap()
        .close_gracefully()
        .await
        .unwrap();

    let wal = LocalWal::open(config()).await.unwrap();
    let ctx = ReadContext {
        batch_size: 7,
        ..ReadContext::default()
    };
    for region in 0..REGIONS {
        // (table, sequence, payload) of every entry, in the order written.
        let mut expected = Vec::new();
        for (table, entries) in region_batches(region) {
            for payload in entries {
                expected.push((table, expected.len() as u64 + 1, payload));
            }
        }
        let request = ScanRequest { region_id: region };
        let scanned = drain(wal.scan(&ctx, &request).await.unwrap(), 7).await;
        assert_eq!(scanned, expected, "scan of region {region}");
        for table in 0..3 {
            let location = WalLocation::new(region, table);
            let of_table: Vec<u64> = expected
                .iter()
                .filter(|e| e.0 == table)
                .map(|e| e.1)
                .collect();
            assert_eq!(
                read(&wal, location, ReadBoundary::Min, ReadBoundary::Max, 4).await,
                of_table,
                "region {region} table {table}"
            );
            assert_eq!(
                wal.sequence_num(location).await.unwrap(),
                of_table.last().copied().unwrap_or(0)
            );
        }
    }

    // Every region deletes all of its tables, from tasks of their own:
    // first half of them, which leaves the segment (the other half's
    // entries are in it), then the rest, which leaves it with nothing
    // live: it goes.
    let wal = Arc::new(wal);
    let written = segment_files(dir.path());
    for regions in [0..REGIONS / 2, REGIONS / 2..REGIONS] {
        assert_eq!(segment_files(dir.path()), written);
        let tasks: Vec<_> = regions
            .map(|region| {
                let wal = Arc::clone(&wal);
                tokio::spawn(async move {
                    for table in 0..3 {
                        let location = WalLocation::new(region, table);
                        wal.mark_delete_entries_up_to(location, u64::MAX)
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    }
    assert_eq!(
        segment_files(dir.path()),
        Vec::<u64>::new(),
        "written: {written:?}"
    );
    let wal = Arc::into_inner(wal).unwrap();
    wal.close_gracefully().await.unwrap();

    let wal = LocalWal::open(config()).await.unwrap();
    for region in 0..REGIONS {
        let request = ScanRequest { region_id: region };
        assert!(
            drain(wal.scan(&ctx, &request).await.unwrap(), 7)
                .await
                .is_empty()
        );
        let written: u64 = region_batches(region)
            .iter()
            .map(|b| b.1.len() as u64)
            .sum();
        let location = WalLocation::new(region, region % 3);
        assert_eq!(write(&wal, location, &["after"]).await, written + 1);
    }
    let segments = segment_files(dir.path());
    assert!((1..=2).contains(&segments.len()), "{segments:?}");
    wal.close_gracefully().await.unwrap();
}
