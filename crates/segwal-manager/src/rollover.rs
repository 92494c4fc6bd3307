//! Rollover: sealing a stream's full segment and putting the next one in
//! place, prepared ahead of need so that no write waits for a segment to be
//! created.
//!
//! A stream prepares at most one spare at a time, so the disk set aside
//! ahead of need is bounded per stream (the active segment and one spare),
//! never per region. The spare is prepared from the first write to a new
//! active segment on, on a thread of its own, which creates it under a
//! temporary name, preallocates and syncs it, and renames it to its final
//! name (syncing the directory): a rollover only switches to it. A
//! zero-filled spare's zeros are spread over half the time the active
//! segment is expected to take to fill (`ManagerConfig::zero_fill_spread`),
//! so that they never flood the disk the writers sync to; a rollover that
//! finds them unfinished hurries the spare (the rest of its blocks
//! reserved) rather than waiting.
//!
//! A segment wanted at once (the first after open, or one a rollover must
//! create itself) is only reserved, so that no write waits for zeros;
//! under `SyncMode::Always` each sync into it also commits extent
//! conversions. So once a zero-filled spare is ready while such a segment
//! is less than half full, the next write rolls over early (unless the
//! file system could not give blocks back before): the reserved segment
//! is sealed and gives back the blocks past its records
//! (`Segment::release_unused`), as does any segment sealed with much room
//! left (at a close). Recovery tells a prepared spare
//! (untouched past its header) from the active segment it follows (see
//! `judge::prepared_spares`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use segwal_format::{SEGMENT_HEADER_LEN, SegmentIdentity};
use segwal_segment::{Preallocation, Segment, ZeroFillPace};
use snafu::ResultExt;

use crate::context::Context;
use crate::error::{Result, SegmentSnafu};
use crate::index::{Live, SegmentInfo};
use crate::locks::write;
use crate::spare::Spare;
use crate::stream::{Stream, Writer, elapsed_nanos, lost_after};

/// A segment sealed with at least this much room left gives back the
/// blocks past its records; a full segment's last few bytes are not worth
/// the call.
const RELEASE_MIN_TAIL: u64 = 1 << 20;

impl Stream {
    /// Makes sure the active segment can take `record_len` more bytes: if
    /// not, syncs and seals it and puts the next one in place (sized to fit
    /// a batch larger than the configured segment size). Also leaves a
    /// reserved active segment early for a zero-filled spare that is ready
    /// (see the module docs).
    pub(crate) fn ensure_room(
        &self,
        writer: &mut Writer,
        record_len: u64,
        ctx: &Context,
    ) -> Result<()> {
        let early = self.leaves_early(writer);
        if !early
            && writer
                .active
                .as_ref()
                .is_some_and(|s| s.remaining() >= record_len)
        {
            return Ok(());
        }
        if let Some(full) = &writer.active {
            // A sealed segment must be durable before anything in its
            // successor is acknowledged: recovery relies on sealed segments
            // ending cleanly. This is the one sync under the writer lock,
            // once per segment. If it fails the segment stays active (and
            // poisoned): the stream refuses writes until it is recovered.
            let batches = self.group.take_batches();
            let started = Instant::now();
            if let Err(source) = full.sync() {
                let lost_after =
                    lost_after(&source, full.identity().segment_id, full.durable_len());
                self.record_failure(writer, ctx, lost_after);
                return Err(source).context(SegmentSnafu);
            }
            ctx.stats.record_sync(elapsed_nanos(started), batches);
            let full = writer.active.take().expect("checked above");
            writer.fill_rate = writer.active_since.map(|since| {
                let written = full.written_len() - SEGMENT_HEADER_LEN as u64;
                written as f64 / since.elapsed().as_secs_f64().max(1e-6)
            });
            self.seal(full, ctx);
            if early {
                ctx.stats.early_rollovers.fetch_add(1, Ordering::Relaxed);
            }
        }
        let needed = SEGMENT_HEADER_LEN as u64 + record_len;
        let (mut segment, preallocation) = match self.take_spare(writer, needed, ctx) {
            Some(taken) => taken,
            None => (
                self.create_segment(needed, ctx)?,
                ctx.config.preallocation_at_once(),
            ),
        };
        // The one place a segment becomes a stream's active one: every
        // record appended from here on is compressed as configured.
        segment.set_codec(ctx.config.compression);
        let segment_id = segment.identity().segment_id;
        let live = Arc::new(Live::default());
        write(&ctx.segments).insert(
            segment_id,
            SegmentInfo {
                stream_id: self.id,
                active: Some(segment.handle()),
                len: 0,
                file_bytes: segment.capacity(),
                live: Arc::clone(&live),
            },
        );
        ctx.stats.segments_created.fetch_add(1, Ordering::Relaxed);
        writer.active = Some(segment);
        writer.active_live = live;
        writer.active_since = Some(Instant::now());
        writer.active_reserved = preallocation == Preallocation::Reserved;
        writer.writeback_from = SEGMENT_HEADER_LEN as u64;
        Ok(())
    }

    /// Creates the next segment while the writer waits (no spare was
    /// ready): under the temporary name first, as a spare is, so that a
    /// crash during creation never leaves a half-written file under a
    /// segment's name.
    fn create_segment(&self, needed: u64, ctx: &Context) -> Result<Segment> {
        let segment_id = ctx.next_segment_id.fetch_add(1, Ordering::AcqRel);
        let capacity = ctx.config.segment_size_bytes.max(needed);
        let mut segment = Segment::create(
            &ctx.spare_path(segment_id),
            self.identity(segment_id),
            capacity,
            ctx.config.preallocation_at_once(),
        )
        .context(SegmentSnafu)?;
        if let Err(source) = segment.rename(&ctx.segment_path(segment_id)) {
            let _ = segment.delete();
            return Err(source).context(SegmentSnafu);
        }
        Ok(segment)
    }

    fn identity(&self, segment_id: u64) -> SegmentIdentity {
        SegmentIdentity {
            stream_id: self.id,
            segment_id,
        }
    }

    /// Starts preparing the next segment in the background as soon as the
    /// active one has taken its first write, so that the rollover finds it
    /// ready (creating a segment may write its whole length): it has the
    /// whole time the active segment takes to fill. Its preallocation
    /// follows the rate at which the last segment filled.
    pub(crate) fn prepare_spare(&self, writer: &mut Writer, ctx: &Context) {
        if writer.spare.is_some() || writer.active.is_none() {
            return;
        }
        let preallocation = ctx
            .config
            .preallocation(writer.fill_rate, ctx.memory_backed);
        let pace = ZeroFillPace::spread_over(ctx.config.zero_fill_spread(writer.fill_rate));
        self.spawn_spare(writer, preallocation, pace, ctx);
    }

    /// Creates the next segment on a thread of its own, under its
    /// temporary name, its zeros (if any) written at `pace`, then renames
    /// it to its final name, as the writer's spare. Without a thread the
    /// rollover creates the segment itself; the id stays unused.
    fn spawn_spare(
        &self,
        writer: &mut Writer,
        preallocation: Preallocation,
        pace: ZeroFillPace,
        ctx: &Context,
    ) {
        let segment_id = ctx.next_segment_id.fetch_add(1, Ordering::AcqRel);
        let path = ctx.spare_path(segment_id);
        let final_path = ctx.segment_path(segment_id);
        let identity = self.identity(segment_id);
        let capacity = ctx.config.segment_size_bytes;
        let pace = Arc::new(pace);
        let paced = Arc::clone(&pace);
        let created = Arc::new(AtomicBool::new(false));
        let done = Arc::clone(&created);
        let spawned = std::thread::Builder::new()
            .name(format!("segwal-spare-{}", self.id))
            .spawn(move || {
                let mut segment =
                    Segment::create_paced(&path, identity, capacity, preallocation, &paced)?;
                if let Err(err) = segment.rename(&final_path) {
                    let _ = segment.delete();
                    return Err(err);
                }
                done.store(true, Ordering::Release);
                Ok(segment)
            });
        if let Ok(creating) = spawned {
            writer.spare = Some(Spare {
                segment_id,
                preallocation,
                pace,
                creating: Some(creating),
                created,
            });
        }
    }

    /// Starts preparing a stream's first segment at open, so that the
    /// first write of a new data dir, or after a restart, does not wait
    /// for it: by default it is reserved with `fallocate` rather than
    /// zero-filled, which is nearly free
    /// (`ManagerConfig::preallocation_at_once`).
    pub(crate) fn prepare_first(&self, ctx: &Context) {
        let mut writer = self.writer.lock();
        if writer.spare.is_some() || writer.active.is_some() {
            return;
        }
        let preallocation = ctx.config.preallocation_at_once();
        self.spawn_spare(&mut writer, preallocation, ZeroFillPace::default(), ctx);
    }

    /// The prepared segment and how its blocks were set aside, if there is
    /// one, it was created successfully and it can hold `needed` bytes.
    /// Otherwise the spare is discarded and the caller creates a segment
    /// itself. A spare whose zeros are still being written is hurried (the
    /// rest of its blocks reserved): the writers wait for that, not for the
    /// rest of the zeros.
    fn take_spare(
        &self,
        writer: &mut Writer,
        needed: u64,
        ctx: &Context,
    ) -> Option<(Segment, Preallocation)> {
        let spare = writer.spare.take()?;
        let (segment_id, preallocation) = (spare.segment_id, spare.preallocation);
        let (segment, hurried) = spare.finish();
        // None: creation failed and removed its file; the id stays unused.
        let segment = segment?;
        debug_assert_eq!(segment.identity().segment_id, segment_id);
        if segment.capacity() >= needed {
            ctx.stats.spares_used.fetch_add(1, Ordering::Relaxed);
            if hurried {
                ctx.stats.spares_hurried.fetch_add(1, Ordering::Relaxed);
            }
            return Some((segment, preallocation));
        }
        // Too small for this batch. Best effort: were it left behind,
        // recovery would remove it as an untouched spare, and the
        // synchronous creation that follows reports any real trouble with
        // the disk.
        let _ = segment.delete();
        None
    }

    /// Marks the active segment `full` sealed (after its final sync) and
    /// hands its handle to the open-segment cache, under the segment
    /// table's lock. The writer's exclusive file lock is let go of before,
    /// so a reader that finds the segment sealed may reopen it (a shared
    /// lock) at once. A segment sealed with much room left gives back the
    /// blocks past its records first: best effort, since a failure leaves
    /// them allocated and the records untouched.
    pub(crate) fn seal(&self, full: Segment, ctx: &Context) {
        let segment_id = full.identity().segment_id;
        let (len, capacity, handle) = (full.written_len(), full.capacity(), full.handle());
        let file_bytes = if full.remaining() >= RELEASE_MIN_TAIL {
            let kept = full.release_unused().unwrap_or(capacity);
            if kept == capacity {
                // Unsupported (or failed): an early rollover would leave
                // the reserved room behind, allocated.
                self.cannot_release.store(true, Ordering::Relaxed);
            }
            kept
        } else {
            drop(full);
            capacity
        };
        let mut segments = write(&ctx.segments);
        if let Some(info) = segments.get_mut(&segment_id) {
            info.active = None;
            info.len = len;
            info.file_bytes = file_bytes;
            ctx.cache.insert(segment_id, handle);
        }
    }

    /// Whether the writes leave the active segment before it is full: it is
    /// reserved, less than half of it is written (else its own rollover
    /// comes soon enough), its room left is large enough to be given back
    /// and the file system gives blocks back (so that leaving early costs
    /// no disk), and a zero-filled spare is ready.
    fn leaves_early(&self, writer: &Writer) -> bool {
        writer.active_reserved
            && writer.active.as_ref().is_some_and(|active| {
                let body = active.capacity() - SEGMENT_HEADER_LEN as u64;
                let written = active.written_len() - SEGMENT_HEADER_LEN as u64;
                written < body / 2 && active.remaining() >= RELEASE_MIN_TAIL
            })
            && !self.cannot_release.load(Ordering::Relaxed)
            && writer.spare.as_ref().is_some_and(Spare::is_ready_zeroed)
    }
}
