//! What the int8 kernels of both widths share (`int8.rs` and `int8_avx2.rs`, the plane and
//! elementwise kernels and their AVX2 forms): the rows of a tile, the packed layouts of A
//! (quads for VPDPBUSD, 16-bit pairs for VPMADDWD) and of B's quad panels, what a tile writes,
//! and what a plane or binary kernel computes.

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

/// The quad rows of a full B panel of a pointwise conv in AVX2 machine code: for each of
/// `quads` quads, the four channel rows at `src + (4q + c) plane` (32 bytes each, the top bit
/// flipped with `flip`) interleaved byte by byte into the 128 bytes at `dst + 128 q`. Per quad:
/// four loads, byte then word unpacks within 128-bit lanes (columns 0-7 | 16-23 and 8-15 |
/// 24-31), and four lane permutes back into column order. `extern "sysv64" fn(src: *const u8,
/// dst: *mut u8)`.
#[derive(Clone, Debug)]
pub struct QuadRowsKernel {
    pub quads: usize,
    pub plane: usize,
    pub flip: bool,
}

impl QuadRowsKernel {
    pub fn assemble(&self) -> Result<Vec<u8>, super::CodegenError> {
        use iced_x86::code_asm::*;

        use super::wide::{YMM, asm_err};
        assert!(self.quads > 0, "a quad rows kernel interleaves at least one quad");
        let mut x = CodeAssembler::new(64).map_err(asm_err)?;
        let y = |i: usize| YMM[i];
        if self.flip {
            x.mov(eax, 0x80u32).map_err(asm_err)?;
            x.vmovd(xmm15, eax).map_err(asm_err)?;
            x.vpbroadcastb(y(15), xmm15).map_err(asm_err)?;
        }
        x.mov(r8, self.plane as u64).map_err(asm_err)?;
        x.lea(r9, ptr(r8 + r8 * 2)).map_err(asm_err)?;
        x.mov(rcx, self.quads as u64).map_err(asm_err)?;
        let mut top = x.create_label();
        x.set_label(&mut top).map_err(asm_err)?;
        x.vmovdqu(y(0), ymmword_ptr(rdi)).map_err(asm_err)?;
        x.vmovdqu(y(1), ymmword_ptr(rdi + r8)).map_err(asm_err)?;
        x.vmovdqu(y(2), ymmword_ptr(rdi + r8 * 2)).map_err(asm_err)?;
        x.vmovdqu(y(3), ymmword_ptr(rdi + r9)).map_err(asm_err)?;
        if self.flip {
            for i in 0..4 {
                x.vpxor(y(i), y(i), y(15)).map_err(asm_err)?;
            }
        }
        x.vpunpcklbw(y(4), y(0), y(1)).map_err(asm_err)?;
        x.vpunpckhbw(y(5), y(0), y(1)).map_err(asm_err)?;
        x.vpunpcklbw(y(6), y(2), y(3)).map_err(asm_err)?;
        x.vpunpckhbw(y(7), y(2), y(3)).map_err(asm_err)?;
        // Columns 0-3 | 16-19, 4-7 | 20-23, 8-11 | 24-27, 12-15 | 28-31.
        x.vpunpcklwd(y(0), y(4), y(6)).map_err(asm_err)?;
        x.vpunpckhwd(y(1), y(4), y(6)).map_err(asm_err)?;
        x.vpunpcklwd(y(2), y(5), y(7)).map_err(asm_err)?;
        x.vpunpckhwd(y(3), y(5), y(7)).map_err(asm_err)?;
        for (i, (a, b, sel)) in [(0, 1, 0x20), (2, 3, 0x20), (0, 1, 0x31), (2, 3, 0x31)].into_iter().enumerate() {
            x.vperm2i128(y(4 + i), y(a), y(b), sel).map_err(asm_err)?;
            x.vmovdqu(ymmword_ptr(rsi + 32 * i as i32), y(4 + i)).map_err(asm_err)?;
        }
        x.lea(rdi, ptr(rdi + r8 * 4)).map_err(asm_err)?;
        x.add(rsi, QUAD_ROW_BYTES as i32).map_err(asm_err)?;
        x.dec(rcx).map_err(asm_err)?;
        x.jnz(top).map_err(asm_err)?;
        x.vzeroupper().map_err(asm_err)?;
        x.ret().map_err(asm_err)?;
        x.assemble(0).map_err(asm_err)
    }
}

impl super::KernelSpec for QuadRowsKernel {
    fn name(&self) -> String {
        let flip = if self.flip { " flipped" } else { "" };
        format!("int8 quad rows x{} of planes {}{flip} avx2", self.quads, self.plane)
    }
    fn emit(&self, _: &mut super::builder::Kb) {
        unreachable!("the quad rows are machine code (machine_code), not CLIF")
    }
    fn machine_code(&self) -> Option<Result<Vec<u8>, super::CodegenError>> {
        Some(self.assemble())
    }
    fn features(&self) -> &'static [&'static str] {
        &["avx2"]
    }
}

/// What a plane kernel computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlaneOp {
    /// The depthwise QLinearConv.
    Conv,
    /// QLinearAveragePool.
    Average,
    /// MaxPool of i8 (`signed`) or u8.
    Max { signed: bool },
}

impl PlaneOp {
    /// Outputs per vector.
    pub fn lanes(self) -> usize {
        if let PlaneOp::Max { .. } = self { 64 } else { 16 }
    }
}

/// What a QLinearAdd/Mul rows kernel computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QBinaryOp {
    /// QLinearAdd; `swap`: A takes B's inner place (see `QLinearBinary::swaps`).
    Add {
        swap: bool,
    },
    Mul,
}
