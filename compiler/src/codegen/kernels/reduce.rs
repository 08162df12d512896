//! Softmax / LogSoftmax and reductions (sum, mean, max) over strided groups of elements.

use cranelift_codegen::ir::InstBuilder;
use cranelift_codegen::ir::types::F64;
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

/// Sum, mean or max over `len` elements `stride` apart for each output element: output o reads
/// `in[(o / inner) * len * inner + o % inner + i * inner]` (the reduced axes collapsed into one).
/// Operands: X, Y. One tile per output element.
#[derive(Clone, Debug)]
pub struct ReduceSpec {
    pub outputs: usize,
    pub len: usize,
    pub inner: usize,
    /// 0 sum, 1 mean, 2 max.
    pub kind: u8,
}

impl KernelSpec for ReduceSpec {
    fn name(&self) -> String {
        format!("reduce{} {}", ["sum", "mean", "max"][self.kind as usize % 3], self.len)
    }

    fn emit(&self, kb: &mut Kb) {
        let [x, y] = [kb.operand(0), kb.operand(1)];
        let (len, inner) = (self.len as i64, self.inner as i64);
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, o| {
            let (q, r) = kb.divmod(o, inner);
            let base = {
                let a = kb.muli(q, len * inner);
                kb.add(a, r)
            };
            // Max starts from the first element and takes any strictly greater one (MaxPool's
            // rule: a NaN wins only in first position).
            let (init, from) = if self.kind == 2 && len > 0 {
                let p = kb.elem(x, base, 4);
                (kb.load_f32(p, 0, ro()), 1)
            } else {
                (kb.fconst(if self.kind == 2 { f32::NEG_INFINITY } else { 0.0 }), 0)
            };
            let acc = kb.var(F32, init);
            kb.for_const(from, len, 1, |kb, i| {
                let off = {
                    let a = kb.muli(i, inner);
                    kb.add(base, a)
                };
                let p = kb.elem(x, off, 4);
                let v = kb.load_f32(p, 0, ro());
                let a = kb.b.use_var(acc);
                let n = if self.kind == 2 {
                    let gt = kb.flt(a, v);
                    kb.b.ins().select(gt, v, a)
                } else {
                    kb.b.ins().fadd(a, v)
                };
                kb.b.def_var(acc, n);
            });
            let mut r = kb.b.use_var(acc);
            if self.kind == 1 {
                let d = kb.fconst(self.len as f32);
                r = kb.b.ins().fdiv(r, d);
            }
            let p = kb.elem(y, o, 4);
            kb.store_f32(r, p, 0);
        });
    }
}
