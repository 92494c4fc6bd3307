//! The connection: async-nats's `ConnectOptions` from a
//! [`NatsWalConfig`] (credentials, TLS, the WAL's own inbox prefix), one
//! attempt per server with refusals explained, and the watch on the
//! permission violations the server reports, which would otherwise show
//! only as timeouts.

use std::future::Future;
use std::sync::Arc;

use async_nats::{ConnectErrorKind, ConnectOptions, Event, ServerError};
use tokio::sync::watch;

use crate::config::NatsWalConfig;
use crate::error::Error;
use crate::security::{Auth, split_url_credentials};
use crate::wal::{Inner, boxed};

/// The inbox prefix of a WAL's replies: `_INBOX.{prefix}`, so that a user
/// may be allowed to subscribe to its own prefix's replies
/// (`_INBOX.{prefix}.>`) and no other tenant's.
pub(crate) fn inbox_prefix(prefix: &str) -> String {
    format!("_INBOX.{prefix}")
}

/// The permission violations the server reported on this connection: how
/// many, and the last message (which names the subject). A denied publish
/// or subscription gets no reply, only this asynchronous error.
#[derive(Debug)]
pub(crate) struct Violations {
    last: watch::Sender<(u64, String)>,
}

impl Violations {
    fn new() -> Arc<Violations> {
        Arc::new(Violations {
            last: watch::Sender::new((0, String::new())),
        })
    }

    /// How many have been reported so far.
    pub(crate) fn seen(&self) -> u64 {
        self.last.borrow().0
    }

    /// The last one, if any came after the first `seen`.
    fn since(&self, seen: u64) -> Option<String> {
        let last = self.last.borrow();
        (last.0 > seen).then(|| last.1.clone())
    }

    /// Waits for one after the first `seen`.
    async fn next_after(&self, seen: u64) -> String {
        let mut receiver = self.last.subscribe();
        let last = receiver
            .wait_for(|(count, _)| *count > seen)
            .await
            .map(|last| last.1.clone());
        match last {
            Ok(last) => last,
            // The sender lives as long as `self`: never.
            Err(_) => std::future::pending().await,
        }
    }

    fn observe(&self, event: Event) {
        if let Event::ServerError(ServerError::Other(message)) = event
            && message
                .to_ascii_lowercase()
                .contains("permissions violation")
        {
            log::warn!("NATS refused a request: {message}");
            self.last.send_modify(|(count, last)| {
                *count += 1;
                *last = message;
            });
        }
    }
}

/// Connects to `config`'s servers with its credentials and TLS settings:
/// one attempt per server, no retry, so that a refusal ends `open` at
/// once with its cause.
pub(crate) async fn connect(
    config: &NatsWalConfig,
) -> Result<(async_nats::Client, Arc<Violations>), Error> {
    let servers = config.servers_label();
    let (urls, from_urls) = split_url_credentials(&config.servers)?;
    let security = &config.security;
    let auth = security.auth(from_urls)?;
    let violations = Violations::new();
    let watcher = Arc::clone(&violations);
    let mut options = ConnectOptions::new()
        .name(format!("segwal {}", config.owner))
        .connection_timeout(config.request_timeout)
        .request_timeout(Some(config.request_timeout))
        .custom_inbox_prefix(inbox_prefix(&config.prefix))
        .event_callback(move |event| {
            let watcher = Arc::clone(&watcher);
            async move { watcher.observe(event) }
        });
    options = match auth {
        Auth::None => options,
        Auth::UserPassword { user, password } => options.user_and_password(user, password),
        Auth::Token(token) => options.token(token),
        Auth::NkeySeed(seed) => options.nkey(seed),
        Auth::Credentials(path) => {
            options
                .credentials_file(&path)
                .await
                .map_err(|e| Error::InvalidSecretFile {
                    key: "credentials_file",
                    path,
                    reason: e.to_string(),
                })?
        }
    };
    if let Some(ca) = &security.tls_ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&security.tls_cert_file, &security.tls_key_file) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    if security.wants_tls() {
        options = options.require_tls(true);
    }
    let client = options
        .connect(urls.as_slice())
        .await
        .map_err(|e| Error::Connect {
            servers,
            hint: hint(&e).to_owned(),
            source: boxed(e),
        })?;
    Ok((client, violations))
}

/// What to check after a refused connection, by its kind (a failed
/// certificate check reaches async-nats as an I/O error, so its message
/// is looked at too).
fn hint(err: &async_nats::ConnectError) -> &'static str {
    let text = err.to_string().to_ascii_lowercase();
    let tls = ["certificate", "tls", "handshake", "alert"]
        .iter()
        .any(|word| text.contains(word));
    match err.kind() {
        ConnectErrorKind::AuthorizationViolation => {
            " (the server refused the credentials: check user and password, token, \
             nkey_seed_file or credentials_file)"
        }
        ConnectErrorKind::Authentication => {
            " (the client could not answer the server's challenge: check nkey_seed_file or \
             credentials_file)"
        }
        ConnectErrorKind::Tls | ConnectErrorKind::Io if tls => {
            " (TLS: tls_ca_file must hold the CA that signed the servers' certificates; \
             servers that verify clients need tls_cert_file and tls_key_file)"
        }
        _ => "",
    }
}

impl Inner {
    /// `result`, with a failure replaced by [`Error::PermissionDenied`] if
    /// the server reported a permission violation since `seen`: a denied
    /// request only times out.
    pub(crate) fn explain<T>(
        &self,
        seen: u64,
        operation: &str,
        result: Result<T, Error>,
    ) -> Result<T, Error> {
        let Err(err) = result else {
            return result;
        };
        let unexplained = matches!(
            err,
            Error::Stream { .. }
                | Error::Request { .. }
                | Error::Publish { .. }
                | Error::Timeout { .. }
        );
        match self.violations.since(seen) {
            Some(violation) if unexplained => Err(self.denied(operation, violation)),
            _ => Err(err),
        }
    }

    /// `operation`, explained as in [`Inner::explain`].
    pub(crate) async fn explained<T>(
        &self,
        operation: &str,
        operation_future: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let seen = self.violations.seen();
        let result = operation_future.await;
        self.explain(seen, operation, result)
    }

    /// `operation`, ended as soon as the server reports a permission
    /// violation: for `open`, which has nothing to leave half done.
    pub(crate) async fn refusable<T>(
        &self,
        operation: &str,
        operation_future: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let seen = self.violations.seen();
        tokio::select! {
            result = operation_future => self.explain(seen, operation, result),
            violation = self.violations.next_after(seen) => Err(self.denied(operation, violation)),
        }
    }

    fn denied(&self, operation: &str, violation: String) -> Error {
        Error::PermissionDenied {
            operation: operation.to_owned(),
            violation,
            prefix: self.config.prefix.clone(),
            servers: self.servers.clone(),
        }
    }
}
