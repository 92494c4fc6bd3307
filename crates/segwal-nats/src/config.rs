//! [`NatsWalConfig`]: where the cluster is and how regions map onto it.

use std::time::Duration;

use crate::durability::ServerSync;
use crate::error::{Error, InvalidConfigSnafu};
use crate::security::{REDACTED, Security, redact_url};

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
///
/// `Debug` shows no secret: passwords and tokens print as `<redacted>`,
/// server URLs without user information.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsWalConfig {
    pub(crate) servers: Vec<String>,
    pub(crate) prefix: String,
    pub(crate) replicas: usize,
    pub(crate) owner: String,
    pub(crate) request_timeout: Duration,
    pub(crate) streams: u32,
    pub(crate) server_sync: ServerSync,
    pub(crate) security: Security,
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
            security: Security::default(),
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

    /// The servers, as configured (credentials in them included: show
    /// them with [`redact_url`](crate::redact_url)).
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    /// The same configuration on other servers (a tool's `--servers`
    /// overriding a file's).
    pub fn with_servers<S: Into<String>>(mut self, servers: impl IntoIterator<Item = S>) -> Self {
        self.servers = servers.into_iter().map(Into::into).collect();
        self
    }

    /// The replicas of the streams this WAL creates.
    pub fn replicas_count(&self) -> usize {
        self.replicas
    }

    /// How many streams the regions share.
    pub fn stream_count(&self) -> u32 {
        self.streams
    }

    /// The owner name.
    pub fn owner_name(&self) -> &str {
        &self.owner
    }

    /// The prefix.
    pub fn prefix_name(&self) -> &str {
        &self.prefix
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
        self.security.check()
    }

    /// The servers as every message shows them: without user information.
    pub(crate) fn servers_label(&self) -> String {
        let shown: Vec<String> = self.servers.iter().map(|s| redact_url(s)).collect();
        shown.join(",")
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

impl std::fmt::Debug for NatsWalConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = |value: &Option<String>| value.as_ref().map(|_| REDACTED);
        let s = &self.security;
        f.debug_struct("NatsWalConfig")
            .field("servers", &self.servers_label())
            .field("prefix", &self.prefix)
            .field("replicas", &self.replicas)
            .field("owner", &self.owner)
            .field("request_timeout", &self.request_timeout)
            .field("streams", &self.streams)
            .field("server_sync", &self.server_sync)
            .field("user", &s.user)
            .field("password", &secret(&s.password))
            .field("token", &secret(&s.token))
            .field("nkey_seed_file", &s.nkey_seed_file)
            .field("credentials_file", &s.credentials_file)
            .field("tls_ca_file", &s.tls_ca_file)
            .field("tls_cert_file", &s.tls_cert_file)
            .field("tls_key_file", &s.tls_key_file)
            .field("tls_required", &s.tls_required)
            .finish()
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
