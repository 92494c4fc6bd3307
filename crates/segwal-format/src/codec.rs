//! Compression of record bodies: what each [`RecordCodec`] does to the
//! length-prefixed entries of a batch, and back.
//!
//! Pure computation over byte slices, like the rest of the crate. The
//! compressors are the LZ4 block format (`lz4_flex`, without the frame
//! format: the record header already carries the lengths and the checksum;
//! its decoder bounds-checks malformed input) and a Zstandard frame
//! (`zstd`). Their contexts are kept per
//! thread, so a writer does not allocate one per batch.

use std::cell::RefCell;

use crate::error::{DecompressSnafu, Result};
use crate::record::RecordCodec;

/// The Zstandard level the encoder uses. Level 1 is zstd's fastest
/// ordinary level: a WAL compresses on the write path, where every
/// microsecond is latency, and the data is short-lived.
pub const ZSTD_LEVEL: i32 = 1;

/// Bodies shorter than this are stored without compression whatever the
/// codec: a compressed frame's own overhead (zstd's frame header, lz4's
/// literal runs) leaves nothing to gain, and the attempt costs time.
pub const MIN_COMPRESSED_BODY_LEN: usize = 64;

thread_local! {
    static ZSTD_COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { RefCell::new(None) };
    static ZSTD_DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// Compresses `out[body_start..]` (a raw body, the last bytes of `out`) in
/// place with `codec`. Returns `true` if the body was replaced by a shorter
/// compressed form; `false` leaves `out` as it was, because the codec is
/// [`RecordCodec::None`], the body is short, compression did not make it
/// smaller, or the compressor could not be set up.
pub(crate) fn compress_in_place(codec: RecordCodec, out: &mut Vec<u8>, body_start: usize) -> bool {
    let raw_end = out.len();
    let raw_len = raw_end - body_start;
    if codec == RecordCodec::None || raw_len < MIN_COMPRESSED_BODY_LEN {
        return false;
    }
    let bound = match codec {
        RecordCodec::Lz4 => lz4_flex::block::get_maximum_output_size(raw_len),
        RecordCodec::Zstd => zstd::compress_bound(raw_len),
        RecordCodec::None => unreachable!("returned above"),
    };
    out.resize(raw_end + bound, 0);
    let (head, tail) = out.split_at_mut(raw_end);
    let raw = &head[body_start..];
    let compressed = match codec {
        RecordCodec::Lz4 => lz4_flex::block::compress_into(raw, tail).ok(),
        RecordCodec::Zstd => zstd_compress(raw, tail),
        RecordCodec::None => unreachable!("returned above"),
    };
    match compressed {
        Some(len) if len < raw_len => {
            out.copy_within(raw_end..raw_end + len, body_start);
            out.truncate(body_start + len);
            true
        }
        _ => {
            out.truncate(raw_end);
            false
        }
    }
}

/// Compresses `raw` into `dest` with this thread's zstd context; `None` if
/// the context cannot be made or the output does not fit.
fn zstd_compress(raw: &[u8], dest: &mut [u8]) -> Option<usize> {
    ZSTD_COMPRESSOR.with_borrow_mut(|slot| {
        if slot.is_none() {
            *slot = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok();
        }
        slot.as_mut()?.compress_to_buffer(raw, dest).ok()
    })
}

/// Decompresses a verified record's stored body into a new buffer of
/// exactly `raw_len` bytes (which the caller has bounded by the format's
/// limit). Anything else the decompressor produces, or an error from it,
/// is `Decompress` at `offset`: a compressed body whose checksum matched
/// but that does not decompress to what its header declares.
pub(crate) fn decompress(
    codec: RecordCodec,
    stored: &[u8],
    raw_len: u32,
    offset: u64,
) -> Result<Vec<u8>> {
    let raw_len = raw_len as usize;
    let fail = |reason: String| {
        DecompressSnafu {
            offset,
            codec: codec.name(),
            reason,
        }
        .fail()
    };
    let out = match codec {
        RecordCodec::None => return Ok(stored.to_vec()),
        RecordCodec::Lz4 => {
            let mut out = vec![0; raw_len];
            match lz4_flex::block::decompress_into(stored, &mut out) {
                Ok(len) if len == raw_len => out,
                Ok(len) => return fail(format!("{len} bytes, the header says {raw_len}")),
                Err(err) => return fail(err.to_string()),
            }
        }
        RecordCodec::Zstd => {
            // The output goes into the spare capacity, never past it: zstd
            // refuses a frame that would produce more.
            let mut out = Vec::with_capacity(raw_len);
            let decompressed = ZSTD_DECOMPRESSOR.with_borrow_mut(|slot| {
                if slot.is_none() {
                    *slot = Some(zstd::bulk::Decompressor::new()?);
                }
                let decompressor = slot.as_mut().expect("set above");
                decompressor.decompress_to_buffer(stored, &mut out)
            });
            match decompressed {
                Ok(len) if len == raw_len => out,
                Ok(len) => return fail(format!("{len} bytes, the header says {raw_len}")),
                Err(err) => return fail(err.to_string()),
            }
        }
    };
    Ok(out)
}
