//! CPU cost of the codec: encoding a batch, decoding a record, scanning a
//! segment image; and of each compression codec on compressible rows and
//! on incompressible bytes.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use segwal_benches::{line_protocol, payloads};
use segwal_format::{BatchMeta, RecordCodec, RecordDecoder, RecordEncoder, Scanner, SegmentHeader};

const SEGMENT: SegmentHeader = SegmentHeader {
    stream_id: 1,
    segment_id: 1,
    salt: 0x5a17,
    capacity: 64 << 20,
};
const META: BatchMeta = BatchMeta {
    region_id: 1,
    table_id: 1,
    first_sequence: 1,
    durable_offset: 0,
};

fn encode_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("record");
    for (entries, len) in [(1, 1024), (4, 1024), (64, 4096), (16, 256)] {
        let batch = payloads(entries, len);
        let name = format!("{entries}x{len}B");
        group.throughput(Throughput::Bytes((entries * len) as u64));
        let mut out = Vec::new();
        group.bench_function(BenchmarkId::new("encode", &name), |b| {
            b.iter(|| {
                out.clear();
                RecordEncoder::new(&SEGMENT)
                    .encode(&META, black_box(&batch), &mut out)
                    .unwrap();
            })
        });
        let decoder = RecordDecoder::new(&SEGMENT);
        group.bench_function(BenchmarkId::new("decode", &name), |b| {
            b.iter(|| {
                let record = decoder.decode(black_box(&out), 0).unwrap();
                record
                    .borrowed_entries()
                    .unwrap()
                    .map(|e| e.payload.len())
                    .sum::<usize>()
            })
        });
    }
    group.finish();
}

fn scan(c: &mut Criterion) {
    let mut group = c.benchmark_group("scan");
    for (entries, len) in [(1, 1024), (64, 4096)] {
        let batch = payloads(entries, len);
        let mut image = Vec::new();
        let mut sequence = 1;
        while image.len() < 8 << 20 {
            let meta = BatchMeta {
                first_sequence: sequence,
                ..META
            };
            RecordEncoder::new(&SEGMENT)
                .encode(&meta, &batch, &mut image)
                .unwrap();
            sequence += entries as u64;
        }
        image.resize(image.len() + (1 << 20), 0);
        group.throughput(Throughput::Bytes(image.len() as u64));
        group.bench_function(format!("8MiB of {entries}x{len}B"), |b| {
            b.iter(|| {
                Scanner::new(black_box(&image), 0, &SEGMENT)
                    .map(|r| r.entry_count())
                    .sum::<u32>()
            })
        });
    }
    group.finish();
}

/// Encoding (compressing) and decoding plus reading every entry
/// (decompressing) a batch of 16 x 4 KiB, per codec, of line-protocol
/// rows and of random bytes; prints the ratio of each.
fn compression(c: &mut Criterion) {
    let mut group = c.benchmark_group("compression");
    let decoder = RecordDecoder::new(&SEGMENT);
    for (kind, batch) in [
        ("rows", line_protocol(16, 4096)),
        ("random", payloads(16, 4096)),
    ] {
        let raw: usize = batch.iter().map(Vec::len).sum();
        group.throughput(Throughput::Bytes(raw as u64));
        for codec in RecordCodec::ALL {
            let encoder = RecordEncoder::new(&SEGMENT).with_codec(codec);
            let mut out = Vec::new();
            encoder.encode(&META, &batch, &mut out).unwrap();
            eprintln!(
                "compression/{codec}/{kind}: {raw} payload bytes in a record of {} ({:.2}x)",
                out.len(),
                raw as f64 / out.len() as f64
            );
            let name = format!("{codec}/{kind} 16x4KiB");
            group.bench_function(BenchmarkId::new("encode", &name), |b| {
                b.iter(|| {
                    out.clear();
                    encoder.encode(&META, black_box(&batch), &mut out).unwrap();
                })
            });
            group.bench_function(BenchmarkId::new("decode+read", &name), |b| {
                b.iter(|| {
                    let record = decoder.decode(black_box(&out), 0).unwrap();
                    let body = record.body().unwrap();
                    body.entries().map(|e| e.payload.len()).sum::<usize>()
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, encode_decode, scan, compression);
criterion_main!(benches);
