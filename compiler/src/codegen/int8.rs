//! int8 GEMMs on AVX512-VNNI: the operand layouts and the register tile that multiplies
//! unsigned activations by signed weights into exact i32 sums and requantises them.
//!
//! VPDPBUSD adds to each i32 lane the four products of four unsigned bytes of its first source
//! by four signed bytes of its second, without saturation (four products of at most 255 x 128
//! fit easily), so the sums are exact and wrap only as i32 arithmetic does. The tile mirrors the
//! bf16 one (`bf16.rs`), four k per lane instead of two:
//! - A, the weights (s8, constant), is packed at compile time in quads: panel p, quad q, row r
//!   holds `A[12p + r][4q .. 4q + 4]` as one dword, broadcast by the instruction itself
//!   (`{1to16}`), zero past K and past the last row ([`quad_a_offset`]).
//! - B, the activations (u8; s8 ones shifted by 128), comes as quad panels: quad row q holds, for
//!   each of the panel's 32 columns, the four bytes `B[4q .. 4q + 4][c]` (128 bytes a row).
//! - The zero points fold into a per-row i32 bias: with weights of zero point 0, `sum (x - zx) w
//!   = sum x' w - (zx + shift) sum w`, where x' is the unsigned byte the tile multiplied.
//! - The epilogue adds the bias, converts to f32, multiplies by the row's multiplier, clamps to
//!   the output range less the zero point (NaN giving the low end), rounds half to even
//!   (VCVTPS2DQ under the default MXCSR), adds the zero point and stores bytes: the reference's
//!   `requantize` exactly.

use iced_x86::code_asm::*;

use super::CodegenError;
use super::wide::{MR_512, ZMM, asm_err};

/// Rows of the int8 register tile (as the f32 and bf16 AVX-512 tiles).
pub const MR_INT8: usize = MR_512;
/// Bytes of one quad row of a B panel: 32 columns of four bytes.
pub const QUAD_ROW_BYTES: usize = 128;

/// Whether this CPU runs the VNNI tile (AVX-512 F and BW, and AVX512-VNNI).
pub fn host_has_vnni() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vnni")
}

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

/// What the tile writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Int8Out {
    /// The i32 sums (ldc in bytes, rows of i32).
    Sums,
    /// Requantised bytes, signed (i8) or unsigned (u8).
    Requant { signed: bool },
}

/// The register tile: `rows` (1..=12) x `cols` (16 or 32) outputs.
///
/// `extern "sysv64" fn(a: *const i8, b: *const u8, c: *mut u8, ldc: usize, quads: usize,
/// bias: *const i32, mult: *const f32, consts: *const f32)`: `quads` quad steps of K; `bias`
/// and `mult` per row (bias also for `Sums`; `mult` and `consts` unused there); `consts` holds
/// the low and high output bound less the zero point (f32) and the zero point (i32 bits).
#[derive(Clone, Debug)]
pub struct VnniMicrokernel {
    pub rows: usize,
    pub cols: usize,
    pub out: Int8Out,
}

impl VnniMicrokernel {
    pub fn assemble(&self) -> Result<Vec<u8>, CodegenError> {
        let rows = self.rows;
        assert!((1..=MR_INT8).contains(&rows), "an int8 tile has 1 to {MR_INT8} rows");
        assert!(self.cols == 16 || self.cols == 32, "an int8 tile has 16 or 32 columns");
        let vecs = self.cols / 16;
        let a_step = (MR_INT8 * 4) as i32;
        let b_step = QUAD_ROW_BYTES as i32;
        let mut x = CodeAssembler::new(64).map_err(asm_err)?;
        let acc = |r: usize, v: usize| ZMM[2 * r + v];
        let (b0, b1) = (ZMM[24], ZMM[25]);
        for r in 0..rows {
            for v in 0..vecs {
                x.vpxord(acc(r, v), acc(r, v), acc(r, v)).map_err(asm_err)?;
            }
        }
        let step = |x: &mut CodeAssembler, da: i32, db: i32| -> Result<(), CodegenError> {
            x.vmovdqu8(b0, zmmword_ptr(rsi + db)).map_err(asm_err)?;
            if vecs == 2 {
                x.vmovdqu8(b1, zmmword_ptr(rsi + db + 64)).map_err(asm_err)?;
            }
            for r in 0..rows {
                for (v, b) in [b0, b1].into_iter().enumerate().take(vecs) {
                    x.vpdpbusd(acc(r, v), b, dword_bcst(rdi + da + 4 * r as i32)).map_err(asm_err)?;
                }
            }
            Ok(())
        };
        let (mut main, mut tail, mut tail_loop, mut store) =
            (x.create_label(), x.create_label(), x.create_label(), x.create_label());
        x.cmp(r8, 4).map_err(asm_err)?;
        x.jb(tail).map_err(asm_err)?;
        x.set_label(&mut main).map_err(asm_err)?;
        for u in 0..4 {
            // B four quad rows ahead of this one, A one panel row of four quads ahead.
            x.prefetcht0(byte_ptr(rsi + 16 * b_step + u * b_step)).map_err(asm_err)?;
            x.prefetcht0(byte_ptr(rsi + 16 * b_step + u * b_step + 64)).map_err(asm_err)?;
            if u * 64 < 4 * a_step {
                x.prefetcht0(byte_ptr(rdi + 16 * a_step + u * 64)).map_err(asm_err)?;
            }
            step(&mut x, u * a_step, u * b_step)?;
        }
        x.add(rdi, 4 * a_step).map_err(asm_err)?;
        x.add(rsi, 4 * b_step).map_err(asm_err)?;
        x.sub(r8, 4).map_err(asm_err)?;
        x.cmp(r8, 4).map_err(asm_err)?;
        x.jae(main).map_err(asm_err)?;
        x.set_label(&mut tail).map_err(asm_err)?;
        x.test(r8, r8).map_err(asm_err)?;
        x.jz(store).map_err(asm_err)?;
        x.set_label(&mut tail_loop).map_err(asm_err)?;
        step(&mut x, 0, 0)?;
        x.add(rdi, a_step).map_err(asm_err)?;
        x.add(rsi, b_step).map_err(asm_err)?;
        x.dec(r8).map_err(asm_err)?;
        x.jnz(tail_loop).map_err(asm_err)?;
        x.set_label(&mut store).map_err(asm_err)?;
        // The bias, per row, in both output forms.
        for r in 0..rows {
            for v in 0..vecs {
                x.vpaddd(acc(r, v), acc(r, v), dword_bcst(r9 + 4 * r as i32)).map_err(asm_err)?;
            }
        }
        match self.out {
            Int8Out::Sums => {
                for r in 0..rows {
                    for v in 0..vecs {
                        x.vmovdqu32(zmmword_ptr(rdx + 64 * v as i32), acc(r, v)).map_err(asm_err)?;
                    }
                    x.add(rdx, rcx).map_err(asm_err)?;
                }
            }
            Int8Out::Requant { .. } => {
                let (lo, hi, zp) = (ZMM[26], ZMM[27], ZMM[28]);
                x.mov(rax, qword_ptr(rsp + 16)).map_err(asm_err)?;
                x.vbroadcastss(lo, dword_ptr(rax)).map_err(asm_err)?;
                x.vbroadcastss(hi, dword_ptr(rax + 4)).map_err(asm_err)?;
                x.vpbroadcastd(zp, dword_ptr(rax + 8)).map_err(asm_err)?;
                x.mov(rax, qword_ptr(rsp + 8)).map_err(asm_err)?;
                for r in 0..rows {
                    for v in 0..vecs {
                        let a = acc(r, v);
                        x.vcvtdq2ps(a, a).map_err(asm_err)?;
                        x.vmulps(a, a, dword_bcst(rax + 4 * r as i32)).map_err(asm_err)?;
                        // vmaxps returns its second source when either is NaN: the low bound.
                        x.vmaxps(a, a, lo).map_err(asm_err)?;
                        x.vminps(a, a, hi).map_err(asm_err)?;
                        x.vcvtps2dq(a, a).map_err(asm_err)?;
                        x.vpaddd(a, a, zp).map_err(asm_err)?;
                        // In range now: keeping the low byte is the conversion.
                        x.vpmovdb(xmmword_ptr(rdx + 16 * v as i32), a).map_err(asm_err)?;
                    }
                    x.add(rdx, rcx).map_err(asm_err)?;
                }
            }
        }
        x.vzeroupper().map_err(asm_err)?;
        x.ret().map_err(asm_err)?;
        x.assemble(0).map_err(asm_err)
    }
}

#[cfg(test)]
mod tests {
    use incept_ir::DType;
    use incept_ir::ops::quant::{qrange, requantize};
    use incept_runtime::code::ExecutableCode;

    use super::*;

    type Tile =
        unsafe extern "sysv64" fn(*const i8, *const u8, *mut u8, usize, usize, *const i32, *const f32, *const f32);

    /// Every row count, both widths, K around the quad and unroll steps, both output forms and
    /// signs, against exact i32 sums and the reference's `requantize`: equal, byte for byte, and
    /// nothing written outside the tile.
    #[test]
    fn vnni_tiles_match_exact_sums_and_the_reference_requantisation() {
        if !host_has_vnni() {
            println!("skipped: this CPU has no AVX512-VNNI");
            return;
        }
        let mut s = incept_ir::text::parse::SplitMix(7);
        for (rows, cols) in (1..=MR_INT8).flat_map(|r| [(r, 16), (r, 32)]) {
            for out in [Int8Out::Sums, Int8Out::Requant { signed: false }, Int8Out::Requant { signed: true }] {
                let code = VnniMicrokernel { rows, cols, out }.assemble().expect("assemble");
                let exec = ExecutableCode::new(&code).expect("map");
                // SAFETY: the code is a function with the documented signature.
                let f: Tile = unsafe { std::mem::transmute(exec.address(0).expect("address")) };
                for k in [1usize, 3, 4, 5, 15, 16, 17, 33, 64, 130] {
                    let a: Vec<i8> = (0..MR_INT8 * k).map(|_| (s.next_u64() % 256) as u8 as i8).collect();
                    let b: Vec<u8> = (0..k * 32).map(|_| (s.next_u64() % 256) as u8).collect();
                    let pa = pack_quad_a(&a, MR_INT8, k);
                    let quads = k.div_ceil(4);
                    let mut pb = vec![0u8; quads * QUAD_ROW_BYTES];
                    for kk in 0..k {
                        for c in 0..32 {
                            pb[(kk / 4) * QUAD_ROW_BYTES + c * 4 + kk % 4] = b[kk * 32 + c];
                        }
                    }
                    let bias: Vec<i32> = (0..MR_INT8).map(|r| (r as i32 - 6) * 1000).collect();
                    // Multipliers from tiny to large, so that rows both saturate and do not.
                    let mult: Vec<f32> = (0..MR_INT8).map(|r| 1.5e-5 * 4f32.powi(r as i32 % 8)).collect();
                    let (dtype, zp) = match out {
                        Int8Out::Requant { signed: true } => (DType::I8, -3),
                        _ => (DType::U8, 121),
                    };
                    let (lo, hi) = qrange(dtype).expect("range");
                    let consts = [(lo - zp) as f32, (hi - zp) as f32, f32::from_bits(zp as u32)];
                    let elem = if out == Int8Out::Sums { 4 } else { 1 };
                    let ldc = (cols + 5) * elem;
                    let before = vec![0xA5u8; (MR_INT8 + 1) * ldc];
                    let mut c = before.clone();
                    // SAFETY: the panels hold the padded K; C has MR + 1 rows of ldc bytes.
                    unsafe {
                        f(
                            pa.as_ptr(),
                            pb.as_ptr(),
                            c.as_mut_ptr(),
                            ldc,
                            quads,
                            bias.as_ptr(),
                            mult.as_ptr(),
                            consts.as_ptr(),
                        )
                    };
                    for r in 0..=MR_INT8 {
                        for j in 0..ldc / elem {
                            let at = r * ldc + j * elem;
                            if r >= rows || j >= cols {
                                assert_eq!(
                                    c[at..at + elem],
                                    before[at..at + elem],
                                    "{rows}x{cols} {out:?}: C[{r}][{j}] written"
                                );
                                continue;
                            }
                            let sum = (0..k).fold(bias[r], |acc, kk| {
                                acc.wrapping_add(a[r * k + kk] as i32 * b[kk * 32 + j] as i32)
                            });
                            match out {
                                Int8Out::Sums => {
                                    let got = i32::from_le_bytes(c[at..at + 4].try_into().expect("4 bytes"));
                                    assert_eq!(got, sum, "{rows}x{cols} k {k}: C[{r}][{j}]");
                                }
                                Int8Out::Requant { signed } => {
                                    let want = requantize(sum, mult[r], zp, (lo, hi));
                                    let got = if signed { c[at] as i8 as i32 } else { c[at] as i32 };
                                    assert_eq!(got, want, "{rows}x{cols} k {k} {out:?}: C[{r}][{j}] (sum {sum})");
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
