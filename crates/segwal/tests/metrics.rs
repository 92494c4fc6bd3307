//! Prometheus metrics through `MeteredWal`, scraped from a real registry
//! with Prometheus's text format.

use segwal::metrics::MeteredWal;
use segwal::{
    LocalWal, LocalWalConfig, LogWriteBatch, ReadBoundary, ReadContext, ReadRequest, WalLocation,
    WalManager, WriteContext,
};
use segwal_conformance::scrape::{sample, scrape};

/// Proves that the metrics of a metered `LocalWal` count exactly what was
/// done: writes (batches, entries, the write latency histogram), syncs
/// and the batches they covered, failed calls by kind, segments, and the
/// recovery at open, each labelled with its backend and WAL name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_counts_writes_syncs_errors_and_segments() {
    let dir = tempfile::tempdir().unwrap();
    let config = LocalWalConfig::new(dir.path()).segment_size(4096);
    let registry = prometheus::Registry::new();
    let wal = MeteredWal::register(LocalWal::open(config).await.unwrap(), &registry, "data")
        .expect("registers");

    let ctx = WriteContext::default();
    for i in 0..40u64 {
        let mut batch = LogWriteBatch::new(WalLocation::new(i % 4, 1));
        batch.push(vec![7u8; 100]);
        batch.push(vec![8u8; 100]);
        wal.write(&ctx, &batch).await.unwrap();
    }
    let empty = LogWriteBatch::new(WalLocation::new(1, 1));
    assert!(wal.write(&ctx, &empty).await.is_err());

    let text = scrape(&registry);
    let labels = r#"backend="local",wal="data""#;
    assert_eq!(
        sample(&text, &format!("segwal_written_batches_total{{{labels}}}")),
        40.0
    );
    assert_eq!(
        sample(&text, &format!("segwal_written_entries_total{{{labels}}}")),
        80.0
    );
    // Every write call is timed, the refused one too.
    assert_eq!(
        sample(
            &text,
            &format!("segwal_write_duration_seconds_count{{{labels}}}")
        ),
        41.0
    );
    assert_eq!(
        sample(
            &text,
            &format!(r#"segwal_write_duration_seconds_bucket{{{labels},le="+Inf"}}"#)
        ),
        41.0
    );
    assert_eq!(
        sample(
            &text,
            r#"segwal_errors_total{backend="local",kind="invalid_argument",wal="data"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            r#"segwal_errors_total{backend="local",kind="io",wal="data"}"#
        ),
        0.0
    );
    // One writer at a time under SyncMode::Always: every batch is durable
    // by a sync of its own (a write that synced itself, or a group of one),
    // and rollovers add syncs that cover no batch.
    let syncs = sample(&text, &format!("segwal_syncs_total{{{labels}}}"));
    assert!(syncs >= 40.0, "{syncs} syncs");
    assert_eq!(
        sample(
            &text,
            &format!("segwal_sync_duration_seconds_count{{{labels}}}")
        ),
        syncs
    );
    assert_eq!(
        sample(&text, &format!("segwal_batches_per_sync_sum{{{labels}}}")),
        40.0,
        "each batch made durable once"
    );
    // 40 records of about 300 bytes in 4 KiB segments: several rollovers.
    let created = sample(&text, &format!("segwal_segments_created_total{{{labels}}}"));
    assert!(created >= 3.0, "{created} segments created");
    let hurried = sample(&text, &format!("segwal_spares_hurried_total{{{labels}}}"));
    assert!(hurried < created, "{hurried} of {created} segments hurried");
    let early = sample(&text, &format!("segwal_early_rollovers_total{{{labels}}}"));
    assert!(early < created, "{early} of {created} segments left early");
    let live = sample(&text, &format!("segwal_segments_live{{{labels}}}"));
    assert!(live >= 3.0 && live <= created, "{live} live of {created}");
    assert!(sample(&text, &format!("segwal_disk_bytes{{{labels}}}")) >= live * 4096.0);
    assert!(sample(&text, &format!("segwal_live_bytes{{{labels}}}")) > 40.0 * 200.0);
    assert_eq!(
        sample(&text, &format!("segwal_recovery_bytes{{{labels}}}")),
        0.0,
        "a new data dir has nothing to recover"
    );

    // Deleting everything removes the sealed segments.
    for region in 0..4 {
        wal.mark_delete_entries_up_to(WalLocation::new(region, 1), u64::MAX)
            .await
            .unwrap();
    }
    let text = scrape(&registry);
    assert!(sample(&text, &format!("segwal_segments_removed_total{{{labels}}}")) >= 2.0);

    // A reopened WAL reports what its recovery read.
    wal.close_gracefully().await.unwrap();
    let registry = prometheus::Registry::new();
    let config = LocalWalConfig::new(dir.path()).segment_size(4096);
    let wal = MeteredWal::register(LocalWal::open(config).await.unwrap(), &registry, "data")
        .expect("registers");
    let text = scrape(&registry);
    assert!(sample(&text, &format!("segwal_recovery_bytes{{{labels}}}")) > 0.0);
    let mut read = wal
        .read_batch(
            &ReadContext::default(),
            &ReadRequest {
                location: WalLocation::new(0, 1),
                start: ReadBoundary::Min,
                end: ReadBoundary::Max,
            },
        )
        .await
        .unwrap();
    assert!(read.next_batch().await.unwrap().is_none(), "all deleted");
}

/// Proves that one registry holds several WALs told apart by their `wal`
/// label, and refuses a second WAL under a name already registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wals_share_a_registry_by_name_and_names_are_unique() {
    let registry = prometheus::Registry::new();
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let open = |dir: &tempfile::TempDir| LocalWal::open(LocalWalConfig::new(dir.path()));
    let data = MeteredWal::register(open(&a).await.unwrap(), &registry, "data").unwrap();
    let _manifest = MeteredWal::register(open(&b).await.unwrap(), &registry, "manifest").unwrap();
    assert!(
        MeteredWal::register(open(&c).await.unwrap(), &registry, "data").is_err(),
        "a second WAL named data"
    );
    let mut batch = LogWriteBatch::new(WalLocation::new(1, 1));
    batch.push(b"x".to_vec());
    data.write(&WriteContext::default(), &batch).await.unwrap();
    let text = scrape(&registry);
    assert_eq!(
        sample(
            &text,
            r#"segwal_written_batches_total{backend="local",wal="data"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            r#"segwal_written_batches_total{backend="local",wal="manifest"}"#
        ),
        0.0
    );
}
