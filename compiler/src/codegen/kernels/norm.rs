//! Local response normalisation across channels.

use cranelift_codegen::ir::InstBuilder;
use incept_runtime::helpers::index as h;

use crate::codegen::KernelSpec;
use crate::codegen::builder::{F32, F32X4, Kb, ro};

/// `y = x / (bias + alpha / size * sum of x^2 over the channel window) ^ beta` on `[n, c, inner]`.
/// Operands: X, Y, helpers. One tile per (image, channel) plane; the window's bounds depend on the
/// channel, so the window loop runs at run time.
#[derive(Clone, Debug)]
pub struct LrnSpec {
    pub n: usize,
    pub c: usize,
    pub inner: usize,
    pub size: usize,
    pub alpha: f32,
    pub beta: f32,
    pub bias: f32,
}

impl KernelSpec for LrnSpec {
    fn name(&self) -> String {
        format!("lrn {} x{}", self.size, self.inner)
    }

    fn emit(&self, kb: &mut Kb) {
        let [x, y, table] = [kb.operand(0), kb.operand(1), kb.operand(2)];
        let (begin, end) = (kb.begin, kb.end);
        let (c, inner) = (self.c as i64, self.inner as i64);
        let before = ((self.size - 1) / 2) as i64;
        let after = self.size as i64 - 1 - before;
        let scale = self.alpha / self.size as f32;
        kb.for_range(begin, end, 1, |kb, t| {
            let (ni, ci) = kb.divmod(t, c);
            let lo = {
                let a = kb.addi(ci, -before);
                let z = kb.iconst(0);
                kb.b.ins().smax(a, z)
            };
            let hi = {
                let a = kb.addi(ci, after + 1);
                kb.mini(a, c)
            };
            let img = {
                let a = kb.muli(ni, c * inner * 4);
                kb.add(x, a)
            };
            let plane = kb.muli(t, inner * 4);
            let (xp, yp) = (kb.add(x, plane), kb.add(y, plane));
            // One column of `w` lanes at byte offset `byte` within the plane.
            let column = |kb: &mut Kb, byte: cranelift_codegen::ir::Value, vec: bool| {
                let ty = if vec { F32X4 } else { F32 };
                let zero = if vec { kb.vconst(0.0) } else { kb.fconst(0.0) };
                let acc = kb.var(ty, zero);
                kb.for_range(lo, hi, 1, |kb, k| {
                    let p = {
                        let a = kb.muli(k, inner * 4);
                        kb.add(img, a)
                    };
                    let p = kb.add(p, byte);
                    let v = kb.b.ins().load(ty, ro(), p, 0);
                    let a = kb.b.use_var(acc);
                    let n = kb.fma(v, v, a);
                    kb.b.def_var(acc, n);
                });
                let sq = kb.b.use_var(acc);
                let (s, b) = if vec {
                    (kb.vconst(scale), kb.vconst(self.bias))
                } else {
                    (kb.fconst(scale), kb.fconst(self.bias))
                };
                let base = kb.fma(s, sq, b);
                let beta = kb.fconst(self.beta);
                let den = if vec {
                    kb.per_lane(base, |kb, l| kb.call_binary(table, h::POW, l, beta))
                } else {
                    kb.call_binary(table, h::POW, base, beta)
                };
                let (px, py) = (kb.add(xp, byte), kb.add(yp, byte));
                let v = kb.b.ins().load(ty, ro(), px, 0);
                let r = kb.b.ins().fdiv(v, den);
                kb.b.ins().store(crate::codegen::builder::rw(), r, py, 0);
            };
            let vend = inner / 4 * 4;
            kb.for_const(0, vend, 4, |kb, i| {
                let byte = kb.muli(i, 4);
                column(kb, byte, true);
            });
            kb.for_const(vend, inner, 1, |kb, i| {
                let byte = kb.muli(i, 4);
                column(kb, byte, false);
            });
        });
    }
}
