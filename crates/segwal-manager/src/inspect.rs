//! A read-only look at a data dir, for tools (`segwal inspect`, `verify`,
//! `dump`): it never modifies a file, not even to cut a torn tail.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use segwal_format::{Entry, RegionMeta, SegmentIdentity};
use segwal_segment::{
    OpenOptions, RecoveryMode, Segment, parse_segment_file_name, segment_file_name,
};
use snafu::{ResultExt, ensure};

use crate::error::{DirectorySnafu, NotADataDirSnafu, NotADirectorySnafu, Result};
use crate::manager::{LOCK_FILE, lock_data_dir};
use crate::region::{META_FILE, parse_region_dir_name, region_dir_name};

/// What [`inspect`] found in a data dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirReport {
    /// The data dir.
    pub dir: PathBuf,
    /// Its regions, by id.
    pub regions: Vec<RegionReport>,
}

/// One region of a [`DirReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionReport {
    /// The region.
    pub region_id: u64,
    /// Its meta file's contents (default if there is none or it is damaged).
    pub meta: RegionMeta,
    /// Its segments, by id.
    pub segments: Vec<SegmentReport>,
    /// Problems with the region itself (its meta file).
    pub problems: Vec<Problem>,
}

/// One segment of a [`RegionReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentReport {
    /// The segment id.
    pub segment_id: u64,
    /// The segment file.
    pub path: PathBuf,
    /// The file's length.
    pub file_bytes: u64,
    /// Where its valid records end.
    pub data_bytes: u64,
    /// Valid records (batches).
    pub records: u64,
    /// Bytes of records with entries not deleted.
    pub live_bytes: u64,
    /// Per table: the sequence range and entry counts.
    pub tables: BTreeMap<u64, TableSpan>,
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
    /// False only for a torn tail at the end of a region's newest segment:
    /// what a crash mid-write leaves, cut by the next open.
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
    /// Every problem found, region by region.
    pub fn problems(&self) -> impl Iterator<Item = &Problem> {
        self.regions.iter().flat_map(|r| {
            r.problems
                .iter()
                .chain(r.segments.iter().flat_map(|s| s.problems.iter()))
        })
    }

    /// True if nothing is damaged (a torn tail in a newest segment is not
    /// damage).
    pub fn is_clean(&self) -> bool {
        self.problems().all(|p| !p.is_damage)
    }
}

/// Reads every segment of every region in `dir`, verifying every record,
/// and reports what it holds and what is damaged. Modifies nothing; refuses
/// a data dir in use by a running WAL (it takes the lock file shared).
pub fn inspect(dir: &Path) -> Result<DirReport> {
    walk(dir, None, &mut |_, _| {})
}

/// Hands every live entry of `table_id` in `region_id` with a sequence
/// number in `[from, to]` to `visit`, in file order (which is ascending),
/// reading the files directly like [`inspect`]: nothing is modified.
pub fn dump_table(
    dir: &Path,
    region_id: u64,
    table_id: u64,
    from: u64,
    to: u64,
    mut visit: impl FnMut(&Entry<'_>),
) -> Result<DirReport> {
    walk(dir, Some(region_id), &mut |mark, entry| {
        if entry.table_id == table_id
            && (from..=to).contains(&entry.sequence)
            && entry.sequence > mark(table_id)
        {
            visit(entry);
        }
    })
}

/// A region's delete mark per table, as the visitor sees it.
type Marks<'a> = &'a dyn Fn(u64) -> u64;

fn walk(
    dir: &Path,
    only_region: Option<u64>,
    visit: &mut dyn FnMut(Marks<'_>, &Entry<'_>),
) -> Result<DirReport> {
    if !dir.exists() {
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        return Err(missing).context(DirectorySnafu { dir });
    }
    ensure!(dir.is_dir(), NotADirectorySnafu { dir });
    let lock_path = dir.join(LOCK_FILE);
    ensure!(lock_path.is_file(), NotADataDirSnafu { dir });
    let lock = File::open(&lock_path).context(DirectorySnafu { dir })?;
    lock_data_dir(&lock, dir, false)?;
    // Only directories are regions, as for the WAL's own open: a file named
    // like a region is a stray.
    let mut region_ids: Vec<u64> = list(dir)?
        .iter()
        .filter(|(_, is_dir)| *is_dir)
        .filter_map(|(name, _)| parse_region_dir_name(name))
        .filter(|id| only_region.is_none_or(|only| only == *id))
        .collect();
    region_ids.sort_unstable();
    let mut regions = Vec::new();
    for region_id in region_ids {
        regions.push(walk_region(dir, region_id, visit)?);
    }
    Ok(DirReport {
        dir: dir.to_owned(),
        regions,
    })
}

/// The entries of `dir` whose names are UTF-8 (no segwal name is not),
/// each with whether it is a directory (not following symbolic links).
fn list(dir: &Path) -> Result<Vec<(String, bool)>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).context(DirectorySnafu { dir })? {
        let entry = entry.context(DirectorySnafu { dir })?;
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if let Ok(name) = entry.file_name().into_string() {
            names.push((name, is_dir));
        }
    }
    Ok(names)
}

fn walk_region(
    dir: &Path,
    region_id: u64,
    visit: &mut dyn FnMut(Marks<'_>, &Entry<'_>),
) -> Result<RegionReport> {
    let region_dir = dir.join(region_dir_name(region_id));
    let mut problems = Vec::new();
    let meta_path = region_dir.join(META_FILE);
    let meta = match fs::read(&meta_path) {
        Ok(bytes) => RegionMeta::decode(&bytes).unwrap_or_else(|err| {
            problems.push(Problem {
                path: meta_path.clone(),
                offset: None,
                message: format!("invalid meta file: {err}"),
                is_damage: true,
            });
            RegionMeta::default()
        }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => RegionMeta::default(),
        Err(err) => {
            problems.push(Problem {
                path: meta_path.clone(),
                offset: None,
                message: format!("cannot read meta file: {err}"),
                is_damage: true,
            });
            RegionMeta::default()
        }
    };
    let marks: BTreeMap<u64, u64> = meta
        .tables
        .iter()
        .map(|t| (t.table_id, t.deleted_up_to))
        .collect();
    let mark = |table: u64| marks.get(&table).copied().unwrap_or(0);
    let mut ids: Vec<u64> = list(&region_dir)?
        .iter()
        .filter_map(|(name, _)| parse_segment_file_name(name))
        .collect();
    ids.sort_unstable();
    let mut segments = Vec::new();
    for (index, &segment_id) in ids.iter().enumerate() {
        let is_newest = index + 1 == ids.len();
        let path = region_dir.join(segment_file_name(segment_id));
        let mut report = SegmentReport {
            segment_id,
            file_bytes: fs::metadata(&path).map_or(0, |m| m.len()),
            path: path.clone(),
            data_bytes: 0,
            records: 0,
            live_bytes: 0,
            tables: BTreeMap::new(),
            problems: Vec::new(),
        };
        let end = meta
            .segment_ends
            .iter()
            .find(|e| e.segment_id == segment_id)
            .map(|e| e.end);
        let options = OpenOptions {
            recovery_mode: RecoveryMode::SkipCorrupted,
            writable: false,
            end,
        };
        let identity = SegmentIdentity {
            stream_id: region_id,
            segment_id,
        };
        let opened = Segment::open(&path, identity, &options, |record| {
            report.records += 1;
            let table_id = record.table_id();
            let table_mark = mark(table_id);
            if record.last_sequence() > table_mark {
                report.live_bytes += record.end_offset() - record.offset();
            }
            let live = if record.last_sequence() > table_mark {
                record.last_sequence() - record.first_sequence().max(table_mark + 1) + 1
            } else {
                0
            };
            let span = report.tables.entry(table_id).or_insert(TableSpan {
                first_sequence: record.first_sequence(),
                last_sequence: record.last_sequence(),
                entries: 0,
                live_entries: 0,
            });
            span.last_sequence = record.last_sequence();
            span.entries += u64::from(record.entry_count());
            span.live_entries += live;
            for entry in record.entries() {
                visit(&mark, &entry);
            }
        });
        match opened {
            Ok((segment, recovery)) => {
                report.data_bytes = recovery.end;
                let capacity = segment.header().capacity;
                drop(segment);
                for skipped in recovery.skipped {
                    report.problems.push(Problem {
                        path: path.clone(),
                        offset: Some(skipped.range.start),
                        message: format!(
                            "corrupted data ({} bytes up to offset {}): {}",
                            skipped.range.end - skipped.range.start,
                            skipped.range.end,
                            skipped.cause
                        ),
                        is_damage: true,
                    });
                }
                if let Some(len) = recovery.wrong_length {
                    report.problems.push(Problem {
                        path: path.clone(),
                        offset: Some(len.min(capacity)),
                        message: format!(
                            "the file is {len} bytes long but its header records {capacity}: \
                             it was {} after creation, and records past offset {} may be lost",
                            if len < capacity {
                                "cut short"
                            } else {
                                "extended"
                            },
                            len.min(capacity)
                        ),
                        is_damage: true,
                    });
                }
                if recovery.past_end_bytes > 0 {
                    report.problems.push(Problem {
                        path: path.clone(),
                        offset: end,
                        message: format!(
                            "{} bytes past the end recorded after a failed sync, ignored \
                             (the next open zeroes them if this is the newest segment)",
                            recovery.past_end_bytes
                        ),
                        is_damage: false,
                    });
                }
                if let Some(torn) = recovery.torn_tail {
                    let message = if is_newest {
                        format!(
                            "torn tail of {} bytes (a write cut short by a crash; the next open cuts it): {}",
                            torn.discarded_bytes, torn.cause
                        )
                    } else {
                        format!(
                            "damaged data at the end of a sealed segment ({} bytes): {}",
                            torn.discarded_bytes, torn.cause
                        )
                    };
                    report.problems.push(Problem {
                        path: path.clone(),
                        offset: Some(torn.offset),
                        message,
                        is_damage: !is_newest,
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
        segments.push(report);
    }
    Ok(RegionReport {
        region_id,
        meta,
        segments,
        problems,
    })
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
