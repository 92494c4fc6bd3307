//! [`LocalWalConfig`]: what a [`LocalWal`](crate::LocalWal) is opened with,
//! built in code or read from a configuration file (serde; TOML in the
//! docs' examples).

use std::path::{Path, PathBuf};

use segwal_manager::{Compression, ManagerConfig, Preallocation, RecoveryMode, SyncMode};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::human::{ByteSize, HumanDuration};

/// Configuration of a [`LocalWal`](crate::LocalWal): `LocalWalConfig::new(dir)` and builder
/// methods, or a configuration file. Values are checked by
/// [`LocalWal::open`](crate::LocalWal::open), before anything is written.
///
/// In a file (any serde format; TOML here), every key but `data_dir` is
/// optional, sizes and durations are in human form (see
/// [`human`](crate::human)), and an unknown key is an error naming it.
/// docs/OPERATIONS.md, "Configuration files", has every key.
///
/// ```
/// use std::time::Duration;
/// use segwal::{LocalWalConfig, SyncMode};
///
/// let config: LocalWalConfig = toml::from_str(
///     r#"
///     data_dir = "/var/lib/mydb/wal"
///     segment_size = "32MiB"
///     sync_mode = { interval = "10ms" }
///     "#,
/// )
/// .unwrap();
/// let built = LocalWalConfig::new("/var/lib/mydb/wal")
///     .segment_size(32 << 20)
///     .sync_mode(SyncMode::Interval(Duration::from_millis(10)));
/// assert_eq!(config, built);
///
/// let typo = toml::from_str::<LocalWalConfig>("data_dir = \"d\"\nsegment_sise = 1");
/// assert!(typo.unwrap_err().to_string().contains("unknown field `segment_sise`"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalWalConfig {
    pub(crate) manager: ManagerConfig,
    pub(crate) writes_in_place: bool,
    pub(crate) reads_in_place: bool,
}

impl LocalWalConfig {
    /// The defaults for data dir `dir`: 64 MiB segments, 64 cached sealed
    /// segments, [`SyncMode::Always`], [`RecoveryMode::TolerateTornTail`],
    /// entries up to 16 MiB.
    pub fn new(dir: impl Into<PathBuf>) -> LocalWalConfig {
        LocalWalConfig {
            manager: ManagerConfig::new(dir),
            writes_in_place: true,
            reads_in_place: true,
        }
    }

    /// The same configuration for another data dir.
    pub fn with_dir(mut self, dir: impl Into<PathBuf>) -> LocalWalConfig {
        self.manager.dir = dir.into();
        self
    }

    /// Size of each new segment file in bytes (at least 4096).
    pub fn segment_size(mut self, bytes: u64) -> LocalWalConfig {
        self.manager.segment_size_bytes = bytes;
        self
    }

    /// How many sealed segments stay open between reads (at least 1).
    pub fn cache_size(mut self, segments: usize) -> LocalWalConfig {
        self.manager.cache_size = segments;
        self
    }

    /// When a write counts as durable.
    pub fn sync_mode(mut self, mode: SyncMode) -> LocalWalConfig {
        self.manager.sync_mode = mode;
        self
    }

    /// What recovery does with damaged data.
    pub fn recovery_mode(mut self, mode: RecoveryMode) -> LocalWalConfig {
        self.manager.recovery_mode = mode;
        self
    }

    /// How new segments' blocks are set aside. By default, zero-filled
    /// under [`SyncMode::Always`] (so a sync has no file-system metadata to
    /// write) while segments fill at up to 256 MiB/s, and otherwise
    /// reserved with `fallocate` (so a segment is not written twice); see
    /// [`ManagerConfig::preallocation`].
    pub fn preallocation(mut self, preallocation: Preallocation) -> LocalWalConfig {
        self.manager.preallocation = Some(preallocation);
        self
    }

    /// The largest entry accepted, in bytes.
    pub fn max_entry_size(mut self, bytes: u64) -> LocalWalConfig {
        self.manager.max_entry_size_bytes = bytes;
        self
    }

    /// How many independent streams the shared log has (default 1): region
    /// R writes to stream `R mod streams`. See [`ManagerConfig::streams`].
    pub fn streams(mut self, streams: usize) -> LocalWalConfig {
        self.manager.streams = streams;
        self
    }

    /// How many bytes sealed segments may hold beyond their live records
    /// before the oldest are rewritten (default 1 GiB; `u64::MAX` turns
    /// rewriting off). See [`ManagerConfig::max_dead_bytes`].
    pub fn max_dead_bytes(mut self, bytes: u64) -> LocalWalConfig {
        self.manager.max_dead_bytes = bytes;
        self
    }

    /// How new records' bodies are compressed (default
    /// [`Compression::None`]): `Lz4` or `Zstd` compress each batch's
    /// entries, and keep the result only where it is smaller. Records say
    /// how they are stored, so this may change between opens. See
    /// [`ManagerConfig::compression`].
    pub fn compression(mut self, compression: Compression) -> LocalWalConfig {
        self.manager.compression = compression;
        self
    }

    /// Whether a writer waiting for a group sync under [`SyncMode::Always`]
    /// yields its core in a loop before it parks, while the log's syncs
    /// are short (default `true`). See
    /// [`ManagerConfig::yield_while_syncing`].
    pub fn yield_while_syncing(mut self, yield_while_syncing: bool) -> LocalWalConfig {
        self.manager.yield_while_syncing = yield_while_syncing;
        self
    }

    /// Whether a write called on a multi-threaded tokio runtime runs on the
    /// calling worker thread (`true`, the default) rather than on the
    /// blocking pool.
    ///
    /// In place, a write costs what the segment manager's write costs
    /// instead of two thread hand-offs on top (each costing more than a
    /// synced 1 KiB write on tmpfs; docs/DESIGN.md); tokio's `block_in_place`
    /// first hands the worker's other tasks to another thread, so they are
    /// not held up by the write's `fdatasync`. The price: a write in place
    /// cannot be abandoned, so [`WriteContext::timeout`](crate::WriteContext::timeout) does not apply to
    /// it; the call returns when the write is durable or has failed. Set
    /// `false` to have every write honour its timeout. Outside any task (a
    /// future driven by `Runtime::block_on`), the write runs directly: that
    /// thread runs nothing else meanwhile. On a current-thread runtime,
    /// writes always go to the blocking pool.
    pub fn writes_in_place(mut self, in_place: bool) -> LocalWalConfig {
        self.writes_in_place = in_place;
        self
    }

    /// Whether reads called on a multi-threaded tokio runtime run on the
    /// calling worker thread (`true`, the default) rather than on the
    /// blocking pool: starting a read or scan, and each
    /// [`next_batch`](crate::BatchLogIterator::next_batch).
    ///
    /// In place, a batch costs what reading it from the mapped segments
    /// costs; on the blocking pool each batch is also two thread
    /// hand-offs, partly hidden by reading the next batch ahead while the
    /// caller works on the last one. A caller that does little per entry
    /// reads markedly more entries per second in place; one that does much more per entry
    /// than reading it costs (decoding rows into a memtable) sees little
    /// difference either way. As with writes, `block_in_place` first hands
    /// the worker's other tasks to another thread, in case the read waits
    /// for the disk (a segment not in the page cache), and a read in place
    /// cannot be abandoned: [`ReadContext::timeout`](crate::ReadContext::timeout) does not apply to it.
    /// On a current-thread runtime, reads always go to the blocking pool.
    pub fn reads_in_place(mut self, in_place: bool) -> LocalWalConfig {
        self.reads_in_place = in_place;
        self
    }

    /// The data dir.
    pub fn dir(&self) -> &Path {
        &self.manager.dir
    }

    /// The segment manager's configuration this amounts to.
    pub fn manager_config(&self) -> &ManagerConfig {
        &self.manager
    }
}

/// The file form of a [`LocalWalConfig`]: every key but `data_dir`
/// optional (the defaults of [`LocalWalConfig::new`]), sizes and
/// durations in human form, unknown keys refused by name. The first three
/// keys are those of HoraeDB's `LocalStorageConfig`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileForm {
    data_dir: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    segment_size: Option<ByteSize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cache_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sync_mode: Option<SyncModeForm>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    recovery_mode: Option<RecoveryModeForm>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    preallocation: Option<PreallocationForm>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_entry_size: Option<ByteSize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    streams: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_dead_bytes: Option<ByteSize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    yield_while_syncing: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    compression: Option<CompressionForm>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    writes_in_place: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reads_in_place: Option<bool>,
}

/// [`SyncMode`] in a file: `"always"`, `"never"` or
/// `{ interval = "10ms" }`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum SyncModeForm {
    Always,
    Interval(HumanDuration),
    Never,
}

/// [`RecoveryMode`] in a file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RecoveryModeForm {
    Strict,
    TolerateTornTail,
    SkipCorrupted,
}

/// [`Compression`] in a file: `"none"`, `"lz4"` or `"zstd"`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum CompressionForm {
    None,
    Lz4,
    Zstd,
}

/// [`Preallocation`] in a file (absent: chosen by sync mode).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum PreallocationForm {
    Zeroed,
    Reserved,
}

impl<'de> Deserialize<'de> for LocalWalConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let form = FileForm::deserialize(deserializer)?;
        let mut config = LocalWalConfig::new(form.data_dir);
        let m = &mut config.manager;
        if let Some(ByteSize(bytes)) = form.segment_size {
            m.segment_size_bytes = bytes;
        }
        if let Some(segments) = form.cache_size {
            m.cache_size = segments;
        }
        if let Some(mode) = form.sync_mode {
            m.sync_mode = match mode {
                SyncModeForm::Always => SyncMode::Always,
                SyncModeForm::Interval(HumanDuration(every)) => SyncMode::Interval(every),
                SyncModeForm::Never => SyncMode::Never,
            };
        }
        if let Some(mode) = form.recovery_mode {
            m.recovery_mode = match mode {
                RecoveryModeForm::Strict => RecoveryMode::Strict,
                RecoveryModeForm::TolerateTornTail => RecoveryMode::TolerateTornTail,
                RecoveryModeForm::SkipCorrupted => RecoveryMode::SkipCorrupted,
            };
        }
        m.preallocation = form.preallocation.map(|p| match p {
            PreallocationForm::Zeroed => Preallocation::Zeroed,
            PreallocationForm::Reserved => Preallocation::Reserved,
        });
        if let Some(ByteSize(bytes)) = form.max_entry_size {
            m.max_entry_size_bytes = bytes;
        }
        if let Some(streams) = form.streams {
            m.streams = streams;
        }
        if let Some(ByteSize(bytes)) = form.max_dead_bytes {
            m.max_dead_bytes = bytes;
        }
        if let Some(yield_while_syncing) = form.yield_while_syncing {
            m.yield_while_syncing = yield_while_syncing;
        }
        if let Some(compression) = form.compression {
            m.compression = match compression {
                CompressionForm::None => Compression::None,
                CompressionForm::Lz4 => Compression::Lz4,
                CompressionForm::Zstd => Compression::Zstd,
            };
        }
        config.writes_in_place = form.writes_in_place.unwrap_or(config.writes_in_place);
        config.reads_in_place = form.reads_in_place.unwrap_or(config.reads_in_place);
        Ok(config)
    }
}

impl Serialize for LocalWalConfig {
    /// Every key, explicit (`preallocation` only when configured), so the
    /// output reads back to an equal configuration.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let m = &self.manager;
        let sync_mode = match m.sync_mode {
            SyncMode::Always => SyncModeForm::Always,
            SyncMode::Interval(every) => SyncModeForm::Interval(HumanDuration(every)),
            SyncMode::Never => SyncModeForm::Never,
            other => return Err(S::Error::custom(format!("no file form for {other:?}"))),
        };
        let compression = match m.compression {
            Compression::None => CompressionForm::None,
            Compression::Lz4 => CompressionForm::Lz4,
            Compression::Zstd => CompressionForm::Zstd,
            other => return Err(S::Error::custom(format!("no file form for {other:?}"))),
        };
        let recovery_mode = match m.recovery_mode {
            RecoveryMode::Strict => RecoveryModeForm::Strict,
            RecoveryMode::TolerateTornTail => RecoveryModeForm::TolerateTornTail,
            RecoveryMode::SkipCorrupted => RecoveryModeForm::SkipCorrupted,
            other => return Err(S::Error::custom(format!("no file form for {other:?}"))),
        };
        FileForm {
            data_dir: m.dir.clone(),
            segment_size: Some(ByteSize(m.segment_size_bytes)),
            cache_size: Some(m.cache_size),
            sync_mode: Some(sync_mode),
            recovery_mode: Some(recovery_mode),
            preallocation: m.preallocation.map(|p| match p {
                Preallocation::Zeroed => PreallocationForm::Zeroed,
                Preallocation::Reserved => PreallocationForm::Reserved,
            }),
            max_entry_size: Some(ByteSize(m.max_entry_size_bytes)),
            streams: Some(m.streams),
            max_dead_bytes: Some(ByteSize(m.max_dead_bytes)),
            yield_while_syncing: Some(m.yield_while_syncing),
            compression: Some(compression),
            writes_in_place: Some(self.writes_in_place),
            reads_in_place: Some(self.reads_in_place),
        }
        .serialize(serializer)
    }
}
