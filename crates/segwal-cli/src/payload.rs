//! The bench's payloads: incompressible bytes, or rows as a time-series
//! database writes them to its WAL.

use bytes::Bytes;

use crate::tsdb_rows::{XorShift, tsdb_rows};

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
                PayloadKind::Tsdb => {
                    let mut rows = Vec::with_capacity(len);
                    tsdb_rows(&mut rng, len, seed * 1_000 + i as u64, &mut rows);
                    Bytes::from(rows)
                }
            })
            .collect()
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
