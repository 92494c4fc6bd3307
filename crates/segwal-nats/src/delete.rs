//! Deletes (a delete mark, then purges by subject that free the servers'
//! storage), moving bookkeeping records off a stream's head, and
//! releasing a region.

use std::sync::atomic::Ordering;

use async_nats::jetstream::stream::LastRawMessageErrorKind;
use bytes::Bytes;
use segwal::{SequenceNumber, TableId, WalLocation};

use crate::codec::{self, Mark, OwnerRecord};
use crate::error::Error;
use crate::publish::Outgoing;
use crate::region::{Region, Writer};
use crate::wal::{Inner, boxed, lock};

/// At most this many bookkeeping records are moved off a stream's head
/// per delete.
const MAX_HEAD_MOVES: usize = 16;

impl Inner {
    /// Publishes one bookkeeping message (a delete mark, an ownership
    /// record) of an owned region at the writer's position.
    pub(crate) async fn publish_record(
        &self,
        region: &Region,
        w: &mut Writer,
        subject: String,
        body: Bytes,
        what: &str,
    ) -> Result<u64, Error> {
        w.needs_resync = true;
        let message = Outgoing {
            subject,
            body,
            next: Some(w.next_seq),
        };
        let fence = region.fence(w.last_stream_seq);
        match self
            .publish_commit(&[message], Some(fence), self.config.request_timeout)
            .await
        {
            Ok(ack) => {
                w.last_stream_seq = ack.sequence;
                w.needs_resync = false;
                region.acked_last.fetch_max(ack.sequence, Ordering::AcqRel);
                Ok(ack.sequence)
            }
            Err(failure) => {
                if failure.is_wrong_last_sequence() {
                    self.check_owner(region, w).await?;
                }
                Err(self.request_error(
                    region.id,
                    format!("publishing {what}"),
                    failure.to_string().into(),
                ))
            }
        }
    }

    pub(crate) async fn mark_delete(
        &self,
        location: WalLocation,
        up_to: SequenceNumber,
    ) -> Result<(), Error> {
        let WalLocation {
            region_id,
            table_id,
        } = location;
        let Some(region) = self.region_for_read(region_id).await? else {
            return Ok(()); // Nothing was ever written: nothing to delete.
        };
        let mut w = region.writer.lock().await;
        self.ready(&region, &mut w).await?;
        let state = self.table_state(&region, &mut w, table_id).await?;
        // Deleting past the table's last entry deletes all of it, and not
        // later writes (they get numbers above the table's maximum).
        let up_to = up_to.min(state.max_seq);
        if up_to <= state.deleted_up_to && !state.purge_pending {
            return Ok(());
        }
        let up_to = up_to.max(state.deleted_up_to);
        let mark_seq = if up_to > state.deleted_up_to {
            let mark = Mark {
                deleted_up_to: up_to,
                table_max: state.max_seq,
            };
            let subject = self.config.mark_subject(region_id, table_id);
            let what = format!("the delete mark of table {table_id} up to {up_to}");
            let seq = self
                .publish_record(&region, &mut w, subject, codec::encode_mark(mark), &what)
                .await?;
            if let Some(state) = lock(&region.tables).get_mut(&table_id) {
                state.deleted_up_to = state.deleted_up_to.max(up_to);
            }
            self.stats.deletes.fetch_add(1, Ordering::Relaxed);
            Some(seq)
        } else {
            None
        };
        let snapshot = w.last_stream_seq;
        drop(w);
        // The mark is stored: the delete has happened. Now free the
        // storage of every batch wholly at or below it.
        self.purge_table(&region, table_id, up_to, snapshot).await;
        if let Some(mark_seq) = mark_seq {
            let mark_subject = self.config.mark_subject(region_id, table_id);
            self.purge_below(region_id, &region.stream, &mark_subject, mark_seq)
                .await;
        }
        if let Err(e) = self.compact_head(&region).await {
            log::warn!("region {region_id}: moving old records off the stream's head failed: {e}");
        }
        Ok(())
    }

    /// Purges table `table`'s batches wholly at or below `up_to`; on
    /// failure the next delete retries.
    async fn purge_table(
        &self,
        region: &Region,
        table: TableId,
        up_to: SequenceNumber,
        snapshot: u64,
    ) {
        let id = region.id;
        let subject = self.config.data_subject(id, table);
        let purged = match self.first_live(region, &subject, up_to, snapshot).await {
            // Nothing below the first message; see `purge_below`.
            Ok(Some(keep_from)) if keep_from <= 1 => Ok(0),
            Ok(Some(keep_from)) => region
                .stream
                .purge()
                .filter(subject.as_str())
                .sequence(keep_from)
                .await
                .map(|r| r.purged),
            // Every batch up to the snapshot is deleted; batches written
            // since (above it) must not be touched.
            Ok(None) => region
                .stream
                .purge()
                .filter(subject.as_str())
                .sequence(snapshot + 1)
                .await
                .map(|r| r.purged),
            Err(e) => {
                log::warn!("region {id}: cannot find what to purge of table {table}: {e}");
                self.set_purge_pending(region, table, true);
                return;
            }
        };
        match purged {
            Ok(n) => {
                self.stats.messages_purged.fetch_add(n, Ordering::Relaxed);
                self.set_purge_pending(region, table, false);
            }
            Err(e) => {
                log::warn!(
                    "region {id}: purging table {table} up to {up_to} failed \
                     (the entries are deleted; the next delete frees their storage): {e}"
                );
                self.set_purge_pending(region, table, true);
            }
        }
    }

    /// The stream sequence of the first batch of table `subject` (up to
    /// stream sequence `hi`) holding an entry above `floor`, by binary
    /// search: a table's batches are in ascending sequence order in the
    /// stream. O(log n) requests, so a read costs what it reads.
    pub(crate) async fn first_live(
        &self,
        region: &Region,
        subject: &str,
        floor: SequenceNumber,
        hi: u64,
    ) -> Result<Option<u64>, Error> {
        let id = region.id;
        let Some(first) = self.first_from(id, &region.stream, subject, 1).await? else {
            return Ok(None);
        };
        if first.sequence > hi {
            return Ok(None);
        }
        if self.batch_of(id, &first)?.last() > floor {
            return Ok(Some(first.sequence));
        }
        let (mut lo, mut hi, mut best) = (first.sequence + 1, hi, None);
        while lo <= hi {
            let mid = lo + (hi - lo) / 2;
            match self.first_from(id, &region.stream, subject, mid).await? {
                Some(m) if m.sequence <= hi => {
                    if self.batch_of(id, &m)?.last() > floor {
                        best = Some(m.sequence);
                        hi = mid - 1;
                    } else {
                        lo = m.sequence + 1;
                    }
                }
                // No message of the subject in [mid, hi].
                _ => hi = mid - 1,
            }
        }
        Ok(best)
    }

    /// JetStream frees storage a block at a time, once every message in it
    /// is gone. An ownership record or delete mark at the head of a stream
    /// would keep its block for as long as it lives. So while the stream's
    /// first message is such a record of a region this instance holds, it
    /// is written again at the end (same content) and the old copy purged.
    /// Other owners move theirs on their own deletes.
    async fn compact_head(&self, region: &Region) -> Result<(), Error> {
        for _ in 0..MAX_HEAD_MOVES {
            let info =
                region.stream.get_info().await.map_err(|e| {
                    self.request_error(region.id, "reading the stream state", boxed(e))
                })?;
            let (first, last) = (info.state.first_sequence, info.state.last_sequence);
            if info.state.messages == 0 || first >= last {
                return Ok(());
            }
            let message = match region.stream.get_raw_message(first).await {
                Ok(message) => message,
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(()),
                Err(e) => {
                    return Err(self.request_error(
                        region.id,
                        "reading the stream's head",
                        boxed(e),
                    ));
                }
            };
            let subject = message.subject.to_string();
            let Some(owner) = self.holder_of_record(&subject) else {
                return Ok(()); // A batch, or another owner's record.
            };
            let mut w = owner.writer.lock().await;
            self.ready(&owner, &mut w).await?;
            let owner_subject = self.config.owner_subject(owner.id);
            let body = if subject == owner_subject {
                codec::encode_owner(&OwnerRecord::Take(self.config.owner.clone()))
            } else {
                message.payload.clone()
            };
            let seq = self
                .publish_record(
                    &owner,
                    &mut w,
                    subject.clone(),
                    body,
                    &format!("a copy of {subject}"),
                )
                .await?;
            if subject == owner_subject {
                w.take_seq = seq;
            }
            drop(w);
            self.purge_below(owner.id, &owner.stream, &subject, seq)
                .await;
        }
        Ok(())
    }

    /// The open region whose ownership record or delete mark `subject` is.
    fn holder_of_record(&self, subject: &str) -> Option<std::sync::Arc<Region>> {
        let rest = subject
            .strip_prefix(&self.config.prefix)?
            .strip_prefix('.')?;
        let mut tokens = rest.split('.');
        let (_stream, region) = (tokens.next()?, tokens.next()?.parse::<u64>().ok()?);
        match (tokens.next()?, tokens.next()) {
            ("o", None) | ("m", Some(_)) => {}
            _ => return None,
        }
        let cell = lock(&self.regions).get(&region).cloned()?;
        let region = cell.get()?.clone();
        let fenced = lock(&region.fenced_by).is_some();
        (!fenced).then_some(region)
    }

    fn set_purge_pending(&self, region: &Region, table: TableId, pending: bool) {
        if let Some(state) = lock(&region.tables).get_mut(&table) {
            state.purge_pending = pending;
        }
    }

    /// Releases a region this instance holds: a release record, so that
    /// another owner may open it without a takeover.
    pub(crate) async fn release(&self, region: &Region) -> Result<(), Error> {
        let mut w = region.writer.lock().await;
        if lock(&region.fenced_by).is_some() {
            log::info!("region {}: closed after being fenced", region.id);
            return Ok(());
        }
        if w.needs_resync {
            match self.resync(region, &mut w).await {
                Err(Error::Fenced { .. }) => return Ok(()),
                other => other?,
            }
        }
        let record = codec::encode_owner(&OwnerRecord::Release(self.config.owner.clone()));
        let subject = self.config.owner_subject(region.id);
        let seq = self
            .publish_record(
                region,
                &mut w,
                subject.clone(),
                record,
                "the release record",
            )
            .await?;
        w.released = true;
        drop(w);
        self.purge_below(region.id, &region.stream, &subject, seq)
            .await;
        Ok(())
    }
}
