//! Publishing a region's messages: each one fenced by the region's last
//! stream position (`Nats-Expected-Last-Subject-Sequence` over the
//! region's subjects), one message or an atomic batch of several
//! (nats-server 2.12's atomic batch publish) per commit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::header::{
    NATS_BATCH_COMMIT, NATS_BATCH_ID, NATS_BATCH_SEQUENCE, NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
};
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::publish::PublishAck;
use bytes::Bytes;
use segwal::SequenceNumber;

use crate::codec::NEXT_HEADER;
use crate::wal::Inner;

/// The header naming the subjects `Nats-Expected-Last-Subject-Sequence`
/// checks (nats-server 2.11+).
const EXPECTED_SUBJECT_HEADER: &str = "Nats-Expected-Last-Subject-Sequence-Subject";

/// One message to publish.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub(crate) subject: String,
    pub(crate) body: Bytes,
    /// The region's next sequence number once this message is stored
    /// (`Segwal-Next`); `None` only for a fence record.
    pub(crate) next: Option<SequenceNumber>,
}

/// The check every message of a region carries: the last stream sequence
/// among `subjects` must be `last` (0: none).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fence<'a> {
    pub(crate) subjects: &'a str,
    pub(crate) last: u64,
}

/// How a publish failed.
#[derive(Debug)]
pub(crate) enum PublishFailure {
    TimedOut,
    Failed(PublishError),
}

impl PublishFailure {
    /// Whether the server refused the message because the region's
    /// position was not the expected one.
    pub(crate) fn is_wrong_last_sequence(&self) -> bool {
        matches!(self, PublishFailure::Failed(e) if e.kind() == PublishErrorKind::WrongLastSequence)
    }
}

impl std::fmt::Display for PublishFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishFailure::TimedOut => write!(f, "no acknowledgement in time"),
            PublishFailure::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// Batch ids unique within this process.
static BATCH_IDS: AtomicU64 = AtomicU64::new(0);

fn headers(message: &Outgoing, fence: Option<Fence<'_>>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(fence) = fence {
        headers.insert(
            NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            fence.last.to_string().as_str(),
        );
        headers.insert(EXPECTED_SUBJECT_HEADER, fence.subjects);
    }
    if let Some(next) = message.next {
        headers.insert(NEXT_HEADER, next.to_string().as_str());
    }
    headers
}

impl Inner {
    /// Publishes `messages` (at least one) as one commit: a single message,
    /// or an atomic batch whose first message carries the fence, so that
    /// all are stored, at consecutive stream sequences, or none. Returns
    /// the acknowledgement (the stream sequence of the last message).
    pub(crate) async fn publish_commit(
        &self,
        messages: &[Outgoing],
        fence: Option<Fence<'_>>,
        timeout: Duration,
    ) -> Result<PublishAck, PublishFailure> {
        let (last, rest) = messages.split_last().expect("a commit holds a message");
        if rest.is_empty() {
            let ack = self
                .js
                .publish_with_headers(
                    last.subject.clone(),
                    headers(last, fence),
                    last.body.clone(),
                )
                .await
                .map_err(PublishFailure::Failed)?;
            return await_ack(ack, timeout).await;
        }
        let id = format!(
            "{}-{}",
            std::process::id(),
            BATCH_IDS.fetch_add(1, Ordering::Relaxed)
        );
        for (i, message) in rest.iter().enumerate() {
            let mut headers = headers(message, if i == 0 { fence } else { None });
            headers.insert(NATS_BATCH_ID, id.as_str());
            headers.insert(NATS_BATCH_SEQUENCE, (i + 1).to_string().as_str());
            // No reply: the server stages it and answers only the commit;
            // a message lost on the way makes the commit fail whole.
            self.client
                .publish_with_headers(message.subject.clone(), headers, message.body.clone())
                .await
                .map_err(|e| {
                    PublishFailure::Failed(PublishError::with_source(PublishErrorKind::Other, e))
                })?;
        }
        let mut headers = headers(last, None);
        headers.insert(NATS_BATCH_ID, id.as_str());
        headers.insert(NATS_BATCH_SEQUENCE, messages.len().to_string().as_str());
        headers.insert(NATS_BATCH_COMMIT, "1");
        let ack = self
            .js
            .publish_with_headers(last.subject.clone(), headers, last.body.clone())
            .await
            .map_err(PublishFailure::Failed)?;
        await_ack(ack, timeout).await
    }
}

async fn await_ack(
    ack: async_nats::jetstream::context::PublishAckFuture,
    timeout: Duration,
) -> Result<PublishAck, PublishFailure> {
    let result = tokio::time::timeout(timeout, ack)
        .await
        .map_err(|_| PublishFailure::TimedOut)?;
    result.map_err(|e| match e.kind() {
        PublishErrorKind::TimedOut => PublishFailure::TimedOut,
        _ => PublishFailure::Failed(e),
    })
}
