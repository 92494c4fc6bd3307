//! How a [`NatsWalConfig`] authenticates and encrypts: the settings (user
//! and password, token, nkey seed, `.creds` file, TLS files), credentials
//! found in server URLs, the checks of their combinations, and
//! [`redact_url`], which every URL shown to a person passes through.
//! `connect.rs` hands the result to async-nats, which speaks the protocol.

use std::path::{Path, PathBuf};

use snafu::ResultExt;

use crate::config::NatsWalConfig;
use crate::error::{Error, InvalidConfigSnafu, InvalidSecretFileSnafu, ReadSecretFileSnafu};

/// What stands in for a secret in `Debug` output.
pub(crate) const REDACTED: &str = "<redacted>";

/// The authentication and TLS settings of a [`NatsWalConfig`]. Files are
/// read when the WAL opens, never kept.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Security {
    pub(crate) user: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) token: Option<String>,
    pub(crate) nkey_seed_file: Option<PathBuf>,
    pub(crate) credentials_file: Option<PathBuf>,
    pub(crate) tls_ca_file: Option<PathBuf>,
    pub(crate) tls_cert_file: Option<PathBuf>,
    pub(crate) tls_key_file: Option<PathBuf>,
    pub(crate) tls_required: bool,
}

/// How the client proves who it is, once the settings and the URLs are
/// reconciled.
#[derive(PartialEq, Eq)]
pub(crate) enum Auth {
    /// No credentials (a server without authentication, or mutual TLS
    /// mapping the certificate to a user).
    None,
    UserPassword {
        user: String,
        password: String,
    },
    Token(String),
    /// An nkey seed, read from `nkey_seed_file` and checked.
    NkeySeed(String),
    /// A `.creds` file (a user JWT and its nkey seed).
    Credentials(PathBuf),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::UserPassword { user, .. } => write!(f, "UserPassword({user:?}, {REDACTED})"),
            Auth::Token(_) => write!(f, "Token({REDACTED})"),
            Auth::NkeySeed(_) => write!(f, "NkeySeed({REDACTED})"),
            Auth::Credentials(path) => write!(f, "Credentials({})", path.display()),
        }
    }
}

impl NatsWalConfig {
    /// The user to authenticate as, with [`password`](Self::password)
    /// (server config `authorization { users: [{user, password}] }`).
    /// Credentials in a server URL (`nats://user:password@host:4222`) work
    /// too.
    pub fn user(mut self, user: impl Into<String>) -> NatsWalConfig {
        self.security.user = Some(user.into());
        self
    }

    /// The password of [`user`](Self::user). Never shown: `Debug` prints
    /// it redacted.
    pub fn password(mut self, password: impl Into<String>) -> NatsWalConfig {
        self.security.password = Some(password.into());
        self
    }

    /// A token (server config `authorization { token }`); also accepted as
    /// `nats://TOKEN@host:4222`. Never shown.
    pub fn token(mut self, token: impl Into<String>) -> NatsWalConfig {
        self.security.token = Some(token.into());
        self
    }

    /// A file holding an nkey user's seed (`SU...`): the client signs the
    /// server's challenge with it. Read when the WAL opens.
    pub fn nkey_seed_file(mut self, path: impl Into<PathBuf>) -> NatsWalConfig {
        self.security.nkey_seed_file = Some(path.into());
        self
    }

    /// A `.creds` file (a user JWT and its nkey seed) for servers in
    /// operator mode (decentralised authentication). Read when the WAL
    /// opens.
    pub fn credentials_file(mut self, path: impl Into<PathBuf>) -> NatsWalConfig {
        self.security.credentials_file = Some(path.into());
        self
    }

    /// A PEM file of the CA certificates that signed the servers'
    /// certificates (a private CA), trusted besides the system's roots.
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> NatsWalConfig {
        self.security.tls_ca_file = Some(path.into());
        self
    }

    /// The client's certificate (PEM) for servers that verify clients
    /// (mutual TLS); needs [`tls_key_file`](Self::tls_key_file).
    pub fn tls_cert_file(mut self, path: impl Into<PathBuf>) -> NatsWalConfig {
        self.security.tls_cert_file = Some(path.into());
        self
    }

    /// The private key (PEM) of [`tls_cert_file`](Self::tls_cert_file).
    pub fn tls_key_file(mut self, path: impl Into<PathBuf>) -> NatsWalConfig {
        self.security.tls_key_file = Some(path.into());
        self
    }

    /// Refuse to talk to a server without TLS. `tls://` URLs and the TLS
    /// files imply it.
    pub fn tls_required(mut self, required: bool) -> NatsWalConfig {
        self.security.tls_required = required;
        self
    }
}

impl Security {
    /// Whether TLS is asked for by these settings (a `tls://` URL also
    /// asks for it).
    pub(crate) fn wants_tls(&self) -> bool {
        self.tls_required
            || self.tls_ca_file.is_some()
            || self.tls_cert_file.is_some()
            || self.tls_key_file.is_some()
    }

    /// Refuses combinations that cannot work, naming the keys.
    pub(crate) fn check(&self) -> Result<(), Error> {
        let fail = |reason: &str| InvalidConfigSnafu { reason }.fail();
        match (&self.user, &self.password) {
            (None, Some(_)) => return fail("password is set without user"),
            (Some(_), None) => return fail("user is set without password"),
            _ => {}
        }
        let methods: Vec<&str> = [
            ("user and password", self.user.is_some()),
            ("token", self.token.is_some()),
            ("nkey_seed_file", self.nkey_seed_file.is_some()),
            ("credentials_file", self.credentials_file.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        if methods.len() > 1 {
            return fail(&format!(
                "{} are set: a client authenticates one way, set only one",
                methods.join(" and ")
            ));
        }
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(_), None) => fail("tls_cert_file is set without tls_key_file"),
            (None, Some(_)) => fail("tls_key_file is set without tls_cert_file"),
            _ => Ok(()),
        }
    }

    /// The credentials to present: those of the settings, or those found in
    /// the server URLs (which must agree, and may not be given both ways).
    /// Reads and checks `nkey_seed_file`; checks that the other files are
    /// there.
    pub(crate) fn auth(&self, from_urls: Option<Auth>) -> Result<Auth, Error> {
        for (key, path) in [
            ("credentials_file", &self.credentials_file),
            ("tls_ca_file", &self.tls_ca_file),
            ("tls_cert_file", &self.tls_cert_file),
            ("tls_key_file", &self.tls_key_file),
        ] {
            if let Some(path) = path {
                std::fs::metadata(path).context(ReadSecretFileSnafu { key, path })?;
            }
        }
        let configured = if let (Some(user), Some(password)) = (&self.user, &self.password) {
            Auth::UserPassword {
                user: user.clone(),
                password: password.clone(),
            }
        } else if let Some(token) = &self.token {
            Auth::Token(token.clone())
        } else if let Some(path) = &self.nkey_seed_file {
            Auth::NkeySeed(read_seed(path)?)
        } else if let Some(path) = &self.credentials_file {
            Auth::Credentials(path.clone())
        } else {
            Auth::None
        };
        match (configured, from_urls) {
            (configured, None) => Ok(configured),
            (Auth::None, Some(from_urls)) => Ok(from_urls),
            (_, Some(_)) => InvalidConfigSnafu {
                reason: "a server URL carries credentials and the configuration sets them too: \
                         give them one way",
            }
            .fail(),
        }
    }
}

/// The seed in an nkey seed file (its first line starting with `S`, so a
/// file with comments works), checked to be a user's seed.
fn read_seed(path: &Path) -> Result<String, Error> {
    let key = "nkey_seed_file";
    let text = std::fs::read_to_string(path).context(ReadSecretFileSnafu { key, path })?;
    let seed = text
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with('S'))
        .unwrap_or_default();
    match nkeys::KeyPair::from_seed(seed) {
        Ok(pair) if pair.public_key().starts_with('U') => Ok(seed.to_owned()),
        Ok(_) => InvalidSecretFileSnafu {
            key,
            path,
            reason: "the seed is not a user's (SU...)",
        }
        .fail(),
        Err(_) => InvalidSecretFileSnafu {
            key,
            path,
            reason: "no valid nkey seed found (a line starting with SU)",
        }
        .fail(),
    }
}

/// `url` without user information: `nats://user:secret@host:4222` becomes
/// `nats://host:4222`, `nats://token@host` becomes `nats://host`. What every
/// error, log line and statistic shows of a server; a URL without user
/// information comes back unchanged.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(at) => url.split_at(at + 3),
        None => ("", url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// The servers' URLs without user information, and the credentials they
/// carried (`user:password@` or `token@`, percent-decoded). URLs that carry
/// different credentials are refused: a client authenticates one way.
pub(crate) fn split_url_credentials(
    servers: &[String],
) -> Result<(Vec<String>, Option<Auth>), Error> {
    // The credentials found so far, and the (redacted) URL that carried them.
    let mut found: Option<(Auth, String)> = None;
    let mut urls = Vec::with_capacity(servers.len());
    for server in servers {
        let stripped = redact_url(server);
        if stripped != *server {
            let start = server.find("://").map_or(0, |at| at + 3);
            let info = &server[start..server.len() - (stripped.len() - start)];
            let info = info.strip_suffix('@').unwrap_or(info);
            let auth = match info.split_once(':') {
                Some((user, password)) => Auth::UserPassword {
                    user: percent_decode(user),
                    password: percent_decode(password),
                },
                None => Auth::Token(percent_decode(info)),
            };
            match &found {
                Some((earlier, first)) if *earlier != auth => {
                    return InvalidConfigSnafu {
                        reason: format!(
                            "the server URLs {first} and {stripped} carry different \
                             credentials: a client authenticates one way"
                        ),
                    }
                    .fail();
                }
                Some(_) => {}
                None => found = Some((auth, stripped.clone())),
            }
        }
        urls.push(stripped);
    }
    Ok((urls, found.map(|(auth, _)| auth)))
}

/// `%XX` escapes decoded (URL user information may hold them); anything
/// else as is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves that `redact_url` removes user information (user and
    /// password, or a token) from every form of URL and leaves URLs without
    /// it unchanged.
    #[test]
    fn redact_url_removes_user_information() {
        for (url, shown) in [
            ("nats://wal:s3cret@10.0.0.1:4222", "nats://10.0.0.1:4222"),
            ("tls://t0ken@host", "tls://host"),
            ("wal:p%40ss@host:4222", "host:4222"),
            ("nats://u:p@ss@host:4222/path", "nats://host:4222/path"),
            ("nats://10.0.0.1:4222", "nats://10.0.0.1:4222"),
            ("host:4222", "host:4222"),
            ("nats://host:4222/a@b", "nats://host:4222/a@b"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    /// Proves that credentials in URLs are taken out of them
    /// (percent-decoded: user and password, or a token), that URLs carrying
    /// different credentials are refused, and that credentials given both in
    /// a URL and in the settings are refused.
    #[test]
    fn url_credentials_are_extracted_and_conflicts_refused() {
        let servers = vec![
            "nats://wal:p%40ss@a:4222".to_owned(),
            "nats://b:4222".to_owned(),
        ];
        let (urls, auth) = split_url_credentials(&servers).unwrap();
        assert_eq!(urls, ["nats://a:4222", "nats://b:4222"]);
        assert_eq!(
            auth,
            Some(Auth::UserPassword {
                user: "wal".into(),
                password: "p@ss".into()
            })
        );
        let (_, token) = split_url_credentials(&["tls://t0k@a".to_owned()]).unwrap();
        assert_eq!(token, Some(Auth::Token("t0k".into())));

        let mixed = ["nats://a:x@h1".to_owned(), "nats://a:y@h2".to_owned()];
        let err = split_url_credentials(&mixed).unwrap_err().to_string();
        assert!(
            err.contains("different credentials") && err.contains("nats://h1 and nats://h2"),
            "{err}"
        );
        assert!(!err.contains("a:x"), "{err}");

        let both = Security {
            token: Some("t".into()),
            ..Security::default()
        };
        let err = both.auth(auth).unwrap_err().to_string();
        assert!(err.contains("one way"), "{err}");
    }

    /// Proves that combinations that cannot work are refused naming the
    /// keys: a password without a user (and the reverse), two ways of
    /// authenticating, a certificate without its key (and the reverse).
    #[test]
    fn impossible_combinations_are_refused_by_key() {
        let base = || NatsWalConfig::new(["nats://h:4222"]);
        for (config, named) in [
            (base().password("p"), "password is set without user"),
            (base().user("u"), "user is set without password"),
            (
                base().user("u").password("p").token("t"),
                "user and password and token",
            ),
            (
                base().nkey_seed_file("a").credentials_file("b"),
                "nkey_seed_file and credentials_file",
            ),
            (base().tls_cert_file("c"), "tls_cert_file is set without"),
            (base().tls_key_file("k"), "tls_key_file is set without"),
        ] {
            let err = config.check().unwrap_err().to_string();
            assert!(err.contains(named), "{err}");
            assert!(!err.contains("\"p\"") && !err.contains("\"t\""), "{err}");
        }
        base().user("u").password("p").check().unwrap();
    }

    /// Proves that the files of the settings are read when the WAL opens,
    /// and that a missing file or an nkey seed file without a user seed is
    /// refused naming the key and the file.
    #[test]
    fn missing_and_invalid_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.creds");
        let settings = Security {
            credentials_file: Some(missing.clone()),
            ..Security::default()
        };
        let err = settings.auth(None).unwrap_err().to_string();
        assert!(
            err.contains("credentials_file") && err.contains(&*missing.to_string_lossy()),
            "{err}"
        );

        let seed_file = dir.path().join("user.nk");
        std::fs::write(&seed_file, "not a seed\n").unwrap();
        let settings = Security {
            nkey_seed_file: Some(seed_file.clone()),
            ..Security::default()
        };
        let err = settings.auth(None).unwrap_err().to_string();
        assert!(
            err.contains("nkey_seed_file") && err.contains("user.nk"),
            "{err}"
        );

        let user = nkeys::KeyPair::new_user();
        let seed = user.seed().unwrap();
        std::fs::write(&seed_file, format!("# the WAL's user\n{seed}\n")).unwrap();
        assert_eq!(settings.auth(None).unwrap(), Auth::NkeySeed(seed));
        let account = nkeys::KeyPair::new_account().seed().unwrap();
        std::fs::write(&seed_file, account).unwrap();
        let err = settings.auth(None).unwrap_err().to_string();
        assert!(err.contains("not a user's"), "{err}");
    }
}
