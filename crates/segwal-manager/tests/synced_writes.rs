//! How a synced write reaches the disk under `SyncMode::Always`: a writer
//! alone in its stream of the shared log syncs its write with the write
//! itself (one system call), whatever region it writes to; writers that
//! overlap append and share one `fdatasync` per group (group commit),
//! across regions. Both paths must keep every acknowledged write through a
//! power loss, and a failed sync on either must reach the writers it was
//! to cover and stop the stream, every region on it, until the WAL is
//! reopened.

mod crash;

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use crash::{Ack, Batch, Run, check, check_image, data_dir, payload};
use segwal_manager::{Error, ManagerConfig, SegmentManager, SyncMode};
use segwal_segment::disk::{self, Hook, Op, OpKind};
use segwal_segment::powerloss::{Fate, Recorder};

/// Whether `op` acts on a segment file in place (not a spare being
/// prepared).
fn on_segment(op: &Op<'_>) -> bool {
    op.path().extension().is_some_and(|e| e == "seg")
}

/// Segments large enough that the tests here never roll over (a rollover
/// syncs the full segment with an `fdatasync` of its own).
fn config(dir: &Path) -> ManagerConfig {
    ManagerConfig {
        segment_size_bytes: 1 << 20,
        ..crash::config(dir, 1)
    }
}

/// Proves that a writer alone in the shared log makes each write durable
/// with the write itself, one synced write per batch and no `fdatasync` of
/// the segment, while it moves from region to region, and that a power loss
/// right after each acknowledgement (every write not synced lost) keeps
/// that write and all before it, in every region.
#[test]
fn a_lone_writer_syncs_each_write_with_the_write_itself() {
    let (root, dir) = data_dir();
    let (recorder, _guard) = Recorder::start(&dir).unwrap();
    let wal = SegmentManager::open(config(&dir)).unwrap();
    let mut batches = Vec::new();
    let mut acks = Vec::new();
    let mut write = |wal: &SegmentManager, batch: usize| {
        let entries = vec![payload(batch, 0, 2, 100), payload(batch, 1, 2, 900)];
        let (region, table) = (batch as u64 % 16, batch as u64 % 3);
        batches.push(Batch {
            region,
            table,
            entries: entries.clone(),
        });
        let last = wal.write(region, table, &entries).unwrap();
        acks.push((recorder.position(), Ack::Write { batch, last }));
    };
    // The first write also puts the first segment in place.
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
        sync_mode: SyncMode::Always,
        streams: 1,
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

/// Proves that writers that overlap still share syncs (group commit) across
/// regions: with eight writers, each writing to four regions of its own,
/// behind a slow `fdatasync`, each sync covers several batches, the
/// flusher thread makes syncs, and only a writer that found itself alone
/// synced its own write.
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
        for writer in 0..8u64 {
            let (wal, start) = (&wal, &start);
            scope.spawn(move || {
                start.wait();
                for batch in 0..25 {
                    let region = 4 * writer + batch as u64 % 4;
                    wal.write(region, 1, &[payload(batch, 0, 1, 200)]).unwrap();
                }
            });
        }
    });
    let stats = wal.statistics();
    assert_eq!(stats.batches_written, 200);
    assert_eq!(stats.regions.len(), 32, "{stats:?}");
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

/// What the writers of a test were told.
#[derive(Default)]
struct Log {
    batches: Vec<Batch>,
    acks: Vec<(usize, Ack)>,
    errors: Vec<Error>,
}

/// Proves that when a group's `fdatasync` fails, with three writers each
/// writing to four regions of its own, the error reaches its leader naming
/// the cause and the file, no writer of the group is told its write is
/// durable, every region of the stream (written to or not) refuses writes
/// until the WAL is closed and opened again, no failed write's number is
/// given again, and neither recovery in this process nor a power loss
/// afterwards loses an acknowledged write.
#[test]
fn a_failed_group_sync_reaches_its_writers_and_loses_no_acknowledged_write() {
    const WRITERS: u64 = 3;
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
    let log = Mutex::new(Log::default());
    let start = Barrier::new(WRITERS as usize);
    std::thread::scope(|scope| {
        for writer in 0..WRITERS {
            let (wal, start, log, recorder) = (&wal, &start, &log, &*recorder);
            scope.spawn(move || {
                start.wait();
                // Writer w alone writes regions w, w + 3, w + 6 and w + 9,
                // so it knows every number each of them gave.
                let mut assigned: HashMap<u64, u64> = HashMap::new();
                for i in 0..40 {
                    let region = writer + WRITERS * (i % 4);
                    let (batch, entries) = {
                        let mut log = log.lock().unwrap();
                        let batch = log.batches.len();
                        let entries = vec![payload(batch, 0, 1, 300)];
                        log.batches.push(Batch {
                            region,
                            table: 1,
                            entries: entries.clone(),
                        });
                        (batch, entries)
                    };
                    let result = wal.write(region, 1, &entries);
                    let position = recorder.position();
                    let assigned = assigned.entry(region).or_default();
                    let mut log = log.lock().unwrap();
                    match result {
                        Ok(last) => {
                            *assigned = last;
                            log.acks.push((position, Ack::Write { batch, last }));
                        }
                        Err(err) => {
                            if matches!(err, Error::Write { .. }) {
                                let up_to = *assigned + 1;
                                log.acks.push((position, Ack::Used { region, up_to }));
                            }
                            log.errors.push(err);
                            return;
                        }
                    }
                }
            });
        }
    });
    let Log {
        mut batches,
        mut acks,
        errors,
    } = log.into_inner().unwrap();
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
    // The others were refused: the stream had failed, or the segment had
    // (a waiter handed the lead after the failure).
    for err in &errors {
        let refused = matches!(err, Error::RegionFailed { .. })
            || matches!(
                err,
                Error::Write {
                    source: segwal_segment::Error::Poisoned { .. },
                    ..
                }
            );
        assert!(err.to_string().contains(&eio) || refused, "{err}");
    }
    // Every region of the stream refuses writes, one never written too.
    for region in [0, 5, 99] {
        let refused = wal.write(region, 1, &[b"refused".as_slice()]);
        assert!(
            matches!(refused, Err(Error::RegionFailed { region_id }) if region_id == region),
            "region {region}: {refused:?}"
        );
    }
    // Closing syncs, which the failed segment refuses.
    assert!(wal.close().is_err());
    // Opened again, every region takes writes.
    let wal = SegmentManager::open(config(&dir)).unwrap();
    for region in 0..4 * WRITERS {
        let batch = batches.len();
        let entries = vec![payload(batch, 0, 1, 10)];
        batches.push(Batch {
            region,
            table: 0,
            entries: entries.clone(),
        });
        let last = wal.write(region, 0, &entries).unwrap();
        acks.push((recorder.position(), Ack::Write { batch, last }));
    }
    wal.close().unwrap();

    acks.sort_by_key(|(position, _)| *position);
    let run = Run {
        batches,
        acks,
        replay: recorder.replay(),
        sync_mode: SyncMode::Always,
        streams: 1,
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
