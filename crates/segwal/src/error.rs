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

    /// An error from a backend outside this crate (such as the NATS
    /// backend), kept as its source.
    #[snafu(display("{source}"))]
    Backend {
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
        Error::Backend {
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
    /// `internal` (a blocking task failed), `backend` (another backend's
    /// error) or `closed`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Local { source } => source.kind(),
            Error::Timeout { .. } => "timeout",
            Error::IteratorAbandoned => "invalid_argument",
            Error::Task { .. } => "internal",
            Error::Backend { .. } => "backend",
            Error::BackendClosed { .. } => "closed",
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
