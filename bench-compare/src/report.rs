//! Medians, the results table, the SVG chart, and which file system a dir
//! is on.

use std::fmt::Write as _;
use std::path::Path;

use crate::engines::EngineKind;
use crate::workloads::{RunResult, Workload};

/// One engine's medians on one workload.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Row {
    pub(crate) workload: &'static str,
    pub(crate) unit: &'static str,
    pub(crate) engine: &'static str,
    pub(crate) runs: usize,
    pub(crate) median: f64,
    /// This engine's median over segwal's (above 1: faster than segwal).
    pub(crate) vs_segwal: Option<f64>,
    pub(crate) p50_us: Option<f64>,
    pub(crate) p99_us: Option<f64>,
    pub(crate) p999_us: Option<f64>,
    pub(crate) peak_anon_mib: Option<f64>,
    /// Synced workloads: the data dir's allocated blocks at the end of the
    /// run, in MiB.
    pub(crate) data_dir_mib: Option<f64>,
    /// segwal in `table-read`: the same reads done by scanning the region.
    pub(crate) scan_entries_per_s: Option<f64>,
    pub(crate) note: Option<String>,
    /// `compress`: the payload kind and codec, the payload and the bytes
    /// written in MiB, and the recovery's MB/s.
    pub(crate) payload: Option<String>,
    pub(crate) codec: Option<String>,
    pub(crate) payload_mib: Option<f64>,
    pub(crate) written_mib: Option<f64>,
    pub(crate) recover_mb_s: Option<f64>,
}

/// Bytes as MiB.
fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if !values.len().is_multiple_of(2) {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// One row per workload and engine that has results, in the given orders.
pub(crate) fn summarize(
    workloads: &[Workload],
    engines: &[EngineKind],
    results: &[RunResult],
) -> Vec<Row> {
    let mut rows = Vec::new();
    for &workload in workloads {
        let runs_of = |engine: EngineKind| -> Vec<&RunResult> {
            results
                .iter()
                .filter(|r| r.workload == workload.name() && r.engine == engine.name())
                .collect()
        };
        let med = |runs: &[&RunResult], f: &dyn Fn(&RunResult) -> Option<f64>| {
            median(&mut runs.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
        };
        let segwal = med(&runs_of(EngineKind::Segwal), &|r| Some(r.value));
        for &engine in engines {
            let runs = runs_of(engine);
            let Some(value) = med(&runs, &|r| Some(r.value)) else {
                continue;
            };
            // The note of the run closest to the median.
            let note = runs
                .iter()
                .min_by(|a, b| (a.value - value).abs().total_cmp(&(b.value - value).abs()))
                .and_then(|r| r.note.clone());
            rows.push(Row {
                workload: workload.name(),
                unit: workload.unit(),
                engine: engine.name(),
                runs: runs.len(),
                median: value,
                vs_segwal: segwal.map(|s| value / s),
                p50_us: med(&runs, &|r| r.p50_us),
                p99_us: med(&runs, &|r| r.p99_us),
                p999_us: med(&runs, &|r| r.p999_us),
                peak_anon_mib: med(&runs, &|r| r.peak_anon_bytes.map(mib)),
                data_dir_mib: med(&runs, &|r| r.data_dir_bytes.map(mib)),
                scan_entries_per_s: med(&runs, &|r| r.scan_entries_per_s),
                note,
                payload: runs.first().and_then(|r| r.payload.clone()),
                codec: runs.first().and_then(|r| r.codec.clone()),
                payload_mib: med(&runs, &|r| Some(mib(r.bytes))),
                written_mib: med(&runs, &|r| r.written_bytes.map(mib)),
                recover_mb_s: med(&runs, &|r| r.recover_mb_s),
            });
        }
    }
    rows
}

/// A number with thousands separators and sensible precision.
pub(crate) fn human(value: f64) -> String {
    if value >= 100.0 {
        let whole = value.round() as u64;
        let digits = whole.to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// [`human`], or "-" for nothing.
pub(crate) fn opt(value: Option<f64>) -> String {
    value.map(human).unwrap_or_else(|| "-".into())
}

/// The results as a Markdown table (readable in a terminal as it is), one
/// section per workload, with a line comparing segwal to its best peer.
/// Sections whose runs measured their data dir (the synced workloads) get
/// a column for it. `compress` has a table of its own
/// (`compress::table`).
pub(crate) fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let mut workloads: Vec<&str> = rows
        .iter()
        .map(|r| r.workload)
        .filter(|&w| w != Workload::Compress.name())
        .collect();
    workloads.dedup();
    for workload in workloads {
        let section: Vec<&Row> = rows.iter().filter(|r| r.workload == workload).collect();
        let unit = section[0].unit;
        let data_dir = section.iter().any(|r| r.data_dir_mib.is_some());
        let _ = writeln!(out, "\n### {workload} ({unit})\n");
        let _ = writeln!(
            out,
            "| engine | runs | median {unit} | vs segwal | p50 µs | p99 µs | p99.9 µs |{} peak anon MiB | notes |",
            if data_dir { " data dir MiB |" } else { "" }
        );
        let _ = writeln!(
            out,
            "|---|---|---|---|---|---|---|{}---|---|",
            if data_dir { "---|" } else { "" }
        );
        for row in &section {
            let mut notes = row.note.clone().unwrap_or_default();
            if let Some(scan) = row.scan_entries_per_s {
                if !notes.is_empty() {
                    notes.push_str("; ");
                }
                let _ = write!(
                    notes,
                    "whole-region scan: {} entries/s, index read {:.1}x faster",
                    human(scan),
                    row.median / scan
                );
            }
            let data_dir_cell = if data_dir {
                format!(" {} |", opt(row.data_dir_mib))
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |{data_dir_cell} {} | {} |",
                row.engine,
                row.runs,
                human(row.median),
                row.vs_segwal
                    .map(|r| format!("{r:.2}x"))
                    .unwrap_or_else(|| "-".into()),
                opt(row.p50_us),
                opt(row.p99_us),
                opt(row.p999_us),
                opt(row.peak_anon_mib),
                notes,
            );
        }
        let peers = [
            EngineKind::RaftEngine,
            EngineKind::Okaywal,
            EngineKind::Rocksdb,
        ];
        let best = section
            .iter()
            .filter(|r| peers.iter().any(|p| p.name() == r.engine))
            .max_by(|a, b| a.median.total_cmp(&b.median));
        for ours in [EngineKind::Segwal, EngineKind::SegwalManager] {
            let row = section.iter().find(|r| r.engine == ours.name());
            if let (Some(row), Some(best)) = (row, best) {
                let _ = writeln!(
                    out,
                    "\n{} / best peer ({}): {:.2}x",
                    ours.name(),
                    best.engine,
                    row.median / best.median
                );
            }
        }
    }
    out
}

/// Colours of the engines' bars, in `EngineKind::ALL` order (one per
/// engine: the length makes an engine added without one fail to build).
const COLOURS: [&str; EngineKind::ALL.len()] = [
    "#1f77b4", "#6baed6", "#d62728", "#2ca02c", "#ff7f0e", "#7f7f7f", "#bdbdbd", "#525252",
];

/// The chart colour of `engine`.
fn colour(engine: &EngineKind) -> &'static str {
    COLOURS[EngineKind::ALL
        .iter()
        .position(|k| k == engine)
        .unwrap_or(0)]
}

/// A grouped bar chart: per workload, each engine's median as a ratio to
/// segwal's (segwal = 1), with the ratio written above each bar.
pub(crate) fn svg(rows: &[Row], title: &str) -> String {
    let mut workloads: Vec<&str> = rows.iter().map(|r| r.workload).collect();
    workloads.dedup();
    let engines: Vec<EngineKind> = EngineKind::ALL
        .into_iter()
        .filter(|e| rows.iter().any(|r| r.engine == e.name()))
        .collect();
    let (bar, gap, left, top, plot_h) = (16.0, 24.0, 50.0, 75.0, 300.0);
    let group_w = bar * engines.len() as f64 + gap;
    let width = left + group_w * workloads.len() as f64 + 20.0;
    let height = top + plot_h + 110.0;
    // A log2 scale, bars growing up or down from segwal's 1.0x, so that
    // 0.5x and 2x look equally far from parity.
    let ratios = rows.iter().filter_map(|r| r.vs_segwal);
    let lo = ratios
        .clone()
        .fold(1.0f64, f64::min)
        .max(1.0 / 64.0)
        .log2()
        .floor();
    let hi = ratios.fold(1.0f64, f64::max).min(64.0).log2().ceil();
    let span = (hi - lo).max(1.0);
    let scale = plot_h / span;
    let y_of = |ratio: f64| top + (hi - ratio.clamp(1.0 / 64.0, 64.0).log2()) * scale;
    let base = top + plot_h;
    let one = y_of(1.0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{left}" y="20" font-size="14">{}</text>"#,
        escape(title)
    );
    let _ = writeln!(
        out,
        r#"<text x="{left}" y="36">median of each engine / median of segwal, log scale (higher is faster)</text>"#
    );
    // Grid lines at powers of two; the 1.0x line is solid.
    let mut power = lo;
    while power <= hi {
        let y = y_of(2f64.powf(power));
        let label = if power >= 0.0 {
            format!("{}x", 2f64.powf(power))
        } else {
            format!("1/{}x", 2f64.powf(-power))
        };
        let stroke = if power == 0.0 { "#000" } else { "#ccc" };
        let _ = writeln!(
            out,
            r#"<line x1="{left}" y1="{y:.1}" x2="{:.0}" y2="{y:.1}" stroke="{stroke}"/><text x="4" y="{:.1}">{label}</text>"#,
            width - 10.0,
            y + 4.0
        );
        power += 1.0;
    }
    for (w, workload) in workloads.iter().enumerate() {
        let x0 = left + gap / 2.0 + group_w * w as f64;
        for (e, engine) in engines.iter().enumerate() {
            let Some(row) = rows
                .iter()
                .find(|r| r.workload == *workload && r.engine == engine.name())
            else {
                continue;
            };
            let Some(ratio) = row.vs_segwal else { continue };
            let y = y_of(ratio);
            let (y_top, h) = (y.min(one), (y - one).abs().max(1.0));
            let x = x0 + bar * e as f64;
            let colour = colour(engine);
            let _ = writeln!(
                out,
                r#"<rect x="{x:.1}" y="{y_top:.1}" width="{:.1}" height="{h:.1}" fill="{colour}"><title>{} {}: {} {} ({ratio:.2}x)</title></rect>"#,
                bar - 2.0,
                row.engine,
                row.workload,
                human(row.median),
                row.unit
            );
            // The label sits past the bar's far end.
            let label_y = if ratio >= 1.0 {
                y_top - 3.0
            } else {
                y_top + h + 3.0
            };
            let anchor = if ratio >= 1.0 { "start" } else { "end" };
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{label_y:.1}" font-size="8" text-anchor="{anchor}" transform="rotate(-90 {:.1} {label_y:.1})">{ratio:.2}</text>"#,
                x + bar / 2.0 + 3.0,
                x + bar / 2.0 + 3.0,
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{workload}</text>"#,
            x0 + bar * engines.len() as f64 / 2.0,
            base + 16.0
        );
    }
    for (e, engine) in engines.iter().enumerate() {
        let x = left + 130.0 * (e % 4) as f64;
        let y = base + 40.0 + 18.0 * (e / 4) as f64;
        let colour = colour(engine);
        let _ = writeln!(
            out,
            r#"<rect x="{x}" y="{:.0}" width="12" height="12" fill="{colour}"/><text x="{:.0}" y="{:.0}">{}</text>"#,
            y - 10.0,
            x + 16.0,
            y,
            engine.name()
        );
    }
    out.push_str("</svg>\n");
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The file system type of the mount holding `dir` (from /proc/mounts), or
/// "unknown".
pub(crate) fn file_system(dir: &Path) -> String {
    let Ok(dir) = dir.canonicalize() else {
        return "unknown".into();
    };
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return "unknown".into();
    };
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, point, kind) = (fields.next()?, fields.next()?, fields.next()?);
            dir.starts_with(point)
                .then(|| (point.len(), kind.to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown".into(), |(_, kind)| kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sections_that_measured_their_data_dir_get_its_column() {
        // A synced run carries its data dir, a read run does not; each row
        // must have as many cells as its section's header.
        let result = |workload: Workload, data_dir_bytes| RunResult {
            engine: EngineKind::Segwal.name().to_owned(),
            workload: workload.name().to_owned(),
            value: 1000.0,
            data_dir_bytes,
            ..RunResult::default()
        };
        let results = [
            result(Workload::Sync16Regions256, Some(3 << 20)),
            result(Workload::Recover, None),
        ];
        let rows = summarize(
            &[Workload::Sync16Regions256, Workload::Recover],
            &[EngineKind::Segwal],
            &results,
        );
        assert_eq!(rows[0].data_dir_mib, Some(3.0));
        let text = table(&rows);
        let (synced, recover) = text.split_once("### recover").unwrap();
        assert!(synced.contains("| data dir MiB |"), "{synced}");
        assert!(synced.contains("| 3.00 |"), "{synced}");
        assert!(!recover.contains("data dir"), "{recover}");
        for (part, bars) in [(synced, 11), (recover, 10)] {
            for line in part.lines().filter(|l| l.starts_with('|')) {
                assert_eq!(line.matches('|').count(), bars, "{line}");
            }
        }
    }
}
