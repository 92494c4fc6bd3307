//! Segment appends, with and without a sync per append, into zero-filled
//! and into reserved (`fallocate`d) segments. Set SEGWAL_BENCH_DIR
//! to choose the file system (for example /dev/shm for tmpfs, to isolate
//! CPU cost from the disk; the default is the system temporary directory)
//! and SEGWAL_BENCH_FS to name it in the results (`cargo xtask bench` sets
//! both).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use segwal_benches::{bench_dir, fs_name, io_criterion, payloads};
use segwal_format::SegmentIdentity;
use segwal_segment::{BatchRef, Preallocation, Segment, segment_file_name};

const SEGMENT_BYTES: u64 = 64 << 20;

fn append(c: &mut Criterion) {
    let dir = bench_dir();
    let fs = fs_name();
    let mut group = c.benchmark_group(format!("segment_append/{fs}"));
    // Segment ids are unique across the benchmarks, which share `dir`.
    let mut next_id = 0;
    let (zeroed, reserved) = (Preallocation::Zeroed, Preallocation::Reserved);
    for (entries, len, sync, preallocation) in [
        (1, 1024, false, zeroed),
        (64, 4096, false, zeroed),
        (64, 4096, false, reserved),
        (1, 1024, true, zeroed),
        (1, 1024, true, reserved),
        // Every append starts a new block: each sync of a reserved segment
        // must also commit an extent conversion.
        (1, 4096, true, zeroed),
        (1, 4096, true, reserved),
    ] {
        let batch = payloads(entries, len);
        let name = format!(
            "{entries}x{len}B{}/{}",
            if sync { "+fdatasync" } else { "" },
            match preallocation {
                Preallocation::Zeroed => "zeroed",
                Preallocation::Reserved => "reserved",
            }
        );
        group.throughput(Throughput::Bytes((entries * len) as u64));
        let mut new_segment = || {
            next_id += 1;
            let header = SegmentIdentity {
                stream_id: 1,
                segment_id: next_id,
            };
            let path = dir.path().join(segment_file_name(next_id));
            Segment::create(&path, header, SEGMENT_BYTES, preallocation).unwrap()
        };
        let mut segment = new_segment();
        let mut sequence = 1;
        group.bench_function(name, |b| {
            b.iter(|| {
                // Roll over outside the measured append when full; the
                // creation cost is amortised into the iterations that
                // trigger it, as it would be without a preallocator.
                if segment.encoded_len(&batch).unwrap() > segment.remaining() {
                    let full = std::mem::replace(&mut segment, new_segment());
                    full.delete().unwrap();
                }
                let batch = BatchRef {
                    region_id: 1,
                    table_id: 1,
                    first_sequence: sequence,
                    entries: &batch,
                };
                segment.append(&batch).unwrap();
                if sync {
                    segment.sync().unwrap();
                }
                sequence += entries as u64;
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = io_criterion(20);
    targets = append
}
criterion_main!(benches);
