//! A verified record's entries: its body as bytes ([`Body`]: borrowed
//! from the segment, or decompressed) and the iterator over them
//! ([`Entries`]).

use std::borrow::Cow;

use crate::read_u32;
use crate::record::ENTRY_LEN_PREFIX;

/// A verified record's entries as bytes: borrowed from the segment when
/// the record is stored uncompressed, owned when it was decompressed.
///
/// # Invariants
///
/// `bytes` holds exactly the record's `entry_count` length-prefixed
/// entries, checked when the record was decoded (uncompressed) or
/// decompressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body<'a> {
    bytes: Cow<'a, [u8]>,
    table_id: u64,
    first_sequence: u64,
}

impl<'a> Body<'a> {
    /// The body `bytes` of a verified record of `table_id` whose first
    /// entry has sequence number `first_sequence`.
    pub(crate) fn new(bytes: Cow<'a, [u8]>, table_id: u64, first_sequence: u64) -> Body<'a> {
        Body {
            bytes,
            table_id,
            first_sequence,
        }
    }

    /// The entries, in sequence order, borrowing their payloads from the
    /// body.
    pub fn entries(&self) -> Entries<'_> {
        Entries {
            body: &self.bytes,
            table_id: self.table_id,
            next_sequence: self.first_sequence,
        }
    }

    /// Whether the body was decompressed into a buffer of its own (rather
    /// than borrowed from the segment's bytes).
    pub fn is_decompressed(&self) -> bool {
        matches!(self.bytes, Cow::Owned(_))
    }

    /// The length-prefixed entries.
    pub fn into_bytes(self) -> Cow<'a, [u8]> {
        self.bytes
    }
}

/// One entry of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The table the entry belongs to.
    pub table_id: u64,
    /// The entry's sequence number.
    pub sequence: u64,
    /// The entry's bytes.
    pub payload: &'a [u8],
}

/// Iterator over the entries of a verified record.
#[derive(Debug, Clone)]
pub struct Entries<'a> {
    body: &'a [u8],
    table_id: u64,
    next_sequence: u64,
}

impl<'a> Entries<'a> {
    /// Resumes iterating where an earlier `Entries` of a verified record
    /// stopped: `rest` is the bytes that iterator had left
    /// ([`remaining_len`](Entries::remaining_len) of them, at the end of the
    /// record), `table_id` and `next_sequence` what it would have handed
    /// out next. A reader that hands out a large record a few entries at a
    /// time uses this to avoid verifying the whole record again for every
    /// few entries.
    ///
    /// The bytes are not verified again; whoever resumes must know they
    /// have not changed since the record was verified. Bytes whose length
    /// prefixes do not tile them end the iteration early (never a panic).
    pub fn resume(rest: &'a [u8], table_id: u64, next_sequence: u64) -> Entries<'a> {
        Entries {
            body: rest,
            table_id,
            next_sequence,
        }
    }

    /// Bytes of the body not yet handed out; they end where the record does.
    pub fn remaining_len(&self) -> usize {
        self.body.len()
    }

    /// The sequence number of the next entry.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// The table the entries belong to.
    pub fn table_id(&self) -> u64 {
        self.table_id
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        // For a verified record the length prefixes tile the body exactly,
        // so the checks below never end it early; they only keep bytes
        // given to `resume` from causing a panic.
        let prefix = self.body.get(..ENTRY_LEN_PREFIX)?;
        let len = read_u32(prefix, 0) as usize;
        let Some((payload, rest)) = self.body[ENTRY_LEN_PREFIX..].split_at_checked(len) else {
            self.body = &[];
            return None;
        };
        self.body = rest;
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        Some(Entry {
            table_id: self.table_id,
            sequence,
            payload,
        })
    }
}
