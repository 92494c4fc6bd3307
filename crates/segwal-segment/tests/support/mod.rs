//! What the segment tests share: an identity, a capacity, and making,
//! appending to, opening and patching a segment file.

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use segwal_format::SegmentIdentity;
use segwal_segment::{
    BatchRef, Error, OpenOptions, Preallocation, RecoveryMode, RecoveryReport, Segment,
    segment_file_name,
};

pub(crate) const HEADER: SegmentIdentity = SegmentIdentity {
    stream_id: 2,
    segment_id: 7,
};
pub(crate) const CAPACITY: u64 = 64 * 1024;

pub(crate) fn new_segment(dir: &Path) -> (PathBuf, Segment) {
    let path = dir.join(segment_file_name(HEADER.segment_id));
    let segment = Segment::create(&path, HEADER, CAPACITY, Preallocation::Zeroed).unwrap();
    (path, segment)
}

pub(crate) fn append(
    segment: &mut Segment,
    table_id: u64,
    first_sequence: u64,
    entries: &[&[u8]],
) -> std::ops::Range<u64> {
    segment
        .append(&BatchRef {
            region_id: 1,
            table_id,
            first_sequence,
            entries,
        })
        .unwrap()
}

/// Opens `path` and returns (first sequence of each record, report).
pub(crate) fn open(
    path: &Path,
    mode: RecoveryMode,
) -> Result<(Segment, Vec<u64>, RecoveryReport), Error> {
    let mut firsts = Vec::new();
    let options = OpenOptions {
        recovery_mode: mode,
        writable: true,
        end: None,
    };
    let (segment, report) =
        Segment::open(path, HEADER, &options, |r| firsts.push(r.first_sequence()))?;
    Ok((segment, firsts, report))
}

pub(crate) fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    let file = fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, offset).unwrap();
}
