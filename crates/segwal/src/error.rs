//! The adapter's one error type.

use std::time::Duration;

use snafu::Snafu;

/// A `Result` with segwal's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in a [`WalManager`](crate::WalManager) call.
#[derive(Debug, Snafu)]
#[snafu(visibility(pub(crate)))]
#[non_exhaustive]
pub enum Error {
    /// The local WAL refused or failed the operation; the source names the
    /// data dir, region, table, file or offset involved.
    #[snafu(display("{source}"))]
    Local {
        /// What went wrong.
        source: segwal_manager::Error,
    },

    /// The operation did not finish within its context's timeout. The
    /// caller stopped waiting; the work itself cannot be taken back: a
    /// timed-out write may still become durable (like any write that
    /// returned an error, its outcome is unknown until the next read).
    #[snafu(display("{operation} timed out after {timeout:?}"))]
    Timeout {
        /// What timed out, with the region and table.
        operation: String,
        /// The context's timeout.
        timeout: Duration,
    },

    /// A read iterator was used again after an earlier `next_batch` on it
    /// timed out or failed; its position is lost. Start a new read.
    #[snafu(display("the read iterator was abandoned after an earlier error; start a new read"))]
    IteratorAbandoned,

    /// The blocking task running the operation panicked or was cancelled.
    #[snafu(display("{operation} failed in its blocking task: {source}"))]
    Task {
        /// What was running.
        operation: String,
        /// The task's failure.
        source: tokio::task::JoinError,
    },

    /// A [`Payload`](crate::horaedb::Payload) failed to encode itself into
    /// a batch for `location`.
    #[snafu(display(
        "encoding a payload for region {} table {}: {source}",
        location.region_id,
        location.table_id
    ))]
    Encoding {
        /// The table the batch was for.
        location: crate::WalLocation,
        /// The payload's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A [`PayloadDecoder`](crate::horaedb::PayloadDecoder) failed on an
    /// entry read back.
    #[snafu(display("decoding the entry of table {table_id} at sequence {sequence}: {source}"))]
    Decoding {
        /// The entry's table.
        table_id: crate::TableId,
        /// The entry's sequence number.
        sequence: crate::SequenceNumber,
        /// The decoder's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// An entry read through `next_log_entries` does not start with the
    /// value header `LogBatchEncoder` writes (it was written some other
    /// way, or by a newer version).
    #[snafu(display(
        "the entry of table {table_id} at sequence {sequence} has no value header of version {expected}: {found}"
    ))]
    ValueHeader {
        /// The entry's table.
        table_id: crate::TableId,
        /// The entry's sequence number.
        sequence: crate::SequenceNumber,
        /// The version this segwal writes and reads.
        expected: u8,
        /// What the entry holds instead.
        found: String,
    },

    /// A payload buffer is too short for what a decoder reads from it, or
    /// a buffer too small for what an encoder writes.
    #[snafu(display("{what} needs {needed} bytes, the buffer has {available}"))]
    ShortBuffer {
        /// What was being encoded or decoded.
        what: &'static str,
        /// The bytes needed.
        needed: usize,
        /// The bytes there were.
        available: usize,
    },

    /// A size or duration in a configuration is not in a form segwal reads
    /// ("64MiB", "10ms").
    #[snafu(display("invalid {kind} {input:?}: {reason}"))]
    InvalidHumanValue {
        /// "size" or "duration".
        kind: &'static str,
        /// The text given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A WAL configuration asks for something segwal does not do; the
    /// message names the key.
    #[snafu(display("unsupported WAL configuration: {reason}"))]
    UnsupportedConfig {
        /// What is unsupported, naming the key.
        reason: String,
    },

    /// An error from a backend outside this crate (such as the NATS
    /// backend), kept as its source.
    #[snafu(display("{source}"))]
    Backend {
        /// What kind of trouble the backend says it is, one of
        /// [`metrics::ERROR_KINDS`](crate::metrics::ERROR_KINDS)
        /// (`backend` when it does not say).
        kind: &'static str,
        /// The backend's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A backend outside this crate refuses the call because it was closed
    /// (`close_gracefully`); [`Error::is_closed`] is true.
    #[snafu(display("{source}"))]
    BackendClosed {
        /// The backend's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// Wraps a backend's own error (for implementations of
    /// [`WalManager`](crate::WalManager) outside this crate).
    pub fn backend(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
        Error::backend_of_kind("backend", source)
    }

    /// Wraps a backend's own error that the backend classifies as `kind`
    /// (one of [`metrics::ERROR_KINDS`](crate::metrics::ERROR_KINDS), such
    /// as `invalid_argument` or `timeout`), so that metrics count it there.
    ///
    /// # Panics
    /// If `kind` is not one of `ERROR_KINDS`: a bug in the backend.
    pub fn backend_of_kind(
        kind: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Error {
        assert!(
            crate::metrics::ERROR_KINDS.contains(&kind),
            "unknown error kind {kind:?}"
        );
        Error::Backend {
            kind,
            source: source.into(),
        }
    }

    /// Wraps a backend's own error saying it was closed before the call
    /// ([`Error::is_closed`] is true for it).
    pub fn backend_closed(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
        Error::BackendClosed {
            source: source.into(),
        }
    }

    /// What kind of trouble this is, one of
    /// [`metrics::ERROR_KINDS`](crate::metrics::ERROR_KINDS): the local
    /// WAL's kinds (see `segwal_manager::Error::kind`), `timeout`,
    /// `internal` (a blocking task failed), another backend's kind
    /// ([`Error::backend_of_kind`]; `backend` if it gives none), `closed`, or `invalid_argument` (also for the payload
    /// layer's encoding and decoding errors and configuration errors).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Local { source } => source.kind(),
            Error::Timeout { .. } => "timeout",
            Error::IteratorAbandoned => "invalid_argument",
            Error::Task { .. } => "internal",
            Error::Backend { kind, .. } => kind,
            Error::BackendClosed { .. } => "closed",
            // The payload layer's and the configuration's errors are the
            // caller's data or settings, never the log's.
            Error::Encoding { .. }
            | Error::Decoding { .. }
            | Error::ValueHeader { .. }
            | Error::ShortBuffer { .. }
            | Error::InvalidHumanValue { .. }
            | Error::UnsupportedConfig { .. } => "invalid_argument",
        }
    }

    /// True if the WAL was closed (`close_gracefully`) before this call.
    pub fn is_closed(&self) -> bool {
        matches!(
            self,
            Error::Local {
                source: segwal_manager::Error::Closed
            } | Error::BackendClosed { .. }
        )
    }
}

impl From<segwal_manager::Error> for Error {
    fn from(source: segwal_manager::Error) -> Error {
        Error::Local { source }
    }
}
