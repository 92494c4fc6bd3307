//! The manager's configuration and its validation.

use std::path::PathBuf;
use std::time::Duration;

use segwal_format::MAX_BODY_LEN;
/// How record bodies are compressed: `None`, `Lz4` or `Zstd` (the
/// format's record codecs).
pub use segwal_format::RecordCodec as Compression;
pub use segwal_segment::{Preallocation, RecoveryMode};

use crate::error::{Error, Result};

/// Under [`SyncMode::Always`], segments filled faster than this get a
/// successor reserved with `fallocate` rather than zero-filled (see
/// [`ManagerConfig::preallocation`]). 256 MiB/s: on the 2-core VM the
/// benchmarks ran on, 1 to 16 synced writers of 1 KiB entries fill
/// segments under this and run faster with zero-filled segments (paced, so
/// that the zeros never queue far ahead of a writer's sync), 16 writers of
/// 64 KiB entries over it (docs/DESIGN.md, "Writing").
pub const ZERO_FILL_MAX_BYTES_PER_SEC: f64 = 256.0 * 1024.0 * 1024.0;

/// The share of the time the active segment is expected to take to fill
/// over which its successor's zeros are spread (see
/// [`ManagerConfig::zero_fill_spread`]): the spare is ready with time to
/// spare if the writes keep their pace, and at twice the pace just in time.
const ZERO_FILL_SPREAD_SHARE: f64 = 0.5;

/// How fast the zeros of the first spare after open are written, over all
/// streams together, before any segment has filled to tell the rate: a
/// 64 MiB spare of one stream in half a second, so that the writes leave
/// the reserved first segment soon after open, while the zeros leave the
/// disk most of its bandwidth meanwhile.
const ZERO_FILL_FIRST_BYTES_PER_SEC: f64 = 128.0 * 1024.0 * 1024.0;

/// The longest a spare's zeros are spread over, however slowly segments
/// fill: the spare's thread lives no longer than this plus the zeros' own
/// time (unless hurried sooner).
const ZERO_FILL_MAX_SPREAD: Duration = Duration::from_secs(10);

/// The most streams a shared log may have.
pub const MAX_STREAMS: usize = 64;

/// When a write counts as durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncMode {
    /// A write returns after its bytes are `fdatasync`ed. Concurrent writers
    /// to the log share one sync (group commit), whatever their regions.
    #[default]
    Always,
    /// A background thread syncs every stream's active segment at this interval:
    /// a crash loses at most about one interval of acknowledged writes.
    Interval(Duration),
    /// Never sync on the write path; the OS writes back when it likes.
    /// Segments are still synced when sealed and on close.
    Never,
}

/// Configuration of a [`SegmentManager`](crate::SegmentManager).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagerConfig {
    /// The data dir: the segment files of the shared log, the META log and
    /// the lock file.
    pub dir: PathBuf,
    /// How many independent streams the shared log has (default 1, at most
    /// [`MAX_STREAMS`]). Each stream is a sequence of segments with its own
    /// writer and group commit; region R writes to stream `R mod streams`.
    /// More streams let writers of different regions append and sync in
    /// parallel, at the cost of more syncs and up to two more segments of
    /// disk each. The count may change between opens: recovery reads every
    /// stream.
    pub streams: usize,
    /// Size of a new segment file in bytes (default 64 MiB). A batch larger
    /// than this gets a segment of its own, sized to fit.
    pub segment_size_bytes: u64,
    /// How many sealed segments to keep open (mapped) between reads
    /// (default 64), at least one; least recently used out first. Each
    /// stream's active segment is open besides, and a read keeps the
    /// segments it spans open until it is dropped. Recovery leaves the
    /// segments it scanned open, up to this many, so the replay that
    /// follows a restart reads them without mapping them again.
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
    /// How many bytes the sealed segments may hold beyond their live
    /// records before the oldest of them are rewritten (default 1 GiB).
    /// A segment is removed only once all its records are deleted, so a
    /// table that is rarely flushed would otherwise pin every segment from
    /// its oldest live entry on. Above this bound a background thread
    /// copies the live records of the oldest sealed segments that are at
    /// most half live to the end of the log, and removes those segments.
    /// `u64::MAX` turns rewriting off.
    pub max_dead_bytes: u64,
    /// Whether a writer waiting for a group sync yields its core in a loop
    /// before it parks, while the log's syncs are short (default true;
    /// see docs/ARCHITECTURE.md, "Group commit"). It trades CPU time that
    /// would mostly idle otherwise for throughput and latency; turn it off
    /// where every core's time is accounted for.
    pub yield_while_syncing: bool,
    /// How new records' bodies are compressed (default
    /// [`Compression::None`]). Each record says how it is stored, so the
    /// setting may change between opens and a data dir holds records of
    /// every kind; a body that the codec does not make smaller is stored
    /// uncompressed. See docs/OPERATIONS.md for when it pays.
    pub compression: Compression,
}

impl ManagerConfig {
    /// The defaults for data dir `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ManagerConfig {
            dir: dir.into(),
            streams: 1,
            segment_size_bytes: 64 << 20,
            cache_size: 64,
            sync_mode: SyncMode::Always,
            recovery_mode: RecoveryMode::default(),
            max_entry_size_bytes: 16 << 20,
            preallocation: None,
            yield_while_syncing: true,
            max_dead_bytes: 1 << 30,
            compression: Compression::None,
        }
    }

    /// How a spare's blocks are set aside, given how fast the active
    /// segment is being filled (bytes per second; `None` when not known
    /// yet: the first segment after open is still active) and whether the
    /// data dir's file system keeps files in memory only (`memory_backed`:
    /// tmpfs, ramfs; see `segwal_segment::disk::is_memory_backed`). As
    /// configured, or else:
    ///
    /// - under [`SyncMode::Interval`] and [`SyncMode::Never`],
    ///   [`Preallocation::Reserved`]: syncs are rare, and writing each
    ///   segment twice would halve the bandwidth;
    /// - under [`SyncMode::Always`], [`Preallocation::Zeroed`], so that
    ///   every `fdatasync` a write waits for has no file-system metadata to
    ///   commit, unless segments fill faster than
    ///   [`ZERO_FILL_MAX_BYTES_PER_SEC`]. Then the zeros would take a large
    ///   share of the disk's bandwidth from the data, and writers would wait
    ///   for them at rollover; the occasional extent conversion costs less.
    ///   A spare whose zeros are unfinished when it is needed is hurried,
    ///   never waited for, so an unknown rate is no reason to reserve;
    /// - on a file system in memory, [`Preallocation::Reserved`] whatever
    ///   the mode: its reserved blocks are ordinary zeroed pages, with no
    ///   conversion for a sync to commit, so the zeros would be work for
    ///   nothing.
    pub fn preallocation(
        &self,
        fill_bytes_per_sec: Option<f64>,
        memory_backed: bool,
    ) -> Preallocation {
        self.preallocation.unwrap_or(match self.sync_mode {
            _ if memory_backed => Preallocation::Reserved,
            SyncMode::Always
                if fill_bytes_per_sec.is_some_and(|rate| rate > ZERO_FILL_MAX_BYTES_PER_SEC) =>
            {
                Preallocation::Reserved
            }
            SyncMode::Always => Preallocation::Zeroed,
            SyncMode::Interval(_) | SyncMode::Never => Preallocation::Reserved,
        })
    }

    /// How the blocks of a segment wanted at once are set aside: the first
    /// segment at open, or one a rollover creates itself because its spare
    /// failed or is too small for the batch. As configured, or else [`Preallocation::Reserved`],
    /// which is nearly free, so that no write waits for zeros. Under
    /// [`SyncMode::Always`] the writes leave such a segment for a
    /// zero-filled spare as soon as one is ready (an early rollover, see
    /// `rollover.rs`).
    pub fn preallocation_at_once(&self) -> Preallocation {
        self.preallocation.unwrap_or(Preallocation::Reserved)
    }

    /// Over how long a spare's zeros (if it is zero-filled) are spread,
    /// given how fast the active segment is being filled (bytes per
    /// second; `None` when not known): half the time the active segment
    /// is expected to take to fill, at most [`ZERO_FILL_MAX_SPREAD`]; while
    /// the rate is unknown, as long as every stream's spare takes at
    /// [`ZERO_FILL_FIRST_BYTES_PER_SEC`] (half a second by default). No pauses at
    /// all when `preallocation` is set: a segment then has the blocks it
    /// was set to have, every zero written, even if a rollover must wait
    /// for them. Zeros written as fast as the disk takes them hold up the
    /// writers' syncs for as long as they last; spread out, a sync meets
    /// at most one chunk in flight, and only some of the time. A rollover
    /// that finds the zeros unfinished reserves the rest of the blocks
    /// instead of waiting for them (`ZeroFillPace::hurry`).
    pub fn zero_fill_spread(&self, fill_bytes_per_sec: Option<f64>) -> Duration {
        if self.preallocation.is_some() {
            return Duration::ZERO;
        }
        let spread_secs = match fill_bytes_per_sec.filter(|rate| *rate > 0.0) {
            Some(rate) => self.segment_size_bytes as f64 / rate * ZERO_FILL_SPREAD_SHARE,
            None => {
                let all_spares = self.segment_size_bytes as f64 * self.streams as f64;
                all_spares / ZERO_FILL_FIRST_BYTES_PER_SEC
            }
        };
        Duration::try_from_secs_f64(spread_secs).map_or(ZERO_FILL_MAX_SPREAD, |spread| {
            spread.min(ZERO_FILL_MAX_SPREAD)
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
        if self.streams == 0 || self.streams > MAX_STREAMS {
            return invalid(format!(
                "stream count {} must be between 1 and {MAX_STREAMS}",
                self.streams
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the default policy: zero-filled spares only under
    /// `SyncMode::Always`, unless segments are known to fill fast, and not
    /// in memory; reserved segments where one is wanted at once; an
    /// explicit setting always wins.
    #[test]
    fn preallocation_follows_the_sync_mode_and_the_fill_rate() {
        let fast = Some(ZERO_FILL_MAX_BYTES_PER_SEC * 2.0);
        let slow = Some(ZERO_FILL_MAX_BYTES_PER_SEC / 2.0);
        let mut config = ManagerConfig::new("/data");
        for rate in [None, slow] {
            assert_eq!(config.preallocation(rate, false), Preallocation::Zeroed);
        }
        assert_eq!(config.preallocation(fast, false), Preallocation::Reserved);
        assert_eq!(config.preallocation_at_once(), Preallocation::Reserved);
        for mode in [
            SyncMode::Never,
            SyncMode::Interval(Duration::from_millis(5)),
        ] {
            config.sync_mode = mode;
            for rate in [None, slow, fast] {
                assert_eq!(config.preallocation(rate, false), Preallocation::Reserved);
            }
        }
        for rate in [None, slow, fast] {
            assert_eq!(config.preallocation(rate, true), Preallocation::Reserved);
        }
        config.preallocation = Some(Preallocation::Zeroed);
        assert_eq!(config.preallocation(fast, false), Preallocation::Zeroed);
        assert_eq!(config.preallocation(slow, true), Preallocation::Zeroed);
        assert_eq!(config.preallocation_at_once(), Preallocation::Zeroed);
        config.sync_mode = SyncMode::Always;
        config.preallocation = Some(Preallocation::Reserved);
        assert_eq!(config.preallocation(slow, false), Preallocation::Reserved);
    }

    /// Proves the spread of a spare's zeros: half the time the active
    /// segment is expected to take to fill, capped; when the fill rate is
    /// unknown (or not a rate), every stream's spare at a shared pace,
    /// capped; and none when the preallocation is set.
    #[test]
    fn zeros_are_spread_over_half_the_expected_fill_time() {
        let mut config = ManagerConfig::new("/data");
        config.segment_size_bytes = 64 << 20;
        let mib = 1024.0 * 1024.0;
        assert_eq!(
            config.zero_fill_spread(Some(64.0 * mib)),
            Duration::from_millis(500)
        );
        assert_eq!(
            config.zero_fill_spread(Some(256.0 * mib)),
            Duration::from_millis(125)
        );
        assert_eq!(config.zero_fill_spread(Some(1.0)), ZERO_FILL_MAX_SPREAD);
        for rate in [None, Some(0.0), Some(-1.0), Some(f64::NAN)] {
            let first = Duration::from_millis(500);
            assert_eq!(config.zero_fill_spread(rate), first, "{rate:?}");
        }
        // Unknown rate: every stream's first spare shares the pace.
        config.streams = 4;
        assert_eq!(config.zero_fill_spread(None), Duration::from_secs(2));
        config.streams = 64;
        assert_eq!(config.zero_fill_spread(None), ZERO_FILL_MAX_SPREAD);
        config.streams = 1;
        config.preallocation = Some(Preallocation::Zeroed);
        for rate in [None, Some(64.0 * mib)] {
            assert_eq!(config.zero_fill_spread(rate), Duration::ZERO);
        }
    }
}
