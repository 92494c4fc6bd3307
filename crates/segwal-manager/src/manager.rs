//! The segment manager: the data dir, its lock, its streams and its
//! regions.

use std::fs::{File, TryLockError};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap as HashMap;
use segwal_format::{MAX_BODY_LEN, RECORD_HEADER_LEN};
use segwal_segment::disk;
use snafu::{ResultExt, ensure};

use crate::cache::SegmentCache;
use crate::config::{ManagerConfig, SyncMode};
use crate::context::Context;
use crate::delete::{mark_delete, remove_dead_segments};
use crate::error::{
    BatchTooLargeSnafu, ClosedSnafu, DataDirLockedSnafu, DirectorySnafu, EmptyBatchSnafu,
    EntryTooLargeSnafu, Error, NotADirectorySnafu, Result,
};
use crate::index::{ClosedRegion, Region, RegionSlot, RegionState};
use crate::locks::{lock, read, write};
use crate::meta::MetaLog;
use crate::read::EntryIter;
use crate::recovery::{recover, refuse_old_layout, reopen_region};
use crate::rewrite::{pick_victims, rewrite_segment};
use crate::snapshot::{read_table, scan_region};
use crate::space::{TablePin, oldest_pins};
use crate::stats::{Statistics, Stats};
use crate::stream::{Stream, elapsed_nanos};

/// How many of the tables pinning the oldest segments `statistics` lists.
const STATISTICS_PINS: usize = 8;

/// Name of the lock file in the data dir.
pub const LOCK_FILE: &str = "LOCK";

/// State shared with the interval-sync thread.
#[derive(Debug)]
struct Inner {
    ctx: Context,
    streams: Vec<Stream>,
    /// Every region the log knows of: open (indexed), or closed by
    /// `close_region` (a summary; reopened on its next use). A region
    /// never seen is created on first use, at no cost but its index.
    regions: RwLock<HashMap<u64, RegionSlot>>,
    closed: AtomicBool,
}

/// Stops the background threads when set.
#[derive(Debug, Default)]
struct Stop {
    stopped: Mutex<bool>,
    /// Wakes the interval-sync thread.
    wake: Condvar,
    /// Wakes the rewrite thread (after a delete, or to stop).
    rewrite: Condvar,
}

/// How often the rewrite thread looks at the log's dead bytes without
/// being woken by a delete.
const REWRITE_CHECK: Duration = Duration::from_secs(1);

/// A write-ahead log of many regions in one data dir, all sharing one log
/// (or a few streams of it). Synchronous and thread-safe: share it with
/// `Arc` and call it from any thread.
///
/// Opening it locks the data dir (a second open, in this process or
/// another, is refused) and recovers the log, its segments in parallel.
#[derive(Debug)]
pub struct SegmentManager {
    inner: Arc<Inner>,
    stop: Arc<Stop>,
    syncer: Option<JoinHandle<()>>,
    /// Joined by `close`, before the streams close: a pass in progress
    /// may append and remove files.
    rewriter: Mutex<Option<JoinHandle<()>>>,
    /// Held until `close` (or drop); the `flock` goes with it.
    lock: Mutex<Option<File>>,
}

impl SegmentManager {
    /// Validates `config`, locks the data dir (creating it if needed) and
    /// recovers the log found in it.
    pub fn open(config: ManagerConfig) -> Result<SegmentManager> {
        config.validate()?;
        let dir = &config.dir;
        ensure!(!dir.exists() || dir.is_dir(), NotADirectorySnafu { dir });
        disk::create_dir_all(dir).context(DirectorySnafu { dir })?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .context(DirectorySnafu { dir })?;
        lock_data_dir(&lock, dir, true)?;
        refuse_old_layout(dir)?;

        let (meta, meta_state) = MetaLog::open(dir, config.recovery_mode)?;
        let cache = SegmentCache::new(config.cache_size);
        let started = Instant::now();
        let recovered = recover(&config, &meta_state, &cache, recovery_threads())?;
        let stats = Stats::default();
        stats
            .recovery_nanos
            .store(elapsed_nanos(started), Ordering::Relaxed);
        let recovered_bytes = recovered.segments.values().map(|info| info.len).sum();
        stats
            .recovery_bytes
            .store(recovered_bytes, Ordering::Relaxed);
        let ctx = Context {
            memory_backed: disk::is_memory_backed(dir),
            cache,
            segments: RwLock::new(recovered.segments),
            next_segment_id: AtomicU64::new(recovered.next_segment_id),
            meta,
            purging: Mutex::default(),
            stats,
            config,
        };
        let stream_count = ctx.config.streams as u64;
        let mut sequences: Vec<HashMap<u64, u64>> = vec![HashMap::default(); stream_count as usize];
        for (region_id, next) in recovered.sequences {
            sequences[(region_id % stream_count) as usize].insert(region_id, next);
        }
        let streams = sequences
            .into_iter()
            .enumerate()
            .map(|(id, sequences)| Stream::new(id as u64, sequences, &ctx))
            .collect();
        let regions = recovered
            .regions
            .into_iter()
            .map(|(id, state)| (id, RegionSlot::Open(Arc::new(Region::new(id, state)))))
            .collect();
        let inner = Arc::new(Inner {
            ctx,
            streams,
            regions: RwLock::new(regions),
            closed: AtomicBool::new(false),
        });
        inner.remove_dead_segments()?;
        for stream in &inner.streams {
            stream.prepare_first(&inner.ctx);
        }
        let stop = Arc::new(Stop::default());
        let syncer = match inner.ctx.config.sync_mode {
            SyncMode::Interval(interval) => {
                let (inner, stop) = (Arc::clone(&inner), Arc::clone(&stop));
                Some(std::thread::spawn(move || {
                    interval_sync(&inner, &stop, interval)
                }))
            }
            _ => None,
        };
        let rewriter = (inner.ctx.config.max_dead_bytes != u64::MAX)
            .then(|| {
                let (inner, stop) = (Arc::clone(&inner), Arc::clone(&stop));
                std::thread::Builder::new()
                    .name("segwal-rewrite".into())
                    .spawn(move || background_rewrite(&inner, &stop))
                    .ok()
            })
            .flatten();
        Ok(SegmentManager {
            inner,
            stop,
            syncer,
            rewriter: Mutex::new(rewriter),
            lock: Mutex::new(Some(lock)),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &ManagerConfig {
        &self.inner.ctx.config
    }

    /// Fails with [`Error::Closed`](crate::Error::Closed) once the manager
    /// is closed; touches nothing.
    pub fn check_open(&self) -> Result<()> {
        ensure!(!self.inner.closed.load(Ordering::Acquire), ClosedSnafu);
        Ok(())
    }

    /// The stream region `region_id` writes to, its index and the context
    /// their calls take (for unit tests).
    #[cfg(test)]
    pub(crate) fn stream_for_test(&self, region_id: u64) -> (&Stream, Arc<Region>, &Context) {
        let region = self.region(region_id).unwrap();
        (self.stream(region_id), region, &self.inner.ctx)
    }

    /// Region `region_id`'s index: open already, reopened from the
    /// segments holding its records if it was closed, or new.
    fn region(&self, region_id: u64) -> Result<Arc<Region>> {
        self.check_open()?;
        let regions = &self.inner.regions;
        if let Some(RegionSlot::Open(region)) = read(regions).get(&region_id) {
            return Ok(Arc::clone(region));
        }
        let mut regions = write(regions);
        let state = match regions.get(&region_id) {
            Some(RegionSlot::Open(region)) => return Ok(Arc::clone(region)),
            Some(RegionSlot::Closed(closed)) => self.inner.reopen(region_id, closed)?,
            None => RegionState::default(),
        };
        let region = Arc::new(Region::new(region_id, state));
        regions.insert(region_id, RegionSlot::Open(Arc::clone(&region)));
        Ok(region)
    }

    /// The stream region `region_id` writes to.
    fn stream(&self, region_id: u64) -> &Stream {
        let streams = &self.inner.streams;
        &streams[(region_id % streams.len() as u64) as usize]
    }

    /// Appends `entries` as one batch for `table_id` of `region_id` and
    /// returns the last sequence number assigned, once the batch is durable
    /// per the sync mode. An empty or oversized batch is refused before any
    /// sequence number is used.
    pub fn write<E: AsRef<[u8]>>(
        &self,
        region_id: u64,
        table_id: u64,
        entries: &[E],
    ) -> Result<u64> {
        let config = &self.inner.ctx.config;
        ensure!(
            !entries.is_empty(),
            EmptyBatchSnafu {
                region_id,
                table_id
            }
        );
        for (index, entry) in entries.iter().enumerate() {
            let len = entry.as_ref().len();
            ensure!(
                len as u64 <= config.max_entry_size_bytes,
                EntryTooLargeSnafu {
                    region_id,
                    table_id,
                    index,
                    len,
                    max: config.max_entry_size_bytes
                }
            );
        }
        let record_len = segwal_format::record_len(entries);
        let max = RECORD_HEADER_LEN as u64 + u64::from(MAX_BODY_LEN);
        ensure!(
            record_len <= max,
            BatchTooLargeSnafu {
                region_id,
                table_id,
                len: record_len,
                max
            }
        );
        let mut closed: Option<Arc<Region>> = None;
        loop {
            let region = self.region(region_id)?;
            // `close_region` takes a region it marks closed out of the map,
            // under the map's lock: the same one twice would be a bug, and
            // this loop must not spin on it.
            ensure!(
                !closed.is_some_and(|c| Arc::ptr_eq(&c, &region)),
                ClosedSnafu
            );
            match self
                .stream(region_id)
                .write(&region, table_id, entries, &self.inner.ctx)
            {
                // The region was closed between finding it and appending
                // (nothing was written, no number used): its next use
                // opens it again.
                Err(Error::Closed) if region.closed.load(Ordering::Acquire) => {
                    closed = Some(region);
                }
                outcome => return outcome,
            }
        }
    }

    /// The largest sequence number ever assigned to an entry of the table,
    /// 0 if none. Survives deletes and restarts.
    pub fn sequence_num(&self, region_id: u64, table_id: u64) -> Result<u64> {
        let region = self.region(region_id)?;
        let state = read(&region.state);
        Ok(state.tables.get(&table_id).map_or(0, |t| t.max_sequence))
    }

    /// Deletes the table's entries with sequence numbers up to `sequence`,
    /// durably, and removes segment files left with nothing live.
    pub fn mark_delete_entries_up_to(
        &self,
        region_id: u64,
        table_id: u64,
        sequence: u64,
    ) -> Result<()> {
        let mut closed: Option<Arc<Region>> = None;
        let maybe_dead = loop {
            let region = self.region(region_id)?;
            ensure!(
                !closed.is_some_and(|c| Arc::ptr_eq(&c, &region)),
                ClosedSnafu
            );
            // `None`: the region was closed meanwhile, its index dropped;
            // the mark is applied to the index its next use opens.
            if let Some(maybe_dead) = mark_delete(&self.inner.ctx, &region, table_id, sequence)? {
                break maybe_dead;
            }
            closed = Some(region);
        };
        if maybe_dead {
            self.inner.remove_dead_segments()?;
        }
        self.stop.rewrite.notify_one();
        Ok(())
    }

    /// Rewrites the live records of the oldest sealed segments forward and
    /// removes those segments, as the background thread does when the
    /// sealed segments hold more than `ManagerConfig::max_dead_bytes`
    /// beyond their live records; `max_dead_bytes` here overrides that
    /// bound for this one pass (0 rewrites every sealed segment at most
    /// half live). Returns how many segments were rewritten.
    pub fn rewrite_cold_segments(&self, max_dead_bytes: u64) -> Result<u64> {
        self.check_open()?;
        self.inner.rewrite_cold(max_dead_bytes)
    }

    /// The table's live entries with sequence numbers in `[start, end]`.
    pub fn read(&self, region_id: u64, table_id: u64, start: u64, end: u64) -> Result<EntryIter> {
        let region = self.region(region_id)?;
        read_table(&self.inner.ctx, &region, table_id, start, end)
    }

    /// Every live entry of the region, in ascending sequence order.
    pub fn scan(&self, region_id: u64) -> Result<EntryIter> {
        let region = self.region(region_id)?;
        scan_region(&self.inner.ctx, &region)
    }

    /// Makes the region's writes durable and drops its index from memory;
    /// what stays is each table's largest sequence number and delete mark
    /// and the list of segments holding its records. Its next use reads
    /// those segments again.
    pub fn close_region(&self, region_id: u64) -> Result<()> {
        self.check_open()?;
        let stream = self.stream(region_id);
        stream.sync_active(&self.inner.ctx)?;
        let mut regions = write(&self.inner.regions);
        let Some(RegionSlot::Open(region)) = regions.get(&region_id) else {
            return Ok(());
        };
        let closed = {
            // After any delete of the region in progress, and under the
            // writer lock, so that no write is between its check of
            // `closed` and publishing its record (see `Stream::append`).
            let _deleting = lock(&region.deleting);
            let _writer = stream.writer.lock();
            let state = write(&region.state);
            region.closed.store(true, Ordering::Release);
            ClosedRegion::of(&state)
        };
        if closed.tables.is_empty() {
            regions.remove(&region_id);
        } else {
            regions.insert(region_id, RegionSlot::Closed(closed));
        }
        Ok(())
    }

    /// Syncs and closes everything and unlocks the data dir (another
    /// manager may open it now). Every later call fails with
    /// [`Error::Closed`](crate::Error::Closed).
    pub fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return ClosedSnafu.fail();
        }
        self.stop_syncer();
        if let Some(rewriter) = lock(&self.rewriter).take() {
            let _ = rewriter.join();
        }
        let mut first_error = None;
        for stream in &self.inner.streams {
            if let Err(err) = stream.close(&self.inner.ctx) {
                first_error.get_or_insert(err);
            }
        }
        write(&self.inner.regions).clear();
        self.inner.ctx.cache.clear();
        // Readers may still hold segments; they only read, so another
        // manager may take over the data dir.
        lock(&self.lock).take();
        first_error.map_or(Ok(()), Err)
    }

    /// The counters and per-region figures.
    pub fn statistics(&self) -> Statistics {
        let mut statistics = self.counters();
        for stream in &self.inner.streams {
            let writer = stream.writer.lock();
            statistics
                .regions
                .extend(writer.sequences.iter().map(|(&id, &next)| (id, next)));
        }
        statistics.regions.sort_unstable();
        statistics.oldest_pins = self.oldest_pins(STATISTICS_PINS);
        statistics
    }

    /// [`statistics`](SegmentManager::statistics) without the per-region
    /// figures (`regions` and `oldest_pins` stay empty): its cost does not
    /// grow with the regions, for frequent scrapes.
    pub fn counters(&self) -> Statistics {
        let ctx = &self.inner.ctx;
        let mut statistics = Statistics::from_counters(&ctx.stats);
        statistics.segments_open = ctx.cache.len() as u64;
        {
            let segments = read(&ctx.segments);
            statistics.segments_live = segments.len() as u64;
            for info in segments.values() {
                statistics.segments_open += u64::from(info.active.is_some());
                statistics.disk_bytes += info.file_bytes;
                statistics.live_bytes += info.live.bytes();
            }
        }
        statistics.meta_bytes = ctx.meta.len();
        statistics
    }

    /// The tables whose live records pin the oldest sealed segments, the
    /// oldest first, at most `limit`: flushing these (and deleting their
    /// entries) frees the most disk soonest. See [`TablePin`].
    pub fn oldest_pins(&self, limit: usize) -> Vec<TablePin> {
        let regions = read(&self.inner.regions);
        let segments = read(&self.inner.ctx.segments);
        oldest_pins(regions.iter(), &segments, limit)
    }

    fn stop_syncer(&self) {
        *lock(&self.stop.stopped) = true;
        self.stop.wake.notify_all();
        self.stop.rewrite.notify_all();
    }
}

impl Inner {
    /// The index of closed region `region_id`, rebuilt from the segments
    /// that held its records when it was closed.
    fn reopen(&self, region_id: u64, closed: &ClosedRegion) -> Result<RegionState> {
        let mut handles = Vec::with_capacity(closed.segments.len());
        for &segment_id in closed.segments.keys() {
            handles.extend(self.ctx.handle(segment_id)?);
        }
        reopen_region(region_id, &closed.tables, &handles)
    }

    /// Every table's largest sequence number, open regions and closed.
    fn table_maxes(&self) -> Vec<((u64, u64), u64)> {
        let regions = read(&self.regions);
        let mut maxes = Vec::new();
        for (&region_id, slot) in regions.iter() {
            match slot {
                RegionSlot::Open(region) => maxes.extend(
                    read(&region.state)
                        .tables
                        .iter()
                        .map(|(&table_id, t)| ((region_id, table_id), t.max_sequence)),
                ),
                RegionSlot::Closed(closed) => maxes.extend(
                    closed
                        .tables
                        .iter()
                        .map(|(&table_id, &(max, _))| ((region_id, table_id), max)),
                ),
            }
        }
        maxes
    }

    fn remove_dead_segments(&self) -> Result<()> {
        remove_dead_segments(&self.ctx, || self.table_maxes())
    }

    /// One pass of rewriting (see `rewrite.rs`); returns the segments
    /// rewritten.
    fn rewrite_cold(&self, max_dead_bytes: u64) -> Result<u64> {
        let victims = pick_victims(&read(&self.ctx.segments), max_dead_bytes);
        let mut rewritten = 0;
        for &segment_id in &victims {
            if self.closed.load(Ordering::Acquire) {
                break;
            }
            rewrite_segment(&self.ctx, &self.streams, &self.regions, segment_id)?;
            rewritten += 1;
        }
        if rewritten > 0 {
            self.remove_dead_segments()?;
        }
        Ok(rewritten)
    }
}

impl Drop for SegmentManager {
    /// Dropping without `close` still syncs what was written (best effort:
    /// errors cannot be reported here; under `SyncMode::Always` everything
    /// acknowledged is already durable).
    fn drop(&mut self) {
        if !self.inner.closed.load(Ordering::Acquire) {
            let _ = self.close();
        }
        self.stop_syncer();
        if let Some(syncer) = self.syncer.take() {
            let _ = syncer.join();
        }
        if let Some(rewriter) = lock(&self.rewriter).take() {
            let _ = rewriter.join();
        }
    }
}

/// Takes the data dir's lock file (`lock`, already open): exclusively for
/// a WAL, shared for read-only tools, so neither can open a dir the other
/// holds. The `flock` goes with the file.
pub(crate) fn lock_data_dir(lock: &File, dir: &Path, exclusive: bool) -> Result<()> {
    let locked = if exclusive {
        lock.try_lock()
    } else {
        lock.try_lock_shared()
    };
    match locked {
        Ok(()) => Ok(()),
        Err(TryLockError::WouldBlock) => DataDirLockedSnafu {
            dir,
            lock: dir.join(LOCK_FILE),
        }
        .fail(),
        Err(TryLockError::Error(source)) => Err(source).context(DirectorySnafu { dir }),
    }
}

/// How many threads recovery uses: one per core.
fn recovery_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// The rewrite thread: whenever a delete wakes it, and every
/// [`REWRITE_CHECK`], rewrites cold segments if the sealed segments hold
/// more than the configured dead bytes, until stopped.
fn background_rewrite(inner: &Inner, stop: &Stop) {
    let mut stopped = lock(&stop.stopped);
    while !*stopped {
        let (guard, _) = stop
            .rewrite
            .wait_timeout(stopped, REWRITE_CHECK)
            .unwrap_or_else(|e| e.into_inner());
        stopped = guard;
        if *stopped {
            break;
        }
        drop(stopped);
        if let Err(err) = inner.rewrite_cold(inner.ctx.config.max_dead_bytes) {
            log::error!("rewriting cold segments failed: {err}");
        }
        stopped = lock(&stop.stopped);
    }
}

/// The `SyncMode::Interval` thread: syncs every stream's active segment,
/// then sleeps, until stopped.
fn interval_sync(inner: &Inner, stop: &Stop, interval: Duration) {
    let mut stopped = lock(&stop.stopped);
    while !*stopped {
        let (guard, _) = stop
            .wake
            .wait_timeout(stopped, interval)
            .unwrap_or_else(|e| e.into_inner());
        stopped = guard;
        if *stopped {
            break;
        }
        drop(stopped);
        for stream in &inner.streams {
            // A failed sync poisons the segment; the next write reports it.
            let _ = stream.sync_active(&inner.ctx);
        }
        stopped = lock(&stop.stopped);
    }
}
