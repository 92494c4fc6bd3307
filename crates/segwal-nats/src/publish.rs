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
use async_nats::jetstream::ErrorCode;
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

    /// Whether a clustered stream's leader refused the message without
    /// comparing positions, because a fenced message on the same subjects
    /// was still in process (JetStream error 10164). Nothing was stored.
    /// The message in process may be this owner's previous commit: the
    /// leader clears its mark only after sending that commit's
    /// acknowledgement, so the next commit can arrive first.
    fn is_in_process(&self) -> bool {
        let PublishFailure::Failed(e) = self else {
            return false;
        };
        std::error::Error::source(e)
            .and_then(|source| source.downcast_ref::<async_nats::jetstream::Error>())
            .is_some_and(|js| js.error_code() == ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT)
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

/// The first pause before a commit refused as in process is sent again;
/// each further pause doubles, up to [`MAX_RESEND_PAUSE`].
const FIRST_RESEND_PAUSE: Duration = Duration::from_millis(1);
const MAX_RESEND_PAUSE: Duration = Duration::from_millis(50);
/// The longest a commit and its resends may take, whatever the timeout
/// (which may be `Duration::MAX`).
const MAX_PUBLISH_WAIT: Duration = Duration::from_secs(3600);

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
    ///
    /// A commit the leader refused only because the region's previous
    /// fenced message was still in process (nothing stored, see
    /// [`PublishFailure::is_in_process`]) is sent again after a short
    /// pause, within `timeout`: the fence makes a resend safe, since at
    /// most one message fenced at one position is ever stored.
    pub(crate) async fn publish_commit(
        &self,
        messages: &[Outgoing],
        fence: Option<Fence<'_>>,
        timeout: Duration,
    ) -> Result<PublishAck, PublishFailure> {
        let deadline = tokio::time::Instant::now() + timeout.min(MAX_PUBLISH_WAIT);
        let mut pause = FIRST_RESEND_PAUSE;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.publish_once(messages, fence, left).await {
                Err(failure) if failure.is_in_process() && left > pause => {
                    log::debug!("a commit met the region's previous one in process; resending");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_RESEND_PAUSE);
                }
                result => return result,
            }
        }
    }

    async fn publish_once(
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
