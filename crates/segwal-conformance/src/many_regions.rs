//! The many-region cases: 64 regions of 4 tables written, deleted and
//! closed at once, as a node with many shards uses one WAL.

use std::sync::Arc;

use segwal::{ReadBoundary, SequenceNumber, WalLocation, WalManager};

use crate::{Backend, read_entries, scan, write};

/// The regions and tables of the many-region cases.
const MANY_REGIONS: u64 = 64;
const MANY_TABLES: u64 = 4;

/// The payload of entry `entry` of batch `batch` of a table, in the
/// many-region cases.
fn many_payload(location: WalLocation, batch: u64, entry: u64) -> String {
    format!(
        "r{}-t{}-b{batch}-e{entry}",
        location.region_id, location.table_id
    )
}

/// Writes batch `batch` of `location` in the many-region cases: two
/// entries.
async fn many_write(wal: &impl WalManager, location: WalLocation, batch: u64) -> SequenceNumber {
    let entries = [
        many_payload(location, batch, 0),
        many_payload(location, batch, 1),
    ];
    let refs: Vec<&str> = entries.iter().map(String::as_str).collect();
    write(wal, location, &refs).await
}

/// The expected content of one region: (table, sequence, payload) of each
/// live entry, in sequence order.
type RegionEntries = Vec<(u64, u64, String)>;

/// Checks that region `region_id` holds exactly `expected`: its scan, a
/// read of each of its tables, and each table's sequence number (the
/// largest in `maxes`, which survives deletes).
async fn check_region(
    wal: &impl WalManager,
    region_id: u64,
    expected: &RegionEntries,
    maxes: &[u64],
) {
    assert_eq!(
        &scan(wal, region_id, 5).await,
        expected,
        "scan of region {region_id}"
    );
    for table_id in 0..MANY_TABLES {
        let location = WalLocation::new(region_id, table_id);
        let of_table: Vec<(u64, u64, String)> = expected
            .iter()
            .filter(|e| e.0 == table_id)
            .cloned()
            .collect();
        let got = read_entries(wal, location, ReadBoundary::Min, ReadBoundary::Max, 3).await;
        assert_eq!(got, of_table, "read of {location:?}");
        assert_eq!(
            wal.sequence_num(location).await.unwrap(),
            maxes[table_id as usize],
            "sequence number of {location:?}"
        );
    }
}

/// Writes `batches` batches of every table of every region with one task
/// per region, tables in turn, and returns each region's entries in
/// sequence order. The numbers are those of a region written alone: 1, 2,
/// ... without gaps.
async fn write_many_regions<W: WalManager>(wal: &Arc<W>, batches: u64) -> Vec<RegionEntries> {
    let tasks: Vec<_> = (0..MANY_REGIONS)
        .map(|region_id| {
            let wal = Arc::clone(wal);
            tokio::spawn(async move {
                let mut entries = Vec::new();
                for batch in 0..batches {
                    for table_id in 0..MANY_TABLES {
                        let location = WalLocation::new(region_id, table_id);
                        let last = many_write(&*wal, location, batch).await;
                        assert_eq!(last, entries.len() as u64 + 2, "{location:?}");
                        for entry in 0..2 {
                            entries.push((
                                table_id,
                                last - 1 + entry,
                                many_payload(location, batch, entry),
                            ));
                        }
                    }
                }
                entries
            })
        })
        .collect();
    let mut regions = Vec::new();
    for task in tasks {
        regions.push(task.await.unwrap());
    }
    regions
}

/// Each table's largest sequence number in `entries`, 0 for none.
fn table_maxes(entries: &RegionEntries) -> Vec<u64> {
    (0..MANY_TABLES)
        .map(|table_id| {
            entries
                .iter()
                .filter(|e| e.0 == table_id)
                .map(|e| e.1)
                .max()
                .unwrap_or(0)
        })
        .collect()
}

/// See [`conformance_tests!`].
pub async fn many_regions_with_concurrent_writers_read_back_and_scan(backend: &impl Backend) {
    let batches = 3u64;
    let wal = Arc::new(backend.open().await);
    // Two writers per region, each with two tables of it.
    let tasks: Vec<_> = (0..MANY_REGIONS)
        .flat_map(|region_id| (0..2u64).map(move |half| (region_id, half)))
        .map(|(region_id, half)| {
            let wal = Arc::clone(&wal);
            tokio::spawn(async move {
                let mut last = 0;
                for batch in 0..batches {
                    for table_id in [2 * half, 2 * half + 1] {
                        let location = WalLocation::new(region_id, table_id);
                        let seq = many_write(&*wal, location, batch).await;
                        assert!(seq > last + 1, "{location:?}: {seq} after {last}");
                        last = seq;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let wal = Arc::into_inner(wal).expect("the writers are done");
    check_many_writers(&wal, batches).await;
    wal.close_gracefully().await.unwrap();
    let wal = backend.open().await;
    check_many_writers(&wal, batches).await;
    wal.close_gracefully().await.unwrap();
}

/// Checks what [`many_regions_with_concurrent_writers_read_back_and_scan`]
/// wrote: every region's scan numbers its entries 1, 2, ... without gaps;
/// each table holds its batches in the order written, each batch's two
/// entries adjacent; reads and sequence numbers agree with the scan.
async fn check_many_writers(wal: &impl WalManager, batches: u64) {
    for region_id in 0..MANY_REGIONS {
        let scanned = scan(wal, region_id, 7).await;
        let count = MANY_TABLES * batches * 2;
        let sequences: Vec<u64> = scanned.iter().map(|e| e.1).collect();
        assert_eq!(
            sequences,
            (1..=count).collect::<Vec<_>>(),
            "scan of region {region_id}"
        );
        for table_id in 0..MANY_TABLES {
            let location = WalLocation::new(region_id, table_id);
            let of_table: Vec<(u64, u64, String)> = scanned
                .iter()
                .filter(|e| e.0 == table_id)
                .cloned()
                .collect();
            // The table's entries in the order written, a batch's two
            // entries adjacent.
            let payloads: Vec<&str> = of_table.iter().map(|e| e.2.as_str()).collect();
            let written: Vec<String> = (0..batches)
                .flat_map(|batch| (0..2).map(move |entry| many_payload(location, batch, entry)))
                .collect();
            assert_eq!(payloads, written, "{location:?}");
            for pair in of_table.chunks(2) {
                assert_eq!(pair[1].1, pair[0].1 + 1, "{location:?}: {pair:?}");
            }
            let got = read_entries(wal, location, ReadBoundary::Min, ReadBoundary::Max, 4).await;
            assert_eq!(got, of_table, "read of {location:?}");
            assert_eq!(
                wal.sequence_num(location).await.unwrap(),
                of_table.last().unwrap().1
            );
        }
    }
}

/// See [`conformance_tests!`].
pub async fn deletes_in_some_regions_leave_the_others_whole(backend: &impl Backend) {
    let wal = Arc::new(backend.open().await);
    let mut regions = write_many_regions(&wal, 2).await;
    let mut maxes: Vec<Vec<u64>> = regions.iter().map(table_maxes).collect();
    // Region r % 4 == 0: every table deleted; == 1: table 0 up to its first
    // batch and table 1 inside its first batch; == 2: nothing; == 3: more
    // batches, written while the others delete.
    let tasks: Vec<_> = (0..MANY_REGIONS)
        .map(|region_id| {
            let wal = Arc::clone(&wal);
            let entries = regions[region_id as usize].clone();
            tokio::spawn(async move {
                let first_of = |table_id: u64| {
                    entries
                        .iter()
                        .find(|e| e.0 == table_id)
                        .map(|e| e.1)
                        .unwrap()
                };
                match region_id % 4 {
                    0 => {
                        for table_id in 0..MANY_TABLES {
                            let location = WalLocation::new(region_id, table_id);
                            wal.mark_delete_entries_up_to(location, u64::MAX)
                                .await
                                .unwrap();
                        }
                    }
                    1 => {
                        let (t0, t1) = (
                            WalLocation::new(region_id, 0),
                            WalLocation::new(region_id, 1),
                        );
                        wal.mark_delete_entries_up_to(t0, first_of(0) + 1)
                            .await
                            .unwrap();
                        wal.mark_delete_entries_up_to(t1, first_of(1))
                            .await
                            .unwrap();
                    }
                    3 => {
                        let location = WalLocation::new(region_id, 2);
                        let last = many_write(&*wal, location, 2).await;
                        assert_eq!(last, entries.len() as u64 + 2, "{location:?}");
                    }
                    _ => {}
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    for (region_id, entries) in regions.iter_mut().enumerate() {
        let region_id = region_id as u64;
        match region_id % 4 {
            0 => entries.clear(),
            1 => {
                let first_of = |table_id: u64| entries.iter().find(|e| e.0 == table_id).unwrap().1;
                let (up_to_0, up_to_1) = (first_of(0) + 1, first_of(1));
                entries.retain(|e| match e.0 {
                    0 => e.1 > up_to_0,
                    1 => e.1 > up_to_1,
                    _ => true,
                });
            }
            3 => {
                let location = WalLocation::new(region_id, 2);
                let next = entries.len() as u64 + 1;
                for entry in 0..2 {
                    entries.push((2, next + entry, many_payload(location, 2, entry)));
                }
                maxes[region_id as usize][2] = next + 1;
            }
            _ => {}
        }
    }
    let wal = Arc::into_inner(wal).expect("the tasks are done");
    for region_id in 0..MANY_REGIONS {
        let r = region_id as usize;
        check_region(&wal, region_id, &regions[r], &maxes[r]).await;
    }
    drop(wal);

    // Durable, and the deleted regions' numbers go on.
    let wal = backend.open().await;
    for region_id in 0..MANY_REGIONS {
        let r = region_id as usize;
        check_region(&wal, region_id, &regions[r], &maxes[r]).await;
    }
    for region_id in (0..MANY_REGIONS).step_by(4) {
        let location = WalLocation::new(region_id, 3);
        let next = maxes[region_id as usize].iter().max().unwrap() + 1;
        assert_eq!(write(&wal, location, &["after"]).await, next);
    }
    wal.close_gracefully().await.unwrap();
}

/// See [`conformance_tests!`].
pub async fn close_region_among_many_leaves_the_others_open(backend: &impl Backend) {
    let wal = Arc::new(backend.open().await);
    let mut regions = write_many_regions(&wal, 1).await;
    let closed = [0, 5, MANY_REGIONS - 1];
    // The regions not closed each write one more batch of table 0 while
    // the others are closed, and a region never written is closed too.
    let writers: Vec<_> = (0..MANY_REGIONS)
        .filter(|region_id| !closed.contains(region_id))
        .map(|region_id| {
            let wal = Arc::clone(&wal);
            tokio::spawn(async move { many_write(&*wal, WalLocation::new(region_id, 0), 1).await })
        })
        .collect();
    for &region_id in closed.iter().chain(&[MANY_REGIONS + 7]) {
        wal.close_region(region_id).await.unwrap();
    }
    for (writer, region_id) in writers
        .into_iter()
        .zip((0..MANY_REGIONS).filter(|region_id| !closed.contains(region_id)))
    {
        let last = writer.await.unwrap();
        let entries = &mut regions[region_id as usize];
        assert_eq!(last, entries.len() as u64 + 2, "region {region_id}");
        let location = WalLocation::new(region_id, 0);
        for entry in 0..2 {
            entries.push((0, last - 1 + entry, many_payload(location, 1, entry)));
        }
    }
    let wal = Arc::into_inner(wal).expect("the writers are done");
    for region_id in 0..MANY_REGIONS {
        let entries = &regions[region_id as usize];
        check_region(&wal, region_id, entries, &table_maxes(entries)).await;
    }
    // A closed region, used again, numbers on from where it was.
    for region_id in closed {
        wal.close_region(region_id).await.unwrap();
        let location = WalLocation::new(region_id, 3);
        let last = many_write(&wal, location, 1).await;
        let entries = &mut regions[region_id as usize];
        assert_eq!(last, entries.len() as u64 + 2, "region {region_id}");
        for entry in 0..2 {
            entries.push((3, last - 1 + entry, many_payload(location, 1, entry)));
        }
    }
    assert!(scan(&wal, MANY_REGIONS + 7, 5).await.is_empty());
    wal.close_gracefully().await.unwrap();

    let wal = backend.open().await;
    for region_id in 0..MANY_REGIONS {
        let entries = &regions[region_id as usize];
        check_region(&wal, region_id, entries, &table_maxes(entries)).await;
    }
    wal.close_gracefully().await.unwrap();
}
