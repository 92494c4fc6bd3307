//! The file form of a [`NatsWalConfig`]: the TOML (or any serde format)
//! that `segwal --nats-config` and applications read, with the keys of the
//! builder.

use std::path::PathBuf;

use segwal::human::HumanDuration;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::NatsWalConfig;
use crate::durability::ServerSync;
use crate::security::Security;

/// The file form of a [`NatsWalConfig`] (TOML in the docs): `servers`
/// required, every other key optional (the defaults of
/// [`NatsWalConfig::new`]), durations in human form (`"5s"`), unknown keys
/// refused by name. `server_sync` is `"default"`, `"always"` or a duration.
/// Checked, like a built config, by [`NatsWal::open`](crate::NatsWal::open).
/// The authentication and TLS keys are those of the builder (`user`,
/// `password`, `token`, `nkey_seed_file`, `credentials_file`,
/// `tls_ca_file`, `tls_cert_file`, `tls_key_file`, `tls_required`). No
/// `Debug`: it would print the secrets.
#[derive(Serialize, Deserialize)]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nkey_seed_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    credentials_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tls_ca_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tls_cert_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tls_key_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    tls_required: bool,
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
        config.security = Security {
            user: form.user,
            password: form.password,
            token: form.token,
            nkey_seed_file: form.nkey_seed_file,
            credentials_file: form.credentials_file,
            tls_ca_file: form.tls_ca_file,
            tls_cert_file: form.tls_cert_file,
            tls_key_file: form.tls_key_file,
            tls_required: form.tls_required,
        };
        Ok(config)
    }
}

impl Serialize for NatsWalConfig {
    /// Every key, so that a config written out reads back the same
    /// (including the owner name, random unless set, and the password or
    /// token if set: the file is as secret as they are).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let s = self.security.clone();
        FileForm {
            servers: self.servers.clone(),
            prefix: Some(self.prefix.clone()),
            replicas: Some(self.replicas),
            owner: Some(self.owner.clone()),
            request_timeout: Some(HumanDuration(self.request_timeout)),
            streams: Some(self.streams),
            server_sync: Some(ServerSyncForm(self.server_sync)),
            user: s.user,
            password: s.password,
            token: s.token,
            nkey_seed_file: s.nkey_seed_file,
            credentials_file: s.credentials_file,
            tls_ca_file: s.tls_ca_file,
            tls_cert_file: s.tls_cert_file,
            tls_key_file: s.tls_key_file,
            tls_required: s.tls_required,
        }
        .serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
            user = "wal"
            password = "s3cret"
            tls_ca_file = "/etc/nats/ca.pem"
            tls_cert_file = "/etc/nats/client.pem"
            tls_key_file = "/etc/nats/client-key.pem"
            tls_required = true
            "#,
        )
        .unwrap();
        let expected = NatsWalConfig::new(["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"])
            .prefix("wal-a")
            .replicas(3)
            .owner("node-1")
            .request_timeout(Duration::from_millis(2500))
            .streams(4)
            .server_sync(ServerSync::Always)
            .user("wal")
            .password("s3cret")
            .tls_ca_file("/etc/nats/ca.pem")
            .tls_cert_file("/etc/nats/client.pem")
            .tls_key_file("/etc/nats/client-key.pem")
            .tls_required(true);
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

    /// Proves that the other ways of authenticating (a token, an nkey seed
    /// file, a `.creds` file) read from TOML and round-trip, and that
    /// `Debug` of a config shows neither a password, a token nor the user
    /// information of a server URL.
    #[test]
    fn auth_keys_read_from_toml_and_debug_shows_no_secret() {
        for (text, expected) in [
            (
                "token = \"t0ken-secret\"",
                NatsWalConfig::new(["nats://h:4222"]).token("t0ken-secret"),
            ),
            (
                "nkey_seed_file = \"/etc/nats/wal.nk\"",
                NatsWalConfig::new(["nats://h:4222"]).nkey_seed_file("/etc/nats/wal.nk"),
            ),
            (
                "credentials_file = \"/etc/nats/wal.creds\"",
                NatsWalConfig::new(["nats://h:4222"]).credentials_file("/etc/nats/wal.creds"),
            ),
        ] {
            let config: NatsWalConfig = toml::from_str(&format!(
                "servers = [\"nats://h:4222\"]\nowner = \"o\"\n{text}"
            ))
            .unwrap();
            assert_eq!(config, expected.owner("o"), "{text}");
            let written = toml::to_string(&config).unwrap();
            assert_eq!(toml::from_str::<NatsWalConfig>(&written).unwrap(), config);
        }
        let config = NatsWalConfig::new(["nats://wal:url-secret@h:4222", "tls://url-token@g:4222"])
            .user("wal")
            .password("pw-secret")
            .token("t0ken-secret");
        let shown = format!("{config:?}");
        for secret in ["url-secret", "url-token", "pw-secret", "t0ken-secret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(
            shown.contains("nats://h:4222") && shown.contains("<redacted>"),
            "{shown}"
        );
    }
}
