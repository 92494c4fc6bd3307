//! [`NatsWalConfig`]: where the cluster is and how regions map onto it.

use std::time::Duration;

use segwal::human::HumanDuration;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::durability::ServerSync;
use crate::error::{Error, InvalidConfigSnafu};

/// Streams a prefix's regions share, by default: one, so that a single
/// Raft group carries every region's commits and appends (and, with
/// `sync_interval: always`, fsyncs) several at a time, as the local log's
/// group commit does. More streams spread the leaders over more servers;
/// docs/OPERATIONS.md says when that pays.
pub const DEFAULT_STREAMS: u32 = 1;
/// The most streams a prefix may use: each is a Raft group on every
/// server holding a replica.
pub const MAX_STREAMS: u32 = 1024;

/// Configuration of a [`NatsWal`](crate::NatsWal):
/// `NatsWalConfig::new(servers)` and builder methods. Checked by
/// [`NatsWal::open`](crate::NatsWal::open) before anything is contacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsWalConfig {
    pub(crate) servers: Vec<String>,
    pub(crate) prefix: String,
    pub(crate) replicas: usize,
    pub(crate) owner: String,
    pub(crate) request_timeout: Duration,
    pub(crate) streams: u32,
    pub(crate) server_sync: ServerSync,
}

impl NatsWalConfig {
    /// The defaults for `servers` (URLs such as `nats://10.0.0.1:4222`; list
    /// every node of a cluster so the client can fail over): prefix
    /// `segwal`, 1 replica, a random owner name, 5 s request timeout,
    /// [`DEFAULT_STREAMS`] streams, servers on JetStream's default
    /// `sync_interval`.
    pub fn new<S: Into<String>>(servers: impl IntoIterator<Item = S>) -> NatsWalConfig {
        NatsWalConfig {
            servers: servers.into_iter().map(Into::into).collect(),
            prefix: "segwal".into(),
            replicas: 1,
            owner: random_owner(),
            request_timeout: Duration::from_secs(5),
            streams: DEFAULT_STREAMS,
            server_sync: ServerSync::JetStreamDefault,
        }
    }

    /// The names used on the server: streams `{prefix}_s0` ... with
    /// subjects `{prefix}.{stream}.>` (see the crate docs). Letters, digits,
    /// `-` and `_` only. Two WALs with different prefixes share a cluster
    /// without seeing each other.
    pub fn prefix(mut self, prefix: impl Into<String>) -> NatsWalConfig {
        self.prefix = prefix.into();
        self
    }

    /// Replicas of each stream: 1 on a single server, 3 (or 5) in
    /// a cluster. A write is acknowledged once a majority stores it. Applies
    /// to streams this WAL creates; existing streams keep theirs.
    pub fn replicas(mut self, replicas: usize) -> NatsWalConfig {
        self.replicas = replicas;
        self
    }

    /// This instance's name as a region owner. Give each engine node a
    /// stable, unique name: a node restarted under the same name takes its
    /// regions back without a takeover; two live instances must never share
    /// one. Default: a random name, unique to this instance.
    pub fn owner(mut self, owner: impl Into<String>) -> NatsWalConfig {
        self.owner = owner.into();
        self
    }

    /// How long a JetStream request (and a publish acknowledgement) may take
    /// before it fails (default 5 s).
    pub fn request_timeout(mut self, timeout: Duration) -> NatsWalConfig {
        self.request_timeout = timeout;
        self
    }

    /// How many streams the regions share (default [`DEFAULT_STREAMS`], 1
    /// to [`MAX_STREAMS`]): region R lives in stream `R mod streams`. Each
    /// stream is one Raft group per replica, so this bounds what the
    /// servers spend on segwal however many regions there are; more
    /// streams spread writes over more stream leaders. Fixed when a
    /// prefix's first stream is created: opening it later with another
    /// count is refused, since regions would move.
    pub fn streams(mut self, streams: u32) -> NatsWalConfig {
        self.streams = streams;
        self
    }

    /// What the servers' `jetstream { sync_interval }` is, so that
    /// [`NatsWal::durability`](crate::NatsWal::durability) and the
    /// statistics say what an acknowledgement means. segwal cannot read a
    /// server's setting (it is not in the client protocol), so this is the
    /// operator's statement; default [`ServerSync::JetStreamDefault`].
    pub fn server_sync(mut self, sync: ServerSync) -> NatsWalConfig {
        self.server_sync = sync;
        self
    }

    /// The servers, as configured.
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    /// The owner name.
    pub fn owner_name(&self) -> &str {
        &self.owner
    }

    pub(crate) fn check(&self) -> Result<(), Error> {
        let fail = |reason: String| InvalidConfigSnafu { reason }.fail();
        if self.servers.is_empty() || self.servers.iter().any(|s| s.trim().is_empty()) {
            return fail("at least one server URL is needed, and none may be empty".into());
        }
        if self.prefix.is_empty()
            || self.prefix.len() > 64
            || !self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return fail(format!(
                "prefix {:?} must be 1 to 64 letters, digits, '-' or '_'",
                self.prefix
            ));
        }
        if !(1..=5).contains(&self.replicas) {
            return fail(format!(
                "replicas must be 1 to 5, not {} (JetStream's limit)",
                self.replicas
            ));
        }
        if self.owner.is_empty()
            || self.owner.len() > 256
            || self
                .owner
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return fail(format!(
                "owner name {:?} must be 1 to 256 characters without whitespace",
                self.owner
            ));
        }
        if self.request_timeout.is_zero() {
            return fail("the request timeout must be above zero".into());
        }
        if !(1..=MAX_STREAMS).contains(&self.streams) {
            return fail(format!(
                "streams must be 1 to {MAX_STREAMS}, not {}",
                self.streams
            ));
        }
        Ok(())
    }

    pub(crate) fn servers_label(&self) -> String {
        self.servers.join(",")
    }

    /// The index of the stream region `region` lives in.
    pub(crate) fn stream_of(&self, region: u64) -> u32 {
        (region % u64::from(self.streams)) as u32
    }

    pub(crate) fn stream_name(&self, stream: u32) -> String {
        format!("{}_s{stream}", self.prefix)
    }

    pub(crate) fn stream_subjects(&self, stream: u32) -> String {
        format!("{}.{stream}.>", self.prefix)
    }

    /// Every subject of region `region`: the filter of its fencing checks
    /// and its scans.
    pub(crate) fn region_subjects(&self, region: u64) -> String {
        format!("{}.{}.{region}.>", self.prefix, self.stream_of(region))
    }

    pub(crate) fn data_subject(&self, region: u64, table: u64) -> String {
        format!(
            "{}.{}.{region}.t.{table}",
            self.prefix,
            self.stream_of(region)
        )
    }

    pub(crate) fn mark_subject(&self, region: u64, table: u64) -> String {
        format!(
            "{}.{}.{region}.m.{table}",
            self.prefix,
            self.stream_of(region)
        )
    }

    pub(crate) fn owner_subject(&self, region: u64) -> String {
        format!("{}.{}.{region}.o", self.prefix, self.stream_of(region))
    }
}

/// A name no other instance has: the process id and 64 random bits (from
/// the standard library's randomly keyed hasher).
fn random_owner() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    format!("segwal-{}-{:016x}", std::process::id(), hasher.finish())
}

/// The file form of a [`NatsWalConfig`] (TOML in the docs): `servers`
/// required, every other key optional (the defaults of
/// [`NatsWalConfig::new`]), durations in human form (`"5s"`), unknown keys
/// refused by name. `server_sync` is `"default"`, `"always"` or a duration.
/// Checked, like a built config, by [`NatsWal::open`](crate::NatsWal::open).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileForm {
    servers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replicas: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request_timeout: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    streams: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    server_sync: Option<ServerSyncForm>,
}

/// [`ServerSync`] in a file: `"default"`, `"always"`, or a duration such
/// as `"1s"` (the servers' `sync_interval`).
#[derive(Debug, Clone, Copy)]
struct ServerSyncForm(ServerSync);

impl Serialize for ServerSyncForm {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            ServerSync::JetStreamDefault => serializer.serialize_str("default"),
            ServerSync::Always => serializer.serialize_str("always"),
            ServerSync::Interval(every) => HumanDuration(every).serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for ServerSyncForm {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.as_str() {
            "default" => Ok(ServerSyncForm(ServerSync::JetStreamDefault)),
            "always" => Ok(ServerSyncForm(ServerSync::Always)),
            other => other
                .parse::<HumanDuration>()
                .map(|HumanDuration(every)| ServerSyncForm(ServerSync::Interval(every)))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "server_sync {other:?} is not \"default\", \"always\" or a duration \
                         such as \"1s\""
                    ))
                }),
        }
    }
}

impl<'de> Deserialize<'de> for NatsWalConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let form = FileForm::deserialize(deserializer)?;
        let mut config = NatsWalConfig::new(form.servers);
        if let Some(prefix) = form.prefix {
            config.prefix = prefix;
        }
        if let Some(replicas) = form.replicas {
            config.replicas = replicas;
        }
        if let Some(owner) = form.owner {
            config.owner = owner;
        }
        if let Some(HumanDuration(timeout)) = form.request_timeout {
            config.request_timeout = timeout;
        }
        if let Some(streams) = form.streams {
            config.streams = streams;
        }
        if let Some(ServerSyncForm(sync)) = form.server_sync {
            config.server_sync = sync;
        }
        Ok(config)
    }
}

impl Serialize for NatsWalConfig {
    /// Every key, so that a config written out reads back the same
    /// (including the owner name, random unless set).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        FileForm {
            servers: self.servers.clone(),
            prefix: Some(self.prefix.clone()),
            replicas: Some(self.replicas),
            owner: Some(self.owner.clone()),
            request_timeout: Some(HumanDuration(self.request_timeout)),
            streams: Some(self.streams),
            server_sync: Some(ServerSyncForm(self.server_sync)),
        }
        .serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves that a TOML file sets every key of a `NatsWalConfig`, with
    /// durations in human form, and that what is written out reads back
    /// the same.
    #[test]
    fn every_key_reads_from_toml_and_round_trips() {
        let config: NatsWalConfig = toml::from_str(
            r#"
            servers = ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"]
            prefix = "wal-a"
            replicas = 3
            owner = "node-1"
            request_timeout = "2500ms"
            streams = 4
            server_sync = "always"
            "#,
        )
        .unwrap();
        let expected = NatsWalConfig::new(["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"])
            .prefix("wal-a")
            .replicas(3)
            .owner("node-1")
            .request_timeout(Duration::from_millis(2500))
            .streams(4)
            .server_sync(ServerSync::Always);
        assert_eq!(config, expected);
        assert!(config.check().is_ok());
        let text = toml::to_string(&config).unwrap();
        assert_eq!(toml::from_str::<NatsWalConfig>(&text).unwrap(), config);

        let interval: NatsWalConfig =
            toml::from_str("servers = [\"nats://h:4222\"]\nserver_sync = \"1s\"").unwrap();
        assert_eq!(
            interval.server_sync,
            ServerSync::Interval(Duration::from_secs(1))
        );
        let text = toml::to_string(&interval).unwrap();
        assert_eq!(toml::from_str::<NatsWalConfig>(&text).unwrap(), interval);
    }

    /// Proves that absent keys take `NatsWalConfig::new`'s defaults (the
    /// owner a random name), and that mistakes are refused naming the key
    /// or the value: an unknown key, a missing `servers`, a bad duration, a
    /// bad `server_sync`; values out of range are refused by the same check
    /// `open` runs.
    #[test]
    fn defaults_fill_absent_keys_and_mistakes_are_named() {
        let config: NatsWalConfig = toml::from_str("servers = [\"nats://h:4222\"]").unwrap();
        let defaults = NatsWalConfig::new(["nats://h:4222"]);
        assert_eq!(
            (
                &config.prefix,
                config.replicas,
                config.request_timeout,
                config.streams,
                config.server_sync
            ),
            (
                &defaults.prefix,
                defaults.replicas,
                defaults.request_timeout,
                defaults.streams,
                defaults.server_sync
            )
        );
        assert!(!config.owner.is_empty());

        for (text, named) in [
            ("servers = [\"h\"]\nreplica = 3", "replica"),
            ("prefix = \"p\"", "servers"),
            ("servers = [\"h\"]\nrequest_timeout = \"soon\"", "soon"),
            (
                "servers = [\"h\"]\nserver_sync = \"sometimes\"",
                "sometimes",
            ),
        ] {
            let err = toml::from_str::<NatsWalConfig>(text)
                .unwrap_err()
                .to_string();
            assert!(err.contains(named), "{text:?}: {err}");
        }
        let zero: NatsWalConfig = toml::from_str("servers = [\"h\"]\nstreams = 0").unwrap();
        assert!(zero.check().is_err());
    }
}
