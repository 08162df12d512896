//! ArgMax/ArgMin and TopK: picking elements by their order along an axis, with the order of
//! `incept_ir::ops::select` (NaN above every number, equal values by index).

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F64, I8, I64};
use cranelift_codegen::ir::{InstBuilder, Type, Value};

use crate::codegen::KernelSpec;
use crate::codegen::builder::{F32, Kb, ro, rw};

/// `a` above `b` in the order (NaN above every number).
fn above(kb: &mut Kb, a: Value, b: Value) -> Value {
    let gt = kb.b.ins().fcmp(FloatCC::GreaterThan, a, b);
    let a_nan = kb.b.ins().fcmp(FloatCC::Unordered, a, a);
    let b_num = kb.b.ins().fcmp(FloatCC::Ordered, b, b);
    let nan_over = kb.b.ins().band(a_nan, b_num);
    kb.b.ins().bor(gt, nan_over)
}

/// `a` and `b` tie in the order (equal numbers, or two NaNs).
fn tie(kb: &mut Kb, a: Value, b: Value) -> Value {
    // Unordered-or-equal holds for equal numbers and whenever either is NaN; both NaN is then
    // "neither above the other".
    let ueq = kb.b.ins().fcmp(FloatCC::UnorderedOrEqual, a, b);
    let ab = above(kb, a, b);
    let ba = above(kb, b, a);
    let either = kb.b.ins().bor(ab, ba);
    let zero = kb.b.ins().iconst(I8, 0);
    let neither = kb.b.ins().icmp(IntCC::Equal, either, zero);
    kb.b.ins().band(ueq, neither)
}

/// Elements over a group as `[outer, len, inner]`: group g reads
/// `x[(g / inner) * len * inner + g % inner + i * inner]` for i in 0..len.
fn group_base(kb: &mut Kb, g: Value, len: i64, inner: i64) -> Value {
    let (q, r) = kb.divmod(g, inner);
    let a = kb.muli(q, len * inner);
    kb.add(a, r)
}

/// Element i of the group at `base` (elements `inner` apart).
fn load_at(kb: &mut Kb, x: Value, base: Value, i: Value, inner: i64, ty: Type, size: i64) -> Value {
    let off = {
        let a = kb.muli(i, inner);
        kb.add(base, a)
    };
    let p = kb.elem(x, off, size);
    kb.b.ins().load(ty, ro(), p, 0)
}

/// The index (i64) of the largest (`max`) or smallest element of each group, the first one or
/// the last with `last`, in f32 or f64. Operands: X, Y. One tile per group.
#[derive(Clone, Debug)]
pub struct ArgSpec {
    pub groups: usize,
    pub len: usize,
    pub inner: usize,
    pub max: bool,
    pub last: bool,
    pub f64: bool,
}

impl KernelSpec for ArgSpec {
    fn name(&self) -> String {
        format!("arg{} {}", if self.max { "max" } else { "min" }, self.len)
    }

    fn emit(&self, kb: &mut Kb) {
        let [x, y] = [kb.operand(0), kb.operand(1)];
        let (len, inner) = (self.len as i64, self.inner as i64);
        let (ty, size): (Type, i64) = if self.f64 { (F64, 8) } else { (F32, 4) };
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, g| {
            let base = group_base(kb, g, len, inner);
            let p0 = kb.elem(x, base, size);
            let first = kb.b.ins().load(ty, ro(), p0, 0);
            let best = kb.var(ty, first);
            let zero = kb.iconst(0);
            let at = kb.var(I64, zero);
            kb.for_const(1, len, 1, |kb, i| {
                let v = load_at(kb, x, base, i, inner, ty, size);
                let b = kb.b.use_var(best);
                // Replace when v is beyond the pick in the wanted direction, or ties with it
                // and the last one is wanted.
                let beyond = if self.max { above(kb, v, b) } else { above(kb, b, v) };
                let take = if self.last {
                    let t = tie(kb, v, b);
                    kb.b.ins().bor(beyond, t)
                } else {
                    beyond
                };
                let nb = kb.b.ins().select(take, v, b);
                kb.b.def_var(best, nb);
                let a = kb.b.use_var(at);
                let na = kb.b.ins().select(take, i, a);
                kb.b.def_var(at, na);
            });
            let a = kb.b.use_var(at);
            let p = kb.elem(y, g, 8);
            kb.b.ins().store(rw(), a, p, 0);
        });
    }
}

/// The `k` largest (or smallest) elements of each group, best first and equal values by index,
/// with their indices (i64), in f32 or f64. Selection: output r is the best element that comes
/// after output r - 1 in that order, found by one pass over the group (k passes in all: meant for
/// the small k of classifier heads and proposal filters; no scratch memory). Operands: X,
/// VALUES, INDICES; the outputs are `[outer, k, inner]`. One tile per group.
#[derive(Clone, Debug)]
pub struct TopKSpec {
    pub groups: usize,
    pub len: usize,
    pub inner: usize,
    pub k: usize,
    pub largest: bool,
    pub f64: bool,
}

impl KernelSpec for TopKSpec {
    fn name(&self) -> String {
        format!("top{} {} of {}", if self.largest { "" } else { " smallest" }, self.k, self.len)
    }

    fn emit(&self, kb: &mut Kb) {
        let [x, vals, idx] = [kb.operand(0), kb.operand(1), kb.operand(2)];
        let (len, inner, k) = (self.len as i64, self.inner as i64, self.k as i64);
        let (ty, size): (Type, i64) = if self.f64 { (F64, 8) } else { (F32, 4) };
        let largest = self.largest;
        // `a` comes before `b` by value alone.
        let ahead = move |kb: &mut Kb, a: Value, b: Value| if largest { above(kb, a, b) } else { above(kb, b, a) };
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, g| {
            let base = group_base(kb, g, len, inner);
            let out_base = group_base(kb, g, k, inner);
            let zf = if self.f64 { kb.b.ins().f64const(0.0) } else { kb.fconst(0.0) };
            let prev_v = kb.var(ty, zf);
            let minus_one = kb.iconst(-1);
            let prev_i = kb.var(I64, minus_one);
            kb.for_const(0, k, 1, |kb, r| {
                let cand_v = kb.var(ty, zf);
                let cand_i = kb.var(I64, minus_one);
                let (pv, pi) = (kb.b.use_var(prev_v), kb.b.use_var(prev_i));
                let none = kb.b.ins().icmp_imm_s(IntCC::SignedLessThan, pi, 0);
                kb.for_const(0, len, 1, |kb, i| {
                    let v = load_at(kb, x, base, i, inner, ty, size);
                    // Eligible: after the previous output (any element for the first output).
                    let behind = ahead(kb, pv, v);
                    let t = tie(kb, v, pv);
                    let later = kb.b.ins().icmp(IntCC::SignedGreaterThan, i, pi);
                    let tie_later = kb.b.ins().band(t, later);
                    let after = kb.b.ins().bor(behind, tie_later);
                    let eligible = kb.b.ins().bor(none, after);
                    // Better than the candidate so far (earlier index wins a tie).
                    let (cv, ci) = (kb.b.use_var(cand_v), kb.b.use_var(cand_i));
                    let empty = kb.b.ins().icmp_imm_s(IntCC::SignedLessThan, ci, 0);
                    let better = ahead(kb, v, cv);
                    let better = kb.b.ins().bor(empty, better);
                    let take = kb.b.ins().band(eligible, better);
                    let nv = kb.b.ins().select(take, v, cv);
                    kb.b.def_var(cand_v, nv);
                    let ni = kb.b.ins().select(take, i, ci);
                    kb.b.def_var(cand_i, ni);
                });
                let (cv, ci) = (kb.b.use_var(cand_v), kb.b.use_var(cand_i));
                kb.b.def_var(prev_v, cv);
                kb.b.def_var(prev_i, ci);
                let o = {
                    let a = kb.muli(r, inner);
                    kb.add(out_base, a)
                };
                let pv = kb.elem(vals, o, size);
                kb.b.ins().store(rw(), cv, pv, 0);
                let pi = kb.elem(idx, o, 8);
                kb.b.ins().store(rw(), ci, pi, 0);
            });
        });
    }
}
