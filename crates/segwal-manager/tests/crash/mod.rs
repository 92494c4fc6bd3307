//! What the crash and fault tests of the shared log share: the workload's
//! payloads, the record of what was acknowledged when, and the check every
//! recovered data dir must pass, over every region and table the workload
//! touched (the log interleaves them all, so a crash image holds records of
//! many regions, and META entries of many tables, side by side).

#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use segwal_manager::{EntryIter, Error, ManagerConfig, SegmentManager, SyncMode};
use segwal_segment::powerloss::{Fate, ImageStats, Recorder, Replay};

/// A campaign length from environment variable `name`, or `default`.
pub fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// A new data dir `wal` under a temporary root, where crash images go
/// next to it.
pub fn data_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("wal");
    std::fs::create_dir(&dir).unwrap();
    (root, dir)
}

/// Small segments, so that a short workload rolls over often, with
/// `streams` streams.
pub fn config(dir: &Path, streams: usize) -> ManagerConfig {
    ManagerConfig {
        segment_size_bytes: 8 << 10,
        sync_mode: SyncMode::Always,
        streams,
        ..ManagerConfig::new(dir)
    }
}

/// A batch the workload wrote (acknowledged or not).
#[derive(Debug, Clone)]
pub struct Batch {
    pub region: u64,
    pub table: u64,
    pub entries: Vec<Vec<u8>>,
}

/// Something the workload was told had happened, and the log position by
/// which it had.
#[derive(Debug, Clone, Copy)]
pub enum Ack {
    /// Batch `batch` was durable with these sequence numbers.
    Write { batch: usize, last: u64 },
    /// A delete of the table's entries up to `up_to` was asked for: from
    /// here on it may be in force.
    Deleting { region: u64, table: u64, up_to: u64 },
    /// That delete was acknowledged: from here on it is in force.
    Delete { region: u64, table: u64, up_to: u64 },
    /// A write of `region` failed after it was given sequence numbers up
    /// to `up_to`: no later write may be given one of them.
    Used { region: u64, up_to: u64 },
}

/// A workload's record: every batch attempted, every acknowledgement with
/// its log position, the call log, and how the workload's manager was
/// configured.
pub struct Run {
    pub batches: Vec<Batch>,
    pub acks: Vec<(usize, Ack)>,
    pub replay: Replay,
    /// The workload's sync mode: only [`SyncMode::Always`] promises that an
    /// acknowledged write survives a power loss.
    pub sync_mode: SyncMode,
    pub streams: usize,
}

/// What the threads of a workload have done so far, shared between them.
#[derive(Default)]
pub struct Log {
    pub batches: Vec<Batch>,
    pub acks: Vec<(usize, Ack)>,
}

/// Writes a batch of one entry per pad in `pads` (each payload naming the
/// batch, padded by that much) to `table` of `region`: notes the batch in
/// `log` before the write and, once it is acknowledged, the
/// acknowledgement at the recorder's position. Returns its last number.
pub fn write_logged(
    wal: &SegmentManager,
    recorder: &Recorder,
    log: &std::sync::Mutex<Log>,
    (region, table): (u64, u64),
    pads: &[usize],
) -> u64 {
    let count = pads.len();
    let (batch, entries) = {
        let mut log = log.lock().unwrap();
        let batch = log.batches.len();
        let entries: Vec<Vec<u8>> = pads
            .iter()
            .enumerate()
            .map(|(i, &pad)| payload(batch, i, count, pad))
            .collect();
        log.batches.push(Batch {
            region,
            table,
            entries: entries.clone(),
        });
        (batch, entries)
    };
    let last = wal.write(region, table, &entries).unwrap();
    let position = recorder.position();
    log.lock()
        .unwrap()
        .acks
        .push((position, Ack::Write { batch, last }));
    last
}

/// The payload of entry `index` of `count` of batch `batch`: names its
/// batch, so anything read back can be traced to what was written.
pub fn payload(batch: usize, index: usize, count: usize, pad: usize) -> Vec<u8> {
    let mut p = format!("b{batch}e{index}of{count}-").into_bytes();
    p.resize(p.len() + pad, b'a' + (batch % 26) as u8);
    p
}

/// The batch and entry index a payload names.
pub fn parse(payload: &[u8]) -> (usize, usize) {
    let text = std::str::from_utf8(payload).expect("payloads are ASCII");
    let head = text.split('-').next().unwrap();
    let (batch, rest) = head[1..].split_once('e').unwrap();
    let (index, _) = rest.split_once("of").unwrap();
    (batch.parse().unwrap(), index.parse().unwrap())
}

/// What a workload wrote and was told, noted as it goes by its write and
/// delete calls, which also check that numbers are never given twice.
/// Threads may share one behind a lock.
pub struct Recording<'a> {
    pub recorder: &'a Recorder,
    pub batches: Vec<Batch>,
    pub acks: Vec<(usize, Ack)>,
    /// Per region: the highest sequence number given to a write,
    /// acknowledged or failed (when the recording sees all its writes).
    assigned: HashMap<u64, u64>,
}

impl<'a> Recording<'a> {
    pub fn new(recorder: &'a Recorder) -> Recording<'a> {
        Recording {
            recorder,
            batches: Vec::new(),
            acks: Vec::new(),
            assigned: HashMap::new(),
        }
    }

    /// The run recorded, its acknowledgements in log order.
    pub fn run(mut self, sync_mode: SyncMode, streams: usize) -> Run {
        self.acks.sort_by_key(|(position, _)| *position);
        Run {
            batches: self.batches,
            acks: self.acks,
            replay: self.recorder.replay(),
            sync_mode,
            streams,
        }
    }

    /// Forgets the numbers given to failed writes (see [`Ack::Used`]).
    pub fn forget_used(&mut self) {
        self.acks
            .retain(|(_, ack)| !matches!(ack, Ack::Used { .. }));
    }

    /// Writes a batch of entries padded by `pads`, noting what it was
    /// told, and checks that the numbers it gets are above every number
    /// given before in the region (it must see every write of the region):
    /// none is reused after a failure and a reopen.
    pub fn write(
        &mut self,
        wal: &SegmentManager,
        region: u64,
        table: u64,
        pads: &[usize],
    ) -> segwal_manager::Result<u64> {
        let batch = self.batches.len();
        let entries: Vec<Vec<u8>> = (0..pads.len())
            .map(|i| payload(batch, i, pads.len(), pads[i]))
            .collect();
        self.batches.push(Batch {
            region,
            table,
            entries: entries.clone(),
        });
        let result = wal.write(region, table, &entries);
        let assigned = self.assigned.entry(region).or_default();
        match &result {
            Ok(last) => {
                let first = last + 1 - pads.len() as u64;
                assert!(
                    first > *assigned,
                    "region {region} gave {first}..={last}, but numbers up to {assigned} were \
                     given before"
                );
                *assigned = *last;
                let position = self.recorder.position();
                self.acks
                    .push((position, Ack::Write { batch, last: *last }));
            }
            // A failed append or sync: the batch's numbers are used, and no
            // later write may be given them (its bytes may be on disk).
            Err(Error::Write { .. }) => {
                *assigned += pads.len() as u64;
                let up_to = *assigned;
                let position = self.recorder.position();
                self.acks.push((position, Ack::Used { region, up_to }));
            }
            Err(_) => {}
        }
        result
    }

    /// Deletes the table's entries up to `up_to`, noting that the delete
    /// may be in force from the call on, and is once it returns `Ok`.
    pub fn delete(
        &mut self,
        wal: &SegmentManager,
        region: u64,
        table: u64,
        up_to: u64,
    ) -> segwal_manager::Result<()> {
        let position = self.recorder.position();
        self.acks.push((
            position,
            Ack::Deleting {
                region,
                table,
                up_to,
            },
        ));
        wal.mark_delete_entries_up_to(region, table, up_to)?;
        let position = self.recorder.position();
        self.acks.push((
            position,
            Ack::Delete {
                region,
                table,
                up_to,
            },
        ));
        Ok(())
    }
}

/// A small deterministic generator (xorshift).
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Every entry `iter` yields, as (table, sequence, payload).
pub fn drain(mut iter: EntryIter) -> segwal_manager::Result<Vec<(u64, u64, Vec<u8>)>> {
    let mut entries = Vec::new();
    while iter.next_batch(64, |e| {
        entries.push((e.table_id, e.sequence, e.payload.to_vec()));
    })? > 0
    {}
    Ok(entries)
}

/// Writes the crash image that `replay` gives at its position, with `fate`,
/// into `image`; checks it with [`check`] as of log position `at`; removes
/// it; and returns what the image lost.
pub fn check_image(
    replay: &Replay,
    fate: Fate,
    image: &Path,
    run: &Run,
    at: usize,
    label: &str,
) -> ImageStats {
    let stats = replay.write_image(fate, image).unwrap();
    check(image, run, at, label);
    std::fs::remove_dir_all(image).unwrap();
    stats
}

/// What the workload had been told by log position `at`.
#[derive(Default)]
struct Told {
    /// Acknowledged batches that must survive, with their last sequence.
    acked: HashMap<usize, u64>,
    /// Per (region, table): the acknowledged delete mark.
    deleted: HashMap<(u64, u64), u64>,
    /// Per (region, table): the highest mark that may be in force.
    deleting: HashMap<(u64, u64), u64>,
    /// Per region: the highest sequence number given to a write that was
    /// acknowledged as durable or failed.
    used: HashMap<u64, u64>,
}

impl Told {
    fn by(run: &Run, at: usize) -> Told {
        let mut told = Told::default();
        for &(_, ack) in run.acks.iter().take_while(|(p, _)| *p <= at) {
            match ack {
                // Only `SyncMode::Always` promises that an acknowledged
                // write survives a power loss (with its numbers: under the
                // other modes, numbers of writes lost may be given again).
                Ack::Write { batch, last } if run.sync_mode == SyncMode::Always => {
                    raise(&mut told.used, run.batches[batch].region, last);
                    told.acked.insert(batch, last);
                }
                Ack::Write { .. } => {}
                Ack::Deleting {
                    region,
                    table,
                    up_to,
                } => raise(&mut told.deleting, (region, table), up_to),
                Ack::Delete {
                    region,
                    table,
                    up_to,
                } => {
                    raise(&mut told.deleted, (region, table), up_to);
                    raise(&mut told.deleting, (region, table), up_to);
                }
                Ack::Used { region, up_to } => raise(&mut told.used, region, up_to),
            }
        }
        told
    }
}

/// Raises `map[key]` to `value`.
fn raise<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u64>, key: K, value: u64) {
    let mark = map.entry(key).or_default();
    *mark = (*mark).max(value);
}

/// Every table of every region the workload wrote to or deleted from.
fn tables_of(run: &Run) -> BTreeMap<u64, BTreeSet<u64>> {
    let mut regions: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for batch in &run.batches {
        regions.entry(batch.region).or_default().insert(batch.table);
    }
    for (_, ack) in &run.acks {
        if let Ack::Deleting { region, table, .. } | Ack::Delete { region, table, .. } = *ack {
            regions.entry(region).or_default().insert(table);
        }
    }
    regions
}

/// Checks that no two acknowledged batches of a region share a sequence
/// number: numbers are never reused, across tables, restarts and failures.
fn check_numbers_unique(run: &Run, told: &Told, label: &str) {
    let mut taken: BTreeMap<u64, BTreeMap<u64, (u64, usize)>> = BTreeMap::new();
    for (&batch, &last) in &told.acked {
        let written = &run.batches[batch];
        let first = last + 1 - written.entries.len() as u64;
        let ranges = taken.entry(written.region).or_default();
        let clash = ranges.insert(first, (last, batch));
        assert!(
            clash.is_none(),
            "{label}: region {}: batches {batch} and {clash:?} got the same first number",
            written.region
        );
    }
    for (region, ranges) in &taken {
        let mut before: Option<(u64, usize)> = None;
        for (&first, &(last, batch)) in ranges {
            if let Some((end, other)) = before {
                assert!(
                    first > end,
                    "{label}: region {region}: batch {batch} ({first}..={last}) was given \
                     numbers of batch {other} (up to {end})"
                );
            }
            before = Some((last, batch));
        }
    }
}

/// Recovers data dir `image` (a crash image made at log position `at`, or
/// the workload's own data dir) and checks it against what had been
/// acknowledged by then, for every region and table the workload touched:
/// recovery succeeds in the default mode; every acknowledged entry is there
/// and intact; nothing appears that was never written there; no
/// acknowledged delete is undone; batches are whole or absent; a region's
/// scan is its tables' entries merged in strictly ascending order; and
/// sequence numbers keep increasing: `sequence_num` is never below an
/// acknowledged number, and the next write of every region gets a number
/// above everything acknowledged, seen or given to a failed write. `label`
/// names the image in failure messages.
pub fn check(image: &Path, run: &Run, at: usize, label: &str) {
    // Writes after recovery are checked for their numbers only, so they
    // need no sync (and a check of many regions stays cheap).
    let config = ManagerConfig {
        sync_mode: SyncMode::Never,
        ..config(image, run.streams)
    };
    let wal =
        SegmentManager::open(config).unwrap_or_else(|e| panic!("{label}: recovery failed: {e}"));
    let told = Told::by(run, at);
    check_numbers_unique(run, &told, label);
    for (region, tables) in tables_of(run) {
        let mut max_seen = told.used.get(&region).copied().unwrap_or(0);
        let mut region_entries = Vec::new();
        for table in tables {
            let entries = drain(wal.read(region, table, 0, u64::MAX).unwrap())
                .unwrap_or_else(|e| panic!("{label}: read failed: {e}"));
            let seen = check_table(run, &told, region, table, &entries, label);
            max_seen = max_seen.max(seen);
            let max_acked = told
                .acked
                .iter()
                .filter(|(b, _)| {
                    (run.batches[**b].region, run.batches[**b].table) == (region, table)
                })
                .map(|(_, &last)| last)
                .max()
                .unwrap_or(0);
            assert!(
                wal.sequence_num(region, table).unwrap() >= max_acked,
                "{label}: sequence_num of region {region} table {table} went back below {max_acked}"
            );
            region_entries.extend(entries);
        }
        region_entries.sort_by_key(|&(_, seq, _)| seq);
        let scanned = drain(wal.scan(region).unwrap())
            .unwrap_or_else(|e| panic!("{label}: scan failed: {e}"));
        assert!(
            scanned.windows(2).all(|w| w[0].1 < w[1].1),
            "{label}: region {region}'s scan is not in strictly ascending sequence order"
        );
        assert!(
            scanned == region_entries,
            "{label}: region {region}'s scan ({} entries) is not its tables' entries ({})",
            scanned.len(),
            region_entries.len()
        );
        let next = wal
            .write(region, 0, &[b"after the crash".as_slice()])
            .unwrap_or_else(|e| panic!("{label}: write after recovery failed: {e}"));
        assert!(
            next > max_seen,
            "{label}: region {region} reused sequence {next} (given or seen up to {max_seen})"
        );
    }
    wal.close().unwrap();
}

/// Checks one table's recovered `entries` (table, sequence, payload)
/// against what the workload wrote and was told; returns the largest
/// sequence number among them.
fn check_table(
    run: &Run,
    told: &Told,
    region: u64,
    table: u64,
    entries: &[(u64, u64, Vec<u8>)],
    label: &str,
) -> u64 {
    let mark = told.deleted.get(&(region, table)).copied().unwrap_or(0);
    // A delete asked for but not acknowledged may be in force.
    let may_be_deleted = told.deleting.get(&(region, table)).copied().unwrap_or(0);
    // Per batch present: sequence number of each entry index.
    let mut present: BTreeMap<usize, BTreeMap<usize, u64>> = BTreeMap::new();
    let mut max_seen = 0;
    for (entry_table, seq, p) in entries {
        assert_eq!(*entry_table, table, "{label}: a read yielded another table");
        let (batch, index) = parse(p);
        let written = &run.batches[batch];
        assert!(
            written.region == region
                && written.table == table
                && written.entries.get(index) == Some(p),
            "{label}: region {region} table {table} seq {seq} holds an entry never written there"
        );
        assert!(
            *seq > mark,
            "{label}: region {region} table {table}: seq {seq} came back after delete up to {mark}"
        );
        present.entry(batch).or_default().insert(index, *seq);
        max_seen = max_seen.max(*seq);
    }
    for (batch, seqs) in &present {
        // Entries of a batch have consecutive numbers, so each present
        // entry implies the same first number; the missing ones, if any,
        // are the leading ones a delete mark hides.
        let count = run.batches[*batch].entries.len();
        let (&min_index, &min_seq) = seqs.iter().next().unwrap();
        let first = min_seq - min_index as u64;
        let consistent = seqs.len() == count - min_index
            && seqs
                .iter()
                .all(|(&index, &seq)| seq == first + index as u64);
        assert!(
            consistent && (min_index == 0 || first + min_index as u64 - 1 <= may_be_deleted),
            "{label}: region {region} table {table}: batch {batch} is not whole: {seqs:?} of \
             {count} (delete mark {mark})"
        );
    }
    for (&batch, &last) in &told.acked {
        let written = &run.batches[batch];
        if (written.region, written.table) != (region, table) {
            continue;
        }
        let count = written.entries.len() as u64;
        for (index, entry) in written.entries.iter().enumerate() {
            let seq = last + 1 - count + index as u64;
            if seq <= may_be_deleted {
                continue;
            }
            assert_eq!(
                present.get(&batch).and_then(|s| s.get(&index)),
                Some(&seq),
                "{label}: region {region} table {table}: acknowledged entry {index} of batch \
                 {batch} (seq {seq}, {} bytes) is lost",
                entry.len()
            );
        }
    }
    max_seen
}
