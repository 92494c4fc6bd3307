//! Reads at the limits of the id and sequence spaces, shared by the
//! backends' hostile-input tests (`crates/segwal/tests/hostile.rs`,
//! `crates/segwal-nats/tests/hostile.rs`), each of which first moves
//! region `u64::MAX`'s next sequence number near the top in its own way.

use segwal::{
    BatchLogIterator, LogEntry, LogWriteBatch, ReadBoundary, ReadContext, ReadRequest, WalLocation,
    WalManager, WriteContext,
};

const MAX: u64 = u64::MAX;

/// Whether `boundary` admits `n` (SPEC 3.3, HoraeDB): `Min` is 0, `Max` is
/// `u64::MAX`, as the start (`as_start`) or the end of a range.
pub fn admits(boundary: ReadBoundary, as_start: bool, n: u64) -> bool {
    use ReadBoundary::{Excluded, Included, Max, Min};
    match (boundary, as_start) {
        (Min, true) | (Max, false) => true,
        (Min, false) => n == 0,
        (Max, true) => n == MAX,
        (Included(x), true) => n >= x,
        (Included(x), false) => n <= x,
        (Excluded(x), true) => n > x,
        (Excluded(x), false) => n < x,
    }
}

async fn write_one(wal: &impl WalManager, location: WalLocation, payload: &[u8]) -> u64 {
    let mut batch = LogWriteBatch::new(location);
    batch.push(payload.to_vec());
    wal.write(&WriteContext::default(), &batch)
        .await
        .unwrap_or_else(|e| panic!("write to {location:?}: {e}"))
}

/// Every entry of `iter`; checks that each batch holds 1 to `batch_size`.
pub async fn drain(mut iter: BatchLogIterator, batch_size: usize) -> Vec<LogEntry> {
    let mut out = Vec::new();
    while let Some(batch) = iter.next_batch().await.unwrap() {
        assert!(
            !batch.is_empty() && batch.len() <= batch_size,
            "{}",
            batch.len()
        );
        out.extend(batch);
    }
    out
}

/// Writes to tables at ids 0 and `u64::MAX` (region 0 from 1, region
/// `u64::MAX` from its floor `u64::MAX - 4`, which the caller has set, up
/// to `u64::MAX - 1`), then checks that every pair of read boundaries built
/// from 0, 1, the numbers around the entries, `u64::MAX - 1` and
/// `u64::MAX` (including empty and inverted ranges) yields exactly the
/// entries the SPEC's definition admits, unaltered, and that the top
/// region's tables report their last numbers.
pub async fn every_read_boundary_pair_at_the_limits(wal: &impl WalManager) {
    let (low, high) = (WalLocation::new(0, MAX), WalLocation::new(MAX, 0));
    let other = WalLocation::new(MAX, MAX);
    let mut written = Vec::new();
    for (location, payload) in [
        (low, &b"a"[..]),
        (low, b""),
        (high, b"top-4"),
        (other, b"other"),
        (high, b"top-2"),
        (high, b"top-1"),
        (low, b"c"),
    ] {
        let sequence = write_one(wal, location, payload).await;
        written.push((location, sequence, payload.to_vec()));
    }
    assert_eq!(
        written.iter().map(|w| w.1).collect::<Vec<_>>(),
        [1, 2, MAX - 4, MAX - 3, MAX - 2, MAX - 1, 3]
    );

    use ReadBoundary::{Excluded, Included, Max, Min};
    let numbers = [0, 1, 2, 3, 4, MAX - 4, MAX - 3, MAX - 2, MAX - 1, MAX];
    let mut boundaries = vec![Min, Max];
    for n in numbers {
        boundaries.extend([Included(n), Excluded(n)]);
    }
    let ctx = ReadContext::default();
    for location in [low, high] {
        for &start in &boundaries {
            for &end in &boundaries {
                let want: Vec<(u64, Vec<u8>)> = written
                    .iter()
                    .filter(|(l, n, _)| {
                        *l == location && admits(start, true, *n) && admits(end, false, *n)
                    })
                    .map(|(_, n, p)| (*n, p.clone()))
                    .collect();
                let request = ReadRequest {
                    location,
                    start,
                    end,
                };
                let iter = wal.read_batch(&ctx, &request).await.unwrap();
                let got: Vec<(u64, Vec<u8>)> = drain(iter, ctx.batch_size)
                    .await
                    .into_iter()
                    .map(|e| {
                        assert_eq!(e.table_id, location.table_id);
                        (e.sequence, e.payload.to_vec())
                    })
                    .collect();
                assert_eq!(got, want, "{location:?} {start:?}..{end:?}");
            }
        }
    }
    assert_eq!(wal.sequence_num(high).await.unwrap(), MAX - 1);
    assert_eq!(wal.sequence_num(other).await.unwrap(), MAX - 3);
}
