//! Reading an open segment: handles and shared bytes.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use segwal_format::{SEGMENT_HEADER_LEN, Scanner, SegmentHeader};
use snafu::ensure;

use crate::error::{ReadPastEndSnafu, Result};

use super::shared::Shared;

/// A shared handle to an open segment: reads and syncs, never appends.
#[derive(Debug, Clone)]
pub struct SegmentHandle {
    pub(super) shared: Arc<Shared>,
}

/// Bytes of a segment's written data, shared with the mapping rather than
/// copied (see [`SegmentHandle::share`]).
///
/// They stay readable and unchanged for as long as this value (or a clone)
/// lives, even after the segment is closed or its file deleted: like a
/// [`SegmentHandle`], it keeps the file open and mapped, and so keeps a
/// deleted file's blocks in use and its lock held until it is dropped.
#[derive(Clone)]
pub struct SegmentBytes {
    pub(super) shared: Arc<Shared>,
    /// `start <= end <= shared.written`: written bytes never change while
    /// `shared` lives (see `Shared`'s invariants).
    pub(super) start: u64,
    pub(super) end: u64,
}

impl SegmentBytes {
    /// Where the bytes lie in the segment file.
    pub fn offsets(&self) -> Range<u64> {
        self.start..self.end
    }

    /// All of the segment's written data, from offset 0 (the header) to
    /// its written end now: a wider view of the same mapping, which covers
    /// `self` and everything written before it. One of these can stand for
    /// many entries of a segment (slices of it), where a `SegmentBytes`
    /// each would cost more.
    pub fn written(&self) -> SegmentBytes {
        let end = self.shared.written.load(Ordering::Acquire);
        debug_assert!(self.end <= end, "written data never shrinks");
        SegmentBytes {
            shared: Arc::clone(&self.shared),
            start: 0,
            end,
        }
    }
}

impl AsRef<[u8]> for SegmentBytes {
    fn as_ref(&self) -> &[u8] {
        self.shared.bytes(self.start, self.end)
    }
}

impl std::ops::Deref for SegmentBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_ref()
    }
}

impl std::fmt::Debug for SegmentBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentBytes")
            .field("path", &self.shared.path)
            .field("offsets", &self.offsets())
            .finish()
    }
}

impl SegmentHandle {
    /// The segment file's path.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The segment's header.
    pub fn header(&self) -> SegmentHeader {
        self.shared.header
    }

    /// Offset just past the last appended record.
    pub fn written_len(&self) -> u64 {
        self.shared.written.load(Ordering::Acquire)
    }

    /// Offset up to which a completed sync covers the file.
    pub fn durable_len(&self) -> u64 {
        self.shared.durable.load(Ordering::Acquire)
    }

    /// Makes everything appended before this call durable (`fdatasync`)
    /// and returns the durable length.
    ///
    /// Syncs of one segment run one at a time; appends proceed meanwhile.
    /// If a sync fails, this and every later sync or append of the segment
    /// fails: after a failed `fdatasync` the kernel may have dropped the
    /// dirty pages and report the next sync as a success, so no data after
    /// the last good sync is ever reported durable.
    pub fn sync(&self) -> Result<u64> {
        self.shared.sync()
    }

    /// The bytes `[offset, offset + len)`, borrowed from the mapping without
    /// copying. They must lie within the written data.
    pub fn read(&self, offset: u64, len: u64) -> Result<&[u8]> {
        let written = self.written_len();
        ensure!(
            offset.checked_add(len).is_some_and(|end| end <= written),
            ReadPastEndSnafu {
                path: &self.shared.path,
                offset,
                len,
                written,
            }
        );
        Ok(self.shared.bytes(offset, offset + len))
    }

    /// Maps the written data now (`madvise(MADV_POPULATE_READ)`, reading
    /// it from the disk if it is not cached), so that later reads do not
    /// fault page by page. A hint that changes no data: an error (a kernel
    /// older than 5.14 refuses the advice) only means reads fault as usual.
    pub fn populate(&self) -> std::io::Result<()> {
        let written = usize::try_from(self.written_len()).expect("a mapped length fits usize");
        self.shared
            .map
            .advise_range(memmap2::Advice::PopulateRead, 0, written)
    }

    /// `bytes`, a slice of this segment's written data that this handle
    /// handed out (from [`read`](SegmentHandle::read) or a record from
    /// [`records_from`](SegmentHandle::records_from)), as a
    /// [`SegmentBytes`]: the same bytes, not copied, that stay readable for
    /// as long as the value lives.
    ///
    /// # Panics
    ///
    /// If `bytes` does not lie within this segment's written data (a bug in
    /// the caller).
    pub fn share(&self, bytes: &[u8]) -> SegmentBytes {
        let base = self.shared.map.as_ptr() as usize;
        let start = (bytes.as_ptr() as usize).wrapping_sub(base) as u64;
        let end = start.wrapping_add(bytes.len() as u64);
        assert!(
            start <= end && end <= self.written_len(),
            "a slice outside the written data of {} shared",
            self.shared.path.display()
        );
        SegmentBytes {
            shared: Arc::clone(&self.shared),
            start,
            end,
        }
    }

    /// The records from `offset` (which must be a record boundary) to the
    /// end of the written data, verified as they are read. Reading stops at
    /// the first record that fails to verify, with the scanner's
    /// [`ScanEnd`](segwal_format::ScanEnd) saying why.
    pub fn records_from(&self, offset: u64) -> Result<Scanner<'_>> {
        let written = self.written_len();
        ensure!(
            (SEGMENT_HEADER_LEN as u64..=written).contains(&offset),
            ReadPastEndSnafu {
                path: &self.shared.path,
                offset,
                len: 0u64,
                written,
            }
        );
        Ok(Scanner::new(
            self.shared.bytes(offset, written),
            offset,
            &self.shared.header,
        ))
    }
}
