//! `segwal bench`: the main job. Writes a realistic workload through the
//! async API, reopens and replays it, deletes it (unless `--keep`), and
//! reports.
//!
//! # Where the batches go
//!
//! The payload is cut into `B` batches of `batch_entries` entries each,
//! numbered `0..B` over all writers: writer `w` of `W` writes batches `w`,
//! `w + W`, `w + 2W`, ..., so its batch `i` is batch `g = i * W + w`. With
//! `R` regions of `T` tables each, batch `g` goes to region `g mod R` and
//! table `(g / R) mod T` ([`Spread::location`]). So:
//!
//! - every region is written once `B >= R`, and every table of every
//!   region once `B >= R * T`: a region's batches take its tables in turn;
//! - in round `i` (the batch `i` of every writer) the writers write `W`
//!   consecutive batch numbers, hence `W` different regions while
//!   `R >= W`. Writers are not in lockstep, so this spreads them out; it
//!   does not keep two writers from ever meeting in a region;
//! - a writer's consecutive batches go to different regions unless `W` is
//!   a multiple of `R`. Writer `w` writes the `R / gcd(W, R)` regions
//!   congruent to `w` modulo `gcd(W, R)`, and all of them once `W` and `R`
//!   are coprime.
//!
//! The replay scans every region and counts the entries of each table;
//! those counts must equal what the writers wrote, table by table.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use segwal::{
    Compression, LocalWal, LocalWalConfig, LogWriteBatch, ReadContext, ScanRequest, SyncMode,
    WalLocation, WalManager, WriteContext,
};

use crate::nats::{NatsBench, NatsTarget, servers_shown};
use crate::payload::PayloadKind;
use crate::report::BenchReport;

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
    /// `None`: segwal's own policy.
    pub(crate) preallocation: Option<segwal::Preallocation>,
    pub(crate) streams: usize,
    /// How record bodies are compressed (local backend only).
    pub(crate) compression: Compression,
    /// What the entries hold.
    pub(crate) payload: PayloadKind,
    pub(crate) backend: Backend,
    /// Skip the deletes and leave the data for `inspect`, `verify`, `dump`.
    pub(crate) keep: bool,
}

/// The shape of the workload that decides where each batch goes (the rule
/// in the module docs).
///
/// # Invariants
///
/// `writers`, `regions` and `tables` are at least 1.
#[derive(Debug, Clone, Copy)]
struct Spread {
    writers: u64,
    regions: u64,
    tables: u64,
}

impl Spread {
    fn new(options: &BenchOptions) -> Spread {
        let spread = Spread {
            writers: options.writers as u64,
            regions: options.regions,
            tables: options.tables,
        };
        assert!(spread.writers > 0 && spread.regions > 0 && spread.tables > 0);
        spread
    }

    /// How many of the `batches` in all writer `writer` writes: those
    /// numbered `writer`, `writer + writers`, ... below `batches`.
    fn batches_of(self, writer: u64, batches: u64) -> u64 {
        batches.saturating_sub(writer).div_ceil(self.writers)
    }

    /// Where batch `i` of writer `writer` goes: batch `g = i * writers +
    /// writer` goes to region `g mod regions`, table `(g / regions) mod
    /// tables`.
    fn location(self, writer: u64, i: u64) -> WalLocation {
        let batch = i * self.writers + writer;
        WalLocation::new(batch % self.regions, (batch / self.regions) % self.tables)
    }
}

/// Entries per table: what the writers wrote, or what the replay found.
type Tally = BTreeMap<WalLocation, u64>;

/// Where the bench writes.
#[derive(Debug, Clone)]
pub(crate) enum Backend {
    /// `LocalWal` in the data dir.
    Local,
    /// `NatsWal` with this configuration: under a prefix of its own
    /// (`segwal_bench_<pid>`) unless read from a file. Boxed: a config
    /// with its security settings is large beside `Local`.
    Nats(Box<NatsTarget>),
}

/// What the bench needs of a backend besides the `WalManager` calls.
pub(crate) trait BenchBackend {
    type Wal: WalManager;
    async fn open(&self) -> Result<Self::Wal, String>;
    /// (syncs, batches written) if the backend counts syncs.
    fn syncs(&self, wal: &Self::Wal) -> Option<(u64, u64)>;
    /// Bytes of records written (headers and stored bodies, compressed
    /// where they are), if the backend counts them.
    fn record_bytes(&self, wal: &Self::Wal) -> Option<u64>;
    /// Bytes of storage the log occupies (measured with the WAL closed).
    async fn stored_bytes(&self, regions: u64) -> u64;
    /// When a write is durable, for the report.
    fn durability_label(&self, options: &BenchOptions) -> String {
        sync_label(options.sync)
    }
    /// Removes what the run left on shared servers (not `--keep`).
    async fn clean_up(&self) -> Result<(), String> {
        Ok(())
    }
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
    fn record_bytes(&self, wal: &LocalWal) -> Option<u64> {
        Some(wal.statistics().bytes_written)
    }
    async fn stored_bytes(&self, _regions: u64) -> u64 {
        disk_usage(self.config.dir())
    }
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
            let mut config = LocalWalConfig::new(dir)
                .sync_mode(options.sync)
                .segment_size(options.segment_size)
                .streams(options.streams)
                .compression(options.compression)
                .max_entry_size(options.entry_size.max(1) as u64);
            if let Some(preallocation) = options.preallocation {
                config = config.preallocation(preallocation);
            }
            let label = "local".to_owned();
            run_on(&LocalBench { config }, label, options, dir, progress).await
        }
        Backend::Nats(target) => {
            let bench = NatsBench {
                config: target.config.clone(),
            };
            if target.from_file {
                bench.check_prefix_is_new().await?;
            }
            let label = format!(
                "nats R{} at {}",
                target.config.replicas_count(),
                servers_shown(&target.config)
            );
            run_on(&bench, label, options, dir, progress).await
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
    let written = write_all(&wal, options, progress).await?;
    let (syncs, batches_written) = backend
        .syncs(&wal)
        .unwrap_or((0, written.latencies.len() as u64));
    let entries_written: u64 = written.entries.values().sum();
    let payload_bytes = entries_written * options.entry_size as u64;
    let record_bytes = backend.record_bytes(&wal);
    wal.close_gracefully().await.map_err(|e| e.to_string())?;
    drop(wal);
    let disk_before = backend.stored_bytes(options.regions).await;

    // Reopen (recovery) and replay every region.
    let opened = Instant::now();
    let wal = backend.open().await?;
    let open_time = opened.elapsed();
    let replay_started = Instant::now();
    let (replayed, replayed_bytes) = replay_all(&wal, options.regions).await?;
    let replay_time = replay_started.elapsed();
    check_replay(&written.entries, &replayed)?;

    // Delete everything, as an engine does after flushing; `--keep` leaves
    // it for the tools.
    let deleted = written.entries.keys().filter(|_| !options.keep);
    for &location in deleted {
        let last = wal
            .sequence_num(location)
            .await
            .map_err(|e| e.to_string())?;
        wal.mark_delete_entries_up_to(location, last)
            .await
            .map_err(|e| e.to_string())?;
    }
    wal.close_gracefully().await.map_err(|e| e.to_string())?;
    let disk_after = if options.keep {
        None
    } else {
        let after = backend.stored_bytes(options.regions).await;
        backend.clean_up().await?;
        Some(after)
    };

    let latencies = &written.latencies;
    let regions_written = written.entries.keys().map(|l| l.region_id);
    let seconds = written.seconds.max(1e-9);
    Ok(BenchReport {
        backend: label,
        dir: dir.to_owned(),
        sync: backend.durability_label(options),
        writers: options.writers,
        regions: options.regions,
        regions_written: regions_written.collect::<BTreeSet<_>>().len() as u64,
        tables_per_region: options.tables,
        tables_written: written.entries.len() as u64,
        entry_size: options.entry_size,
        payload: options.payload.name().to_owned(),
        compression: options.compression.name().to_owned(),
        record_bytes_written: record_bytes,
        compression_ratio: record_bytes.map(|stored| payload_bytes as f64 / stored.max(1) as f64),
        batch_entries: options.batch_entries,
        entries_written,
        payload_bytes_written: payload_bytes,
        write_seconds: seconds,
        entries_per_second: entries_written as f64 / seconds,
        megabytes_per_second: payload_bytes as f64 / 1e6 / seconds,
        write_latency_p50_us: percentile(latencies, 0.50),
        write_latency_p99_us: percentile(latencies, 0.99),
        write_latency_p999_us: percentile(latencies, 0.999),
        write_latency_max_us: latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e6),
        syncs,
        batches_per_sync: batches_written as f64 / syncs.max(1) as f64,
        recovery_open_seconds: open_time.as_secs_f64(),
        replay_seconds: replay_time.as_secs_f64(),
        replay_megabytes_per_second: replayed_bytes as f64
            / 1e6
            / replay_time.as_secs_f64().max(1e-9),
        entries_replayed: replayed.values().sum(),
        disk_bytes_before_delete: disk_before,
        disk_bytes_after_delete: disk_after,
        kept: options.keep,
    })
}

/// What the writers did: every write's latency (sorted), the entries they
/// wrote per table, and the seconds from the first write to the last.
struct Written {
    latencies: Vec<Duration>,
    entries: Tally,
    seconds: f64,
}

/// Writes the workload with `options.writers` concurrent tasks, each
/// placing its batches by [`Spread::location`].
async fn write_all<W: WalManager>(
    wal: &Arc<W>,
    options: &BenchOptions,
    progress: bool,
) -> Result<Written, String> {
    let spread = Spread::new(options);
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
    for writer in 0..spread.writers {
        let wal = Arc::clone(wal);
        let bar = bar.clone();
        let (entry_size, batch_entries) = (options.entry_size, options.batch_entries);
        let kind = options.payload;
        // The writers' batches together are batches 0..batches_total.
        let batches = spread.batches_of(writer, batches_total);
        tasks.push(tokio::spawn(async move {
            let payloads = kind.payloads(64, entry_size, writer + 1);
            let ctx = WriteContext::default();
            let mut latencies = Vec::with_capacity(batches as usize);
            let mut entries = Tally::new();
            for i in 0..batches {
                let location = spread.location(writer, i);
                let mut batch = LogWriteBatch::new(location);
                for e in 0..batch_entries {
                    batch.push(payloads[(i as usize + e) % payloads.len()].clone());
                }
                let start = Instant::now();
                wal.write(&ctx, &batch).await?;
                latencies.push(start.elapsed());
                *entries.entry(location).or_default() += batch_entries as u64;
                bar.inc(batch_bytes);
            }
            Ok::<_, segwal::Error>((latencies, entries))
        }));
    }
    let mut written = Written {
        latencies: Vec::new(),
        entries: Tally::new(),
        seconds: 0.0,
    };
    for task in tasks {
        let result = task.await.map_err(|e| format!("a writer panicked: {e}"))?;
        let (latencies, entries) = result.map_err(|e| e.to_string())?;
        written.latencies.extend(latencies);
        for (location, count) in entries {
            *written.entries.entry(location).or_default() += count;
        }
    }
    written.seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    written.latencies.sort_unstable();
    Ok(written)
}

/// Scans regions `0..regions`: the entries found per table, and their
/// payload bytes.
async fn replay_all<W: WalManager>(wal: &W, regions: u64) -> Result<(Tally, u64), String> {
    let ctx = ReadContext::default();
    let mut replayed = Tally::new();
    let mut bytes = 0u64;
    for region_id in 0..regions {
        let mut iter = wal
            .scan(&ctx, &ScanRequest { region_id })
            .await
            .map_err(|e| e.to_string())?;
        while let Some(batch) = iter.next_batch().await.map_err(|e| e.to_string())? {
            for entry in batch.iter() {
                let location = WalLocation::new(region_id, entry.table_id);
                *replayed.entry(location).or_default() += 1;
                bytes += entry.payload.len() as u64;
            }
        }
    }
    Ok((replayed, bytes))
}

/// Fails, naming the first table that differs, unless the replay found
/// exactly the entries written, table by table.
fn check_replay(written: &Tally, replayed: &Tally) -> Result<(), String> {
    let differs = written
        .keys()
        .chain(replayed.keys())
        .find(|location| written.get(location) != replayed.get(location));
    match differs {
        None => Ok(()),
        Some(location) => Err(format!(
            "replay found {} entries in region {} table {}, but {} were written \
             ({} replayed, {} written in all)",
            replayed.get(location).copied().unwrap_or(0),
            location.region_id,
            location.table_id,
            written.get(location).copied().unwrap_or(0),
            replayed.values().sum::<u64>(),
            written.values().sum::<u64>(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::Spread;

    /// Every writer's batches of `batches` in all, as (writer, i, region,
    /// table).
    fn plan(spread: Spread, batches: u64) -> Vec<(u64, u64, u64, u64)> {
        (0..spread.writers)
            .flat_map(|w| {
                (0..spread.batches_of(w, batches)).map(move |i| {
                    let location = spread.location(w, i);
                    (w, i, location.region_id, location.table_id)
                })
            })
            .collect()
    }

    /// Proves the promises of the module docs for every small shape: the
    /// writers' batches are the batches in all, each table's count differs
    /// from any other's by at most one (so all are written once there are
    /// enough batches), and a round's writers write different regions
    /// while there are at least as many regions as writers.
    #[test]
    fn batches_spread_over_every_region_and_table() {
        for writers in 1..=7 {
            for regions in 1..=9 {
                for tables in 1..=3 {
                    let spread = Spread {
                        writers,
                        regions,
                        tables,
                    };
                    for batches in [1, regions, regions * tables, 3 * regions * tables + 2] {
                        let plan = plan(spread, batches);
                        assert_eq!(plan.len() as u64, batches, "{spread:?}");
                        let mut per_table = BTreeMap::new();
                        let mut rounds = BTreeMap::<u64, BTreeSet<u64>>::new();
                        for &(_, i, region, table) in &plan {
                            assert!(region < regions && table < tables);
                            *per_table.entry((region, table)).or_insert(0u64) += 1;
                            assert!(
                                rounds.entry(i).or_default().insert(region) || regions < writers,
                                "{spread:?}: two writers in region {region} in round {i}"
                            );
                        }
                        let expected = batches.min(regions * tables);
                        assert_eq!(per_table.len() as u64, expected, "{spread:?} {batches}");
                        let (least, most) = (
                            per_table.values().min().unwrap(),
                            per_table.values().max().unwrap(),
                        );
                        assert!(most - least <= 1, "{spread:?} {batches}");
                    }
                }
            }
        }
    }

    /// Proves that a writer's consecutive batches go to different regions
    /// unless the writers are a multiple of the regions, and that a writer
    /// visits the regions congruent to it modulo gcd(writers, regions).
    #[test]
    fn a_writer_moves_between_regions() {
        fn gcd(a: u64, b: u64) -> u64 {
            if b == 0 { a } else { gcd(b, a % b) }
        }
        for writers in 1..=7 {
            for regions in 1..=9 {
                let spread = Spread {
                    writers,
                    regions,
                    tables: 2,
                };
                let g = gcd(writers, regions);
                for w in 0..writers {
                    let visited: BTreeSet<u64> = (0..2 * regions)
                        .map(|i| spread.location(w, i).region_id)
                        .collect();
                    let expected: BTreeSet<u64> = (0..regions).filter(|r| r % g == w % g).collect();
                    assert_eq!(visited, expected, "{spread:?} writer {w}");
                    let first = spread.location(w, 0).region_id;
                    let second = spread.location(w, 1).region_id;
                    assert_eq!(first == second, writers % regions == 0, "{spread:?}");
                }
            }
        }
    }
}
