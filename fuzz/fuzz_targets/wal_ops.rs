//! Proves that a real `SegmentManager` (small segments, so rollovers
//! happen; four regions sharing one log of 1 to 3 streams), driven by any
//! sequence of writes, reads, scans, deletes, region closes, reopens and
//! process crashes, holds exactly what a reference model says after every
//! operation: reads and scans return the model's live entries (and
//! iterators kept across other operations their snapshot), sequence
//! numbers increase and are never reused, deleted entries never come back,
//! a segment leaves the disk once no region has a live entry in it, no
//! region has a file of its own, and only invalid batches are refused.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use segwal_fuzz::wal::{Harness, REGIONS, Settings, TABLES};

/// `segment_size`, `sync_mode`, `max_entry` and `cache` pick the
/// settings (`cache` picks the stream count too), see `Settings::pick`.
#[derive(Debug, Arbitrary)]
struct Input {
    segment_size: u8,
    sync_mode: u8,
    max_entry: u8,
    cache: u8,
    ops: Vec<Op>,
}

/// Region and table operands index [`REGIONS`] and [`TABLES`].
#[derive(Debug, Arbitrary)]
enum Op {
    /// A batch with one entry per size (none: an empty batch, refused).
    Write {
        region: u8,
        table: u8,
        sizes: Vec<u16>,
    },
    Read {
        region: u8,
        table: u8,
        start: Bound,
        end: Bound,
        batch: u8,
    },
    Scan {
        region: u8,
        batch: u8,
    },
    /// Deletes up to a bound relative to the table's largest number.
    Delete {
        region: u8,
        table: u8,
        up_to: Bound,
    },
    SequenceNum {
        region: u8,
        table: u8,
    },
    CloseRegion {
        region: u8,
    },
    /// `close`, then `open`.
    Reopen,
    /// Drop without `close`, then `open`.
    Drop,
    /// The data dir as `kill -9` would leave it (copied between
    /// operations: every byte written, synced or not), opened in a new
    /// manager.
    Crash,
    /// A second open of the held data dir, which must be refused.
    OpenTwice,
    /// Starts a read (or a scan, without a table) kept open across later
    /// operations.
    Hold {
        region: u8,
        table: Option<u8>,
        start: Bound,
        end: Bound,
    },
    /// Takes the next batch from the held iterator.
    PullHeld {
        batch: u8,
    },
}

/// A sequence number operand.
#[derive(Debug, Clone, Copy, Arbitrary)]
enum Bound {
    Zero,
    Max,
    /// Offset from a pivot near the data (the region's next number for a
    /// read, the table's largest for a delete).
    Near(i8),
    Raw(u64),
}

impl Bound {
    fn resolve(self, pivot: u64) -> u64 {
        match self {
            Bound::Zero => 0,
            Bound::Max => u64::MAX,
            Bound::Near(delta) => pivot.saturating_add_signed(i64::from(delta)),
            Bound::Raw(n) => n,
        }
    }
}

/// Operations per run: enough for many rollovers and several restarts,
/// few enough to keep a run in the milliseconds.
const MAX_OPS: usize = 64;
/// Entries per batch, beyond which a batch adds nothing new.
const MAX_ENTRIES: usize = 5;
/// Payload sizes range over 0..MAX_PAYLOAD, past every maximum entry size
/// and segment size in `Settings::pick`.
const MAX_PAYLOAD: usize = 9000;

fn region(index: u8) -> u64 {
    REGIONS[usize::from(index) % REGIONS.len()]
}

fn table(index: u8) -> u64 {
    TABLES[usize::from(index) % TABLES.len()]
}

fn batch(n: u8) -> usize {
    usize::from(n % 8) + 1
}

fuzz_target!(|input: Input| {
    let settings = Settings::pick(
        input.segment_size,
        input.sync_mode,
        input.max_entry,
        input.cache,
    );
    let mut harness = Harness::new(settings);
    for op in input.ops.into_iter().take(MAX_OPS) {
        match op {
            Op::Write {
                region: r,
                table: t,
                sizes,
            } => {
                let sizes: Vec<usize> = sizes
                    .into_iter()
                    .take(MAX_ENTRIES)
                    .map(|s| usize::from(s) % MAX_PAYLOAD)
                    .collect();
                harness.write(region(r), table(t), &sizes);
            }
            Op::Read {
                region: r,
                table: t,
                start,
                end,
                batch: b,
            } => {
                let pivot = harness.next_sequence(region(r));
                harness.read(
                    region(r),
                    table(t),
                    start.resolve(pivot),
                    end.resolve(pivot),
                    batch(b),
                );
            }
            Op::Scan {
                region: r,
                batch: b,
            } => harness.scan(region(r), batch(b)),
            Op::Delete {
                region: r,
                table: t,
                up_to,
            } => {
                let pivot = harness.max_sequence(region(r), table(t));
                harness.delete(region(r), table(t), up_to.resolve(pivot));
            }
            Op::SequenceNum {
                region: r,
                table: t,
            } => harness.sequence_num(region(r), table(t)),
            Op::CloseRegion { region: r } => harness.close_region(region(r)),
            Op::Reopen => harness.reopen(),
            Op::Drop => harness.drop_and_reopen(),
            Op::Crash => harness.crash(),
            Op::OpenTwice => harness.open_twice(),
            Op::Hold {
                region: r,
                table: t,
                start,
                end,
            } => {
                let pivot = harness.next_sequence(region(r));
                let (start, end) = (start.resolve(pivot), end.resolve(pivot));
                harness.hold(region(r), t.map(table), start, end);
            }
            Op::PullHeld { batch: b } => harness.pull_held(batch(b)),
        }
    }
});
