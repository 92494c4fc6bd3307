//! The least privilege of a WAL user: exactly the subjects a
//! [`NatsWal`](crate::NatsWal) publishes to and subscribes to for its
//! prefix, as a server config's `permissions` block.

use std::fmt;

use crate::config::NatsWalConfig;
use crate::connect::inbox_prefix;

/// The subjects a WAL user needs for its prefix, and nothing else:
/// publish to the prefix's subjects and to the JetStream API of the
/// prefix's streams only (stream info, create, purge, delete, message get,
/// direct get), subscribe to the WAL's own inbox. `Display` gives the
/// `permissions` block of a nats-server user, ready to paste; with it, a
/// user cannot touch another prefix's streams or see their replies.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Permissions {
    /// Subjects the user may publish to.
    pub publish: Vec<String>,
    /// Subjects the user may subscribe to.
    pub subscribe: Vec<String>,
}

/// The JetStream API requests made about each stream, as subject prefixes
/// followed by the stream's name. `STREAM.DELETE` is used only by
/// [`NatsWal::delete_all_streams`](crate::NatsWal::delete_all_streams).
const STREAM_APIS: [&str; 6] = [
    "$JS.API.STREAM.INFO",
    "$JS.API.STREAM.CREATE",
    "$JS.API.STREAM.PURGE",
    "$JS.API.STREAM.DELETE",
    "$JS.API.STREAM.MSG.GET",
    "$JS.API.DIRECT.GET",
];

impl NatsWalConfig {
    /// The permissions a user needs to run this WAL (its prefix and stream
    /// count), and no more.
    pub fn permissions(&self) -> Permissions {
        let mut publish = vec![format!("{}.>", self.prefix)];
        for stream in 0..self.streams {
            let name = self.stream_name(stream);
            publish.extend(STREAM_APIS.iter().map(|api| format!("{api}.{name}")));
        }
        Permissions {
            publish,
            subscribe: vec![format!("{}.>", inbox_prefix(&self.prefix))],
        }
    }
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |subjects: &[String]| {
            subjects
                .iter()
                .map(|s| format!("      \"{s}\""))
                .collect::<Vec<_>>()
                .join(",\n")
        };
        writeln!(f, "permissions: {{")?;
        writeln!(f, "  publish: {{")?;
        writeln!(f, "    allow: [\n{}\n    ]", list(&self.publish))?;
        writeln!(f, "  }}")?;
        writeln!(f, "  subscribe: {{")?;
        writeln!(f, "    allow: [\n{}\n    ]", list(&self.subscribe))?;
        writeln!(f, "  }}")?;
        writeln!(f, "}}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves that the permissions name the prefix's subjects, every
    /// JetStream API request segwal-nats makes for each of its streams
    /// (and no wildcard over stream names), and its own inbox.
    #[test]
    fn permissions_cover_the_prefix_and_nothing_wider() {
        let permissions = NatsWalConfig::new(["nats://h:4222"])
            .prefix("wal")
            .streams(2)
            .permissions();
        assert_eq!(permissions.subscribe, ["_INBOX.wal.>"]);
        assert_eq!(permissions.publish.len(), 1 + 2 * STREAM_APIS.len());
        assert!(permissions.publish.contains(&"wal.>".to_owned()));
        for name in ["wal_s0", "wal_s1"] {
            for api in [
                "STREAM.INFO",
                "STREAM.CREATE",
                "DIRECT.GET",
                "STREAM.MSG.GET",
            ] {
                let subject = format!("$JS.API.{api}.{name}");
                assert!(permissions.publish.contains(&subject), "{subject}");
            }
        }
        assert!(
            permissions.publish[1..]
                .iter()
                .all(|s| s.starts_with("$JS.API.") && s.ends_with(|c: char| c.is_ascii_digit())),
            "{permissions:?}"
        );
    }

    /// Proves that the block docs/OPERATIONS.md gives, ready to paste, is
    /// exactly what `permissions()` prints for its example (prefix `wal`,
    /// the default stream count): the documentation cannot drift from the
    /// code.
    #[test]
    fn the_documented_block_is_the_generated_one() {
        let docs = include_str!("../../../docs/OPERATIONS.md");
        let block = NatsWalConfig::new(["nats://h:4222"])
            .prefix("wal")
            .permissions()
            .to_string();
        let indented: String = block.lines().map(|l| format!("      {l}\n")).collect();
        assert!(
            docs.contains(&indented),
            "docs/OPERATIONS.md lacks the block:\n{indented}"
        );
    }
}
