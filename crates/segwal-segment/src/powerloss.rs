//! Power-loss simulation for tests (feature `fault-injection`).
//!
//! A [`Recorder`] is a [`Hook`] that performs every file-system call under
//! a directory (see [`crate::disk`]) and logs it, in the order the calls
//! happen. [`Replay`] then walks the log and, at any point, writes out a
//! state the disk could be in if power were lost right there:
//!
//! - every file write covered by a completed sync survives, and so does a
//!   completed synced write (`RWF_DSYNC`), which covers only itself;
//! - each later write is dropped, kept, or torn: kept or lost 512-byte
//!   sector by sector;
//! - every directory change (create, rename, remove, new subdirectory)
//!   covered by a completed directory sync survives; of the later ones in
//!   each directory, a prefix survives (journalling file systems commit
//!   metadata in order), so a file can exist with the directory not knowing
//!   it yet, and a rename can be undone;
//! - a directory whose own entry is lost takes everything in it along.
//!
//! A recorder can also fail calls ([`Recorder::inject`]). A failed sync is
//! modelled the way Linux behaves ("fsyncgate"): the unsynced writes it was
//! meant to cover stay readable in the page cache, but whether any of their
//! sectors reached the disk is unknown, and no later sync writes them: in
//! every later crash image they are kept, dropped or torn, unless a later
//! synced write covers them. A failed synced write is modelled as the worst
//! it can leave: its data in the page cache, and its sync failed.
//!
//! The model is strict POSIX: `fdatasync` is taken to make data and size
//! durable but never a directory entry, and nothing is durable unless a
//! sync covered it.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::disk::{self, Hook, HookGuard, Op};

/// Granularity at which an unsynced write can be torn.
pub const SECTOR: u64 = 512;

/// One logged call.
#[derive(Debug, Clone)]
enum Event {
    Create(PathBuf),
    Write {
        path: PathBuf,
        offset: u64,
        data: Arc<[u8]>,
        /// `Pending` for a plain write; `Durable` for a synced one
        /// ([`Op::WriteSynced`]), `Limbo` if its sync failed.
        state: WriteState,
    },
    /// Blocks reserved up to `len`: the file grows to `len` with zeros.
    Allocate {
        path: PathBuf,
        len: u64,
    },
    /// Blocks given back: the range reads as zeros.
    Deallocate {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
    Sync(PathBuf),
    /// A sync that failed: its writes stay visible but never reach the disk.
    LostSync(PathBuf),
    Rename {
        from: PathBuf,
        to: PathBuf,
    },
    Remove(PathBuf),
    CreateDir(PathBuf),
    SyncDir(PathBuf),
}

impl Event {
    fn write(path: &Path, offset: u64, data: &[u8], state: WriteState) -> Event {
        Event::Write {
            path: path.to_owned(),
            offset,
            data: data.into(),
            state,
        }
    }

    fn describe(&self, root: &Path) -> String {
        let rel = |p: &Path| p.strip_prefix(root).unwrap_or(p).display().to_string();
        match self {
            Event::Create(path) => format!("create {}", rel(path)),
            Event::Write {
                path,
                offset,
                data,
                state,
            } => {
                let kind = match state {
                    WriteState::Pending => "write",
                    WriteState::Durable => "synced write",
                    WriteState::Limbo => "failed synced write",
                };
                format!(
                    "{kind} {} [{offset}, {})",
                    rel(path),
                    offset + data.len() as u64
                )
            }
            Event::Allocate { path, len } => format!("allocate {} [0, {len})", rel(path)),
            Event::Deallocate { path, offset, len } => {
                format!("deallocate {} [{offset}, {})", rel(path), offset + len)
            }
            Event::Sync(path) => format!("sync {}", rel(path)),
            Event::LostSync(path) => format!("failed sync {}", rel(path)),
            Event::Rename { from, to } => format!("rename {} -> {}", rel(from), rel(to)),
            Event::Remove(path) => format!("remove {}", rel(path)),
            Event::CreateDir(path) => format!("mkdir {}", rel(path)),
            Event::SyncDir(path) => format!("sync dir {}", rel(path)),
        }
    }
}

/// Decides, for each call, whether it fails (and with what error).
type FaultFn = Box<dyn FnMut(&Op<'_>) -> Option<io::Error> + Send>;

/// Logs every file-system call under one directory; see the module docs.
pub struct Recorder {
    root: PathBuf,
    initial: Model,
    /// Held while a call is performed, so the log's order is the order in
    /// which the calls took effect.
    log: Mutex<Vec<Event>>,
    faults: Mutex<Option<FaultFn>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("root", &self.root)
            .field("events", &self.position())
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// Starts recording the calls under `root` (an existing directory,
    /// named as segwal will be given it). What is in it now counts as
    /// durable. Recording stops when the guard is dropped.
    pub fn start(root: &Path) -> io::Result<(Arc<Recorder>, HookGuard)> {
        let recorder = Arc::new(Recorder {
            root: root.to_owned(),
            initial: Model::snapshot(root)?,
            log: Mutex::new(Vec::new()),
            faults: Mutex::new(None),
        });
        let guard = disk::install(root, Arc::clone(&recorder) as Arc<dyn Hook>);
        Ok((recorder, guard))
    }

    /// How many calls have been logged: a point in the log that
    /// [`Replay::advance_to`] can go to.
    pub fn position(&self) -> usize {
        self.lock_log().len()
    }

    /// From now on, asks `fault` about each call before performing it; a
    /// call it returns an error for is not performed and fails with that
    /// error.
    pub fn inject(&self, fault: impl FnMut(&Op<'_>) -> Option<io::Error> + Send + 'static) {
        *self.faults.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(fault));
    }

    /// Stops injecting faults.
    pub fn stop_faults(&self) {
        *self.faults.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// A replay of the calls logged so far, positioned before the first.
    pub fn replay(&self) -> Replay {
        Replay {
            root: self.root.clone(),
            events: self.lock_log().clone(),
            at: 0,
            model: self.initial.clone(),
        }
    }

    fn lock_log(&self) -> MutexGuard<'_, Vec<Event>> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Hook for Recorder {
    fn run(&self, op: &Op<'_>, perform: &mut dyn FnMut() -> io::Result<()>) -> io::Result<()> {
        let mut log = self.lock_log();
        let fault = self
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            .and_then(|fault| fault(op));
        if let Some(err) = fault {
            match *op {
                Op::Sync { path } => log.push(Event::LostSync(path.to_path_buf())),
                // The worst a failed synced write can leave: its data in
                // the page cache, readable, and its sync failed.
                Op::WriteSynced { path, offset, data } => {
                    perform()?;
                    log.push(Event::write(path, offset, data, WriteState::Limbo));
                }
                _ => {}
            }
            return Err(err);
        }
        perform()?;
        log.push(match *op {
            Op::Create { path } => Event::Create(path.to_owned()),
            Op::Write { path, offset, data } => {
                Event::write(path, offset, data, WriteState::Pending)
            }
            Op::WriteSynced { path, offset, data } => {
                Event::write(path, offset, data, WriteState::Durable)
            }
            Op::Allocate { path, len } => Event::Allocate {
                path: path.to_owned(),
                len,
            },
            Op::Deallocate { path, offset, len } => Event::Deallocate {
                path: path.to_owned(),
                offset,
                len,
            },
            Op::Sync { path } => Event::Sync(path.to_owned()),
            Op::Rename { from, to } => Event::Rename {
                from: from.to_owned(),
                to: to.to_owned(),
            },
            Op::Remove { path } => Event::Remove(path.to_owned()),
            Op::CreateDir { path } => Event::CreateDir(path.to_owned()),
            Op::SyncDir { path } => Event::SyncDir(path.to_owned()),
        });
        Ok(())
    }
}

/// What a simulated power loss does to the writes and directory changes
/// not yet covered by a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// All of them reached the disk (what a process crash leaves).
    KeepAll,
    /// None of them did.
    DropAll,
    /// Each write is dropped, kept or torn, and a prefix of each
    /// directory's changes survives, chosen by this seed.
    Random(u64),
}

/// What one crash image lost, for reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImageStats {
    /// Unsynced writes kept whole.
    pub writes_kept: u64,
    /// Unsynced writes dropped.
    pub writes_dropped: u64,
    /// Unsynced writes torn: some sectors kept, others lost.
    pub writes_torn: u64,
    /// Unsynced directory changes lost.
    pub dir_changes_lost: u64,
}

/// Walks a recorded log and builds crash images; see the module docs.
#[derive(Debug, Clone)]
pub struct Replay {
    root: PathBuf,
    events: Vec<Event>,
    at: usize,
    model: Model,
}

impl Replay {
    /// Calls in the log.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// How many calls have been replayed.
    pub fn position(&self) -> usize {
        self.at
    }

    /// The last `n` calls replayed, described one per line: what a failure
    /// message shows of where the power was lost.
    pub fn recent(&self, n: usize) -> String {
        let from = self.at.saturating_sub(n);
        self.events[from..self.at]
            .iter()
            .enumerate()
            .map(|(i, event)| format!("  {}: {}", from + i, event.describe(&self.root)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Replays calls up to position `to` (at most [`Replay::len`]); going
    /// back is not possible.
    pub fn advance_to(&mut self, to: usize) {
        assert!(
            to >= self.at && to <= self.events.len(),
            "bad position {to}"
        );
        while self.at < to {
            let event = self.events[self.at].clone();
            self.model.apply(&self.root, &event);
            self.at += 1;
        }
    }

    /// Writes into the empty or missing directory `dest` what the disk
    /// under the recorded root would hold if power were lost now, with
    /// `fate` deciding what happens to the unsynced changes.
    pub fn write_image(&self, fate: Fate, dest: &Path) -> io::Result<ImageStats> {
        let mut rng = SplitMix(match fate {
            Fate::Random(seed) => seed,
            _ => 0,
        });
        let mut stats = ImageStats::default();
        fs::create_dir_all(dest)?;
        self.model
            .write_dir(Path::new(""), dest, fate, &mut rng, &mut stats)?;
        Ok(stats)
    }
}

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
enum WriteState {
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
struct Model {
    /// Keyed by path relative to the root ("" is the root).
    dirs: HashMap<PathBuf, Dir>,
    inodes: Vec<Inode>,
}

impl Model {
    fn snapshot(root: &Path) -> io::Result<Model> {
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

    fn apply(&mut self, root: &Path, event: &Event) {
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
    fn write_dir(
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
struct SplitMix(u64);

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
