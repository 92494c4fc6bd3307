//! Hostile arguments and data dirs for `segwal inspect`, `verify` and
//! `dump`: ids at the limits of `u64`, empty, inverted and out-of-range
//! sequence ranges, strays named like regions (a file, and a directory
//! with no segment in it), and a file named like a segment that is not
//! one.

mod support;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use segwal_manager::{ManagerConfig, SegmentManager};
use support::{segwal, text};

const MAX: u64 = u64::MAX;

/// Held by each test for its whole run. A child process spawned by one
/// test holds copies of every descriptor of this process until it has
/// exec'ed the binary, among them another test's open data-dir lock file,
/// and with it that lock: run concurrently, the tests would see each
/// other's data dirs as "in use".
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A data dir with regions 0 and `u64::MAX`, each with tables 0 and
/// `u64::MAX`, one entry each, all in segment 1 of the shared log.
fn limits_dir(dir: &Path) {
    let wal = SegmentManager::open(ManagerConfig {
        segment_size_bytes: 4096,
        ..ManagerConfig::new(dir)
    })
    .unwrap();
    for region in [0, MAX] {
        for table in [0, MAX] {
            wal.write(region, table, &[format!("{region}/{table}").into_bytes()])
                .unwrap();
        }
    }
    wal.close().unwrap();
}

/// Proves that the tools find regions and tables 0 and `u64::MAX` (the
/// ids the records of the shared log carry), that `dump` prints nothing
/// for empty, inverted and past-the-end ranges, and that a region id that
/// is absent or does not fit a `u64` is a one-line error with exit code 2.
/// A file, and a directory holding no segment, named like a region are
/// ignored.
#[test]
fn the_tools_handle_ids_and_ranges_at_the_limits() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    limits_dir(dir.path());
    std::fs::write(dir.path().join("00000000000000000007"), b"a file").unwrap();
    let stray = dir.path().join("00000000000000000008");
    std::fs::create_dir(&stray).unwrap();
    std::fs::write(stray.join("notes.txt"), b"not a segment").unwrap();
    let path = dir.path().to_str().unwrap();

    let out = segwal(&["verify", path]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("2 regions; META log and 1 segment verified (4 records); clean"),
        "{}",
        text(&out.stdout)
    );
    let out = segwal(&["inspect", path]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("region 0: 2 live entries in 1 segment (1), sequences 1..=2"),
        "{shown}"
    );
    assert!(
        shown.contains(&format!(
            "region {MAX}: 2 live entries in 1 segment (1), sequences 1..=2"
        )),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("{MAX}/{MAX} (1/1 live)")),
        "{shown}"
    );
    assert!(!shown.contains("region 7"), "{shown}");
    assert!(!shown.contains("region 8"), "{shown}");

    let max = MAX.to_string();
    let dump = |region: &str, table: &str, range: &[&str]| {
        let mut args = vec!["dump", path, "--region", region, "--table", table];
        args.extend(range);
        segwal(&args)
    };
    let out = dump(&max, &max, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The preview shows the first 32 of the payload's 41 bytes.
    let payload = format!("{MAX}/{MAX}");
    assert_eq!(
        text(&out.stdout),
        format!("2\t41\t\"{}\"…\n", &payload[..32])
    );
    let out = dump("0", "0", &["--from", "1", "--to", "1"]);
    assert_eq!(text(&out.stdout), "1\t3\t\"0/0\"\n");
    for range in [
        ["--from", "2", "--to", "1"],
        ["--from", "0", "--to", "0"],
        ["--from", &max, "--to", &max],
        ["--from", &max, "--to", "0"],
    ] {
        let out = dump("0", "0", &range);
        assert!(out.status.success(), "{range:?}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "", "{range:?}");
    }

    let out = dump("5", "0", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        format!("segwal: error: region 5 does not exist in {path}\n")
    );
    let out = dump("18446744073709551616", "0", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("18446744073709551616"),
        "{}",
        text(&out.stderr)
    );
    let out = dump("0", "0", &["--from", "-1"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Proves that `verify` reports a file named like a segment of the shared
/// log that is not one as damage at offset 0 of that file, with exit code
/// 1, and still verifies the rest.
#[test]
fn verify_names_a_foreign_file_posing_as_a_segment() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    limits_dir(dir.path());
    // Segment ids start at 1: id 0 is free.
    let impostor = dir.path().join(format!("{:020}.seg", 0));
    std::fs::write(
        &impostor,
        "#!/bin/sh\n# not a segment, but long enough for a header\n",
    )
    .unwrap();
    let out = segwal(&["verify", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let shown = text(&out.stdout);
    assert!(
        shown.contains(&format!("damage: {} at offset 0: ", impostor.display())),
        "{shown}"
    );
    assert!(shown.contains("not a segwal segment"), "{shown}");
    assert!(
        shown.contains(
            "2 regions; META log and 2 segments verified (4 records); DAMAGED (1 problem)"
        ),
        "{shown}"
    );
}
