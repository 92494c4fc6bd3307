//! [`NatsWal`]: the `WalManager` over JetStream, and what every part of
//! the protocol shares ([`Inner`]). The crate docs describe the mapping;
//! `region.rs` opening and fencing, `write.rs` the write path,
//! `delete.rs` deletes, `read.rs` reads.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard};

use async_nats::jetstream::{self, stream::Stream};
use async_trait::async_trait;
use segwal::{
    BatchLogIterator, LogWriteBatch, MAX_SEQUENCE_NUMBER, ReadContext, ReadRequest, RegionId,
    ScanContext, ScanRequest, SequenceNumber, WalLocation, WalManager, WriteContext,
};
use tokio::sync::OnceCell;

use crate::config::NatsWalConfig;
use crate::connect::{self, Violations};
use crate::durability::Durability;
use crate::error::{ClientError, Error, ServerTooOldSnafu};
use crate::read::{NatsSource, ReadFilter};
use crate::region::Region;

/// The write-ahead log on a NATS JetStream server or cluster. Clones share
/// one connection and one set of open regions (closing one closes all).
///
/// Regions share a bounded number of streams and are written only by the
/// instance that owns them; see the crate docs for the mapping, the
/// ownership protocol and what is guaranteed.
#[derive(Debug, Clone)]
pub struct NatsWal {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: NatsWalConfig,
    pub(crate) servers: String,
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    /// Permission violations the server reported.
    pub(crate) violations: Arc<Violations>,
    /// Streams known to exist, their layout checked.
    pub(crate) streams: StdMutex<HashMap<u32, Arc<OnceCell<Stream>>>>,
    pub(crate) regions: StdMutex<HashMap<RegionId, Arc<OnceCell<Arc<Region>>>>>,
    closed: AtomicBool,
    pub(crate) stats: Stats,
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) batches_written: AtomicU64,
    pub(crate) entries_written: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) write_failures: AtomicU64,
    pub(crate) resyncs: AtomicU64,
    pub(crate) deletes: AtomicU64,
    pub(crate) messages_purged: AtomicU64,
    pub(crate) regions_opened: AtomicU64,
}

/// What a [`NatsWal`] did since it was opened: cheap relaxed reads of its
/// counters (what its metrics export).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Batches acknowledged.
    pub batches_written: u64,
    /// Entries acknowledged.
    pub entries_written: u64,
    /// Payload bytes of the batches acknowledged.
    pub payload_bytes_written: u64,
    /// Commits acknowledged (each one message or one atomic batch holding
    /// every write of a region queued when it started).
    pub commits: u64,
    /// Writes JetStream did not acknowledge.
    pub failed_writes: u64,
}

/// The oldest nats-server segwal-nats works with, as (major, minor).
pub const MIN_SERVER_VERSION: (u32, u32) = (2, 12);

/// Refuses a server older than [`MIN_SERVER_VERSION`]; a version that
/// does not parse (a development build) is let through.
fn check_server_version(version: &str, servers: &str) -> Result<(), Error> {
    let mut parts = version.trim_start_matches('v').split('.');
    let (Some(Ok(major)), Some(Ok(minor))) = (
        parts.next().map(str::parse::<u32>),
        parts.next().map(str::parse::<u32>),
    ) else {
        return Ok(());
    };
    if (major, minor) >= MIN_SERVER_VERSION {
        return Ok(());
    }
    let (min_major, min_minor) = MIN_SERVER_VERSION;
    ServerTooOldSnafu {
        version,
        minimum: format!("{min_major}.{min_minor}"),
        servers,
    }
    .fail()
}

pub(crate) fn lock<T>(mutex: &StdMutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn boxed(err: impl std::error::Error + Send + Sync + 'static) -> ClientError {
    Box::new(err)
}

impl NatsWal {
    /// Checks `config`, connects to its servers with its credentials and
    /// TLS settings, and checks that the prefix's streams (if any) have the
    /// configured layout. Streams are created on the first write to one of
    /// their regions.
    ///
    /// Refusals end it at once, each with one error naming its cause: bad
    /// credentials or an untrusted certificate ([`Error::Connect`]), a
    /// missing or invalid file ([`Error::ReadSecretFile`],
    /// [`Error::InvalidSecretFile`]), a user whose permissions do not cover
    /// the prefix ([`Error::PermissionDenied`]).
    pub async fn open(config: NatsWalConfig) -> Result<NatsWal, Error> {
        config.check()?;
        let servers = config.servers_label();
        let (client, violations) = connect::connect(&config).await?;
        check_server_version(&client.server_info().version, &servers)?;
        let js = jetstream::ContextBuilder::new()
            .timeout(config.request_timeout)
            .build(client.clone());
        let wal = NatsWal {
            inner: Arc::new(Inner {
                config,
                servers,
                client,
                js,
                violations,
                streams: StdMutex::new(HashMap::new()),
                regions: StdMutex::new(HashMap::new()),
                closed: AtomicBool::new(false),
                stats: Stats::default(),
            }),
        };
        // Stream 0 is created before any other: if it is absent, the
        // prefix holds nothing; if present, its layout must match.
        let stream_0 = wal.inner.config.stream_name(0);
        wal.inner
            .refusable(
                &format!("opening the WAL (looking up stream {stream_0})"),
                async { wal.inner.stream(0, false).await },
            )
            .await?;
        Ok(wal)
    }

    /// The configuration in force.
    pub fn config(&self) -> &NatsWalConfig {
        &self.inner.config
    }

    /// What an acknowledged write survives: the streams' replicas, the
    /// servers' sync setting as configured
    /// ([`NatsWalConfig::server_sync`]), the server's version.
    pub fn durability(&self) -> Durability {
        Durability::new(
            self.inner.config.replicas,
            self.inner.config.server_sync,
            self.inner.client.server_info().version,
        )
    }

    /// What this instance wrote since it was opened.
    pub fn counters(&self) -> Counters {
        let s = &self.inner.stats;
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counters {
            batches_written: read(&s.batches_written),
            entries_written: read(&s.entries_written),
            payload_bytes_written: read(&s.bytes_written),
            commits: read(&s.commits),
            failed_writes: read(&s.write_failures),
        }
    }

    /// Bytes the servers hold for this prefix: the stored messages of every
    /// stream, as JetStream counts them (one replica's worth). Needs no
    /// region.
    pub async fn stored_bytes(&self) -> Result<u64, Error> {
        self.inner.check_open()?;
        let mut total = 0;
        let finding = self.inner.existing_streams();
        for mut stream in self.inner.explained("measuring", finding).await? {
            let name = stream.cached_info().config.name.clone();
            let info = stream.info().await.map_err(|e| Error::Stream {
                operation: "reading the size".into(),
                stream: name,
                servers: self.inner.servers.clone(),
                source: boxed(e),
            })?;
            total += info.state.bytes;
        }
        Ok(total)
    }

    /// Deletes every stream under this WAL's prefix, with every region's
    /// entries: for tools and benchmarks that own the prefix, never for a
    /// log in use (other instances' regions live in the same streams).
    /// Returns how many streams there were.
    pub async fn delete_all_streams(&self) -> Result<usize, Error> {
        self.inner.check_open()?;
        let deleting = self.inner.delete_streams();
        self.inner.explained("deleting the streams", deleting).await
    }

    /// The names of the streams that exist under this WAL's prefix.
    pub async fn stream_names(&self) -> Result<Vec<String>, Error> {
        self.inner.check_open()?;
        let finding = self.inner.existing_streams();
        let streams = self.inner.explained("listing the streams", finding).await?;
        Ok(streams
            .iter()
            .map(|s| s.cached_info().config.name.clone())
            .collect())
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
    pub(crate) fn check_open(&self) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    pub(crate) fn request_error(
        &self,
        region: RegionId,
        operation: impl Into<String>,
        source: ClientError,
    ) -> Error {
        Error::Request {
            operation: operation.into(),
            region,
            stream: self.config.stream_name(self.config.stream_of(region)),
            servers: self.servers.clone(),
            source,
        }
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

    fn statistics(&self, durability: &Durability) -> String {
        let s = &self.stats;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "backend: NATS JetStream {} at {}",
            durability.server_version, self.servers
        );
        let _ = writeln!(
            out,
            "owner: {}, prefix: {}, replicas: {}, streams: {}",
            self.config.owner, self.config.prefix, self.config.replicas, self.config.streams
        );
        let _ = writeln!(out, "durability: {durability}");
        for (name, value) in [
            ("batches written", &s.batches_written),
            ("entries written", &s.entries_written),
            ("payload bytes written", &s.bytes_written),
            ("commits", &s.commits),
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
        let shown = regions.len().min(32);
        for (id, last) in &regions[..shown] {
            let _ = writeln!(out, "region {id}: stream sequence {last}");
        }
        if regions.len() > shown {
            let _ = writeln!(out, "... and {} more regions", regions.len() - shown);
        }
        out
    }
}

#[async_trait]
impl WalManager for NatsWal {
    async fn sequence_num(&self, location: WalLocation) -> segwal::Result<SequenceNumber> {
        let inner = &self.inner;
        let reading = async {
            let Some(region) = inner.region_for_read(location.region_id).await? else {
                return Ok(0);
            };
            let state = inner
                .table_state_for_read(&region, location.table_id)
                .await?;
            Ok(state.max_seq)
        };
        Ok(inner
            .explained("reading a sequence number", reading)
            .await?)
    }

    async fn mark_delete_entries_up_to(
        &self,
        location: WalLocation,
        sequence_num: SequenceNumber,
    ) -> segwal::Result<()> {
        let deleting = self.inner.mark_delete(location, sequence_num);
        Ok(self.inner.explained("a delete", deleting).await?)
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
        let inner = &self.inner;
        let opening = async {
            let Some(region) = inner.region_for_read(location.region_id).await? else {
                return Ok(None);
            };
            let state = inner
                .table_state_for_read(&region, location.table_id)
                .await?;
            Ok(Some((region, state)))
        };
        let Some((region, state)) = inner.explained("a read", opening).await? else {
            return Ok(BatchLogIterator::empty());
        };
        let lo = start.max(state.deleted_up_to.saturating_add(1));
        if lo > end || state.last_stream_seq == 0 {
            return Ok(BatchLogIterator::empty());
        }
        let filter = ReadFilter {
            table: Some(location.table_id),
            lo,
            hi: end,
        };
        let source = NatsSource::start(
            &self.inner,
            region,
            filter,
            state.last_stream_seq,
            ctx.timeout,
        )
        .await?;
        Ok(BatchLogIterator::new(source, ctx))
    }

    async fn write(
        &self,
        ctx: &WriteContext,
        batch: &LogWriteBatch,
    ) -> segwal::Result<SequenceNumber> {
        Ok(self
            .inner
            .explained("a write", self.inner.write(ctx, batch))
            .await?)
    }

    async fn scan(&self, ctx: &ScanContext, req: &ScanRequest) -> segwal::Result<BatchLogIterator> {
        self.inner.check_open()?;
        let opening = self.inner.region_for_read(req.region_id);
        let Some(region) = self.inner.explained("a scan", opening).await? else {
            return Ok(BatchLogIterator::empty());
        };
        let filter = ReadFilter {
            table: None,
            lo: 1,
            hi: MAX_SEQUENCE_NUMBER,
        };
        let snapshot = region.acked_last.load(Ordering::Acquire);
        let source = NatsSource::start(&self.inner, region, filter, snapshot, ctx.timeout).await?;
        Ok(BatchLogIterator::new(source, ctx))
    }

    async fn get_statistics(&self) -> Option<String> {
        Some(self.inner.statistics(&self.durability()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves that servers before 2.12 are refused with an error naming
    /// the version and the servers, and that 2.12, later versions and
    /// versions that do not parse are let through.
    #[test]
    fn servers_before_2_12_are_refused() {
        for old in ["2.9.10", "2.11.9", "v2.10.0", "1.4.1"] {
            let err = check_server_version(old, "nats://a:4222").unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(old) && text.contains("nats://a:4222") && text.contains("2.12"),
                "{text}"
            );
        }
        for ok in ["2.12.0", "2.15.1", "2.16.0-dev", "3.0.0", "dev"] {
            check_server_version(ok, "x").unwrap();
        }
    }
}
