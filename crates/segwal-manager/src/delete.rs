//! Deletes, and the removal of segments left with nothing live.
//!
//! A delete appends one entry to the META log (durably) and only then drops
//! the table's deleted records from the index, so a restart never brings
//! them back; its cost does not depend on how many tables or regions there
//! are. Each dropped record lowers its segment's live count; a sealed
//! segment whose count reaches zero is removed, after the META log has
//! recorded every table's largest sequence number that only the removed
//! segments could still prove.

use std::sync::atomic::Ordering;

use segwal_format::MetaEntry;
use segwal_segment::Segment;
use snafu::ResultExt;

use crate::context::Context;
use crate::error::{Result, SegmentSnafu};
use crate::index::Region;
use crate::locks::{lock, read, write};

/// Deletes `table_id`'s entries up to `sequence` (clamped to the table's
/// largest sequence number), durably. Returns whether a segment may have
/// died (the caller then runs [`remove_dead_segments`]), or `None` if
/// `region` was closed before the delete began: its index is no longer the
/// one reads use, and the caller applies the delete to the region
/// reopened.
pub(crate) fn mark_delete(
    ctx: &Context,
    region: &Region,
    table_id: u64,
    sequence: u64,
) -> Result<Option<bool>> {
    let _deleting = lock(&region.deleting);
    let up_to = {
        let state = read(&region.state);
        if region.closed.load(Ordering::Acquire) {
            return Ok(None);
        }
        let Some(table) = state.tables.get(&table_id) else {
            return Ok(Some(false));
        };
        let up_to = sequence.min(table.max_sequence);
        if up_to <= table.deleted_up_to {
            return Ok(Some(false));
        }
        up_to
    };
    ctx.meta.append(&[MetaEntry::DeleteMark {
        region_id: region.id,
        table_id,
        deleted_up_to: up_to,
    }])?;
    ctx.stats.meta_writes.fetch_add(1, Ordering::Relaxed);
    let mut dropped = Vec::new();
    {
        let mut state = write(&region.state);
        debug_assert!(
            !region.closed.load(Ordering::Acquire),
            "close_region waits for `deleting`"
        );
        let table = state.tables.entry(table_id).or_default();
        table.deleted_up_to = table.deleted_up_to.max(up_to);
        while let Some(front) = table.records.front()
            && front.last <= table.deleted_up_to
        {
            dropped.push(*front);
            table.records.pop_front();
        }
    }
    let segments = read(&ctx.segments);
    let mut maybe_dead = false;
    for loc in &dropped {
        let info = &segments[&loc.segment_id];
        info.live.remove(u64::from(loc.len));
        maybe_dead |= info.is_dead();
    }
    Ok(Some(maybe_dead))
}

/// Removes every sealed segment with nothing live: first the META log
/// records each table's largest sequence number it does not hold yet
/// (`tables` lists every table's, as (region, table) and number), then the
/// segments leave the index and the cache, then their files go, each with
/// its directory synced.
pub(crate) fn remove_dead_segments(
    ctx: &Context,
    tables: impl FnOnce() -> Vec<((u64, u64), u64)>,
) -> Result<()> {
    let _serial = lock(&ctx.purging);
    let dead: Vec<u64> = read(&ctx.segments)
        .iter()
        .filter(|(_, info)| info.is_dead())
        .map(|(&id, _)| id)
        .collect();
    if dead.is_empty() {
        return Ok(());
    }
    let maxes = ctx.meta.unrecorded_maxes(tables());
    if !maxes.is_empty() {
        ctx.meta.append(&maxes)?;
        ctx.stats.meta_writes.fetch_add(1, Ordering::Relaxed);
    }
    {
        let mut segments = write(&ctx.segments);
        for id in &dead {
            let removed = segments
                .remove(id)
                .expect("listed above, under the purge lock");
            assert!(removed.is_dead(), "segment {id} came back to life");
            // After the removal from the index, under its lock: no reader
            // can cache the segment again (see `Region` reads' `pin`).
            ctx.cache.remove(*id);
        }
    }
    ctx.meta.forget_segments(&dead);
    for segment_id in dead {
        Segment::delete_file(&ctx.segment_path(segment_id)).context(SegmentSnafu)?;
        ctx.stats.segments_deleted.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}
