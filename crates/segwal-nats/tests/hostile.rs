//! Hostile arguments against `NatsWal` on a real server: the cases the
//! local backend's `tests/hostile.rs` covers (ids and sequence numbers at
//! the limits, every read boundary, batches and contexts at their
//! extremes, calls after close, configurations that cannot work), and a
//! message in a region's subjects that segwal did not write.

mod support;

use std::time::Duration;

use segwal::{
    BatchLogIterator, LogEntry, LogWriteBatch, ReadBoundary, ReadContext, ReadRequest, ScanRequest,
    WalLocation, WalManager, WriteContext,
};
use segwal_conformance::limits::{self, drain};
use segwal_nats::{Error, MAX_STREAMS, NatsWal, NatsWalConfig};
use support::NatsServers;

const MAX: u64 = u64::MAX;

/// Two streams, so that region `MAX` (odd) and region 0 live apart.
fn config(servers: &NatsServers) -> NatsWalConfig {
    NatsWalConfig::new(servers.urls())
        .prefix("hostile")
        .owner("node-a")
        .streams(2)
}

async fn write(wal: &NatsWal, location: WalLocation, payloads: &[&[u8]]) -> u64 {
    let mut batch = LogWriteBatch::new(location);
    for p in payloads {
        batch.push(p.to_vec());
    }
    wal.write(&WriteContext::default(), &batch).await.unwrap()
}

async fn read(wal: &NatsWal, request: ReadRequest) -> Vec<LogEntry> {
    let ctx = ReadContext::default();
    drain(
        wal.read_batch(&ctx, &request).await.unwrap(),
        ctx.batch_size,
    )
    .await
}

fn all(location: WalLocation) -> ReadRequest {
    ReadRequest {
        location,
        start: ReadBoundary::Min,
        end: ReadBoundary::Max,
    }
}

fn nats_error(err: &segwal::Error) -> &Error {
    Error::of(err).unwrap_or_else(|| panic!("not a NATS error: {err}"))
}

/// Stores a message on `subject` as something other than segwal would:
/// with `Segwal-Next: next` (if given) and no fencing.
async fn publish_raw(servers: &NatsServers, subject: String, next: Option<u64>, body: &[u8]) {
    let client = async_nats::connect(servers.urls().as_slice())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let mut headers = async_nats::HeaderMap::new();
    if let Some(next) = next {
        headers.insert("Segwal-Next", next.to_string().as_str());
    }
    js.publish_with_headers(subject, headers, body.to_vec().into())
        .await
        .unwrap()
        .await
        .unwrap();
}

/// Puts region `region` (of stream 1, which must exist) at the top of the
/// sequence space: a release record whose `Segwal-Next` is `next`, as a
/// region that had used that many numbers would end. Writing 2^64 entries
/// is the only other way there.
async fn set_sequence_floor(servers: &NatsServers, region: u64, next: u64) {
    assert_eq!(region % 2, 1, "region {region} is not in stream 1");
    let subject = format!("hostile.1.{region}.o");
    publish_raw(servers, subject, Some(next), b"release elsewhere").await;
}

/// Proves that ids 0 and `u64::MAX` work as regions and tables, that a
/// region at the top of the sequence space numbers up to `u64::MAX - 1`,
/// and that every pair of read boundaries built from 0, 1, the numbers
/// around the tables' entries, `u64::MAX - 1` and `u64::MAX` (including
/// empty and inverted ranges) yields exactly the entries the SPEC's
/// definition admits, unaltered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_boundary_pair_at_the_limits() {
    let servers = NatsServers::single().await;
    let wal = NatsWal::open(config(&servers)).await.unwrap();
    write(&wal, WalLocation::new(1, 0), &[b"creates stream 1"]).await;
    set_sequence_floor(&servers, MAX, MAX - 4).await;
    limits::every_read_boundary_pair_at_the_limits(&wal).await;
    wal.close_gracefully().await.unwrap();
}

/// Proves that the batches `NatsWal` cannot take get an error naming the
/// region, table and sizes and use no sequence number (an entry past the
/// server's `max_payload`, a batch past the last number), and that a batch
/// of 50 000 empty entries is written and read back whole, in one
/// `next_batch` when the context allows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_at_the_extremes() {
    let servers = NatsServers::single().await;
    let wal = NatsWal::open(config(&servers)).await.unwrap();
    let ctx = WriteContext::default();
    let location = WalLocation::new(MAX, 0);

    let mut big = LogWriteBatch::new(location);
    big.push(Vec::new());
    big.push(vec![0u8; (1 << 20) + 1]);
    let err = wal.write(&ctx, &big).await.unwrap_err();
    assert!(
        matches!(nats_error(&err), Error::BatchTooLarge { .. }),
        "{err}"
    );
    assert_eq!(err.kind(), "invalid_argument");
    let text = err.to_string();
    assert!(
        text.contains(&format!("region {MAX} table 0"))
            && text.contains("2 entries")
            && text.contains("max_payload of 1048576 bytes"),
        "{text}"
    );

    let mut empties = LogWriteBatch::new(location);
    for _ in 0..50_000 {
        empties.push(Vec::new());
    }
    assert_eq!(wal.write(&ctx, &empties).await.unwrap(), 50_000, "from 1");
    let whole = ReadContext {
        batch_size: usize::MAX,
        timeout: Duration::MAX,
    };
    let mut iter = wal.read_batch(&whole, &all(location)).await.unwrap();
    let batch = iter.next_batch().await.unwrap().unwrap();
    assert_eq!(batch.len(), 50_000);
    for (i, entry) in batch.iter().enumerate() {
        assert_eq!((entry.sequence, entry.payload.len()), (i as u64 + 1, 0));
    }
    assert!(iter.next_batch().await.unwrap().is_none());

    // Region 9 has one number left.
    set_sequence_floor(&servers, 9, MAX - 1).await;
    let last = WalLocation::new(9, 1);
    let exhausted = |err: segwal::Error, entries: usize| {
        assert!(
            matches!(nats_error(&err), Error::SequencesExhausted { region: 9, entries: e } if *e == entries),
            "{err}"
        );
        assert!(err.to_string().contains("region 9"), "{err}");
    };
    let mut two = LogWriteBatch::new(last);
    two.push(b"a".to_vec());
    two.push(b"b".to_vec());
    exhausted(wal.write(&ctx, &two).await.unwrap_err(), 2);
    assert_eq!(write(&wal, last, &[b"last"]).await, MAX - 1);
    let mut one = LogWriteBatch::new(last);
    one.push(b"more".to_vec());
    exhausted(wal.write(&ctx, &one).await.unwrap_err(), 1);
    assert_eq!(wal.sequence_num(last).await.unwrap(), MAX - 1);
    assert_eq!(read(&wal, all(last)).await.len(), 1);
    wal.close_gracefully().await.unwrap();
}

/// Proves that contexts at their extremes have their documented effect: a
/// batch size of 0 is taken as 1, `usize::MAX` and `Duration::MAX` work (no
/// overflow), and a zero timeout either succeeds or reports a timeout,
/// after which a write is whole or absent and an iterator refuses further
/// use with "abandoned".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contexts_at_the_extremes() {
    let servers = NatsServers::single().await;
    let wal = NatsWal::open(config(&servers)).await.unwrap();
    let location = WalLocation::new(0, 0);
    let endless = WriteContext {
        timeout: Duration::MAX,
    };
    for i in 0..5u8 {
        let mut batch = LogWriteBatch::new(location);
        batch.push(vec![i; 3]);
        assert_eq!(wal.write(&endless, &batch).await.unwrap(), u64::from(i) + 1);
    }
    let one_by_one = ReadContext {
        batch_size: 0,
        ..ReadContext::default()
    };
    let got = drain(
        wal.read_batch(&one_by_one, &all(location)).await.unwrap(),
        1,
    )
    .await;
    assert_eq!(got.len(), 5);
    let endless_read = ReadContext {
        batch_size: usize::MAX,
        timeout: Duration::MAX,
    };
    let scan = ScanRequest { region_id: 0 };
    let got = drain(wal.scan(&endless_read, &scan).await.unwrap(), usize::MAX).await;
    assert_eq!(got.len(), 5);
    for (i, entry) in got.iter().enumerate() {
        assert_eq!(
            (entry.sequence, &entry.payload[..]),
            (i as u64 + 1, &[i as u8; 3][..])
        );
    }

    // A zero timeout: the outcome depends on timing; each is checked.
    let mut batch = LogWriteBatch::new(location);
    batch.push(b"zero".to_vec());
    let zero = WriteContext {
        timeout: Duration::ZERO,
    };
    match wal.write(&zero, &batch).await {
        Ok(sequence) => assert_eq!(sequence, 6),
        Err(err) => assert!(
            matches!(nats_error(&err), Error::Timeout { timeout, .. } if timeout.is_zero()),
            "{err}"
        ),
    }
    let hurried = ReadContext {
        timeout: Duration::ZERO,
        batch_size: 1,
    };
    match wal.read_batch(&hurried, &all(location)).await {
        Ok(iter) => check_hurried_read(iter).await,
        Err(err) => assert!(err.to_string().contains("region 0"), "{err}"),
    }
    wal.close_gracefully().await.unwrap();

    let wal = NatsWal::open(config(&servers)).await.unwrap();
    let got = read(&wal, all(location)).await;
    match got.len() {
        5 => {}
        6 => assert_eq!((got[5].sequence, &got[5].payload[..]), (6, &b"zero"[..])),
        n => panic!("{n} entries"),
    }
    let next = write(&wal, location, &[b"next"]).await;
    assert!(next > got.len() as u64, "{next}");
    wal.close_gracefully().await.unwrap();
}

/// Reads `iter` (made with a zero timeout): entries in order from 1 with
/// none skipped, until the end or an error, after which the iterator
/// refuses further use.
async fn check_hurried_read(mut iter: BatchLogIterator) {
    let mut sequences = Vec::new();
    loop {
        match iter.next_batch().await {
            Ok(Some(batch)) => sequences.extend(batch.iter().map(|e| e.sequence)),
            Ok(None) => break,
            Err(_) => {
                let again = iter.next_batch().await.unwrap_err();
                assert!(again.to_string().contains("abandoned"), "{again}");
                break;
            }
        }
    }
    let prefix: Vec<u64> = (1..=sequences.len() as u64).collect();
    assert_eq!(sequences, prefix, "entries in order, none skipped");
}

/// Proves that deletes at the sequence limits have their defined effect:
/// up to 0 changes nothing, up to `u64::MAX` deletes the table's entries
/// and not later writes nor other tables, and the table's sequence number
/// survives; and that after `close_gracefully` every call fails as closed
/// while the statistics stay readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_at_the_limits_and_calls_after_close() {
    let servers = NatsServers::single().await;
    let wal = NatsWal::open(config(&servers)).await.unwrap();
    let (a, b) = (WalLocation::new(MAX, MAX), WalLocation::new(MAX, 0));
    write(&wal, a, &[b"1", b"2"]).await;
    write(&wal, b, &[b"3"]).await;
    wal.mark_delete_entries_up_to(a, 0).await.unwrap();
    assert_eq!(read(&wal, all(a)).await.len(), 2);
    wal.mark_delete_entries_up_to(a, MAX).await.unwrap();
    assert!(read(&wal, all(a)).await.is_empty());
    assert_eq!(read(&wal, all(b)).await.len(), 1);
    assert_eq!(wal.sequence_num(a).await.unwrap(), 2);
    assert_eq!(write(&wal, a, &[b"4"]).await, 4);
    assert_eq!(read(&wal, all(a)).await[0].payload, &b"4"[..]);
    wal.close_gracefully().await.unwrap();

    let mut batch = LogWriteBatch::new(a);
    batch.push(b"late".to_vec());
    let ctx = ReadContext::default();
    let inverted = ReadRequest {
        location: a,
        start: ReadBoundary::Max,
        end: ReadBoundary::Min,
    };
    let errors = [
        wal.write(&WriteContext::default(), &batch)
            .await
            .unwrap_err(),
        wal.sequence_num(a).await.unwrap_err(),
        wal.mark_delete_entries_up_to(a, MAX).await.unwrap_err(),
        wal.close_region(MAX).await.unwrap_err(),
        wal.read_batch(&ctx, &inverted).await.unwrap_err(),
        wal.scan(&ctx, &ScanRequest { region_id: MAX })
            .await
            .unwrap_err(),
        wal.close_gracefully().await.unwrap_err(),
    ];
    for err in errors {
        assert!(err.is_closed(), "{err}");
        assert_eq!(err.kind(), "closed");
        assert_eq!(err.to_string(), "the NATS WAL is closed");
    }
    let statistics = wal.get_statistics().await.unwrap();
    assert!(statistics.contains("batches written: 3"), "{statistics}");
}

/// Proves that configurations that cannot work are refused by
/// `NatsWal::open` with an error naming the setting before any server is
/// contacted, and that the accepted extremes (the longest prefix and owner
/// name, the most streams) work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_refuses_what_cannot_work() {
    let servers = NatsServers::single().await;
    let good = config(&servers);
    let cases = [
        (good.clone().replicas(0), "replicas must be 1 to 5, not 0"),
        (good.clone().replicas(6), "replicas must be 1 to 5, not 6"),
        (good.clone().prefix(""), "prefix \"\""),
        (good.clone().prefix("a.b"), "prefix \"a.b\""),
        (good.clone().prefix("a*"), "prefix \"a*\""),
        (good.clone().prefix("p".repeat(65)), "1 to 64"),
        (good.clone().owner(""), "owner name \"\""),
        (good.clone().owner("two words"), "owner name \"two words\""),
        (good.clone().owner("o".repeat(257)), "1 to 256"),
        (good.clone().streams(0), "streams must be 1 to 1024, not 0"),
        (
            good.clone().streams(MAX_STREAMS + 1),
            "streams must be 1 to 1024, not 1025",
        ),
        (good.clone().request_timeout(Duration::ZERO), "timeout"),
        (NatsWalConfig::new(Vec::<String>::new()), "server URL"),
        (NatsWalConfig::new([" "]), "server URL"),
    ];
    for (bad, message) in cases {
        let err = NatsWal::open(bad).await.unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
        assert_eq!(err.kind(), "invalid_argument");
        assert!(err.to_string().contains(message), "{message}: {err}");
    }
    let extremes = good
        .prefix("p".repeat(64))
        .owner("o".repeat(256))
        .streams(MAX_STREAMS);
    let wal = NatsWal::open(extremes).await.unwrap();
    assert_eq!(write(&wal, WalLocation::new(MAX, 1), &[b"x"]).await, 1);
    wal.close_gracefully().await.unwrap();
}

/// Proves that a message in a region's subjects that segwal did not write
/// is reported, not skipped: reads and scans of that table fail with an
/// error naming the stream, subject and stream sequence, while the other
/// tables of the region and other regions of the stream read as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_message_is_reported_not_skipped() {
    let servers = NatsServers::single().await;
    let wal = NatsWal::open(config(&servers)).await.unwrap();
    let (damaged, intact, neighbour) = (
        WalLocation::new(4, 1),
        WalLocation::new(4, 2),
        WalLocation::new(2, 1),
    );
    for location in [damaged, intact, neighbour] {
        write(&wal, location, &[b"x", b"y"]).await;
    }
    wal.close_gracefully().await.unwrap();
    publish_raw(&servers, "hostile.0.4.t.1".into(), Some(99), b"not a batch").await;

    let wal = NatsWal::open(config(&servers)).await.unwrap();
    let ctx = ReadContext::default();
    let err = wal.read_batch(&ctx, &all(damaged)).await.unwrap_err();
    assert!(matches!(nats_error(&err), Error::Malformed { .. }), "{err}");
    assert_eq!(err.kind(), "corruption");
    let text = err.to_string();
    assert!(
        text.contains("hostile.0.4.t.1")
            && text.contains("hostile_s0")
            && text.contains("region 4"),
        "{text}"
    );
    let scanned = async {
        let mut iter = wal.scan(&ctx, &ScanRequest { region_id: 4 }).await?;
        while iter.next_batch().await?.is_some() {}
        Ok::<_, segwal::Error>(())
    };
    let err = scanned.await.unwrap_err();
    assert!(err.to_string().contains("hostile.0.4.t.1"), "{err}");
    assert_eq!(read(&wal, all(intact)).await.len(), 2);
    assert_eq!(read(&wal, all(neighbour)).await.len(), 2);
    wal.close_gracefully().await.unwrap();
}
