//! Every file-system call that changes what is on disk, in one place.
//!
//! segwal's segment files and the manager's meta files and directories are
//! created, written, synced, renamed and removed only through these
//! functions (reads go straight to the file or the memory map). That makes
//! them the seam where tests stand between segwal and the disk: with the
//! `fault-injection` feature, a [`Hook`] installed for a directory sees
//! every such call under it, in the order they happen, and can fail one
//! instead of performing it. [`crate::powerloss`] records them to build the
//! states a power loss could leave; a fault hook injects `EIO` or `ENOSPC`.
//!
//! Without the feature the functions are the plain system calls.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// One call that changes the file system, as a [`Hook`] sees it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Op<'a> {
    /// Create a new, empty file (it must not exist).
    Create {
        /// The new file.
        path: &'a Path,
    },
    /// Write `data` at `offset`.
    Write {
        /// The file written.
        path: &'a Path,
        /// Where the data goes.
        offset: u64,
        /// The bytes written.
        data: &'a [u8],
    },
    /// Reserve blocks for the first `len` bytes of a file, extending it to
    /// `len` if it is shorter, without changing what it holds: bytes past
    /// the old end read as zeros (`fallocate` with mode 0).
    Allocate {
        /// The file.
        path: &'a Path,
        /// The length reserved.
        len: u64,
    },
    /// Give back the blocks under `[offset, offset + len)`, keeping the
    /// file's length: the range reads as zeros (`fallocate` with
    /// `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`).
    Deallocate {
        /// The file.
        path: &'a Path,
        /// Where the range starts.
        offset: u64,
        /// Its length.
        len: u64,
    },
    /// Write `data` at `offset` and make those bytes durable before
    /// returning, in one call (`pwritev2` with `RWF_DSYNC`): other unsynced
    /// writes to the file are not made durable by it.
    WriteSynced {
        /// The file written.
        path: &'a Path,
        /// Where the data goes.
        offset: u64,
        /// The bytes written.
        data: &'a [u8],
    },
    /// Make a file's data and size durable (`fdatasync` or `fsync`).
    Sync {
        /// The file synced.
        path: &'a Path,
    },
    /// Rename a file within its directory, replacing any file at `to`.
    Rename {
        /// The old name.
        from: &'a Path,
        /// The new name.
        to: &'a Path,
    },
    /// Remove a file.
    Remove {
        /// The file removed.
        path: &'a Path,
    },
    /// Create a directory (its parent must exist).
    CreateDir {
        /// The new directory.
        path: &'a Path,
    },
    /// Make a directory's entries durable (`fsync` on the directory).
    SyncDir {
        /// The directory synced.
        path: &'a Path,
    },
}

/// The kind of an [`Op`], without its data: what a fault plan selects on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// [`Op::Create`].
    Create,
    /// [`Op::Write`].
    Write,
    /// [`Op::Allocate`].
    Allocate,
    /// [`Op::Deallocate`].
    Deallocate,
    /// [`Op::WriteSynced`].
    WriteSynced,
    /// [`Op::Sync`].
    Sync,
    /// [`Op::Rename`].
    Rename,
    /// [`Op::Remove`].
    Remove,
    /// [`Op::CreateDir`].
    CreateDir,
    /// [`Op::SyncDir`].
    SyncDir,
}

impl OpKind {
    /// Every kind.
    pub const ALL: [OpKind; 10] = [
        OpKind::Create,
        OpKind::Write,
        OpKind::Allocate,
        OpKind::Deallocate,
        OpKind::WriteSynced,
        OpKind::Sync,
        OpKind::Rename,
        OpKind::Remove,
        OpKind::CreateDir,
        OpKind::SyncDir,
    ];
}

impl Op<'_> {
    /// The path the operation acts on (the source of a rename).
    pub fn path(&self) -> &Path {
        match *self {
            Op::Create { path }
            | Op::Write { path, .. }
            | Op::Allocate { path, .. }
            | Op::Deallocate { path, .. }
            | Op::WriteSynced { path, .. }
            | Op::Sync { path }
            | Op::Remove { path }
            | Op::CreateDir { path }
            | Op::SyncDir { path } => path,
            Op::Rename { from, .. } => from,
        }
    }

    /// The operation's kind.
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Create { .. } => OpKind::Create,
            Op::Write { .. } => OpKind::Write,
            Op::Allocate { .. } => OpKind::Allocate,
            Op::Deallocate { .. } => OpKind::Deallocate,
            Op::WriteSynced { .. } => OpKind::WriteSynced,
            Op::Sync { .. } => OpKind::Sync,
            Op::Rename { .. } => OpKind::Rename,
            Op::Remove { .. } => OpKind::Remove,
            Op::CreateDir { .. } => OpKind::CreateDir,
            Op::SyncDir { .. } => OpKind::SyncDir,
        }
    }
}

/// Creates `path` for reading and writing; fails if it exists.
pub fn create_new(path: &Path) -> io::Result<File> {
    let mut file = None;
    run(&Op::Create { path }, &mut || {
        file = Some(
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(path)?,
        );
        Ok(())
    })?;
    Ok(file.expect("a successful create leaves the file"))
}

/// Writes all of `data` at `offset` of `file` (named `path`).
pub fn write_at(file: &File, path: &Path, data: &[u8], offset: u64) -> io::Result<()> {
    run(&Op::Write { path, offset, data }, &mut || {
        file.write_all_at(data, offset)
    })
}

/// Writes all of `data` at `offset` of `file` (named `path`) and makes it
/// durable before returning, as [`write_at`] and then [`sync_data`] would,
/// but in one system call where the kernel has one (`pwritev2` with
/// `RWF_DSYNC`, Linux 4.7 and later) and without syncing the file's other
/// unsynced writes. Where the kernel lacks it (`EOPNOTSUPP`, `ENOSYS`),
/// and off Linux, it falls back to the two calls.
pub fn write_at_synced(file: &File, path: &Path, data: &[u8], offset: u64) -> io::Result<()> {
    run(&Op::WriteSynced { path, offset, data }, &mut || {
        pwrite_dsync(file, data, offset)
    })
}

#[cfg(target_os = "linux")]
fn pwrite_dsync(file: &File, mut data: &[u8], mut offset: u64) -> io::Result<()> {
    use rustix::io::{Errno, ReadWriteFlags, pwritev2};

    while !data.is_empty() {
        let written = match pwritev2(
            file,
            &[io::IoSlice::new(data)],
            offset,
            ReadWriteFlags::DSYNC,
        ) {
            Ok(written) => written,
            Err(Errno::INTR) => continue,
            Err(Errno::OPNOTSUPP | Errno::NOSYS) => {
                file.write_all_at(data, offset)?;
                return file.sync_data();
            }
            Err(errno) => return Err(errno.into()),
        };
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        // A short write synced what it wrote; the rest goes in the next call.
        data = &data[written..];
        offset += written as u64;
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn pwrite_dsync(file: &File, data: &[u8], offset: u64) -> io::Result<()> {
    file.write_all_at(data, offset)?;
    file.sync_data()
}

/// Reserves blocks for the first `len` bytes of `file` (named `path`) and
/// extends it to `len`, leaving its contents as they are; new bytes read as
/// zeros. Fails with [`io::ErrorKind::Unsupported`] where the file system
/// cannot reserve blocks (or off Linux): the caller then writes zeros.
pub fn allocate(file: &File, path: &Path, len: u64) -> io::Result<()> {
    run(&Op::Allocate { path, len }, &mut || fallocate(file, len))
}

#[cfg(target_os = "linux")]
fn fallocate(file: &File, len: u64) -> io::Result<()> {
    use rustix::fs::FallocateFlags;
    use rustix::io::Errno;

    loop {
        match rustix::fs::fallocate(file, FallocateFlags::empty(), 0, len) {
            Ok(()) => return Ok(()),
            Err(Errno::INTR) => continue,
            Err(Errno::OPNOTSUPP) => return Err(io::ErrorKind::Unsupported.into()),
            Err(errno) => return Err(errno.into()),
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn fallocate(_file: &File, _len: u64) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Gives back the blocks under `[offset, offset + len)` of `file` (named
/// `path`) without changing its length: the range reads as zeros after.
/// Only whole blocks are given back; a range that does not start or end
/// on a block boundary has its partial blocks zeroed instead. Fails with
/// [`io::ErrorKind::Unsupported`] where the file system cannot punch holes
/// (or off Linux): the blocks then stay allocated.
pub fn deallocate(file: &File, path: &Path, offset: u64, len: u64) -> io::Result<()> {
    run(&Op::Deallocate { path, offset, len }, &mut || {
        punch_hole(file, offset, len)
    })
}

#[cfg(target_os = "linux")]
fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use rustix::fs::FallocateFlags;
    use rustix::io::Errno;

    let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
    loop {
        match rustix::fs::fallocate(file, flags, offset, len) {
            Ok(()) => return Ok(()),
            Err(Errno::INTR) => continue,
            Err(Errno::OPNOTSUPP) => return Err(io::ErrorKind::Unsupported.into()),
            Err(errno) => return Err(errno.into()),
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn punch_hole(_file: &File, _offset: u64, _len: u64) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Asks the kernel to start writing `file`'s dirty pages in `[offset,
/// offset + len)` to the disk, without waiting for them or making anything
/// durable (`sync_file_range` with `SYNC_FILE_RANGE_WRITE`; nothing off
/// Linux).
///
/// It is a hint that changes nothing a power loss could tell apart: the
/// pages may reach the disk at any time anyway, and only a later sync says
/// they did. So hooks do not see it, and its errors are the caller's to
/// ignore: a write-back that fails is reported by the next sync.
pub fn start_writeback(file: &File, offset: u64, len: u64) -> io::Result<()> {
    sync_file_range(file, offset, len, false)
}

/// Writes `file`'s dirty pages in `[offset, offset + len)` to the disk and
/// waits until they are written (`sync_file_range` with
/// `SYNC_FILE_RANGE_WAIT_BEFORE | WRITE | WAIT_AFTER`; nothing off Linux).
/// Like [`start_writeback`] it makes nothing durable (no metadata, no
/// cache flush) and is a pacing hint that hooks do not see: it lets a
/// background writer keep its share of the disk's queue small.
pub fn wait_writeback(file: &File, offset: u64, len: u64) -> io::Result<()> {
    sync_file_range(file, offset, len, true)
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn sync_file_range(file: &File, offset: u64, len: u64, wait: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;

    let invalid = |_| io::Error::from(io::ErrorKind::InvalidInput);
    let offset = libc::off64_t::try_from(offset).map_err(invalid)?;
    let len = libc::off64_t::try_from(len).map_err(invalid)?;
    // SAFETY: `sync_file_range` reads no memory of ours; the descriptor is
    // open for as long as `file` is borrowed.
    let flags = if wait {
        libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER
    } else {
        libc::SYNC_FILE_RANGE_WRITE
    };
    // SAFETY: as above.
    let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn sync_file_range(_file: &File, _offset: u64, _len: u64, _wait: bool) -> io::Result<()> {
    Ok(())
}

/// The bytes of disk a file holds: its allocated blocks, at most its
/// length (a file with holes holds less than its length).
pub fn allocated_bytes(metadata: &fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    metadata.blocks().saturating_mul(512).min(metadata.len())
}

/// The bytes the file system holding `file` can still give this process:
/// the free blocks for root (who may use the blocks reserved for it), the
/// blocks available to others otherwise. `None` where it cannot tell: off
/// Linux, or on a file system that reports no size (ramfs). A reading, not
/// a promise: others may take the space next.
pub fn free_bytes(file: &File) -> Option<u64> {
    free_bytes_of(file)
}

#[cfg(target_os = "linux")]
fn free_bytes_of(file: &File) -> Option<u64> {
    let stats = rustix::fs::fstatvfs(file).ok()?;
    if stats.f_blocks == 0 {
        // A file system that reports no size at all tells nothing.
        return None;
    }
    let root = rustix::process::geteuid().is_root();
    let blocks = if root { stats.f_bfree } else { stats.f_bavail };
    Some(blocks.saturating_mul(stats.f_frsize))
}

#[cfg(not(target_os = "linux"))]
fn free_bytes_of(_file: &File) -> Option<u64> {
    None
}

/// Whether `path` lies on a file system that keeps files in memory only
/// (tmpfs, ramfs). There, blocks reserved with `fallocate` are ordinary
/// zeroed pages, with no unwritten state for a later sync to convert, so
/// writing zeros over a new segment buys nothing. `false` where it cannot
/// tell (and off Linux).
pub fn is_memory_backed(path: &Path) -> bool {
    file_system_magic(path).is_some_and(|magic| magic == TMPFS_MAGIC || magic == RAMFS_MAGIC)
}

/// `statfs`'s `f_type` of tmpfs, and of ramfs (linux/magic.h).
const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

#[cfg(target_os = "linux")]
fn file_system_magic(path: &Path) -> Option<i64> {
    let stats = rustix::fs::statfs(path).ok()?;
    #[allow(clippy::unnecessary_cast)] // `f_type`'s width differs by target
    Some(stats.f_type as i64)
}

#[cfg(not(target_os = "linux"))]
fn file_system_magic(_path: &Path) -> Option<i64> {
    None
}

/// Makes `file`'s data durable (`fdatasync`): enough for a file whose size
/// does not change, such as a preallocated segment.
pub fn sync_data(file: &File, path: &Path) -> io::Result<()> {
    run(&Op::Sync { path }, &mut || file.sync_data())
}

/// Makes `file`'s data and metadata durable (`fsync`).
pub fn sync_all(file: &File, path: &Path) -> io::Result<()> {
    run(&Op::Sync { path }, &mut || file.sync_all())
}

/// Renames `from` to `to` (in the same directory), replacing `to`.
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    run(&Op::Rename { from, to }, &mut || fs::rename(from, to))
}

/// Removes file `path`.
pub fn remove_file(path: &Path) -> io::Result<()> {
    run(&Op::Remove { path }, &mut || fs::remove_file(path))
}

/// Creates `dir` and any missing parents, durably: the parent of each new
/// directory is synced, and so is `dir`'s parent when `dir` existed already
/// (an earlier creation's sync may have failed after the directory was
/// made), so no crash can lose `dir` once files in it are durable.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|a| !a.exists()).collect();
    if missing.is_empty() && !dir.is_dir() {
        return Err(io::ErrorKind::NotADirectory.into());
    }
    for &path in missing.iter().rev() {
        match run(&Op::CreateDir { path }, &mut || fs::create_dir(path)) {
            Ok(()) => sync_parent(path)?,
            // Created meanwhile by another thread or process.
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => {}
            Err(err) => return Err(err),
        }
    }
    if missing.is_empty() {
        sync_parent(dir)?;
    }
    Ok(())
}

/// Syncs directory `dir`, making the creations, renames and removals in it
/// durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    run(&Op::SyncDir { path: dir }, &mut || {
        File::open(dir)?.sync_all()
    })
}

/// Syncs the directory holding `path`.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => sync_dir(Path::new(".")),
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
fn run(_op: &Op<'_>, perform: &mut dyn FnMut() -> io::Result<()>) -> io::Result<()> {
    perform()
}

#[cfg(feature = "fault-injection")]
use hooks::run;
#[cfg(feature = "fault-injection")]
pub use hooks::{Hook, HookGuard, install};

#[cfg(feature = "fault-injection")]
mod hooks {
    use std::io;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use super::Op;

    /// Stands between segwal and the disk for the calls under one
    /// directory (see [`install`]).
    pub trait Hook: Send + Sync {
        /// Called for each operation: performs it by calling `perform`
        /// (returning its result), or fails it by returning an error
        /// without calling `perform`.
        fn run(&self, op: &Op<'_>, perform: &mut dyn FnMut() -> io::Result<()>) -> io::Result<()>;
    }

    /// Installed hooks with their directories and ids.
    type Registry = Vec<(u64, PathBuf, Arc<dyn Hook>)>;

    static HOOKS: Mutex<Registry> = Mutex::new(Vec::new());
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);

    /// Installs `hook` for every operation on a path under `root` (compared
    /// as given, so use the same spelling of the path that segwal is
    /// configured with), until the guard is dropped. Hooks for different
    /// roots coexist, so tests running in parallel each have their own.
    pub fn install(root: impl Into<PathBuf>, hook: Arc<dyn Hook>) -> HookGuard {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        registry().push((id, root.into(), hook));
        HookGuard { id }
    }

    /// Uninstalls its hook when dropped.
    #[derive(Debug)]
    #[must_use = "the hook is uninstalled when the guard is dropped"]
    pub struct HookGuard {
        id: u64,
    }

    impl Drop for HookGuard {
        fn drop(&mut self) {
            registry().retain(|(id, _, _)| *id != self.id);
        }
    }

    fn registry() -> std::sync::MutexGuard<'static, Registry> {
        HOOKS.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn run(op: &Op<'_>, perform: &mut dyn FnMut() -> io::Result<()>) -> io::Result<()> {
        let hook = registry()
            .iter()
            .find(|(_, root, _)| op.path().starts_with(root))
            .map(|(_, _, hook)| Arc::clone(hook));
        match hook {
            Some(hook) => hook.run(op, perform),
            None => perform(),
        }
    }
}
