//! Process crashes: a child process writes with `SyncMode::Always` from
//! several threads to 64 regions of the shared log (small segments, so
//! many rollovers; deletes, and flushes that delete every table a thread
//! writes, so segments holding many regions' records die), reporting every
//! acknowledged batch on stdout, and is killed with SIGKILL at a random
//! moment, again and again over the same data dir, with one to three
//! streams.
//!
//! `SEGWAL_CRASH_ITERATIONS` sets the number of kills (default 8; a longer
//! campaign sets it higher).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use segwal_manager::{ManagerConfig, SegmentManager};

const CHILD_ENV: &str = "SEGWAL_CRASH_CHILD_DIR";
const EPOCH_ENV: &str = "SEGWAL_CRASH_EPOCH";
const THREADS: u64 = 6;
const REGIONS: u64 = 64;
const TABLES: u64 = 3;

/// Small segments, and the stream count of `epoch` (the count may change
/// between opens: recovery reads every stream).
fn config(dir: &Path, epoch: u64) -> ManagerConfig {
    ManagerConfig {
        segment_size_bytes: 16 << 10,
        streams: 1 + (epoch % 3) as usize,
        ..ManagerConfig::new(dir)
    }
}

/// The (region, table) pairs thread `thread` writes: every pair has one
/// writer, and every region several (threads share its numbers).
fn owned(thread: u64) -> Vec<(u64, u64)> {
    (0..REGIONS * TABLES)
        .filter(|pair| pair % THREADS == thread)
        .map(|pair| (pair / TABLES, pair % TABLES))
        .collect()
}

/// The payload of entry `index` of `count` in batch `batch` of a table:
/// self-describing, so the parent can tell a written entry from anything
/// else and a whole batch from part of one.
fn payload(region: u64, table: u64, batch: u64, index: u64, count: u64) -> Vec<u8> {
    let mut p = format!("r{region}-t{table}-b{batch}-e{index}of{count}-").into_bytes();
    p.resize(p.len() + (batch % 7) as usize * 40, b'x');
    p
}

/// The child: writes until killed. Never returns.
fn child(dir: &Path, epoch: u64) -> ! {
    let wal = Arc::new(SegmentManager::open(config(dir, epoch)).unwrap());
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (wal, out) = (Arc::clone(&wal), Arc::clone(&out));
            std::thread::spawn(move || writer(&wal, &out, epoch, t))
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    unreachable!("writers never stop");
}

/// One writer thread of the child: batches of 1-3 entries to a random
/// table of its own, now and then a delete of one table, and a flush of all
/// of them.
fn writer(wal: &SegmentManager, out: &Mutex<std::io::Stdout>, epoch: u64, thread: u64) {
    let pairs = owned(thread);
    let mut last_acked: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    let mut rng = (epoch << 8 | thread).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for i in 0.. {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let (region, table) = pairs[(rng % pairs.len() as u64) as usize];
        let batch = epoch * 1_000_000 + i;
        let count = 1 + batch % 3;
        let entries: Vec<Vec<u8>> = (0..count)
            .map(|e| payload(region, table, batch, e, count))
            .collect();
        let last = wal.write(region, table, &entries).unwrap();
        report(out, &format!("ack {region} {table} {batch} {last} {count}"));
        last_acked.insert((region, table), last);
        if i % 25 == 24 {
            // All but the last few entries of this table.
            delete(wal, out, (region, table), last.saturating_sub(5));
        }
        if rng.is_multiple_of(50) {
            // What an engine does after a flush.
            for (&pair, &last) in &last_acked {
                delete(wal, out, pair, last);
            }
        }
    }
}

/// Deletes a table's entries up to `up_to`, announced first: a kill after
/// the delete but before its report still leaves it in force.
fn delete(
    wal: &SegmentManager,
    out: &Mutex<std::io::Stdout>,
    (region, table): (u64, u64),
    up_to: u64,
) {
    report(out, &format!("deleting {region} {table} {up_to}"));
    wal.mark_delete_entries_up_to(region, table, up_to).unwrap();
    report(out, &format!("del {region} {table} {up_to}"));
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

/// What the parent has been told over all epochs.
#[derive(Default)]
struct Told {
    /// Per (region, table): every acknowledged batch.
    acks: HashMap<(u64, u64), Vec<Ack>>,
    /// Per (region, table): the acknowledged delete mark.
    deleted: HashMap<(u64, u64), u64>,
    /// Per (region, table): the highest delete mark that may be in force
    /// (announced, perhaps not acknowledged).
    deleting: HashMap<(u64, u64), u64>,
}

impl Told {
    /// Takes in one epoch's report lines, checking that every number a
    /// region acknowledged is above every number it acknowledged before
    /// the kill, and that no two batches of a region share a number.
    fn take(&mut self, lines: &[String]) -> usize {
        let mut previous_max: HashMap<u64, u64> = HashMap::new();
        for (&(region, _), acks) in &self.acks {
            let max = acks.iter().map(|a| a.last).max().unwrap_or(0);
            let entry = previous_max.entry(region).or_default();
            *entry = (*entry).max(max);
        }
        let mut acked = 0;
        for line in lines {
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
                    self.acks
                        .entry((region, table))
                        .or_default()
                        .push(Ack { batch, last, count });
                    acked += 1;
                }
                Some(kind @ ("del" | "deleting")) => {
                    let [region, table, up_to] = fields[..] else {
                        panic!("bad line {line:?}")
                    };
                    let marks = if kind == "del" {
                        &mut self.deleted
                    } else {
                        &mut self.deleting
                    };
                    let mark = marks.entry((region, table)).or_default();
                    *mark = (*mark).max(up_to);
                }
                _ => panic!("unexpected output {line:?}"),
            }
        }
        let mut ranges: BTreeMap<(u64, u64), (u64, u64)> = BTreeMap::new();
        for (&(region, table), acks) in &self.acks {
            for ack in acks {
                let first = ack.last + 1 - ack.count;
                let clash = ranges.insert((region, first), (ack.last, table));
                assert!(clash.is_none(), "region {region} gave {first} twice");
            }
        }
        let mut before: Option<((u64, u64), (u64, u64))> = None;
        for (&(region, first), &(last, table)) in &ranges {
            if let Some(((other_region, _), (other_last, other_table))) = before {
                assert!(
                    other_region != region || other_last < first,
                    "region {region}: tables {other_table} and {table} were both given {first}"
                );
            }
            before = Some(((region, first), (last, table)));
        }
        acked
    }
}

/// Proves that over 64 regions written by six threads, no acknowledged
/// write is lost or changed by `kill -9`, that nothing appears that was
/// never written, that no acknowledged delete is undone, that batches are
/// whole or absent, that a region's scan is its tables merged in order,
/// and that sequence numbers keep increasing across restarts, in every
/// region, whatever the stream count.
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
    let mut told = Told::default();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut total_acks = 0;
    // Segment files seen after the last recovery, and how many of those
    // seen before were gone by the next (removed once deletes emptied
    // them: every region's records in them deleted).
    let (mut segments, mut removed) = (BTreeSet::new(), 0);
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
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the child died before it was killed: {status}");
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        total_acks += told.take(&lines);
        check(dir.path(), epoch, &told);
        let now: BTreeSet<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".seg"))
            .collect();
        removed += segments.difference(&now).count();
        segments = now;
    }
    eprintln!(
        "{iterations} kills, {total_acks} acknowledged batches over {REGIONS} regions, none lost; \
         {removed} segments removed, {} left",
        segments.len()
    );
    assert!(total_acks > 0, "the child never acknowledged a write");
    assert!(
        removed > 0 || iterations < 4,
        "deletes never emptied a segment of the shared log"
    );
}

/// Opens the data dir (recovering it) and checks every invariant, for
/// every table of every region.
fn check(dir: &Path, epoch: u64, told: &Told) {
    let wal = SegmentManager::open(config(dir, epoch)).unwrap();
    let mut tables: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for &(region, table) in told.acks.keys().chain(told.deleting.keys()) {
        tables.entry(region).or_default().insert(table);
    }
    // The first write to a table may be durable though the child was
    // killed before it could report it: such a table shows only in the
    // scans, and is checked like the others.
    let mut scans = BTreeMap::new();
    for region in 0..REGIONS {
        let mut scanned = Vec::new();
        let mut iter = wal.scan(region).unwrap();
        while iter
            .next_batch(256, |e| {
                scanned.push((e.sequence, e.table_id, e.payload.to_vec()));
            })
            .unwrap()
            > 0
        {}
        for &(_, table, _) in &scanned {
            tables.entry(region).or_default().insert(table);
        }
        scans.insert(region, scanned);
    }
    for (region, tables) in tables {
        let mut region_entries = Vec::new();
        for table in tables {
            let entries = read(&wal, region, table);
            check_table(region, table, &entries, told);
            let acked = told.acks.get(&(region, table)).map_or(&[][..], |a| &a[..]);
            let max_acked = acked.iter().map(|a| a.last).max().unwrap_or(0);
            assert!(wal.sequence_num(region, table).unwrap() >= max_acked);
            region_entries.extend(entries.into_iter().map(|(seq, p)| (seq, table, p)));
        }
        region_entries.sort_unstable();
        let scanned = scans.remove(&region).unwrap_or_default();
        assert!(
            scanned == region_entries,
            "region {region}: its scan ({} entries) is not its tables' entries ({}) in order",
            scanned.len(),
            region_entries.len()
        );
    }
    wal.close().unwrap();
}

/// Every entry of the table, as (sequence, payload).
fn read(wal: &SegmentManager, region: u64, table: u64) -> Vec<(u64, Vec<u8>)> {
    let mut entries = Vec::new();
    let mut iter = wal.read(region, table, 0, u64::MAX).unwrap();
    while iter
        .next_batch(256, |e| entries.push((e.sequence, e.payload.to_vec())))
        .unwrap()
        > 0
    {}
    entries
}

/// Checks one table's recovered entries against what the parent was told.
fn check_table(region: u64, table: u64, entries: &[(u64, Vec<u8>)], told: &Told) {
    let mark = told.deleted.get(&(region, table)).copied().unwrap_or(0);
    // Entries up to this mark may be hidden by a delete the child made
    // but was killed before reporting.
    let may_be_deleted = told
        .deleting
        .get(&(region, table))
        .copied()
        .unwrap_or(0)
        .max(mark);
    // No deleted entry is back.
    assert!(
        entries.iter().all(|(seq, _)| *seq > mark),
        "region {region} table {table}: an entry at or below delete mark {mark} came back"
    );
    // Every entry is one that was written, in a whole batch, ascending.
    // Per batch: (index, sequence, count) of each entry present.
    let mut batches: BTreeMap<u64, Vec<(u64, u64, u64)>> = BTreeMap::new();
    let mut last_seq = 0;
    for (seq, p) in entries {
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
    let acked = told.acks.get(&(region, table)).map_or(&[][..], |a| &a[..]);
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
}
