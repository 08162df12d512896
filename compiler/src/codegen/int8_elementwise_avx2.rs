//! QLinearAdd and QLinearMul rows (`int8_elementwise.rs`'s `QBinaryKernel`)
//! in 256-bit AVX2 code: eight lanes at a time in the same f32 arithmetic, the last few one at
//! a time through lane 0 of the same code (AVX2 has no masked loads of bytes).

use iced_x86::code_asm::*;

use super::CodegenError;
use super::int8_arith::{BinaryConsts, qbinary};
use super::int8_layout::QBinaryOp;
use super::wide::{YMM, asm_err};

/// `extern "sysv64" fn(a, b, c, count, consts)` as the AVX-512 kernel's; `a_scalar` /
/// `b_scalar`: that operand is one value for the whole row.
pub fn assemble_binary(op: QBinaryOp, signed: bool, a_scalar: bool, b_scalar: bool) -> Result<Vec<u8>, CodegenError> {
    let mut x = CodeAssembler::new(64).map_err(asm_err)?;
    let (ra, rb, fixed, m, zc, lo, hi, za, zb) =
        (YMM[3], YMM[4], YMM[5], YMM[6], YMM[7], YMM[8], YMM[9], YMM[10], YMM[11]);
    // The scalar operands' values (i32), loaded once.
    let (sa, sb) = (YMM[12], YMM[13]);
    for (i, r) in [ra, rb, fixed, m, zc, lo, hi].into_iter().enumerate() {
        x.vbroadcastss(r, dword_ptr(r8 + 4 * i as i32)).map_err(asm_err)?;
    }
    x.vpbroadcastd(za, dword_ptr(r8 + 28)).map_err(asm_err)?;
    x.vpbroadcastd(zb, dword_ptr(r8 + 32)).map_err(asm_err)?;
    let load_byte = |x: &mut CodeAssembler, src: AsmRegister64| -> Result<(), CodegenError> {
        if signed { x.movsx(eax, byte_ptr(src)) } else { x.movzx(eax, byte_ptr(src)) }.map_err(asm_err)
    };
    for (scalar, src, dst, xdst) in [(a_scalar, rdi, sa, xmm12), (b_scalar, rsi, sb, xmm13)] {
        if scalar {
            load_byte(&mut x, src)?;
            x.vmovd(xdst, eax).map_err(asm_err)?;
            x.vpbroadcastd(dst, xdst).map_err(asm_err)?;
        }
    }
    // Eight lanes (`one`: lane 0 alone, the byte loaded and stored through eax).
    let lanes = |x: &mut CodeAssembler, one: bool| -> Result<(), CodegenError> {
        let (va, vb, t) = (YMM[0], YMM[1], YMM[2]);
        for (scalar, src, held, v, xv) in [(a_scalar, rdi, sa, va, xmm0), (b_scalar, rsi, sb, vb, xmm1)] {
            if scalar {
                x.vmovdqa(v, held).map_err(asm_err)?;
            } else if one {
                load_byte(x, src)?;
                x.vmovd(xv, eax).map_err(asm_err)?;
            } else if signed {
                x.vpmovsxbd(v, qword_ptr(src)).map_err(asm_err)?;
            } else {
                x.vpmovzxbd(v, qword_ptr(src)).map_err(asm_err)?;
            }
        }
        qbinary(x, op, [va, vb, t], &BinaryConsts { ra, rb, fixed, m, zc, lo, hi, za, zb })?;
        if one {
            x.vmovd(eax, xmm2).map_err(asm_err)?;
            return x.mov(byte_ptr(rdx), al).map_err(asm_err);
        }
        // In range now, so the saturating packs of the type only narrow.
        if signed {
            x.vpackssdw(t, t, t).map_err(asm_err)?;
            x.vpermq(t, t, 0x08).map_err(asm_err)?;
            x.vpacksswb(xmm2, xmm2, xmm2).map_err(asm_err)?;
        } else {
            x.vpackusdw(t, t, t).map_err(asm_err)?;
            x.vpermq(t, t, 0x08).map_err(asm_err)?;
            x.vpackuswb(xmm2, xmm2, xmm2).map_err(asm_err)?;
        }
        x.vmovq(qword_ptr(rdx), xmm2).map_err(asm_err)
    };
    let moving: Vec<AsmRegister64> =
        [(a_scalar, rdi), (b_scalar, rsi), (false, rdx)].into_iter().filter(|&(s, _)| !s).map(|(_, r)| r).collect();
    for (width, one) in [(8, false), (1, true)] {
        let (mut top, mut done) = (x.create_label(), x.create_label());
        x.cmp(rcx, width).map_err(asm_err)?;
        x.jb(done).map_err(asm_err)?;
        x.set_label(&mut top).map_err(asm_err)?;
        lanes(&mut x, one)?;
        for &r in &moving {
            x.add(r, width).map_err(asm_err)?;
        }
        x.sub(rcx, width).map_err(asm_err)?;
        x.cmp(rcx, width).map_err(asm_err)?;
        x.jae(top).map_err(asm_err)?;
        x.set_label(&mut done).map_err(asm_err)?;
    }
    x.vzeroupper().map_err(asm_err)?;
    x.ret().map_err(asm_err)?;
    x.assemble(0).map_err(asm_err)
}
