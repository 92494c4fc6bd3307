//! One conformance suite for every segwal backend: the semantics of
//! SPEC section 3 as an engine sees them through the
//! [`WalManager`](segwal::WalManager) trait, written once and run against
//! [`LocalWal`](segwal::LocalWal) (`tests/local.rs` here) and the NATS
//! backend (`crates/segwal-nats/tests/conformance.rs`).
//!
//! A backend implements [`Backend`] (open the WAL; open it again after a
//! close or a drop, as a restart does) and calls [`conformance_tests!`],
//! which makes one `#[tokio::test]` per case: the one-region cases here,
//! the many-region ones in `many_regions.rs`. [`scrape`] reads a metrics
//! registry for the backends' metrics tests, [`limits`] reads at the
//! limits of the id and sequence spaces for their hostile-input tests.

pub mod limits;
mod many_regions;
pub mod scrape;

pub use many_regions::{
    close_region_among_many_leaves_the_others_open, deletes_in_some_regions_leave_the_others_whole,
    many_regions_with_concurrent_writers_read_back_and_scan,
};

use std::sync::Arc;

use async_trait::async_trait;
use segwal::{
    BatchLogIterator, LocalWal, LocalWalConfig, LogWriteBatch, ReadBoundary, ReadContext,
    ReadRequest, ScanRequest, SequenceNumber, WalLocation, WalManager, WriteContext,
};

/// A WAL under test: every [`open`](Backend::open) opens the same log (a
/// restart), each backend value a log of its own.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The WAL type.
    type Wal: WalManager;

    /// Opens the log. The suite only reopens after closing the previous
    /// instance (`close_gracefully`) or dropping it.
    async fn open(&self) -> Self::Wal;
}

/// [`LocalWal`] in a temporary dir, with small (4 KiB) segments so that
/// the cases cross many segments.
#[derive(Debug)]
pub struct LocalBackend {
    dir: tempfile::TempDir,
    /// Whether writes and reads run in place (the default) or on the
    /// blocking pool.
    in_place: bool,
}

impl LocalBackend {
    /// A backend over a fresh temporary dir with the default configuration.
    pub async fn create() -> LocalBackend {
        LocalBackend {
            dir: tempfile::tempdir().expect("a temporary dir"),
            in_place: true,
        }
    }

    /// Like [`create`](LocalBackend::create), but every write and read
    /// goes to the blocking pool (and reads read a batch ahead), as on a
    /// current-thread runtime.
    pub async fn on_the_blocking_pool() -> LocalBackend {
        LocalBackend {
            dir: tempfile::tempdir().expect("a temporary dir"),
            in_place: false,
        }
    }
}

#[async_trait]
impl Backend for LocalBackend {
    type Wal = LocalWal;

    async fn open(&self) -> LocalWal {
        let config = LocalWalConfig::new(self.dir.path())
            .segment_size(4096)
            .writes_in_place(self.in_place)
            .reads_in_place(self.in_place);
        LocalWal::open(config).await.expect("LocalWal opens")
    }
}

/// Makes one `#[tokio::test]` per conformance case. `$backend` is an
/// expression giving a future of `impl Backend`, evaluated afresh for each
/// case. There is no way to skip a case: a factory that cannot provide its
/// backend (a missing server, say) panics with the command that sets it up.
#[macro_export]
macro_rules! conformance_tests {
    ($backend:expr) => {
        $crate::conformance_tests!(@case $backend, write_read_back_with_every_batch_size_and_boundary,
            "Proves that reads return exactly the entries each pair of boundaries admits, in order, in batches no larger than asked.");
        $crate::conformance_tests!(@case $backend, sequence_numbers_are_per_region_and_survive_deletes_and_restarts,
            "Proves that sequence numbers are per region, consecutive within a batch, and never reused or lowered by deletes, drops or restarts.");
        $crate::conformance_tests!(@case $backend, deletes_are_durable_and_trim_inside_batches,
            "Proves that deletes hide exactly the entries up to the mark (also inside a batch), from reads and scans, durably across a restart, and never later writes.");
        $crate::conformance_tests!(@case $backend, concurrent_writers_then_scan_in_order,
            "Proves that concurrent writers over several regions get increasing numbers and that a scan after a restart yields every entry once, in order, intact.");
        $crate::conformance_tests!(@case $backend, close_region_reopens_on_next_use,
            "Proves that a closed region opens again on its next use with its entries and numbering intact.");
        $crate::conformance_tests!(@case $backend, a_closed_wal_refuses_every_call,
            "Proves that after close_gracefully every call fails with a closed error and a new instance sees all the data.");
        $crate::conformance_tests!(@case $backend, an_empty_batch_is_refused_and_uses_no_number,
            "Proves that an empty batch is refused with a clear error before any sequence number is used.");
        $crate::conformance_tests!(@case $backend, many_regions_with_concurrent_writers_read_back_and_scan,
            "Proves that 64 regions of 4 tables written at once, two writers per region, each number their entries from 1 without gaps, and every region reads back and scans exactly its entries, in order, before and after a restart.");
        $crate::conformance_tests!(@case $backend, deletes_in_some_regions_leave_the_others_whole,
            "Proves that deletes in some of 64 regions, made while other regions write, hide exactly the deleted entries of those regions, durably, and leave every other region's entries and every sequence number as they were.");
        $crate::conformance_tests!(@case $backend, close_region_among_many_leaves_the_others_open,
            "Proves that closing a few of 64 regions while the others write leaves the others readable and writable, and that each closed region comes back on its next use with its entries and numbering intact.");
    };
    (@case $backend:expr, $name:ident, $doc:literal) => {
        #[doc = $doc]
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let backend = $backend.await;
            $crate::$name(&backend).await;
        }
    };
}

/// Writes `payloads` as one batch to `location` and returns its last
/// sequence number; panics, naming the location, if the write fails.
pub async fn write(
    wal: &impl WalManager,
    location: WalLocation,
    payloads: &[&str],
) -> SequenceNumber {
    let mut batch = LogWriteBatch::new(location);
    for p in payloads {
        batch.push(p.as_bytes().to_vec());
    }
    wal.write(&WriteContext::default(), &batch)
        .await
        .unwrap_or_else(|e| panic!("write to {location:?}: {e}"))
}

/// Every entry of `iter` as (table, sequence, payload); checks that each
/// batch holds 1 to `batch_size` entries and that the end stays the end.
pub async fn drain(mut iter: BatchLogIterator, batch_size: usize) -> Vec<(u64, u64, String)> {
    let mut out = Vec::new();
    while let Some(batch) = iter.next_batch().await.unwrap() {
        assert!(
            !batch.is_empty() && batch.len() <= batch_size,
            "a batch of {} entries for batch size {batch_size}",
            batch.len()
        );
        for e in batch {
            out.push((
                e.table_id,
                e.sequence,
                String::from_utf8(e.payload.to_vec()).unwrap(),
            ));
        }
    }
    assert!(iter.next_batch().await.unwrap().is_none());
    out
}

async fn read_entries(
    wal: &impl WalManager,
    location: WalLocation,
    start: ReadBoundary,
    end: ReadBoundary,
    batch_size: usize,
) -> Vec<(u64, u64, String)> {
    let ctx = ReadContext {
        batch_size,
        ..ReadContext::default()
    };
    let req = ReadRequest {
        location,
        start,
        end,
    };
    drain(wal.read_batch(&ctx, &req).await.unwrap(), batch_size).await
}

async fn read(wal: &impl WalManager, location: WalLocation) -> Vec<u64> {
    read_entries(wal, location, ReadBoundary::Min, ReadBoundary::Max, 500)
        .await
        .into_iter()
        .map(|(_, seq, _)| seq)
        .collect()
}

async fn scan(wal: &impl WalManager, region_id: u64, batch_size: usize) -> Vec<(u64, u64, String)> {
    let ctx = ReadContext {
        batch_size,
        ..ReadContext::default()
    };
    drain(
        wal.scan(&ctx, &ScanRequest { region_id }).await.unwrap(),
        batch_size,
    )
    .await
}

/// See [`conformance_tests!`].
pub async fn write_read_back_with_every_batch_size_and_boundary(backend: &impl Backend) {
    let wal = backend.open().await;
    let table = WalLocation::new(1, 1);
    assert_eq!(wal.sequence_num(table).await.unwrap(), 0);
    for i in 0..20 {
        let payload = format!("entry {i}");
        assert_eq!(write(&wal, table, &[&payload]).await, i + 1);
    }
    // Another table of the region, interleaved, must not show up.
    write(&wal, WalLocation::new(1, 2), &["other"]).await;
    let all: Vec<u64> = (1..=20).collect();
    for batch_size in [1, 2, 3, 7, 19, 20, 21, 500] {
        let entries = read_entries(
            &wal,
            table,
            ReadBoundary::Min,
            ReadBoundary::Max,
            batch_size,
        )
        .await;
        let seqs: Vec<u64> = entries.iter().map(|e| e.1).collect();
        assert_eq!(seqs, all, "batch size {batch_size}");
        for (table_id, seq, payload) in entries {
            assert_eq!(table_id, 1);
            assert_eq!(payload, format!("entry {}", seq - 1));
        }
    }
    use ReadBoundary::{Excluded, Included, Max, Min};
    let boundaries = [
        Min,
        Max,
        Included(0),
        Included(5),
        Included(20),
        Included(u64::MAX),
        Excluded(0),
        Excluded(5),
        Excluded(20),
        Excluded(u64::MAX),
    ];
    let admits = |b: ReadBoundary, start: bool, n: u64| match (b, start) {
        (Min, _) => start,
        (Max, _) => !start || n == u64::MAX,
        (Included(x), true) => n >= x,
        (Included(x), false) => n <= x,
        (Excluded(x), true) => n > x,
        (Excluded(x), false) => n < x,
    };
    for start in boundaries {
        for end in boundaries {
            let expected: Vec<u64> = all
                .iter()
                .copied()
                .filter(|&n| admits(start, true, n) && admits(end, false, n))
                .collect();
            let got: Vec<u64> = read_entries(&wal, table, start, end, 7)
                .await
                .into_iter()
                .map(|e| e.1)
                .collect();
            assert_eq!(got, expected, "{start:?}..{end:?}");
        }
    }
    // A table never written reads empty.
    assert!(read(&wal, WalLocation::new(1, 99)).await.is_empty());
    wal.close_gracefully().await.unwrap();
}

/// See [`conformance_tests!`].
pub async fn sequence_numbers_are_per_region_and_survive_deletes_and_restarts(
    backend: &impl Backend,
) {
    let (a, b, other) = (
        WalLocation::new(1, 1),
        WalLocation::new(1, 2),
        WalLocation::new(2, 1),
    );
    let wal = backend.open().await;
    assert_eq!(write(&wal, a, &["a1", "a2", "a3"]).await, 3);
    assert_eq!(write(&wal, b, &["b1"]).await, 4);
    assert_eq!(write(&wal, other, &["o1", "o2"]).await, 2);
    assert_eq!(write(&wal, a, &["a4"]).await, 5);
    assert_eq!(wal.sequence_num(a).await.unwrap(), 5);
    assert_eq!(wal.sequence_num(b).await.unwrap(), 4);
    assert_eq!(wal.sequence_num(other).await.unwrap(), 2);
    assert_eq!(wal.sequence_num(WalLocation::new(1, 3)).await.unwrap(), 0);
    assert_eq!(wal.sequence_num(WalLocation::new(3, 1)).await.unwrap(), 0);
    wal.close_gracefully().await.unwrap();

    // After a restart the numbers go on.
    let wal = backend.open().await;
    assert_eq!(wal.sequence_num(a).await.unwrap(), 5);
    assert_eq!(wal.sequence_num(b).await.unwrap(), 4);
    assert_eq!(write(&wal, b, &["b2", "b3"]).await, 7);
    // Delete everything of region 1, then drop without closing.
    wal.mark_delete_entries_up_to(a, u64::MAX).await.unwrap();
    wal.mark_delete_entries_up_to(b, 7).await.unwrap();
    assert!(read(&wal, a).await.is_empty());
    assert!(read(&wal, b).await.is_empty());
    assert_eq!(wal.sequence_num(a).await.unwrap(), 5);
    assert_eq!(wal.sequence_num(b).await.unwrap(), 7);
    drop(wal);

    // Neither the deletes nor the restart lower a table's number or let
    // the region reuse one.
    let wal = backend.open().await;
    assert_eq!(wal.sequence_num(a).await.unwrap(), 5);
    assert_eq!(wal.sequence_num(b).await.unwrap(), 7);
    assert!(read(&wal, a).await.is_empty());
    assert_eq!(write(&wal, WalLocation::new(1, 3), &["c1"]).await, 8);
    assert_eq!(write(&wal, a, &["a5", "a6"]).await, 10);
    assert_eq!(read(&wal, a).await, [9, 10]);
    assert_eq!(write(&wal, other, &["o3"]).await, 3);
    wal.close_gracefully().await.unwrap();
}

/// See [`conformance_tests!`].
pub async fn deletes_are_durable_and_trim_inside_batches(backend: &impl Backend) {
    let (t, u) = (WalLocation::new(4, 1), WalLocation::new(4, 2));
    let wal = backend.open().await;
    assert_eq!(write(&wal, t, &["1", "2", "3", "4", "5"]).await, 5);
    assert_eq!(write(&wal, u, &["6"]).await, 6);
    assert_eq!(write(&wal, t, &["7", "8", "9", "10", "11"]).await, 11);
    // Up to 8: the first batch wholly, the second in part.
    wal.mark_delete_entries_up_to(t, 8).await.unwrap();
    assert_eq!(read(&wal, t).await, [9, 10, 11]);
    for batch_size in 1..=4 {
        let got: Vec<_> = read_entries(
            &wal,
            t,
            ReadBoundary::Included(2),
            ReadBoundary::Max,
            batch_size,
        )
        .await
        .into_iter()
        .map(|(table, seq, payload)| (table, seq, payload.parse::<u64>().unwrap()))
        .collect();
        assert_eq!(got, [(1, 9, 9), (1, 10, 10), (1, 11, 11)]);
    }
    let scanned: Vec<(u64, u64)> = scan(&wal, 4, 2)
        .await
        .into_iter()
        .map(|e| (e.0, e.1))
        .collect();
    assert_eq!(scanned, [(2, 6), (1, 9), (1, 10), (1, 11)]);
    // A mark below the current one changes nothing.
    wal.mark_delete_entries_up_to(t, 3).await.unwrap();
    assert_eq!(read(&wal, t).await, [9, 10, 11]);
    wal.close_gracefully().await.unwrap();

    let wal = backend.open().await;
    assert_eq!(read(&wal, t).await, [9, 10, 11]);
    assert_eq!(read(&wal, u).await, [6]);
    // Past the end deletes all of the table, but not what is written next.
    wal.mark_delete_entries_up_to(t, u64::MAX).await.unwrap();
    assert!(read(&wal, t).await.is_empty());
    assert_eq!(write(&wal, t, &["12"]).await, 12);
    assert_eq!(read(&wal, t).await, [12]);
    let scanned: Vec<(u64, u64)> = scan(&wal, 4, 500)
        .await
        .into_iter()
        .map(|e| (e.0, e.1))
        .collect();
    assert_eq!(scanned, [(2, 6), (1, 12)]);
    drop(wal);

    let wal = backend.open().await;
    assert_eq!(read(&wal, t).await, [12]);
    assert_eq!(wal.sequence_num(t).await.unwrap(), 12);
    wal.close_gracefully().await.unwrap();
}

/// See [`conformance_tests!`].
pub async fn concurrent_writers_then_scan_in_order(backend: &impl Backend) {
    let wal = Arc::new(backend.open().await);
    let mut tasks = Vec::new();
    for writer in 0..10u64 {
        let wal = Arc::clone(&wal);
        tasks.push(tokio::spawn(async move {
            let location = WalLocation::new(writer % 3, writer);
            let mut last = 0;
            for i in 0..20 {
                let entries = [format!("w{writer}-{i}-a"), format!("w{writer}-{i}-b")];
                let refs: Vec<&str> = entries.iter().map(String::as_str).collect();
                let seq = write(&*wal, location, &refs).await;
                assert!(seq > last + 1, "{seq} after {last}");
                last = seq;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let wal = Arc::into_inner(wal).expect("the writers are done");
    wal.close_gracefully().await.unwrap();

    let wal = backend.open().await;
    for region in 0..3u64 {
        let scanned = scan(&wal, region, 33).await;
        let writers = (0..10).filter(|w| w % 3 == region).count();
        assert_eq!(scanned.len(), writers * 20 * 2);
        let sequences: Vec<u64> = scanned.iter().map(|e| e.1).collect();
        assert_eq!(sequences, (1..=scanned.len() as u64).collect::<Vec<_>>());
        for pair in scanned.chunks(2) {
            // A batch's two entries are adjacent and belong together.
            let (table, _, first) = &pair[0];
            assert!(first.starts_with(&format!("w{table}-")), "{first}");
            assert_eq!(pair[1].2, format!("{}b", &first[..first.len() - 1]));
        }
    }
    wal.close_gracefully().await.unwrap();
}

/// See [`conformance_tests!`].
pub async fn close_region_reopens_on_next_use(backend: &impl Backend) {
    let wal = backend.open().await;
    let table = WalLocation::new(7, 1);
    assert_eq!(write(&wal, table, &["a", "b"]).await, 2);
    wal.close_region(7).await.unwrap();
    // Closing a region never opened is fine.
    wal.close_region(8).await.unwrap();
    assert_eq!(read(&wal, table).await, [1, 2]);
    wal.close_region(7).await.unwrap();
    assert_eq!(write(&wal, table, &["c"]).await, 3);
    wal.close_region(7).await.unwrap();
    assert_eq!(wal.sequence_num(table).await.unwrap(), 3);
    wal.close_gracefully().await.unwrap();
}

/// See [`conformance_tests!`].
pub async fn a_closed_wal_refuses_every_call(backend: &impl Backend) {
    let wal = backend.open().await;
    let table = WalLocation::new(5, 1);
    write(&wal, table, &["a", "b", "c"]).await;
    wal.close_gracefully().await.unwrap();
    let mut batch = LogWriteBatch::new(table);
    batch.push(b"late".to_vec());
    let err = wal
        .write(&WriteContext::default(), &batch)
        .await
        .unwrap_err();
    assert!(err.is_closed(), "{err}");
    assert!(wal.sequence_num(table).await.unwrap_err().is_closed());
    assert!(
        wal.mark_delete_entries_up_to(table, 1)
            .await
            .unwrap_err()
            .is_closed()
    );
    assert!(wal.close_region(5).await.unwrap_err().is_closed());
    let req = ReadRequest {
        location: table,
        start: ReadBoundary::Min,
        end: ReadBoundary::Excluded(0),
    };
    let err = wal
        .read_batch(&ReadContext::default(), &req)
        .await
        .unwrap_err();
    assert!(err.is_closed(), "{err}");
    assert!(
        wal.scan(&ReadContext::default(), &ScanRequest { region_id: 5 })
            .await
            .unwrap_err()
            .is_closed()
    );
    assert!(wal.close_gracefully().await.unwrap_err().is_closed());
    drop(wal);

    let wal = backend.open().await;
    assert_eq!(wal.sequence_num(table).await.unwrap(), 3);
    assert_eq!(read(&wal, table).await, [1, 2, 3]);
    wal.close_gracefully().await.unwrap();
}

/// See [`conformance_tests!`].
pub async fn an_empty_batch_is_refused_and_uses_no_number(backend: &impl Backend) {
    let wal = backend.open().await;
    let table = WalLocation::new(9, 9);
    let err = wal
        .write(&WriteContext::default(), &LogWriteBatch::new(table))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("empty batch"), "{err}");
    assert_eq!(write(&wal, table, &["ok"]).await, 1);
    wal.close_gracefully().await.unwrap();
}
