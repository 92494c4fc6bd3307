//! `segwal::horaedb`: the payload layer, `next_log_entries`, the opener
//! and HoraeDB's defaults, each against a real `LocalWal`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::BufMut;
use segwal::horaedb::{
    Config, LocalStorageWalsOpener, LogBatchEncoder, LogEntry, LogWriteBatch, LogWriteEntry,
    MemoryPayload, MemoryPayloadDecoder, Payload, ReadBoundary, ReadContext, ReadRequest,
    ScanRequest, StorageConfig, WalLocation, WalManagerRef, WalRuntimes, WalsOpener, WriteContext,
};
use segwal::{LocalWal, LocalWalConfig};

async fn open(dir: &std::path::Path) -> WalManagerRef {
    Arc::new(LocalWal::open(LocalWalConfig::new(dir)).await.unwrap())
}

/// An engine's own runtime type, as HoraeDB's `runtime::Runtime` is.
#[derive(Debug)]
struct EngineRuntime {
    _name: &'static str,
}

/// The runtimes as an engine builds them: its `Arc<Runtime>`s go in as
/// they are.
fn runtimes() -> WalRuntimes {
    let runtime = Arc::new(EngineRuntime { _name: "engine" });
    WalRuntimes {
        read_runtime: runtime.clone(),
        write_runtime: runtime.clone(),
        default_runtime: runtime,
    }
}

/// Writes `values` for `location` through the encoder; returns the last
/// sequence number.
async fn write_values(wal: &WalManagerRef, location: WalLocation, values: &[u32]) -> u64 {
    let batch = LogBatchEncoder::create(location)
        .encode_batch(values.iter().map(MemoryPayload::from))
        .unwrap();
    wal.write(&WriteContext::default(), &batch).await.unwrap()
}

fn whole_table(location: WalLocation) -> ReadRequest {
    ReadRequest {
        location,
        start: ReadBoundary::Min,
        end: ReadBoundary::Max,
    }
}

/// Proves the encoder writes HoraeDB's value layout, byte for byte: a
/// version byte 0, then the payload's own encoding (a big-endian `u32`).
#[tokio::test]
async fn the_encoder_writes_horaedbs_value_layout() {
    let location = WalLocation::new(3, 4);
    let batch = LogBatchEncoder::create(location)
        .encode(&MemoryPayload { val: 0x0102_0304 })
        .unwrap();
    assert_eq!(batch.location, location);
    assert_eq!(batch.len(), 1);
    assert_eq!(&batch.entries[0].payload[..], [0, 1, 2, 3, 4]);

    let batch = LogBatchEncoder::create(location)
        .encode_batch([7u32, 8].iter().map(MemoryPayload::from))
        .unwrap();
    let bytes: Vec<&[u8]> = batch.entries.iter().map(|e| &e.payload[..]).collect();
    assert_eq!(bytes, [&[0, 0, 0, 0, 7][..], &[0, 0, 0, 0, 8][..]]);
}

/// A payload whose encoding always fails.
#[derive(Debug)]
struct Unencodable;

impl Payload for Unencodable {
    type Error = std::io::Error;

    fn encode_size(&self) -> usize {
        1
    }

    fn encode_to<B: BufMut>(&self, _buf: &mut B) -> Result<(), std::io::Error> {
        Err(std::io::Error::other("no encoding for this"))
    }
}

/// Proves that a payload's encoding error reaches the caller naming the
/// region and table of the batch.
#[test]
fn an_encoding_error_names_the_region_and_table() {
    let err = LogBatchEncoder::create(WalLocation::new(3, 4))
        .encode(&Unencodable)
        .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("region 3 table 4"), "{message}");
    assert!(message.contains("no encoding for this"), "{message}");
}

/// Proves that `next_log_entries` returns only the entries the filter
/// accepts, decoded, in order, never more than the batch size per call,
/// and that what it read past a full batch is handed out next (here by
/// `next_batch`), so no entry is lost or repeated.
#[tokio::test]
async fn next_log_entries_filters_decodes_and_keeps_the_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path()).await;
    let (one, two) = (WalLocation::new(1, 1), WalLocation::new(1, 2));
    // Round r: table 1 gets sequence 4r+1, table 2 gets 4r+2..=4r+4.
    for round in 0..5u32 {
        write_values(&wal, one, &[round]).await;
        let base = round * 100;
        write_values(&wal, two, &[base, base + 1, base + 2]).await;
    }
    let ctx = ReadContext {
        batch_size: 4,
        ..ReadContext::default()
    };
    let scan = ScanRequest { region_id: 1 };

    // Table 2 alone, by the filter. Each read of 4 raw entries holds 3 of
    // table 2, so a full batch ends inside the second read.
    let mut iter = wal.scan(&ctx, &scan).await.unwrap();
    let (mut decoded, mut buffer) = (Vec::new(), VecDeque::new());
    loop {
        buffer = iter
            .next_log_entries(MemoryPayloadDecoder, |table| table == 2, buffer)
            .await
            .unwrap();
        if buffer.is_empty() {
            break;
        }
        assert!(buffer.len() <= 4, "{}", buffer.len());
        decoded.extend(buffer.drain(..).map(|e: LogEntry<MemoryPayload>| {
            assert_eq!(e.table_id, 2);
            (e.sequence, e.payload.val)
        }));
    }
    let want: Vec<(u64, u32)> = (0..5u64)
        .flat_map(|r| (0..3u64).map(move |i| (4 * r + 2 + i, (r * 100 + i) as u32)))
        .collect();
    assert_eq!(decoded, want);

    // One decoded batch of table 2 (sequences 2, 3, 4, 6), then the raw
    // rest from sequence 7 on: every sequence after the first batch once.
    let mut iter = wal.scan(&ctx, &scan).await.unwrap();
    let first = iter
        .next_log_entries(MemoryPayloadDecoder, |table| table == 2, VecDeque::new())
        .await
        .unwrap();
    let mut sequences: Vec<u64> = first.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, [2, 3, 4, 6]);
    while let Some(batch) = iter.next_batch().await.unwrap() {
        assert!(batch.len() <= 4);
        for entry in batch {
            assert_eq!(entry.payload[0], 0, "raw entries keep their header");
            sequences.push(entry.sequence);
        }
    }
    let want: Vec<u64> = [2, 3, 4, 6].into_iter().chain(7..=20).collect();
    assert_eq!(sequences, want);
}

/// Proves that an entry not written through the encoder (no value header,
/// or an unknown version) is refused by `next_log_entries` with an error
/// naming its table and sequence number, that a decoder's error names
/// them too, and that the iteration is then given up rather than resumed
/// past the bad entry.
#[tokio::test]
async fn entries_without_the_value_header_are_refused_by_table_and_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path()).await;
    let location = WalLocation::new(2, 5);
    let mut batch = LogWriteBatch::with_capacity(location, 3);
    batch.push(LogWriteEntry::from(vec![7u8, 0, 0, 0, 1]));
    batch.push(Vec::new());
    batch.push(vec![0u8, 1, 2]);
    wal.write(&WriteContext::default(), &batch).await.unwrap();

    let one_at_a_time = ReadContext {
        batch_size: 1,
        ..ReadContext::default()
    };
    let mut messages = Vec::new();
    for seq in 1..=3 {
        let request = ReadRequest {
            location,
            start: ReadBoundary::Included(seq),
            end: ReadBoundary::Included(seq),
        };
        let mut iter = wal.read_batch(&one_at_a_time, &request).await.unwrap();
        let err = iter
            .next_log_entries(MemoryPayloadDecoder, |_| true, VecDeque::new())
            .await
            .unwrap_err();
        messages.push(err.to_string());
        // The iteration is given up, not resumed past the bad entry.
        let again = iter
            .next_log_entries(MemoryPayloadDecoder, |_| true, VecDeque::new())
            .await
            .unwrap_err();
        assert!(matches!(again, segwal::Error::IteratorAbandoned), "{again}");
    }
    assert!(
        messages[0].contains("table 5 at sequence 1"),
        "{}",
        messages[0]
    );
    assert!(messages[0].contains("version 7"), "{}", messages[0]);
    assert!(
        messages[1].contains("table 5 at sequence 2"),
        "{}",
        messages[1]
    );
    assert!(messages[1].contains("an empty entry"), "{}", messages[1]);
    assert!(
        messages[2].contains("table 5 at sequence 3"),
        "{}",
        messages[2]
    );
    assert!(
        messages[2].contains("needs 4 bytes, the buffer has 2"),
        "{}",
        messages[2]
    );
}

/// Proves that the request, context and batch types behave as HoraeDB's:
/// default timeouts of 1 s (write) and 5 s (read), a default read request
/// that reads nothing, a default scan of region 0, and a batch that is
/// cleared for reuse.
#[tokio::test]
async fn defaults_and_batches_behave_as_in_horaedb() {
    assert_eq!(WriteContext::default().timeout, Duration::from_secs(1));
    assert_eq!(ReadContext::default().timeout, Duration::from_secs(5));
    assert_eq!(ReadContext::default().batch_size, 500);
    assert_eq!(ScanRequest::default().region_id, 0);

    let dir = tempfile::tempdir().unwrap();
    let wal = open(dir.path()).await;
    let mut batch = LogWriteBatch::with_capacity(WalLocation::default(), 4);
    batch.push(LogWriteEntry::from(b"horae".to_vec()));
    assert_eq!(
        wal.write(&WriteContext::default(), &batch).await.unwrap(),
        1
    );
    let ctx = ReadContext::default();
    let mut nothing = wal.read_batch(&ctx, &ReadRequest::default()).await.unwrap();
    assert_eq!(nothing.next_batch().await.unwrap(), None);
    let all = ReadRequest {
        end: ReadBoundary::Max,
        ..ReadRequest::default()
    };
    let mut iter = wal.read_batch(&ctx, &all).await.unwrap();
    assert_eq!(iter.next_batch().await.unwrap().unwrap().len(), 1);

    batch.clear();
    assert!(batch.is_empty());
    assert!(batch.entries.capacity() >= 4);
    assert!(wal.write(&WriteContext::default(), &batch).await.is_err());
}

/// Proves the opener builds both WALs from one TOML config (which also
/// writes back out as TOML that reads the same), in
/// `<data_dir>/wal` and `<data_dir>/manifest`, each its own log (both
/// number from 1), with the configured settings, and that what they hold
/// survives closing and opening again.
#[tokio::test]
async fn the_opener_builds_data_and_manifest_wals_from_one_config() {
    let dir = tempfile::tempdir().unwrap();
    let config: Config = toml::from_str(&format!(
        "type = \"Local\"\ndata_dir = {:?}\nsegment_size = \"1MiB\"\ncache_size = 3\n",
        dir.path().display().to_string()
    ))
    .unwrap();
    let StorageConfig::Local(local) = &config.storage else {
        panic!("{config:?}")
    };
    assert_eq!(local.manager_config().segment_size_bytes, 1 << 20);
    assert_eq!(local.manager_config().cache_size, 3);
    // An engine writes its whole configuration back out (HoraeDB's set-up
    // does): it reads back the same.
    let text = toml::to_string(&config).unwrap();
    let again: Config = toml::from_str(&text).unwrap();
    let StorageConfig::Local(again_local) = &again.storage else {
        panic!("{text}")
    };
    assert_eq!(again_local, local, "{text}");
    assert!(text.contains("type = \"Local\""), "{text}");

    let location = WalLocation::new(1, 1);
    let wals = LocalStorageWalsOpener
        .open_wals(&config, runtimes())
        .await
        .unwrap();
    assert_eq!(write_values(&wals.data_wal, location, &[1, 2]).await, 2);
    assert_eq!(write_values(&wals.manifest_wal, location, &[9]).await, 1);
    wals.data_wal.close_gracefully().await.unwrap();
    wals.manifest_wal.close_gracefully().await.unwrap();
    drop(wals);
    for sub in ["wal", "manifest"] {
        let segments = std::fs::read_dir(dir.path().join(sub))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".seg")
            })
            .count();
        assert!(segments > 0, "no segment in {sub}");
    }

    let wals = LocalStorageWalsOpener
        .open_wals(&config, runtimes())
        .await
        .unwrap();
    for (wal, want) in [(&wals.data_wal, vec![1, 2]), (&wals.manifest_wal, vec![9])] {
        let mut iter = wal
            .read_batch(&ReadContext::default(), &whole_table(location))
            .await
            .unwrap();
        let entries = iter
            .next_log_entries(MemoryPayloadDecoder, |_| true, VecDeque::new())
            .await
            .unwrap();
        let values: Vec<u32> = entries.iter().map(|e| e.payload.val).collect();
        assert_eq!(values, want);
    }
}

/// Proves the opener refuses HoraeDB's `disable_data` (segwal has no WAL
/// that drops writes) naming the key, and that a backend segwal does not
/// have, or an unknown key, is refused when the config is read, naming
/// it; and that the default config is HoraeDB's (local, `/tmp/horaedb`).
#[tokio::test]
async fn the_opener_refuses_what_segwal_does_not_do() {
    let dir = tempfile::tempdir().unwrap();
    let config: Config = toml::from_str(&format!(
        "type = \"Local\"\ndata_dir = {:?}\ndisable_data = true\n",
        dir.path().display().to_string()
    ))
    .unwrap();
    let err = LocalStorageWalsOpener
        .open_wals(&config, runtimes())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("disable_data"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    let err = toml::from_str::<Config>("type = \"RocksDB\"\ndata_dir = \"/x\"\n").unwrap_err();
    assert!(err.to_string().contains("RocksDB"), "{err}");
    let err = toml::from_str::<Config>("type = \"Local\"\ndata_dir = \"/x\"\nsegmentsize = 1\n")
        .unwrap_err();
    assert!(
        err.to_string().contains("unknown field `segmentsize`"),
        "{err}"
    );
    let default = Config::default();
    let StorageConfig::Local(local) = &default.storage else {
        panic!("{default:?}")
    };
    assert_eq!(local.dir(), std::path::Path::new("/tmp/horaedb"));
}
