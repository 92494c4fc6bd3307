//! What the tests of the shared log's data dir share: listings of its
//! files, the check that it holds nothing the layout does not allow, and
//! META logs and old-layout segments written by hand.
//!
//! A test file takes it with `#[path = "support/layout.rs"] mod layout;`
//! (`support/mod.rs` is the crash tests' and keeps their shape).

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use segwal_format::{
    MetaEntry, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, encode_meta_log_header, encode_meta_record,
};
use segwal_manager::{LOCK_FILE, META_FILE};

/// Suffix of a segment being prepared ahead of need.
pub const SPARE_SUFFIX: &str = ".seg.spare";

/// Every name in `dir`, sorted; empty if `dir` does not exist.
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The segment files of the shared log (`<dir>/*.seg` holding records),
/// sorted (by id: the names are zero-padded).
pub fn segment_files(dir: &Path) -> Vec<String> {
    names(dir)
        .into_iter()
        .filter(|n| n.ends_with(".seg") && !untouched(&dir.join(n)))
        .collect()
}

/// The segments being prepared (`<dir>/*.seg.spare`) or prepared (a
/// `*.seg` with nothing past its header), sorted.
pub fn spare_files(dir: &Path) -> Vec<String> {
    names(dir)
        .into_iter()
        .filter(|n| n.ends_with(SPARE_SUFFIX) || (n.ends_with(".seg") && untouched(&dir.join(n))))
        .collect()
}

/// Whether the segment file at `path` has no record: its first record
/// header is all zeros (recovery, to take it for a prepared spare, also
/// requires it to be its stream's newest and checks further zeros).
pub fn untouched(path: &Path) -> bool {
    let Ok(bytes) = fs::read(path) else {
        return false;
    };
    let first = SEGMENT_HEADER_LEN..SEGMENT_HEADER_LEN + RECORD_HEADER_LEN;
    bytes.get(first).is_some_and(|b| b.iter().all(|&x| x == 0))
}

/// Every file of `dir` with its length, by name (a file renamed since
/// the listing, as a spare put in place is, is left out).
pub fn files_with_lengths(dir: &Path) -> BTreeMap<String, u64> {
    names(dir)
        .into_iter()
        .filter_map(|n| {
            let len = fs::metadata(dir.join(&n)).ok()?.len();
            Some((n, len))
        })
        .collect()
}

/// The log's files (every file but spares) with their lengths, by name:
/// a spare is prepared in the background, so it may appear at any moment.
pub fn log_files_with_lengths(dir: &Path) -> BTreeMap<String, u64> {
    files_with_lengths(dir)
        .into_iter()
        .filter(|(n, _)| !n.ends_with(SPARE_SUFFIX))
        .filter(|(n, _)| !(n.ends_with(".seg") && untouched(&dir.join(n))))
        .collect()
}

/// Bytes the segment files take (`*.seg` and `*.seg.spare`: their
/// preallocated lengths).
pub fn segment_bytes(dir: &Path) -> u64 {
    files_with_lengths(dir)
        .into_iter()
        .filter(|(n, _)| n.ends_with(".seg") || n.ends_with(SPARE_SUFFIX))
        .map(|(_, len)| len)
        .sum()
}

/// Checks that data dir `dir` holds what the shared log's layout allows
/// and nothing else: no directory, only `LOCK`, `META`, `*.seg`, and
/// `*.seg.spare`, with at most `max_spares` spares (being prepared, or
/// prepared: renamed into place with no record yet; one per stream while
/// a WAL is open, none once it is closed). `label` names the moment in
/// failure messages.
pub fn check_layout(dir: &Path, max_spares: usize, label: &str) {
    let mut spares = 0;
    for name in names(dir) {
        let path = dir.join(&name);
        assert!(
            !path.is_dir(),
            "{label}: the data dir holds a directory, {name}"
        );
        let is_spare = name.strip_suffix(".spare").is_some_and(is_segment_name)
            || (is_segment_name(&name) && untouched(&path));
        spares += usize::from(is_spare);
        let allowed = name == LOCK_FILE || name == META_FILE || is_segment_name(&name) || is_spare;
        assert!(allowed, "{label}: the data dir holds a stray file, {name}");
    }
    assert!(
        spares <= max_spares,
        "{label}: {spares} spares, more than {max_spares}: {:?}",
        names(dir)
    );
}

/// Whether `name` is a segment file's name: 20 digits and `.seg`.
pub fn is_segment_name(name: &str) -> bool {
    name.strip_suffix(".seg")
        .is_some_and(|digits| digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
}

/// Writes `dir/META` as a META log holding `entries` in one record,
/// encoded by the format crate: the state a data dir would have after a
/// WAL recorded them (creating `dir` if needed).
pub fn write_meta_log(dir: &Path, entries: &[MetaEntry]) {
    fs::create_dir_all(dir).unwrap();
    let mut bytes = encode_meta_log_header().to_vec();
    encode_meta_record(entries, &mut bytes);
    fs::write(dir.join(META_FILE), bytes).unwrap();
}
