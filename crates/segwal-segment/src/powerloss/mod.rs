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
//! This file holds the recorder and the replay; `model.rs` the simulated
//! file system they replay into and the images built from it.
//!
//! The model is strict POSIX: `fdatasync` is taken to make data and size
//! durable but never a directory entry, and nothing is durable unless a
//! sync covered it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::disk::{self, Hook, HookGuard, Op};

mod model;

use model::{Model, SplitMix, WriteState};

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
