//! The NATS backend against real servers where it differs from a local
//! disk: a node lost mid-run, quorum lost, a region moved between owners,
//! storage freed by deletes, an unreachable cluster.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use segwal::{
    LogEntry, LogWriteBatch, ReadBoundary, ReadContext, ReadRequest, ScanRequest, WalLocation,
    WalManager, WriteContext,
};
use segwal_nats::{Error, NatsWal, NatsWalConfig};
use support::NatsServers;

/// Every entry of a region, waiting up to a minute for each step: the
/// callers check what survived a failure, not how fast a recovering
/// cluster answers (on a loaded 2-core CI machine, starting this read just
/// after a node's restart once took over the default 10 s).
async fn scan_all(wal: &NatsWal, region_id: u64) -> Vec<LogEntry> {
    let ctx = ReadContext {
        timeout: Duration::from_secs(60),
        ..ReadContext::default()
    };
    let mut iter = wal.scan(&ctx, &ScanRequest { region_id }).await.unwrap();
    let mut out = Vec::new();
    while let Some(batch) = iter.next_batch().await.unwrap() {
        out.extend(batch);
    }
    out
}

async fn read_all(wal: &NatsWal, location: WalLocation) -> Vec<LogEntry> {
    try_read_all(wal, location).await.unwrap()
}

async fn try_read_all(wal: &NatsWal, location: WalLocation) -> segwal::Result<Vec<LogEntry>> {
    let request = ReadRequest {
        location,
        start: ReadBoundary::Min,
        end: ReadBoundary::Max,
    };
    let mut iter = wal.read_batch(&ReadContext::default(), &request).await?;
    let mut out = Vec::new();
    while let Some(batch) = iter.next_batch().await? {
        out.extend(batch);
    }
    Ok(out)
}

fn batch(location: WalLocation, payloads: &[String]) -> LogWriteBatch {
    let mut batch = LogWriteBatch::new(location);
    for p in payloads {
        batch.push(p.clone().into_bytes());
    }
    batch
}

async fn write(wal: &NatsWal, location: WalLocation, payload: &str) -> segwal::Result<u64> {
    wal.write(
        &WriteContext::default(),
        &batch(location, &[payload.to_owned()]),
    )
    .await
}

fn nats_error(err: &segwal::Error) -> &Error {
    Error::of(err).unwrap_or_else(|| panic!("not a NATS error: {err}"))
}

/// What the writers of the fault test saw.
#[derive(Default)]
struct Outcomes {
    /// Acknowledged batches: last sequence -> (region, first payload), and
    /// whether the ack came after the kill.
    acked: Vec<(u64, u64, String, bool)>,
    /// Payloads of batches whose write failed (outcome unknown).
    failed: HashSet<String>,
}

/// Proves that with R3 on three nodes and two regions sharing one stream,
/// killing the stream's leader mid-run loses no acknowledged write of
/// either region, leaves every batch whole, and lets writes go on with two
/// nodes and after the node returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_node_killed_mid_run() {
    let _one_cluster_at_a_time = support::CLUSTER_TESTS.lock().await;
    let mut servers = NatsServers::cluster(3).await;
    let config = NatsWalConfig::new(servers.urls())
        .prefix("fault")
        .replicas(3)
        .streams(1)
        .owner("node-a")
        .request_timeout(Duration::from_secs(2));
    let wal = Arc::new(NatsWal::open(config.clone()).await.unwrap());
    // Open both regions before the clock starts.
    for region in 0..2 {
        write(&wal, WalLocation::new(region, 99), "warm-up")
            .await
            .unwrap();
    }
    let killed = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    // Per region, writes acknowledged since the phase began.
    let acks: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let writers: Vec<_> = (0..4u64)
        .map(|writer| {
            let (wal, killed, stop, acks) = (
                Arc::clone(&wal),
                Arc::clone(&killed),
                Arc::clone(&stop),
                Arc::clone(&acks),
            );
            tokio::spawn(keep_writing(wal, writer, killed, stop, acks))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Kill the node leading the regions' stream, forcing an election.
    let leader = stream_leader(&servers, "fault_s0").await;
    servers.kill(leader);
    killed.store(true, Ordering::Release);
    // Writes go on with two nodes (after an election, a few seconds).
    wait_for_acks(&acks, 20, "with a node down").await;
    servers.restart(leader).await;
    wait_for_acks(&acks, 20, "after the node returned").await;
    stop.store(true, Ordering::Release);
    let mut acked = Vec::new();
    let mut failed = HashSet::new();
    for writer in writers {
        let outcomes = writer.await.unwrap();
        acked.extend(outcomes.acked);
        failed.extend(outcomes.failed);
    }
    for region in 0..2u64 {
        let after_kill = acked.iter().filter(|a| a.1 == region && a.3).count();
        assert!(
            after_kill > 0,
            "region {region}: no write was acknowledged after the node was killed"
        );
    }
    wal.close_gracefully().await.unwrap();

    // A restarted owner reads everything back. Its requests get longer than
    // the writers' 2 s: the node that returned may still be catching up on
    // the streams, and this read is about what survived, not how fast the
    // cluster answers (on a loaded 2-core CI machine a read starting
    // here once took longer than 2 s).
    let wal = NatsWal::open(config.request_timeout(Duration::from_secs(30)))
        .await
        .unwrap();
    for region in 0..2u64 {
        let entries = scan_all(&wal, region).await;
        let region_acked: Vec<_> = acked.iter().filter(|a| a.1 == region).collect();
        check_survivors(region, &entries, &region_acked, &failed);
    }
    wal.close_gracefully().await.unwrap();
}

/// Writer `writer` of the node-kill test: two-entry batches to table
/// `writer` of region `writer % 2` until `stop`, counting acknowledgements
/// per region in `acks`.
async fn keep_writing(
    wal: Arc<NatsWal>,
    writer: u64,
    killed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    acks: Arc<[AtomicU64; 2]>,
) -> Outcomes {
    let mut outcomes = Outcomes::default();
    let region = writer % 2;
    let location = WalLocation::new(region, writer);
    let ctx = WriteContext {
        timeout: Duration::from_secs(3),
    };
    let mut i = 0;
    while !stop.load(Ordering::Acquire) {
        let payloads = [format!("w{writer}-{i}-a"), format!("w{writer}-{i}-b")];
        let after_kill = killed.load(Ordering::Acquire);
        match wal.write(&ctx, &batch(location, &payloads)).await {
            Ok(last) => {
                acks[region as usize].fetch_add(1, Ordering::AcqRel);
                outcomes
                    .acked
                    .push((last, region, payloads[0].clone(), after_kill))
            }
            Err(e) => {
                log_line(&format!("writer {writer}: {e}"));
                outcomes.failed.insert(payloads[0].clone());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        i += 1;
    }
    outcomes
}

/// Checks what a region holds after the node-kill test: its warm-up
/// entry, then whole two-entry batches in order, every acknowledged one
/// among them, and nothing that was never written.
fn check_survivors(
    region: u64,
    entries: &[LogEntry],
    acked: &[&(u64, u64, String, bool)],
    failed: &HashSet<String>,
) {
    let mut found: BTreeMap<u64, String> = BTreeMap::new();
    let mut previous = 0;
    // After the warm-up entry (table 99), two-entry batches.
    assert_eq!(entries[0].table_id, 99);
    for pair in entries[1..].chunks(2) {
        // Batches are whole: "-a" then "-b" of the same attempt.
        let first = String::from_utf8(pair[0].payload.to_vec()).unwrap();
        assert_eq!(pair.len(), 2, "a torn batch at {}", pair[0].sequence);
        let second = String::from_utf8(pair[1].payload.to_vec()).unwrap();
        assert_eq!(second, format!("{}b", &first[..first.len() - 1]));
        assert_eq!(pair[1].sequence, pair[0].sequence + 1);
        assert!(pair[0].sequence > previous, "out of order");
        previous = pair[1].sequence;
        found.insert(pair[1].sequence, first);
    }
    for (last, _, payload, _) in acked {
        assert_eq!(
            found.get(last),
            Some(payload),
            "region {region}: acknowledged batch ending at {last} is lost"
        );
    }
    let acked_payloads: HashSet<&String> = acked.iter().map(|a| &a.2).collect();
    for payload in found.values() {
        assert!(
            acked_payloads.contains(payload) || failed.contains(payload),
            "region {region}: {payload} was never written"
        );
    }
    assert!(acked.len() > 20, "too few writes: {}", acked.len());
}

/// Waits (at most 60 s) until every region has `count` more
/// acknowledged writes.
async fn wait_for_acks(acks: &[AtomicU64; 2], count: u64, phase: &str) {
    let start: Vec<u64> = acks.iter().map(|a| a.load(Ordering::Acquire)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    for (region, ack) in acks.iter().enumerate() {
        while ack.load(Ordering::Acquire) < start[region] + count {
            assert!(
                Instant::now() < deadline,
                "region {region}: writes did not go on {phase}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn log_line(line: &str) {
    eprintln!("{line}");
}

/// The index of the server leading stream `name`.
async fn stream_leader(servers: &NatsServers, name: &str) -> usize {
    let client = async_nats::connect(servers.urls().as_slice())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(name).await.unwrap();
    let info = stream.info().await.unwrap();
    let leader = info
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("a leader");
    leader
        .strip_prefix('n')
        .and_then(|i| i.parse().ok())
        .unwrap_or_else(|| panic!("unexpected server name {leader}"))
}

/// Proves that with two of three nodes gone a write fails with an error
/// naming the region and servers (no acknowledgement), and that once a
/// quorum is back writes resume without reusing the failed write's numbers,
/// in that region and in another region of the same stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_quorum_fails_writes_clearly_and_resumes() {
    let _one_cluster_at_a_time = support::CLUSTER_TESTS.lock().await;
    let mut servers = NatsServers::cluster(3).await;
    let config = NatsWalConfig::new(servers.urls())
        .prefix("quorum")
        .replicas(3)
        .streams(1)
        .owner("node-a")
        .request_timeout(Duration::from_secs(1));
    let wal = NatsWal::open(config).await.unwrap();
    let (table, neighbour) = (WalLocation::new(1, 1), WalLocation::new(2, 1));
    assert_eq!(write(&wal, table, "before").await.unwrap(), 1);
    assert_eq!(write(&wal, neighbour, "before").await.unwrap(), 1);
    servers.kill(1);
    servers.kill(2);
    let ctx = WriteContext {
        timeout: Duration::from_secs(2),
    };
    let err = wal
        .write(&ctx, &batch(table, &["lost".into()]))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("region 1"), "{text}");
    assert!(text.contains("127.0.0.1"), "{text}");
    assert!(
        matches!(
            nats_error(&err),
            Error::Publish { .. } | Error::Timeout { .. } | Error::Request { .. }
        ),
        "{err:?}"
    );
    servers.restart(1).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let seq = loop {
        match wal.write(&ctx, &batch(table, &["after".into()])).await {
            Ok(seq) => break seq,
            Err(e) if Instant::now() < deadline => {
                log_line(&format!("waiting for quorum: {e}"));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("writes did not resume: {e}"),
        }
    };
    assert!(seq > 2, "the failed write's number was reused: {seq}");
    // Just after an election the replicas may still be catching up.
    let entries = loop {
        match try_read_all(&wal, table).await {
            Ok(entries) => break entries,
            Err(e) if Instant::now() < deadline => {
                log_line(&format!("waiting to read: {e}"));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("reads did not resume: {e}"),
        }
    };
    assert_eq!(entries[0].payload, &b"before"[..]);
    assert_eq!(entries.last().unwrap().payload, &b"after"[..]);
    assert_eq!(entries.last().unwrap().sequence, seq);
    assert_eq!(write(&wal, neighbour, "after").await.unwrap(), 2);
    let entries = read_all(&wal, neighbour).await;
    let payloads: Vec<&[u8]> = entries.iter().map(|e| &e.payload[..]).collect();
    assert_eq!(payloads, [&b"before"[..], b"after"]);
    wal.close_gracefully().await.unwrap();
}

/// Proves that a region moved to another instance fences the old owner:
/// after a graceful move its writes are refused, after a forced takeover
/// its writes and deletes fail, and nothing it wrote after losing the
/// region is visible; while the old owner's writes to another region of
/// the same stream go on undisturbed throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_region_fences_the_stale_owner() {
    let servers = NatsServers::single().await;
    let config = |owner: &str| {
        NatsWalConfig::new(servers.urls())
            .prefix("move")
            .streams(1)
            .owner(owner)
    };
    let a = NatsWal::open(config("node-a")).await.unwrap();
    let b = NatsWal::open(config("node-b")).await.unwrap();
    let table = WalLocation::new(1, 1);

    // A graceful move: A closes the region, B opens it.
    assert_eq!(write(&a, table, "a1").await.unwrap(), 1);
    a.close_region(1).await.unwrap();
    assert_eq!(write(&b, table, "b2").await.unwrap(), 2);
    let err = write(&a, table, "stale").await.unwrap_err();
    assert!(
        matches!(nats_error(&err), Error::RegionOwned { holder, .. } if holder == "node-b"),
        "{err}"
    );
    assert!(err.to_string().contains("region 1"), "{err}");
    assert_eq!(write(&b, table, "b3").await.unwrap(), 3);

    // A forced takeover while B is writing: B is fenced from then on. B
    // also writes region 2, in the same stream, which stays B's.
    let stop = Arc::new(AtomicBool::new(false));
    let neighbour = WalLocation::new(2, 1);
    let neighbour_writer =
        tokio::spawn(write_until_stopped(b.clone(), neighbour, Arc::clone(&stop)));
    let writer = tokio::spawn(write_until_fenced(b.clone(), table, Arc::clone(&stop)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.take_over_region(1).await.unwrap();
    let first_a = write(&a, table, "a-after").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Release);
    let (b_acked, fenced_at) = writer.await.unwrap();
    let neighbour_acked = neighbour_writer.await.unwrap();
    assert!(fenced_at.is_some(), "B was never fenced");
    assert!(b_acked.len() > 5, "B wrote too little before the takeover");
    // Every later call of B on the region fails; deletes too.
    let err = b.mark_delete_entries_up_to(table, 1).await.unwrap_err();
    assert!(matches!(nats_error(&err), Error::Fenced { .. }), "{err}");
    assert!(b.sequence_num(table).await.is_err());

    // A sees B's acknowledged writes, numbered before its own, and nothing
    // of B's after the takeover.
    let entries = read_all(&a, table).await;
    let by_seq: BTreeMap<u64, String> = entries
        .iter()
        .map(|e| (e.sequence, String::from_utf8(e.payload.to_vec()).unwrap()))
        .collect();
    for (seq, payload) in &b_acked {
        assert_eq!(by_seq.get(seq), Some(payload));
        assert!(*seq < first_a);
    }
    assert_eq!(by_seq.get(&first_a).map(String::as_str), Some("a-after"));
    assert_eq!(*by_seq.keys().last().unwrap(), first_a);
    assert_eq!(entries.len(), 3 + b_acked.len() + 1);

    // Region 2 holds every write B made to it, in order, and takes more.
    let found: Vec<(u64, String)> = read_all(&b, neighbour)
        .await
        .iter()
        .map(|e| (e.sequence, String::from_utf8(e.payload.to_vec()).unwrap()))
        .collect();
    assert!(neighbour_acked.len() > 5, "{}", neighbour_acked.len());
    assert_eq!(found, neighbour_acked);
    let next = write(&b, neighbour, "later").await.unwrap();
    assert_eq!(next, neighbour_acked.len() as u64 + 1);

    // B lets the region go without writing anything; it stays A's.
    b.close_region(1).await.unwrap();
    let err = write(&b, table, "stale").await.unwrap_err();
    assert!(
        matches!(nats_error(&err), Error::RegionOwned { .. }),
        "{err}"
    );
    a.close_gracefully().await.unwrap();
    b.close_gracefully().await.unwrap();
}

/// Writes to `location` until `stop`, every write acknowledged; returns
/// (sequence, payload) of each.
async fn write_until_stopped(
    wal: NatsWal,
    location: WalLocation,
    stop: Arc<AtomicBool>,
) -> Vec<(u64, String)> {
    let mut acked = Vec::new();
    while !stop.load(Ordering::Acquire) {
        let payload = format!("n-{}", acked.len());
        let seq = write(&wal, location, &payload).await.unwrap();
        acked.push((seq, payload));
        tokio::task::yield_now().await;
    }
    acked
}

/// Writes to `location` until `stop`; once a write fails it must be
/// because `node-a` fenced this owner, and no later write may succeed.
/// Returns the acknowledged writes and the attempt that was first fenced.
async fn write_until_fenced(
    wal: NatsWal,
    location: WalLocation,
    stop: Arc<AtomicBool>,
) -> (Vec<(u64, String)>, Option<u64>) {
    let (mut acked, mut fenced_at) = (Vec::new(), None);
    let mut i = 0;
    while !stop.load(Ordering::Acquire) {
        match write(&wal, location, &format!("b-{i}")).await {
            Ok(seq) => {
                assert!(fenced_at.is_none(), "a write acknowledged after fencing");
                acked.push((seq, format!("b-{i}")));
            }
            Err(e) => {
                assert!(
                    matches!(nats_error(&e), Error::Fenced { by, .. } if by == "node-a"),
                    "{e}"
                );
                fenced_at.get_or_insert(i);
            }
        }
        i += 1;
        tokio::task::yield_now().await;
    }
    (acked, fenced_at)
}

/// Proves that deletes free the server's storage in a stream shared with
/// another region whose small batches are interleaved with the deleted
/// ones: the stream's bytes drop with the deleted entries at once, the
/// store dir shrinks once the server's periodic pass has compacted the
/// blocks that still hold the other region's messages, and the other
/// region's entries stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_free_server_storage() {
    let servers = NatsServers::single_with_sync_interval("1s").await;
    let config = NatsWalConfig::new(servers.urls())
        .prefix("purge")
        .streams(1);
    let wal = NatsWal::open(config).await.unwrap();
    let (table, other) = (WalLocation::new(3, 1), WalLocation::new(3, 2));
    let neighbour = WalLocation::new(4, 2);
    let payload = vec![7u8; 16 << 10];
    let mut last = 0;
    for i in 0..640 {
        let mut batch = LogWriteBatch::new(table);
        batch.push(payload.clone());
        last = wal.write(&WriteContext::default(), &batch).await.unwrap();
        if i % 64 == 0 {
            write(&wal, neighbour, &format!("n{i}")).await.unwrap();
        }
    }
    write(&wal, other, "kept").await.unwrap();
    let client = async_nats::connect(servers.urls().as_slice())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("purge_s0").await.unwrap();
    let full = stream.info().await.unwrap().state.bytes;
    let disk_full = support::disk_usage(servers.store_dir());
    assert!(full > 10 << 20, "{full}");

    wal.mark_delete_entries_up_to(table, last / 2)
        .await
        .unwrap();
    let half = stream.info().await.unwrap().state.bytes;
    assert!(
        half < full * 6 / 10 && half > full * 4 / 10,
        "{half} of {full}"
    );

    wal.mark_delete_entries_up_to(table, last).await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    assert!(state.bytes < 4096, "{} bytes left", state.bytes);
    // Left: the other table's batch, the delete mark, the take record
    // (rewritten behind the batch so that it keeps no block alive), and
    // region 4's ten batches and take record.
    assert_eq!(state.messages, 3 + 11);
    // Region 4's messages keep every block alive until the server compacts
    // it (a block more than half deleted, at its periodic pass, every
    // second here); the newest block it never compacts.
    let deadline = Instant::now() + Duration::from_secs(30);
    let disk_empty = loop {
        let disk = support::disk_usage(servers.store_dir());
        if disk < disk_full / 2 || Instant::now() > deadline {
            break disk;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        disk_empty < disk_full / 2,
        "the store dir holds {disk_empty} bytes after deleting, {disk_full} before"
    );
    eprintln!("store dir: {disk_full} bytes before the deletes, {disk_empty} after compaction");
    assert_eq!(read_all(&wal, other).await.len(), 1);
    assert_eq!(read_all(&wal, neighbour).await.len(), 10);
    assert_eq!(wal.sequence_num(table).await.unwrap(), last);
    wal.close_gracefully().await.unwrap();
}

/// Proves that an unreachable cluster and a bad configuration give clear
/// errors naming the servers or the setting, before anything is written.
#[tokio::test]
async fn unreachable_servers_and_bad_config_give_clear_errors() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let config = NatsWalConfig::new([url.clone()]).request_timeout(Duration::from_millis(500));
    let err = NatsWal::open(config.clone()).await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert!(err.to_string().contains(&url), "{err}");
    for (bad, what) in [
        (config.clone().replicas(0), "replicas"),
        (config.clone().prefix("a.b"), "prefix"),
        (config.clone().owner("two words"), "owner"),
        (NatsWalConfig::new(Vec::<String>::new()), "server"),
    ] {
        let err = NatsWal::open(bad).await.unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
        assert!(err.to_string().contains(what), "{err}");
    }
}
