//! segwal on NATS JetStream: the same [`WalManager`](segwal::WalManager)
//! as [`segwal::LocalWal`], replicated by a JetStream cluster
//! (nats-server 2.12 or later; tested on 2.15.1).
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use segwal::{LogWriteBatch, WalLocation, WalManager, WriteContext};
//! use segwal_nats::{NatsWal, NatsWalConfig, ServerSync};
//!
//! let config = NatsWalConfig::new(["nats://10.0.0.1:4222", "nats://10.0.0.2:4222", "nats://10.0.0.3:4222"])
//!     .replicas(3)
//!     .owner("engine-node-7") // stable and unique per engine node
//!     .server_sync(ServerSync::Always); // what the servers are configured with
//! let wal = NatsWal::open(config).await?;
//! println!("{}", wal.durability()); // what an acknowledged write survives
//! let mut batch = LogWriteBatch::new(WalLocation::new(1, 1));
//! batch.push(b"entry".to_vec());
//! let last = wal.write(&WriteContext::default(), &batch).await?;
//! # let _ = last;
//! wal.close_gracefully().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Wrap it in [`segwal::metrics::MeteredWal`] for Prometheus metrics, as a
//! `LocalWal` (label `backend="nats"`).
//!
//! # The mapping
//!
//! - **Streams**: a prefix has a bounded number of streams
//!   ([`NatsWalConfig::streams`], [`DEFAULT_STREAMS`] by default),
//!   `{prefix}_s0`, `{prefix}_s1`, ..., each over the subjects
//!   `{prefix}.S.>`, created on the first write to one of their regions
//!   with the configured replicas. Each stream is one Raft group, so the
//!   servers' cost does not grow with the number of regions.
//! - **Region R** lives in stream `S = R mod streams`, on the subjects
//!   `{prefix}.S.R.>`: its batches, delete marks and ownership records.
//!   Regions of one stream interleave in it; every lookup is by subject.
//! - **A batch** is one message on the table's subject `{prefix}.S.R.t.T`,
//!   holding its first sequence number and every entry. JetStream stores a
//!   message wholly or not at all, so a batch is atomic after any failure.
//! - **Sequence numbers** are assigned by the region's owner: a batch gets
//!   the next ones, and every message carries the header `Segwal-Next` (the
//!   region's next number once it is stored). Opening a region reads the
//!   region's last message (the last message of `{prefix}.S.R.>`, one
//!   lookup); that message is never purged, because every purge follows a
//!   newer message of the region and removes only older ones, so the
//!   numbers continue after restarts and deletes and are never reused.
//! - **Deletes** publish a delete mark on `{prefix}.S.R.m.T` (the
//!   deleted-up-to number and the table's largest number, so
//!   `sequence_num` survives), then purge the table's subject below its
//!   first batch with a live entry (found by binary search), which frees
//!   the servers' storage, and purge the older marks. A batch straddling
//!   the mark stays until a later delete; reads skip its deleted entries.
//! - **Reads** binary-search the table's subject for the first batch in
//!   range and read from there with batch direct gets; **scans** read all
//!   of the region's subjects in stream order. Both stop at the position
//!   this instance had acknowledged when they started, and retry (with a
//!   bounded backoff, within the read's timeout) when a replica has no
//!   responder, times out, or is behind that position.
//! - **Read-only calls** (`sequence_num`, `read_batch`, `scan`, a delete)
//!   on a region that has no message create nothing: no stream, no record.
//!
//! # Ownership and fencing
//!
//! One instance (an owner name, [`NatsWalConfig::owner`]) writes a region at
//! a time. Opening a region publishes a take record on `{prefix}.S.R.o`;
//! `close_region` publishes a release. A region taken by another owner and
//! not released is refused ([`Error::RegionOwned`]) unless
//! [`NatsWal::take_over_region`] forces it. Every message an owner
//! publishes carries `Nats-Expected-Last-Subject-Sequence` over the
//! region's subjects (`Nats-Expected-Last-Subject-Sequence-Subject:
//! {prefix}.S.R.>`): the stream position of the region's last message as
//! the owner knows it. Once anyone else has written to the region (a
//! takeover), the old owner's writes and deletes are refused by the server
//! and it fences itself ([`Error::Fenced`]); writes of other regions in the
//! same stream never disturb the check.
//!
//! # Group commit
//!
//! Writes to a region queue up; one commit per region is in flight at a
//! time, and it carries every write queued when it starts: one message,
//! or an atomic batch (nats-server 2.12) whose first message carries the
//! fence, stored whole or not at all. So batches are stored in the order
//! their numbers were assigned, a failed commit leaves no hole behind a
//! later one, and concurrent writers of a region share a round trip.
//! (A clustered stream's leader refuses a second message fenced on the
//! same subjects while one is in process, so commits of one region cannot
//! be pipelined further; a commit refused only for that reason stored
//! nothing and is sent again. docs/DESIGN.md has the reasoning.)
//!
//! # Durability
//!
//! `write` returns after JetStream's acknowledgement: the batch is stored
//! on a majority of the stream's replicas. Whether that majority has
//! fsynced it depends on the servers' `sync_interval`
//! ([`NatsWal::durability`] reports it; docs/OPERATIONS.md says what
//! survives which failure). A write that fails or times out has an
//! unknown outcome (it may be stored); its numbers are never handed out
//! again by this instance, and the next write resynchronises with the
//! stream. No acknowledged write is reported for a batch that was not
//! stored.

#![forbid(unsafe_code)]

mod codec;
mod config;
mod connect;
mod delete;
mod direct;
mod durability;
mod error;
mod file;
mod horaedb;
mod metrics;
mod permissions;
mod publish;
mod read;
mod region;
mod security;
mod streams;
mod wal;
mod write;

pub use config::{DEFAULT_STREAMS, MAX_STREAMS, NatsWalConfig};
pub use durability::{Durability, ServerSync};
pub use error::Error;
pub use horaedb::NatsWalsOpener;
pub use permissions::Permissions;
pub use security::redact_url;
pub use wal::{Counters, MIN_SERVER_VERSION, NatsWal};
