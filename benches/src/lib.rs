//! Workload helpers shared by segwal's criterion benches.
//!
//! Payloads are incompressible (a xorshift stream), so no layer can look
//! faster by compressing them; only the compression benches also use
//! [`line_protocol`] rows, which compress. The I/O benches run in SEGWAL_BENCH_DIR (the
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

/// `count` payloads of about `len` bytes each (cut at `len`) of metrics in
/// InfluxDB's line protocol, the text a time-series engine receives and
/// often logs as it is: one series per payload, a row every 10 s, with
/// tags and float fields doing a random walk. The same on every run.
pub fn line_protocol(count: usize, len: usize) -> Vec<Vec<u8>> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..count)
        .map(|series| {
            let mut usage = [(next() % 10_000) as f64 / 100.0; 3];
            let mut text = String::with_capacity(len + 200);
            let mut ts = 1_764_000_000_000_000_000u64;
            while text.len() < len {
                for value in &mut usage {
                    *value = (*value + (next() % 201) as f64 / 100.0 - 1.0).clamp(0.0, 100.0);
                }
                text.push_str(&format!(
                    "cpu,host=host_{series:04},region=us-west-2,service=api \
                     usage_user={:.2},usage_system={:.2},usage_idle={:.2} {ts}\n",
                    usage[0], usage[1], usage[2]
                ));
                ts += 10_000_000_000 + next() % 1_000_000;
            }
            let mut bytes = text.into_bytes();
            bytes.truncate(len);
            bytes
        })
        .collect()
}
