//! The ways HoraeDB's analytic engine uses its WAL, written against
//! `segwal::horaedb` under HoraeDB's paths: a configuration struct holding
//! the WAL `Config` (with `Default`, read from TOML and written back), a
//! set-up generic over `WalsOpener` fed `WalRuntimes` built from the
//! engine's runtimes, a payload that borrows the request it encodes and
//! carries its own header, a decoder that reads the buffer's chunk,
//! table-based and region-based replay through `next_log_entries` with
//! the engine's filters, a manifest log store over `BatchLogIteratorAdapter`,
//! and an error enum with `wal::manager::Error` as a source. The shapes are
//! HoraeDB's (`setup.rs`, `payload.rs`, `wal_replayer.rs`,
//! `manifest/details.rs`); the code is this crate's own.

use std::{collections::HashMap, collections::VecDeque, mem, sync::Arc, time::Duration};

use bytes::{Buf, BufMut};
use segwal::horaedb::{
    config::{Config as WalConfig, StorageConfig},
    kv_encoder::LogBatchEncoder,
    local_storage_impl::wal_manager::LocalStorageWalsOpener,
    log_batch::{LogEntry, Payload, PayloadDecodeContext, PayloadDecoder},
    manager::{
        self, BatchLogIteratorAdapter, OpenedWals, ReadBoundary, ReadContext, ReadRequest,
        RegionId, ScanContext, ScanRequest, SequenceNumber, WalLocation, WalManagerRef,
        WalRuntimes, WalsOpener, WriteContext,
    },
};
use segwal_horaedb_tests::runtime::{self, Runtime};
use segwal_nats::NatsWalsOpener;
use serde::{Deserialize, Serialize};
use snafu::{ResultExt, Snafu};

// The NATS tests' servers: real `nats-server` processes, provisioned by
// `cargo xtask test`.
#[path = "../../segwal-nats/tests/support/mod.rs"]
mod support;

/// The engine's errors, one wrapping the WAL's as HoraeDB's engine does.
#[derive(Debug, Snafu)]
enum EngineError {
    #[snafu(display("wal of table {table_id} failed: {source}"))]
    Wal {
        table_id: u64,
        source: manager::Error,
    },
    #[snafu(display("payload has {len} bytes, too short for a row count"))]
    ShortPayload { len: usize },
}

/// The engine's configuration: the WAL's sits inside, as `analytic.wal`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
struct EngineConfig {
    analytic: AnalyticConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
struct AnalyticConfig {
    wal_replay_batch_size: usize,
    wal: WalConfig,
}

impl Default for AnalyticConfig {
    fn default() -> Self {
        AnalyticConfig {
            wal_replay_batch_size: 3,
            wal: WalConfig::default(),
        }
    }
}

/// The engine's runtimes, handed to the WALs as HoraeDB's set-up does.
struct EngineRuntimes {
    read_runtime: Arc<Runtime>,
    write_runtime: Arc<Runtime>,
    default_runtime: Arc<Runtime>,
}

fn make_wal_runtime(runtimes: Arc<EngineRuntimes>) -> WalRuntimes {
    WalRuntimes {
        read_runtime: runtimes.read_runtime.clone(),
        write_runtime: runtimes.write_runtime.clone(),
        default_runtime: runtimes.default_runtime.clone(),
    }
}

/// Opens the WALs with the opener the configuration's backend needs, as
/// HoraeDB's set-up matches on `StorageConfig`.
async fn open_engine_wals(config: &EngineConfig, runtimes: Arc<EngineRuntimes>) -> OpenedWals {
    match &config.analytic.wal.storage {
        StorageConfig::Local(_) => open_wals::<LocalStorageWalsOpener>(config, runtimes).await,
        StorageConfig::Nats(_) => open_wals::<NatsWalsOpener>(config, runtimes).await,
        other => panic!("no opener for {other:?}"),
    }
}

async fn open_wals<T: WalsOpener>(
    config: &EngineConfig,
    runtimes: Arc<EngineRuntimes>,
) -> OpenedWals {
    T::default()
        .open_wals(&config.analytic.wal, make_wal_runtime(runtimes))
        .await
        .expect("should open the wals")
}

/// A write request of rows `(timestamp, value)`, encoded in place.
#[derive(Debug)]
struct WriteRequest {
    rows: Vec<(i64, f64)>,
}

/// What the engine writes: borrows the request, prefixes its own header.
#[derive(Debug)]
enum WritePayload<'a> {
    Write(&'a WriteRequest),
}

const WRITE_HEADER: u8 = 1;

impl Payload for WritePayload<'_> {
    type Error = EngineError;

    fn encode_size(&self) -> usize {
        let WritePayload::Write(req) = self;
        1 + 4 + req.rows.len() * 16
    }

    fn encode_to<B: BufMut>(&self, buf: &mut B) -> Result<(), EngineError> {
        let WritePayload::Write(req) = self;
        buf.put_u8(WRITE_HEADER);
        buf.put_u32(req.rows.len() as u32);
        for (timestamp, value) in &req.rows {
            buf.put_i64(*timestamp);
            buf.put_f64(*value);
        }
        Ok(())
    }
}

/// What replay gets back.
#[derive(Debug, PartialEq)]
enum ReadPayload {
    Write { rows: Vec<(i64, f64)> },
}

/// The engine's decoder: its header, then the rows from the chunk.
struct WalDecoder;

impl PayloadDecoder for WalDecoder {
    type Error = EngineError;
    type Target = ReadPayload;

    fn decode<B: Buf>(
        &self,
        _ctx: &PayloadDecodeContext,
        buf: &mut B,
    ) -> Result<ReadPayload, EngineError> {
        let len = buf.remaining();
        snafu::ensure!(
            len >= 5 && buf.get_u8() == WRITE_HEADER,
            ShortPayloadSnafu { len }
        );
        let count = buf.get_u32() as usize;
        let mut chunk = buf.chunk();
        let mut rows = Vec::with_capacity(count);
        for _ in 0..count {
            rows.push((chunk.get_i64(), chunk.get_f64()));
        }
        Ok(ReadPayload::Write { rows })
    }
}

async fn write_rows(
    wal: &WalManagerRef,
    location: WalLocation,
    rows: Vec<(i64, f64)>,
) -> SequenceNumber {
    let request = WriteRequest { rows };
    let payload = WritePayload::Write(&request);
    let log_batch = LogBatchEncoder::create(location)
        .encode(&payload)
        .expect("should encode the payload");
    wal.write(&WriteContext::default(), &log_batch)
        .await
        .context(WalSnafu {
            table_id: location.table_id,
        })
        .unwrap()
}

/// Table-based replay: the table's entries after its flushed sequence.
async fn replay_table(
    wal: &WalManagerRef,
    location: WalLocation,
    flushed: SequenceNumber,
    batch_size: usize,
) -> Vec<(SequenceNumber, ReadPayload)> {
    let read_ctx = ReadContext {
        batch_size,
        ..Default::default()
    };
    let read_req = ReadRequest {
        location,
        start: ReadBoundary::Excluded(flushed),
        end: ReadBoundary::Max,
    };
    let mut log_iter = wal.read_batch(&read_ctx, &read_req).await.unwrap();
    let mut log_entry_buf = VecDeque::with_capacity(batch_size);
    let mut replayed = Vec::new();
    loop {
        log_entry_buf = log_iter
            .next_log_entries(WalDecoder, |_| true, log_entry_buf)
            .await
            .unwrap();
        if log_entry_buf.is_empty() {
            break;
        }
        replayed.extend(log_entry_buf.drain(..).map(|e| (e.sequence, e.payload)));
    }
    replayed
}

/// Region-based replay: a scan of the shard, filtered to open tables.
async fn replay_region(
    wal: &WalManagerRef,
    shard_id: u32,
    open_tables: &[u64],
    batch_size: usize,
) -> HashMap<u64, usize> {
    let scan_ctx = ScanContext {
        batch_size,
        ..Default::default()
    };
    let scan_req = ScanRequest {
        region_id: shard_id as RegionId,
    };
    let mut log_iter = wal.scan(&scan_ctx, &scan_req).await.unwrap();
    let tables: Arc<HashMap<u64, ()>> = Arc::new(open_tables.iter().map(|t| (*t, ())).collect());
    let mut rows_by_table = HashMap::new();
    let mut log_entry_buf = VecDeque::new();
    loop {
        let tables_for_filter = tables.clone();
        let log_filter = move |log_table_id| tables_for_filter.contains_key(&log_table_id);
        log_entry_buf = log_iter
            .next_log_entries(WalDecoder, log_filter, log_entry_buf)
            .await
            .unwrap();
        if log_entry_buf.is_empty() {
            break;
        }
        assert!(log_entry_buf.len() <= batch_size);
        for entry in &log_entry_buf {
            let ReadPayload::Write { rows } = &entry.payload;
            *rows_by_table.entry(entry.table_id).or_insert(0) += rows.len();
        }
    }
    rows_by_table
}

/// The manifest's update, as a payload of its own.
#[derive(Debug, Clone, PartialEq)]
struct MetaUpdate {
    version: u32,
}

impl Payload for MetaUpdate {
    type Error = EngineError;

    fn encode_size(&self) -> usize {
        4
    }

    fn encode_to<B: BufMut>(&self, buf: &mut B) -> Result<(), EngineError> {
        buf.put_u32(self.version);
        Ok(())
    }
}

struct MetaUpdateDecoder;

impl PayloadDecoder for MetaUpdateDecoder {
    type Error = EngineError;
    type Target = MetaUpdate;

    fn decode<B: Buf>(
        &self,
        _ctx: &PayloadDecodeContext,
        buf: &mut B,
    ) -> Result<MetaUpdate, EngineError> {
        let len = buf.remaining();
        snafu::ensure!(len == 4, ShortPayloadSnafu { len });
        Ok(MetaUpdate {
            version: buf.get_u32(),
        })
    }
}

/// The manifest's log store over the manifest WAL.
struct WalBasedLogStore {
    location: WalLocation,
    wal_manager: WalManagerRef,
}

/// Reads meta updates back one at a time, a decoded batch at a time.
struct MetaUpdateReaderImpl {
    iter: BatchLogIteratorAdapter,
    has_next: bool,
    buffer: VecDeque<LogEntry<MetaUpdate>>,
}

impl MetaUpdateReaderImpl {
    async fn next_update(&mut self) -> Option<(SequenceNumber, MetaUpdate)> {
        if !self.has_next {
            return None;
        }
        if self.buffer.is_empty() {
            let buffer = mem::take(&mut self.buffer);
            self.buffer = self
                .iter
                .next_log_entries(MetaUpdateDecoder, |_| true, buffer)
                .await
                .unwrap();
        }
        match self.buffer.pop_front() {
            Some(entry) => Some((entry.sequence, entry.payload)),
            None => {
                self.has_next = false;
                None
            }
        }
    }
}

impl WalBasedLogStore {
    async fn scan(&self, start: ReadBoundary) -> MetaUpdateReaderImpl {
        let ctx = ReadContext {
            timeout: Duration::from_secs(5),
            batch_size: 2,
        };
        let read_req = ReadRequest {
            location: self.location,
            start,
            end: ReadBoundary::Max,
        };
        let iter = self.wal_manager.read_batch(&ctx, &read_req).await.unwrap();
        MetaUpdateReaderImpl {
            iter,
            has_next: true,
            buffer: VecDeque::with_capacity(ctx.batch_size),
        }
    }

    async fn append(&self, meta_update: MetaUpdate) -> SequenceNumber {
        let log_batch = LogBatchEncoder::create(self.location)
            .encode(&meta_update)
            .unwrap();
        let write_ctx = WriteContext {
            timeout: Duration::from_secs(5),
        };
        self.wal_manager
            .write(&write_ctx, &log_batch)
            .await
            .unwrap()
    }

    async fn delete_up_to(&self, inclusive_end: SequenceNumber) {
        self.wal_manager
            .mark_delete_entries_up_to(self.location, inclusive_end)
            .await
            .unwrap();
    }
}

const TABLE_1: WalLocation = WalLocation {
    region_id: 0,
    table_id: 1,
};
const TABLE_2: WalLocation = WalLocation {
    region_id: 0,
    table_id: 2,
};
const TABLE_3: WalLocation = WalLocation {
    region_id: 0,
    table_id: 3,
};
const MANIFEST: WalLocation = WalLocation {
    region_id: 0,
    table_id: 0,
};

/// Three runtimes of two threads, as the engine keeps them.
fn engine_runtimes() -> Arc<EngineRuntimes> {
    let build = || {
        Arc::new(
            runtime::Builder::default()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
        )
    };
    Arc::new(EngineRuntimes {
        read_runtime: build(),
        write_runtime: build(),
        default_runtime: build(),
    })
}

/// Before a restart: manifest updates 1 to 5, four rounds of rows for
/// tables 1 to 3, table 1 flushed after its second write and the manifest
/// after its second update. Returns table 1's flushed sequence number.
async fn run_until_restart(config: &EngineConfig, runtimes: Arc<EngineRuntimes>) -> SequenceNumber {
    let wals = open_engine_wals(config, runtimes).await;
    let manifest = WalBasedLogStore {
        location: MANIFEST,
        wal_manager: wals.manifest_wal.clone(),
    };
    for version in 1..=5 {
        manifest.append(MetaUpdate { version }).await;
    }
    let mut flushed = 0;
    for i in 0..4i64 {
        let seq = write_rows(&wals.data_wal, TABLE_1, vec![(i, 1.0), (i + 100, 2.0)]).await;
        write_rows(&wals.data_wal, TABLE_2, vec![(i, 3.0)]).await;
        write_rows(&wals.data_wal, TABLE_3, vec![(i, 4.0)]).await;
        if i == 1 {
            flushed = seq;
        }
    }
    wals.data_wal
        .mark_delete_entries_up_to(TABLE_1, flushed)
        .await
        .unwrap();
    manifest.delete_up_to(2).await;
    wals.data_wal.close_gracefully().await.unwrap();
    wals.manifest_wal.close_gracefully().await.unwrap();
    flushed
}

/// After the restart: table 1 replays its unflushed rows, the region
/// replays tables 1 and 2 (table 3 is not open), the manifest replays the
/// updates after its snapshot.
async fn replay_after_restart(
    config: &EngineConfig,
    runtimes: Arc<EngineRuntimes>,
    flushed: SequenceNumber,
) {
    let batch_size = config.analytic.wal_replay_batch_size;
    let wals = open_engine_wals(config, runtimes).await;
    let replayed = replay_table(&wals.data_wal, TABLE_1, flushed, batch_size).await;
    let values: Vec<_> = replayed
        .into_iter()
        .map(|(_, ReadPayload::Write { rows })| rows)
        .collect();
    assert_eq!(
        values,
        [vec![(2, 1.0), (102, 2.0)], vec![(3, 1.0), (103, 2.0)]]
    );

    let by_table = replay_region(&wals.data_wal, 0, &[1, 2], batch_size).await;
    assert_eq!(by_table, HashMap::from([(1, 4), (2, 4)]));

    let manifest = WalBasedLogStore {
        location: MANIFEST,
        wal_manager: wals.manifest_wal.clone(),
    };
    let mut reader = manifest.scan(ReadBoundary::Min).await;
    let mut versions = Vec::new();
    while let Some((sequence, update)) = reader.next_update().await {
        assert_eq!(u64::from(update.version), sequence);
        versions.push(update.version);
    }
    assert_eq!(versions, [3, 4, 5]);
}

/// Proves an engine shaped like HoraeDB's analytic engine runs on
/// `LocalWal` through `segwal::horaedb` alone: its configuration (read from
/// TOML, defaulted, written back), its generic set-up, its payloads and
/// decoders, both kinds of replay after a restart with a flushed table,
/// and its manifest store.
#[test]
fn an_engine_shaped_like_horaedbs_runs_on_segwal() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[analytic.wal]\ntype = \"Local\"\ndata_dir = {:?}\nsegment_size = \"64MB\"\ncache_size = 3\n",
        dir.path().display().to_string()
    );
    let config: EngineConfig = toml::from_str(&text).unwrap();
    assert_eq!(config.analytic.wal_replay_batch_size, 3);
    let written = toml::to_string(&config).unwrap();
    assert!(written.contains("segment_size = \"64MiB\""), "{written}");
    assert!(EngineConfig::default().analytic.wal.storage_is_local());

    run_engine(&config);
}

/// Proves the same engine runs unchanged on `NatsWal` when its
/// configuration says `type = "Nats"`: its set-up picks `NatsWalsOpener`,
/// which opens the data and manifest WALs under prefixes of their own on
/// a real server, and the restart, both replays and the manifest behave
/// as on a local WAL.
#[test]
fn the_same_engine_runs_on_nats_from_its_config() {
    let start = tokio::runtime::Runtime::new().unwrap();
    let servers = start.block_on(support::NatsServers::single());
    let text = format!(
        "[analytic.wal]\ntype = \"Nats\"\nservers = {:?}\nprefix = \"engine\"\nowner = \"node-1\"\n",
        servers.urls()
    );
    let config: EngineConfig = toml::from_str(&text).unwrap();
    assert!(!config.analytic.wal.storage_is_local());
    let written = toml::to_string(&config).unwrap();
    assert!(written.contains("prefix = \"engine\""), "{written}");
    run_engine(&config);

    let streams = servers.monitor(0, "/jsz?streams=true");
    let names = streams.to_string();
    assert!(names.contains("engine_wal_s0"), "{names}");
    assert!(names.contains("engine_manifest_s0"), "{names}");
}

/// Runs the engine until a restart, then replays, on the engine's
/// runtimes.
fn run_engine(config: &EngineConfig) {
    let runtimes = engine_runtimes();
    let default_runtime = runtimes.default_runtime.clone();
    let flushed = default_runtime.block_on(run_until_restart(config, runtimes.clone()));
    let start = ReadBoundary::Excluded(flushed).as_start_sequence_number();
    assert_eq!(start, Some(flushed + 1));
    default_runtime.block_on(replay_after_restart(config, runtimes.clone(), flushed));
}

/// Whether a WAL `Config` is the local backend (what the engine's set-up
/// matches on).
trait StorageIsLocal {
    fn storage_is_local(&self) -> bool;
}

impl StorageIsLocal for WalConfig {
    fn storage_is_local(&self) -> bool {
        matches!(
            self.storage,
            segwal::horaedb::config::StorageConfig::Local(_)
        )
    }
}
