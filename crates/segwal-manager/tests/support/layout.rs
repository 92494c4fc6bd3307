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

use segwal_format::{MetaEntry, encode_meta_log_header, encode_meta_record};
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

/// The segment files of the shared log (`<dir>/*.seg`), sorted (by id:
/// the names are zero-padded).
pub fn segment_files(dir: &Path) -> Vec<String> {
    names(dir)
        .into_iter()
        .filter(|n| n.ends_with(".seg"))
        .collect()
}

/// The segments being prepared (`<dir>/*.seg.spare`), sorted.
pub fn spare_files(dir: &Path) -> Vec<String> {
    names(dir)
        .into_iter()
        .filter(|n| n.ends_with(SPARE_SUFFIX))
        .collect()
}

/// Every file of `dir` with its length, by name.
pub fn files_with_lengths(dir: &Path) -> BTreeMap<String, u64> {
    names(dir)
        .into_iter()
        .map(|n| {
            let len = fs::metadata(dir.join(&n)).unwrap().len();
            (n, len)
        })
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
/// `*.seg.spare`, at most `max_spares` of them (one per stream while a
/// WAL is open, none once it is closed). `label` names the moment in
/// failure messages.
pub fn check_layout(dir: &Path, max_spares: usize, label: &str) {
    let mut spares = 0;
    for name in names(dir) {
        let path = dir.join(&name);
        assert!(
            !path.is_dir(),
            "{label}: the data dir holds a directory, {name}"
        );
        let is_spare = name.strip_suffix(".spare").is_some_and(is_segment_name);
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
