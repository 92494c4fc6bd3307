//! Prometheus metrics of a `NatsWal` through segwal's `MeteredWal`,
//! scraped from a real registry in Prometheus's text format.

mod support;

use segwal::metrics::MeteredWal;
use segwal::{LogWriteBatch, WalLocation, WalManager, WriteContext};
use segwal_conformance::scrape::{sample, scrape};
use segwal_nats::{NatsWal, NatsWalConfig};
use support::NatsServers;

/// Proves that a metered `NatsWal` is scraped under `backend="nats"` and
/// counts exactly what was done: batches, entries and payload bytes
/// written, commits (at most one per write), regions open, every write
/// timed, a refused write counted as an error of its kind, deletes and
/// purges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_counts_what_the_nats_wal_did() {
    let servers = NatsServers::single().await;
    let config = NatsWalConfig::new(servers.urls()).prefix("metrics");
    let registry = prometheus::Registry::new();
    let wal = NatsWal::open(config).await.unwrap();
    let wal = MeteredWal::register(wal, &registry, "data").expect("registers");

    let ctx = WriteContext::default();
    for i in 0..30u64 {
        let mut batch = LogWriteBatch::new(WalLocation::new(i % 3, 1));
        batch.push(vec![7u8; 100]);
        batch.push(vec![8u8; 50]);
        wal.write(&ctx, &batch).await.unwrap();
    }
    let empty = LogWriteBatch::new(WalLocation::new(1, 1));
    assert!(wal.write(&ctx, &empty).await.is_err());
    wal.mark_delete_entries_up_to(WalLocation::new(0, 1), u64::MAX)
        .await
        .unwrap();

    let text = scrape(&registry);
    let labels = r#"backend="nats",wal="data""#;
    let value = |name: &str| sample(&text, &format!("{name}{{{labels}}}"));
    assert_eq!(value("segwal_written_batches_total"), 30.0);
    assert_eq!(value("segwal_written_entries_total"), 60.0);
    assert_eq!(value("segwal_written_bytes_total"), 30.0 * 150.0);
    let commits = value("segwal_nats_commits_total");
    assert!((1.0..=30.0).contains(&commits), "{commits} commits");
    assert_eq!(value("segwal_nats_failed_writes_total"), 0.0);
    assert_eq!(value("segwal_nats_regions_open"), 3.0);
    assert_eq!(value("segwal_nats_regions_opened_total"), 3.0);
    assert_eq!(value("segwal_nats_delete_marks_total"), 1.0);
    // The ten batches of region 0, at least.
    assert!(value("segwal_nats_purged_messages_total") >= 10.0, "{text}");
    assert_eq!(value("segwal_nats_replicas"), 1.0);
    assert_eq!(value("segwal_nats_ack_fsynced"), 0.0);
    assert_eq!(value("segwal_write_duration_seconds_count"), 31.0);
    assert_eq!(
        sample(
            &text,
            r#"segwal_errors_total{backend="nats",kind="invalid_argument",wal="data"}"#
        ),
        1.0
    );
    wal.close_gracefully().await.unwrap();
}
