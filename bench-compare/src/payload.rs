//! What the entries hold (`--payload`): incompressible bytes, or rows of a
//! time-series table as a TSDB writes them to its WAL. Either way one pool
//! is generated before any timing and entries are slices of it (shared,
//! never copied by the harness).
//!
//! The time-series rows are `segwal bench --payload tsdb`'s: the CLI's
//! generator, crates/segwal-cli/src/tsdb_rows.rs, included here as it is,
//! so that the two tools' ratios compare.

use bytes::Bytes;

use crate::error::{Error, Result};

#[path = "../../crates/segwal-cli/src/tsdb_rows.rs"]
mod tsdb_rows;

use tsdb_rows::{XorShift, tsdb_rows};

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
