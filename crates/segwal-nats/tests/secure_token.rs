//! `NatsWal` on a nats-server whose clients authenticate with a token
//! (started once for this file): the token works from the config and
//! from a server URL, is never shown, and a wrong one is refused at once.

#[path = "support/secure.rs"]
mod secure;
mod support;

use std::time::{Duration, Instant};

use secure::{SecureServer, assert_no_secret, write_and_read_back};
use segwal::WalManager;
use segwal_nats::{Error, NatsWal, NatsWalConfig};
use tokio::sync::OnceCell;

const TOKEN: &str = "t0ken-secret-value";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(4);

static SERVER: OnceCell<SecureServer> = OnceCell::const_new();

async fn server() -> &'static SecureServer {
    SERVER
        .get_or_init(|| async {
            let body = format!("authorization {{\n  token: \"{TOKEN}\"\n}}\n");
            SecureServer::start(SecureServer::new_dir(), &body, |port| async move {
                async_nats::ConnectOptions::with_token(TOKEN.into())
                    .connect(format!("nats://127.0.0.1:{port}"))
                    .await
                    .map_err(|e| e.to_string())
            })
            .await
        })
        .await
}

fn config(url: String) -> NatsWalConfig {
    NatsWalConfig::new([url])
        .prefix("tok")
        .streams(2)
        .owner("tok-node")
        .request_timeout(REQUEST_TIMEOUT)
}

/// Proves that a token set in the config authenticates, writes and reads,
/// and that neither `Debug` nor the statistics show it.
#[tokio::test]
async fn a_token_from_the_config_writes_and_reads() {
    let server = server().await;
    let config = config(server.url("nats", None)).token(TOKEN);
    assert_no_secret(&format!("{config:?}"), &[TOKEN]);
    let wal = NatsWal::open(config).await.unwrap();
    write_and_read_back(&wal, 1).await;
    assert_no_secret(&wal.get_statistics().await.unwrap(), &[TOKEN]);
    wal.close_gracefully().await.unwrap();
}

/// Proves that a token in a server URL (`nats://TOKEN@host`) is used, and
/// that the URL is shown without it.
#[tokio::test]
async fn a_token_in_the_url_writes_and_reads_and_is_never_shown() {
    let server = server().await;
    let config = config(server.url("nats", Some(TOKEN)));
    assert_no_secret(&format!("{config:?}"), &[TOKEN]);
    let wal = NatsWal::open(config).await.unwrap();
    write_and_read_back(&wal, 2).await;
    let statistics = wal.get_statistics().await.unwrap();
    assert!(
        statistics.contains(&server.url("nats", None)),
        "{statistics}"
    );
    assert_no_secret(&statistics, &[TOKEN]);
    wal.close_gracefully().await.unwrap();
}

/// Proves that a wrong token (and no token) ends `open` at once with one
/// line naming the authorization violation, and not the token.
#[tokio::test]
async fn a_wrong_or_missing_token_is_refused_at_once() {
    let server = server().await;
    for config in [
        config(server.url("nats", None)).token("wrong-t0ken"),
        config(server.url("nats", Some("wrong-t0ken"))),
        config(server.url("nats", None)),
    ] {
        let started = Instant::now();
        let err = NatsWal::open(config).await.expect_err("refused");
        let text = err.to_string();
        assert!(matches!(err, Error::Connect { .. }), "{err:?}");
        assert!(started.elapsed() < REQUEST_TIMEOUT, "{text}");
        assert!(text.contains("authorization violation"), "{text}");
        assert!(!text.contains('\n'), "{text}");
        assert_no_secret(&text, &["wrong-t0ken", TOKEN]);
    }
}
