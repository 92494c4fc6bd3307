//! The memory the index takes at many regions: one batch written to every
//! table of 10,000 regions x 10 tables (100,000 tables), then the data dir
//! reopened (recovered) in a fresh process. Prints the anonymous memory
//! (`RssAnon`, what the heap and thread stacks take; the mapped segment
//! files are page cache, not counted) before and after each step. Not a criterion bench:
//! memory is counted once, not timed. Runs in SEGWAL_BENCH_DIR like the
//! others; `REGIONS` and `TABLES` override the shape.

#![allow(clippy::print_stdout)]

use segwal_manager::{ManagerConfig, SegmentManager, SyncMode};

/// The process's anonymous resident memory in bytes (Linux).
fn rss_anon() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Set for the child process that reopens the data dir.
const REOPEN_DIR: &str = "SEGWAL_INDEX_MEMORY_REOPEN";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that excludes this bench
    // runs nothing.
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && !"index_memory".contains(&a))
    {
        return;
    }
    if let Some(dir) = std::env::var_os(REOPEN_DIR) {
        // The child: recover the data dir the parent wrote.
        let base = rss_anon();
        let wal = SegmentManager::open(ManagerConfig::new(dir)).unwrap();
        println!("{}", rss_anon().saturating_sub(base));
        drop(wal);
        return;
    }
    let (regions, tables) = (env_or("REGIONS", 10_000), env_or("TABLES", 10));
    let dir = segwal_benches::bench_dir();
    let config = ManagerConfig {
        sync_mode: SyncMode::Never,
        ..ManagerConfig::new(dir.path())
    };
    let base = rss_anon();
    let wal = SegmentManager::open(config.clone()).unwrap();
    let payload = [0u8; 16];
    for region in 0..regions {
        for table in 0..tables {
            wal.write(region, table, &[payload.as_slice()]).unwrap();
        }
    }
    let written = rss_anon();
    let batches = wal.statistics().batches_written;
    wal.close().unwrap();
    drop(wal);
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .env(REOPEN_DIR, dir.path())
        .output()
        .unwrap();
    assert!(child.status.success(), "{child:?}");
    let recovered: u64 = String::from_utf8_lossy(&child.stdout)
        .trim()
        .parse()
        .unwrap();
    println!(
        "index_memory/{}: {regions} regions x {tables} tables, {batches} batches: \
         anonymous memory +{:.1} MiB while writing, +{:.1} MiB to open (recover) them \
         in a fresh process",
        segwal_benches::fs_name(),
        mib(written.saturating_sub(base)),
        mib(recovered),
    );
}
