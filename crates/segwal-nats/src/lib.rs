//! segwal on NATS JetStream: the same [`WalManager`](segwal::WalManager)
//! as [`segwal::LocalWal`], replicated by a JetStream cluster.
//!
//! # The mapping
//!
//! - **Region R** is one stream, `{prefix}_R`, over subjects `{prefix}.R.>`,
//!   created on first use with the configured replicas (R3 in a 3-node
//!   cluster). As with HoraeDB's Kafka WAL (a topic per region), regions
//!   are independent logs.
//! - **A batch** is one message on the table's subject `{prefix}.R.t.T`,
//!   holding its first sequence number and every entry. JetStream stores a
//!   message wholly or not at all, so a batch is atomic after any failure.
//! - **Sequence numbers** are assigned by the region's owner: a batch gets
//!   the next ones, and every message carries the header `Segwal-Next` (the
//!   region's next number once it is stored). Opening a region reads the
//!   stream's last message; that message is never purged, because every
//!   purge follows a newer message and removes only older ones, so the
//!   numbers continue after restarts and deletes and are never reused.
//! - **Deletes** publish a delete mark on `{prefix}.R.m.T` (the deleted-up-to
//!   number and the table's largest number, so `sequence_num` survives),
//!   then purge the table's subject below its first batch with a live entry
//!   (found by binary search), which frees the server's storage, and purge
//!   the older marks. A batch straddling the mark stays until a later
//!   delete; reads skip its deleted entries.
//! - **Reads** binary-search the table's subject for the first batch in
//!   range and read from there with an ephemeral pull consumer; **scans**
//!   read every table's subject of the region in stream order. Both stop
//!   at the position acknowledged when they started.
//!
//! # Ownership and fencing
//!
//! One instance (an owner name, [`NatsWalConfig::owner`]) writes a region at
//! a time. Opening a region publishes a take record on `{prefix}.R.o`;
//! `close_region` publishes a release. A region taken by another owner and
//! not released is refused ([`Error::RegionOwned`]) unless
//! [`NatsWal::take_over_region`] forces it. Every message an owner
//! publishes carries `Nats-Expected-Last-Sequence`, the stream position it
//! last saw: once anyone else has written to the stream (a takeover), the
//! old owner's writes and deletes are refused by the server, and it fences
//! itself ([`Error::Fenced`]). One message per region is in flight at a
//! time, so messages are stored in the order their numbers were assigned.
//!
//! # Durability
//!
//! `write` returns after JetStream's acknowledgement: the batch is stored
//! on a majority of the stream's replicas. A write that fails or times out
//! has an unknown outcome (it may be stored); its numbers are never handed
//! out again by this instance, and the next write resynchronises with the
//! stream. No acknowledged write is reported for a batch that was not
//! stored.

#![forbid(unsafe_code)]

mod codec;
mod config;
mod error;
mod read;
mod wal;

pub use config::NatsWalConfig;
pub use error::Error;
pub use wal::NatsWal;
