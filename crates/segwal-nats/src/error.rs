//! The crate's one error type. Every message names the region (and table)
//! involved and, where the cluster is at fault, the servers configured
//! (without user information: no message carries a secret).

use std::path::PathBuf;
use std::time::Duration;

use snafu::Snafu;

/// A boxed error from the NATS client, kept as the source.
pub(crate) type ClientError = Box<dyn std::error::Error + Send + Sync>;

/// What can go wrong in a [`NatsWal`](crate::NatsWal) call. Reaches callers
/// of the `WalManager` trait inside [`segwal::Error`]; [`Error::of`] gets it
/// back out.
#[derive(Debug, Snafu)]
#[snafu(visibility(pub(crate)))]
#[non_exhaustive]
pub enum Error {
    /// The configuration cannot work; nothing was contacted.
    #[snafu(display("invalid NATS WAL configuration: {reason}"))]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },

    /// The keys of a HoraeDB `type = "Nats"` configuration do not make a
    /// `NatsWalConfig` (an unknown key, a missing `servers`, a wrong
    /// value); the message names the key. Nothing was contacted.
    #[snafu(display("invalid NATS WAL configuration: {source}"))]
    StorageKeys {
        /// What serde found wrong.
        source: serde_json::Error,
    },

    /// A file of the authentication or TLS settings cannot be read.
    #[snafu(display("cannot read {key} {}: {source}", path.display()))]
    ReadSecretFile {
        /// The setting (`nkey_seed_file`, `credentials_file`, `tls_ca_file`, ...).
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },

    /// A file of the authentication settings does not hold what it should.
    #[snafu(display("{key} {} is not usable: {reason}", path.display()))]
    InvalidSecretFile {
        /// The setting.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// No configured server accepted a connection: unreachable, or it
    /// refused the credentials or the TLS handshake (the hint says which
    /// setting to look at). Not retried.
    #[snafu(display("cannot connect to NATS at {servers}: {source}{hint}"))]
    Connect {
        /// The configured servers.
        servers: String,
        /// What to check, for refusals (empty otherwise).
        hint: String,
        /// The client's error.
        source: ClientError,
    },

    /// The server refused a publish or a subscription for lack of
    /// permission: the user's permissions do not cover this WAL's prefix.
    #[snafu(display(
        "{operation} was refused by NATS at {servers}: {violation} (the user's permissions do not \
         cover prefix {prefix:?}: docs/OPERATIONS.md, \"Secured clusters\", lists what it needs)"
    ))]
    PermissionDenied {
        /// What was being done.
        operation: String,
        /// The server's message, naming the subject.
        violation: String,
        /// The WAL's prefix.
        prefix: String,
        /// The configured servers.
        servers: String,
    },

    /// A request about one of the WAL's streams (finding, creating or
    /// measuring it) failed.
    #[snafu(display(
        "{operation} of stream {stream} failed at {servers}: {source} \
         (is the cluster reachable, and does it have a quorum of the stream's replicas?)"
    ))]
    Stream {
        /// What was being done.
        operation: String,
        /// The stream.
        stream: String,
        /// The configured servers.
        servers: String,
        /// The client's error.
        source: ClientError,
    },

    /// The server is older than what segwal-nats is built on
    /// ([`MIN_SERVER_VERSION`](crate::MIN_SERVER_VERSION)).
    #[snafu(display(
        "nats-server {version} at {servers} is too old: segwal-nats needs {minimum} or later \
         (atomic batches, fencing over a subject filter, batch direct gets)"
    ))]
    ServerTooOld {
        /// The version the server reports.
        version: String,
        /// The oldest version that works.
        minimum: String,
        /// The configured servers.
        servers: String,
    },

    /// A stream under this WAL's prefix was not laid out by this
    /// configuration: created with another stream count (regions would
    /// move between streams), or by an older segwal with a stream per
    /// region. Nothing was written.
    #[snafu(display(
        "stream {stream} does not match this configuration ({configured} streams under prefix \
         {prefix:?}): {found}; open it with the stream count it was created with, or use another prefix"
    ))]
    Layout {
        /// The prefix.
        prefix: String,
        /// The stream found.
        stream: String,
        /// The stream count configured.
        configured: u32,
        /// What the stream says.
        found: String,
    },

    /// A JetStream request about a region (its stream, ownership record,
    /// a message, a purge) failed: the cluster is unreachable, has no
    /// quorum for the region's stream, or refused the request.
    #[snafu(display(
        "{operation} for region {region} (stream {stream}) failed at {servers}: {source} \
         (is the cluster reachable, and does it have a quorum of the stream's replicas?)"
    ))]
    Request {
        /// What was being done.
        operation: String,
        /// The region.
        region: u64,
        /// The region's stream.
        stream: String,
        /// The configured servers.
        servers: String,
        /// The client's error.
        source: ClientError,
    },

    /// JetStream did not acknowledge a write: it may or may not be stored
    /// (like any failed write, its outcome is unknown until the next read),
    /// and its sequence numbers are never handed out again by this
    /// instance. The region resynchronises with the stream on the next
    /// write.
    #[snafu(display(
        "write of {entries} entries to region {region} table {table} (sequences {first}..={last}) \
         was not acknowledged by JetStream at {servers}: {source} \
         (the cluster may be unreachable or have lost quorum; the outcome is unknown)"
    ))]
    Publish {
        /// The region.
        region: u64,
        /// The table.
        table: u64,
        /// How many entries the batch held.
        entries: usize,
        /// The batch's first sequence number.
        first: u64,
        /// The batch's last sequence number.
        last: u64,
        /// The configured servers.
        servers: String,
        /// The client's error.
        source: ClientError,
    },

    /// The write or delete did not complete within its timeout; like a
    /// failed write its outcome is unknown.
    #[snafu(display(
        "{operation} on region {region} timed out after {timeout:?} waiting for JetStream at {servers}"
    ))]
    Timeout {
        /// What timed out, with the table.
        operation: String,
        /// The region.
        region: u64,
        /// The timeout.
        timeout: Duration,
        /// The configured servers.
        servers: String,
    },

    /// Another `NatsWal` took the region over while this one held it: this
    /// instance no longer writes, deletes or reads it. `close_region` lets
    /// it go; the next use tries to open it again (and is refused while the
    /// other owner holds it).
    #[snafu(display(
        "region {region} was taken over by owner {by:?}; this instance (owner {owner:?}) is fenced \
         and no longer writes it"
    ))]
    Fenced {
        /// The region.
        region: u64,
        /// This instance's owner name.
        owner: String,
        /// The owner that holds the region now (or what the record says).
        by: String,
    },

    /// The region is held by another owner that has not released it
    /// (`close_region` there). If that owner is gone for good,
    /// [`NatsWal::take_over_region`](crate::NatsWal::take_over_region)
    /// takes the region anyway and fences it.
    #[snafu(display(
        "region {region} is owned by {holder:?}, not by this instance (owner {owner:?}); \
         close it there first, or take it over"
    ))]
    RegionOwned {
        /// The region.
        region: u64,
        /// This instance's owner name.
        owner: String,
        /// The owner holding it.
        holder: String,
    },

    /// The batch holds no entries; nothing was written and no sequence
    /// number used.
    #[snafu(display("empty batch for region {region} table {table}: nothing to write"))]
    EmptyBatch {
        /// The region.
        region: u64,
        /// The table.
        table: u64,
    },

    /// The batch, encoded as one message, is larger than the servers accept
    /// (`max_payload`); nothing was written and no sequence number used.
    #[snafu(display(
        "batch of {entries} entries ({bytes} bytes encoded) for region {region} table {table} \
         exceeds the NATS server's max_payload of {max_payload} bytes"
    ))]
    BatchTooLarge {
        /// The region.
        region: u64,
        /// The table.
        table: u64,
        /// How many entries the batch held.
        entries: usize,
        /// The encoded size.
        bytes: usize,
        /// The servers' limit.
        max_payload: usize,
    },

    /// The region has used every sequence number.
    #[snafu(display("region {region} has no sequence numbers left for a batch of {entries}"))]
    SequencesExhausted {
        /// The region.
        region: u64,
        /// How many entries the batch held.
        entries: usize,
    },

    /// A message in a region's stream is not what segwal writes: the
    /// stream was changed by something else, or damaged.
    #[snafu(display(
        "message {stream_sequence} ({subject}) in stream {stream} of region {region} is malformed: {reason}"
    ))]
    Malformed {
        /// The region.
        region: u64,
        /// The stream.
        stream: String,
        /// The message's subject.
        subject: String,
        /// The message's stream sequence.
        stream_sequence: u64,
        /// What is wrong.
        reason: String,
    },

    /// The WAL was closed (`close_gracefully`) before this call.
    #[snafu(display("the NATS WAL is closed"))]
    Closed,
}

impl Error {
    /// The NATS backend's error inside a `WalManager` call's error, if it
    /// is one.
    pub fn of(err: &segwal::Error) -> Option<&Error> {
        std::error::Error::source(err)?.downcast_ref::<Error>()
    }

    /// What kind of trouble this is, as segwal's metrics count it
    /// (`segwal::Error::kind`): `invalid_argument` (the call or the
    /// configuration was wrong, or a file it names; nothing was written),
    /// `data_dir` (the
    /// prefix's streams have another layout), `corruption` (a message is
    /// not what segwal writes), `timeout`, `closed`, or `backend` (the
    /// cluster failed or refused a request, or another owner holds the
    /// region).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidConfig { .. }
            | Error::StorageKeys { .. }
            | Error::ReadSecretFile { .. }
            | Error::InvalidSecretFile { .. }
            | Error::EmptyBatch { .. }
            | Error::BatchTooLarge { .. }
            | Error::SequencesExhausted { .. } => "invalid_argument",
            Error::Layout { .. } => "data_dir",
            Error::Malformed { .. } => "corruption",
            Error::Timeout { .. } => "timeout",
            Error::Closed => "closed",
            Error::Connect { .. }
            | Error::PermissionDenied { .. }
            | Error::ServerTooOld { .. }
            | Error::Stream { .. }
            | Error::Request { .. }
            | Error::Publish { .. }
            | Error::Fenced { .. }
            | Error::RegionOwned { .. } => "backend",
        }
    }
}

impl From<Error> for segwal::Error {
    fn from(err: Error) -> segwal::Error {
        if matches!(err, Error::Closed) {
            segwal::Error::backend_closed(err)
        } else {
            segwal::Error::backend_of_kind(err.kind(), err)
        }
    }
}
