//! `segwal inspect`, `verify` and `dump`: read-only looks at a data dir.

use std::fmt::Write as _;
use std::path::Path;

use segwal_manager::DirReport;

use crate::size::format_bytes;

/// Per region, the segments with size, sequence range, tables and live
/// bytes; then any problems.
pub(crate) fn inspect(dir: &Path) -> Result<String, String> {
    let report = segwal_manager::inspect(dir).map_err(|e| e.to_string())?;
    let mut out = String::new();
    if report.regions.is_empty() {
        let _ = writeln!(out, "{}: no regions", dir.display());
    }
    for region in &report.regions {
        let live: u64 = region.segments.iter().map(|s| s.live_bytes).sum();
        let _ = writeln!(
            out,
            "region {}: {} segments, {} live, next sequence at least {}",
            region.region_id,
            region.segments.len(),
            format_bytes(live),
            region.meta.next_sequence.max(1)
        );
        let mut table = comfy_table::Table::new();
        table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
        table.set_header([
            "segment",
            "file size",
            "data",
            "live",
            "records",
            "sequences",
            "tables",
        ]);
        for segment in &region.segments {
            let first = segment.tables.values().map(|t| t.first_sequence).min();
            let last = segment.tables.values().map(|t| t.last_sequence).max();
            let sequences = match (first, last) {
                (Some(first), Some(last)) => format!("{first}..={last}"),
                _ => "-".into(),
            };
            let mut tables: Vec<String> = segment
                .tables
                .iter()
                .take(6)
                .map(|(id, t)| format!("{id} ({}/{} live)", t.live_entries, t.entries))
                .collect();
            if segment.tables.len() > 6 {
                tables.push(format!("and {} more", segment.tables.len() - 6));
            }
            table.add_row([
                segment.segment_id.to_string(),
                format_bytes(segment.file_bytes),
                format_bytes(segment.data_bytes),
                format_bytes(segment.live_bytes),
                segment.records.to_string(),
                sequences,
                tables.join(", "),
            ]);
        }
        let _ = writeln!(out, "{table}");
        for mark in region.meta.tables.iter().filter(|t| t.deleted_up_to > 0) {
            let _ = writeln!(
                out,
                "  table {}: deleted up to {} (largest sequence {})",
                mark.table_id, mark.deleted_up_to, mark.max_sequence
            );
        }
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
    let segments: usize = report.regions.iter().map(|r| r.segments.len()).sum();
    let records: u64 = report
        .regions
        .iter()
        .flat_map(|r| &r.segments)
        .map(|s| s.records)
        .sum();
    let damaged = report.problems().filter(|p| p.is_damage).count();
    let verdict = if damaged == 0 { "clean" } else { "DAMAGED" };
    let _ = writeln!(
        out,
        "{}: {} regions, {segments} segments, {records} records verified; {verdict}{}",
        dir.display(),
        report.regions.len(),
        if damaged == 0 {
            String::new()
        } else {
            format!(" ({damaged} problems)")
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
    if report.regions.is_empty() {
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
