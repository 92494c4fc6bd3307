//! Opening an engine's two WALs, data and manifest, from one
//! configuration: HoraeDB's `WalsOpener`, `Config` and `StorageConfig`.

use std::any::Any;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::WalManagerRef;
use crate::config::LocalWalConfig;
use crate::error::{Result, UnsupportedConfigSnafu};
use crate::local::LocalWal;

/// The data dir a default [`Config`] uses, as HoraeDB's does.
pub const DEFAULT_DATA_DIR: &str = "/tmp/horaedb";
/// The data WAL's dir under the configured `data_dir`.
pub const WAL_DIR_NAME: &str = "wal";
/// The manifest WAL's dir under the configured `data_dir`.
pub const MANIFEST_DIR_NAME: &str = "manifest";

/// HoraeDB's name for a local WAL's configuration: the same
/// [`LocalWalConfig`], whose file form starts with HoraeDB's keys
/// (`data_dir`, `segment_size`, `cache_size`).
pub type LocalStorageConfig = LocalWalConfig;

/// An engine's WAL configuration: which backend, and its settings. In a
/// file, the backend's keys sit beside `type`:
///
/// ```toml
/// type = "Local"
/// data_dir = "/var/lib/engine"
/// segment_size = "64MiB"
/// sync_mode = "always"
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// The backend and its settings.
    #[serde(flatten)]
    pub storage: StorageConfig,
    /// HoraeDB's switch to drop the data WAL's writes (for tests). segwal
    /// keeps no such WAL: [`WalsOpener::open_wals`] refuses `true`.
    #[serde(default)]
    pub disable_data: bool,
}

impl Config {
    /// Refuses `disable_data = true`, as every segwal opener does: segwal
    /// has no WAL that drops writes.
    pub fn ensure_data_enabled(&self) -> Result<()> {
        snafu::ensure!(
            !self.disable_data,
            UnsupportedConfigSnafu {
                reason: "disable_data = true: segwal has no WAL that drops writes; \
                         remove the key or set it to false"
            }
        );
        Ok(())
    }
}

impl Default for Config {
    /// A local WAL in [`DEFAULT_DATA_DIR`], as HoraeDB's default.
    fn default() -> Self {
        Config {
            storage: StorageConfig::Local(Box::new(LocalWalConfig::new(DEFAULT_DATA_DIR))),
            disable_data: false,
        }
    }
}

/// Which backend the WALs use, named by the `type` key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type")]
#[non_exhaustive]
pub enum StorageConfig {
    /// [`LocalWal`]s on local disk, opened by [`LocalStorageWalsOpener`].
    Local(Box<LocalStorageConfig>),
    /// Replicated WALs on a NATS JetStream cluster, opened by the
    /// `segwal-nats` crate's `NatsWalsOpener` (HoraeDB's Kafka arm).
    Nats(Box<NatsStorageConfig>),
}

/// The keys of a `type = "Nats"` configuration, as written: those of
/// `segwal-nats`'s `NatsWalConfig` (`servers`, `prefix`, `replicas`, ...).
/// This crate does not depend on the NATS backend, so the keys are kept
/// here unread; `NatsWalsOpener` reads them, and refuses an unknown key
/// or a wrong value naming the key, before it contacts any server.
///
/// `Debug` shows the key names only: values may be secrets.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NatsStorageConfig {
    /// Every key but `type`, with its value.
    #[serde(flatten)]
    pub keys: serde_json::Map<String, serde_json::Value>,
}

impl std::fmt::Debug for NatsStorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsStorageConfig")
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A runtime an engine hands to its WALs, whatever its type (HoraeDB's
/// `Arc<runtime::Runtime>` converts to it as it is).
pub type RuntimeRef = Arc<dyn Any + Send + Sync>;

/// The runtimes an engine offers its WALs, as in HoraeDB.
///
/// segwal's WALs run on the runtime that calls them (a `LocalWal` in
/// place or on that runtime's blocking pool), so [`LocalStorageWalsOpener`]
/// does not use these; they keep HoraeDB's shape so an engine's set-up
/// code stays as it is.
#[derive(Debug, Clone)]
pub struct WalRuntimes {
    /// For reads.
    pub read_runtime: RuntimeRef,
    /// For writes.
    pub write_runtime: RuntimeRef,
    /// For everything else.
    pub default_runtime: RuntimeRef,
}

/// An engine's two WALs.
#[derive(Debug, Clone)]
pub struct OpenedWals {
    /// The WAL of table data.
    pub data_wal: WalManagerRef,
    /// The WAL of the table manifest (schema and version edits).
    pub manifest_wal: WalManagerRef,
}

/// Opens an engine's WALs from its configuration; an engine is generic
/// over it, as in HoraeDB.
#[async_trait]
pub trait WalsOpener: Send + Sync + Default {
    /// Opens the data and manifest WALs that `config` describes.
    async fn open_wals(&self, config: &Config, runtimes: WalRuntimes) -> Result<OpenedWals>;
}

/// Opens two [`LocalWal`]s with the configured settings: the data WAL in
/// `<data_dir>/wal`, the manifest WAL in `<data_dir>/manifest`, as
/// HoraeDB's local storage did.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalStorageWalsOpener;

impl LocalStorageWalsOpener {
    /// The two WALs' configurations: `config` with the data dir moved
    /// down to [`WAL_DIR_NAME`] and [`MANIFEST_DIR_NAME`].
    pub fn wal_configs(config: &LocalWalConfig) -> (LocalWalConfig, LocalWalConfig) {
        let root: PathBuf = config.dir().to_path_buf();
        (
            config.clone().with_dir(root.join(WAL_DIR_NAME)),
            config.clone().with_dir(root.join(MANIFEST_DIR_NAME)),
        )
    }
}

#[async_trait]
impl WalsOpener for LocalStorageWalsOpener {
    async fn open_wals(&self, config: &Config, _runtimes: WalRuntimes) -> Result<OpenedWals> {
        config.ensure_data_enabled()?;
        let local = match &config.storage {
            StorageConfig::Local(local) => local,
            StorageConfig::Nats(_) => {
                return UnsupportedConfigSnafu {
                    reason: "type = \"Nats\": the NATS backend's WALs are opened by \
                             segwal_nats::NatsWalsOpener, not LocalStorageWalsOpener",
                }
                .fail();
            }
        };
        let (data, manifest) = Self::wal_configs(local);
        let data_wal = LocalWal::open(data).await?;
        let manifest_wal = LocalWal::open(manifest).await?;
        Ok(OpenedWals {
            data_wal: Arc::new(data_wal),
            manifest_wal: Arc::new(manifest_wal),
        })
    }
}
