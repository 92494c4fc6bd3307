//! The manager's configuration and its validation.

use std::path::PathBuf;
use std::time::Duration;

use segwal_format::MAX_BODY_LEN;
pub use segwal_segment::{Preallocation, RecoveryMode};

use crate::error::{Error, Result};

/// When a write counts as durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncMode {
    /// A write returns after its bytes are `fdatasync`ed. Concurrent writers
    /// to a region share one sync (group commit).
    #[default]
    Always,
    /// A background thread syncs every active segment at this interval:
    /// a crash loses at most about one interval of acknowledged writes.
    Interval(Duration),
    /// Never sync on the write path; the OS writes back when it likes.
    /// Segments are still synced when sealed and on close.
    Never,
}

/// Configuration of a [`SegmentManager`](crate::SegmentManager).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagerConfig {
    /// The data dir: one subdirectory per region, plus the lock file.
    pub dir: PathBuf,
    /// Size of a new segment file in bytes (default 64 MiB). A batch larger
    /// than this gets a segment of its own, sized to fit.
    pub segment_size_bytes: u64,
    /// How many sealed segments to keep open (mapped) between reads
    /// (default 8), at least one; least recently used out first. Each open
    /// region's active segment is open besides, and a read keeps the
    /// segments it spans open until it is dropped.
    pub cache_size: usize,
    /// When writes are durable (default [`SyncMode::Always`]).
    pub sync_mode: SyncMode,
    /// What recovery does with damage (default
    /// [`RecoveryMode::TolerateTornTail`]).
    pub recovery_mode: RecoveryMode,
    /// The largest entry (payload) accepted, in bytes (default 16 MiB).
    pub max_entry_size_bytes: u64,
    /// How new segments' blocks are set aside; `None` (the default) picks
    /// by sync mode, see [`ManagerConfig::preallocation`].
    pub preallocation: Option<Preallocation>,
}

impl ManagerConfig {
    /// The defaults for data dir `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ManagerConfig {
            dir: dir.into(),
            segment_size_bytes: 64 << 20,
            cache_size: 8,
            sync_mode: SyncMode::Always,
            recovery_mode: RecoveryMode::default(),
            max_entry_size_bytes: 16 << 20,
            preallocation: None,
        }
    }

    /// How new segments' blocks are set aside: as configured, or else
    /// [`Preallocation::Zeroed`] under [`SyncMode::Always`], where every
    /// write waits for an `fdatasync` that must then have no file-system
    /// metadata to commit, and [`Preallocation::Reserved`] under the other
    /// modes, where syncs are rare and writing each segment twice would
    /// halve the bandwidth.
    pub fn preallocation(&self) -> Preallocation {
        self.preallocation.unwrap_or(match self.sync_mode {
            SyncMode::Always => Preallocation::Zeroed,
            SyncMode::Interval(_) | SyncMode::Never => Preallocation::Reserved,
        })
    }

    /// Checks every value, before anything is opened or written.
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Err(Error::InvalidConfig { reason });
        if self.dir.as_os_str().is_empty() {
            return invalid("the data dir path is empty".into());
        }
        if self.segment_size_bytes < 4096 {
            return invalid(format!(
                "segment size {} bytes is below the minimum of 4096",
                self.segment_size_bytes
            ));
        }
        if self.segment_size_bytes > 1 << 40 {
            return invalid(format!(
                "segment size {} bytes is above the maximum of 1 TiB",
                self.segment_size_bytes
            ));
        }
        if self.cache_size == 0 {
            return invalid("cache size must be at least 1".into());
        }
        let max_entry = u64::from(MAX_BODY_LEN) - 4;
        if self.max_entry_size_bytes == 0 || self.max_entry_size_bytes > max_entry {
            return invalid(format!(
                "maximum entry size {} bytes must be between 1 and {max_entry}",
                self.max_entry_size_bytes
            ));
        }
        if let SyncMode::Interval(interval) = self.sync_mode
            && interval.is_zero()
        {
            return invalid("sync interval must be positive".into());
        }
        Ok(())
    }
}
