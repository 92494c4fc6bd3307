use super::*;
use segwal_manager::{ManagerConfig, SegmentManager, SyncMode};

/// Entries per `next_batch` call when reading.
const READ_BATCH: usize = 1024;

pub(super) struct SyncSegwal {
    manager: SegmentManager,
}

impl SyncSegwal {
    pub(super) fn open(dir: &Path, synced: bool, codec: Codec) -> Result<SyncSegwal> {
        let config = ManagerConfig {
            sync_mode: if synced {
                SyncMode::Always
            } else {
                SyncMode::Never
            },
            compression: codec.segwal(),
            ..ManagerConfig::new(dir)
        };
        let manager = SegmentManager::open(config)
            .context(|| format!("cannot open a segwal manager in {}", dir.display()))?;
        Ok(SyncSegwal { manager })
    }

    fn drain(
        iter: segwal_manager::Result<segwal_manager::EntryIter>,
        visit: &mut dyn FnMut(&[u8]),
    ) -> Result<()> {
        let mut iter = iter.context(|| "cannot start a segwal read")?;
        while iter
            .next_batch(READ_BATCH, |entry| visit(entry.payload))
            .context(|| "segwal read failed")?
            > 0
        {}
        Ok(())
    }
}

impl Wal for SyncSegwal {
    fn write(&self, at: Location, _first_index: u64, entries: &[Bytes]) -> Result<()> {
        self.manager
            .write(at.region, at.table, entries)
            .context(|| format!("segwal write to {at} failed"))?;
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        self.manager
            .close_region(REGION)
            .context(|| "segwal close_region (sync) failed")
    }

    fn read_table(&self, at: Location, visit: &mut dyn FnMut(&[u8])) -> Result<()> {
        SyncSegwal::drain(self.manager.read(at.region, at.table, 0, u64::MAX), visit)
    }

    fn read_all(&self, visit: &mut dyn FnMut(&[u8])) -> Result<()> {
        SyncSegwal::drain(self.manager.scan(REGION), visit)
    }

    fn note(&self) -> Option<String> {
        Some(super::segwal_note(&self.manager.statistics()))
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.manager.close().context(|| "segwal close failed")
    }
}
