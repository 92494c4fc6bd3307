//! The scenarios of HoraeDB's `src/wal/tests/read_write.rs`, against
//! segwal's `LocalWal` and, as HoraeDB ran them against its Kafka WAL,
//! segwal's `NatsWal` on a real 3-node cluster.
//!
//! Written anew (not copied) against HoraeDB's API as its test uses it:
//! the same harness shape (a `WalBuilder` per backend, a `TestEnv` with a
//! runtime and contexts, `test_all(builder, is_distributed)`), the same
//! types and calls (`LogBatchEncoder::encode_batch` of `MemoryPayload`s,
//! `BatchLogIteratorAdapter::next_log_entries` with `MemoryPayloadDecoder`,
//! `WalManagerRef`, `ReadBoundary`, ...). Against HoraeDB's own test, what
//! differs is the `use` lines (`wal::` becomes `segwal::horaedb::`, the
//! module paths below it unchanged; `common_types` and `runtime` come from
//! this crate's stand-ins) and the
//! bodies of the builders: `LocalStorageWalBuilder::build` opens a segwal
//! `LocalWal` (asynchronously) instead of HoraeDB's `LocalStorageImpl`,
//! and `NatsWalBuilder` replaces HoraeDB's `KafkaWalBuilder`.
//!
//! HoraeDB runs `test_move_from_nodes` only for distributed WALs; it
//! needs two WAL instances on one log at once, which a local data dir
//! refuses (its lock). All fourteen scenarios, that one included, run
//! against `NatsWal` (`test_all(builder, true)`).

use std::{
    collections::{HashMap, VecDeque},
    ops::Deref,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use segwal::horaedb::{
    kv_encoder::LogBatchEncoder,
    local_storage_impl::{config::LocalStorageConfig, wal_manager::LocalStorageImpl},
    log_batch::{LogEntry, LogWriteBatch, MemoryPayload, MemoryPayloadDecoder},
    manager::{
        BatchLogIteratorAdapter, ReadBoundary, ReadContext, ReadRequest, ScanRequest, WalLocation,
        WalManager, WalManagerRef, WriteContext,
    },
};
use segwal_horaedb_tests::{
    common_types::{
        SequenceNumber,
        table::{DEFAULT_SHARD_ID, TableId},
    },
    runtime::{self, Runtime},
};
use segwal_nats::{NatsWal, NatsWalConfig, ServerSync};
use tempfile::TempDir;

// The NATS tests' servers: real `nats-server` processes, provisioned by
// `cargo xtask test`.
#[path = "../../segwal-nats/tests/support/mod.rs"]
mod support;

/// Proves that every HoraeDB scenario for a local WAL passes against
/// segwal's `LocalWal` when driven through HoraeDB's API names: reads in
/// several batch sizes and with every kind of boundary, parallel writers,
/// reopen, deletes (all, half, one table of two), sequence numbers across
/// writes, deletes and reopens, and a region scan.
#[test]
fn test_local_storage_wal() {
    test_all(LocalStorageWalBuilder, false);
}

/// Proves that every HoraeDB scenario, the distributed one included (a
/// shard moving between two nodes and back), passes against segwal's
/// `NatsWal` on a 3-node cluster with three replicas, as HoraeDB ran them
/// against its Kafka WAL.
#[test]
fn test_nats_wal() {
    let start = tokio::runtime::Runtime::new().unwrap();
    let servers = start.block_on(support::NatsServers::cluster(3));
    test_all(NatsWalBuilder::new(servers.urls()), true);
    drop(servers);
}

fn test_all<B: WalBuilder>(builder: B, is_distributed: bool) {
    test_simple_read_write_default_batch(builder.clone());
    test_simple_read_write_different_batch_size(builder.clone());
    test_read_with_boundary(builder.clone());
    test_write_multiple_regions(builder.clone());
    test_reopen(builder.clone());
    test_complex_read_write(builder.clone());
    test_simple_write_delete(builder.clone());
    test_write_delete_half(builder.clone());
    test_write_delete_multiple_regions(builder.clone());
    test_sequence_increase_monotonically_multiple_writes(builder.clone());
    test_sequence_increase_monotonically_delete_write(builder.clone());
    test_sequence_increase_monotonically_delete_reopen_write(builder.clone());
    test_write_scan(builder.clone());
    if is_distributed {
        test_move_from_nodes(builder);
    }
}

/// Table 0 of the default shard, where most scenarios write.
fn default_location(table_id: TableId) -> WalLocation {
    WalLocation::new(DEFAULT_SHARD_ID as u64, table_id)
}

fn test_simple_read_write_default_batch<B: WalBuilder>(builder: B) {
    let env = TestEnv::new(2, builder);
    env.runtime
        .block_on(simple_read_write(&env, default_location(0)));
}

fn test_simple_read_write_different_batch_size<B: WalBuilder>(builder: B) {
    for batch_size in [1, 2, 4, 10, 100] {
        let mut env = TestEnv::new(2, builder.clone());
        env.read_ctx.batch_size = batch_size;
        env.runtime
            .block_on(simple_read_write(&env, default_location(0)));
    }
}

fn test_read_with_boundary<B: WalBuilder>(builder: B) {
    let env = TestEnv::new(2, builder);
    env.runtime.block_on(read_with_boundary(&env));
}

fn test_write_multiple_regions<B: WalBuilder>(builder: B) {
    let env = Arc::new(TestEnv::new(4, builder));
    env.runtime
        .block_on(write_multiple_regions_parallelly(env.clone()));
}

fn test_reopen<B: WalBuilder>(builder: B) {
    let env = TestEnv::new(2, builder);
    env.runtime.block_on(reopen(&env, 5));
}

fn test_complex_read_write<B: WalBuilder>(builder: B) {
    let env = TestEnv::new(2, builder);
    env.runtime.block_on(complex_read_write(&env));
}

fn test_simple_write_delete<B: WalBuilder>(builder: B) {
    let env = TestEnv::new(2, builder);
    env.runtime.block_on(simple_write_delete(&env));
}

fn test_write_delete_half<B: WalBuilder>(builder: B) {
    let env = TestEnv::new(2, builder);
    env.runtime.block_on(write_delete_half(&env));
}

fn test_write_delete_multiple_regions<B: WalBuilder>(builder: B) {
    let env = TestEnv::new(2, builder);
    env.runtime.block_on(write_delete_multiple_regions(&env));
}

fn test_sequence_increase_monotonically_multiple_writes<B: WalBuilder>(builder: B) {
    let env = TestEnv::new(2, builder);
    env.runtime
        .block_on(sequence_increase_monotonically_multiple_writes(&env));
}

fn test_sequence_increase_monotonically_delete_write<B: WalBuilder>(builder: B) {
    let env = TestEnv::new(2, builder);
    env.runtime
        .block_on(sequence_increase_monotonically_delete_write(&env));
}

fn test_sequence_increase_monotonically_delete_reopen_write<B: WalBuilder>(builder: B) {
    let env = TestEnv::new(2, builder);
    env.runtime
        .block_on(sequence_increase_monotonically_delete_reopen_write(&env));
}

fn test_write_scan<B: WalBuilder>(builder: B) {
    let env = TestEnv::new(2, builder);
    env.runtime.block_on(write_scan(&env));
}

/// A table's shard moves from node 1 to node 2 and back: each node closes
/// the region before the other writes, and each sees what the other wrote.
fn test_move_from_nodes<B: WalBuilder>(builder: B) {
    let env = TestEnv::new(2, builder);
    let location = WalLocation::new(1, 0);
    env.runtime.block_on(async {
        let node_1 = env.build_wal().await;
        write_read_range(&env, node_1.clone(), location, 0, 10).await;
        node_1.close_region(location.region_id).await.unwrap();

        let node_2 = env.build_wal().await;
        write_read_range(&env, node_2.clone(), location, 10, 20).await;
        node_2.close_region(location.region_id).await.unwrap();

        write_read_range(&env, node_1, location, 20, 30).await;
    });
}

/// Reads `read_req` and checks it yields `payloads`, the last at `max_seq`.
async fn check_read<B: WalBuilder>(
    env: &TestEnv<B>,
    wal: WalManagerRef,
    read_req: ReadRequest,
    max_seq: SequenceNumber,
    payloads: &[MemoryPayload],
) {
    let iter = wal
        .read_batch(&env.read_ctx, &read_req)
        .await
        .expect("should succeed to read");
    let expected = TestTableData::new(read_req.location.table_id, payloads.to_vec(), max_seq);
    env.check_log_entries(vec![expected], iter).await;
}

/// Checks the batch of `payloads` written last at `max_seq` reads back.
async fn check_write_batch<B: WalBuilder>(
    env: &TestEnv<B>,
    wal: WalManagerRef,
    location: WalLocation,
    max_seq: SequenceNumber,
    payloads: &[MemoryPayload],
) {
    let first = max_seq + 1 - payloads.len() as u64;
    let read_req = ReadRequest {
        location,
        start: ReadBoundary::Included(first),
        end: ReadBoundary::Included(max_seq),
    };
    check_read(env, wal, read_req, max_seq, payloads).await;
}

/// Writes values `start..end` as one batch and reads it back.
async fn write_then_read<B: WalBuilder>(
    env: impl Deref<Target = TestEnv<B>>,
    wal: WalManagerRef,
    location: WalLocation,
    start: u32,
    end: u32,
) {
    let (payloads, batch) = env.build_log_batch(location, start, end).await;
    let seq = wal
        .write(&env.write_ctx, &batch)
        .await
        .expect("should succeed to write");
    check_write_batch(&env, wal, location, seq, &payloads).await;
}

/// On a table whose sequence is `start`, writes values `start..end`
/// (one sequence number each), reads them back, and checks the sequence
/// is then `end`.
async fn write_read_range<B: WalBuilder>(
    env: &TestEnv<B>,
    wal: WalManagerRef,
    location: WalLocation,
    start: SequenceNumber,
    end: SequenceNumber,
) {
    assert_eq!(wal.sequence_num(location).await.unwrap(), start);
    write_then_read(env, wal.clone(), location, start as u32, end as u32).await;
    assert_eq!(wal.sequence_num(location).await.unwrap(), end);
}

async fn simple_read_write<B: WalBuilder>(env: &TestEnv<B>, location: WalLocation) {
    let wal = env.build_wal().await;
    write_read_range(env, wal.clone(), location, 0, 10).await;
    wal.close_gracefully().await.unwrap();
}

/// Reads one batch of ten through every kind of boundary.
async fn read_with_boundary<B: WalBuilder>(env: &TestEnv<B>) {
    let wal = env.build_wal().await;
    let location = default_location(TableId::MIN);
    let (payloads, batch) = env.build_log_batch(location, 0, 10).await;
    let end = wal.write(&env.write_ctx, &batch).await.unwrap();
    assert_eq!(wal.sequence_num(location).await.unwrap(), end);
    let start = end + 1 - batch.entries.len() as u64;

    use ReadBoundary::{Excluded, Included, Max, Min};
    let cases = [
        (Min, Max, end, 0..10),
        (Included(start), Included(end), end, 0..10),
        (Excluded(start), Included(end), end, 1..10),
        (Included(start), Excluded(end), end - 1, 0..9),
        (Excluded(start), Excluded(end), end - 1, 1..9),
    ];
    for (from, to, max_seq, values) in cases {
        let read_req = ReadRequest {
            location,
            start: from,
            end: to,
        };
        let expected = &payloads[values.start as usize..values.end as usize];
        assert_eq!(expected, env.build_payload_batch(values.start, values.end));
        check_read(env, wal.clone(), read_req, max_seq, expected).await;
    }
    wal.close_gracefully().await.unwrap();
}

/// Ten writers at once, two per table over five tables, each reading back
/// its own batch.
async fn write_multiple_regions_parallelly<B: WalBuilder>(env: Arc<TestEnv<B>>) {
    let wal = env.build_wal().await;
    let mut handles = Vec::with_capacity(10);
    for table_id in 0..5 {
        for _ in 0..2 {
            let location = default_location(table_id);
            let task = write_then_read(env.clone(), wal.clone(), location, 0, 10);
            handles.push(env.runtime.spawn(task));
        }
    }
    for handle in handles {
        handle.await.expect("should succeed to join the write");
    }
    wal.close_gracefully().await.unwrap();
}

/// Batches written to `count` regions read back after a reopen.
async fn reopen<B: WalBuilder>(env: &TestEnv<B>, count: usize) {
    let mut written = Vec::with_capacity(count);
    let wal = env.build_wal().await;
    for i in 0..count as u64 {
        let location = WalLocation::new(i, i);
        let (payloads, batch) = env.build_log_batch(location, 0, 10).await;
        let seq = wal.write(&env.write_ctx, &batch).await.unwrap();
        assert_eq!(wal.sequence_num(location).await.unwrap(), seq);
        written.push((location, payloads, seq));
    }
    wal.close_gracefully().await.unwrap();
    drop(wal);

    let wal = env.build_wal().await;
    for (location, payloads, seq) in written {
        check_write_batch(env, wal.clone(), location, seq, &payloads).await;
    }
    wal.close_gracefully().await.unwrap();
}

/// Two batches (values 0..10 and 10..50): each alone, both whole, and a
/// range across the two.
async fn complex_read_write<B: WalBuilder>(env: &TestEnv<B>) {
    let wal = env.build_wal().await;
    let location = default_location(0);
    let (start, mid, end) = (0, 10, 50);
    let (first, first_batch) = env.build_log_batch(location, start, mid).await;
    let first_seq = wal.write(&env.write_ctx, &first_batch).await.unwrap();
    let (second, second_batch) = env.build_log_batch(location, mid, end).await;
    let second_seq = wal.write(&env.write_ctx, &second_batch).await.unwrap();

    check_write_batch(env, wal.clone(), location, first_seq, &first).await;
    check_write_batch(env, wal.clone(), location, second_seq, &second).await;
    let whole = env.build_payload_batch(start, end);
    check_write_batch(env, wal.clone(), location, second_seq, &whole).await;

    // Values 5..30: the second half of the first batch, the first half of
    // the second.
    let (from, to) = ((start + mid) / 2, (mid + end) / 2);
    let across = env.build_payload_batch(from, to);
    let last = second_seq - u64::from(end - to);
    check_write_batch(env, wal.clone(), location, last, &across).await;
    wal.close_gracefully().await.unwrap();
}

/// Reads the whole table and checks it yields `payloads`, the last at
/// `max_seq`.
async fn check_whole_table<B: WalBuilder>(
    env: &TestEnv<B>,
    wal: WalManagerRef,
    location: WalLocation,
    max_seq: SequenceNumber,
    payloads: &[MemoryPayload],
) {
    let read_req = ReadRequest {
        location,
        start: ReadBoundary::Min,
        end: ReadBoundary::Max,
    };
    check_read(env, wal, read_req, max_seq, payloads).await;
}

/// Deleting up to the last entry leaves nothing, and the sequence stays.
async fn simple_write_delete<B: WalBuilder>(env: &TestEnv<B>) {
    let wal = env.build_wal().await;
    let location = default_location(0);
    let (payloads, batch) = env.build_log_batch(location, 0, 10).await;
    let seq = wal.write(&env.write_ctx, &batch).await.unwrap();
    check_write_batch(env, wal.clone(), location, seq, &payloads).await;
    assert_eq!(wal.sequence_num(location).await.unwrap(), seq);

    wal.mark_delete_entries_up_to(location, seq)
        .await
        .expect("should succeed to delete");
    check_whole_table(env, wal.clone(), location, seq, &[]).await;
    assert_eq!(wal.sequence_num(location).await.unwrap(), seq);
    wal.close_gracefully().await.unwrap();
}

/// Deleting up to the middle leaves the second half.
async fn write_delete_half<B: WalBuilder>(env: &TestEnv<B>) {
    let wal = env.build_wal().await;
    let location = default_location(0);
    let (payloads, batch) = env.build_log_batch(location, 0, 10).await;
    let seq = wal.write(&env.write_ctx, &batch).await.unwrap();
    check_write_batch(env, wal.clone(), location, seq, &payloads).await;

    wal.mark_delete_entries_up_to(location, seq / 2)
        .await
        .expect("should succeed to delete");
    let kept = &payloads[batch.entries.len() / 2..];
    check_whole_table(env, wal.clone(), location, seq, kept).await;
    assert_eq!(wal.sequence_num(location).await.unwrap(), seq);
    wal.close_gracefully().await.unwrap();
}

/// Deleting one table of a region leaves the other as it was.
async fn write_delete_multiple_regions<B: WalBuilder>(env: &TestEnv<B>) {
    let wal = env.build_wal().await;
    let (one, two) = (default_location(1), default_location(2));
    let (_, batch_one) = env.build_log_batch(one, 0, 10).await;
    let seq_one = wal.write(&env.write_ctx, &batch_one).await.unwrap();
    let (payloads_two, batch_two) = env.build_log_batch(two, 10, 20).await;
    let seq_two = wal.write(&env.write_ctx, &batch_two).await.unwrap();

    wal.mark_delete_entries_up_to(one, seq_one)
        .await
        .expect("should succeed to delete");
    check_whole_table(env, wal.clone(), one, seq_one, &[]).await;
    check_write_batch(env, wal.clone(), two, seq_two, &payloads_two).await;
    wal.close_gracefully().await.unwrap();
}

/// Writes one batch of values 0..10 and returns its last sequence number.
async fn write_ten<B: WalBuilder>(env: &TestEnv<B>, wal: &WalManagerRef) -> SequenceNumber {
    let (_, batch) = env.build_log_batch(default_location(0), 0, 10).await;
    wal.write(&env.write_ctx, &batch)
        .await
        .expect("should succeed to write")
}

async fn sequence_increase_monotonically_multiple_writes<B: WalBuilder>(env: &TestEnv<B>) {
    let wal = env.build_wal().await;
    let seq_1 = write_ten(env, &wal).await;
    let seq_2 = write_ten(env, &wal).await;
    let seq_3 = write_ten(env, &wal).await;
    assert!(seq_1 < seq_2 && seq_2 < seq_3, "{seq_1} {seq_2} {seq_3}");
    wal.close_gracefully().await.unwrap();
}

async fn sequence_increase_monotonically_delete_write<B: WalBuilder>(env: &TestEnv<B>) {
    let wal = env.build_wal().await;
    let seq_1 = write_ten(env, &wal).await;
    wal.mark_delete_entries_up_to(default_location(0), seq_1)
        .await
        .unwrap();
    let seq_2 = write_ten(env, &wal).await;
    assert_eq!(wal.sequence_num(default_location(0)).await.unwrap(), seq_2);
    assert!(seq_2 > seq_1, "{seq_1} {seq_2}");
    wal.close_gracefully().await.unwrap();
}

async fn sequence_increase_monotonically_delete_reopen_write<B: WalBuilder>(env: &TestEnv<B>) {
    let wal = env.build_wal().await;
    let seq_1 = write_ten(env, &wal).await;
    wal.mark_delete_entries_up_to(default_location(0), seq_1)
        .await
        .unwrap();
    wal.close_gracefully().await.unwrap();
    drop(wal);

    let wal = env.build_wal().await;
    let seq_2 = write_ten(env, &wal).await;
    assert_eq!(wal.sequence_num(default_location(0)).await.unwrap(), seq_2);
    assert!(seq_2 > seq_1, "{seq_1} {seq_2}");
    wal.close_gracefully().await.unwrap();
}

/// A region scan yields both tables' entries.
async fn write_scan<B: WalBuilder>(env: &TestEnv<B>) {
    let wal = env.build_wal().await;
    let mut expected = Vec::new();
    for table_id in [0, 1] {
        let location = default_location(table_id);
        let (payloads, batch) = env.build_log_batch(location, 0, 10).await;
        let seq = wal.write(&env.write_ctx, &batch).await.unwrap();
        expected.push(TestTableData::new(table_id, payloads, seq));
    }
    let scan_req = ScanRequest {
        region_id: DEFAULT_SHARD_ID as u64,
    };
    let iter = wal
        .scan(&env.read_ctx, &scan_req)
        .await
        .expect("should succeed to scan");
    env.check_log_entries(expected, iter).await;
    wal.close_gracefully().await.unwrap();
}

/// Opens a WAL of one backend on a data path.
#[async_trait]
pub trait WalBuilder: Clone + Send + Sync + 'static {
    /// The backend's WAL type.
    type Wal: WalManager + Send + Sync;

    /// Opens (or reopens) the WAL whose data lives under `data_path`.
    async fn build(&self, data_path: &Path, runtime: Arc<Runtime>) -> Arc<Self::Wal>;
}

/// segwal's local WAL, with HoraeDB's local-storage defaults but the data
/// dir.
#[derive(Clone, Default)]
pub struct LocalStorageWalBuilder;

#[async_trait]
impl WalBuilder for LocalStorageWalBuilder {
    type Wal = LocalStorageImpl;

    async fn build(&self, data_path: &Path, _runtime: Arc<Runtime>) -> Arc<Self::Wal> {
        let config = LocalStorageConfig::new(data_path);
        let wal = LocalStorageImpl::open(config)
            .await
            .expect("should open the local WAL");
        Arc::new(wal)
    }
}

/// segwal's replicated WAL on a cluster (HoraeDB's `KafkaWalBuilder`).
/// Each scenario gets a prefix of its own, named after its data path (as
/// HoraeDB's gives each a namespace), and each WAL built is a node of its
/// own (its owner name): a reopen is a node starting after the last one
/// closed, and `test_move_from_nodes` has two nodes at once.
#[derive(Clone)]
pub struct NatsWalBuilder {
    servers: Vec<String>,
    nodes: Arc<AtomicUsize>,
}

impl NatsWalBuilder {
    /// WALs on the cluster whose servers are `servers`.
    pub fn new(servers: Vec<String>) -> Self {
        NatsWalBuilder {
            servers,
            nodes: Arc::new(AtomicUsize::new(0)),
        }
    }
}

#[async_trait]
impl WalBuilder for NatsWalBuilder {
    type Wal = NatsWal;

    async fn build(&self, data_path: &Path, _runtime: Arc<Runtime>) -> Arc<Self::Wal> {
        let name = data_path.file_name().unwrap().to_string_lossy();
        let prefix: String = name.chars().filter(char::is_ascii_alphanumeric).collect();
        let node = self.nodes.fetch_add(1, Ordering::Relaxed);
        let config = NatsWalConfig::new(self.servers.clone())
            .prefix(format!("horaedb-{prefix}"))
            .owner(format!("node-{node}"))
            .replicas(3)
            .server_sync(ServerSync::Always)
            .request_timeout(Duration::from_secs(10));
        let wal = NatsWal::open(config)
            .await
            .expect("should open the NATS WAL");
        Arc::new(wal)
    }
}

/// One scenario's data dir, runtime, contexts and WAL builder.
pub struct TestEnv<B> {
    /// The data path, removed with the environment.
    pub dir: TempDir,
    /// The runtime the scenario runs on.
    pub runtime: Arc<Runtime>,
    /// What every write uses.
    pub write_ctx: WriteContext,
    /// What every read and scan uses.
    pub read_ctx: ReadContext,
    builder: B,
}

impl<B: WalBuilder> TestEnv<B> {
    /// An environment with a runtime of `num_workers` threads.
    pub fn new(num_workers: usize, builder: B) -> Self {
        let runtime = runtime::Builder::default()
            .worker_threads(num_workers)
            .enable_all()
            .build()
            .unwrap();
        TestEnv {
            dir: tempfile::tempdir().unwrap(),
            runtime: Arc::new(runtime),
            write_ctx: WriteContext::default(),
            read_ctx: ReadContext::default(),
            builder,
        }
    }

    /// Opens the WAL on the environment's data path.
    pub async fn build_wal(&self) -> WalManagerRef {
        self.builder
            .build(self.dir.path(), self.runtime.clone())
            .await
    }

    /// Payloads of the values `start..end`.
    pub fn build_payload_batch(&self, start: u32, end: u32) -> Vec<MemoryPayload> {
        (start..end).map(|val| MemoryPayload { val }).collect()
    }

    /// The payloads of values `start..end`, and a batch encoding them for
    /// `location`.
    pub async fn build_log_batch(
        &self,
        location: WalLocation,
        start: u32,
        end: u32,
    ) -> (Vec<MemoryPayload>, LogWriteBatch) {
        let batch = LogBatchEncoder::create(location)
            .encode_batch((start..end).map(|val| MemoryPayload { val }))
            .expect("should succeed to encode payloads");
        (self.build_payload_batch(start, end), batch)
    }

    /// Drains `iter` a decoded batch at a time (reusing the buffer, as
    /// HoraeDB's engine does) and checks each table's entries against
    /// `expected`: the same payloads, with consecutive sequence numbers
    /// ending at its `max_seq`.
    pub async fn check_log_entries(
        &self,
        expected: Vec<TestTableData>,
        mut iter: BatchLogIteratorAdapter,
    ) {
        let mut by_table: HashMap<TableId, Vec<LogEntry<MemoryPayload>>> = HashMap::new();
        let mut buffer = VecDeque::new();
        loop {
            buffer = iter
                .next_log_entries(MemoryPayloadDecoder, |_| true, buffer)
                .await
                .expect("should succeed to fetch next log entry");
            if buffer.is_empty() {
                break;
            }
            assert!(buffer.len() <= self.read_ctx.batch_size);
            for entry in buffer.drain(..) {
                by_table.entry(entry.table_id).or_default().push(entry);
            }
        }

        for table in expected {
            let entries = by_table.remove(&table.table_id).unwrap_or_default();
            let payloads: Vec<_> = entries.iter().map(|e| e.payload).collect();
            assert_eq!(payloads, table.payload_batch, "table {}", table.table_id);
            let first = table.max_seq + 1 - entries.len() as u64;
            let sequences: Vec<_> = entries.iter().map(|e| e.sequence).collect();
            let want: Vec<_> = (first..=table.max_seq).collect();
            if !entries.is_empty() {
                assert_eq!(sequences, want, "table {}", table.table_id);
            }
        }
    }
}

/// What one table should read back.
pub struct TestTableData {
    table_id: TableId,
    payload_batch: Vec<MemoryPayload>,
    max_seq: SequenceNumber,
}

impl TestTableData {
    /// `payload_batch` for `table_id`, the last at `max_seq`.
    pub fn new(
        table_id: TableId,
        payload_batch: Vec<MemoryPayload>,
        max_seq: SequenceNumber,
    ) -> Self {
        TestTableData {
            table_id,
            payload_batch,
            max_seq,
        }
    }
}
