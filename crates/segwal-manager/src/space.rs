//! Who holds the disk: the tables whose live records pin the oldest
//! segments, so that an engine can flush (and then delete) them first.
//!
//! A segment of the shared log is removed only once every record in it is
//! deleted, so one table that is never flushed keeps every segment from its
//! oldest live record on. [`TablePin`]s name those tables and how many
//! bytes each keeps alive in sealed segments (raft-engine returns the same
//! list from each purge; GreptimeDB flushes the region that pins the oldest
//! file).

use rustc_hash::FxHashMap as HashMap;

use crate::index::{RegionSlot, Segments};
use crate::locks::read;

/// A table holding live records in sealed segments of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TablePin {
    /// The region.
    pub region_id: u64,
    /// The table.
    pub table_id: u64,
    /// The oldest sealed segment holding a live record of the table: no
    /// segment from this one on can be removed before the table's entries
    /// in it are deleted.
    pub oldest_segment_id: u64,
    /// Bytes of the table's live records in sealed segments.
    pub live_bytes: u64,
}

/// The tables with live records in sealed segments, those pinning the
/// oldest segment first (and among them the largest first), at most
/// `limit` of them.
pub(crate) fn oldest_pins<'a>(
    regions: impl Iterator<Item = (&'a u64, &'a RegionSlot)>,
    segments: &Segments,
    limit: usize,
) -> Vec<TablePin> {
    let sealed = |id: &u64| segments.get(id).is_some_and(|info| info.active.is_none());
    let mut pins: HashMap<(u64, u64), TablePin> = HashMap::default();
    let mut add = |region_id: u64, table_id: u64, segment_id: u64, bytes: u64| {
        let pin = pins.entry((region_id, table_id)).or_insert(TablePin {
            region_id,
            table_id,
            oldest_segment_id: segment_id,
            live_bytes: 0,
        });
        pin.oldest_segment_id = pin.oldest_segment_id.min(segment_id);
        pin.live_bytes += bytes;
    };
    for (&region_id, slot) in regions {
        match slot {
            RegionSlot::Open(region) => {
                let state = read(&region.state);
                for (&table_id, table) in &state.tables {
                    for loc in table.records.iter().filter(|loc| sealed(&loc.segment_id)) {
                        add(region_id, table_id, loc.segment_id, u64::from(loc.len));
                    }
                }
            }
            RegionSlot::Closed(closed) => {
                for (segment_id, tables) in closed.segments.iter().filter(|(id, _)| sealed(id)) {
                    for (&table_id, &bytes) in tables {
                        add(region_id, table_id, *segment_id, bytes);
                    }
                }
            }
        }
    }
    let mut pins: Vec<TablePin> = pins.into_values().collect();
    pins.sort_unstable_by_key(|p| {
        (
            p.oldest_segment_id,
            std::cmp::Reverse(p.live_bytes),
            p.region_id,
            p.table_id,
        )
    });
    pins.truncate(limit);
    pins
}
