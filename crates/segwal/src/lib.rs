//! segwal: a segmented write-ahead log for time-series engines, with the
//! async `WalManager` API of HoraeDB's WALs.
//!
//! An engine holds many regions (shards), each with many tables. Every
//! write appends a batch of opaque entries for one table and gets
//! per-region sequence numbers back; after a restart the engine replays a
//! table or a whole region; once it has flushed a table it deletes that
//! table's entries up to a sequence number, and the disk space comes back.
//!
//! [`LocalWal`] keeps the log on local disk (crate `segwal-manager` does
//! the work; this crate runs it off the async threads); a
//! [`LocalWalConfig`] is built in code or read from a configuration file
//! (serde), with sizes and durations in the human form of [`human`].
//! [`horaedb`] has the rest of HoraeDB's WAL API (the payload layer,
//! `next_log_entries`, the opener of an engine's data and manifest WALs)
//! under HoraeDB's names and paths, so an engine ports by changing its
//! imports. See `docs/ARCHITECTURE.md` for how it works and
//! `docs/OPERATIONS.md` for the sync and recovery modes, configuration
//! files and porting from HoraeDB.
//!
//! ```
//! use segwal::{
//!     LocalWal, LocalWalConfig, LogWriteBatch, ReadBoundary, ReadContext, ReadRequest,
//!     WalLocation, WalManager, WriteContext,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> segwal::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! let wal = LocalWal::open(LocalWalConfig::new(dir.path())).await?;
//! let table = WalLocation::new(1, 42);
//!
//! // Write a batch; it is on disk (fdatasync'd) when `write` returns.
//! let mut batch = LogWriteBatch::new(table);
//! batch.push(b"first".to_vec());
//! batch.push(b"second".to_vec());
//! let last = wal.write(&WriteContext::default(), &batch).await?;
//! assert_eq!(last, 2);
//!
//! // Read it back, a batch of entries at a time.
//! let request = ReadRequest { location: table, start: ReadBoundary::Min, end: ReadBoundary::Max };
//! let mut entries = wal.read_batch(&ReadContext::default(), &request).await?;
//! let mut payloads = Vec::new();
//! while let Some(batch) = entries.next_batch().await? {
//!     payloads.extend(batch.into_iter().map(|e| e.payload));
//! }
//! assert_eq!(payloads, [b"first".to_vec(), b"second".to_vec()]);
//!
//! // Once flushed, delete; the sequence number survives.
//! wal.mark_delete_entries_up_to(table, last).await?;
//! assert_eq!(wal.sequence_num(table).await?, 2);
//! wal.close_gracefully().await?;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

mod config;
mod error;
pub mod horaedb;
pub mod human;
mod iter;
mod local;
pub mod metrics;
mod types;

use std::sync::Arc;

use async_trait::async_trait;

pub use config::LocalWalConfig;
pub use error::{Error, Result};
pub use iter::{BatchLogIterator, LogEntrySource};
pub use local::LocalWal;
pub use segwal_manager::{
    Compression, Preallocation, RecoveryMode, Statistics, SyncMode, TablePin,
};
pub use types::{
    LogEntry, LogWriteBatch, LogWriteEntry, MAX_SEQUENCE_NUMBER, MIN_SEQUENCE_NUMBER, ReadBoundary,
    ReadContext, ReadRequest, RegionId, ScanContext, ScanRequest, SequenceNumber, TableId,
    WalLocation, WriteContext,
};

/// A shared handle to any [`WalManager`], as engines hold it (HoraeDB's
/// name).
pub type WalManagerRef = Arc<dyn WalManager>;

/// A write-ahead log of many regions, each with many tables: the API
/// HoraeDB's WALs implement, so engines can port their code.
///
/// Semantics (every backend): sequence numbers are allocated per region
/// from 1 and never reused; a batch is atomic; reads and scans yield live
/// entries in ascending sequence order; deletes are durable.
#[async_trait]
pub trait WalManager: Send + Sync + std::fmt::Debug + 'static {
    /// The largest sequence number ever assigned to an entry of the table,
    /// [`MIN_SEQUENCE_NUMBER`] (0) if none. It never decreases, and
    /// survives deletes and restarts.
    async fn sequence_num(&self, location: WalLocation) -> Result<SequenceNumber>;

    /// Removes the table's entries with sequence numbers up to
    /// `sequence_num` from all later reads and scans, durably. Deleting past
    /// the table's last entry deletes all of it (and not later writes).
    /// Segment files left with no live entries are removed from disk.
    async fn mark_delete_entries_up_to(
        &self,
        location: WalLocation,
        sequence_num: SequenceNumber,
    ) -> Result<()>;

    /// Syncs and closes the region's files. The next call that touches the
    /// region opens it again (recovering it from disk).
    async fn close_region(&self, region_id: RegionId) -> Result<()>;

    /// Syncs and closes everything. Every later call fails with a "closed"
    /// error ([`Error::is_closed`]).
    async fn close_gracefully(&self) -> Result<()>;

    /// The table's live entries with sequence numbers in `[start, end]`,
    /// in ascending order. An empty or inverted range yields nothing.
    async fn read_batch(&self, ctx: &ReadContext, req: &ReadRequest) -> Result<BatchLogIterator>;

    /// Appends the batch and returns the last sequence number assigned, once
    /// the batch is durable under the configured [`SyncMode`]. An empty
    /// batch, or one with an entry over the maximum size, is refused before
    /// any sequence number is used.
    async fn write(&self, ctx: &WriteContext, batch: &LogWriteBatch) -> Result<SequenceNumber>;

    /// Every live entry of the region, in ascending sequence order.
    async fn scan(&self, ctx: &ScanContext, req: &ScanRequest) -> Result<BatchLogIterator>;

    /// Counters (writes, syncs and batches per sync, segments, per-region
    /// sequence numbers) as readable text.
    async fn get_statistics(&self) -> Option<String>;
}
