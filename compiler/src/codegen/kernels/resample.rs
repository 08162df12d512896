//! Resampling along one axis with per-output-index taps (Resize's separable passes), and the
//! tap tables of a pass whose region of interest is only known at run time.

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::types::F64;
use cranelift_codegen::ir::{InstBuilder, Value};
use incept_ir::ops::Resize;
use incept_ir::ops::resize::{NearestMode, ResizeMode};

use crate::codegen::KernelSpec;
use crate::codegen::builder::{F32, I64, Kb, ro, rw};

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

/// The tap tables of one `tf_crop_and_resize` pass computed at run time from a region of
/// interest given then: for output index j, `ResampleSpec`'s byte offsets, f32 weights and bias
/// (the extrapolation value where the sample point falls outside the input). The arithmetic
/// mirrors `Resize::taps` (coordinate, rounding, filter, renormalisation) in f64, operation for
/// operation, so the tables equal the ones the reference builds. Operands: ROI (f32 or f64),
/// OFFSETS, WEIGHTS, BIAS. One tile per output index.
#[derive(Clone, Debug)]
pub struct ResizeTapsSpec {
    pub resize: Resize,
    pub d_in: usize,
    pub d_out: usize,
    pub scale: f64,
    pub inner: usize,
    pub taps: usize,
    /// The roi's dtype is f64 (else f32), and where this axis' start and end sit in it.
    pub roi_f64: bool,
    pub roi_at: (usize, usize),
}

impl ResizeTapsSpec {
    /// The filter's first tap offset from `ceil(x) - 1` and its tap count (as `Resize::filter`).
    pub fn window(&self) -> (i64, usize) {
        let s = self.scale.min(1.0);
        match (self.resize.mode, self.resize.antialias) {
            (ResizeMode::Nearest, _) => (0, 1),
            (ResizeMode::Linear, false) => (0, 2),
            (ResizeMode::Cubic, false) => (-1, 4),
            (ResizeMode::Linear, true) => {
                let first = (-1.0 / s).floor() as i64 + 1;
                (first, (2 - 2 * first) as usize)
            }
            (ResizeMode::Cubic, true) => {
                let first = (-2.0 / s).floor() as i64 + 1;
                (first, (2 - 2 * first) as usize)
            }
        }
    }
}

fn f(kb: &mut Kb, v: f64) -> Value {
    kb.b.ins().f64const(v)
}

/// `x < lo ? lo : (x > hi ? hi : x)`, as Rust's `clamp` (NaN stays NaN).
fn clamp(kb: &mut Kb, x: Value, lo: f64, hi: f64) -> Value {
    let (l, h) = (f(kb, lo), f(kb, hi));
    let below = kb.b.ins().fcmp(FloatCC::LessThan, x, l);
    let x = kb.b.ins().select(below, l, x);
    let above = kb.b.ins().fcmp(FloatCC::GreaterThan, x, h);
    kb.b.ins().select(above, h, x)
}

/// The cubic kernel of `Resize::filter` with coefficient `a`.
fn cubic(kb: &mut Kb, x: Value, a: f64) -> Value {
    let x = kb.b.ins().fabs(x);
    let near = {
        let (a2, a3, one) = (f(kb, a + 2.0), f(kb, a + 3.0), f(kb, 1.0));
        let t = kb.b.ins().fmul(a2, x);
        let t = kb.b.ins().fsub(t, a3);
        let t = kb.b.ins().fmul(t, x);
        let t = kb.b.ins().fmul(t, x);
        kb.b.ins().fadd(t, one)
    };
    let far = {
        let (av, a5, a8, a4) = (f(kb, a), f(kb, 5.0 * a), f(kb, 8.0 * a), f(kb, 4.0 * a));
        let t = kb.b.ins().fmul(av, x);
        let t = kb.b.ins().fsub(t, a5);
        let t = kb.b.ins().fmul(t, x);
        let t = kb.b.ins().fadd(t, a8);
        let t = kb.b.ins().fmul(t, x);
        kb.b.ins().fsub(t, a4)
    };
    let (one, two, zero) = (f(kb, 1.0), f(kb, 2.0), f(kb, 0.0));
    let le1 = kb.b.ins().fcmp(FloatCC::LessThanOrEqual, x, one);
    let lt2 = kb.b.ins().fcmp(FloatCC::LessThan, x, two);
    let r = kb.b.ins().select(lt2, far, zero);
    kb.b.ins().select(le1, near, r)
}

/// Divides every weight by their sum (summed in order from -0, as Rust's `Iterator::sum`).
fn normalise(kb: &mut Kb, w: &mut [Value]) {
    let mut sum = f(kb, -0.0);
    for &v in w.iter() {
        sum = kb.b.ins().fadd(sum, v);
    }
    for v in w.iter_mut() {
        *v = kb.b.ins().fdiv(*v, sum);
    }
}

impl KernelSpec for ResizeTapsSpec {
    fn name(&self) -> String {
        format!("resize taps {}->{} x{}", self.d_in, self.d_out, self.taps)
    }

    fn emit(&self, kb: &mut Kb) {
        let [roi, offs, wts, bias] = [kb.operand(0), kb.operand(1), kb.operand(2), kb.operand(3)];
        let r = &self.resize;
        let (din, last) = (self.d_in as f64, self.d_in as f64 - 1.0);
        let ow = self.scale * din;
        let (first, n) = self.window();
        let taps = self.taps;
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, j| {
            let load = |kb: &mut Kb, at: usize| {
                if self.roi_f64 {
                    kb.b.ins().load(F64, ro(), roi, (at * 8) as i32)
                } else {
                    let v = kb.b.ins().load(F32, ro(), roi, (at * 4) as i32);
                    kb.b.ins().fpromote(F64, v)
                }
            };
            let (s, e) = (load(kb, self.roi_at.0), load(kb, self.roi_at.1));
            // Resize::source for tf_crop_and_resize.
            let span = kb.b.ins().fsub(e, s);
            let dm1 = f(kb, din - 1.0);
            let x = if ow == 1.0 {
                let t = kb.b.ins().fmul(span, dm1);
                let two = f(kb, 2.0);
                kb.b.ins().fdiv(t, two)
            } else {
                let o = kb.b.ins().fcvt_from_uint(F64, j);
                let t = kb.b.ins().fmul(o, span);
                let t = kb.b.ins().fmul(t, dm1);
                let d = f(kb, ow - 1.0);
                kb.b.ins().fdiv(t, d)
            };
            let sd = kb.b.ins().fmul(s, dm1);
            let x = kb.b.ins().fadd(x, sd);
            let (zero, lastv) = (f(kb, 0.0), f(kb, last));
            let below = kb.b.ins().fcmp(FloatCC::LessThan, x, zero);
            let above = kb.b.ins().fcmp(FloatCC::GreaterThan, x, lastv);
            let outside = kb.b.ins().bor(below, above);
            // (index, weight) per tap for a sample point inside.
            let mut entries: Vec<(Value, Value)> = vec![];
            if r.mode == ResizeMode::Nearest {
                let rounded = match r.nearest {
                    NearestMode::Floor => kb.b.ins().floor(x),
                    NearestMode::Ceil => kb.b.ins().ceil(x),
                    NearestMode::Simple if self.scale < 1.0 => kb.b.ins().ceil(x),
                    NearestMode::Simple => kb.b.ins().floor(x),
                    NearestMode::RoundPreferFloor | NearestMode::RoundPreferCeil => {
                        // Ties (|fract| = 0.5) go to the preferred side; otherwise to nearest.
                        let t = kb.b.ins().trunc(x);
                        let fr = kb.b.ins().fsub(x, t);
                        let fr = kb.b.ins().fabs(fr);
                        let half = f(kb, 0.5);
                        let tie = kb.b.ins().fcmp(FloatCC::Equal, fr, half);
                        let pick = if r.nearest == NearestMode::RoundPreferFloor {
                            kb.b.ins().floor(x)
                        } else {
                            kb.b.ins().ceil(x)
                        };
                        let near = kb.b.ins().nearest(x);
                        kb.b.ins().select(tie, pick, near)
                    }
                };
                let c = clamp(kb, rounded, 0.0, last);
                let i = kb.b.ins().fcvt_to_uint_sat(I64, c);
                let one = f(kb, 1.0);
                entries.push((i, one));
            } else {
                let one = f(kb, 1.0);
                let c = kb.b.ins().ceil(x);
                let i0 = kb.b.ins().fsub(c, one);
                let ratio = kb.b.ins().fsub(x, i0);
                let s_ = self.scale.min(1.0);
                let a = r.cubic_coeff_a as f64;
                let mut w: Vec<Value> = (0..n as i64)
                    .map(|k| {
                        let i = f(kb, (first + k) as f64);
                        let d = kb.b.ins().fsub(i, ratio);
                        match (r.mode, r.antialias) {
                            (ResizeMode::Cubic, false) => cubic(kb, d, a),
                            (ResizeMode::Cubic, true) => {
                                let sv = f(kb, s_);
                                let t = kb.b.ins().fmul(sv, d);
                                cubic(kb, t, a)
                            }
                            (_, true) => {
                                let sv = f(kb, s_);
                                let t = kb.b.ins().fmul(d, sv);
                                let t = kb.b.ins().fabs(t);
                                let t = kb.b.ins().fsub(one, t);
                                clamp(kb, t, 0.0, 1.0)
                            }
                            // Linear: 1 - ratio, ratio.
                            _ if k == 0 => kb.b.ins().fsub(one, ratio),
                            _ => ratio,
                        }
                    })
                    .collect();
                if r.antialias {
                    normalise(kb, &mut w);
                }
                let i0i = kb.b.ins().fcvt_to_sint_sat(I64, i0);
                let base = kb.addi(i0i, first);
                let idx: Vec<Value> = (0..n as i64).map(|k| kb.addi(base, k)).collect();
                if r.exclude_outside && r.mode == ResizeMode::Cubic {
                    for (k, wk) in w.iter_mut().enumerate() {
                        let inside = kb.in_range(idx[k], 0, self.d_in as i64);
                        let z = f(kb, 0.0);
                        *wk = kb.b.ins().select(inside, *wk, z);
                    }
                    normalise(kb, &mut w);
                }
                for (k, wk) in w.into_iter().enumerate() {
                    let z = kb.iconst(0);
                    let i = kb.b.ins().smax(idx[k], z);
                    let i = kb.mini(i, self.d_in as i64 - 1);
                    entries.push((i, wk));
                }
            }
            // Outside: no taps and the extrapolation value; padding taps weigh 0.
            let row = kb.muli(j, taps as i64);
            for k in 0..taps {
                let (i, w) = entries.get(k).copied().unwrap_or_else(|| (kb.iconst(0), f(kb, 0.0)));
                let z = kb.iconst(0);
                let i = kb.b.ins().select(outside, z, i);
                let off = kb.muli(i, (self.inner * 4) as i64);
                let w = kb.b.ins().fdemote(F32, w);
                let zw = kb.fconst(0.0);
                let w = kb.b.ins().select(outside, zw, w);
                let at = kb.addi(row, k as i64);
                let p = kb.elem(offs, at, 8);
                kb.b.ins().store(rw(), off, p, 0);
                let q = kb.elem(wts, at, 4);
                kb.store_f32(w, q, 0);
            }
            let (ev, nz) = (kb.fconst(r.extrapolation_value), kb.fconst(-0.0));
            let b = kb.b.ins().select(outside, ev, nz);
            let p = kb.elem(bias, j, 4);
            kb.store_f32(b, p, 0);
        });
    }
}
