//! Faults in the META log, which every region shares: a failed sync of a
//! segment whose last good end the META log cannot record either (the next
//! open in the same process must record it first, or not open), and a
//! failed META append shared by a group of deletes from several threads
//! (no delete of the group, nor any later one, is acknowledged until the
//! WAL is reopened). Each ends with crash images of what a power loss
//! after it would leave.

mod crash;

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};

use crash::{Ack, Recording, check, check_image, config, data_dir};
use segwal_manager::{Error, ManagerConfig, SegmentManager, SyncMode};
use segwal_segment::disk::{Op, OpKind};
use segwal_segment::powerloss::{Fate, Recorder};

/// Writes three batches to each of regions 0-2, then fails the next
/// segment sync (a lone writer's write syncs itself) and every write to the
/// META log (its appends and its snapshots), so that the failed write's
/// segment end cannot be recorded; checks that the stream then refuses
/// writes, that deletes are refused, and that the data dir does not open
/// again while the META log cannot be written. Returns the manager opened
/// once it can be.
fn lose_an_end(
    recorder: &Recorder,
    workload: &mut Recording<'_>,
    config: &ManagerConfig,
) -> SegmentManager {
    let wal = SegmentManager::open(config.clone()).unwrap();
    for region in 0..3 {
        for _ in 0..3 {
            workload.write(&wal, region, 1, &[300]).unwrap();
        }
    }
    let fail_meta = |op: &Op<'_>| {
        let name = op.path().file_name().unwrap().to_string_lossy();
        let meta = name == "META" || name == "META.tmp";
        (meta && matches!(op.kind(), OpKind::Write | OpKind::Create))
            .then(|| io::Error::from_raw_os_error(libc::EIO))
    };
    recorder.inject(move |op| {
        let segment_sync = matches!(op.kind(), OpKind::Sync | OpKind::WriteSynced)
            && op.path().extension().is_some_and(|e| e == "seg");
        if segment_sync {
            return Some(io::Error::from_raw_os_error(libc::EIO));
        }
        fail_meta(op)
    });
    let err = workload.write(&wal, 0, 1, &[300]).unwrap_err();
    assert!(matches!(err, Error::Write { region_id: 0, .. }), "{err}");
    // The whole stream refuses writes, and no delete can be made durable.
    let refused = workload.write(&wal, 2, 1, &[10]).unwrap_err();
    assert!(
        matches!(refused, Error::RegionFailed { region_id: 2 }),
        "{refused}"
    );
    let refused = wal.mark_delete_entries_up_to(1, 1, 2).unwrap_err();
    assert!(matches!(refused, Error::MetaFailed { .. }), "{refused}");
    recorder.inject(fail_meta);
    // Closing syncs, which the failed segment refuses.
    assert!(wal.close().is_err());
    for _ in 0..2 {
        let err = SegmentManager::open(config.clone()).unwrap_err();
        assert!(
            err.to_string().contains("META.tmp"),
            "the refusal names the META log's snapshot: {err}"
        );
    }
    recorder.stop_faults();
    SegmentManager::open(config.clone()).unwrap()
}

/// Proves that when a sync fails and the disk also refuses to record the
/// segment's last good end in the META log, the data dir does not open
/// again in this process (where the page cache still shows the lost
/// writes) until that end is recorded; that once it is, recovery reads
/// nothing past it; and that a later power loss leaves a data dir that
/// opens cleanly with every acknowledged write.
#[test]
fn an_end_that_cannot_be_recorded_blocks_the_next_open_until_it_is() {
    let (root, dir) = data_dir();
    let (recorder, _guard) = Recorder::start(&dir).unwrap();
    let mut workload = Recording::new(&recorder);
    let wal = lose_an_end(&recorder, &mut workload, &config(&dir, 1));
    // The failed write's entry is in the page cache, past the end that
    // was recorded: recovery does not read it.
    let read = crash::drain(wal.read(0, 1, 0, u64::MAX).unwrap()).unwrap();
    assert_eq!(
        read.len(),
        3,
        "recovery read past the recorded end: {read:?}"
    );
    // Whether the failed write's number is given again is the next test's
    // question.
    workload.forget_used();
    for region in 1..3 {
        workload.write(&wal, region, 1, &[300]).unwrap();
    }
    wal.close().unwrap();

    let run = workload.run(SyncMode::Always, 1);
    let mut replay = run.replay.clone();
    replay.advance_to(replay.len());
    for seed in 0..16 {
        check_image(
            &replay,
            Fate::Random(seed),
            &root.path().join(format!("image-{seed}")),
            &run,
            replay.len(),
            &format!("power lost at the end, seed {seed}"),
        );
    }
}

/// Proves that a failed write's sequence number is not given again after
/// the manager is reopened in the same process, even when the META log
/// refused to record the sequence floor the failure left (the failed
/// write's bytes, in the page cache and perhaps on disk, carry it).
#[test]
fn a_failed_writes_number_is_not_given_again_when_meta_refused_its_floor() {
    let (_root, dir) = data_dir();
    let (recorder, _guard) = Recorder::start(&dir).unwrap();
    let mut workload = Recording::new(&recorder);
    let wal = lose_an_end(&recorder, &mut workload, &config(&dir, 1));
    // Region 0 gave 1..=3 to acknowledged writes and 4 to the failed one.
    let next = wal.write(0, 1, &[b"after".as_slice()]).unwrap();
    assert!(next > 4, "region 0 gave number {next} again");
    wal.close().unwrap();
}

/// Proves that when a group of deletes from several threads shares a META
/// append and that append fails, no delete of the group, nor any later one,
/// is acknowledged until the WAL is reopened, while writes go on; and that
/// after a reopen deletes are durable again, so that a power loss at the
/// end undoes no acknowledged delete and keeps every acknowledged write.
#[test]
fn a_failed_meta_append_fails_every_delete_until_the_wal_is_reopened() {
    const THREADS: u64 = 4;
    let (root, dir) = data_dir();
    let (recorder, _guard) = Recorder::start(&dir).unwrap();
    let config = config(&dir, 1);
    let wal = SegmentManager::open(config.clone()).unwrap();
    let workload = Mutex::new(Recording::new(&recorder));
    // Each thread's region: 20 batches of one entry.
    for region in 0..THREADS {
        for _ in 0..20 {
            workload
                .lock()
                .unwrap()
                .write(&wal, region, 1, &[50])
                .unwrap();
        }
    }
    // The third META sync fails: its group's deletes may be on disk or not.
    let syncs = Arc::new(AtomicUsize::new(0));
    {
        let syncs = Arc::clone(&syncs);
        recorder.inject(move |op| {
            let meta = op.path().file_name().is_some_and(|n| n == "META");
            let third =
                meta && op.kind() == OpKind::Sync && syncs.fetch_add(1, Ordering::Relaxed) == 2;
            third.then(|| io::Error::from_raw_os_error(libc::EIO))
        });
    }
    let start = Barrier::new(THREADS as usize);
    let outcomes: Vec<Vec<bool>> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..THREADS)
            .map(|region| {
                let (wal, workload, start, recorder) = (&wal, &workload, &start, &*recorder);
                scope.spawn(move || {
                    start.wait();
                    (1..=10u64)
                        .map(|up_to| {
                            let position = recorder.position();
                            let asked = Ack::Deleting {
                                region,
                                table: 1,
                                up_to,
                            };
                            workload.lock().unwrap().acks.push((position, asked));
                            let deleted = wal.mark_delete_entries_up_to(region, 1, up_to);
                            if deleted.is_ok() {
                                let position = recorder.position();
                                let done = Ack::Delete {
                                    region,
                                    table: 1,
                                    up_to,
                                };
                                workload.lock().unwrap().acks.push((position, done));
                            }
                            deleted.is_ok()
                        })
                        .collect()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    recorder.stop_faults();
    assert!(
        syncs.load(Ordering::Relaxed) >= 3,
        "the deletes never reached the third sync"
    );
    for (region, outcomes) in outcomes.iter().enumerate() {
        // Once one of its deletes failed, every later one did.
        let failed_from = outcomes.iter().position(|ok| !ok);
        let failed_from =
            failed_from.unwrap_or_else(|| panic!("region {region}: no delete failed"));
        assert!(
            outcomes[failed_from..].iter().all(|ok| !ok),
            "region {region}: a delete was acknowledged after the META log failed: {outcomes:?}"
        );
    }
    // Writes go on.
    let mut workload = workload.into_inner().unwrap();
    for region in 0..THREADS {
        workload.write(&wal, region, 1, &[50]).unwrap();
    }
    let refused = wal.mark_delete_entries_up_to(0, 1, 15).unwrap_err();
    assert!(matches!(refused, Error::MetaFailed { .. }), "{refused}");
    wal.close().unwrap();
    // Reopened, deletes are durable again.
    let wal = SegmentManager::open(config).unwrap();
    for region in 0..THREADS {
        workload.delete(&wal, region, 1, 15).unwrap();
    }
    wal.close().unwrap();
    let run = workload.run(SyncMode::Always, 1);
    let end = run.replay.len();
    check(&dir, &run, end, "reopened after the failed META append");
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
