//! An open region: taking it (the ownership protocol), finding its next
//! sequence number in bounded work, fencing, resynchronising after a failed
//! write, and the per-table state.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};

use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{LastRawMessageError, LastRawMessageErrorKind, Stream};
use segwal::{RegionId, SequenceNumber, TableId};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::codec::{self, Mark, NEXT_HEADER, OwnerRecord};
use crate::direct::{self, Failure};
use crate::error::{Error, FencedSnafu, MalformedSnafu, RegionOwnedSnafu};
use crate::publish::{Fence, Outgoing};
use crate::wal::{Inner, boxed, lock};
use crate::write::Queue;

/// One open region: its stream and what this owner knows of it.
#[derive(Debug)]
pub(crate) struct Region {
    pub(crate) id: RegionId,
    pub(crate) stream_name: String,
    pub(crate) stream: Stream,
    /// Every subject of the region: the filter of its fence and its scans.
    pub(crate) subjects: String,
    /// Held across each commit and its acknowledgement: one commit in
    /// flight per region (see DESIGN.md on why not more).
    pub(crate) writer: Arc<Mutex<Writer>>,
    /// Writes waiting for the next commit.
    pub(crate) queue: StdMutex<Queue>,
    /// The stream sequence of the region's last message this owner had
    /// acknowledged (or found at open): scans stop there.
    pub(crate) acked_last: AtomicU64,
    /// Set once another owner took the region over: the owner it names.
    pub(crate) fenced_by: StdMutex<Option<String>>,
    /// Per table, loaded on first use (under the writer lock, so that no
    /// acknowledged write is missed) and kept current by this owner.
    pub(crate) tables: StdMutex<HashMap<TableId, TableState>>,
}

/// The write position of an owned region.
///
/// # Invariants
/// While `needs_resync` is false, `last_stream_seq` is the stream sequence
/// of the region's last message and every sequence number below `next_seq`
/// has been handed out (to a stored batch or a failed one); `take_seq` is
/// the stream sequence of this owner's take record.
#[derive(Debug)]
pub(crate) struct Writer {
    pub(crate) last_stream_seq: u64,
    pub(crate) next_seq: SequenceNumber,
    pub(crate) take_seq: u64,
    pub(crate) needs_resync: bool,
    /// Set by `close_region`: writes still queued fail.
    pub(crate) released: bool,
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TableState {
    pub(crate) max_seq: SequenceNumber,
    pub(crate) deleted_up_to: SequenceNumber,
    /// The stream sequence of the table's last batch (0: none): a read
    /// is complete once it has seen it.
    pub(crate) last_stream_seq: u64,
    /// A purge after the last delete mark failed; the next delete retries.
    pub(crate) purge_pending: bool,
}

impl Region {
    /// A region this owner has just taken with its take record at stream
    /// sequence `take_seq`, the region's next number being `next_seq`.
    fn taken(
        id: RegionId,
        stream_name: String,
        stream: Stream,
        subjects: String,
        take_seq: u64,
        next_seq: SequenceNumber,
    ) -> Arc<Region> {
        Arc::new(Region {
            id,
            stream_name,
            stream,
            subjects,
            writer: Arc::new(Mutex::new(Writer {
                last_stream_seq: take_seq,
                next_seq,
                take_seq,
                needs_resync: false,
                released: false,
            })),
            queue: StdMutex::new(Queue::default()),
            acked_last: AtomicU64::new(take_seq),
            fenced_by: StdMutex::new(None),
            tables: StdMutex::new(HashMap::new()),
        })
    }

    pub(crate) fn fence(&self, last: u64) -> Fence<'_> {
        Fence {
            subjects: &self.subjects,
            last,
        }
    }
}

impl Inner {
    pub(crate) fn malformed(
        &self,
        region: RegionId,
        message: &StreamMessage,
        reason: String,
    ) -> Error {
        self.malformed_at(region, message.subject.as_str(), message.sequence, reason)
    }

    pub(crate) fn malformed_at(
        &self,
        region: RegionId,
        subject: &str,
        stream_sequence: u64,
        reason: String,
    ) -> Error {
        MalformedSnafu {
            region,
            stream: self.config.stream_name(self.config.stream_of(region)),
            subject: subject.to_owned(),
            stream_sequence,
            reason,
        }
        .build()
    }

    pub(crate) fn fenced(&self, region: RegionId, by: String) -> Error {
        FencedSnafu {
            region,
            owner: self.config.owner.clone(),
            by,
        }
        .build()
    }

    /// The region, opened (taken) on first use.
    pub(crate) async fn region(&self, id: RegionId) -> Result<Arc<Region>, Error> {
        self.check_open()?;
        let cell = Arc::clone(lock(&self.regions).entry(id).or_default());
        let region = cell.get_or_try_init(|| self.open_region(id, false)).await?;
        if let Some(by) = lock(&region.fenced_by).clone() {
            return Err(self.fenced(id, by));
        }
        Ok(Arc::clone(region))
    }

    /// For read-only calls: the region if it is open or has any message
    /// (then it is opened), `None` for a region never written, without
    /// creating a stream or writing anything.
    pub(crate) async fn region_for_read(&self, id: RegionId) -> Result<Option<Arc<Region>>, Error> {
        self.check_open()?;
        let open = lock(&self.regions)
            .get(&id)
            .is_some_and(|c| c.initialized());
        if !open {
            let Some(stream) = self.stream(self.config.stream_of(id), false).await? else {
                return Ok(None);
            };
            let subjects = self.config.region_subjects(id);
            if self.last_for(id, &stream, &subjects).await?.is_none() {
                return Ok(None);
            }
        }
        self.region(id).await.map(Some)
    }

    /// Opens region `id`: creates its stream if needed, reads the next
    /// sequence number from the region's last message, and takes ownership
    /// with a take record fenced at that message, so that a concurrent
    /// taker, or a writer that went on meanwhile, makes it look again.
    /// Refuses a region another owner holds unless `force`.
    pub(crate) async fn open_region(
        &self,
        id: RegionId,
        force: bool,
    ) -> Result<Arc<Region>, Error> {
        let index = self.config.stream_of(id);
        let stream = self.stream(index, true).await?.expect("created");
        let subjects = self.config.region_subjects(id);
        let owner_subject = self.config.owner_subject(id);
        let record = codec::encode_owner(&OwnerRecord::Take(self.config.owner.clone()));
        if force {
            self.fence_other_owners(id, &owner_subject, &record).await?;
        }
        for attempt in 0.. {
            let (last, next_seq) = self.region_position(id, &stream).await?;
            let holder = self.owner_record(id, &stream).await?;
            if let Some((_, OwnerRecord::Take(holder))) = &holder
                && *holder != self.config.owner
            {
                if !force {
                    return RegionOwnedSnafu {
                        region: id,
                        owner: self.config.owner.clone(),
                        holder: holder.clone(),
                    }
                    .fail();
                }
                log::warn!(
                    "taking region {id} over from owner {holder:?}, which never released it; \
                     its later writes will be fenced"
                );
            }
            let take = Outgoing {
                subject: owner_subject.clone(),
                body: record.clone(),
                next: Some(next_seq),
            };
            let fence = Fence {
                subjects: &subjects,
                last,
            };
            match self
                .publish_commit(&[take], Some(fence), self.config.request_timeout)
                .await
            {
                Ok(ack) => {
                    self.purge_below(id, &stream, &owner_subject, ack.sequence)
                        .await;
                    self.stats.regions_opened.fetch_add(1, Ordering::Relaxed);
                    log::info!(
                        "opened region {id} (stream {}) as owner {:?}: next sequence {next_seq}",
                        self.config.stream_name(index),
                        self.config.owner
                    );
                    let stream_name = self.config.stream_name(index);
                    return Ok(Region::taken(
                        id,
                        stream_name,
                        stream,
                        subjects,
                        ack.sequence,
                        next_seq,
                    ));
                }
                // Something was stored since we looked; look again.
                Err(failure) if failure.is_wrong_last_sequence() && attempt < 8 => continue,
                Err(e) => {
                    return Err(self.request_error(
                        id,
                        "publishing the take record",
                        e.to_string().into(),
                    ));
                }
            }
        }
        unreachable!("the loop returns")
    }

    /// Before a forced takeover: a take record stored whatever the
    /// region's position, so that every position the old owner knows is
    /// stale and its writes fail from here on. It carries no `Segwal-Next`
    /// (the old owner may have written since we looked); the take that
    /// follows, fenced at it, does.
    async fn fence_other_owners(
        &self,
        id: RegionId,
        owner_subject: &str,
        record: &bytes::Bytes,
    ) -> Result<(), Error> {
        let fence = Outgoing {
            subject: owner_subject.to_owned(),
            body: record.clone(),
            next: None,
        };
        match self
            .publish_commit(&[fence], None, self.config.request_timeout)
            .await
        {
            Ok(ack) => {
                log::warn!(
                    "region {id}: fenced any other owner at stream sequence {}",
                    ack.sequence
                );
                Ok(())
            }
            Err(e) => {
                Err(self.request_error(id, "publishing the fence record", e.to_string().into()))
            }
        }
    }

    /// The stream sequence of the region's last message (0: none) and the
    /// region's next sequence number, from that message's `Segwal-Next`.
    /// Bounded work: one lookup, plus a binary search over the stream when
    /// the last message is a fence record (a forced takeover that went no
    /// further), which carries no number. `Segwal-Next` never decreases
    /// along a region's messages.
    pub(crate) async fn region_position(
        &self,
        id: RegionId,
        stream: &Stream,
    ) -> Result<(u64, SequenceNumber), Error> {
        let subjects = self.config.region_subjects(id);
        let Some(last) = self.last_for(id, stream, &subjects).await? else {
            return Ok((0, 1));
        };
        let mut message = last.clone();
        loop {
            if let Some(header) = message.headers.get(NEXT_HEADER) {
                return match header.as_str().parse::<u64>() {
                    Ok(next) if next >= 1 => Ok((last.sequence, next)),
                    _ => Err(self.malformed(id, &message, format!("invalid {NEXT_HEADER} header"))),
                };
            }
            match self
                .last_before(id, stream, &subjects, message.sequence)
                .await?
            {
                Some(earlier) => message = earlier,
                None => return Ok((last.sequence, 1)),
            }
        }
    }

    /// The last message of `subjects` below stream sequence `below`, by
    /// binary search over "first message at or after": O(log n) lookups.
    async fn last_before(
        &self,
        id: RegionId,
        stream: &Stream,
        subjects: &str,
        below: u64,
    ) -> Result<Option<StreamMessage>, Error> {
        let (mut lo, mut hi, mut best) = (1, below.saturating_sub(1), None);
        while lo <= hi {
            let mid = lo + (hi - lo) / 2;
            match self.first_from(id, stream, subjects, mid).await? {
                Some(m) if m.sequence <= hi => {
                    lo = m.sequence + 1;
                    best = Some(m);
                }
                _ => hi = mid - 1,
            }
        }
        Ok(best)
    }

    /// The region's latest ownership record and its stream sequence.
    pub(crate) async fn owner_record(
        &self,
        id: RegionId,
        stream: &Stream,
    ) -> Result<Option<(u64, OwnerRecord)>, Error> {
        let subject = self.config.owner_subject(id);
        let Some(message) = self.last_for(id, stream, &subject).await? else {
            return Ok(None);
        };
        let record =
            codec::decode_owner(&message.payload).map_err(|r| self.malformed(id, &message, r))?;
        Ok(Some((message.sequence, record)))
    }

    /// The last message of `subject` (wildcards allowed), from the stream
    /// leader (never stale), retrying transient failures.
    pub(crate) async fn last_for(
        &self,
        id: RegionId,
        stream: &Stream,
        subject: &str,
    ) -> Result<Option<StreamMessage>, Error> {
        self.lookup(
            id,
            || format!("reading the last message of {subject}"),
            || stream.get_last_raw_message_by_subject(subject),
        )
        .await
    }

    /// The first message of `subject` at or after stream sequence `from`,
    /// from the stream leader.
    pub(crate) async fn first_from(
        &self,
        id: RegionId,
        stream: &Stream,
        subject: &str,
        from: u64,
    ) -> Result<Option<StreamMessage>, Error> {
        self.lookup(
            id,
            || format!("finding the first message of {subject} from {from}"),
            || stream.get_first_raw_message_by_subject(subject, from),
        )
        .await
    }

    async fn lookup<F, Fut>(
        &self,
        id: RegionId,
        what: impl Fn() -> String,
        mut get: F,
    ) -> Result<Option<StreamMessage>, Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<StreamMessage, LastRawMessageError>>,
    {
        let deadline = Instant::now() + self.config.request_timeout;
        direct::retry(&what, deadline, || {
            let found = get();
            async move {
                match found.await {
                    Ok(message) => Ok(Some(message)),
                    Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
                    Err(e) if e.kind() == LastRawMessageErrorKind::InvalidSubject => {
                        Err(Failure::Fatal(boxed(e)))
                    }
                    Err(e) => Err(Failure::Transient(boxed(e))),
                }
            }
        })
        .await
        .map_err(|e| self.request_error(id, what(), e))
    }

    /// Fails with [`Error::Fenced`] (and fences the region for good) unless
    /// this owner's take record is still the region's latest.
    pub(crate) async fn check_owner(&self, region: &Region, w: &Writer) -> Result<(), Error> {
        let by = match self.owner_record(region.id, &region.stream).await? {
            Some((seq, OwnerRecord::Take(owner)))
                if seq == w.take_seq && owner == self.config.owner =>
            {
                return Ok(());
            }
            Some((_, OwnerRecord::Take(owner))) => owner,
            Some((_, OwnerRecord::Release(owner))) => format!("none (released by {owner})"),
            // The latest record is never purged: only older ones are.
            None => {
                return Err(self.request_error(
                    region.id,
                    "checking ownership",
                    "the region's ownership record is not visible".into(),
                ));
            }
        };
        log::warn!(
            "region {}: owner {:?} is fenced; the region is held by {by:?}",
            region.id,
            self.config.owner
        );
        *lock(&region.fenced_by) = Some(by.clone());
        Err(self.fenced(region.id, by))
    }

    /// Makes the writer usable: fails if fenced, and resynchronises with
    /// the stream after a failed or unknown write.
    pub(crate) async fn ready(&self, region: &Region, w: &mut Writer) -> Result<(), Error> {
        if let Some(by) = lock(&region.fenced_by).clone() {
            return Err(self.fenced(region.id, by));
        }
        if w.released {
            return Err(self.request_error(
                region.id,
                "writing",
                "the region was closed (close_region) while the write waited".into(),
            ));
        }
        if w.needs_resync {
            self.resync(region, w).await?;
        }
        Ok(())
    }

    /// After a failed write: if this owner still holds the region, take
    /// the region's last position and next sequence number from the
    /// server (never going below numbers already handed out); otherwise
    /// fence.
    pub(crate) async fn resync(&self, region: &Region, w: &mut Writer) -> Result<(), Error> {
        self.check_owner(region, w).await?;
        let (last, floor) = self.region_position(region.id, &region.stream).await?;
        w.last_stream_seq = last;
        w.next_seq = w.next_seq.max(floor);
        w.needs_resync = false;
        region.acked_last.fetch_max(last, Ordering::AcqRel);
        // Tables written by the failed commit may or may not hold it:
        // reload their state on next use.
        lock(&region.tables).clear();
        self.stats.resyncs.fetch_add(1, Ordering::Relaxed);
        log::info!(
            "region {}: resynchronised at stream sequence {last}, next sequence {}",
            region.id,
            w.next_seq
        );
        Ok(())
    }

    /// The table's state, loaded from the stream on first use. The writer
    /// guard proves no write of the region is in flight.
    pub(crate) async fn table_state(
        &self,
        region: &Region,
        _writer: &mut Writer,
        table: TableId,
    ) -> Result<TableState, Error> {
        if let Some(state) = lock(&region.tables).get(&table) {
            return Ok(*state);
        }
        let id = region.id;
        let data = self
            .last_for(id, &region.stream, &self.config.data_subject(id, table))
            .await?;
        let (data_last, last_stream_seq) = match &data {
            Some(message) => (self.batch_of(id, message)?.last(), message.sequence),
            None => (0, 0),
        };
        let mark = match self
            .last_for(id, &region.stream, &self.config.mark_subject(id, table))
            .await?
        {
            Some(message) => {
                codec::decode_mark(&message.payload).map_err(|r| self.malformed(id, &message, r))?
            }
            None => Mark {
                deleted_up_to: 0,
                table_max: 0,
            },
        };
        let state = TableState {
            max_seq: data_last.max(mark.table_max),
            deleted_up_to: mark.deleted_up_to,
            last_stream_seq,
            purge_pending: false,
        };
        lock(&region.tables).insert(table, state);
        Ok(state)
    }

    /// The table's state, for readers.
    pub(crate) async fn table_state_for_read(
        &self,
        region: &Region,
        table: TableId,
    ) -> Result<TableState, Error> {
        if let Some(state) = lock(&region.tables).get(&table) {
            return Ok(*state);
        }
        let mut w = region.writer.lock().await;
        self.table_state(region, &mut w, table).await
    }

    pub(crate) fn batch_of(
        &self,
        id: RegionId,
        message: &StreamMessage,
    ) -> Result<codec::DecodedBatch, Error> {
        codec::decode_batch(&message.payload).map_err(|r| self.malformed(id, message, r))
    }

    /// Best effort: removes `subject`'s messages below stream sequence
    /// `below` (older ownership records or delete marks).
    pub(crate) async fn purge_below(
        &self,
        id: RegionId,
        stream: &Stream,
        subject: &str,
        below: u64,
    ) {
        // nats-server takes a purge up to sequence 1 as a purge of the whole
        // subject; there is nothing below 1 anyway.
        if below <= 1 {
            return;
        }
        match stream.purge().filter(subject).sequence(below).await {
            Ok(response) => {
                self.stats
                    .messages_purged
                    .fetch_add(response.purged, Ordering::Relaxed);
            }
            Err(e) => log::warn!(
                "region {id}: purging {subject} below {below} failed (retried later): {e}"
            ),
        }
    }
}
