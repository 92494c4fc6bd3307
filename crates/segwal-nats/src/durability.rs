//! What a JetStream acknowledgement means: [`ServerSync`] (the servers'
//! `sync_interval`, as the operator states it) and [`Durability`], the
//! report [`NatsWal::durability`](crate::NatsWal::durability) gives.

use std::fmt;
use std::time::Duration;

/// The servers' `jetstream { sync_interval }` setting, which decides when
/// a stored message reaches the disk. JetStream acknowledges a message once
/// a majority of the stream's replicas has it in its log; without
/// `always`, the log is in the page cache until the next sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerSync {
    /// No setting: JetStream syncs every two minutes.
    JetStreamDefault,
    /// `sync_interval: always`: each replica fsyncs a message before it
    /// counts towards the majority, so the acknowledgement follows an fsync
    /// on a majority.
    Always,
    /// `sync_interval: <duration>`: a sync every so often.
    Interval(Duration),
}

impl ServerSync {
    /// The longest a stored message may stay unsynced; zero for `Always`.
    pub fn window(self) -> Duration {
        match self {
            ServerSync::JetStreamDefault => Duration::from_secs(120),
            ServerSync::Always => Duration::ZERO,
            ServerSync::Interval(every) => every,
        }
    }
}

impl fmt::Display for ServerSync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerSync::JetStreamDefault => write!(f, "sync_interval unset (JetStream's 2 min)"),
            ServerSync::Always => write!(f, "sync_interval: always"),
            ServerSync::Interval(every) => write!(f, "sync_interval: {every:?}"),
        }
    }
}

/// What an acknowledged write survives, from the replicas of this WAL's
/// streams and the servers' sync setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durability {
    /// Replicas of each stream.
    pub replicas: usize,
    /// Replicas that hold a message when it is acknowledged (a majority).
    pub acknowledged_by: usize,
    /// The servers' sync setting, as configured.
    pub server_sync: ServerSync,
    /// The version the connected server reports.
    pub server_version: String,
}

impl Durability {
    pub(crate) fn new(replicas: usize, server_sync: ServerSync, server_version: String) -> Self {
        Durability {
            replicas,
            acknowledged_by: replicas / 2 + 1,
            server_sync,
            server_version,
        }
    }

    /// Nodes that may be lost at once (killed, or their disks gone) with no
    /// acknowledged write lost.
    pub fn node_losses_survived(&self) -> usize {
        self.replicas - self.acknowledged_by
    }

    /// Whether an acknowledged write survives a power loss of every node at
    /// once: only if a majority fsynced it before the acknowledgement.
    pub fn survives_power_loss_of_all_nodes(&self) -> bool {
        self.server_sync == ServerSync::Always
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (held, of) = (self.acknowledged_by, self.replicas);
        let losses = self.node_losses_survived();
        if self.survives_power_loss_of_all_nodes() {
            write!(
                f,
                "an acknowledged write is fsynced on {held} of {of} replicas ({}): it survives \
                 the loss of {losses} node(s) and a power loss of every node",
                self.server_sync
            )
        } else {
            write!(
                f,
                "an acknowledged write is in the memory of {held} of {of} replicas and reaches \
                 their disks within {:?} ({}): it survives the loss of {losses} node(s), not a \
                 power loss of {held} or more nodes within that window",
                self.server_sync.window(),
                self.server_sync
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves that the report follows the replicas and the sync setting:
    /// a majority acknowledges, one node of three may go, and only
    /// `always` survives a power loss of all nodes.
    #[test]
    fn durability_follows_replicas_and_sync() {
        let r3 = Durability::new(3, ServerSync::Always, "2.15.1".into());
        assert_eq!((r3.acknowledged_by, r3.node_losses_survived()), (2, 1));
        assert!(r3.survives_power_loss_of_all_nodes());
        assert!(r3.to_string().contains("fsynced on 2 of 3"), "{r3}");
        let r1 = Durability::new(1, ServerSync::JetStreamDefault, "2.15.1".into());
        assert_eq!((r1.acknowledged_by, r1.node_losses_survived()), (1, 0));
        assert!(!r1.survives_power_loss_of_all_nodes());
        assert!(r1.to_string().contains("120s"), "{r1}");
        let r5 = Durability::new(
            5,
            ServerSync::Interval(Duration::from_secs(1)),
            String::new(),
        );
        assert_eq!((r5.acknowledged_by, r5.node_losses_survived()), (3, 2));
    }
}
