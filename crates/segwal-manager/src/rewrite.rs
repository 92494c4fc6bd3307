//! Rewriting cold tables' live records forward, so that the oldest
//! segments can go.
//!
//! A sealed segment is removed only once every record in it is deleted, so
//! a table that is rarely flushed pins every segment from its oldest live
//! record on. When the sealed segments hold more than
//! `ManagerConfig::max_dead_bytes` beyond their live records, the oldest
//! sealed segments that are at most half live are rewritten, oldest first:
//! each live record is appended again, unchanged (same region, table and
//! sequence numbers), to its region's stream, the copies are synced, the
//! index is pointed at them, and the old segment, now dead, is removed.
//!
//! Crash safety follows from the order: the old segment goes only after
//! the copies are durable, and a crash between the two leaves both copies
//! on disk, which recovery tells apart by their sequence numbers and keeps
//! the one in the newer segment (`RegionState::sort_tables`). Writers are
//! not stopped: a copy is appended under the stream's writer lock like any
//! batch, one at a time.

use std::sync::RwLock;
use std::sync::atomic::Ordering;

use rustc_hash::FxHashMap as HashMap;
use segwal_format::SEGMENT_HEADER_LEN;
use segwal_segment::BatchRef;
use snafu::{ResultExt, ensure};

use crate::context::Context;
use crate::error::{
    ClosedSnafu, DecompressSnafu, RegionFailedSnafu, Result, SegmentSnafu, WriteSnafu,
};
use crate::index::{RegionSlot, Segments};
use crate::locks::{read, write};
use crate::read::RecordLoc;
use crate::stream::{Stream, Writer, lost_after};

/// A sealed segment is rewritten only if at most this share of its bytes
/// is live: each rewrite then frees at least as much disk as it writes.
const REWRITE_MAX_LIVE_SHARE: f64 = 0.5;

/// The sealed segments to rewrite, oldest first: those at most half live,
/// for as long as the sealed segments' dead bytes stay above `max_dead`.
pub(crate) fn pick_victims(segments: &Segments, max_dead: u64) -> Vec<u64> {
    let sealed = || segments.iter().filter(|(_, info)| info.active.is_none());
    let mut dead: u64 = sealed()
        .map(|(_, info)| info.file_bytes.saturating_sub(info.live.bytes()))
        .sum();
    let mut victims = Vec::new();
    for (&id, info) in sealed() {
        if dead <= max_dead {
            break;
        }
        let live = info.live.bytes();
        if (live as f64) <= REWRITE_MAX_LIVE_SHARE * info.file_bytes as f64 && live > 0 {
            victims.push(id);
            dead = dead.saturating_sub(info.file_bytes - live);
        }
    }
    victims
}

/// One record copied forward: where it was, where it is now.
struct Moved {
    region_id: u64,
    table_id: u64,
    from: RecordLoc,
    to: RecordLoc,
}

/// Rewrites the live records of sealed segment `segment_id` forward and
/// points the index at the copies; the segment is then dead (unless a
/// record could not be read), and the caller removes it.
pub(crate) fn rewrite_segment(
    ctx: &Context,
    streams: &[Stream],
    regions: &RwLock<HashMap<u64, RegionSlot>>,
    segment_id: u64,
) -> Result<()> {
    let sealed = read(&ctx.segments)
        .get(&segment_id)
        .is_some_and(|info| info.active.is_none());
    let Some(handle) = ctx.handle(segment_id)?.filter(|_| sealed) else {
        return Ok(());
    };
    let stream_of = |region_id: u64| &streams[(region_id % streams.len() as u64) as usize];
    let mut moved = Vec::new();
    let mut records = handle
        .records_from(SEGMENT_HEADER_LEN as u64)
        .context(SegmentSnafu)?;
    for record in records.by_ref() {
        let (region_id, table_id) = (record.region_id(), record.table_id());
        let from = RecordLoc::of(&record, segment_id);
        if !is_live(regions, region_id, table_id, &from) {
            continue;
        }
        // A compressed record is decompressed and compressed again with the
        // WAL's codec now (which may differ from the one it was written
        // with); an uncompressed one is copied from the mapping.
        let body = record.body().context(DecompressSnafu {
            path: handle.path(),
            offset: from.offset,
        })?;
        let entries: Vec<&[u8]> = body.entries().map(|e| e.payload).collect();
        let stream = stream_of(region_id);
        let to = stream.append_copy(region_id, table_id, from.first, &entries, ctx)?;
        moved.push(Moved {
            region_id,
            table_id,
            from,
            to,
        });
    }
    // The copies are durable before the index points at them (readers
    // under `SyncMode::Always` see only synced records) and before the
    // old segment can go, whatever the sync mode.
    for stream in streams {
        stream.sync_active(ctx)?;
    }
    let rewritten = moved.len() as u64;
    point_index_at_copies(ctx, regions, moved);
    ctx.stats
        .rewritten_records
        .fetch_add(rewritten, Ordering::Relaxed);
    ctx.stats.segments_rewritten.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Whether the record at `loc` is still one the index holds live.
fn is_live(
    regions: &RwLock<HashMap<u64, RegionSlot>>,
    region_id: u64,
    table_id: u64,
    loc: &RecordLoc,
) -> bool {
    match read(regions).get(&region_id) {
        Some(RegionSlot::Open(region)) => {
            let state = read(&region.state);
            state
                .tables
                .get(&table_id)
                .is_some_and(|table| find(&table.records, loc).is_some())
        }
        Some(RegionSlot::Closed(closed)) => closed
            .tables
            .get(&table_id)
            .is_some_and(|&(_, mark)| loc.last > mark),
        None => false,
    }
}

/// The index of `loc` among `records` (ascending by sequence number), if
/// it is there at that very place.
fn find(records: &std::collections::VecDeque<RecordLoc>, loc: &RecordLoc) -> Option<usize> {
    let at = records.partition_point(|r| r.first < loc.first);
    records
        .get(at)
        .filter(|r| r.segment_id == loc.segment_id && r.offset == loc.offset)
        .map(|_| at)
}

/// Points the index at each copy whose original is still live there; the
/// original then stops counting as live. An original deleted meanwhile
/// leaves its copy dead instead.
fn point_index_at_copies(
    ctx: &Context,
    regions: &RwLock<HashMap<u64, RegionSlot>>,
    moved: Vec<Moved>,
) {
    // Under the map's write lock: no region opens or closes meanwhile.
    let mut regions = write(regions);
    let segments = read(&ctx.segments);
    for m in moved {
        let swapped = match regions.get_mut(&m.region_id) {
            Some(RegionSlot::Open(region)) => {
                let mut state = write(&region.state);
                let table = state.tables.get_mut(&m.table_id);
                match table.and_then(|t| find(&t.records, &m.from).map(|at| (t, at))) {
                    Some((table, at)) => {
                        table.records[at] = m.to;
                        true
                    }
                    None => false,
                }
            }
            Some(RegionSlot::Closed(closed)) => {
                let live = closed
                    .tables
                    .get(&m.table_id)
                    .is_some_and(|&(_, mark)| m.from.last > mark);
                if live {
                    let len = u64::from(m.from.len);
                    if let Some(tables) = closed.segments.get_mut(&m.from.segment_id) {
                        if let Some(bytes) = tables.get_mut(&m.table_id) {
                            *bytes = bytes.saturating_sub(len);
                        }
                        tables.retain(|_, bytes| *bytes > 0);
                    }
                    closed.segments.retain(|_, tables| !tables.is_empty());
                    *closed
                        .segments
                        .entry(m.to.segment_id)
                        .or_default()
                        .entry(m.table_id)
                        .or_default() += len;
                }
                live
            }
            None => false,
        };
        // The copy was counted live when it was appended (so that its
        // segment could not be removed meanwhile); now one of the two goes.
        let (dead, len) = if swapped {
            (m.from.segment_id, m.from.len)
        } else {
            (m.to.segment_id, m.to.len)
        };
        segments[&dead].live.remove(u64::from(len));
    }
}

impl Stream {
    /// Appends a copy of a live record (same region, table and sequence
    /// numbers) without numbering or publishing it: the rewrite points the
    /// index at it once it is durable. Returns where it went.
    pub(crate) fn append_copy(
        &self,
        region_id: u64,
        table_id: u64,
        first_sequence: u64,
        entries: &[&[u8]],
        ctx: &Context,
    ) -> Result<RecordLoc> {
        let mut writer = self.writer.lock();
        ensure!(!self.is_closed(), ClosedSnafu);
        ensure!(!self.is_failed(), RegionFailedSnafu { region_id });
        let record_len = segwal_format::record_len(entries);
        self.ensure_room(&mut writer, record_len, ctx)?;
        let segment = writer.active.as_mut().expect("ensure_room leaves one");
        let segment_id = segment.identity().segment_id;
        let batch = BatchRef {
            region_id,
            table_id,
            first_sequence,
            entries,
        };
        let range = match segment.append(&batch) {
            Ok(range) => range,
            Err(source) => {
                let lost_after = lost_after(&source, segment_id, segment.durable_len());
                let writer: &Writer = &writer;
                self.record_failure(writer, ctx, lost_after);
                return Err(source).context(WriteSnafu {
                    region_id,
                    table_id,
                });
            }
        };
        // Counted live from now on, so that its segment is not removed
        // before the index points at it (or finds it was not needed).
        writer.active_live.add(range.end - range.start);
        ctx.stats
            .rewritten_bytes
            .fetch_add(range.end - range.start, Ordering::Relaxed);
        self.after_append(&mut writer, range.end, ctx);
        Ok(RecordLoc {
            first: first_sequence,
            last: first_sequence + entries.len() as u64 - 1,
            segment_id,
            offset: range.start,
            len: u32::try_from(range.end - range.start).expect("a record fits its length field"),
        })
    }
}
