//! `NatsWal` on a nats-server in operator mode (decentralised
//! authentication: an operator, accounts with JetStream in a memory
//! resolver, users with JWTs), started once for this file: a `.creds`
//! file authenticates; a missing or invalid one, or a user whose JWT
//! does not cover the prefix, is refused at once with its cause.

#[path = "support/secure.rs"]
mod secure;
mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use secure::{Operator, SecureServer, write_and_read_back};
use segwal_nats::{Error, NatsWal, NatsWalConfig};
use tokio::sync::OnceCell;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(4);

struct Setup {
    server: SecureServer,
    /// A user limited to prefix `cr` (2 streams).
    wal_creds: PathBuf,
}

static SETUP: OnceCell<Setup> = OnceCell::const_new();

async fn setup() -> &'static Setup {
    SETUP
        .get_or_init(|| async {
            let dir = SecureServer::new_dir();
            let operator = Operator::new();
            let admin_creds = operator.creds(&dir, "admin", None);
            let wal_creds = operator.creds(&dir, "wal", Some(("cr", 2)));
            let server = SecureServer::start(dir, &operator.server_block(), |port| {
                let creds = admin_creds.clone();
                async move {
                    async_nats::ConnectOptions::with_credentials_file(creds)
                        .await
                        .map_err(|e| e.to_string())?
                        .connect(format!("nats://127.0.0.1:{port}"))
                        .await
                        .map_err(|e| e.to_string())
                }
            })
            .await;
            Setup { server, wal_creds }
        })
        .await
}

fn config(setup: &Setup, prefix: &str) -> NatsWalConfig {
    NatsWalConfig::new([setup.server.url("nats", None)])
        .prefix(prefix)
        .streams(2)
        .owner("creds-node")
        .request_timeout(REQUEST_TIMEOUT)
}

async fn refusal(config: NatsWalConfig) -> (Error, Duration) {
    let started = Instant::now();
    let err = NatsWal::open(config).await.expect_err("refused");
    (err, started.elapsed())
}

/// Proves that a `.creds` file (a user JWT signed by its account, and the
/// user's seed) authenticates, and that the user, limited to the
/// permissions `NatsWalConfig::permissions` gives for its prefix, writes
/// and reads.
#[tokio::test]
async fn a_creds_file_writes_and_reads() {
    let setup = setup().await;
    let wal = NatsWal::open(config(setup, "cr").credentials_file(&setup.wal_creds))
        .await
        .unwrap();
    write_and_read_back(&wal, 1).await;
    segwal::WalManager::close_gracefully(&wal).await.unwrap();
}

/// Proves that a missing `.creds` file and one that holds no JWT end
/// `open` at once, naming the key and the file.
#[tokio::test]
async fn a_missing_or_invalid_creds_file_is_refused_naming_it() {
    let setup = setup().await;
    let missing = setup.server.dir.join("absent.creds");
    let (err, took) = refusal(config(setup, "cr").credentials_file(&missing)).await;
    let text = err.to_string();
    assert!(matches!(err, Error::ReadSecretFile { .. }), "{err:?}");
    assert!(took < REQUEST_TIMEOUT, "{text}");
    assert!(
        text.contains("credentials_file") && text.contains("absent.creds"),
        "{text}"
    );

    let invalid = setup
        .server
        .file("invalid.creds", "this is not a creds file\n");
    let (err, took) = refusal(config(setup, "cr").credentials_file(&invalid)).await;
    let text = err.to_string();
    assert!(matches!(err, Error::InvalidSecretFile { .. }), "{err:?}");
    assert!(took < REQUEST_TIMEOUT, "{text}");
    assert!(
        text.contains("credentials_file") && text.contains("invalid.creds"),
        "{text}"
    );
}

/// Proves that a user whose JWT permissions cover another prefix is
/// refused at once with the server's permissions violation, naming the
/// subject it was denied.
#[tokio::test]
async fn a_user_without_permission_for_the_prefix_is_refused_at_once() {
    let setup = setup().await;
    let (err, took) = refusal(config(setup, "zz").credentials_file(&setup.wal_creds)).await;
    let text = err.to_string();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    assert!(took < REQUEST_TIMEOUT, "{text}");
    assert!(
        text.contains("Permissions Violation") && text.contains("zz"),
        "{text}"
    );
}
