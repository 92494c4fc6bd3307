//! `segwal bench`: the main job. Writes a realistic workload through the
//! async API, reopens and replays it, deletes it, and reports.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use segwal::{
    LocalWal, LocalWalConfig, LogWriteBatch, ReadContext, ScanRequest, SyncMode, WalLocation,
    WalManager, WriteContext,
};
use segwal_nats::{NatsWal, NatsWalConfig};
use serde::Serialize;

use crate::size::format_bytes;

/// The workload, from the command line.
#[derive(Debug, Clone)]
pub(crate) struct BenchOptions {
    pub(crate) dir: Option<PathBuf>,
    pub(crate) total_bytes: u64,
    pub(crate) entry_size: usize,
    pub(crate) batch_entries: usize,
    pub(crate) writers: usize,
    pub(crate) regions: u64,
    pub(crate) tables: u64,
    pub(crate) sync: SyncMode,
    pub(crate) segment_size: u64,
    pub(crate) backend: Backend,
}

/// Where the bench writes.
#[derive(Debug, Clone)]
pub(crate) enum Backend {
    /// `LocalWal` in the data dir.
    Local,
    /// `NatsWal` on these servers, with streams of `replicas` replicas under
    /// a prefix of its own (`segwal_bench_<pid>`).
    Nats {
        servers: Vec<String>,
        replicas: usize,
    },
}

/// What the bench needs of a backend besides the `WalManager` calls.
trait BenchBackend {
    type Wal: WalManager;
    async fn open(&self) -> Result<Self::Wal, String>;
    /// (syncs, batches written) if the backend counts syncs.
    fn syncs(&self, wal: &Self::Wal) -> Option<(u64, u64)>;
    /// Bytes of storage the log occupies (measured with the WAL closed).
    async fn stored_bytes(&self, regions: u64) -> u64;
}

struct LocalBench {
    config: LocalWalConfig,
}

impl BenchBackend for LocalBench {
    type Wal = LocalWal;
    async fn open(&self) -> Result<LocalWal, String> {
        LocalWal::open(self.config.clone())
            .await
            .map_err(|e| e.to_string())
    }
    fn syncs(&self, wal: &LocalWal) -> Option<(u64, u64)> {
        let stats = wal.statistics();
        Some((stats.syncs, stats.batches_written))
    }
    async fn stored_bytes(&self, _regions: u64) -> u64 {
        disk_usage(self.config.dir())
    }
}

struct NatsBench {
    config: NatsWalConfig,
}

impl BenchBackend for NatsBench {
    type Wal = NatsWal;
    async fn open(&self) -> Result<NatsWal, String> {
        NatsWal::open(self.config.clone())
            .await
            .map_err(|e| e.to_string())
    }
    fn syncs(&self, _wal: &NatsWal) -> Option<(u64, u64)> {
        None
    }
    async fn stored_bytes(&self, regions: u64) -> u64 {
        let Ok(wal) = NatsWal::open(self.config.clone()).await else {
            return 0;
        };
        let mut total = 0;
        for region in 0..regions {
            total += wal.stored_bytes(region).await.unwrap_or(0);
        }
        total
    }
}

/// Everything the bench measured; printed as a table or as JSON.
#[derive(Debug, Serialize)]
pub(crate) struct BenchReport {
    pub(crate) backend: String,
    pub(crate) dir: PathBuf,
    pub(crate) sync: String,
    pub(crate) writers: usize,
    pub(crate) regions: u64,
    pub(crate) tables_per_region: u64,
    pub(crate) entry_size: usize,
    pub(crate) batch_entries: usize,
    pub(crate) entries_written: u64,
    pub(crate) payload_bytes_written: u64,
    pub(crate) write_seconds: f64,
    pub(crate) entries_per_second: f64,
    pub(crate) megabytes_per_second: f64,
    pub(crate) write_latency_p50_us: f64,
    pub(crate) write_latency_p99_us: f64,
    pub(crate) write_latency_p999_us: f64,
    pub(crate) write_latency_max_us: f64,
    pub(crate) syncs: u64,
    pub(crate) batches_per_sync: f64,
    pub(crate) recovery_open_seconds: f64,
    pub(crate) replay_seconds: f64,
    pub(crate) replay_megabytes_per_second: f64,
    pub(crate) entries_replayed: u64,
    pub(crate) disk_bytes_before_delete: u64,
    pub(crate) disk_bytes_after_delete: u64,
}

/// Deterministic incompressible bytes (xorshift64*), so runs compare.
fn random_payloads(count: usize, len: usize, seed: u64) -> Vec<Bytes> {
    let mut state = seed | 1;
    (0..count)
        .map(|_| {
            let mut bytes = Vec::with_capacity(len);
            while bytes.len() < len {
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                let word = state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
                let n = word.len().min(len - bytes.len());
                bytes.extend_from_slice(&word[..n]);
            }
            Bytes::from(bytes)
        })
        .collect()
}

/// Bytes the data dir occupies on disk (allocated blocks).
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => disk_usage(&entry.path()),
            Ok(meta) => meta.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index].as_secs_f64() * 1e6
}

fn sync_label(sync: SyncMode) -> String {
    match sync {
        SyncMode::Always => "always".into(),
        SyncMode::Never => "never".into(),
        SyncMode::Interval(d) => format!("interval:{}", d.as_millis()),
        _ => format!("{sync:?}"),
    }
}

/// Runs the workload in `dir` (created if needed, and expected to hold no
/// WAL yet) and measures it.
pub(crate) async fn run(
    options: &BenchOptions,
    dir: &Path,
    progress: bool,
) -> Result<BenchReport, String> {
    match &options.backend {
        Backend::Local => {
            let config = LocalWalConfig::new(dir)
                .sync_mode(options.sync)
                .segment_size(options.segment_size)
                .max_entry_size(options.entry_size.max(1) as u64);
            let label = "local".to_owned();
            run_on(&LocalBench { config }, label, options, dir, progress).await
        }
        Backend::Nats { servers, replicas } => {
            let config = NatsWalConfig::new(servers.iter().cloned())
                .replicas(*replicas)
                .prefix(format!("segwal_bench_{}", std::process::id()))
                .owner(format!("segwal-bench-{}", std::process::id()));
            let label = format!("nats R{replicas} at {}", servers.join(","));
            run_on(&NatsBench { config }, label, options, dir, progress).await
        }
    }
}

async fn run_on<B: BenchBackend>(
    backend: &B,
    label: String,
    options: &BenchOptions,
    dir: &Path,
    progress: bool,
) -> Result<BenchReport, String> {
    let wal = Arc::new(backend.open().await?);
    let batch_bytes = (options.entry_size * options.batch_entries) as u64;
    let batches_total = options.total_bytes.div_ceil(batch_bytes.max(1)).max(1);
    let bar = if progress {
        ProgressBar::new(batches_total * batch_bytes)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:8} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("the template is valid")
        .progress_chars("=> "),
    );
    bar.set_message("writing");

    let started = Instant::now();
    let mut tasks = Vec::new();
    for writer in 0..options.writers {
        let wal = Arc::clone(&wal);
        let bar = bar.clone();
        let options = options.clone();
        // Writer w takes batches w, w + writers, ...: the total is exact.
        let batches =
            (batches_total.saturating_sub(writer as u64)).div_ceil(options.writers as u64);
        tasks.push(tokio::spawn(async move {
            let payloads = random_payloads(64, options.entry_size, writer as u64 + 1);
            let region = writer as u64 % options.regions;
            let ctx = WriteContext::default();
            let mut latencies = Vec::with_capacity(batches as usize);
            for i in 0..batches {
                let table = (i * options.writers as u64 + writer as u64) % options.tables;
                let mut batch = LogWriteBatch::new(WalLocation::new(region, table));
                for e in 0..options.batch_entries {
                    batch.push(payloads[(i as usize + e) % payloads.len()].clone());
                }
                let start = Instant::now();
                wal.write(&ctx, &batch).await?;
                latencies.push(start.elapsed());
                bar.inc(batch_bytes);
            }
            Ok::<_, segwal::Error>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        let written = task.await.map_err(|e| format!("a writer panicked: {e}"))?;
        latencies.extend(written.map_err(|e| e.to_string())?);
    }
    let write_time = started.elapsed();
    bar.finish_and_clear();
    latencies.sort_unstable();
    let (syncs, batches_written) = backend.syncs(&wal).unwrap_or((0, latencies.len() as u64));
    let entries_written = latencies.len() as u64 * options.batch_entries as u64;
    let payload_bytes = entries_written * options.entry_size as u64;
    wal.close_gracefully().await.map_err(|e| e.to_string())?;
    drop(wal);
    let disk_before = backend.stored_bytes(options.regions).await;

    // Reopen (recovery) and replay every region.
    let opened = Instant::now();
    let wal = backend.open().await?;
    let open_time = opened.elapsed();
    let replay_started = Instant::now();
    let mut replayed = 0u64;
    let mut replayed_bytes = 0u64;
    let ctx = ReadContext::default();
    for region_id in 0..options.regions {
        let mut iter = wal
            .scan(&ctx, &ScanRequest { region_id })
            .await
            .map_err(|e| e.to_string())?;
        while let Some(batch) = iter.next_batch().await.map_err(|e| e.to_string())? {
            replayed += batch.len() as u64;
            replayed_bytes += batch.iter().map(|e| e.payload.len() as u64).sum::<u64>();
        }
    }
    let replay_time = replay_started.elapsed();
    if replayed != entries_written {
        return Err(format!(
            "replay found {replayed} entries, but {entries_written} were written"
        ));
    }

    // Delete everything, as an engine does after flushing.
    for region_id in 0..options.regions {
        for table_id in 0..options.tables {
            let location = WalLocation::new(region_id, table_id);
            let last = wal
                .sequence_num(location)
                .await
                .map_err(|e| e.to_string())?;
            wal.mark_delete_entries_up_to(location, last)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    wal.close_gracefully().await.map_err(|e| e.to_string())?;
    let disk_after = backend.stored_bytes(options.regions).await;

    let seconds = write_time.as_secs_f64().max(1e-9);
    Ok(BenchReport {
        backend: label,
        dir: dir.to_owned(),
        sync: sync_label(options.sync),
        writers: options.writers,
        regions: options.regions,
        tables_per_region: options.tables,
        entry_size: options.entry_size,
        batch_entries: options.batch_entries,
        entries_written,
        payload_bytes_written: payload_bytes,
        write_seconds: seconds,
        entries_per_second: entries_written as f64 / seconds,
        megabytes_per_second: payload_bytes as f64 / 1e6 / seconds,
        write_latency_p50_us: percentile(&latencies, 0.50),
        write_latency_p99_us: percentile(&latencies, 0.99),
        write_latency_p999_us: percentile(&latencies, 0.999),
        write_latency_max_us: latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e6),
        syncs,
        batches_per_sync: batches_written as f64 / syncs.max(1) as f64,
        recovery_open_seconds: open_time.as_secs_f64(),
        replay_seconds: replay_time.as_secs_f64(),
        replay_megabytes_per_second: replayed_bytes as f64
            / 1e6
            / replay_time.as_secs_f64().max(1e-9),
        entries_replayed: replayed,
        disk_bytes_before_delete: disk_before,
        disk_bytes_after_delete: disk_after,
    })
}

/// The report as a two-column table.
pub(crate) fn render(report: &BenchReport) -> String {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header(["measure", "value"]);
    let storage = if report.backend == "local" {
        report.dir.display().to_string()
    } else {
        report.backend.clone()
    };
    let rows: Vec<(&str, String)> = vec![
        (
            if report.backend == "local" {
                "data dir"
            } else {
                "backend"
            },
            storage,
        ),
        (
            "workload",
            format!(
                "{} writers, {} regions x {} tables, batches of {} x {}, sync {}",
                report.writers,
                report.regions,
                report.tables_per_region,
                report.batch_entries,
                format_bytes(report.entry_size as u64),
                report.sync
            ),
        ),
        (
            "written",
            format!(
                "{} entries, {} in {:.2} s",
                report.entries_written,
                format_bytes(report.payload_bytes_written),
                report.write_seconds
            ),
        ),
        (
            "throughput",
            format!(
                "{:.0} entries/s, {:.1} MB/s",
                report.entries_per_second, report.megabytes_per_second
            ),
        ),
        (
            "write latency",
            format!(
                "p50 {:.0} µs, p99 {:.0} µs, p999 {:.0} µs, max {:.0} µs",
                report.write_latency_p50_us,
                report.write_latency_p99_us,
                report.write_latency_p999_us,
                report.write_latency_max_us
            ),
        ),
        (
            "syncs",
            if report.backend == "local" {
                format!(
                    "{} ({:.1} batches per sync)",
                    report.syncs, report.batches_per_sync
                )
            } else {
                "n/a (acknowledged by a JetStream quorum)".into()
            },
        ),
        (
            "recovery",
            format!(
                "open {:.3} s, replay {} entries in {:.3} s ({:.0} MB/s)",
                report.recovery_open_seconds,
                report.entries_replayed,
                report.replay_seconds,
                report.replay_megabytes_per_second
            ),
        ),
        (
            if report.backend == "local" {
                "disk"
            } else {
                "server storage"
            },
            format!(
                "{} before delete, {} after",
                format_bytes(report.disk_bytes_before_delete),
                format_bytes(report.disk_bytes_after_delete)
            ),
        ),
    ];
    for (name, value) in rows {
        table.add_row([name.to_owned(), value]);
    }
    table.to_string()
}
