//! Elementwise arithmetic on integer and f64 tensors (and Pow with integer operands), and casts
//! between every numeric type: scalar loops with the reference's semantics (wrapping integer
//! arithmetic, integer division by zero giving 0, NaN-propagating max/min, Pow in f64, casts as
//! Rust's `as`: floats truncate toward zero into integers, saturating, NaN giving 0). CNNs compute
//! in f32; these serve the rest of the op set.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F64, I8, I16, I32, I64};
use cranelift_codegen::ir::{InstBuilder, Type, Value};
use incept_ir::DType;
use incept_runtime::helpers::index as h;

use crate::codegen::KernelSpec;
use crate::codegen::builder::{Kb, ro, rw};
use crate::codegen::kernels::nd::BroadcastRows;

/// The arithmetic of a typed elementwise chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TypedOp {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    /// Clip's bounds: `x < b ? b : x` and `x > b ? b : x` (NaN x stays NaN).
    AtLeast,
    AtMost,
    /// `from_f64(to_f64(x).powf(to_f64(e)))`: the exponent may have any numeric type.
    Pow,
}

/// `y = op_{n-1}(... op_1(op_0(x0, x1), x2) ..., xn)` over broadcast inputs. Input 0 and the
/// running value have `dtype`; input i has `dtypes[i]` (the same but for Pow's exponent), read
/// as [`BroadcastRows`] says. Operands: the inputs, Y, then the helper table when Pow is among
/// the ops. One tile per row.
#[derive(Clone, Debug)]
pub struct TypedElementwiseSpec {
    pub dtype: DType,
    pub dtypes: Vec<DType>,
    pub ops: Vec<TypedOp>,
    pub rows: BroadcastRows,
}

impl TypedElementwiseSpec {
    pub fn tiles(&self) -> usize {
        self.rows.tiles()
    }

    pub fn needs_helpers(&self) -> bool {
        self.ops.contains(&TypedOp::Pow)
    }
}

/// The Cranelift type of a dtype, and whether it is signed.
pub(crate) fn clif(d: DType) -> (Type, bool) {
    match d {
        DType::I8 => (I8, true),
        DType::U8 | DType::Bool => (I8, false),
        DType::I16 => (I16, true),
        DType::U16 => (I16, false),
        DType::I32 => (I32, true),
        DType::U32 => (I32, false),
        DType::I64 => (I64, true),
        DType::U64 => (I64, false),
        DType::F64 => (F64, true),
        _ => (F32, true),
    }
}

pub(crate) fn is_float(d: DType) -> bool {
    matches!(d, DType::F32 | DType::F64)
}

/// A value of dtype `from` as f64, as the reference's `as f64` (integers round to nearest).
pub fn to_f64(kb: &mut Kb, v: Value, from: DType) -> Value {
    let (ty, signed) = clif(from);
    match from {
        DType::F64 => v,
        DType::F32 => kb.b.ins().fpromote(F64, v),
        _ => {
            let w = widen(kb, v, ty, signed);
            if signed { kb.b.ins().fcvt_from_sint(F64, w) } else { kb.b.ins().fcvt_from_uint(F64, w) }
        }
    }
}

/// An integer of type `ty` extended to i64 (sign- or zero-extended).
fn widen(kb: &mut Kb, v: Value, ty: Type, signed: bool) -> Value {
    match (ty == I64, signed) {
        (true, _) => v,
        (false, true) => kb.b.ins().sextend(I64, v),
        (false, false) => kb.b.ins().uextend(I64, v),
    }
}

/// An f64 converted to `to` as Rust's `as`: floats round to nearest; integers truncate toward
/// zero and saturate at the type's range, NaN giving 0; bool is `x != 0` (so NaN is true).
pub fn from_f64(kb: &mut Kb, v: Value, to: DType) -> Value {
    match to {
        DType::F64 => v,
        DType::F32 => kb.b.ins().fdemote(F32, v),
        DType::Bool => {
            let z = kb.b.ins().f64const(0.0);
            kb.b.ins().fcmp(FloatCC::NotEqual, v, z)
        }
        DType::I64 => kb.b.ins().fcvt_to_sint_sat(I64, v),
        DType::U64 => kb.b.ins().fcvt_to_uint_sat(I64, v),
        DType::I32 => kb.b.ins().fcvt_to_sint_sat(I32, v),
        DType::U32 => kb.b.ins().fcvt_to_uint_sat(I32, v),
        _ => {
            // 8- and 16-bit targets: clamp to the range in f64 (exact there; NaN stays NaN and
            // converts to 0), convert to i32, keep the low bits.
            let (ty, signed) = clif(to);
            let bits = ty.bits();
            let (lo, hi) =
                if signed { (-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1) } else { (0, (1i64 << bits) - 1) };
            let (l, hc) = (kb.b.ins().f64const(lo as f64), kb.b.ins().f64const(hi as f64));
            let c = kb.b.ins().fmax(v, l);
            let c = kb.b.ins().fmin(c, hc);
            let i = kb.b.ins().fcvt_to_sint_sat(I32, c);
            kb.b.ins().ireduce(ty, i)
        }
    }
}

/// A value of dtype `from` converted to `to` as the reference's Cast.
pub fn cast(kb: &mut Kb, v: Value, from: DType, to: DType) -> Value {
    if from == to {
        return v;
    }
    if is_float(from) {
        let d = to_f64(kb, v, from);
        return from_f64(kb, d, to);
    }
    // Integers and bools: through i128 in the reference, i.e. wrapping; floats round to nearest.
    let (ty, signed) = clif(from);
    match to {
        DType::F32 | DType::F64 => {
            let fty = if to == DType::F32 { F32 } else { F64 };
            let w = widen(kb, v, ty, signed);
            if signed { kb.b.ins().fcvt_from_sint(fty, w) } else { kb.b.ins().fcvt_from_uint(fty, w) }
        }
        DType::Bool => {
            let z = kb.b.ins().iconst(ty, 0);
            kb.b.ins().icmp(IntCC::NotEqual, v, z)
        }
        _ => {
            let w = widen(kb, v, ty, signed);
            let (tty, _) = clif(to);
            if tty == I64 { w } else { kb.b.ins().ireduce(tty, w) }
        }
    }
}

impl KernelSpec for TypedElementwiseSpec {
    fn name(&self) -> String {
        format!("elementwise {} {:?}", self.dtype, self.ops)
    }

    fn emit(&self, kb: &mut Kb) {
        let n_in = self.ops.len() + 1;
        let ops = kb.operands(n_in + 1);
        let helpers = self.needs_helpers().then(|| kb.operand(n_in + 1));
        let (ty, signed) = clif(self.dtype);
        let size = self.dtype.size() as i64;
        let sizes: Vec<i64> = self.dtypes.iter().map(|d| d.size() as i64).collect();
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, r| {
            let bases = self.rows.emit_row_bases(kb, r, &ops, &sizes);
            let yrow = {
                let o = kb.muli(r, self.rows.cols as i64);
                kb.elem(ops[n_in], o, size)
            };
            kb.for_const(0, self.rows.cols as i64, 1, |kb, c| {
                let load = |kb: &mut Kb, i: usize| {
                    let o = kb.muli(c, self.rows.col_strides[i] as i64);
                    let p = kb.elem(bases[i], o, sizes[i]);
                    kb.b.ins().load(clif(self.dtypes[i]).0, ro(), p, 0)
                };
                let mut acc = load(kb, 0);
                for (k, &op) in self.ops.iter().enumerate() {
                    let v = load(kb, k + 1);
                    acc = if op == TypedOp::Pow {
                        let table = helpers.expect("Pow gets the helper table");
                        let (x, e) = (to_f64(kb, acc, self.dtype), to_f64(kb, v, self.dtypes[k + 1]));
                        let p = kb.call_helper(table, h::POW64, &[x, e]);
                        from_f64(kb, p, self.dtype)
                    } else {
                        apply(kb, op, acc, v, ty, signed)
                    };
                }
                let p = kb.elem(yrow, c, size);
                kb.b.ins().store(rw(), acc, p, 0);
            });
        });
    }
}

fn apply(kb: &mut Kb, op: TypedOp, a: Value, b: Value, ty: Type, signed: bool) -> Value {
    if ty == F64 || ty == F32 {
        return match op {
            TypedOp::Add => kb.b.ins().fadd(a, b),
            TypedOp::Sub => kb.b.ins().fsub(a, b),
            TypedOp::Mul => kb.b.ins().fmul(a, b),
            TypedOp::Div => kb.b.ins().fdiv(a, b),
            TypedOp::Max => kb.b.ins().fmax(a, b),
            TypedOp::Min => kb.b.ins().fmin(a, b),
            TypedOp::AtLeast => {
                let lt = kb.b.ins().fcmp(FloatCC::LessThan, a, b);
                kb.b.ins().select(lt, b, a)
            }
            TypedOp::AtMost => {
                let gt = kb.b.ins().fcmp(FloatCC::GreaterThan, a, b);
                kb.b.ins().select(gt, b, a)
            }
            TypedOp::Pow => unreachable!("Pow calls its helper"),
        };
    }
    match op {
        TypedOp::Pow => unreachable!("Pow calls its helper"),
        TypedOp::Add => kb.b.ins().iadd(a, b),
        TypedOp::Sub => kb.b.ins().isub(a, b),
        TypedOp::Mul => kb.b.ins().imul(a, b),
        TypedOp::Max | TypedOp::AtLeast if signed => kb.b.ins().smax(a, b),
        TypedOp::Max | TypedOp::AtLeast => kb.b.ins().umax(a, b),
        TypedOp::Min | TypedOp::AtMost if signed => kb.b.ins().smin(a, b),
        TypedOp::Min | TypedOp::AtMost => kb.b.ins().umin(a, b),
        TypedOp::Div => {
            // x / 0 is 0; signed x / -1 is the wrapping negation (the hardware traps on MIN / -1);
            // division by a divisor made safe (1) in those cases, then the result selected.
            let zero = kb.b.ins().iconst(ty, 0);
            let one = kb.b.ins().iconst(ty, 1);
            let is_zero = kb.b.ins().icmp(IntCC::Equal, b, zero);
            if signed {
                let minus_one = kb.b.ins().iconst(ty, -1);
                let is_m1 = kb.b.ins().icmp(IntCC::Equal, b, minus_one);
                let special = kb.b.ins().bor(is_zero, is_m1);
                let safe = kb.b.ins().select(special, one, b);
                let q = kb.b.ins().sdiv(a, safe);
                let neg = kb.b.ins().ineg(a);
                let q = kb.b.ins().select(is_m1, neg, q);
                kb.b.ins().select(is_zero, zero, q)
            } else {
                let safe = kb.b.ins().select(is_zero, one, b);
                let q = kb.b.ins().udiv(a, safe);
                kb.b.ins().select(is_zero, zero, q)
            }
        }
    }
}

/// Cast between any two numeric (or bool) dtypes over `n` elements, as the reference's Cast
/// (see [`cast`]). Operands: X, Y. One tile per 1024 elements.
#[derive(Clone, Debug)]
pub struct CastSpec {
    pub from: DType,
    pub to: DType,
    pub n: usize,
}

const CAST_TILE: usize = 1024;

impl CastSpec {
    pub fn tiles(&self) -> usize {
        self.n.div_ceil(CAST_TILE)
    }
}

impl KernelSpec for CastSpec {
    fn name(&self) -> String {
        format!("cast {}->{} {}", self.from, self.to, self.n)
    }

    fn emit(&self, kb: &mut Kb) {
        let [x, y] = [kb.operand(0), kb.operand(1)];
        let (fs, ts) = (self.from.size() as i64, self.to.size() as i64);
        let (fty, _) = clif(self.from);
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, t| {
            let lo = kb.muli(t, CAST_TILE as i64);
            let hi = {
                let e = kb.addi(lo, CAST_TILE as i64);
                kb.mini(e, self.n as i64)
            };
            kb.for_range(lo, hi, 1, |kb, i| {
                let p = kb.elem(x, i, fs);
                let v = kb.b.ins().load(fty, ro(), p, 0);
                let c = cast(kb, v, self.from, self.to);
                let q = kb.elem(y, i, ts);
                kb.b.ins().store(rw(), c, q, 0);
            });
        });
    }
}

/// f64 MatMul as the reference computes it: `C[b, i, j] = sum_p A[b, i, p] * B[b, p, j]`, each
/// sum from 0 in order of p, multiply then add (the same bits). Batch b is a row-major index
/// over `batch`; operand x's matrix for it starts at `sum_d idx_d(b) * x_strides[d]` (elements,
/// 0 along broadcast dims). Operands: A, B, C. One tile per (batch, row).
#[derive(Clone, Debug)]
pub struct F64MatMulSpec {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub batch: Vec<usize>,
    pub a_strides: Vec<isize>,
    pub b_strides: Vec<isize>,
}

impl F64MatMulSpec {
    pub fn tiles(&self) -> usize {
        self.batch.iter().product::<usize>() * self.m
    }
}

impl KernelSpec for F64MatMulSpec {
    fn name(&self) -> String {
        format!("matmul f64 {}x{}x{}", self.m, self.k, self.n)
    }

    fn emit(&self, kb: &mut Kb) {
        let [a, b, c] = [kb.operand(0), kb.operand(1), kb.operand(2)];
        let (m, k, n) = (self.m as i64, self.k as i64, self.n as i64);
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, t| {
            let (bi, i) = kb.divmod(t, m);
            let refs = [self.a_strides.as_slice(), self.b_strides.as_slice()];
            let offs = crate::codegen::kernels::nd::emit_offsets(kb, bi, &self.batch, &refs, &[0, 0]);
            let arow = {
                let r = kb.muli(i, k);
                let o = kb.add(offs[0], r);
                kb.elem(a, o, 8)
            };
            let bmat = kb.elem(b, offs[1], 8);
            let crow = {
                let r = kb.muli(t, n);
                kb.elem(c, r, 8)
            };
            kb.for_const(0, n, 1, |kb, j| {
                let zero = kb.b.ins().f64const(0.0);
                let acc = kb.var(F64, zero);
                let bcol = kb.elem(bmat, j, 8);
                kb.for_const(0, k, 1, |kb, p| {
                    let pa = kb.elem(arow, p, 8);
                    let x = kb.b.ins().load(F64, ro(), pa, 0);
                    let o = kb.muli(p, n);
                    let pb = kb.elem(bcol, o, 8);
                    let y = kb.b.ins().load(F64, ro(), pb, 0);
                    let prod = kb.b.ins().fmul(x, y);
                    let s = kb.b.use_var(acc);
                    let s = kb.b.ins().fadd(s, prod);
                    kb.b.def_var(acc, s);
                });
                let r = kb.b.use_var(acc);
                let q = kb.elem(crow, j, 8);
                kb.b.ins().store(rw(), r, q, 0);
            });
        });
    }
}
