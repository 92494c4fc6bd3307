//! The request, context and entry types of the `WalManager` API, named as
//! in HoraeDB so engines can port their code.

use std::time::Duration;

use bytes::Bytes;

/// A region (shard) of the engine; sequence numbers are allocated per
/// region.
pub type RegionId = u64;
/// A table within a region.
pub type TableId = u64;
/// A log entry's sequence number within its region.
pub type SequenceNumber = u64;

/// "Nothing written": what [`WalManager::sequence_num`] returns for a table
/// with no entries, and the lowest possible read boundary.
///
/// [`WalManager::sequence_num`]: crate::WalManager::sequence_num
pub const MIN_SEQUENCE_NUMBER: SequenceNumber = 0;
/// The highest read boundary; never assigned to an entry.
pub const MAX_SEQUENCE_NUMBER: SequenceNumber = u64::MAX;

/// Where log entries go: a table of a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct WalLocation {
    /// The region; sequence numbers are allocated per region.
    pub region_id: RegionId,
    /// The table within the region.
    pub table_id: TableId,
}

impl WalLocation {
    /// Table `table_id` of region `region_id`.
    pub fn new(region_id: RegionId, table_id: TableId) -> WalLocation {
        WalLocation {
            region_id,
            table_id,
        }
    }
}

/// One entry to write: opaque bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogWriteEntry {
    /// The entry's bytes. `Bytes`, so handing a batch to the I/O thread
    /// copies no payload.
    pub payload: Bytes,
}

impl AsRef<[u8]> for LogWriteEntry {
    fn as_ref(&self) -> &[u8] {
        &self.payload
    }
}

impl From<Bytes> for LogWriteEntry {
    fn from(payload: Bytes) -> LogWriteEntry {
        LogWriteEntry { payload }
    }
}

impl From<Vec<u8>> for LogWriteEntry {
    /// Takes the vector over without copying it.
    fn from(payload: Vec<u8>) -> LogWriteEntry {
        LogWriteEntry {
            payload: payload.into(),
        }
    }
}

impl From<&'static [u8]> for LogWriteEntry {
    fn from(payload: &'static [u8]) -> LogWriteEntry {
        LogWriteEntry {
            payload: Bytes::from_static(payload),
        }
    }
}

impl From<String> for LogWriteEntry {
    fn from(payload: String) -> LogWriteEntry {
        LogWriteEntry {
            payload: payload.into(),
        }
    }
}

impl From<&'static str> for LogWriteEntry {
    fn from(payload: &'static str) -> LogWriteEntry {
        LogWriteEntry {
            payload: Bytes::from_static(payload.as_bytes()),
        }
    }
}

/// Entries for one table, written atomically with consecutive sequence
/// numbers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogWriteBatch {
    /// The table the entries belong to.
    pub location: WalLocation,
    /// The entries, in order.
    pub entries: Vec<LogWriteEntry>,
}

impl LogWriteBatch {
    /// An empty batch for `location`.
    pub fn new(location: WalLocation) -> LogWriteBatch {
        LogWriteBatch::with_capacity(location, 0)
    }

    /// An empty batch for `location` with room for `capacity` entries.
    pub fn with_capacity(location: WalLocation, capacity: usize) -> LogWriteBatch {
        LogWriteBatch {
            location,
            entries: Vec::with_capacity(capacity),
        }
    }

    /// Appends an entry: a [`LogWriteEntry`] (as in HoraeDB), or its
    /// payload as `Vec<u8>`, `Bytes`, `String`, `&'static [u8]` or
    /// `&'static str` (a `Vec` or `String` is taken over without copying).
    pub fn push(&mut self, entry: impl Into<LogWriteEntry>) {
        self.entries.push(entry.into());
    }

    /// How many entries the batch holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if the batch holds no entries (writing it is refused).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes every entry, keeping the location and the allocation, so
    /// the batch can be filled again.
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

/// One end of a read range, as in HoraeDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadBoundary {
    /// The lowest sequence number (0).
    Min,
    /// The highest sequence number (`u64::MAX`).
    Max,
    /// Up to or from this sequence number, inclusive.
    Included(SequenceNumber),
    /// Up to or from this sequence number, exclusive.
    Excluded(SequenceNumber),
}

impl ReadBoundary {
    /// The lowest sequence number this boundary admits as a range start, or
    /// `None` if it admits none (`Excluded(u64::MAX)`).
    pub fn as_start_sequence_number(&self) -> Option<SequenceNumber> {
        match *self {
            ReadBoundary::Min => Some(MIN_SEQUENCE_NUMBER),
            ReadBoundary::Max => Some(MAX_SEQUENCE_NUMBER),
            ReadBoundary::Included(n) => Some(n),
            ReadBoundary::Excluded(n) => n.checked_add(1),
        }
    }

    /// The highest sequence number this boundary admits as a range end, or
    /// `None` if it admits none (`Excluded(0)`).
    pub fn as_end_sequence_number(&self) -> Option<SequenceNumber> {
        match *self {
            ReadBoundary::Min => Some(MIN_SEQUENCE_NUMBER),
            ReadBoundary::Max => Some(MAX_SEQUENCE_NUMBER),
            ReadBoundary::Included(n) => Some(n),
            ReadBoundary::Excluded(n) => n.checked_sub(1),
        }
    }
}

/// Read one table's entries with sequence numbers in `[start, end]`.
///
/// The default, as in HoraeDB, reads table 0 of region 0 over
/// `[Min, Min]`: nothing (sequence numbers start at 1). Set the fields
/// that matter with struct update syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRequest {
    /// The table.
    pub location: WalLocation,
    /// The range's start.
    pub start: ReadBoundary,
    /// The range's end.
    pub end: ReadBoundary,
}

impl Default for ReadRequest {
    fn default() -> Self {
        ReadRequest {
            location: WalLocation::default(),
            start: ReadBoundary::Min,
            end: ReadBoundary::Min,
        }
    }
}

impl ReadRequest {
    /// The inclusive sequence range the request covers, or `None` if it is
    /// empty or inverted.
    pub fn sequence_range(&self) -> Option<(SequenceNumber, SequenceNumber)> {
        let start = self.start.as_start_sequence_number()?;
        let end = self.end.as_end_sequence_number()?;
        (start <= end).then_some((start, end))
    }
}

/// Read every live entry of a region (by default region 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScanRequest {
    /// The region.
    pub region_id: RegionId,
}

/// Options for a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteContext {
    /// How long the caller waits for the write to become durable (default
    /// 1 s, as in HoraeDB). See [`Error::Timeout`](crate::Error::Timeout) for what a
    /// timeout means. `LocalWal` writes that run in place do not apply it
    /// (see `LocalWalConfig::writes_in_place`).
    pub timeout: Duration,
}

impl Default for WriteContext {
    fn default() -> Self {
        WriteContext {
            timeout: Duration::from_secs(1),
        }
    }
}

/// Options for a read or a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadContext {
    /// How long the caller waits for each call (creating the iterator, and
    /// each `next_batch`; default 5 s, as in HoraeDB). `LocalWal` reads that run in
    /// place do not apply it (see `LocalWalConfig::reads_in_place`).
    pub timeout: Duration,
    /// The most entries one `next_batch` returns (default 500; 0 is taken
    /// as 1).
    pub batch_size: usize,
}

impl Default for ReadContext {
    fn default() -> Self {
        ReadContext {
            timeout: Duration::from_secs(5),
            batch_size: 500,
        }
    }
}

/// Options for a scan: the same as for a read.
pub type ScanContext = ReadContext;

/// One entry read back: its payload as written (`P` = `Bytes`) from
/// [`BatchLogIterator::next_batch`](crate::BatchLogIterator::next_batch),
/// or decoded (`P` = the decoder's target) from
/// [`next_log_entries`](crate::BatchLogIterator::next_log_entries), as in
/// HoraeDB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry<P = Bytes> {
    /// The table it belongs to.
    pub table_id: TableId,
    /// Its sequence number within the region.
    pub sequence: SequenceNumber,
    /// Its payload. As bytes from a [`LocalWal`](crate::LocalWal), they are
    /// not a copy but a view of the segment file's memory map: holding them
    /// keeps that file open and mapped (and, once it is deleted, its disk
    /// space in use) until the last payload from it is dropped. Copy a
    /// payload (`payload.to_vec()`) to keep it long after the read.
    pub payload: P,
}
