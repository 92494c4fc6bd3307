//! Prometheus metrics for any [`WalManager`], registered in a registry the
//! caller passes.
//!
//! [`MeteredWal`] wraps a backend: it is itself a [`WalManager`], times
//! every write, counts every failed call by [`Error::kind`], and registers
//! one collector that, at each scrape, adds what the backend reports of
//! itself through [`ExportMetrics`] (for [`LocalWal`]: bytes and entries
//! written, syncs and their latency, batches per sync, segments, disk and
//! live bytes, recovery). Nothing is computed between scrapes beyond a few
//! relaxed atomic adds per call.
//!
//! Every metric carries two constant labels: `backend` (`local`, `nats`)
//! and `wal` (the name given at registration, such as `data` or
//! `manifest`), so one registry holds every WAL of a process.
//!
//! ```no_run
//! # async fn example() -> segwal::Result<()> {
//! use segwal::metrics::MeteredWal;
//! use segwal::{LocalWal, LocalWalConfig};
//!
//! let registry = prometheus::Registry::new();
//! let wal = LocalWal::open(LocalWalConfig::new("/var/lib/engine/wal")).await?;
//! let wal = MeteredWal::register(wal, &registry, "data").expect("names are unique");
//! // ... use `wal` as any WalManager; serve `registry.gather()` to Prometheus.
//! # Ok(())
//! # }
//! ```
//!
//! [`LocalWal`]: crate::LocalWal

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Bucket, Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use segwal_manager::{Histogram, HistogramSnapshot, LATENCY_BOUNDS_NANOS};

use crate::types::{
    LogWriteBatch, ReadContext, ReadRequest, RegionId, ScanContext, ScanRequest, SequenceNumber,
    WalLocation, WriteContext,
};
use crate::{BatchLogIterator, Error, Result, WalManager};

/// Every value of [`Error::kind`], in the order `segwal_errors_total`
/// lists them.
pub const ERROR_KINDS: &[&str] = &[
    "invalid_argument",
    "data_dir",
    "io",
    "corruption",
    "failed",
    "closed",
    "timeout",
    "internal",
    "backend",
];

/// What a backend reports of itself at each scrape (see [`MeteredWal`]).
pub trait ExportMetrics: Send + Sync + 'static {
    /// The `backend` label: `local`, `nats`.
    fn backend(&self) -> &'static str;

    /// Adds the backend's own metrics to `out`. It must add the same
    /// families (names and types) at every call.
    fn export(&self, out: &mut Families<'_>);
}

/// A [`WalManager`] that records Prometheus metrics of the WAL it wraps.
/// Calls go straight to the inner WAL; see the [module docs](self).
#[derive(Debug)]
pub struct MeteredWal<W> {
    inner: Arc<W>,
    calls: Arc<CallMetrics>,
}

impl<W: WalManager + ExportMetrics> MeteredWal<W> {
    /// Wraps `inner` and registers its collector in `registry` with the
    /// label `wal="{wal}"`. Fails if the registry already holds a WAL with
    /// the same backend and name.
    pub fn register(
        inner: W,
        registry: &prometheus::Registry,
        wal: &str,
    ) -> std::result::Result<MeteredWal<W>, prometheus::Error> {
        let inner = Arc::new(inner);
        let calls = Arc::new(CallMetrics::default());
        let collector = WalCollector::new(Arc::clone(&inner), Arc::clone(&calls), wal)?;
        registry.register(Box::new(collector))?;
        Ok(MeteredWal { inner, calls })
    }

    /// The wrapped WAL, for what only it offers (`LocalWal::oldest_pins`).
    pub fn inner(&self) -> &W {
        &self.inner
    }
}

impl<W> MeteredWal<W> {
    fn counted<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            self.calls.count_error(e);
        }
        result
    }
}

#[async_trait]
impl<W: WalManager> WalManager for MeteredWal<W> {
    async fn sequence_num(&self, location: WalLocation) -> Result<SequenceNumber> {
        self.counted(self.inner.sequence_num(location).await)
    }

    async fn mark_delete_entries_up_to(
        &self,
        location: WalLocation,
        sequence_num: SequenceNumber,
    ) -> Result<()> {
        let deleted = self
            .inner
            .mark_delete_entries_up_to(location, sequence_num)
            .await;
        self.counted(deleted)
    }

    async fn close_region(&self, region_id: RegionId) -> Result<()> {
        self.counted(self.inner.close_region(region_id).await)
    }

    async fn close_gracefully(&self) -> Result<()> {
        self.counted(self.inner.close_gracefully().await)
    }

    async fn read_batch(&self, ctx: &ReadContext, req: &ReadRequest) -> Result<BatchLogIterator> {
        self.counted(self.inner.read_batch(ctx, req).await)
    }

    async fn write(&self, ctx: &WriteContext, batch: &LogWriteBatch) -> Result<SequenceNumber> {
        let started = Instant::now();
        let written = self.inner.write(ctx, batch).await;
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.calls.write_nanos.observe(nanos);
        self.counted(written)
    }

    async fn scan(&self, ctx: &ScanContext, req: &ScanRequest) -> Result<BatchLogIterator> {
        self.counted(self.inner.scan(ctx, req).await)
    }

    async fn get_statistics(&self) -> Option<String> {
        self.inner.get_statistics().await
    }
}

/// What [`MeteredWal`] measures of the calls themselves.
#[derive(Debug)]
struct CallMetrics {
    /// Each write's latency, call to return, in nanoseconds.
    write_nanos: Histogram,
    /// Failed calls, one count per [`ERROR_KINDS`] entry.
    errors: [AtomicU64; ERROR_KINDS.len()],
}

impl Default for CallMetrics {
    fn default() -> CallMetrics {
        CallMetrics {
            write_nanos: Histogram::new(LATENCY_BOUNDS_NANOS),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl CallMetrics {
    fn count_error(&self, error: &Error) {
        let kind = error.kind();
        let index = ERROR_KINDS
            .iter()
            .position(|&k| k == kind)
            .expect("Error::kind returns one of ERROR_KINDS");
        self.errors[index].fetch_add(1, Ordering::Relaxed);
    }
}

/// The collector [`MeteredWal::register`] registers.
struct WalCollector<W> {
    inner: Arc<W>,
    calls: Arc<CallMetrics>,
    labels: Vec<(String, String)>,
    descs: Vec<Desc>,
}

impl<W: ExportMetrics> WalCollector<W> {
    fn new(inner: Arc<W>, calls: Arc<CallMetrics>, wal: &str) -> prometheus::Result<Self> {
        let labels = vec![
            ("backend".to_owned(), inner.backend().to_owned()),
            ("wal".to_owned(), wal.to_owned()),
        ];
        let mut collector = WalCollector {
            inner,
            calls,
            labels,
            descs: Vec::new(),
        };
        // The families are the same at every scrape: describe them by
        // collecting once.
        let const_labels: HashMap<String, String> = collector.labels.iter().cloned().collect();
        collector.descs = collector
            .families()
            .iter()
            .map(|family| {
                let variable = if family.name() == "segwal_errors_total" {
                    vec!["kind".to_owned()]
                } else {
                    Vec::new()
                };
                Desc::new(
                    family.name().to_owned(),
                    family.help().to_owned(),
                    variable,
                    const_labels.clone(),
                )
            })
            .collect::<prometheus::Result<_>>()?;
        Ok(collector)
    }

    fn families(&self) -> Vec<MetricFamily> {
        let mut out = Families {
            labels: &self.labels,
            families: Vec::new(),
        };
        out.histogram(
            "segwal_write_duration_seconds",
            "Latency of each write, from the call to its return (durable under SyncMode::Always).",
            &self.calls.write_nanos.snapshot(),
            1e-9,
        );
        let errors = ERROR_KINDS
            .iter()
            .zip(&self.calls.errors)
            .map(|(kind, count)| (*kind, count.load(Ordering::Relaxed) as f64));
        out.labelled_counters(
            "segwal_errors_total",
            "Failed calls, by kind of error.",
            "kind",
            errors,
        );
        self.inner.export(&mut out);
        out.families
    }
}

impl<W: ExportMetrics> Collector for WalCollector<W> {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.families()
    }
}

/// The metric families of one scrape, each labelled with the WAL's
/// constant labels; what [`ExportMetrics::export`] adds to.
pub struct Families<'a> {
    labels: &'a [(String, String)],
    families: Vec<MetricFamily>,
}

impl Families<'_> {
    /// A counter (a total that only grows while the WAL is open).
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        let mut counter = Counter::default();
        counter.set_value(value as f64);
        let mut metric = self.metric(None);
        metric.set_counter(counter);
        self.push(name, help, MetricType::COUNTER, vec![metric]);
    }

    /// A gauge (a value that goes up and down).
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        let mut gauge = Gauge::default();
        gauge.set_value(value);
        let mut metric = self.metric(None);
        metric.set_gauge(gauge);
        self.push(name, help, MetricType::GAUGE, vec![metric]);
    }

    /// A histogram from a snapshot, its bounds and sum multiplied by
    /// `scale` (`1e-9` turns nanoseconds into seconds).
    pub fn histogram(&mut self, name: &str, help: &str, snapshot: &HistogramSnapshot, scale: f64) {
        let buckets = snapshot
            .bounds
            .iter()
            .zip(&snapshot.cumulative)
            .map(|(&bound, &count)| {
                let mut bucket = Bucket::default();
                bucket.set_upper_bound(bound as f64 * scale);
                bucket.set_cumulative_count(count);
                bucket
            })
            .collect();
        let mut histogram = prometheus::proto::Histogram::default();
        histogram.set_bucket(buckets);
        histogram.set_sample_count(snapshot.count);
        histogram.set_sample_sum(snapshot.sum as f64 * scale);
        let mut metric = self.metric(None);
        metric.set_histogram(histogram);
        self.push(name, help, MetricType::HISTOGRAM, vec![metric]);
    }

    fn labelled_counters<'v>(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        values: impl Iterator<Item = (&'v str, f64)>,
    ) {
        let metrics = values
            .map(|(value, count)| {
                let mut counter = Counter::default();
                counter.set_value(count);
                let mut metric = self.metric(Some((label, value)));
                metric.set_counter(counter);
                metric
            })
            .collect();
        self.push(name, help, MetricType::COUNTER, metrics);
    }

    fn metric(&self, extra: Option<(&str, &str)>) -> Metric {
        let mut pairs: Vec<LabelPair> = self
            .labels
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .chain(extra)
            .map(|(name, value)| {
                let mut pair = LabelPair::default();
                pair.set_name(name.to_owned());
                pair.set_value(value.to_owned());
                pair
            })
            .collect();
        pairs.sort_by(|a, b| a.name().cmp(b.name()));
        let mut metric = Metric::default();
        metric.set_label(pairs);
        metric
    }

    fn push(&mut self, name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) {
        let mut family = MetricFamily::default();
        family.set_name(name.to_owned());
        family.set_help(help.to_owned());
        family.set_field_type(kind);
        family.set_metric(metrics);
        self.families.push(family);
    }
}

impl ExportMetrics for crate::LocalWal {
    fn backend(&self) -> &'static str {
        "local"
    }

    fn export(&self, out: &mut Families<'_>) {
        let s = self.counters();
        out.counter(
            "segwal_written_batches_total",
            "Batches written.",
            s.batches_written,
        );
        out.counter(
            "segwal_written_entries_total",
            "Entries written.",
            s.entries_written,
        );
        out.counter(
            "segwal_written_bytes_total",
            "Bytes written to segments, record headers included.",
            s.bytes_written,
        );
        out.counter(
            "segwal_syncs_total",
            "Syncs (fdatasync, or a write that synced itself).",
            s.syncs,
        );
        out.histogram(
            "segwal_sync_duration_seconds",
            "Latency of each sync.",
            &s.sync_latency_nanos,
            1e-9,
        );
        out.histogram(
            "segwal_batches_per_sync",
            "Batches each sync made durable (the group commit's groups).",
            &s.batches_per_sync,
            1.0,
        );
        out.gauge(
            "segwal_segments_live",
            "Segment files of the log.",
            s.segments_live as f64,
        );
        out.counter(
            "segwal_segments_created_total",
            "Segment files created.",
            s.segments_created,
        );
        out.counter(
            "segwal_spares_hurried_total",
            "Rollovers that found the next segment's zeros unfinished and reserved the rest instead of waiting.",
            s.spares_hurried,
        );
        out.counter(
            "segwal_early_rollovers_total",
            "Rollovers before the active segment was full, from a reserved segment to a zero-filled one.",
            s.early_rollovers,
        );
        out.counter(
            "segwal_segments_removed_total",
            "Segment files removed once nothing in them was live.",
            s.segments_deleted,
        );
        out.counter(
            "segwal_rewritten_bytes_total",
            "Bytes of live records copied forward so that old segments could be removed.",
            s.rewritten_bytes,
        );
        out.gauge(
            "segwal_disk_bytes",
            "Bytes the segment files take on disk; over segwal_live_bytes, the space amplification.",
            s.disk_bytes as f64,
        );
        out.gauge(
            "segwal_live_bytes",
            "Bytes of records that hold live entries.",
            s.live_bytes as f64,
        );
        out.gauge(
            "segwal_recovery_duration_seconds",
            "How long recovery took when the WAL was opened.",
            s.recovery_nanos as f64 * 1e-9,
        );
        out.gauge(
            "segwal_recovery_bytes",
            "Bytes of log recovery read when the WAL was opened.",
            s.recovery_bytes as f64,
        );
    }
}
