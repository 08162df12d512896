//! Convolution kernels: im2col into packed B panels for the GEMM kernel (dense and grouped
//! convs), and what the plane kernels share (depthwise: `depthwise.rs`).

use cranelift_codegen::ir::{InstBuilder, Value};
use incept_ir::ops::Activation;

use crate::codegen::KernelSpec;
use crate::codegen::builder::{I64, Kb, ro};
use crate::codegen::kernels::math::emit_act;

/// 2-D window geometry (after padding resolution).
#[derive(Clone, Debug, PartialEq)]
pub struct Geom {
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    /// Top and left pads (bottom/right follow from the output size).
    pub ph: usize,
    pub pw: usize,
    pub dh: usize,
    pub dw: usize,
    pub oh: usize,
    pub ow: usize,
}

impl Geom {
    /// Output rows whose window lies wholly inside the input: `[lo, hi)`.
    pub fn interior_rows(&self) -> (usize, usize) {
        interior(self.h, self.kh, self.sh, self.ph, self.dh, self.oh)
    }

    /// Output columns whose window lies wholly inside the input: `[lo, hi)`.
    pub fn interior_cols(&self) -> (usize, usize) {
        interior(self.w, self.kw, self.sw, self.pw, self.dw, self.ow)
    }

    /// The input position of output (oy, ox)'s window before its taps: `(oy*sh - ph, ox*sw - pw)`.
    pub fn origin(&self, kb: &mut Kb, oy: Value, ox: Value) -> (Value, Value) {
        let iy0 = {
            let a = kb.muli(oy, self.sh as i64);
            kb.addi(a, -(self.ph as i64))
        };
        let ix0 = {
            let a = kb.muli(ox, self.sw as i64);
            kb.addi(a, -(self.pw as i64))
        };
        (iy0, ix0)
    }

    /// A pointer to the first tap of output (oy, ox)'s window in `plane` (which must be inside).
    pub fn window_start(&self, kb: &mut Kb, plane: Value, oy: Value, ox: Value) -> Value {
        let (iy0, ix0) = self.origin(kb, oy, ox);
        let r = kb.muli(iy0, self.w as i64);
        let o = kb.add(r, ix0);
        kb.elem(plane, o, 4)
    }

    /// The kernel rows that fall inside the input for output row `oy`.
    pub fn rows_inside(&self, oy: usize) -> Vec<usize> {
        taps_inside(oy, self.sh, self.ph, self.dh, self.kh, self.h)
    }

    /// The kernel columns that fall inside the input for output column `ox`.
    pub fn cols_inside(&self, ox: usize) -> Vec<usize> {
        taps_inside(ox, self.sw, self.pw, self.dw, self.kw, self.w)
    }
}

fn interior(n: usize, k: usize, s: usize, p: usize, d: usize, out: usize) -> (usize, usize) {
    let span = (k - 1) * d;
    let lo = p.div_ceil(s);
    // Largest o with o * s - p + span <= n - 1.
    let hi = if n + p > span { ((n - 1 + p - span) / s + 1).min(out) } else { 0 };
    (lo.min(hi), hi)
}

fn taps_inside(o: usize, s: usize, p: usize, d: usize, k: usize, n: usize) -> Vec<usize> {
    (0..k).filter(|&t| (0..n as i64).contains(&((o * s + t * d) as i64 - p as i64))).collect()
}

/// The panel row an unrolled row-mode im2col fills and where an output row starts in it.
struct ConstRow {
    /// The channel's first panel row (k = ci*kh*kw of panel 0).
    rows0: Value,
    /// Bytes from `rows0` to this tap's row of panel 0.
    krow: i32,
    /// The output row's first column.
    n0: usize,
    panel_bytes: usize,
    zero: Value,
}

/// Copies an unrolled row-mode im2col may emit per input channel (see `Im2colSpec::unrolled`).
const UNROLL_COPIES: usize = 1024;
/// Copies a band-unrolled im2col may emit per kernel row (see `Im2colSpec::band_unrolled`).
/// ResNet50's 7x7 stem in 14-row bands (2842 copies) ran its im2col 2.17 -> 1.65 ms unrolled
/// but its 112 KB kernel added 70-180 ms to a 0.3 s compile; InceptionV3's 5x5 convs (350
/// copies: 4.5 -> 1.45 ms) cost next to nothing.
const BAND_UNROLL_COPIES: usize = 1024;

/// Writes the im2col matrix of one group of one image as packed B panels `nr` columns wide:
/// `P[b][j][k][c] = X[img, g*cin + ci, oy*sh - ph + ky*dh, ox*sw - pw + kx*dw]` (0 outside),
/// k = (ci, ky, kx), column j*nr + c = (oy, ox). Operands: X, P, and for a band its first row.
///
/// Two ways to fill it. Panel mode (1x1 stride-1 convs, column strides above 2, and kernels too
/// wide for row mode): a tile is one panel, filled four columns (one f32x4) at a time; tiles:
/// batch x panels. Row mode (every other conv): a tile is one kernel row of one input channel,
/// and each of its taps copies whole output rows (at stride 2 the even lanes of two loads),
/// whose valid columns are compile-time ranges, so only the row ends and the rare quads that
/// cross a panel edge take a scalar path; tiles: batch x cin x kh (x cin when small maps unroll the rows, see
/// `unrolled`). Panel mode checks each tap of each quad against the borders, which sends most
/// quads of a wide kernel on a small map (Inception's 1x7 on 17x17) to the per-element path.
#[derive(Clone, Debug)]
pub struct Im2colSpec {
    pub batch: usize,
    pub groups: usize,
    pub c_total: usize,
    pub cin: usize,
    pub g: Geom,
    /// Panel width: the GEMM tier's NR (a multiple of 4).
    pub nr: usize,
    /// The output rows per band (None: all): a big conv is packed and multiplied a band of
    /// rows at a time while its panels stay in cache. The band's first row is read at run time
    /// from a third operand (an i64), so that every band of a height shares one kernel.
    pub band: Option<usize>,
}

impl Im2colSpec {
    pub fn k(&self) -> usize {
        self.cin * self.g.kh * self.g.kw
    }
    /// The output rows the panels hold.
    pub fn rows(&self) -> usize {
        self.band.unwrap_or(self.g.oh)
    }
    pub fn n(&self) -> usize {
        self.rows() * self.g.ow
    }

    /// The band's first output row: read from operand 2 when banded.
    fn first_row(&self, kb: &mut Kb) -> Value {
        match self.band {
            Some(_) => {
                let p = kb.operand(2);
                kb.b.ins().load(I64, ro(), p, 0)
            }
            None => kb.iconst(0),
        }
    }
    pub fn panels(&self) -> usize {
        self.n().div_ceil(self.nr)
    }
    pub fn tiles(&self) -> usize {
        match (self.row_mode(), self.unrolled()) {
            (true, true) => self.batch * self.cin,
            (true, false) => self.batch * self.cin * self.g.kh,
            (false, _) => self.batch * self.panels(),
        }
    }
    /// Whether row mode unrolls every kernel row, tap and output row of a channel into
    /// straight-line code (small maps, unbanded): every address, border and panel edge is then
    /// known at compile time. On Inception's 17x17 maps the run-time row loop spent most of its
    /// time on panel edges (a 17-column row starts at a different lane of the panel each time).
    pub fn unrolled(&self) -> bool {
        let g = &self.g;
        self.band.is_none() && self.rows_fit() && g.kh * g.kw * g.oh * (g.ow.div_ceil(Q) + 1) <= UNROLL_COPIES
    }
    /// Whether a band's row loop is unrolled (row mode, banded, few enough copies): the rows'
    /// columns and panel edges become compile-time constants, and rows in the padding read a
    /// row of zeros, operand 3 (`zero_row_bytes` bytes), instead of the input.
    pub fn band_unrolled(&self) -> bool {
        let g = &self.g;
        self.band.is_some()
            && self.row_mode()
            && !self.unrolled()
            && g.kw * self.rows() * (g.ow.div_ceil(Q) + 1) <= BAND_UNROLL_COPIES
    }
    /// Bytes of the zero row a band-unrolled im2col reads for rows in the padding: an input
    /// row and the eight floats a stride-2 step may load past its last tap.
    pub fn zero_row_bytes(&self) -> usize {
        (self.g.w + 8) * 4
    }
    /// Whether the geometry suits row mode: not a 1x1 stride-1 conv (panel mode copies whole
    /// panels), taps of a kernel row few enough to unroll, strides of at most 2 (above, a gather).
    fn rows_fit(&self) -> bool {
        let g = &self.g;
        let pointwise = g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0;
        !pointwise && g.sw <= 2 && g.kw <= 16
    }
    /// Bytes of the packed buffer.
    pub fn bytes(&self) -> usize {
        self.batch * self.panels() * self.k() * self.nr * 4
    }
    /// Whether a tile is an input channel (see the type's documentation).
    pub fn row_mode(&self) -> bool {
        // The run-time row loop finds a column's panel by a shift; unrolled, any width works
        // (the transposed convs' twelve-position panels).
        self.rows_fit() && (self.nr.is_power_of_two() || self.unrolled())
    }

    /// The input plane of channel `ci` of problem `b` (image and group).
    fn channel_plane(&self, kb: &mut Kb, x: Value, b: Value, ci: Value) -> Value {
        let (img, grp) = kb.divmod(b, self.groups as i64);
        let a = kb.muli(img, self.c_total as i64);
        let c = kb.muli(grp, self.cin as i64);
        let ch = kb.add(a, c);
        let ch = kb.add(ch, ci);
        kb.elem(x, ch, (self.g.h * self.g.w * 4) as i64)
    }

    /// Kernel column `kx`: its input column offset from `ox * sw`, and the output columns whose
    /// input column is inside, `[lo, hi)` (empty at the row's end when none is).
    fn tap_columns(&self, kx: usize) -> (i64, usize, usize) {
        let g = &self.g;
        let off = (kx * g.dw) as i64 - g.pw as i64;
        let inside = |ox: usize| (0..g.w as i64).contains(&(ox as i64 * g.sw as i64 + off));
        let lo = (0..g.ow).find(|&ox| inside(ox)).unwrap_or(g.ow);
        let hi = lo + (lo..g.ow).take_while(|&ox| inside(ox)).count();
        (off, lo, hi)
    }

    /// Row mode unrolled (see `unrolled`): tile t = (image and group, input channel).
    fn emit_rows_unrolled(&self, kb: &mut Kb, x: Value, p: Value) {
        let g = self.g.clone();
        let (pn, k, nr) = (self.panels(), self.k(), self.nr);
        let panel_bytes = k * nr * 4;
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, t| {
            let (b, ci) = kb.divmod(t, self.cin as i64);
            let xc = self.channel_plane(kb, x, b, ci);
            // Row k = ci*kh*kw of the image's first panel.
            let rows0 = {
                let pb = kb.muli(b, (pn * panel_bytes) as i64);
                let kr = kb.muli(ci, (g.kh * g.kw * nr * 4) as i64);
                let o = kb.add(pb, kr);
                kb.add(p, o)
            };
            let zero = kb.vconst(0.0);
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let krow = ((ky * g.kw + kx) * nr * 4) as i32;
                    let (off, lo, hi) = self.tap_columns(kx);
                    for oy in 0..g.oh {
                        let iy = (oy * g.sh + ky * g.dh) as i64 - g.ph as i64;
                        let row = ConstRow { rows0, krow, n0: oy * g.ow, panel_bytes, zero };
                        if (0..g.h as i64).contains(&iy) {
                            // Element ox of the row at byte `src_at + 4 * ox * sw` of the channel.
                            let src_at = (iy * g.w as i64 + off) * 4;
                            let row_end = (iy + 1) * g.w as i64 * 4;
                            self.run_const(kb, &row, 0, lo, None);
                            self.run_const(kb, &row, lo, hi, Some((xc, src_at, row_end)));
                            self.run_const(kb, &row, hi, g.ow, None);
                        } else {
                            self.run_const(kb, &row, 0, g.ow, None);
                        }
                    }
                    // The last panel's columns past N are zeros (see `emit_rows`).
                    let last = krow as usize + (pn - 1) * panel_bytes;
                    let z = kb.fconst(0.0);
                    for c in self.n() - (pn - 1) * nr..nr {
                        kb.store_f32(z, rows0, (last + c * 4) as i32);
                    }
                }
            }
        });
    }

    /// `run` with every address known at compile time: columns [a, b) of an output row, from
    /// `src` (the channel, the byte offset of the row's element 0, and of the input row's end)
    /// or zeros. Quads inside a
    /// panel are one vector store; a quad across a panel edge stores its lanes one by one.
    fn run_const(&self, kb: &mut Kb, row: &ConstRow, a: usize, b: usize, src: Option<(Value, i64, i64)>) {
        let (nr, sw) = (self.nr, self.g.sw);
        let at = |n: usize| (row.krow as usize + (n / nr) * row.panel_bytes + (n % nr) * 4) as i32;
        // At stride 2 a quad loads eight floats: the last of them must stay in the input row.
        let room = |ox: usize| sw == 1 || src.is_none_or(|(_, s, end)| s + 4 * (ox * sw + 2 * Q) as i64 <= end);
        let mut ox = a;
        while ox + Q <= b && room(ox) {
            let v = match src {
                None => row.zero,
                Some((p, s, _)) => {
                    let o = (s + 4 * (ox * sw) as i64) as i32;
                    if sw == 1 {
                        kb.load_v(p, o, ro())
                    } else {
                        let lo = kb.load_v(p, o, ro());
                        let hi = kb.load_v(p, o + 16, ro());
                        kb.shuffle32(lo, hi, [0, 2, 4, 6])
                    }
                }
            };
            let n = row.n0 + ox;
            if n % nr + Q <= nr {
                kb.store_v(v, row.rows0, at(n));
            } else {
                for l in 0..Q {
                    let x = kb.b.ins().extractlane(v, l as u8);
                    kb.store_f32(x, row.rows0, at(n + l));
                }
            }
            ox += Q;
        }
        for ox in ox..b {
            let v = match src {
                None => kb.fconst(0.0),
                Some((p, s, _)) => kb.load_f32(p, (s + 4 * (ox * sw) as i64) as i32, ro()),
            };
            kb.store_f32(v, row.rows0, at(row.n0 + ox));
        }
    }

    /// Row mode: tile t = (image and group, input channel).
    fn emit_rows(&self, kb: &mut Kb, x: Value, p: Value) {
        if self.unrolled() {
            return self.emit_rows_unrolled(kb, x, p);
        }
        let g = self.g.clone();
        let (pn, k, nr) = (self.panels(), self.k(), self.nr);
        let panel_bytes = (k * nr * 4) as i64;
        let oy0 = self.first_row(kb);
        let oy1 = kb.addi(oy0, self.rows() as i64);
        let zeros = self.band_unrolled().then(|| kb.operand(3));
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, t| {
            let zero = kb.vconst(0.0);
            let (b, rest) = kb.divmod(t, (self.cin * g.kh) as i64);
            let (ci, ky) = kb.divmod(rest, g.kh as i64);
            let xc = self.channel_plane(kb, x, b, ci);
            // Row k = (ci*kh + ky)*kw + kx of the image's first panel.
            let rows0 = {
                let pb = kb.muli(b, pn as i64 * panel_bytes);
                let kr = kb.muli(rest, (g.kw * nr * 4) as i64);
                let o = kb.add(pb, kr);
                kb.add(p, o)
            };
            // The input row of output row 0 for this kernel row.
            let iy0 = {
                let a = kb.muli(ky, g.dh as i64);
                kb.addi(a, -(g.ph as i64))
            };
            {
                for kx in 0..g.kw {
                    let krow = kb.addi(rows0, (kx * nr * 4) as i64);
                    let (off, lo, hi) = self.tap_columns(kx);
                    // At stride 2 a quad loads the 8 floats from its first tap on: the last
                    // quad start whose eighth float is still in the row.
                    let last_quad = if g.sw == 1 {
                        usize::MAX
                    } else {
                        let room = g.w as i64 - 8 - off;
                        if room < 0 { 0 } else { (room / 2) as usize + 1 }
                    };
                    if let Some(zeros) = zeros {
                        // A band's rows unrolled: each row's columns and panel edges are
                        // compile-time constants; only its input row is found at run time, or
                        // the zero row where it lies in the padding (see `band_unrolled`).
                        for r in 0..self.rows() {
                            let iy = {
                                let oy = kb.addi(oy0, r as i64);
                                let a = kb.muli(oy, g.sh as i64);
                                kb.add(a, iy0)
                            };
                            let inside = kb.in_range(iy, 0, g.h as i64);
                            let data = kb.elem(xc, iy, (g.w * 4) as i64);
                            let row_base = kb.b.ins().select(inside, data, zeros);
                            let row = ConstRow {
                                rows0: krow,
                                krow: 0,
                                n0: r * g.ow,
                                panel_bytes: panel_bytes as usize,
                                zero,
                            };
                            let src = Some((row_base, off * 4, (g.w * 4) as i64));
                            self.run_const(kb, &row, 0, lo, None);
                            self.run_const(kb, &row, lo, hi, src);
                            self.run_const(kb, &row, hi, g.ow, None);
                        }
                    } else {
                        kb.for_range(oy0, oy1, 1, |kb, oy| {
                            let n0 = {
                                let r = kb.b.ins().isub(oy, oy0);
                                kb.muli(r, g.ow as i64)
                            };
                            let iy = {
                                let a = kb.muli(oy, g.sh as i64);
                                kb.add(a, iy0)
                            };
                            let inside = kb.in_range(iy, 0, g.h as i64);
                            let (data_b, zero_b, join) =
                                (kb.b.create_block(), kb.b.create_block(), kb.b.create_block());
                            kb.b.ins().brif(inside, data_b, &[], zero_b, &[]);
                            kb.b.switch_to_block(data_b);
                            let src = {
                                let r = kb.muli(iy, g.w as i64);
                                let o = kb.addi(r, off);
                                kb.elem(xc, o, 4)
                            };
                            self.run(kb, krow, k, n0, 0, lo, None);
                            self.run(kb, krow, k, n0, lo, hi, Some((src, last_quad)));
                            self.run(kb, krow, k, n0, hi, g.ow, None);
                            kb.b.ins().jump(join, &[]);
                            kb.b.switch_to_block(zero_b);
                            self.run(kb, krow, k, n0, 0, g.ow, None);
                            kb.b.ins().jump(join, &[]);
                            kb.b.switch_to_block(join);
                        });
                    }
                    // The last panel's columns past N are zeros, as in panel mode: the GEMM
                    // reads them (and drops what it computes from them).
                    let n = self.n();
                    let last = kb.addi(krow, (pn - 1) as i64 * panel_bytes);
                    let zero = kb.fconst(0.0);
                    for c in n - (pn - 1) * nr..nr {
                        kb.store_f32(zero, last, (c * 4) as i32);
                    }
                }
            }
        });
    }

    /// Writes output columns [a, b) of the output row starting at column n0 into panel row
    /// `krow`: from `src` (element ox at `src + ox*sw`; quads may start below the bound given
    /// with it) or zeros. Quads that stay inside one panel are one vector store; the others,
    /// and the last few columns, go one at a time.
    #[allow(clippy::too_many_arguments)]
    fn run(&self, kb: &mut Kb, krow: Value, k: usize, n0: Value, a: usize, b: usize, src: Option<(Value, usize)>) {
        if a >= b {
            return;
        }
        let (nr, sw) = (self.nr as i64, self.g.sw as i64);
        let panel_bytes = k as i64 * nr * 4;
        // The address of column n in row krow.
        let dst = |kb: &mut Kb, n: Value| {
            let (pj, c) = kb.divmod(n, nr);
            let a = kb.muli(pj, panel_bytes);
            let c4 = kb.muli(c, 4);
            let o = kb.add(a, c4);
            (kb.add(krow, o), c)
        };
        let quad_ok = |ox: usize| ox + 4 <= b && src.is_none_or(|(_, last)| ox < last);
        let quads = (0..).take_while(|&q| quad_ok(a + 4 * q)).count();
        let src_ptr = src.map(|(p, _)| p);
        if quads > 0 {
            // Running pointers instead of an address per quad (a division, a multiply): the
            // destination walks its panel row and jumps to the next panel's row at the edge.
            let jump = panel_bytes - nr * 4;
            let (d0, c0) = {
                let n = kb.addi(n0, a as i64);
                dst(kb, n)
            };
            let (dv, cv) = (kb.var(I64, d0), kb.var(I64, c0));
            let sv = src_ptr.map(|s| {
                let p = kb.addi(s, a as i64 * sw * 4);
                kb.var(I64, p)
            });
            kb.for_const(0, quads as i64, 1, |kb, _| {
                let (d, c) = (kb.b.use_var(dv), kb.b.use_var(cv));
                let v = match sv {
                    Some(sv) => {
                        let p = kb.b.use_var(sv);
                        let v = if sw == 1 {
                            kb.load_v(p, 0, ro())
                        } else {
                            // Stride 2: the even lanes of eight floats.
                            let lo = kb.load_v(p, 0, ro());
                            let hi = kb.load_v(p, 16, ro());
                            kb.shuffle32(lo, hi, [0, 2, 4, 6])
                        };
                        let next = kb.addi(p, 16 * sw);
                        kb.b.def_var(sv, next);
                        v
                    }
                    None => kb.vconst(0.0),
                };
                let lim = kb.iconst(nr - 3);
                let within = kb.lt(c, lim);
                let (vec_b, split_b, join) = (kb.b.create_block(), kb.b.create_block(), kb.b.create_block());
                kb.b.ins().brif(within, vec_b, &[], split_b, &[]);
                kb.b.switch_to_block(vec_b);
                kb.store_v(v, d, 0);
                kb.b.ins().jump(join, &[]);
                kb.b.switch_to_block(split_b);
                // Lanes from column c + l: those at nr and beyond open the next panel's row.
                for l in 0..4u8 {
                    let cl = kb.addi(c, l as i64);
                    let past = {
                        let last = kb.iconst(nr - 1);
                        kb.lt(last, cl)
                    };
                    let z = kb.iconst(0);
                    let j = kb.iconst(jump);
                    let extra = kb.b.ins().select(past, j, z);
                    let dl = kb.add(d, extra);
                    let x = kb.b.ins().extractlane(v, l);
                    kb.store_f32(x, dl, (l as i32) * 4);
                }
                kb.b.ins().jump(join, &[]);
                kb.b.switch_to_block(join);
                let c4 = kb.addi(c, 4);
                let d4 = kb.addi(d, 16);
                let wrap = {
                    let last = kb.iconst(nr - 1);
                    kb.lt(last, c4)
                };
                let cw = kb.addi(c4, -nr);
                let dw = kb.addi(d4, jump);
                let c_next = kb.b.ins().select(wrap, cw, c4);
                let d_next = kb.b.ins().select(wrap, dw, d4);
                kb.b.def_var(cv, c_next);
                kb.b.def_var(dv, d_next);
            });
        }
        for ox in a + 4 * quads..b {
            let n = kb.addi(n0, ox as i64);
            let (d, _) = dst(kb, n);
            let v = match src_ptr {
                Some(s) => kb.load_f32(s, (ox as i64 * sw * 4) as i32, ro()),
                None => kb.fconst(0.0),
            };
            kb.store_f32(v, d, 0);
        }
    }
}

impl KernelSpec for Im2colSpec {
    fn name(&self) -> String {
        let g = &self.g;
        let band = match self.band {
            Some(r) => format!(" band {r}"),
            None => String::new(),
        };
        format!("im2col {}x{} s{} {}x{}x{} nr{}{band}", g.kh, g.kw, g.sh, self.cin, g.h, g.w, self.nr)
    }

    fn emit(&self, kb: &mut Kb) {
        let [x, p] = [kb.operand(0), kb.operand(1)];
        if self.row_mode() {
            return self.emit_rows(kb, x, p);
        }
        let g = self.g.clone();
        let (pn, k, hw, nr) = (self.panels(), self.k(), g.h * g.w, self.nr);
        assert!(nr.is_multiple_of(Q) && nr > 0, "panels are filled four columns at a time");
        let oy0 = self.first_row(kb);
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, t| {
            let (b, j) = kb.divmod(t, pn as i64);
            let (img, grp) = kb.divmod(b, self.groups as i64);
            let ch0 = {
                let a = kb.muli(img, self.c_total as i64);
                let c = kb.muli(grp, self.cin as i64);
                kb.add(a, c)
            };
            let xb = {
                let o = kb.muli(ch0, hw as i64);
                kb.elem(x, o, 4)
            };
            let panel = {
                let o = kb.muli(t, (k * nr) as i64);
                kb.elem(p, o, 4)
            };
            // A 1x1 stride-1 unpadded conv reads column n of channel k at k*hw + n: a whole
            // panel is nr contiguous floats per channel, copied row by row (one pass over each
            // input line; the quad loop below re-reads every line once per quad).
            let pointwise = g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0;
            if pointwise && hw == g.oh * g.ow {
                // The panel's first column, in the band and in the map.
                let n0 = kb.muli(j, nr as i64);
                let at = {
                    let o = kb.muli(oy0, g.ow as i64);
                    kb.add(n0, o)
                };
                let whole = {
                    let e = kb.addi(n0, nr as i64);
                    let nn = kb.iconst(self.n() as i64 + 1);
                    kb.lt(e, nn)
                };
                let (fast_b, last_b, done_b) = (kb.b.create_block(), kb.b.create_block(), kb.b.create_block());
                kb.b.ins().brif(whole, fast_b, &[], last_b, &[]);
                // `cols` valid columns per channel (a compile-time count: all, or the last
                // panel's), the rest zero.
                let copy = |kb: &mut Kb, cols: usize| {
                    let src = kb.elem(xb, at, 4);
                    let px = kb.var(I64, src);
                    let pd = kb.var(I64, panel);
                    let zero = kb.fconst(0.0);
                    kb.for_const(0, k as i64, 1, |kb, _| {
                        let (s, d) = (kb.b.use_var(px), kb.b.use_var(pd));
                        let v: Vec<Value> = (0..cols / Q).map(|q| kb.load_v(s, (16 * q) as i32, ro())).collect();
                        for (q, v) in v.into_iter().enumerate() {
                            kb.store_v(v, d, (16 * q) as i32);
                        }
                        for c in cols / Q * Q..nr {
                            let v = if c < cols { kb.load_f32(s, (4 * c) as i32, ro()) } else { zero };
                            kb.store_f32(v, d, (4 * c) as i32);
                        }
                        let (s2, d2) = (kb.addi(s, (hw * 4) as i64), kb.addi(d, (nr * 4) as i64));
                        kb.b.def_var(px, s2);
                        kb.b.def_var(pd, d2);
                    });
                    kb.b.ins().jump(done_b, &[]);
                };
                kb.b.switch_to_block(fast_b);
                copy(kb, nr);
                kb.b.switch_to_block(last_b);
                copy(kb, self.n() - (pn - 1) * nr);
                kb.b.switch_to_block(done_b);
                return;
            }
            // The panel four columns at a time: quad q holds columns j*nr + 4q .. + 4.
            kb.for_const(0, (nr / Q) as i64, 1, |kb, q| {
                let pb = {
                    let o = kb.muli(q, Q as i64);
                    kb.elem(panel, o, 4)
                };
                // Per column: (iy0, ix0) and validity.
                let n0 = {
                    let a = kb.muli(j, nr as i64);
                    let b = kb.muli(q, Q as i64);
                    kb.add(a, b)
                };
                let cols: Vec<(Value, Value, Value)> = (0..Q)
                    .map(|c| {
                        let n = kb.addi(n0, c as i64);
                        let nn = kb.iconst(self.n() as i64);
                        let valid = kb.lt(n, nn);
                        let (oy, ox) = kb.divmod(n, g.ow as i64);
                        let oy = kb.add(oy, oy0);
                        let iy0 = {
                            let a = kb.muli(oy, g.sh as i64);
                            kb.addi(a, -(g.ph as i64))
                        };
                        let ix0 = {
                            let a = kb.muli(ox, g.sw as i64);
                            kb.addi(a, -(g.pw as i64))
                        };
                        (iy0, ix0, valid)
                    })
                    .collect();
                // The vector path: stride 1, all four columns in one output row, fully inside.
                let same_row = if g.sw == 1 && g.dw == 1 {
                    let (_, ox) = kb.divmod(n0, g.ow as i64);
                    let lim = kb.iconst(g.ow as i64 - 3);
                    let fits = kb.lt(ox, lim);
                    let valid = cols[Q - 1].2;
                    Some(kb.b.ins().band(fits, valid))
                } else {
                    None
                };
                let zero = kb.fconst(0.0);
                // Interior panels: the four outputs share a row and every tap of every input channel
                // is inside the image, so the copy needs no checks (a vector load for stride 1, four
                // loads otherwise).
                let interior = {
                    let (iy0, ix0, valid) = cols[0];
                    let (_, ox) = kb.divmod(n0, g.ow as i64);
                    let lim = kb.iconst(g.ow as i64 - 3);
                    let one_row = kb.lt(ox, lim);
                    let last_valid = cols[Q - 1].2;
                    let y_last = kb.addi(iy0, ((g.kh - 1) * g.dh) as i64);
                    let x_last = kb.addi(ix0, (3 * g.sw + (g.kw - 1) * g.dw) as i64);
                    let c1 = kb.in_range(iy0, 0, g.h as i64);
                    let c2 = kb.in_range(y_last, 0, g.h as i64);
                    let c3 = kb.in_range(ix0, 0, g.w as i64);
                    let c4 = kb.in_range(x_last, 0, g.w as i64);
                    let mut ok = kb.b.ins().band(one_row, last_valid);
                    for c in [c1, c2, c3, c4, valid] {
                        ok = kb.b.ins().band(ok, c);
                    }
                    ok
                };
                let (fast_b, slow_b, done_b) = (kb.b.create_block(), kb.b.create_block(), kb.b.create_block());
                kb.b.ins().brif(interior, fast_b, &[], slow_b, &[]);
                kb.b.switch_to_block(fast_b);
                {
                    let (iy0, ix0, _) = cols[0];
                    let start = {
                        let r = kb.muli(iy0, g.w as i64);
                        let o = kb.add(r, ix0);
                        kb.elem(xb, o, 4)
                    };
                    let px = kb.var(I64, start);
                    let pd = kb.var(I64, pb);
                    kb.for_const(0, self.cin as i64, 1, |kb, _| {
                        let base = kb.b.use_var(px);
                        let dst = kb.b.use_var(pd);
                        for ky in 0..g.kh {
                            for kx in 0..g.kw {
                                let off = ((ky * g.dh * g.w + kx * g.dw) * 4) as i32;
                                let slot = ((ky * g.kw + kx) * nr * 4) as i32;
                                if g.sw == 1 {
                                    let v = kb.load_v(base, off, ro());
                                    kb.store_v(v, dst, slot);
                                } else {
                                    for c in 0..Q {
                                        let v = kb.load_f32(base, off + (c * g.sw * 4) as i32, ro());
                                        kb.store_f32(v, dst, slot + (c * 4) as i32);
                                    }
                                }
                            }
                        }
                        let nb = kb.addi(base, (hw * 4) as i64);
                        let nd = kb.addi(dst, (g.kh * g.kw * nr * 4) as i64);
                        kb.b.def_var(px, nb);
                        kb.b.def_var(pd, nd);
                    });
                }
                kb.b.ins().jump(done_b, &[]);
                kb.b.switch_to_block(slow_b);
                kb.for_const(0, self.cin as i64, 1, |kb, ci| {
                    let xc = {
                        let o = kb.muli(ci, hw as i64);
                        kb.elem(xb, o, 4)
                    };
                    for ky in 0..g.kh {
                        for kx in 0..g.kw {
                            let kidx = {
                                let a = kb.muli(ci, (g.kh * g.kw) as i64);
                                kb.addi(a, (ky * g.kw + kx) as i64)
                            };
                            let dst = {
                                let o = kb.muli(kidx, nr as i64);
                                kb.elem(pb, o, 4)
                            };
                            let scalar = |kb: &mut Kb| {
                                for (c, &(iy0, ix0, valid)) in cols.iter().enumerate() {
                                    let iy = kb.addi(iy0, (ky * g.dh) as i64);
                                    let ix = kb.addi(ix0, (kx * g.dw) as i64);
                                    let iny = kb.in_range(iy, 0, g.h as i64);
                                    let inx = kb.in_range(ix, 0, g.w as i64);
                                    let inside = kb.b.ins().band(iny, inx);
                                    let inside = kb.b.ins().band(inside, valid);
                                    // Clamp the address so the load never leaves the plane.
                                    let iyc = clamp(kb, iy, g.h as i64 - 1);
                                    let ixc = clamp(kb, ix, g.w as i64 - 1);
                                    let off = {
                                        let r = kb.muli(iyc, g.w as i64);
                                        kb.add(r, ixc)
                                    };
                                    let pv = kb.elem(xc, off, 4);
                                    let v = kb.load_f32(pv, 0, ro());
                                    let v = kb.b.ins().select(inside, v, zero);
                                    kb.store_f32(v, dst, (c * 4) as i32);
                                }
                            };
                            match same_row {
                                Some(row_ok) => {
                                    let (iy0, ix0, _) = cols[0];
                                    let iy = kb.addi(iy0, (ky * g.dh) as i64);
                                    let ix = kb.addi(ix0, kx as i64);
                                    let iny = kb.in_range(iy, 0, g.h as i64);
                                    let inx = kb.in_range(ix, 0, g.w as i64 - 3);
                                    let ok = kb.b.ins().band(iny, inx);
                                    let ok = kb.b.ins().band(ok, row_ok);
                                    let (vb, sb, join) =
                                        (kb.b.create_block(), kb.b.create_block(), kb.b.create_block());
                                    kb.b.ins().brif(ok, vb, &[], sb, &[]);
                                    kb.b.switch_to_block(vb);
                                    let off = {
                                        let r = kb.muli(iy, g.w as i64);
                                        kb.add(r, ix)
                                    };
                                    let pv = kb.elem(xc, off, 4);
                                    let v = kb.load_v(pv, 0, ro());
                                    kb.store_v(v, dst, 0);
                                    kb.b.ins().jump(join, &[]);
                                    kb.b.switch_to_block(sb);
                                    scalar(kb);
                                    kb.b.ins().jump(join, &[]);
                                    kb.b.switch_to_block(join);
                                }
                                None => scalar(kb),
                            }
                        }
                    }
                });
                kb.b.ins().jump(done_b, &[]);
                kb.b.switch_to_block(done_b);
            });
        });
    }
}

/// `min(max(v, 0), hi)`.
/// Columns an im2col step fills at once: one f32x4.
const Q: usize = 4;

fn clamp(kb: &mut Kb, v: Value, hi: i64) -> Value {
    let z = kb.iconst(0);
    let a = kb.b.ins().smax(v, z);
    kb.mini(a, hi)
}

/// An epilogue step of a depthwise conv: add an operand laid out like the output (`per_channel`
/// false) or one value per channel, or an activation.
#[derive(Clone, Debug, PartialEq)]
pub enum DwStep {
    Add { per_channel: bool },
    Act(Activation),
}

/// The bias and epilogue of a kernel that writes one output plane (image, channel) per tile:
/// the channel's bias, then each step in order, an `Add` reading either one value per channel or
/// the element at the same place of an operand laid out like the output.
pub struct PlaneEpilogue {
    bias: Option<Value>,
    adds: Vec<(Value, bool)>,
}

impl PlaneEpilogue {
    /// `ops` holds the bias (if `has_bias`) then one operand per `Add` step; `oc` is the tile's
    /// channel, `plane` its plane index and `plane_size` the elements of a plane.
    pub fn new(
        kb: &mut Kb,
        ops: &[Value],
        has_bias: bool,
        steps: &[DwStep],
        oc: Value,
        plane: Value,
        plane_size: usize,
    ) -> PlaneEpilogue {
        let mut next = 0;
        let bias = has_bias.then(|| {
            let p = kb.elem(ops[next], oc, 4);
            next += 1;
            kb.load_f32(p, 0, ro())
        });
        let adds = steps
            .iter()
            .filter_map(|s| match s {
                DwStep::Add { per_channel } => {
                    let base = ops[next];
                    next += 1;
                    Some(if *per_channel {
                        (kb.elem(base, oc, 4), true)
                    } else {
                        let o = kb.muli(plane, plane_size as i64);
                        (kb.elem(base, o, 4), false)
                    })
                }
                _ => None,
            })
            .collect();
        PlaneEpilogue { bias, adds }
    }

    /// The epilogue of `v` (a scalar, or a vector of four), bound for plane element `idx`.
    pub fn apply(&self, kb: &mut Kb, steps: &[DwStep], mut v: Value, idx: Value, helpers: Option<Value>) -> Value {
        let vec = kb.is_vec(v);
        if let Some(b) = self.bias {
            let bb = if vec { kb.splat(b) } else { b };
            v = kb.b.ins().fadd(v, bb);
        }
        let mut a = 0;
        for s in steps {
            match s {
                DwStep::Add { .. } => {
                    let (p, per_channel) = self.adds[a];
                    a += 1;
                    let o = if per_channel {
                        let s = kb.load_f32(p, 0, ro());
                        if vec { kb.splat(s) } else { s }
                    } else {
                        let q = kb.elem(p, idx, 4);
                        if vec { kb.load_v(q, 0, ro()) } else { kb.load_f32(q, 0, ro()) }
                    };
                    v = kb.b.ins().fadd(v, o);
                }
                DwStep::Act(act) => v = emit_act(kb, act, v, helpers),
            }
        }
        v
    }
}

/// The gather half of a transposed convolution: given `cols[plane][ky][kx][iy][ix]` (each input
/// pixel's contribution to every kernel tap, from a GEMM), output pixel `(oy, ox)` of a plane sums
/// the taps with `oy + ph = iy * sh + ky * dh` (likewise for x), plus the channel's bias. Here `g`
/// describes the forward geometry: `h`/`w` the transposed conv's input, `oh`/`ow` its output.
/// Operands: COLS, Y, [BIAS]. One tile per output plane (image, channel).
#[derive(Clone, Debug)]
pub struct Col2ImSpec {
    pub planes: usize,
    pub channels: usize,
    pub g: Geom,
    pub bias: bool,
}

impl KernelSpec for Col2ImSpec {
    fn name(&self) -> String {
        let g = &self.g;
        format!("col2im {}x{} s{} {}x{}->{}x{}", g.kh, g.kw, g.sh, g.h, g.w, g.oh, g.ow)
    }

    fn emit(&self, kb: &mut Kb) {
        let [cols, y] = [kb.operand(0), kb.operand(1)];
        let bias = if self.bias { Some(kb.operand(2)) } else { None };
        let g = self.g.clone();
        let (n_in, taps) = ((g.h * g.w) as i64, (g.kh * g.kw) as i64);
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, p| {
            let cp = {
                let a = kb.muli(p, taps * n_in * 4);
                kb.add(cols, a)
            };
            let yp = {
                let a = kb.muli(p, (g.oh * g.ow * 4) as i64);
                kb.add(y, a)
            };
            let b0 = match bias {
                Some(b) => {
                    let (_, ch) = kb.divmod(p, self.channels as i64);
                    let bp = kb.elem(b, ch, 4);
                    kb.load_f32(bp, 0, ro())
                }
                None => kb.fconst(0.0),
            };
            kb.for_const(0, g.oh as i64, 1, |kb, oy| {
                kb.for_const(0, g.ow as i64, 1, |kb, ox| {
                    let acc = kb.var(crate::codegen::builder::F32, b0);
                    for ky in 0..g.kh {
                        // ty = iy * sh: valid when divisible and in range.
                        let ty = kb.addi(oy, g.ph as i64 - (ky * g.dh) as i64);
                        let (iy, ry) = kb.divmod(ty, g.sh as i64);
                        let oky = kb.in_range(ty, 0, (g.h * g.sh) as i64);
                        let zy = kb.eqi(ry, 0);
                        let vy = kb.b.ins().band(oky, zy);
                        for kx in 0..g.kw {
                            let tx = kb.addi(ox, g.pw as i64 - (kx * g.dw) as i64);
                            let (ix, rx) = kb.divmod(tx, g.sw as i64);
                            let okx = kb.in_range(tx, 0, (g.w * g.sw) as i64);
                            let zx = kb.eqi(rx, 0);
                            let vx = kb.b.ins().band(okx, zx);
                            let valid = kb.b.ins().band(vy, vx);
                            let tap = (ky * g.kw + kx) as i64;
                            kb.if_then(valid, |kb| {
                                let idx = {
                                    let r = kb.muli(iy, g.w as i64);
                                    let r = kb.add(r, ix);
                                    kb.addi(r, tap * n_in)
                                };
                                let q = kb.elem(cp, idx, 4);
                                let v = kb.load_f32(q, 0, ro());
                                let a = kb.b.use_var(acc);
                                let s = kb.b.ins().fadd(a, v);
                                kb.b.def_var(acc, s);
                            });
                        }
                    }
                    let r = kb.b.use_var(acc);
                    let idx = {
                        let a = kb.muli(oy, g.ow as i64);
                        kb.add(a, ox)
                    };
                    let q = kb.elem(yp, idx, 4);
                    kb.store_f32(r, q, 0);
                });
            });
        });
    }
}
