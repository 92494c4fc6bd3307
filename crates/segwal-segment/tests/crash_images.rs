//! Simulated power loss on a single segment: whatever subset of unsynced
//! sectors survives, recovery keeps every synced record, returns only
//! records that were written, never mistakes a crash for corruption, and
//! leaves the segment appendable.

use std::fs;
use std::ops::Range;

use proptest::prelude::*;
use segwal_format::SegmentIdentity;
use segwal_segment::{
    BatchRef, OpenOptions, Preallocation, RecoveryMode, Segment, segment_file_name,
};

const HEADER: SegmentIdentity = SegmentIdentity {
    stream_id: 1,
    segment_id: 1,
};
const CAPACITY: u64 = 32 * 1024;
const SECTOR: usize = 512;

/// What a crash does to one unsynced sector.
#[derive(Debug, Clone, Copy)]
enum SectorFate {
    /// The new data reached the disk.
    Kept,
    /// The write never reached the disk: the old bytes (zeros) remain.
    Lost,
    /// The drive left garbage (a sector write that was not atomic).
    Garbage(u8),
}

fn fate() -> impl Strategy<Value = SectorFate> {
    prop_oneof![
        4 => Just(SectorFate::Kept),
        4 => Just(SectorFate::Lost),
        1 => any::<u8>().prop_map(SectorFate::Garbage),
    ]
}

/// Record ranges, payloads, and the durable length when the crash came.
struct Written {
    records: Vec<(Range<u64>, u64, Vec<u8>)>,
    durable: u64,
    written: u64,
}

fn write(dir: &std::path::Path, ops: &[(usize, bool)]) -> Written {
    let path = dir.join(segment_file_name(1));
    let mut segment = Segment::create(&path, HEADER, CAPACITY, Preallocation::Zeroed).unwrap();
    let mut records = Vec::new();
    for (i, &(len, sync_after)) in ops.iter().enumerate() {
        let payload = vec![i as u8 ^ 0x5a; len];
        let sequence = i as u64 + 1;
        let range = segment
            .append(&BatchRef {
                region_id: 1,
                table_id: 1,
                first_sequence: sequence,
                entries: &[&payload],
            })
            .unwrap();
        records.push((range, sequence, payload));
        if sync_after {
            segment.sync().unwrap();
        }
    }
    let written = Written {
        records,
        durable: segment.durable_len(),
        written: segment.written_len(),
    };
    drop(segment); // a crash: no close, no final sync
    written
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if std::env::var_os("CI").is_some() { 200 } else { 100 }))]

    #[test]
    fn power_loss_never_loses_synced_records(
        ops in prop::collection::vec((0usize..1500, prop::bool::weighted(0.3)), 1..24),
        fates in prop::collection::vec(fate(), 64),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(segment_file_name(1));
        let w = write(dir.path(), &ops);

        // Build the crash image: synced bytes survive; each unsynced sector
        // meets its own fate.
        let mut image = fs::read(&path).unwrap();
        let first_unsynced_sector = w.durable as usize / SECTOR;
        let mut clean = true;
        for (n, sector) in (first_unsynced_sector..w.written.div_ceil(SECTOR as u64) as usize).enumerate() {
            let start = (sector * SECTOR).max(w.durable as usize);
            let end = ((sector + 1) * SECTOR).min(image.len());
            match fates[n % fates.len()] {
                SectorFate::Kept => {}
                SectorFate::Lost => { image[start..end].fill(0); clean = false; }
                SectorFate::Garbage(b) => { image[start..end].fill(b); clean = false; }
            }
        }
        fs::write(&path, &image).unwrap();

        let mut recovered = Vec::new();
        let (mut segment, report) = Segment::open(&path, HEADER, &OpenOptions::default(), |r| {
            let entry = r.borrowed_entries().unwrap().next().unwrap();
            recovered.push((r.offset()..r.end_offset(), entry.sequence, entry.payload.to_vec()));
        }).unwrap();

        // Only written records, in order, with no hole: a prefix.
        prop_assert!(recovered.len() <= w.records.len());
        prop_assert_eq!(&recovered[..], &w.records[..recovered.len()]);
        // Every synced record survived.
        let synced = w.records.iter().filter(|r| r.0.end <= w.durable).count();
        prop_assert!(recovered.len() >= synced, "lost synced records: {} < {}", recovered.len(), synced);
        prop_assert!(report.skipped.is_empty());
        if clean {
            prop_assert_eq!(recovered.len(), w.records.len());
        }

        // The segment stays appendable, and a later recovery sees the new
        // record right after the recovered ones, with no stale data behind.
        let next = recovered.len() as u64 + 1;
        let tail = segment.append(&BatchRef { region_id: 1, table_id: 1, first_sequence: next, entries: &[b"after"] }).unwrap();
        prop_assert_eq!(tail.start, report.end);
        segment.close().unwrap();
        let mut count = 0;
        let options = OpenOptions { recovery_mode: RecoveryMode::Strict, writable: true, end: None };
        let (_, report) = Segment::open(&path, HEADER, &options, |_| count += 1).unwrap();
        prop_assert_eq!(count, recovered.len() + 1);
        prop_assert_eq!(report.end, tail.end);
    }
}
