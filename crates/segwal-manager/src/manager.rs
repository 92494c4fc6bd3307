//! The segment manager: the data dir, its lock, and its regions.

use std::collections::BTreeMap;
use std::fs::{self, File, TryLockError};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use rustc_hash::FxHashMap as HashMap;
use segwal_segment::disk;
use snafu::{ResultExt, ensure};

use crate::cache::SegmentCache;
use crate::config::{ManagerConfig, SyncMode};
use crate::error::{ClosedSnafu, DataDirLockedSnafu, DirectorySnafu, NotADirectorySnafu, Result};
use crate::read::EntryIter;
use crate::region::{Region, lock, parse_region_dir_name, read, region_dir_name, write};
use crate::stats::{Statistics, Stats};

/// Name of the lock file in the data dir.
pub const LOCK_FILE: &str = "LOCK";

/// What every region needs from the manager.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) config: ManagerConfig,
    pub(crate) stats: Stats,
    pub(crate) cache: SegmentCache,
    /// Per region, segment ends learnt from failed syncs that its meta file
    /// may not hold yet (the disk refused that write too). They outlive
    /// the region's close, and its next recovery records them before it
    /// reads anything.
    pub(crate) unrecorded_ends: Mutex<HashMap<u64, BTreeMap<u64, u64>>>,
    /// The data dir's file system keeps files in memory only (tmpfs):
    /// segments are then never zero-filled (`ManagerConfig::preallocation`).
    pub(crate) memory_backed: bool,
}

/// State shared with the interval-sync thread.
#[derive(Debug)]
struct Inner {
    ctx: Context,
    /// Open regions. A region is opened (recovered from disk) on first use
    /// and dropped by `close_region`.
    regions: RwLock<HashMap<u64, Arc<Region>>>,
    closed: AtomicBool,
}

/// Stops the interval-sync thread when set.
#[derive(Debug, Default)]
struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

/// A write-ahead log of many regions in one data dir. Synchronous and
/// thread-safe: share it with `Arc` and call it from any thread.
///
/// Opening it locks the data dir (a second open, in this process or
/// another, is refused) and recovers every region in parallel.
#[derive(Debug)]
pub struct SegmentManager {
    inner: Arc<Inner>,
    stop: Arc<Stop>,
    syncer: Option<JoinHandle<()>>,
    /// Held until `close` (or drop); the `flock` goes with it.
    lock: Mutex<Option<File>>,
}

impl SegmentManager {
    /// Validates `config`, locks the data dir (creating it if needed) and
    /// recovers every region found in it.
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

        let mut region_ids = Vec::new();
        for entry in fs::read_dir(dir).context(DirectorySnafu { dir })? {
            let entry = entry.context(DirectorySnafu { dir })?;
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if let Some(id) = entry.file_name().to_str().and_then(parse_region_dir_name)
                && is_dir
            {
                region_ids.push(id);
            }
        }
        let ctx = Context {
            memory_backed: disk::is_memory_backed(dir),
            cache: SegmentCache::new(config.cache_size),
            config,
            stats: Stats::default(),
            unrecorded_ends: Mutex::default(),
        };
        let regions = recover_regions(&ctx, &region_ids)?;

        let inner = Arc::new(Inner {
            ctx,
            regions: RwLock::new(regions),
            closed: AtomicBool::new(false),
        });
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
        Ok(SegmentManager {
            inner,
            stop,
            syncer,
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

    /// Region `region_id`, opened (recovered) on first use, and the
    /// context its calls take (for the region's unit tests).
    #[cfg(test)]
    pub(crate) fn region_for_test(&self, region_id: u64) -> (Arc<Region>, &Context) {
        (self.region(region_id).unwrap(), &self.inner.ctx)
    }

    fn region(&self, region_id: u64) -> Result<Arc<Region>> {
        self.check_open()?;
        let regions = &self.inner.regions;
        if let Some(region) = read(regions).get(&region_id) {
            return Ok(Arc::clone(region));
        }
        let mut regions = write(regions);
        if let Some(region) = regions.get(&region_id) {
            return Ok(Arc::clone(region));
        }
        let dir = self.inner.ctx.config.dir.join(region_dir_name(region_id));
        let region = Arc::new(Region::recover(
            dir,
            region_id,
            &self.inner.ctx,
            recovery_threads(),
        )?);
        regions.insert(region_id, Arc::clone(&region));
        Ok(region)
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
        self.region(region_id)?
            .write(table_id, entries, &self.inner.ctx)
    }

    /// The largest sequence number ever assigned to an entry of the table,
    /// 0 if none. Survives deletes and restarts.
    pub fn sequence_num(&self, region_id: u64, table_id: u64) -> Result<u64> {
        Ok(self.region(region_id)?.sequence_num(table_id))
    }

    /// Deletes the table's entries with sequence numbers up to `sequence`,
    /// durably, and removes segment files left with nothing live.
    pub fn mark_delete_entries_up_to(
        &self,
        region_id: u64,
        table_id: u64,
        sequence: u64,
    ) -> Result<()> {
        self.region(region_id)?
            .mark_delete(table_id, sequence, &self.inner.ctx)
    }

    /// The table's live entries with sequence numbers in `[start, end]`.
    pub fn read(&self, region_id: u64, table_id: u64, start: u64, end: u64) -> Result<EntryIter> {
        self.region(region_id)?
            .read(table_id, start, end, &self.inner.ctx)
    }

    /// Every live entry of the region, in ascending sequence order.
    pub fn scan(&self, region_id: u64) -> Result<EntryIter> {
        self.region(region_id)?.scan(&self.inner.ctx)
    }

    /// Syncs and closes the region's files. Its next use opens it again.
    pub fn close_region(&self, region_id: u64) -> Result<()> {
        self.check_open()?;
        let removed = write(&self.inner.regions).remove(&region_id);
        match removed {
            Some(region) => region.close(&self.inner.ctx),
            None => Ok(()),
        }
    }

    /// Syncs and closes everything and unlocks the data dir (another
    /// manager may open it now). Every later call fails with
    /// [`Error::Closed`](crate::Error::Closed).
    pub fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return ClosedSnafu.fail();
        }
        self.stop_syncer();
        let regions: Vec<Arc<Region>> =
            write(&self.inner.regions).drain().map(|(_, r)| r).collect();
        let mut first_error = None;
        for region in regions {
            if let Err(err) = region.close(&self.inner.ctx) {
                first_error.get_or_insert(err);
            }
        }
        // Readers may still hold segments of the closed regions; they only
        // read, so another manager may take over the data dir.
        lock(&self.lock).take();
        first_error.map_or(Ok(()), Err)
    }

    /// The counters and per-region figures.
    pub fn statistics(&self) -> Statistics {
        let mut statistics = Statistics::from_counters(&self.inner.ctx.stats);
        statistics.segments_open = self.inner.ctx.cache.len() as u64;
        let regions = read(&self.inner.regions);
        for region in regions.values() {
            statistics.regions.push((region.id, region.next_sequence()));
            let state = read(&region.state);
            statistics.segments_live += state.segments.len() as u64;
            statistics.segments_open += state.active_segments() as u64;
        }
        statistics.regions.sort_unstable();
        statistics
    }

    fn stop_syncer(&self) {
        *lock(&self.stop.stopped) = true;
        self.stop.wake.notify_all();
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

/// Recovers regions in parallel, one thread per core. When there are fewer
/// regions than cores, each region opens several segments at a time, so
/// that one big region also recovers on every core.
fn recover_regions(ctx: &Context, ids: &[u64]) -> Result<HashMap<u64, Arc<Region>>> {
    let threads = recovery_threads();
    let mut regions = HashMap::default();
    for chunk in ids.chunks(threads) {
        let scan_threads = threads.div_ceil(chunk.len());
        let recovered: Vec<Result<Region>> = std::thread::scope(|scope| {
            let workers: Vec<_> = chunk
                .iter()
                .map(|&id| {
                    let dir = ctx.config.dir.join(region_dir_name(id));
                    scope.spawn(move || Region::recover(dir, id, ctx, scan_threads))
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("region recovery panicked"))
                .collect()
        });
        for region in recovered {
            let region = region?;
            regions.insert(region.id, Arc::new(region));
        }
    }
    Ok(regions)
}

/// The `SyncMode::Interval` thread: syncs every region's active segment,
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
        let regions: Vec<Arc<Region>> = read(&inner.regions).values().cloned().collect();
        for region in regions {
            // A failed sync poisons the segment; the next write reports it.
            let _ = region.sync_active(&inner.ctx);
        }
        stopped = lock(&stop.stopped);
    }
}
