//! The int8 tiles' shared contract (`int8.rs`, `int8_avx2.rs`): the rows of a tile, the
//! packed layouts of A (quads for VPDPBUSD, 16-bit pairs for VPMADDWD) and of B's quad panels,
//! and what a tile writes.

use super::wide::MR_512;

/// Rows of the int8 register tile (as the f32 and bf16 AVX-512 tiles).
pub const MR_INT8: usize = MR_512;
/// Bytes of one quad row of a B panel: 32 columns of four bytes.
pub const QUAD_ROW_BYTES: usize = 128;

/// The byte offset of A's (row r, k) in a packed panel of `k` (any) columns.
pub fn quad_a_offset(r: usize, k: usize) -> usize {
    (k / 4) * MR_INT8 * 4 + r * 4 + k % 4
}

/// Packs rows of s8 weights (`rows` x `k`, row-major) into quad panels.
pub fn pack_quad_a(w: &[i8], rows: usize, k: usize) -> Vec<i8> {
    let panel = k.div_ceil(4) * MR_INT8 * 4;
    let mut out = vec![0i8; rows.div_ceil(MR_INT8) * panel];
    for r in 0..rows {
        for kk in 0..k {
            out[(r / MR_INT8) * panel + quad_a_offset(r % MR_INT8, kk)] = w[r * k + kk];
        }
    }
    out
}

/// The byte offset of A's (row r, k) in a VPMADDWD panel: per quad q and row r, 8 bytes
/// holding `w[4q]`, `w[4q + 2]`, `w[4q + 1]`, `w[4q + 3]` as i16 (the even pair, then the odd).
pub fn pair_a_offset(r: usize, k: usize) -> usize {
    let slot = match k % 4 {
        0 => 0,
        2 => 1,
        1 => 2,
        _ => 3,
    };
    (k / 4) * MR_INT8 * 8 + r * 8 + slot * 2
}

/// Packs rows of s8 weights (`rows` x `k`, row-major) into VPMADDWD panels (little-endian i16).
pub fn pack_pair_a(w: &[i8], rows: usize, k: usize) -> Vec<u8> {
    let panel = k.div_ceil(4) * MR_INT8 * 8;
    let mut out = vec![0u8; rows.div_ceil(MR_INT8) * panel];
    for r in 0..rows {
        for kk in 0..k {
            let at = (r / MR_INT8) * panel + pair_a_offset(r % MR_INT8, kk);
            out[at..at + 2].copy_from_slice(&(w[r * k + kk] as i16).to_le_bytes());
        }
    }
    out
}

/// What the tile writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Int8Out {
    /// The i32 sums (ldc in bytes, rows of i32).
    Sums,
    /// Requantised bytes, signed (i8) or unsigned (u8).
    Requant { signed: bool },
}
