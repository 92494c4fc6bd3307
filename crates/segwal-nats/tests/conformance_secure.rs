//! The conformance suite against `NatsWal` run as least-privileged users:
//! each case as its own user, whose only permissions are those
//! `NatsWalConfig::permissions` gives for the case's prefix (the block
//! docs/OPERATIONS.md documents), on one server started for this file.
//! Passing proves those permissions are enough for every call: besides
//! the case's own checks, the server's log must show no permission
//! violation of the case's user (a denied purge, say, would otherwise only
//! be retried and logged).

#[path = "support/secure.rs"]
mod secure;
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use secure::{ADMIN, SecureServer, permissions_for};
use segwal_conformance::Backend;
use segwal_nats::{NatsWal, NatsWalConfig};
use tokio::sync::OnceCell;

/// As many users as the suite has cases, at least.
const USERS: usize = 16;
const STREAMS: u32 = 2;

static SERVER: OnceCell<SecureServer> = OnceCell::const_new();
static NEXT_USER: AtomicUsize = AtomicUsize::new(0);

fn password(user: usize) -> String {
    format!("least-{user}-pw")
}

async fn server() -> &'static SecureServer {
    SERVER
        .get_or_init(|| async {
            let users: String = (0..USERS)
                .map(|i| {
                    format!(
                        "      {{ user: c{i}, password: \"{}\"\n{} }}\n",
                        password(i),
                        permissions_for(&format!("c{i}"), STREAMS)
                    )
                })
                .collect();
            let body = format!(
                "accounts {{\n  WAL: {{\n    jetstream: enabled\n    users: [\n      \
                 {{ user: {}, password: \"{}\" }}\n{users}    ]\n  }}\n}}\n",
                ADMIN.0, ADMIN.1
            );
            SecureServer::start(SecureServer::new_dir(), &body, |port| async move {
                async_nats::ConnectOptions::with_user_and_password(ADMIN.0.into(), ADMIN.1.into())
                    .connect(format!("nats://127.0.0.1:{port}"))
                    .await
                    .map_err(|e| e.to_string())
            })
            .await
        })
        .await
}

/// A case's backend: the next user, on its own prefix.
struct LeastPrivileged {
    config: NatsWalConfig,
    log: std::path::PathBuf,
}

impl Drop for LeastPrivileged {
    /// Fails the case if the server logged a permission violation by its
    /// client (named by its owner).
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let client = format!("segwal {}\"", self.config.owner_name());
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let violations: Vec<&str> = log
            .lines()
            .filter(|line| line.contains(&client) && line.contains("Violation"))
            .collect();
        assert!(violations.is_empty(), "{violations:#?}");
    }
}

async fn least_privileged() -> LeastPrivileged {
    let server = server().await;
    let user = NEXT_USER.fetch_add(1, Ordering::Relaxed);
    assert!(user < USERS, "more cases than users: raise USERS");
    let config = NatsWalConfig::new([server.url("nats", None)])
        .user(format!("c{user}"))
        .password(password(user))
        .prefix(format!("c{user}"))
        .streams(STREAMS)
        .owner(format!("node-c{user}"));
    LeastPrivileged {
        config,
        log: server.log.clone(),
    }
}

#[async_trait]
impl Backend for LeastPrivileged {
    type Wal = NatsWal;

    async fn open(&self) -> NatsWal {
        NatsWal::open(self.config.clone())
            .await
            .expect("NatsWal opens as a least-privileged user")
    }
}

segwal_conformance::conformance_tests!(least_privileged());
