//! How a synced write reaches the disk under `SyncMode::Always`: a writer
//! alone in its region syncs its write with the write itself (one system
//! call); writers that overlap append and share one `fdatasync` per group
//! (group commit). Both paths must keep every acknowledged write through a
//! power loss, and a failed sync on either must reach the writers it was
//! to cover.

mod support;

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use segwal_manager::{Error, ManagerConfig, SegmentManager};
use segwal_segment::disk::{self, Hook, Op, OpKind};
use segwal_segment::powerloss::{Fate, Recorder};
use support::{Ack, Batch, Run, WORKLOADS, check, check_image, payload};

/// Whether `op` acts on a segment file in place (not a spare being
/// prepared).
fn on_segment(op: &Op<'_>) -> bool {
    op.path().extension().is_some_and(|e| e == "seg")
}

/// A data dir `wal` under a new temporary root (crash images go next to
/// it).
fn data_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("wal");
    std::fs::create_dir(&dir).unwrap();
    (root, dir)
}

/// Segments large enough that the tests here never roll over (a rollover
/// syncs the full segment with an `fdatasync` of its own).
fn config(dir: &Path) -> ManagerConfig {
    ManagerConfig {
        segment_size_bytes: 1 << 20,
        ..support::config(dir)
    }
}

/// Proves that a writer alone in its region makes each write durable with
/// the write itself, one synced write per batch and no `fdatasync` of the
/// segment, and that a power loss right after each acknowledgement (every
/// write not synced lost) keeps that write and all before it.
#[test]
fn a_lone_writer_syncs_each_write_with_the_write_itself() {
    let (root, dir) = data_dir();
    let (recorder, _guard) = Recorder::start(&dir).unwrap();
    let wal = SegmentManager::open(config(&dir)).unwrap();
    let mut batches = Vec::new();
    let mut acks = Vec::new();
    let mut write = |wal: &SegmentManager, batch: usize| {
        let entries = vec![payload(batch, 0, 2, 100), payload(batch, 1, 2, 900)];
        batches.push(Batch {
            region: 0,
            table: 1,
            entries: entries.clone(),
        });
        let last = wal.write(0, 1, &entries).unwrap();
        acks.push((recorder.position(), Ack::Write { batch, last }));
    };
    // The first write also creates the region and its first segment.
    write(&wal, 0);
    let seen: Arc<Mutex<HashMap<OpKind, usize>>> = Arc::default();
    let counts = Arc::clone(&seen);
    recorder.inject(move |op| {
        if on_segment(op) {
            *counts.lock().unwrap().entry(op.kind()).or_default() += 1;
        }
        None
    });
    for batch in 1..=20 {
        write(&wal, batch);
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.get(&OpKind::WriteSynced), Some(&20), "{seen:?}");
    assert_eq!(seen.get(&OpKind::Write), None, "{seen:?}");
    assert_eq!(seen.get(&OpKind::Sync), None, "{seen:?}");
    let stats = wal.statistics();
    assert_eq!(stats.synced_writes, stats.batches_written);
    drop(wal);

    let run = Run {
        batches,
        acks,
        replay: recorder.replay(),
        workload: WORKLOADS[0],
    };
    let mut replay = run.replay.clone();
    for &(position, _) in &run.acks {
        replay.advance_to(position);
        check_image(
            &replay,
            Fate::DropAll,
            &root.path().join(format!("image-{position}")),
            &run,
            position,
            &format!("power lost at {position}"),
        );
    }
}

/// Performs every call, each `fdatasync` of a segment file `delay` late,
/// so that writers pile up behind a sync as they would behind a slow disk.
struct SlowSyncs {
    delay: Duration,
}

impl Hook for SlowSyncs {
    fn run(&self, op: &Op<'_>, perform: &mut dyn FnMut() -> io::Result<()>) -> io::Result<()> {
        if op.kind() == OpKind::Sync && on_segment(op) {
            std::thread::sleep(self.delay);
        }
        perform()
    }
}

/// Proves that writers that overlap still share syncs (group commit): with
/// eight writers behind a slow `fdatasync`, each sync covers several
/// batches, the flusher thread makes syncs, and only a writer that found
/// itself alone synced its own write.
#[test]
fn overlapping_writers_share_syncs() {
    let (_root, dir) = data_dir();
    let hook = Arc::new(SlowSyncs {
        delay: Duration::from_millis(2),
    });
    let _guard = disk::install(&dir, hook as Arc<dyn Hook>);
    let wal = SegmentManager::open(config(&dir)).unwrap();
    let start = Barrier::new(8);
    std::thread::scope(|scope| {
        for table in 0..8u64 {
            let (wal, start) = (&wal, &start);
            scope.spawn(move || {
                start.wait();
                for batch in 0..25 {
                    wal.write(0, table, &[payload(batch, 0, 1, 200)]).unwrap();
                }
            });
        }
    });
    let stats = wal.statistics();
    assert_eq!(stats.batches_written, 200);
    let shared = stats.batches_written - stats.synced_writes;
    let group_syncs = stats.syncs - stats.synced_writes;
    assert!(
        shared >= 2 * group_syncs && stats.synced_writes < 50,
        "{stats:?}"
    );
    // Writers that append while a sync runs get the next one from the
    // flusher thread.
    assert!(stats.flusher_syncs > 0, "{stats:?}");
    wal.close().unwrap();
}

/// Proves that when a group's `fdatasync` fails, the error reaches its
/// leader naming the cause and the file, no writer of the group is told its
/// write is durable, the region refuses writes until it is reopened, and
/// neither recovery in this process nor a power loss afterwards loses an
/// acknowledged write.
#[test]
fn a_failed_group_sync_reaches_its_writers_and_loses_no_acknowledged_write() {
    let (root, dir) = data_dir();
    let (recorder, _guard) = Recorder::start(&dir).unwrap();
    let syncs = Arc::new(Mutex::new(0usize));
    {
        let syncs = Arc::clone(&syncs);
        recorder.inject(move |op| {
            if op.kind() != OpKind::Sync || !on_segment(op) {
                return None;
            }
            let mut syncs = syncs.lock().unwrap();
            *syncs += 1;
            (*syncs == 6).then(|| io::Error::from_raw_os_error(libc::EIO))
        });
    }
    let wal = SegmentManager::open(config(&dir)).unwrap();
    let log = Mutex::new((Vec::new(), Vec::new(), Vec::new()));
    let start = Barrier::new(3);
    std::thread::scope(|scope| {
        for table in 0..3u64 {
            let (wal, start, log, recorder) = (&wal, &start, &log, &*recorder);
            scope.spawn(move || {
                start.wait();
                for _ in 0..40 {
                    let entries = {
                        let (batches, _, _) = &mut *log.lock().unwrap();
                        let batch = batches.len();
                        let entries = vec![payload(batch, 0, 1, 300)];
                        batches.push(Batch {
                            region: 0,
                            table,
                            entries: entries.clone(),
                        });
                        (batch, entries)
                    };
                    let (batch, entries) = entries;
                    match wal.write(0, table, &entries) {
                        Ok(last) => {
                            let position = recorder.position();
                            log.lock()
                                .unwrap()
                                .1
                                .push((position, Ack::Write { batch, last }));
                        }
                        Err(err) => {
                            log.lock().unwrap().2.push(err);
                            return;
                        }
                    }
                }
            });
        }
    });
    let (mut batches, mut acks, errors) = log.into_inner().unwrap();
    assert!(
        *syncs.lock().unwrap() >= 6,
        "the writers never formed groups"
    );
    let eio = io::Error::from_raw_os_error(libc::EIO).to_string();
    assert!(
        errors.iter().any(|e| {
            let message = e.to_string();
            message.contains(&eio) && message.contains(&*dir.to_string_lossy())
        }),
        "no writer was told of the failed sync: {errors:?}"
    );
    // The others were refused: the region had failed, or the segment had
    // (a waiter handed the lead after the failure).
    for err in &errors {
        let refused = matches!(err, Error::RegionFailed { .. })
            || matches!(
                err,
                Error::Segment {
                    source: segwal_segment::Error::Poisoned { .. },
                    ..
                }
            );
        assert!(err.to_string().contains(&eio) || refused, "{err}");
    }
    // Once reopened, the region takes writes again. (Closing syncs, which
    // the failed segment refuses; the region is reopened either way.)
    let _ = wal.close_region(0);
    let batch = batches.len();
    let entries = vec![payload(batch, 0, 1, 10)];
    batches.push(Batch {
        region: 0,
        table: 0,
        entries: entries.clone(),
    });
    let last = wal.write(0, 0, &entries).unwrap();
    acks.push((recorder.position(), Ack::Write { batch, last }));
    wal.close().unwrap();

    acks.sort_by_key(|(position, _)| *position);
    let run = Run {
        batches,
        acks,
        replay: recorder.replay(),
        workload: WORKLOADS[2],
    };
    let end = run.replay.len();
    check(&dir, &run, end, "reopened after the failed sync");
    let mut replay = run.replay.clone();
    replay.advance_to(end);
    for seed in 0..8 {
        let fate = if seed == 0 {
            Fate::DropAll
        } else {
            Fate::Random(seed)
        };
        check_image(
            &replay,
            fate,
            &root.path().join(format!("image-{seed}")),
            &run,
            end,
            &format!("power lost at the end, {fate:?}"),
        );
    }
}
