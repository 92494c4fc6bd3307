//! Reading messages with JetStream's direct get API (nats-server 2.11+),
//! and the retry policy every read shares.
//!
//! A batch direct get asks one replica of a stream for up to `batch`
//! messages matching a subject filter from a stream sequence on; the
//! replica answers with the messages and an end-of-batch status. Any
//! replica that is nearly caught up answers, so an answer may be stale:
//! the callers pass the stream sequence they must see (a position this
//! instance had acknowledged) and [`Fetched::reached`] tells whether the
//! answer covers it. A replica's store is always a prefix of the stream,
//! so an answer that reaches a position holds every message before it.

use std::time::Duration;

use async_nats::{HeaderMap, StatusCode};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::time::Instant;

use crate::error::ClientError;

/// The first pause between attempts of a read that failed transiently;
/// each further pause doubles, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(25);
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// Attempts of one read request before it fails, whatever the deadline.
pub(crate) const MAX_ATTEMPTS: u32 = 40;

/// One message of a stream, as a direct get returns it.
#[derive(Debug, Clone)]
pub(crate) struct RawMessage {
    pub(crate) sequence: u64,
    pub(crate) subject: String,
    pub(crate) payload: Bytes,
}

/// What one batch request returned.
#[derive(Debug, Default)]
pub(crate) struct Fetched {
    /// The messages, in stream order.
    pub(crate) messages: Vec<RawMessage>,
    /// Messages matching the filter after the last one returned, as the
    /// answering replica counts them (0 when it had no more).
    pub(crate) pending: u64,
}

/// Why an attempt failed: worth another try, or not.
#[derive(Debug)]
pub(crate) enum Failure {
    /// No responder (503), a timeout, a lost connection, a stale replica:
    /// the cluster is electing a leader or catching up.
    Transient(ClientError),
    /// Anything else: a malformed answer, a refused request.
    Fatal(ClientError),
}

/// Runs `attempt` until it succeeds, fails fatally, `MAX_ATTEMPTS` attempts
/// failed or `deadline` passes, pausing between attempts with a doubling
/// backoff. `what` names the read for the log.
pub(crate) async fn retry<T, F, Fut>(
    what: impl Fn() -> String,
    deadline: Instant,
    mut attempt: F,
) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    let mut backoff = FIRST_BACKOFF;
    for n in 1.. {
        let error = match tokio::time::timeout_at(deadline, attempt()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(Failure::Fatal(e))) => return Err(e),
            Ok(Err(Failure::Transient(e))) => e,
            Err(_) => "no answer before the deadline".into(),
        };
        let now = Instant::now();
        if n >= MAX_ATTEMPTS || now + backoff >= deadline {
            return Err(format!("{error} (after {n} attempts)").into());
        }
        log::debug!("{}: attempt {n} failed, retrying: {error}", what());
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    unreachable!("the loop returns")
}

/// A batch direct get: up to `batch` messages of stream `stream` matching
/// `filter` (wildcards allowed) at stream sequence `from` or later. One
/// attempt; a missing responder or an error status is [`Failure::Transient`].
pub(crate) async fn batch(
    client: &async_nats::Client,
    stream: &str,
    filter: &str,
    from: u64,
    batch: usize,
) -> Result<Fetched, Failure> {
    let body = format!(
        r#"{{"seq":{},"next_by_subj":"{filter}","batch":{}}}"#,
        from.max(1),
        batch.max(1)
    );
    let subject = format!("$JS.API.DIRECT.GET.{stream}");
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| Failure::Transient(Box::new(e)))?;
    client
        .publish_with_reply(subject, inbox, body.into())
        .await
        .map_err(|e| Failure::Transient(Box::new(e)))?;
    let mut fetched = Fetched::default();
    let result = loop {
        let Some(reply) = replies.next().await else {
            break Err(Failure::Transient(
                "the connection closed during a direct get".into(),
            ));
        };
        match reply.status {
            None => match message_of(reply) {
                Ok(message) => fetched.messages.push(message),
                Err(e) => break Err(Failure::Fatal(e)),
            },
            // End of batch: how many more match, as this replica counts.
            Some(status) if status == 204 => {
                fetched.pending =
                    header_u64(reply.headers.as_ref(), "Nats-Num-Pending").unwrap_or(0);
                break Ok(fetched);
            }
            // Nothing matches from `from` on (at this replica).
            Some(status) if status == StatusCode::NOT_FOUND && fetched.messages.is_empty() => {
                break Ok(fetched);
            }
            Some(status) => {
                let description = reply.description.unwrap_or_default();
                break Err(Failure::Transient(
                    format!("direct get from stream {stream} answered {status} {description}")
                        .into(),
                ));
            }
        }
    };
    let _ = replies.unsubscribe().await;
    result
}

/// A stored message from a direct get reply's headers and body.
fn message_of(reply: async_nats::Message) -> Result<RawMessage, ClientError> {
    let headers = reply.headers.unwrap_or_default();
    let sequence = header_u64(Some(&headers), "Nats-Sequence")
        .ok_or("a direct get reply without Nats-Sequence")?;
    let subject = headers
        .get("Nats-Subject")
        .ok_or("a direct get reply without Nats-Subject")?
        .as_str()
        .to_owned();
    Ok(RawMessage {
        sequence,
        subject,
        payload: reply.payload,
    })
}

pub(crate) fn header_u64(headers: Option<&HeaderMap>, name: &str) -> Option<u64> {
    headers?.get(name)?.as_str().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves that the retry loop retries transient failures with a
    /// backoff, stops at the first fatal one, and gives up after the
    /// attempt limit naming how many were made.
    #[tokio::test(start_paused = true)]
    async fn retries_transient_failures_and_stops_at_fatal_ones() {
        let deadline = Instant::now() + Duration::from_secs(3600);
        let mut calls = 0;
        let value = retry(String::new, deadline, || {
            calls += 1;
            let n = calls;
            async move {
                if n < 4 {
                    Err(Failure::Transient("503".into()))
                } else {
                    Ok(n)
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(value, 4);

        let mut calls = 0;
        let err = retry(String::new, deadline, || {
            calls += 1;
            async { Err::<(), _>(Failure::Fatal("refused".into())) }
        })
        .await
        .unwrap_err();
        assert_eq!((calls, err.to_string().as_str()), (1, "refused"));

        let mut calls = 0;
        let err = retry(String::new, deadline, || {
            calls += 1;
            async { Err::<(), _>(Failure::Transient("503".into())) }
        })
        .await
        .unwrap_err();
        assert_eq!(calls, MAX_ATTEMPTS);
        assert!(err.to_string().contains("after 40 attempts"), "{err}");
    }

    /// Proves that a retry stops at its deadline rather than after the
    /// attempt limit.
    #[tokio::test(start_paused = true)]
    async fn a_retry_stops_at_its_deadline() {
        let deadline = Instant::now() + Duration::from_millis(100);
        let mut calls = 0;
        let err = retry(String::new, deadline, || {
            calls += 1;
            async { Err::<(), _>(Failure::Transient("503".into())) }
        })
        .await
        .unwrap_err();
        assert!(calls < 6, "{calls}");
        assert!(err.to_string().contains("503"), "{err}");
    }
}
