//! What a [`NatsWal`] reports of itself to Prometheus: segwal's
//! [`ExportMetrics`], so that [`segwal::metrics::MeteredWal`] wraps it as
//! it wraps `LocalWal` (label `backend="nats"`).
//!
//! The families shared with `LocalWal` keep their names
//! (`segwal_written_*`); what only JetStream has is under `segwal_nats_`.
//! Every value is a relaxed atomic read at the scrape.

use std::sync::atomic::{AtomicU64, Ordering};

use segwal::metrics::{ExportMetrics, Families};

use crate::durability::ServerSync;
use crate::wal::{NatsWal, lock};

fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl ExportMetrics for NatsWal {
    fn backend(&self) -> &'static str {
        "nats"
    }

    fn export(&self, out: &mut Families<'_>) {
        let inner = &self.inner;
        let s = &inner.stats;
        out.counter(
            "segwal_written_batches_total",
            "Batches written (acknowledged by JetStream).",
            read(&s.batches_written),
        );
        out.counter(
            "segwal_written_entries_total",
            "Entries written (acknowledged by JetStream).",
            read(&s.entries_written),
        );
        out.counter(
            "segwal_written_bytes_total",
            "Payload bytes of the batches written (message framing and headers not included).",
            read(&s.bytes_written),
        );
        out.counter(
            "segwal_nats_commits_total",
            "Commits acknowledged: one message or one atomic batch each, carrying every write \
             of a region queued when it started (batches over commits: the group commit's groups).",
            read(&s.commits),
        );
        out.counter(
            "segwal_nats_failed_writes_total",
            "Writes JetStream did not acknowledge (their outcome is unknown until read).",
            read(&s.write_failures),
        );
        out.counter(
            "segwal_nats_resyncs_total",
            "Times a region re-read its position from the stream after a failed write.",
            read(&s.resyncs),
        );
        out.counter(
            "segwal_nats_delete_marks_total",
            "Delete marks published.",
            read(&s.deletes),
        );
        out.counter(
            "segwal_nats_purged_messages_total",
            "Messages purged from the streams (deleted batches, older marks and ownership records).",
            read(&s.messages_purged),
        );
        out.counter(
            "segwal_nats_regions_opened_total",
            "Regions opened (taken) by this instance.",
            read(&s.regions_opened),
        );
        let open = lock(&inner.regions)
            .values()
            .filter(|cell| cell.initialized())
            .count();
        out.gauge(
            "segwal_nats_regions_open",
            "Regions this instance holds open.",
            open as f64,
        );
        out.gauge(
            "segwal_nats_replicas",
            "Replicas of each stream this instance creates.",
            inner.config.replicas as f64,
        );
        let fsynced = inner.config.server_sync == ServerSync::Always;
        out.gauge(
            "segwal_nats_ack_fsynced",
            "1 if an acknowledgement follows an fsync on a majority of replicas (the servers' \
             sync_interval: always, as configured), else 0.",
            if fsynced { 1.0 } else { 0.0 },
        );
    }
}
