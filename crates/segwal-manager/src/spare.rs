//! A segment being prepared ahead of need on a thread of its own, and how
//! whoever needs it sooner hurries it (see `rollover.rs`, which starts and
//! takes spares).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use segwal_segment::{Preallocation, Segment, ZeroFillPace};

/// A segment being prepared ahead of need, under a temporary name.
#[derive(Debug)]
pub(crate) struct Spare {
    pub(crate) segment_id: u64,
    /// How its blocks are set aside.
    pub(crate) preallocation: Preallocation,
    /// The pace of its zeros; hurried by whoever stops waiting for it to
    /// be ready in its own time.
    pub(crate) pace: Arc<ZeroFillPace>,
    /// The thread creating it; taken by [`Spare::finish`].
    pub(crate) creating: Option<JoinHandle<segwal_segment::Result<Segment>>>,
    /// Set by that thread once the segment is created and renamed into
    /// place: ready to be taken without waiting.
    pub(crate) created: Arc<AtomicBool>,
}

impl Spare {
    /// Whether it is ready, every zero written: a zero-filled segment
    /// created successfully without a hurry cutting its zeros short.
    pub(crate) fn is_ready_zeroed(&self) -> bool {
        self.preallocation == Preallocation::Zeroed
            && self.created.load(Ordering::Acquire)
            && !self.pace.was_cut_short()
    }

    /// Waits for the spare, hurrying it first: the segment, or `None` if
    /// its creation failed (and removed its file). Also tells whether the
    /// hurry cut its zeros short.
    pub(crate) fn finish(mut self) -> (Option<Segment>, bool) {
        let creating = self.creating.take().expect("finished only once");
        self.pace.hurry();
        let segment = creating.join().ok().and_then(Result::ok);
        (segment, self.pace.was_cut_short())
    }
}

impl Drop for Spare {
    /// A spare dropped unfinished (the stream dropped without a close)
    /// finishes without its pauses: its thread does not outlive the WAL
    /// by the time its zeros were spread over.
    fn drop(&mut self) {
        self.pace.hurry();
    }
}
