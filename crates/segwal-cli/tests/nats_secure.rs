//! Drives `segwal bench --backend nats` against a nats-server whose users
//! authenticate with a password (started once for this file): the
//! credentials from a `--nats-config` file and from a server URL work and
//! are never printed, and a wrong password ends the command at once with
//! one line and exit code 2.

#[path = "support/mod.rs"]
mod cli;
#[path = "../../segwal-nats/tests/support/secure.rs"]
mod secure;
#[path = "../../segwal-nats/tests/support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use cli::{segwal, text};
use secure::{SecureServer, assert_no_secret};
use tokio::sync::OnceCell;

const USER: &str = "wal";
const PASSWORD: &str = "cli-pa55word-secret";
/// The request timeout the configs set: a refusal must come well within.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(4);

static SERVER: OnceCell<SecureServer> = OnceCell::const_new();

async fn server() -> &'static SecureServer {
    SERVER
        .get_or_init(|| async {
            let body = format!(
                "authorization {{\n  users: [\n    {{user: {USER}, password: \"{PASSWORD}\"}}\n  ]\n}}\n"
            );
            SecureServer::start(SecureServer::new_dir(), &body, |port| async move {
                async_nats::ConnectOptions::with_user_and_password(USER.into(), PASSWORD.into())
                    .connect(format!("nats://127.0.0.1:{port}"))
                    .await
                    .map_err(|e| e.to_string())
            })
            .await
        })
        .await
}

/// A `NatsWalConfig` TOML file for the server, prefix `prefix`, with
/// `password`.
fn config_file(server: &SecureServer, prefix: &str, password: &str) -> PathBuf {
    server.file(
        &format!("{prefix}.toml"),
        &format!(
            "servers = [\"{}\"]\nprefix = \"{prefix}\"\nowner = \"{prefix}-node\"\n\
             request_timeout = \"4s\"\nuser = \"{USER}\"\npassword = \"{password}\"\n",
            server.url("nats", None)
        ),
    )
}

/// A small bench on the server with `args` added.
fn bench(args: &[&str]) -> Output {
    let mut all = vec![
        "bench",
        "--backend",
        "nats",
        "--total-bytes",
        "64KiB",
        "--regions",
        "4",
        "--tables",
        "1",
        "--writers",
        "2",
    ];
    all.extend_from_slice(args);
    segwal(&all)
}

/// Proves that `--nats-config` gives the bench its credentials (it writes,
/// replays and deletes as that user) and that nothing it prints, banner,
/// table or progress, holds the password.
#[tokio::test]
async fn the_bench_takes_its_credentials_from_a_config_file_and_never_prints_them() {
    let server = server().await;
    let file = config_file(server, "clifile", PASSWORD);
    let out = bench(&["--nats-config", file.to_str().unwrap()]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&server.url("nats", None)),
        "the banner names the server: {stderr}"
    );
    assert_no_secret(&stdout, &[PASSWORD]);
    assert_no_secret(&stderr, &[PASSWORD]);
}

/// Proves that credentials in a `--servers` URL are used and that the URL
/// is printed without them.
#[tokio::test]
async fn the_bench_uses_credentials_in_a_server_url_and_shows_the_url_without_them() {
    let server = server().await;
    let url = server.url("nats", Some(&format!("{USER}:{PASSWORD}")));
    let out = bench(&["--servers", &url]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(&server.url("nats", None)), "{stderr}");
    assert_no_secret(&stdout, &[PASSWORD]);
    assert_no_secret(&stderr, &[PASSWORD]);
}

/// Proves that a wrong password in the file ends the command within the
/// request timeout, with exit code 2 and one line naming the
/// authorization violation, and without either password.
#[tokio::test]
async fn a_wrong_password_ends_the_bench_at_once_with_one_line_and_exit_2() {
    let server = server().await;
    let wrong = "wr0ng-cli-password";
    let file = config_file(server, "cliwrong", wrong);
    let started = Instant::now();
    let out = bench(&["--nats-config", file.to_str().unwrap()]);
    let elapsed = started.elapsed();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(elapsed < REQUEST_TIMEOUT, "{elapsed:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("authorization violation"), "{stderr}");
    assert_no_secret(&stderr, &[wrong, PASSWORD]);
    assert_no_secret(&text(&out.stdout), &[wrong, PASSWORD]);
}
