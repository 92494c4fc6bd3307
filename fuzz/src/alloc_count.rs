//! A global allocator that counts, per thread, what a closure allocates.
//!
//! The format crate promises that its decoders allocate nothing (and so can
//! never allocate from a length they have not verified); the region meta
//! decoder allocates only its table rows, and the meta log decoder only
//! the entries it returns, which the file's length bounds.
//! [`measure`] lets the fuzz targets check both promises on every input.

#![allow(unsafe_code)] // A `GlobalAlloc` implementation cannot be written without it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// What a closure allocated on the calling thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allocations {
    /// Number of allocations (reallocations count as one each).
    pub count: usize,
    /// Size in bytes of the largest single allocation.
    pub largest_bytes: usize,
}

thread_local! {
    /// `Some` while [`measure`] runs on this thread. Const-initialised and
    /// free of destructors, so touching it from the allocator never
    /// allocates or registers anything.
    static MEASURING: Cell<Option<Allocations>> = const { Cell::new(None) };
}

/// The system allocator, with a count kept while [`measure`] runs.
struct Counting;

impl Counting {
    fn note(size: usize) {
        // `try_with` fails only while the thread is being torn down; an
        // allocation then is not one any `measure` is waiting for.
        let _ = MEASURING.try_with(|cell| {
            if let Some(mut seen) = cell.get() {
                seen.count += 1;
                seen.largest_bytes = seen.largest_bytes.max(size);
                cell.set(Some(seen));
            }
        });
    }
}

// SAFETY: every method forwards its arguments unchanged to `System`, which
// upholds the `GlobalAlloc` contract; the bookkeeping in `note` touches only
// a thread-local `Cell` and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Counting::note(layout.size());
        // SAFETY: the caller's guarantees for `layout` are passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Counting::note(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Counting::note(new_size);
        // SAFETY: `ptr` was allocated by this allocator, that is by `System`
        // with `layout`, as the caller guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns its result with what it allocated on this thread.
///
/// # Panics
///
/// If called from within `f` (measurements do not nest).
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, Allocations) {
    assert!(MEASURING.with(Cell::get).is_none(), "measure does not nest");
    MEASURING.with(|cell| cell.set(Some(Allocations::default())));
    let result = f();
    let seen = MEASURING
        .with(|cell| cell.replace(None))
        .unwrap_or_default();
    (result, seen)
}
