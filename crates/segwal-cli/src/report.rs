//! What `segwal bench` measured ([`BenchReport`], printed as JSON) and
//! its two-column table ([`render`]).

use std::path::PathBuf;

use serde::Serialize;

use crate::size::format_bytes;

/// Everything the bench measured; printed as a table or as JSON.
#[derive(Debug, Serialize)]
pub(crate) struct BenchReport {
    pub(crate) backend: String,
    pub(crate) dir: PathBuf,
    pub(crate) sync: String,
    pub(crate) writers: usize,
    /// Regions configured (`--regions`).
    pub(crate) regions: u64,
    /// Regions that got at least one batch, counted as they were written.
    pub(crate) regions_written: u64,
    /// Tables per region configured (`--tables`).
    pub(crate) tables_per_region: u64,
    /// Tables that got at least one batch, over all regions: at most
    /// `regions * tables_per_region`.
    pub(crate) tables_written: u64,
    pub(crate) entry_size: usize,
    /// What the entries hold (`--payload`).
    pub(crate) payload: String,
    /// How record bodies were compressed (`--compression`).
    pub(crate) compression: String,
    /// Bytes of records written: headers and bodies as stored (local
    /// backend).
    pub(crate) record_bytes_written: Option<u64>,
    /// Payload bytes per record byte written (local backend).
    pub(crate) compression_ratio: Option<f64>,
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
    /// The size of the log once written and closed, before the deletes:
    /// for a data dir, the blocks its files occupy on disk (preallocated
    /// segments count in full); for NATS, the servers' storage.
    pub(crate) disk_bytes_before_delete: u64,
    /// The same after the deletes; `None` with `--keep`, which skips them.
    pub(crate) disk_bytes_after_delete: Option<u64>,
    /// Whether the data was left in place (`--keep`).
    pub(crate) kept: bool,
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
            "regions written",
            format!(
                "{} of {} regions, {} of {} tables (region x table)",
                report.regions_written,
                report.regions,
                report.tables_written,
                report.regions.saturating_mul(report.tables_per_region)
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
            "records",
            match (report.record_bytes_written, report.compression_ratio) {
                (Some(bytes), Some(ratio)) => format!(
                    "{} payload as {}: {} of records ({ratio:.2}x)",
                    report.payload,
                    report.compression,
                    format_bytes(bytes)
                ),
                _ => format!("{} payload", report.payload),
            },
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
                "data dir size on disk"
            } else {
                "server storage"
            },
            match report.disk_bytes_after_delete {
                Some(after) => format!(
                    "{} before delete, {} after delete",
                    format_bytes(report.disk_bytes_before_delete),
                    format_bytes(after)
                ),
                None => format!(
                    "{} (kept: no deletes)",
                    format_bytes(report.disk_bytes_before_delete)
                ),
            },
        ),
    ];
    for (name, value) in rows {
        table.add_row([name.to_owned(), value]);
    }
    table.to_string()
}
