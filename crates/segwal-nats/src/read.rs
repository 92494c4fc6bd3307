//! Reads and scans: batch direct gets over a region's stream, filtered to
//! one table's subject (a read) or all of the region's subjects (a scan),
//! up to a stream position this instance had acknowledged. A replica
//! whose answer stops short of that position is behind: the request is
//! retried (any replica may answer the next one) until the read's
//! deadline, so a read yields every live entry in order, or an error.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use segwal::{LogEntry, LogEntrySource, SequenceNumber, TableId};
use tokio::time::Instant;

use crate::codec;
use crate::direct::{self, Failure, RawMessage};
use crate::error::Error;
use crate::region::Region;
use crate::wal::Inner;

/// Messages asked for per request, at most.
const FETCH_MESSAGES: usize = 256;

/// What a source yields: entries of `table` (every table if `None`) with
/// sequence numbers in `[lo, hi]`, live ones only.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadFilter {
    pub(crate) table: Option<TableId>,
    pub(crate) lo: SequenceNumber,
    pub(crate) hi: SequenceNumber,
}

/// Entries of one region, read up to stream sequence `snapshot` (later
/// writes are not included).
#[derive(Debug)]
pub(crate) struct NatsSource {
    inner: Arc<Inner>,
    region: Arc<Region>,
    filter: ReadFilter,
    subjects: String,
    /// The next stream sequence to ask for.
    from: u64,
    /// The stream sequence the read must reach, and stops at.
    snapshot: u64,
    timeout: Duration,
    buffered: VecDeque<LogEntry>,
    /// The last sequence number yielded (order is checked, not assumed).
    last_yielded: SequenceNumber,
    done: bool,
}

impl NatsSource {
    /// A source for `filter` up to stream sequence `snapshot` (the table's
    /// last batch for a read, the region's last message for a scan). A
    /// read starts at the table's first batch in range.
    pub(crate) async fn start(
        inner: &Arc<Inner>,
        region: Arc<Region>,
        filter: ReadFilter,
        snapshot: u64,
        timeout: Duration,
    ) -> Result<NatsSource, Error> {
        let id = region.id;
        let (subjects, from) = match filter.table {
            Some(table) => {
                let subject = inner.config.data_subject(id, table);
                let found = tokio::time::timeout(
                    timeout,
                    inner.first_live(&region, &subject, filter.lo - 1, snapshot),
                )
                .await
                .map_err(|_| {
                    inner.request_error(
                        id,
                        "starting a read",
                        format!("timed out after {timeout:?}").into(),
                    )
                })??;
                (subject, found)
            }
            None => (region.subjects.clone(), Some(1)),
        };
        Ok(NatsSource {
            inner: Arc::clone(inner),
            done: from.is_none() || snapshot == 0,
            from: from.unwrap_or(0),
            region,
            filter,
            subjects,
            snapshot,
            timeout,
            buffered: VecDeque::new(),
            last_yielded: 0,
        })
    }

    /// The next messages from `self.from` on, from any replica; retried
    /// while a replica answers nothing although the stream leader holds a
    /// message in `[from, snapshot]` (that replica is behind). Empty once
    /// the leader confirms there is nothing left.
    async fn fetch_batch(&self) -> Result<Vec<RawMessage>, Error> {
        let stream = &self.region.stream_name;
        let deadline = Instant::now() + self.timeout.min(Duration::from_secs(3600));
        let (from, snapshot, id) = (self.from, self.snapshot, self.region.id);
        let what = || {
            format!(
                "reading {} from stream sequence {from} of stream {stream}",
                self.subjects
            )
        };
        direct::retry(what, deadline, || async {
            let fetched = direct::batch(
                &self.inner.client,
                stream,
                &self.subjects,
                from,
                FETCH_MESSAGES,
            )
            .await?;
            if !fetched.messages.is_empty() {
                return Ok(fetched.messages);
            }
            let next = self
                .inner
                .first_from(id, &self.region.stream, &self.subjects, from)
                .await
                .map_err(|e| Failure::Transient(Box::new(e)))?;
            match next {
                Some(message) if message.sequence <= snapshot => Err(Failure::Transient(
                    format!(
                        "a replica is behind: nothing from {from} on, the leader has {}",
                        message.sequence
                    )
                    .into(),
                )),
                _ => Ok(Vec::new()),
            }
        })
        .await
        .map_err(|e| self.inner.request_error(id, what(), e))
    }

    async fn fetch(&mut self) -> Result<(), Error> {
        let messages = self.fetch_batch().await?;
        if messages.is_empty() {
            self.done = true;
        }
        for message in &messages {
            if message.sequence > self.snapshot {
                self.done = true;
                break;
            }
            assert!(
                message.sequence >= self.from,
                "a direct get answered out of order"
            );
            self.from = message.sequence + 1;
            self.take(message).await?;
            if self.done {
                break;
            }
        }
        if self.from > self.snapshot {
            self.done = true;
        }
        Ok(())
    }

    /// Buffers the live entries of `message` in range.
    async fn take(&mut self, message: &RawMessage) -> Result<(), Error> {
        let id = self.region.id;
        let malformed = |reason: String| {
            self.inner
                .malformed_at(id, &message.subject, message.sequence, reason)
        };
        let mut tokens = message.subject.rsplit('.');
        let (table, kind) = (tokens.next(), tokens.next());
        if kind != Some("t") {
            return Ok(()); // An ownership record or delete mark.
        }
        let table = table
            .and_then(|t| t.parse::<TableId>().ok())
            .ok_or_else(|| malformed("the subject names no table".into()))?;
        let decoded = codec::decode_batch(&message.payload).map_err(malformed)?;
        if decoded.first <= self.last_yielded {
            return Err(malformed(format!(
                "batch from {} follows entry {} of the region: out of order",
                decoded.first, self.last_yielded
            )));
        }
        let deleted_up_to = match self.filter.table {
            Some(_) => 0, // Already in `filter.lo`.
            None => {
                self.inner
                    .table_state_for_read(&self.region, table)
                    .await?
                    .deleted_up_to
            }
        };
        let lo = self.filter.lo.max(deleted_up_to.saturating_add(1));
        for (i, payload) in decoded.payloads.iter().enumerate() {
            let sequence = decoded.first + i as u64;
            if sequence >= lo && sequence <= self.filter.hi {
                self.buffered.push_back(LogEntry {
                    table_id: table,
                    sequence,
                    // A view of the message, not a copy.
                    payload: message.payload.slice_ref(payload),
                });
            }
        }
        self.last_yielded = decoded.last();
        if decoded.last() >= self.filter.hi {
            self.done = true;
        }
        Ok(())
    }
}

#[async_trait]
impl LogEntrySource for NatsSource {
    async fn next_entries(&mut self, max: usize) -> segwal::Result<Vec<LogEntry>> {
        while self.buffered.len() < max && !self.done {
            self.fetch().await?;
        }
        let n = max.min(self.buffered.len());
        Ok(self.buffered.drain(..n).collect())
    }
}
