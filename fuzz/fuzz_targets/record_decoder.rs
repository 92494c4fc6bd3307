//! Proves that the record decoder never panics or allocates on any bytes at
//! any offset, and that every record it accepts obeys the format's rules and
//! is byte for byte what the encoder writes for the entries it yields; a
//! compressed one (lz4, zstd) decompresses to its declared length or fails
//! with an error naming its offset, never a panic.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use segwal_format::{BatchMeta, Error, RecordCodec, RecordDecoder, RecordEncoder, SegmentHeader};
use segwal_fuzz::format::{check_record, seal_record};

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    /// The segment the decoder reads records of.
    segment_id: u64,
    /// That segment's salt.
    salt: u64,
    /// Segment offset of the bytes (reduced so that they end by
    /// `u64::MAX`, as in any real segment).
    offset: u64,
    /// Whether to write valid checksums into the bytes before decoding,
    /// so that the rules behind the checksums get fuzzed too.
    seal: bool,
    /// Picks the bit to flip in an accepted record.
    flip_bit: u32,
    bytes: Bytes<'a>,
}

/// Where the decoder's input comes from.
#[derive(Debug, Arbitrary)]
enum Bytes<'a> {
    /// Any bytes.
    Raw(&'a [u8]),
    /// A record the encoder wrote for this segment, with some bytes
    /// overwritten and more bytes after it: random bytes rarely make a
    /// valid record, edits of a valid one reach every rule.
    Encoded {
        region_id: u64,
        table_id: u64,
        first_sequence: u64,
        durable_offset: u64,
        payloads: Vec<&'a [u8]>,
        /// Picks the codec the encoder compresses with.
        codec: u8,
        /// (position, new value); positions wrap around the record.
        edits: Vec<(u16, u8)>,
        trailing: &'a [u8],
    },
}

/// At most this many edits of an encoded record.
const MAX_EDITS: usize = 4;

impl Bytes<'_> {
    fn build(&self, segment: &SegmentHeader) -> Vec<u8> {
        match self {
            Bytes::Raw(bytes) => bytes.to_vec(),
            Bytes::Encoded {
                region_id,
                table_id,
                first_sequence,
                durable_offset,
                payloads,
                codec,
                edits,
                trailing,
            } => {
                let meta = BatchMeta {
                    region_id: *region_id,
                    table_id: *table_id,
                    first_sequence: *first_sequence,
                    durable_offset: *durable_offset,
                };
                let mut bytes = Vec::new();
                let codec = RecordCodec::ALL[usize::from(*codec) % RecordCodec::ALL.len()];
                let encoder = RecordEncoder::new(segment).with_codec(codec);
                match encoder.encode(&meta, payloads, &mut bytes) {
                    Ok(_) => {
                        let len = bytes.len();
                        for &(at, value) in edits.iter().take(MAX_EDITS) {
                            bytes[usize::from(at) % len] = value;
                        }
                    }
                    // The encoder refuses only these, and writes nothing.
                    Err(err) => {
                        assert!(
                            matches!(err, Error::EmptyBatch | Error::SequenceOutOfRange { .. }),
                            "{err:?}"
                        );
                        assert!(bytes.is_empty());
                    }
                }
                bytes.extend_from_slice(trailing);
                bytes
            }
        }
    }
}

fuzz_target!(|input: Input<'_>| {
    let segment = SegmentHeader {
        stream_id: 1,
        segment_id: input.segment_id,
        salt: input.salt,
        capacity: 0,
    };
    let mut bytes = input.bytes.build(&segment);
    if input.seal {
        seal_record(&mut bytes, segment.salt);
    }
    let offset = input.offset.min(u64::MAX - bytes.len() as u64);
    let decoder = RecordDecoder::new(&segment);
    check_record(&decoder, &segment, &bytes, offset, input.flip_bit as usize);
});
