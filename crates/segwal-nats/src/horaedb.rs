//! HoraeDB's opener for replicated WALs: [`NatsWalsOpener`], the NATS
//! counterpart of `segwal::horaedb::LocalStorageWalsOpener` (and of
//! HoraeDB's `KafkaWalsOpener`). An engine generic over
//! [`WalsOpener`] picks it when its configuration says `type = "Nats"`:
//!
//! ```toml
//! type = "Nats"
//! servers = ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222", "nats://10.0.0.3:4222"]
//! prefix = "engine"
//! replicas = 3
//! owner = "engine-node-7"
//! ```
//!
//! The keys are [`NatsWalConfig`]'s. The data WAL uses the prefix
//! `{prefix}_wal` and the manifest WAL `{prefix}_manifest`, as HoraeDB's
//! Kafka WAL used a namespace of each name.

use std::sync::Arc;

use async_trait::async_trait;
use segwal::horaedb::{
    Config, MANIFEST_DIR_NAME, NatsStorageConfig, OpenedWals, StorageConfig, WAL_DIR_NAME,
    WalRuntimes, WalsOpener,
};
use snafu::ResultExt;

use crate::config::NatsWalConfig;
use crate::error::{Error, InvalidConfigSnafu, StorageKeysSnafu};
use crate::wal::NatsWal;

/// Opens an engine's data and manifest WALs as two [`NatsWal`]s on one
/// cluster, from a `type = "Nats"` [`Config`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NatsWalsOpener;

impl NatsWalsOpener {
    /// The two WALs' configurations: the keys read as a [`NatsWalConfig`]
    /// (an unknown key or a wrong value is refused, naming the key), with
    /// the prefix extended by [`WAL_DIR_NAME`] and [`MANIFEST_DIR_NAME`].
    pub fn wal_configs(keys: &NatsStorageConfig) -> Result<(NatsWalConfig, NatsWalConfig), Error> {
        let config: NatsWalConfig =
            serde_json::from_value(serde_json::Value::Object(keys.keys.clone()))
                .context(StorageKeysSnafu)?;
        let prefix = config.prefix.clone();
        Ok((
            config.clone().prefix(format!("{prefix}_{WAL_DIR_NAME}")),
            config.prefix(format!("{prefix}_{MANIFEST_DIR_NAME}")),
        ))
    }
}

#[async_trait]
impl WalsOpener for NatsWalsOpener {
    async fn open_wals(
        &self,
        config: &Config,
        _runtimes: WalRuntimes,
    ) -> segwal::Result<OpenedWals> {
        config.ensure_data_enabled()?;
        let keys = match &config.storage {
            StorageConfig::Nats(keys) => keys,
            _ => {
                return Err(InvalidConfigSnafu {
                    reason: "the configuration's type is not \"Nats\": a local WAL is opened \
                             by segwal::horaedb::LocalStorageWalsOpener, not NatsWalsOpener",
                }
                .build()
                .into());
            }
        };
        let (data, manifest) = Self::wal_configs(keys)?;
        let data_wal = NatsWal::open(data).await?;
        let manifest_wal = NatsWal::open(manifest).await?;
        Ok(OpenedWals {
            data_wal: Arc::new(data_wal),
            manifest_wal: Arc::new(manifest_wal),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves that a `type = "Nats"` file gives the data and manifest WALs
    /// the configured keys under prefixes of their own, and that an
    /// unknown key is refused with its name before anything is contacted.
    #[test]
    fn the_nats_keys_of_a_horaedb_config_make_two_prefixes() {
        let config: Config = toml::from_str(
            r#"
            type = "Nats"
            servers = ["nats://10.0.0.1:4222"]
            prefix = "engine"
            replicas = 3
            owner = "node-7"
            request_timeout = "2s"
            "#,
        )
        .unwrap();
        let StorageConfig::Nats(keys) = &config.storage else {
            panic!("not the Nats arm: {config:?}");
        };
        let (data, manifest) = NatsWalsOpener::wal_configs(keys).unwrap();
        assert_eq!(data.prefix, "engine_wal");
        assert_eq!(manifest.prefix, "engine_manifest");
        for wal in [&data, &manifest] {
            assert_eq!(wal.replicas, 3);
            assert_eq!(wal.owner, "node-7");
            assert_eq!(wal.request_timeout, std::time::Duration::from_secs(2));
            assert_eq!(wal.servers, ["nats://10.0.0.1:4222"]);
        }

        let config: Config = toml::from_str(
            r#"
            type = "Nats"
            servers = ["nats://10.0.0.1:4222"]
            replica = 3
            "#,
        )
        .unwrap();
        let StorageConfig::Nats(keys) = &config.storage else {
            panic!("not the Nats arm: {config:?}");
        };
        let err = NatsWalsOpener::wal_configs(keys).unwrap_err().to_string();
        assert!(err.contains("`replica`"), "{err}");
    }

    /// Proves that each opener refuses the other backend's configuration
    /// with a message naming the opener to use, and that `disable_data`
    /// is refused as by the local opener.
    #[tokio::test]
    async fn an_opener_refuses_the_other_backends_config() {
        let runtime: segwal::horaedb::RuntimeRef = Arc::new(());
        let runtimes = WalRuntimes {
            read_runtime: runtime.clone(),
            write_runtime: runtime.clone(),
            default_runtime: runtime,
        };
        let local = Config::default();
        let err = NatsWalsOpener
            .open_wals(&local, runtimes.clone())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("LocalStorageWalsOpener"), "{err}");

        let nats: Config =
            toml::from_str("type = \"Nats\"\nservers = [\"nats://127.0.0.1:1\"]").unwrap();
        let err = segwal::horaedb::LocalStorageWalsOpener
            .open_wals(&nats, runtimes.clone())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("NatsWalsOpener"), "{err}");

        let dropped: Config = toml::from_str(
            "type = \"Nats\"\nservers = [\"nats://127.0.0.1:1\"]\ndisable_data = true",
        )
        .unwrap();
        let err = NatsWalsOpener
            .open_wals(&dropped, runtimes)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("disable_data"), "{err}");
    }
}
