//! Elementwise arithmetic on integer and f64 tensors, and f32 <-> f64 casts: scalar loops with
//! the reference's semantics (wrapping integer arithmetic, integer division by zero giving 0,
//! NaN-propagating max/min). CNNs compute in f32; these serve the rest of the op set.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F64, I8, I16, I32, I64};
use cranelift_codegen::ir::{InstBuilder, Type, Value};
use incept_ir::DType;

use crate::codegen::KernelSpec;
use crate::codegen::builder::{Kb, ro, rw};

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
}

/// `y = op_{n-1}(... op_1(op_0(x0, x1), x2) ..., xn)` over broadcast inputs of one dtype. The
/// output is `[rows, cols]` (all but the last dim flattened into rows); input i reads row r,
/// column c at `sum_d idx_d(r) * row_strides[i][d] + c * col_strides[i]` (element strides over
/// the output's leading dims, 0 where broadcast). Operands: the inputs, Y. One tile per row.
#[derive(Clone, Debug)]
pub struct TypedElementwiseSpec {
    pub dtype: DType,
    pub ops: Vec<TypedOp>,
    pub lead: Vec<usize>,
    pub cols: usize,
    pub row_strides: Vec<Vec<usize>>,
    pub col_strides: Vec<usize>,
}

impl TypedElementwiseSpec {
    pub fn tiles(&self) -> usize {
        self.lead.iter().product()
    }
}

/// The Cranelift type of a dtype, and whether it is signed.
fn clif(d: DType) -> (Type, bool) {
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

impl KernelSpec for TypedElementwiseSpec {
    fn name(&self) -> String {
        format!("elementwise {} {:?}", self.dtype, self.ops)
    }

    fn emit(&self, kb: &mut Kb) {
        let n_in = self.ops.len() + 1;
        let ops = kb.operands(n_in + 1);
        let (ty, signed) = clif(self.dtype);
        let size = self.dtype.size() as i64;
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, r| {
            // Row start of every input: decompose r over the leading dims.
            let mut starts: Vec<Value> = (0..n_in).map(|_| kb.iconst(0)).collect();
            let mut rest = r;
            for d in (0..self.lead.len()).rev() {
                let (q, idx) = kb.divmod(rest, self.lead[d] as i64);
                rest = q;
                for (i, st) in starts.iter_mut().enumerate() {
                    let m = kb.muli(idx, self.row_strides[i][d] as i64);
                    *st = kb.add(*st, m);
                }
            }
            let bases: Vec<Value> = (0..n_in).map(|i| kb.elem(ops[i], starts[i], size)).collect();
            let yrow = {
                let o = kb.muli(r, self.cols as i64);
                kb.elem(ops[n_in], o, size)
            };
            kb.for_const(0, self.cols as i64, 1, |kb, c| {
                let load = |kb: &mut Kb, i: usize| {
                    let o = kb.muli(c, self.col_strides[i] as i64);
                    let p = kb.elem(bases[i], o, size);
                    kb.b.ins().load(ty, ro(), p, 0)
                };
                let mut acc = load(kb, 0);
                for (k, &op) in self.ops.iter().enumerate() {
                    let v = load(kb, k + 1);
                    acc = apply(kb, op, acc, v, ty, signed);
                }
                let p = kb.elem(yrow, c, size);
                kb.b.ins().store(rw(), acc, p, 0);
            });
        });
    }
}

fn apply(kb: &mut Kb, op: TypedOp, a: Value, b: Value, ty: Type, signed: bool) -> Value {
    if ty == F64 {
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
        };
    }
    match op {
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

/// f32 <-> f64 over `n` elements. Operands: X, Y. One tile per 1024 elements.
#[derive(Clone, Debug)]
pub struct FloatCastSpec {
    pub to_f64: bool,
    pub n: usize,
}

const CAST_TILE: usize = 1024;

impl FloatCastSpec {
    pub fn tiles(&self) -> usize {
        self.n.div_ceil(CAST_TILE)
    }
}

impl KernelSpec for FloatCastSpec {
    fn name(&self) -> String {
        format!("cast {} {}", if self.to_f64 { "f32->f64" } else { "f64->f32" }, self.n)
    }

    fn emit(&self, kb: &mut Kb) {
        let [x, y] = [kb.operand(0), kb.operand(1)];
        let (from, to, fs, ts) = if self.to_f64 { (F32, F64, 4, 8) } else { (F64, F32, 8, 4) };
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, t| {
            let lo = kb.muli(t, CAST_TILE as i64);
            let hi = {
                let e = kb.addi(lo, CAST_TILE as i64);
                kb.mini(e, self.n as i64)
            };
            kb.for_range(lo, hi, 1, |kb, i| {
                let p = kb.elem(x, i, fs);
                let v = kb.b.ins().load(from, ro(), p, 0);
                let c = if self.to_f64 { kb.b.ins().fpromote(to, v) } else { kb.b.ins().fdemote(to, v) };
                let q = kb.elem(y, i, ts);
                kb.b.ins().store(rw(), c, q, 0);
            });
        });
    }
}
