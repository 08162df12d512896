//! Comparisons, boolean logic, Where and Mod over broadcast inputs of any element type: scalar
//! loops with the reference's semantics (NaN compares unequal; integer Mod by zero gives 0).
//! In vision models these mostly fold away as shape arithmetic; what remains is small.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F64, I8, I64};
use cranelift_codegen::ir::{InstBuilder, Value};
use incept_ir::DType;
use incept_ir::ops::{Compare, Logical};
use incept_runtime::helpers::index as h;

use crate::codegen::KernelSpec;
use crate::codegen::builder::{Kb, ro, rw};
use crate::codegen::kernels::nd::BroadcastRows;
use crate::codegen::kernels::typed::{clif, is_float};

/// What the kernel computes per element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogicOp {
    Compare(Compare),
    Logical(Logical),
    /// Inputs: condition (bool), then the two branches.
    Where,
    Mod {
        fmod: bool,
    },
}

/// `y = op(inputs)` elementwise over broadcast inputs (see [`BroadcastRows`]). Input i has dtype
/// `dtypes[i]`; the output is `out`. Operands: the inputs, Y, and the helper table for float Mod.
/// One tile per row.
#[derive(Clone, Debug)]
pub struct LogicSpec {
    pub op: LogicOp,
    pub dtypes: Vec<DType>,
    pub out: DType,
    pub rows: BroadcastRows,
}

impl LogicSpec {
    pub fn tiles(&self) -> usize {
        self.rows.tiles()
    }

    pub fn needs_helpers(&self) -> bool {
        matches!(self.op, LogicOp::Mod { .. }) && is_float(self.dtypes[0])
    }
}

fn compare(kb: &mut Kb, c: Compare, a: Value, b: Value, d: DType) -> Value {
    if is_float(d) {
        // Ordered comparisons: false when either side is NaN.
        let cc = match c {
            Compare::Equal => FloatCC::Equal,
            Compare::Less => FloatCC::LessThan,
            Compare::LessOrEqual => FloatCC::LessThanOrEqual,
            Compare::Greater => FloatCC::GreaterThan,
            Compare::GreaterOrEqual => FloatCC::GreaterThanOrEqual,
        };
        return kb.b.ins().fcmp(cc, a, b);
    }
    let signed = clif(d).1;
    let cc = match (c, signed) {
        (Compare::Equal, _) => IntCC::Equal,
        (Compare::Less, true) => IntCC::SignedLessThan,
        (Compare::Less, false) => IntCC::UnsignedLessThan,
        (Compare::LessOrEqual, true) => IntCC::SignedLessThanOrEqual,
        (Compare::LessOrEqual, false) => IntCC::UnsignedLessThanOrEqual,
        (Compare::Greater, true) => IntCC::SignedGreaterThan,
        (Compare::Greater, false) => IntCC::UnsignedGreaterThan,
        (Compare::GreaterOrEqual, true) => IntCC::SignedGreaterThanOrEqual,
        (Compare::GreaterOrEqual, false) => IntCC::UnsignedGreaterThanOrEqual,
    };
    kb.b.ins().icmp(cc, a, b)
}

/// Integer remainder with the divisor's sign (`fmod` false) or the dividend's; 0 for a zero
/// divisor. Computed in i64/u64 after widening, where `MIN % -1` is the only trap, avoided by
/// dividing by 1 instead (the remainder is 0 either way).
fn int_mod(kb: &mut Kb, a: Value, b: Value, d: DType, fmod: bool) -> Value {
    let (ty, signed) = clif(d);
    let widen = |kb: &mut Kb, v: Value| match (ty == I64, signed) {
        (true, _) => v,
        (false, true) => kb.b.ins().sextend(I64, v),
        (false, false) => kb.b.ins().uextend(I64, v),
    };
    let (a, b) = (widen(kb, a), widen(kb, b));
    let zero = kb.iconst(0);
    let one = kb.iconst(1);
    let is_zero = kb.b.ins().icmp(IntCC::Equal, b, zero);
    let minus_one = kb.iconst(-1);
    let is_m1 = kb.b.ins().icmp(IntCC::Equal, b, minus_one);
    let safe = if signed { kb.b.ins().bor(is_zero, is_m1) } else { is_zero };
    let divisor = kb.b.ins().select(safe, one, b);
    let r = if signed { kb.b.ins().srem(a, divisor) } else { kb.b.ins().urem(a, divisor) };
    let r = if signed && !fmod {
        // Python's sign: add the divisor when the remainder is nonzero and the signs differ.
        let rn = kb.b.ins().icmp(IntCC::SignedLessThan, r, zero);
        let bn = kb.b.ins().icmp(IntCC::SignedLessThan, divisor, zero);
        let differ = kb.b.ins().bxor(rn, bn);
        let nz = kb.b.ins().icmp(IntCC::NotEqual, r, zero);
        let fix = kb.b.ins().band(differ, nz);
        let adjusted = kb.b.ins().iadd(r, divisor);
        kb.b.ins().select(fix, adjusted, r)
    } else {
        r
    };
    let r = kb.b.ins().select(is_zero, zero, r);
    if ty == I64 { r } else { kb.b.ins().ireduce(ty, r) }
}

impl KernelSpec for LogicSpec {
    fn name(&self) -> String {
        format!("{:?} {}", self.op, self.dtypes[0]).to_lowercase()
    }

    fn emit(&self, kb: &mut Kb) {
        let n_in = self.dtypes.len();
        let ops = kb.operands(n_in + 1);
        let helpers = self.needs_helpers().then(|| kb.operand(n_in + 1));
        let sizes: Vec<i64> = self.dtypes.iter().map(|d| d.size() as i64).collect();
        let out_size = self.out.size() as i64;
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, r| {
            let bases = self.rows.emit_row_bases(kb, r, &ops, &sizes);
            let yrow = {
                let o = kb.muli(r, self.rows.cols as i64);
                kb.elem(ops[n_in], o, out_size)
            };
            kb.for_const(0, self.rows.cols as i64, 1, |kb, c| {
                let load = |kb: &mut Kb, i: usize| {
                    let o = kb.muli(c, self.rows.col_strides[i] as i64);
                    let p = kb.elem(bases[i], o, sizes[i]);
                    kb.b.ins().load(clif(self.dtypes[i]).0, ro(), p, 0)
                };
                let v = match self.op {
                    LogicOp::Compare(cmp) => {
                        let (a, b) = (load(kb, 0), load(kb, 1));
                        compare(kb, cmp, a, b, self.dtypes[0])
                    }
                    LogicOp::Logical(l) => {
                        // Bools are bytes 0 or 1; anything nonzero reads as true.
                        let zero = kb.b.ins().iconst(I8, 0);
                        let raw = load(kb, 0);
                        let a = kb.b.ins().icmp(IntCC::NotEqual, raw, zero);
                        match l {
                            Logical::Not => kb.b.ins().icmp(IntCC::Equal, raw, zero),
                            _ => {
                                let b = load(kb, 1);
                                let b = kb.b.ins().icmp(IntCC::NotEqual, b, zero);
                                match l {
                                    Logical::And => kb.b.ins().band(a, b),
                                    Logical::Or => kb.b.ins().bor(a, b),
                                    _ => kb.b.ins().bxor(a, b),
                                }
                            }
                        }
                    }
                    LogicOp::Where => {
                        let (cond, x, y) = (load(kb, 0), load(kb, 1), load(kb, 2));
                        kb.b.ins().select(cond, x, y)
                    }
                    LogicOp::Mod { fmod } => {
                        let (a, b) = (load(kb, 0), load(kb, 1));
                        match self.dtypes[0] {
                            // C's fmod, in f64 (exact for f32 operands), through the runtime.
                            DType::F32 => {
                                let (a, b) = (kb.b.ins().fpromote(F64, a), kb.b.ins().fpromote(F64, b));
                                let t = helpers.expect("float Mod gets the helper table");
                                let r = kb.call_helper(t, h::FMOD64, &[a, b]);
                                kb.b.ins().fdemote(F32, r)
                            }
                            DType::F64 => {
                                let t = helpers.expect("float Mod gets the helper table");
                                kb.call_helper(t, h::FMOD64, &[a, b])
                            }
                            d => int_mod(kb, a, b, d, fmod),
                        }
                    }
                };
                let p = kb.elem(yrow, c, out_size);
                kb.b.ins().store(rw(), v, p, 0);
            });
        });
    }
}
