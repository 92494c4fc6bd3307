//! Drives the `segwal` binary: bench (its spread over every region and
//! table, `--dir` and `--keep`), inspect, verify (clean and damaged), dump,
//! and the one-line errors with their exit codes.

mod support;

use std::path::Path;

use segwal_manager::{ManagerConfig, SegmentManager};
use support::{segwal, text};

/// A data dir with region 1: table 2 holds "entry-0".."entry-9", table 3
/// one binary entry; then table 2 deleted up to 4.
fn sample_dir(dir: &Path) {
    let wal = SegmentManager::open(ManagerConfig::new(dir)).unwrap();
    for i in 0..10 {
        wal.write(1, 2, &[format!("entry-{i}").into_bytes()])
            .unwrap();
    }
    wal.write(1, 3, &[vec![0u8, 1, 2, 255]]).unwrap();
    wal.mark_delete_entries_up_to(1, 2, 4).unwrap();
    wal.close().unwrap();
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
    for region in 0..8 {
        assert!(
            shown.contains(&format!("region {region}: 1 segments")),
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
    assert!(
        shown.contains("8 regions, 8 segments, 16 records verified; clean"),
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
    assert!(text(&out.stdout).contains("0 records verified; clean"));
}

#[test]
fn inspect_verify_and_dump_a_clean_dir() {
    let dir = tempfile::tempdir().unwrap();
    sample_dir(dir.path());
    let path = dir.path().to_str().unwrap();

    let out = segwal(&["inspect", path]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("region 1: 1 segments"), "{shown}");
    assert!(shown.contains("1..=11"), "{shown}");
    assert!(shown.contains("2 (6/10 live)"), "{shown}");
    assert!(shown.contains("table 2: deleted up to 4"), "{shown}");

    let out = segwal(&["verify", path]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("11 records verified; clean"));

    let out = segwal(&["dump", path, "--region", "1", "--table", "2", "--to", "7"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "5\t7\t\"entry-4\"\n6\t7\t\"entry-5\"\n7\t7\t\"entry-6\"\n"
    );
    let out = segwal(&["dump", path, "--region", "1", "--table", "3"]);
    assert_eq!(text(&out.stdout), "11\t4\t0x000102ff\n");
}

#[test]
fn verify_names_the_file_and_offset_of_damage() {
    let dir = tempfile::tempdir().unwrap();
    sample_dir(dir.path());
    let segment = dir
        .path()
        .join(format!("{:020}", 1))
        .join(format!("{:020}.seg", 1));
    // Flip a byte inside the first record's payload (header 48 bytes,
    // record header 64, entry length 4): later records, written after a
    // sync covering it, make this corruption, not a torn tail.
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[48 + 64 + 4] ^= 0x01;
    std::fs::write(&segment, &bytes).unwrap();

    let out = segwal(&["verify", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let shown = text(&out.stdout);
    assert!(
        shown.contains(&format!("{} at offset 48", segment.display())),
        "{shown}"
    );
    assert!(shown.contains("DAMAGED"), "{shown}");
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
