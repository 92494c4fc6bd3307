//! HoraeDB's WAL API in one place, so an engine written against HoraeDB's
//! `wal` crate ports by changing its imports to `segwal::horaedb::...`.
//!
//! Everything an engine names from `wal::manager`, `wal::log_batch`,
//! `wal::kv_encoder`, `wal::config` and `wal::local_storage_impl` is here
//! under the same name and meaning, both directly (`segwal::horaedb::X`)
//! and under HoraeDB's module paths (`segwal::horaedb::manager::X`), so
//! the port can be a textual `wal::` to `segwal::horaedb::`: the core types (re-exported from the crate root), the payload
//! layer ([`Payload`], [`PayloadDecoder`], [`LogBatchEncoder`]),
//! [`BatchLogIteratorAdapter`] with
//! [`next_log_entries`](crate::BatchLogIterator::next_log_entries), and the
//! opener ([`WalsOpener`], [`LocalStorageWalsOpener`], [`Config`]; the
//! NATS backend's opener is `segwal_nats::NatsWalsOpener`).
//! docs/OPERATIONS.md, "Porting from HoraeDB", lists the few lines an
//! engine changes besides its imports.
//!
//! ```
//! use std::collections::VecDeque;
//! use segwal::horaedb::{
//!     LocalStorageWalsOpener, LogBatchEncoder, MemoryPayload, MemoryPayloadDecoder, ReadBoundary,
//!     ReadContext, ReadRequest, WalLocation, WalRuntimes, WalsOpener, WriteContext,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> segwal::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! # let data_dir = dir.path().display().to_string().replace('\\', "/");
//! let config: segwal::horaedb::Config = toml::from_str(&format!(
//!     r#"
//!     type = "Local"
//!     data_dir = "{data_dir}"
//!     segment_size = "64MiB"
//!     "#
//! ))
//! .unwrap();
//! # let runtime: segwal::horaedb::RuntimeRef = std::sync::Arc::new(());
//! # let runtimes = WalRuntimes { read_runtime: runtime.clone(), write_runtime: runtime.clone(), default_runtime: runtime };
//! let wals = LocalStorageWalsOpener.open_wals(&config, runtimes).await?;
//!
//! let location = WalLocation::new(0, 7);
//! let payloads = (0..3).map(|val| MemoryPayload { val });
//! let batch = LogBatchEncoder::create(location).encode_batch(payloads)?;
//! let last = wals.data_wal.write(&WriteContext::default(), &batch).await?;
//!
//! let request = ReadRequest { location, start: ReadBoundary::Min, end: ReadBoundary::Max };
//! let mut iter = wals.data_wal.read_batch(&ReadContext::default(), &request).await?;
//! let entries = iter.next_log_entries(MemoryPayloadDecoder, |_| true, VecDeque::new()).await?;
//! assert_eq!(entries.back().unwrap().sequence, last);
//! assert_eq!(entries.back().unwrap().payload, MemoryPayload { val: 2 });
//! # Ok(())
//! # }
//! ```

mod iter;
mod opener;
mod payload;

pub use opener::{
    Config, DEFAULT_DATA_DIR, LocalStorageConfig, LocalStorageWalsOpener, MANIFEST_DIR_NAME,
    NatsStorageConfig, OpenedWals, RuntimeRef, StorageConfig, WAL_DIR_NAME, WalRuntimes,
    WalsOpener,
};
pub use payload::{
    LOG_VALUE_VERSION, LogBatchEncoder, MemoryPayload, MemoryPayloadDecoder, Payload,
    PayloadDecodeContext, PayloadDecoder,
};

pub use crate::error::{Error, Result};
pub use crate::types::{
    LogEntry, LogWriteBatch, LogWriteEntry, MAX_SEQUENCE_NUMBER, MIN_SEQUENCE_NUMBER, ReadBoundary,
    ReadContext, ReadRequest, RegionId, ScanContext, ScanRequest, SequenceNumber, TableId,
    WalLocation, WriteContext,
};
pub use crate::{LocalWal, WalManager, WalManagerRef};

/// HoraeDB's name for the iterator `read_batch` and `scan` return.
pub type BatchLogIteratorAdapter = crate::BatchLogIterator;

/// HoraeDB's name for a local WAL.
pub type LocalStorageImpl = LocalWal;

/// The names of HoraeDB's `wal::manager`, under its path.
pub mod manager {
    pub use super::{
        BatchLogIteratorAdapter, Error, MANIFEST_DIR_NAME, OpenedWals, ReadBoundary, ReadContext,
        ReadRequest, RegionId, Result, ScanContext, ScanRequest, SequenceNumber, WAL_DIR_NAME,
        WalLocation, WalManager, WalManagerRef, WalRuntimes, WalsOpener, WriteContext,
    };
}

/// The names of HoraeDB's `wal::log_batch`, under its path.
pub mod log_batch {
    pub use super::{
        LogEntry, LogWriteBatch, LogWriteEntry, MemoryPayload, MemoryPayloadDecoder, Payload,
        PayloadDecodeContext, PayloadDecoder,
    };
}

/// The names of HoraeDB's `wal::kv_encoder`, under its path.
pub mod kv_encoder {
    pub use super::LogBatchEncoder;
}

/// The names of HoraeDB's `wal::config`, under its path.
pub mod config {
    pub use super::{Config, LocalStorageConfig, NatsStorageConfig, StorageConfig};
}

/// The names of HoraeDB's `wal::local_storage_impl`, under its path.
pub mod local_storage_impl {
    /// `local_storage_impl::config`.
    pub mod config {
        pub use crate::horaedb::LocalStorageConfig;
    }

    /// `local_storage_impl::wal_manager`.
    pub mod wal_manager {
        pub use crate::horaedb::{LocalStorageImpl, LocalStorageWalsOpener};
    }
}
