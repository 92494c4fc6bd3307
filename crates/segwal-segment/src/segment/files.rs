//! The file under a segment: salt, lock, header, preallocation, mapping.

use std::fs::{File, TryLockError};
use std::hash::{BuildHasher, Hasher};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use memmap2::{MmapOptions, MmapRaw};
use segwal_format::{SEGMENT_HEADER_LEN, SegmentHeader, SegmentIdentity};
use snafu::{ResultExt, ensure};

use crate::disk;
use crate::error::{
    BadHeaderSnafu, LockedSnafu, OpenSnafu, Result, SyncDirSnafu, WrongIdentitySnafu,
};

use super::options::{PACED_ZERO_CHUNK, Preallocation, ZERO_CHUNK, ZeroFillPace};

/// A salt for a new segment: unpredictable to anyone who only supplies
/// payloads. `RandomState` is seeded from the operating system's random
/// source; the identity, clock and process id make each salt distinct.
pub(super) fn new_salt(identity: SegmentIdentity) -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(identity.stream_id);
    hasher.write_u64(identity.segment_id);
    let now = SystemTime::now().duration_since(UNIX_EPOCH);
    hasher.write_u128(now.map_or(0, |d| d.as_nanos()));
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// Takes an exclusive (writer) or shared (reader) `flock` on the file, so
/// that no two opens can write one segment, in this process or another.
/// The lock goes with the file descriptor.
pub(super) fn lock(file: &File, path: &Path, exclusive: bool) -> Result<()> {
    let locked = if exclusive {
        file.try_lock()
    } else {
        file.try_lock_shared()
    };
    match locked {
        Ok(()) => Ok(()),
        Err(TryLockError::WouldBlock) => LockedSnafu { path }.fail(),
        Err(TryLockError::Error(source)) => Err(source).context(OpenSnafu { path }),
    }
}

/// Reads and checks the header of an open segment file: valid, and naming
/// `expected`. Returns it with the file's length.
pub(super) fn read_header(
    file: &File,
    path: &Path,
    expected: SegmentIdentity,
) -> Result<(SegmentHeader, u64)> {
    let len = file.metadata().context(OpenSnafu { path })?.len();
    let mut header_bytes = vec![0u8; len.min(SEGMENT_HEADER_LEN as u64) as usize];
    file.read_exact_at(&mut header_bytes, 0)
        .context(OpenSnafu { path })?;
    let found = SegmentHeader::decode(&header_bytes).context(BadHeaderSnafu { path })?;
    ensure!(
        found.identity() == expected,
        WrongIdentitySnafu {
            path,
            expected,
            found: found.identity(),
        }
    );
    Ok((found, len))
}

/// Writes the header, sets aside `capacity` bytes as `preallocation` says
/// (writing zeros where the file system cannot reserve blocks), then syncs
/// data and size.
///
/// Zeros are sent to the disk chunk by chunk as they are written
/// (`disk::start_writeback`), not left to the final sync or the kernel's
/// write-back: on a disk that the final sync would otherwise flood with a
/// whole segment at once, every `fdatasync` that writers of the active
/// segment wait for meanwhile would queue behind it. Before a chunk is
/// sent, the one before it must have reached the disk
/// (`disk::wait_writeback`), so at most two chunks of zeros are ever
/// queued ahead of a writer's sync. Chunks are 1 MiB, or, when `pace`
/// spreads them over time, 256 KiB: a sync that meets a paced chunk in
/// flight then waits for less. Once a paced creation is hurried, the rest
/// is reserved if the file system can, and zeroed without pauses if not.
pub(super) fn preallocate(
    file: &File,
    path: &Path,
    header: SegmentHeader,
    capacity: u64,
    preallocation: Preallocation,
    pace: &ZeroFillPace,
) -> std::io::Result<()> {
    // A segment the file system cannot hold is refused before any of it is
    // set aside: reserving or zeroing it would fail only once the disk is
    // full, and until the file is removed every other writer on that disk,
    // this WAL's other segments and the rest of the machine, would find
    // none left.
    if let Some(free) = disk::free_bytes(file)
        && free < capacity
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            format!("No space left on device: the file system has {free} bytes free"),
        ));
    }
    disk::write_at(file, path, &header.encode(), 0)?;
    let reserve = |file: &File| match disk::allocate(file, path, capacity) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == std::io::ErrorKind::Unsupported => Ok(false),
        Err(err) => Err(err),
    };
    let (reserved, reservable) = match preallocation {
        Preallocation::Zeroed => (false, true),
        Preallocation::Reserved => {
            let reserved = reserve(file)?;
            (reserved, reserved)
        }
    };
    if !reserved {
        let mut pausing = !pace.spread().is_zero();
        let chunk = if pausing {
            PACED_ZERO_CHUNK
        } else {
            ZERO_CHUNK
        };
        let zeros = vec![0u8; chunk.min(capacity as usize)];
        let start = SEGMENT_HEADER_LEN as u64;
        let started = Instant::now();
        let mut at = start;
        let mut previous_chunk = None;
        while at < capacity {
            if pausing && pace.wait_until_due(started, at - start, capacity - start) {
                pausing = false;
                pace.mark_cut_short();
                if reservable && reserve(file)? {
                    break;
                }
            }
            // Chunks end on multiples of the chunk size after the first.
            let n = (capacity - at).min(chunk as u64 - at % chunk as u64) as usize;
            disk::write_at(file, path, &zeros[..n], at)?;
            // Hints: a failed write-back is reported by the sync below.
            if let Some(previous) = previous_chunk {
                let _ = disk::wait_writeback(file, previous, at - previous);
            }
            let _ = disk::start_writeback(file, at, n as u64);
            previous_chunk = Some(at);
            at += n as u64;
        }
    }
    disk::sync_all(file, path)
}

/// Maps the whole file read-only. Raw, because the file is written (beyond
/// what readers see) while mapped; slices are made only over stable ranges.
pub(super) fn map(file: &File, path: &Path) -> Result<MmapRaw> {
    MmapOptions::new()
        .map_raw_read_only(file)
        .context(OpenSnafu { path })
}

/// Syncs the directory holding `path`, making a creation or removal durable.
pub(super) fn sync_parent_dir(path: &Path) -> Result<()> {
    disk::sync_parent(path).context(SyncDirSnafu {
        dir: path.parent().unwrap_or(Path::new(".")),
    })
}
