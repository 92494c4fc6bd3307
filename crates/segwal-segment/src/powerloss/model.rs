//! The file system a power loss is simulated on: directories, files and
//! their writes with what a sync made durable, and the crash images built
//! from them (see the module docs of `powerloss`).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Event, Fate, ImageStats, SECTOR};

/// A node in a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    File(usize),
    Dir,
}

/// A change to a directory not yet made durable by a directory sync.
#[derive(Debug, Clone)]
enum DirChange {
    Link(OsString, Node),
    Unlink(OsString),
    Rename(OsString, OsString),
}

#[derive(Debug, Clone, Default)]
struct Dir {
    durable: BTreeMap<OsString, Node>,
    current: BTreeMap<OsString, Node>,
    pending: Vec<DirChange>,
}

/// A write not (known to be) on the disk yet.
#[derive(Debug, Clone)]
struct Write {
    offset: u64,
    data: Arc<[u8]>,
    state: WriteState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WriteState {
    /// Covered by a completed sync.
    Durable,
    /// Not synced yet: a power loss keeps, drops or tears it.
    Pending,
    /// A sync that should have covered it failed: whether any of it
    /// reached the disk is unknown, and no later sync will write it.
    Limbo,
}

/// A file: bytes known durable, then writes in the order they were made
/// (kept in order, since a later write can cover an earlier one).
#[derive(Debug, Clone, Default)]
struct Inode {
    base: Vec<u8>,
    writes: Vec<Write>,
}

impl Inode {
    /// The file's length as a reader sees it now.
    fn len(&self) -> u64 {
        self.writes
            .iter()
            .map(|w| w.offset + w.data.len() as u64)
            .fold(self.base.len() as u64, u64::max)
    }

    fn sync(&mut self) {
        for write in &mut self.writes {
            if write.state == WriteState::Pending {
                write.state = WriteState::Durable;
            }
        }
        // Durable writes before the first one in limbo can be folded into
        // the base; the rest must stay in order behind it.
        let settled = self
            .writes
            .iter()
            .position(|w| w.state != WriteState::Durable)
            .unwrap_or(self.writes.len());
        for write in self.writes.drain(..settled) {
            apply_write(&mut self.base, write.offset, &write.data);
        }
    }

    fn lose_sync(&mut self) {
        for write in &mut self.writes {
            if write.state == WriteState::Pending {
                write.state = WriteState::Limbo;
            }
        }
    }
}

/// The durable state of a directory tree, and what is pending on top.
#[derive(Debug, Clone, Default)]
pub(super) struct Model {
    /// Keyed by path relative to the root ("" is the root).
    dirs: HashMap<PathBuf, Dir>,
    inodes: Vec<Inode>,
}

impl Model {
    pub(super) fn snapshot(root: &Path) -> io::Result<Model> {
        let mut model = Model::default();
        model.snapshot_dir(root, PathBuf::new())?;
        Ok(model)
    }

    fn snapshot_dir(&mut self, root: &Path, rel: PathBuf) -> io::Result<()> {
        let mut dir = Dir::default();
        for entry in fs::read_dir(root.join(&rel))? {
            let entry = entry?;
            let node = if entry.file_type()?.is_dir() {
                self.snapshot_dir(root, rel.join(entry.file_name()))?;
                Node::Dir
            } else {
                self.inodes.push(Inode {
                    base: fs::read(entry.path())?,
                    writes: Vec::new(),
                });
                Node::File(self.inodes.len() - 1)
            };
            dir.durable.insert(entry.file_name(), node);
        }
        dir.current = dir.durable.clone();
        self.dirs.insert(rel, dir);
        Ok(())
    }

    /// The directory (relative to the root) and name of `path`.
    fn split(root: &Path, path: &Path) -> (PathBuf, OsString) {
        let rel = path
            .strip_prefix(root)
            .unwrap_or_else(|_| panic!("{} is outside {}", path.display(), root.display()));
        let name = rel
            .file_name()
            .unwrap_or_else(|| panic!("{} has no file name", path.display()));
        let parent = rel.parent().unwrap_or(Path::new("")).to_owned();
        (parent, name.to_owned())
    }

    fn dir_mut(&mut self, rel: &Path) -> &mut Dir {
        self.dirs
            .get_mut(rel)
            .unwrap_or_else(|| panic!("no directory {} in the model", rel.display()))
    }

    fn inode_of(&mut self, root: &Path, path: &Path) -> &mut Inode {
        let (parent, name) = Model::split(root, path);
        match self.dir_mut(&parent).current.get(&name) {
            Some(&Node::File(inode)) => &mut self.inodes[inode],
            _ => panic!("{} is not a file in the model", path.display()),
        }
    }

    fn link(&mut self, root: &Path, path: &Path, node: Node) {
        let (parent, name) = Model::split(root, path);
        let dir = self.dir_mut(&parent);
        dir.current.insert(name.clone(), node);
        dir.pending.push(DirChange::Link(name, node));
    }

    pub(super) fn apply(&mut self, root: &Path, event: &Event) {
        match event {
            Event::Create(path) => {
                self.inodes.push(Inode::default());
                let inode = self.inodes.len() - 1;
                self.link(root, path, Node::File(inode));
            }
            Event::Write {
                path,
                offset,
                data,
                state,
            } => {
                self.inode_of(root, path).writes.push(Write {
                    offset: *offset,
                    data: Arc::clone(data),
                    state: *state,
                });
            }
            Event::Allocate { path, len } => {
                // Reserving blocks changes no byte; growing the file is, to
                // a power loss, a write of zeros past the old end.
                let inode = self.inode_of(root, path);
                let old_len = inode.len();
                if *len > old_len {
                    inode.writes.push(Write {
                        offset: old_len,
                        data: vec![0u8; (*len - old_len) as usize].into(),
                        state: WriteState::Pending,
                    });
                }
            }
            Event::Deallocate { path, offset, len } => {
                // To a power loss, a hole punched in a file is a write of
                // zeros over it, within the file's length, that a sync makes
                // durable: until then the old bytes may come back.
                let inode = self.inode_of(root, path);
                let end = (offset + len).min(inode.len());
                if end > *offset {
                    inode.writes.push(Write {
                        offset: *offset,
                        data: vec![0u8; (end - offset) as usize].into(),
                        state: WriteState::Pending,
                    });
                }
            }
            Event::Sync(path) => self.inode_of(root, path).sync(),
            Event::LostSync(path) => self.inode_of(root, path).lose_sync(),
            Event::Rename { from, to } => {
                let (parent, from_name) = Model::split(root, from);
                let (to_parent, to_name) = Model::split(root, to);
                assert_eq!(parent, to_parent, "renames stay within a directory");
                let dir = self.dir_mut(&parent);
                let node = dir
                    .current
                    .remove(&from_name)
                    .unwrap_or_else(|| panic!("rename of missing {}", from.display()));
                dir.current.insert(to_name.clone(), node);
                dir.pending.push(DirChange::Rename(from_name, to_name));
            }
            Event::Remove(path) => {
                let (parent, name) = Model::split(root, path);
                let dir = self.dir_mut(&parent);
                dir.current.remove(&name);
                dir.pending.push(DirChange::Unlink(name));
            }
            Event::CreateDir(path) => {
                let rel = path
                    .strip_prefix(root)
                    .expect("checked by split")
                    .to_owned();
                self.dirs.insert(rel, Dir::default());
                self.link(root, path, Node::Dir);
            }
            Event::SyncDir(path) => {
                let rel = path
                    .strip_prefix(root)
                    .unwrap_or_else(|_| panic!("{} is outside the root", path.display()));
                let dir = self.dir_mut(rel);
                dir.durable = dir.current.clone();
                dir.pending.clear();
            }
        }
    }

    /// Writes the crash image of directory `rel` into `dest`.
    pub(super) fn write_dir(
        &self,
        rel: &Path,
        dest: &Path,
        fate: Fate,
        rng: &mut SplitMix,
        stats: &mut ImageStats,
    ) -> io::Result<()> {
        let dir = &self.dirs[rel];
        let kept = match fate {
            Fate::KeepAll => dir.pending.len(),
            Fate::DropAll => 0,
            Fate::Random(_) => rng.below(dir.pending.len() as u64 + 1) as usize,
        };
        stats.dir_changes_lost += (dir.pending.len() - kept) as u64;
        let mut entries = dir.durable.clone();
        for change in &dir.pending[..kept] {
            match change {
                DirChange::Link(name, node) => {
                    entries.insert(name.clone(), *node);
                }
                DirChange::Unlink(name) => {
                    entries.remove(name);
                }
                DirChange::Rename(from, to) => {
                    if let Some(node) = entries.remove(from) {
                        entries.insert(to.clone(), node);
                    }
                }
            }
        }
        for (name, node) in entries {
            let path = dest.join(&name);
            match node {
                Node::Dir => {
                    fs::create_dir(&path)?;
                    self.write_dir(&rel.join(&name), &path, fate, rng, stats)?;
                }
                Node::File(inode) => {
                    let contents = self.inodes[inode].crash_contents(fate, rng, stats);
                    fs::write(&path, contents)?;
                }
            }
        }
        Ok(())
    }
}

impl Inode {
    fn crash_contents(&self, fate: Fate, rng: &mut SplitMix, stats: &mut ImageStats) -> Vec<u8> {
        let mut contents = self.base.clone();
        for write in &self.writes {
            if write.state == WriteState::Durable {
                apply_write(&mut contents, write.offset, &write.data);
                continue;
            }
            let choice = match fate {
                Fate::KeepAll => 0,
                Fate::DropAll => 1,
                Fate::Random(_) => rng.below(3),
            };
            match choice {
                0 => {
                    stats.writes_kept += 1;
                    apply_write(&mut contents, write.offset, &write.data);
                }
                1 => stats.writes_dropped += 1,
                _ => {
                    stats.writes_torn += 1;
                    // Sector boundaries are absolute file offsets.
                    let end = write.offset + write.data.len() as u64;
                    let mut at = write.offset;
                    while at < end {
                        let next = ((at / SECTOR + 1) * SECTOR).min(end);
                        if rng.below(2) == 0 {
                            let from = (at - write.offset) as usize;
                            let to = (next - write.offset) as usize;
                            apply_write(&mut contents, at, &write.data[from..to]);
                        }
                        at = next;
                    }
                }
            }
        }
        contents
    }
}

fn apply_write(contents: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let (start, end) = (offset as usize, offset as usize + data.len());
    if contents.len() < end {
        contents.resize(end, 0);
    }
    contents[start..end].copy_from_slice(data);
}

/// A small deterministic generator (SplitMix64), so an image is reproduced
/// from its seed.
#[derive(Debug)]
pub(super) struct SplitMix(pub(super) u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `[0, n)` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
