//! Secured `nats-server` processes (included by the `secure*` test files
//! beside `support`, so that the crates which share `support` need none of
//! rcgen, nkeys or nats-jwt) for the tests of authentication, TLS
//! and permissions: a private CA with a server and a client certificate
//! (rcgen), nkey users (nkeys), an operator/account/user JWT chain written
//! as a `.creds` file, and a server started once per test file with its
//! config written in a temporary dir.
//!
//! A server shared by a file's tests outlives any one test's runtime, so
//! it runs under a guardian shell that holds a pipe from the test process:
//! when the process ends, however it ends, the pipe closes and the shell
//! stops the server and removes its dir.

#![allow(dead_code)] // Each secure test file uses a part.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use data_encoding::{BASE32HEX_NOPAD, BASE64URL_NOPAD};
use nats_jwt::KeyPair;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer};
use segwal_nats::NatsWalConfig;
use sha2::{Digest, Sha256};

use crate::support::{free_port, nats_server_binary};

/// The admin user of every secured server (no permission limits), with
/// which readiness is probed.
pub(crate) const ADMIN: (&str, &str) = ("admin", "admin-secret-pw");

/// Certificates of a private CA: the CA, a server certificate for
/// 127.0.0.1 and localhost, a client certificate; PEM files in `dir`.
pub(crate) struct Pki {
    pub(crate) ca: PathBuf,
    pub(crate) server_cert: PathBuf,
    pub(crate) server_key: PathBuf,
    pub(crate) client_cert: PathBuf,
    pub(crate) client_key: PathBuf,
}

impl Pki {
    pub(crate) fn create(dir: &Path) -> Pki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "segwal test CA");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |names: Vec<String>, cn: &str| {
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_pem, server_key) = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            "segwal test server",
        );
        let (client_pem, client_key) = leaf(vec!["wal-client".into()], "wal-client");
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        Pki {
            ca: write("ca.pem", &ca_cert.pem()),
            server_cert: write("server.pem", &server_pem),
            server_key: write("server-key.pem", &server_key),
            client_cert: write("client.pem", &client_pem),
            client_key: write("client-key.pem", &client_key),
        }
    }

    /// The `tls` block of a server that requires TLS and verifies clients
    /// against the CA.
    pub(crate) fn server_block(&self) -> String {
        format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: true\n  timeout: 2\n}}\n",
            self.server_cert.display(),
            self.server_key.display(),
            self.ca.display()
        )
    }

    /// `config` with the CA trusted and the client certificate presented.
    pub(crate) fn client(&self, config: NatsWalConfig) -> NatsWalConfig {
        config
            .tls_ca_file(&self.ca)
            .tls_cert_file(&self.client_cert)
            .tls_key_file(&self.client_key)
    }
}

/// The permissions of a WAL user as a server config's user entry needs
/// them: `NatsWalConfig::permissions` for `prefix` and `streams`.
pub(crate) fn permissions_for(prefix: &str, streams: u32) -> String {
    NatsWalConfig::new(["nats://unused:4222"])
        .prefix(prefix)
        .streams(streams)
        .permissions()
        .to_string()
}

/// A JWT signed by `signer` with `claims` (issuer, issue time and id
/// added), as the NATS JWT spec has it: `ed25519-nkey` over the base64url
/// header and claims, the id a hash of the claims.
pub(crate) fn sign_jwt(mut claims: serde_json::Value, signer: &KeyPair) -> String {
    claims["iss"] = signer.public_key().into();
    claims["iat"] = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .into();
    claims["jti"] = "".into();
    let hash = Sha256::digest(serde_json::to_string(&claims).unwrap());
    claims["jti"] = BASE32HEX_NOPAD.encode(&hash).into();
    let header = BASE64URL_NOPAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = BASE64URL_NOPAD.encode(serde_json::to_string(&claims).unwrap().as_bytes());
    let signing_input = format!("{header}.{body}");
    let signature = signer.sign(signing_input.as_bytes()).unwrap();
    format!("{signing_input}.{}", BASE64URL_NOPAD.encode(&signature))
}

/// An operator, a system account and one account with JetStream, for a
/// server in operator mode with a memory resolver.
pub(crate) struct Operator {
    operator: KeyPair,
    system: KeyPair,
    pub(crate) account: KeyPair,
}

impl Operator {
    pub(crate) fn new() -> Operator {
        Operator {
            operator: KeyPair::new_operator(),
            system: KeyPair::new_account(),
            account: KeyPair::new_account(),
        }
    }

    fn account_jwt(&self, account: &KeyPair, name: &str, jetstream: bool) -> String {
        let mut limits = serde_json::json!({
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1
        });
        if jetstream {
            for key in ["mem_storage", "disk_storage", "streams", "consumer"] {
                limits[key] = (-1).into();
            }
        }
        let claims = serde_json::json!({
            "sub": account.public_key(), "name": name,
            "nats": { "type": "account", "version": 2, "limits": limits }
        });
        sign_jwt(claims, &self.operator)
    }

    /// The server config's operator-mode lines.
    pub(crate) fn server_block(&self) -> String {
        let operator = sign_jwt(
            serde_json::json!({
                "sub": self.operator.public_key(), "name": "segwal-test-operator",
                "nats": { "type": "operator", "version": 2 }
            }),
            &self.operator,
        );
        format!(
            "operator: {operator}\nsystem_account: {sys}\nresolver: MEMORY\n\
             resolver_preload: {{\n  {sys}: {sys_jwt}\n  {acc}: {acc_jwt}\n}}\n",
            sys = self.system.public_key(),
            sys_jwt = self.account_jwt(&self.system, "SYS", false),
            acc = self.account.public_key(),
            acc_jwt = self.account_jwt(&self.account, "WAL", true),
        )
    }

    /// A `.creds` file in `dir` for a new user of the account, limited to
    /// the permissions of `prefix` (all subjects if `None`): its JWT made
    /// with nats-jwt and signed by the account.
    pub(crate) fn creds(&self, dir: &Path, name: &str, prefix: Option<(&str, u32)>) -> PathBuf {
        let user = KeyPair::new_user();
        let mut token =
            nats_jwt::Token::new_user(self.account.public_key(), user.public_key()).name(name);
        if let Some((prefix, streams)) = prefix {
            let permissions = NatsWalConfig::new(["nats://unused:4222"])
                .prefix(prefix)
                .streams(streams)
                .permissions();
            for subject in permissions.publish {
                token = token.allow_publish(subject);
            }
            for subject in permissions.subscribe {
                token = token.allow_subscribe(subject);
            }
        }
        let jwt = token.sign(&self.account);
        let seed = user.seed().unwrap();
        let path = dir.join(format!("{name}.creds"));
        std::fs::write(
            &path,
            format!(
                "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
                 ************************* IMPORTANT *************************\n\
                 NKEY Seed printed below can be used to sign and prove identity.\n\n\
                 -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
            ),
        )
        .unwrap();
        path
    }
}

/// A secured nats-server, started once per test file and stopped when the
/// test process ends.
pub(crate) struct SecureServer {
    pub(crate) port: u16,
    /// Where certificates, keys and `.creds` files go.
    pub(crate) dir: PathBuf,
    pub(crate) log: PathBuf,
    _guardian: Mutex<Child>,
}

impl SecureServer {
    /// A dir for a server's files, kept until the guardian removes it.
    pub(crate) fn new_dir() -> PathBuf {
        tempfile::Builder::new()
            .prefix("segwal-secure-")
            .tempdir()
            .unwrap()
            .keep()
    }

    /// Starts nats-server on a free port with JetStream and `body` (its
    /// TLS and authentication blocks) in `dir`, and waits until `probe`'s
    /// client can create and delete a stream.
    pub(crate) async fn start<F, Fut>(dir: PathBuf, body: &str, probe: F) -> SecureServer
    where
        F: Fn(u16) -> Fut,
        Fut: std::future::Future<Output = Result<async_nats::Client, String>>,
    {
        let port = free_port();
        let config = dir.join("server.conf");
        let text = format!(
            "listen: \"127.0.0.1:{port}\"\nserver_name: secure\n\
             jetstream {{\n  store_dir: \"{}\"\n}}\n{body}",
            dir.join("js").display()
        );
        std::fs::write(&config, text).unwrap();
        let log = dir.join("server.log");
        let guardian = Command::new("sh")
            .arg("-c")
            .arg(r#""$0" -c "$1" >>"$2" 2>&1 & pid=$!; read -r _; kill $pid; wait $pid; rm -rf "$3""#)
            .arg(nats_server_binary())
            .arg(&config)
            .arg(&log)
            .arg(&dir)
            .stdin(Stdio::piped())
            .spawn()
            .expect("sh runs");
        let server = SecureServer {
            port,
            dir,
            log,
            _guardian: Mutex::new(guardian),
        };
        server.wait_ready(probe).await;
        server
    }

    async fn wait_ready<F, Fut>(&self, probe: F)
    where
        F: Fn(u16) -> Fut,
        Fut: std::future::Future<Output = Result<async_nats::Client, String>>,
    {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last_error = String::new();
        while Instant::now() < deadline {
            match probe(self.port).await {
                Ok(client) => match probe_stream(client).await {
                    Ok(()) => return,
                    Err(e) => last_error = e,
                },
                Err(e) => last_error = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        panic!("the secured nats-server did not become ready: {last_error}\n{log}");
    }

    /// `nats://host:port` (scheme `scheme`), with `user_info@` if given.
    pub(crate) fn url(&self, scheme: &str, user_info: Option<&str>) -> String {
        match user_info {
            Some(info) => format!("{scheme}://{info}@127.0.0.1:{}", self.port),
            None => format!("{scheme}://127.0.0.1:{}", self.port),
        }
    }

    /// Writes `text` to file `name` in the server's dir.
    pub(crate) fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(text.as_bytes()).unwrap();
        path
    }
}

async fn probe_stream(client: async_nats::Client) -> Result<(), String> {
    let js = async_nats::jetstream::new(client);
    let name = format!("PROBE_{}", std::process::id());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![format!("probe.{}", std::process::id())],
        ..Default::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    js.delete_stream(&name).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Writes two entries to region `region` table 1 of `wal` and reads them
/// back: the proof that a connection can write and read.
pub(crate) async fn write_and_read_back(wal: &segwal_nats::NatsWal, region: u64) {
    use segwal::{ReadBoundary, ReadContext, ReadRequest, WalLocation, WalManager};
    let location = WalLocation::new(region, 1);
    let last = segwal_conformance::write(wal, location, &["first", "second"]).await;
    let req = ReadRequest {
        location,
        start: ReadBoundary::Min,
        end: ReadBoundary::Max,
    };
    let iter = wal.read_batch(&ReadContext::default(), &req).await.unwrap();
    let read = segwal_conformance::drain(iter, ReadContext::default().batch_size).await;
    let payloads: Vec<&str> = read.iter().map(|(_, _, p)| p.as_str()).collect();
    assert_eq!(&payloads[payloads.len() - 2..], ["first", "second"]);
    assert_eq!(read.last().map(|(_, seq, _)| *seq), Some(last));
}

/// Asserts that `text` contains none of `secrets`.
pub(crate) fn assert_no_secret(text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!text.contains(secret), "a secret is shown: {text}");
    }
}
