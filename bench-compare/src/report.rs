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
    /// segwal in `table-read`: the same reads done by scanning the region.
    pub(crate) scan_entries_per_s: Option<f64>,
    pub(crate) note: Option<String>,
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
                peak_anon_mib: med(&runs, &|r| {
                    r.peak_anon_bytes.map(|b| b as f64 / f64::from(1 << 20))
                }),
                scan_entries_per_s: med(&runs, &|r| r.scan_entries_per_s),
                note,
            });
        }
    }
    rows
}

/// A number with thousands separators and sensible precision.
fn human(value: f64) -> String {
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

fn opt(value: Option<f64>) -> String {
    value.map(human).unwrap_or_else(|| "-".into())
}

/// The results as a Markdown table (readable in a terminal as it is), one
/// section per workload, with a line comparing segwal to its best peer.
pub(crate) fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let mut workloads: Vec<&str> = rows.iter().map(|r| r.workload).collect();
    workloads.dedup();
    for workload in workloads {
        let section: Vec<&Row> = rows.iter().filter(|r| r.workload == workload).collect();
        let unit = section[0].unit;
        let _ = writeln!(out, "\n### {workload} ({unit})\n");
        let _ = writeln!(
            out,
            "| engine | runs | median {unit} | vs segwal | p50 µs | p99 µs | p99.9 µs | peak anon MiB | notes |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
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
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
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
        let segwal = section
            .iter()
            .find(|r| r.engine == EngineKind::Segwal.name());
        let peers = [
            EngineKind::RaftEngine,
            EngineKind::Okaywal,
            EngineKind::Rocksdb,
        ];
        let best = section
            .iter()
            .filter(|r| peers.iter().any(|p| p.name() == r.engine))
            .max_by(|a, b| a.median.total_cmp(&b.median));
        if let (Some(segwal), Some(best)) = (segwal, best) {
            let _ = writeln!(
                out,
                "\nsegwal / best peer ({}): {:.2}x",
                best.engine,
                segwal.median / best.median
            );
        }
    }
    out
}

/// Colours of the engines' bars, in `EngineKind::ALL` order.
const COLOURS: [&str; 6] = [
    "#1f77b4", "#6baed6", "#d62728", "#2ca02c", "#ff7f0e", "#7f7f7f",
];

/// A grouped bar chart: per workload, each engine's median as a ratio to
/// segwal's (segwal = 1), with the ratio written above each bar.
pub(crate) fn svg(rows: &[Row], title: &str) -> String {
    let mut workloads: Vec<&str> = rows.iter().map(|r| r.workload).collect();
    workloads.dedup();
    let engines: Vec<EngineKind> = EngineKind::ALL
        .into_iter()
        .filter(|e| rows.iter().any(|r| r.engine == e.name()))
        .collect();
    let (bar, gap, left, top, plot_h) = (16.0, 24.0, 50.0, 50.0, 300.0);
    let group_w = bar * engines.len() as f64 + gap;
    let width = left + group_w * workloads.len() as f64 + 20.0;
    let height = top + plot_h + 110.0;
    let max_ratio = rows
        .iter()
        .filter_map(|r| r.vs_segwal)
        .fold(1.0f64, f64::max)
        .min(20.0);
    let scale = plot_h / (max_ratio * 1.1);
    let base = top + plot_h;
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
        r#"<text x="{left}" y="36">median of each engine / median of segwal (higher is faster)</text>"#
    );
    // Axis and the segwal = 1 line.
    let one = base - scale;
    let _ = writeln!(
        out,
        r##"<line x1="{left}" y1="{base}" x2="{:.0}" y2="{base}" stroke="black"/><line x1="{left}" y1="{one:.1}" x2="{:.0}" y2="{one:.1}" stroke="#999" stroke-dasharray="4 3"/><text x="4" y="{:.1}">1.0x</text>"##,
        width - 10.0,
        width - 10.0,
        one + 4.0
    );
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
            let h = ratio.min(max_ratio * 1.1) * scale;
            let x = x0 + bar * e as f64;
            let colour = COLOURS[EngineKind::ALL
                .iter()
                .position(|k| k == engine)
                .unwrap_or(0)];
            let _ = writeln!(
                out,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{colour}"><title>{} {}: {} {} ({ratio:.2}x)</title></rect>"#,
                base - h,
                bar - 2.0,
                row.engine,
                row.workload,
                human(row.median),
                row.unit
            );
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.1}" font-size="8" transform="rotate(-90 {:.1} {:.1})">{ratio:.2}</text>"#,
                x + bar / 2.0 + 3.0,
                base - h - 3.0,
                x + bar / 2.0 + 3.0,
                base - h - 3.0
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
        let colour = COLOURS[EngineKind::ALL
            .iter()
            .position(|k| k == engine)
            .unwrap_or(0)];
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
