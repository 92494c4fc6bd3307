//! The shared-stream layout against a real server: regions interleaved in
//! one stream free its storage when deleted, read-only calls on unknown
//! regions create nothing, a changed stream count is refused, deletes
//! racing writes of the same table lose nothing, and the durability report.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::TryStreamExt;
use segwal::{
    LogEntry, LogWriteBatch, ReadBoundary, ReadContext, ReadRequest, ScanRequest, WalLocation,
    WalManager, WriteContext,
};
use segwal_nats::{Error, NatsWal, NatsWalConfig, ServerSync};
use support::NatsServers;

async fn read_all(wal: &NatsWal, location: WalLocation) -> Vec<LogEntry> {
    let request = ReadRequest {
        location,
        start: ReadBoundary::Min,
        end: ReadBoundary::Max,
    };
    let mut iter = wal
        .read_batch(&ReadContext::default(), &request)
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(batch) = iter.next_batch().await.unwrap() {
        out.extend(batch);
    }
    out
}

async fn write(wal: &NatsWal, location: WalLocation, payload: &[u8]) -> u64 {
    let mut batch = LogWriteBatch::new(location);
    batch.push(payload.to_vec());
    wal.write(&WriteContext::default(), &batch).await.unwrap()
}

async fn stream_names(servers: &NatsServers) -> Vec<String> {
    let client = async_nats::connect(servers.urls().as_slice())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    js.stream_names().try_collect().await.unwrap()
}

/// Proves that with 48 regions of 2 tables interleaved in one stream (48
/// MiB), deleting every table frees the stream's storage: its bytes fall
/// to the few bookkeeping records left (one ownership record per region,
/// one delete mark per table) and the store dir shrinks, while each
/// table's sequence number survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_everything_frees_a_shared_stream() {
    let servers = NatsServers::single().await;
    let config = NatsWalConfig::new(servers.urls())
        .prefix("shared")
        .streams(1);
    let wal = Arc::new(NatsWal::open(config).await.unwrap());
    let payload = vec![9u8; 16 << 10];
    let mut tasks = Vec::new();
    for region in 0..48u64 {
        let (wal, payload) = (Arc::clone(&wal), payload.clone());
        tasks.push(tokio::spawn(async move {
            let mut last = [0; 2];
            for i in 0..64 {
                let table = i % 2;
                last[table as usize] = write(&wal, WalLocation::new(region, table), &payload).await;
            }
            last
        }));
    }
    let mut lasts = Vec::new();
    for task in tasks {
        lasts.push(task.await.unwrap());
    }
    let full = wal.stored_bytes().await.unwrap();
    let disk_full = support::disk_usage(servers.store_dir());
    assert!(full > 48 * 64 * (16 << 10), "{full}");
    for (region, last) in lasts.iter().enumerate() {
        for table in 0..2 {
            let location = WalLocation::new(region as u64, table);
            wal.mark_delete_entries_up_to(location, u64::MAX)
                .await
                .unwrap();
            assert_eq!(
                wal.sequence_num(location).await.unwrap(),
                last[table as usize]
            );
        }
    }
    let empty = wal.stored_bytes().await.unwrap();
    // 48 ownership records and 96 delete marks, a few hundred bytes each.
    assert!(empty < 48 * 3 * 400, "{empty} bytes left of {full}");
    let disk_empty = support::disk_usage(servers.store_dir());
    // JetStream keeps the block being written (8 MiB at most).
    assert!(
        disk_empty < disk_full / 3,
        "the store dir holds {disk_empty} bytes after deleting, {disk_full} before"
    );
    for region in 0..48u64 {
        assert!(read_all(&wal, WalLocation::new(region, 0)).await.is_empty());
    }
    eprintln!(
        "shared stream: {full} bytes before the deletes, {empty} after; store dir {disk_full} -> {disk_empty}"
    );
    wal.close_gracefully().await.unwrap();
}

/// Proves that read-only calls (sequence_num, read_batch, scan, a delete,
/// close_region) on regions never written create nothing: no stream when
/// none exists, and no message in an existing stream shared with a
/// written region.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_calls_on_unknown_regions_create_nothing() {
    let servers = NatsServers::single().await;
    let config = NatsWalConfig::new(servers.urls())
        .prefix("unknown")
        .streams(2);
    let wal = NatsWal::open(config).await.unwrap();
    let touch = |region: u64| {
        let wal = wal.clone();
        async move {
            let location = WalLocation::new(region, 7);
            assert_eq!(wal.sequence_num(location).await.unwrap(), 0);
            assert!(read_all(&wal, location).await.is_empty());
            let mut scan = wal
                .scan(&ReadContext::default(), &ScanRequest { region_id: region })
                .await
                .unwrap();
            assert!(scan.next_batch().await.unwrap().is_none());
            wal.mark_delete_entries_up_to(location, u64::MAX)
                .await
                .unwrap();
            wal.close_region(region).await.unwrap();
        }
    };
    for region in [0, 1, 2, u64::MAX] {
        touch(region).await;
    }
    assert!(stream_names(&servers).await.is_empty());

    write(&wal, WalLocation::new(0, 1), b"x").await;
    let before = wal.stored_bytes().await.unwrap();
    // Region 2 shares stream 0 with region 0; region 1 has no stream yet.
    for region in [2, 4, 1] {
        touch(region).await;
    }
    assert_eq!(wal.stored_bytes().await.unwrap(), before);
    assert_eq!(stream_names(&servers).await, ["unknown_s0"]);
    wal.close_gracefully().await.unwrap();
}

/// Proves that a prefix's stream count is fixed once its streams exist:
/// opening it with another count, or over a stream made by something
/// else, is refused with an error naming the stream and both counts, and
/// the original count still reads everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_stream_count_is_refused() {
    let servers = NatsServers::single().await;
    let config = |streams| {
        NatsWalConfig::new(servers.urls())
            .prefix("fixed")
            .streams(streams)
            .owner("node-a")
    };
    let wal = NatsWal::open(config(4)).await.unwrap();
    for region in 0..8 {
        write(&wal, WalLocation::new(region, 0), b"x").await;
    }
    wal.close_gracefully().await.unwrap();
    let err = NatsWal::open(config(5)).await.unwrap_err();
    assert!(matches!(err, Error::Layout { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("fixed_s0")
            && text.contains("created for 4 streams")
            && text.contains("5 streams"),
        "{text}"
    );

    let client = async_nats::connect(servers.urls().as_slice())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "foreign_s0".into(),
        subjects: vec!["foreign.0.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let err = NatsWal::open(config(4).prefix("foreign"))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("no segwal layout metadata"),
        "{err}"
    );

    let wal = NatsWal::open(config(4)).await.unwrap();
    for region in 0..8 {
        assert_eq!(read_all(&wal, WalLocation::new(region, 0)).await.len(), 1);
    }
    wal.close_gracefully().await.unwrap();
}

/// Proves that deletes of a table racing writes to the same table (an
/// engine deleting what it flushed while it keeps writing) lose no
/// acknowledged write above the deleted-up-to mark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_racing_writes_of_the_same_table_lose_nothing() {
    let servers = NatsServers::single().await;
    let config = NatsWalConfig::new(servers.urls()).prefix("race");
    let wal = NatsWal::open(config).await.unwrap();
    let table = WalLocation::new(3, 1);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (wal, stop) = (wal.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Acquire) {
                    let payload = format!("w{w}-{i}");
                    acked.push((write(&wal, table, payload.as_bytes()).await, payload));
                    i += 1;
                }
                acked
            })
        })
        .collect();
    let mut deleted_up_to = 0;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        deleted_up_to = wal.sequence_num(table).await.unwrap();
        wal.mark_delete_entries_up_to(table, deleted_up_to)
            .await
            .unwrap();
    }
    stop.store(true, Ordering::Release);
    let mut acked = Vec::new();
    for writer in writers {
        acked.extend(writer.await.unwrap());
    }
    acked.sort();
    let live: Vec<(u64, String)> = acked
        .into_iter()
        .filter(|(seq, _)| *seq > deleted_up_to)
        .collect();
    let found: Vec<(u64, String)> = read_all(&wal, table)
        .await
        .into_iter()
        .map(|e| (e.sequence, String::from_utf8(e.payload.to_vec()).unwrap()))
        .collect();
    assert_eq!(found, live);
    wal.close_gracefully().await.unwrap();
}

/// Proves that the cluster tests' servers really run with
/// `sync_interval: always` (their monitoring endpoint says so) and that a
/// WAL told so reports an acknowledgement as fsynced on a majority, in
/// `durability()` and in its statistics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_durability_report_matches_the_servers() {
    let _one_cluster_at_a_time = support::CLUSTER_TESTS.lock().await;
    let servers = NatsServers::cluster(3).await;
    for node in 0..3 {
        let varz = servers.monitor(node, "/varz");
        assert_eq!(
            varz["jetstream"]["config"]["sync_always"], true,
            "node {node}: {varz}"
        );
        assert!(
            varz["version"].as_str().unwrap().starts_with("2.15"),
            "{}",
            varz["version"]
        );
    }
    let config = NatsWalConfig::new(servers.urls())
        .prefix("durable")
        .replicas(3)
        .server_sync(ServerSync::Always);
    let wal = NatsWal::open(config).await.unwrap();
    let durability = wal.durability();
    assert_eq!((durability.replicas, durability.acknowledged_by), (3, 2));
    assert!(durability.survives_power_loss_of_all_nodes());
    assert!(
        durability.server_version.starts_with("2.15"),
        "{durability:?}"
    );
    let statistics = wal.get_statistics().await.unwrap();
    assert!(
        statistics.contains("fsynced on 2 of 3 replicas"),
        "{statistics}"
    );
    wal.close_gracefully().await.unwrap();
}
