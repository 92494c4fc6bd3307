use super::*;
use raft_engine::{Config, Engine, LogBatch, MessageExt};
use raft_proto::eraftpb::Entry;

/// Entries per `fetch_entries_to` call when reading.
const READ_BATCH: u64 = 1024;

/// Tells raft-engine where an `Entry` keeps its index.
#[derive(Clone, Copy)]
struct EntryExt;

impl MessageExt for EntryExt {
    type Entry = Entry;

    fn index(entry: &Entry) -> u64 {
        entry.index
    }
}

pub(super) struct Raft {
    engine: Engine,
    synced: bool,
}

impl Raft {
    pub(super) fn open(dir: &Path, synced: bool, codec: Codec) -> Result<Raft> {
        // The defaults, as a user starts: 128 MiB files, recycling on,
        // lz4 tried on batches over 8 KiB; `--compression` sets that
        // threshold (0: off).
        let mut config = Config {
            dir: dir.display().to_string(),
            ..Config::default()
        };
        if let Some(threshold) = codec.raft_threshold() {
            config.batch_compression_threshold = raft_engine::ReadableSize(threshold);
        }
        let engine = Engine::open(config)
            .context(|| format!("cannot open raft-engine in {}", dir.display()))?;
        Ok(Raft { engine, synced })
    }

    /// Hands every entry of raft group `group` to `visit`, in order.
    fn read_group(&self, group: u64, visit: &mut dyn FnMut(&[u8])) -> Result<()> {
        let (Some(first), Some(last)) = (
            self.engine.first_index(group),
            self.engine.last_index(group),
        ) else {
            return Ok(());
        };
        let mut entries = Vec::new();
        let mut from = first;
        while from <= last {
            let to = (from + READ_BATCH).min(last + 1);
            entries.clear();
            self.engine
                .fetch_entries_to::<EntryExt>(group, from, to, None, &mut entries)
                .context(|| format!("raft-engine read of raft group {group} failed"))?;
            for entry in &entries {
                visit(&entry.data);
            }
            from = to;
        }
        Ok(())
    }
}

impl Wal for Raft {
    fn write(&self, at: Location, first_index: u64, entries: &[Bytes]) -> Result<()> {
        let messages: Vec<Entry> = entries
            .iter()
            .zip(first_index..)
            .map(|(payload, index)| Entry {
                term: 1,
                index,
                data: payload.clone(),
                ..Entry::default()
            })
            .collect();
        let mut batch = LogBatch::default();
        batch
            .add_entries::<EntryExt>(at.stream_id(), &messages)
            .context(|| format!("raft-engine cannot batch {at}"))?;
        self.engine
            .write(&mut batch, self.synced)
            .context(|| format!("raft-engine write to {at} failed"))?;
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        self.engine.sync().context(|| "raft-engine sync failed")
    }

    fn read_table(&self, at: Location, visit: &mut dyn FnMut(&[u8])) -> Result<()> {
        self.read_group(at.stream_id(), visit)
    }

    fn read_all(&self, visit: &mut dyn FnMut(&[u8])) -> Result<()> {
        for group in self.engine.raft_groups() {
            self.read_group(group, visit)?;
        }
        Ok(())
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.engine.sync().context(|| "raft-engine sync failed")
    }
}
