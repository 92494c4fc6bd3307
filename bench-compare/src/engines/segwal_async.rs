use super::*;
use segwal::{
    LocalWal, LocalWalConfig, LogWriteBatch, ReadBoundary, ReadContext, ReadRequest, ScanRequest,
    SyncMode, WalLocation, WalManager, WriteContext,
};

/// A `LocalWal` and the runtime its futures run on.
pub(super) struct AsyncSegwal {
    runtime: tokio::runtime::Runtime,
    wal: LocalWal,
}

impl AsyncSegwal {
    pub(super) fn open(dir: &Path, synced: bool, codec: Codec) -> Result<AsyncSegwal> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context(|| "cannot start a tokio runtime")?;
        let mode = if synced {
            SyncMode::Always
        } else {
            SyncMode::Never
        };
        let config = LocalWalConfig::new(dir)
            .sync_mode(mode)
            .compression(codec.segwal());
        let wal = runtime
            .block_on(LocalWal::open(config))
            .context(|| format!("cannot open segwal in {}", dir.display()))?;
        Ok(AsyncSegwal { runtime, wal })
    }

    fn drain(
        &self,
        iter: segwal::Result<segwal::BatchLogIterator>,
        visit: &mut dyn FnMut(&[u8]),
    ) -> Result<()> {
        self.runtime.block_on(async {
            let mut iter = iter.context(|| "cannot start a segwal read")?;
            while let Some(batch) = iter.next_batch().await.context(|| "segwal read failed")? {
                for entry in &batch {
                    visit(&entry.payload);
                }
            }
            Ok(())
        })
    }
}

impl Wal for AsyncSegwal {
    fn write(&self, at: Location, _first_index: u64, entries: &[Bytes]) -> Result<()> {
        let mut batch = LogWriteBatch::new(WalLocation::new(at.region, at.table));
        for entry in entries {
            batch.push(entry.clone());
        }
        self.runtime
            .block_on(self.wal.write(&WriteContext::default(), &batch))
            .context(|| format!("segwal write to {at} failed"))?;
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        // `WalManager` has no sync of its own; closing a region syncs it.
        self.runtime
            .block_on(self.wal.close_region(REGION))
            .context(|| "segwal close_region (sync) failed")
    }

    fn read_table(&self, at: Location, visit: &mut dyn FnMut(&[u8])) -> Result<()> {
        let request = ReadRequest {
            location: WalLocation::new(at.region, at.table),
            start: ReadBoundary::Min,
            end: ReadBoundary::Max,
        };
        let iter = self
            .runtime
            .block_on(self.wal.read_batch(&ReadContext::default(), &request));
        self.drain(iter, visit)
    }

    fn read_all(&self, visit: &mut dyn FnMut(&[u8])) -> Result<()> {
        let request = ScanRequest { region_id: REGION };
        let iter = self
            .runtime
            .block_on(self.wal.scan(&ReadContext::default(), &request));
        self.drain(iter, visit)
    }

    fn note(&self) -> Option<String> {
        Some(super::segwal_note(&self.wal.statistics()))
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.runtime
            .block_on(self.wal.close_gracefully())
            .context(|| "segwal close failed")
    }
}
