use super::*;
use rocksdb::{DB, Options, WriteBatch, WriteOptions};

pub(super) struct Rocks {
    db: DB,
    options: WriteOptions,
}

impl Rocks {
    pub(super) fn open(dir: &Path, synced: bool, tuning: Tuning) -> Result<Rocks> {
        let mut db_options = Options::default();
        db_options.create_if_missing(true);
        db_options.set_wal_compression_type(tuning.codec.rocksdb());
        if let Some(bytes) = tuning.memtable_bytes {
            db_options.set_write_buffer_size(
                usize::try_from(bytes).context(|| "memtable size overflows usize")?,
            );
        }
        let db = DB::open(&db_options, dir)
            .context(|| format!("cannot open RocksDB in {}", dir.display()))?;
        let mut options = WriteOptions::default();
        options.set_sync(synced);
        Ok(Rocks { db, options })
    }

    /// Hands `visit` the values from key `from` on, while the key's
    /// prefix is `stream` (if given).
    fn iterate(
        &self,
        from: &[u8],
        stream: Option<u64>,
        visit: &mut dyn FnMut(&[u8]),
    ) -> Result<()> {
        let mut iter = self.db.raw_iterator();
        iter.seek(from);
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            if stream.is_some_and(|s| key[..8] != s.to_be_bytes()) {
                break;
            }
            visit(value);
            iter.next();
        }
        iter.status().context(|| "RocksDB read failed")
    }
}

impl Wal for Rocks {
    fn write(&self, at: Location, first_index: u64, entries: &[Bytes]) -> Result<()> {
        let mut batch = WriteBatch::default();
        for (payload, index) in entries.iter().zip(first_index..) {
            batch.put(location_key(at, index), payload);
        }
        self.db
            .write_opt(batch, &self.options)
            .context(|| format!("RocksDB write to {at} failed"))
    }

    fn sync(&self) -> Result<()> {
        self.db
            .flush_wal(true)
            .context(|| "RocksDB WAL sync failed")
    }

    fn read_table(&self, at: Location, visit: &mut dyn FnMut(&[u8])) -> Result<()> {
        self.iterate(&location_key(at, 0), Some(at.stream_id()), visit)
    }

    fn read_all(&self, visit: &mut dyn FnMut(&[u8])) -> Result<()> {
        self.iterate(&[], None, visit)
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.db
            .flush_wal(true)
            .context(|| "RocksDB WAL sync failed")
    }
}
