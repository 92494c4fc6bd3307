//! segwal's project automation, run as `cargo xtask <command>`.
//!
//! Commands:
//!
//! - `bench [FILTER]`: the criterion benches. The codec benches run once;
//!   the segment and manager benches run twice, on the real disk (under `target/`) and
//!   on tmpfs (`/dev/shm`), because tmpfs shows CPU cost and the disk shows
//!   fdatasync. Reports land in `target/criterion/`.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("bench") => bench(&args[1..]),
        Some("help" | "--help" | "-h") | None => {
            eprintln!("usage: cargo xtask bench [FILTER]");
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

fn bench(filter: &[String]) -> Result<(), String> {
    let bench = |name: &str| {
        let mut command = cargo();
        command.args(["bench", "-p", "segwal-benches", "--bench", name, "--"]);
        command.args(filter);
        command
    };
    run(&mut bench("format"))?;

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
        for name in ["segment", "manager"] {
            run(bench(name)
                .env("SEGWAL_BENCH_DIR", &dir)
                .env("SEGWAL_BENCH_FS", label))?;
        }
    }
    Ok(())
}
