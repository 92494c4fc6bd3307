//! The payload layer: what HoraeDB's engine writes into its WALs, and
//! how it reads it back.
//!
//! An engine hands typed [`Payload`]s to a [`LogBatchEncoder`], which
//! writes each as one entry: a 1-byte value header (the encoding version,
//! [`LOG_VALUE_VERSION`]) and the payload's own bytes. Reading back,
//! [`next_log_entries`](crate::BatchLogIterator::next_log_entries) checks
//! and strips the header and has a [`PayloadDecoder`] turn the rest into
//! the engine's type. The entries are byte-for-byte what HoraeDB's WALs
//! store as values.

use std::fmt::Debug;

use bytes::{Buf, BufMut, BytesMut};
use snafu::IntoError;

use crate::error::{EncodingSnafu, Error, Result, ShortBufferSnafu};
use crate::types::{LogWriteBatch, LogWriteEntry, TableId, WalLocation};

/// The value header's version byte: the only encoding there is.
pub const LOG_VALUE_VERSION: u8 = 0;

/// Something an engine writes to the WAL: it knows its encoded size and
/// how to encode itself.
pub trait Payload: Send + Sync + Debug {
    /// What encoding can fail with.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The size of the encoded payload, in bytes (a hint for the buffer).
    fn encode_size(&self) -> usize;

    /// Appends the encoded payload to `buf`.
    fn encode_to<B: BufMut>(&self, buf: &mut B) -> Result<(), Self::Error>;
}

/// What a [`PayloadDecoder`] is told about the entry it decodes.
#[derive(Debug, Default, Clone)]
pub struct PayloadDecodeContext {
    /// The table the entry belongs to.
    pub table_id: TableId,
}

/// Turns an entry's payload (after the value header) back into the
/// engine's type.
pub trait PayloadDecoder: Send + Sync {
    /// What decoding can fail with.
    type Error: std::error::Error + Send + Sync + 'static;
    /// What it decodes to.
    type Target: Send + Sync;

    /// Decodes a `Target` from `buf`.
    fn decode<B: Buf>(
        &self,
        ctx: &PayloadDecodeContext,
        buf: &mut B,
    ) -> Result<Self::Target, Self::Error>;
}

/// Encodes payloads into a [`LogWriteBatch`] for one table, each entry
/// prefixed with the value header.
#[derive(Debug)]
pub struct LogBatchEncoder {
    location: WalLocation,
}

impl LogBatchEncoder {
    /// An encoder for batches of `location`.
    pub fn create(location: WalLocation) -> LogBatchEncoder {
        LogBatchEncoder { location }
    }

    /// A batch of one entry holding `payload`.
    pub fn encode(self, payload: &impl Payload) -> Result<LogWriteBatch> {
        let mut batch = LogWriteBatch::with_capacity(self.location, 1);
        let mut buf = BytesMut::new();
        batch.push(self.entry(payload, &mut buf)?);
        Ok(batch)
    }

    /// A batch of one entry per payload, in order.
    pub fn encode_batch<P, I>(self, payloads: I) -> Result<LogWriteBatch>
    where
        I: Iterator<Item = P>,
        P: Payload,
    {
        let mut batch = LogWriteBatch::with_capacity(self.location, payloads.size_hint().0);
        let mut buf = BytesMut::new();
        for payload in payloads {
            batch.push(self.entry(&payload, &mut buf)?);
        }
        Ok(batch)
    }

    /// Encodes one entry into `buf` and splits it off (the entries of a
    /// batch share `buf`'s allocations; none is copied).
    fn entry(&self, payload: &impl Payload, buf: &mut BytesMut) -> Result<LogWriteEntry> {
        buf.reserve(1 + payload.encode_size());
        buf.put_u8(LOG_VALUE_VERSION);
        payload.encode_to(buf).map_err(|source| {
            EncodingSnafu {
                location: self.location,
            }
            .into_error(Box::new(source))
        })?;
        Ok(LogWriteEntry {
            payload: buf.split().freeze(),
        })
    }
}

/// A payload of one `u32` (big-endian), as in HoraeDB's WAL tests: the
/// smallest real [`Payload`], for tests and examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryPayload {
    /// The value.
    pub val: u32,
}

impl Payload for MemoryPayload {
    type Error = Error;

    fn encode_size(&self) -> usize {
        4
    }

    fn encode_to<B: BufMut>(&self, buf: &mut B) -> Result<(), Error> {
        snafu::ensure!(
            buf.remaining_mut() >= 4,
            ShortBufferSnafu {
                what: "a MemoryPayload",
                needed: 4usize,
                available: buf.remaining_mut(),
            }
        );
        buf.put_u32(self.val);
        Ok(())
    }
}

impl From<&u32> for MemoryPayload {
    fn from(val: &u32) -> MemoryPayload {
        MemoryPayload { val: *val }
    }
}

/// Decodes a [`MemoryPayload`].
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryPayloadDecoder;

impl PayloadDecoder for MemoryPayloadDecoder {
    type Error = Error;
    type Target = MemoryPayload;

    fn decode<B: Buf>(&self, _ctx: &PayloadDecodeContext, buf: &mut B) -> Result<MemoryPayload> {
        snafu::ensure!(
            buf.remaining() >= 4,
            ShortBufferSnafu {
                what: "a MemoryPayload",
                needed: 4usize,
                available: buf.remaining(),
            }
        );
        Ok(MemoryPayload { val: buf.get_u32() })
    }
}
