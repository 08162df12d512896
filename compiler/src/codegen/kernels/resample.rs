//! Resampling along one axis with per-output-index taps (Resize's separable passes).

use cranelift_codegen::ir::InstBuilder;

use crate::codegen::KernelSpec;
use crate::codegen::builder::{I64, Kb, ro};

/// `y[o, j, i] = bias[j] + sum_t w[j, t] * x[o, idx[j, t], i]` over a tensor viewed as
/// `[outer, d_in, inner]` → `[outer, d_out, inner]`. The tap table holds byte offsets
/// (`idx * inner * 4`), so a tap is one load. Operands: X, OFFSETS (i64), WEIGHTS, BIAS, Y. One
/// tile per output row `(o, j)`.
#[derive(Clone, Debug)]
pub struct ResampleSpec {
    pub outer: usize,
    pub d_in: usize,
    pub d_out: usize,
    pub inner: usize,
    pub taps: usize,
}

impl ResampleSpec {
    pub fn tiles(&self) -> usize {
        self.outer * self.d_out
    }
}

impl KernelSpec for ResampleSpec {
    fn name(&self) -> String {
        format!("resample {}->{} x{} taps{}", self.d_in, self.d_out, self.inner, self.taps)
    }

    fn emit(&self, kb: &mut Kb) {
        let [x, offs, wts, bias, y] = [kb.operand(0), kb.operand(1), kb.operand(2), kb.operand(3), kb.operand(4)];
        let (begin, end) = (kb.begin, kb.end);
        let (inner, taps) = (self.inner as i64, self.taps);
        kb.for_range(begin, end, 1, |kb, t| {
            let (o, j) = kb.divmod(t, self.d_out as i64);
            let xo = {
                let a = kb.muli(o, (self.d_in as i64) * inner * 4);
                kb.add(x, a)
            };
            let yrow = {
                let a = kb.muli(t, inner * 4);
                kb.add(y, a)
            };
            let bp = kb.elem(bias, j, 4);
            let b0 = kb.load_f32(bp, 0, ro());
            let first = kb.muli(j, taps as i64);
            let mut srcs = Vec::with_capacity(taps);
            for k in 0..taps {
                let op = kb.elem(offs, first, 8);
                let off = kb.b.ins().load(I64, ro(), op, (k * 8) as i32);
                let wp = kb.elem(wts, first, 4);
                let w = kb.load_f32(wp, (k * 4) as i32, ro());
                srcs.push((kb.add(xo, off), w));
            }
            let vend = inner / 4 * 4;
            if vend > 0 {
                let bv = kb.splat(b0);
                let wv: Vec<_> = srcs.iter().map(|&(_, w)| kb.splat(w)).collect();
                kb.for_const(0, vend, 4, |kb, i| {
                    let byte = kb.muli(i, 4);
                    let mut acc = bv;
                    for (k, &(p, _)) in srcs.iter().enumerate() {
                        let pa = kb.add(p, byte);
                        let v = kb.load_v(pa, 0, ro());
                        acc = kb.fma(wv[k], v, acc);
                    }
                    let yp = kb.add(yrow, byte);
                    kb.store_v(acc, yp, 0);
                });
            }
            for i in vend..inner {
                let mut acc = b0;
                for &(p, w) in &srcs {
                    let v = kb.load_f32(p, (i * 4) as i32, ro());
                    acc = kb.fma(w, v, acc);
                }
                kb.store_f32(acc, yrow, (i * 4) as i32);
            }
        });
    }
}
