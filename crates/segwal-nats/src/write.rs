//! The write path: group commit per region. A write is queued on its
//! region; one commit task per region at a time takes everything queued,
//! numbers it in queue order and publishes it as one commit (one message,
//! or an atomic batch), fenced at the region's last position. Writers that
//! arrive while a commit is in flight go into the next one.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use segwal::{
    LogWriteBatch, MAX_SEQUENCE_NUMBER, SequenceNumber, TableId, WalLocation, WriteContext,
};
use tokio::sync::oneshot;

use crate::codec;
use snafu::IntoError;

use crate::error::{
    BatchTooLargeSnafu, EmptyBatchSnafu, Error, PublishSnafu, SequencesExhaustedSnafu, TimeoutSnafu,
};
use crate::publish::{Outgoing, PublishFailure};
use crate::region::{Region, Writer};
use crate::wal::{Inner, lock};

/// Room left in a message for the headers next to the body.
const HEADER_ROOM_BYTES: usize = 512;
/// At most this many writes go into one commit (nats-server's atomic
/// batches hold at most 1000 messages).
const MAX_COMMIT_WRITES: usize = 256;
/// At most this many body bytes go into one commit (a commit of several
/// writes is staged in the stream leader's memory).
const MAX_COMMIT_BYTES: usize = 8 << 20;

/// A write waiting for its commit.
#[derive(Debug)]
pub(crate) struct Pending {
    table: TableId,
    entries: u64,
    payload_bytes: u64,
    /// The encoded batch, its first sequence number unset until commit.
    body: BytesMut,
    reply: oneshot::Sender<Result<SequenceNumber, Error>>,
}

/// A write of a commit, with the sequence numbers it was given.
#[derive(Debug)]
struct Numbered {
    pending: Pending,
    first: SequenceNumber,
    last: SequenceNumber,
}

/// A region's queue of writes, and whether a commit task is running.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    pending: Vec<Pending>,
    committing: bool,
}

impl Inner {
    /// Writes `batch`: checks it, queues it on its region, makes sure a
    /// commit task runs, and waits (at most `ctx.timeout`) for the outcome.
    pub(crate) async fn write(
        self: &Arc<Self>,
        ctx: &WriteContext,
        batch: &LogWriteBatch,
    ) -> Result<SequenceNumber, Error> {
        let WalLocation {
            region_id,
            table_id,
        } = batch.location;
        self.check_open()?;
        if batch.is_empty() {
            return EmptyBatchSnafu {
                region: region_id,
                table: table_id,
            }
            .fail();
        }
        let bytes = codec::batch_len(&batch.entries);
        let max_payload = self.client.server_info().max_payload;
        if bytes + HEADER_ROOM_BYTES > max_payload || u32::try_from(bytes).is_err() {
            return BatchTooLargeSnafu {
                region: region_id,
                table: table_id,
                entries: batch.len(),
                bytes,
                max_payload,
            }
            .fail();
        }
        let region = self.region(region_id).await?;
        let (reply, outcome) = oneshot::channel();
        let pending = Pending {
            table: table_id,
            entries: batch.len() as u64,
            payload_bytes: batch.entries.iter().map(|e| e.payload.len() as u64).sum(),
            body: codec::encode_unnumbered(&batch.entries),
            reply,
        };
        let start = {
            let mut queue = lock(&region.queue);
            queue.pending.push(pending);
            !std::mem::replace(&mut queue.committing, true)
        };
        if start {
            tokio::spawn(Arc::clone(self).commit_loop(region));
        }
        let timed_out = || TimeoutSnafu {
            operation: format!("write of {} entries to table {table_id}", batch.len()),
            region: region_id,
            timeout: ctx.timeout,
            servers: self.servers.clone(),
        };
        match tokio::time::timeout(ctx.timeout, outcome).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(self.request_error(
                region_id,
                "committing a write",
                "the commit task ended".into(),
            )),
            Err(_) => timed_out().fail(),
        }
    }

    /// Commits the region's queue until it is empty.
    async fn commit_loop(self: Arc<Self>, region: Arc<Region>) {
        loop {
            let mut w = region.writer.lock().await;
            let batch = {
                let mut queue = lock(&region.queue);
                if queue.pending.is_empty() {
                    queue.committing = false;
                    return;
                }
                take_commit(&mut queue.pending)
            };
            self.commit(&region, &mut w, batch).await;
        }
    }

    /// Numbers `batch` and publishes it as one commit; answers every write.
    async fn commit(&self, region: &Region, w: &mut Writer, batch: Vec<Pending>) {
        if let Err(e) = self.ready(region, w).await {
            for p in batch {
                let _ = p.reply.send(Err(self.copy_error(region, &e)));
            }
            return;
        }
        let (messages, numbered) = self.number(region, w, batch);
        if messages.is_empty() {
            return;
        }
        // Until the acknowledgement the position is unknown; if this task
        // is dropped, the next commit resynchronises.
        w.needs_resync = true;
        let fence = region.fence(w.last_stream_seq);
        match self
            .publish_commit(&messages, Some(fence), self.config.request_timeout)
            .await
        {
            Ok(ack) => self.acknowledge(region, w, ack.sequence, numbered),
            Err(failure) => self.fail_commit(region, w, &failure, numbered).await,
        }
    }

    /// Gives every write of `batch` its sequence numbers, in queue order,
    /// and makes its message; a write that would exhaust the region's
    /// numbers is answered with an error and takes none.
    fn number(
        &self,
        region: &Region,
        w: &mut Writer,
        batch: Vec<Pending>,
    ) -> (Vec<Outgoing>, Vec<Numbered>) {
        let mut messages = Vec::with_capacity(batch.len());
        let mut numbered = Vec::with_capacity(batch.len());
        for mut p in batch {
            let first = w.next_seq;
            let Some(last) = first
                .checked_add(p.entries - 1)
                .filter(|&last| last < MAX_SEQUENCE_NUMBER)
            else {
                let e = SequencesExhaustedSnafu {
                    region: region.id,
                    entries: p.entries as usize,
                }
                .build();
                let _ = p.reply.send(Err(e));
                continue;
            };
            // The numbers are handed out whatever the outcome: never reused.
            w.next_seq = last + 1;
            codec::number_batch(&mut p.body, first);
            messages.push(Outgoing {
                subject: self.config.data_subject(region.id, p.table),
                body: std::mem::take(&mut p.body).freeze(),
                next: Some(last + 1),
            });
            numbered.push(Numbered {
                pending: p,
                first,
                last,
            });
        }
        (messages, numbered)
    }

    /// Records a commit JetStream stored, its last message at stream
    /// sequence `acked`, and answers its writes.
    fn acknowledge(&self, region: &Region, w: &mut Writer, acked: u64, numbered: Vec<Numbered>) {
        let count = numbered.len() as u64;
        assert!(
            acked >= w.last_stream_seq + count,
            "region {}: JetStream stored a commit at {acked} at or below the region's last position {}",
            region.id,
            w.last_stream_seq
        );
        w.last_stream_seq = acked;
        w.needs_resync = false;
        region.acked_last.fetch_max(acked, Ordering::AcqRel);
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        // An atomic batch is stored at consecutive stream sequences.
        let first_stream_seq = acked + 1 - count;
        for (i, n) in numbered.into_iter().enumerate() {
            let p = n.pending;
            if let Some(state) = lock(&region.tables).get_mut(&p.table) {
                state.max_seq = state.max_seq.max(n.last);
                state.last_stream_seq = first_stream_seq + i as u64;
            }
            self.stats.batches_written.fetch_add(1, Ordering::Relaxed);
            self.stats
                .entries_written
                .fetch_add(p.entries, Ordering::Relaxed);
            self.stats
                .bytes_written
                .fetch_add(p.payload_bytes, Ordering::Relaxed);
            let _ = p.reply.send(Ok(n.last));
        }
    }

    /// Answers the writes of a commit JetStream did not acknowledge: fenced
    /// if another owner wrote the region, else a publish error (the
    /// outcome is unknown; the next commit resynchronises).
    async fn fail_commit(
        &self,
        region: &Region,
        w: &mut Writer,
        failure: &PublishFailure,
        numbered: Vec<Numbered>,
    ) {
        self.stats
            .write_failures
            .fetch_add(numbered.len() as u64, Ordering::Relaxed);
        // Someone else wrote the region (fenced), or our own earlier write
        // landed after all: find out which.
        let fenced = match failure.is_wrong_last_sequence() {
            true => self.check_owner(region, w).await.err(),
            false => None,
        };
        for n in numbered {
            let e = match &fenced {
                Some(e) => self.copy_error(region, e),
                None => self.publish_error(region, &n, failure),
            };
            let _ = n.pending.reply.send(Err(e));
        }
    }

    fn publish_error(&self, region: &Region, n: &Numbered, failure: &PublishFailure) -> Error {
        let (p, first, last) = (&n.pending, n.first, n.last);
        match failure {
            PublishFailure::TimedOut => TimeoutSnafu {
                operation: format!("write of {} entries to table {}", p.entries, p.table),
                region: region.id,
                timeout: self.config.request_timeout,
                servers: self.servers.clone(),
            }
            .build(),
            PublishFailure::Failed(e) => PublishSnafu {
                region: region.id,
                table: p.table,
                entries: p.entries as usize,
                first,
                last,
                servers: self.servers.clone(),
            }
            .into_error(e.to_string().into()),
        }
    }

    /// The same error for another write of the commit (errors are not
    /// `Clone`): fencing and ownership keep their kind, others their text.
    fn copy_error(&self, region: &Region, e: &Error) -> Error {
        match e {
            Error::Fenced { by, .. } => self.fenced(region.id, by.clone()),
            Error::RegionOwned { owner, holder, .. } => Error::RegionOwned {
                region: region.id,
                owner: owner.clone(),
                holder: holder.clone(),
            },
            Error::Closed => Error::Closed,
            other => self.request_error(region.id, "preparing a write", other.to_string().into()),
        }
    }
}

/// The writes of the next commit, from the front of the queue.
fn take_commit(pending: &mut Vec<Pending>) -> Vec<Pending> {
    let mut bytes = 0;
    let mut n = 0;
    for p in pending.iter() {
        if n == MAX_COMMIT_WRITES || (n > 0 && bytes + p.body.len() > MAX_COMMIT_BYTES) {
            break;
        }
        bytes += p.body.len();
        n += 1;
    }
    pending.drain(..n).collect()
}
