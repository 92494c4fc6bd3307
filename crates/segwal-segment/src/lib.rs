//! segwal's segment files: preallocated, append-only files of batch records,
//! written with `pwrite` and read through a read-only memory map.
//!
//! A [`Segment`] is one file: a [`SegmentHeader`](segwal_format::SegmentHeader)
//! followed by records (see `docs/FORMAT.md`). This crate knows nothing about
//! regions' sequence allocation, tables or async: it creates, recovers,
//! appends to, syncs, reads, closes and deletes one file at a time. The
//! segment manager above decides which segment to write and when to roll
//! over.
//!
//! This is the only segwal crate that contains `unsafe` code: the creation
//! of byte slices over the memory map, in `segment/shared.rs`, and the
//! `sync_file_range` call in `disk.rs`, each with a `// SAFETY:` comment. `docs/ARCHITECTURE.md` explains why writes never go
//! through the map.
//!
//! ```
//! use segwal_format::SegmentIdentity;
//! use segwal_segment::{BatchRef, OpenOptions, Preallocation, Segment};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join(segwal_segment::segment_file_name(1));
//! let identity = SegmentIdentity { stream_id: 9, segment_id: 1 };
//!
//! let mut segment = Segment::create(&path, identity, 1 << 20, Preallocation::Zeroed).unwrap();
//! let entries: [&[u8]; 2] = [b"first", b"second"];
//! let placed = segment
//!     .append(&BatchRef { region_id: 9, table_id: 4, first_sequence: 1, entries: &entries })
//!     .unwrap();
//! segment.sync().unwrap(); // durable from here on
//! segment.close().unwrap();
//!
//! let mut tables = Vec::new();
//! let (segment, report) =
//!     Segment::open(&path, identity, &OpenOptions::default(), |record| tables.push(record.table_id()))
//!         .unwrap();
//! assert_eq!((tables, report.records, report.end), (vec![4], 1, placed.end));
//! let handle = segment.handle();
//! let record = handle.records_from(placed.start).unwrap().next().unwrap();
//! assert_eq!(record.borrowed_entries().unwrap().nth(1).unwrap().payload, b"second");
//! ```

pub mod disk;
mod error;
#[cfg(feature = "fault-injection")]
pub mod powerloss;
mod segment;

pub use error::{Error, Result};
pub use segment::{
    BatchRef, OpenOptions, Preallocation, RELEASE_BLOCK, RecoveryMode, RecoveryReport, Segment,
    SegmentBytes, SegmentHandle, SkippedRange, TornTail, ZeroFillPace, parse_segment_file_name,
    segment_file_name,
};
