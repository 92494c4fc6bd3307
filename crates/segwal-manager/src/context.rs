//! What every part of the manager shares: configuration, counters, the
//! open-segment cache, the segment table and the META log.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, RwLock};

use segwal_format::SegmentIdentity;
use segwal_segment::{Segment, SegmentHandle, segment_file_name};
use snafu::ResultExt;

use crate::cache::SegmentCache;
use crate::config::ManagerConfig;
use crate::error::{Result, SegmentSnafu};
use crate::index::Segments;
use crate::locks::read;
use crate::meta::MetaLog;
use crate::stats::Stats;

/// Suffix of a segment file prepared ahead of need, before it is renamed
/// into place.
pub(crate) const SPARE_SUFFIX: &str = ".spare";

/// The manager's shared state.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) config: ManagerConfig,
    pub(crate) stats: Stats,
    pub(crate) cache: SegmentCache,
    /// Every segment of every stream, by id.
    pub(crate) segments: RwLock<Segments>,
    /// The id the next new segment gets, whatever its stream: ids are
    /// unique in the data dir, so a segment's file name alone names it.
    pub(crate) next_segment_id: AtomicU64,
    pub(crate) meta: MetaLog,
    /// Serialises removals of dead segments (`delete.rs`).
    pub(crate) purging: Mutex<()>,
    /// The data dir's file system keeps files in memory only (tmpfs):
    /// segments are then never zero-filled (`ManagerConfig::preallocation`).
    pub(crate) memory_backed: bool,
}

impl Context {
    /// A handle to segment `segment_id` while it is indexed: the active
    /// one's own, a cached one, or the sealed file opened again by its
    /// header (and not cached: the caller reads it once). `None` if the
    /// segment is gone.
    pub(crate) fn handle(&self, segment_id: u64) -> Result<Option<SegmentHandle>> {
        let (stream_id, len) = match read(&self.segments).get(&segment_id) {
            Some(info) => match &info.active {
                Some(handle) => return Ok(Some(handle.clone())),
                None => (info.stream_id, info.len),
            },
            None => return Ok(None),
        };
        if let Some(handle) = self.cache.get(segment_id) {
            return Ok(Some(handle));
        }
        let identity = SegmentIdentity {
            stream_id,
            segment_id,
        };
        let handle = Segment::open_sealed(&self.segment_path(segment_id), identity, len)
            .context(SegmentSnafu)?;
        Ok(Some(handle))
    }

    /// The file of segment `segment_id`.
    pub(crate) fn segment_path(&self, segment_id: u64) -> PathBuf {
        self.config.dir.join(segment_file_name(segment_id))
    }

    /// The temporary name of segment `segment_id` while it is prepared.
    pub(crate) fn spare_path(&self, segment_id: u64) -> PathBuf {
        self.config.dir.join(spare_file_name(segment_id))
    }
}

/// The temporary name of a segment prepared ahead of need.
pub(crate) fn spare_file_name(segment_id: u64) -> String {
    format!("{}{SPARE_SUFFIX}", segment_file_name(segment_id))
}

/// Whether `name` is a spare's temporary name.
pub(crate) fn is_spare_file_name(name: &str) -> bool {
    name.strip_suffix(SPARE_SUFFIX)
        .and_then(segwal_segment::parse_segment_file_name)
        .is_some()
}
