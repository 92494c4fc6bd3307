//! Recovery of a data dir at open: list the segments, open (and so verify)
//! them in parallel, classify how each ends, and rebuild the index, the
//! segment table and every region's next sequence number.
//!
//! The META log (read first, by `meta.rs`) gives each table's delete mark
//! and the numbers that outlived removed segments; the segments give the
//! rest. Every value merges by maximum, so nothing depends on the order in
//! which the two are read.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustc_hash::FxHashMap as HashMap;
use segwal_format::{
    RECORD_HEADER_LEN, RecordDecoder, SEGMENT_HEADER_LEN, SegmentHeader, SegmentIdentity,
};
use segwal_segment::{
    OpenOptions, RELEASE_BLOCK, RecoveryMode, RecoveryReport, Segment, parse_segment_file_name,
};
use snafu::ResultExt;

use crate::cache::SegmentCache;
use crate::config::ManagerConfig;
use crate::context::is_spare_file_name;
use crate::error::{
    DirectorySnafu, OldLayoutSnafu, Result, SealedSegmentDamagedSnafu, SegmentSnafu,
};
use crate::index::{Keep, Live, RegionState, SegmentInfo, Segments, TableState};
use crate::judge::judge;
use crate::meta::MetaState;
use crate::read::RecordLoc;

/// What recovery rebuilt.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// Every region with any table the log knows of.
    pub(crate) regions: HashMap<u64, RegionState>,
    /// Each region's next sequence number (regions at 1 are left out).
    pub(crate) sequences: HashMap<u64, u64>,
    pub(crate) segments: Segments,
    pub(crate) next_segment_id: u64,
}

impl Recovered {
    /// Table `table_id` of region `region_id`, made on first sight.
    fn table(&mut self, region_id: u64, table_id: u64) -> &mut TableState {
        self.regions
            .entry(region_id)
            .or_default()
            .tables
            .entry(table_id)
            .or_default()
    }
}

/// How a segment's scan ended, as recovery and the tools judge it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    /// Where in the file.
    pub(crate) offset: Option<u64>,
    pub(crate) message: String,
    /// False only for what a crash leaves: a torn tail at the end of its
    /// stream's newest segment.
    pub(crate) is_damage: bool,
}

/// Judges a segment's [`RecoveryReport`]: a torn tail is what a crash
/// leaves only in the newest segment of its stream (sealed segments are
/// synced before their successor is written); skipped ranges and a wrong
/// length are damage; bytes past a recorded end are not.
pub(crate) fn classify(report: &RecoveryReport, capacity: u64, is_newest: bool) -> Vec<Finding> {
    let mut findings = Vec::new();
    if let Some(torn) = &report.torn_tail {
        findings.push(Finding {
            offset: Some(torn.offset),
            message: if is_newest {
                format!(
                    "torn tail of {} bytes (an incomplete write; cut on the next open): {}",
                    torn.discarded_bytes, torn.cause
                )
            } else {
                format!("damaged data in a sealed segment: {}", torn.cause)
            },
            is_damage: !is_newest,
        });
    }
    for skipped in &report.skipped {
        findings.push(Finding {
            offset: Some(skipped.range.start),
            message: format!(
                "damaged bytes {}..{}: {}",
                skipped.range.start, skipped.range.end, skipped.cause
            ),
            is_damage: true,
        });
    }
    if let Some(len) = report.wrong_length {
        let kept = len.min(capacity);
        findings.push(Finding {
            offset: Some(kept),
            message: format!(
                "the file is {len} bytes long but its header records {capacity}: it was {} \
                 after creation, and records past offset {kept} may be lost",
                if len < capacity {
                    "cut short"
                } else {
                    "extended"
                }
            ),
            is_damage: true,
        });
    }
    if report.past_end_bytes > 0 {
        findings.push(Finding {
            offset: Some(report.end),
            message: format!(
                "{} bytes past the end recorded after a failed sync (ignored)",
                report.past_end_bytes
            ),
            is_damage: false,
        });
    }
    findings
}

/// Refuses a data dir laid out by format version 2 (one directory per
/// region, named by its 20-digit id): the error names a segment in it and
/// both versions.
pub(crate) fn refuse_old_layout(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).context(DirectorySnafu { dir })? {
        let entry = entry.context(DirectorySnafu { dir })?;
        let name = entry.file_name();
        let is_region_dir = name.len() == 20
            && name
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            && entry.file_type().is_ok_and(|t| t.is_dir());
        if !is_region_dir {
            continue;
        }
        let region_dir = entry.path();
        for file in fs::read_dir(&region_dir).context(DirectorySnafu { dir: &region_dir })? {
            let file = file.context(DirectorySnafu { dir: &region_dir })?;
            let is_segment = file
                .file_name()
                .to_str()
                .is_some_and(|n| n.ends_with(".seg"));
            if let Some(found) = is_segment.then(|| header_version(&file.path())).flatten() {
                return OldLayoutSnafu {
                    path: file.path(),
                    found,
                }
                .fail();
            }
        }
    }
    Ok(())
}

/// The version byte of the segment header at `path`, if it has one.
fn header_version(path: &Path) -> Option<u8> {
    let mut bytes = [0u8; 9];
    fs::File::open(path).ok()?.read_exact(&mut bytes).ok()?;
    (bytes[..8] == segwal_format::MAGIC).then_some(bytes[8])
}

/// The stream of the segment at `path`, read from its header; `None` if the
/// header does not decode (opening the segment then reports why).
pub(crate) fn header_stream(path: &Path) -> Option<u64> {
    let mut bytes = [0u8; SEGMENT_HEADER_LEN];
    fs::File::open(path).ok()?.read_exact(&mut bytes).ok()?;
    SegmentHeader::decode(&bytes).ok().map(|h| h.stream_id)
}

/// The segment ids in `dir`, ascending, and the paths of spares (segments
/// prepared ahead of need and never put in place, which hold no records).
/// Other files are ignored.
pub(crate) fn list_segment_ids(dir: &Path) -> Result<Vec<u64>> {
    Ok(list_dir(dir)?.0)
}

fn list_dir(dir: &Path) -> Result<(Vec<u64>, Vec<PathBuf>)> {
    let mut ids = Vec::new();
    let mut spares = Vec::new();
    for entry in fs::read_dir(dir).context(DirectorySnafu { dir })? {
        let entry = entry.context(DirectorySnafu { dir })?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(segment_id) = parse_segment_file_name(name) {
            ids.push(segment_id);
        } else if is_spare_file_name(name) {
            spares.push(entry.path());
        }
    }
    ids.sort_unstable();
    Ok((ids, spares))
}

/// One segment opened by recovery: its handle, report and records.
struct Opened {
    segment: Segment,
    report: RecoveryReport,
    /// (region, table, location) of every record, in file order.
    records: Vec<(u64, u64, RecordLoc)>,
}

/// Opens segment `segment_id`, collecting where its records are.
fn open_segment(
    path: &Path,
    identity: SegmentIdentity,
    options: &OpenOptions,
) -> segwal_segment::Result<Opened> {
    let mut records = Vec::new();
    let segment_id = identity.segment_id;
    let (segment, report) = Segment::open(path, identity, options, |record| {
        let loc = RecordLoc::of(record, segment_id);
        records.push((record.region_id(), record.table_id(), loc));
    })?;
    Ok(Opened {
        segment,
        report,
        records,
    })
}

/// Opens segment `segment_id` (of `stream`, if its header could be read)
/// read-only, collecting its records. The newest segment of its stream is
/// opened again, writable, only when it has a tail to cut and zero; it is
/// never appended to again: after a restart, appends go to a fresh
/// segment.
fn open_for_recovery(
    path: &Path,
    segment_id: u64,
    stream: Option<u64>,
    is_newest: bool,
    end: Option<u64>,
    config: &ManagerConfig,
) -> segwal_segment::Result<Opened> {
    let identity = SegmentIdentity {
        stream_id: stream.unwrap_or(u64::MAX),
        segment_id,
    };
    let options = OpenOptions {
        recovery_mode: config.recovery_mode,
        writable: false,
        end,
    };
    let first = open_segment(path, identity, &options)?;
    if is_newest && (first.report.torn_tail.is_some() || first.report.past_end_bytes > 0) {
        drop(first);
        let writable = OpenOptions {
            writable: true,
            ..options
        };
        return open_segment(path, identity, &writable);
    }
    Ok(first)
}

/// Rebuilds the index from `meta` and every segment of the data dir.
/// Segments are opened `threads` at a time, in parallel, then taken in id
/// order, so only a window's record lists are held at once.
pub(crate) fn recover(
    config: &ManagerConfig,
    meta: &MetaState,
    cache: &SegmentCache,
    threads: usize,
) -> Result<Recovered> {
    let dir = &config.dir;
    let (all_ids, spares) = list_dir(dir)?;
    for spare in spares {
        Segment::delete_file(&spare).context(SegmentSnafu)?;
    }
    let path_of = |id: u64| dir.join(segwal_segment::segment_file_name(id));
    let next_segment_id = all_ids.last().map_or(1, |id| id + 1);
    let judged = judge(dir, all_ids);
    for &id in &judged.prepared {
        Segment::delete_file(&path_of(id)).context(SegmentSnafu)?;
    }
    let (ids, streams): (Vec<u64>, Vec<Option<u64>>) = judged
        .ids
        .iter()
        .zip(&judged.streams)
        .filter(|(id, _)| !judged.prepared.contains(id))
        .map(|(&id, &stream)| (id, stream))
        .unzip();
    // Only the newest segment of each stream can end in a torn write.
    let newest = judged.newest;
    let mut recovered = Recovered {
        next_segment_id,
        ..Recovered::default()
    };
    seed_from_meta(&mut recovered, meta);
    let mut unsorted: BTreeSet<(u64, u64)> = BTreeSet::new();
    let items: Vec<(u64, Option<u64>)> = ids.iter().copied().zip(streams).collect();
    for window in items.chunks(threads.max(1)) {
        let opened = parallel_map(window, |&(segment_id, stream)| {
            let is_newest = newest.get(&stream) == Some(&segment_id);
            let end = meta.segment_ends.get(&segment_id).copied();
            open_for_recovery(
                &path_of(segment_id),
                segment_id,
                stream,
                is_newest,
                end,
                config,
            )
        });
        for (&(segment_id, stream), opened) in window.iter().zip(opened) {
            let opened = opened.context(SegmentSnafu)?;
            let is_newest = newest.get(&stream) == Some(&segment_id);
            check_end(
                &path_of(segment_id),
                &opened,
                is_newest,
                config.recovery_mode,
            )?;
            let live = Arc::new(Live::default());
            for &(region_id, table_id, loc) in &opened.records {
                if index_record(&mut recovered, region_id, table_id, loc, &live) {
                    unsorted.insert((region_id, table_id));
                }
            }
            let handle = opened.segment.handle();
            let stream_id = opened.segment.identity().stream_id;
            // The disk it holds, but never less than its records take (a
            // file system that compresses may report fewer blocks).
            let file_bytes = opened
                .segment
                .allocated_bytes()
                .max(opened.report.end.next_multiple_of(RELEASE_BLOCK))
                .min(opened.segment.capacity());
            drop(opened.segment);
            cache.insert(segment_id, handle);
            recovered.segments.insert(
                segment_id,
                SegmentInfo {
                    stream_id,
                    active: None,
                    len: opened.report.end,
                    file_bytes,
                    live,
                },
            );
        }
    }
    drop_duplicates(&mut recovered, &unsorted);
    Ok(recovered)
}

/// Starts the index from what the META log holds: tables' largest
/// sequence numbers and delete marks, and sequence floors.
fn seed_from_meta(recovered: &mut Recovered, meta: &MetaState) {
    for (&(region_id, table_id), record) in &meta.tables {
        let table = recovered.table(region_id, table_id);
        table.max_sequence = record.max_sequence;
        table.deleted_up_to = record.deleted_up_to;
        raise(&mut recovered.sequences, region_id, record.max_sequence + 1);
    }
    for (&region_id, &floor) in &meta.floors {
        raise(&mut recovered.sequences, region_id, floor);
    }
}

/// Adds one recovered record to the index (if it holds a live entry) and
/// to its segment's live count. Returns true if the record came out of
/// sequence order for its table (a table whose records must be sorted).
fn index_record(
    recovered: &mut Recovered,
    region_id: u64,
    table_id: u64,
    loc: RecordLoc,
    live: &Live,
) -> bool {
    raise(&mut recovered.sequences, region_id, loc.last + 1);
    let table = recovered.table(region_id, table_id);
    table.max_sequence = table.max_sequence.max(loc.last);
    if loc.last <= table.deleted_up_to {
        return false;
    }
    live.add(u64::from(loc.len));
    !table.push(loc)
}

/// Sorts the tables whose records came out of order and drops batches
/// found twice, keeping the copy in the newer segment.
fn drop_duplicates(recovered: &mut Recovered, unsorted: &BTreeSet<(u64, u64)>) {
    let mut by_region: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for &(region_id, table_id) in unsorted {
        by_region.entry(region_id).or_default().insert(table_id);
    }
    for (region_id, tables) in by_region {
        let state = recovered
            .regions
            .get_mut(&region_id)
            .expect("indexed above");
        for loc in state.sort_tables(&tables, Keep::Newest) {
            recovered.segments[&loc.segment_id]
                .live
                .remove(u64::from(loc.len));
        }
    }
}

fn raise(sequences: &mut HashMap<u64, u64>, region_id: u64, next: u64) {
    let entry = sequences.entry(region_id).or_insert(1);
    *entry = (*entry).max(next);
}

/// Logs how a segment's scan ended, and refuses damage the recovery mode
/// does not skip: a torn tail in a segment that is not the newest of its
/// stream.
fn check_end(path: &Path, opened: &Opened, is_newest: bool, mode: RecoveryMode) -> Result<()> {
    if let Some(torn) = &opened.report.torn_tail
        && !is_newest
        && mode != RecoveryMode::SkipCorrupted
    {
        return Err(torn.cause.clone()).context(SealedSegmentDamagedSnafu {
            path,
            offset: torn.offset,
        });
    }
    let capacity = opened.segment.header().capacity;
    for finding in classify(&opened.report, capacity, is_newest) {
        let at = finding
            .offset
            .map(|o| format!(" at offset {o}"))
            .unwrap_or_default();
        if finding.is_damage {
            log::error!("{}{at}: {} (skipped)", path.display(), finding.message);
        } else {
            log::warn!("{}{at}: {}", path.display(), finding.message);
        }
    }
    Ok(())
}

/// `f` applied to every item, the first on this thread and each other on a
/// thread of its own; results in `items`' order.
fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let Some((first, rest)) = items.split_first() else {
        return Vec::new();
    };
    std::thread::scope(|scope| {
        let f = &f;
        let others: Vec<_> = rest
            .iter()
            .map(|item| scope.spawn(move || f(item)))
            .collect();
        let mut results = Vec::with_capacity(items.len());
        results.push(f(first));
        results.extend(
            others
                .into_iter()
                .map(|worker| worker.join().expect("segment recovery panicked")),
        );
        results
    })
}

/// The segments holding a closed region's live records, read again when
/// it is reopened: the region's records in them are verified and indexed
/// (those above each table's mark); of every other record only the header
/// is read (verified by its own checksum) to step over it, so the work
/// follows the region's own bytes and the number of records, not the
/// size of the segments. Returns the region's state.
pub(crate) fn reopen_region(
    region_id: u64,
    tables: &HashMap<u64, (u64, u64)>,
    handles: &[segwal_segment::SegmentHandle],
) -> Result<RegionState> {
    let mut state = RegionState::default();
    for (&table_id, &(max_sequence, deleted_up_to)) in tables {
        let table = state.tables.entry(table_id).or_default();
        table.max_sequence = max_sequence;
        table.deleted_up_to = deleted_up_to;
    }
    let mut unsorted = BTreeSet::new();
    for handle in handles {
        for loc_and_table in region_records(handle, region_id)? {
            let (table_id, loc) = loc_and_table;
            let Some(table) = state.tables.get_mut(&table_id) else {
                continue;
            };
            if loc.last > table.deleted_up_to && !table.push(loc) {
                unsorted.insert(table_id);
            }
        }
    }
    // A rewrite may have appended a copy of one of the region's records
    // and not yet pointed the index at it; the original stays indexed
    // (and counted live) until it does.
    state.sort_tables(&unsorted, Keep::Oldest);
    Ok(state)
}

/// The records of `region_id` in `handle`'s segment, as (table, location),
/// each verified. Records of other regions are stepped over by their
/// verified headers; if a header does not verify (damage a
/// `SkipCorrupted` recovery let through), the rest of the segment is
/// scanned record by record instead.
fn region_records(
    handle: &segwal_segment::SegmentHandle,
    region_id: u64,
) -> Result<Vec<(u64, RecordLoc)>> {
    let decoder = RecordDecoder::new(&handle.header());
    let segment_id = handle.header().segment_id;
    let written = handle.written_len();
    let mut found = Vec::new();
    let mut offset = SEGMENT_HEADER_LEN as u64;
    while offset + RECORD_HEADER_LEN as u64 <= written {
        let bytes = handle
            .read(offset, RECORD_HEADER_LEN as u64)
            .context(SegmentSnafu)?;
        let Ok(header) = decoder.decode_header(bytes, offset) else {
            break;
        };
        let end = offset + header.record_len() as u64;
        if header.meta.region_id == region_id {
            let mut records = handle.records_from(offset).context(SegmentSnafu)?;
            let Some(record) = records.next() else { break };
            found.push((record.table_id(), RecordLoc::of(&record, segment_id)));
        }
        offset = end;
    }
    if offset + RECORD_HEADER_LEN as u64 <= written && offset < written {
        // Not at the end: step on with the verified scanner, which knows
        // a clean end from damage.
        let mut records = handle.records_from(offset).context(SegmentSnafu)?;
        for record in records.by_ref() {
            if record.region_id() == region_id {
                found.push((record.table_id(), RecordLoc::of(&record, segment_id)));
            }
        }
    }
    Ok(found)
}
