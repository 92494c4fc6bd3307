use super::*;
use okaywal::{
    Configuration, Entry, EntryId, LogManager, ReadChunkResult, SegmentReader, WriteAheadLog,
};

/// What recovery found: entries and payload bytes.
#[derive(Debug, Default)]
struct Counts {
    entries: AtomicU64,
    bytes: AtomicU64,
}

/// The log manager: counts the recovered payloads (of one location's
/// stream id, or all), reading every byte and checking every chunk's
/// checksum, and checkpoints nothing.
#[derive(Debug)]
struct Manager {
    counts: Arc<Counts>,
    stream: Option<u64>,
}

impl LogManager for Manager {
    fn recover(&mut self, entry: &mut Entry<'_>) -> std::io::Result<()> {
        let mut header = true;
        let mut wanted = true;
        loop {
            let mut chunk = match entry.read_chunk()? {
                ReadChunkResult::Chunk(chunk) => chunk,
                ReadChunkResult::EndOfEntry | ReadChunkResult::AbortedEntry => break,
            };
            let data = chunk.read_all()?;
            if !chunk.check_crc()? {
                return Err(std::io::Error::other("okaywal chunk checksum mismatch"));
            }
            if header {
                header = false;
                let stream = u64::from_be_bytes(data[..8].try_into().expect("8 bytes"));
                wanted = self.stream.is_none_or(|s| s == stream);
            } else if wanted {
                self.counts.entries.fetch_add(1, Ordering::Relaxed);
                self.counts
                    .bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn checkpoint_to(
        &mut self,
        _last_checkpointed_id: EntryId,
        _checkpointed_entries: &mut SegmentReader,
        _wal: &WriteAheadLog,
    ) -> std::io::Result<()> {
        Ok(())
    }
}

pub(super) struct Okay {
    wal: WriteAheadLog,
}

impl Okay {
    /// Opens (recovers) the log in `dir`, counting the entries of
    /// location `at` (or of all locations) that recovery reads; returns
    /// the log and the entries and payload bytes counted.
    pub(super) fn open(dir: &Path, at: Option<Location>) -> Result<(Okay, u64, u64)> {
        let counts = Arc::new(Counts::default());
        let manager = Manager {
            counts: Arc::clone(&counts),
            stream: at.map(Location::stream_id),
        };
        let config = Configuration::default_for(dir).checkpoint_after_bytes(u64::MAX);
        let wal = config
            .open(manager)
            .context(|| format!("cannot open okaywal in {}", dir.display()))?;
        let entries = counts.entries.load(Ordering::Relaxed);
        let bytes = counts.bytes.load(Ordering::Relaxed);
        Ok((Okay { wal }, entries, bytes))
    }

    pub(super) fn close_boxed(self) -> Result<()> {
        self.wal.shutdown().context(|| "okaywal shutdown failed")
    }
}

impl Wal for Okay {
    fn write(&self, at: Location, first_index: u64, entries: &[Bytes]) -> Result<()> {
        let fail = || format!("okaywal write to {at} failed");
        let mut entry = self.wal.begin_entry().context(fail)?;
        entry
            .write_chunk(&location_key(at, first_index))
            .context(fail)?;
        for payload in entries {
            entry.write_chunk(payload).context(fail)?;
        }
        entry.commit().context(fail)?;
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        // Every commit is synced already.
        Ok(())
    }

    fn read_table(&self, _at: Location, _visit: &mut dyn FnMut(&[u8])) -> Result<()> {
        Err(Error::msg(
            "okaywal reads tables only in recovery; use okaywal_read_table",
        ))
    }

    fn read_all(&self, _visit: &mut dyn FnMut(&[u8])) -> Result<()> {
        Err(Error::msg(
            "okaywal reads entries only in recovery; use recover_read_all",
        ))
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.close_boxed()
    }
}
