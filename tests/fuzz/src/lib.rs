//! Helpers shared by the fuzz targets.

/// Splits `stream` into reads: one byte at a time for seed 0, else reads of
/// pseudo-random sizes from 1 to 32.
pub fn split(stream: &[u8], seed: u8) -> Vec<&[u8]> {
    if seed == 0 {
        return stream.chunks(1).collect();
    }
    let mut state = u32::from(seed).wrapping_mul(0x9E37_79B9) | 1;
    let mut chunks = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let size = (1 + (state % 32) as usize).min(rest.len());
        let (chunk, tail) = rest.split_at(size);
        chunks.push(chunk);
        rest = tail;
    }
    chunks
}
