//! [`LocalWal`]: the `WalManager` over the local segment manager.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use segwal_manager::{EntryIter, ManagerConfig, SegmentManager, Statistics, TablePin};
use snafu::{OptionExt, ResultExt};
use tokio::runtime::RuntimeFlavor;

use crate::WalManager;
use crate::config::LocalWalConfig;
use crate::error::{IteratorAbandonedSnafu, Result, TaskSnafu, TimeoutSnafu};
use crate::iter::{BatchLogIterator, LogEntrySource};
use crate::types::{
    LogEntry, LogWriteBatch, ReadContext, ReadRequest, RegionId, ScanContext, ScanRequest,
    SequenceNumber, WalLocation, WriteContext,
};

/// The write-ahead log on local disk. Clones share one WAL (closing one
/// closes it for all).
///
/// Every call that may block on the disk (deletes, recovery of a region on
/// first use, reads from the mapped segments) runs on tokio's blocking
/// thread pool, never on the async worker threads. Writes and reads do
/// too, unless they run in place (see [`LocalWalConfig::writes_in_place`]
/// and [`LocalWalConfig::reads_in_place`]), which tokio's `block_in_place`
/// makes safe for the worker's other tasks.
///
/// Dropping a `LocalWal` without [`close_gracefully`](WalManager::close_gracefully)
/// loses nothing acknowledged: under [`SyncMode::Always`](crate::SyncMode::Always) every
/// acknowledged write is already on disk, and otherwise the drop syncs what
/// was written (on the dropping thread; errors cannot be reported there).
#[derive(Debug, Clone)]
pub struct LocalWal {
    manager: Arc<SegmentManager>,
    writes_in_place: bool,
    reads_in_place: bool,
}

impl LocalWal {
    /// Checks `config`, locks the data dir (creating it if needed) and
    /// recovers every region in it.
    pub async fn open(config: LocalWalConfig) -> Result<LocalWal> {
        let dir = config.dir().display().to_string();
        let (writes_in_place, reads_in_place) = (config.writes_in_place, config.reads_in_place);
        let manager = blocking(
            || format!("opening {dir}"),
            None,
            move || SegmentManager::open(config.manager),
        )
        .await??;
        Ok(LocalWal {
            manager: Arc::new(manager),
            writes_in_place,
            reads_in_place,
        })
    }

    /// A `BatchLogIterator` over `iter`, reading in place or on the pool.
    fn iterator(&self, iter: EntryIter, ctx: &ReadContext) -> BatchLogIterator {
        let source = LocalSource {
            iter: Some(iter),
            ahead: None,
            in_place: self.reads_in_place,
        };
        BatchLogIterator::new(source, ctx)
    }

    /// The counters behind [`get_statistics`](WalManager::get_statistics).
    pub fn statistics(&self) -> Statistics {
        self.manager.statistics()
    }

    /// The counters without per-region figures (see
    /// [`SegmentManager::counters`]), for metrics.
    pub(crate) fn counters(&self) -> Statistics {
        self.manager.counters()
    }

    /// The tables whose live entries pin the oldest sealed segments, the
    /// oldest first, at most `limit`: the ones to flush (and delete) first
    /// to free disk. See [`SegmentManager::oldest_pins`].
    pub fn oldest_pins(&self, limit: usize) -> Vec<TablePin> {
        self.manager.oldest_pins(limit)
    }

    /// The configuration in force.
    pub fn config(&self) -> &ManagerConfig {
        self.manager.config()
    }

    /// [`run`](LocalWal::run) for a read: in place if reads run in place
    /// and this is a multi-threaded runtime.
    async fn run_read<T: Send + 'static>(
        &self,
        operation: impl FnOnce() -> String,
        timeout: Duration,
        work: impl FnOnce(&SegmentManager) -> segwal_manager::Result<T> + Send + 'static,
    ) -> Result<T> {
        if in_place(self.reads_in_place) {
            return Ok(block_in_place(|| work(&self.manager))?);
        }
        self.run(operation, Some(timeout), work).await
    }

    async fn run<T: Send + 'static>(
        &self,
        operation: impl FnOnce() -> String,
        timeout: Option<Duration>,
        work: impl FnOnce(&SegmentManager) -> segwal_manager::Result<T> + Send + 'static,
    ) -> Result<T> {
        let manager = Arc::clone(&self.manager);
        Ok(blocking(operation, timeout, move || work(&manager)).await??)
    }
}

/// Whether work configured to run in place (`configured`) does so here:
/// `block_in_place` needs a multi-threaded runtime.
fn in_place(configured: bool) -> bool {
    configured
        && tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread)
}

/// Runs blocking `work` on this thread, where [`in_place`] allows it: inside
/// a task, through tokio's `block_in_place`, which first hands this worker's
/// other tasks to another thread; outside any task (a future driven by
/// `Runtime::block_on` on a thread of the caller's), at once, since that
/// thread runs nothing else meanwhile and `block_in_place` would only add
/// its bookkeeping, a measurable share of a synced write's instructions.
fn block_in_place<T>(work: impl FnOnce() -> T) -> T {
    if tokio::task::try_id().is_none() {
        work()
    } else {
        tokio::task::block_in_place(work)
    }
}

/// Runs `work` on the blocking pool; waits at most `timeout` for it.
/// `operation` names the work in an error, and is only called for one (not
/// on every write).
async fn blocking<T: Send + 'static>(
    operation: impl FnOnce() -> String,
    timeout: Option<Duration>,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let task = tokio::task::spawn_blocking(work);
    let joined = match timeout {
        None => task.await,
        Some(timeout) => match tokio::time::timeout(timeout, task).await {
            Ok(joined) => joined,
            Err(_) => {
                return TimeoutSnafu {
                    operation: operation(),
                    timeout,
                }
                .fail();
            }
        },
    };
    joined.with_context(|_| TaskSnafu {
        operation: operation(),
    })
}

/// Reads a manager iterator a batch at a time: in place (see
/// [`LocalWalConfig::reads_in_place`]), or on the blocking pool one batch
/// ahead: when it hands a batch out, the next one is already being read,
/// so the caller's work on a batch (replaying it) overlaps the reading and
/// checksumming of the next.
#[derive(Debug)]
struct LocalSource {
    /// The iterator between reads. Reading ahead, it travels with the read
    /// ahead instead (`None` here).
    iter: Option<EntryIter>,
    /// The read of the next batch on the pool, started when the last one
    /// was handed out.
    ahead: Option<tokio::task::JoinHandle<ReadBatch>>,
    /// Whether to read in place where the runtime allows it.
    in_place: bool,
}

/// A batch read on the blocking pool, and the iterator to go on with.
type ReadBatch = (EntryIter, segwal_manager::Result<Vec<LogEntry>>);

/// Reads up to `max` entries from `iter` (in place or on the blocking
/// pool).
fn read_batch(mut iter: EntryIter, max: usize) -> ReadBatch {
    let mut entries = Vec::with_capacity(max.min(4096));
    // Payloads are not copied: each is a slice of one `Bytes` over its
    // segment's written data (no allocation per entry).
    let mut segment = Bytes::new();
    let read = iter.next_batch_shared(max, |e| {
        if !covers(&segment, &e.payload) {
            segment = Bytes::from_owner(e.payload.whole());
        }
        entries.push(LogEntry {
            table_id: e.table_id,
            sequence: e.sequence,
            payload: segment.slice_ref(&e.payload),
        });
    });
    (iter, read.map(|_| entries))
}

#[async_trait]
impl LogEntrySource for LocalSource {
    async fn next_entries(&mut self, max: usize) -> Result<Vec<LogEntry>> {
        let read = match self.ahead.take() {
            Some(read) => read,
            None => {
                let iter = self.iter.take().context(IteratorAbandonedSnafu)?;
                if in_place(self.in_place) {
                    let (iter, entries) = block_in_place(|| read_batch(iter, max));
                    self.iter = Some(iter);
                    return Ok(entries?);
                }
                tokio::task::spawn_blocking(move || read_batch(iter, max))
            }
        };
        // If this future is dropped here (a timeout), the read finishes on
        // the blocking pool and the iterator is lost with it: the caller
        // abandons the iteration (`Error::IteratorAbandoned`).
        let (iter, entries) = read.await.context(TaskSnafu {
            operation: "reading the next batch",
        })?;
        let entries = entries?;
        if !entries.is_empty() {
            // The caller asks for the same `max` every time.
            self.ahead = Some(tokio::task::spawn_blocking(move || read_batch(iter, max)));
        }
        Ok(entries)
    }
}

/// Whether `part` lies within `whole`'s bytes (so `whole.slice_ref(part)`
/// shares them).
fn covers(whole: &[u8], part: &[u8]) -> bool {
    let whole = whole.as_ptr_range();
    let part = part.as_ptr_range();
    !whole.is_empty() && whole.start <= part.start && part.end <= whole.end
}

#[async_trait]
impl WalManager for LocalWal {
    async fn sequence_num(&self, location: WalLocation) -> Result<SequenceNumber> {
        self.run(
            || format!("sequence_num of {location:?}"),
            None,
            move |m| m.sequence_num(location.region_id, location.table_id),
        )
        .await
    }

    async fn mark_delete_entries_up_to(
        &self,
        location: WalLocation,
        sequence_num: SequenceNumber,
    ) -> Result<()> {
        self.run(
            || format!("deleting {location:?} up to {sequence_num}"),
            None,
            move |m| {
                m.mark_delete_entries_up_to(location.region_id, location.table_id, sequence_num)
            },
        )
        .await
    }

    async fn close_region(&self, region_id: RegionId) -> Result<()> {
        self.run(
            || format!("closing region {region_id}"),
            None,
            move |m| m.close_region(region_id),
        )
        .await
    }

    async fn close_gracefully(&self) -> Result<()> {
        self.run(|| "closing the WAL".into(), None, SegmentManager::close)
            .await
    }

    async fn read_batch(&self, ctx: &ReadContext, req: &ReadRequest) -> Result<BatchLogIterator> {
        let location = req.location;
        let Some((start, end)) = req.sequence_range() else {
            // Nothing to read, but a closed WAL still refuses the call.
            self.manager.check_open()?;
            return Ok(BatchLogIterator::empty());
        };
        let iter = self
            .run_read(
                || format!("starting a read of {location:?}"),
                ctx.timeout,
                move |m| m.read(location.region_id, location.table_id, start, end),
            )
            .await?;
        Ok(self.iterator(iter, ctx))
    }

    async fn write(&self, ctx: &WriteContext, batch: &LogWriteBatch) -> Result<SequenceNumber> {
        let location = batch.location;
        if in_place(self.writes_in_place) {
            let written = block_in_place(|| {
                self.manager
                    .write(location.region_id, location.table_id, &batch.entries)
            });
            return Ok(written?);
        }
        // Cloning the batch copies no payload (they are `Bytes`).
        let entries = batch.entries.clone();
        let count = entries.len();
        self.run(
            || format!("write of {count} entries to {location:?}"),
            Some(ctx.timeout),
            move |m| m.write(location.region_id, location.table_id, &entries),
        )
        .await
    }

    async fn scan(&self, ctx: &ScanContext, req: &ScanRequest) -> Result<BatchLogIterator> {
        let region_id = req.region_id;
        let iter = self
            .run_read(
                || format!("starting a scan of region {region_id}"),
                ctx.timeout,
                move |m| m.scan(region_id),
            )
            .await?;
        Ok(self.iterator(iter, ctx))
    }

    async fn get_statistics(&self) -> Option<String> {
        Some(self.manager.statistics().to_string())
    }
}
