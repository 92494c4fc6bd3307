//! `segwal inspect`, `verify` and `dump`: read-only looks at a data dir.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use segwal_manager::DirReport;

use crate::size::format_bytes;

/// `n` and the noun, singular or plural as `n` asks: "1 segment",
/// "3 segments".
fn count(n: u64, singular: &str, plural: &str) -> String {
    format!("{n} {}", if n == 1 { singular } else { plural })
}

/// The ids of a region's segments: all of them up to eight, else the first
/// four and the last two.
fn segment_ids(ids: &BTreeSet<u64>) -> String {
    let shown: Vec<String> = if ids.len() <= 8 {
        ids.iter().map(u64::to_string).collect()
    } else {
        let mut shown: Vec<String> = ids.iter().take(4).map(u64::to_string).collect();
        shown.push("…".into());
        shown.extend(ids.iter().skip(ids.len() - 2).map(u64::to_string));
        shown
    };
    shown.join(", ")
}

/// The segments of the shared log, each once, with size, live bytes,
/// regions and tables; then one line per region (its live entries, the
/// segments holding them, its sequence range); then delete marks and any
/// problems.
pub(crate) fn inspect(dir: &Path) -> Result<String, String> {
    let report = segwal_manager::inspect(dir).map_err(|e| e.to_string())?;
    let mut out = String::new();
    let disk: u64 = report.segments.iter().map(|s| s.file_bytes).sum();
    let live: u64 = report.segments.iter().map(|s| s.live_bytes).sum();
    let regions = report.regions();
    let streams: BTreeSet<Option<u64>> = report.segments.iter().map(|s| s.stream_id).collect();
    let _ = writeln!(
        out,
        "{}: {} ({}), {} on disk, {} live; {}; META log {}",
        dir.display(),
        count(report.segments.len() as u64, "segment", "segments"),
        count(streams.len() as u64, "stream", "streams"),
        format_bytes(disk),
        format_bytes(live),
        count(regions.len() as u64, "region", "regions"),
        format_bytes(report.meta_bytes)
    );
    if !report.segments.is_empty() {
        let mut table = comfy_table::Table::new();
        table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
        table.set_header([
            "segment",
            "stream",
            "file size",
            "data",
            "live",
            "records",
            "regions",
            "tables (region/table)",
        ]);
        for segment in &report.segments {
            let segment_regions: BTreeSet<u64> = segment.tables.keys().map(|k| k.0).collect();
            let mut tables: Vec<String> = segment
                .tables
                .iter()
                .take(4)
                .map(|((region, table), t)| {
                    format!("{region}/{table} ({}/{} live)", t.live_entries, t.entries)
                })
                .collect();
            if segment.tables.len() > 4 {
                tables.push(format!("and {} more", segment.tables.len() - 4));
            }
            table.add_row([
                segment.segment_id.to_string(),
                segment
                    .stream_id
                    .map_or_else(|| "?".into(), |s| s.to_string()),
                format_bytes(segment.file_bytes),
                format_bytes(segment.data_bytes),
                format_bytes(segment.live_bytes),
                segment.records.to_string(),
                segment_regions.len().to_string(),
                tables.join(", "),
            ]);
        }
        let _ = writeln!(out, "{table}");
    }
    for region in &regions {
        let spans = report
            .segments
            .iter()
            .flat_map(|s| s.tables.iter().map(move |(k, t)| (s.segment_id, k, t)))
            .filter(|(_, (r, _), _)| r == region);
        let (mut segments, mut live, mut first, mut last) = (BTreeSet::new(), 0, u64::MAX, 0);
        for (segment_id, _, span) in spans {
            segments.insert(segment_id);
            live += span.live_entries;
            first = first.min(span.first_sequence);
            last = last.max(span.last_sequence);
        }
        let recorded = report
            .tables
            .iter()
            .filter(|((r, _), _)| r == region)
            .map(|(_, t)| t.max_sequence)
            .max()
            .unwrap_or(0);
        let held = if first <= last {
            format!(
                "{} in {} ({}), sequences {first}..={last}",
                count(live, "live entry", "live entries"),
                count(segments.len() as u64, "segment", "segments"),
                segment_ids(&segments)
            )
        } else {
            "no entries on disk".into()
        };
        let _ = writeln!(
            out,
            "region {region}: {held}, largest sequence at least {}",
            last.max(recorded)
        );
    }
    let marks: Vec<_> = report
        .tables
        .iter()
        .filter(|(_, t)| t.deleted_up_to > 0)
        .collect();
    for &(&(region, table), mark) in marks.iter().take(20) {
        // The largest sequence number META recorded, or a larger one in a
        // segment (META records it only once no segment can prove it).
        let largest = report
            .segments
            .iter()
            .filter_map(|s| s.tables.get(&(region, table)))
            .map(|span| span.last_sequence)
            .fold(mark.max_sequence, u64::max);
        let _ = writeln!(
            out,
            "  region {region} table {table}: deleted up to {} (largest sequence {largest})",
            mark.deleted_up_to
        );
    }
    if marks.len() > 20 {
        let _ = writeln!(out, "  and {} more delete marks", marks.len() - 20);
    }
    write_problems(&report, &mut out);
    Ok(out)
}

fn write_problems(report: &DirReport, out: &mut String) {
    for problem in report.problems() {
        let label = if problem.is_damage { "damage" } else { "note" };
        let _ = writeln!(out, "{label}: {problem}");
    }
}

/// Checks every checksum. Returns the report text and whether the data
/// dir is clean.
pub(crate) fn verify(dir: &Path) -> Result<(String, bool), String> {
    let report = segwal_manager::inspect(dir).map_err(|e| e.to_string())?;
    let mut out = String::new();
    write_problems(&report, &mut out);
    let segments = report.segments.len();
    let records: u64 = report.segments.iter().map(|s| s.records).sum();
    let damaged = report.problems().filter(|p| p.is_damage).count();
    let verdict = if damaged == 0 { "clean" } else { "DAMAGED" };
    let meta = if report.meta_bytes > 0 {
        "META log and "
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "{}: {}; {meta}{} verified ({}); {verdict}{}",
        dir.display(),
        count(report.regions().len() as u64, "region", "regions"),
        count(segments as u64, "segment", "segments"),
        count(records, "record", "records"),
        if damaged == 0 {
            String::new()
        } else {
            format!(" ({})", count(damaged as u64, "problem", "problems"))
        }
    );
    Ok((out, damaged == 0))
}

/// One line per live entry of the table in `[from, to]`: sequence, length,
/// and a preview (text if printable, else hex).
pub(crate) fn dump(
    dir: &Path,
    region: u64,
    table: u64,
    from: u64,
    to: u64,
    out: &mut dyn std::io::Write,
) -> Result<(), String> {
    let mut failed = None;
    let report = segwal_manager::dump_table(dir, region, table, from, to, |entry| {
        if failed.is_none()
            && let Err(err) = writeln!(
                out,
                "{}\t{}\t{}",
                entry.sequence,
                entry.payload.len(),
                preview(entry.payload)
            )
        {
            failed = Some(err);
        }
    })
    .map_err(|e| e.to_string())?;
    if let Some(err) = failed {
        return Err(format!("cannot write the dump: {err}"));
    }
    if !report.regions().contains(&region) {
        return Err(format!(
            "region {region} does not exist in {}",
            dir.display()
        ));
    }
    for problem in report.problems().filter(|p| p.is_damage) {
        eprintln!("segwal: warning: {problem}");
    }
    Ok(())
}

/// Up to 32 bytes: as text if they are printable UTF-8, else as hex.
fn preview(payload: &[u8]) -> String {
    let head = &payload[..payload.len().min(32)];
    let more = if payload.len() > head.len() {
        "…"
    } else {
        ""
    };
    match std::str::from_utf8(head) {
        Ok(text) if text.chars().all(|c| !c.is_control()) => format!("{text:?}{more}"),
        _ => {
            let hex: String = head.iter().map(|b| format!("{b:02x}")).collect();
            format!("0x{hex}{more}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::preview;

    #[test]
    fn previews_show_text_or_hex() {
        assert_eq!(preview(b"hello"), "\"hello\"");
        assert_eq!(preview(&[0, 1, 255]), "0x0001ff");
        assert_eq!(preview(&[b'a'; 40]), format!("\"{}\"…", "a".repeat(32)));
    }
}
