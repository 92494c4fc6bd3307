//! Reads on a real 3-node R3 cluster (`sync_interval: always`) of many
//! regions opened fresh, the case where reads through fresh consumers
//! once failed intermittently with 503s: reads are batch direct gets that
//! retry a replica that is behind or not answering.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use segwal::{
    LogWriteBatch, ReadBoundary, ReadContext, ReadRequest, ScanRequest, WalLocation, WalManager,
    WriteContext,
};
use segwal_nats::{NatsWal, NatsWalConfig, ServerSync};
use support::NatsServers;

const REGIONS: u64 = 224;
const TABLES: u64 = 2;
const ROUNDS: usize = 20;
/// Regions read at once.
const READERS: u64 = 16;

/// A region's entries as (table, sequence, payload): by scan, and by
/// reading each table (merged in sequence order).
async fn read_region(
    wal: &NatsWal,
    region_id: u64,
) -> (Vec<(u64, u64, String)>, Vec<(u64, u64, String)>) {
    let entry = |e: &segwal::LogEntry| {
        (
            e.table_id,
            e.sequence,
            String::from_utf8(e.payload.to_vec()).unwrap(),
        )
    };
    let ctx = ReadContext::default();
    let mut scanned = Vec::new();
    let mut iter = wal.scan(&ctx, &ScanRequest { region_id }).await.unwrap();
    while let Some(batch) = iter.next_batch().await.unwrap() {
        scanned.extend(batch.iter().map(entry));
    }
    let mut read = Vec::new();
    for table in 0..TABLES {
        let request = ReadRequest {
            location: WalLocation::new(region_id, table),
            start: ReadBoundary::Min,
            end: ReadBoundary::Max,
        };
        let mut iter = wal.read_batch(&ctx, &request).await.unwrap();
        while let Some(batch) = iter.next_batch().await.unwrap() {
            read.extend(batch.iter().map(entry));
        }
    }
    read.sort_by_key(|e| e.1);
    (scanned, read)
}

/// Proves that 224 regions written on a 3-node R3 cluster read back
/// exactly (every entry, in order, by scan and by table) from a freshly
/// opened instance, 20 times over, with no read failing: reads retry
/// replicas that are behind or not answering instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_fresh_regions_read_back_on_a_cluster_every_time() {
    let _one_cluster_at_a_time = support::CLUSTER_TESTS.lock().await;
    let servers = NatsServers::cluster(3).await;
    let config = NatsWalConfig::new(servers.urls())
        .prefix("fresh")
        .replicas(3)
        .owner("node-a")
        .server_sync(ServerSync::Always)
        .request_timeout(Duration::from_secs(10));
    let wal = Arc::new(NatsWal::open(config.clone()).await.unwrap());
    let mut tasks = Vec::new();
    for reader in 0..READERS {
        let wal = Arc::clone(&wal);
        tasks.push(tokio::spawn(async move {
            let mut expected = BTreeMap::new();
            for region in (reader..REGIONS).step_by(READERS as usize) {
                let mut entries = Vec::new();
                for i in 0..3u64 {
                    let table = i % TABLES;
                    let mut batch = LogWriteBatch::new(WalLocation::new(region, table));
                    let payloads = [format!("r{region}-{i}-a"), format!("r{region}-{i}-b")];
                    for p in &payloads {
                        batch.push(p.clone().into_bytes());
                    }
                    let last = wal.write(&WriteContext::default(), &batch).await.unwrap();
                    entries.push((table, last - 1, payloads[0].clone()));
                    entries.push((table, last, payloads[1].clone()));
                }
                expected.insert(region, entries);
            }
            expected
        }));
    }
    let mut expected = BTreeMap::new();
    for task in tasks {
        expected.extend(task.await.unwrap());
    }
    wal.close_gracefully().await.unwrap();
    let expected = Arc::new(expected);

    for round in 0..ROUNDS {
        let wal = Arc::new(NatsWal::open(config.clone()).await.unwrap());
        let mut tasks = Vec::new();
        for reader in 0..READERS {
            let (wal, expected) = (Arc::clone(&wal), Arc::clone(&expected));
            tasks.push(tokio::spawn(async move {
                for region in (reader..REGIONS).step_by(READERS as usize) {
                    let (scanned, read) = read_region(&wal, region).await;
                    assert_eq!(
                        scanned, expected[&region],
                        "round {round}, region {region}: scan"
                    );
                    assert_eq!(
                        read, expected[&region],
                        "round {round}, region {region}: reads"
                    );
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        wal.close_gracefully().await.unwrap();
    }
}
