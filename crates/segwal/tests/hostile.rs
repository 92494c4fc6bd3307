//! Hostile arguments at every entry point of the async API: read
//! boundaries at the limits of the sequence space, ids 0 and `u64::MAX`,
//! empty and huge batches, contexts with zero and endless timeouts and
//! batch sizes, deletes past the end, calls after close, and configurations
//! and data dirs that cannot work. Each call must give a clear error naming
//! its input, or a defined result; never panic, never lose or alter an
//! entry.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use segwal::{
    Error, LocalWal, LocalWalConfig, LogEntry, LogWriteBatch, MAX_SEQUENCE_NUMBER,
    MIN_SEQUENCE_NUMBER, ReadBoundary, ReadContext, ReadRequest, ScanRequest, WalLocation,
    WalManager, WriteContext,
};
use segwal_conformance::limits::{self, drain};
use segwal_manager::META_FILE;

const MAX: u64 = u64::MAX;

fn config(dir: &Path) -> LocalWalConfig {
    LocalWalConfig::new(dir).segment_size(4096)
}

async fn write(wal: &LocalWal, location: WalLocation, payloads: &[&[u8]]) -> u64 {
    let mut batch = LogWriteBatch::new(location);
    for p in payloads {
        batch.push(p.to_vec());
    }
    wal.write(&WriteContext::default(), &batch).await.unwrap()
}

async fn read(wal: &LocalWal, request: ReadRequest) -> Vec<LogEntry> {
    let iter = wal
        .read_batch(&ReadContext::default(), &request)
        .await
        .unwrap();
    drain(iter, 500).await
}

/// CRC-32 (IEEE 802.3, as `crc32fast` computes it), bit by bit: the
/// checksum of the META log's header and records.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Puts region `region` at the top of the sequence space: a META log in a
/// new data dir holding one `SequenceFloor` entry (docs/FORMAT.md, "Meta
/// log"), as a data dir whose log had used that many of the region's
/// numbers would. Writing 2^64 entries is the only other way there.
fn set_sequence_floor(dir: &Path, region: u64, next_sequence: u64) {
    let mut meta = b"\x89SEGMLG\n\x03\0\0\0".to_vec();
    let header_crc = crc32(&meta).to_le_bytes();
    assert_eq!(header_crc, [0xbb, 0xcf, 0xec, 0xde], "the golden header");
    meta.extend(header_crc);
    let mut record = 1u32.to_le_bytes().to_vec(); // one entry
    record.push(3); // SequenceFloor
    record.extend([0; 7]); // reserved
    record.extend(region.to_le_bytes()); // a: the region
    record.extend(0u64.to_le_bytes()); // b: unused
    record.extend(next_sequence.to_le_bytes()); // c: the floor
    meta.extend(crc32(&record).to_le_bytes());
    meta.extend(record);
    std::fs::write(dir.join(META_FILE), meta).unwrap();
}

/// The names of the files in data dir `dir`, but segments being prepared
/// in the background (`.spare`), which come and go.
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| !name.ends_with(".spare"))
        .collect();
    names.sort();
    names
}

/// Proves that every pair of read boundaries built from 0, 1, the numbers
/// around a table's entries, `u64::MAX - 1` and `u64::MAX` (including the
/// empty and inverted ones) yields exactly the entries the SPEC's
/// definition admits, unaltered, for a table at the bottom and one at the
/// very top of the sequence space.
#[tokio::test]
async fn every_read_boundary_pair_at_the_limits() {
    let dir = tempfile::tempdir().unwrap();
    set_sequence_floor(dir.path(), MAX, MAX - 4);
    let wal = LocalWal::open(config(dir.path())).await.unwrap();
    limits::every_read_boundary_pair_at_the_limits(&wal).await;
}

/// Proves that the boundary conversions are total at the limits: they
/// never overflow, and say "nothing" exactly where no number is admitted.
#[test]
fn boundary_conversions_at_the_limits() {
    use ReadBoundary::{Excluded, Included, Max, Min};
    assert_eq!(Min.as_start_sequence_number(), Some(MIN_SEQUENCE_NUMBER));
    assert_eq!(Max.as_start_sequence_number(), Some(MAX_SEQUENCE_NUMBER));
    assert_eq!(Min.as_end_sequence_number(), Some(0));
    assert_eq!(Max.as_end_sequence_number(), Some(MAX));
    assert_eq!(Excluded(MAX).as_start_sequence_number(), None);
    assert_eq!(Excluded(MAX - 1).as_start_sequence_number(), Some(MAX));
    assert_eq!(Excluded(0).as_end_sequence_number(), None);
    assert_eq!(Excluded(1).as_end_sequence_number(), Some(0));
    assert_eq!(Included(MAX).as_start_sequence_number(), Some(MAX));
    assert_eq!(Included(0).as_end_sequence_number(), Some(0));
    let range = |start, end| {
        ReadRequest {
            location: WalLocation::new(MAX, MAX),
            start,
            end,
        }
        .sequence_range()
    };
    assert_eq!(range(Min, Max), Some((0, MAX)));
    assert_eq!(range(Max, Max), Some((MAX, MAX)));
    assert_eq!(range(Max, Min), None);
    assert_eq!(range(Excluded(MAX), Max), None);
    assert_eq!(range(Min, Excluded(0)), None);
    assert_eq!(range(Included(5), Excluded(5)), None);
    assert_eq!(range(Excluded(4), Excluded(6)), Some((5, 5)));
    assert_eq!(
        range(Included(MAX - 1), Excluded(MAX)),
        Some((MAX - 1, MAX - 1))
    );
}

/// Proves that the batches the WAL cannot take get an error naming the
/// region, table and sizes and use no sequence number (empty, an entry one
/// byte over the default 16 MiB, a batch past the last number), and that a
/// batch of 50 000 empty entries is written and read back whole, in one
/// `next_batch` when the context allows it.
#[tokio::test]
async fn batches_at_the_extremes() {
    let dir = tempfile::tempdir().unwrap();
    set_sequence_floor(dir.path(), 9, MAX - 1);
    let wal = LocalWal::open(config(dir.path())).await.unwrap();
    let location = WalLocation::new(MAX, 0);
    let ctx = WriteContext::default();

    let err = wal
        .write(&ctx, &LogWriteBatch::new(location))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("region {MAX} table 0: cannot write an empty batch")
    );
    let mut big = LogWriteBatch::new(location);
    big.push(Bytes::new());
    // Never written to, so it costs no memory.
    big.push(vec![0u8; (16 << 20) + 1]);
    let err = wal.write(&ctx, &big).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "region {MAX} table 0: entry 1 is 16777217 bytes, more than the maximum of 16777216"
        )
    );

    let mut empties = LogWriteBatch::new(location);
    for _ in 0..50_000 {
        empties.push(Bytes::new());
    }
    assert_eq!(wal.write(&ctx, &empties).await.unwrap(), 50_000, "from 1");
    let whole = ReadContext {
        batch_size: usize::MAX,
        timeout: Duration::MAX,
    };
    let request = ReadRequest {
        location,
        start: ReadBoundary::Min,
        end: ReadBoundary::Max,
    };
    let mut iter = wal.read_batch(&whole, &request).await.unwrap();
    let batch = iter.next_batch().await.unwrap().unwrap();
    assert_eq!(batch.len(), 50_000);
    for (i, entry) in batch.iter().enumerate() {
        assert_eq!((entry.sequence, entry.payload.len()), (i as u64 + 1, 0));
    }
    assert!(iter.next_batch().await.unwrap().is_none());

    // Region 9 has one number left.
    let last = WalLocation::new(9, 1);
    let mut two = LogWriteBatch::new(last);
    two.push(b"a".to_vec());
    two.push(b"b".to_vec());
    let err = wal.write(&ctx, &two).await.unwrap_err();
    assert_eq!(err.to_string(), "region 9: sequence numbers exhausted");
    assert_eq!(write(&wal, last, &[b"last"]).await, MAX - 1);
    let mut one = LogWriteBatch::new(last);
    one.push(b"more".to_vec());
    let err = wal.write(&ctx, &one).await.unwrap_err();
    assert_eq!(err.to_string(), "region 9: sequence numbers exhausted");
    assert_eq!(wal.sequence_num(last).await.unwrap(), MAX - 1);
}

/// Proves that contexts at their extremes have their documented effect: a
/// batch size of 0 is taken as 1, `usize::MAX` and `Duration::MAX` work (no
/// overflow), and a zero timeout either succeeds or reports a timeout,
/// after which a write is whole or absent and an iterator refuses further
/// use with "abandoned".
#[tokio::test]
async fn contexts_at_the_extremes() {
    let dir = tempfile::tempdir().unwrap();
    let wal = LocalWal::open(config(dir.path())).await.unwrap();
    let location = WalLocation::new(0, 0);
    let endless = WriteContext {
        timeout: Duration::MAX,
    };
    for i in 0..5u8 {
        let mut batch = LogWriteBatch::new(location);
        batch.push(vec![i; 3]);
        assert_eq!(wal.write(&endless, &batch).await.unwrap(), u64::from(i) + 1);
    }
    let request = ReadRequest {
        location,
        start: ReadBoundary::Min,
        end: ReadBoundary::Max,
    };
    let one_by_one = ReadContext {
        batch_size: 0,
        ..ReadContext::default()
    };
    let got = drain(wal.read_batch(&one_by_one, &request).await.unwrap(), 1).await;
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

    // A zero timeout: the outcome depends on timing, each outcome is
    // checked.
    let mut batch = LogWriteBatch::new(location);
    batch.push(b"zero".to_vec());
    let zero = WriteContext {
        timeout: Duration::ZERO,
    };
    match wal.write(&zero, &batch).await {
        Ok(sequence) => assert_eq!(sequence, 6),
        Err(err) => assert!(
            matches!(err, Error::Timeout { timeout, .. } if timeout.is_zero()),
            "{err}"
        ),
    }
    let hurried = ReadContext {
        timeout: Duration::ZERO,
        batch_size: 1,
    };
    match wal.read_batch(&hurried, &request).await {
        Ok(mut iter) => {
            let mut sequences = Vec::new();
            loop {
                match iter.next_batch().await {
                    Ok(Some(batch)) => sequences.extend(batch.iter().map(|e| e.sequence)),
                    Ok(None) => break,
                    Err(err) => {
                        assert!(matches!(err, Error::Timeout { .. }), "{err}");
                        let again = iter.next_batch().await.unwrap_err();
                        assert!(matches!(again, Error::IteratorAbandoned), "{again}");
                        break;
                    }
                }
            }
            let prefix: Vec<u64> = (1..=sequences.len() as u64).collect();
            assert_eq!(sequences, prefix, "entries in order, none skipped");
        }
        Err(err) => assert!(matches!(err, Error::Timeout { .. }), "{err}"),
    }
    wal.close_gracefully().await.unwrap();
    drop(wal);

    let wal = LocalWal::open(config(dir.path())).await.unwrap();
    let got = read(&wal, request).await;
    match got.len() {
        5 => {}
        6 => assert_eq!((got[5].sequence, &got[5].payload[..]), (6, &b"zero"[..])),
        n => panic!("{n} entries"),
    }
    let next = write(&wal, location, &[b"next"]).await;
    assert!(next > got.len() as u64, "{next}");
}

/// Proves that deletes and reads at the id and sequence limits have their
/// defined effect through the async API: deleting up to 0 changes nothing,
/// up to `u64::MAX` deletes the table's entries and not later ones, and a
/// table or region never written reads as empty with sequence number 0,
/// costing no file and no META record.
#[tokio::test]
async fn deletes_and_unknown_locations_at_the_limits() {
    let dir = tempfile::tempdir().unwrap();
    let wal = LocalWal::open(config(dir.path())).await.unwrap();
    let (a, b) = (WalLocation::new(MAX, MAX), WalLocation::new(MAX, 0));
    write(&wal, a, &[b"1", b"2"]).await;
    write(&wal, b, &[b"3"]).await;
    wal.mark_delete_entries_up_to(a, MIN_SEQUENCE_NUMBER)
        .await
        .unwrap();
    let all = |location| ReadRequest {
        location,
        start: ReadBoundary::Min,
        end: ReadBoundary::Max,
    };
    assert_eq!(read(&wal, all(a)).await.len(), 2);
    wal.mark_delete_entries_up_to(a, MAX_SEQUENCE_NUMBER)
        .await
        .unwrap();
    assert!(read(&wal, all(a)).await.is_empty());
    assert_eq!(read(&wal, all(b)).await.len(), 1);
    assert_eq!(wal.sequence_num(a).await.unwrap(), 2);
    assert_eq!(write(&wal, a, &[b"4"]).await, 4);
    assert_eq!(read(&wal, all(a)).await[0].payload, &b"4"[..]);

    let unknown = WalLocation::new(0, 0);
    let before = (
        files(dir.path()),
        std::fs::read(dir.path().join(META_FILE)).unwrap(),
    );
    assert_eq!(wal.sequence_num(unknown).await.unwrap(), 0);
    assert!(read(&wal, all(unknown)).await.is_empty());
    wal.mark_delete_entries_up_to(unknown, MAX).await.unwrap();
    wal.close_region(0).await.unwrap();
    let scan = wal
        .scan(&ReadContext::default(), &ScanRequest { region_id: 0 })
        .await
        .unwrap();
    assert!(drain(scan, 500).await.is_empty());
    let after = (
        files(dir.path()),
        std::fs::read(dir.path().join(META_FILE)).unwrap(),
    );
    assert_eq!(before, after);
}

/// Proves that after `close_gracefully` every call that reaches the WAL
/// fails with the "closed" error, whatever its arguments, and statistics
/// are still available.
#[tokio::test]
async fn every_call_after_close_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let wal = LocalWal::open(config(dir.path())).await.unwrap();
    let location = WalLocation::new(MAX, MAX);
    write(&wal, location, &[b"x"]).await;
    wal.close_gracefully().await.unwrap();
    let mut batch = LogWriteBatch::new(location);
    batch.push(b"y".to_vec());
    let ctx = ReadContext::default();
    let request = ReadRequest {
        location,
        start: ReadBoundary::Max,
        end: ReadBoundary::Min,
    };
    let errors = [
        wal.write(&WriteContext::default(), &batch)
            .await
            .unwrap_err(),
        wal.sequence_num(location).await.unwrap_err(),
        wal.mark_delete_entries_up_to(location, MAX)
            .await
            .unwrap_err(),
        wal.close_region(MAX).await.unwrap_err(),
        wal.read_batch(&ctx, &request).await.unwrap_err(),
        wal.scan(&ctx, &ScanRequest { region_id: MAX })
            .await
            .unwrap_err(),
        wal.close_gracefully().await.unwrap_err(),
    ];
    for err in errors {
        assert!(err.is_closed(), "{err}");
        assert_eq!(err.to_string(), "the WAL is closed");
    }
    let statistics = wal.get_statistics().await.unwrap();
    assert!(statistics.contains("batches written: 1"), "{statistics}");
}

/// Proves that configurations and data dirs that cannot work are refused
/// by `LocalWal::open` with an error naming the value or the path, before
/// anything is created: segment sizes 0, 1 and `u64::MAX`, cache size 0,
/// maximum entry size 0, an empty path, a path below a file, and a data dir
/// another instance holds. A missing parent is created.
#[tokio::test]
async fn open_refuses_what_cannot_work() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cases = [
        (
            LocalWalConfig::new(&data).segment_size(0),
            "segment size 0 bytes",
        ),
        (
            LocalWalConfig::new(&data).segment_size(1),
            "segment size 1 bytes",
        ),
        (
            LocalWalConfig::new(&data).segment_size(MAX),
            "segment size 18446744073709551615 bytes",
        ),
        (LocalWalConfig::new(&data).cache_size(0), "cache size"),
        (
            LocalWalConfig::new(&data).max_entry_size(0),
            "maximum entry size 0 bytes",
        ),
        (LocalWalConfig::new(""), "data dir path is empty"),
    ];
    for (config, message) in cases {
        let err = LocalWal::open(config).await.unwrap_err();
        assert!(
            err.to_string().starts_with("invalid configuration: ")
                && err.to_string().contains(message),
            "{message}: {err}"
        );
    }
    assert!(!data.exists());

    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let below = file.join("wal");
    let err = LocalWal::open(LocalWalConfig::new(&below))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(&below.display().to_string()),
        "{err}"
    );

    let nested = data.join("a").join("b");
    let wal = LocalWal::open(config(&nested)).await.unwrap();
    let err = LocalWal::open(config(&nested)).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("in use by another segwal instance"),
        "{err}"
    );
    assert_eq!(write(&wal, WalLocation::new(1, 1), &[b"x"]).await, 1);
}
