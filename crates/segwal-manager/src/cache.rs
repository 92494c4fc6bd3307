//! The open-segment cache: which sealed segments stay open between reads.

use std::sync::Mutex;

use rustc_hash::FxHashMap as HashMap;
use segwal_segment::SegmentHandle;

use crate::locks::lock;

/// A segment's id: unique in the data dir, across streams.
pub(crate) type SegmentKey = u64;

/// Keeps at most `capacity` sealed segments open (mapped), least recently
/// used out first. Segments being written are not counted: each stream
/// always has its active segment open.
///
/// Evicting only drops the cache's handle. A reader holding its own handle
/// keeps the mapping until it is done; the file is unmapped and closed when
/// the last handle goes.
///
/// The lock is a leaf: nothing else is locked while it is held. Lookups scan
/// for the oldest entry on insert, which is cheap at the sizes a cache of
/// open files has (tens of entries).
#[derive(Debug)]
pub(crate) struct SegmentCache {
    capacity: usize,
    inner: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    /// Bumped on every use; an entry's stamp says when it was last used.
    clock: u64,
    entries: HashMap<SegmentKey, (SegmentHandle, u64)>,
}

impl SegmentCache {
    pub(crate) fn new(capacity: usize) -> SegmentCache {
        assert!(capacity >= 1, "validated by ManagerConfig");
        SegmentCache {
            capacity,
            inner: Mutex::new(CacheInner::default()),
        }
    }

    /// The cached handle of `key`, marked as just used.
    pub(crate) fn get(&self, key: SegmentKey) -> Option<SegmentHandle> {
        let mut inner = lock(&self.inner);
        inner.clock += 1;
        let now = inner.clock;
        let (handle, used) = inner.entries.get_mut(&key)?;
        *used = now;
        Some(handle.clone())
    }

    /// Caches `handle` for `key`, evicting the least recently used entries
    /// beyond the capacity.
    pub(crate) fn insert(&self, key: SegmentKey, handle: SegmentHandle) {
        let evicted = {
            let mut inner = lock(&self.inner);
            inner.clock += 1;
            let now = inner.clock;
            inner.entries.insert(key, (handle, now));
            let mut evicted = Vec::new();
            while inner.entries.len() > self.capacity {
                let oldest = *inner
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, used))| *used)
                    .map(|(key, _)| key)
                    .expect("the cache is over capacity, so not empty");
                evicted.extend(inner.entries.remove(&oldest));
            }
            evicted
        };
        // Unmapping happens here, outside the lock.
        drop(evicted);
    }

    /// Forgets `key` (its segment is being deleted).
    pub(crate) fn remove(&self, key: SegmentKey) {
        let removed = lock(&self.inner).entries.remove(&key);
        drop(removed);
    }

    /// Forgets every segment (the WAL is being closed).
    pub(crate) fn clear(&self) {
        let removed = std::mem::take(&mut lock(&self.inner).entries);
        drop(removed);
    }

    /// How many segments the cache holds open.
    pub(crate) fn len(&self) -> usize {
        lock(&self.inner).entries.len()
    }
}
