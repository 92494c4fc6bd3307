//! The bench's payloads: incompressible bytes, or rows as a time-series
//! database writes them to its WAL.

use bytes::Bytes;

/// What `segwal bench` writes in each entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum PayloadKind {
    /// Pseudo-random bytes: no codec makes them smaller.
    Random,
    /// Rows of a time-series table, as an engine encodes a write request:
    /// per row a timestamp, the series' tags and its float values.
    Tsdb,
}

impl PayloadKind {
    /// Its name on the command line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            PayloadKind::Random => "random",
            PayloadKind::Tsdb => "tsdb",
        }
    }

    /// `count` payloads of exactly `len` bytes, the same for the same
    /// `seed`, so that runs compare.
    pub(crate) fn payloads(self, count: usize, len: usize, seed: u64) -> Vec<Bytes> {
        let mut rng = XorShift(seed | 1);
        (0..count)
            .map(|i| match self {
                PayloadKind::Random => random_bytes(&mut rng, len),
                PayloadKind::Tsdb => tsdb_rows(&mut rng, len, seed * 1_000 + i as u64),
            })
            .collect()
    }
}

/// xorshift64*: deterministic, fast, and incompressible enough.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn random_bytes(rng: &mut XorShift, len: usize) -> Bytes {
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        bytes.extend_from_slice(&rng.next().to_le_bytes());
    }
    bytes.truncate(len);
    Bytes::from(bytes)
}

/// The tag values the generated series draw from: a fleet of hosts in a
/// few regions and data centres, as in the usual TSDB benchmarks (TSBS's
/// `cpu-only`).
const REGIONS: [&str; 4] = ["us-west-2", "us-east-1", "eu-central-1", "ap-southeast-1"];
const SERVICES: [&str; 5] = ["api", "web", "db", "cache", "queue"];

/// Rows of a `cpu` table until `len` bytes (the last row cut off there),
/// one series per payload: the way a row-oriented engine writes a write
/// request to its WAL (HoraeDB's, InfluxDB's line-protocol batches).
///
/// A row: `timestamp: i64` (milliseconds, 10 s apart with a little
/// jitter), then each tag as `len: u8, key, len: u8, value`, then
/// `field count: u8` and each field as `f64` (usage percentages doing a
/// random walk, rounded to hundredths, as collectors report them).
fn tsdb_rows(rng: &mut XorShift, len: usize, series: u64) -> Bytes {
    let host = format!("host_{:04}", series % 4000);
    let tags: [(&str, &str); 4] = [
        ("hostname", host.as_str()),
        ("region", REGIONS[(series % 4) as usize]),
        ("service", SERVICES[(series % 5) as usize]),
        (
            "arch",
            if series.is_multiple_of(3) {
                "arm64"
            } else {
                "x86_64"
            },
        ),
    ];
    let mut values = [0f64; 6];
    for value in &mut values {
        *value = (rng.next() % 10_000) as f64 / 100.0;
    }
    let mut timestamp: i64 = 1_764_000_000_000 + (series as i64 % 1_000) * 10_000;
    let mut out = Vec::with_capacity(len + 128);
    while out.len() < len {
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
    out.truncate(len);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::PayloadKind;

    /// Proves payloads have exactly the asked length, are the same for a
    /// seed, and that only the time-series rows are compressible (lz4
    /// halves them at least; random bytes do not shrink).
    #[test]
    fn payloads_are_sized_repeatable_and_compress_as_intended() {
        for kind in [PayloadKind::Random, PayloadKind::Tsdb] {
            for len in [0, 1, 100, 4096] {
                let payloads = kind.payloads(3, len, 7);
                assert!(payloads.iter().all(|p| p.len() == len), "{kind:?} {len}");
                assert_eq!(payloads, kind.payloads(3, len, 7));
            }
        }
        let compressed = |kind: PayloadKind| {
            let payload = &kind.payloads(1, 16 << 10, 3)[0];
            lz4_flex::block::compress(payload).len()
        };
        assert!(compressed(PayloadKind::Tsdb) < 8 << 10);
        assert!(compressed(PayloadKind::Random) > 16 << 10);
    }
}
