//! Reads and scans: an ephemeral pull consumer over a region's stream,
//! filtered to one table's subject (a read) or every table's (a scan),
//! fetched a batch of messages at a time.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy, PullConsumer};
use async_trait::async_trait;
use futures_util::StreamExt;
use segwal::{LogEntry, LogEntrySource, SequenceNumber, TableId};

use crate::codec;
use crate::error::Error;
use crate::wal::{Inner, Region};

/// How long the server keeps a consumer nobody reads from (an abandoned
/// iterator's).
const CONSUMER_IDLE: Duration = Duration::from_secs(30);
/// Messages asked for per fetch, at most.
const FETCH_MESSAGES: usize = 256;

/// What a source yields: entries of `table` (every table if `None`) with
/// sequence numbers in `[lo, hi]`, live ones only.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadFilter {
    pub(crate) table: Option<TableId>,
    pub(crate) lo: SequenceNumber,
    pub(crate) hi: SequenceNumber,
}

/// Entries of one region read through a consumer, up to the region's
/// acknowledged position when the read started (a snapshot: later writes
/// are not included).
#[derive(Debug)]
pub(crate) struct NatsSource {
    inner: Arc<Inner>,
    region: Arc<Region>,
    consumer: PullConsumer,
    filter: ReadFilter,
    /// The stream sequence the read stops at.
    snapshot: u64,
    buffered: VecDeque<LogEntry>,
    /// The last sequence number yielded (order is checked, not assumed).
    last_yielded: SequenceNumber,
    done: bool,
}

impl NatsSource {
    /// A source for `filter`, or `None` if nothing can match.
    pub(crate) async fn start(
        inner: &Arc<Inner>,
        region: Arc<Region>,
        filter: ReadFilter,
        timeout: Duration,
    ) -> Result<Option<NatsSource>, Error> {
        let id = region.id;
        let snapshot = region.acked_last.load(Ordering::Acquire);
        let start = async {
            let (subject, deliver_policy) = match filter.table {
                Some(table) => {
                    let subject = inner.config.data_subject(id, table);
                    let floor = filter.lo - 1;
                    let Some(from) = inner.first_live(&region, &subject, floor, snapshot).await?
                    else {
                        return Ok(None);
                    };
                    let policy = DeliverPolicy::ByStartSequence {
                        start_sequence: from,
                    };
                    (subject, policy)
                }
                None => (inner.config.all_data_subjects(id), DeliverPolicy::All),
            };
            let consumer = region
                .stream
                .create_consumer(consumer::pull::Config {
                    deliver_policy,
                    ack_policy: AckPolicy::None,
                    filter_subject: subject.clone(),
                    inactive_threshold: CONSUMER_IDLE,
                    memory_storage: true,
                    ..Default::default()
                })
                .await
                .map_err(|e| {
                    inner.read_error(
                        id,
                        format!("creating a consumer for {subject}"),
                        Box::new(e),
                    )
                })?;
            Ok(Some(consumer))
        };
        let consumer = match tokio::time::timeout(timeout, start).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(inner.read_error(
                    id,
                    "starting a read".into(),
                    format!("timed out after {timeout:?}").into(),
                ));
            }
        };
        Ok(consumer.map(|consumer| NatsSource {
            inner: Arc::clone(inner),
            region,
            consumer,
            filter,
            snapshot,
            buffered: VecDeque::new(),
            last_yielded: 0,
            done: false,
        }))
    }

    async fn fetch(&mut self, want: usize) -> Result<(), Error> {
        let id = self.region.id;
        let mut batch = self
            .consumer
            .fetch()
            .max_messages(want.clamp(1, FETCH_MESSAGES))
            .messages()
            .await
            .map_err(|e| {
                self.inner
                    .read_error(id, "fetching messages".into(), Box::new(e))
            })?;
        let mut fetched = 0;
        while let Some(message) = batch.next().await {
            let message =
                message.map_err(|e| self.inner.read_error(id, "fetching messages".into(), e))?;
            fetched += 1;
            if self.done {
                continue;
            }
            let stream_sequence = message
                .info()
                .map_err(|e| {
                    self.inner
                        .read_error(id, "reading a message's metadata".into(), e)
                })?
                .stream_sequence;
            if stream_sequence > self.snapshot {
                self.done = true;
                continue;
            }
            let subject = message.subject.as_str();
            let malformed = |reason: String| {
                self.inner
                    .malformed_message(id, subject, stream_sequence, reason)
            };
            let table = subject
                .rsplit('.')
                .next()
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
        }
        if fetched == 0 {
            self.done = true;
        }
        if self.done {
            let name = self.consumer.cached_info().name.clone();
            if let Err(e) = self.region.stream.delete_consumer(&name).await {
                log::debug!("region {id}: deleting finished consumer {name} failed: {e}");
            }
        }
        Ok(())
    }
}

#[async_trait]
impl LogEntrySource for NatsSource {
    async fn next_entries(&mut self, max: usize) -> segwal::Result<Vec<LogEntry>> {
        while self.buffered.len() < max && !self.done {
            let want = max - self.buffered.len();
            self.fetch(want).await?;
        }
        let n = max.min(self.buffered.len());
        Ok(self.buffered.drain(..n).collect())
    }
}
