//! Which segments of a data dir are what, as recovery and `inspect` see
//! them: each segment's stream, the prepared spares (renamed into place,
//! no record yet) and each stream's newest segment, the only one whose
//! tail a crash can have torn.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::Path;

use segwal_format::{RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};

use crate::recovery::header_stream;

/// The segments of a data dir as recovery and `inspect` judge them.
pub(crate) struct Judged {
    /// Every segment id, ascending.
    pub(crate) ids: Vec<u64>,
    /// The stream of each, from its header (`None`: no valid header).
    pub(crate) streams: Vec<Option<u64>>,
    /// Prepared spares (see [`prepared_spares`]).
    pub(crate) prepared: BTreeSet<u64>,
    /// The newest segment of each stream that is not a prepared spare:
    /// the only one whose tail a crash can have torn.
    pub(crate) newest: BTreeMap<Option<u64>, u64>,
}

/// Judges the segments `ids` (ascending) of `dir`: their streams, the
/// prepared spares and each stream's newest.
pub(crate) fn judge(dir: &Path, ids: Vec<u64>) -> Judged {
    let streams: Vec<Option<u64>> = ids
        .iter()
        .map(|&id| header_stream(&dir.join(segwal_segment::segment_file_name(id))))
        .collect();
    let prepared = prepared_spares(dir, &ids, &streams);
    let mut newest = BTreeMap::new();
    for (&id, &stream) in ids.iter().zip(&streams) {
        if !prepared.contains(&id) {
            newest.insert(stream, id);
        }
    }
    Judged {
        ids,
        streams,
        prepared,
        newest,
    }
}

/// The segments of `ids` (ascending, each of stream `streams[i]`) that are
/// prepared spares: the newest segments of their stream whose header is
/// valid and whose first [`UNTOUCHED_CHECK_BYTES`] past the header are all
/// zeros. Nothing was ever acknowledged from such a segment: a write to a
/// segment is synced only after the segment before it was, and a synced
/// record starts where its first record header lies. So each is removed
/// at open (the tools show it as prepared), and the segment before it is
/// its stream's newest, the only one whose tail a crash can tear. Checking
/// well past the first record header keeps a sealed segment whose first
/// header was damaged (and whose records follow it) from passing as one.
pub(crate) fn prepared_spares(dir: &Path, ids: &[u64], streams: &[Option<u64>]) -> BTreeSet<u64> {
    let mut spares = BTreeSet::new();
    let mut touched: BTreeSet<Option<u64>> = BTreeSet::new();
    for (&id, &stream) in ids.iter().zip(streams).rev() {
        if stream.is_none() || touched.contains(&stream) {
            continue;
        }
        if untouched(&dir.join(segwal_segment::segment_file_name(id))) {
            spares.insert(id);
        } else {
            touched.insert(stream);
        }
    }
    spares
}

/// How many bytes past its header a segment must hold only zeros in to be
/// taken for a prepared spare (fewer if the file is shorter).
pub(crate) const UNTOUCHED_CHECK_BYTES: u64 = 1 << 20;

/// Whether the segment at `path` holds nothing past its header: its first
/// [`UNTOUCHED_CHECK_BYTES`] (at least a record header's worth) are zeros.
fn untouched(path: &Path) -> bool {
    let Ok(file) = fs::File::open(path) else {
        return false;
    };
    let mut bytes = Vec::new();
    let limit = SEGMENT_HEADER_LEN as u64 + UNTOUCHED_CHECK_BYTES;
    if file.take(limit).read_to_end(&mut bytes).is_err()
        || bytes.len() < SEGMENT_HEADER_LEN + RECORD_HEADER_LEN
    {
        return false;
    }
    bytes[SEGMENT_HEADER_LEN..].iter().all(|&b| b == 0)
}
