//! Counters a user of the WAL wants to see.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::histogram::{COUNT_BOUNDS, Histogram, HistogramSnapshot, LATENCY_BOUNDS_NANOS};
use crate::space::TablePin;

/// How many regions the text of [`Statistics`] lists by name.
const DISPLAYED_REGIONS: usize = 32;

/// Monotonic counters, updated with relaxed atomics on the write path.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) batches_written: AtomicU64,
    pub(crate) entries_written: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    pub(crate) syncs: AtomicU64,
    pub(crate) synced_writes: AtomicU64,
    pub(crate) flusher_syncs: AtomicU64,
    pub(crate) writebacks: AtomicU64,
    pub(crate) starved_writes: AtomicU64,
    pub(crate) segments_created: AtomicU64,
    pub(crate) segments_deleted: AtomicU64,
    pub(crate) segments_reopened: AtomicU64,
    pub(crate) spares_used: AtomicU64,
    pub(crate) spares_hurried: AtomicU64,
    pub(crate) early_rollovers: AtomicU64,
    pub(crate) meta_writes: AtomicU64,
    pub(crate) segments_rewritten: AtomicU64,
    pub(crate) rewritten_records: AtomicU64,
    pub(crate) rewritten_bytes: AtomicU64,
    /// How long recovery took at open, and the bytes of log it read.
    pub(crate) recovery_nanos: AtomicU64,
    pub(crate) recovery_bytes: AtomicU64,
    pub(crate) histograms: Histograms,
}

/// The distributions behind the counters.
#[derive(Debug)]
pub(crate) struct Histograms {
    /// How long each sync counted in `syncs` took, in nanoseconds (for a
    /// write that synced itself, the whole write).
    pub(crate) sync_nanos: Histogram,
    /// How many batches each sync made durable.
    pub(crate) batches_per_sync: Histogram,
}

impl Default for Histograms {
    fn default() -> Histograms {
        Histograms {
            sync_nanos: Histogram::new(LATENCY_BOUNDS_NANOS),
            batches_per_sync: Histogram::new(COUNT_BOUNDS),
        }
    }
}

impl Stats {
    /// Counts one sync that took `nanos` and made `batches` batches
    /// durable.
    pub(crate) fn record_sync(&self, nanos: u64, batches: u64) {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.histograms.sync_nanos.observe(nanos);
        self.histograms.batches_per_sync.observe(batches);
    }

    pub(crate) fn record_write(&self, entries: u64, bytes: u64) {
        self.batches_written.fetch_add(1, Ordering::Relaxed);
        self.entries_written.fetch_add(entries, Ordering::Relaxed);
        self.bytes_written.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// A point-in-time copy of the counters, plus per-region figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Statistics {
    /// Batches written since open.
    pub batches_written: u64,
    /// Entries written since open.
    pub entries_written: u64,
    /// Bytes written to segments since open (records, headers included).
    pub bytes_written: u64,
    /// Syncs issued by writes, rollovers and interval syncs: `fdatasync`
    /// calls, and writes that synced themselves (`synced_writes`).
    pub syncs: u64,
    /// Writes that carried their own sync, one system call instead of a
    /// write and an `fdatasync`: those of a writer alone in its region
    /// under `SyncMode::Always`.
    pub synced_writes: u64,
    /// Group-commit syncs made by a region's flusher thread (see
    /// docs/ARCHITECTURE.md, "Group commit"), counted in `syncs` too; the
    /// rest of the group's syncs were made by a writer that led.
    pub flusher_syncs: u64,
    /// Times write-back of an unsynced segment was started early, every
    /// [`WRITEBACK_CHUNK_BYTES`](crate::WRITEBACK_CHUNK_BYTES) written
    /// (`SyncMode::Never` and `Interval` only).
    pub writebacks: u64,
    /// Batches appended by another writer's thread because their own had
    /// waited for the region's writer lock for 500 µs (see
    /// docs/ARCHITECTURE.md, "Locks and their order").
    pub starved_writes: u64,
    /// Segment files created since open.
    pub segments_created: u64,
    /// Segment files deleted since open.
    pub segments_deleted: u64,
    /// Sealed segments a read had to open (map) again because the
    /// open-segment cache no longer held them. If this grows with every
    /// replay, `cache_size` is smaller than what the replays read.
    pub segments_reopened: u64,
    /// Rollovers that found the next segment prepared ahead of need (the
    /// others created it while writers waited).
    pub spares_used: u64,
    /// Of those, rollovers that found the spare's zeros still being
    /// written (spread over the time the segment before it was expected to
    /// take to fill) and hurried them: the rest of its blocks were reserved
    /// instead (or zeroed without pauses, where blocks cannot be
    /// reserved). Many mean segments fill faster than their successors'
    /// zeros are paced for.
    pub spares_hurried: u64,
    /// Rollovers made before the active segment was full: its blocks were
    /// reserved (the first segment after open is, to be ready at once),
    /// and a zero-filled spare was ready, whose syncs commit no extent
    /// conversions. The segment left behind gives back the blocks past its
    /// records. About one per open under `SyncMode::Always`; more when
    /// writes slow down after segments were reserved for filling fast.
    pub early_rollovers: u64,
    /// META log appends (deletes, tables' numbers before segments are
    /// removed, sequence floors after a failure).
    pub meta_writes: u64,
    /// Sealed segments whose live records were rewritten forward so that
    /// they could be removed (see `ManagerConfig::max_dead_bytes`).
    pub segments_rewritten: u64,
    /// Records copied forward by those rewrites.
    pub rewritten_records: u64,
    /// Bytes written by those rewrites.
    pub rewritten_bytes: u64,
    /// Segment files of the log (holding live entries, or being written).
    pub segments_live: u64,
    /// Bytes the segment files take on disk: their preallocated lengths,
    /// less the room a segment sealed early gave back.
    pub disk_bytes: u64,
    /// Bytes of records with live entries: `disk_bytes / live_bytes` is
    /// the log's space amplification.
    pub live_bytes: u64,
    /// Bytes of the META log.
    pub meta_bytes: u64,
    /// Segment files open now: each stream's active one, plus sealed ones
    /// in the open-segment cache.
    pub segments_open: u64,
    /// How long each sync took, in nanoseconds (for a write that synced
    /// itself, the whole write).
    pub sync_latency_nanos: HistogramSnapshot,
    /// How many batches each sync made durable: the group commit's groups.
    pub batches_per_sync: HistogramSnapshot,
    /// How long recovery took when the WAL was opened, in nanoseconds.
    pub recovery_nanos: u64,
    /// Bytes of log recovery read when the WAL was opened.
    pub recovery_bytes: u64,
    /// The tables whose live records pin the oldest sealed segments, oldest
    /// first (see [`SegmentManager::oldest_pins`](crate::SegmentManager::oldest_pins)).
    pub oldest_pins: Vec<TablePin>,
    /// For each region written since open or found by recovery, ascending:
    /// (region id, next sequence number).
    pub regions: Vec<(u64, u64)>,
}

impl Statistics {
    pub(crate) fn from_counters(stats: &Stats) -> Statistics {
        Statistics {
            batches_written: stats.batches_written.load(Ordering::Relaxed),
            entries_written: stats.entries_written.load(Ordering::Relaxed),
            bytes_written: stats.bytes_written.load(Ordering::Relaxed),
            syncs: stats.syncs.load(Ordering::Relaxed),
            synced_writes: stats.synced_writes.load(Ordering::Relaxed),
            flusher_syncs: stats.flusher_syncs.load(Ordering::Relaxed),
            writebacks: stats.writebacks.load(Ordering::Relaxed),
            starved_writes: stats.starved_writes.load(Ordering::Relaxed),
            segments_created: stats.segments_created.load(Ordering::Relaxed),
            segments_deleted: stats.segments_deleted.load(Ordering::Relaxed),
            segments_reopened: stats.segments_reopened.load(Ordering::Relaxed),
            spares_used: stats.spares_used.load(Ordering::Relaxed),
            spares_hurried: stats.spares_hurried.load(Ordering::Relaxed),
            early_rollovers: stats.early_rollovers.load(Ordering::Relaxed),
            meta_writes: stats.meta_writes.load(Ordering::Relaxed),
            segments_rewritten: stats.segments_rewritten.load(Ordering::Relaxed),
            rewritten_records: stats.rewritten_records.load(Ordering::Relaxed),
            rewritten_bytes: stats.rewritten_bytes.load(Ordering::Relaxed),
            sync_latency_nanos: stats.histograms.sync_nanos.snapshot(),
            batches_per_sync: stats.histograms.batches_per_sync.snapshot(),
            recovery_nanos: stats.recovery_nanos.load(Ordering::Relaxed),
            recovery_bytes: stats.recovery_bytes.load(Ordering::Relaxed),
            ..Statistics::default()
        }
    }
}

impl std::fmt::Display for Statistics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let per_sync = if self.syncs == 0 {
            0.0
        } else {
            self.batches_written as f64 / self.syncs as f64
        };
        writeln!(f, "batches written: {}", self.batches_written)?;
        writeln!(f, "entries written: {}", self.entries_written)?;
        writeln!(f, "bytes written: {}", self.bytes_written)?;
        writeln!(
            f,
            "syncs: {} ({per_sync:.1} batches per sync; {} by writes that synced themselves, {} by flusher threads)",
            self.syncs, self.synced_writes, self.flusher_syncs
        )?;
        let micros = |q: f64| {
            self.sync_latency_nanos
                .quantile_bound(q)
                .map_or_else(|| "-".to_owned(), |nanos| (nanos / 1_000).to_string())
        };
        writeln!(
            f,
            "sync latency: p50 <= {} us, p99 <= {} us, p99.9 <= {} us",
            micros(0.5),
            micros(0.99),
            micros(0.999)
        )?;
        writeln!(f, "write-backs started early: {}", self.writebacks)?;
        writeln!(
            f,
            "writes appended for a writer kept waiting: {}",
            self.starved_writes
        )?;
        writeln!(
            f,
            "segments: {} live, {} open, {} created ({} prepared ahead, {} of them hurried; {} left early for a zeroed one), {} deleted, {} reopened by reads",
            self.segments_live,
            self.segments_open,
            self.segments_created,
            self.spares_used,
            self.spares_hurried,
            self.early_rollovers,
            self.segments_deleted,
            self.segments_reopened
        )?;
        writeln!(
            f,
            "disk: {} bytes of segments for {} live bytes; META log {} bytes",
            self.disk_bytes, self.live_bytes, self.meta_bytes
        )?;
        writeln!(f, "META log appends: {}", self.meta_writes)?;
        writeln!(
            f,
            "recovery at open: {} bytes in {:.1} ms",
            self.recovery_bytes,
            self.recovery_nanos as f64 / 1e6
        )?;
        writeln!(
            f,
            "rewrites: {} segments, {} records, {} bytes copied forward",
            self.segments_rewritten, self.rewritten_records, self.rewritten_bytes
        )?;
        for pin in &self.oldest_pins {
            writeln!(
                f,
                "segment {} and later pinned by region {} table {} ({} live bytes in sealed segments)",
                pin.oldest_segment_id, pin.region_id, pin.table_id, pin.live_bytes
            )?;
        }
        writeln!(f, "regions: {}", self.regions.len())?;
        // A node holds thousands of regions: the text lists the first few,
        // the field all of them.
        for (region_id, next) in self.regions.iter().take(DISPLAYED_REGIONS) {
            writeln!(f, "region {region_id}: next sequence {next}")?;
        }
        if self.regions.len() > DISPLAYED_REGIONS {
            writeln!(
                f,
                "and {} more regions",
                self.regions.len() - DISPLAYED_REGIONS
            )?;
        }
        Ok(())
    }
}
