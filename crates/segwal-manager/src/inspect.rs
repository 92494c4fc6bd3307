//! A read-only look at a data dir, for tools (`segwal inspect`, `verify`,
//! `dump`): it never modifies a file, not even to cut a torn tail.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use segwal_format::{Entry, MetaLogEnd, SegmentIdentity, decode_meta_log};
use segwal_segment::{OpenOptions, RecoveryMode, Segment, disk, segment_file_name};
use snafu::{ResultExt, ensure};

use crate::error::{DirectorySnafu, NotADataDirSnafu, NotADirectorySnafu, Result};
use crate::judge::{Judged, judge};
use crate::manager::{LOCK_FILE, lock_data_dir};
use crate::meta::{META_FILE, MetaState, TableRecord};
use crate::recovery::{classify, list_segment_ids, refuse_old_layout};

/// What [`inspect`] found in a data dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirReport {
    /// The data dir.
    pub dir: PathBuf,
    /// Per (region, table), what the META log holds: the largest sequence
    /// number it recorded and the delete mark.
    pub tables: BTreeMap<(u64, u64), TableMarks>,
    /// The META log's length in bytes (0 if there is none).
    pub meta_bytes: u64,
    /// The segments of the shared log, by id.
    pub segments: Vec<SegmentReport>,
    /// Problems with the data dir itself (its META log).
    pub problems: Vec<Problem>,
}

/// What the META log holds about one table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableMarks {
    /// The largest sequence number recorded (the segments may hold larger
    /// ones).
    pub max_sequence: u64,
    /// Entries up to this sequence number are deleted.
    pub deleted_up_to: u64,
}

/// One segment of a [`DirReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentReport {
    /// The segment id.
    pub segment_id: u64,
    /// The stream it belongs to, if its header could be read.
    pub stream_id: Option<u64>,
    /// The segment file.
    pub path: PathBuf,
    /// The disk the file holds: its allocated blocks, at most its length
    /// (less than the length once a sealed segment gave back the room
    /// past its records).
    pub file_bytes: u64,
    /// Where its valid records end.
    pub data_bytes: u64,
    /// Valid records (batches).
    pub records: u64,
    /// Bytes of records with entries not deleted.
    pub live_bytes: u64,
    /// Per (region, table): the sequence range and entry counts.
    pub tables: BTreeMap<(u64, u64), TableSpan>,
    /// Damage found in the file.
    pub problems: Vec<Problem>,
}

/// A table's entries in one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSpan {
    /// The smallest sequence number.
    pub first_sequence: u64,
    /// The largest sequence number.
    pub last_sequence: u64,
    /// Entries.
    pub entries: u64,
    /// Entries above the table's delete mark.
    pub live_entries: u64,
}

/// Something wrong in a data dir, naming the file and offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub path: PathBuf,
    /// Where in it, if known.
    pub offset: Option<u64>,
    /// What it is.
    pub message: String,
    /// False only for what a crash leaves and the next open repairs: a
    /// torn tail at the end of a stream's newest segment or of the META
    /// log.
    pub is_damage: bool,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(offset) = self.offset {
            write!(f, " at offset {offset}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl DirReport {
    /// Every problem found: the META log's, then each segment's.
    pub fn problems(&self) -> impl Iterator<Item = &Problem> {
        self.problems
            .iter()
            .chain(self.segments.iter().flat_map(|s| s.problems.iter()))
    }

    /// True if nothing is damaged (a torn tail in a newest segment is not
    /// damage).
    pub fn is_clean(&self) -> bool {
        self.problems().all(|p| !p.is_damage)
    }

    /// Every region with entries in a segment or state in the META log.
    pub fn regions(&self) -> std::collections::BTreeSet<u64> {
        self.tables
            .keys()
            .chain(self.segments.iter().flat_map(|s| s.tables.keys()))
            .map(|&(region_id, _)| region_id)
            .collect()
    }
}

/// Reads every segment of `dir`, verifying every record, and reports what
/// it holds and what is damaged. Modifies nothing; refuses a data dir in
/// use by a running WAL (it takes the lock file shared).
pub fn inspect(dir: &Path) -> Result<DirReport> {
    walk(dir, &mut |_, _, _| {})
}

/// Hands every live entry of `table_id` in `region_id` with a sequence
/// number in `[from, to]` to `visit`, in file order, reading the files
/// directly like [`inspect`]: nothing is modified.
pub fn dump_table(
    dir: &Path,
    region_id: u64,
    table_id: u64,
    from: u64,
    to: u64,
    mut visit: impl FnMut(&Entry<'_>),
) -> Result<DirReport> {
    walk(dir, &mut |region, mark, entry| {
        if region == region_id
            && entry.table_id == table_id
            && (from..=to).contains(&entry.sequence)
            && entry.sequence > mark
        {
            visit(entry);
        }
    })
}

/// Sees each entry with its region and its table's delete mark.
type Visit<'a> = dyn FnMut(u64, u64, &Entry<'_>) + 'a;

fn walk(dir: &Path, visit: &mut Visit<'_>) -> Result<DirReport> {
    if !dir.exists() {
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        return Err(missing).context(DirectorySnafu { dir });
    }
    ensure!(dir.is_dir(), NotADirectorySnafu { dir });
    let lock_path = dir.join(LOCK_FILE);
    ensure!(lock_path.is_file(), NotADataDirSnafu { dir });
    let lock = File::open(&lock_path).context(DirectorySnafu { dir })?;
    lock_data_dir(&lock, dir, false)?;
    refuse_old_layout(dir)?;
    let mut problems = Vec::new();
    let (meta, meta_bytes) = read_meta(dir, &mut problems);
    // As recovery judges them: a prepared spare is not its stream's newest.
    let Judged {
        ids,
        streams,
        prepared,
        newest,
    } = judge(dir, list_segment_ids(dir)?);
    let mut segments = Vec::new();
    for (&segment_id, &stream_id) in ids.iter().zip(&streams) {
        let is_newest = newest.get(&stream_id) == Some(&segment_id);
        let mut report = walk_segment(dir, segment_id, stream_id, is_newest, &meta, visit);
        if prepared.contains(&segment_id) {
            report.problems.push(Problem {
                path: report.path.clone(),
                offset: None,
                message: "prepared ahead of need, with no records yet (removed on the next open)"
                    .into(),
                is_damage: false,
            });
        }
        segments.push(report);
    }
    let tables = meta
        .tables
        .iter()
        .map(|(&key, t)| {
            let marks = TableMarks {
                max_sequence: t.max_sequence,
                deleted_up_to: t.deleted_up_to,
            };
            (key, marks)
        })
        .collect();
    Ok(DirReport {
        dir: dir.to_owned(),
        tables,
        meta_bytes,
        segments,
        problems,
    })
}

/// The META log's merged content as far as it verifies, and its length;
/// damage is reported in `problems`.
fn read_meta(dir: &Path, problems: &mut Vec<Problem>) -> (MetaState, u64) {
    let path = dir.join(META_FILE);
    let mut problem = |offset: Option<u64>, message: String, is_damage: bool| {
        problems.push(Problem {
            path: path.clone(),
            offset,
            message,
            is_damage,
        });
    };
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return (MetaState::default(), 0);
        }
        Err(err) => {
            problem(None, format!("cannot read the META log: {err}"), true);
            return (MetaState::default(), 0);
        }
    };
    let mut state = MetaState::default();
    match decode_meta_log(&bytes) {
        Ok(log) => {
            match log.end {
                MetaLogEnd::TornTail { offset } => problem(
                    Some(offset),
                    "torn tail (an append cut short by a crash; dropped on the next open)".into(),
                    false,
                ),
                MetaLogEnd::Corruption { offset, cause } => {
                    problem(Some(offset), format!("damaged record: {cause}"), true)
                }
                _ => {}
            }
            for entry in &log.entries {
                state.apply(entry);
            }
        }
        Err(err) => problem(Some(0), format!("invalid META log: {err}"), true),
    }
    (state, bytes.len() as u64)
}

fn walk_segment(
    dir: &Path,
    segment_id: u64,
    stream_id: Option<u64>,
    is_newest: bool,
    meta: &MetaState,
    visit: &mut Visit<'_>,
) -> SegmentReport {
    let path = dir.join(segment_file_name(segment_id));
    let mut report = SegmentReport {
        segment_id,
        stream_id,
        file_bytes: fs::metadata(&path).map_or(0, |m| disk::allocated_bytes(&m)),
        path: path.clone(),
        data_bytes: 0,
        records: 0,
        live_bytes: 0,
        tables: BTreeMap::new(),
        problems: Vec::new(),
    };
    let options = OpenOptions {
        recovery_mode: RecoveryMode::SkipCorrupted,
        writable: false,
        end: meta.segment_ends.get(&segment_id).copied(),
    };
    let identity = SegmentIdentity {
        stream_id: stream_id.unwrap_or(u64::MAX),
        segment_id,
    };
    let mark = |key: (u64, u64)| {
        meta.tables
            .get(&key)
            .map_or(0, |t: &TableRecord| t.deleted_up_to)
    };
    let opened = Segment::open(&path, identity, &options, |record| {
        report.records += 1;
        let key = (record.region_id(), record.table_id());
        let table_mark = mark(key);
        let live = if record.last_sequence() > table_mark {
            report.live_bytes += record.end_offset() - record.offset();
            record.last_sequence() - record.first_sequence().max(table_mark + 1) + 1
        } else {
            0
        };
        let span = report.tables.entry(key).or_insert(TableSpan {
            first_sequence: record.first_sequence(),
            last_sequence: record.last_sequence(),
            entries: 0,
            live_entries: 0,
        });
        span.first_sequence = span.first_sequence.min(record.first_sequence());
        span.last_sequence = span.last_sequence.max(record.last_sequence());
        span.entries += u64::from(record.entry_count());
        span.live_entries += live;
        // A compressed body is decompressed here, so that `verify` checks
        // it too; one that matched its checksum but does not decompress is
        // damage at the record's offset.
        match record.body() {
            Ok(body) => {
                for entry in body.entries() {
                    visit(key.0, table_mark, &entry);
                }
            }
            Err(err) => report.problems.push(Problem {
                path: path.clone(),
                offset: Some(record.offset()),
                message: err.to_string(),
                is_damage: true,
            }),
        }
    });
    match opened {
        Ok((segment, recovery)) => {
            report.data_bytes = recovery.end;
            let capacity = segment.header().capacity;
            drop(segment);
            for finding in classify(&recovery, capacity, is_newest) {
                report.problems.push(Problem {
                    path: path.clone(),
                    offset: finding.offset,
                    message: finding.message,
                    is_damage: finding.is_damage,
                });
            }
        }
        Err(err) => report.problems.push(Problem {
            path: path.clone(),
            offset: error_offset(&err),
            message: err.to_string(),
            is_damage: true,
        }),
    }
    report
}

/// Where in the file a segment that cannot be opened is damaged: at 0 for
/// its header, at the error's offset for damage in its records, unknown
/// for an I/O error.
fn error_offset(err: &segwal_segment::Error) -> Option<u64> {
    use segwal_segment::Error;
    match err {
        Error::BadHeader { .. } | Error::WrongIdentity { .. } => Some(0),
        Error::Corrupted { offset, .. } | Error::TornTail { offset, .. } => Some(*offset),
        Error::WrongLength { len, capacity, .. } => Some((*len).min(*capacity)),
        _ => None,
    }
}
