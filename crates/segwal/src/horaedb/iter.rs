//! [`BatchLogIterator::next_log_entries`]: HoraeDB's way of reading a
//! WAL, a decoded batch at a time.

use std::collections::VecDeque;

use snafu::IntoError;

use crate::error::{DecodingSnafu, Result, ValueHeaderSnafu};
use crate::horaedb::payload::{LOG_VALUE_VERSION, PayloadDecodeContext, PayloadDecoder};
use crate::iter::BatchLogIterator;
use crate::types::{LogEntry, TableId};

impl BatchLogIterator {
    /// The next entries whose table passes `filter`, decoded by `decoder`,
    /// at most the context's `batch_size` of them, in ascending sequence
    /// order; empty once the iterator is exhausted. `buffer` is cleared and
    /// reused for the result (HoraeDB's signature: pass back the last
    /// result to save its allocation).
    ///
    /// Each entry must start with the value header that
    /// [`LogBatchEncoder`](crate::horaedb::LogBatchEncoder) writes; it is
    /// checked and stripped before `decoder` sees the rest. Entries the
    /// filter refuses are not decoded. Decoding runs on the calling task.
    /// Entries read past a full batch are kept for the next call (of this
    /// method or of [`next_batch`](BatchLogIterator::next_batch)). After an
    /// error (reading, a missing header, the decoder's) the iteration is
    /// abandoned: later calls fail with
    /// [`Error::IteratorAbandoned`](crate::Error::IteratorAbandoned), so no
    /// entry is silently skipped.
    pub async fn next_log_entries<D, F>(
        &mut self,
        decoder: D,
        filter: F,
        mut buffer: VecDeque<LogEntry<D::Target>>,
    ) -> Result<VecDeque<LogEntry<D::Target>>>
    where
        D: PayloadDecoder,
        F: Fn(TableId) -> bool,
    {
        buffer.clear();
        let batch_size = self.batch_size;
        while buffer.len() < batch_size {
            let Some(batch) = self.next_batch().await? else {
                break;
            };
            let mut entries = batch.into_iter();
            for entry in entries.by_ref() {
                if filter(entry.table_id) {
                    match decode(&decoder, entry) {
                        Ok(decoded) => buffer.push_back(decoded),
                        Err(err) => {
                            self.abandon();
                            return Err(err);
                        }
                    }
                    if buffer.len() == batch_size {
                        break;
                    }
                }
            }
            self.pending.extend(entries);
        }
        Ok(buffer)
    }
}

/// Checks and strips `entry`'s value header and decodes the rest.
fn decode<D: PayloadDecoder>(decoder: &D, entry: LogEntry) -> Result<LogEntry<D::Target>> {
    let LogEntry {
        table_id,
        sequence,
        payload,
    } = entry;
    let mut value = match payload.first() {
        Some(&LOG_VALUE_VERSION) => payload.slice(1..),
        found => {
            return ValueHeaderSnafu {
                table_id,
                sequence,
                expected: LOG_VALUE_VERSION,
                found: found.map_or("an empty entry".into(), |v| format!("version {v}")),
            }
            .fail();
        }
    };
    let ctx = PayloadDecodeContext { table_id };
    let payload = decoder
        .decode(&ctx, &mut value)
        .map_err(|source| DecodingSnafu { table_id, sequence }.into_error(Box::new(source)))?;
    Ok(LogEntry {
        table_id,
        sequence,
        payload,
    })
}
