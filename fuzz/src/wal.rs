//! A real [`SegmentManager`] in a temporary data dir next to an in-memory
//! reference model of what it must hold, with one method per operation
//! that runs the operation on both and checks that they agree.
//!
//! The model is the SPEC's semantics written the obvious way: per region,
//! a map from sequence number to `(table, payload)` of the live entries,
//! the next sequence number, and per table the largest sequence number
//! assigned and the delete mark.
//!
//! Every region shares the data dir's one log (split into 1 to 3 streams,
//! as the run's settings say), so the files on disk are checked for the
//! log as a whole: the data dir holds `LOCK`, `META`, the segments and at
//! most one spare per stream, no directory; and every sealed segment
//! holds a live entry of some region.

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use segwal_format::{SEGMENT_HEADER_LEN, Scanner, SegmentHeader};
use segwal_manager::{
    Compression, EntryIter, Error, LOCK_FILE, META_FILE, ManagerConfig, SegmentManager, SyncMode,
};
use segwal_segment::parse_segment_file_name;
use tempfile::TempDir;

/// The region ids the operations use: few, so that operations meet, and
/// including the largest id. With up to 3 streams, every stream gets a
/// region, and some streams two.
pub const REGIONS: [u64; 4] = [0, 1, 2, u64::MAX];
/// The table ids the operations use, likewise.
pub const TABLES: [u64; 3] = [0, 7, u64::MAX];

/// Where data dirs go: tmpfs if there is one (`fdatasync` costs nothing
/// there, so syncing modes run fast), else the system's temporary dir.
fn scratch_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    }
}

fn scratch_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("segwal-fuzz-")
        .tempdir_in(scratch_root())
        .expect("cannot create a scratch dir")
}

/// The reference model.
#[derive(Debug, Default)]
struct Model {
    /// Per region: sequence number -> (table, payload) of each live entry.
    live: BTreeMap<u64, BTreeMap<u64, (u64, Vec<u8>)>>,
    /// Per region: the sequence number the next write must get.
    next: BTreeMap<u64, u64>,
    /// Per (region, table): the largest sequence number assigned.
    max: BTreeMap<(u64, u64), u64>,
    /// Per (region, table): entries up to this number are deleted.
    deleted_up_to: BTreeMap<(u64, u64), u64>,
}

impl Model {
    fn next(&self, region: u64) -> u64 {
        self.next.get(&region).copied().unwrap_or(1)
    }

    fn max(&self, region: u64, table: u64) -> u64 {
        self.max.get(&(region, table)).copied().unwrap_or(0)
    }

    /// The live entries of `table` in `[start, end]`, ascending.
    fn read(&self, region: u64, table: u64, start: u64, end: u64) -> Vec<(u64, Vec<u8>)> {
        if start > end {
            return Vec::new();
        }
        self.live.get(&region).map_or_else(Vec::new, |live| {
            live.range(start..=end)
                .filter(|(_, (t, _))| *t == table)
                .map(|(&seq, (_, payload))| (seq, payload.clone()))
                .collect()
        })
    }

    /// Every live entry of the region, ascending.
    fn scan(&self, region: u64) -> Vec<(u64, u64, Vec<u8>)> {
        self.live.get(&region).map_or_else(Vec::new, |live| {
            live.iter()
                .map(|(&seq, (table, payload))| (*table, seq, payload.clone()))
                .collect()
        })
    }

    /// Whether the entry is live (written and not deleted).
    fn is_live(&self, region: u64, table: u64, sequence: u64) -> bool {
        self.live
            .get(&region)
            .and_then(|live| live.get(&sequence))
            .is_some_and(|(t, _)| *t == table)
    }
}

/// Settings of one run, chosen by the fuzzer.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Size of a new segment file; small, so rollovers happen.
    pub segment_size_bytes: u64,
    /// The sync mode.
    pub sync_mode: SyncMode,
    /// The largest entry accepted.
    pub max_entry_size_bytes: u64,
    /// How many sealed segments stay open.
    pub cache_size: usize,
    /// How many streams the shared log has (region R writes stream
    /// R mod streams).
    pub streams: usize,
    /// How record bodies are compressed.
    pub compression: Compression,
}

impl Settings {
    /// Settings picked by four small numbers, each reduced modulo the
    /// number of choices; `cache` picks the cache size and the stream
    /// count, `max_entry` the entry limit and the compression (so that
    /// inputs keep their shape).
    pub fn pick(segment_size: u8, sync_mode: u8, max_entry: u8, cache: u8) -> Settings {
        Settings {
            segment_size_bytes: [4 << 10, 8 << 10, 16 << 10][usize::from(segment_size % 3)],
            sync_mode: match sync_mode % 3 {
                0 => SyncMode::Always,
                1 => SyncMode::Never,
                _ => SyncMode::Interval(Duration::from_millis(2)),
            },
            max_entry_size_bytes: [512, 2 << 10, 8 << 10][usize::from(max_entry % 3)],
            cache_size: usize::from(cache % 3) + 1,
            streams: usize::from(cache / 3 % 3) + 1,
            compression: Compression::ALL[usize::from(max_entry / 3 % 3)],
        }
    }

    fn config(&self, dir: &Path) -> ManagerConfig {
        ManagerConfig {
            segment_size_bytes: self.segment_size_bytes,
            sync_mode: self.sync_mode,
            max_entry_size_bytes: self.max_entry_size_bytes,
            cache_size: self.cache_size,
            streams: self.streams,
            compression: self.compression,
            ..ManagerConfig::new(dir)
        }
    }
}

/// A read or scan whose iterator is kept across later operations.
#[derive(Debug)]
struct Held {
    iter: EntryIter,
    /// What it has yet to yield: the model's answer when it was created
    /// (an iterator is a snapshot; later writes, deletes, closes and
    /// crashes do not change it).
    expected: VecDeque<(u64, u64, Vec<u8>)>,
    /// The call that created it, for messages.
    call: String,
}

/// A WAL and its model, checked against each other after every operation.
#[derive(Debug)]
pub struct Harness {
    settings: Settings,
    /// At most one iterator kept open across operations.
    held: Option<Held>,
    /// The data dir; replaced by a copy at each simulated crash.
    dir: TempDir,
    wal: Option<SegmentManager>,
    model: Model,
    /// Entries written so far; makes every payload distinct.
    written: u64,
}

impl Harness {
    /// A fresh, empty WAL with `settings`.
    pub fn new(settings: Settings) -> Harness {
        let dir = scratch_dir();
        let wal = SegmentManager::open(settings.config(dir.path())).expect("opening an empty dir");
        Harness {
            settings,
            held: None,
            dir,
            wal: Some(wal),
            model: Model::default(),
            written: 0,
        }
    }

    /// The sequence number the model expects the region's next write to get.
    pub fn next_sequence(&self, region: u64) -> u64 {
        self.model.next(region)
    }

    /// The largest sequence number the model has for the table, 0 if none.
    pub fn max_sequence(&self, region: u64, table: u64) -> u64 {
        self.model.max(region, table)
    }

    fn wal(&self) -> &SegmentManager {
        self.wal
            .as_ref()
            .expect("the WAL is open between operations")
    }

    /// The payload of the next entry: `size` bytes, distinct from every
    /// other payload of the run (for sizes of 8 bytes and more).
    fn payload(&mut self, size: usize) -> Vec<u8> {
        self.written += 1;
        self.written
            .to_le_bytes()
            .into_iter()
            .cycle()
            .take(size)
            .collect()
    }

    /// Writes a batch of entries of the given sizes. It must fail exactly
    /// when the batch is empty or an entry is over the maximum, using no
    /// sequence number; otherwise it gets the region's next numbers.
    pub fn write(&mut self, region: u64, table: u64, sizes: &[usize]) {
        let entries: Vec<Vec<u8>> = sizes.iter().map(|&size| self.payload(size)).collect();
        let result = self.wal().write(region, table, &entries);
        let max_entry = self.settings.max_entry_size_bytes;
        if entries.is_empty() {
            assert!(
                matches!(result, Err(Error::EmptyBatch { .. })),
                "{result:?}"
            );
        } else if entries.iter().any(|e| e.len() as u64 > max_entry) {
            assert!(
                matches!(result, Err(Error::EntryTooLarge { .. })),
                "{result:?}"
            );
        } else {
            let last = result.unwrap_or_else(|e| panic!("write to {region}/{table}: {e}"));
            let first = self.model.next(region);
            // The SPEC asks only for increasing numbers; ARCHITECTURE.md
            // promises more (a refused batch uses no number, recovery
            // restores the next number exactly), and so does the model.
            assert_eq!(
                last,
                first + entries.len() as u64 - 1,
                "write to {region}/{table} got the wrong sequence numbers"
            );
            let live = self.model.live.entry(region).or_default();
            for (seq, payload) in (first..=last).zip(entries) {
                live.insert(seq, (table, payload));
            }
            self.model.next.insert(region, last + 1);
            self.model.max.insert((region, table), last);
        }
        self.check_region(region);
    }

    /// Reads `[start, end]` of a table, `batch` entries per `next_batch`.
    pub fn read(&mut self, region: u64, table: u64, start: u64, end: u64, batch: usize) {
        let got = drain(self.wal().read(region, table, start, end), batch);
        let got: Vec<(u64, Vec<u8>)> = got
            .into_iter()
            .map(|(t, seq, payload)| {
                assert_eq!(t, table, "a read of table {table} returned table {t}");
                (seq, payload)
            })
            .collect();
        let want = self.model.read(region, table, start, end);
        assert_eq!(got, want, "read {region}/{table} [{start}, {end}]");
        self.check_region(region);
    }

    /// Scans a region, `batch` entries per `next_batch`.
    pub fn scan(&mut self, region: u64, batch: usize) {
        let got = drain(self.wal().scan(region), batch);
        assert_eq!(got, self.model.scan(region), "scan of region {region}");
        self.check_region(region);
    }

    /// Asks for a table's sequence number.
    pub fn sequence_num(&mut self, region: u64, table: u64) {
        let got = self.wal().sequence_num(region, table).unwrap();
        assert_eq!(
            got,
            self.model.max(region, table),
            "sequence_num {region}/{table}"
        );
        self.check_region(region);
    }

    /// Deletes a table's entries up to `up_to`. If that raised the
    /// table's mark, every sealed segment left on disk must hold a live
    /// entry (of any region: the segments are shared).
    pub fn delete(&mut self, region: u64, table: u64, up_to: u64) {
        self.wal()
            .mark_delete_entries_up_to(region, table, up_to)
            .unwrap_or_else(|e| panic!("delete {region}/{table} up to {up_to}: {e}"));
        // Clamped to the table's largest number, so later writes stay.
        let mark = up_to.min(self.model.max(region, table));
        let old = self.model.deleted_up_to.entry((region, table)).or_default();
        let raised = mark > *old;
        if raised {
            *old = mark;
            if let Some(live) = self.model.live.get_mut(&region) {
                live.retain(|&seq, (t, _)| *t != table || seq > mark);
            }
        }
        self.check_region(region);
        if raised {
            // The newest segment of each stream may be the one being
            // written, which stays.
            self.check_segment_files(true);
        }
    }

    /// Starts a read of `[start, end]` of `table`, or a scan of the region
    /// if `table` is `None`, and keeps the iterator (dropping any held
    /// before) for [`pull_held`](Harness::pull_held).
    pub fn hold(&mut self, region: u64, table: Option<u64>, start: u64, end: u64) {
        let (iter, expected, call) = match table {
            Some(table) => (
                self.wal().read(region, table, start, end),
                self.model
                    .read(region, table, start, end)
                    .into_iter()
                    .map(|(seq, payload)| (table, seq, payload))
                    .collect(),
                format!("read {region}/{table} [{start}, {end}]"),
            ),
            None => (
                self.wal().scan(region),
                self.model.scan(region).into(),
                format!("scan {region}"),
            ),
        };
        let iter = iter.unwrap_or_else(|e| panic!("{call}: {e}"));
        self.held = Some(Held {
            iter,
            expected,
            call,
        });
    }

    /// Takes up to `batch` entries from the held iterator, which must be
    /// the next ones of its snapshot, whatever happened since it was made.
    pub fn pull_held(&mut self, batch: usize) {
        let Some(held) = &mut self.held else {
            return;
        };
        let mut got = Vec::new();
        let handed = held
            .iter
            .next_batch(batch, |e| {
                got.push((e.table_id, e.sequence, e.payload.to_vec()))
            })
            .unwrap_or_else(|e| panic!("held {}: next_batch: {e}", held.call));
        assert_eq!(
            handed,
            got.len(),
            "held {}: next_batch miscounted",
            held.call
        );
        assert!(
            handed <= batch,
            "held {}: handed out more than asked",
            held.call
        );
        assert!(
            handed > 0 || held.expected.is_empty(),
            "held {}: ended early, {} entries short",
            held.call,
            held.expected.len()
        );
        let want: Vec<_> = held
            .expected
            .drain(..handed.min(held.expected.len()))
            .collect();
        assert_eq!(got, want, "held {}", held.call);
    }

    /// Closes a region; its next use opens it again.
    pub fn close_region(&mut self, region: u64) {
        self.wal()
            .close_region(region)
            .unwrap_or_else(|e| panic!("close_region {region}: {e}"));
    }

    /// Closes the WAL, checks that a closed WAL refuses calls, and opens
    /// it again.
    pub fn reopen(&mut self) {
        let wal = self.wal.take().expect("open");
        wal.close().expect("close");
        assert!(matches!(wal.close(), Err(Error::Closed)));
        assert!(matches!(wal.write(0, 0, &[b"x"]), Err(Error::Closed)));
        assert!(matches!(wal.read(0, 0, 0, u64::MAX), Err(Error::Closed)));
        assert!(matches!(wal.sequence_num(0, 0), Err(Error::Closed)));
        drop(wal);
        self.open();
    }

    /// Drops the WAL without closing it and opens the data dir again.
    pub fn drop_and_reopen(&mut self) {
        drop(self.wal.take());
        self.open();
    }

    /// A process crash: the data dir is copied as it is now, which is what
    /// `kill -9` would leave (a process crash loses no byte the process
    /// wrote, in any sync mode: the page cache keeps it). Between
    /// operations only background threads run: one preparing a spare
    /// segment, whose file may be caught half written or gone (recovery
    /// removes spares), and the interval sync, which writes nothing; the
    /// segments and `META` (appended to, or replaced by rename, only within
    /// an operation) are copied whole. The WAL is then dropped and the copy
    /// opened in its place: everything acknowledged must be there.
    pub fn crash(&mut self) {
        let image = scratch_dir();
        copy_tree(self.dir.path(), image.path());
        drop(self.wal.take());
        self.dir = image;
        self.open();
    }

    /// A second open of the data dir while the WAL holds it is refused.
    pub fn open_twice(&mut self) {
        let second = SegmentManager::open(self.settings.config(self.dir.path()));
        assert!(
            matches!(second, Err(Error::DataDirLocked { .. })),
            "a second open of a held data dir: {second:?}"
        );
    }

    /// Opens the data dir and checks the recovered WAL against the model:
    /// every region, and on disk no segment without a live entry (recovery
    /// removes them, and the spares it finds).
    fn open(&mut self) {
        let wal = SegmentManager::open(self.settings.config(self.dir.path()))
            .unwrap_or_else(|e| panic!("reopening the data dir: {e}"));
        self.wal = Some(wal);
        for region in REGIONS {
            self.check_region(region);
        }
        self.check_segment_files(false);
    }

    /// Checks a region against the model: the whole of each table, the
    /// scan, and each table's sequence number.
    fn check_region(&self, region: u64) {
        let wal = self.wal();
        for table in TABLES {
            let got: Vec<(u64, Vec<u8>)> = drain(wal.read(region, table, 0, u64::MAX), 64)
                .into_iter()
                .map(|(_, seq, payload)| (seq, payload))
                .collect();
            assert_eq!(
                got,
                self.model.read(region, table, 0, u64::MAX),
                "region {region} table {table}"
            );
            assert_eq!(
                wal.sequence_num(region, table).unwrap(),
                self.model.max(region, table),
                "sequence_num {region}/{table}"
            );
        }
        assert_eq!(
            drain(wal.scan(region), 64),
            self.model.scan(region),
            "scan {region}"
        );
    }

    /// Checks the data dir: it holds `LOCK`, `META`, segments and at most
    /// one spare per stream (being prepared, or prepared and renamed into
    /// place), and nothing else, no
    /// directory above all (a region costs no file of its own); every
    /// segment holds a live entry of some region, but, if
    /// `active_may_be_dead`, the newest of each stream, which may be the
    /// one being written.
    fn check_segment_files(&self, active_may_be_dead: bool) {
        let dir = self.dir.path();
        let mut segments = Vec::new();
        let mut spares = 0;
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = parse_segment_file_name(&name) {
                segments.push(id);
            } else if name.ends_with(".seg.spare") {
                spares += 1;
            } else {
                assert!(
                    name == LOCK_FILE || name == META_FILE,
                    "unexpected {name} in the data dir"
                );
            }
        }
        segments.sort_unstable();
        let mut files = Vec::new();
        for id in segments {
            let path = dir.join(segwal_segment::segment_file_name(id));
            let bytes = fs::read(&path).unwrap();
            let header = SegmentHeader::decode(&bytes).unwrap();
            assert_eq!(header.segment_id, id, "{}", path.display());
            files.push((id, path, bytes, header));
        }
        // A spare renamed into place once prepared: its stream's newest
        // segment, with no record yet (zeros past its header).
        let mut newest: BTreeMap<u64, u64> = BTreeMap::new();
        for (id, _, _, header) in &files {
            newest.insert(header.stream_id, *id);
        }
        files.retain(|(id, _, bytes, header)| {
            let untouched = bytes[SEGMENT_HEADER_LEN..].iter().all(|&b| b == 0);
            let prepared = untouched && newest.get(&header.stream_id) == Some(id);
            spares += usize::from(prepared);
            !prepared
        });
        assert!(
            spares <= self.settings.streams,
            "{spares} spares for {} streams",
            self.settings.streams
        );
        newest.clear();
        for (id, _, _, header) in &files {
            newest.insert(header.stream_id, *id);
        }
        for (id, path, bytes, header) in files {
            if active_may_be_dead && newest.get(&header.stream_id) == Some(&id) {
                continue;
            }
            let records = Scanner::new(
                &bytes[SEGMENT_HEADER_LEN..],
                SEGMENT_HEADER_LEN as u64,
                &header,
            );
            let live = records.into_iter().any(|record| {
                let region = record.region_id();
                let body = record.body().expect("a record the WAL wrote decompresses");
                body.entries()
                    .any(|e| self.model.is_live(region, e.table_id, e.sequence))
            });
            assert!(live, "{} holds no live entry but was kept", path.display());
        }
    }
}

impl Drop for Harness {
    /// Closes the WAL before the data dir goes.
    fn drop(&mut self) {
        if let Some(wal) = self.wal.take() {
            wal.close().expect("close at the end of the run");
        }
    }
}

/// Everything an iterator yields, as (table, sequence, payload), fetched
/// `batch` entries at a time; each call must hand out at most `batch`.
fn drain(iter: segwal_manager::Result<EntryIter>, batch: usize) -> Vec<(u64, u64, Vec<u8>)> {
    let mut iter = iter.unwrap_or_else(|e| panic!("read or scan: {e}"));
    let mut out = Vec::new();
    loop {
        let before = out.len();
        let handed = iter
            .next_batch(batch, |e| {
                out.push((e.table_id, e.sequence, e.payload.to_vec()))
            })
            .unwrap_or_else(|e| panic!("next_batch: {e}"));
        assert_eq!(handed, out.len() - before, "next_batch miscounted");
        assert!(handed <= batch, "next_batch handed out more than asked");
        if handed == 0 {
            return out;
        }
    }
}

/// Copies the files and directories under `from` into `to`, which exists
/// (the data dir holds no directory, but a copy should not depend on it).
fn copy_tree(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            fs::create_dir(&target).unwrap();
            copy_tree(&entry.path(), &target);
        } else if kind.is_file() {
            // A spare being prepared in the background may vanish (renamed
            // or removed) between the listing and the copy; a crash at that
            // moment would not have it either.
            match fs::copy(entry.path(), &target) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("copying {}: {e}", entry.path().display()),
            }
        }
    }
}
