//! Process crashes: a child process writes with `SyncMode::Always` from
//! several threads across regions and tables (with rollovers and deletes),
//! reporting every acknowledged batch on stdout, and is killed with SIGKILL
//! at a random moment, again and again over the same data dir.
//!
//! `SEGWAL_CRASH_ITERATIONS` sets the number of kills (default 8; a longer
//! campaign sets it higher).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use segwal_manager::{ManagerConfig, SegmentManager};

const CHILD_ENV: &str = "SEGWAL_CRASH_CHILD_DIR";
const EPOCH_ENV: &str = "SEGWAL_CRASH_EPOCH";
const THREADS: u64 = 4;

fn config(dir: &Path) -> ManagerConfig {
    ManagerConfig {
        segment_size_bytes: 16 << 10,
        ..ManagerConfig::new(dir)
    }
}

/// The payload of entry `index` of `count` in batch `batch` of a writer:
/// self-describing, so the parent can tell a written entry from anything
/// else and a whole batch from part of one.
fn payload(region: u64, table: u64, batch: u64, index: u64, count: u64) -> Vec<u8> {
    let mut p = format!("r{region}-t{table}-b{batch}-e{index}of{count}-").into_bytes();
    p.resize(p.len() + (batch % 7) as usize * 40, b'x');
    p
}

/// The child: writes until killed. Never returns.
fn child(dir: &Path, epoch: u64) -> ! {
    let wal = Arc::new(SegmentManager::open(config(dir)).unwrap());
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (wal, out) = (Arc::clone(&wal), Arc::clone(&out));
            std::thread::spawn(move || {
                let (region, table) = (t % 2, t);
                for i in 0.. {
                    let batch = epoch * 1_000_000 + i;
                    let count = 1 + batch % 3;
                    let entries: Vec<Vec<u8>> = (0..count)
                        .map(|e| payload(region, table, batch, e, count))
                        .collect();
                    let last = wal.write(region, table, &entries).unwrap();
                    report(
                        &out,
                        &format!("ack {region} {table} {batch} {last} {count}"),
                    );
                    if t == 0 && i % 25 == 24 {
                        // Delete all but the last few entries of this table.
                        let up_to = last.saturating_sub(5);
                        // Announced first: a kill after the delete but
                        // before its report still leaves it in force.
                        report(&out, &format!("deleting {region} {table} {up_to}"));
                        wal.mark_delete_entries_up_to(region, table, up_to).unwrap();
                        report(&out, &format!("del {region} {table} {up_to}"));
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    unreachable!("writers never stop");
}

/// Writes one whole line to the parent, after the operation it reports
/// has returned.
fn report(out: &Mutex<std::io::Stdout>, line: &str) {
    let mut out = out.lock().unwrap();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

/// An acknowledged batch.
#[derive(Debug, Clone, Copy)]
struct Ack {
    batch: u64,
    last: u64,
    count: u64,
}

/// Proves that no acknowledged write is lost or changed by `kill -9`, that
/// nothing appears that was never written, that no acknowledged delete is
/// undone, that batches are whole or absent, and that sequence numbers keep
/// increasing across restarts.
#[test]
fn acknowledged_writes_survive_repeated_kill_9() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        let epoch = std::env::var(EPOCH_ENV).unwrap().parse().unwrap();
        child(Path::new(&dir), epoch);
    }
    let iterations: u64 = std::env::var("SEGWAL_CRASH_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(8);
    let dir = tempfile::tempdir().unwrap();
    // Per (region, table): every acknowledged batch, and the delete mark.
    let mut acks: HashMap<(u64, u64), Vec<Ack>> = HashMap::new();
    let mut deleted: HashMap<(u64, u64), u64> = HashMap::new();
    // Per (region, table): the highest delete mark that may be in force
    // (announced, perhaps not acknowledged).
    let mut deleting: HashMap<(u64, u64), u64> = HashMap::new();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut total_acks = 0;
    for epoch in 1..=iterations {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "acknowledged_writes_survive_repeated_kill_9",
                "--nocapture",
            ])
            .env(CHILD_ENV, dir.path())
            .env(EPOCH_ENV, epoch.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // Whole lines only: the last one may be cut by the kill. Other
        // output (the test harness's own) is skipped.
        let reader = std::thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let mut lines = Vec::new();
            let mut line = String::new();
            while stdout.read_line(&mut line).is_ok_and(|n| n > 0) {
                if line.ends_with('\n')
                    && ["ack ", "del ", "deleting "]
                        .iter()
                        .any(|p| line.starts_with(p))
                {
                    lines.push(line.trim_end().to_owned());
                }
                line.clear();
            }
            lines
        });
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(100 + rng % 400));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let lines = reader.join().unwrap();

        let mut previous_max: HashMap<u64, u64> = HashMap::new();
        for acks in acks.iter() {
            let max = acks.1.iter().map(|a| a.last).max().unwrap_or(0);
            let region = acks.0.0;
            let entry = previous_max.entry(region).or_default();
            *entry = (*entry).max(max);
        }
        for line in &lines {
            let fields: Vec<u64> = line
                .split(' ')
                .skip(1)
                .map(|f| f.parse().unwrap())
                .collect();
            match line.split(' ').next() {
                Some("ack") => {
                    let [region, table, batch, last, count] = fields[..] else {
                        panic!("bad line {line:?}")
                    };
                    assert!(
                        last > previous_max.get(&region).copied().unwrap_or(0),
                        "sequence numbers went back in region {region}: {line}"
                    );
                    acks.entry((region, table))
                        .or_default()
                        .push(Ack { batch, last, count });
                    total_acks += 1;
                }
                Some(kind @ ("del" | "deleting")) => {
                    let [region, table, up_to] = fields[..] else {
                        panic!("bad line {line:?}")
                    };
                    let marks = if kind == "del" {
                        &mut deleted
                    } else {
                        &mut deleting
                    };
                    let mark = marks.entry((region, table)).or_default();
                    *mark = (*mark).max(up_to);
                }
                _ => panic!("unexpected output {line:?}"),
            }
        }

        check(dir.path(), &acks, &deleted, &deleting);
    }
    eprintln!("{iterations} kills, {total_acks} acknowledged batches, none lost");
    assert!(total_acks > 0, "the child never acknowledged a write");
}

/// Opens the data dir (recovering it) and checks every invariant.
fn check(
    dir: &Path,
    acks: &HashMap<(u64, u64), Vec<Ack>>,
    deleted: &HashMap<(u64, u64), u64>,
    deleting: &HashMap<(u64, u64), u64>,
) {
    let wal = SegmentManager::open(config(dir)).unwrap();
    for table in 0..THREADS {
        let region = table % 2;
        let mark = deleted.get(&(region, table)).copied().unwrap_or(0);
        // Entries up to this mark may be hidden by a delete the child made
        // but was killed before reporting.
        let may_be_deleted = deleting
            .get(&(region, table))
            .copied()
            .unwrap_or(0)
            .max(mark);
        let acked = acks.get(&(region, table)).map_or(&[][..], |a| &a[..]);
        let mut entries: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut iter = wal.read(region, table, 0, u64::MAX).unwrap();
        while iter
            .next_batch(256, |e| entries.push((e.sequence, e.payload.to_vec())))
            .unwrap()
            > 0
        {}
        // No deleted entry is back.
        assert!(
            entries.iter().all(|(seq, _)| *seq > mark),
            "region {region} table {table}: an entry at or below delete mark {mark} came back"
        );
        // Every entry is one that was written, in a whole batch, ascending.
        // Per batch: (index, sequence, count) of each entry present.
        let mut batches: BTreeMap<u64, Vec<(u64, u64, u64)>> = BTreeMap::new();
        let mut last_seq = 0;
        for (seq, p) in &entries {
            assert!(*seq > last_seq);
            last_seq = *seq;
            let text = String::from_utf8_lossy(p);
            let prefix = format!("r{region}-t{table}-b");
            let rest = text
                .strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("region {region} table {table}: foreign entry {text:?}"));
            let (batch, rest) = rest.split_once("-e").unwrap();
            let (index, rest) = rest.split_once("of").unwrap();
            let count = rest.split('-').next().unwrap();
            let (batch, index, count): (u64, u64, u64) = (
                batch.parse().unwrap(),
                index.parse().unwrap(),
                count.parse().unwrap(),
            );
            assert_eq!(p, &payload(region, table, batch, index, count));
            batches.entry(batch).or_default().push((index, *seq, count));
        }
        for (batch, members) in &batches {
            // Whole or absent, acknowledged or not; only a delete mark may
            // hide the lower part of a batch.
            let count = members[0].2;
            let first_seq = members
                .iter()
                .map(|&(index, seq, _)| seq - index)
                .min()
                .unwrap();
            if first_seq > may_be_deleted {
                assert_eq!(
                    members.len() as u64,
                    count,
                    "region {region} table {table}: batch {batch} is not whole"
                );
            }
        }
        // Every acknowledged entry above the mark is there, intact.
        let present: HashMap<u64, &Vec<u8>> = entries.iter().map(|(seq, p)| (*seq, p)).collect();
        for ack in acked {
            let first = ack.last + 1 - ack.count;
            for seq in first..=ack.last {
                if seq > may_be_deleted {
                    let found = present.get(&seq).unwrap_or_else(|| {
                        panic!("region {region} table {table}: acknowledged entry {seq} lost")
                    });
                    assert_eq!(
                        **found,
                        payload(region, table, ack.batch, seq - first, ack.count),
                        "region {region} table {table}: entry {seq} changed"
                    );
                }
            }
        }
        let max_acked = acked.iter().map(|a| a.last).max().unwrap_or(0);
        assert!(wal.sequence_num(region, table).unwrap() >= max_acked);
    }
    wal.close().unwrap();
}
