//! QuantizeLinear and DequantizeLinear as scalar loops with the reference's arithmetic (see
//! `incept_ir::ops::quant`): quantizing divides by the scale in f32, rounds half to even, adds
//! the zero point and saturates (NaN giving the type's low end); dequantizing converts
//! `q - zero_point` (an i32) to f32 and multiplies by the scale.

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::types::{F32, I32};
use cranelift_codegen::ir::{InstBuilder, Value};
use incept_ir::DType;
use incept_ir::ops::quant::qrange;

use crate::codegen::KernelSpec;
use crate::codegen::builder::{Kb, ro, rw};
use crate::codegen::kernels::typed::clif;

/// One Q or DQ over `n` elements of a tensor whose parameters repeat along one axis: element i
/// takes parameter `(i / inner) % channels` (per tensor: `channels` 1). Operands: X, scale
/// (f32), the zero point when `zero` (of the integer type), Y. One tile per 1024 elements.
#[derive(Clone, Debug)]
pub struct QuantSpec {
    /// Quantize (f32 to `int`) or dequantize (`int` to f32).
    pub quantize: bool,
    /// The integer side's type: i8, u8, i16, u16 (or i32 when dequantizing).
    pub int: DType,
    pub n: usize,
    pub channels: usize,
    pub inner: usize,
    pub zero: bool,
}

const TILE: usize = 1024;

impl QuantSpec {
    pub fn tiles(&self) -> usize {
        self.n.div_ceil(TILE)
    }
}

impl KernelSpec for QuantSpec {
    fn name(&self) -> String {
        let what = if self.quantize { "quantize f32->" } else { "dequantize f32<-" };
        format!("{what}{} {} ({} params every {})", self.int, self.n, self.channels, self.inner)
    }

    fn emit(&self, kb: &mut Kb) {
        let x = kb.operand(0);
        let scale = kb.operand(1);
        let zero = self.zero.then(|| kb.operand(2));
        let y = kb.operand(2 + self.zero as usize);
        let (ity, signed) = clif(self.int);
        let isz = self.int.size() as i64;
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, t| {
            let lo = kb.muli(t, TILE as i64);
            let hi = {
                let e = kb.addi(lo, TILE as i64);
                kb.mini(e, self.n as i64)
            };
            kb.for_range(lo, hi, 1, |kb, i| {
                let c = if self.channels == 1 {
                    kb.iconst(0)
                } else {
                    let (q, _) = kb.divmod(i, self.inner as i64);
                    kb.divmod(q, self.channels as i64).1
                };
                let sp = kb.elem(scale, c, 4);
                let s = kb.b.ins().load(F32, ro(), sp, 0);
                let z = match zero {
                    Some(zb) => {
                        let zp = kb.elem(zb, c, isz);
                        let z = kb.b.ins().load(ity, ro(), zp, 0);
                        widen32(kb, z, signed)
                    }
                    None => kb.b.ins().iconst(I32, 0),
                };
                if self.quantize {
                    let xp = kb.elem(x, i, 4);
                    let v = kb.b.ins().load(F32, ro(), xp, 0);
                    let d = kb.b.ins().fdiv(v, s);
                    let r = kb.b.ins().nearest(d);
                    let zf = kb.b.ins().fcvt_from_sint(F32, z);
                    let r = kb.b.ins().fadd(r, zf);
                    let q = saturate(kb, r, self.int);
                    let yp = kb.elem(y, i, isz);
                    kb.b.ins().store(rw(), q, yp, 0);
                } else {
                    let xp = kb.elem(x, i, isz);
                    let q = kb.b.ins().load(ity, ro(), xp, 0);
                    let q = widen32(kb, q, signed);
                    let d = kb.b.ins().isub(q, z);
                    let f = kb.b.ins().fcvt_from_sint(F32, d);
                    let v = kb.b.ins().fmul(f, s);
                    let yp = kb.elem(y, i, 4);
                    kb.b.ins().store(rw(), v, yp, 0);
                }
            });
        });
    }
}

/// An integer of at most 32 bits as i32 (sign- or zero-extended).
fn widen32(kb: &mut Kb, v: cranelift_codegen::ir::Value, signed: bool) -> cranelift_codegen::ir::Value {
    if kb.b.func.dfg.value_type(v) == I32 {
        return v;
    }
    if signed { kb.b.ins().sextend(I32, v) } else { kb.b.ins().uextend(I32, v) }
}

/// An f32 holding an integer value (already rounded) as the integer type `to` (i8, u8, i16,
/// u16): saturated to its range, NaN giving the low end, as the reference's `saturate`.
pub fn saturate(kb: &mut Kb, r: Value, to: DType) -> Value {
    saturate_to(kb, r, to, qrange(to).expect("a quantized type"))
}

/// [`saturate`] to `(lo, hi)`, a range within `to`'s (a QLinearConv's narrowed output range).
pub fn saturate_to(kb: &mut Kb, r: Value, to: DType, (lo, hi): (i32, i32)) -> Value {
    let q = kb.b.ins().fcvt_to_sint_sat(I32, r);
    let (l, h) = (kb.b.ins().iconst(I32, lo as i64), kb.b.ins().iconst(I32, hi as i64));
    let q = kb.b.ins().smax(q, l);
    let q = kb.b.ins().smin(q, h);
    let nan = kb.b.ins().fcmp(FloatCC::Unordered, r, r);
    let q = kb.b.ins().select(nan, l, q);
    let (ty, _) = clif(to);
    kb.b.ins().ireduce(ty, q)
}
