//! Reads through the segment manager: one table's range out of 100 tables
//! interleaved in one region (through the index, and, for comparison, by
//! scanning the whole region), and the recovery of a data dir (open, and
//! open + scan of every entry). SEGWAL_BENCH_DIR and SEGWAL_BENCH_FS as in
//! `segment.rs`; the data is written once, unsynced, before measuring, so it
//! is read from the page cache.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use segwal_benches::{bench_dir, fs_name, io_criterion, payloads};
use segwal_manager::{ManagerConfig, SegmentManager, SyncMode};

/// Tables interleaved in the region, and the one read back.
const TABLES: u64 = 100;
const TABLE: u64 = 50;
/// Entries per batch and bytes per entry of the table-read data.
const BATCH: (usize, usize) = (16, 1024);
/// Rounds of one batch per table: 100 x 20 x 16 KiB = 32 MiB.
const ROUNDS: u64 = 20;
/// Segments of 8 MiB, so the data spans several.
const SEGMENT_BYTES: u64 = 8 << 20;

fn config(dir: &std::path::Path) -> ManagerConfig {
    ManagerConfig {
        sync_mode: SyncMode::Never,
        segment_size_bytes: SEGMENT_BYTES,
        ..ManagerConfig::new(dir)
    }
}

/// Reads every live entry of `iter`, touching each payload; returns how
/// many entries `keep` accepted (by position in sequence order).
fn drain(mut iter: segwal_manager::EntryIter, mut keep: impl FnMut(u64) -> bool) -> u64 {
    let (mut position, mut kept) = (0, 0);
    while iter
        .next_batch(1024, |entry| {
            if keep(position) {
                kept += 1;
                std::hint::black_box(entry.payload);
            }
            position += 1;
        })
        .unwrap()
        > 0
    {}
    kept
}

fn table_read(c: &mut Criterion) {
    let fs = fs_name();
    let dir = bench_dir();
    let wal = SegmentManager::open(config(dir.path())).unwrap();
    let (count, len) = BATCH;
    let batches = payloads(64, count * len);
    let mut next = 0;
    for _ in 0..ROUNDS {
        for table in 1..=TABLES {
            let batch: Vec<&[u8]> = batches[next % batches.len()].chunks(len).collect();
            wal.write(1, table, &batch).unwrap();
            next += 1;
        }
    }
    let per_table = ROUNDS * count as u64;
    let mut group = c.benchmark_group(format!("table_read/{fs}"));
    group.throughput(Throughput::Elements(per_table));
    group.bench_function("1 of 100 tables, index", |b| {
        b.iter(|| {
            let kept = drain(wal.read(1, TABLE, 0, u64::MAX).unwrap(), |_| true);
            assert_eq!(kept, per_table);
        })
    });
    // The same entries found by decoding the whole region: the cost the
    // index saves. Sequence order is write order, so an entry's table
    // follows from its position.
    group.bench_function("1 of 100 tables, whole-region scan", |b| {
        b.iter(|| {
            let kept = drain(wal.scan(1).unwrap(), |position| {
                (position / count as u64) % TABLES + 1 == TABLE
            });
            assert_eq!(kept, per_table);
        })
    });
    group.finish();
    wal.close().unwrap();
}

fn recovery(c: &mut Criterion) {
    let fs = fs_name();
    let dir = bench_dir();
    // 4 regions of 16 MiB each, in batches of 64 x 4 KiB, 2 tables each.
    let (regions, count, len, batches_per_region) = (4u64, 64usize, 4096usize, 64u64);
    {
        let wal = SegmentManager::open(config(dir.path())).unwrap();
        let data = payloads(16, count * len);
        for round in 0..batches_per_region {
            for region in 1..=regions {
                let batch: Vec<&[u8]> = data[(round % 16) as usize].chunks(len).collect();
                wal.write(region, round % 2, &batch).unwrap();
            }
        }
        wal.close().unwrap();
    }
    let bytes = regions * batches_per_region * (count * len) as u64;
    let mut group = c.benchmark_group(format!("recovery/{fs}"));
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("open 64MiB in 4 regions", |b| {
        b.iter(|| {
            let wal = SegmentManager::open(config(dir.path())).unwrap();
            wal.close().unwrap();
        })
    });
    group.bench_function("open + scan 64MiB in 4 regions", |b| {
        b.iter(|| {
            let wal = SegmentManager::open(config(dir.path())).unwrap();
            let mut entries = 0;
            for region in 1..=regions {
                entries += drain(wal.scan(region).unwrap(), |_| true);
            }
            assert_eq!(entries, bytes / len as u64);
            wal.close().unwrap();
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = io_criterion(10);
    targets = table_read, recovery
}
criterion_main!(benches);
