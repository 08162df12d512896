//! The integer convolution and matrix product of the quantized ops (ConvInteger, QLinearConv,
//! MatMulInteger, QLinearMatMul, QGemm) as scalar loops with the reference's arithmetic (see
//! `incept_ir::ops::quant` and `qlinear`): `(x - x_zero) * (w - w_zero)` summed in i32 with
//! wrap-around, then the op's output: the i32 sum, `f32(sum) * scale`, or that rounded half to
//! even plus a zero point and saturated. Every tier runs them; they are exact, not fast.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F32, I32};
use cranelift_codegen::ir::{InstBuilder, Value};
use incept_ir::DType;
use incept_ir::ops::quant::qrange;

use crate::codegen::KernelSpec;
use crate::codegen::builder::{Kb, ro, rw};
use crate::codegen::kernels::conv::Geom;
use crate::codegen::kernels::quant::saturate_to;
use crate::codegen::kernels::typed::clif;

/// Where a per-tensor or per-index parameter comes from: an operand buffer of `len` values (1:
/// the same for every index).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Param {
    pub operand: usize,
    pub len: usize,
    pub dtype: DType,
}

/// What an integer product writes.
#[derive(Clone, Debug, PartialEq)]
pub enum IntOut {
    /// The i32 sums.
    Sums,
    /// `f32(sum) * scale[j]`, the scale per output column (`per_col`) or row, computed in the
    /// kernel as the product of `scales` (f32, left to right) divided by `divide` if given.
    Scaled { scales: Vec<Param>, alpha: f32, divide: Option<Param>, per_col: bool },
    /// The scaled value rounded half to even plus the zero point, saturated to `dtype` (NaN
    /// gives the low end).
    Quantized {
        scales: Vec<Param>,
        alpha: f32,
        divide: Option<Param>,
        per_col: bool,
        zero: Param,
        dtype: DType,
        /// Within `dtype`'s range (narrower for a QLinearConv's fused Relu or Clip).
        range: (i32, i32),
    },
}

/// An integer of at most 32 bits loaded as i32 (sign- or zero-extended).
fn load_i32(kb: &mut Kb, base: Value, index: Value, dtype: DType) -> Value {
    let (ty, signed) = clif(dtype);
    let p = kb.elem(base, index, dtype.size() as i64);
    let v = kb.b.ins().load(ty, ro(), p, 0);
    if ty == I32 {
        v
    } else if signed {
        kb.b.ins().sextend(I32, v)
    } else {
        kb.b.ins().uextend(I32, v)
    }
}

/// A parameter's value at index `i` (its only value when it has one).
fn param_i32(kb: &mut Kb, p: Param, i: Value) -> Value {
    let base = kb.operand(p.operand);
    let idx = if p.len == 1 { kb.iconst(0) } else { i };
    load_i32(kb, base, idx, p.dtype)
}

fn param_f32(kb: &mut Kb, p: Param, i: Value) -> Value {
    let base = kb.operand(p.operand);
    let idx = if p.len == 1 { kb.iconst(0) } else { i };
    let a = kb.elem(base, idx, 4);
    kb.b.ins().load(F32, ro(), a, 0)
}

/// The scale of output index `i`: `((alpha * s0) * s1 ...) / divide`, f32 left to right (alpha
/// first only when it is not 1, as ONNX Runtime's QGemm multiplies it in and the others do not).
fn scale(kb: &mut Kb, scales: &[Param], alpha: f32, divide: Option<Param>, i: Value) -> Value {
    let mut s = param_f32(kb, scales[0], i);
    if alpha != 1.0 {
        let a = kb.b.ins().f32const(alpha);
        s = kb.b.ins().fmul(a, s);
    }
    for &p in &scales[1..] {
        let v = param_f32(kb, p, i);
        s = kb.b.ins().fmul(s, v);
    }
    if let Some(d) = divide {
        let v = param_f32(kb, d, i);
        s = kb.b.ins().fdiv(s, v);
    }
    s
}

/// Stores output `o` (element index `at` of `y`) from its i32 sum, for row `row` and column `col`.
fn store_out(kb: &mut Kb, out: &IntOut, y: Value, at: Value, sum: Value, row: Value, col: Value) {
    match out {
        IntOut::Sums => {
            let p = kb.elem(y, at, 4);
            kb.b.ins().store(rw(), sum, p, 0);
        }
        IntOut::Scaled { scales, alpha, divide, per_col } => {
            let i = if *per_col { col } else { row };
            let s = scale(kb, scales, *alpha, *divide, i);
            let f = kb.b.ins().fcvt_from_sint(F32, sum);
            let v = kb.b.ins().fmul(f, s);
            let p = kb.elem(y, at, 4);
            kb.b.ins().store(rw(), v, p, 0);
        }
        IntOut::Quantized { scales, alpha, divide, per_col, zero, dtype, range } => {
            let i = if *per_col { col } else { row };
            let s = scale(kb, scales, *alpha, *divide, i);
            let f = kb.b.ins().fcvt_from_sint(F32, sum);
            let v = kb.b.ins().fmul(f, s);
            let r = kb.b.ins().nearest(v);
            let z = param_i32(kb, *zero, i);
            let zf = kb.b.ins().fcvt_from_sint(F32, z);
            let r = kb.b.ins().fadd(r, zf);
            let q = saturate_to(kb, r, *dtype, *range);
            let p = kb.elem(y, at, dtype.size() as i64);
            kb.b.ins().store(rw(), q, p, 0);
        }
    }
}

/// A direct 2-D integer convolution over NCHW (1-D convs as height 1): `groups` groups, each
/// output channel m summing `(x - x_zero) * (w[m] - w_zero[m])` over its group's channels and
/// window, plus an i32 bias. Operands: X, W, then the parameters the fields name (by operand
/// index), Y last (`y`). One tile per (image, output channel, output row).
#[derive(Clone, Debug)]
pub struct IntConvSpec {
    pub n: usize,
    pub c: usize,
    pub m: usize,
    pub g: Geom,
    pub groups: usize,
    pub x_type: DType,
    pub w_type: DType,
    pub x_zero: Option<Param>,
    pub w_zero: Option<Param>,
    pub bias: Option<Param>,
    pub out: IntOut,
    pub y: usize,
}

impl IntConvSpec {
    pub fn tiles(&self) -> usize {
        self.n * self.m * self.g.oh
    }
}

/// The output type, with its range where a fused Relu or Clip narrows it (`u8[12,255]`).
fn clamped_name(dtype: DType, range: (i32, i32)) -> String {
    if qrange(dtype) == Some(range) { dtype.to_string() } else { format!("{dtype}[{},{}]", range.0, range.1) }
}

impl KernelSpec for IntConvSpec {
    fn name(&self) -> String {
        format!(
            "int conv {}x{} {}->{} {}x{} s{}x{} g{} {}",
            self.g.kh,
            self.g.kw,
            self.c,
            self.m,
            self.g.oh,
            self.g.ow,
            self.g.sh,
            self.g.sw,
            self.groups,
            match &self.out {
                IntOut::Sums => "i32".to_string(),
                IntOut::Scaled { .. } => "f32".to_string(),
                IntOut::Quantized { dtype, range, .. } => clamped_name(*dtype, *range),
            }
        )
    }

    fn emit(&self, kb: &mut Kb) {
        let (x, w, y) = (kb.operand(0), kb.operand(1), kb.operand(self.y));
        let (cg, mg) = (self.c / self.groups, self.m / self.groups);
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, t| {
            let (nm, oy) = kb.divmod(t, self.g.oh as i64);
            let (img, m) = kb.divmod(nm, self.m as i64);
            let g = kb.divmod(m, mg as i64).0;
            let xz = match self.x_zero {
                Some(p) => {
                    let zero = kb.iconst(0);
                    param_i32(kb, p, zero)
                }
                None => kb.b.ins().iconst(I32, 0),
            };
            let wz = match self.w_zero {
                Some(p) => param_i32(kb, p, m),
                None => kb.b.ins().iconst(I32, 0),
            };
            let b0 = match self.bias {
                Some(p) => param_i32(kb, p, m),
                None => kb.b.ins().iconst(I32, 0),
            };
            // First input channel of the group, and this output row's first input row.
            let c0 = {
                let gi = kb.muli(g, cg as i64);
                let ni = kb.muli(img, self.c as i64);
                kb.add(ni, gi)
            };
            let iy0 = kb.muli(oy, self.g.sh as i64);
            kb.for_const(0, self.g.ow as i64, 1, |kb, ox| {
                let acc = kb.var(I32, b0);
                let ix0 = kb.muli(ox, self.g.sw as i64);
                kb.for_const(0, cg as i64, 1, |kb, ci| {
                    let plane = {
                        let c = kb.add(c0, ci);
                        kb.muli(c, (self.g.h * self.g.w) as i64)
                    };
                    let wrow = {
                        let mc = kb.muli(m, cg as i64);
                        let mc = kb.add(mc, ci);
                        kb.muli(mc, (self.g.kh * self.g.kw) as i64)
                    };
                    for ky in 0..self.g.kh {
                        for kx in 0..self.g.kw {
                            // Input position; outside the input the tap adds nothing.
                            let iy = kb.addi(iy0, (ky * self.g.dh) as i64 - self.g.ph as i64);
                            let ix = kb.addi(ix0, (kx * self.g.dw) as i64 - self.g.pw as i64);
                            let in_y = kb.b.ins().icmp_imm_u(IntCC::UnsignedLessThan, iy, self.g.h as i64);
                            let in_x = kb.b.ins().icmp_imm_u(IntCC::UnsignedLessThan, ix, self.g.w as i64);
                            let inside = kb.b.ins().band(in_y, in_x);
                            let at = {
                                let r = kb.muli(iy, self.g.w as i64);
                                let r = kb.add(r, ix);
                                let r = kb.add(plane, r);
                                let zero = kb.iconst(0);
                                kb.b.ins().select(inside, r, zero)
                            };
                            let xv = load_i32(kb, x, at, self.x_type);
                            let widx = kb.addi(wrow, (ky * self.g.kw + kx) as i64);
                            let wv = load_i32(kb, w, widx, self.w_type);
                            let xc = kb.b.ins().isub(xv, xz);
                            let wc = kb.b.ins().isub(wv, wz);
                            let p = kb.b.ins().imul(xc, wc);
                            let zero = kb.b.ins().iconst(I32, 0);
                            let p = kb.b.ins().select(inside, p, zero);
                            let s = kb.b.use_var(acc);
                            let s = kb.b.ins().iadd(s, p);
                            kb.b.def_var(acc, s);
                        }
                    }
                });
                let sum = kb.b.use_var(acc);
                let at = {
                    let r = kb.muli(t, self.g.ow as i64);
                    kb.add(r, ox)
                };
                store_out(kb, &self.out, y, at, sum, m, ox);
            });
        });
    }
}

/// A batched integer matrix product: `Y[b, i, j]` is the bias at (i, j) plus the sum over p of
/// `(A[b, i, p] - a_zero[i])` times `(B[b, p, j] - b_zero[j])` (zero points per tensor or per
/// row / column). Batch b is a row-major index over `batch`; an operand's matrix for it starts
/// at the sum over d of `idx_d(b)` times its `strides[d]` (elements, 0 along broadcast dims);
/// within it element (i, p) of A is at `i a_rs + p a_cs`, (p, j) of B at `p b_rs + j b_cs`, and
/// the bias at `i bias_rs + j bias_cs`. Operands: A, B, then the parameters, Y last (`y`). One
/// tile per (batch, row).
#[derive(Clone, Debug)]
pub struct IntMatMulSpec {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub batch: Vec<usize>,
    pub a_strides: Vec<isize>,
    pub b_strides: Vec<isize>,
    pub a_rs: isize,
    pub a_cs: isize,
    pub b_rs: isize,
    pub b_cs: isize,
    pub a_type: DType,
    pub b_type: DType,
    pub a_zero: Option<Param>,
    pub b_zero: Option<Param>,
    /// An i32 bias operand, and its row and column strides.
    pub bias: Option<(usize, isize, isize)>,
    pub out: IntOut,
    pub y: usize,
}

impl IntMatMulSpec {
    pub fn tiles(&self) -> usize {
        self.batch.iter().product::<usize>() * self.m
    }
}

impl KernelSpec for IntMatMulSpec {
    fn name(&self) -> String {
        format!("int matmul {}x{}x{} {}x{}", self.m, self.k, self.n, self.a_type, self.b_type)
    }

    fn emit(&self, kb: &mut Kb) {
        let (a, b, y) = (kb.operand(0), kb.operand(1), kb.operand(self.y));
        let (m, k, n) = (self.m as i64, self.k as i64, self.n as i64);
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, t| {
            let (bi, i) = kb.divmod(t, m);
            let refs = [self.a_strides.as_slice(), self.b_strides.as_slice()];
            let offs = crate::codegen::kernels::nd::emit_offsets(kb, bi, &self.batch, &refs, &[0, 0]);
            let az = match self.a_zero {
                Some(p) => param_i32(kb, p, i),
                None => kb.b.ins().iconst(I32, 0),
            };
            kb.for_const(0, n, 1, |kb, j| {
                let b0 = match self.bias {
                    Some((op, rs, cs)) => {
                        let base = kb.operand(op);
                        let r = kb.muli(i, rs as i64);
                        let c = kb.muli(j, cs as i64);
                        let at = kb.add(r, c);
                        load_i32(kb, base, at, DType::I32)
                    }
                    None => kb.b.ins().iconst(I32, 0),
                };
                let bz = match self.b_zero {
                    Some(p) => param_i32(kb, p, j),
                    None => kb.b.ins().iconst(I32, 0),
                };
                let acc = kb.var(I32, b0);
                kb.for_const(0, k, 1, |kb, p| {
                    let ai = {
                        let r = kb.muli(i, self.a_rs as i64);
                        let c = kb.muli(p, self.a_cs as i64);
                        let e = kb.add(r, c);
                        kb.add(offs[0], e)
                    };
                    let bi = {
                        let r = kb.muli(p, self.b_rs as i64);
                        let c = kb.muli(j, self.b_cs as i64);
                        let e = kb.add(r, c);
                        kb.add(offs[1], e)
                    };
                    let av = load_i32(kb, a, ai, self.a_type);
                    let bv = load_i32(kb, b, bi, self.b_type);
                    let ac = kb.b.ins().isub(av, az);
                    let bc = kb.b.ins().isub(bv, bz);
                    let prod = kb.b.ins().imul(ac, bc);
                    let s = kb.b.use_var(acc);
                    let s = kb.b.ins().iadd(s, prod);
                    kb.b.def_var(acc, s);
                });
                let sum = kb.b.use_var(acc);
                let at = {
                    let r = kb.muli(t, n);
                    kb.add(r, j)
                };
                store_out(kb, &self.out, y, at, sum, i, j);
            });
        });
    }
}
