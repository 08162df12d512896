//! Pooling: windowed max/average and global pools.

use cranelift_codegen::ir::{InstBuilder, Value};

use crate::codegen::KernelSpec;
use crate::codegen::builder::{Kb, ro};
use crate::codegen::kernels::conv::Geom;

/// Max or average over 2-D windows, one tile per (image, channel) plane, taps unrolled with
/// bounds checks. Operands: X, Y.
#[derive(Clone, Debug)]
pub struct PoolSpec {
    pub max: bool,
    pub planes: usize,
    pub g: Geom,
    /// Bottom and right pads (for count_include_pad's divisor).
    pub pb: usize,
    pub pr: usize,
    pub count_include_pad: bool,
}

impl KernelSpec for PoolSpec {
    fn name(&self) -> String {
        let g = &self.g;
        format!("{}pool {}x{} s{} {}x{}", if self.max { "max" } else { "avg" }, g.kh, g.kw, g.sh, g.h, g.w)
    }

    fn emit(&self, kb: &mut Kb) {
        if self.border_taps() <= BORDER_TAP_LIMIT {
            return self.emit_classes(kb);
        }
        let [x, y] = [kb.operand(0), kb.operand(1)];
        let g = self.g.clone();
        // Outputs whose whole window lies inside the input: rows [oy0, oy1), columns [ox0, ox1).
        let (oy0, oy1) = g.interior_rows();
        let (ox0, ox1) = g.interior_cols();
        // Columns of the interior done four at a time, every tap inside.
        let vend = self.vector_end(ox0, ox1);
        let all_y = AxisTaps { inside: (0..g.kh).collect(), padded: g.kh };
        let all_x = AxisTaps { inside: (0..g.kw).collect(), padded: g.kw };
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, t| {
            let (xp, yp) = self.planes(kb, x, y, t);
            kb.for_const(0, g.oh as i64, 1, |kb, oy| {
                if vend > ox0 {
                    let inside = kb.in_range(oy, oy0 as i64, oy1 as i64);
                    let (fast, slow, join) = (kb.b.create_block(), kb.b.create_block(), kb.b.create_block());
                    kb.b.ins().brif(inside, fast, &[], slow, &[]);
                    kb.b.switch_to_block(fast);
                    kb.for_const(0, ox0 as i64, 1, |kb, ox| self.scalar(kb, xp, yp, oy, ox));
                    kb.for_const(ox0 as i64, vend as i64, 4, |kb, ox| {
                        self.point(kb, xp, yp, oy, ox, &all_y, &all_x, true)
                    });
                    kb.for_const(vend as i64, g.ow as i64, 1, |kb, ox| self.scalar(kb, xp, yp, oy, ox));
                    kb.b.ins().jump(join, &[]);
                    kb.b.switch_to_block(slow);
                    kb.for_const(0, g.ow as i64, 1, |kb, ox| self.scalar(kb, xp, yp, oy, ox));
                    kb.b.ins().jump(join, &[]);
                    kb.b.switch_to_block(join);
                } else {
                    kb.for_const(0, g.ow as i64, 1, |kb, ox| self.scalar(kb, xp, yp, oy, ox));
                }
            });
        });
    }
}

/// Taps the border code of [`PoolSpec::emit_classes`] may unroll; beyond it (huge windows or
/// pads) the generic per-tap-checked code runs instead.
const BORDER_TAP_LIMIT: usize = 16384;

/// The taps of one window along one axis: the kernel indices inside the input, and how many
/// fall inside the padded extent (count_include_pad's divisor).
struct AxisTaps {
    inside: Vec<usize>,
    padded: usize,
}

impl PoolSpec {
    /// Where the four-column steps over the interior columns `[ox0, ox1)` end. At stride 2 a
    /// step loads eight floats per tap from its even-aligned column, so it stops before those
    /// would leave the row (past the last plane's end they would leave the buffer).
    fn vector_end(&self, ox0: usize, ox1: usize) -> usize {
        let g = &self.g;
        let quads = ox1.saturating_sub(ox0) / 4;
        if g.sw != 2 {
            return ox0 + 4 * quads;
        }
        let last_even = ((g.kw - 1) * g.dw) & !1;
        let fits = |ox: usize| 2 * ox + last_even + 8 <= g.w + g.pw;
        ox0 + 4 * (0..quads).take_while(|&q| fits(ox0 + 4 * q)).count()
    }

    /// The input and output planes of tile `t`.
    fn planes(&self, kb: &mut Kb, x: Value, y: Value, t: Value) -> (Value, Value) {
        let g = &self.g;
        (kb.row(x, t, (g.h * g.w) as i64), kb.row(y, t, (g.oh * g.ow) as i64))
    }

    fn taps_y(&self, oy: usize) -> AxisTaps {
        let g = &self.g;
        axis_taps(oy, g.sh, g.ph, g.dh, g.kh, g.h, self.pb)
    }
    fn taps_x(&self, ox: usize) -> AxisTaps {
        let g = &self.g;
        axis_taps(ox, g.sw, g.pw, g.dw, g.kw, g.w, self.pr)
    }

    /// Taps unrolled at compile time for the border rows and columns of `emit_classes`.
    fn border_taps(&self) -> usize {
        let g = &self.g;
        let (oy0, oy1) = g.interior_rows();
        let (ox0, ox1) = g.interior_cols();
        let rows = oy0 + (g.oh - oy1) + 1;
        let cols = ox0 + (g.ow - ox1) + 2;
        rows.saturating_mul(cols).saturating_mul(g.kh * g.kw)
    }

    /// Every output by position class, each with its taps known at compile time: border rows
    /// one by one, interior rows in a loop; in each, border columns one by one, interior columns
    /// four at a time, then one at a time. No tap is checked at run time.
    fn emit_classes(&self, kb: &mut Kb) {
        let [x, y] = [kb.operand(0), kb.operand(1)];
        let g = self.g.clone();
        let (oy0, oy1) = g.interior_rows();
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, t| {
            let (xp, yp) = self.planes(kb, x, y, t);
            for oy in 0..oy0 {
                let v = kb.iconst(oy as i64);
                self.row(kb, xp, yp, v, &self.taps_y(oy));
            }
            if oy1 > oy0 {
                // Any interior row has every kernel row inside.
                let taps = self.taps_y(oy0);
                kb.for_const(oy0 as i64, oy1 as i64, 1, |kb, oy| self.row(kb, xp, yp, oy, &taps));
            }
            for oy in oy1..g.oh {
                let v = kb.iconst(oy as i64);
                self.row(kb, xp, yp, v, &self.taps_y(oy));
            }
        });
    }

    /// One output row with kernel rows `ty`.
    fn row(&self, kb: &mut Kb, xp: Value, yp: Value, oy: Value, ty: &AxisTaps) {
        let g = &self.g;
        let (ox0, ox1) = g.interior_cols();
        let vend = self.vector_end(ox0, ox1);
        for ox in 0..ox0 {
            let v = kb.iconst(ox as i64);
            self.point(kb, xp, yp, oy, v, ty, &self.taps_x(ox), false);
        }
        if ox1 > ox0 {
            let tx = self.taps_x(ox0);
            kb.for_const(ox0 as i64, vend as i64, 4, |kb, ox| self.point(kb, xp, yp, oy, ox, ty, &tx, true));
            kb.for_const(vend as i64, ox1 as i64, 1, |kb, ox| self.point(kb, xp, yp, oy, ox, ty, &tx, false));
        }
        for ox in ox1..g.ow {
            let v = kb.iconst(ox as i64);
            self.point(kb, xp, yp, oy, v, ty, &self.taps_x(ox), false);
        }
    }

    /// Output (oy, ox), or the four outputs from ox when `vector`, over the taps ty x tx: the
    /// first tap, then max (strictly greater: the reference's choice, which also decides what NaNs do) or sum in kernel order; the
    /// average divides by the count of taps inside (or inside the padding), and is 0 with none.
    #[allow(clippy::too_many_arguments)]
    fn point(
        &self,
        kb: &mut Kb,
        xp: Value,
        yp: Value,
        oy: Value,
        ox: Value,
        ty: &AxisTaps,
        tx: &AxisTaps,
        vector: bool,
    ) {
        let g = &self.g;
        let base = g.window_start(kb, xp, oy, ox);
        let mut acc: Option<Value> = None;
        // Stride 2: the loads of a kernel row, by byte offset, that several taps share.
        let mut loads: Vec<(i32, Value)> = vec![];
        for &ky in &ty.inside {
            for &kx in &tx.inside {
                let off = ((ky * g.dh * g.w + kx * g.dw) * 4) as i32;
                let v = if !vector {
                    kb.load_f32(base, off, ro())
                } else if g.sw == 1 {
                    kb.load_v(base, off, ro())
                } else if g.sw == 2 {
                    // The even or odd lanes of eight floats from the even column at or before
                    // the tap's (see `vector_end`): four loads and three shuffles make the nine
                    // taps of a 3x3 window's row.
                    let parity = ((kx * g.dw) % 2) as u8;
                    let at = off - 4 * parity as i32;
                    let mut load = |kb: &mut Kb, o: i32| match loads.iter().find(|l| l.0 == o) {
                        Some(&(_, v)) => v,
                        None => {
                            let v = kb.load_v(base, o, ro());
                            loads.push((o, v));
                            v
                        }
                    };
                    let lo = load(kb, at);
                    let hi = load(kb, at + 16);
                    kb.shuffle32(lo, hi, [parity, parity + 2, parity + 4, parity + 6])
                } else {
                    let mut v = kb.vconst(0.0);
                    for l in 0..4 {
                        let s = kb.load_f32(base, off + (l * g.sw * 4) as i32, ro());
                        v = kb.b.ins().insertlane(v, s, l as u8);
                    }
                    v
                };
                acc = Some(match acc {
                    None => v,
                    Some(a) if self.max => {
                        let gt = kb.flt(a, v);
                        if vector {
                            let mask = kb.b.ins().bitcast(
                                crate::codegen::builder::F32X4,
                                cranelift_codegen::ir::MemFlagsData::new(),
                                gt,
                            );
                            kb.b.ins().bitselect(mask, v, a)
                        } else {
                            kb.b.ins().select(gt, v, a)
                        }
                    }
                    Some(a) => kb.b.ins().fadd(a, v),
                });
            }
        }
        let count = if self.count_include_pad { ty.padded * tx.padded } else { ty.inside.len() * tx.inside.len() };
        let out = match acc {
            // No tap inside: max of nothing is -inf, the average 0 (as the checked path).
            None => {
                let c = if self.max { f32::NEG_INFINITY } else { 0.0 };
                if vector { kb.vconst(c) } else { kb.fconst(c) }
            }
            Some(a) if self.max => a,
            // A tap inside is inside the padded extent too, so the count is at least 1.
            Some(a) => {
                let n = if vector { kb.vconst(count as f32) } else { kb.fconst(count as f32) };
                kb.b.ins().fdiv(a, n)
            }
        };
        let idx = {
            let r = kb.muli(oy, g.ow as i64);
            kb.add(r, ox)
        };
        let p = kb.elem(yp, idx, 4);
        if vector {
            kb.store_v(out, p, 0);
        } else {
            kb.store_f32(out, p, 0);
        }
    }

    /// One output, any position: taps outside the input are skipped (and counted for the
    /// average's divisor when they fall on padding and count_include_pad is set).
    fn scalar(&self, kb: &mut Kb, xp: Value, yp: Value, oy: Value, ox: Value) {
        let g = &self.g;
        let (iy0, ix0) = g.origin(kb, oy, ox);
        let mut acc = kb.fconst(if self.max { f32::NEG_INFINITY } else { 0.0 });
        let mut real = kb.fconst(0.0);
        let mut padded = kb.fconst(0.0);
        let one = kb.fconst(1.0);
        let zero = kb.fconst(0.0);
        let mut found = kb.b.ins().iconst(cranelift_codegen::ir::types::I8, 0);
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let iy = kb.addi(iy0, (ky * g.dh) as i64);
                let ix = kb.addi(ix0, (kx * g.dw) as i64);
                let iny = kb.in_range(iy, 0, g.h as i64);
                let inx = kb.in_range(ix, 0, g.w as i64);
                let inside = kb.b.ins().band(iny, inx);
                let iyc = clamp(kb, iy, g.h as i64 - 1);
                let ixc = clamp(kb, ix, g.w as i64 - 1);
                let off = {
                    let r = kb.muli(iyc, g.w as i64);
                    kb.add(r, ixc)
                };
                let p = kb.elem(xp, off, 4);
                let v = kb.load_f32(p, 0, ro());
                if self.max {
                    // The first tap inside, then any strictly greater one (see `point`).
                    let gt = kb.flt(acc, v);
                    let one = kb.b.ins().iconst(cranelift_codegen::ir::types::I8, 1);
                    let first = kb.b.ins().bxor(found, one);
                    let better = kb.b.ins().bor(gt, first);
                    let take = kb.b.ins().band(inside, better);
                    acc = kb.b.ins().select(take, v, acc);
                    found = kb.b.ins().bor(found, inside);
                } else {
                    let a = kb.b.ins().fadd(acc, v);
                    acc = kb.b.ins().select(inside, a, acc);
                    let r = kb.b.ins().fadd(real, one);
                    real = kb.b.ins().select(inside, r, real);
                    let py = kb.in_range(iy, -(g.ph as i64), (g.h + self.pb) as i64);
                    let px = kb.in_range(ix, -(g.pw as i64), (g.w + self.pr) as i64);
                    let inpad = kb.b.ins().band(py, px);
                    let q = kb.b.ins().fadd(padded, one);
                    padded = kb.b.ins().select(inpad, q, padded);
                }
            }
        }
        if !self.max {
            let div = if self.count_include_pad { padded } else { real };
            let is_zero = kb.b.ins().fcmp(cranelift_codegen::ir::condcodes::FloatCC::Equal, div, zero);
            let q = kb.b.ins().fdiv(acc, div);
            acc = kb.b.ins().select(is_zero, zero, q);
        }
        let idx = {
            let r = kb.muli(oy, g.ow as i64);
            kb.add(r, ox)
        };
        let p = kb.elem(yp, idx, 4);
        kb.store_f32(acc, p, 0);
    }
}

/// The taps of output position `o` along one axis (stride s, leading pad p, dilation d, kernel
/// k, input n, trailing pad pe).
fn axis_taps(o: usize, s: usize, p: usize, d: usize, k: usize, n: usize, pe: usize) -> AxisTaps {
    let pos = |t: usize| (o * s + t * d) as i64 - p as i64;
    AxisTaps {
        inside: (0..k).filter(|&t| (0..n as i64).contains(&pos(t))).collect(),
        padded: (0..k).filter(|&t| (-(p as i64)..(n + pe) as i64).contains(&pos(t))).count(),
    }
}

fn clamp(kb: &mut Kb, v: Value, hi: i64) -> Value {
    let z = kb.iconst(0);
    let a = kb.b.ins().smax(v, z);
    kb.mini(a, hi)
}

/// Mean or max over each plane of `size` elements. The mean accumulates in f32x4 and then across
/// lanes; the max is sequential: MaxPool's rule (the first element, then any strictly greater
/// one) decides what NaNs and equal zeros give, and lanes would see the elements out of order.
/// Operands: X, Y. One tile per plane.
#[derive(Clone, Debug)]
pub struct GlobalPoolSpec {
    pub max: bool,
    pub planes: usize,
    pub size: usize,
}

impl KernelSpec for GlobalPoolSpec {
    fn name(&self) -> String {
        format!("global{}pool {}", if self.max { "max" } else { "avg" }, self.size)
    }

    fn emit(&self, kb: &mut Kb) {
        let [x, y] = [kb.operand(0), kb.operand(1)];
        let size = self.size;
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, t| {
            let xp = {
                let o = kb.muli(t, size as i64);
                kb.elem(x, o, 4)
            };
            let r = if self.max && size == 0 {
                kb.fconst(f32::NEG_INFINITY)
            } else if self.max {
                let first = kb.load_f32(xp, 0, ro());
                let acc = kb.var(crate::codegen::builder::F32, first);
                kb.for_const(1, size as i64, 1, |kb, i| {
                    let p = kb.elem(xp, i, 4);
                    let v = kb.load_f32(p, 0, ro());
                    let a = kb.b.use_var(acc);
                    let gt = kb.flt(a, v);
                    let n = kb.b.ins().select(gt, v, a);
                    kb.b.def_var(acc, n);
                });
                kb.b.use_var(acc)
            } else {
                let iv = kb.vconst(0.0);
                let acc = kb.var(crate::codegen::builder::F32X4, iv);
                let vend = size / 4 * 4;
                kb.for_const(0, vend as i64, 4, |kb, i| {
                    let p = kb.elem(xp, i, 4);
                    let v = kb.load_v(p, 0, ro());
                    let a = kb.b.use_var(acc);
                    let n = kb.b.ins().fadd(a, v);
                    kb.b.def_var(acc, n);
                });
                let a = kb.b.use_var(acc);
                let mut s = kb.b.ins().extractlane(a, 0);
                for lane in 1..4u8 {
                    let l = kb.b.ins().extractlane(a, lane);
                    s = kb.b.ins().fadd(s, l);
                }
                let sv = kb.var(crate::codegen::builder::F32, s);
                kb.for_const(vend as i64, size as i64, 1, |kb, i| {
                    let p = kb.elem(xp, i, 4);
                    let v = kb.load_f32(p, 0, ro());
                    let a = kb.b.use_var(sv);
                    let n = kb.b.ins().fadd(a, v);
                    kb.b.def_var(sv, n);
                });
                let r = kb.b.use_var(sv);
                let d = kb.fconst(size as f32);
                kb.b.ins().fdiv(r, d)
            };
            let p = kb.elem(y, t, 4);
            kb.store_f32(r, p, 0);
        });
    }
}
