//! `--compression` and the `compress` workload: what each engine's codec
//! saves on disk and costs in write and recovery speed.
//!
//! The codecs map onto each engine's own setting: segwal's
//! `ManagerConfig::compression` (lz4, zstd: each record's body), raft-engine's
//! `batch_compression_threshold` (lz4 only: each log batch over the
//! threshold), RocksDB's `wal_compression` (zstd only: a streaming
//! compressor over each WAL file). An engine without the codec asked for is
//! skipped, with the reason in the results; nothing is emulated.
//!
//! `compress` is `bulk` and `recover` in one row: a child writes the bulk
//! data, syncs and closes, and reports its write speed, the bytes it wrote
//! through system calls (from `/proc/self/io`: the log's bytes whatever
//! space it reserves ahead) and the blocks its data dir holds after the
//! close; a second child reopens the dir and reads every entry back.

use std::fmt::Write as _;

use crate::disk_usage::allocated_bytes;
use crate::engines::EngineKind;
use crate::error::{Context, Error, Result};
use crate::report::{Row, human, opt};
use crate::workloads::{self, RunResult, Spec, Workload};

/// The codec every engine is asked to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Codec {
    /// Each engine as it ships: raft-engine lz4-compresses batches over
    /// 8 KiB, the others compress nothing.
    #[default]
    Default,
    /// No engine compresses (raft-engine's threshold set to 0, its "off").
    None,
    /// lz4 where the engine has it.
    Lz4,
    /// zstd where the engine has it.
    Zstd,
}

/// raft-engine's batch compression threshold when lz4 is asked for: the
/// smallest body segwal compresses, so that both try every batch.
const RAFT_LZ4_THRESHOLD: u64 = segwal_format::MIN_COMPRESSED_BODY_LEN as u64;
// 0 would turn raft-engine's compression off.
const _: () = assert!(RAFT_LZ4_THRESHOLD > 0);

impl Codec {
    /// Every codec, in the order `--help` lists them.
    pub(crate) const ALL: [Codec; 4] = [Codec::Default, Codec::None, Codec::Lz4, Codec::Zstd];

    /// The name on the command line and in the results.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Codec::Default => "default",
            Codec::None => "none",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }

    /// The codec called `name`.
    pub(crate) fn parse(name: &str) -> Result<Codec> {
        Codec::ALL
            .into_iter()
            .find(|c| c.name() == name)
            .ok_or_else(|| {
                Error::msg(format!(
                    "unknown compression {name:?}; the choices are default, none, lz4, zstd"
                ))
            })
    }

    /// Why `engine` cannot run with this codec, if it cannot.
    pub(crate) fn skip_reason(self, engine: EngineKind) -> Option<&'static str> {
        if matches!(self, Codec::Default | Codec::None) {
            return None;
        }
        match (engine, self) {
            (EngineKind::Segwal | EngineKind::SegwalManager, _) => None,
            (EngineKind::RaftEngine, Codec::Lz4) | (EngineKind::Rocksdb, Codec::Zstd) => None,
            (EngineKind::RaftEngine, _) => Some("raft-engine compresses with lz4 only"),
            (EngineKind::Rocksdb, _) => Some("RocksDB compresses its WAL with zstd only"),
            (EngineKind::Okaywal, _) => Some("okaywal has no compression"),
            _ => Some("the floors write payloads as they are"),
        }
    }

    /// segwal's setting for this codec.
    pub(crate) fn segwal(self) -> segwal_manager::Compression {
        match self {
            Codec::Default | Codec::None => segwal_manager::Compression::None,
            Codec::Lz4 => segwal_manager::Compression::Lz4,
            Codec::Zstd => segwal_manager::Compression::Zstd,
        }
    }

    /// raft-engine's `batch_compression_threshold` in bytes for this codec
    /// (`None`: keep its default). Only called for codecs it runs with.
    pub(crate) fn raft_threshold(self) -> Option<u64> {
        match self {
            Codec::Default => None,
            Codec::None => Some(0),
            Codec::Lz4 | Codec::Zstd => Some(RAFT_LZ4_THRESHOLD),
        }
    }

    /// RocksDB's WAL compression for this codec. Only called for codecs it
    /// runs with.
    pub(crate) fn rocksdb(self) -> rocksdb::DBCompressionType {
        match self {
            Codec::Zstd => rocksdb::DBCompressionType::Zstd,
            _ => rocksdb::DBCompressionType::None,
        }
    }
}

/// How an engine is opened, beyond where, whether synced and entry size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tuning {
    pub(crate) codec: Codec,
    /// RocksDB's `write_buffer_size`, when its WAL must hold everything
    /// written (no memtable flushed to a table file), as the other logs do:
    /// the `compress` workload, which measures the log's bytes.
    pub(crate) memtable_bytes: Option<u64>,
}

impl Tuning {
    /// The tuning `spec`'s engine is opened with.
    pub(crate) fn of(spec: &Spec) -> Tuning {
        Tuning {
            codec: spec.codec,
            memtable_bytes: (spec.workload == Workload::Compress)
                .then(|| spec.bulk_bytes + spec.bulk_bytes / 4 + (64 << 20)),
        }
    }
}

/// `compress`'s first child: the bulk write (timed as `bulk` times it),
/// then a close, then what was written and what the data dir holds.
pub(crate) fn write_step(spec: &Spec) -> Result<RunResult> {
    let before = written_so_far()?;
    let (mut result, wal) = workloads::bulk(spec)?;
    wal.close()?;
    result.written_bytes = Some(written_so_far()? - before);
    result.data_dir_bytes = Some(allocated_bytes(&spec.dir)?);
    Ok(result)
}

/// One `compress` run from its two children's results: the write's, with
/// the recovery's speed and peak memory.
pub(crate) fn merge(write: RunResult, read: &RunResult) -> RunResult {
    RunResult {
        recover_mb_s: Some(read.value),
        peak_anon_bytes: read.peak_anon_bytes,
        ..write
    }
}

/// Bytes this process has handed to `write`-family system calls so far
/// (`wchar` of `/proc/self/io`, every thread counted): unlike the data
/// dir's blocks, blind to space an engine reserves ahead.
fn written_so_far() -> Result<u64> {
    let io = std::fs::read_to_string("/proc/self/io").context(|| "cannot read /proc/self/io")?;
    io.lines()
        .find_map(|line| line.strip_prefix("wchar:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| Error::msg("/proc/self/io has no wchar line"))
}

/// The `compress` section of the results: per engine the payload, the
/// bytes written and their ratio to the payload, the data dir after the
/// close, write and recovery speed and each against segwal's.
pub(crate) fn table(rows: &[Row]) -> String {
    let section: Vec<&Row> = rows
        .iter()
        .filter(|r| r.workload == Workload::Compress.name())
        .collect();
    let mut out = String::new();
    let Some(first) = section.first() else {
        return out;
    };
    let _ = writeln!(
        out,
        "\n### compress ({} payload, compression {}; MB/s of payload)\n",
        first.payload.as_deref().unwrap_or("?"),
        first.codec.as_deref().unwrap_or("?"),
    );
    out.push_str(
        "| engine | runs | payload MiB | written MiB | written / payload | data dir MiB | \
         write MB/s | vs segwal | recovery MB/s | vs segwal | peak anon MiB |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let segwal = section
        .iter()
        .find(|r| r.engine == EngineKind::Segwal.name());
    let versus = |value: Option<f64>, base: Option<f64>| match (value, base) {
        (Some(v), Some(b)) if b > 0.0 => format!("{:.2}x", v / b),
        _ => "-".into(),
    };
    for row in &section {
        let ratio = match (row.written_mib, row.payload_mib) {
            (Some(w), Some(p)) if p > 0.0 => format!("{:.3}", w / p),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {ratio} | {} | {} | {} | {} | {} | {} |",
            row.engine,
            row.runs,
            opt(row.payload_mib),
            opt(row.written_mib),
            opt(row.data_dir_mib),
            human(row.median),
            versus(Some(row.median), segwal.map(|s| s.median)),
            opt(row.recover_mb_s),
            versus(row.recover_mb_s, segwal.and_then(|s| s.recover_mb_s)),
            opt(row.peak_anon_mib),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_only_real_codecs_run() {
        for codec in Codec::ALL {
            assert_eq!(Codec::parse(codec.name()).unwrap(), codec);
        }
        assert!(Codec::parse("snappy").is_err());
        // Every engine runs uncompressed or as it ships.
        for engine in EngineKind::ALL {
            assert_eq!(Codec::None.skip_reason(engine), None);
            assert_eq!(Codec::Default.skip_reason(engine), None);
        }
        let runs = |codec: Codec| -> Vec<EngineKind> {
            EngineKind::ALL
                .into_iter()
                .filter(|&e| codec.skip_reason(e).is_none())
                .collect()
        };
        use EngineKind::{RaftEngine, Rocksdb, Segwal, SegwalManager};
        assert_eq!(runs(Codec::Lz4), [Segwal, SegwalManager, RaftEngine]);
        assert_eq!(runs(Codec::Zstd), [Segwal, SegwalManager, Rocksdb]);
    }

    #[test]
    fn raft_engine_s_threshold_is_off_for_none_and_every_batch_for_lz4() {
        assert_eq!(Codec::None.raft_threshold(), Some(0));
        assert_eq!(Codec::Default.raft_threshold(), None);
        assert_eq!(Codec::Lz4.raft_threshold(), Some(RAFT_LZ4_THRESHOLD));
    }

    #[test]
    fn only_the_compress_workload_gives_rocksdb_a_memtable_that_holds_everything() {
        let spec = |workload| Spec {
            workload,
            bulk_bytes: 256 << 20,
            ..Spec::for_test(EngineKind::Rocksdb, workload)
        };
        let held = Tuning::of(&spec(Workload::Compress))
            .memtable_bytes
            .unwrap();
        assert!(held > 256 << 20, "{held}");
        assert_eq!(Tuning::of(&spec(Workload::Bulk)).memtable_bytes, None);
    }

    #[test]
    fn written_so_far_counts_this_process_s_writes() {
        let dir = tempfile::tempdir().unwrap();
        let before = written_so_far().unwrap();
        std::fs::write(dir.path().join("f"), vec![7u8; 1 << 20]).unwrap();
        assert!(written_so_far().unwrap() - before >= 1 << 20);
    }
}
