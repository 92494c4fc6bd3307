//! Rows of a time-series table as a row-oriented engine writes a write
//! request to its WAL (HoraeDB's, InfluxDB's line-protocol batches): the
//! payload of `segwal bench --payload tsdb` and of `bench-compare
//! --payload tsdb`. std only, so that bench-compare, which builds apart
//! from this workspace, includes this same file (`#[path]`) and the two
//! tools' ratios compare.

/// xorshift64*: deterministic, fast, and incompressible enough.
pub(crate) struct XorShift(pub(crate) u64);

impl XorShift {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The tag values the generated series draw from: a fleet of hosts in a
/// few regions and services, as in the usual TSDB benchmarks (TSBS's
/// `cpu-only`).
const REGIONS: [&str; 4] = ["us-west-2", "us-east-1", "eu-central-1", "ap-southeast-1"];
const SERVICES: [&str; 5] = ["api", "web", "db", "cache", "queue"];

/// Appends exactly `len` bytes of rows of series `series` of a `cpu` table
/// to `out` (the last row cut off there).
///
/// A row: `timestamp: i64` (milliseconds, 10 s apart with a little
/// jitter), then each tag as `len: u8, key, len: u8, value`, then
/// `field count: u8` and each field as `f64` (usage percentages doing a
/// random walk, rounded to hundredths, as collectors report them).
pub(crate) fn tsdb_rows(rng: &mut XorShift, len: usize, series: u64, out: &mut Vec<u8>) {
    let host = format!("host_{:04}", series % 4000);
    let arch = if series.is_multiple_of(3) {
        "arm64"
    } else {
        "x86_64"
    };
    let tags: [(&str, &str); 4] = [
        ("hostname", host.as_str()),
        ("region", REGIONS[(series % 4) as usize]),
        ("service", SERVICES[(series % 5) as usize]),
        ("arch", arch),
    ];
    let mut values = [0f64; 6];
    for value in &mut values {
        *value = (rng.next() % 10_000) as f64 / 100.0;
    }
    let mut timestamp: i64 = 1_764_000_000_000 + (series as i64 % 1_000) * 10_000;
    let end = out.len() + len;
    while out.len() < end {
        out.extend_from_slice(&timestamp.to_le_bytes());
        for (key, value) in tags {
            out.push(key.len() as u8);
            out.extend_from_slice(key.as_bytes());
            out.push(value.len() as u8);
            out.extend_from_slice(value.as_bytes());
        }
        out.push(values.len() as u8);
        for value in &mut values {
            let step = (rng.next() % 201) as f64 / 100.0 - 1.0;
            *value = ((*value + step).clamp(0.0, 100.0) * 100.0).round() / 100.0;
            out.extend_from_slice(&value.to_le_bytes());
        }
        timestamp += 10_000 + (rng.next() % 3) as i64 - 1;
    }
    out.truncate(end);
}
