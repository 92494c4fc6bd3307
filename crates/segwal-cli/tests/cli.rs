//! Drives the `segwal` binary: bench (its spread over every region and
//! table, `--dir` and `--keep`), inspect and verify of the shared log
//! (clean, damaged in a segment or in the META log, many regions), dump,
//! and the one-line errors with their exit codes.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use segwal_manager::{META_FILE, ManagerConfig, SegmentManager};
use support::{segwal, text};

/// A data dir with region 1: table 2 holds "entry-0".."entry-9", table 3
/// one binary entry; then table 2 deleted up to 2, and up to 4. All in
/// segment 1 of the shared log; META holds its header and one record per
/// delete (the open wrote the header alone: there was nothing to record).
fn sample_dir(dir: &Path) {
    let wal = SegmentManager::open(ManagerConfig::new(dir)).unwrap();
    for i in 0..10 {
        wal.write(1, 2, &[format!("entry-{i}").into_bytes()])
            .unwrap();
    }
    wal.write(1, 3, &[vec![0u8, 1, 2, 255]]).unwrap();
    wal.mark_delete_entries_up_to(1, 2, 2).unwrap();
    wal.mark_delete_entries_up_to(1, 2, 4).unwrap();
    wal.close().unwrap();
}

/// The file of segment `id` in data dir `dir`.
fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

/// Flips bit 0 of byte `at` of `path`.
fn flip(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x01;
    std::fs::write(path, &bytes).unwrap();
}

#[test]
fn bench_runs_a_small_workload_and_reports_json() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("bench");
    let out = segwal(&[
        "bench",
        "--dir",
        data.to_str().unwrap(),
        "--total-bytes",
        "1MiB",
        "--entry-size",
        "512",
        "--writers",
        "3",
        "--segment-size",
        "256KiB",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["entries_written"], 2048);
    assert_eq!(report["entries_replayed"], 2048);
    assert!(report["write_latency_p99_us"].as_f64().unwrap() > 0.0);
    assert!(
        report["disk_bytes_after_delete"].as_u64().unwrap()
            < report["disk_bytes_before_delete"].as_u64().unwrap()
    );

    // A table, by default; and a dir that already holds a WAL is refused.
    let out = segwal(&[
        "bench",
        "--dir",
        data.to_str().unwrap(),
        "--total-bytes",
        "64KiB",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("already holds a WAL"),
        "{}",
        text(&out.stderr)
    );
    let out = segwal(&[
        "bench",
        "--total-bytes",
        "64KiB",
        "--segment-size",
        "256KiB",
        "--sync",
        "never",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("throughput"),
        "{}",
        text(&out.stdout)
    );
}

/// Proves `bench --compression` compresses time-series rows (the records
/// take less than half the payload's bytes with lz4 and zstd) and not
/// random bytes, that each run replays every entry, and that `verify` and
/// `dump` read the compressed data dir it keeps.
#[test]
fn bench_compresses_tsdb_rows_and_the_tools_read_them() {
    let dir = tempfile::tempdir().unwrap();
    for (codec, payload) in [("lz4", "tsdb"), ("zstd", "tsdb"), ("zstd", "random")] {
        let data = dir.path().join(format!("{codec}-{payload}"));
        let out = segwal(&[
            "bench",
            "--dir",
            data.to_str().unwrap(),
            "--total-bytes",
            "512KiB",
            "--entry-size",
            "1KiB",
            "--regions",
            "4",
            "--tables",
            "2",
            "--sync",
            "never",
            "--compression",
            codec,
            "--payload",
            payload,
            "--keep",
            "--json",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["entries_replayed"], 512);
        assert_eq!(report["compression"], codec);
        let ratio = report["compression_ratio"].as_f64().unwrap();
        if payload == "tsdb" {
            assert!(ratio > 2.0, "{codec}: {ratio}");
        } else {
            assert!(ratio < 1.0, "{codec}: {ratio}");
        }
        let out = segwal(&["verify", data.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out.stdout));
        let out = segwal(&[
            "dump",
            data.to_str().unwrap(),
            "--region",
            "1",
            "--table",
            "1",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout).lines().count() >= 60,
            "{}",
            text(&out.stdout)
        );
    }
}

/// Runs a small bench of 16 batches of 4 entries (64 KiB of 1 KiB entries)
/// over 8 regions of 2 tables with 3 writers, keeping the data in `data`,
/// and returns its JSON report.
fn small_kept_bench(data: &Path) -> serde_json::Value {
    let out = segwal(&[
        "bench",
        "--dir",
        data.to_str().unwrap(),
        "--regions",
        "8",
        "--writers",
        "3",
        "--tables",
        "2",
        "--total-bytes",
        "64KiB",
        "--segment-size",
        "256KiB",
        "--keep",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Proves that every writer's batches spread over all regions: 3 writers,
/// 8 regions of 2 tables and 16 batches write each of the 16 tables once,
/// as both the report and the kept data dir show, and the replay finds
/// exactly the entries written.
#[test]
fn bench_writes_every_table_of_every_region() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("bench");
    let report = small_kept_bench(&data);
    assert_eq!(report["regions"], 8);
    assert_eq!(report["regions_written"], 8);
    assert_eq!(report["tables_written"], 16);
    assert_eq!(report["entries_written"], 64);
    assert_eq!(report["entries_replayed"], 64);

    let path = data.to_str().unwrap();
    let out = segwal(&["inspect", path]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains(": 1 segment (1 stream)"), "{shown}");
    for region in 0..8 {
        assert!(
            shown.contains(&format!(
                "region {region}: 8 live entries in 1 segment (1), sequences 1..=8"
            )),
            "{shown}"
        );
    }
    for region in 0..8 {
        for table in 0..2 {
            let (region, table) = (region.to_string(), table.to_string());
            let out = segwal(&["dump", path, "--region", &region, "--table", &table]);
            assert!(out.status.success(), "{}", text(&out.stderr));
            let entries = text(&out.stdout).lines().count();
            assert_eq!(entries, 4, "region {region} table {table}");
        }
    }
}

/// Proves that `bench --dir` creates a missing dir and its parents, that
/// `--keep` skips the deletes and leaves every entry for `verify`, and
/// that without it the same workload is deleted.
#[test]
fn bench_makes_its_dir_and_keep_leaves_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let kept = dir.path().join("a").join("b").join("kept");
    let report = small_kept_bench(&kept);
    assert_eq!(report["kept"], true);
    assert!(report["disk_bytes_after_delete"].is_null(), "{report}");
    assert!(report["disk_bytes_before_delete"].as_u64().unwrap() > 0);
    let out = segwal(&["verify", kept.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let shown = text(&out.stdout);
    // One shared log: the 16 batches of 8 regions fill one segment.
    assert!(
        shown.contains("8 regions; META log and 1 segment verified (16 records); clean"),
        "{shown}"
    );

    let deleted = dir.path().join("c").join("deleted");
    let out = segwal(&[
        "bench",
        "--dir",
        deleted.to_str().unwrap(),
        "--regions",
        "8",
        "--total-bytes",
        "64KiB",
        "--segment-size",
        "256KiB",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("8 of 8 regions"), "{shown}");
    assert!(shown.contains("before delete"), "{shown}");
    let out = segwal(&["verify", deleted.to_str().unwrap()]);
    assert!(
        text(&out.stdout).contains("(0 records); clean"),
        "{}",
        text(&out.stdout)
    );
}

/// Proves what `inspect`, `verify` and `dump` show of a clean data dir:
/// its one segment, the region's line, the table's live entries and delete
/// mark, and exactly the live entries in range.
#[test]
fn inspect_verify_and_dump_a_clean_dir() {
    let dir = tempfile::tempdir().unwrap();
    sample_dir(dir.path());
    let path = dir.path().to_str().unwrap();

    let out = segwal(&["inspect", path]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains(": 1 segment (1 stream)"), "{shown}");
    assert!(
        shown.contains("region 1: 7 live entries in 1 segment (1), sequences 1..=11"),
        "{shown}"
    );
    assert!(shown.contains("1/2 (6/10 live)"), "{shown}");
    assert!(shown.contains("1/3 (1/1 live)"), "{shown}");
    assert!(
        shown.contains("region 1 table 2: deleted up to 4 (largest sequence 10)"),
        "{shown}"
    );

    let out = segwal(&["verify", path]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("1 region; META log and 1 segment verified (11 records); clean"),
        "{}",
        text(&out.stdout)
    );

    let out = segwal(&["dump", path, "--region", "1", "--table", "2", "--to", "7"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "5\t7\t\"entry-4\"\n6\t7\t\"entry-5\"\n7\t7\t\"entry-6\"\n"
    );
    let out = segwal(&["dump", path, "--region", "1", "--table", "3"]);
    assert_eq!(text(&out.stdout), "11\t4\t0x000102ff\n");
}

/// Proves that `verify` exits with 1 on damage in a segment of the shared
/// log, naming the segment file and the offset of the damaged record.
#[test]
fn verify_names_the_file_and_offset_of_damage() {
    let dir = tempfile::tempdir().unwrap();
    sample_dir(dir.path());
    let segment = segment_path(dir.path(), 1);
    // Flip a byte inside the first record's payload (header 48 bytes,
    // record header 64, entry length 4): later records, written after a
    // sync covering it, make this corruption, not a torn tail.
    flip(&segment, 48 + 64 + 4);

    let out = segwal(&["verify", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let shown = text(&out.stdout);
    assert!(
        shown.contains(&format!("damage: {} at offset 48: ", segment.display())),
        "{shown}"
    );
    assert!(shown.contains("DAMAGED (1 problem)"), "{shown}");
}

/// Proves that `verify` checks the META log too: damage to a record that a
/// later record proves was synced exits with 1, naming META and the
/// record's offset; a damaged last record is what a crash during an
/// append leaves, a note naming its offset, with exit code 0 (the next
/// open drops it).
#[test]
fn verify_names_the_offset_of_damage_in_the_meta_log() {
    let dir = tempfile::tempdir().unwrap();
    sample_dir(dir.path());
    let meta = dir.path().join(META_FILE);
    // The header (16 bytes), then one record per delete (a checksum, a
    // count and one 32-byte entry: 40 bytes).
    assert_eq!(std::fs::metadata(&meta).unwrap().len(), 16 + 2 * 40);
    let path = dir.path().to_str().unwrap();

    flip(&meta, 16 + 40 + 30);
    let out = segwal(&["verify", path]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let shown = text(&out.stdout);
    assert!(
        shown.contains(&format!("note: {} at offset 56: ", meta.display())),
        "{shown}"
    );
    assert!(shown.contains("; clean"), "{shown}");

    flip(&meta, 16 + 40 + 30);
    flip(&meta, 16 + 30);
    let out = segwal(&["verify", path]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let shown = text(&out.stdout);
    assert!(
        shown.contains(&format!("damage: {} at offset 16: ", meta.display())),
        "{shown}"
    );
    assert!(shown.contains("DAMAGED (1 problem)"), "{shown}");

    // A damaged header: nothing of the log can be read.
    flip(&meta, 16 + 30);
    flip(&meta, 3);
    let out = segwal(&["verify", path]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let shown = text(&out.stdout);
    assert!(
        shown.contains(&format!("damage: {} at offset 0: ", meta.display())),
        "{shown}"
    );
}

/// Proves that `inspect` of a data dir of many regions lists each segment
/// of the shared log once, and one line for each region naming its
/// segments; `verify` counts every region and segment. 300 regions of two
/// tables share 4 KiB segments, each region's batches spread over
/// several.
#[test]
fn inspect_of_many_regions_lists_each_segment_once_and_each_region() {
    let dir = tempfile::tempdir().unwrap();
    let wal = SegmentManager::open(ManagerConfig {
        segment_size_bytes: 4096,
        ..ManagerConfig::new(dir.path())
    })
    .unwrap();
    let regions = 300u64;
    for round in 0..2 {
        for region in 0..regions {
            for table in 0..2u64 {
                wal.write(
                    region,
                    table,
                    &[format!("{region}/{table}/{round}").into_bytes()],
                )
                .unwrap();
            }
        }
    }
    wal.mark_delete_entries_up_to(5, 0, 1).unwrap();
    wal.close().unwrap();
    drop(wal);
    let segments: BTreeSet<u64> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".seg")?.parse().ok()
        })
        .collect();
    assert!(segments.len() >= 10, "{segments:?}");
    let path = dir.path().to_str().unwrap();

    let out = segwal(&["inspect", path]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.starts_with(&format!("{path}: {} segments (1 stream), ", segments.len())),
        "{shown}"
    );
    assert!(shown.contains("; 300 regions; "), "{shown}");
    // One row per segment in the segments table, whose first column is
    // the segment id.
    let rows: Vec<u64> = shown
        .lines()
        .filter_map(|line| {
            line.strip_prefix("│ ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(
        rows,
        segments.iter().copied().collect::<Vec<_>>(),
        "{shown}"
    );
    for region in 0..regions {
        let lines: Vec<&str> = shown
            .lines()
            .filter(|line| line.starts_with(&format!("region {region}: ")))
            .collect();
        assert_eq!(lines.len(), 1, "region {region}: {shown}");
        let live = if region == 5 { 3 } else { 4 };
        assert!(
            lines[0].starts_with(&format!("region {region}: {live} live entries in ")),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains("sequences 1..=4"), "{}", lines[0]);
    }
    assert!(
        shown.contains("region 5 table 0: deleted up to 1 (largest sequence 3)"),
        "{shown}"
    );

    let out = segwal(&["verify", path]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains(&format!(
            "300 regions; META log and {} segments verified (1200 records); clean",
            segments.len()
        )),
        "{}",
        text(&out.stdout)
    );
}

/// Proves that the tools refuse a data dir of the old layout (format
/// version 2: one directory of segments per region), as opening it does,
/// naming a segment of it and its version, instead of reporting an empty,
/// clean data dir.
#[test]
fn the_tools_refuse_a_data_dir_of_the_old_layout() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("LOCK"), b"").unwrap();
    let region = dir.path().join(format!("{:020}", 3));
    std::fs::create_dir(&region).unwrap();
    let old = region.join(format!("{:020}.seg", 1));
    let mut bytes = b"\x89SEGWAL\n\x02".to_vec();
    bytes.resize(4096, 0);
    std::fs::write(&old, bytes).unwrap();
    let err = SegmentManager::open(ManagerConfig::new(dir.path())).unwrap_err();
    assert!(
        err.to_string().contains(&old.display().to_string()),
        "{err}"
    );

    for tool in ["verify", "inspect"] {
        let out = segwal(&[tool, dir.path().to_str().unwrap()]);
        let shown = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert_ne!(out.status.code(), Some(0), "{tool}: {shown}");
        assert!(
            shown.contains(&old.display().to_string()),
            "{tool}: {shown}"
        );
        assert!(shown.contains("version 2"), "{tool}: {shown}");
    }
}

#[test]
fn errors_are_one_line_with_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let not_wal = dir.path().join("plain");
    std::fs::create_dir(&not_wal).unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let locked = dir.path().join("locked");
    let wal = SegmentManager::open(ManagerConfig::new(&locked)).unwrap();

    for (args, expected) in [
        (
            vec!["verify", missing.to_str().unwrap()],
            "cannot access directory",
        ),
        (
            vec!["inspect", not_wal.to_str().unwrap()],
            "is not a segwal data dir",
        ),
        (
            vec!["inspect", file.to_str().unwrap()],
            "is not a directory",
        ),
        (
            vec!["verify", locked.to_str().unwrap()],
            "in use by another segwal instance",
        ),
        (
            vec![
                "dump",
                locked.to_str().unwrap(),
                "--region",
                "1",
                "--table",
                "1",
            ],
            "in use",
        ),
    ] {
        let out = segwal(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = text(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("segwal: error: "), "{stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    drop(wal);

    let under_file = file.join("data");
    let out = segwal(&["bench", "--dir", under_file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("segwal: error: cannot create data dir"),
        "{stderr}"
    );

    let out = segwal(&["bench", "--sync", "sometimes"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not a sync mode"));
    let out = segwal(&["bench", "--total-bytes", "12 parsecs"]);
    assert_eq!(out.status.code(), Some(2));
    let out = segwal(&["dump", dir.path().to_str().unwrap(), "--region", "1"]);
    assert_eq!(out.status.code(), Some(2));
}
