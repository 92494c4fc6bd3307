//! The bodies of segwal's messages in a region's stream.
//!
//! - A batch (subject `{prefix}.S.R.t.T`): version byte 1, the first
//!   sequence number (u64), the entry count (u32), then each entry as its
//!   length (u32) and bytes. Little-endian, like the local format.
//! - A delete mark (subject `{prefix}.S.R.m.T`): version byte 1, the
//!   sequence number deleted up to (u64), the table's largest sequence
//!   number at the time (u64).
//! - An ownership record (subject `{prefix}.S.R.o`): `take OWNER` or
//!   `release OWNER` in UTF-8.
//!
//! Every message also carries the header [`NEXT_HEADER`]: the region's
//! next sequence number once the message is stored, so that opening a
//! region needs only the region's last message. (`S` is the region's
//! stream, `R mod streams`.)

use bytes::{BufMut, Bytes, BytesMut};
use segwal::{LogWriteEntry, SequenceNumber};

/// The header holding the region's next sequence number after a message.
pub(crate) const NEXT_HEADER: &str = "Segwal-Next";

const VERSION: u8 = 1;
const BATCH_HEADER_LEN: usize = 1 + 8 + 4;
const ENTRY_HEADER_LEN: usize = 4;
const MARK_LEN: usize = 1 + 8 + 8;

/// The encoded size of a batch of `entries`.
pub(crate) fn batch_len(entries: &[LogWriteEntry]) -> usize {
    BATCH_HEADER_LEN
        + entries
            .iter()
            .map(|e| ENTRY_HEADER_LEN + e.payload.len())
            .sum::<usize>()
}

/// A batch's message body; `first` is its first sequence number.
#[cfg(test)]
pub(crate) fn encode_batch(first: SequenceNumber, entries: &[LogWriteEntry]) -> Bytes {
    let mut body = encode_unnumbered(entries);
    number_batch(&mut body, first);
    body.freeze()
}

/// Sets the first sequence number of a body made by [`encode_unnumbered`].
pub(crate) fn number_batch(body: &mut BytesMut, first: SequenceNumber) {
    assert!(first >= 1 && body.len() >= BATCH_HEADER_LEN);
    body[1..9].copy_from_slice(&first.to_le_bytes());
}

/// A batch's message body with its first sequence number still unset
/// (zero, which no decoder accepts): numbers are assigned at commit.
pub(crate) fn encode_unnumbered(entries: &[LogWriteEntry]) -> BytesMut {
    let first: SequenceNumber = 0;
    assert!(!entries.is_empty());
    let mut out = BytesMut::with_capacity(batch_len(entries));
    out.put_u8(VERSION);
    out.put_u64_le(first);
    out.put_u32_le(u32::try_from(entries.len()).expect("checked against max_payload"));
    for entry in entries {
        out.put_u32_le(u32::try_from(entry.payload.len()).expect("checked against max_payload"));
        out.put_slice(&entry.payload);
    }
    debug_assert_eq!(out.len(), batch_len(entries));
    out
}

/// A decoded batch: its first sequence number and its payloads, which
/// borrow the message body.
#[derive(Debug)]
pub(crate) struct DecodedBatch {
    pub(crate) first: SequenceNumber,
    pub(crate) payloads: Vec<Bytes>,
}

impl DecodedBatch {
    /// The batch's last sequence number.
    pub(crate) fn last(&self) -> SequenceNumber {
        self.first + self.payloads.len() as u64 - 1
    }
}

/// Decodes a batch body, checking every length against the body.
pub(crate) fn decode_batch(body: &Bytes) -> Result<DecodedBatch, String> {
    if body.len() < BATCH_HEADER_LEN {
        return Err(format!("a batch of {} bytes is too short", body.len()));
    }
    if body[0] != VERSION {
        return Err(format!("unknown batch version {}", body[0]));
    }
    let first = u64::from_le_bytes(body[1..9].try_into().expect("8 bytes"));
    let count = u32::from_le_bytes(body[9..13].try_into().expect("4 bytes")) as usize;
    if count == 0 || first == 0 || first.checked_add(count as u64 - 1).is_none() {
        return Err(format!("invalid batch of {count} entries from {first}"));
    }
    let mut payloads = Vec::with_capacity(count.min(body.len() / ENTRY_HEADER_LEN));
    let mut at = BATCH_HEADER_LEN;
    for i in 0..count {
        let Some(len_bytes) = body.get(at..at + ENTRY_HEADER_LEN) else {
            return Err(format!("entry {i} of {count} is cut off at byte {at}"));
        };
        let len = u32::from_le_bytes(len_bytes.try_into().expect("4 bytes")) as usize;
        at += ENTRY_HEADER_LEN;
        if body.len() - at < len {
            return Err(format!(
                "entry {i} of {count} claims {len} bytes at byte {at}, past the end"
            ));
        }
        payloads.push(body.slice(at..at + len));
        at += len;
    }
    if at != body.len() {
        return Err(format!("{} bytes after the last entry", body.len() - at));
    }
    Ok(DecodedBatch { first, payloads })
}

/// A table's delete mark: entries up to `deleted_up_to` are gone, and the
/// table's largest sequence number was `table_max` (which survives the
/// purge of the table's messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark {
    pub(crate) deleted_up_to: SequenceNumber,
    pub(crate) table_max: SequenceNumber,
}

pub(crate) fn encode_mark(mark: Mark) -> Bytes {
    let mut out = BytesMut::with_capacity(MARK_LEN);
    out.put_u8(VERSION);
    out.put_u64_le(mark.deleted_up_to);
    out.put_u64_le(mark.table_max);
    out.freeze()
}

pub(crate) fn decode_mark(body: &[u8]) -> Result<Mark, String> {
    if body.len() != MARK_LEN || body[0] != VERSION {
        return Err(format!(
            "a delete mark must be {MARK_LEN} bytes of version {VERSION}"
        ));
    }
    let mark = Mark {
        deleted_up_to: u64::from_le_bytes(body[1..9].try_into().expect("8 bytes")),
        table_max: u64::from_le_bytes(body[9..17].try_into().expect("8 bytes")),
    };
    if mark.deleted_up_to > mark.table_max {
        return Err(format!(
            "delete mark up to {} is past the table's last sequence {}",
            mark.deleted_up_to, mark.table_max
        ));
    }
    Ok(mark)
}

/// An ownership record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OwnerRecord {
    /// The owner holds the region.
    Take(String),
    /// The owner let the region go (`close_region`).
    Release(String),
}

pub(crate) fn encode_owner(record: &OwnerRecord) -> Bytes {
    match record {
        OwnerRecord::Take(owner) => format!("take {owner}").into(),
        OwnerRecord::Release(owner) => format!("release {owner}").into(),
    }
}

pub(crate) fn decode_owner(body: &[u8]) -> Result<OwnerRecord, String> {
    let text = std::str::from_utf8(body).map_err(|_| "an owner record is not UTF-8".to_owned())?;
    match text.split_once(' ') {
        Some(("take", owner)) if !owner.is_empty() => Ok(OwnerRecord::Take(owner.into())),
        Some(("release", owner)) if !owner.is_empty() => Ok(OwnerRecord::Release(owner.into())),
        _ => Err(format!("{text:?} is not an owner record")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(payloads: &[&[u8]]) -> Vec<LogWriteEntry> {
        payloads
            .iter()
            .map(|p| LogWriteEntry {
                payload: Bytes::copy_from_slice(p),
            })
            .collect()
    }

    #[test]
    fn a_batch_round_trips_and_every_cut_is_refused() {
        let batch = entries(&[b"a", b"", b"hello"]);
        let body = encode_batch(7, &batch);
        assert_eq!(body.len(), batch_len(&batch));
        let decoded = decode_batch(&body).unwrap();
        assert_eq!(decoded.first, 7);
        assert_eq!(decoded.last(), 9);
        assert_eq!(decoded.payloads, [&b"a"[..], b"", b"hello"]);
        for cut in 0..body.len() {
            assert!(decode_batch(&body.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut longer = body.to_vec();
        longer.push(0);
        assert!(decode_batch(&Bytes::from(longer)).is_err());
    }

    #[test]
    fn marks_and_owner_records_round_trip() {
        let mark = Mark {
            deleted_up_to: 5,
            table_max: 9,
        };
        assert_eq!(decode_mark(&encode_mark(mark)).unwrap(), mark);
        assert!(decode_mark(&encode_mark(mark)[..16]).is_err());
        for record in [
            OwnerRecord::Take("node-1".into()),
            OwnerRecord::Release("n".into()),
        ] {
            assert_eq!(decode_owner(&encode_owner(&record)).unwrap(), record);
        }
        assert!(decode_owner(b"take").is_err());
        assert!(decode_owner(b"steal x").is_err());
    }
}
