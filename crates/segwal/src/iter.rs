//! [`BatchLogIterator`]: entries handed out a batch at a time.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, Result, TimeoutSnafu};
use crate::types::{LogEntry, ReadContext};

/// Where a [`BatchLogIterator`] gets its entries: implemented by each
/// backend. Public so that backends outside this crate (the NATS one) can
/// build iterators.
#[async_trait]
pub trait LogEntrySource: Send + std::fmt::Debug {
    /// Up to `max` (at least 1) next entries, in ascending sequence order;
    /// an empty vector once the source is exhausted. If the future is
    /// dropped before it completes (a timeout), later calls may fail with
    /// [`Error::IteratorAbandoned`].
    async fn next_entries(&mut self, max: usize) -> Result<Vec<LogEntry>>;
}

/// The entries of a read or scan, in ascending sequence order, at most
/// `batch_size` at a time.
///
/// It reads from a snapshot taken when the read started: later writes are
/// not included. Each [`next_batch`](BatchLogIterator::next_batch) is
/// bounded by the context's timeout (unless the backend runs it in place:
/// see `LocalWalConfig::reads_in_place`); after a timeout or an error the
/// iterator's position is lost and further calls fail with
/// [`Error::IteratorAbandoned`].
#[derive(Debug)]
pub struct BatchLogIterator {
    source: Option<Box<dyn LogEntrySource>>,
    pub(crate) batch_size: usize,
    timeout: Duration,
    /// Entries read from the source but not yet handed out (fewer than
    /// `batch_size`): what a `next_log_entries` call read past its batch.
    pub(crate) pending: Vec<LogEntry>,
    /// Set when the source came back empty, or failed.
    finished: bool,
    failed: bool,
}

impl BatchLogIterator {
    /// An iterator over `source`, with `ctx`'s batch size and timeout.
    pub fn new(source: impl LogEntrySource + 'static, ctx: &ReadContext) -> BatchLogIterator {
        BatchLogIterator {
            source: Some(Box::new(source)),
            batch_size: ctx.batch_size.max(1),
            timeout: ctx.timeout,
            pending: Vec::new(),
            finished: false,
            failed: false,
        }
    }

    /// An iterator that yields nothing (an empty or inverted range).
    pub fn empty() -> BatchLogIterator {
        BatchLogIterator {
            source: None,
            batch_size: 1,
            timeout: Duration::ZERO,
            pending: Vec::new(),
            finished: true,
            failed: false,
        }
    }

    /// The next entries, at most the context's `batch_size` of them, or
    /// `None` once the iterator is exhausted.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<LogEntry>>> {
        if !self.pending.is_empty() {
            return Ok(Some(std::mem::take(&mut self.pending)));
        }
        if self.failed {
            return Err(Error::IteratorAbandoned);
        }
        let Some(source) = self.source.as_mut().filter(|_| !self.finished) else {
            return Ok(None);
        };
        let result =
            match tokio::time::timeout(self.timeout, source.next_entries(self.batch_size)).await {
                Ok(result) => result,
                Err(_) => TimeoutSnafu {
                    operation: "reading the next batch",
                    timeout: self.timeout,
                }
                .fail(),
            };
        match result {
            Ok(entries) if entries.is_empty() => {
                self.finished = true;
                self.source = None;
                Ok(None)
            }
            Ok(entries) => {
                debug_assert!(entries.len() <= self.batch_size);
                Ok(Some(entries))
            }
            Err(err) => {
                self.abandon();
                Err(err)
            }
        }
    }

    /// Gives up the iteration after an error: later calls fail with
    /// [`Error::IteratorAbandoned`] rather than go on past entries that
    /// were never handed out.
    pub(crate) fn abandon(&mut self) {
        self.failed = true;
        self.source = None;
        self.pending.clear();
    }
}
