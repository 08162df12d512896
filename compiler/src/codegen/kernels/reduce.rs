//! Softmax / LogSoftmax and the Reduce ops over strided groups of elements.

use cranelift_codegen::ir::types::F64;
use cranelift_codegen::ir::{InstBuilder, Value};
use incept_ir::ops::ReduceKind;
use incept_runtime::helpers::index as h;

use crate::codegen::KernelSpec;
use crate::codegen::builder::{F32, Kb, ro, rw};

/// Softmax over groups of `len` elements `stride` apart; group g starts at
/// `(g / stride) * len * stride + g % stride`. In f32, or in f64 with the reference's order of
/// operations (the same bits). Operands: X, Y, helpers. One tile per group.
#[derive(Clone, Debug)]
pub struct SoftmaxSpec {
    pub groups: usize,
    pub len: usize,
    pub stride: usize,
    pub log: bool,
    pub f64: bool,
}

impl KernelSpec for SoftmaxSpec {
    fn name(&self) -> String {
        format!("{}softmax {}", if self.log { "log" } else { "" }, self.len)
    }

    fn emit(&self, kb: &mut Kb) {
        let [x, y, helpers] = [kb.operand(0), kb.operand(1), kb.operand(2)];
        let (len, stride) = (self.len as i64, self.stride as i64);
        let (ty, size, exp, ln) = if self.f64 { (F64, 8, h::EXP64, h::LOG64) } else { (F32, 4, h::EXP, h::LOG) };
        let fconst = |kb: &mut Kb, v: f64| if self.f64 { kb.b.ins().f64const(v) } else { kb.fconst(v as f32) };
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, t| {
            let (q, r) = kb.divmod(t, stride);
            let base = {
                let a = kb.muli(q, len * stride);
                kb.add(a, r)
            };
            let at = |kb: &mut Kb, p: cranelift_codegen::ir::Value, i| {
                let o = kb.muli(i, stride);
                let o = kb.add(base, o);
                kb.elem(p, o, size)
            };
            let ninf = fconst(kb, f64::NEG_INFINITY);
            let mx = kb.var(ty, ninf);
            kb.for_const(0, len, 1, |kb, i| {
                let p = at(kb, x, i);
                let v = kb.b.ins().load(ty, ro(), p, 0);
                let m = kb.b.use_var(mx);
                let n = kb.b.ins().fmax(m, v);
                kb.b.def_var(mx, n);
            });
            let m = kb.b.use_var(mx);
            let zero = fconst(kb, 0.0);
            let sum = kb.var(ty, zero);
            // Exponentials go to the output first, then are normalised in place.
            kb.for_const(0, len, 1, |kb, i| {
                let p = at(kb, x, i);
                let v = kb.b.ins().load(ty, ro(), p, 0);
                let z = kb.b.ins().fsub(v, m);
                let e = kb.call_helper(helpers, exp, &[z]);
                let s = kb.b.use_var(sum);
                let n = kb.b.ins().fadd(s, e);
                kb.b.def_var(sum, n);
                let q = at(kb, y, i);
                kb.b.ins().store(rw(), if self.log { z } else { e }, q, 0);
            });
            let s = kb.b.use_var(sum);
            let ls = if self.log { kb.call_helper(helpers, ln, &[s]) } else { s };
            kb.for_const(0, len, 1, |kb, i| {
                let q = at(kb, y, i);
                let v = kb.b.ins().load(ty, rw(), q, 0);
                let r = if self.log { kb.b.ins().fsub(v, ls) } else { kb.b.ins().fdiv(v, ls) };
                kb.b.ins().store(rw(), r, q, 0);
            });
        });
    }
}

/// A reduction over `len` elements `stride` apart for each output element: output o reads
/// `in[(o / inner) * len * inner + o % inner + i * inner]` (the reduced axes collapsed into one),
/// with the reference's rules (Max/Min: the first element, then any strictly greater/smaller one;
/// LogSumExp shifted by the group's largest finite maximum), in f32 or f64. Operands: X, Y, and
/// the helper table for LogSum and LogSumExp. One tile per output element.
#[derive(Clone, Debug)]
pub struct ReduceSpec {
    pub outputs: usize,
    pub len: usize,
    pub inner: usize,
    pub kind: ReduceKind,
    pub f64: bool,
}

impl ReduceSpec {
    pub fn needs_helpers(&self) -> bool {
        matches!(self.kind, ReduceKind::LogSum | ReduceKind::LogSumExp)
    }
}

impl KernelSpec for ReduceSpec {
    fn name(&self) -> String {
        format!("reduce {:?} {}", self.kind, self.len).to_lowercase()
    }

    fn emit(&self, kb: &mut Kb) {
        let [x, y] = [kb.operand(0), kb.operand(1)];
        let helpers = self.needs_helpers().then(|| kb.operand(2));
        let (len, inner) = (self.len as i64, self.inner as i64);
        let kind = self.kind;
        let (ty, size, exp, ln) = if self.f64 { (F64, 8, h::EXP64, h::LOG64) } else { (F32, 4, h::EXP, h::LOG) };
        let fconst = |kb: &mut Kb, v: f64| if self.f64 { kb.b.ins().f64const(v) } else { kb.fconst(v as f32) };
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, o| {
            let (q, r) = kb.divmod(o, inner);
            let base = {
                let a = kb.muli(q, len * inner);
                kb.add(a, r)
            };
            let load = |kb: &mut Kb, i: Value| {
                let off = {
                    let a = kb.muli(i, inner);
                    kb.add(base, a)
                };
                let p = kb.elem(x, off, size);
                kb.b.ins().load(ty, ro(), p, 0)
            };
            let first = matches!(kind, ReduceKind::Max | ReduceKind::Min) && len > 0;
            let shift = if kind == ReduceKind::LogSumExp {
                // A NaN element makes the result NaN whatever the shift (as in the reference).
                let ninf = fconst(kb, f64::NEG_INFINITY);
                let m = kb.var(ty, ninf);
                kb.for_const(0, len, 1, |kb, i| {
                    let v = load(kb, i);
                    let a = kb.b.use_var(m);
                    let n = kb.b.ins().fmax(a, v);
                    kb.b.def_var(m, n);
                });
                let m = kb.b.use_var(m);
                // An infinite maximum shifts by 0 (as the reference): inf - inf would be NaN.
                let inf = fconst(kb, f64::INFINITY);
                let abs = kb.b.ins().fabs(m);
                let finite = kb.flt(abs, inf);
                let zero = fconst(kb, 0.0);
                Some(kb.b.ins().select(finite, m, zero))
            } else {
                None
            };
            let init = if first {
                let i0 = kb.iconst(0);
                load(kb, i0)
            } else {
                fconst(kb, kind.init())
            };
            let acc = kb.var(ty, init);
            kb.for_const(first as i64, len, 1, |kb, i| {
                let v = load(kb, i);
                let a = kb.b.use_var(acc);
                let n = match kind {
                    ReduceKind::Max => {
                        let gt = kb.flt(a, v);
                        kb.b.ins().select(gt, v, a)
                    }
                    ReduceKind::Min => {
                        let lt = kb.flt(v, a);
                        kb.b.ins().select(lt, v, a)
                    }
                    ReduceKind::Prod => kb.b.ins().fmul(a, v),
                    ReduceKind::L1 => {
                        let av = kb.b.ins().fabs(v);
                        kb.b.ins().fadd(a, av)
                    }
                    ReduceKind::L2 | ReduceKind::SumSquare => kb.fma(v, v, a),
                    ReduceKind::LogSumExp => {
                        let z = kb.b.ins().fsub(v, shift.expect("LogSumExp has a shift"));
                        let e = kb.call_helper(helpers.expect("helper table"), exp, &[z]);
                        kb.b.ins().fadd(a, e)
                    }
                    ReduceKind::Sum | ReduceKind::Mean | ReduceKind::LogSum => kb.b.ins().fadd(a, v),
                };
                kb.b.def_var(acc, n);
            });
            let mut r = kb.b.use_var(acc);
            match kind {
                ReduceKind::Mean => {
                    let d = fconst(kb, self.len as f64);
                    r = kb.b.ins().fdiv(r, d);
                }
                ReduceKind::L2 => r = kb.b.ins().sqrt(r),
                ReduceKind::LogSum => r = kb.call_helper(helpers.expect("helper table"), ln, &[r]),
                ReduceKind::LogSumExp => {
                    let l = kb.call_helper(helpers.expect("helper table"), ln, &[r]);
                    r = kb.b.ins().fadd(l, shift.expect("LogSumExp has a shift"));
                }
                _ => {}
            }
            let p = kb.elem(y, o, size);
            kb.b.ins().store(rw(), r, p, 0);
        });
    }
}
