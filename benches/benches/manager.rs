//! Manager writes of 1 KiB entries in each sync mode (`Always`, with group
//! commit; `Interval` of 10 ms; `Never`), from 1, 4 and 16 threads: each
//! writing its own table of one region, and, beside it, 16 threads each
//! going round 16 regions of its own (256 regions in all), as a node with
//! many shards writes. SEGWAL_BENCH_DIR and SEGWAL_BENCH_FS as in
//! `segment.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use segwal_benches::{bench_dir, fs_name, io_criterion, payloads};
use segwal_manager::{ManagerConfig, SegmentManager, SyncMode};

fn write(c: &mut Criterion) {
    let fs = fs_name();
    let mut group = c.benchmark_group(format!("manager_write/{fs}"));
    group.throughput(Throughput::Elements(1));
    let entry = payloads(1, 1024);
    let modes = [
        ("always", SyncMode::Always),
        (
            "interval-10ms",
            SyncMode::Interval(Duration::from_millis(10)),
        ),
        ("never", SyncMode::Never),
    ];
    for (mode, sync_mode) in modes {
        // (writers, regions each writer goes round): 1 shares region 1.
        for (writers, regions) in [(1u64, 1u64), (4, 1), (16, 1), (16, 16)] {
            let dir = bench_dir();
            let config = ManagerConfig {
                sync_mode,
                ..ManagerConfig::new(dir.path())
            };
            let wal = Arc::new(SegmentManager::open(config).unwrap());
            let shape = if regions == 1 {
                format!("{writers}w x 1KiB")
            } else {
                format!("{writers}w x 1KiB, {} regions", writers * regions)
            };
            let id = BenchmarkId::new(mode, &shape);
            group.bench_function(id, |b| {
                // Each iteration is one batch; the time per batch is the wall
                // time of all writers divided by the batches they wrote.
                b.iter_custom(|iters| {
                    let per_writer = iters.div_ceil(writers);
                    let start = Instant::now();
                    std::thread::scope(|s| {
                        for table in 0..writers {
                            let (wal, entry) = (Arc::clone(&wal), &entry);
                            s.spawn(move || {
                                for i in 0..per_writer {
                                    let region = if regions == 1 {
                                        1
                                    } else {
                                        table * regions + i % regions
                                    };
                                    wal.write(region, table, entry).unwrap();
                                }
                            });
                        }
                    });
                    let elapsed = start.elapsed();
                    elapsed
                        .mul_f64(iters as f64 / (per_writer * writers) as f64)
                        .max(Duration::from_nanos(1))
                })
            });
            let stats = wal.statistics();
            eprintln!(
                "manager_write/{fs}/{mode}/{shape}: {:.1} batches per sync",
                stats.batches_written as f64 / stats.syncs.max(1) as f64
            );
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = io_criterion(10);
    targets = write
}
criterion_main!(benches);
