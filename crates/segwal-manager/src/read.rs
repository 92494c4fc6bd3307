//! Lazy iteration over indexed records.

use std::ops::Range;
use std::sync::Arc;

use rustc_hash::FxHashMap as HashMap;
use segwal_format::{Entries, Entry, RECORD_HEADER_LEN, RecordCodec};
use segwal_segment::{SegmentBytes, SegmentHandle};
use snafu::ResultExt;

use crate::error::{DecompressSnafu, ReadCorruptedSnafu, Result, SegmentSnafu};

/// Segments with less written data than this are not populated ahead
/// (see [`EntryIter::populating_ahead`]).
const POPULATE_MIN_BYTES: u64 = 1 << 20;

/// Where one record is: what the index holds per batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordLoc {
    pub(crate) first: u64,
    pub(crate) last: u64,
    pub(crate) segment_id: u64,
    pub(crate) offset: u64,
    /// The record's length in bytes (at most a header and `MAX_BODY_LEN`).
    pub(crate) len: u32,
}

const _: () = assert!(size_of::<RecordLoc>() == 40);

impl RecordLoc {
    /// Where `record`, of segment `segment_id`, is.
    pub(crate) fn of(record: &segwal_format::Record<'_>, segment_id: u64) -> RecordLoc {
        RecordLoc {
            first: record.first_sequence(),
            last: record.last_sequence(),
            segment_id,
            offset: record.offset(),
            len: u32::try_from(record.end_offset() - record.offset())
                .expect("a record's length fits its header's u32 body length"),
        }
    }
}

/// The live entries of a read or a scan, in ascending sequence order.
///
/// It holds a snapshot taken when it was created: the locations of the
/// records in range (a few words per batch, never the data) and handles to
/// their segments, which keep the files mapped even if they are deleted
/// meanwhile. Entries are decoded from the mapping, verified, only when
/// [`next_batch`](EntryIter::next_batch) asks for them, and handed out as
/// borrowed slices: nothing is copied. A compressed record is decompressed
/// once, into a buffer its entries then borrow from (and share, see
/// [`SharedBytes`]).
#[derive(Debug)]
pub struct EntryIter {
    locs: Vec<RecordLoc>,
    handles: HashMap<u64, SegmentHandle>,
    start: u64,
    end: u64,
    /// Per table, deleted-up-to marks to apply (scans only; a read's
    /// `start` already lies past its table's mark).
    deleted: HashMap<u64, u64>,
    next_loc: usize,
    /// Set when the record at `next_loc` was handed out only in part.
    resume: Option<Cursor>,
    /// Sequence number of the last entry handed out.
    delivered: Option<u64>,
    /// Whether to have the next segment mapped ahead of need (scans: they
    /// read every record of a segment).
    populate_ahead: bool,
    /// The last segment whose mapping was asked to be populated.
    populated: Option<u64>,
}

impl EntryIter {
    pub(crate) fn empty() -> EntryIter {
        EntryIter {
            locs: Vec::new(),
            handles: HashMap::default(),
            start: 1,
            end: 0,
            deleted: HashMap::default(),
            next_loc: 0,
            resume: None,
            delivered: None,
            populate_ahead: false,
            populated: None,
        }
    }

    /// An iterator over `locs`, reading from `handles`. Records in segments
    /// without a handle (deleted since the snapshot) are left out: the
    /// caller's `start` or `deleted` marks cover all their entries.
    pub(crate) fn new(
        mut locs: Vec<RecordLoc>,
        handles: HashMap<u64, SegmentHandle>,
        start: u64,
        end: u64,
        deleted: HashMap<u64, u64>,
    ) -> EntryIter {
        locs.retain(|loc| handles.contains_key(&loc.segment_id));
        EntryIter {
            locs,
            handles,
            start,
            end,
            deleted,
            next_loc: 0,
            resume: None,
            delivered: None,
            populate_ahead: false,
            populated: None,
        }
    }

    /// Has each segment's mapping populated on a helper thread while the
    /// iterator reads the one before it (`SegmentHandle::populate`), so
    /// that the page faults (and on a cold cache the disk reads) of a
    /// whole-region scan run beside the checksumming rather than before
    /// it. Only worth it when most of each segment is read: a table read
    /// touches a fraction of them.
    pub(crate) fn populating_ahead(mut self) -> EntryIter {
        self.populate_ahead = true;
        self
    }

    /// Starts populating the segment after `segment_id` in this
    /// iterator's records, once per segment.
    fn populate_after(&mut self, segment_id: u64) {
        if !self.populate_ahead || self.populated.is_some_and(|p| p > segment_id) {
            return;
        }
        let next = self.locs[self.next_loc..]
            .iter()
            .find(|loc| loc.segment_id > segment_id)
            .map(|loc| loc.segment_id);
        // `None`: no segment after this one; nothing more to populate.
        self.populated = Some(next.unwrap_or(u64::MAX));
        let Some(next) = next else { return };
        let handle = &self.handles[&next];
        if handle.written_len() < POPULATE_MIN_BYTES {
            // Faulting a small segment in costs less than a thread.
            return;
        }
        let handle = handle.clone();
        // A hint: without a thread, or if the kernel refuses the advice,
        // the reads fault the pages in themselves.
        let _ = std::thread::Builder::new()
            .name("segwal-populate".into())
            .spawn(move || {
                let _ = handle.populate();
            });
    }

    /// Hands up to `max` entries to `visit`, in ascending sequence order,
    /// and returns how many it handed out; 0 means the iterator is done.
    ///
    /// Each record is verified once, when its first entry is needed (and a
    /// compressed one decompressed once); a record handed out over several
    /// calls resumes where the last call stopped, so reading a huge batch
    /// `max` entries at a time costs one pass over it, not one per call.
    pub fn next_batch(&mut self, max: usize, mut visit: impl FnMut(Entry<'_>)) -> Result<usize> {
        self.advance(max, |entry, _| visit(entry))
    }

    /// Like [`next_batch`](EntryIter::next_batch), but hands out each entry
    /// as a [`SharedEntry`], whose payload outlives the call without being
    /// copied: shared with the segment's mapping, or, for a compressed
    /// record, with the buffer its body was decompressed into.
    pub fn next_batch_shared(
        &mut self,
        max: usize,
        mut visit: impl FnMut(SharedEntry),
    ) -> Result<usize> {
        self.advance(max, |entry, source| {
            let payload = match source {
                Source::Mapped(handle) => SharedBytes::Mapped(handle.share(entry.payload)),
                Source::Decompressed(body) => {
                    SharedBytes::Decompressed(DecompressedBytes::of(body, entry.payload))
                }
            };
            visit(SharedEntry {
                table_id: entry.table_id,
                sequence: entry.sequence,
                payload,
            })
        })
    }

    /// [`next_batch`](EntryIter::next_batch), handing each entry out with
    /// the bytes it was read from.
    fn advance(
        &mut self,
        max: usize,
        mut visit: impl FnMut(Entry<'_>, Source<'_>),
    ) -> Result<usize> {
        let mut count = 0;
        while count < max && self.next_loc < self.locs.len() {
            let loc = self.locs[self.next_loc];
            self.populate_after(loc.segment_id);
            let handle = &self.handles[&loc.segment_id];
            let cursor = match self.resume.take() {
                Some(cursor) => cursor,
                None => open_record(handle, &loc)?,
            };
            // Written bytes never change while a handle maps them
            // (segwal-segment's invariant), so a record verified by an
            // earlier call still is.
            let (bytes, source) = match &cursor.decompressed {
                Some(body) => (
                    &body[cursor.offset as usize..cursor.end as usize],
                    Source::Decompressed(body),
                ),
                None => (
                    handle
                        .read(cursor.offset, cursor.end - cursor.offset)
                        .context(SegmentSnafu)?,
                    Source::Mapped(handle),
                ),
            };
            let mut entries = Entries::resume(bytes, cursor.table_id, cursor.next_sequence);
            let deleted = self.deleted.get(&cursor.table_id).copied().unwrap_or(0);
            let from = self
                .start
                .max(deleted.saturating_add(1))
                .max(self.delivered.map_or(0, |d| d + 1));
            loop {
                if count == max {
                    if entries.remaining_len() > 0 && entries.next_sequence() <= self.end {
                        self.resume = Some(Cursor {
                            decompressed: cursor.decompressed.clone(),
                            offset: cursor.end - entries.remaining_len() as u64,
                            next_sequence: entries.next_sequence(),
                            ..cursor
                        });
                        return Ok(count);
                    }
                    break;
                }
                let Some(entry) = entries.next() else { break };
                if entry.sequence < from {
                    continue;
                }
                if entry.sequence > self.end {
                    break;
                }
                visit(entry, source);
                count += 1;
                self.delivered = Some(entry.sequence);
            }
            self.next_loc += 1;
        }
        Ok(count)
    }
}

/// Reads and verifies the record at `loc` and returns a cursor at its
/// first entry: in the segment's mapping, or, for a compressed record, in
/// the buffer its body is decompressed into (once, here).
fn open_record(handle: &SegmentHandle, loc: &RecordLoc) -> Result<Cursor> {
    let mut records = handle.records_from(loc.offset).context(SegmentSnafu)?;
    let Some(record) = records.next() else {
        return ReadCorruptedSnafu {
            path: handle.path(),
            offset: loc.offset,
            reason: format!("{:?}", records.end()),
        }
        .fail();
    };
    // The pair of what the writer indexed: the record read back is the one
    // the location was made for.
    debug_assert_eq!(RecordLoc::of(&record, loc.segment_id), *loc);
    let (table_id, next_sequence) = (record.table_id(), record.first_sequence());
    if record.codec() == RecordCodec::None {
        return Ok(Cursor {
            decompressed: None,
            offset: loc.offset + RECORD_HEADER_LEN as u64,
            end: record.end_offset(),
            table_id,
            next_sequence,
        });
    }
    let body = record.body().context(DecompressSnafu {
        path: handle.path(),
        offset: loc.offset,
    })?;
    let bytes = body.into_bytes().into_owned();
    Ok(Cursor {
        end: bytes.len() as u64,
        decompressed: Some(Arc::new(bytes)),
        offset: 0,
        table_id,
        next_sequence,
    })
}

/// The bytes an entry handed to `advance`'s visitor lies in.
#[derive(Debug, Clone, Copy)]
enum Source<'a> {
    /// The segment's mapping.
    Mapped(&'a SegmentHandle),
    /// A compressed record's decompressed body.
    Decompressed(&'a Arc<Vec<u8>>),
}

/// An entry handed out by [`EntryIter::next_batch_shared`].
#[derive(Debug, Clone)]
pub struct SharedEntry {
    /// The table it belongs to.
    pub table_id: u64,
    /// Its sequence number within the region.
    pub sequence: u64,
    /// Its bytes, shared, not copied.
    pub payload: SharedBytes,
}

/// An entry's bytes, shared with what they were read from.
#[derive(Debug, Clone)]
pub enum SharedBytes {
    /// A slice of the segment's mapping (a record stored uncompressed):
    /// it keeps the segment file open and mapped (and its space in use, if
    /// it is deleted) until the last of them is dropped.
    Mapped(SegmentBytes),
    /// A slice of a compressed record's body, decompressed once for all
    /// its entries.
    Decompressed(DecompressedBytes),
}

impl SharedBytes {
    /// The widest view of the same bytes: all of the segment's written
    /// data, or the record's whole decompressed body. One of these can
    /// stand for many entries (slices of it), where a `SharedBytes` each
    /// would cost more.
    pub fn whole(&self) -> SharedBytes {
        match self {
            SharedBytes::Mapped(bytes) => SharedBytes::Mapped(bytes.written()),
            SharedBytes::Decompressed(bytes) => SharedBytes::Decompressed(DecompressedBytes {
                range: 0..bytes.body.len(),
                body: Arc::clone(&bytes.body),
            }),
        }
    }
}

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        match self {
            SharedBytes::Mapped(bytes) => bytes,
            SharedBytes::Decompressed(bytes) => &bytes.body[bytes.range.clone()],
        }
    }
}

impl std::ops::Deref for SharedBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_ref()
    }
}

/// A slice of a decompressed record body, sharing the body.
///
/// # Invariants
///
/// `range` lies within `body`.
#[derive(Debug, Clone)]
pub struct DecompressedBytes {
    body: Arc<Vec<u8>>,
    range: Range<usize>,
}

impl DecompressedBytes {
    /// `payload`, a slice of `body`, as shared bytes.
    fn of(body: &Arc<Vec<u8>>, payload: &[u8]) -> DecompressedBytes {
        let start = (payload.as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
        let end = start.wrapping_add(payload.len());
        assert!(
            start <= end && end <= body.len(),
            "a payload outside its decompressed body shared"
        );
        DecompressedBytes {
            body: Arc::clone(body),
            range: start..end,
        }
    }
}

/// Where the entries of the record at `next_loc` are read from: set when
/// its first entry is needed, and kept when a call handed out only some
/// of them.
#[derive(Debug, Clone)]
struct Cursor {
    /// The record's decompressed body; `None` for a record read from the
    /// segment's mapping.
    decompressed: Option<Arc<Vec<u8>>>,
    /// Offset of the next entry's length prefix: in the segment, or in
    /// `decompressed`.
    offset: u64,
    /// Offset just past the record's entries, in the same terms.
    end: u64,
    table_id: u64,
    next_sequence: u64,
}
