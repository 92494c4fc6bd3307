//! Workload helpers shared by segwal's criterion benches.
//!
//! Payloads are incompressible (a xorshift stream), so no layer can look
//! faster by compressing them.

/// `count` payloads of `len` pseudo-random bytes each, the same on every
/// run.
pub fn payloads(count: usize, len: usize) -> Vec<Vec<u8>> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..count)
        .map(|_| {
            (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect()
        })
        .collect()
}
