//! What a read or a scan sees: the locations of the records in range, taken
//! under the region's index lock, and the segments they lie in, pinned
//! (open and mapped) for as long as the iterator lives.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use rustc_hash::FxHashMap as HashMap;
use segwal_format::SegmentIdentity;
use segwal_segment::{Segment, SegmentHandle};
use snafu::ResultExt;

use crate::context::Context;
use crate::error::{Result, SegmentSnafu};
use crate::index::{Region, Segments};
use crate::locks::read;
use crate::read::{EntryIter, RecordLoc};

/// A segment a read needs, found under the segment table's lock.
#[derive(Debug)]
enum Pin {
    /// Open already: an active segment.
    Open(SegmentHandle),
    /// Sealed: from the cache, or reopened with this length.
    Sealed { stream_id: u64, len: u64 },
}

/// The live entries of `table_id` of `region` with sequence numbers in
/// `[start, end]`, read lazily.
pub(crate) fn read_table(
    ctx: &Context,
    region: &Region,
    table_id: u64,
    start: u64,
    end: u64,
) -> Result<EntryIter> {
    let locs: Vec<RecordLoc> = {
        let state = read(&region.state);
        let Some(table) = state.tables.get(&table_id) else {
            return Ok(EntryIter::empty());
        };
        let start = start.max(table.deleted_up_to.saturating_add(1));
        if start > end {
            return Ok(EntryIter::empty());
        }
        let from = table.records.partition_point(|r| r.last < start);
        table
            .records
            .range(from..)
            .take_while(|r| r.first <= end)
            .copied()
            .collect()
    };
    let (locs, pins) = visible(&read(&ctx.segments), locs, ctx);
    let handles = pin(ctx, pins)?;
    // Marks are read again after pinning: a segment deleted meanwhile held
    // only entries at or below its tables' marks, which this skips.
    let mark = read(&region.state)
        .tables
        .get(&table_id)
        .map_or(0, |t| t.deleted_up_to);
    let start = start.max(mark.saturating_add(1));
    Ok(EntryIter::new(
        locs,
        handles,
        start,
        end,
        HashMap::default(),
    ))
}

/// Every live entry of `region`, in ascending sequence order.
pub(crate) fn scan_region(ctx: &Context, region: &Region) -> Result<EntryIter> {
    let mut locs: Vec<RecordLoc> = {
        let state = read(&region.state);
        state
            .tables
            .values()
            .flat_map(|t| t.records.iter().copied())
            .collect()
    };
    locs.sort_unstable_by_key(|r| r.first);
    let (locs, pins) = visible(&read(&ctx.segments), locs, ctx);
    let handles = pin(ctx, pins)?;
    let deleted = read(&region.state)
        .tables
        .iter()
        .map(|(&id, t)| (id, t.deleted_up_to))
        .collect();
    Ok(EntryIter::new(locs, handles, 0, u64::MAX, deleted).populating_ahead())
}

/// The records among `locs` that readers may see (see
/// [`SegmentInfo::visible_len`](crate::index::SegmentInfo::visible_len)),
/// and the segments they lie in. A record in a segment no longer indexed
/// (removed since the locations were taken) is left out: its entries were
/// all deleted.
fn visible(
    segments: &Segments,
    locs: Vec<RecordLoc>,
    ctx: &Context,
) -> (Vec<RecordLoc>, BTreeMap<u64, Pin>) {
    let mut pins = BTreeMap::new();
    let locs = locs
        .into_iter()
        .filter(|loc| {
            let Some(info) = segments.get(&loc.segment_id) else {
                return false;
            };
            if loc.offset >= info.visible_len(ctx.config.sync_mode) {
                return false;
            }
            pins.entry(loc.segment_id)
                .or_insert_with(|| match &info.active {
                    Some(handle) => Pin::Open(handle.clone()),
                    None => Pin::Sealed {
                        stream_id: info.stream_id,
                        len: info.len,
                    },
                });
            true
        })
        .collect();
    (locs, pins)
}

/// Handles to the segments a read needs, from the cache or reopened
/// (without holding any lock while files are opened). A segment deleted
/// since the snapshot is left out.
///
/// Every cached handle is taken before any segment is reopened: caching a
/// reopened segment may evict another one this read needs, and a handle
/// already taken keeps that one mapped. Taken one at a time in order, a
/// scan of more segments than the cache holds would evict each segment
/// just before reaching it, and reopen them all.
fn pin(ctx: &Context, pins: BTreeMap<u64, Pin>) -> Result<HashMap<u64, SegmentHandle>> {
    let mut handles = HashMap::with_capacity_and_hasher(pins.len(), Default::default());
    let mut missing = Vec::new();
    for (segment_id, pin) in pins {
        let handle = match pin {
            Pin::Open(handle) => handle,
            Pin::Sealed { stream_id, len } => match ctx.cache.get(segment_id) {
                Some(handle) => handle,
                None => {
                    missing.push((segment_id, stream_id, len));
                    continue;
                }
            },
        };
        handles.insert(segment_id, handle);
    }
    for (segment_id, stream_id, len) in missing {
        let identity = SegmentIdentity {
            stream_id,
            segment_id,
        };
        let opened = Segment::open_sealed(&ctx.segment_path(segment_id), identity, len);
        // Cached only while the segment is still indexed, checked under the
        // segment table's lock, which removal holds when it clears the
        // cache.
        let segments = read(&ctx.segments);
        let indexed = segments.contains_key(&segment_id);
        let handle = match opened {
            Ok(handle) => {
                ctx.stats.segments_reopened.fetch_add(1, Ordering::Relaxed);
                if indexed {
                    ctx.cache.insert(segment_id, handle.clone());
                }
                handle
            }
            Err(_) if !indexed => continue,
            Err(source) => return Err(source).context(SegmentSnafu),
        };
        handles.insert(segment_id, handle);
    }
    Ok(handles)
}
