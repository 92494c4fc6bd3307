//! `segwal`: the command-line tool. `segwal bench` is the main job (a
//! realistic write, replay and delete workload with a results table);
//! `inspect`, `verify` and `dump` look into a data dir without modifying it.

mod bench;
mod nats;
mod payload;
mod report;
mod size;
mod tools;
mod tsdb_rows;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use payload::PayloadKind;
use segwal::SyncMode;

/// segwal: a segmented write-ahead log for time-series engines.
#[derive(Debug, Parser)]
#[command(name = "segwal", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a realistic workload (many regions and tables), reopen and
    /// replay it, delete it, and report throughput, latency, recovery speed
    /// and disk space.
    Bench {
        /// Data dir to use, created with its parents if missing; it must not
        /// hold a WAL yet. Default: a fresh temporary dir, removed afterwards
        /// (unless --keep).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Payload bytes to write in all (e.g. 16MiB, 1GiB).
        #[arg(long, default_value = "256MiB", value_parser = size::parse_size)]
        total_bytes: u64,
        /// Bytes per entry.
        #[arg(long, default_value = "1KiB", value_parser = size::parse_size)]
        entry_size: u64,
        /// Entries per batch (one `write` call).
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        batch_entries: u64,
        /// Concurrent writers.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=4096))]
        writers: u64,
        /// Regions written to. Batch i of writer w (of W writers) is batch
        /// g = i * W + w and goes to region g mod regions, table
        /// (g / regions) mod tables: every region is written once there are
        /// as many batches, every table of every region once there are
        /// regions x tables batches.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        regions: u64,
        /// Tables per region.
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        tables: u64,
        /// When writes are durable: always, never, or interval:MS.
        #[arg(long, default_value = "always", value_parser = parse_sync)]
        sync: SyncMode,
        /// Size of each segment file. Every region shares the log: the data
        /// dir holds the payload in whole segments plus one prepared ahead.
        #[arg(long, default_value = "64MiB", value_parser = size::parse_size)]
        segment_size: u64,
        /// How new segments' blocks are set aside: `auto` (segwal's policy:
        /// the first segment after open reserved, later ones zero-filled
        /// under `--sync always` unless they fill fast), `zeroed` or
        /// `reserved` (fallocate) for every segment.
        #[arg(long, value_enum, default_value_t = PreallocationArg::Auto)]
        preallocation: PreallocationArg,
        /// Independent streams of the shared log (region R on stream R mod N).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
        streams: u64,
        /// How record bodies are compressed (local backend): none, lz4 or
        /// zstd.
        #[arg(long, value_enum, default_value_t = CompressionArg::None)]
        compression: CompressionArg,
        /// What each entry holds: `random` (incompressible bytes) or `tsdb`
        /// (rows of a time-series table: timestamps, tags, float values).
        #[arg(long, value_enum, default_value_t = PayloadKind::Random)]
        payload: PayloadKind,
        /// Print the results as JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Keep the data: skip the deletes and leave the data dir (also a
        /// temporary one) for `segwal inspect`, `verify` and `dump`.
        #[arg(long)]
        keep: bool,
        /// Where to write: `local` (a data dir) or `nats` (a NATS JetStream
        /// server or cluster, see --servers).
        #[arg(long, value_enum, default_value_t = BackendKind::Local)]
        backend: BackendKind,
        /// With --backend nats: the server URLs, comma-separated (every
        /// node of a cluster). Replaces the servers of --nats-config.
        #[arg(long, value_delimiter = ',')]
        servers: Vec<String>,
        /// With --backend nats: a `NatsWalConfig` TOML file (servers,
        /// prefix, owner, request_timeout, credentials, TLS files; see
        /// docs/OPERATIONS.md). The bench then runs under the file's
        /// prefix, which must hold no streams yet. Flags given override
        /// the file's keys.
        #[arg(long, value_name = "FILE")]
        nats_config: Option<PathBuf>,
        /// With --backend nats: replicas of each region's stream. Default:
        /// the file's, else 3 with three or more servers, else 1.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=5))]
        replicas: Option<u64>,
        /// With --backend nats: how many streams the regions share
        /// (`NatsWalConfig::streams`). Default: the file's, else
        /// `segwal_nats::DEFAULT_STREAMS` (1).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(segwal_nats::MAX_STREAMS)))]
        nats_streams: Option<u32>,
    },
    /// Print the `permissions` block a NATS user needs for a WAL's prefix
    /// and stream count, ready to paste into a nats-server config.
    NatsPermissions {
        /// A `NatsWalConfig` TOML file giving the prefix and stream count.
        #[arg(long, value_name = "FILE")]
        nats_config: Option<PathBuf>,
        /// The prefix (default: the file's, else `segwal`).
        #[arg(long)]
        prefix: Option<String>,
        /// The stream count (default: the file's, else 1).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(segwal_nats::MAX_STREAMS)))]
        nats_streams: Option<u32>,
    },
    /// Per region, the segments with size, sequence range, tables and live
    /// bytes. Modifies nothing.
    Inspect {
        /// The data dir.
        dir: PathBuf,
    },
    /// Check every checksum. Exit code 0 when clean, 1 on damage (each
    /// problem is printed with its file and offset).
    Verify {
        /// The data dir.
        dir: PathBuf,
    },
    /// Print one table's live entries, one line each: sequence, length and
    /// a preview. Modifies nothing.
    Dump {
        /// The data dir.
        dir: PathBuf,
        /// The region.
        #[arg(long)]
        region: u64,
        /// The table.
        #[arg(long)]
        table: u64,
        /// The first sequence number to print.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// The last sequence number to print.
        #[arg(long, default_value_t = u64::MAX)]
        to: u64,
    },
}

/// `segwal bench --backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BackendKind {
    /// `LocalWal` in a data dir.
    Local,
    /// `NatsWal` on NATS JetStream.
    Nats,
}

fn parse_sync(text: &str) -> Result<SyncMode, String> {
    match text {
        "always" => Ok(SyncMode::Always),
        "never" => Ok(SyncMode::Never),
        _ => {
            let ms = text
                .strip_prefix("interval:")
                .and_then(|ms| ms.parse::<u64>().ok())
                .filter(|&ms| ms > 0)
                .ok_or_else(|| {
                    format!(
                        "{text:?} is not a sync mode (always, never, or interval:MS with MS > 0)"
                    )
                })?;
            Ok(SyncMode::Interval(Duration::from_millis(ms)))
        }
    }
}

/// `--compression`'s values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CompressionArg {
    None,
    Lz4,
    Zstd,
}

/// `--preallocation`'s values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PreallocationArg {
    Auto,
    Zeroed,
    Reserved,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("segwal: error: {message}");
            ExitCode::from(2)
        }
    }
}

#[allow(clippy::print_stdout)] // Printing results is this program's job.
fn run(command: Command) -> Result<ExitCode, String> {
    match command {
        Command::Bench {
            dir,
            total_bytes,
            entry_size,
            batch_entries,
            writers,
            regions,
            tables,
            sync,
            segment_size,
            preallocation,
            streams,
            compression,
            payload,
            json,
            keep,
            backend,
            servers,
            nats_config,
            replicas,
            nats_streams,
        } => {
            let backend = match backend {
                BackendKind::Local => {
                    if !servers.is_empty()
                        || replicas.is_some()
                        || nats_config.is_some()
                        || nats_streams.is_some()
                    {
                        return Err("--servers, --nats-config, --replicas and --nats-streams \
                                    need --backend nats"
                            .into());
                    }
                    bench::Backend::Local
                }
                BackendKind::Nats => {
                    if !matches!(compression, CompressionArg::None) {
                        return Err("--compression needs --backend local".into());
                    }
                    bench::Backend::Nats(Box::new(nats::resolve(nats::NatsFlags {
                        config_file: nats_config.as_deref(),
                        servers,
                        replicas,
                        streams: nats_streams,
                    })?))
                }
            };
            let options = bench::BenchOptions {
                dir,
                total_bytes,
                entry_size: usize::try_from(entry_size).map_err(|_| "entry size too large")?,
                batch_entries: batch_entries as usize,
                writers: writers as usize,
                regions,
                tables,
                sync,
                segment_size,
                preallocation: match preallocation {
                    PreallocationArg::Auto => None,
                    PreallocationArg::Zeroed => Some(segwal::Preallocation::Zeroed),
                    PreallocationArg::Reserved => Some(segwal::Preallocation::Reserved),
                },
                streams: streams as usize,
                compression: match compression {
                    CompressionArg::None => segwal::Compression::None,
                    CompressionArg::Lz4 => segwal::Compression::Lz4,
                    CompressionArg::Zstd => segwal::Compression::Zstd,
                },
                payload,
                backend,
                keep,
            };
            let temp;
            let dir = match &options.dir {
                Some(dir) => {
                    if dir.join(segwal_manager::LOCK_FILE).exists() {
                        return Err(format!(
                            "{} already holds a WAL; bench needs a new or empty dir",
                            dir.display()
                        ));
                    }
                    // Made here rather than by the WAL, so that a path that
                    // cannot be a dir fails before anything is printed.
                    if matches!(options.backend, bench::Backend::Local) {
                        std::fs::create_dir_all(dir).map_err(|e| {
                            format!("cannot create data dir {}: {e}", dir.display())
                        })?;
                    }
                    dir.clone()
                }
                None => {
                    let made = tempfile::Builder::new()
                        .prefix("segwal-bench-")
                        .tempdir()
                        .map_err(|e| format!("cannot create a temporary dir: {e}"))?;
                    if keep {
                        made.keep()
                    } else {
                        temp = made;
                        temp.path().to_owned()
                    }
                }
            };
            let kept = if keep { " (kept)" } else { "" };
            match &options.backend {
                bench::Backend::Local => {
                    eprintln!("segwal bench: data dir {}{kept}", dir.display());
                }
                bench::Backend::Nats(target) => eprintln!(
                    "segwal bench: NATS JetStream at {} with {} replicas, {} streams, prefix {}",
                    nats::servers_shown(&target.config),
                    target.config.replicas_count(),
                    target.config.stream_count(),
                    target.config.prefix_name()
                ),
            }
            let runtime = tokio::runtime::Runtime::new()
                .map_err(|e| format!("cannot start the async runtime: {e}"))?;
            let progress = !json && std::io::stderr().is_terminal();
            let report = runtime.block_on(bench::run(&options, &dir, progress))?;
            if json {
                let text = serde_json::to_string_pretty(&report)
                    .map_err(|e| format!("cannot encode the report: {e}"))?;
                println!("{text}");
            } else {
                println!("{}", report::render(&report));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::NatsPermissions {
            nats_config,
            prefix,
            nats_streams,
        } => {
            print!(
                "{}",
                nats::permissions_block(nats_config.as_deref(), prefix, nats_streams)?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect { dir } => {
            print!("{}", tools::inspect(&dir)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { dir } => {
            let (text, clean) = tools::verify(&dir)?;
            print!("{text}");
            Ok(if clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Dump {
            dir,
            region,
            table,
            from,
            to,
        } => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            tools::dump(&dir, region, table, from, to, &mut out)?;
            std::io::Write::flush(&mut out).map_err(|e| format!("cannot write the dump: {e}"))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
