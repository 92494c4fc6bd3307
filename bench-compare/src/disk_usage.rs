//! What a data dir takes on disk: the blocks allocated to its files, which
//! counts space an engine reserved ahead (`fallocate`d, preallocated
//! segments) and leaves out holes, unlike the files' lengths.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::{Context, Result};

/// The bytes allocated to every file under `dir`, recursively:
/// `st_blocks * 512` summed. Symbolic links are not followed, and
/// directories' own blocks are left out.
pub(crate) fn allocated_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    let entries = std::fs::read_dir(dir).context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries {
        let entry = entry.context(|| format!("cannot list {}", dir.display()))?;
        let path = entry.path();
        let metadata = std::fs::symlink_metadata(&path)
            .context(|| format!("cannot stat {}", path.display()))?;
        total += if metadata.is_dir() {
            allocated_bytes(&path)?
        } else {
            // `st_blocks` counts 512-byte units whatever the file system's
            // block size (POSIX leaves the unit open; Linux fixes it).
            metadata.blocks() * 512
        };
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_allocated_blocks_of_nested_files_and_not_holes() {
        // A file's length is not what it takes: a hole takes nothing, and a
        // file in a subdirectory counts as much as one at the top.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![1u8; 64 << 10]).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub").join("b"), vec![2u8; 64 << 10]).unwrap();
        let sparse = std::fs::File::create(dir.path().join("sub").join("sparse")).unwrap();
        sparse.set_len(64 << 20).unwrap();
        let total = allocated_bytes(dir.path()).unwrap();
        // Each written file takes at least its length; the 64 MiB hole takes
        // (close to) nothing.
        assert!(total >= 2 * (64 << 10), "{total}");
        assert!(total < 4 << 20, "{total}");
    }
}
