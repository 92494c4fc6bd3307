//! The manager against a reference model: concurrent writers and readers,
//! and random operation sequences with reopens.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use segwal_manager::{EntryIter, ManagerConfig, SegmentManager, SyncMode};

fn drain(mut iter: EntryIter) -> Vec<(u64, u64, Vec<u8>)> {
    let mut out = Vec::new();
    while iter
        .next_batch(16, |e| {
            out.push((e.table_id, e.sequence, e.payload.to_vec()))
        })
        .unwrap()
        > 0
    {}
    out
}

/// (region, table) -> acknowledged (sequence, payload), ascending.
type Acked = BTreeMap<(u64, u64), Vec<(u64, Vec<u8>)>>;

fn payload(region: u64, table: u64, n: u64) -> Vec<u8> {
    let mut bytes = format!("{region}/{table}/{n}/").into_bytes();
    bytes.resize(bytes.len() + (n as usize * 37) % 300, n as u8);
    bytes
}

/// Proves that with 8 threads writing to 32 regions of one log (each its
/// own table in 8 of them, in turn) while 4 threads read, every read sees a consistent snapshot (ascending, correct payloads, and
/// every write acknowledged before the read began), and that afterwards and
/// after a reopen the WAL holds exactly what the model says.
#[test]
fn eight_writers_four_readers_match_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let config = ManagerConfig {
        segment_size_bytes: 16 << 10,
        ..ManagerConfig::new(dir.path())
    };
    let wal = Arc::new(SegmentManager::open(config.clone()).unwrap());
    let model: Arc<Mutex<Acked>> = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    std::thread::scope(|s| {
        let writers: Vec<_> = (0..8u64)
            .map(|w| {
                let (wal, model) = (Arc::clone(&wal), Arc::clone(&model));
                s.spawn(move || {
                    let table = w;
                    for n in 0..60u64 {
                        let region = w % 4 + 4 * (n % 8);
                        let entries: Vec<Vec<u8>> = (0..n % 3 + 1)
                            .map(|k| payload(region, table, n * 3 + k))
                            .collect();
                        let last = wal.write(region, table, &entries).unwrap();
                        let first = last + 1 - entries.len() as u64;
                        model
                            .lock()
                            .unwrap()
                            .entry((region, table))
                            .or_default()
                            .extend((first..=last).zip(entries));
                    }
                })
            })
            .collect();
        for r in 0..4u64 {
            let (wal, model, done) = (Arc::clone(&wal), Arc::clone(&model), Arc::clone(&done));
            s.spawn(move || {
                let mut round = 0u64;
                while !done.load(std::sync::atomic::Ordering::Acquire) {
                    let table = (r + round) % 8;
                    let region = table % 4 + 4 * (round / 8 % 8);
                    round += 1;
                    let acked = model
                        .lock()
                        .unwrap()
                        .get(&(region, table))
                        .cloned()
                        .unwrap_or_default();
                    let got = drain(wal.read(region, table, 0, u64::MAX).unwrap());
                    assert!(got.windows(2).all(|w| w[0].1 < w[1].1), "ascending");
                    assert!(
                        got.len() >= acked.len(),
                        "a read misses acknowledged writes"
                    );
                    for ((t, seq, bytes), (want_seq, want)) in got.iter().zip(&acked) {
                        assert_eq!((*t, *seq, bytes), (table, *want_seq, want));
                    }
                    let scanned = drain(wal.scan(region).unwrap());
                    assert!(
                        scanned.windows(2).all(|w| w[0].1 < w[1].1),
                        "scan ascending"
                    );
                }
            });
        }
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Release);
    });
    let check = |wal: &SegmentManager| {
        for ((region, table), entries) in model.lock().unwrap().iter() {
            let got: Vec<(u64, Vec<u8>)> = drain(wal.read(*region, *table, 0, u64::MAX).unwrap())
                .into_iter()
                .map(|e| (e.1, e.2))
                .collect();
            assert_eq!(&got, entries, "region {region} table {table}");
        }
    };
    check(&wal);
    drop(wal);
    check(&SegmentManager::open(config).unwrap());
}

/// Regions the random operations use: a few hot ones, so that deletes
/// empty whole segments, and many others, so that segments are shared.
const REGIONS: u64 = 64;
const HOT_REGIONS: u64 = 4;
const TABLES: u64 = 3;

#[derive(Debug, Clone)]
enum Op {
    Write {
        region: u64,
        table: u64,
        entries: u8,
        size: u16,
    },
    Delete {
        region: u64,
        table: u64,
        back: u8,
    },
    Read {
        region: u64,
        table: u64,
        start: u8,
        len: u8,
    },
    Scan {
        region: u64,
    },
    CloseRegion {
        region: u64,
    },
    /// Close the WAL and open it again with this many streams.
    Reopen {
        streams: usize,
    },
}

fn region() -> impl Strategy<Value = u64> {
    prop_oneof![3 => 0..HOT_REGIONS, 2 => 0..REGIONS]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (region(), 0..TABLES, 1..4u8, 0..600u16).prop_map(|(region, table, entries, size)| Op::Write { region, table, entries, size }),
        3 => (region(), 0..TABLES, 0..8u8).prop_map(|(region, table, back)| Op::Delete { region, table, back }),
        2 => (region(), 0..TABLES, any::<u8>(), any::<u8>()).prop_map(|(region, table, start, len)| Op::Read { region, table, start, len }),
        2 => region().prop_map(|region| Op::Scan { region }),
        2 => region().prop_map(|region| Op::CloseRegion { region }),
        1 => (1..=4usize).prop_map(|streams| Op::Reopen { streams }),
    ]
}

#[derive(Debug, Default)]
struct Model {
    /// region -> (sequence -> (table, payload)) of live entries.
    live: BTreeMap<u64, BTreeMap<u64, (u64, Vec<u8>)>>,
    next: BTreeMap<u64, u64>,
    max: BTreeMap<(u64, u64), u64>,
}

impl Model {
    /// The region's live entries as a scan returns them.
    fn scan(&self, region: u64) -> Vec<(u64, u64, Vec<u8>)> {
        self.live
            .get(&region)
            .map(|live| live.iter().map(|(&s, (t, b))| (*t, s, b.clone())).collect())
            .unwrap_or_default()
    }
}

fn open(dir: &Path, streams: usize) -> SegmentManager {
    let config = ManagerConfig {
        streams,
        segment_size_bytes: 4096,
        sync_mode: SyncMode::Never,
        ..ManagerConfig::new(dir)
    };
    SegmentManager::open(config).unwrap()
}

/// Checks region `region` against the model: its scan, and each table's
/// `sequence_num`. (This opens the region again if it was closed.)
fn check_region(
    wal: &SegmentManager,
    model: &Model,
    region: u64,
    label: &str,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        drain(wal.scan(region).unwrap()),
        model.scan(region),
        "{}: scan {}",
        label,
        region
    );
    for table in 0..TABLES {
        let max = model.max.get(&(region, table)).copied().unwrap_or(0);
        prop_assert_eq!(
            wal.sequence_num(region, table).unwrap(),
            max,
            "{}: region {} table {}",
            label,
            region,
            table
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if std::env::var_os("CI").is_some() { 96 } else { 48 }))]

    /// Random writes, deletes, reads, scans, region closes and reopens
    /// (with 1 to 4 streams) over 64 regions give the same results as a
    /// `BTreeMap` model: after every step, every region's next number
    /// (from the statistics, which open no closed region) and the region
    /// the step touched; after every reopen and at the end, every region.
    #[test]
    fn random_operations_match_the_model(ops in prop::collection::vec(op(), 1..150)) {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = open(dir.path(), 1);
        let mut model = Model::default();
        for (step, op) in ops.into_iter().enumerate() {
            let label = format!("step {step}: {op:?}");
            let mut touched = None;
            match op {
                Op::Write { region, table, entries, size } => {
                    let next = model.next.entry(region).or_insert(1);
                    let batch: Vec<Vec<u8>> = (0..entries as u64).map(|k| payload(region, table, *next + k).into_iter().cycle().take(size as usize).collect()).collect();
                    let last = wal.write(region, table, &batch).unwrap();
                    prop_assert_eq!(last, *next + entries as u64 - 1, "{}", label);
                    for (k, bytes) in batch.into_iter().enumerate() {
                        model.live.entry(region).or_default().insert(*next + k as u64, (table, bytes));
                    }
                    *next = last + 1;
                    model.max.insert((region, table), last);
                    touched = Some(region);
                }
                Op::Delete { region, table, back } => {
                    // back >= 6: past the table's end (deletes all of it, and
                    // must not hide later writes).
                    let up_to = if back >= 6 {
                        u64::MAX
                    } else {
                        model.max.get(&(region, table)).copied().unwrap_or(0).saturating_sub(back as u64)
                    };
                    wal.mark_delete_entries_up_to(region, table, up_to).unwrap();
                    if let Some(live) = model.live.get_mut(&region) {
                        live.retain(|&seq, (t, _)| *t != table || seq > up_to);
                    }
                    touched = Some(region);
                }
                Op::Read { region, table, start, len } => {
                    let next = model.next.get(&region).copied().unwrap_or(1);
                    let start = (start as u64) % (next + 2);
                    let end = start.saturating_add(len as u64);
                    let got: Vec<(u64, Vec<u8>)> = drain(wal.read(region, table, start, end).unwrap()).into_iter().map(|e| (e.1, e.2)).collect();
                    let want: Vec<(u64, Vec<u8>)> = model.live.get(&region).map(|live| live.range(start..=end).filter(|(_, (t, _))| *t == table).map(|(&s, (_, b))| (s, b.clone())).collect()).unwrap_or_default();
                    prop_assert_eq!(got, want, "{}", label);
                }
                Op::Scan { region } => {
                    prop_assert_eq!(drain(wal.scan(region).unwrap()), model.scan(region), "{}", label);
                }
                // Left closed: the next operation on it opens it again.
                Op::CloseRegion { region } => wal.close_region(region).unwrap(),
                Op::Reopen { streams } => {
                    drop(wal);
                    wal = open(dir.path(), streams);
                    for region in 0..REGIONS {
                        check_region(&wal, &model, region, &label)?;
                    }
                }
            }
            let next: Vec<(u64, u64)> = model.next.iter().map(|(&r, &n)| (r, n)).collect();
            prop_assert_eq!(wal.statistics().regions, next, "{}", label);
            if let Some(region) = touched {
                check_region(&wal, &model, region, &label)?;
            }
        }
        for region in 0..REGIONS {
            check_region(&wal, &model, region, "at the end")?;
        }
        drop(wal);
        let wal = open(dir.path(), 1);
        for region in 0..REGIONS {
            check_region(&wal, &model, region, "after the last reopen")?;
        }
    }
}
