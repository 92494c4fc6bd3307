//! segwal's project automation, run as `cargo xtask <command>`.
//!
//! Commands:
//!
//! - `test [ARGS...]`: every test of the workspace (`cargo test
//!   --workspace ARGS...`, or of the crates `-p` names), after provisioning the pinned nats-server the
//!   NATS backend's tests start (see `nats_server.rs`). The README's test
//!   command, and what `.ci/run` runs.
//! - `bench [FILTER]`: the criterion benches. The codec benches run once;
//!   the segment and manager benches run twice, on the real disk (under `target/`) and
//!   on tmpfs (`/dev/shm`), because tmpfs shows CPU cost and the disk shows
//!   fdatasync. Reports land in `target/criterion/`.
//! - `bench-compare [ARGS...]`: segwal against raft-engine, okaywal, RocksDB
//!   and plain-write floors (`bench-compare/`, a workspace of its
//!   own so that nothing else builds RocksDB), built and run in release
//!   mode with ARGS passed through (`cargo xtask bench-compare --help`).
//!   See docs/BENCHMARKS.md.
//! - `fuzz [TARGET | all | --list] [--time SECONDS]`: a cargo-fuzz campaign
//!   on one target of `fuzz/` (or each in turn), for SECONDS (default 60).
//!   Needs the nightly toolchain and cargo-fuzz, and installs neither. The
//!   corpus grows in `fuzz/corpus/TARGET`, crashes land in
//!   `fuzz/artifacts/TARGET`; both stay out of git.
//! - `crash [--iterations N] [--images N] [--fault-samples N]
//!   [--meta-images N]`: the long crash campaigns, in release mode:
//!   `crash_kill` (a writer killed with SIGKILL N times, default 200),
//!   `power_loss` (about N crash images, default 20,000), `faults` (up to N
//!   failed calls of each kind, default every one) and `meta_power_loss`
//!   (about N crash images of the META log, default 5,000). See
//!   docs/TESTING.md.

mod nats_server;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test [ARGS...]                          every test (cargo test --workspace ARGS...), with
                                          the pinned nats-server provisioned into .tools/
  bench [FILTER]                          criterion benches, on disk and on tmpfs
  bench-compare [ARGS...]                 segwal vs raft-engine, okaywal, RocksDB and floors
                                          (`cargo xtask bench-compare --help`; docs/BENCHMARKS.md)
  fuzz [TARGET | all | --list] [--time S] run a cargo-fuzz target (or all) for S seconds (default 60)
  crash [--iterations N] [--images N] [--fault-samples N] [--meta-images N]
                                          crash campaigns: kill -9 N times (default 200),
                                          ~N power-loss images (20000), N faults per kind (all),
                                          ~N META power-loss images (5000)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("bench-compare") => bench_compare(&args[1..]),
        Some("fuzz") => fuzz(&args[1..]),
        Some("crash") => crash(&args[1..]),
        Some("help" | "--help" | "-h") | None => {
            eprintln!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(format!("unknown command {other:?}; try `cargo xtask help`")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_owned()
}

/// The cargo that runs this xtask: the project's pinned toolchain.
fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

fn run(command: &mut Command) -> Result<(), String> {
    eprintln!("xtask: running {command:?}");
    let status = command
        .status()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed with {status}"))
    }
}

/// The value after flag `flag` in `args[*at]`, as a positive number;
/// advances `at` past it.
fn positive_value(args: &[String], at: &mut usize, flag: &str) -> Result<u64, String> {
    *at += 1;
    let value = args
        .get(*at)
        .ok_or_else(|| format!("{flag} needs a value"))?;
    match value.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "{flag} needs a positive whole number, not {value:?}"
        )),
    }
}

/// Provisions the NATS backend's server, then runs every test with it.
fn test(args: &[String]) -> Result<(), String> {
    let nats_server = nats_server::provision(&workspace_root())?;
    let mut command = cargo();
    command.arg("test");
    // `-p CRATE` narrows the run to that crate; otherwise every crate.
    if !args.iter().any(|a| a == "-p" || a.starts_with("--package")) {
        command.arg("--workspace");
    }
    run(command.args(args).env("NATS_SERVER", nats_server))
}

fn bench(filter: &[String]) -> Result<(), String> {
    let bench = |name: &str| {
        let mut command = cargo();
        command.args(["bench", "-p", "segwal-benches", "--bench", name, "--"]);
        command.args(filter);
        command
    };
    run(&mut bench("format"))?;
    run(&mut bench("index_memory"))?;

    let disk = workspace_root().join("target").join("bench-data");
    std::fs::create_dir_all(&disk).map_err(|e| format!("cannot create {}: {e}", disk.display()))?;
    let mut dirs = vec![("disk", disk)];
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        dirs.push(("tmpfs", shm));
    } else {
        eprintln!("xtask: /dev/shm is missing; skipping the tmpfs run");
    }
    for (label, dir) in dirs {
        eprintln!("xtask: segment benches on {label} ({})", dir.display());
        for name in ["segment", "manager", "read"] {
            run(bench(name)
                .env("SEGWAL_BENCH_DIR", &dir)
                .env("SEGWAL_BENCH_FS", label))?;
        }
    }
    Ok(())
}

/// Builds and runs `bench-compare/` in release mode, passing `args` on. It
/// is a workspace of its own (the root manifest excludes it), with its own
/// lock file and, unless CARGO_TARGET_DIR says otherwise, its own target
/// dir, `bench-compare/target`.
fn bench_compare(args: &[String]) -> Result<(), String> {
    // raft-proto's build runs protoc; librocksdb-sys's runs bindgen, which
    // loads libclang, and compiles RocksDB's C++.
    let found = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    if !found("protoc") || !found("clang") {
        return Err(
            "bench-compare needs protoc, clang and libclang to build its peers; \
             on Debian: apt-get install protobuf-compiler clang libclang-dev"
                .into(),
        );
    }
    let manifest = workspace_root().join("bench-compare").join("Cargo.toml");
    run(cargo()
        .args(["run", "--release", "--locked", "--manifest-path"])
        .arg(&manifest)
        .arg("--")
        .args(args))
}

/// Default length of a fuzz run, in seconds.
const DEFAULT_FUZZ_SECONDS: u64 = 60;

fn fuzz(args: &[String]) -> Result<(), String> {
    let fuzz_dir = workspace_root().join("fuzz");
    let targets = fuzz_targets(&fuzz_dir)?;
    let mut target = None;
    let mut list = false;
    let mut seconds = DEFAULT_FUZZ_SECONDS;
    let mut at = 0;
    while at < args.len() {
        match args[at].as_str() {
            "--time" => seconds = positive_value(args, &mut at, "--time")?,
            "--list" => list = true,
            flag if flag.starts_with('-') => {
                return Err(format!(
                    "unknown flag {flag:?} for fuzz; try `cargo xtask help`"
                ));
            }
            name if target.is_none() => target = Some(name.to_owned()),
            extra => {
                return Err(format!(
                    "unexpected argument {extra:?}: one target at a time"
                ));
            }
        }
        at += 1;
    }
    let selected: Vec<&str> = match target.as_deref() {
        _ if list => {
            list_fuzz_targets(&targets);
            return Ok(());
        }
        None => {
            list_fuzz_targets(&targets);
            return Ok(());
        }
        Some("all") => targets.iter().map(String::as_str).collect(),
        Some(name) if targets.iter().any(|t| t == name) => vec![name],
        Some(name) => {
            return Err(format!(
                "no fuzz target {name:?}; the targets are: {}",
                targets.join(", ")
            ));
        }
    };
    check_fuzz_tools(&fuzz_dir)?;
    let mut failed = Vec::new();
    for name in selected {
        eprintln!("xtask: fuzzing {name} for {seconds} s");
        let corpus = fuzz_dir.join("corpus").join(name);
        std::fs::create_dir_all(&corpus)
            .map_err(|e| format!("cannot create {}: {e}", corpus.display()))?;
        let mut command = nightly_cargo(&fuzz_dir);
        // Debug assertions turn overflows and `debug_assert!`s into
        // findings instead of silent wrap-arounds.
        command
            .args(["fuzz", "run", "--debug-assertions", name])
            .arg(&corpus)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"));
        if let Err(message) = run(&mut command) {
            eprintln!("xtask: {message}");
            eprintln!(
                "xtask: {name} failed; the input is in {}",
                fuzz_dir.join("artifacts").join(name).display()
            );
            failed.push(name);
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("fuzz target(s) failed: {}", failed.join(", ")))
    }
}

/// The fuzz targets: the file stems of `fuzz/fuzz_targets/*.rs`, sorted.
fn fuzz_targets(fuzz_dir: &Path) -> Result<Vec<String>, String> {
    let dir = fuzz_dir.join("fuzz_targets");
    let listing =
        std::fs::read_dir(&dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut targets = Vec::new();
    for entry in listing {
        let path = entry
            .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
            .path();
        if path.extension().is_some_and(|ext| ext == "rs")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            targets.push(stem.to_owned());
        }
    }
    targets.sort();
    Ok(targets)
}

// The list is this command's output, for people and scripts alike.
#[allow(clippy::print_stdout)]
fn list_fuzz_targets(targets: &[String]) {
    eprintln!("fuzz targets (run one with `cargo xtask fuzz TARGET [--time S]`, or `all`):");
    for target in targets {
        println!("{target}");
    }
}

/// `cargo +nightly` through rustup, in `dir`. Not `$CARGO`: that is the
/// project's pinned stable toolchain, which cannot build with sanitizers.
fn nightly_cargo(dir: &Path) -> Command {
    let mut command = Command::new("cargo");
    command
        .arg("+nightly")
        .current_dir(dir)
        // Never let rustup install a missing toolchain behind the user's back.
        .env("RUSTUP_AUTO_INSTALL", "0");
    command
}

/// Fails with what to install if the nightly toolchain or cargo-fuzz is
/// missing. Installs nothing.
fn check_fuzz_tools(fuzz_dir: &Path) -> Result<(), String> {
    let toolchains = Command::new("rustup")
        .args(["toolchain", "list"])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| {
            format!("fuzzing needs rustup and the nightly toolchain, but rustup cannot be run: {e}")
        })?;
    let has_nightly = String::from_utf8_lossy(&toolchains.stdout)
        .lines()
        .any(|line| line.starts_with("nightly"));
    if !has_nightly {
        return Err(
            "fuzzing needs the nightly toolchain, which is not installed; \
             install it with `rustup toolchain install nightly`"
                .into(),
        );
    }
    let version = nightly_cargo(fuzz_dir)
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run cargo +nightly: {e}"))?;
    if !version.success() {
        return Err("fuzzing needs cargo-fuzz, which is not installed; \
             install it with `cargo install cargo-fuzz`"
            .into());
    }
    Ok(())
}

/// A crash campaign: a test binary of segwal-manager whose length one
/// environment variable sets, and the `cargo xtask crash` flag for it.
struct Campaign {
    /// The test binary (`crates/segwal-manager/tests/<test>.rs`).
    test: &'static str,
    /// The flag that sets its length.
    flag: &'static str,
    /// The environment variable the test reads its length from.
    env: &'static str,
    /// The length without the flag (the test's own default is CI-sized).
    default: u64,
}

/// Every crash campaign, run in this order by `cargo xtask crash`.
const CAMPAIGNS: &[Campaign] = &[
    Campaign {
        test: "crash_kill",
        flag: "--iterations",
        env: "SEGWAL_CRASH_ITERATIONS",
        default: 200,
    },
    Campaign {
        test: "power_loss",
        flag: "--images",
        env: "SEGWAL_CRASH_IMAGES",
        default: 20_000,
    },
    Campaign {
        test: "faults",
        flag: "--fault-samples",
        env: "SEGWAL_FAULT_SAMPLES",
        // More than any kind's calls in the workload: every call fails once.
        default: 1_000_000,
    },
    Campaign {
        test: "meta_power_loss",
        flag: "--meta-images",
        env: "SEGWAL_META_CRASH_IMAGES",
        default: 5_000,
    },
];

fn crash(args: &[String]) -> Result<(), String> {
    let mut lengths: Vec<u64> = CAMPAIGNS.iter().map(|c| c.default).collect();
    let mut at = 0;
    while at < args.len() {
        let flag = args[at].as_str();
        let Some(index) = CAMPAIGNS.iter().position(|c| c.flag == flag) else {
            let flags: Vec<&str> = CAMPAIGNS.iter().map(|c| c.flag).collect();
            return Err(format!(
                "unknown argument {flag:?} for crash; the flags are: {}",
                flags.join(", ")
            ));
        };
        lengths[index] = positive_value(args, &mut at, flag)?;
        at += 1;
    }
    for (campaign, length) in CAMPAIGNS.iter().zip(lengths) {
        eprintln!("xtask: {} with {}={length}", campaign.test, campaign.env);
        run(cargo()
            .args(["test", "--release", "-p", "segwal-manager", "--test"])
            .arg(campaign.test)
            .args(["--", "--nocapture"])
            .env(campaign.env, length.to_string()))?;
    }
    Ok(())
}
