//! segwal's segment manager: one log shared by every region of a data dir
//! (or a few streams of it), rollover, per-region sequence numbers,
//! per-table indexes, durable deletes through the META log, group commit,
//! recovery, and the rewrite of cold segments.
//!
//! Synchronous and thread-safe; the async `WalManager` adapter sits on top.
//! `docs/ARCHITECTURE.md` maps the modules and the locks' order;
//! `docs/DESIGN.md` says why.
//!
//! ```
//! use segwal_manager::{ManagerConfig, SegmentManager};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let wal = SegmentManager::open(ManagerConfig::new(dir.path())).unwrap();
//! let last = wal.write(1, 10, &[b"a".as_slice(), b"b"]).unwrap();
//! assert_eq!((last, wal.sequence_num(1, 10).unwrap()), (2, 2));
//!
//! let mut read = Vec::new();
//! let mut entries = wal.read(1, 10, 0, u64::MAX).unwrap();
//! while entries.next_batch(100, |e| read.push((e.sequence, e.payload.to_vec()))).unwrap() > 0 {}
//! assert_eq!(read, [(1, b"a".to_vec()), (2, b"b".to_vec())]);
//!
//! wal.mark_delete_entries_up_to(1, 10, 1).unwrap();
//! wal.close().unwrap();
//! ```

#![forbid(unsafe_code)]

mod cache;
mod config;
mod context;
mod delete;
mod error;
mod group;
mod histogram;
mod index;
mod inspect;
mod judge;
mod locks;
mod manager;
mod meta;
mod read;
mod recovery;
mod rewrite;
mod rollover;
mod snapshot;
mod space;
mod spare;
mod stats;
mod stream;
mod waiting;

pub use config::{
    Compression, MAX_STREAMS, ManagerConfig, Preallocation, RecoveryMode, SyncMode,
    ZERO_FILL_MAX_BYTES_PER_SEC,
};
pub use error::{Error, Result};
pub use histogram::{COUNT_BOUNDS, Histogram, HistogramSnapshot, LATENCY_BOUNDS_NANOS};
pub use inspect::{DirReport, Problem, SegmentReport, TableMarks, TableSpan, dump_table, inspect};
pub use manager::{LOCK_FILE, SegmentManager};
pub use meta::META_FILE;
pub use read::{DecompressedBytes, EntryIter, SharedBytes, SharedEntry};
pub use segwal_format::Entry;
pub use segwal_segment::SegmentBytes;
pub use space::TablePin;
pub use stats::Statistics;
pub use stream::WRITEBACK_CHUNK_BYTES;
