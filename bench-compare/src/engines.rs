//! The engines under test, each behind one small interface, and how each
//! maps segwal's model (regions holding tables, batches of opaque entries)
//! onto its own. docs/BENCHMARKS.md repeats the mappings for readers.
//!
//! Every engine is driven from plain OS threads, one per writer. A batch
//! goes to a [`Location`], a table of a region; a writer knows how many
//! entries it has written to each location, so it passes the index of its
//! batch's first entry there (engines that need one, like raft-engine and
//! the RocksDB keys, use it; segwal allocates its own).

use std::fmt;
use std::fs::File;
use std::io::{IoSlice, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::compress::{Codec, Tuning};
use crate::error::{Context, Error, Result};

/// The one region the workloads write to unless they spread writers over
/// regions: each writer owns a table of it, so the writers share one
/// region, as they share one log in raft-engine, okaywal and RocksDB.
pub(crate) const REGION: u64 = 1;

/// Where a batch goes: a table of a region, segwal's model. segwal uses
/// both; raft-engine, okaywal and RocksDB have one flat namespace of logs
/// (raft groups, key prefixes) and take the pair as one number,
/// [`Location::stream_id`]; the floors ignore it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Location {
    pub(crate) region: u64,
    pub(crate) table: u64,
}

impl Location {
    pub(crate) fn new(region: u64, table: u64) -> Location {
        Location { region, table }
    }

    /// The location as one number, for an engine whose logs have one id:
    /// the region in the high 32 bits, the table in the low ones. Distinct
    /// locations get distinct ids, and one region's tables are adjacent.
    pub(crate) fn stream_id(self) -> u64 {
        assert!(
            self.region < 1 << 32 && self.table < 1 << 32,
            "{self:?} does not fit a stream id"
        );
        self.region << 32 | self.table
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "region {} table {}", self.region, self.table)
    }
}

/// An engine under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum EngineKind {
    /// segwal end to end: the async `LocalWal` (`WalManager` API), called
    /// from writer threads through a tokio runtime. The baseline of every
    /// ratio.
    Segwal,
    /// segwal's synchronous `SegmentManager`, the layer under `LocalWal`,
    /// called directly: the difference to `Segwal` is the adapter's cost.
    SegwalManager,
    /// raft-engine 0.4 (TiKV's log store).
    RaftEngine,
    /// okaywal 0.3.
    Okaywal,
    /// RocksDB through the `rocksdb` crate, with its own WAL.
    Rocksdb,
    /// Plain `write` + `fdatasync` on one appended file: what the disk and
    /// kernel allow with no format, no index and no group commit.
    Floor,
    /// The floor with each synced write one system call instead of two: a
    /// file opened `O_DSYNC`, so that each `write` is durable on return, as
    /// segwal's lone synced writes are (`pwritev2` with `RWF_DSYNC`). What
    /// any design pays that makes each write durable on its own; only the
    /// synced workloads run it.
    FloorDsync,
    /// The floor with group commit and nothing else: a writer queues its
    /// batch, and whichever writer finds the file free writes every queued
    /// batch with one `writev` and one `fdatasync`; the others yield their
    /// core until theirs is written. Only the synced workloads run it.
    FloorGroup,
}

impl EngineKind {
    /// Every engine, in the order the runs alternate.
    pub(crate) const ALL: [EngineKind; 8] = [
        EngineKind::Segwal,
        EngineKind::SegwalManager,
        EngineKind::RaftEngine,
        EngineKind::Okaywal,
        EngineKind::Rocksdb,
        EngineKind::Floor,
        EngineKind::FloorDsync,
        EngineKind::FloorGroup,
    ];

    /// The name on the command line and in the results.
    pub(crate) fn name(self) -> &'static str {
        match self {
            EngineKind::Segwal => "segwal",
            EngineKind::SegwalManager => "segwal-manager",
            EngineKind::RaftEngine => "raft-engine",
            EngineKind::Okaywal => "okaywal",
            EngineKind::Rocksdb => "rocksdb",
            EngineKind::Floor => "floor",
            EngineKind::FloorDsync => "floor-dsync",
            EngineKind::FloorGroup => "floor-group",
        }
    }

    /// The engine called `name`.
    pub(crate) fn parse(name: &str) -> Result<EngineKind> {
        EngineKind::ALL
            .into_iter()
            .find(|e| e.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = EngineKind::ALL.iter().map(|e| e.name()).collect();
                Error::msg(format!(
                    "unknown engine {name:?}; the engines are {}",
                    names.join(", ")
                ))
            })
    }

    /// Whether the engine has a notion of reading one table's entries.
    pub(crate) fn reads_tables(self) -> bool {
        !self.is_floor()
    }

    /// Whether this is one of the floors (not a log, a bound on one).
    pub(crate) fn is_floor(self) -> bool {
        matches!(
            self,
            EngineKind::Floor | EngineKind::FloorDsync | EngineKind::FloorGroup
        )
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A log opened for writing or reading, shared by the writer threads.
pub(crate) trait Wal: Send + Sync {
    /// Appends `entries` as one atomic batch to `at`, whose first entry is
    /// the location's `first_index`-th (from 1). Durable on return if the
    /// log was opened `synced`.
    fn write(&self, at: Location, first_index: u64, entries: &[Bytes]) -> Result<()>;

    /// Makes everything written so far durable (segwal: to region
    /// [`REGION`], the only one the workloads that call this write).
    fn sync(&self) -> Result<()>;

    /// Hands every entry of the table at `at` to `visit`, in order.
    fn read_table(&self, at: Location, visit: &mut dyn FnMut(&[u8])) -> Result<()>;

    /// Hands every entry of every table to `visit` (segwal: of region
    /// [`REGION`], the only one the workloads that read write).
    fn read_all(&self, visit: &mut dyn FnMut(&[u8])) -> Result<()>;

    /// Engine counters worth a line in the results (segwal's batches per
    /// sync, for instance).
    fn note(&self) -> Option<String> {
        None
    }

    /// Closes the log, syncing what the engine syncs on close.
    fn close(self: Box<Self>) -> Result<()>;
}

/// Opens `kind`'s log in `dir` (created if missing). `synced`: every write
/// is durable on return. `entry_len`: the size of every entry (the floor has no framing and needs
/// it to count entries when reading back). `tuning`: the codec, which
/// okaywal and the floors (that have none) ignore, and RocksDB's memtable.
pub(crate) fn open(
    kind: EngineKind,
    dir: &Path,
    synced: bool,
    entry_len: usize,
    tuning: Tuning,
) -> Result<Box<dyn Wal>> {
    std::fs::create_dir_all(dir).context(|| format!("cannot create {}", dir.display()))?;
    let codec = tuning.codec;
    Ok(match kind {
        EngineKind::Segwal => Box::new(segwal_async::AsyncSegwal::open(dir, synced, codec)?),
        EngineKind::SegwalManager => Box::new(segwal_sync::SyncSegwal::open(dir, synced, codec)?),
        EngineKind::RaftEngine => Box::new(raft::Raft::open(dir, synced, codec)?),
        EngineKind::Okaywal => Box::new(okay::Okay::open(dir, None)?.0),
        EngineKind::Rocksdb => Box::new(rocks::Rocks::open(dir, synced, tuning)?),
        EngineKind::Floor => Box::new(Floor::open(dir, synced, false, entry_len)?),
        EngineKind::FloorDsync => Box::new(Floor::open(dir, synced, true, entry_len)?),
        EngineKind::FloorGroup => Box::new(GroupFloor::open(dir, synced, entry_len)?),
    })
}

/// Opens `kind`'s log in `dir` and reads back every entry: the `recover`
/// workload's measured step. Returns the entries and payload bytes read.
pub(crate) fn recover_read_all(
    kind: EngineKind,
    dir: &Path,
    entry_len: usize,
    tuning: Tuning,
) -> Result<(u64, u64)> {
    if kind == EngineKind::Okaywal {
        // okaywal hands every entry to its log manager during recovery, and
        // keeps nothing readable afterwards but positions the caller saved.
        let (wal, entries, bytes) = okay::Okay::open(dir, None)?;
        wal.close_boxed()?;
        return Ok((entries, bytes));
    }
    let (mut entries, mut bytes) = (0u64, 0u64);
    let wal = open(kind, dir, false, entry_len, tuning)?;
    wal.read_all(&mut |payload: &[u8]| {
        entries += 1;
        bytes += payload.len() as u64;
    })?;
    wal.close()?;
    Ok((entries, bytes))
}

/// The 16-byte key (RocksDB) or header chunk (okaywal) naming a location
/// (its stream id) and an entry's index in it, big-endian so byte order is
/// numeric order.
fn location_key(at: Location, index: u64) -> [u8; 16] {
    let mut key = [0; 16];
    key[..8].copy_from_slice(&at.stream_id().to_be_bytes());
    key[8..].copy_from_slice(&index.to_be_bytes());
    key
}

/// segwal through the async `WalManager` API.
mod segwal_async {
    use super::*;
    use segwal::{
        LocalWal, LocalWalConfig, LogWriteBatch, ReadBoundary, ReadContext, ReadRequest,
        ScanRequest, SyncMode, WalLocation, WalManager, WriteContext,
    };

    /// A `LocalWal` and the runtime its futures run on.
    pub(super) struct AsyncSegwal {
        runtime: tokio::runtime::Runtime,
        wal: LocalWal,
    }

    impl AsyncSegwal {
        pub(super) fn open(dir: &Path, synced: bool, codec: Codec) -> Result<AsyncSegwal> {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context(|| "cannot start a tokio runtime")?;
            let mode = if synced {
                SyncMode::Always
            } else {
                SyncMode::Never
            };
            let config = LocalWalConfig::new(dir)
                .sync_mode(mode)
                .compression(codec.segwal());
            let wal = runtime
                .block_on(LocalWal::open(config))
                .context(|| format!("cannot open segwal in {}", dir.display()))?;
            Ok(AsyncSegwal { runtime, wal })
        }

        fn drain(
            &self,
            iter: segwal::Result<segwal::BatchLogIterator>,
            visit: &mut dyn FnMut(&[u8]),
        ) -> Result<()> {
            self.runtime.block_on(async {
                let mut iter = iter.context(|| "cannot start a segwal read")?;
                while let Some(batch) = iter.next_batch().await.context(|| "segwal read failed")? {
                    for entry in &batch {
                        visit(&entry.payload);
                    }
                }
                Ok(())
            })
        }
    }

    impl Wal for AsyncSegwal {
        fn write(&self, at: Location, _first_index: u64, entries: &[Bytes]) -> Result<()> {
            let mut batch = LogWriteBatch::new(WalLocation::new(at.region, at.table));
            for entry in entries {
                batch.push(entry.clone());
            }
            self.runtime
                .block_on(self.wal.write(&WriteContext::default(), &batch))
                .context(|| format!("segwal write to {at} failed"))?;
            Ok(())
        }

        fn sync(&self) -> Result<()> {
            // `WalManager` has no sync of its own; closing a region syncs it.
            self.runtime
                .block_on(self.wal.close_region(REGION))
                .context(|| "segwal close_region (sync) failed")
        }

        fn read_table(&self, at: Location, visit: &mut dyn FnMut(&[u8])) -> Result<()> {
            let request = ReadRequest {
                location: WalLocation::new(at.region, at.table),
                start: ReadBoundary::Min,
                end: ReadBoundary::Max,
            };
            let iter = self
                .runtime
                .block_on(self.wal.read_batch(&ReadContext::default(), &request));
            self.drain(iter, visit)
        }

        fn read_all(&self, visit: &mut dyn FnMut(&[u8])) -> Result<()> {
            let request = ScanRequest { region_id: REGION };
            let iter = self
                .runtime
                .block_on(self.wal.scan(&ReadContext::default(), &request));
            self.drain(iter, visit)
        }

        fn note(&self) -> Option<String> {
            let stats = self.wal.statistics();
            Some(format!(
                "{:.1} batches per sync",
                stats.batches_written as f64 / stats.syncs.max(1) as f64
            ))
        }

        fn close(self: Box<Self>) -> Result<()> {
            self.runtime
                .block_on(self.wal.close_gracefully())
                .context(|| "segwal close failed")
        }
    }
}

/// segwal's synchronous segment manager.
mod segwal_sync {
    use super::*;
    use segwal_manager::{ManagerConfig, SegmentManager, SyncMode};

    /// Entries per `next_batch` call when reading.
    const READ_BATCH: usize = 1024;

    pub(super) struct SyncSegwal {
        manager: SegmentManager,
    }

    impl SyncSegwal {
        pub(super) fn open(dir: &Path, synced: bool, codec: Codec) -> Result<SyncSegwal> {
            let config = ManagerConfig {
                sync_mode: if synced {
                    SyncMode::Always
                } else {
                    SyncMode::Never
                },
                compression: codec.segwal(),
                ..ManagerConfig::new(dir)
            };
            let manager = SegmentManager::open(config)
                .context(|| format!("cannot open a segwal manager in {}", dir.display()))?;
            Ok(SyncSegwal { manager })
        }

        fn drain(
            iter: segwal_manager::Result<segwal_manager::EntryIter>,
            visit: &mut dyn FnMut(&[u8]),
        ) -> Result<()> {
            let mut iter = iter.context(|| "cannot start a segwal read")?;
            while iter
                .next_batch(READ_BATCH, |entry| visit(entry.payload))
                .context(|| "segwal read failed")?
                > 0
            {}
            Ok(())
        }
    }

    impl Wal for SyncSegwal {
        fn write(&self, at: Location, _first_index: u64, entries: &[Bytes]) -> Result<()> {
            self.manager
                .write(at.region, at.table, entries)
                .context(|| format!("segwal write to {at} failed"))?;
            Ok(())
        }

        fn sync(&self) -> Result<()> {
            self.manager
                .close_region(REGION)
                .context(|| "segwal close_region (sync) failed")
        }

        fn read_table(&self, at: Location, visit: &mut dyn FnMut(&[u8])) -> Result<()> {
            SyncSegwal::drain(self.manager.read(at.region, at.table, 0, u64::MAX), visit)
        }

        fn read_all(&self, visit: &mut dyn FnMut(&[u8])) -> Result<()> {
            SyncSegwal::drain(self.manager.scan(REGION), visit)
        }

        fn note(&self) -> Option<String> {
            let stats = self.manager.statistics();
            Some(format!(
                "{:.1} batches per sync",
                stats.batches_written as f64 / stats.syncs.max(1) as f64
            ))
        }

        fn close(self: Box<Self>) -> Result<()> {
            self.manager.close().context(|| "segwal close failed")
        }
    }
}

/// raft-engine: a location (a table of a region) is a raft group, whose id
/// is the location's stream id; entries are `eraftpb::Entry` messages whose
/// `data` is the payload (shared, not copied) and whose `index` counts from
/// 1 within the group.
mod raft {
    use super::*;
    use raft_engine::{Config, Engine, LogBatch, MessageExt};
    use raft_proto::eraftpb::Entry;

    /// Entries per `fetch_entries_to` call when reading.
    const READ_BATCH: u64 = 1024;

    /// Tells raft-engine where an `Entry` keeps its index.
    #[derive(Clone, Copy)]
    struct EntryExt;

    impl MessageExt for EntryExt {
        type Entry = Entry;

        fn index(entry: &Entry) -> u64 {
            entry.index
        }
    }

    pub(super) struct Raft {
        engine: Engine,
        synced: bool,
    }

    impl Raft {
        pub(super) fn open(dir: &Path, synced: bool, codec: Codec) -> Result<Raft> {
            // The defaults, as a user starts: 128 MiB files, recycling on,
            // lz4 tried on batches over 8 KiB; `--compression` sets that
            // threshold (0: off).
            let mut config = Config {
                dir: dir.display().to_string(),
                ..Config::default()
            };
            if let Some(threshold) = codec.raft_threshold() {
                config.batch_compression_threshold = raft_engine::ReadableSize(threshold);
            }
            let engine = Engine::open(config)
                .context(|| format!("cannot open raft-engine in {}", dir.display()))?;
            Ok(Raft { engine, synced })
        }

        /// Hands every entry of raft group `group` to `visit`, in order.
        fn read_group(&self, group: u64, visit: &mut dyn FnMut(&[u8])) -> Result<()> {
            let (Some(first), Some(last)) = (
                self.engine.first_index(group),
                self.engine.last_index(group),
            ) else {
                return Ok(());
            };
            let mut entries = Vec::new();
            let mut from = first;
            while from <= last {
                let to = (from + READ_BATCH).min(last + 1);
                entries.clear();
                self.engine
                    .fetch_entries_to::<EntryExt>(group, from, to, None, &mut entries)
                    .context(|| format!("raft-engine read of raft group {group} failed"))?;
                for entry in &entries {
                    visit(&entry.data);
                }
                from = to;
            }
            Ok(())
        }
    }

    impl Wal for Raft {
        fn write(&self, at: Location, first_index: u64, entries: &[Bytes]) -> Result<()> {
            let messages: Vec<Entry> = entries
                .iter()
                .zip(first_index..)
                .map(|(payload, index)| Entry {
                    term: 1,
                    index,
                    data: payload.clone(),
                    ..Entry::default()
                })
                .collect();
            let mut batch = LogBatch::default();
            batch
                .add_entries::<EntryExt>(at.stream_id(), &messages)
                .context(|| format!("raft-engine cannot batch {at}"))?;
            self.engine
                .write(&mut batch, self.synced)
                .context(|| format!("raft-engine write to {at} failed"))?;
            Ok(())
        }

        fn sync(&self) -> Result<()> {
            self.engine.sync().context(|| "raft-engine sync failed")
        }

        fn read_table(&self, at: Location, visit: &mut dyn FnMut(&[u8])) -> Result<()> {
            self.read_group(at.stream_id(), visit)
        }

        fn read_all(&self, visit: &mut dyn FnMut(&[u8])) -> Result<()> {
            for group in self.engine.raft_groups() {
                self.read_group(group, visit)?;
            }
            Ok(())
        }

        fn close(self: Box<Self>) -> Result<()> {
            self.engine.sync().context(|| "raft-engine sync failed")
        }
    }
}

/// okaywal: one log for all writers and every location (it has no notion
/// of a region or a table). A batch is one okaywal entry: a 16-byte chunk
/// naming the location (its stream id) and the first index, then one chunk
/// per payload. okaywal syncs every commit; it has no unsynced write. It
/// keeps no index: a reader sees entries only in recovery (or at positions
/// the application saved), so reading one table is a recovery that
/// filters. Checkpointing is off (`checkpoint_after_bytes` = u64::MAX) so
/// that the data stays in the log to be read back.
mod okay {
    use super::*;
    use okaywal::{
        Configuration, Entry, EntryId, LogManager, ReadChunkResult, SegmentReader, WriteAheadLog,
    };

    /// What recovery found: entries and payload bytes.
    #[derive(Debug, Default)]
    struct Counts {
        entries: AtomicU64,
        bytes: AtomicU64,
    }

    /// The log manager: counts the recovered payloads (of one location's
    /// stream id, or all), reading every byte and checking every chunk's
    /// checksum, and checkpoints nothing.
    #[derive(Debug)]
    struct Manager {
        counts: Arc<Counts>,
        stream: Option<u64>,
    }

    impl LogManager for Manager {
        fn recover(&mut self, entry: &mut Entry<'_>) -> std::io::Result<()> {
            let mut header = true;
            let mut wanted = true;
            loop {
                let mut chunk = match entry.read_chunk()? {
                    ReadChunkResult::Chunk(chunk) => chunk,
                    ReadChunkResult::EndOfEntry | ReadChunkResult::AbortedEntry => break,
                };
                let data = chunk.read_all()?;
                if !chunk.check_crc()? {
                    return Err(std::io::Error::other("okaywal chunk checksum mismatch"));
                }
                if header {
                    header = false;
                    let stream = u64::from_be_bytes(data[..8].try_into().expect("8 bytes"));
                    wanted = self.stream.is_none_or(|s| s == stream);
                } else if wanted {
                    self.counts.entries.fetch_add(1, Ordering::Relaxed);
                    self.counts
                        .bytes
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
            }
            Ok(())
        }

        fn checkpoint_to(
            &mut self,
            _last_checkpointed_id: EntryId,
            _checkpointed_entries: &mut SegmentReader,
            _wal: &WriteAheadLog,
        ) -> std::io::Result<()> {
            Ok(())
        }
    }

    pub(super) struct Okay {
        wal: WriteAheadLog,
    }

    impl Okay {
        /// Opens (recovers) the log in `dir`, counting the entries of
        /// location `at` (or of all locations) that recovery reads; returns
        /// the log and the entries and payload bytes counted.
        pub(super) fn open(dir: &Path, at: Option<Location>) -> Result<(Okay, u64, u64)> {
            let counts = Arc::new(Counts::default());
            let manager = Manager {
                counts: Arc::clone(&counts),
                stream: at.map(Location::stream_id),
            };
            let config = Configuration::default_for(dir).checkpoint_after_bytes(u64::MAX);
            let wal = config
                .open(manager)
                .context(|| format!("cannot open okaywal in {}", dir.display()))?;
            let entries = counts.entries.load(Ordering::Relaxed);
            let bytes = counts.bytes.load(Ordering::Relaxed);
            Ok((Okay { wal }, entries, bytes))
        }

        pub(super) fn close_boxed(self) -> Result<()> {
            self.wal.shutdown().context(|| "okaywal shutdown failed")
        }
    }

    impl Wal for Okay {
        fn write(&self, at: Location, first_index: u64, entries: &[Bytes]) -> Result<()> {
            let fail = || format!("okaywal write to {at} failed");
            let mut entry = self.wal.begin_entry().context(fail)?;
            entry
                .write_chunk(&location_key(at, first_index))
                .context(fail)?;
            for payload in entries {
                entry.write_chunk(payload).context(fail)?;
            }
            entry.commit().context(fail)?;
            Ok(())
        }

        fn sync(&self) -> Result<()> {
            // Every commit is synced already.
            Ok(())
        }

        fn read_table(&self, _at: Location, _visit: &mut dyn FnMut(&[u8])) -> Result<()> {
            Err(Error::msg(
                "okaywal reads tables only in recovery; use okaywal_read_table",
            ))
        }

        fn read_all(&self, _visit: &mut dyn FnMut(&[u8])) -> Result<()> {
            Err(Error::msg(
                "okaywal reads entries only in recovery; use recover_read_all",
            ))
        }

        fn close(self: Box<Self>) -> Result<()> {
            self.close_boxed()
        }
    }
}

/// Reads every entry of the table at `at` from okaywal's log in `dir`: a
/// recovery that keeps only that location's payloads (okaywal has no
/// index). Returns the entries and payload bytes read.
pub(crate) fn okaywal_read_table(dir: &Path, at: Location) -> Result<(u64, u64)> {
    let (wal, entries, bytes) = okay::Okay::open(dir, Some(at))?;
    wal.close_boxed()?;
    Ok((entries, bytes))
}

/// RocksDB: one database, its WAL on; an entry is the value of the key
/// (the location's stream id, index), big-endian, so a location is a key
/// prefix; a batch is one `WriteBatch`, synced with
/// `WriteOptions::set_sync(true)` in synced workloads. Built with zstd
/// only, for `wal_compression` (`--compression zstd`); its table files
/// stay uncompressed, as snappy, its default, is not built in.
mod rocks {
    use super::*;
    use rocksdb::{DB, Options, WriteBatch, WriteOptions};

    pub(super) struct Rocks {
        db: DB,
        options: WriteOptions,
    }

    impl Rocks {
        pub(super) fn open(dir: &Path, synced: bool, tuning: Tuning) -> Result<Rocks> {
            let mut db_options = Options::default();
            db_options.create_if_missing(true);
            db_options.set_wal_compression_type(tuning.codec.rocksdb());
            if let Some(bytes) = tuning.memtable_bytes {
                db_options.set_write_buffer_size(
                    usize::try_from(bytes).context(|| "memtable size overflows usize")?,
                );
            }
            let db = DB::open(&db_options, dir)
                .context(|| format!("cannot open RocksDB in {}", dir.display()))?;
            let mut options = WriteOptions::default();
            options.set_sync(synced);
            Ok(Rocks { db, options })
        }

        /// Hands `visit` the values from key `from` on, while the key's
        /// prefix is `stream` (if given).
        fn iterate(
            &self,
            from: &[u8],
            stream: Option<u64>,
            visit: &mut dyn FnMut(&[u8]),
        ) -> Result<()> {
            let mut iter = self.db.raw_iterator();
            iter.seek(from);
            while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
                if stream.is_some_and(|s| key[..8] != s.to_be_bytes()) {
                    break;
                }
                visit(value);
                iter.next();
            }
            iter.status().context(|| "RocksDB read failed")
        }
    }

    impl Wal for Rocks {
        fn write(&self, at: Location, first_index: u64, entries: &[Bytes]) -> Result<()> {
            let mut batch = WriteBatch::default();
            for (payload, index) in entries.iter().zip(first_index..) {
                batch.put(location_key(at, index), payload);
            }
            self.db
                .write_opt(batch, &self.options)
                .context(|| format!("RocksDB write to {at} failed"))
        }

        fn sync(&self) -> Result<()> {
            self.db
                .flush_wal(true)
                .context(|| "RocksDB WAL sync failed")
        }

        fn read_table(&self, at: Location, visit: &mut dyn FnMut(&[u8])) -> Result<()> {
            self.iterate(&location_key(at, 0), Some(at.stream_id()), visit)
        }

        fn read_all(&self, visit: &mut dyn FnMut(&[u8])) -> Result<()> {
            self.iterate(&[], None, visit)
        }

        fn close(self: Box<Self>) -> Result<()> {
            self.db
                .flush_wal(true)
                .context(|| "RocksDB WAL sync failed")
        }
    }
}

/// The floors: every batch is one `writev` of its payloads (no framing, no
/// checksum) appended to one file (`O_APPEND`, so concurrent writers never
/// overlap), then, if synced, an `fdatasync` of its own: no group commit.
/// With `dsync` the file is opened `O_DSYNC` instead, so that the `writev`
/// is durable on return and there is no second call. Reading back reads the
/// file in 1 MiB blocks and counts `entry_len`-byte entries. A floor has no
/// notion of a region or a table: it ignores the location, and every batch
/// goes to the one file.
pub(crate) struct Floor {
    file: File,
    path: PathBuf,
    /// Whether a write must be durable on return.
    synced: bool,
    /// Whether the file was opened `O_DSYNC`, so that every write already is.
    dsync: bool,
    entry_len: usize,
}

impl Floor {
    const FILE: &'static str = "floor.log";

    fn open(dir: &Path, synced: bool, dsync: bool, entry_len: usize) -> Result<Floor> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(Floor::FILE);
        let dsync = synced && dsync;
        let file = File::options()
            .create(true)
            .append(true)
            .read(true)
            .custom_flags(if dsync { libc::O_DSYNC } else { 0 })
            .open(&path)
            .context(|| format!("cannot open {}", path.display()))?;
        Ok(Floor {
            file,
            path,
            synced,
            dsync,
            entry_len,
        })
    }

    /// Appends `entries` with one `writev` (more only on a short write).
    fn append(&self, entries: &[Bytes]) -> Result<()> {
        let slices: Vec<IoSlice<'_>> = entries.iter().map(|e| IoSlice::new(e)).collect();
        let total: usize = entries.iter().map(|e| e.len()).sum();
        let written = (&self.file)
            .write_vectored(&slices)
            .context(|| format!("write to {} failed", self.path.display()))?;
        if written < total {
            // Regular files do not write short but on a full disk; finish
            // (no longer atomically) rather than pretend.
            let rest: Vec<u8> = entries.iter().flat_map(|e| e.iter().copied()).collect();
            (&self.file)
                .write_all(&rest[written..])
                .context(|| format!("write to {} failed", self.path.display()))?;
        }
        Ok(())
    }
}

impl Wal for Floor {
    fn write(&self, _at: Location, _first_index: u64, entries: &[Bytes]) -> Result<()> {
        self.append(entries)?;
        if self.synced && !self.dsync {
            self.sync()?;
        }
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .context(|| format!("fdatasync of {} failed", self.path.display()))
    }

    fn read_table(&self, _at: Location, _visit: &mut dyn FnMut(&[u8])) -> Result<()> {
        Err(Error::msg("the floor has no tables"))
    }

    fn read_all(&self, visit: &mut dyn FnMut(&[u8])) -> Result<()> {
        let mut file =
            File::open(&self.path).context(|| format!("cannot open {}", self.path.display()))?;
        let mut block = vec![0u8; (1 << 20) / self.entry_len * self.entry_len];
        loop {
            let mut filled = 0;
            while filled < block.len() {
                let n = file
                    .read(&mut block[filled..])
                    .context(|| format!("read of {} failed", self.path.display()))?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            for entry in block[..filled].chunks(self.entry_len) {
                visit(entry);
            }
            if filled < block.len() {
                return Ok(());
            }
        }
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.sync()
    }
}

/// `floor-group`: the floor's appends, with the simplest group commit
/// that shares each `fdatasync` among concurrent writers. A writer queues
/// its batch (the payloads are reference-counted, so nothing is copied)
/// and then, until a group write has carried it, either takes the file
/// and writes every queued batch with one `writev` and one `fdatasync`, or
/// yields its core. No framing, no checksum, no index, no parking: a
/// bound on what grouping alone can do on the medium.
pub(crate) struct GroupFloor {
    /// Opened unsynced: the group syncs for itself.
    floor: Floor,
    synced: bool,
    queue: Mutex<Vec<Queued>>,
    /// Held by the writer of a group.
    file: Mutex<()>,
}

/// A batch waiting for a group write, and where its outcome goes.
struct Queued {
    entries: Vec<Bytes>,
    outcome: Arc<AtomicU8>,
}

/// The outcomes a queued batch can have.
const QUEUED: u8 = 0;
const WRITTEN: u8 = 1;
const FAILED: u8 = 2;

impl GroupFloor {
    fn open(dir: &Path, synced: bool, entry_len: usize) -> Result<GroupFloor> {
        Ok(GroupFloor {
            floor: Floor::open(dir, false, false, entry_len)?,
            synced,
            queue: Mutex::new(Vec::new()),
            file: Mutex::new(()),
        })
    }

    /// Writes and syncs every queued batch (none, if another group write
    /// took them all).
    fn write_group(&self) -> Result<()> {
        let group = std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()));
        if group.is_empty() {
            return Ok(());
        }
        let all: Vec<Bytes> = group
            .iter()
            .flat_map(|q| q.entries.iter().cloned())
            .collect();
        let written = self.floor.append(&all).and_then(|()| self.floor.sync());
        let outcome = if written.is_ok() { WRITTEN } else { FAILED };
        for queued in &group {
            queued.outcome.store(outcome, Ordering::Release);
        }
        written
    }
}

impl Wal for GroupFloor {
    fn write(&self, at: Location, first_index: u64, entries: &[Bytes]) -> Result<()> {
        if !self.synced {
            return self.floor.write(at, first_index, entries);
        }
        let outcome = Arc::new(AtomicU8::new(QUEUED));
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Queued {
                entries: entries.to_vec(),
                outcome: Arc::clone(&outcome),
            });
        loop {
            match outcome.load(Ordering::Acquire) {
                WRITTEN => return Ok(()),
                FAILED => {
                    return Err(Error::msg(format!(
                        "the group write to {} that carried this batch failed",
                        self.floor.path.display()
                    )));
                }
                _ => {}
            }
            match self.file.try_lock() {
                Ok(_file) => {
                    self.write_group()?;
                }
                Err(_) => std::thread::yield_now(),
            }
        }
    }

    fn sync(&self) -> Result<()> {
        self.floor.sync()
    }

    fn read_table(&self, at: Location, visit: &mut dyn FnMut(&[u8])) -> Result<()> {
        self.floor.read_table(at, visit)
    }

    fn read_all(&self, visit: &mut dyn FnMut(&[u8])) -> Result<()> {
        self.floor.read_all(visit)
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.floor.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_locations_get_distinct_stream_ids_in_region_then_table_order() {
        // The peers key every log on the stream id alone, so two locations
        // sharing one would merge two logs.
        let mut ids = Vec::new();
        for region in [0, 1, 2, 255, u64::from(u32::MAX)] {
            for table in [0, 1, 2, 100, u64::from(u32::MAX)] {
                ids.push(Location::new(region, table).stream_id());
            }
        }
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, ids);
    }

    #[test]
    fn every_floor_reads_back_what_it_wrote_in_order() {
        // The floors are measured only by their speed, so this checks the
        // other half: each writes every byte, once, in order.
        for kind in [
            EngineKind::Floor,
            EngineKind::FloorDsync,
            EngineKind::FloorGroup,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let wal = open(kind, dir.path(), true, 4, Tuning::default()).unwrap();
            for batch in 0u8..3 {
                let entries: Vec<Bytes> = (0..2)
                    .map(|i| Bytes::from(vec![batch * 2 + i; 4]))
                    .collect();
                wal.write(Location::new(REGION, 1), 1, &entries).unwrap();
            }
            let mut read = Vec::new();
            wal.read_all(&mut |entry| read.push(entry.to_vec()))
                .unwrap();
            let expected: Vec<Vec<u8>> = (0u8..6).map(|i| vec![i; 4]).collect();
            assert_eq!(read, expected, "{kind}");
            wal.close().unwrap();
        }
    }

    #[test]
    fn floor_group_writes_every_concurrent_batch_once_and_in_each_writer_s_order() {
        // Batches go through other writers' group writes: none may be lost,
        // doubled or reordered within its writer.
        let dir = tempfile::tempdir().unwrap();
        let wal: Arc<dyn Wal> = Arc::from(
            open(
                EngineKind::FloorGroup,
                dir.path(),
                true,
                2,
                Tuning::default(),
            )
            .unwrap(),
        );
        let writers: Vec<_> = (0u8..8)
            .map(|writer| {
                let wal = Arc::clone(&wal);
                std::thread::spawn(move || {
                    for batch in 0u8..50 {
                        let at = Location::new(REGION, u64::from(writer) + 1);
                        wal.write(
                            at,
                            1 + u64::from(batch),
                            &[Bytes::from(vec![writer, batch])],
                        )
                        .unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        let mut next = [0u8; 8];
        wal.read_all(&mut |entry| {
            let (writer, batch) = (usize::from(entry[0]), entry[1]);
            assert_eq!(batch, next[writer], "writer {writer}");
            next[writer] += 1;
        })
        .unwrap();
        assert_eq!(next, [50; 8]);
    }
}
