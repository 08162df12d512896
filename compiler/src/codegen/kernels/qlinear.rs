//! ONNX Runtime's QOperator ops (`incept_ir::ops::qlinear`) as scalar loops. An op whose
//! output depends on each input integer alone (QLinearSigmoid, QLinearLeakyRelu, a
//! QLinearConcat input) or on a pair of them (QLinearAdd, QLinearMul) reads a table that the
//! compiler fills from the reference's own arithmetic, so it is exact by construction; the pools,
//! the softmax and DynamicQuantizeLinear follow the reference's order of operations.

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::types::{F32, I8, I8X16, I32, I32X4, I64};
use cranelift_codegen::ir::{InstBuilder, Value};
use incept_ir::DType;

use crate::codegen::KernelSpec;
use crate::codegen::builder::{Kb, ro, rw};
use crate::codegen::kernels::nd::emit_offsets;
use crate::codegen::kernels::quant::saturate;
use crate::codegen::kernels::typed::clif;

const TILE: usize = 1024;

/// A byte of a u8 or i8 tensor as a table index 0..=255 (its bits).
fn byte_index(kb: &mut Kb, base: Value, i: Value) -> Value {
    let p = kb.elem(base, i, 1);
    let v = kb.b.ins().load(I8, ro(), p, 0);
    kb.b.ins().uextend(I64, v)
}

/// `y[o * total + offset + e] = T[x[o * chunk + e]]` for every outer index o and e < chunk: a
/// lookup (outer 1) or one input of a concat. Operands: X, T (256 bytes), Y. One tile per
/// 1024 elements.
#[derive(Clone, Debug)]
pub struct TableSpec {
    pub outer: usize,
    pub chunk: usize,
    pub total: usize,
    pub offset: usize,
}

impl TableSpec {
    pub fn tiles(&self) -> usize {
        (self.outer * self.chunk).div_ceil(TILE)
    }
}

impl KernelSpec for TableSpec {
    fn name(&self) -> String {
        format!("table {}x{} into {} at {}", self.outer, self.chunk, self.total, self.offset)
    }

    fn emit(&self, kb: &mut Kb) {
        let [x, t, y] = [kb.operand(0), kb.operand(1), kb.operand(2)];
        let n = (self.outer * self.chunk) as i64;
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, tile| {
            let lo = kb.muli(tile, TILE as i64);
            let hi = {
                let e = kb.addi(lo, TILE as i64);
                kb.mini(e, n)
            };
            kb.for_range(lo, hi, 1, |kb, i| {
                let b = byte_index(kb, x, i);
                let p = kb.elem(t, b, 1);
                let v = kb.b.ins().load(I8, ro(), p, 0);
                let (o, e) = kb.divmod(i, self.chunk as i64);
                let at = {
                    let r = kb.muli(o, self.total as i64);
                    let r = kb.add(r, e);
                    kb.addi(r, self.offset as i64)
                };
                let q = kb.elem(y, at, 1);
                kb.b.ins().store(rw(), v, q, 0);
            });
        });
    }
}

/// `y[t] = T[a[oa(t)] * 256 + b[ob(t)]]` over the broadcast output `dims` (the operands'
/// element strides per output dim, 0 where broadcast). Operands: A, B, T (65536 bytes), Y. One
/// tile per 1024 elements.
#[derive(Clone, Debug)]
pub struct PairTableSpec {
    pub dims: Vec<usize>,
    pub a_strides: Vec<isize>,
    pub b_strides: Vec<isize>,
}

impl PairTableSpec {
    fn n(&self) -> usize {
        self.dims.iter().product()
    }
    pub fn tiles(&self) -> usize {
        self.n().div_ceil(TILE)
    }
}

impl KernelSpec for PairTableSpec {
    fn name(&self) -> String {
        format!("pair table {:?}", self.dims)
    }

    fn emit(&self, kb: &mut Kb) {
        let [a, b, t, y] = [kb.operand(0), kb.operand(1), kb.operand(2), kb.operand(3)];
        let n = self.n() as i64;
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, tile| {
            let lo = kb.muli(tile, TILE as i64);
            let hi = {
                let e = kb.addi(lo, TILE as i64);
                kb.mini(e, n)
            };
            // Operands of the output's own shape are read at the output's index.
            let plain = crate::codegen::kernels::nd::broadcast_strides(&self.dims, &self.dims);
            let (a_plain, b_plain) = (self.a_strides == plain, self.b_strides == plain);
            kb.for_range(lo, hi, 1, |kb, i| {
                let refs = [self.a_strides.as_slice(), self.b_strides.as_slice()];
                let offs =
                    if a_plain && b_plain { vec![i, i] } else { emit_offsets(kb, i, &self.dims, &refs, &[0, 0]) };
                let x = byte_index(kb, a, offs[0]);
                let z = byte_index(kb, b, offs[1]);
                let row = kb.muli(x, 256);
                let at = kb.add(row, z);
                let p = kb.elem(t, at, 1);
                let v = kb.b.ins().load(I8, ro(), p, 0);
                let q = kb.elem(y, i, 1);
                kb.b.ins().store(rw(), v, q, 0);
            });
        });
    }
}

/// QLinearGlobalAveragePool: per (image, channel), `acc = sum - x_zero * S` (i32, from an i64
/// sum), then `f32(acc) * scale` rounded half to even plus `y_zero`, saturated. Channel-first
/// input, or channels-last (`channels_last`: element k of plane (n, c) at `(n * S + k) * C +
/// c`). Operands: X, Y. One tile per plane.
#[derive(Clone, Debug)]
pub struct QGlobalPoolSpec {
    pub n: usize,
    pub c: usize,
    pub s: usize,
    pub channels_last: bool,
    pub dtype: DType,
    pub x_zero: i32,
    pub scale: f32,
    pub y_zero: i32,
}

impl QGlobalPoolSpec {
    pub fn tiles(&self) -> usize {
        self.n * self.c
    }
}

impl KernelSpec for QGlobalPoolSpec {
    fn name(&self) -> String {
        format!("qlinear global average {}x{} over {}", self.n, self.c, self.s)
    }

    fn emit(&self, kb: &mut Kb) {
        let [x, y] = [kb.operand(0), kb.operand(1)];
        let (ty, signed) = clif(self.dtype);
        let (begin, end) = (kb.begin, kb.end);
        // Channel-first planes are contiguous: sixteen bytes at a time into four i32 lanes,
        // wrapping as the reference's i64 sum does once it is cut to i32.
        let chunks = if self.channels_last { 0 } else { self.s / 16 };
        kb.for_range(begin, end, 1, |kb, p| {
            let (img, ch) = kb.divmod(p, self.c as i64);
            let zero = kb.b.ins().iconst(I64, 0);
            let sum = kb.var(I64, zero);
            if chunks > 0 {
                let z32 = kb.b.ins().iconst(I32, 0);
                let zv = kb.b.ins().splat(I32X4, z32);
                let lanes = kb.var(I32X4, zv);
                let plane = {
                    let o = kb.muli(p, self.s as i64);
                    kb.elem(x, o, 1)
                };
                kb.for_const(0, chunks as i64, 1, |kb, i| {
                    let o = kb.muli(i, 16);
                    let a = kb.elem(plane, o, 1);
                    let v = kb.b.ins().load(I8X16, ro(), a, 0);
                    let halves = if signed {
                        [kb.b.ins().swiden_low(v), kb.b.ins().swiden_high(v)]
                    } else {
                        [kb.b.ins().uwiden_low(v), kb.b.ins().uwiden_high(v)]
                    };
                    let mut t = kb.b.use_var(lanes);
                    for h in halves {
                        // 16-bit values of either sign: sign-extending keeps them.
                        let lo = kb.b.ins().swiden_low(h);
                        let hi = kb.b.ins().swiden_high(h);
                        t = kb.b.ins().iadd(t, lo);
                        t = kb.b.ins().iadd(t, hi);
                    }
                    kb.b.def_var(lanes, t);
                });
                let t = kb.b.use_var(lanes);
                let mut total = kb.b.ins().extractlane(t, 0);
                for l in 1..4u8 {
                    let e = kb.b.ins().extractlane(t, l);
                    total = kb.b.ins().iadd(total, e);
                }
                let total = kb.b.ins().sextend(I64, total);
                kb.b.def_var(sum, total);
            }
            kb.for_const((chunks * 16) as i64, self.s as i64, 1, |kb, k| {
                let at = if self.channels_last {
                    let r = kb.muli(img, self.s as i64);
                    let r = kb.add(r, k);
                    let r = kb.muli(r, self.c as i64);
                    kb.add(r, ch)
                } else {
                    let r = kb.muli(p, self.s as i64);
                    kb.add(r, k)
                };
                let a = kb.elem(x, at, 1);
                let v = kb.b.ins().load(ty, ro(), a, 0);
                let v = if signed { kb.b.ins().sextend(I64, v) } else { kb.b.ins().uextend(I64, v) };
                let s = kb.b.use_var(sum);
                let s = kb.b.ins().iadd(s, v);
                kb.b.def_var(sum, s);
            });
            let s = kb.b.use_var(sum);
            let acc = kb.b.ins().iadd_imm_s(s, -(self.x_zero as i64 * self.s as i64));
            let acc = kb.b.ins().ireduce(I32, acc);
            let f = kb.b.ins().fcvt_from_sint(F32, acc);
            let sc = kb.b.ins().f32const(self.scale);
            let v = kb.b.ins().fmul(f, sc);
            let r = kb.b.ins().nearest(v);
            let zf = kb.b.ins().f32const(self.y_zero as f32);
            let r = kb.b.ins().fadd(r, zf);
            let q = saturate(kb, r, self.dtype);
            let o = kb.elem(y, p, 1);
            kb.b.ins().store(rw(), q, o, 0);
        });
    }
}

/// The window of a 1-D or 2-D integer pool along one axis.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Span {
    pub input: usize,
    pub output: usize,
    pub kernel: usize,
    pub stride: usize,
    pub dilation: usize,
    pub pad: usize,
    pub end_pad: usize,
}

/// QLinearAveragePool's windows (channel-first, 2-D; 1-D as height 1): the dequantized values
/// (`D[byte]`, a table of 256 f32) summed in f32 in row-major window order, divided by the count
/// (clipped to the input, or to the padded input with `count_include_pad`), divided by `y_scale`,
/// plus `y_zero`, rounded half to even, saturated. Or (`max`) MaxPool of integers: the largest
/// real element (the type's low end for a window with none), no table. Operands: X, D (average
/// only), Y. One tile per (plane, output row).
#[derive(Clone, Debug)]
pub struct QPoolSpec {
    pub planes: usize,
    pub h: Span,
    pub w: Span,
    pub max: bool,
    pub count_include_pad: bool,
    pub dtype: DType,
    pub y_scale: f32,
    pub y_zero: i32,
}

impl QPoolSpec {
    pub fn tiles(&self) -> usize {
        self.planes * self.h.output
    }
}

/// The first and end real input positions of output `o`'s window (`start >= end`: none), and
/// how many positions of it lie in the padded input (as the reference's `span`).
fn window(kb: &mut Kb, o: Value, s: Span) -> (Value, Value, Value) {
    let start = {
        let v = kb.muli(o, s.stride as i64);
        kb.addi(v, -(s.pad as i64))
    };
    let end = kb.addi(start, ((s.kernel - 1) * s.dilation + 1) as i64);
    let zero = kb.iconst(0);
    let first = kb.b.ins().smax(start, zero);
    let last = kb.mini(end, s.input as i64);
    let lo_pad = kb.iconst(-(s.pad as i64));
    let a = kb.b.ins().smax(start, lo_pad);
    let b = kb.mini(end, (s.input + s.end_pad) as i64);
    let padded = kb.b.ins().isub(b, a);
    let padded = kb.b.ins().smax(padded, zero);
    (first, last, padded)
}

impl KernelSpec for QPoolSpec {
    fn name(&self) -> String {
        let what = if self.max { "max" } else { "average" };
        format!("qlinear {what} pool {}x{} -> {}x{}", self.h.input, self.w.input, self.h.output, self.w.output)
    }

    fn emit(&self, kb: &mut Kb) {
        let x = kb.operand(0);
        let d = (!self.max).then(|| kb.operand(1));
        let y = kb.operand(if self.max { 1 } else { 2 });
        let (ty, signed) = clif(self.dtype);
        let plane = (self.h.input * self.w.input) as i64;
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, t| {
            let (p, oy) = kb.divmod(t, self.h.output as i64);
            let (y0, y1, py) = window(kb, oy, self.h);
            let base = kb.muli(p, plane);
            kb.for_const(0, self.w.output as i64, 1, |kb, ox| {
                let (x0, x1, px) = window(kb, ox, self.w);
                let init = if self.max {
                    let (lo, _) = incept_ir::ops::quant::qrange(self.dtype).expect("a quantized type");
                    kb.b.ins().iconst(I32, lo as i64)
                } else {
                    kb.b.ins().f32const(0.0)
                };
                let acc = kb.var(if self.max { I32 } else { F32 }, init);
                kb.for_range(y0, y1, 1, |kb, iy| {
                    kb.for_range(x0, x1, 1, |kb, ix| {
                        let at = {
                            let r = kb.muli(iy, self.w.input as i64);
                            let r = kb.add(r, ix);
                            kb.add(base, r)
                        };
                        let a = kb.elem(x, at, 1);
                        let v = kb.b.ins().load(ty, ro(), a, 0);
                        let s = kb.b.use_var(acc);
                        let s = if let Some(d) = d {
                            let b = kb.b.ins().uextend(I64, v);
                            let pd = kb.elem(d, b, 4);
                            let f = kb.b.ins().load(F32, ro(), pd, 0);
                            kb.b.ins().fadd(s, f)
                        } else {
                            let v = if signed { kb.b.ins().sextend(I32, v) } else { kb.b.ins().uextend(I32, v) };
                            kb.b.ins().smax(s, v)
                        };
                        kb.b.def_var(acc, s);
                    });
                });
                let s = kb.b.use_var(acc);
                let q = if self.max {
                    kb.b.ins().ireduce(ty, s)
                } else {
                    let count = if self.count_include_pad {
                        kb.mul(py, px)
                    } else {
                        let zero = kb.iconst(0);
                        let h = kb.b.ins().isub(y1, y0);
                        let h = kb.b.ins().smax(h, zero);
                        let w = kb.b.ins().isub(x1, x0);
                        let w = kb.b.ins().smax(w, zero);
                        kb.mul(h, w)
                    };
                    let cf = kb.b.ins().fcvt_from_sint(F32, count);
                    let avg = kb.b.ins().fdiv(s, cf);
                    let ys = kb.b.ins().f32const(self.y_scale);
                    let v = kb.b.ins().fdiv(avg, ys);
                    let zf = kb.b.ins().f32const(self.y_zero as f32);
                    let v = kb.b.ins().fadd(v, zf);
                    let r = kb.b.ins().nearest(v);
                    saturate(kb, r, self.dtype)
                };
                let at = {
                    let r = kb.muli(t, self.w.output as i64);
                    kb.add(r, ox)
                };
                let o = kb.elem(y, at, 1);
                kb.b.ins().store(rw(), q, o, 0);
            });
        });
    }
}

/// QLinearSoftmax over rows of `d` elements `inner` apart (`outer` x `inner` rows): per row the
/// maximum m, `v = E[m - x]` (E: 256 f32, `QLinearSoftmax::exps`), their f32 sum in order, and
/// `v * ((1 / sum) * y_scale_inverse) + y_zero` rounded half to even, saturated. Operands: X,
/// E, Y. One tile per row.
#[derive(Clone, Debug)]
pub struct QSoftmaxSpec {
    pub outer: usize,
    pub d: usize,
    pub inner: usize,
    pub dtype: DType,
    /// `floor(1 / y_scale)`.
    pub yse: f32,
    pub y_zero: i32,
}

impl QSoftmaxSpec {
    pub fn tiles(&self) -> usize {
        self.outer * self.inner
    }
}

impl KernelSpec for QSoftmaxSpec {
    fn name(&self) -> String {
        format!("qlinear softmax {} rows of {}", self.outer * self.inner, self.d)
    }

    fn emit(&self, kb: &mut Kb) {
        let [x, e, y] = [kb.operand(0), kb.operand(1), kb.operand(2)];
        let (ty, signed) = clif(self.dtype);
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, r| {
            let (o, i) = kb.divmod(r, self.inner as i64);
            // Element k of the row at (o * d + k) * inner + i.
            let first = {
                let v = kb.muli(o, (self.d * self.inner) as i64);
                kb.add(v, i)
            };
            let load = |kb: &mut Kb, k: Value| {
                let off = kb.muli(k, self.inner as i64);
                let at = kb.add(first, off);
                let a = kb.elem(x, at, 1);
                let v = kb.b.ins().load(ty, ro(), a, 0);
                if signed { kb.b.ins().sextend(I32, v) } else { kb.b.ins().uextend(I32, v) }
            };
            let low = kb.b.ins().iconst(I32, -129);
            let m = kb.var(I32, low);
            kb.for_const(0, self.d as i64, 1, |kb, k| {
                let v = load(kb, k);
                let c = kb.b.use_var(m);
                let c = kb.b.ins().smax(c, v);
                kb.b.def_var(m, c);
            });
            let mv = kb.b.use_var(m);
            let exp_of = |kb: &mut Kb, v: Value| {
                let idx = kb.b.ins().isub(mv, v);
                let idx = kb.b.ins().uextend(I64, idx);
                let p = kb.elem(e, idx, 4);
                kb.b.ins().load(F32, ro(), p, 0)
            };
            let zero = kb.b.ins().f32const(0.0);
            let sum = kb.var(F32, zero);
            kb.for_const(0, self.d as i64, 1, |kb, k| {
                let v = load(kb, k);
                let f = exp_of(kb, v);
                let s = kb.b.use_var(sum);
                let s = kb.b.ins().fadd(s, f);
                kb.b.def_var(sum, s);
            });
            let s = kb.b.use_var(sum);
            let one = kb.b.ins().f32const(1.0);
            let inv = kb.b.ins().fdiv(one, s);
            let yse = kb.b.ins().f32const(self.yse);
            let scale = kb.b.ins().fmul(inv, yse);
            kb.for_const(0, self.d as i64, 1, |kb, k| {
                let v = load(kb, k);
                let f = exp_of(kb, v);
                let f = kb.b.ins().fmul(f, scale);
                let zf = kb.b.ins().f32const(self.y_zero as f32);
                let f = kb.b.ins().fadd(f, zf);
                let r = kb.b.ins().nearest(f);
                let q = saturate(kb, r, self.dtype);
                let off = kb.muli(k, self.inner as i64);
                let at = kb.add(first, off);
                let a = kb.elem(y, at, 1);
                kb.b.ins().store(rw(), q, a, 0);
            });
        });
    }
}

/// DynamicQuantizeLinear over `n` f32: the range (NaNs skipped) extended to 0, `scale = (hi -
/// lo) / 255` (1 when hi = lo), `zero = round(clamp(-lo / scale, 0, 255))`, then every value
/// quantized to u8 as QuantizeLinear. Operands: X, Y (u8), scale (f32), zero point (u8). One
/// tile.
#[derive(Clone, Debug)]
pub struct DynQuantSpec {
    pub n: usize,
}

impl KernelSpec for DynQuantSpec {
    fn name(&self) -> String {
        format!("dynamic quantize {}", self.n)
    }

    fn emit(&self, kb: &mut Kb) {
        let [x, y, ys, yz] = [kb.operand(0), kb.operand(1), kb.operand(2), kb.operand(3)];
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, _| {
            let zero = kb.b.ins().f32const(0.0);
            let (lo, hi) = (kb.var(F32, zero), kb.var(F32, zero));
            kb.for_const(0, self.n as i64, 1, |kb, i| {
                let a = kb.elem(x, i, 4);
                let v = kb.b.ins().load(F32, ro(), a, 0);
                // Comparisons with NaN are false: a NaN never replaces a bound.
                let l = kb.b.use_var(lo);
                let below = kb.b.ins().fcmp(FloatCC::LessThan, v, l);
                let l = kb.b.ins().select(below, v, l);
                kb.b.def_var(lo, l);
                let h = kb.b.use_var(hi);
                let above = kb.b.ins().fcmp(FloatCC::GreaterThan, v, h);
                let h = kb.b.ins().select(above, v, h);
                kb.b.def_var(hi, h);
            });
            let (l, h) = (kb.b.use_var(lo), kb.b.use_var(hi));
            let span = kb.b.ins().fsub(h, l);
            let c255 = kb.b.ins().f32const(255.0);
            let s = kb.b.ins().fdiv(span, c255);
            let one = kb.b.ins().f32const(1.0);
            let same = kb.b.ins().fcmp(FloatCC::Equal, h, l);
            let s = kb.b.ins().select(same, one, s);
            let q = kb.b.ins().fdiv(l, s);
            let z = kb.b.ins().fsub(zero, q);
            let z = kb.b.ins().fmax(z, zero);
            let z = kb.b.ins().fmin(z, c255);
            let z = kb.b.ins().nearest(z);
            let zi = kb.b.ins().fcvt_to_sint_sat(I32, z);
            let zb = kb.b.ins().ireduce(I8, zi);
            kb.b.ins().store(rw(), s, ys, 0);
            kb.b.ins().store(rw(), zb, yz, 0);
            kb.for_const(0, self.n as i64, 1, |kb, i| {
                let a = kb.elem(x, i, 4);
                let v = kb.b.ins().load(F32, ro(), a, 0);
                let d = kb.b.ins().fdiv(v, s);
                let r = kb.b.ins().nearest(d);
                let r = kb.b.ins().fadd(r, z);
                let q = saturate(kb, r, DType::U8);
                let o = kb.elem(y, i, 1);
                kb.b.ins().store(rw(), q, o, 0);
            });
        });
    }
}
