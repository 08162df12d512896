//! The int8 plane kernels (`int8_depthwise.rs`) in 256-bit AVX2 code, for CPUs without
//! AVX-512: the same phase planes, stage and operands, each 16-output vector as two halves of
//! eight (a 64-byte max-pool vector as two of 32). AVX2 has no byte down-conversion, so a half
//! of i32 outputs, already inside the output type's range, narrows by the saturating packs of
//! that type (which then only narrow), and the stage's rows are copied out by whole 32-byte moves
//! with an overlapping last one instead of masked moves.

use iced_x86::code_asm::*;

use super::CodegenError;
use super::int8_layout::PlaneOp;
use super::wide::{YMM, asm_err};

/// Narrows the eight in-range i32 of `a` to bytes in its low quadword (of the signed or
/// unsigned type) and stores them at `at`.
fn store_bytes(x: &mut CodeAssembler, a: usize, signed: bool, at: AsmMemoryOperand) -> Result<(), CodegenError> {
    let (y, xa) = (YMM[a], XMM[a]);
    if signed {
        x.vpackssdw(y, y, y).map_err(asm_err)?;
        x.vpermq(y, y, 0x08).map_err(asm_err)?;
        x.vpacksswb(xa, xa, xa).map_err(asm_err)?;
    } else {
        x.vpackusdw(y, y, y).map_err(asm_err)?;
        x.vpermq(y, y, 0x08).map_err(asm_err)?;
        x.vpackuswb(xa, xa, xa).map_err(asm_err)?;
    }
    x.vmovq(at, xa).map_err(asm_err)
}

const XMM: [AsmRegisterXmm; 16] =
    [xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7, xmm8, xmm9, xmm10, xmm11, xmm12, xmm13, xmm14, xmm15];

/// The plane kernel of `op` over `vectors` vectors with taps at byte offsets `taps`; outputs
/// of Conv and Average narrow to i8 (`signed`) or u8. Signature and operands as
/// `int8_depthwise.rs`'s `QDwPlaneKernel`.
// `h` picks both a half's register and its offset.
#[allow(clippy::needless_range_loop)]
pub fn assemble_plane(op: PlaneOp, vectors: usize, taps: &[i32], signed: bool) -> Result<Vec<u8>, CodegenError> {
    let mut x = CodeAssembler::new(64).map_err(asm_err)?;
    // ymm0/1 the halves' sums, ymm2 a tap's widened bytes, ymm3 a weight, ymm8.. the consts.
    let (c0, c1, c2, c3, c4, c5) = (YMM[8], YMM[9], YMM[10], YMM[11], YMM[12], YMM[13]);
    let (tmp, w) = (YMM[2], YMM[3]);
    match op {
        PlaneOp::Conv => {
            // bias, multiplier, low, high, zero point
            x.vpbroadcastd(c0, dword_ptr(rcx)).map_err(asm_err)?;
            x.vbroadcastss(c1, dword_ptr(r8)).map_err(asm_err)?;
            x.vbroadcastss(c2, dword_ptr(r9)).map_err(asm_err)?;
            x.vbroadcastss(c3, dword_ptr(r9 + 4)).map_err(asm_err)?;
            x.vpbroadcastd(c4, dword_ptr(r9 + 8)).map_err(asm_err)?;
        }
        PlaneOp::Average => {
            // x scale, y scale, y zero, low, high, padding zero point
            for (i, r) in [c0, c1, c2, c3, c4].into_iter().enumerate() {
                x.vbroadcastss(r, dword_ptr(rcx + 4 * i as i32)).map_err(asm_err)?;
            }
            x.vpbroadcastd(c5, dword_ptr(rcx + 20)).map_err(asm_err)?;
        }
        PlaneOp::Max { .. } => {}
    }
    let lanes = op.lanes() as i32;
    let mut top = x.create_label();
    x.mov(r10, vectors as u64).map_err(asm_err)?;
    x.set_label(&mut top).map_err(asm_err)?;
    match op {
        PlaneOp::Conv => {
            for (t, &off) in taps.iter().enumerate() {
                x.vpbroadcastd(w, dword_ptr(rdx + 4 * t as i32)).map_err(asm_err)?;
                for h in 0..2 {
                    let src = qword_ptr(rdi + off + 8 * h as i32);
                    // The first tap starts the sum.
                    let dst = if t == 0 { YMM[h] } else { tmp };
                    x.vpmovzxbd(dst, src).map_err(asm_err)?;
                    x.vpmulld(dst, dst, w).map_err(asm_err)?;
                    if t > 0 {
                        x.vpaddd(YMM[h], YMM[h], tmp).map_err(asm_err)?;
                    }
                }
            }
            for h in 0..2 {
                let a = YMM[h];
                x.vpaddd(a, a, c0).map_err(asm_err)?;
                super::int8_arith::requantize(&mut x, a, [c1, c2, c3, c4])?;
                store_bytes(&mut x, h, signed, qword_ptr(rsi + 8 * h as i32))?;
            }
        }
        PlaneOp::Average => {
            for (t, &off) in taps.iter().enumerate() {
                for h in 0..2 {
                    // The reference's `sum += xs * (x - xz)`, from the first tap on.
                    let dst = if t == 0 { YMM[h] } else { tmp };
                    x.vpmovzxbd(dst, qword_ptr(rdi + off + 8 * h as i32)).map_err(asm_err)?;
                    x.vpsubd(dst, dst, c5).map_err(asm_err)?;
                    x.vcvtdq2ps(dst, dst).map_err(asm_err)?;
                    x.vmulps(dst, dst, c0).map_err(asm_err)?;
                    if t > 0 {
                        x.vaddps(YMM[h], YMM[h], tmp).map_err(asm_err)?;
                    }
                }
            }
            for h in 0..2 {
                let a = YMM[h];
                // sum / count / y_scale + y_zero, then the saturation.
                x.vdivps(a, a, ymmword_ptr(rdx + 32 * h as i32)).map_err(asm_err)?;
                x.vdivps(a, a, c1).map_err(asm_err)?;
                x.vaddps(a, a, c2).map_err(asm_err)?;
                x.vmaxps(a, a, c3).map_err(asm_err)?;
                x.vminps(a, a, c4).map_err(asm_err)?;
                x.vcvtps2dq(a, a).map_err(asm_err)?;
                store_bytes(&mut x, h, signed, qword_ptr(rsi + 8 * h as i32))?;
            }
            x.add(rdx, 64).map_err(asm_err)?;
        }
        PlaneOp::Max { signed } => {
            for (t, &off) in taps.iter().enumerate() {
                for h in 0..2 {
                    let src = ymmword_ptr(rdi + off + 32 * h as i32);
                    match (t, signed) {
                        (0, _) => x.vmovdqu(YMM[h], src),
                        (_, true) => x.vpmaxsb(YMM[h], YMM[h], src),
                        (_, false) => x.vpmaxub(YMM[h], YMM[h], src),
                    }
                    .map_err(asm_err)?;
                }
            }
            for h in 0..2 {
                x.vmovdqu(ymmword_ptr(rsi + 32 * h as i32), YMM[h]).map_err(asm_err)?;
            }
        }
    }
    x.add(rdi, lanes).map_err(asm_err)?;
    x.add(rsi, lanes).map_err(asm_err)?;
    x.dec(r10).map_err(asm_err)?;
    x.jnz(top).map_err(asm_err)?;
    x.vzeroupper().map_err(asm_err)?;
    x.ret().map_err(asm_err)?;
    x.assemble(0).map_err(asm_err)
}

/// Copies `rows` rows of `len` bytes from pitch `from` to pitch `to` (nothing written past a
/// row): whole 32-byte moves, then the last 32 bytes of the row again (overlapping) where the
/// row has them, else eight and one byte at a time. `extern "sysv64" fn(src, dst)`.
pub fn assemble_rows_copy(rows: usize, len: usize, from: usize, to: usize) -> Result<Vec<u8>, CodegenError> {
    let mut x = CodeAssembler::new(64).map_err(asm_err)?;
    if rows > 0 && len > 0 {
        let mut top = x.create_label();
        x.mov(rcx, rows as u64).map_err(asm_err)?;
        x.set_label(&mut top).map_err(asm_err)?;
        for c in 0..len / 32 {
            x.vmovdqu(ymm0, ymmword_ptr(rdi + 32 * c as i32)).map_err(asm_err)?;
            x.vmovdqu(ymmword_ptr(rsi + 32 * c as i32), ymm0).map_err(asm_err)?;
        }
        if !len.is_multiple_of(32) {
            if len >= 32 {
                let last = (len - 32) as i32;
                x.vmovdqu(ymm0, ymmword_ptr(rdi + last)).map_err(asm_err)?;
                x.vmovdqu(ymmword_ptr(rsi + last), ymm0).map_err(asm_err)?;
            } else {
                for o in (0..len / 8).map(|i| 8 * i as i32) {
                    x.mov(rax, qword_ptr(rdi + o)).map_err(asm_err)?;
                    x.mov(qword_ptr(rsi + o), rax).map_err(asm_err)?;
                }
                for o in (len / 8 * 8..len).map(|i| i as i32) {
                    x.mov(al, byte_ptr(rdi + o)).map_err(asm_err)?;
                    x.mov(byte_ptr(rsi + o), al).map_err(asm_err)?;
                }
            }
        }
        x.add(rdi, from as i32).map_err(asm_err)?;
        x.add(rsi, to as i32).map_err(asm_err)?;
        x.dec(rcx).map_err(asm_err)?;
        x.jnz(top).map_err(asm_err)?;
    }
    x.vzeroupper().map_err(asm_err)?;
    x.ret().map_err(asm_err)?;
    x.assemble(0).map_err(asm_err)
}
