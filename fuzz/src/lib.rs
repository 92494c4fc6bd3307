//! Shared helpers of segwal's fuzz targets (`fuzz_targets/`), which
//! `cargo xtask fuzz` runs with cargo-fuzz.
//!
//! - [`alloc_count`]: a counting global allocator, to check that decoders
//!   allocate nothing (or no more than their input's size).
//! - [`format`]: the invariants of the record decoder, the segment header
//!   and meta decoders, the scanner and the meta log decoder, for any
//!   input.
//! - [`wal`]: a real `SegmentManager` driven next to a reference model.

pub mod alloc_count;
pub mod format;
pub mod wal;
