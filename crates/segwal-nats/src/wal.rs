//! [`NatsWal`]: the `WalManager` over JetStream. The module docs of the
//! crate describe the mapping; this file holds the protocol.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::stream::{self, LastRawMessageError, LastRawMessageErrorKind, Stream};
use async_nats::jetstream::{self, message::StreamMessage};
use async_trait::async_trait;
use bytes::Bytes;
use segwal::{
    BatchLogIterator, LogWriteBatch, MAX_SEQUENCE_NUMBER, ReadContext, ReadRequest, RegionId,
    ScanContext, ScanRequest, SequenceNumber, TableId, WalLocation, WalManager, WriteContext,
};
use snafu::{IntoError, ResultExt};
use tokio::sync::{Mutex, MutexGuard as AsyncGuard, OnceCell};

use crate::codec::{self, Mark, NEXT_HEADER, OwnerRecord};
use crate::config::NatsWalConfig;
use crate::error::{
    BatchTooLargeSnafu, ClientError, ConnectSnafu, EmptyBatchSnafu, Error, FencedSnafu,
    MalformedSnafu, PublishSnafu, RegionOwnedSnafu, SequencesExhaustedSnafu, TimeoutSnafu,
};
use crate::read::{NatsSource, ReadFilter};

/// Room left in a message for the headers next to the body.
const HEADER_ROOM_BYTES: usize = 256;

/// The write-ahead log on a NATS JetStream server or cluster. Clones share
/// one connection and one set of open regions (closing one closes all).
///
/// Each region is one stream, written only by the instance that owns it;
/// see the crate docs for the mapping, the ownership protocol and what is
/// guaranteed.
#[derive(Debug, Clone)]
pub struct NatsWal {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: NatsWalConfig,
    servers: String,
    client: async_nats::Client,
    js: jetstream::Context,
    regions: StdMutex<HashMap<RegionId, Arc<OnceCell<Arc<Region>>>>>,
    closed: AtomicBool,
    stats: Stats,
}

#[derive(Debug, Default)]
struct Stats {
    batches_written: AtomicU64,
    entries_written: AtomicU64,
    bytes_written: AtomicU64,
    write_failures: AtomicU64,
    resyncs: AtomicU64,
    deletes: AtomicU64,
    messages_purged: AtomicU64,
    regions_opened: AtomicU64,
}

/// One open region: its stream and what this owner knows of it.
#[derive(Debug)]
pub(crate) struct Region {
    pub(crate) id: RegionId,
    pub(crate) stream_name: String,
    pub(crate) stream: Stream,
    /// Held across each publish and its acknowledgement: one message in
    /// flight per region, so stored messages are in the order their
    /// sequence numbers were assigned (see the crate docs).
    writer: Mutex<Writer>,
    /// The stream sequence of the last message this owner had
    /// acknowledged (or found at open): reads and scans stop there.
    pub(crate) acked_last: AtomicU64,
    /// Set once another owner took the region over: the owner it names.
    fenced_by: StdMutex<Option<String>>,
    /// Per table, loaded on first use (under the writer lock, so that no
    /// acknowledged write is missed) and kept current by this owner.
    tables: StdMutex<HashMap<TableId, TableState>>,
}

/// The write position of an owned region.
///
/// # Invariants
/// While `needs_resync` is false, `last_stream_seq` is the stream's last
/// sequence and every sequence number below `next_seq` has been handed out
/// (to a stored batch or a failed one); `take_seq` is the stream sequence
/// of this owner's take record.
#[derive(Debug)]
pub(crate) struct Writer {
    last_stream_seq: u64,
    next_seq: SequenceNumber,
    take_seq: u64,
    needs_resync: bool,
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TableState {
    max_seq: SequenceNumber,
    pub(crate) deleted_up_to: SequenceNumber,
    /// A purge after the last delete mark failed; the next delete retries.
    purge_pending: bool,
}

/// How a publish failed.
enum PublishFailure {
    TimedOut,
    Failed(PublishError),
}

fn lock<T>(mutex: &StdMutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn boxed(err: impl std::error::Error + Send + Sync + 'static) -> ClientError {
    Box::new(err)
}

impl NatsWal {
    /// Checks `config` and connects to its servers. Regions are opened (and
    /// their streams created, with the configured replicas) on first use.
    pub async fn open(config: NatsWalConfig) -> Result<NatsWal, Error> {
        config.check()?;
        let servers = config.servers_label();
        let client = async_nats::ConnectOptions::new()
            .name(format!("segwal {}", config.owner))
            .connection_timeout(config.request_timeout)
            .request_timeout(Some(config.request_timeout))
            .connect(config.servers.as_slice())
            .await
            .map_err(boxed)
            .context(ConnectSnafu {
                servers: servers.clone(),
            })?;
        let js = jetstream::ContextBuilder::new()
            .timeout(config.request_timeout)
            .build(client.clone());
        Ok(NatsWal {
            inner: Arc::new(Inner {
                config,
                servers,
                client,
                js,
                regions: StdMutex::new(HashMap::new()),
                closed: AtomicBool::new(false),
                stats: Stats::default(),
            }),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &NatsWalConfig {
        &self.inner.config
    }

    /// Bytes the servers hold for region `region_id` (its stream's stored
    /// messages, as JetStream counts them; 0 if it has no stream). Needs no
    /// ownership of the region.
    pub async fn stored_bytes(&self, region_id: RegionId) -> Result<u64, Error> {
        self.inner.check_open()?;
        let name = self.inner.config.stream_name(region_id);
        match self.inner.js.get_stream(&name).await {
            Ok(stream) => Ok(stream.cached_info().state.bytes),
            Err(e)
                if matches!(
                    e.kind(),
                    async_nats::jetstream::context::GetStreamErrorKind::JetStream(ref js)
                        if js.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND
                ) =>
            {
                Ok(0)
            }
            Err(e) => {
                Err(self
                    .inner
                    .request_error(region_id, "reading the stream's size", boxed(e)))
            }
        }
    }

    /// Takes region `region_id` over even if another owner holds it (that
    /// owner crashed, or is cut off and will be fenced): its later writes
    /// and deletes fail. Use it only once the coordinator has moved the
    /// region here; an owner that released the region, or this instance's
    /// own name, needs no takeover.
    pub async fn take_over_region(&self, region_id: RegionId) -> Result<(), Error> {
        self.inner.check_open()?;
        let region = self.inner.open_region(region_id, true).await?;
        let cell = Arc::new(OnceCell::new_with(Some(region)));
        lock(&self.inner.regions).insert(region_id, cell);
        Ok(())
    }
}

impl Inner {
    fn check_open(&self) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    fn request_error(
        &self,
        region: RegionId,
        operation: impl Into<String>,
        source: ClientError,
    ) -> Error {
        Error::Request {
            operation: operation.into(),
            region,
            stream: self.config.stream_name(region),
            servers: self.servers.clone(),
            source,
        }
    }

    /// The error for a publish of `what` (an ownership record) that failed.
    fn publish_error(&self, region: RegionId, what: &str, failure: PublishFailure) -> Error {
        let source = match failure {
            PublishFailure::Failed(e) => boxed(e),
            PublishFailure::TimedOut => "no acknowledgement in time".into(),
        };
        self.request_error(region, format!("publishing the {what}"), source)
    }

    fn malformed(&self, region: RegionId, message: &StreamMessage, reason: String) -> Error {
        MalformedSnafu {
            region,
            stream: self.config.stream_name(region),
            subject: message.subject.to_string(),
            stream_sequence: message.sequence,
            reason,
        }
        .build()
    }

    /// The region, opened (taken) on first use.
    pub(crate) async fn region(&self, id: RegionId) -> Result<Arc<Region>, Error> {
        self.check_open()?;
        let cell = Arc::clone(lock(&self.regions).entry(id).or_default());
        let region = cell.get_or_try_init(|| self.open_region(id, false)).await?;
        if let Some(by) = lock(&region.fenced_by).clone() {
            return FencedSnafu {
                region: id,
                owner: self.config.owner.clone(),
                by,
            }
            .fail();
        }
        Ok(Arc::clone(region))
    }

    /// Opens region `id`: creates its stream if needed, reads the next
    /// sequence number from the stream's last message, and takes ownership
    /// with a take record published with `Nats-Expected-Last-Sequence`, so
    /// that a concurrent taker, or a writer that went on meanwhile, makes
    /// it start again. Refuses a region another owner holds unless `force`.
    async fn open_region(&self, id: RegionId, force: bool) -> Result<Arc<Region>, Error> {
        let stream_name = self.config.stream_name(id);
        let stream = self
            .js
            .get_or_create_stream(stream::Config {
                name: stream_name.clone(),
                subjects: vec![self.config.region_subjects(id)],
                storage: stream::StorageType::File,
                num_replicas: self.config.replicas,
                retention: stream::RetentionPolicy::Limits,
                discard: stream::DiscardPolicy::Old,
                description: Some(format!("segwal region {id}")),
                ..Default::default()
            })
            .await
            .map_err(|e| self.request_error(id, "creating or finding the stream", boxed(e)))?;
        let record = codec::encode_owner(&OwnerRecord::Take(self.config.owner.clone()));
        let subject = self.config.owner_subject(id);
        if force {
            // Fence first: a take record stored whatever the stream's
            // position, so that every position the old owner knows is
            // stale and its writes fail from here on. It carries no
            // `Segwal-Next` (the old owner may have written since we
            // looked); the take below, made with the position checked,
            // does.
            match self
                .publish(subject.clone(), record.clone(), None, None, None)
                .await
            {
                Ok(ack) => log::warn!(
                    "region {id}: fenced any other owner at stream sequence {}",
                    ack.sequence
                ),
                Err(failure) => return Err(self.publish_error(id, "fence record", failure)),
            }
        }
        for attempt in 0.. {
            let last = self.stream_last(id, &stream).await?;
            let next_seq = self.floor_at(id, &stream, last).await?;
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
            match self
                .publish(
                    subject.clone(),
                    record.clone(),
                    Some(last),
                    Some(next_seq),
                    None,
                )
                .await
            {
                Ok(ack) => {
                    self.purge_below(id, &stream, &subject, ack.sequence).await;
                    self.stats.regions_opened.fetch_add(1, Ordering::Relaxed);
                    log::info!(
                        "opened region {id} (stream {stream_name}) as owner {:?}: next sequence {next_seq}",
                        self.config.owner
                    );
                    return Ok(Arc::new(Region {
                        id,
                        stream_name,
                        stream,
                        writer: Mutex::new(Writer {
                            last_stream_seq: ack.sequence,
                            next_seq,
                            take_seq: ack.sequence,
                            needs_resync: false,
                        }),
                        acked_last: AtomicU64::new(ack.sequence),
                        fenced_by: StdMutex::new(None),
                        tables: StdMutex::new(HashMap::new()),
                    }));
                }
                // Something was stored since we looked; look again.
                Err(PublishFailure::Failed(e))
                    if e.kind() == PublishErrorKind::WrongLastSequence && attempt < 8 =>
                {
                    continue;
                }
                Err(failure) => return Err(self.publish_error(id, "take record", failure)),
            }
        }
        unreachable!("the loop returns")
    }

    async fn stream_last(&self, id: RegionId, stream: &Stream) -> Result<u64, Error> {
        let info = stream
            .get_info()
            .await
            .map_err(|e| self.request_error(id, "reading the stream state", boxed(e)))?;
        Ok(info.state.last_sequence)
    }

    /// The region's next sequence number, from the `Segwal-Next` header of
    /// the stream's last message (`last`). That message is never purged:
    /// every purge follows a newer message and removes only older ones.
    /// Only a fence record (a forced takeover) has no header; then the
    /// message before it counts (the headers never decrease along the
    /// stream).
    async fn floor_at(&self, id: RegionId, stream: &Stream, last: u64) -> Result<u64, Error> {
        const MAX_STEPS: u64 = 1000;
        for seq in (last.saturating_sub(MAX_STEPS)..=last).rev() {
            if seq == 0 {
                return Ok(1);
            }
            let message = match stream.get_raw_message(seq).await {
                Ok(message) => message,
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => continue,
                Err(e) => {
                    return Err(self.request_error(
                        id,
                        format!("reading stream message {seq} for the next sequence number"),
                        boxed(e),
                    ));
                }
            };
            let Some(header) = message.headers.get(NEXT_HEADER) else {
                continue;
            };
            return match header.as_str().parse::<u64>() {
                Ok(next) if next >= 1 => Ok(next),
                _ => Err(self.malformed(id, &message, format!("invalid {NEXT_HEADER} header"))),
            };
        }
        Err(self.request_error(
            id,
            "finding the next sequence number",
            format!("none of the last {MAX_STEPS} messages before {last} carries {NEXT_HEADER}")
                .into(),
        ))
    }

    /// The region's latest ownership record and its stream sequence.
    async fn owner_record(
        &self,
        id: RegionId,
        stream: &Stream,
    ) -> Result<Option<(u64, OwnerRecord)>, Error> {
        let Some(message) = self
            .last_for(id, stream, &self.config.owner_subject(id))
            .await?
        else {
            return Ok(None);
        };
        let record =
            codec::decode_owner(&message.payload).map_err(|r| self.malformed(id, &message, r))?;
        Ok(Some((message.sequence, record)))
    }

    async fn last_for(
        &self,
        id: RegionId,
        stream: &Stream,
        subject: &str,
    ) -> Result<Option<StreamMessage>, Error> {
        let found = stream.get_last_raw_message_by_subject(subject).await;
        self.found_or_none(id, found, || {
            format!("reading the last message of {subject}")
        })
    }

    /// The first message of `subject` at or after stream sequence `from`.
    async fn first_from(
        &self,
        id: RegionId,
        stream: &Stream,
        subject: &str,
        from: u64,
    ) -> Result<Option<StreamMessage>, Error> {
        let found = stream.get_first_raw_message_by_subject(subject, from).await;
        self.found_or_none(id, found, || {
            format!("finding the first message of {subject} from {from}")
        })
    }

    /// A message lookup's result: `None` when no message matched, an error
    /// naming `what` was being looked up when the request failed.
    fn found_or_none(
        &self,
        id: RegionId,
        found: Result<StreamMessage, LastRawMessageError>,
        what: impl FnOnce() -> String,
    ) -> Result<Option<StreamMessage>, Error> {
        match found {
            Ok(message) => Ok(Some(message)),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(self.request_error(id, what(), boxed(e))),
        }
    }

    fn batch_of(
        &self,
        id: RegionId,
        message: &StreamMessage,
    ) -> Result<codec::DecodedBatch, Error> {
        codec::decode_batch(&message.payload).map_err(|r| self.malformed(id, message, r))
    }

    /// The stream sequence of the first batch of table `subject` (up to
    /// stream sequence `hi`) holding an entry above `floor`, by binary
    /// search: a table's batches are in ascending sequence order in the
    /// stream. O(log n) requests, so a read costs what it reads.
    pub(crate) async fn first_live(
        &self,
        region: &Region,
        subject: &str,
        floor: SequenceNumber,
        hi: u64,
    ) -> Result<Option<u64>, Error> {
        let id = region.id;
        let Some(first) = self.first_from(id, &region.stream, subject, 1).await? else {
            return Ok(None);
        };
        if first.sequence > hi {
            return Ok(None);
        }
        if self.batch_of(id, &first)?.last() > floor {
            return Ok(Some(first.sequence));
        }
        let (mut lo, mut hi, mut best) = (first.sequence + 1, hi, None);
        while lo <= hi {
            let mid = lo + (hi - lo) / 2;
            match self.first_from(id, &region.stream, subject, mid).await? {
                Some(m) if m.sequence <= hi => {
                    if self.batch_of(id, &m)?.last() > floor {
                        best = Some(m.sequence);
                        hi = mid - 1;
                    } else {
                        lo = m.sequence + 1;
                    }
                }
                // No message of the subject in [mid, hi].
                _ => hi = mid - 1,
            }
        }
        Ok(best)
    }

    async fn publish(
        &self,
        subject: String,
        body: Bytes,
        expected_last: Option<u64>,
        next_seq: Option<SequenceNumber>,
        timeout: Option<Duration>,
    ) -> Result<PublishAck, PublishFailure> {
        let mut headers = HeaderMap::new();
        if let Some(expected_last) = expected_last {
            headers.insert(
                async_nats::header::NATS_EXPECTED_LAST_SEQUENCE,
                expected_last.to_string().as_str(),
            );
        }
        if let Some(next_seq) = next_seq {
            headers.insert(NEXT_HEADER, next_seq.to_string().as_str());
        }
        let ack = self
            .js
            .publish_with_headers(subject, headers, body)
            .await
            .map_err(PublishFailure::Failed)?;
        let result = match timeout {
            Some(timeout) => tokio::time::timeout(timeout, ack)
                .await
                .map_err(|_| PublishFailure::TimedOut)?,
            None => ack.await,
        };
        result.map_err(|e| match e.kind() {
            PublishErrorKind::TimedOut => PublishFailure::TimedOut,
            _ => PublishFailure::Failed(e),
        })
    }

    /// Best effort: removes `subject`'s messages below stream sequence
    /// `below` (older ownership records or delete marks).
    async fn purge_below(&self, id: RegionId, stream: &Stream, subject: &str, below: u64) {
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

    /// Makes the writer usable: fails if fenced, and resynchronises with
    /// the stream after a failed or unknown write.
    async fn ready(&self, region: &Region, w: &mut Writer) -> Result<(), Error> {
        if let Some(by) = lock(&region.fenced_by).clone() {
            return FencedSnafu {
                region: region.id,
                owner: self.config.owner.clone(),
                by,
            }
            .fail();
        }
        if w.needs_resync {
            self.resync(region, w).await?;
        }
        Ok(())
    }

    /// After a failed write: if this owner still holds the region, take
    /// the stream's last sequence and next sequence number from the server
    /// (never going below numbers already handed out); otherwise fence.
    async fn resync(&self, region: &Region, w: &mut Writer) -> Result<(), Error> {
        self.check_owner(region, w).await?;
        let last = self.stream_last(region.id, &region.stream).await?;
        let floor = self.floor_at(region.id, &region.stream, last).await?;
        w.last_stream_seq = last;
        w.next_seq = w.next_seq.max(floor);
        w.needs_resync = false;
        region.acked_last.fetch_max(last, Ordering::AcqRel);
        self.stats.resyncs.fetch_add(1, Ordering::Relaxed);
        log::info!(
            "region {}: resynchronised with stream {} at {last}, next sequence {}",
            region.id,
            region.stream_name,
            w.next_seq
        );
        Ok(())
    }

    /// Fails with [`Error::Fenced`] (and fences the region for good) unless
    /// this owner's take record is still the region's latest.
    async fn check_owner(&self, region: &Region, w: &Writer) -> Result<(), Error> {
        let record = self.owner_record(region.id, &region.stream).await?;
        let by = match record {
            Some((seq, OwnerRecord::Take(owner)))
                if seq == w.take_seq && owner == self.config.owner =>
            {
                return Ok(());
            }
            Some((_, OwnerRecord::Take(owner))) => owner,
            Some((_, OwnerRecord::Release(owner))) => format!("none (released by {owner})"),
            // The latest record is never purged; a server that has not
            // caught up yet (just after an election) may not show it. Not
            // a reason to give the region up: fail this call, retry later.
            None => {
                return Err(self.request_error(
                    region.id,
                    "checking ownership",
                    "the region's ownership record is not visible (yet)".into(),
                ));
            }
        };
        log::warn!(
            "region {}: owner {:?} is fenced; the region is held by {by:?}",
            region.id,
            self.config.owner
        );
        *lock(&region.fenced_by) = Some(by.clone());
        FencedSnafu {
            region: region.id,
            owner: self.config.owner.clone(),
            by,
        }
        .fail()
    }

    /// Publishes one message of an owned region at the writer's position.
    /// `make_error` builds the error for a failure that is not a fence.
    #[allow(clippy::too_many_arguments)] // Each caller's error context; a struct would only rename them.
    async fn publish_owned(
        &self,
        region: &Region,
        w: &mut Writer,
        subject: String,
        body: Bytes,
        timeout: Duration,
        operation: impl Fn() -> String,
        make_error: impl FnOnce(ClientError) -> Error,
    ) -> Result<PublishAck, Error> {
        // Until the acknowledgement, the position is unknown; if this future
        // is dropped, the next call resynchronises.
        w.needs_resync = true;
        match self
            .publish(
                subject,
                body,
                Some(w.last_stream_seq),
                Some(w.next_seq),
                Some(timeout),
            )
            .await
        {
            Ok(ack) => {
                assert_eq!(
                    ack.sequence,
                    w.last_stream_seq + 1,
                    "JetStream stored a message of region {} past the expected last sequence",
                    region.id
                );
                w.last_stream_seq = ack.sequence;
                w.needs_resync = false;
                region.acked_last.fetch_max(ack.sequence, Ordering::AcqRel);
                Ok(ack)
            }
            Err(failure) => {
                self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
                match failure {
                    PublishFailure::Failed(e)
                        if e.kind() == PublishErrorKind::WrongLastSequence =>
                    {
                        // Someone else wrote: fenced, or our own earlier
                        // write landed after all.
                        self.check_owner(region, w).await?;
                        Err(make_error(boxed(e)))
                    }
                    PublishFailure::Failed(e) => Err(make_error(boxed(e))),
                    PublishFailure::TimedOut => TimeoutSnafu {
                        operation: operation(),
                        region: region.id,
                        timeout,
                        servers: self.servers.clone(),
                    }
                    .fail(),
                }
            }
        }
    }

    /// The table's state, loaded from the stream on first use. The writer
    /// guard proves no write of the region is in flight.
    pub(crate) async fn table_state(
        &self,
        region: &Region,
        _writer: &mut AsyncGuard<'_, Writer>,
        table: TableId,
    ) -> Result<TableState, Error> {
        if let Some(state) = lock(&region.tables).get(&table) {
            return Ok(*state);
        }
        let id = region.id;
        let data = self
            .last_for(id, &region.stream, &self.config.data_subject(id, table))
            .await?;
        let data_last = match &data {
            Some(message) => self.batch_of(id, message)?.last(),
            None => 0,
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

    async fn write(
        &self,
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
        let mut w = region.writer.lock().await;
        self.ready(&region, &mut w).await?;
        let count = batch.len() as u64;
        let first = w.next_seq;
        let Some(last) = first
            .checked_add(count - 1)
            .filter(|&last| last < MAX_SEQUENCE_NUMBER)
        else {
            return SequencesExhaustedSnafu {
                region: region_id,
                entries: batch.len(),
            }
            .fail();
        };
        let body = codec::encode_batch(first, &batch.entries);
        let servers = self.servers.clone();
        // The numbers are handed out whatever the outcome: never reused.
        w.next_seq = last + 1;
        self.publish_owned(
            &region,
            &mut w,
            self.config.data_subject(region_id, table_id),
            body,
            ctx.timeout,
            || format!("write of {count} entries to table {table_id}"),
            |source| {
                PublishSnafu {
                    region: region_id,
                    table: table_id,
                    entries: batch.len(),
                    first,
                    last,
                    servers,
                }
                .into_error(source)
            },
        )
        .await?;
        if let Some(state) = lock(&region.tables).get_mut(&table_id) {
            state.max_seq = state.max_seq.max(last);
        }
        drop(w);
        self.stats.batches_written.fetch_add(1, Ordering::Relaxed);
        self.stats
            .entries_written
            .fetch_add(count, Ordering::Relaxed);
        self.stats
            .bytes_written
            .fetch_add(bytes as u64, Ordering::Relaxed);
        Ok(last)
    }

    async fn mark_delete(&self, location: WalLocation, up_to: SequenceNumber) -> Result<(), Error> {
        let WalLocation {
            region_id,
            table_id,
        } = location;
        let region = self.region(region_id).await?;
        let mut w = region.writer.lock().await;
        self.ready(&region, &mut w).await?;
        let state = self.table_state(&region, &mut w, table_id).await?;
        // Deleting past the table's last entry deletes all of it, and not
        // later writes (they get numbers above the table's maximum).
        let up_to = up_to.min(state.max_seq);
        if up_to <= state.deleted_up_to && !state.purge_pending {
            return Ok(());
        }
        let up_to = up_to.max(state.deleted_up_to);
        let mark_seq = if up_to > state.deleted_up_to {
            let mark = Mark {
                deleted_up_to: up_to,
                table_max: state.max_seq,
            };
            let servers = self.servers.clone();
            let ack = self
                .publish_owned(
                    &region,
                    &mut w,
                    self.config.mark_subject(region_id, table_id),
                    codec::encode_mark(mark),
                    self.config.request_timeout,
                    || format!("delete of table {table_id} up to {up_to}"),
                    |source| Error::Request {
                        operation: format!(
                            "writing the delete mark of table {table_id} up to {up_to}"
                        ),
                        region: region_id,
                        stream: region.stream_name.clone(),
                        servers,
                        source,
                    },
                )
                .await?;
            if let Some(state) = lock(&region.tables).get_mut(&table_id) {
                state.deleted_up_to = state.deleted_up_to.max(up_to);
            }
            self.stats.deletes.fetch_add(1, Ordering::Relaxed);
            Some(ack.sequence)
        } else {
            None
        };
        let snapshot = w.last_stream_seq;
        drop(w);

        // The mark is durable: the delete has happened. Now free the
        // storage of every batch wholly at or below it.
        let subject = self.config.data_subject(region_id, table_id);
        let purged = match self.first_live(&region, &subject, up_to, snapshot).await {
            // Nothing below the first message; see `purge_below`.
            Ok(Some(keep_from)) if keep_from <= 1 => Ok(0),
            Ok(Some(keep_from)) => region
                .stream
                .purge()
                .filter(subject.as_str())
                .sequence(keep_from)
                .await
                .map(|r| r.purged),
            Ok(None) => region
                .stream
                .purge()
                .filter(subject.as_str())
                .await
                .map(|r| r.purged),
            Err(e) => {
                log::warn!(
                    "region {region_id}: cannot find what to purge of table {table_id}: {e}"
                );
                self.set_purge_pending(&region, table_id, true);
                return Ok(());
            }
        };
        match purged {
            Ok(n) => {
                self.stats.messages_purged.fetch_add(n, Ordering::Relaxed);
                self.set_purge_pending(&region, table_id, false);
            }
            Err(e) => {
                log::warn!(
                    "region {region_id}: purging table {table_id} up to {up_to} failed \
                     (the entries are deleted; the next delete frees their storage): {e}"
                );
                self.set_purge_pending(&region, table_id, true);
            }
        }
        if let Some(mark_seq) = mark_seq {
            let mark_subject = self.config.mark_subject(region_id, table_id);
            self.purge_below(region_id, &region.stream, &mark_subject, mark_seq)
                .await;
        }
        if let Err(e) = self.compact_head(&region).await {
            log::warn!("region {region_id}: moving old records off the stream's head failed: {e}");
        }
        Ok(())
    }

    /// JetStream frees storage a block (8 MiB) at a time, once every
    /// message in it is gone. An ownership record or delete mark at the
    /// head of the stream would keep its block for as long as it lives. So
    /// while the stream's first message is such a record, it is
    /// written again at the end (same content) and the old copy purged.
    async fn compact_head(&self, region: &Region) -> Result<(), Error> {
        let id = region.id;
        let owner_subject = self.config.owner_subject(id);
        let mark_prefix = format!("{}.{id}.m.", self.config.prefix);
        for _ in 0..16 {
            let info = region
                .stream
                .get_info()
                .await
                .map_err(|e| self.request_error(id, "reading the stream state", boxed(e)))?;
            let (first, last) = (info.state.first_sequence, info.state.last_sequence);
            if info.state.messages == 0 || first >= last {
                return Ok(());
            }
            let message = match region.stream.get_raw_message(first).await {
                Ok(message) => message,
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(()),
                Err(e) => {
                    return Err(self.request_error(id, "reading the stream's head", boxed(e)));
                }
            };
            let subject = message.subject.to_string();
            if subject != owner_subject && !subject.starts_with(&mark_prefix) {
                return Ok(()); // A batch: live data holds the head.
            }
            let mut w = region.writer.lock().await;
            self.ready(region, &mut w).await?;
            let body = if subject == owner_subject {
                codec::encode_owner(&OwnerRecord::Take(self.config.owner.clone()))
            } else {
                message.payload.clone()
            };
            let servers = self.servers.clone();
            let ack = self
                .publish_owned(
                    region,
                    &mut w,
                    subject.clone(),
                    body,
                    self.config.request_timeout,
                    || format!("rewriting {subject}"),
                    |source| Error::Request {
                        operation: format!("rewriting {subject}"),
                        region: id,
                        stream: region.stream_name.clone(),
                        servers,
                        source,
                    },
                )
                .await?;
            if subject == owner_subject {
                w.take_seq = ack.sequence;
            }
            drop(w);
            self.purge_below(id, &region.stream, &subject, ack.sequence)
                .await;
        }
        Ok(())
    }

    fn set_purge_pending(&self, region: &Region, table: TableId, pending: bool) {
        if let Some(state) = lock(&region.tables).get_mut(&table) {
            state.purge_pending = pending;
        }
    }

    /// Releases a region this instance holds: a release record, so that
    /// another owner may open it without a takeover.
    async fn release(&self, region: &Region) -> Result<(), Error> {
        let mut w = region.writer.lock().await;
        if lock(&region.fenced_by).is_some() {
            log::info!("region {}: closed after being fenced", region.id);
            return Ok(());
        }
        if w.needs_resync {
            match self.resync(region, &mut w).await {
                Err(Error::Fenced { .. }) => return Ok(()),
                other => other?,
            }
        }
        let record = codec::encode_owner(&OwnerRecord::Release(self.config.owner.clone()));
        let subject = self.config.owner_subject(region.id);
        let servers = self.servers.clone();
        let ack = self
            .publish_owned(
                region,
                &mut w,
                subject.clone(),
                record,
                self.config.request_timeout,
                || "publishing the release record".into(),
                |source| Error::Request {
                    operation: "publishing the release record".into(),
                    region: region.id,
                    stream: region.stream_name.clone(),
                    servers,
                    source,
                },
            )
            .await?;
        self.purge_below(region.id, &region.stream, &subject, ack.sequence)
            .await;
        Ok(())
    }

    async fn close_region(&self, id: RegionId) -> Result<(), Error> {
        self.check_open()?;
        let cell = lock(&self.regions).remove(&id);
        match cell.as_ref().and_then(|cell| cell.get()) {
            Some(region) => self.release(region).await,
            None => Ok(()),
        }
    }

    async fn close(&self) -> Result<(), Error> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Err(Error::Closed);
        }
        let cells: Vec<_> = lock(&self.regions).drain().map(|(_, cell)| cell).collect();
        let mut result = Ok(());
        for cell in cells {
            if let Some(region) = cell.get()
                && let Err(e) = self.release(region).await
                && result.is_ok()
            {
                result = Err(e);
            }
        }
        if let Err(e) = self.client.flush().await {
            log::warn!("flushing the NATS connection at close failed: {e}");
        }
        result
    }

    fn statistics(&self) -> String {
        let s = &self.stats;
        let mut out = String::new();
        let _ = writeln!(out, "backend: NATS JetStream at {}", self.servers);
        let _ = writeln!(
            out,
            "owner: {}, prefix: {}, replicas: {}",
            self.config.owner, self.config.prefix, self.config.replicas
        );
        for (name, value) in [
            ("batches written", &s.batches_written),
            ("entries written", &s.entries_written),
            ("payload bytes written", &s.bytes_written),
            ("failed writes", &s.write_failures),
            ("resynchronisations", &s.resyncs),
            ("delete marks", &s.deletes),
            ("messages purged", &s.messages_purged),
            ("regions opened", &s.regions_opened),
        ] {
            let _ = writeln!(out, "{name}: {}", value.load(Ordering::Relaxed));
        }
        let mut regions: Vec<_> = lock(&self.regions)
            .iter()
            .filter_map(|(id, cell)| {
                cell.get()
                    .map(|r| (*id, r.acked_last.load(Ordering::Relaxed)))
            })
            .collect();
        regions.sort_unstable();
        for (id, last) in regions {
            let _ = writeln!(out, "region {id}: stream sequence {last}");
        }
        out
    }
}

#[async_trait]
impl WalManager for NatsWal {
    async fn sequence_num(&self, location: WalLocation) -> segwal::Result<SequenceNumber> {
        let region = self.inner.region(location.region_id).await?;
        let state = self
            .inner
            .table_state_for_read(&region, location.table_id)
            .await?;
        Ok(state.max_seq)
    }

    async fn mark_delete_entries_up_to(
        &self,
        location: WalLocation,
        sequence_num: SequenceNumber,
    ) -> segwal::Result<()> {
        Ok(self.inner.mark_delete(location, sequence_num).await?)
    }

    async fn close_region(&self, region_id: RegionId) -> segwal::Result<()> {
        Ok(self.inner.close_region(region_id).await?)
    }

    async fn close_gracefully(&self) -> segwal::Result<()> {
        Ok(self.inner.close().await?)
    }

    async fn read_batch(
        &self,
        ctx: &ReadContext,
        req: &ReadRequest,
    ) -> segwal::Result<BatchLogIterator> {
        self.inner.check_open()?;
        let Some((start, end)) = req.sequence_range() else {
            return Ok(BatchLogIterator::empty());
        };
        let location = req.location;
        let region = self.inner.region(location.region_id).await?;
        let state = self
            .inner
            .table_state_for_read(&region, location.table_id)
            .await?;
        let lo = start.max(state.deleted_up_to.saturating_add(1));
        if lo > end {
            return Ok(BatchLogIterator::empty());
        }
        let filter = ReadFilter {
            table: Some(location.table_id),
            lo,
            hi: end,
        };
        let source = NatsSource::start(&self.inner, region, filter, ctx.timeout).await?;
        Ok(match source {
            Some(source) => BatchLogIterator::new(source, ctx),
            None => BatchLogIterator::empty(),
        })
    }

    async fn write(
        &self,
        ctx: &WriteContext,
        batch: &LogWriteBatch,
    ) -> segwal::Result<SequenceNumber> {
        Ok(self.inner.write(ctx, batch).await?)
    }

    async fn scan(&self, ctx: &ScanContext, req: &ScanRequest) -> segwal::Result<BatchLogIterator> {
        let region = self.inner.region(req.region_id).await?;
        let filter = ReadFilter {
            table: None,
            lo: 1,
            hi: MAX_SEQUENCE_NUMBER,
        };
        let source = NatsSource::start(&self.inner, region, filter, ctx.timeout).await?;
        Ok(match source {
            Some(source) => BatchLogIterator::new(source, ctx),
            None => BatchLogIterator::empty(),
        })
    }

    async fn get_statistics(&self) -> Option<String> {
        Some(self.inner.statistics())
    }
}

impl Inner {
    pub(crate) fn read_error(
        &self,
        region: RegionId,
        operation: String,
        source: ClientError,
    ) -> Error {
        self.request_error(region, operation, source)
    }

    pub(crate) fn malformed_message(
        &self,
        region: RegionId,
        subject: &str,
        stream_sequence: u64,
        reason: String,
    ) -> Error {
        MalformedSnafu {
            region,
            stream: self.config.stream_name(region),
            subject: subject.to_owned(),
            stream_sequence,
            reason,
        }
        .build()
    }
}
