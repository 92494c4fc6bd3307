//! `NatsWal` on a secured nats-server (started once for this file): TLS
//! from a private CA that verifies client certificates, password and nkey
//! users whose permissions cover one prefix each. Each way of
//! authenticating writes and reads; each refusal ends `open` at once with
//! its cause; no secret appears in what the WAL shows; a user cannot touch
//! another prefix.

#[path = "support/secure.rs"]
mod secure;
mod support;

use std::time::{Duration, Instant};

use secure::{ADMIN, Pki, SecureServer, assert_no_secret, permissions_for, write_and_read_back};
use segwal::{WalLocation, WalManager};
use segwal_nats::{Error, NatsWal, NatsWalConfig};
use tokio::sync::OnceCell;

const WAL_PASSWORD: &str = "wal-secret-pw";
const OTHER_PASSWORD: &str = "other-secret-pw";
/// How long a refusal may take: well within the request timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(4);

struct Setup {
    server: SecureServer,
    pki: Pki,
    nkey_seed_file: std::path::PathBuf,
}

static SETUP: OnceCell<Setup> = OnceCell::const_new();

/// The server: users `admin` (no limits), `wal` and `other` (passwords,
/// permissions for prefixes `wal` and `other`), an nkey user (prefix
/// `nk`); TLS required, client certificates verified.
async fn setup() -> &'static Setup {
    SETUP
        .get_or_init(|| async {
            let dir = SecureServer::new_dir();
            let pki = Pki::create(&dir);
            let nkey = nats_jwt::KeyPair::new_user();
            let nkey_seed_file = dir.join("wal.nk");
            std::fs::write(&nkey_seed_file, format!("{}\n", nkey.seed().unwrap())).unwrap();
            let body = format!(
                "{tls}accounts {{\n  WAL: {{\n    jetstream: enabled\n    users: [\n      \
                 {{ user: {admin}, password: \"{admin_pw}\" }}\n      \
                 {{ user: wal, password: \"{WAL_PASSWORD}\"\n{wal} }}\n      \
                 {{ user: other, password: \"{OTHER_PASSWORD}\"\n{other} }}\n      \
                 {{ nkey: {nkey}\n{nk} }}\n    ]\n  }}\n}}\n",
                tls = pki.server_block(),
                admin = ADMIN.0,
                admin_pw = ADMIN.1,
                wal = permissions_for("wal", 2),
                other = permissions_for("other", 2),
                nkey = nkey.public_key(),
                nk = permissions_for("nk", 2),
            );
            let (ca, cert, key) = (
                pki.ca.clone(),
                pki.client_cert.clone(),
                pki.client_key.clone(),
            );
            let server = SecureServer::start(dir, &body, move |port| {
                let options = async_nats::ConnectOptions::new()
                    .user_and_password(ADMIN.0.into(), ADMIN.1.into())
                    .add_root_certificates(ca.clone())
                    .add_client_certificate(cert.clone(), key.clone())
                    .require_tls(true);
                async move {
                    options
                        .connect(format!("tls://127.0.0.1:{port}"))
                        .await
                        .map_err(|e| e.to_string())
                }
            })
            .await;
            Setup {
                server,
                pki,
                nkey_seed_file,
            }
        })
        .await
}

/// A config for prefix `prefix` on the server, with the client
/// certificate and the CA, without credentials.
fn config(setup: &Setup, url: String, prefix: &str) -> NatsWalConfig {
    setup.pki.client(
        NatsWalConfig::new([url])
            .prefix(prefix)
            .streams(2)
            .owner(format!("{prefix}-node"))
            .request_timeout(REQUEST_TIMEOUT),
    )
}

/// `open`'s error for `config`, and how long it took.
async fn refusal(config: NatsWalConfig) -> (Error, Duration) {
    let started = Instant::now();
    let err = NatsWal::open(config).await.expect_err("open is refused");
    (err, started.elapsed())
}

/// Proves that a user with a password, over mutual TLS with a private CA,
/// writes and reads, and that neither the config's `Debug`, the
/// statistics nor an error show the password.
#[tokio::test]
async fn password_user_over_mutual_tls_writes_and_reads() {
    let setup = setup().await;
    let config = config(setup, setup.server.url("tls", None), "wal")
        .user("wal")
        .password(WAL_PASSWORD);
    assert_no_secret(&format!("{config:?}"), &[WAL_PASSWORD]);
    let wal = NatsWal::open(config).await.unwrap();
    write_and_read_back(&wal, 1).await;
    let statistics = wal.get_statistics().await.unwrap();
    assert!(
        statistics.contains(&setup.server.url("tls", None)),
        "{statistics}"
    );
    assert_no_secret(&statistics, &[WAL_PASSWORD]);
    wal.close_gracefully().await.unwrap();
}

/// Proves that credentials in a server URL (`tls://user:password@host`)
/// are used, and that the URL is shown without them in `Debug`, the
/// statistics and the error of a refused password.
#[tokio::test]
async fn credentials_in_the_url_are_used_and_never_shown() {
    let setup = setup().await;
    let url = setup
        .server
        .url("tls", Some(&format!("wal:{WAL_PASSWORD}")));
    let config = config(setup, url, "wal");
    assert_no_secret(&format!("{config:?}"), &[WAL_PASSWORD]);
    let wal = NatsWal::open(config).await.unwrap();
    write_and_read_back(&wal, 2).await;
    assert_no_secret(&wal.get_statistics().await.unwrap(), &[WAL_PASSWORD]);
    wal.close_gracefully().await.unwrap();

    let wrong = setup.server.url("tls", Some("wal:url-wrong-pw"));
    let (err, _) = refusal(config_for_url(setup, wrong)).await;
    let text = err.to_string();
    assert!(text.contains("authorization violation"), "{text}");
    assert!(text.contains(&setup.server.url("tls", None)), "{text}");
    assert_no_secret(&text, &["url-wrong-pw"]);
}

fn config_for_url(setup: &Setup, url: String) -> NatsWalConfig {
    config(setup, url, "wal")
}

/// Proves that an nkey user, its seed in `nkey_seed_file`, writes and
/// reads.
#[tokio::test]
async fn nkey_user_writes_and_reads() {
    let setup = setup().await;
    let config =
        config(setup, setup.server.url("tls", None), "nk").nkey_seed_file(&setup.nkey_seed_file);
    let wal = NatsWal::open(config).await.unwrap();
    write_and_read_back(&wal, 1).await;
    wal.close_gracefully().await.unwrap();
}

/// Proves that a wrong password ends `open` at once (within the request
/// timeout, no reconnect loop) with one line naming the cause and the
/// server, and not the password.
#[tokio::test]
async fn a_wrong_password_is_refused_at_once() {
    let setup = setup().await;
    let config = config(setup, setup.server.url("tls", None), "wal")
        .user("wal")
        .password("not-the-password");
    let (err, took) = refusal(config).await;
    let text = err.to_string();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(took < REQUEST_TIMEOUT, "took {took:?}: {text}");
    assert!(
        text.contains("authorization violation") && text.contains("user and password"),
        "{text}"
    );
    assert!(!text.contains('\n'), "{text}");
    assert_no_secret(&text, &["not-the-password"]);
}

/// Proves that a server certificate from a CA the client does not trust
/// (no `tls_ca_file`) ends `open` at once with the TLS cause and a hint
/// naming `tls_ca_file`, and that a verifying server refuses a client
/// without a certificate.
#[tokio::test]
async fn untrusted_certificates_are_refused_at_once() {
    let setup = setup().await;
    let url = setup.server.url("tls", None);
    let untrusted = NatsWalConfig::new([url.clone()])
        .user("wal")
        .password(WAL_PASSWORD)
        .tls_cert_file(&setup.pki.client_cert)
        .tls_key_file(&setup.pki.client_key)
        .request_timeout(REQUEST_TIMEOUT);
    let (err, took) = refusal(untrusted).await;
    let text = err.to_string();
    assert!(took < REQUEST_TIMEOUT, "took {took:?}: {text}");
    assert!(
        text.contains("UnknownIssuer") && text.contains("tls_ca_file"),
        "{text}"
    );

    let no_client_cert = NatsWalConfig::new([url])
        .user("wal")
        .password(WAL_PASSWORD)
        .tls_ca_file(&setup.pki.ca)
        .request_timeout(REQUEST_TIMEOUT);
    let (err, took) = refusal(no_client_cert).await;
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(took < REQUEST_TIMEOUT, "took {took:?}: {err}");
    let text = err.to_string();
    assert!(
        text.contains("CertificateRequired") && text.contains("tls_cert_file"),
        "{text}"
    );
}

/// Proves that prefixes isolate tenants: user `wal` opening prefix
/// `other` is refused at once with the server's permissions violation
/// naming the subject, and with a plain client it can neither publish to,
/// read, delete nor see the replies of `other`'s streams, whose entries
/// stay whole.
#[tokio::test]
async fn a_user_cannot_touch_another_prefix() {
    let setup = setup().await;
    let url = setup.server.url("tls", None);
    let owner = config(setup, url.clone(), "other")
        .user("other")
        .password(OTHER_PASSWORD);
    let wal = NatsWal::open(owner.clone()).await.unwrap();
    write_and_read_back(&wal, 1).await;
    wal.close_gracefully().await.unwrap();

    let intruder = config(setup, url.clone(), "other")
        .user("wal")
        .password(WAL_PASSWORD);
    let (err, took) = refusal(intruder).await;
    let text = err.to_string();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    assert!(took < REQUEST_TIMEOUT, "took {took:?}: {text}");
    assert!(
        text.contains("Permissions Violation") && text.contains("other_s0"),
        "{text}"
    );

    let (events, mut violations) = tokio::sync::mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::new()
        .user_and_password("wal".into(), WAL_PASSWORD.into())
        .add_root_certificates(setup.pki.ca.clone())
        .add_client_certificate(setup.pki.client_cert.clone(), setup.pki.client_key.clone())
        .custom_inbox_prefix("_INBOX.wal")
        .request_timeout(Some(Duration::from_millis(500)))
        .event_callback(move |event| {
            let _ = events.send(event.to_string());
            async {}
        })
        .connect(url)
        .await
        .unwrap();
    let mut expect_violation = async |subject: &str| {
        let wanted = format!("\"{subject}\"");
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        while let Ok(Some(event)) =
            tokio::time::timeout_at(deadline.into(), violations.recv()).await
        {
            if event.contains("Permissions Violation") && event.contains(&wanted) {
                return;
            }
        }
        panic!("no permissions violation for {subject}");
    };
    let js = async_nats::jetstream::ContextBuilder::new()
        .timeout(Duration::from_millis(500))
        .build(client.clone());
    let acked = match js.publish("other.1.1.t.1", "intruder".into()).await {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    };
    assert!(!acked, "a publish to another prefix was stored");
    expect_violation("other.1.1.t.1").await;
    assert!(js.delete_stream("other_s1").await.is_err());
    expect_violation("$JS.API.STREAM.DELETE.other_s1").await;
    let direct = client
        .request("$JS.API.DIRECT.GET.other_s1", r#"{"seq":1}"#.into())
        .await;
    assert!(direct.is_err(), "a direct get of another prefix answered");
    expect_violation("$JS.API.DIRECT.GET.other_s1").await;
    let _spy = client.subscribe("_INBOX.other.>").await.unwrap();
    expect_violation("_INBOX.other.>").await;

    let wal = NatsWal::open(owner).await.unwrap();
    let location = WalLocation::new(1, 1);
    assert_eq!(wal.sequence_num(location).await.unwrap(), 2);
    write_and_read_back(&wal, 1).await;
    wal.close_gracefully().await.unwrap();
}
