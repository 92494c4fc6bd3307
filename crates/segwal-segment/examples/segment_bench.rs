//! Writes a workload through segment files, reopens and replays them, then
//! deletes them: the end-to-end job for the segment layer until the `segwal`
//! binary exists.
//!
//! ```text
//! cargo run --release -p segwal-segment --example segment_bench -- \
//!     [--dir DIR] [--total-mib N] [--entry-size BYTES] [--batch-entries N] \
//!     [--segment-mib N] [--sync-every N]
//! ```
//!
//! Without `--dir` it works in a fresh temporary directory, printed first.
//! `--sync-every 1` (the default) syncs after every batch, as a WAL in
//! `SyncMode::Always` does without group commit; `0` never syncs until the
//! segment is sealed.

#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use segwal_format::SegmentIdentity;
use segwal_segment::{BatchRef, Error, OpenOptions, Segment, segment_file_name};

struct Args {
    dir: Option<PathBuf>,
    total_bytes: u64,
    entry_size: usize,
    batch_entries: usize,
    segment_bytes: u64,
    sync_every: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        dir: None,
        total_bytes: 64 << 20,
        entry_size: 1024,
        batch_entries: 16,
        segment_bytes: 16 << 20,
        sync_every: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--dir" => args.dir = Some(PathBuf::from(value()?)),
            "--total-mib" => args.total_bytes = number(value()?)? << 20,
            "--entry-size" => args.entry_size = number(value()?)? as usize,
            "--batch-entries" => args.batch_entries = number(value()?)?.max(1) as usize,
            "--segment-mib" => args.segment_bytes = number(value()?)?.max(1) << 20,
            "--sync-every" => args.sync_every = number(value()?)?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::exit(2);
        }
    };
    let temp = tempfile::tempdir().expect("create a temporary directory");
    let dir = args.dir.clone().unwrap_or_else(|| temp.path().to_owned());
    std::fs::create_dir_all(&dir).expect("create the data directory");
    println!("data dir: {}", dir.display());
    if let Err(err) = run(&args, &dir) {
        eprintln!("error: {err}");
        std::process::exit(1);
    }
}

fn run(args: &Args, dir: &Path) -> Result<(), Error> {
    let region_id = 1;
    // Incompressible payloads: a simple xorshift stream.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let payloads: Vec<Vec<u8>> = (0..args.batch_entries)
        .map(|_| {
            (0..args.entry_size)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect()
        })
        .collect();
    let batch_bytes = (args.entry_size * args.batch_entries) as u64;
    let batches = args.total_bytes.div_ceil(batch_bytes.max(1));

    // Write, rolling over to a new segment when a batch does not fit.
    let mut segment_id = 1;
    let create = |id: u64| {
        let header = SegmentIdentity {
            region_id,
            segment_id: id,
        };
        Segment::create(&dir.join(segment_file_name(id)), header, args.segment_bytes)
    };
    let mut segment = create(segment_id)?;
    let mut latencies = Vec::with_capacity(batches as usize);
    let mut syncs = 0u64;
    let started = Instant::now();
    for n in 0..batches {
        let batch = BatchRef {
            table_id: n % 8,
            first_sequence: n * args.batch_entries as u64 + 1,
            entries: &payloads,
        };
        let t = Instant::now();
        if segment.encoded_len(&payloads)? > segment.remaining() {
            segment.close()?;
            segment_id += 1;
            segment = create(segment_id)?;
        }
        segment.append(&batch)?;
        if args.sync_every > 0 && (n + 1) % args.sync_every == 0 {
            segment.sync()?;
            syncs += 1;
        }
        latencies.push(t.elapsed());
    }
    segment.close()?;
    let write_time = started.elapsed();

    // Reopen every segment, recovering and replaying each entry.
    let disk_before = disk_usage(dir);
    let started = Instant::now();
    let (mut entries, mut replayed_bytes) = (0u64, 0u64);
    let mut opened = Vec::new();
    for id in 1..=segment_id {
        let header = SegmentIdentity {
            region_id,
            segment_id: id,
        };
        let options = OpenOptions {
            writable: false,
            ..OpenOptions::default()
        };
        let (segment, _) = Segment::open(
            &dir.join(segment_file_name(id)),
            header,
            &options,
            |record| {
                for entry in record.entries() {
                    entries += 1;
                    replayed_bytes += entry.payload.len() as u64;
                }
            },
        )?;
        opened.push(segment);
    }
    let recover_time = started.elapsed();
    assert_eq!(
        entries,
        batches * args.batch_entries as u64,
        "replay lost entries"
    );

    for segment in opened {
        segment.delete()?;
    }
    let disk_after = disk_usage(dir);

    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    let mb = |bytes: u64, t: Duration| bytes as f64 / t.as_secs_f64() / 1e6;
    let written = batches * batch_bytes;
    println!();
    println!("| metric                 | value |");
    println!("|------------------------|-------|");
    println!(
        "| entries written        | {} in {} segments |",
        batches * args.batch_entries as u64,
        segment_id
    );
    println!(
        "| write throughput       | {:.0} entries/s, {:.1} MB/s |",
        (batches * args.batch_entries as u64) as f64 / write_time.as_secs_f64(),
        mb(written, write_time)
    );
    println!(
        "| batch latency p50/p99/p999 | {:?} / {:?} / {:?} |",
        pct(0.5),
        pct(0.99),
        pct(0.999)
    );
    println!(
        "| syncs                  | {syncs} ({} batches per sync) |",
        batches.checked_div(syncs).unwrap_or(0)
    );
    println!(
        "| recovery + replay      | {:?}, {:.1} MB/s |",
        recover_time,
        mb(replayed_bytes, recover_time)
    );
    println!(
        "| disk before delete     | {:.1} MiB |",
        disk_before as f64 / (1 << 20) as f64
    );
    println!(
        "| disk after delete      | {:.1} MiB |",
        disk_after as f64 / (1 << 20) as f64
    );
    Ok(())
}

/// Bytes allocated to segment files in `dir`.
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.blocks() * 512)
                .sum()
        })
        .unwrap_or(0)
}
