//! One stream of the shared log: its writer, its sequence numbers, its
//! group commit. Every region mapped to the stream appends here.
//!
//! # Locks
//!
//! Taken only in this order, never the reverse:
//!
//! 1. `writer`: the active segment, the spare being prepared and the next
//!    sequence number of every region of the stream. Held while a batch is
//!    numbered, encoded and written (one `pwrite`), and while a full
//!    segment is synced and sealed at rollover (`rollover.rs`). A synced
//!    write by a writer alone in the stream (`writing` is 1) also holds it
//!    across the write's own sync: one system call,
//!    `Segment::append_durable`. A write waits for it at most
//!    `STARVING_AFTER`, then has the next holder append its batch
//!    (`waiting.rs`).
//! 2. The META log's locks (`meta.rs`), taken by a failure's report.
//! 3. The segment table (`Context::segments`), at rollover.
//! 4. A region's `state` (the index), held briefly to publish a record.
//! 5. The open-segment cache, a leaf.
//!
//! The region map (`manager.rs`) and a region's `deleting` lock (held by a
//! delete across its META sync, and by `close_region`) come before all of
//! these.
//!
//! `group`'s lock (group commit, `group.rs`) is never held together with
//! another lock, and never across a sync.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use rustc_hash::FxHashMap as HashMap;
use segwal_format::MetaEntry;
use segwal_segment::{BatchRef, Segment, SegmentHandle};
use snafu::{ResultExt, ensure};

use crate::config::SyncMode;
use crate::context::Context;
use crate::error::{ClosedSnafu, RegionFailedSnafu, Result, SequenceExhaustedSnafu, WriteSnafu};
use crate::group::GroupCommit;
use crate::index::{Live, Region};
use crate::locks::write;
use crate::read::RecordLoc;
use crate::spare::Spare;
use crate::waiting::{OwnedBatch, STARVING_AFTER, StarvingQueue, Waiter};

/// How much of a segment written without syncs (`SyncMode::Never`,
/// `Interval`) may be waiting in the page cache before its write-back to
/// disk is started: so that the disk writes a segment while it fills, and
/// the sync at rollover, under the writer lock, waits for one chunk rather
/// than the whole segment.
pub const WRITEBACK_CHUNK_BYTES: u64 = 4 << 20;

/// The writer's side of a stream.
#[derive(Debug)]
pub(crate) struct Writer {
    pub(crate) active: Option<Segment>,
    /// The active segment's live counters.
    pub(crate) active_live: Arc<Live>,
    /// When the active segment became the active one: a write needed it.
    pub(crate) active_since: Option<Instant>,
    /// How fast the last sealed segment filled, in bytes per second: it
    /// decides how the next spare is preallocated.
    pub(crate) fill_rate: Option<f64>,
    /// Whether the active segment's blocks were reserved rather than
    /// zero-filled: under `SyncMode::Always` the writes move to a zeroed
    /// spare as soon as one is ready (see `rollover.rs`).
    pub(crate) active_reserved: bool,
    /// Where in the active segment write-back was last started up to (see
    /// [`WRITEBACK_CHUNK_BYTES`]).
    pub(crate) writeback_from: u64,
    pub(crate) spare: Option<Spare>,
    /// The next sequence number of each region of the stream that has one
    /// other than 1. Kept while a region is closed: numbers are never
    /// reused.
    pub(crate) sequences: HashMap<u64, u64>,
}

/// What appending one batch gave.
#[derive(Debug)]
pub(crate) struct Appended {
    /// The segment the record went to.
    handle: SegmentHandle,
    /// The record's end offset in it.
    end: u64,
    /// The batch's last sequence number.
    last: u64,
}

/// One stream of the shared log.
#[derive(Debug)]
pub(crate) struct Stream {
    pub(crate) id: u64,
    pub(crate) writer: parking_lot::Mutex<Writer>,
    /// Writers that waited too long for `writer` (see `waiting.rs`).
    starving: StarvingQueue<Result<Appended>>,
    pub(crate) group: GroupCommit,
    /// Threads inside `write` (under `SyncMode::Always` only; else 0).
    writing: AtomicUsize,
    /// Set once giving back a sealed segment's room failed or is not
    /// supported: the writes then no longer leave a segment early (see
    /// `rollover.rs`).
    pub(crate) cannot_release: AtomicBool,
    /// Set (under `writer`) by the first failed write or sync: the stream
    /// refuses writes from then on (see `record_failure`).
    failed: AtomicBool,
    /// Set by `close`; later writes fail.
    closed: AtomicBool,
}

/// Starving writers' batches a holder of the writer lock took to append.
/// If the holder panics (a bug) before it has appended them all, the rest
/// get an error rather than waiting for ever.
struct Handover<'a> {
    starving: &'a StarvingQueue<Result<Appended>>,
    /// Not appended yet, oldest first.
    batches: VecDeque<(Arc<Waiter<Result<Appended>>>, OwnedBatch)>,
}

impl Drop for Handover<'_> {
    fn drop(&mut self) {
        for (waiter, batch) in self.batches.drain(..) {
            let refused = RegionFailedSnafu {
                region_id: batch.region.id,
            }
            .fail();
            self.starving.complete(&waiter, refused);
        }
    }
}

impl Stream {
    /// Stream `id`, with the next sequence numbers recovery found for its
    /// regions. It has no active segment: the first write creates one.
    pub(crate) fn new(id: u64, sequences: HashMap<u64, u64>, ctx: &Context) -> Stream {
        Stream {
            id,
            writer: parking_lot::Mutex::new(Writer {
                active: None,
                active_live: Arc::default(),
                active_since: None,
                fill_rate: None,
                active_reserved: false,
                writeback_from: 0,
                spare: None,
                sequences,
            }),
            starving: StarvingQueue::default(),
            group: GroupCommit::new(id, ctx.config.yield_while_syncing),
            writing: AtomicUsize::new(0),
            cannot_release: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    /// The next sequence number of `region_id`.
    #[cfg(test)]
    pub(crate) fn next_sequence(&self, region_id: u64) -> u64 {
        self.writer
            .lock()
            .sequences
            .get(&region_id)
            .copied()
            .unwrap_or(1)
    }

    /// Whether the stream was closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Whether a write or sync failed: the stream refuses writes.
    pub(crate) fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Appends `entries` (already validated) for `table_id` of `region`
    /// and returns the last sequence number once the batch is durable per
    /// the sync mode.
    ///
    /// A writer alone in the stream syncs its write in the same system call
    /// (`Segment::append_durable`), holding the writer lock across it. A
    /// writer that comes meanwhile waits for the lock instead of appending
    /// at once, but no longer than it would have waited for the next
    /// group's sync, which cannot start before this one ends. With others
    /// about, a write is an append and then group commit.
    pub(crate) fn write<E: AsRef<[u8]>>(
        &self,
        region: &Arc<Region>,
        table_id: u64,
        entries: &[E],
        ctx: &Context,
    ) -> Result<u64> {
        if ctx.config.sync_mode != SyncMode::Always {
            let appended = self.append_locked(region, table_id, entries, false, ctx)?;
            return Ok(appended.last);
        }
        let writing = Writing::enter(&self.writing);
        let alone = writing.alone();
        let appended = self.append_locked(region, table_id, entries, alone, ctx)?;
        if appended.handle.durable_len() < appended.end {
            self.wait_durable(region.id, table_id, &appended, ctx)?;
        }
        Ok(appended.last)
    }

    /// Appends the batch with the writer lock: taken at once, or, for a
    /// writer kept from it for `STARVING_AFTER`, by its next holder (see
    /// `waiting.rs`).
    fn append_locked<E: AsRef<[u8]>>(
        &self,
        region: &Arc<Region>,
        table_id: u64,
        entries: &[E],
        durable: bool,
        ctx: &Context,
    ) -> Result<Appended> {
        if let Some(mut writer) = self.writer.try_lock_for(STARVING_AFTER) {
            let appended = self.append(&mut writer, region, table_id, entries, durable, ctx);
            self.release_writer(writer, ctx);
            return appended;
        }
        let waiter = self
            .starving
            .starve(OwnedBatch::copy(region, table_id, entries));
        loop {
            if let Some(appended) = self.starving.take_done(&waiter) {
                return appended;
            }
            if let Some(mut writer) = self.writer.try_lock() {
                let appended = self
                    .starving
                    .leave(&waiter)
                    .then(|| self.append(&mut writer, region, table_id, entries, false, ctx));
                self.release_writer(writer, ctx);
                match appended {
                    Some(appended) => return appended,
                    // A holder appended the batch (and left its outcome)
                    // between the check above and this lock.
                    None => continue,
                }
            }
            std::thread::park_timeout(STARVING_AFTER);
        }
    }

    /// Numbers, encodes and writes one batch (already validated) with the
    /// writer lock held, then publishes it in the region's index; if
    /// `durable`, makes it durable too, with everything before it, in one
    /// system call where it can (`Segment::append_durable`).
    fn append<E: AsRef<[u8]>>(
        &self,
        writer: &mut Writer,
        region: &Arc<Region>,
        table_id: u64,
        entries: &[E],
        durable: bool,
        ctx: &Context,
    ) -> Result<Appended> {
        let region_id = region.id;
        ensure!(
            !self.closed.load(Ordering::Acquire) && !region.closed.load(Ordering::Acquire),
            ClosedSnafu
        );
        ensure!(
            !self.failed.load(Ordering::Acquire),
            RegionFailedSnafu { region_id }
        );
        let first = writer.sequences.get(&region_id).copied().unwrap_or(1);
        let count = entries.len() as u64;
        let last = first
            .checked_add(count - 1)
            .filter(|&last| last < u64::MAX)
            .ok_or_else(|| SequenceExhaustedSnafu { region_id }.build())?;
        let record_len = segwal_format::record_len(entries);
        self.ensure_room(writer, record_len, ctx)?;
        let segment = writer
            .active
            .as_mut()
            .expect("ensure_room leaves an active segment");
        let segment_id = segment.identity().segment_id;
        let batch = BatchRef {
            region_id,
            table_id,
            first_sequence: first,
            entries,
        };
        debug_assert!(first >= 1 && last >= first && last < u64::MAX);
        let started = Instant::now();
        let appended = if durable {
            segment.append_durable(&batch)
        } else {
            segment.append(&batch)
        };
        let nanos = elapsed_nanos(started);
        // From here the numbers are used, whatever the outcome: a failed
        // write never gives them back (its bytes may yet be on disk).
        writer.sequences.insert(region_id, last + 1);
        let range = match appended {
            Ok(range) => range,
            Err(source) => {
                // The segment is poisoned and stays the active one; the
                // stream refuses writes until the WAL is recovered from
                // disk, no further than its last sync if a sync failed.
                let lost_after = lost_after(&source, segment_id, segment.durable_len());
                self.record_failure(writer, ctx, lost_after);
                return Err(source).context(WriteSnafu {
                    region_id,
                    table_id,
                });
            }
        };
        if durable {
            ctx.stats.record_sync(nanos, 1);
            ctx.stats.synced_writes.fetch_add(1, Ordering::Relaxed);
        } else {
            self.group.appended();
        }
        let loc = RecordLoc {
            first,
            last,
            segment_id,
            offset: range.start,
            len: u32::try_from(range.end - range.start).expect("a record fits its length field"),
        };
        publish(region, table_id, loc);
        writer.active_live.add(u64::from(loc.len));
        ctx.stats.record_write(count, range.end - range.start);
        self.after_append(writer, range.end, ctx);
        Ok(Appended {
            handle: writer.active.as_ref().expect("appended to it").handle(),
            end: range.end,
            last,
        })
    }

    /// What follows every append: write-back started early (unsynced
    /// modes) and the next segment prepared if it is not yet.
    pub(crate) fn after_append(&self, writer: &mut Writer, end: u64, ctx: &Context) {
        if ctx.config.sync_mode != SyncMode::Always
            && end - writer.writeback_from >= WRITEBACK_CHUNK_BYTES
        {
            let segment = writer.active.as_ref().expect("appended to it");
            writer.writeback_from = segment.start_writeback(writer.writeback_from);
            ctx.stats.writebacks.fetch_add(1, Ordering::Relaxed);
        }
        self.prepare_spare(writer, ctx);
    }

    /// Lets go of the writer lock after a write, having first appended
    /// every starving writer's batch, oldest first.
    fn release_writer(&self, mut writer: parking_lot::MutexGuard<'_, Writer>, ctx: &Context) {
        let batches = self.starving.take();
        if batches.is_empty() {
            // The common case, kept free of the hand-over's bookkeeping.
            return;
        }
        let mut handover = Handover {
            starving: &self.starving,
            batches: batches.into(),
        };
        while let Some((waiter, batch)) = handover.batches.front() {
            let entries = batch.entries();
            let appended = self.append(
                &mut writer,
                &batch.region,
                batch.table_id,
                &entries,
                false,
                ctx,
            );
            if appended.is_ok() {
                ctx.stats.starved_writes.fetch_add(1, Ordering::Relaxed);
            }
            self.starving.complete(waiter, appended);
            handover.batches.pop_front();
        }
    }

    /// After a failed write or sync: stops the stream (later writes are
    /// refused before they use a sequence number) and records every
    /// region's sequence floor in the META log, so that no restart reuses
    /// a number a failed write may have used even if its bytes are lost.
    /// Holding the writer lock (`writer`) keeps sequence allocation still
    /// while the floors are read.
    ///
    /// After a failed sync, `lost_after` is the segment and its last good
    /// durable offset. The kernel may have dropped the writes after it
    /// while still showing them in the page cache (and may report the next
    /// sync of the file as a success), so that end is recorded too:
    /// recovery reads nothing past it.
    ///
    /// Recording is best effort here: the caller reports the original
    /// error. What the META log refuses is kept in memory, and the next
    /// open of the data dir in this process records it first, or fails.
    pub(crate) fn record_failure(
        &self,
        writer: &Writer,
        ctx: &Context,
        lost_after: Option<(u64, u64)>,
    ) {
        let first = !self.failed.swap(true, Ordering::AcqRel);
        if !first && lost_after.is_none() {
            return;
        }
        let mut entries: Vec<MetaEntry> = Vec::new();
        if first {
            entries.extend(writer.sequences.iter().map(|(&region_id, &next_sequence)| {
                MetaEntry::SequenceFloor {
                    region_id,
                    next_sequence,
                }
            }));
        }
        if let Some((segment_id, end)) = lost_after {
            entries.push(MetaEntry::SegmentEnd { segment_id, end });
        }
        ctx.meta.keep_unrecorded(&entries);
        if ctx.meta.append(&entries).is_ok() {
            ctx.stats.meta_writes.fetch_add(1, Ordering::Relaxed);
            ctx.meta.recorded(&entries);
        }
    }

    /// Group commit: returns once the appended record is durable, synced
    /// by this writer if it leads, by another's sync, or by the flusher
    /// (see `group.rs`).
    fn wait_durable(
        &self,
        region_id: u64,
        table_id: u64,
        appended: &Appended,
        ctx: &Context,
    ) -> Result<()> {
        let Some(synced) = self.group.wait(&appended.handle, appended.end) else {
            return Ok(());
        };
        match synced.outcome {
            Ok(durable) => {
                ctx.stats.record_sync(synced.nanos, synced.batches);
                if synced.by_flusher {
                    ctx.stats.flusher_syncs.fetch_add(1, Ordering::Relaxed);
                }
                assert!(
                    durable >= appended.end,
                    "a sync of its own segment covers the writer it was made for"
                );
                Ok(())
            }
            Err(source) => {
                let handle = &appended.handle;
                let lost_after =
                    lost_after(&source, handle.header().segment_id, handle.durable_len());
                self.record_failure(&self.writer.lock(), ctx, lost_after);
                Err(source).context(WriteSnafu {
                    region_id,
                    table_id,
                })
            }
        }
    }

    /// Syncs the active segment, if any (for `SyncMode::Interval`, and to
    /// make a region's writes durable when it is closed).
    pub(crate) fn sync_active(&self, ctx: &Context) -> Result<()> {
        let handle = self.writer.lock().active.as_ref().map(Segment::handle);
        if let Some(handle) = handle
            && handle.durable_len() < handle.written_len()
        {
            let batches = self.group.take_batches();
            let started = Instant::now();
            if let Err(source) = handle.sync() {
                let lost_after =
                    lost_after(&source, handle.header().segment_id, handle.durable_len());
                self.record_failure(&self.writer.lock(), ctx, lost_after);
                return Err(source).context(crate::error::SegmentSnafu);
            }
            ctx.stats.record_sync(elapsed_nanos(started), batches);
        }
        Ok(())
    }

    /// Syncs and seals the active segment and discards a prepared spare;
    /// later writes fail.
    pub(crate) fn close(&self, ctx: &Context) -> Result<()> {
        let mut writer = self.writer.lock();
        self.closed.store(true, Ordering::Release);
        let mut result = Ok(());
        if let Some(spare) = writer.spare.take()
            && let (Some(segment), _) = spare.finish()
        {
            result = segment.delete();
        }
        if let Some(active) = writer.active.take() {
            let (segment_id, durable) = (active.identity().segment_id, active.durable_len());
            if let Err(err) = active.sync() {
                let lost_after = lost_after(&err, segment_id, durable);
                if lost_after.is_some() {
                    self.record_failure(&writer, ctx, lost_after);
                }
                result = result.and(Err(err));
            }
            self.seal(active, ctx);
        }
        result.context(crate::error::SegmentSnafu)
    }
}

/// Publishes a record just appended for `table_id` in `region`'s index,
/// where readers find it (once durable, under `SyncMode::Always`).
fn publish(region: &Region, table_id: u64, loc: RecordLoc) {
    let mut state = write(&region.state);
    let table = state.tables.entry(table_id).or_default();
    table.max_sequence = loc.last;
    let in_order = table.push(loc);
    debug_assert!(in_order, "a stream numbers each region's batches in order");
}

/// For a failed sync or synced write, or a refusal by a segment poisoned
/// by one, the segment and its last good durable offset, past which
/// nothing may be trusted (see `Stream::record_failure`).
///
/// The refusal counts too because the writer that saw the failure itself
/// may not be the first to report it: a writer parked in group commit can
/// find the segment poisoned first.
/// Nanoseconds since `started`, saturated.
pub(crate) fn elapsed_nanos(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

pub(crate) fn lost_after(
    err: &segwal_segment::Error,
    segment_id: u64,
    durable: u64,
) -> Option<(u64, u64)> {
    use segwal_segment::Error::{Poisoned, Sync, WriteSynced};
    matches!(
        err,
        Sync { .. }
            | WriteSynced { .. }
            | Poisoned {
                sync_failed: true,
                ..
            }
    )
    .then_some((segment_id, durable))
}

/// A thread inside `Stream::write`, counted in `Stream::writing` until it
/// leaves (however it leaves).
struct Writing<'a> {
    count: &'a AtomicUsize,
    /// The count, this writer included, when it entered.
    entered_as: usize,
}

impl<'a> Writing<'a> {
    fn enter(count: &'a AtomicUsize) -> Writing<'a> {
        let entered_as = count.fetch_add(1, Ordering::AcqRel) + 1;
        Writing { count, entered_as }
    }

    /// No other writer was inside `write` when this one entered.
    fn alone(&self) -> bool {
        self.entered_as == 1
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests;
