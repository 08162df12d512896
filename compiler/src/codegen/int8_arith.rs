//! The int8 kernels' f32 arithmetic, written once for both register widths (zmm on AVX-512,
//! ymm on AVX2): the requantisation every conv kernel ends with, and QLinearAdd/Mul of two
//! widened operands. Each mirrors the reference (`incept_ir::ops::quant::requantize`,
//! `QLinearBinary::value`) operation for operation, so the two widths cannot drift apart.

use iced_x86::code_asm::asm_traits::*;
use iced_x86::code_asm::*;

use super::CodegenError;
use super::int8_layout::QBinaryOp;
use super::wide::asm_err;

/// The operations both helpers use, on registers of one width.
pub(super) trait Lanes<R>:
    CodeAsmVcvtdq2ps<R, R>
    + CodeAsmVcvtps2dq<R, R>
    + CodeAsmVmulps<R, R, R>
    + CodeAsmVaddps<R, R, R>
    + CodeAsmVmaxps<R, R, R>
    + CodeAsmVminps<R, R, R>
    + CodeAsmVpaddd<R, R, R>
    + CodeAsmVpsubd<R, R, R>
    + CodeAsmVpmulld<R, R, R>
    + CodeAsmVmovaps<R, R>
    + CodeAsmVfmadd231ps<R, R, R>
{
}

impl Lanes<AsmRegisterZmm> for CodeAssembler {}
impl Lanes<AsmRegisterYmm> for CodeAssembler {}

/// i32 sums in `a` requantised in place: `f32(a) * mult`, clamped to `[lo, hi]` (the output's
/// bounds less its zero point; NaN gives `lo`), rounded half to even (the default MXCSR), plus
/// the zero point `zp` (i32): in the output's range.
pub(super) fn requantize<R: Copy>(x: &mut CodeAssembler, a: R, [mult, lo, hi, zp]: [R; 4]) -> Result<(), CodegenError>
where
    CodeAssembler: Lanes<R>,
{
    x.vcvtdq2ps(a, a).map_err(asm_err)?;
    x.vmulps(a, a, mult).map_err(asm_err)?;
    // vmaxps returns its second source when either is NaN: the low bound.
    x.vmaxps(a, a, lo).map_err(asm_err)?;
    x.vminps(a, a, hi).map_err(asm_err)?;
    x.vcvtps2dq(a, a).map_err(asm_err)?;
    x.vpaddd(a, a, zp).map_err(asm_err)
}

/// QLinearAdd/Mul's constants in registers: `ra`, `rb`, `fixed` (Add), `m`, `zc` (Mul), the
/// output's bounds `lo`, `hi` (f32), the zero points `za`, `zb` (i32, Mul).
#[derive(Clone, Copy)]
pub(super) struct BinaryConsts<R> {
    pub ra: R,
    pub rb: R,
    pub fixed: R,
    pub m: R,
    pub zc: R,
    pub lo: R,
    pub hi: R,
    pub za: R,
    pub zb: R,
}

/// QLinearAdd or QLinearMul of the widened integers in `va` and `vb` (clobbered) into `t`, as
/// i32 in the output's range: Add `a ra + (b rb + fixed)` fused, inner product first (with
/// `swap`, A takes B's inner place); Mul `f32((a - za)(b - zb)) m + zc`; then the saturation.
pub(super) fn qbinary<R: Copy>(
    x: &mut CodeAssembler,
    op: QBinaryOp,
    [va, vb, t]: [R; 3],
    c: &BinaryConsts<R>,
) -> Result<(), CodegenError>
where
    CodeAssembler: Lanes<R>,
{
    match op {
        QBinaryOp::Add { swap } => {
            x.vcvtdq2ps(va, va).map_err(asm_err)?;
            x.vcvtdq2ps(vb, vb).map_err(asm_err)?;
            x.vmovaps(t, c.fixed).map_err(asm_err)?;
            let order = if swap { [(va, c.ra), (vb, c.rb)] } else { [(vb, c.rb), (va, c.ra)] };
            for (v, r) in order {
                x.vfmadd231ps(t, v, r).map_err(asm_err)?;
            }
        }
        QBinaryOp::Mul => {
            x.vpsubd(va, va, c.za).map_err(asm_err)?;
            x.vpsubd(vb, vb, c.zb).map_err(asm_err)?;
            x.vpmulld(t, va, vb).map_err(asm_err)?;
            x.vcvtdq2ps(t, t).map_err(asm_err)?;
            x.vmulps(t, t, c.m).map_err(asm_err)?;
            x.vaddps(t, t, c.zc).map_err(asm_err)?;
        }
    }
    // vmaxps returns its second source when either is NaN: the low bound.
    x.vmaxps(t, t, c.lo).map_err(asm_err)?;
    x.vminps(t, t, c.hi).map_err(asm_err)?;
    x.vcvtps2dq(t, t).map_err(asm_err)
}
