//! The NATS side of the command line: the `NatsWalConfig` a command runs
//! with (from `--nats-config FILE`, with flags overriding the file's
//! keys), the bench's backend on it, and `segwal nats-permissions`.
//!
//! Precedence: a flag given on the command line (`--servers`,
//! `--replicas`, `--nats-streams`) replaces the file's key; every other
//! key (prefix, owner, credentials, TLS files) comes from the file alone.
//! Secrets have no flags, so they never appear in a process listing.

use std::path::Path;

use segwal_nats::{NatsWal, NatsWalConfig, redact_url};

use crate::bench::{BenchBackend, BenchOptions};

/// The NATS flags of a command.
#[derive(Debug, Default)]
pub(crate) struct NatsFlags<'a> {
    pub(crate) config_file: Option<&'a Path>,
    pub(crate) servers: Vec<String>,
    pub(crate) replicas: Option<u64>,
    pub(crate) streams: Option<u32>,
}

/// Where a bench's config came from: the bench runs under a prefix of its
/// own (`segwal_bench_<pid>`) unless a file names the prefix (the one its
/// user's permissions cover).
#[derive(Debug, Clone)]
pub(crate) struct NatsTarget {
    pub(crate) config: NatsWalConfig,
    pub(crate) from_file: bool,
}

/// Reads a `NatsWalConfig` TOML file, naming the file in every error.
pub(crate) fn read_config(path: &Path) -> Result<NatsWalConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read NATS config {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        let first = e.to_string();
        let first = first.lines().next().unwrap_or_default().to_owned();
        format!(
            "NATS config {} is invalid: {first} ({})",
            path.display(),
            e.message()
        )
    })
}

/// The config a command runs with: the file's, with the flags given on
/// the command line in place of its keys; without a file, the flags
/// alone (`--servers` then required).
pub(crate) fn resolve(flags: NatsFlags<'_>) -> Result<NatsTarget, String> {
    let (mut config, from_file) = match flags.config_file {
        Some(path) => (read_config(path)?, true),
        None if flags.servers.is_empty() => {
            return Err("--backend nats needs --servers URL[,URL...] or --nats-config FILE".into());
        }
        None => (NatsWalConfig::new(flags.servers.iter().cloned()), false),
    };
    if from_file && !flags.servers.is_empty() {
        config = config.with_servers(flags.servers.iter().cloned());
    }
    let replicas = match flags.replicas {
        Some(replicas) => replicas as usize,
        None if from_file => config.replicas_count(),
        None if config.servers().len() >= 3 => 3,
        None => 1,
    };
    config = config.replicas(replicas);
    if let Some(streams) = flags.streams {
        config = config.streams(streams);
    }
    if !from_file {
        let pid = std::process::id();
        config = config
            .prefix(format!("segwal_bench_{pid}"))
            .owner(format!("segwal-bench-{pid}"));
    }
    Ok(NatsTarget { config, from_file })
}

/// The servers of `config` as shown: without user information.
pub(crate) fn servers_shown(config: &NatsWalConfig) -> String {
    let shown: Vec<String> = config.servers().iter().map(|s| redact_url(s)).collect();
    shown.join(",")
}

/// The bench on a `NatsWal`.
pub(crate) struct NatsBench {
    pub(crate) config: NatsWalConfig,
}

impl NatsBench {
    /// Refuses a prefix that holds streams already: the bench deletes its
    /// streams at the end, and must never delete a log in use.
    pub(crate) async fn check_prefix_is_new(&self) -> Result<(), String> {
        let wal = self.open().await?;
        let names = wal.stream_names().await.map_err(|e| e.to_string())?;
        if !names.is_empty() {
            return Err(format!(
                "prefix {:?} already holds streams ({}); bench needs a prefix of its own, as it \
                 deletes its streams at the end",
                self.config.prefix_name(),
                names.join(", ")
            ));
        }
        Ok(())
    }
}

impl BenchBackend for NatsBench {
    type Wal = NatsWal;
    async fn open(&self) -> Result<NatsWal, String> {
        NatsWal::open(self.config.clone())
            .await
            .map_err(|e| e.to_string())
    }
    /// Commits stand for syncs: each is one round trip to the stream
    /// leader carrying every write of a region queued when it started.
    fn syncs(&self, wal: &NatsWal) -> Option<(u64, u64)> {
        let counters = wal.counters();
        Some((counters.commits, counters.batches_written))
    }
    /// `--sync` does not apply: the servers' `sync_interval` decides.
    fn durability_label(&self, _options: &BenchOptions) -> String {
        "by the servers (JetStream ack)".into()
    }
    fn record_bytes(&self, _wal: &NatsWal) -> Option<u64> {
        None
    }
    async fn stored_bytes(&self, _regions: u64) -> u64 {
        let Ok(wal) = NatsWal::open(self.config.clone()).await else {
            return 0;
        };
        wal.stored_bytes().await.unwrap_or(0)
    }

    async fn clean_up(&self) -> Result<(), String> {
        let wal = NatsWal::open(self.config.clone())
            .await
            .map_err(|e| e.to_string())?;
        wal.delete_all_streams().await.map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// `segwal nats-permissions`: the `permissions` block a user needs for the
/// prefix and stream count of `file` (or of the defaults), with
/// `--prefix` and `--nats-streams` overriding them.
pub(crate) fn permissions_block(
    file: Option<&Path>,
    prefix: Option<String>,
    streams: Option<u32>,
) -> Result<String, String> {
    let mut config = match file {
        Some(path) => read_config(path)?,
        None => NatsWalConfig::new(["nats://127.0.0.1:4222"]),
    };
    if let Some(prefix) = prefix {
        config = config.prefix(prefix);
    }
    if let Some(streams) = streams {
        config = config.streams(streams);
    }
    Ok(config.permissions().to_string())
}
