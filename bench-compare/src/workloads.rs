//! The workloads, as one child process runs them: one engine, one run.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::compress::{self, Codec, Tuning};
use crate::disk_usage::allocated_bytes;
use crate::engines::{self, EngineKind, Location, REGION, Wal};
use crate::error::{Context, Error, Result};
use crate::payload::PayloadKind;

/// A workload of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Workload {
    /// 1 writer, batches of 1 x 1 KiB, synced each write.
    Sync1,
    /// 16 writers, batches of 4 x 1 KiB, synced.
    Sync16,
    /// As `Sync16`, each writer in a region of its own (16 regions).
    Sync16Regions16,
    /// As `Sync16`, each writer owning 16 regions of 256 and writing them
    /// in turn.
    Sync16Regions256,
    /// As `Sync16` with 256-byte entries.
    Sync16Small,
    /// As `Sync16` with 64 KiB entries.
    Sync16Large,
    /// 1 writer, batches of 64 x 4 KiB, unsynced, then one sync.
    Bulk,
    /// Reopen the `Bulk` data and read every entry back.
    Recover,
    /// 100 tables interleaved in one region; read single tables back.
    TableRead,
    /// `Bulk`, closed, then what it wrote and holds on disk, and `Recover`
    /// of it: one row (see `compress.rs`).
    Compress,
}

impl Workload {
    /// Every workload, in the order they run.
    pub(crate) const ALL: [Workload; 10] = [
        Workload::Sync1,
        Workload::Sync16,
        Workload::Sync16Regions16,
        Workload::Sync16Regions256,
        Workload::Sync16Small,
        Workload::Sync16Large,
        Workload::Bulk,
        Workload::Recover,
        Workload::TableRead,
        Workload::Compress,
    ];

    /// The workloads run when `--workloads` is not given: all but
    /// `compress`, which repeats `bulk` and `recover` for its sizes.
    pub(crate) fn defaults() -> Vec<Workload> {
        Workload::ALL
            .into_iter()
            .filter(|&w| w != Workload::Compress)
            .collect()
    }

    /// The name on the command line and in the results.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Workload::Sync1 => "sync1",
            Workload::Sync16 => "sync16",
            Workload::Sync16Regions16 => "sync16-r16",
            Workload::Sync16Regions256 => "sync16-r256",
            Workload::Sync16Small => "sync16-256",
            Workload::Sync16Large => "sync16-64k",
            Workload::Bulk => "bulk",
            Workload::Recover => "recover",
            Workload::TableRead => "table-read",
            Workload::Compress => "compress",
        }
    }

    /// The workload called `name`.
    pub(crate) fn parse(name: &str) -> Result<Workload> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Workload::ALL.iter().map(|w| w.name()).collect();
                Error::msg(format!(
                    "unknown workload {name:?}; the workloads are {}",
                    names.join(", ")
                ))
            })
    }

    /// The headline figure's unit.
    pub(crate) fn unit(self) -> &'static str {
        match self {
            Workload::Sync1 => "writes/s",
            Workload::Sync16
            | Workload::Sync16Regions16
            | Workload::Sync16Regions256
            | Workload::Sync16Small
            | Workload::Sync16Large => "entries/s",
            Workload::Bulk | Workload::Recover | Workload::Compress => "MB/s",
            Workload::TableRead => "entries/s",
        }
    }

    /// Whether `engine` can run this workload at all.
    pub(crate) fn supports(self, engine: EngineKind) -> bool {
        match engine {
            // Unsynced, each is the floor again.
            EngineKind::FloorDsync | EngineKind::FloorGroup => self.sync_shape().is_some(),
            _ => self != Workload::TableRead || engine.reads_tables(),
        }
    }

    /// Whether a run needs a prepare step in a process of its own first.
    pub(crate) fn has_prepare(self) -> bool {
        matches!(
            self,
            Workload::Recover | Workload::TableRead | Workload::Compress
        )
    }

    /// The shape of a synced workload.
    fn sync_shape(self) -> Option<SyncShape> {
        let shape = |writers, batch_entries, entry_len, regions_per_writer| SyncShape {
            writers,
            batch_entries,
            entry_len,
            regions_per_writer,
        };
        match self {
            Workload::Sync1 => Some(shape(1, 1, 1024, None)),
            Workload::Sync16 => Some(shape(16, 4, 1024, None)),
            Workload::Sync16Regions16 => Some(shape(16, 4, 1024, Some(1))),
            Workload::Sync16Regions256 => Some(shape(16, 4, 1024, Some(16))),
            Workload::Sync16Small => Some(shape(16, 4, 256, None)),
            Workload::Sync16Large => Some(shape(16, 4, 64 << 10, None)),
            _ => None,
        }
    }
}

/// What a synced workload writes: `writers` threads, each writing batches
/// of `batch_entries` entries of `entry_len` bytes.
#[derive(Debug, Clone, Copy)]
struct SyncShape {
    writers: u64,
    batch_entries: usize,
    entry_len: usize,
    /// `None`: all writers share region [`REGION`], each writing a table
    /// of its own (writer `w` table `w + 1`). `Some(n)`: writer `w` owns
    /// regions `w * n .. (w + 1) * n`, one table (table 1) in each, and
    /// writes them in turn: its batch `i` goes to region `w * n + i mod n`.
    regions_per_writer: Option<u64>,
}

impl SyncShape {
    /// Where batch `batch` (from 0) of writer `writer` (from 0) goes, and
    /// the index there (from 1) of its first entry: every location's
    /// indexes run on without a gap, as raft-engine requires.
    fn place(self, writer: u64, batch: u64) -> (Location, u64) {
        let count = self.batch_entries as u64;
        match self.regions_per_writer {
            None => (Location::new(REGION, writer + 1), 1 + batch * count),
            Some(n) => (
                Location::new(writer * n + batch % n, 1),
                1 + batch / n * count,
            ),
        }
    }
}

/// Entries per batch and entry size of `bulk` (and so of `recover`).
const BULK_BATCH: (usize, usize) = (64, 4096);
/// Tables, entries per batch and entry size of `table-read`'s data.
const TABLE_READ_SHAPE: (u64, usize, usize) = (100, 16, 1024);
/// The tables `table-read` reads back, one at a time: 10 of the 100.
const TABLES_READ: [u64; 10] = [1, 11, 21, 31, 41, 51, 61, 71, 81, 91];

/// What a child process is asked to do.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Spec {
    pub(crate) engine: EngineKind,
    pub(crate) workload: Workload,
    /// `true` for the untimed step that writes the data a `recover` or
    /// `table-read` run reads.
    pub(crate) prepare: bool,
    /// The engine's data dir (fresh for each run).
    pub(crate) dir: PathBuf,
    /// Measured time of a synced workload, after a warm-up of a fifth of it.
    pub(crate) seconds: f64,
    /// Payload bytes of `bulk` and `recover`.
    pub(crate) bulk_bytes: u64,
    /// Payload bytes of `table-read`'s data.
    pub(crate) table_read_bytes: u64,
    /// What the entries hold.
    pub(crate) payload: PayloadKind,
    /// The codec every engine is asked to use.
    pub(crate) codec: Codec,
}

#[cfg(test)]
impl Spec {
    /// A spec for tests: no data dir yet, no sizes, random payload.
    pub(crate) fn for_test(engine: EngineKind, workload: Workload) -> Spec {
        Spec {
            engine,
            workload,
            prepare: false,
            dir: PathBuf::new(),
            seconds: 0.0,
            bulk_bytes: 0,
            table_read_bytes: 0,
            payload: PayloadKind::Random,
            codec: Codec::Default,
        }
    }
}

/// One run's measurements.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct RunResult {
    pub(crate) engine: String,
    pub(crate) workload: String,
    /// Which round of the alternation, from 0.
    pub(crate) run: u32,
    /// The headline figure, in the workload's unit.
    pub(crate) value: f64,
    /// Batches written (or tables read).
    pub(crate) ops: u64,
    /// Entries written or read.
    pub(crate) entries: u64,
    /// Payload bytes written or read.
    pub(crate) bytes: u64,
    /// Measured wall time.
    pub(crate) seconds: f64,
    /// Batch latency percentiles, in microseconds (write workloads).
    pub(crate) p50_us: Option<f64>,
    pub(crate) p99_us: Option<f64>,
    pub(crate) p999_us: Option<f64>,
    /// The highest `RssAnon` seen while measuring, sampled every
    /// millisecond, in bytes.
    pub(crate) peak_anon_bytes: Option<u64>,
    /// Synced workloads: the blocks allocated to every file of the data
    /// dir once the writers are done, the log still open, in bytes.
    pub(crate) data_dir_bytes: Option<u64>,
    /// For segwal in `table-read`: entries/s of the same reads done by
    /// scanning (decoding) the whole region and keeping the table's entries.
    pub(crate) scan_entries_per_s: Option<f64>,
    /// Engine counters (segwal: batches per sync).
    pub(crate) note: Option<String>,
    /// The payload kind and the codec asked for (`--payload`,
    /// `--compression`).
    pub(crate) payload: Option<String>,
    pub(crate) codec: Option<String>,
    /// `compress`: the bytes the engine wrote through system calls, from
    /// its open to its close.
    pub(crate) written_bytes: Option<u64>,
    /// `compress`: MB/s of payload read back by the recovery.
    pub(crate) recover_mb_s: Option<f64>,
}

/// Runs `spec` and returns its measurements (nothing for a prepare step).
pub(crate) fn run(spec: &Spec) -> Result<Option<RunResult>> {
    let mut result = match (spec.workload, spec.prepare) {
        (w, false) if w.sync_shape().is_some() => synced(spec)?,
        (Workload::Bulk, false) => bulk(spec)?.0,
        (Workload::Recover, true) => {
            let (_, wal) = bulk(spec)?;
            wal.close()?;
            return Ok(None);
        }
        (Workload::Recover, false) => recover(spec)?,
        (Workload::TableRead, true) => {
            write_tables(spec)?;
            return Ok(None);
        }
        (Workload::TableRead, false) => table_read(spec)?,
        (Workload::Compress, true) => compress::write_step(spec)?,
        (Workload::Compress, false) => recover(spec)?,
        (w, prepare) => {
            return Err(Error::msg(format!(
                "workload {} has no {} step",
                w.name(),
                if prepare { "prepare" } else { "measured" }
            )));
        }
    };
    result.engine = spec.engine.name().to_owned();
    result.workload = spec.workload.name().to_owned();
    result.payload = Some(spec.payload.name().to_owned());
    result.codec = Some(spec.codec.name().to_owned());
    Ok(Some(result))
}

/// The `batch`-th batch of `count` entries of `len` bytes from `pool` (of
/// [`PayloadKind::pool`]: entries start at multiples of `len`).
fn batch_from(pool: &Bytes, batch: u64, count: usize, len: usize) -> Vec<Bytes> {
    let batch_bytes = count * len;
    let batches_in_pool = (pool.len() / batch_bytes) as u64;
    let start = (batch % batches_in_pool) as usize * batch_bytes;
    (0..count)
        .map(|i| pool.slice(start + i * len..start + (i + 1) * len))
        .collect()
}

/// The synced workloads: `writers` threads, each writing its own table (or
/// its own regions) as fast as it can for a warm-up (a fifth of `seconds`,
/// not counted) and then `seconds`; then what the data dir holds on disk.
fn synced(spec: &Spec) -> Result<RunResult> {
    let shape = spec.workload.sync_shape().expect("a synced workload");
    let (writers, count, len) = (shape.writers, shape.batch_entries, shape.entry_len);
    let pool = spec.payload.pool(len);
    let wal = engines::open(spec.engine, &spec.dir, true, len, Tuning::of(spec))?;
    let warmup = Duration::from_secs_f64(spec.seconds / 5.0);
    let measured = Duration::from_secs_f64(spec.seconds);
    let start = Instant::now() + Duration::from_millis(20);
    let (measure_from, end) = (start + warmup, start + warmup + measured);
    let failed = AtomicBool::new(false);
    let per_writer: Vec<Result<(Vec<u32>, Instant)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|writer| {
                let (wal, pool, failed): (&dyn Wal, _, _) = (&*wal, &pool, &failed);
                s.spawn(move || {
                    let mut latencies = Vec::with_capacity(1 << 16);
                    // The writer's batches, from 0, and where in the pool
                    // their payloads start.
                    let mut batch = 0;
                    let pool_offset = (writer + 1) * 7919;
                    let mut last_end = measure_from;
                    std::thread::sleep(start.saturating_duration_since(Instant::now()));
                    loop {
                        let entries = batch_from(pool, pool_offset + batch, count, len);
                        let (at, index) = shape.place(writer, batch);
                        let before = Instant::now();
                        if let Err(err) = wal.write(at, index, &entries) {
                            failed.store(true, Ordering::Relaxed);
                            return Err(err);
                        }
                        let after = Instant::now();
                        if before >= measure_from {
                            let nanos = (after - before).as_nanos();
                            latencies.push(u32::try_from(nanos).unwrap_or(u32::MAX));
                            last_end = after;
                        }
                        batch += 1;
                        if after >= end || failed.load(Ordering::Relaxed) {
                            return Ok((latencies, last_end));
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a writer thread panicked"))
            .collect()
    });
    let mut latencies = Vec::new();
    let mut last_end = measure_from;
    for writer in per_writer {
        let (mut lat, end) = writer?;
        latencies.append(&mut lat);
        last_end = last_end.max(end);
    }
    let note = wal.note();
    // Measured open: what the log holds on disk as it runs (a close may
    // give back space reserved ahead, which a running log keeps).
    let data_dir_bytes = allocated_bytes(&spec.dir)?;
    wal.close()?;
    let seconds = (last_end - measure_from).as_secs_f64();
    let ops = latencies.len() as u64;
    let entries = ops * count as u64;
    latencies.sort_unstable();
    let percentile = |p: f64| {
        let at = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len().max(1));
        latencies.get(at - 1).map(|&ns| f64::from(ns) / 1e3)
    };
    let value = if spec.workload == Workload::Sync1 {
        ops as f64 / seconds
    } else {
        entries as f64 / seconds
    };
    Ok(RunResult {
        value,
        ops,
        entries,
        bytes: entries * len as u64,
        seconds,
        p50_us: percentile(0.50),
        p99_us: percentile(0.99),
        p999_us: percentile(0.999),
        data_dir_bytes: Some(data_dir_bytes),
        note,
        ..RunResult::default()
    })
}

/// `bulk`: one writer, batches of 64 x 4 KiB, unsynced, until
/// `bulk_bytes` are written, then one sync, all timed. Returns the still
/// open log for `recover`'s prepare step.
pub(crate) fn bulk(spec: &Spec) -> Result<(RunResult, Box<dyn Wal>)> {
    let (count, len) = BULK_BATCH;
    let pool = spec.payload.pool(len);
    let wal = engines::open(spec.engine, &spec.dir, false, len, Tuning::of(spec))?;
    let batches = spec.bulk_bytes.div_ceil((count * len) as u64);
    let start = Instant::now();
    let mut latencies = Vec::with_capacity(batches as usize);
    for batch in 0..batches {
        let entries = batch_from(&pool, batch, count, len);
        let before = Instant::now();
        wal.write(Location::new(REGION, 1), 1 + batch * count as u64, &entries)?;
        latencies.push(u32::try_from(before.elapsed().as_nanos()).unwrap_or(u32::MAX));
    }
    wal.sync()?;
    let seconds = start.elapsed().as_secs_f64();
    let bytes = batches * (count * len) as u64;
    latencies.sort_unstable();
    let at = |p: f64| {
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len().max(1));
        latencies.get(i - 1).map(|&ns| f64::from(ns) / 1e3)
    };
    let result = RunResult {
        value: bytes as f64 / seconds / 1e6,
        ops: batches,
        entries: batches * count as u64,
        bytes,
        seconds,
        p50_us: at(0.5),
        p99_us: at(0.99),
        p999_us: at(0.999),
        note: wal.note(),
        ..RunResult::default()
    };
    Ok((result, wal))
}

/// `recover`: open the `bulk` data and read every entry back, timed, with
/// peak anonymous memory sampled meanwhile.
pub(crate) fn recover(spec: &Spec) -> Result<RunResult> {
    let (count, len) = BULK_BATCH;
    let batches = spec.bulk_bytes.div_ceil((count * len) as u64);
    let expected = batches * count as u64;
    let sampler = AnonSampler::start();
    let start = Instant::now();
    let (entries, bytes) =
        engines::recover_read_all(spec.engine, &spec.dir, len, Tuning::of(spec))?;
    let seconds = start.elapsed().as_secs_f64();
    let peak = sampler.stop();
    if entries != expected || bytes != expected * len as u64 {
        return Err(Error::msg(format!(
            "{} recovered {entries} entries ({bytes} bytes), not the {expected} written",
            spec.engine
        )));
    }
    Ok(RunResult {
        value: bytes as f64 / seconds / 1e6,
        ops: 1,
        entries,
        bytes,
        seconds,
        peak_anon_bytes: Some(peak),
        ..RunResult::default()
    })
}

/// `table-read`'s data: 100 tables written round-robin, a batch of
/// 16 x 1 KiB each in turn, unsynced, until `table_read_bytes`; then one
/// sync and a close.
fn write_tables(spec: &Spec) -> Result<()> {
    let (tables, count, len) = TABLE_READ_SHAPE;
    let pool = spec.payload.pool(len);
    let wal = engines::open(spec.engine, &spec.dir, false, len, Tuning::of(spec))?;
    let rounds = table_read_rounds(spec);
    for round in 0..rounds {
        for table in 1..=tables {
            let entries = batch_from(&pool, round * tables + table, count, len);
            let at = Location::new(REGION, table);
            wal.write(at, 1 + round * count as u64, &entries)?;
        }
    }
    wal.sync()?;
    wal.close()
}

/// Rounds of `write_tables`: every table gets one batch per round.
fn table_read_rounds(spec: &Spec) -> u64 {
    let (tables, count, len) = TABLE_READ_SHAPE;
    spec.table_read_bytes
        .div_ceil(tables * (count * len) as u64)
        .max(1)
}

/// `table-read`: open the data (untimed, except for okaywal, whose only
/// read is its recovery), then read `TABLES_READ` one table at a time,
/// timed. For segwal also the same reads by scanning the whole region.
fn table_read(spec: &Spec) -> Result<RunResult> {
    let (_, count, len) = TABLE_READ_SHAPE;
    let expected = table_read_rounds(spec) * count as u64;
    let check = |table: u64, entries: u64| {
        if entries == expected {
            Ok(())
        } else {
            Err(Error::msg(format!(
                "{} read {entries} entries of table {table}, not the {expected} written",
                spec.engine
            )))
        }
    };
    let mut total = 0;
    let sampler = AnonSampler::start();
    let mut scan_entries_per_s = None;
    let seconds;
    if spec.engine == EngineKind::Okaywal {
        let start = Instant::now();
        for table in TABLES_READ {
            let (entries, _) =
                engines::okaywal_read_table(&spec.dir, Location::new(REGION, table))?;
            check(table, entries)?;
            total += entries;
        }
        seconds = start.elapsed().as_secs_f64();
    } else {
        let wal = engines::open(spec.engine, &spec.dir, false, len, Tuning::of(spec))?;
        let start = Instant::now();
        for table in TABLES_READ {
            let mut entries = 0;
            wal.read_table(Location::new(REGION, table), &mut |payload| {
                entries += 1;
                std::hint::black_box(payload);
            })?;
            check(table, entries)?;
            total += entries;
        }
        seconds = start.elapsed().as_secs_f64();
        if matches!(spec.engine, EngineKind::Segwal | EngineKind::SegwalManager) {
            scan_entries_per_s = Some(scan_filter(&*wal, &check)?);
        }
        wal.close()?;
    }
    let peak = sampler.stop();
    Ok(RunResult {
        value: total as f64 / seconds,
        ops: TABLES_READ.len() as u64,
        entries: total,
        bytes: total * len as u64,
        seconds,
        peak_anon_bytes: Some(peak),
        scan_entries_per_s,
        ..RunResult::default()
    })
}

/// The reads of `table_read` done the slow way: for each table, decode the
/// whole region (every record of every segment) and keep that table's
/// entries. A scan yields payloads in sequence order, which is the order
/// `write_tables` wrote them, so an entry's table follows from its position.
fn scan_filter(wal: &dyn Wal, check: &dyn Fn(u64, u64) -> Result<()>) -> Result<f64> {
    let (tables, count, _) = TABLE_READ_SHAPE;
    let start = Instant::now();
    let mut total = 0;
    for table in TABLES_READ {
        let mut position = 0u64;
        let mut entries = 0;
        wal.read_all(&mut |payload| {
            // Round-robin order: entry `position` belongs to table
            // `(position / count) % tables + 1`.
            if (position / count as u64) % tables + 1 == table {
                entries += 1;
                std::hint::black_box(payload);
            }
            position += 1;
        })?;
        check(table, entries)?;
        total += entries;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// Samples this process's `RssAnon` every millisecond on a thread of its
/// own and keeps the highest value.
struct AnonSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl AnonSampler {
    fn start() -> AnonSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_anon().unwrap_or(0)));
        let thread = {
            let (stop, peak) = (Arc::clone(&stop), Arc::clone(&peak));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(now) = rss_anon() {
                        peak.fetch_max(now, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        AnonSampler { stop, peak, thread }
    }

    /// Stops sampling; the peak in bytes.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        if let Some(now) = rss_anon() {
            self.peak.fetch_max(now, Ordering::Relaxed);
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// `RssAnon` of this process, in bytes (Linux).
fn rss_anon() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Parses a size such as `1GiB`, `64MiB`, `512KiB` or a plain byte count.
pub(crate) fn parse_size(text: &str) -> Result<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .context(|| format!("{text:?} is not a size such as 1GiB or 4096"))?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        _ => return Err(Error::msg(format!("{text:?}: unknown unit {unit:?}"))),
    };
    Ok(number << shift)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    #[test]
    fn sizes_parse_with_and_without_units() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("16MiB").unwrap(), 16 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("8k").unwrap(), 8 << 10);
        assert!(parse_size("1 TB").is_err());
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn batches_of_one_write_never_share_bytes() {
        let pool = PayloadKind::Random.pool(4096);
        let batch = batch_from(&pool, 3, 64, 4096);
        assert_eq!(batch.len(), 64);
        let mut starts: Vec<&[u8]> = batch.iter().map(|e| &e[..16]).collect();
        starts.sort();
        starts.dedup();
        assert_eq!(starts.len(), 64);
    }

    #[test]
    fn every_workload_and_engine_name_round_trips() {
        for workload in Workload::ALL {
            assert_eq!(Workload::parse(workload.name()).unwrap(), workload);
        }
        for engine in EngineKind::ALL {
            assert_eq!(EngineKind::parse(engine.name()).unwrap(), engine);
        }
        assert!(Workload::parse("sync2").is_err());
        assert_eq!(
            Workload::parse("sync16-r16").unwrap(),
            Workload::Sync16Regions16
        );
        assert_eq!(
            Workload::parse("sync16-r256").unwrap(),
            Workload::Sync16Regions256
        );
    }

    /// The regions each writer of `workload` writes in its first `batches`
    /// batches.
    fn regions_by_writer(workload: Workload, batches: u64) -> Vec<BTreeSet<u64>> {
        let shape = workload.sync_shape().unwrap();
        (0..shape.writers)
            .map(|w| (0..batches).map(|i| shape.place(w, i).0.region).collect())
            .collect()
    }

    #[test]
    fn sync16_r256_gives_each_writer_16_regions_of_its_own_covering_0_to_256_once() {
        let by_writer = regions_by_writer(Workload::Sync16Regions256, 160);
        assert_eq!(by_writer.len(), 16);
        let mut all = Vec::new();
        for (w, regions) in by_writer.iter().enumerate() {
            let w = w as u64;
            let expected: BTreeSet<u64> = (w * 16..w * 16 + 16).collect();
            assert_eq!(regions, &expected, "writer {w}");
            all.extend(regions.iter().copied());
        }
        all.sort_unstable();
        assert_eq!(all, (0..256).collect::<Vec<u64>>());
        // In turn: batch i of writer w goes to region w * 16 + i mod 16.
        let shape = Workload::Sync16Regions256.sync_shape().unwrap();
        assert_eq!(shape.place(3, 0).0, Location::new(48, 1));
        assert_eq!(shape.place(3, 17).0, Location::new(49, 1));
    }

    #[test]
    fn sync16_r16_gives_writer_w_region_w_alone_and_sync16_shares_region_1() {
        for (w, regions) in regions_by_writer(Workload::Sync16Regions16, 40)
            .iter()
            .enumerate()
        {
            assert_eq!(regions, &BTreeSet::from([w as u64]), "writer {w}");
        }
        let shape = Workload::Sync16.sync_shape().unwrap();
        for w in 0..16 {
            for i in 0..40 {
                assert_eq!(shape.place(w, i).0, Location::new(REGION, w + 1));
            }
        }
    }

    #[test]
    fn every_location_s_indexes_run_on_without_a_gap() {
        // raft-engine refuses a batch whose first index does not follow the
        // group's last one.
        for workload in [
            Workload::Sync16,
            Workload::Sync16Regions16,
            Workload::Sync16Regions256,
        ] {
            let shape = workload.sync_shape().unwrap();
            let mut next: BTreeMap<Location, u64> = BTreeMap::new();
            for w in 0..shape.writers {
                for i in 0..100 {
                    let (at, index) = shape.place(w, i);
                    let expected = next.entry(at).or_insert(1);
                    assert_eq!(index, *expected, "{} {at:?}", workload.name());
                    *expected += shape.batch_entries as u64;
                }
            }
        }
    }

    #[test]
    fn the_region_workloads_run_on_the_floor_and_segwal_and_measure_the_data_dir() {
        // A tiny run of each, end to end in this process: nothing fails,
        // and the data dir holds at least every writer's first batch (a
        // writer writes once before it looks at the clock). The measured
        // window may hold no write at all: a segwal region's first write
        // can take longer than the whole run, creating its segment.
        for workload in [Workload::Sync16Regions16, Workload::Sync16Regions256] {
            for engine in [EngineKind::Floor, EngineKind::SegwalManager] {
                let dir = tempfile::tempdir().unwrap();
                let spec = Spec {
                    dir: dir.path().join("data"),
                    seconds: 0.05,
                    ..Spec::for_test(engine, workload)
                };
                let result = run(&spec).unwrap().unwrap();
                let what = format!("{} {engine}", workload.name());
                assert_eq!(result.entries, result.ops * 4, "{what}");
                assert_eq!(result.p999_us.is_some(), result.ops > 0, "{what}");
                let first_batches = 16 * 4 * 1024;
                let data_dir = result.data_dir_bytes.unwrap();
                assert!(
                    data_dir >= result.bytes.max(first_batches),
                    "{what}: {data_dir} bytes"
                );
            }
        }
    }

    #[test]
    fn the_synced_floors_run_only_the_synced_workloads() {
        // Unsynced, floor-dsync and floor-group would be the floor again.
        for workload in Workload::ALL {
            for engine in [EngineKind::FloorDsync, EngineKind::FloorGroup] {
                assert_eq!(
                    workload.supports(engine),
                    workload.sync_shape().is_some(),
                    "{engine} {}",
                    workload.name()
                );
            }
        }
    }
}
