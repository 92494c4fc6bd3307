//! `segwal-bench-compare`: segwal against raft-engine, okaywal, RocksDB and
//! three floors (plain writes: each followed by `fdatasync`, opened
//! `O_DSYNC`, or grouped with one `fdatasync` per group), on identical
//! workloads.
//!
//! Every run is a child process of its own (this binary, `child SPEC`), so
//! that one engine's page cache habits, threads and heap never leak into
//! the next one's numbers and peak memory is per run. Engines alternate run
//! by run (A B C D E F A B C ...). See docs/BENCHMARKS.md.
//!
//! Usage: `cargo xtask bench-compare [--dir DIR] [--runs N]
//! [--workloads a,b] [--engines a,b] [--seconds S] [--bulk-bytes SIZE]
//! [--table-read-bytes SIZE] [--payload random|tsdb]
//! [--compression default|none|lz4|zstd] [--quick] [--json PATH]
//! [--svg PATH]`.

// The results table is this program's output.
#![allow(clippy::print_stdout)]

mod compress;
mod disk_usage;
mod engines;
mod error;
mod payload;
mod report;
mod workloads;

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

use compress::Codec;
use engines::EngineKind;
use error::{Context, Error, Result};
use payload::PayloadKind;
use workloads::{RunResult, Spec, Workload, parse_size};

const USAGE: &str = "\
usage: segwal-bench-compare [options]

  --dir DIR               where the engines' data dirs go (default: the system
                          temporary dir); pick the file system: a real disk, /dev/shm
  --runs N                runs of each workload per engine, alternating (default 3)
  --workloads a,b,...     sync1, sync16, sync16-r16, sync16-r256, sync16-256,
                          sync16-64k, bulk, recover, table-read, compress
                          (default: all but compress); sync16-r16 and
                          sync16-r256 are sync16 with each writer in a region
                          of its own or over 16 of 256; compress is bulk,
                          closed, then its bytes written and on disk, then
                          recover, in one row
  --engines a,b,...       segwal, segwal-manager, raft-engine, okaywal, rocksdb,
                          floor, floor-dsync, floor-group (default: all;
                          floor-dsync and floor-group run only the synced
                          workloads)
  --seconds S             measured seconds of each synced run, after a warm-up of
                          S/5 (default 3)
  --bulk-bytes SIZE       payload of bulk and recover (default 1GiB)
  --table-read-bytes SIZE payload of table-read's 100 tables (default 256MiB)
  --payload KIND          what entries hold: random (incompressible, the
                          default) or tsdb (rows of timestamps, tags and
                          float values, one series per entry)
  --compression CODEC     default (each engine as it ships: raft-engine lz4 on
                          batches over 8 KiB, the others none), none, lz4 or
                          zstd: every engine that has the codec uses it
                          (segwal lz4 and zstd, raft-engine lz4, RocksDB's
                          WAL zstd); the others are skipped, with the reason
  --quick                 a smoke test in seconds: 1 run, 0.2 s, 16MiB, 8MiB
                          (explicit flags still win)
  --json PATH             also write every run and the summary as JSON
  --svg PATH              also write a bar chart of the ratios to segwal
  --from-json PATH        run nothing: print the table (and write --svg) from the
                          runs saved in PATH by an earlier --json";

/// The parsed command line.
#[derive(Debug)]
struct Options {
    dir: PathBuf,
    runs: u32,
    workloads: Vec<Workload>,
    engines: Vec<EngineKind>,
    seconds: f64,
    bulk_bytes: u64,
    table_read_bytes: u64,
    payload: PayloadKind,
    codec: Codec,
    json: Option<PathBuf>,
    svg: Option<PathBuf>,
    from_json: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = if args.first().map(String::as_str) == Some("child") {
        child(&args[1..])
    } else {
        parse_options(&args).and_then(|options| match &options.from_json {
            Some(path) => replot(&options, path),
            None => compare(&options),
        })
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("segwal-bench-compare: {err}");
            ExitCode::FAILURE
        }
    }
}

impl Default for Options {
    fn default() -> Options {
        Options {
            dir: std::env::temp_dir(),
            runs: 3,
            workloads: Workload::defaults(),
            engines: EngineKind::ALL.to_vec(),
            seconds: 3.0,
            bulk_bytes: 1 << 30,
            table_read_bytes: 256 << 20,
            payload: PayloadKind::default(),
            codec: Codec::default(),
            json: None,
            svg: None,
            from_json: None,
        }
    }
}

/// `text` as a positive number, for `flag`.
fn positive<T: std::str::FromStr + PartialOrd + Default>(flag: &str, text: &str) -> Result<T> {
    text.parse::<T>()
        .ok()
        .filter(|n| *n > T::default())
        .ok_or_else(|| Error::msg(format!("{flag} needs a positive number, not {text:?}")))
}

fn parse_options(args: &[String]) -> Result<Options> {
    let (mut runs, mut seconds, mut bulk_bytes, mut table_read_bytes) = (None, None, None, None);
    let mut options = Options::default();
    let mut quick = false;
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| Error::msg(format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--dir" => options.dir = PathBuf::from(value()?),
            "--runs" => runs = Some(positive::<u32>(flag, value()?)?),
            "--workloads" => {
                options.workloads = value()?
                    .split(',')
                    .map(Workload::parse)
                    .collect::<Result<_>>()?;
            }
            "--engines" => {
                options.engines = value()?
                    .split(',')
                    .map(EngineKind::parse)
                    .collect::<Result<_>>()?;
            }
            "--seconds" => seconds = Some(positive::<f64>(flag, value()?)?),
            "--bulk-bytes" => bulk_bytes = Some(parse_size(value()?)?),
            "--table-read-bytes" => table_read_bytes = Some(parse_size(value()?)?),
            "--payload" => options.payload = PayloadKind::parse(value()?)?,
            "--compression" => options.codec = Codec::parse(value()?)?,
            "--quick" => quick = true,
            "--json" => options.json = Some(PathBuf::from(value()?)),
            "--svg" => options.svg = Some(PathBuf::from(value()?)),
            "--from-json" => options.from_json = Some(PathBuf::from(value()?)),
            "--help" | "-h" | "help" => {
                eprintln!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(Error::msg(format!("unknown argument {other:?}\n{USAGE}"))),
        }
    }
    if quick {
        options.runs = 1;
        options.seconds = 0.2;
        options.bulk_bytes = 16 << 20;
        options.table_read_bytes = 8 << 20;
    }
    options.runs = runs.unwrap_or(options.runs);
    options.seconds = seconds.unwrap_or(options.seconds);
    options.bulk_bytes = bulk_bytes.unwrap_or(options.bulk_bytes);
    options.table_read_bytes = table_read_bytes.unwrap_or(options.table_read_bytes);
    if options.bulk_bytes == 0 || options.table_read_bytes == 0 {
        return Err(Error::msg(
            "--bulk-bytes and --table-read-bytes must be positive",
        ));
    }
    Ok(options)
}

/// The engines asked for that have `--compression`'s codec, and for each
/// of the others a line naming it and why it does not run.
fn runnable_engines(options: &Options) -> (Vec<EngineKind>, Vec<String>) {
    let mut skipped = Vec::new();
    let engines = options
        .engines
        .iter()
        .copied()
        .filter(|&engine| match options.codec.skip_reason(engine) {
            None => true,
            Some(reason) => {
                skipped.push(format!(
                    "{engine} with --compression {}: {reason}",
                    options.codec.name()
                ));
                false
            }
        })
        .collect();
    (engines, skipped)
}

/// The parent: every workload, `runs` rounds, every engine in turn within a
/// round, each in a child process on a fresh data dir under `--dir`.
fn compare(options: &Options) -> Result<()> {
    std::fs::create_dir_all(&options.dir)
        .context(|| format!("cannot create {}", options.dir.display()))?;
    let fs = report::file_system(&options.dir);
    eprintln!(
        "bench-compare: data under {} ({fs}); {} run(s) per engine; {} payload, compression {}",
        options.dir.display(),
        options.runs,
        options.payload.name(),
        options.codec.name()
    );
    let (engines, skipped) = runnable_engines(options);
    for line in &skipped {
        eprintln!("bench-compare: skipped {line}");
    }
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for &workload in &options.workloads {
        for run in 0..options.runs {
            for &engine in &engines {
                if !workload.supports(engine) {
                    continue;
                }
                let label = format!("{} {engine} run {}", workload.name(), run + 1);
                match one_run(options, engine, workload) {
                    Ok(mut result) => {
                        result.run = run;
                        eprintln!("bench-compare: {label}: {}", progress(&result, workload));
                        results.push(result);
                    }
                    Err(err) => {
                        eprintln!("bench-compare: {label} FAILED: {err}");
                        failures.push(format!("{label}: {err}"));
                    }
                }
            }
        }
    }
    let summary = report::summarize(&options.workloads, &engines, &results);
    let command: Vec<String> = std::env::args().collect();
    println!(
        "bench-compare on {} ({fs}), medians of {} run(s): {}",
        options.dir.display(),
        options.runs,
        command[1..].join(" ")
    );
    print_tables(&summary, &skipped);
    let json = serde_json::json!({
        "dir": options.dir,
        "file_system": fs,
        "args": &command[1..],
        "runs_per_engine": options.runs,
        "seconds": options.seconds,
        "bulk_bytes": options.bulk_bytes,
        "table_read_bytes": options.table_read_bytes,
        "payload": options.payload.name(),
        "compression": options.codec.name(),
        "summary": summary,
        "runs": results,
        "failures": failures,
        "skipped": skipped,
    });
    write_outputs(options, &fs, &summary, &json)?;
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Error::msg(format!(
            "{} run(s) failed:\n  {}",
            failures.len(),
            failures.join("\n  ")
        )))
    }
}

/// One finished run's progress line: its headline figure and what else it
/// measured.
fn progress(result: &RunResult, workload: Workload) -> String {
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    let mut line = format!("{:.0} {}", result.value, workload.unit());
    if let Some(recover) = result.recover_mb_s {
        line.push_str(&format!(", recovery {recover:.0} MB/s"));
    }
    if let Some(written) = result.written_bytes {
        line.push_str(&format!(", wrote {:.1} MiB", mib(written)));
    }
    if let Some(bytes) = result.data_dir_bytes {
        line.push_str(&format!(", data dir {:.1} MiB", mib(bytes)));
    }
    if let Some(note) = &result.note {
        line.push_str(&format!(" ({note})"));
    }
    line
}

/// Prints the results tables, then the engines skipped.
fn print_tables(summary: &[report::Row], skipped: &[String]) {
    print!("{}", report::table(summary));
    print!("{}", compress::table(summary));
    if !skipped.is_empty() {
        println!("\nskipped:\n");
        for line in skipped {
            println!("- {line}");
        }
    }
}

/// Writes `--json` and `--svg`, if asked for.
fn write_outputs(
    options: &Options,
    fs: &str,
    summary: &[report::Row],
    json: &serde_json::Value,
) -> Result<()> {
    if let Some(path) = &options.json {
        let text = serde_json::to_string_pretty(json).context(|| "cannot encode the results")?;
        std::fs::write(path, text).context(|| format!("cannot write {}", path.display()))?;
        eprintln!("bench-compare: wrote {}", path.display());
    }
    if let Some(path) = &options.svg {
        let title = format!("segwal bench-compare on {fs} ({})", options.dir.display());
        std::fs::write(path, report::svg(summary, &title))
            .context(|| format!("cannot write {}", path.display()))?;
        eprintln!("bench-compare: wrote {}", path.display());
    }
    Ok(())
}

/// Prints the table of an earlier run's JSON (and writes `--svg`).
fn replot(options: &Options, path: &std::path::Path) -> Result<()> {
    let text =
        std::fs::read_to_string(path).context(|| format!("cannot read {}", path.display()))?;
    let saved: serde_json::Value =
        serde_json::from_str(&text).context(|| format!("{} is not JSON", path.display()))?;
    let results: Vec<RunResult> = serde_json::from_value(saved["runs"].clone())
        .context(|| format!("{} has no runs saved by --json", path.display()))?;
    let summary = report::summarize(&options.workloads, &options.engines, &results);
    let fs = saved["file_system"].as_str().unwrap_or("unknown");
    let dir = saved["dir"].as_str().unwrap_or("?");
    let strings = |key: &str| -> Vec<String> {
        saved[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let runs = saved["runs_per_engine"].as_u64().unwrap_or(0);
    println!(
        "bench-compare on {dir} ({fs}), medians of {runs} run(s): {}",
        strings("args").join(" ")
    );
    print_tables(&summary, &strings("skipped"));
    if let Some(svg) = &options.svg {
        let title = format!("segwal bench-compare on {fs} ({dir})");
        std::fs::write(svg, report::svg(&summary, &title))
            .context(|| format!("cannot write {}", svg.display()))?;
    }
    Ok(())
}

/// One run of one engine: a fresh data dir, the prepare step if any, then
/// the measured step, each in a child process. `compress`'s prepare step
/// measures too: its result is the write half of the run's.
fn one_run(options: &Options, engine: EngineKind, workload: Workload) -> Result<RunResult> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("bench-{}-", engine.name()))
        .tempdir_in(&options.dir)
        .context(|| format!("cannot create a data dir in {}", options.dir.display()))?;
    let mut spec = Spec {
        engine,
        workload,
        prepare: workload.has_prepare(),
        dir: dir.path().join("data"),
        seconds: options.seconds,
        bulk_bytes: options.bulk_bytes,
        table_read_bytes: options.table_read_bytes,
        payload: options.payload,
        codec: options.codec,
    };
    let parse = |output: String| -> Result<RunResult> {
        serde_json::from_str(output.trim()).context(|| format!("bad child output {output:?}"))
    };
    let mut prepared = None;
    if spec.prepare {
        let output = spawn_child(&spec)?;
        if !output.trim().is_empty() {
            prepared = Some(parse(output)?);
        }
        spec.prepare = false;
    }
    let result = parse(spawn_child(&spec)?)?;
    Ok(match prepared {
        Some(write) if workload == Workload::Compress => compress::merge(write, &result),
        _ => result,
    })
}

/// Runs this binary as `child SPEC` and returns what it printed.
fn spawn_child(spec: &Spec) -> Result<String> {
    let exe = std::env::current_exe().context(|| "cannot find this program's path")?;
    let spec_json = serde_json::to_string(spec).context(|| "cannot encode a run")?;
    let output = Command::new(exe)
        .arg("child")
        .arg(&spec_json)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context(|| "cannot start a child run")?;
    if !output.status.success() {
        return Err(Error::msg(format!(
            "child {} {}{} exited with {}",
            spec.engine,
            spec.workload.name(),
            if spec.prepare { " (prepare)" } else { "" },
            output.status
        )));
    }
    String::from_utf8(output.stdout).context(|| "child output is not UTF-8")
}

/// The child: runs one spec and prints its result as one JSON line.
fn child(args: &[String]) -> Result<()> {
    let [spec] = args else {
        return Err(Error::msg("usage: segwal-bench-compare child SPEC-JSON"));
    };
    let spec: Spec = serde_json::from_str(spec).context(|| "bad child spec")?;
    if let Some(result) = workloads::run(&spec)? {
        let line = serde_json::to_string(&result).context(|| "cannot encode a result")?;
        println!("{line}");
    }
    Ok(())
}
