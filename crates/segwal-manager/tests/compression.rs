//! Compressed records in a data dir: records of every codec side by side,
//! written by opens with different settings, read back through recovery,
//! table reads (a few entries at a time), scans, shared payloads,
//! `close_region` and the rewrite of cold segments; and compressed records
//! damaged on disk, reported with their file and offset, never a panic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use segwal_format::{RecordCodec, SEGMENT_HEADER_LEN, Scanner, SegmentHeader};
use segwal_manager::{Compression, EntryIter, Error, ManagerConfig, SegmentManager, SyncMode};

const SEGMENT: u64 = 64 * 1024;
const REGIONS: u64 = 3;
const TABLES: u64 = 2;

/// What the WAL must hold: per (region, table), its entries in order.
type Model = BTreeMap<(u64, u64), Vec<(u64, Vec<u8>)>>;

fn config(dir: &Path, compression: Compression) -> ManagerConfig {
    ManagerConfig {
        segment_size_bytes: SEGMENT,
        max_dead_bytes: u64::MAX,
        sync_mode: SyncMode::Never,
        compression,
        ..ManagerConfig::new(dir)
    }
}

/// A row as a time-series engine writes it: compressible.
fn row(region: u64, table: u64, i: u64) -> Vec<u8> {
    format!("ts={i},region={region},table={table},host=web-01,usage=42.5;")
        .repeat(8)
        .into_bytes()
}

/// Bytes no codec makes smaller (xorshift), so that compressing opens
/// write uncompressed records too.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Every entry of `iter`, (table, sequence, payload), `per_call` at a time
/// (1 makes every record resume across calls).
fn drain(mut iter: EntryIter, per_call: usize) -> Vec<(u64, u64, Vec<u8>)> {
    let mut out = Vec::new();
    while iter
        .next_batch(per_call, |e| {
            out.push((e.table_id, e.sequence, e.payload.to_vec()))
        })
        .unwrap()
        > 0
    {}
    out
}

/// Writes three batches to every table: two of rows, one of noise.
fn write_round(wal: &SegmentManager, model: &mut Model, round: u64) {
    for region in 0..REGIONS {
        for table in 0..TABLES {
            for batch in 0..3u64 {
                let i = round * 100 + batch * 10;
                let entries: Vec<Vec<u8>> = if batch == 2 {
                    vec![noise(i + region * 7 + table, 300)]
                } else {
                    (i..i + 4).map(|i| row(region, table, i)).collect()
                };
                let last = wal.write(region, table, &entries).unwrap();
                let first = last + 1 - entries.len() as u64;
                let kept = model.entry((region, table)).or_default();
                kept.extend((first..=last).zip(entries));
            }
        }
    }
}

/// Checks every table read (whole, and one entry per call) and every
/// region scan against `model`.
fn check(wal: &SegmentManager, model: &Model) {
    for region in 0..REGIONS {
        let mut expected_scan = Vec::new();
        for table in 0..TABLES {
            let expected: Vec<(u64, u64, Vec<u8>)> = model
                .get(&(region, table))
                .into_iter()
                .flatten()
                .map(|(seq, payload)| (table, *seq, payload.clone()))
                .collect();
            for per_call in [1, 1000] {
                let read = drain(wal.read(region, table, 0, u64::MAX).unwrap(), per_call);
                assert_eq!(read, expected, "region {region} table {table}");
            }
            expected_scan.extend(expected);
        }
        expected_scan.sort_by_key(|(_, seq, _)| *seq);
        assert_eq!(
            drain(wal.scan(region).unwrap(), 5),
            expected_scan,
            "region {region}"
        );
    }
}

/// The segment files of `dir`, in id order.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

/// Every record on disk: (file, offset, codec).
fn records_on_disk(dir: &Path) -> Vec<(PathBuf, u64, RecordCodec)> {
    let mut found = Vec::new();
    for path in segment_files(dir) {
        let bytes = std::fs::read(&path).unwrap();
        let header = SegmentHeader::decode(&bytes).unwrap();
        let base = SEGMENT_HEADER_LEN as u64;
        for record in Scanner::new(&bytes[SEGMENT_HEADER_LEN..], base, &header) {
            found.push((path.clone(), record.offset(), record.codec()));
        }
    }
    found
}

/// Proves that a data dir written by opens with no compression, then lz4,
/// then zstd holds records of all three codecs, and that every one of them
/// reads back unchanged after each reopen (recovery), in table reads that
/// resume inside records, in scans, after `close_region`, and after the
/// rewrite of cold segments (which compresses the copies with the codec
/// of the open that rewrites).
#[test]
fn every_codec_in_one_dir_reads_back_through_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    for (round, codec) in [Compression::None, Compression::Lz4, Compression::Zstd]
        .into_iter()
        .enumerate()
    {
        let wal = SegmentManager::open(config(dir.path(), codec)).unwrap();
        check(&wal, &model);
        write_round(&wal, &mut model, round as u64);
        check(&wal, &model);
        wal.close().unwrap();
    }
    let mut codecs = BTreeMap::new();
    for (_, _, codec) in records_on_disk(dir.path()) {
        *codecs.entry(codec.name()).or_insert(0) += 1;
    }
    assert_eq!(codecs.len(), 3, "{codecs:?}");

    let wal = SegmentManager::open(config(dir.path(), Compression::Zstd)).unwrap();
    check(&wal, &model);
    wal.close_region(1).unwrap();
    check(&wal, &model);

    // Every table but (0, 0) is flushed up to its first half: the sealed
    // segments are then mostly dead, and the rewrite copies what lives.
    for (&(region, table), entries) in model.iter_mut() {
        if (region, table) != (0, 0) {
            let upto = entries[entries.len() / 2].0;
            wal.mark_delete_entries_up_to(region, table, upto).unwrap();
            entries.retain(|(seq, _)| *seq > upto);
        }
    }
    assert!(wal.rewrite_cold_segments(0).unwrap() > 0);
    check(&wal, &model);
    wal.close().unwrap();
    let wal = SegmentManager::open(config(dir.path(), Compression::Lz4)).unwrap();
    check(&wal, &model);
}

/// Proves that entries of a compressed record, handed out as shared
/// payloads, outlive the iterator that decompressed them, and are the
/// bytes written.
#[test]
fn shared_payloads_of_compressed_records_outlive_the_read() {
    let dir = tempfile::tempdir().unwrap();
    let wal = SegmentManager::open(config(dir.path(), Compression::Lz4)).unwrap();
    let rows: Vec<Vec<u8>> = (0..6).map(|i| row(4, 1, i)).collect();
    wal.write(4, 1, &rows).unwrap();
    let mut shared = Vec::new();
    let mut iter = wal.read(4, 1, 0, u64::MAX).unwrap();
    while iter.next_batch_shared(4, |e| shared.push(e)).unwrap() > 0 {}
    drop(iter);
    wal.close().unwrap();
    drop(wal);
    let payloads: Vec<&[u8]> = shared.iter().map(|e| e.payload.as_ref()).collect();
    let expected: Vec<&[u8]> = rows.iter().map(Vec::as_slice).collect();
    assert_eq!(payloads, expected);
    let whole = shared[0].payload.whole();
    assert!(whole.len() > rows[0].len());
    assert!(
        records_on_disk(dir.path())
            .iter()
            .any(|r| r.2 == RecordCodec::Lz4)
    );
}

/// Writes compressible batches to region 0, table 0 with `codec`, closes,
/// and returns the file and offset of the first record, which is
/// compressed.
fn compressed_record(dir: &Path, codec: Compression) -> (PathBuf, u64) {
    // Synced writes: each later record proves the ones before it durable,
    // so damage to the first is corruption, not a torn tail.
    let config = ManagerConfig {
        sync_mode: SyncMode::Always,
        ..config(dir, codec)
    };
    let wal = SegmentManager::open(config).unwrap();
    for i in 0..4 {
        let entries: Vec<Vec<u8>> = (0..4).map(|j| row(0, 0, i * 4 + j)).collect();
        wal.write(0, 0, &entries).unwrap();
    }
    wal.close().unwrap();
    let (path, offset, found) = records_on_disk(dir).remove(0);
    assert_eq!(found, codec);
    (path, offset)
}

/// Proves that damage to any byte of a compressed record (header or
/// compressed body) followed by later records is corruption: recovery
/// refuses it naming the file and the record's offset, and
/// `SkipCorrupted` skips exactly that record's batch and reads every other
/// entry back, for both codecs. Nothing is ever decompressed unverified.
#[test]
fn every_damaged_byte_of_a_compressed_record_is_corruption_at_its_offset() {
    for codec in [Compression::Lz4, Compression::Zstd] {
        let dir = tempfile::tempdir().unwrap();
        let (path, offset) = compressed_record(dir.path(), codec);
        let pristine = std::fs::read(&path).unwrap();
        let end = records_on_disk(dir.path())[1].1 as usize;
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for at in offset as usize..end {
            let mut bytes = pristine.clone();
            bytes[at] ^= 0x40;
            std::fs::write(&path, &bytes).unwrap();
            let err = SegmentManager::open(config(dir.path(), codec))
                .unwrap_err()
                .to_string();
            assert!(err.contains(&name), "{codec} byte {at}: {err}");
            assert!(
                err.contains(&format!("offset {offset}")),
                "{codec} byte {at}: {err}"
            );
            let skipping = ManagerConfig {
                recovery_mode: segwal_manager::RecoveryMode::SkipCorrupted,
                ..config(dir.path(), codec)
            };
            let wal = SegmentManager::open(skipping).unwrap();
            let read = drain(wal.read(0, 0, 0, u64::MAX).unwrap(), 100);
            let expected: Vec<(u64, u64, Vec<u8>)> =
                (4..16).map(|i| (0, i + 1, row(0, 0, i))).collect();
            assert_eq!(read, expected, "{codec} byte {at}");
            wal.close().unwrap();
            std::fs::write(&path, &pristine).unwrap();
        }
    }
}

/// Replaces the body of the record at `offset` of `path` with bytes of
/// the same length that are no valid compressed stream, and signs it
/// again with both checksums (the segment's salt is in its header): what
/// only a forger or astronomically unlucky damage could produce.
fn forge_undecompressible_body(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let salt = SegmentHeader::decode(&bytes).unwrap().salt;
    let record = &mut bytes[offset..];
    let body_len = u32::from_le_bytes(record[12..16].try_into().unwrap()) as usize;
    for (i, byte) in record[64..64 + body_len].iter_mut().enumerate() {
        *byte = 0xff ^ (i as u8);
    }
    let body_crc = crc32fast::hash(&record[64..64 + body_len]);
    record[16..20].copy_from_slice(&body_crc.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&salt.to_le_bytes());
    crc.update(&record[4..64]);
    record[..4].copy_from_slice(&crc.finalize().to_le_bytes());
    std::fs::write(path, &bytes).unwrap();
}

/// Proves that a compressed record whose checksums match but whose body
/// does not decompress opens (recovery reads headers only) and then fails
/// every read that reaches it, the scan, and `inspect` (what `segwal
/// verify` prints), each naming the file and the record's offset: an
/// error, never a panic, for both codecs.
#[test]
fn a_body_that_verifies_but_does_not_decompress_is_reported() {
    for codec in [Compression::Lz4, Compression::Zstd] {
        let dir = tempfile::tempdir().unwrap();
        let (path, offset) = compressed_record(dir.path(), codec);
        forge_undecompressible_body(&path, offset as usize);
        let wal = SegmentManager::open(config(dir.path(), codec)).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut read = wal.read(0, 0, 0, u64::MAX).unwrap();
        let err = read.next_batch(100, |_| {}).unwrap_err();
        assert!(matches!(err, Error::Decompress { .. }), "{err:?}");
        assert_eq!(err.kind(), "corruption");
        for message in [
            err.to_string(),
            wal.scan(0)
                .unwrap()
                .next_batch(100, |_| {})
                .unwrap_err()
                .to_string(),
        ] {
            assert!(message.contains(&name), "{codec}: {message}");
            assert!(
                message.contains(&format!("offset {offset}")),
                "{codec}: {message}"
            );
        }
        wal.close().unwrap();
        let report = segwal_manager::inspect(dir.path()).unwrap();
        let problem = report.problems().find(|p| p.offset == Some(offset));
        let problem = problem.unwrap_or_else(|| panic!("{codec}: not reported"));
        assert_eq!(problem.path, path);
        assert!(!report.is_clean());
    }
}
