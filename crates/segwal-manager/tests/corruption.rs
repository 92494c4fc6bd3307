//! Corruption sweep over a real data dir of the shared log: a small WAL
//! (four regions of two tables each, their batches interleaved in three
//! segments written under `SyncMode::Always`, and a META log of delete
//! marks) is damaged one way at a time, and every damaged copy is checked
//! against what docs/OPERATIONS.md and docs/FORMAT.md promise:
//!
//! - `inspect` (what `segwal verify` prints) reports exactly the expected
//!   problem, naming the file and offset, and marks it as damage or, for a
//!   torn tail of the newest segment or of META, as a note; it shows the
//!   delete marks and the records that survive the damage;
//! - `dump_table` returns exactly the intact live entries of every table;
//! - `SegmentManager::open` refuses in the modes that must refuse, with an
//!   error of the expected kind naming the file and offset, and opens in the
//!   others;
//! - an image that opens returns exactly the intact live entries of every
//!   region and table, each byte-identical to what was written (nothing
//!   altered, nothing deleted brought back while its delete mark survives,
//!   nothing lost but the damaged records), rebuilds every table's and
//!   region's sequence numbers from what survived, and keeps exactly the
//!   segments that still hold a live entry.
//!
//! Nothing may panic: a panic anywhere fails the test.
//!
//! # The image
//!
//! The first session writes small batches of every table, round robin,
//! until the log rolls over to a second segment; then more small batches
//! (one table is left out from here on: only META proves its numbers),
//! then a batch larger than a segment, which seals the second segment early
//! and gets the third, sized to fit it exactly. It then deletes every table
//! up to its last entry in the first segment, which leaves that segment with
//! nothing live in any region: it is removed, after META recorded the
//! tables' largest sequence numbers. The second session (its open replaces
//! META by a snapshot of one record) writes small batches into a fresh
//! segment, the newest, and deletes three tables further, one of them
//! inside a batch, each delete a META record of its own. So the image
//! holds: a sealed segment with deleted and live records of every region
//! and a zero tail; a sealed segment holding one record and no zero tail;
//! the newest segment with records of every region and a zero tail; and
//! `META`: a header, the snapshot record and three delete records.
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
//! segment, damage in a sealed one. Every byte of `META` is under a CRC:
//! the header's, or its record's. `LOCK` is empty: nothing to flip or cut.
//!
//! A record of `META` that does not verify while a later one does was
//! synced before that later one was written: damage, refused (naming META
//! and the record's offset) unless the mode is `SkipCorrupted`, which uses
//! the records before it. A damaged last record, or a cut inside a record,
//! is what a crash during an append leaves: a torn tail, dropped in every
//! mode, and with it that record's delete marks (the entries they covered
//! come back, where their segments are still on disk).
//!
//! Every cut of a segment is seen, wherever it falls: the header records
//! the file's length (its capacity), so a cut in the zero tail, or exactly
//! at a record boundary, where the records alone could not show it, is
//! refused by `Strict` and `TolerateTornTail` and reported by `inspect` at
//! the cut; `SkipCorrupted` reads what is left. A cut of `META` exactly at
//! a record boundary, by contrast, cannot be seen: nothing records the
//! log's length, so it reads as a log that ends there (a known limit of the
//! format, which the oracle states: the records cut off are simply gone).
//!
//! # How much is checked
//!
//! `SEGWAL_CORRUPTION_FULL=1` flips every bit of every segment and of
//! `META`, and cuts every file at every length. By default (CI) a bit of
//! every byte is flipped, the bit rotating from byte to byte, and every
//! file is cut at every length, except where runs of bytes behave alike:
//! the zero tails and the body of the one large record are sampled (see
//! [`offsets`]). Every bit of the first segment's header and first record,
//! and of `META`'s header and last record, is flipped in both runs.
//!
//! Images are written to tmpfs (`/dev/shm`) when there is one, because
//! every check rewrites the image and recovery syncs each file it opens.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use segwal_format::{
    META_ENTRY_LEN, META_LOG_HEADER_LEN, META_RECORD_HEADER_LEN, MetaEntry, MetaLogEnd,
    RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, ScanEnd, Scanner, SegmentHeader, decode_meta_log,
};
use segwal_manager::{
    EntryIter, Error, LOCK_FILE, META_FILE, ManagerConfig, RecoveryMode, SegmentManager, SyncMode,
    dump_table, inspect,
};

/// The regions of the image, the largest id among them.
const REGIONS: [u64; 4] = [2, 7, 1 << 33, u64::MAX];
const TABLES: [u64; 2] = [1, 2];
const SEGMENT_SIZE: u64 = 4096;
const MODES: [RecoveryMode; 3] = [
    RecoveryMode::Strict,
    RecoveryMode::TolerateTornTail,
    RecoveryMode::SkipCorrupted,
];

/// Every table of the image, as (region, table).
fn tables() -> impl Iterator<Item = (u64, u64)> {
    REGIONS
        .into_iter()
        .flat_map(|region| TABLES.map(|table| (region, table)))
}

/// One record of a pristine segment, as the scanner found it.
#[derive(Debug, Clone)]
struct RecordSpan {
    offset: u64,
    end: u64,
    region_id: u64,
    table_id: u64,
    first: u64,
    last: u64,
    durable_offset: u64,
}

/// One record of the pristine META log.
#[derive(Debug, Clone)]
struct MetaRecordSpan {
    offset: u64,
    end: u64,
    entries: Vec<MetaEntry>,
}

/// What a file of the image holds, as far as the oracle needs to know.
#[derive(Debug)]
enum Layout {
    Lock,
    Meta(Vec<MetaRecordSpan>),
    Segment(Vec<RecordSpan>),
}

/// One file of the pristine image.
#[derive(Debug)]
struct ImageFile {
    /// Its name in the data dir.
    name: String,
    bytes: Vec<u8>,
    layout: Layout,
}

impl ImageFile {
    fn records(&self) -> &[RecordSpan] {
        match &self.layout {
            Layout::Segment(records) => records,
            _ => panic!("{} is not a segment", self.name),
        }
    }

    fn meta_records(&self) -> &[MetaRecordSpan] {
        match &self.layout {
            Layout::Meta(records) => records,
            _ => panic!("{} is not the META log", self.name),
        }
    }

    /// End of the records: the preallocated zero tail starts here.
    fn data_end(&self) -> u64 {
        self.records()
            .last()
            .map_or(SEGMENT_HEADER_LEN as u64, |r| r.end)
    }
}

/// What a META log holds, merged as the manager merges it (every value by
/// maximum; a delete mark raises the table's largest number too).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct MetaView {
    /// Per (region, table): (largest sequence number, delete mark).
    tables: BTreeMap<(u64, u64), (u64, u64)>,
    /// Per region: the sequence floor.
    floors: BTreeMap<u64, u64>,
}

impl MetaView {
    fn of(records: &[MetaRecordSpan]) -> MetaView {
        let mut view = MetaView::default();
        for entry in records.iter().flat_map(|r| &r.entries) {
            match *entry {
                MetaEntry::DeleteMark {
                    region_id,
                    table_id,
                    deleted_up_to,
                } => {
                    let (max, mark) = view.tables.entry((region_id, table_id)).or_default();
                    *mark = (*mark).max(deleted_up_to);
                    *max = (*max).max(deleted_up_to);
                }
                MetaEntry::TableMax {
                    region_id,
                    table_id,
                    max_sequence,
                } => {
                    let (max, _) = view.tables.entry((region_id, table_id)).or_default();
                    *max = (*max).max(max_sequence);
                }
                MetaEntry::SequenceFloor {
                    region_id,
                    next_sequence,
                } => {
                    let floor = view.floors.entry(region_id).or_default();
                    *floor = (*floor).max(next_sequence);
                }
                other => panic!("the image's META holds no {other:?}"),
            }
        }
        view
    }

    fn max(&self, key: (u64, u64)) -> u64 {
        self.tables.get(&key).map_or(0, |t| t.0)
    }

    fn mark(&self, key: (u64, u64)) -> u64 {
        self.tables.get(&key).map_or(0, |t| t.1)
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
    /// Every entry ever written, also those of the segment removed before
    /// the image was taken: (region, sequence) -> (table, payload).
    written: BTreeMap<(u64, u64), (u64, Vec<u8>)>,
}

impl Pristine {
    fn segment(&self, segment: usize) -> &ImageFile {
        &self.files[self.segments[segment]]
    }

    fn meta_records(&self) -> &[MetaRecordSpan] {
        self.files[self.meta_file].meta_records()
    }

    /// What the first `kept` records of META hold; nothing for `None`.
    fn meta_view(&self, kept: Option<usize>) -> MetaView {
        kept.map_or_else(MetaView::default, |kept| {
            MetaView::of(&self.meta_records()[..kept])
        })
    }

    /// What the whole, undamaged META holds.
    fn full_meta(&self) -> MetaView {
        self.meta_view(Some(self.meta_records().len()))
    }
}

/// The `i`th payload written: 0 to 22 bytes (so every 23rd is empty),
/// different for every entry of a table.
fn payload(region_id: u64, table_id: u64, i: usize) -> Vec<u8> {
    let salt = (region_id as u8).wrapping_mul(7) ^ (table_id as u8).wrapping_mul(31);
    (0..i % 23)
        .map(|j| salt ^ (i as u8).wrapping_add(j as u8))
        .collect()
}

/// Writes batches and remembers every entry.
#[derive(Debug, Default)]
struct Writer {
    written: BTreeMap<(u64, u64), (u64, Vec<u8>)>,
    entries: usize,
}

/// Where a batch went: its last sequence number and how many segments the
/// manager had created (since it was opened) once it was written.
#[derive(Debug, Clone, Copy)]
struct Written {
    first: u64,
    last: u64,
    segments_created: u64,
}

impl Writer {
    /// Writes a batch of `count` small entries.
    fn small(&mut self, wal: &SegmentManager, table: (u64, u64), count: usize) -> Written {
        let entries = (0..count)
            .map(|_| {
                self.entries += 1;
                payload(table.0, table.1, self.entries)
            })
            .collect();
        self.batch(wal, table, entries)
    }

    fn batch(&mut self, wal: &SegmentManager, table: (u64, u64), entries: Vec<Vec<u8>>) -> Written {
        let last = wal.write(table.0, table.1, &entries).unwrap();
        let first = last + 1 - entries.len() as u64;
        for (sequence, entry) in (first..=last).zip(entries) {
            let previous = self.written.insert((table.0, sequence), (table.1, entry));
            assert!(previous.is_none(), "sequence {sequence} given twice");
        }
        Written {
            first,
            last,
            segments_created: wal.statistics().segments_created,
        }
    }
}

/// Writes the data dir (see the module docs), closes it, and reads it back
/// as bytes with its record layout. Built once per test binary.
fn pristine() -> &'static Pristine {
    static PRISTINE: OnceLock<Pristine> = OnceLock::new();
    PRISTINE.get_or_init(build_pristine)
}

fn build_pristine() -> Pristine {
    let dir = tempfile::tempdir().unwrap();
    let config = || ManagerConfig {
        segment_size_bytes: SEGMENT_SIZE,
        sync_mode: SyncMode::Always,
        ..ManagerConfig::new(dir.path())
    };
    let all: Vec<(u64, u64)> = tables().collect();
    let large = (REGIONS[0], TABLES[1]);
    let mut writer = Writer::default();

    // Session one. The first segment: 1 to 3 entries per batch, every
    // table in turn, until a batch rolls the log over.
    let wal = SegmentManager::open(config()).unwrap();
    let mut last_in_first: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    let mut turn = 0;
    let spilled = loop {
        let table = all[turn % all.len()];
        let written = writer.small(&wal, table, turn % 3 + 1);
        turn += 1;
        if written.segments_created > 1 {
            break table;
        }
        last_in_first.insert(table, written.last);
    };
    // From here on one table is written no more: after the deletes only
    // META holds its largest sequence number.
    let only_first = *all
        .iter()
        .rev()
        .find(|&&t| t != spilled && t != large)
        .unwrap();
    let others: Vec<(u64, u64)> = all.iter().copied().filter(|&t| t != only_first).collect();
    // The second segment: more small batches, then one too large for a
    // segment seals it early and gets the third, sized to fit.
    let mut in_second: BTreeMap<(u64, u64), Vec<Written>> = BTreeMap::new();
    for i in 0..8 {
        let table = others[(turn + i) % others.len()];
        let written = writer.small(&wal, table, i % 3 + 1);
        assert_eq!(written.segments_created, 2);
        in_second.entry(table).or_default().push(written);
    }
    let written = writer.batch(&wal, large, vec![vec![0xa5; 2100], vec![0x5a; 2000]]);
    assert_eq!(written.segments_created, 3);
    // Every table deleted up to its last entry in the first segment: none
    // of it is live any more, in any region, so it goes.
    for (&(region, table), &last) in &last_in_first {
        wal.mark_delete_entries_up_to(region, table, last).unwrap();
    }
    let statistics = wal.statistics();
    assert_eq!(statistics.segments_deleted, 1, "{statistics:?}");
    wal.close().unwrap();
    drop(wal);

    // Session two: the newest segment, then three deletes.
    let wal = SegmentManager::open(config()).unwrap();
    let mut in_newest: BTreeMap<(u64, u64), Vec<Written>> = BTreeMap::new();
    for i in 0..8 {
        let table = others[(turn + i) % others.len()];
        let written = writer.small(&wal, table, (i + 1) % 3 + 1);
        assert_eq!(written.segments_created, 1);
        in_newest.entry(table).or_default().push(written);
    }
    let deletes = [
        // Into the second segment: it keeps both deleted and live records.
        (
            REGIONS[1],
            TABLES[0],
            in_second[&(REGIONS[1], TABLES[0])][0].last,
        ),
        // Past every record of the table in the second segment and into
        // the newest.
        (
            REGIONS[2],
            TABLES[1],
            in_newest[&(REGIONS[2], TABLES[1])][0].last,
        ),
        // Inside a batch of the newest segment.
        in_newest
            .iter()
            .filter(|(table, _)| table.1 == TABLES[0] && table.0 != REGIONS[1])
            .find_map(|(table, batches)| {
                let batch = batches.iter().find(|w| w.last > w.first)?;
                Some((table.0, table.1, batch.first))
            })
            .expect("a batch of several entries"),
    ];
    for (region, table, up_to) in deletes {
        assert_ne!((region, table), only_first);
        wal.mark_delete_entries_up_to(region, table, up_to).unwrap();
    }
    assert_eq!(wal.statistics().segments_deleted, 0);
    wal.close().unwrap();
    drop(wal);

    let pristine = read_image(dir.path(), writer.written);
    check_pristine(&pristine, only_first);
    pristine
}

/// Reads the data dir's files and their layouts.
fn read_image(dir: &Path, written: BTreeMap<(u64, u64), (u64, Vec<u8>)>) -> Pristine {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let (mut files, mut segments, mut meta_file) = (Vec::new(), Vec::new(), None);
    for name in names {
        let bytes = fs::read(dir.join(&name)).unwrap();
        let layout = if name == LOCK_FILE {
            Layout::Lock
        } else if name == META_FILE {
            meta_file = Some(files.len());
            Layout::Meta(meta_layout(&bytes))
        } else {
            assert!(name.ends_with(".seg"), "unexpected file {name}");
            segments.push(files.len());
            Layout::Segment(layout(&bytes))
        };
        files.push(ImageFile {
            name,
            bytes,
            layout,
        });
    }
    Pristine {
        files,
        segments,
        meta_file: meta_file.expect("the data dir has a META log"),
        written,
    }
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
            region_id: r.region_id(),
            table_id: r.table_id(),
            first: r.first_sequence(),
            last: r.last_sequence(),
            durable_offset: r.header().meta.durable_offset,
        })
        .collect();
    assert!(matches!(scanner.end(), Some(ScanEnd::Clean { .. })));
    records
}

/// The records of the META log, read with the format's own decoder.
fn meta_layout(bytes: &[u8]) -> Vec<MetaRecordSpan> {
    let log = decode_meta_log(bytes).unwrap();
    assert_eq!(
        log.end,
        MetaLogEnd::Clean {
            len: bytes.len() as u64
        }
    );
    let mut entries = log.entries.into_iter();
    let mut records = Vec::new();
    let mut at = META_LOG_HEADER_LEN;
    while at < bytes.len() {
        let count_at = at + META_RECORD_HEADER_LEN - 4;
        let count = u32::from_le_bytes(bytes[count_at..count_at + 4].try_into().unwrap());
        let end = at + META_RECORD_HEADER_LEN + count as usize * META_ENTRY_LEN;
        records.push(MetaRecordSpan {
            offset: at as u64,
            end: end as u64,
            entries: entries.by_ref().take(count as usize).collect(),
        });
        at = end;
    }
    assert_eq!(entries.next(), None);
    records
}

/// The image is what the sweep needs (see the module docs): a sealed
/// segment with several records of every region, deleted and live, and a
/// zero tail; a sealed segment holding one record and no zero tail; the
/// newest segment with several records of every region and a zero tail;
/// a META log of a snapshot record and three delete records; every entry
/// still on disk in exactly one record, and every entry no longer on disk
/// deleted; a table whose largest number only META holds.
fn check_pristine(p: &Pristine, only_first: (u64, u64)) {
    assert_eq!(p.segments.len(), 3, "three segments");
    let meta = p.full_meta();
    for s in [0, 2] {
        let segment = p.segment(s);
        assert_eq!(segment.bytes.len() as u64, SEGMENT_SIZE);
        assert!(segment.records().len() >= 8, "{:?}", segment.records());
        assert!(segment.data_end() < SEGMENT_SIZE / 2);
        let regions: BTreeSet<u64> = segment.records().iter().map(|r| r.region_id).collect();
        assert_eq!(regions.len(), REGIONS.len(), "segment {s}: {regions:?}");
    }
    let sealed = p.segment(0).records();
    let is_deleted = |r: &RecordSpan| r.last <= meta.mark((r.region_id, r.table_id));
    assert!(sealed.iter().any(is_deleted));
    assert!(sealed.iter().any(|r| !is_deleted(r)));
    assert_eq!(p.segment(1).records().len(), 1);
    assert_eq!(p.segment(1).data_end(), p.segment(1).bytes.len() as u64);
    assert!(p.segment(1).data_end() > SEGMENT_SIZE);
    let newest = p.segment(2).records();
    assert!(newest.iter().any(is_deleted));
    assert!(
        newest
            .iter()
            .any(|r| r.first <= meta.mark((r.region_id, r.table_id)) && !is_deleted(r)),
        "a delete inside a batch"
    );

    let records = p.meta_records();
    assert_eq!(records.len(), 4, "{records:?}");
    assert!(records[0].entries.len() >= 2 * REGIONS.len() * TABLES.len());
    for record in &records[1..] {
        assert!(
            matches!(record.entries[..], [MetaEntry::DeleteMark { .. }]),
            "{record:?}"
        );
    }
    assert!(p.written.values().any(|(_, bytes)| bytes.is_empty()));

    let mut on_disk = BTreeSet::new();
    for s in 0..p.segments.len() {
        for r in p.segment(s).records() {
            for sequence in r.first..=r.last {
                assert_eq!(p.written[&(r.region_id, sequence)].0, r.table_id);
                assert!(on_disk.insert((r.region_id, sequence)));
            }
        }
    }
    for (&(region, sequence), &(table, _)) in &p.written {
        assert!(
            on_disk.contains(&(region, sequence)) || sequence <= meta.mark((region, table)),
            "entry {sequence} of region {region} is gone but not deleted"
        );
    }
    assert!(meta.max(only_first) > 0);
    assert!(
        (0..3).all(|s| p
            .segment(s)
            .records()
            .iter()
            .all(|r| (r.region_id, r.table_id) != only_first)),
        "only META proves the largest number of {only_first:?}"
    );
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
    /// `META`'s header no longer decodes (or the file is shorter than it).
    MetaHeader,
    /// The META record at `offset` no longer verifies, and a later one
    /// does: it had been synced. The `kept` records before it are intact.
    MetaCorrupt { offset: u64, kept: usize },
    /// The META record at `offset` no longer verifies and none after it
    /// does: a torn last record, as a crash during an append leaves.
    MetaTorn { offset: u64, kept: usize },
    /// `META` was cut exactly after its first `kept` records: it reads as
    /// a log that ends there.
    MetaCut { kept: usize },
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
            Damage::MetaHeader
            | Damage::MetaCorrupt { .. }
            | Damage::MetaTorn { .. }
            | Damage::MetaCut { .. } => None,
            Damage::Header { segment } => Some((*segment, 0..p.segment(*segment).records().len())),
            Damage::Corrupt { segment, lost, .. }
            | Damage::Torn { segment, lost, .. }
            | Damage::Cut { segment, lost, .. } => Some((*segment, lost.clone())),
        }
    }

    /// How many records of `META` a reader that gets past the damage uses:
    /// all of them when the damage is elsewhere, none (`None`) when its
    /// header is damaged.
    fn meta_kept(&self, p: &Pristine) -> Option<usize> {
        match *self {
            Damage::MetaHeader => None,
            Damage::MetaCorrupt { kept, .. }
            | Damage::MetaTorn { kept, .. }
            | Damage::MetaCut { kept } => Some(kept),
            _ => Some(p.meta_records().len()),
        }
    }
}

/// Classifies `m` from the pristine layout and the rules of docs/FORMAT.md
/// ("Reading a segment: clean end, torn tail, corruption", and "Meta log").
fn damage(p: &Pristine, m: Mutation) -> Damage {
    if m.file() == p.meta_file {
        return meta_damage(p, m);
    }
    let segment = p
        .segments
        .iter()
        .position(|&s| s == m.file())
        .expect("only META and segments are mutated");
    let file = &p.files[m.file()];
    let records = file.records();
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

/// Classifies a mutation of `META`: every byte is under a CRC, a record
/// that does not verify ends the log, and it is damage only if a valid
/// record follows it (docs/FORMAT.md, "Meta log").
fn meta_damage(p: &Pristine, m: Mutation) -> Damage {
    let records = p.meta_records();
    let header_len = META_LOG_HEADER_LEN as u64;
    match m {
        Mutation::Flip { bit, .. } => {
            let byte = bit / 8;
            if byte < header_len {
                return Damage::MetaHeader;
            }
            let kept = records
                .iter()
                .position(|r| (r.offset..r.end).contains(&byte))
                .expect("META is records back to back");
            let offset = records[kept].offset;
            if kept + 1 == records.len() {
                Damage::MetaTorn { offset, kept }
            } else {
                Damage::MetaCorrupt { offset, kept }
            }
        }
        Mutation::Truncate { len, .. } => {
            if len < header_len {
                return Damage::MetaHeader;
            }
            let kept = records.iter().take_while(|r| r.end <= len).count();
            match records.get(kept) {
                Some(cut) if cut.offset < len => Damage::MetaTorn {
                    offset: cut.offset,
                    kept,
                },
                _ => Damage::MetaCut { kept },
            }
        }
    }
}

/// The error an open must fail with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    MetaInvalid,
    MetaCorrupted { offset: u64 },
    MetaTorn { offset: u64 },
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
    let skip = mode == RecoveryMode::SkipCorrupted;
    match *damage {
        // Without its header nothing of META can be read: deletes would
        // come back and sequence numbers could be reused. Every mode
        // refuses.
        Damage::MetaHeader => Some(Refusal::MetaInvalid),
        Damage::MetaCorrupt { offset, .. } => (!skip).then_some(Refusal::MetaCorrupted { offset }),
        // What a crash during an append leaves: dropped, except that
        // `Strict` refuses it, as it refuses a segment's torn tail. A cut
        // exactly between two records leaves nothing to tell.
        Damage::MetaTorn { offset, .. } => {
            (mode == RecoveryMode::Strict).then_some(Refusal::MetaTorn { offset })
        }
        Damage::MetaCut { .. } => None,
        Damage::Cut { segment, len, .. } => {
            (!skip).then_some(Refusal::WrongLength { segment, len })
        }
        Damage::Header { segment } => Some(Refusal::Header { segment }),
        Damage::Corrupt {
            segment, offset, ..
        } => (!skip).then_some(Refusal::Corrupted { segment, offset }),
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

/// A problem `inspect` reports: (file, offset, is damage).
type Found = (PathBuf, Option<u64>, bool);

/// The problems `inspect` must report, sorted.
fn problems(p: &Pristine, dir: &Path, damage: &Damage) -> Vec<Found> {
    let path = |segment: usize| dir.join(&p.segment(segment).name);
    let meta = dir.join(META_FILE);
    let newest = |segment: usize| segment + 1 == p.segments.len();
    let mut found = match *damage {
        Damage::MetaHeader => vec![(meta, Some(0), true)],
        Damage::MetaCorrupt { offset, .. } => vec![(meta, Some(offset), true)],
        Damage::MetaTorn { offset, .. } => vec![(meta, Some(offset), false)],
        Damage::MetaCut { .. } => vec![],
        Damage::Cut {
            segment, len, torn, ..
        } => {
            let mut found = vec![(path(segment), Some(len), true)];
            found.extend(torn.map(|offset| (path(segment), Some(offset), !newest(segment))));
            found
        }
        Damage::Header { segment } => vec![(path(segment), Some(0), true)],
        Damage::Corrupt {
            segment, offset, ..
        } => vec![(path(segment), Some(offset), true)],
        Damage::Torn {
            segment, offset, ..
        } => vec![(path(segment), Some(offset), !newest(segment))],
    };
    found.sort();
    found
}

/// Every record that survives, deleted or not, with its segment.
fn surviving_records<'a>(
    p: &'a Pristine,
    lost: Option<&(usize, Range<usize>)>,
) -> Vec<(usize, &'a RecordSpan)> {
    let mut survivors = Vec::new();
    for segment in 0..p.segments.len() {
        for (i, record) in p.segment(segment).records().iter().enumerate() {
            if !lost.is_some_and(|(s, range)| *s == segment && range.contains(&i)) {
                survivors.push((segment, record));
            }
        }
    }
    survivors
}

/// An entry as a test sees it: (region, table, sequence, payload).
type Seen = (u64, u64, u64, Vec<u8>);

/// The entries that must survive: those of every surviving record above
/// `meta`'s delete marks, by region and sequence.
fn expected_entries(
    p: &Pristine,
    lost: Option<&(usize, Range<usize>)>,
    meta: &MetaView,
) -> Vec<Seen> {
    let mut expected = Vec::new();
    for (_, r) in surviving_records(p, lost) {
        let mark = meta.mark((r.region_id, r.table_id));
        for sequence in r.first.max(mark.saturating_add(1))..=r.last {
            let (table_id, payload) = &p.written[&(r.region_id, sequence)];
            assert_eq!(*table_id, r.table_id);
            expected.push((r.region_id, r.table_id, sequence, payload.clone()));
        }
    }
    expected.sort();
    expected
}

/// Writes the image into `dir` (replacing whatever is there) with `m`
/// applied.
fn materialize(p: &Pristine, dir: &Path, m: Mutation) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            fs::remove_dir_all(entry.path()).unwrap();
        } else {
            fs::remove_file(entry.path()).unwrap();
        }
    }
    for (index, file) in p.files.iter().enumerate() {
        let mut bytes = file.bytes.clone();
        if index == m.file() {
            m.apply(&mut bytes);
        }
        fs::write(dir.join(&file.name), bytes).unwrap();
    }
}

fn drain(mut iter: EntryIter, region_id: u64) -> Vec<Seen> {
    let mut out = Vec::new();
    while iter
        .next_batch(16, |e| {
            out.push((region_id, e.table_id, e.sequence, e.payload.to_vec()));
        })
        .unwrap()
        > 0
    {}
    out
}

/// Checks a damaged image in `dir`: inspect and dump, then an open in each
/// recovery mode (each on a fresh copy, since an open may cut a torn
/// tail, remove a dead segment or rewrite META).
fn check(p: &Pristine, dir: &Path, m: Mutation, image: Image) {
    let damage = damage(p, m);
    let context = format!("{m:?} ({damage:?})");
    materialize(p, dir, m);
    check_read_only_tools(p, dir, &damage, image, &context);
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

/// `inspect` reports exactly the expected problems, the delete marks and
/// records that survive; `dump_table` returns exactly the intact entries
/// above the surviving marks, of every table the damage touches and of one
/// more (which one turns with `image`).
fn check_read_only_tools(p: &Pristine, dir: &Path, damage: &Damage, image: Image, context: &str) {
    let Image { number: image } = image;
    let report = inspect(dir).unwrap_or_else(|e| panic!("{context}: inspect failed: {e}"));
    let mut found: Vec<Found> = report
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
    found.sort();
    let expected = problems(p, dir, damage);
    assert_eq!(found, expected, "{context}");
    assert_eq!(
        report.is_clean(),
        expected.iter().all(|e| !e.2),
        "{context}"
    );

    // The tools read META as far as it verifies, and every record of the
    // segments that verifies.
    let meta = p.meta_view(damage.meta_kept(p));
    let marks: BTreeMap<(u64, u64), (u64, u64)> = report
        .tables
        .iter()
        .map(|(&key, t)| (key, (t.max_sequence, t.deleted_up_to)))
        .collect();
    assert_eq!(marks, meta.tables, "{context}: META as inspect read it");
    let lost = damage.lost(p);
    let survivors = surviving_records(p, lost.as_ref());
    assert_eq!(report.segments.len(), p.segments.len(), "{context}");
    for (s, segment) in report.segments.iter().enumerate() {
        assert_eq!(segment.path, dir.join(&p.segment(s).name), "{context}");
        let records = survivors.iter().filter(|(of, _)| *of == s).count() as u64;
        assert_eq!(
            segment.records, records,
            "{context}: records of segment {s}"
        );
    }
    // Every table whose entries the damage changes is dumped, and one
    // other, a different one from image to image: a walk of every file
    // per table would make the sweep several times slower.
    let expected = expected_entries(p, lost.as_ref(), &meta);
    let undamaged = expected_entries(p, None, &p.full_meta());
    let of_table = |entries: &[Seen], (region_id, table_id): (u64, u64)| -> Vec<Seen> {
        entries
            .iter()
            .filter(|e| (e.0, e.1) == (region_id, table_id))
            .cloned()
            .collect()
    };
    let other = tables().nth(image % (REGIONS.len() * TABLES.len()));
    for (region_id, table_id) in tables() {
        let want = of_table(&expected, (region_id, table_id));
        if Some((region_id, table_id)) != other
            && want == of_table(&undamaged, (region_id, table_id))
        {
            continue;
        }
        let mut dumped = Vec::new();
        dump_table(dir, region_id, table_id, 0, u64::MAX, |e| {
            dumped.push((region_id, e.table_id, e.sequence, e.payload.to_vec()));
        })
        .unwrap_or_else(|e| panic!("{context}: dump failed: {e}"));
        assert_eq!(
            dumped, want,
            "{context}: dump of region {region_id} table {table_id}"
        );
    }
}

/// An image that opened returns exactly the intact live entries, rebuilt
/// every sequence number from what survived, and kept exactly the
/// segments with a live entry.
fn check_opened(p: &Pristine, wal: &SegmentManager, damage: &Damage, context: &str) {
    let lost = damage.lost(p);
    let meta = p.meta_view(damage.meta_kept(p));
    let survivors = surviving_records(p, lost.as_ref());

    let mut next: BTreeMap<u64, u64> = BTreeMap::new();
    let mut raise = |region: u64, to: u64| {
        let n = next.entry(region).or_insert(1);
        *n = (*n).max(to);
    };
    for (&(region, _), &(max, _)) in &meta.tables {
        raise(region, max + 1);
    }
    for (&region, &floor) in &meta.floors {
        raise(region, floor);
    }
    for (_, r) in &survivors {
        raise(r.region_id, r.last + 1);
    }
    let statistics = wal.statistics();
    assert_eq!(
        statistics.regions,
        next.into_iter().collect::<Vec<_>>(),
        "{context}: next sequence numbers"
    );
    let live_segments = (0..p.segments.len())
        .filter(|&s| {
            survivors
                .iter()
                .any(|(of, r)| *of == s && r.last > meta.mark((r.region_id, r.table_id)))
        })
        .count() as u64;
    assert_eq!(
        statistics.segments_live, live_segments,
        "{context}: segments with a live entry"
    );

    let expected = expected_entries(p, lost.as_ref(), &meta);
    for region_id in REGIONS {
        let want: Vec<_> = expected
            .iter()
            .filter(|e| e.0 == region_id)
            .cloned()
            .collect();
        let mut got = drain(wal.scan(region_id).unwrap(), region_id);
        // A scan is in sequence order; `want` too, within a region.
        assert_eq!(
            got.len(),
            want.len(),
            "{context}: scan of region {region_id}"
        );
        got.sort();
        assert_eq!(got, want, "{context}: scan of region {region_id}");
    }
    for (region_id, table_id) in tables() {
        let want: Vec<_> = expected
            .iter()
            .filter(|e| (e.0, e.1) == (region_id, table_id))
            .cloned()
            .collect();
        let got = drain(
            wal.read(region_id, table_id, 0, u64::MAX).unwrap(),
            region_id,
        );
        assert_eq!(
            got, want,
            "{context}: read of region {region_id} table {table_id}"
        );
        let max = survivors
            .iter()
            .filter(|(_, r)| (r.region_id, r.table_id) == (region_id, table_id))
            .map(|(_, r)| r.last)
            .max()
            .unwrap_or(0);
        assert_eq!(
            wal.sequence_num(region_id, table_id).unwrap(),
            max.max(meta.max((region_id, table_id))),
            "{context}: sequence_num of region {region_id} table {table_id}"
        );
    }
}

/// The open failed with the expected error, naming the file (and the
/// offset, where the damage has one).
fn check_refusal(p: &Pristine, dir: &Path, refusal: Refusal, err: &Error, context: &str) {
    use segwal_segment::Error as SegmentError;
    let segment_path = |segment: usize| dir.join(&p.segment(segment).name);
    let (path, offset) = match refusal {
        Refusal::MetaInvalid => (dir.join(META_FILE), None),
        Refusal::MetaCorrupted { offset } | Refusal::MetaTorn { offset } => {
            (dir.join(META_FILE), Some(offset))
        }
        Refusal::Header { segment } => (segment_path(segment), None),
        Refusal::Corrupted { segment, offset }
        | Refusal::TornTail { segment, offset }
        | Refusal::SealedDamaged { segment, offset }
        | Refusal::WrongLength {
            segment,
            len: offset,
        } => (segment_path(segment), Some(offset)),
    };
    let (at, found_offset) = match (refusal, err) {
        (Refusal::MetaInvalid, Error::MetaInvalid { path, .. }) => (path, None),
        (Refusal::MetaCorrupted { .. }, Error::MetaCorrupted { path, offset, .. })
        | (Refusal::MetaTorn { .. }, Error::MetaTorn { path, offset }) => (path, Some(*offset)),
        (
            Refusal::Header { .. },
            Error::Segment {
                source: SegmentError::BadHeader { path, .. },
            },
        ) => (path, None),
        (
            Refusal::Corrupted { .. },
            Error::Segment {
                source: SegmentError::Corrupted { path, offset, .. },
            },
        )
        | (
            Refusal::TornTail { .. },
            Error::Segment {
                source: SegmentError::TornTail { path, offset, .. },
            },
        )
        | (Refusal::SealedDamaged { .. }, Error::SealedSegmentDamaged { path, offset, .. }) => {
            (path, Some(*offset))
        }
        (
            Refusal::WrongLength { .. },
            Error::Segment {
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
    let Layout::Segment(records) = &f.layout else {
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
fn bits(p: &Pristine, file: usize, dense: impl IntoIterator<Item = Range<u64>>) -> Vec<u64> {
    if full() {
        return (0..p.files[file].bytes.len() as u64 * 8).collect();
    }
    let mut bits: BTreeSet<u64> = offsets(p, file)
        .into_iter()
        .map(|byte| byte * 8 + byte % 8)
        .collect();
    for range in dense {
        bits.extend(range.start * 8..range.end * 8);
    }
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

/// Which image of its sweep [`check`] checks, and how.
#[derive(Debug, Clone, Copy)]
struct Image {
    /// Its number in the sweep.
    number: usize,
}

/// Runs `check` over `mutations` and reports how many images it checked.
fn sweep(what: &str, mutations: impl IntoIterator<Item = Mutation>) {
    let p = pristine();
    let dir = scratch();
    let started = std::time::Instant::now();
    let mut images = 0;
    for m in mutations {
        let image = Image { number: images };
        check(p, dir.path(), m, image);
        images += 1;
    }
    eprintln!(
        "{what}: {images} damaged images checked in {:.1?} (full run: {})",
        started.elapsed(),
        full()
    );
}

fn flips(
    file: usize,
    dense: impl IntoIterator<Item = Range<u64>>,
) -> impl Iterator<Item = Mutation> {
    bits(pristine(), file, dense)
        .into_iter()
        .map(move |bit| Mutation::Flip { file, bit })
}

fn truncations(file: usize) -> impl Iterator<Item = Mutation> {
    lengths(pristine(), file)
        .into_iter()
        .map(move |len| Mutation::Truncate { file, len })
}

/// Proves that every bit flipped in a sealed segment of the shared log
/// (header, records of every region and zero tail; a segment with many
/// records and one with a single record filling it) is reported by
/// `inspect` as damage at the right file and offset, refused by `Strict`
/// and `TolerateTornTail`, and skipped by `SkipCorrupted`, which returns
/// every other entry of every region unaltered.
#[test]
fn every_bit_flip_in_a_sealed_segment_is_detected() {
    let p = pristine();
    // Every bit of the header and of the first record, besides the sample.
    let first = &p.segment(0).records()[0];
    let mutations = flips(p.segments[0], Some(0..first.end)).chain(flips(p.segments[1], None));
    sweep("sealed segment bit flips", mutations);
}

/// Proves that every bit flipped in the newest segment is detected: in its
/// last record or its zero tail as a torn tail (a note, refused only by
/// `Strict`, cut by the others), anywhere else as damage, exactly as in a
/// sealed segment.
#[test]
fn every_bit_flip_in_the_newest_segment_is_detected() {
    let p = pristine();
    sweep("newest segment bit flips", flips(p.segments[2], None));
}

/// Proves that every bit flipped in `META` is handled as docs/FORMAT.md
/// says: in its header, refused by every recovery mode naming the file
/// (without it, deletes would come back and numbers could be reused); in a
/// record followed by a valid one (synced data), reported and refused by
/// `Strict` and `TolerateTornTail` naming META and the record's offset,
/// while `SkipCorrupted` uses the records before it; in the last record, a
/// torn tail, dropped in every mode with exactly that record's delete mark.
#[test]
fn every_bit_flip_in_meta_is_handled() {
    let p = pristine();
    let records = p.meta_records();
    // Every bit of the header and of the last record (where damage turns
    // from corruption to a torn tail), besides the sample.
    let last = records.last().unwrap();
    let dense = [0..META_LOG_HEADER_LEN as u64, last.offset..last.end];
    sweep("META bit flips", flips(p.meta_file, dense));
}

/// Proves that cutting any segment at any length is detected and handled
/// as documented: inside the header, refused; anywhere else, reported by
/// `inspect` at the cut and refused by `Strict` and `TolerateTornTail`,
/// while `SkipCorrupted` returns the records before the cut; and the
/// entries returned are always intact.
#[test]
fn every_truncation_of_every_segment_is_handled() {
    let p = pristine();
    let mutations = p.segments.iter().flat_map(|&file| truncations(file));
    sweep("segment truncations", mutations);
}

/// Proves that cutting `META` at any length is handled as documented:
/// inside its header, refused by every mode; inside a record, a torn tail,
/// dropped with the records from there on; exactly at a record boundary,
/// read as a log that ends there (nothing can tell); and the entries
/// returned always follow the delete marks that survive.
#[test]
fn every_truncation_of_meta_is_handled() {
    let p = pristine();
    sweep("META truncations", truncations(p.meta_file));
}

/// Proves that a sealed segment cut exactly at a record boundary is
/// reported as damage and refused by strict recovery, naming the cut.
///
/// The records alone cannot show such a cut: the segment ends cleanly
/// after fewer records. It is the capacity in the segment header (format
/// version 2 on) that tells.
#[test]
fn a_sealed_segment_cut_at_a_record_boundary_is_reported() {
    let p = pristine();
    let file = p.segments[0];
    let records = p.files[file].records();
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

/// Proves that "the newest segment" is judged per stream of the shared
/// log: a damaged last record in the newest segment of one stream is a
/// torn tail (a note for `inspect`, cut by `TolerateTornTail`, refused by
/// `Strict`) even though another stream has a newer segment, while the
/// same damage in a sealed segment of the other stream is damage.
#[test]
fn a_torn_tail_is_judged_by_the_newest_segment_of_its_stream() {
    let dir = scratch();
    let config = |mode: RecoveryMode| ManagerConfig {
        segment_size_bytes: SEGMENT_SIZE,
        streams: 2,
        recovery_mode: mode,
        ..ManagerConfig::new(dir.path())
    };
    // Region 0 writes stream 0, region 1 stream 1. Stream 0 rolls over, so
    // its newest segment is the newest of the data dir; stream 1 keeps one
    // segment, older than that.
    let wal = SegmentManager::open(config(RecoveryMode::TolerateTornTail)).unwrap();
    let mut written: BTreeMap<u64, Vec<(u64, Vec<u8>)>> = BTreeMap::new();
    for i in 0..60usize {
        let region = u64::from(i % 6 == 5);
        let entry = payload(region, 1, i).repeat(8);
        let last = wal.write(region, 1, &[entry.as_slice()]).unwrap();
        written.entry(region).or_default().push((last, entry));
    }
    wal.close().unwrap();
    drop(wal);
    let image = read_image(dir.path(), BTreeMap::new());
    let streams: Vec<u64> = image
        .segments
        .iter()
        .map(|&f| {
            SegmentHeader::decode(&image.files[f].bytes)
                .unwrap()
                .stream_id
        })
        .collect();
    let newest_of = |stream: u64| streams.iter().rposition(|&s| s == stream).unwrap();
    let (sealed, torn) = (0, newest_of(1));
    assert_eq!(streams[sealed], 0);
    assert!(torn < newest_of(0), "{streams:?}");
    assert!(image.segment(torn).records().len() >= 2);

    // The last record of each, damaged in turn.
    for (segment, is_newest) in [(torn, true), (sealed, false)] {
        let file = image.segments[segment];
        let last = image.segment(segment).records().last().unwrap().clone();
        let m = Mutation::Flip {
            file,
            bit: (last.offset + RECORD_HEADER_LEN as u64 + 2) * 8,
        };
        let context = format!("segment {segment}, newest of its stream: {is_newest}");
        let path = dir.path().join(&image.files[file].name);
        materialize(&image, dir.path(), m);
        let report = inspect(dir.path()).unwrap();
        let found: Vec<Found> = report
            .problems()
            .map(|p| (p.path.clone(), p.offset, p.is_damage))
            .collect();
        assert_eq!(
            found,
            [(path.clone(), Some(last.offset), !is_newest)],
            "{context}"
        );
        let err = SegmentManager::open(config(RecoveryMode::Strict)).unwrap_err();
        assert!(
            err.to_string().contains(&format!("offset {}", last.offset)),
            "{context}: {err}"
        );
        materialize(&image, dir.path(), m);
        let opened = SegmentManager::open(config(RecoveryMode::TolerateTornTail));
        if !is_newest {
            let err = opened.unwrap_err();
            assert!(
                matches!(&err, Error::SealedSegmentDamaged { path: at, offset, .. }
                    if *at == path && *offset == last.offset),
                "{context}: {err}"
            );
            continue;
        }
        let wal = opened.unwrap_or_else(|e| panic!("{context}: {e}"));
        for (region, entries) in &written {
            let want: Vec<Seen> = entries
                .iter()
                .filter(|(sequence, _)| *region == 0 || *sequence < last.first)
                .map(|(sequence, entry)| (*region, 1, *sequence, entry.clone()))
                .collect();
            let got = drain(wal.read(*region, 1, 0, u64::MAX).unwrap(), *region);
            assert_eq!(got, want, "{context}: region {region}");
        }
        wal.close().unwrap();
    }
}
