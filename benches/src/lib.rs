//! Workload helpers shared by segwal's criterion benches.
//!
//! Payloads are incompressible (a xorshift stream), so no layer can look
//! faster by compressing them. The I/O benches run in SEGWAL_BENCH_DIR (the
//! file system under test; default the system temporary dir) and name it
//! SEGWAL_BENCH_FS in their results; `cargo xtask bench` sets both.

use std::time::Duration;

use criterion::Criterion;

/// A fresh directory on the file system under test.
pub fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("SEGWAL_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir).unwrap(),
        None => tempfile::tempdir().unwrap(),
    }
}

/// The name of the file system under test, for bench ids.
pub fn fs_name() -> String {
    std::env::var("SEGWAL_BENCH_FS").unwrap_or_else(|_| "tmpdir".into())
}

/// Criterion settings for the I/O benches: `sample_size` samples of 2 s,
/// after half a second of warm-up, so a run of every bench takes minutes.
pub fn io_criterion(sample_size: usize) -> Criterion {
    Criterion::default()
        .sample_size(sample_size)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

/// `count` payloads of `len` pseudo-random bytes each, the same on every
/// run.
pub fn payloads(count: usize, len: usize) -> Vec<Vec<u8>> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..count)
        .map(|_| {
            (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect()
        })
        .collect()
}
