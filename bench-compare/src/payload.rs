//! What the entries hold (`--payload`): incompressible bytes, or rows of a
//! time-series table as a TSDB writes them to its WAL. Either way one pool
//! is generated before any timing and entries are slices of it (shared,
//! never copied by the harness).
//!
//! The time-series rows have the shape of `segwal bench --payload tsdb`'s
//! (crates/segwal-cli/src/payload.rs): the same row layout, tags and value
//! walk, so that the two tools' ratios compare. The code is this crate's
//! own, as bench-compare builds apart from the workspace's CLI.

use bytes::Bytes;

use crate::error::{Error, Result};

/// Size of a payload pool: larger than the largest batch, so the entries
/// of one batch never repeat bytes (and a codec finds no repetition across
/// a batch that the payload itself does not have).
pub(crate) const POOL_BYTES: usize = 32 << 20;

/// What every entry holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum PayloadKind {
    /// Pseudo-random bytes: no codec makes them smaller.
    #[default]
    Random,
    /// Rows of a time-series table, one series per entry: per row a
    /// timestamp, the series' tags and its float values.
    Tsdb,
}

impl PayloadKind {
    /// Every kind, in the order `--help` lists them.
    pub(crate) const ALL: [PayloadKind; 2] = [PayloadKind::Random, PayloadKind::Tsdb];

    /// The name on the command line and in the results.
    pub(crate) fn name(self) -> &'static str {
        match self {
            PayloadKind::Random => "random",
            PayloadKind::Tsdb => "tsdb",
        }
    }

    /// The kind called `name`.
    pub(crate) fn parse(name: &str) -> Result<PayloadKind> {
        PayloadKind::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| {
                Error::msg(format!(
                    "unknown payload {name:?}; the payloads are random, tsdb"
                ))
            })
    }

    /// A pool of [`POOL_BYTES`] to slice entries of `entry_len` bytes
    /// from, at multiples of `entry_len`. Random: one xorshift stream from
    /// a fixed seed. Tsdb: one series per `entry_len` bytes (entry `i` of
    /// the pool is series `i`), as a row-oriented engine writes one write
    /// request per entry.
    pub(crate) fn pool(self, entry_len: usize) -> Bytes {
        match self {
            PayloadKind::Random => random_pool(POOL_BYTES),
            PayloadKind::Tsdb => {
                let entries = POOL_BYTES / entry_len.max(1);
                let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
                let mut pool = Vec::with_capacity(entries * entry_len);
                for series in 0..entries as u64 {
                    tsdb_rows(&mut rng, entry_len, series, &mut pool);
                }
                Bytes::from(pool)
            }
        }
    }
}

/// Incompressible bytes: a xorshift stream from a fixed seed.
fn random_pool(len: usize) -> Bytes {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    Bytes::from(bytes)
}

/// xorshift64*, as the CLI's generator uses.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The tag values the series draw from: a fleet of hosts in a few regions
/// and services, as in the usual TSDB benchmarks (TSBS's `cpu-only`).
const REGIONS: [&str; 4] = ["us-west-2", "us-east-1", "eu-central-1", "ap-southeast-1"];
const SERVICES: [&str; 5] = ["api", "web", "db", "cache", "queue"];

/// Appends exactly `len` bytes of rows of series `series` of a `cpu` table
/// to `out` (the last row cut off there). A row: `timestamp: i64`
/// (milliseconds, 10 s apart with a little jitter), each tag as
/// `len: u8, key, len: u8, value`, then `field count: u8` and each field
/// as `f64` (usage percentages doing a random walk, rounded to hundredths,
/// as collectors report them).
fn tsdb_rows(rng: &mut XorShift, len: usize, series: u64, out: &mut Vec<u8>) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in PayloadKind::ALL {
            assert_eq!(PayloadKind::parse(kind.name()).unwrap(), kind);
        }
        assert!(PayloadKind::parse("zeros").is_err());
    }

    #[test]
    fn tsdb_entries_are_one_series_each_starting_with_a_whole_row() {
        // Entries are slices at multiples of the entry length: each must be
        // one series' rows from its first byte, as an engine's entry is.
        let len = 4096;
        let pool = PayloadKind::Tsdb.pool(len);
        assert_eq!(pool.len(), POOL_BYTES / len * len);
        for series in [0u64, 1, 7, 4001] {
            let entry = &pool[series as usize * len..(series as usize + 1) * len];
            let host = format!("host_{:04}", series % 4000);
            // timestamp (8), "hostname" with its length byte (9), then the
            // host's length byte and name.
            assert_eq!(&entry[8..17], b"\x08hostname");
            assert_eq!(&entry[18..18 + host.len()], host.as_bytes());
        }
    }

    #[test]
    fn random_pool_is_the_same_every_time() {
        assert_eq!(
            PayloadKind::Random.pool(4096),
            PayloadKind::Random.pool(1024)
        );
        assert_eq!(PayloadKind::Random.pool(1).len(), POOL_BYTES);
    }
}
