//! The direct depthwise conv: output channel oc reads input channel oc / mult, one tile per
//! output plane; Cranelift code for borders and narrow tiers, the AVX-512 row and plane kernels
//! (`wide_depthwise*.rs`) where they apply.

use cranelift_codegen::ir::Value;

use crate::codegen::KernelSpec;
use crate::codegen::builder::{Kb, ro, rw};
use crate::codegen::kernels::conv::{DwStep, Geom, PlaneEpilogue};
use crate::codegen::kernels::math::act_needs_helpers;
use crate::codegen::wide::WideAct;
use crate::codegen::wide_depthwise::{DwRowStep, WideDepthwiseRow};
use crate::codegen::wide_depthwise_plane::WideDepthwisePlane;

/// Quads of four outputs a depthwise interior step computes at once: four independent FMA
/// chains hide the FMA latency, and their accumulators plus nine splat weights still fit the
/// sixteen xmm registers.
const DW_QUADS: usize = 4;

/// Depthwise conv: output channel oc reads input channel oc / mult. One tile per output plane;
/// interior rows vectorised (f32x4 along x) where the stride is 1 or 2; border outputs emitted
/// one by one with only the taps that fall inside.
/// Operands: X, W ([C_out, kh*kw]), Y, bias (if any), one per Add step, helpers (if needed).
#[derive(Clone, Debug)]
pub struct DepthwiseSpec {
    pub n: usize,
    pub c_in: usize,
    pub mult: usize,
    pub g: Geom,
    pub bias: bool,
    pub steps: Vec<DwStep>,
    /// Interior rows call the AVX-512 row kernel (`wide_row`), an operand after the helpers.
    pub wide: bool,
    /// With `wide`: the operand is the whole-plane kernel (`wide_plane`), which computes each
    /// tile's plane on its own.
    pub plane: bool,
}

impl DepthwiseSpec {
    pub fn c_out(&self) -> usize {
        self.c_in * self.mult
    }
    pub fn tiles(&self) -> usize {
        self.n * self.c_out()
    }
    pub fn needs_helpers(&self) -> bool {
        self.steps.iter().any(|s| matches!(s, DwStep::Act(a) if act_needs_helpers(a)))
    }

    /// The AVX-512 kernel for this conv's interior rows, when it has one: column stride 1 or
    /// 2, and an epilogue of at most one add and ReLU / Clip bounds.
    pub fn wide_row(&self) -> Option<WideDepthwiseRow> {
        let g = &self.g;
        if g.sw > 2 {
            return None;
        }
        let taps =
            (0..g.kh).flat_map(|ky| (0..g.kw).map(move |kx| ((ky * g.dh * g.w + kx * g.dw) * 4) as i32)).collect();
        let row = WideDepthwiseRow { taps, stride: g.sw, bias: self.bias, steps: self.machine_steps()? };
        row.fits().then_some(row)
    }

    /// The epilogue as the machine-code kernels take it, when they can.
    fn machine_steps(&self) -> Option<Vec<DwRowStep>> {
        let mut steps = vec![];
        for s in &self.steps {
            match s {
                DwStep::Add { per_channel } => steps.push(DwRowStep::Add { per_channel: *per_channel }),
                DwStep::Act(a) => steps.extend(WideAct::of(a)?.into_iter().map(DwRowStep::Bound)),
            }
        }
        Some(steps)
    }

    /// The AVX-512 kernel for whole planes, when it applies (small maps; see
    /// `wide_depthwise_plane`): the row kernel's epilogue rules, one stride along both dims,
    /// any number of taps.
    pub fn wide_plane(&self) -> Option<WideDepthwisePlane> {
        let g = &self.g;
        let plane = WideDepthwisePlane {
            h: g.h,
            w: g.w,
            oh: g.oh,
            ow: g.ow,
            kh: g.kh,
            kw: g.kw,
            stride: g.sh,
            ph: g.ph,
            pw: g.pw,
            dh: g.dh,
            dw: g.dw,
            bias: self.bias,
            steps: self.machine_steps()?,
        };
        (g.sh == g.sw && plane.fits()).then_some(plane)
    }
}

impl DepthwiseSpec {
    /// The bias and add pointers the machine-code kernels take (r8, r9) for tile `t` (channel
    /// `oc`): the channel's bias, and the channel's add value or the residual at element `at`
    /// of the tile's plane (0 where there is none).
    fn machine_ptrs(&self, kb: &mut Kb, ops: &[Value], oc: Value, t: Value, at: Value) -> (Value, Value) {
        let bias = if self.bias { kb.elem(ops[3], oc, 4) } else { kb.iconst(0) };
        let per_channel = self.steps.iter().find_map(|s| match s {
            DwStep::Add { per_channel } => Some(*per_channel),
            _ => None,
        });
        let add = match (per_channel, ops.get(3 + self.bias as usize).copied()) {
            (Some(true), Some(a)) => kb.elem(a, oc, 4),
            (Some(false), Some(a)) => {
                let p = kb.muli(t, (self.g.oh * self.g.ow) as i64);
                let i = kb.add(p, at);
                kb.elem(a, i, 4)
            }
            _ => kb.iconst(0),
        };
        (bias, add)
    }
}

impl KernelSpec for DepthwiseSpec {
    fn name(&self) -> String {
        let g = &self.g;
        format!("depthwise {}x{} s{} c{} {}x{}", g.kh, g.kw, g.sh, self.c_out(), g.h, g.w)
    }

    fn emit(&self, kb: &mut Kb) {
        let adds = self.steps.iter().filter(|s| matches!(s, DwStep::Add { .. })).count();
        let n_ops = 3 + self.bias as usize + adds;
        let ops = kb.operands(n_ops);
        let helpers = self.needs_helpers().then(|| kb.operand(n_ops));
        let wide = self.wide.then(|| kb.operand(n_ops + helpers.is_some() as usize));
        let g = self.g.clone();
        let (hw, ohw, taps) = (g.h * g.w, g.oh * g.ow, g.kh * g.kw);
        let c_out = self.c_out();
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, t| {
            let (img, oc) = kb.divmod(t, c_out as i64);
            let ic = kb.divmod(oc, self.mult as i64).0;
            let xplane = {
                let a = kb.muli(img, self.c_in as i64);
                let b = kb.add(a, ic);
                let o = kb.muli(b, hw as i64);
                kb.elem(ops[0], o, 4)
            };
            let wrow = {
                let o = kb.muli(oc, taps as i64);
                kb.elem(ops[1], o, 4)
            };
            let yplane = {
                let o = kb.muli(t, ohw as i64);
                kb.elem(ops[2], o, 4)
            };
            if let (Some(f), true) = (wide, self.plane) {
                let zero = kb.iconst(0);
                let (bias_ptr, add) = self.machine_ptrs(kb, &ops, oc, t, zero);
                kb.call_code(f, &[xplane, yplane, wrow, zero, bias_ptr, add]);
                return;
            }
            let epi = PlaneEpilogue::new(kb, &ops[3..], self.bias, &self.steps, oc, t, ohw);
            let ws: Vec<Value> = (0..taps).map(|i| kb.load_f32(wrow, (i * 4) as i32, ro())).collect();
            // The splat weights go to a stack buffer that the vector loop reloads at each use:
            // held in values, they outnumber the sixteen xmm registers beside the accumulators
            // and Cranelift re-broadcasts and re-spills them on every iteration.
            let wsplat = kb.stack_buffer((taps * 16) as u32);
            for (i, &w) in ws.iter().enumerate() {
                let v = kb.splat(w);
                kb.store_v(v, wsplat, (i * 16) as i32);
            }
            let finish = |kb: &mut Kb, v: Value, _out: Value, idx: Value| epi.apply(kb, &self.steps, v, idx, helpers);
            // Rows and columns split into borders (some taps outside; each border position is
            // emitted on its own with just its valid taps, so nothing is checked at run time)
            // and interiors (all taps inside: a loop, four columns per step when the stride is 1).
            let (y_lo, y_hi) = g.interior_rows();
            let (x_lo, x_hi) = g.interior_cols();
            // Four columns per step at stride 1 (one load per tap), and at stride 2 (two loads
            // and the even lanes) while the second load, one float past the last tap, stays in
            // the row.
            let vector = g.sw == 1 || g.sw == 2;
            let quad_fits = |ox: usize| g.sw == 1 || (ox + 3) * 2 + (g.kw - 1) * g.dw + 1 < g.w + g.pw;
            let vend = if vector {
                let mut e = x_lo;
                while e + 4 <= x_hi && quad_fits(e) {
                    e += 4;
                }
                e
            } else {
                x_lo
            };
            // Not `ro()`: a load that may move would be hoisted out of the loop, back into a register.
            let wvec = |kb: &mut Kb, tap: usize| kb.load_v(wsplat, (tap * 16) as i32, rw());
            // Outputs (oy, ox .. ox + lanes * quads) with kernel rows `kys` and columns `kxs`:
            // `quads` vectors of four (or one scalar) with independent accumulators, so that the
            // FMA chains overlap instead of waiting on each other's latency. Each output still
            // sums its taps in (ky, kx) order, so the unroll does not change a bit.
            let out = |kb: &mut Kb, oy: Value, ox: Value, kys: &[usize], kxs: &[usize], lanes: usize, quads: usize| {
                let base = g.window_start(kb, xplane, oy, ox);
                let mut accs: Vec<Value> =
                    (0..quads).map(|_| if lanes == 4 { kb.vconst(0.0) } else { kb.fconst(0.0) }).collect();
                for &ky in kys {
                    for &kx in kxs {
                        let tap = ((ky * g.dh * g.w + kx * g.dw) * 4) as i32;
                        for (q, acc) in accs.iter_mut().enumerate() {
                            let off = tap + (q * 4 * g.sw * 4) as i32;
                            let (v, w) = if lanes == 4 && g.sw == 2 {
                                let lo = kb.load_v(base, off, ro());
                                let hi = kb.load_v(base, off + 16, ro());
                                (kb.shuffle32(lo, hi, [0, 2, 4, 6]), wvec(kb, ky * g.kw + kx))
                            } else if lanes == 4 {
                                (kb.load_v(base, off, ro()), wvec(kb, ky * g.kw + kx))
                            } else {
                                (kb.load_f32(base, off, ro()), ws[ky * g.kw + kx])
                            };
                            *acc = kb.fma(v, w, *acc);
                        }
                    }
                }
                let row = kb.muli(oy, g.ow as i64);
                let idx0 = kb.add(row, ox);
                let yrow = kb.elem(yplane, row, 4);
                for (q, &acc) in accs.iter().enumerate() {
                    let idx = kb.addi(idx0, (q * 4) as i64);
                    let r = finish(kb, acc, yrow, idx);
                    let p = kb.elem(yplane, idx, 4);
                    if lanes == 4 {
                        kb.store_v(r, p, 0);
                    } else {
                        kb.store_f32(r, p, 0);
                    }
                }
            };
            let all_x: Vec<usize> = (0..g.kw).collect();
            // One output row (oy a run-time value) with kernel rows `kys`.
            let row = |kb: &mut Kb, oy: Value, kys: &[usize]| {
                for ox in (0..x_lo).chain(x_hi..g.ow) {
                    let c = kb.iconst(ox as i64);
                    out(kb, oy, c, kys, &g.cols_inside(ox), 1, 1);
                }
                if vector {
                    let group = 4 * DW_QUADS;
                    let gend = x_lo + (vend - x_lo) / group * group;
                    kb.for_const(x_lo as i64, gend as i64, group as i64, |kb, ox| {
                        out(kb, oy, ox, kys, &all_x, 4, DW_QUADS)
                    });
                    kb.for_const(gend as i64, vend as i64, 4, |kb, ox| out(kb, oy, ox, kys, &all_x, 4, 1));
                    kb.for_const(vend as i64, x_hi as i64, 1, |kb, ox| out(kb, oy, ox, kys, &all_x, 1, 1));
                } else {
                    kb.for_const(x_lo as i64, x_hi as i64, 1, |kb, ox| out(kb, oy, ox, kys, &all_x, 1, 1));
                }
            };
            for oy in (0..y_lo).chain(y_hi.max(y_lo)..g.oh) {
                let c = kb.iconst(oy as i64);
                row(kb, c, &g.rows_inside(oy));
            }
            let all_y: Vec<usize> = (0..g.kh).collect();
            match wide {
                Some(f) => {
                    // Interior rows: the border columns here, the rest in the row kernel.
                    kb.for_const(y_lo as i64, y_hi as i64, 1, |kb, oy| {
                        for ox in (0..x_lo).chain(x_hi..g.ow) {
                            let c = kb.iconst(ox as i64);
                            out(kb, oy, c, &all_y, &g.cols_inside(ox), 1, 1);
                        }
                        if x_hi > x_lo {
                            let x0 = kb.iconst(x_lo as i64);
                            let src = g.window_start(kb, xplane, oy, x0);
                            let first = {
                                let r = kb.muli(oy, g.ow as i64);
                                kb.addi(r, x_lo as i64)
                            };
                            let dst = kb.elem(yplane, first, 4);
                            let (bias_ptr, add) = self.machine_ptrs(kb, &ops, oc, t, first);
                            let count = kb.iconst((x_hi - x_lo) as i64);
                            kb.call_code(f, &[src, dst, wrow, count, bias_ptr, add]);
                        }
                    });
                }
                None => kb.for_const(y_lo as i64, y_hi as i64, 1, |kb, oy| row(kb, oy, &all_y)),
            }
        });
    }
}
