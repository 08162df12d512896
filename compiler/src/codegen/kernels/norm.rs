//! Local response normalisation across channels, and layer normalisation.

use cranelift_codegen::ir::{InstBuilder, Value};
use incept_runtime::helpers::index as h;

use crate::codegen::KernelSpec;
use crate::codegen::builder::{F32, F32X4, Kb, ro, rw};

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

/// Layer normalisation of `rows` rows of `len` contiguous floats:
/// `y = (x - mean) * (1 / sqrt(var + epsilon)) * scale + bias`, with the mean and the biased
/// variance of the row. The variance is a second pass over `x - mean` (E[x^2] - mean^2 cancels
/// badly when the mean is large against the spread). Operands: X, scale (`len` floats),
/// bias (`len` floats, when `bias`), Y, then with `stats` the per-row mean and
/// `1 / sqrt(var + epsilon)` (LayerNormalization's optional outputs). With `per_channel = Some(c)`
/// (InstanceNormalization) scale and bias hold one value per channel instead, row r using
/// channel `r % c`. One tile per row.
#[derive(Clone, Debug)]
pub struct LayerNormSpec {
    pub rows: usize,
    pub len: usize,
    pub epsilon: f32,
    pub bias: bool,
    pub stats: bool,
    pub per_channel: Option<usize>,
}

impl KernelSpec for LayerNormSpec {
    fn name(&self) -> String {
        let what = if self.per_channel.is_some() { "instancenorm" } else { "layernorm" };
        format!("{what} {}{}", self.len, if self.stats { " +stats" } else { "" })
    }

    fn emit(&self, kb: &mut Kb) {
        let (x, scale) = (kb.operand(0), kb.operand(1));
        let (bias, yi) = if self.bias { (Some(kb.operand(2)), 3) } else { (None, 2) };
        let y = kb.operand(yi);
        let stats = self.stats.then(|| (kb.operand(yi + 1), kb.operand(yi + 2)));
        let len = self.len as i64;
        let vend = len / 4 * 4;
        let inv_len = 1.0 / self.len as f32;
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, t| {
            let (xr, yr) = (kb.row(x, t, len), kb.row(y, t, len));
            // Sum over the row of f(x): vector lanes then the scalar tail, as one f32.
            let row_sum = |kb: &mut Kb, f: &dyn Fn(&mut Kb, Value, Value) -> Value| -> Value {
                let zv = kb.vconst(0.0);
                let acc = kb.var(F32X4, zv);
                kb.for_const(0, vend, 4, |kb, i| {
                    let p = kb.elem(xr, i, 4);
                    let v = kb.load_v(p, 0, ro());
                    let a = kb.b.use_var(acc);
                    let n = f(kb, v, a);
                    kb.b.def_var(acc, n);
                });
                let zs = kb.fconst(0.0);
                let tail = kb.var(F32, zs);
                kb.for_const(vend, len, 1, |kb, i| {
                    let p = kb.elem(xr, i, 4);
                    let v = kb.load_f32(p, 0, ro());
                    let a = kb.b.use_var(tail);
                    let n = f(kb, v, a);
                    kb.b.def_var(tail, n);
                });
                let a = kb.b.use_var(acc);
                let mut s = kb.b.use_var(tail);
                for lane in 0..4u8 {
                    let l = kb.b.ins().extractlane(a, lane);
                    s = kb.b.ins().fadd(s, l);
                }
                s
            };
            let sum = row_sum(kb, &|kb, v, a| kb.b.ins().fadd(a, v));
            let k = kb.fconst(inv_len);
            let mean = kb.b.ins().fmul(sum, k);
            let mean_v = kb.splat(mean);
            let sq = row_sum(kb, &|kb, v, a| {
                let m = if kb.is_vec(v) { mean_v } else { mean };
                let d = kb.b.ins().fsub(v, m);
                kb.fma(d, d, a)
            });
            let var = kb.b.ins().fmul(sq, k);
            let eps = kb.fconst(self.epsilon);
            let ve = kb.b.ins().fadd(var, eps);
            let sd = kb.b.ins().sqrt(ve);
            let one = kb.fconst(1.0);
            let inv = kb.b.ins().fdiv(one, sd);
            let inv_v = kb.splat(inv);
            if let Some((pm, pi)) = stats {
                let (pm, pi) = (kb.elem(pm, t, 4), kb.elem(pi, t, 4));
                kb.store_f32(mean, pm, 0);
                kb.store_f32(inv, pi, 0);
            }
            // Per channel: the row's scale and bias, as scalars and splats.
            let channel = self.per_channel.map(|c| {
                let (_, ch) = kb.divmod(t, c as i64);
                let ps = kb.elem(scale, ch, 4);
                let s = kb.load_f32(ps, 0, ro());
                let b = bias.map(|b| {
                    let pb = kb.elem(b, ch, 4);
                    kb.load_f32(pb, 0, ro())
                });
                let (sv, bv) = (kb.splat(s), b.map(|b| kb.splat(b)));
                (s, b, sv, bv)
            });
            let write = |kb: &mut Kb, i: Value, vec: bool| {
                let (ty, m, r) = if vec { (F32X4, mean_v, inv_v) } else { (F32, mean, inv) };
                let off = kb.muli(i, 4);
                let px = kb.add(xr, off);
                let v = kb.b.ins().load(ty, ro(), px, 0);
                let d = kb.b.ins().fsub(v, m);
                let n = kb.b.ins().fmul(d, r);
                let (s, bv) = match channel {
                    Some((s, b, sv, bv)) => {
                        if vec {
                            (sv, bv)
                        } else {
                            (s, b)
                        }
                    }
                    None => {
                        let ps = kb.add(scale, off);
                        let s = kb.b.ins().load(ty, ro(), ps, 0);
                        let bv = bias.map(|b| {
                            let pb = kb.add(b, off);
                            kb.b.ins().load(ty, ro(), pb, 0)
                        });
                        (s, bv)
                    }
                };
                let o = match bv {
                    Some(bv) => kb.fma(n, s, bv),
                    None => kb.b.ins().fmul(n, s),
                };
                let py = kb.add(yr, off);
                kb.b.ins().store(rw(), o, py, 0);
            };
            kb.for_const(0, vend, 4, |kb, i| write(kb, i, true));
            kb.for_const(vend, len, 1, |kb, i| write(kb, i, false));
        });
    }
}
