//! Corruption sweep over a real data dir: a small WAL (one region, two
//! tables, three segments written under `SyncMode::Always`, one delete,
//! closed cleanly) is damaged one way at a time, and every damaged copy is
//! checked against what docs/OPERATIONS.md and docs/FORMAT.md promise:
//!
//! - `inspect` (what `segwal verify` prints) reports exactly the expected
//!   problem, naming the file and offset, and marks it as damage or, for a
//!   torn tail of the newest segment, as a note;
//! - `dump_table` returns exactly the intact live entries;
//! - `SegmentManager::open` refuses in the modes that must refuse, with an
//!   error of the expected kind naming the file and offset, and opens in the
//!   others;
//! - an image that opens returns exactly the intact live entries, each
//!   byte-identical to what was written (nothing altered, nothing deleted
//!   brought back, nothing lost but the damaged records), and recovery
//!   rebuilds the sequence numbers from what survived.
//!
//! Nothing may panic: a panic anywhere fails the test.
//!
//! The segments: the first is sealed early (a batch larger than a segment
//! came next) and holds deleted and live entries of both tables; the
//! second holds only that batch and is exactly full; the third, the
//! newest, holds a few more batches.
//!
//! # Which bytes are checked
//!
//! Every byte of a segment file is checked, though not every byte is
//! checksummed: bytes `[0, 48)` are the header (magic and version compared,
//! the rest under `header_crc`); every record is covered by its two
//! checksums; and everything after the last record (the preallocated tail)
//! is not checksummed but must be zero, so the scanner sees a non-zero
//! byte there as a record that does not verify. A flipped bit in the tail is
//! therefore a torn tail at the end of the records: a note in the newest
//! segment, damage in a sealed one. Every byte of `META` is under its CRC.
//! `LOCK` is empty: nothing to flip or truncate.
//!
//! Every cut is seen, wherever it falls: the header records the file's
//! length (its capacity), so a cut in the zero tail, or exactly at a record
//! boundary, where the records alone could not show it, is refused by
//! `Strict` and `TolerateTornTail` and reported by `inspect` at the cut;
//! `SkipCorrupted` reads what is left.
//!
//! # How much is checked
//!
//! `SEGWAL_CORRUPTION_FULL=1` flips every bit of every segment and of
//! `META`, and cuts every file at every length. By default (CI) a bit of
//! every byte is flipped, the bit rotating from byte to byte, and every
//! file is cut at every length, except where runs of bytes behave alike:
//! the zero tails and the body of the one large record are sampled (see
//! [`offsets`]). Every bit of `META`, and of the first segment's header
//! and first record, is flipped in both runs.
//!
//! Images are written to tmpfs (`/dev/shm`) when there is one, because
//! every check rewrites the image and recovery syncs each file it opens.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use segwal_format::{
    RECORD_HEADER_LEN, RegionMeta, SEGMENT_HEADER_LEN, ScanEnd, Scanner, SegmentHeader,
};
use segwal_manager::{
    EntryIter, Error, LOCK_FILE, ManagerConfig, RecoveryMode, SegmentManager, SyncMode, dump_table,
    inspect,
};

const REGION: u64 = 7;
const TABLES: [u64; 2] = [1, 2];
const SEGMENT_SIZE: u64 = 4096;
const MODES: [RecoveryMode; 3] = [
    RecoveryMode::Strict,
    RecoveryMode::TolerateTornTail,
    RecoveryMode::SkipCorrupted,
];

/// One record of a pristine segment, as the scanner found it.
#[derive(Debug, Clone)]
struct RecordSpan {
    offset: u64,
    end: u64,
    table_id: u64,
    first: u64,
    last: u64,
    durable_offset: u64,
}

/// One file of the pristine image. Segments carry their record layout.
#[derive(Debug)]
struct ImageFile {
    /// Path relative to the data dir.
    rel: PathBuf,
    bytes: Vec<u8>,
    /// `Some` for a segment file: its records, in file order.
    records: Option<Vec<RecordSpan>>,
}

impl ImageFile {
    /// End of the records: the preallocated zero tail starts here.
    fn data_end(&self) -> u64 {
        let records = self.records.as_ref().expect("a segment");
        records.last().map_or(SEGMENT_HEADER_LEN as u64, |r| r.end)
    }
}

/// The undamaged data dir as bytes, and everything known about what it
/// holds.
#[derive(Debug)]
struct Pristine {
    files: Vec<ImageFile>,
    /// Index in `files` of each segment, in id order (the last is newest).
    segments: Vec<usize>,
    /// Index in `files` of `META`.
    meta_file: usize,
    meta: RegionMeta,
    /// Every entry ever written: sequence -> (table, payload).
    written: BTreeMap<u64, (u64, Vec<u8>)>,
}

impl Pristine {
    fn mark(&self, table_id: u64) -> u64 {
        self.meta
            .tables
            .iter()
            .find(|t| t.table_id == table_id)
            .map_or(0, |t| t.deleted_up_to)
    }

    fn meta_max(&self, table_id: u64) -> u64 {
        self.meta
            .tables
            .iter()
            .find(|t| t.table_id == table_id)
            .map_or(0, |t| t.max_sequence)
    }
}

fn region_dir_name() -> String {
    format!("{REGION:020}")
}

/// The `i`th payload written: 0 to 22 bytes (so the 23rd is empty),
/// different for every entry.
fn payload(table_id: u64, i: usize) -> Vec<u8> {
    (0..i % 23)
        .map(|j| (table_id as u8).wrapping_mul(31) ^ (i as u8).wrapping_add(j as u8))
        .collect()
}

/// Writes the data dir, closes it, and reads it back as bytes with its
/// record layout. Built once per test binary.
fn pristine() -> &'static Pristine {
    static PRISTINE: OnceLock<Pristine> = OnceLock::new();
    PRISTINE.get_or_init(build_pristine)
}

fn build_pristine() -> Pristine {
    let dir = tempfile::tempdir().unwrap();
    let wal = SegmentManager::open(ManagerConfig {
        segment_size_bytes: SEGMENT_SIZE,
        sync_mode: SyncMode::Always,
        ..ManagerConfig::new(dir.path())
    })
    .unwrap();
    // Segment 1: small batches. Then a batch too large for a segment, which
    // seals segment 1 well before it is full and gets segment 2, sized to
    // fit it exactly. Then segment 3, the newest: small batches again.
    let mut i = 0;
    let mut small_batches = |count: usize| -> Vec<(u64, Vec<Vec<u8>>)> {
        // 1 to 3 entries, alternating tables.
        (0..count)
            .map(|batch| {
                let table_id = TABLES[batch % 2];
                let entries = (0..batch % 3 + 1)
                    .map(|_| {
                        i += 1;
                        payload(table_id, i)
                    })
                    .collect();
                (table_id, entries)
            })
            .collect()
    };
    let mut batches = small_batches(9);
    batches.push((TABLES[1], vec![vec![0xa5; 2100], vec![0x5a; 2000]]));
    batches.extend(small_batches(7));
    let mut written = BTreeMap::new();
    for (table_id, entries) in batches {
        let last = wal.write(REGION, table_id, &entries).unwrap();
        let first = last + 1 - entries.len() as u64;
        for (sequence, entry) in (first..=last).zip(entries) {
            written.insert(sequence, (table_id, entry));
        }
    }
    // Table 1 deleted up to a sequence number in the first segment: that
    // segment keeps table 2's live entries, and `META` now exists.
    wal.mark_delete_entries_up_to(REGION, TABLES[0], 6).unwrap();
    wal.close().unwrap();
    drop(wal);

    let region_dir = dir.path().join(region_dir_name());
    let mut names: Vec<String> = fs::read_dir(&region_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut files = vec![ImageFile {
        rel: PathBuf::from(LOCK_FILE),
        bytes: fs::read(dir.path().join(LOCK_FILE)).unwrap(),
        records: None,
    }];
    let (mut segments, mut meta_file) = (Vec::new(), None);
    for name in names {
        let bytes = fs::read(region_dir.join(&name)).unwrap();
        let records = if name == "META" {
            meta_file = Some(files.len());
            None
        } else {
            assert!(name.ends_with(".seg"), "unexpected file {name}");
            segments.push(files.len());
            Some(layout(&bytes))
        };
        files.push(ImageFile {
            rel: Path::new(&region_dir_name()).join(name),
            bytes,
            records,
        });
    }
    let meta_file = meta_file.expect("the delete wrote META");
    let meta = RegionMeta::decode(&files[meta_file].bytes).unwrap();
    let pristine = Pristine {
        files,
        segments,
        meta_file,
        meta,
        written,
    };
    check_pristine(&pristine);
    pristine
}

/// The records of a segment file, read with the format's own scanner.
fn layout(bytes: &[u8]) -> Vec<RecordSpan> {
    let header = SegmentHeader::decode(bytes).unwrap();
    let mut scanner = Scanner::new(
        &bytes[SEGMENT_HEADER_LEN..],
        SEGMENT_HEADER_LEN as u64,
        &header,
    );
    let records = scanner
        .by_ref()
        .map(|r| RecordSpan {
            offset: r.offset(),
            end: r.end_offset(),
            table_id: r.table_id(),
            first: r.first_sequence(),
            last: r.last_sequence(),
            durable_offset: r.header().meta.durable_offset,
        })
        .collect();
    assert!(matches!(scanner.end(), Some(ScanEnd::Clean { .. })));
    records
}

/// The image is what the sweep needs: a sealed segment with several
/// records (deleted and live entries of both tables) and a zero tail; a
/// sealed segment holding one record and no zero tail; the newest segment
/// with several records and a zero tail; every written entry in exactly one
/// record.
fn check_pristine(p: &Pristine) {
    assert_eq!(p.segments.len(), 3, "three segments");
    let segment = |s: usize| &p.files[p.segments[s]];
    let records = |s: usize| segment(s).records.as_ref().unwrap();
    for s in [0, 2] {
        assert_eq!(segment(s).bytes.len() as u64, SEGMENT_SIZE);
        assert!(records(s).len() >= 6, "{:?}", records(s));
        assert!(segment(s).data_end() < SEGMENT_SIZE / 2);
    }
    assert_eq!(records(1).len(), 1);
    assert_eq!(segment(1).data_end(), segment(1).bytes.len() as u64);
    assert!(segment(1).data_end() > SEGMENT_SIZE);
    let mark = p.mark(TABLES[0]);
    assert!(
        records(0)
            .iter()
            .any(|r| r.table_id == TABLES[0] && r.last <= mark)
    );
    assert!(
        records(0)
            .iter()
            .any(|r| r.table_id == TABLES[0] && r.first > mark)
    );
    assert!(records(0).iter().any(|r| r.table_id == TABLES[1]));
    assert!(p.written.values().any(|(_, bytes)| bytes.is_empty()));
    let mut in_records = BTreeSet::new();
    for s in 0..3 {
        for r in records(s) {
            for sequence in r.first..=r.last {
                assert_eq!(p.written[&sequence].0, r.table_id);
                assert!(in_records.insert(sequence));
            }
        }
    }
    assert_eq!(in_records.len(), p.written.len());
}

/// One way to damage the image.
#[derive(Debug, Clone, Copy)]
enum Mutation {
    /// Flip bit `bit` (bit `bit % 8` of byte `bit / 8`) of file `file`.
    Flip { file: usize, bit: u64 },
    /// Cut file `file` to `len` bytes.
    Truncate { file: usize, len: u64 },
}

impl Mutation {
    fn file(self) -> usize {
        match self {
            Mutation::Flip { file, .. } | Mutation::Truncate { file, .. } => file,
        }
    }

    fn apply(self, bytes: &mut Vec<u8>) {
        match self {
            Mutation::Flip { bit, .. } => bytes[(bit / 8) as usize] ^= 1 << (bit % 8),
            Mutation::Truncate { len, .. } => bytes.truncate(len as usize),
        }
    }
}

/// What a mutation did to the image, as recovery must see it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Damage {
    /// `META` no longer decodes.
    Meta,
    /// The segment's header no longer decodes.
    Header { segment: usize },
    /// The record at `offset` no longer verifies, and a later record proves
    /// it had been synced: damage, whatever the segment.
    Corrupt {
        segment: usize,
        offset: u64,
        lost: Range<usize>,
    },
    /// The data from `offset` on does not verify and no later record proves
    /// it had been synced: a torn tail in the newest segment, damage in a
    /// sealed one.
    Torn {
        segment: usize,
        offset: u64,
        lost: Range<usize>,
    },
    /// The file was cut to `len` bytes (at least its header): the records
    /// from the first one not wholly before `len` are lost. What is left
    /// of a record cut in two reads as a torn tail at `torn`, unless every
    /// byte of it is zero (its checksum starts with zeros for some salts),
    /// which reads as a clean end.
    Cut {
        segment: usize,
        len: u64,
        torn: Option<u64>,
        lost: Range<usize>,
    },
}

impl Damage {
    /// Which segment's records are lost to a reader that gets past the
    /// damage, and which of them (a damaged header loses them all).
    fn lost(&self, p: &Pristine) -> Option<(usize, Range<usize>)> {
        match self {
            Damage::Meta => None,
            Damage::Header { segment } => {
                let records = p.files[p.segments[*segment]].records.as_ref().unwrap();
                Some((*segment, 0..records.len()))
            }
            Damage::Corrupt { segment, lost, .. }
            | Damage::Torn { segment, lost, .. }
            | Damage::Cut { segment, lost, .. } => Some((*segment, lost.clone())),
        }
    }
}

/// Classifies `m` from the pristine layout and the rules of docs/FORMAT.md
/// ("Reading a segment: clean end, torn tail, corruption").
fn damage(p: &Pristine, m: Mutation) -> Damage {
    if m.file() == p.meta_file {
        // Every byte is under the CRC and the length is checked exactly.
        return Damage::Meta;
    }
    let segment = p
        .segments
        .iter()
        .position(|&s| s == m.file())
        .expect("only META and segments are mutated");
    let file = &p.files[m.file()];
    let records = file.records.as_ref().unwrap();
    let header_len = SEGMENT_HEADER_LEN as u64;
    let torn_or_corrupt = |i: usize| {
        let offset = records[i].offset;
        if records[i + 1..].iter().any(|r| r.durable_offset > offset) {
            Damage::Corrupt {
                segment,
                offset,
                lost: i..i + 1,
            }
        } else {
            Damage::Torn {
                segment,
                offset,
                lost: i..records.len(),
            }
        }
    };
    match m {
        Mutation::Flip { bit, .. } => {
            let byte = bit / 8;
            if byte < header_len {
                return Damage::Header { segment };
            }
            match records
                .iter()
                .position(|r| (r.offset..r.end).contains(&byte))
            {
                Some(i) => torn_or_corrupt(i),
                // A non-zero byte in the zero tail: the record at the end
                // of the data does not verify, and nothing after it does.
                None => Damage::Torn {
                    segment,
                    offset: file.data_end(),
                    lost: records.len()..records.len(),
                },
            }
        }
        Mutation::Truncate { len, .. } => {
            if len < header_len {
                return Damage::Header { segment };
            }
            let i = records
                .iter()
                .position(|r| r.end > len)
                .unwrap_or(records.len());
            let torn = records
                .get(i)
                .filter(|r| {
                    file.bytes[r.offset as usize..len as usize]
                        .iter()
                        .any(|&b| b != 0)
                })
                .map(|r| r.offset);
            Damage::Cut {
                segment,
                len,
                torn,
                lost: i..records.len(),
            }
        }
    }
}

/// The error an open must fail with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Meta,
    Header { segment: usize },
    Corrupted { segment: usize, offset: u64 },
    TornTail { segment: usize, offset: u64 },
    SealedDamaged { segment: usize, offset: u64 },
    WrongLength { segment: usize, len: u64 },
}

/// What `SegmentManager::open` must do with the damage in `mode`
/// (docs/OPERATIONS.md, "Recovery modes"): `None` to open, or the refusal.
fn refusal(p: &Pristine, damage: &Damage, mode: RecoveryMode) -> Option<Refusal> {
    let newest = |segment: usize| segment + 1 == p.segments.len();
    match *damage {
        Damage::Cut { segment, len, .. } => {
            (mode != RecoveryMode::SkipCorrupted).then_some(Refusal::WrongLength { segment, len })
        }
        // Without META, deletes would come back and sequence numbers could
        // be reused: every mode refuses.
        Damage::Meta => Some(Refusal::Meta),
        Damage::Header { segment } => Some(Refusal::Header { segment }),
        Damage::Corrupt {
            segment, offset, ..
        } => {
            (mode != RecoveryMode::SkipCorrupted).then_some(Refusal::Corrupted { segment, offset })
        }
        Damage::Torn {
            segment, offset, ..
        } => match mode {
            RecoveryMode::Strict => Some(Refusal::TornTail { segment, offset }),
            RecoveryMode::TolerateTornTail if !newest(segment) => {
                Some(Refusal::SealedDamaged { segment, offset })
            }
            _ => None,
        },
    }
}

/// The problems `inspect` must report: (file, offset, is damage).
fn problems(p: &Pristine, dir: &Path, damage: &Damage) -> Vec<(PathBuf, Option<u64>, bool)> {
    let path = |segment: usize| dir.join(&p.files[p.segments[segment]].rel);
    let newest = |segment: usize| segment + 1 == p.segments.len();
    match *damage {
        Damage::Cut {
            segment, len, torn, ..
        } => {
            let mut found = vec![(path(segment), Some(len), true)];
            found.extend(torn.map(|offset| (path(segment), Some(offset), !newest(segment))));
            found
        }
        Damage::Meta => vec![(dir.join(&p.files[p.meta_file].rel), None, true)],
        Damage::Header { segment } => vec![(path(segment), Some(0), true)],
        Damage::Corrupt {
            segment, offset, ..
        } => vec![(path(segment), Some(offset), true)],
        Damage::Torn {
            segment, offset, ..
        } => vec![(path(segment), Some(offset), !newest(segment))],
    }
}

/// The entries that must survive: everything written, minus the lost
/// records, minus (if `apply_marks`) what the delete marks cover.
fn expected_entries(
    p: &Pristine,
    lost: Option<&(usize, Range<usize>)>,
    apply_marks: bool,
) -> Vec<(u64, u64, Vec<u8>)> {
    let lost_sequences = lost_sequences(p, lost);
    p.written
        .iter()
        .filter(|(sequence, (table_id, _))| {
            !lost_sequences.contains(sequence) && (!apply_marks || **sequence > p.mark(*table_id))
        })
        .map(|(&sequence, (table_id, bytes))| (*table_id, sequence, bytes.clone()))
        .collect()
}

fn lost_sequences(p: &Pristine, lost: Option<&(usize, Range<usize>)>) -> BTreeSet<u64> {
    let Some((segment, range)) = lost else {
        return BTreeSet::new();
    };
    let records = p.files[p.segments[*segment]].records.as_ref().unwrap();
    records[range.clone()]
        .iter()
        .flat_map(|r| r.first..=r.last)
        .collect()
}

/// Every record that survives, deleted or not.
fn surviving_records<'a>(
    p: &'a Pristine,
    lost: Option<&(usize, Range<usize>)>,
) -> Vec<&'a RecordSpan> {
    let mut survivors = Vec::new();
    for (segment, &file) in p.segments.iter().enumerate() {
        for (i, record) in p.files[file].records.as_ref().unwrap().iter().enumerate() {
            if !lost.is_some_and(|(s, range)| *s == segment && range.contains(&i)) {
                survivors.push(record);
            }
        }
    }
    survivors
}

/// Writes the image into `dir` (replacing whatever is there) with `m`
/// applied.
fn materialize(p: &Pristine, dir: &Path, m: Mutation) {
    let region_dir = dir.join(region_dir_name());
    if region_dir.exists() {
        fs::remove_dir_all(&region_dir).unwrap();
    }
    fs::create_dir_all(&region_dir).unwrap();
    for (index, file) in p.files.iter().enumerate() {
        let mut bytes = file.bytes.clone();
        if index == m.file() {
            m.apply(&mut bytes);
        }
        fs::write(dir.join(&file.rel), bytes).unwrap();
    }
}

fn drain(mut iter: EntryIter) -> Vec<(u64, u64, Vec<u8>)> {
    let mut out = Vec::new();
    while iter
        .next_batch(16, |e| {
            out.push((e.table_id, e.sequence, e.payload.to_vec()));
        })
        .unwrap()
        > 0
    {}
    out
}

/// Checks one damaged image in `dir`: inspect and dump, then an open in
/// each recovery mode (each on a fresh copy, since an open may cut a torn
/// tail or remove a dead segment).
fn check(p: &Pristine, dir: &Path, m: Mutation) {
    let damage = damage(p, m);
    let context = format!("{m:?} ({damage:?})");
    materialize(p, dir, m);
    check_read_only_tools(p, dir, m, &damage, &context);
    for mode in MODES {
        materialize(p, dir, m);
        let context = format!("{context} under {mode:?}");
        let opened = SegmentManager::open(ManagerConfig {
            segment_size_bytes: SEGMENT_SIZE,
            recovery_mode: mode,
            ..ManagerConfig::new(dir)
        });
        match (refusal(p, &damage, mode), opened) {
            (None, Ok(wal)) => {
                check_opened(p, &wal, &damage, &context);
                wal.close().unwrap();
            }
            (Some(refusal), Err(err)) => check_refusal(p, dir, refusal, &err, &context),
            (None, Err(err)) => panic!("{context}: open failed: {err}"),
            (Some(refusal), Ok(_)) => panic!("{context}: opened, expected {refusal:?}"),
        }
    }
}

/// `inspect` reports exactly the expected problem; `dump_table` returns
/// the intact live entries.
fn check_read_only_tools(p: &Pristine, dir: &Path, m: Mutation, damage: &Damage, context: &str) {
    let report = inspect(dir).unwrap_or_else(|e| panic!("{context}: inspect failed: {e}"));
    let found: Vec<(PathBuf, Option<u64>, bool)> = report
        .problems()
        .map(|problem| {
            let shown = problem.to_string();
            assert!(
                shown.starts_with(&problem.path.display().to_string()),
                "{context}: {shown}"
            );
            if let Some(offset) = problem.offset {
                assert!(
                    shown.contains(&format!("at offset {offset}")),
                    "{context}: {shown}"
                );
            }
            (problem.path.clone(), problem.offset, problem.is_damage)
        })
        .collect();
    let expected = problems(p, dir, damage);
    assert_eq!(found, expected, "{context}");
    assert_eq!(
        report.is_clean(),
        expected.iter().all(|e| !e.2),
        "{context}"
    );

    // A damaged header hides its whole segment from the tools; a damaged
    // META hides the delete marks, so deleted entries may show up, but
    // never an entry altered.
    let lost = damage.lost(p);
    let meta_intact = m.file() != p.meta_file;
    for table_id in TABLES {
        let mut dumped = Vec::new();
        dump_table(dir, REGION, table_id, 0, u64::MAX, |e| {
            dumped.push((e.table_id, e.sequence, e.payload.to_vec()));
        })
        .unwrap_or_else(|e| panic!("{context}: dump failed: {e}"));
        let of_table = |apply_marks| -> Vec<_> {
            expected_entries(p, lost.as_ref(), apply_marks)
                .into_iter()
                .filter(|e| e.0 == table_id)
                .collect()
        };
        if meta_intact {
            assert_eq!(
                dumped,
                of_table(true),
                "{context}: dump of table {table_id}"
            );
        } else {
            let (live, written) = (of_table(true), of_table(false));
            assert!(live.iter().all(|e| dumped.contains(e)), "{context}");
            assert!(dumped.iter().all(|e| written.contains(e)), "{context}");
        }
    }
}

/// An image that opened returns exactly the intact live entries, and
/// recovery rebuilt the sequence numbers from what survived.
fn check_opened(p: &Pristine, wal: &SegmentManager, damage: &Damage, context: &str) {
    let lost = damage.lost(p);
    let expected = expected_entries(p, lost.as_ref(), true);
    assert_eq!(
        drain(wal.scan(REGION).unwrap()),
        expected,
        "{context}: scan"
    );
    for table_id in TABLES {
        let want: Vec<_> = expected
            .iter()
            .filter(|e| e.0 == table_id)
            .cloned()
            .collect();
        let got = drain(wal.read(REGION, table_id, 0, u64::MAX).unwrap());
        assert_eq!(got, want, "{context}: read of table {table_id}");
        let max = surviving_records(p, lost.as_ref())
            .iter()
            .filter(|r| r.table_id == table_id)
            .map(|r| r.last)
            .max()
            .unwrap_or(0);
        assert_eq!(
            wal.sequence_num(REGION, table_id).unwrap(),
            max.max(p.meta_max(table_id)),
            "{context}: sequence_num of table {table_id}"
        );
    }
    let next = surviving_records(p, lost.as_ref())
        .iter()
        .map(|r| r.last + 1)
        .max()
        .unwrap_or(1)
        .max(p.meta.next_sequence);
    assert_eq!(
        wal.statistics().regions,
        [(REGION, next)],
        "{context}: next sequence"
    );
}

/// The open failed with the expected error, naming the file (and the
/// offset, where the damage has one).
fn check_refusal(p: &Pristine, dir: &Path, refusal: Refusal, err: &Error, context: &str) {
    use segwal_segment::Error as SegmentError;
    let (path, offset) = match refusal {
        Refusal::Meta => (dir.join(&p.files[p.meta_file].rel), None),
        Refusal::Header { segment } => (dir.join(&p.files[p.segments[segment]].rel), None),
        Refusal::Corrupted { segment, offset }
        | Refusal::TornTail { segment, offset }
        | Refusal::SealedDamaged { segment, offset }
        | Refusal::WrongLength {
            segment,
            len: offset,
        } => (dir.join(&p.files[p.segments[segment]].rel), Some(offset)),
    };
    let (at, found_offset) = match (refusal, err) {
        (Refusal::Meta, Error::MetaInvalid { path, .. }) => (path, None),
        (
            Refusal::Header { .. },
            Error::Segment {
                region_id: REGION,
                source: SegmentError::BadHeader { path, .. },
            },
        ) => (path, None),
        (
            Refusal::Corrupted { .. },
            Error::Segment {
                region_id: REGION,
                source: SegmentError::Corrupted { path, offset, .. },
            },
        )
        | (
            Refusal::TornTail { .. },
            Error::Segment {
                region_id: REGION,
                source: SegmentError::TornTail { path, offset, .. },
            },
        )
        | (Refusal::SealedDamaged { .. }, Error::SealedSegmentDamaged { path, offset, .. }) => {
            (path, Some(*offset))
        }
        (
            Refusal::WrongLength { .. },
            Error::Segment {
                region_id: REGION,
                source: SegmentError::WrongLength { path, len, .. },
            },
        ) => (path, Some(*len)),
        _ => panic!("{context}: expected {refusal:?}, got {err:?}"),
    };
    assert_eq!((at, found_offset), (&path, offset), "{context}: {err}");
    let shown = err.to_string();
    assert!(
        shown.contains(&path.display().to_string()),
        "{context}: {shown}"
    );
    if let Some(offset) = offset {
        assert!(
            shown.contains(&format!("offset {offset}")),
            "{context}: {shown}"
        );
    }
}

/// True for the exhaustive run (`SEGWAL_CORRUPTION_FULL=1`).
fn full() -> bool {
    std::env::var_os("SEGWAL_CORRUPTION_FULL").is_some_and(|v| v == "1")
}

/// The offsets of file `file` the default run damages (a bit flipped
/// there, or the file cut there): every byte of `META`; in a segment,
/// every byte of the header and of every record up to 512 bytes long; of a
/// longer record, its header, the first and last 8 bytes of its body and
/// every 61st byte between; of the zero tail, the first 64 bytes, the last,
/// and every 61st between. The bytes left out each behave like a neighbour
/// that is checked (the same record, or the same run of zeros); the full
/// run checks them all.
fn offsets(p: &Pristine, file: usize) -> BTreeSet<u64> {
    let f = &p.files[file];
    let len = f.bytes.len() as u64;
    let Some(records) = &f.records else {
        return (0..len).collect();
    };
    let sparse = |range: Range<u64>, head: u64, tail: u64| {
        let (start, end) = (range.start, range.end);
        (start..end).filter(move |&o| o < start + head || o + tail >= end || (o - start) % 61 == 0)
    };
    let mut offsets: BTreeSet<u64> = (0..SEGMENT_HEADER_LEN as u64).collect();
    for r in records {
        let header_end = r.offset + RECORD_HEADER_LEN as u64;
        if r.end - r.offset <= 512 {
            offsets.extend(r.offset..r.end);
        } else {
            offsets.extend(r.offset..header_end);
            offsets.extend(sparse(header_end..r.end, 8, 8));
        }
    }
    offsets.extend(sparse(f.data_end()..len, 64, 1));
    offsets
}

/// The bits to flip in file `file`: every bit in the full run; else one
/// bit of each of [`offsets`], rotating from byte to byte, and every bit
/// of the bytes in `dense`.
fn bits(p: &Pristine, file: usize, dense: Range<u64>) -> Vec<u64> {
    if full() {
        return (0..p.files[file].bytes.len() as u64 * 8).collect();
    }
    let mut bits: BTreeSet<u64> = offsets(p, file)
        .into_iter()
        .map(|byte| byte * 8 + byte % 8)
        .collect();
    bits.extend(dense.start * 8..dense.end * 8);
    bits.into_iter().collect()
}

/// The lengths to cut file `file` to: every length in the full run, else
/// [`offsets`].
fn lengths(p: &Pristine, file: usize) -> Vec<u64> {
    if full() {
        return (0..p.files[file].bytes.len() as u64).collect();
    }
    offsets(p, file).into_iter().collect()
}

/// A scratch data dir, on tmpfs when there is one.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let builder = tempfile::Builder::new()
        .prefix("segwal-corruption-")
        .clone();
    if shm.is_dir()
        && let Ok(dir) = builder.tempdir_in(shm)
    {
        return dir;
    }
    builder.tempdir().unwrap()
}

/// Runs `check` over `mutations` and reports how many images it checked.
fn sweep(what: &str, mutations: impl IntoIterator<Item = Mutation>) {
    let p = pristine();
    let dir = scratch();
    let started = std::time::Instant::now();
    let mut images = 0;
    for m in mutations {
        check(p, dir.path(), m);
        images += 1;
    }
    eprintln!(
        "{what}: {images} damaged images checked in {:.1?} (full run: {})",
        started.elapsed(),
        full()
    );
}

fn flips(file: usize, dense: Range<u64>) -> impl Iterator<Item = Mutation> {
    bits(pristine(), file, dense)
        .into_iter()
        .map(move |bit| Mutation::Flip { file, bit })
}

/// Proves that every bit flipped in a sealed segment (header, records and
/// zero tail; a segment with many records and one with a single record
/// filling it) is reported by `inspect` as damage at the right file and
/// offset, refused by `Strict` and `TolerateTornTail`, and skipped by
/// `SkipCorrupted`, which returns every other entry unaltered.
#[test]
fn every_bit_flip_in_a_sealed_segment_is_detected() {
    let p = pristine();
    // Every bit of the header and of the first record, besides the sample.
    let first = &p.files[p.segments[0]].records.as_ref().unwrap()[0];
    let mutations = flips(p.segments[0], 0..first.end).chain(flips(p.segments[1], 0..0));
    sweep("sealed segment bit flips", mutations);
}

/// Proves that every bit flipped in the newest segment is detected: in its
/// last record or its zero tail as a torn tail (a note, refused only by
/// `Strict`, cut by the others), anywhere else as damage, exactly as in a
/// sealed segment.
#[test]
fn every_bit_flip_in_the_newest_segment_is_detected() {
    let p = pristine();
    sweep("newest segment bit flips", flips(p.segments[2], 0..0));
}

/// Proves that every bit flipped in `META` is reported by `inspect` and
/// refused by every recovery mode, naming the file: ignoring it would
/// bring deleted entries back and could reuse sequence numbers.
#[test]
fn every_bit_flip_in_meta_is_refused() {
    let p = pristine();
    let len = p.files[p.meta_file].bytes.len() as u64;
    sweep("META bit flips", flips(p.meta_file, 0..len));
}

/// Proves that cutting any file at any length is detected and handled as
/// documented: inside the header, refused; anywhere else in a segment,
/// reported at the cut and refused by `Strict` and `TolerateTornTail`,
/// while `SkipCorrupted` returns the records before the cut; `META`
/// refused at every length; and the entries returned are always intact.
#[test]
fn every_truncation_of_every_file_is_handled() {
    let p = pristine();
    let mut mutations: Vec<Mutation> = Vec::new();
    for &file in p.segments.iter().chain([&p.meta_file]) {
        mutations.extend(
            lengths(p, file)
                .into_iter()
                .map(|len| Mutation::Truncate { file, len }),
        );
    }
    sweep("truncations", mutations);
}

/// Proves that a sealed segment cut exactly at a record boundary is
/// reported as damage and refused by strict recovery, naming the cut.
///
/// The records alone cannot show such a cut: the segment ends cleanly
/// after fewer records. It is the capacity in the segment header (format
/// version 2) that tells; before it, the records cut off were lost without
/// a word from `inspect`, `verify` or any recovery mode.
#[test]
fn a_sealed_segment_cut_at_a_record_boundary_is_reported() {
    let p = pristine();
    let file = p.segments[0];
    let records = p.files[file].records.as_ref().unwrap();
    let cut = records[records.len() - 1].offset;
    let dir = scratch();
    materialize(p, dir.path(), Mutation::Truncate { file, len: cut });
    let report = inspect(dir.path()).unwrap();
    assert!(
        !report.is_clean(),
        "inspect finds no damage in a segment cut at offset {cut}"
    );
    let err = SegmentManager::open(ManagerConfig {
        segment_size_bytes: SEGMENT_SIZE,
        recovery_mode: RecoveryMode::Strict,
        ..ManagerConfig::new(dir.path())
    })
    .unwrap_err();
    assert!(err.to_string().contains(&format!("offset {cut}")), "{err}");
}
