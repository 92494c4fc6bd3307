//! The floors (`floor`, `floor-dsync`, `floor-group`): what a log costs
//! with no format at all, the lower bound the engines are measured against.

use super::*;

/// The floors: every batch is one `writev` of its payloads (no framing, no
/// checksum) appended to one file (`O_APPEND`, so concurrent writers never
/// overlap), then, if synced, an `fdatasync` of its own: no group commit.
/// With `dsync` the file is opened `O_DSYNC` instead, so that the `writev`
/// is durable on return and there is no second call. Reading back reads the
/// file in 1 MiB blocks and counts `entry_len`-byte entries. A floor has no
/// notion of a region or a table: it ignores the location, and every batch
/// goes to the one file.
pub(crate) struct Floor {
    file: File,
    path: PathBuf,
    /// Whether a write must be durable on return.
    synced: bool,
    /// Whether the file was opened `O_DSYNC`, so that every write already is.
    dsync: bool,
    entry_len: usize,
}

impl Floor {
    const FILE: &'static str = "floor.log";

    pub(super) fn open(dir: &Path, synced: bool, dsync: bool, entry_len: usize) -> Result<Floor> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(Floor::FILE);
        let dsync = synced && dsync;
        let file = File::options()
            .create(true)
            .append(true)
            .read(true)
            .custom_flags(if dsync { libc::O_DSYNC } else { 0 })
            .open(&path)
            .context(|| format!("cannot open {}", path.display()))?;
        Ok(Floor {
            file,
            path,
            synced,
            dsync,
            entry_len,
        })
    }

    /// Appends `entries` with one `writev` (more only on a short write).
    fn append(&self, entries: &[Bytes]) -> Result<()> {
        let slices: Vec<IoSlice<'_>> = entries.iter().map(|e| IoSlice::new(e)).collect();
        let total: usize = entries.iter().map(|e| e.len()).sum();
        let written = (&self.file)
            .write_vectored(&slices)
            .context(|| format!("write to {} failed", self.path.display()))?;
        if written < total {
            // Regular files do not write short but on a full disk; finish
            // (no longer atomically) rather than pretend.
            let rest: Vec<u8> = entries.iter().flat_map(|e| e.iter().copied()).collect();
            (&self.file)
                .write_all(&rest[written..])
                .context(|| format!("write to {} failed", self.path.display()))?;
        }
        Ok(())
    }
}

impl Wal for Floor {
    fn write(&self, _at: Location, _first_index: u64, entries: &[Bytes]) -> Result<()> {
        self.append(entries)?;
        if self.synced && !self.dsync {
            self.sync()?;
        }
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .context(|| format!("fdatasync of {} failed", self.path.display()))
    }

    fn read_table(&self, _at: Location, _visit: &mut dyn FnMut(&[u8])) -> Result<()> {
        Err(Error::msg("the floor has no tables"))
    }

    fn read_all(&self, visit: &mut dyn FnMut(&[u8])) -> Result<()> {
        let mut file =
            File::open(&self.path).context(|| format!("cannot open {}", self.path.display()))?;
        let mut block = vec![0u8; (1 << 20) / self.entry_len * self.entry_len];
        loop {
            let mut filled = 0;
            while filled < block.len() {
                let n = file
                    .read(&mut block[filled..])
                    .context(|| format!("read of {} failed", self.path.display()))?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            for entry in block[..filled].chunks(self.entry_len) {
                visit(entry);
            }
            if filled < block.len() {
                return Ok(());
            }
        }
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.sync()
    }
}

/// `floor-group`: the floor's appends, with the simplest group commit
/// that shares each `fdatasync` among concurrent writers. A writer queues
/// its batch (the payloads are reference-counted, so nothing is copied)
/// and then, until a group write has carried it, either takes the file
/// and writes every queued batch with one `writev` and one `fdatasync`, or
/// yields its core. No framing, no checksum, no index, no parking: a
/// bound on what grouping alone can do on the medium.
pub(crate) struct GroupFloor {
    /// Opened unsynced: the group syncs for itself.
    floor: Floor,
    synced: bool,
    queue: Mutex<Vec<Queued>>,
    /// Held by the writer of a group.
    file: Mutex<()>,
}

/// A batch waiting for a group write, and where its outcome goes.
struct Queued {
    entries: Vec<Bytes>,
    outcome: Arc<AtomicU8>,
}

/// The outcomes a queued batch can have.
const QUEUED: u8 = 0;
const WRITTEN: u8 = 1;
const FAILED: u8 = 2;

impl GroupFloor {
    pub(super) fn open(dir: &Path, synced: bool, entry_len: usize) -> Result<GroupFloor> {
        Ok(GroupFloor {
            floor: Floor::open(dir, false, false, entry_len)?,
            synced,
            queue: Mutex::new(Vec::new()),
            file: Mutex::new(()),
        })
    }

    /// Writes and syncs every queued batch (none, if another group write
    /// took them all).
    fn write_group(&self) -> Result<()> {
        let group = std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()));
        if group.is_empty() {
            return Ok(());
        }
        let all: Vec<Bytes> = group
            .iter()
            .flat_map(|q| q.entries.iter().cloned())
            .collect();
        let written = self.floor.append(&all).and_then(|()| self.floor.sync());
        let outcome = if written.is_ok() { WRITTEN } else { FAILED };
        for queued in &group {
            queued.outcome.store(outcome, Ordering::Release);
        }
        written
    }
}

impl Wal for GroupFloor {
    fn write(&self, at: Location, first_index: u64, entries: &[Bytes]) -> Result<()> {
        if !self.synced {
            return self.floor.write(at, first_index, entries);
        }
        let outcome = Arc::new(AtomicU8::new(QUEUED));
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Queued {
                entries: entries.to_vec(),
                outcome: Arc::clone(&outcome),
            });
        loop {
            match outcome.load(Ordering::Acquire) {
                WRITTEN => return Ok(()),
                FAILED => {
                    return Err(Error::msg(format!(
                        "the group write to {} that carried this batch failed",
                        self.floor.path.display()
                    )));
                }
                _ => {}
            }
            match self.file.try_lock() {
                Ok(_file) => {
                    self.write_group()?;
                }
                Err(_) => std::thread::yield_now(),
            }
        }
    }

    fn sync(&self) -> Result<()> {
        self.floor.sync()
    }

    fn read_table(&self, at: Location, visit: &mut dyn FnMut(&[u8])) -> Result<()> {
        self.floor.read_table(at, visit)
    }

    fn read_all(&self, visit: &mut dyn FnMut(&[u8])) -> Result<()> {
        self.floor.read_all(visit)
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.floor.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_floor_reads_back_what_it_wrote_in_order() {
        // The floors are measured only by their speed, so this checks the
        // other half: each writes every byte, once, in order.
        for kind in [
            EngineKind::Floor,
            EngineKind::FloorDsync,
            EngineKind::FloorGroup,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let wal = open(kind, dir.path(), true, 4, Tuning::default()).unwrap();
            for batch in 0u8..3 {
                let entries: Vec<Bytes> = (0..2)
                    .map(|i| Bytes::from(vec![batch * 2 + i; 4]))
                    .collect();
                wal.write(Location::new(REGION, 1), 1, &entries).unwrap();
            }
            let mut read = Vec::new();
            wal.read_all(&mut |entry| read.push(entry.to_vec()))
                .unwrap();
            let expected: Vec<Vec<u8>> = (0u8..6).map(|i| vec![i; 4]).collect();
            assert_eq!(read, expected, "{kind}");
            wal.close().unwrap();
        }
    }

    #[test]
    fn floor_group_writes_every_concurrent_batch_once_and_in_each_writer_s_order() {
        // Batches go through other writers' group writes: none may be lost,
        // doubled or reordered within its writer.
        let dir = tempfile::tempdir().unwrap();
        let wal: Arc<dyn Wal> = Arc::from(
            open(
                EngineKind::FloorGroup,
                dir.path(),
                true,
                2,
                Tuning::default(),
            )
            .unwrap(),
        );
        let writers: Vec<_> = (0u8..8)
            .map(|writer| {
                let wal = Arc::clone(&wal);
                std::thread::spawn(move || {
                    for batch in 0u8..50 {
                        let at = Location::new(REGION, u64::from(writer) + 1);
                        wal.write(
                            at,
                            1 + u64::from(batch),
                            &[Bytes::from(vec![writer, batch])],
                        )
                        .unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        let mut next = [0u8; 8];
        wal.read_all(&mut |entry| {
            let (writer, batch) = (usize::from(entry[0]), entry[1]);
            assert_eq!(batch, next[writer], "writer {writer}");
            next[writer] += 1;
        })
        .unwrap();
        assert_eq!(next, [50; 8]);
    }
}
