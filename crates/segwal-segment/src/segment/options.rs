//! What a segment is created and opened with, and what recovery reports.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// File name suffix of segment files.
const SUFFIX: &str = ".seg";
/// Digits in a segment file name: enough for any `u64`, so names sort in
/// numeric order.
const NAME_DIGITS: usize = 20;
/// Size of the zero buffer used to preallocate and to clear torn tails.
pub(super) const ZERO_CHUNK: usize = 1 << 20;
/// The chunk in which paced zeros are written (see [`ZeroFillPace`]):
/// smaller, so that a writer's sync that meets one in flight waits for
/// less, the chunks being spread out in time anyway.
pub(super) const PACED_ZERO_CHUNK: usize = 256 << 10;

/// How [`Segment::create`](super::Segment::create) sets aside a new segment's blocks. Either way
/// every block is allocated before the first append, so an append never
/// fails for lack of space (and a read through the map never meets a hole).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Preallocation {
    /// Every byte past the header is written with zeros. The blocks are
    /// then ordinary written blocks, so an `fdatasync` after an append has
    /// only data to write, never the file system's metadata: the fastest
    /// synced appends, bought by writing each segment twice.
    #[default]
    Zeroed,
    /// The blocks are reserved with `fallocate` and not written: creation
    /// costs next to nothing, but on file systems that track unwritten
    /// extents (ext4, XFS) the first sync after an append into one also
    /// commits the extent's conversion to the journal. For segments that
    /// are rarely synced. Where the file system cannot reserve blocks, it
    /// falls back to [`Preallocation::Zeroed`].
    Reserved,
}

/// How fast [`Segment::create_paced`](super::Segment::create_paced)
/// writes a [`Preallocation::Zeroed`] segment's zeros, shared between the
/// thread creating the segment and whoever will wait for it.
///
/// Zeros written as fast as the disk takes them fill its queue for as long
/// as they last, and every sync of other files meanwhile waits behind
/// them. Spread over a longer time, each sync meets at most the one chunk
/// in flight, and only some of the time. Whoever then needs the segment
/// sooner calls [`ZeroFillPace::hurry`]: the blocks not yet zeroed are
/// reserved with `fallocate` instead (written as they are used, with an
/// extent conversion for the file system to commit), or, where the file
/// system cannot reserve blocks, zeroed without further pauses. An
/// unpaced creation (the default, a spread of zero) is not changed by a
/// hurry: every zero is written, as fast as the disk takes them.
#[derive(Debug, Default)]
pub struct ZeroFillPace {
    /// The zeros are spread evenly over at least this long; zero for no
    /// pauses at all (the default).
    spread: Duration,
    hurried: Mutex<bool>,
    woken: Condvar,
    /// Set when a hurry ended the pauses before every zero was written.
    cut_short: AtomicBool,
}

impl ZeroFillPace {
    /// Zeros spread evenly over at least `spread`.
    pub fn spread_over(spread: Duration) -> ZeroFillPace {
        ZeroFillPace {
            spread,
            ..ZeroFillPace::default()
        }
    }

    /// The time the zeros are spread over.
    pub fn spread(&self) -> Duration {
        self.spread
    }

    /// Ends the pauses at once, for good: the creation finishes as fast as
    /// it can. Harmless once the creation has finished.
    pub fn hurry(&self) {
        *self.hurried.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.woken.notify_all();
    }

    /// Whether [`ZeroFillPace::hurry`] was called.
    pub fn is_hurried(&self) -> bool {
        *self.hurried.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a hurry came while zeros were still to be written, so that
    /// the creation reserved (or zeroed without pauses) the rest.
    pub fn was_cut_short(&self) -> bool {
        self.cut_short.load(Ordering::Acquire)
    }

    pub(super) fn mark_cut_short(&self) {
        self.cut_short.store(true, Ordering::Release);
    }

    /// Waits until `done` of `total` bytes are due, counting from
    /// `started`, or until hurried. Returns whether it was hurried.
    /// A spread too long for the clock to reach waits for the hurry.
    pub(super) fn wait_until_due(&self, started: Instant, done: u64, total: u64) -> bool {
        let share = if total == 0 {
            0.0
        } else {
            done.min(total) as f64 / total as f64
        };
        let due = started.checked_add(self.spread.mul_f64(share));
        let mut hurried = self.hurried.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let now = Instant::now();
            if *hurried || due.is_some_and(|due| now >= due) {
                return *hurried;
            }
            hurried = match due {
                Some(due) => {
                    self.woken
                        .wait_timeout(hurried, due - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self.woken.wait(hurried).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }
}

/// The file name of segment `segment_id`: twenty zero-padded digits and
/// `.seg`, so that string order is numeric order.
pub fn segment_file_name(segment_id: u64) -> String {
    format!("{segment_id:0NAME_DIGITS$}{SUFFIX}")
}

/// The segment id of a file named by [`segment_file_name`], or `None` for
/// any other name (stray files are ignored, not errors).
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What recovery does with damage it finds in a segment.
///
/// Whatever the mode, recovery never silently drops a valid record: every
/// cut and every skipped range is in the [`RecoveryReport`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecoveryMode {
    /// Any damage is an error, even an incomplete write at the tail: for
    /// deployments that want a person to look after every crash.
    Strict,
    /// An incomplete write at the tail (what a crash leaves) is cut and
    /// reported; damage to data that had been synced is an error naming the
    /// file and offset.
    #[default]
    TolerateTornTail,
    /// As `TolerateTornTail`, but damaged synced data is skipped: recovery
    /// resumes at the next valid record and reports the skipped range.
    SkipCorrupted,
}

/// How to open an existing segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOptions {
    /// What to do with damage.
    pub recovery_mode: RecoveryMode,
    /// Open for appending. A read-only segment is never modified, not even
    /// to clear a torn tail; appends to it fail.
    pub writable: bool,
    /// Where the segment's valid records end, when that is known from
    /// elsewhere (the manager records it after a failed sync: the kernel
    /// may have lost what came after while still showing it). Recovery
    /// reads nothing past it; a writable open zeroes what lies past it.
    pub end: Option<u64>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            recovery_mode: RecoveryMode::default(),
            writable: true,
            end: None,
        }
    }
}

/// A torn tail that recovery cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// Where the incomplete data began; appends continue here.
    pub offset: u64,
    /// Bytes from `offset` to the last non-zero byte of the file.
    pub discarded_bytes: u64,
    /// Why the record at `offset` did not verify.
    pub cause: segwal_format::Error,
}

/// A damaged range that [`RecoveryMode::SkipCorrupted`] skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRange {
    /// The skipped bytes.
    pub range: Range<u64>,
    /// Why the record at `range.start` did not verify.
    pub cause: segwal_format::Error,
}

/// What recovery found in a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Valid records found (and passed to the visitor).
    pub records: u64,
    /// Offset just past the last valid record: where appends continue.
    pub end: u64,
    /// The torn tail that was cut, if any.
    pub torn_tail: Option<TornTail>,
    /// Damaged ranges that were skipped (only under `SkipCorrupted`).
    pub skipped: Vec<SkippedRange>,
    /// Non-zero bytes past [`OpenOptions::end`], ignored (and zeroed by a
    /// writable open).
    pub past_end_bytes: u64,
    /// The file's length when it differs from the capacity its header
    /// records (only under `SkipCorrupted`; other modes refuse such a file).
    /// The segment was read, and is used, as if its capacity were the
    /// smaller of the two.
    pub wrong_length: Option<u64>,
}

/// One batch to append: entries for one table of one region with
/// consecutive sequence numbers starting at `first_sequence`.
#[derive(Debug, Clone, Copy)]
pub struct BatchRef<'a, E> {
    /// The region the entries belong to; the record names it, so that
    /// regions sharing a log can tell their records apart.
    pub region_id: u64,
    /// The table the entries belong to.
    pub table_id: u64,
    /// Sequence number of the first entry.
    pub first_sequence: u64,
    /// The entries' payloads.
    pub entries: &'a [E],
}
