//! Winograd F(4x4, 3x3) (Lavin and Gray, 2016): each 4x4 output tile is `A^T [(G g G^T) .
//! (B^T d B)] A` for the 6x6 input patch d, with the interpolation points 0, +-1, +-2 (and
//! infinity). Summed over input channels this is 36 independent matrix products, run by the GEMM
//! as a batch, between the kernels here: a copy of the input into zero-padded planes (so that
//! no patch needs a border check), the input transform into the GEMM's packed B panels, and the
//! output transform with bias and epilogue. 4x fewer multiplies than direct 3x3 (F(2x2, 3x3):
//! 2.25x), for 4x the weight bytes; unlike F(2x2, 3x3) the transforms multiply by 2, 4, 5 and
//! 8 and the weight transform by 1/6 and 1/24, so results differ from the direct sum by a few
//! float roundings more (measured in the tests: under 1e-5 relative to the output's scale).
//!
//! Vectors hold four tiles side by side in a panel (lane = tile), so the transforms are lane
//! parallel: only the patch loads and the output stores transpose.

use cranelift_codegen::ir::{InstBuilder, Value};

use crate::codegen::KernelSpec;
use crate::codegen::builder::{I64, Kb, ro, rw};

use super::geom::{OutPlane, Q, WinoGeom, WinoInput};

/// Values of a transformed tile: 6x6.
pub const E: usize = 36;

/// `G g G^T` for one 3x3 kernel (row-major): the 36 transformed weights, computed in f64 and
/// rounded once, with `G = [[1/4, 0, 0], [-1/6, -1/6, -1/6], [-1/6, 1/6, -1/6], [1/24, 1/12,
/// 1/6], [1/24, -1/12, 1/6], [0, 0, 1]]`.
pub fn transform_kernel(g: &[f32]) -> [f32; E] {
    let apply = |a: f64, b: f64, c: f64| {
        [
            a / 4.0,
            -(a + b + c) / 6.0,
            -(a - b + c) / 6.0,
            a / 24.0 + b / 12.0 + c / 6.0,
            a / 24.0 - b / 12.0 + c / 6.0,
            c,
        ]
    };
    let mut t = [[0f64; 3]; 6]; // G g: 6 x 3
    for j in 0..3 {
        let col = apply(g[j] as f64, g[3 + j] as f64, g[6 + j] as f64);
        for i in 0..6 {
            t[i][j] = col[i];
        }
    }
    let mut u = [0f32; E];
    for i in 0..6 {
        let row = apply(t[i][0], t[i][1], t[i][2]);
        for j in 0..6 {
            u[i * 6 + j] = row[j] as f32;
        }
    }
    u
}

/// `B^T d` for six values (vectors of four tiles): rows `[4, 0, -5, 0, 1, 0]`, `[0, -4, -4, 1,
/// 1, 0]`, `[0, 4, -4, -1, 1, 0]`, `[0, -2, -1, 2, 1, 0]`, `[0, 2, -1, -2, 1, 0]`, `[0, 4, 0,
/// -5, 0, 1]`, sharing the sums the rows have in common.
fn bt(kb: &mut Kb, d: &[Value; 6]) -> [Value; 6] {
    let (m4, m5, four, two) = (kb.vconst(-4.0), kb.vconst(-5.0), kb.vconst(4.0), kb.vconst(2.0));
    let a = kb.fma(d[2], m4, d[4]); // d4 - 4 d2
    let b = kb.fma(d[1], m4, d[3]); // d3 - 4 d1
    let c = kb.b.ins().fsub(d[4], d[2]);
    let e = {
        let s = kb.b.ins().fsub(d[3], d[1]);
        kb.b.ins().fmul(s, two)
    };
    let r0 = {
        let s = kb.fma(d[0], four, d[4]);
        kb.fma(d[2], m5, s)
    };
    let r5 = {
        let s = kb.fma(d[1], four, d[5]);
        kb.fma(d[3], m5, s)
    };
    let r1 = kb.b.ins().fadd(a, b);
    let r2 = kb.b.ins().fsub(a, b);
    let r3 = kb.b.ins().fadd(c, e);
    let r4 = kb.b.ins().fsub(c, e);
    [r0, r1, r2, r3, r4, r5]
}

/// `A^T m` for six values: rows `[1, 1, 1, 1, 1, 0]`, `[0, 1, -1, 2, -2, 0]`, `[0, 1, 1, 4, 4,
/// 0]`, `[0, 1, -1, 8, -8, 1]`.
fn at(kb: &mut Kb, m: &[Value; 6]) -> [Value; 4] {
    let (two, four, eight) = (kb.vconst(2.0), kb.vconst(4.0), kb.vconst(8.0));
    let p = kb.b.ins().fadd(m[1], m[2]);
    let q = kb.b.ins().fsub(m[1], m[2]);
    let r = kb.b.ins().fadd(m[3], m[4]);
    let s = kb.b.ins().fsub(m[3], m[4]);
    let y0 = {
        let a = kb.b.ins().fadd(m[0], p);
        kb.b.ins().fadd(a, r)
    };
    let y1 = kb.fma(s, two, q);
    let y2 = kb.fma(r, four, p);
    let y3 = {
        let a = kb.fma(s, eight, q);
        kb.b.ins().fadd(a, m[5])
    };
    [y0, y1, y2, y3]
}

/// The padded input planes the transforms read: `th * tile + 2` rows of at least `tw * tile +
/// 2` floats, a multiple of four (the pad kernel writes whole vectors; F(4x4, 3x3) reads patch
/// rows as two vectors of four, the second reaching two floats past the patch).
pub fn padded_dims(g: &WinoGeom) -> (usize, usize) {
    (g.tile * g.th() + 2, (g.tile * g.tw() + 2).next_multiple_of(4))
}

/// Copies each input plane into its zero-padded plane (see [`padded_dims`]) at (ph, pw), zeros
/// everywhere else, every run (the arena's bytes are other values' between runs). Operands: X,
/// P. One tile per (image, channel) plane.
#[derive(Clone, Debug)]
pub struct WinoPadSpec {
    pub g: WinoGeom,
    pub c: usize,
}

impl WinoPadSpec {
    pub fn tiles(&self) -> usize {
        self.g.n * self.c
    }

    pub fn bytes(&self) -> usize {
        let (hp, wp) = padded_dims(&self.g);
        self.tiles() * hp * wp * 4
    }
}

impl KernelSpec for WinoPadSpec {
    fn name(&self) -> String {
        let (hp, wp) = padded_dims(&self.g);
        format!("winograd pad {}x{}->{hp}x{wp}", self.g.h, self.g.w)
    }

    fn emit(&self, kb: &mut Kb) {
        let [x, p] = [kb.operand(0), kb.operand(1)];
        let g = self.g.clone();
        let (hp, wp) = padded_dims(&g);
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, t| {
            let src = kb.elem(x, t, (g.h * g.w * 4) as i64);
            let dst = kb.elem(p, t, (hp * wp * 4) as i64);
            let zero = kb.vconst(0.0);
            let zero_row = |kb: &mut Kb, y: Value| {
                let row = kb.elem(dst, y, (wp * 4) as i64);
                for i in (0..wp).step_by(4) {
                    kb.store_v(zero, row, (4 * i) as i32);
                }
            };
            kb.for_const(0, g.ph as i64, 1, |kb, y| zero_row(kb, y));
            kb.for_const((g.ph + g.h) as i64, hp as i64, 1, |kb, y| zero_row(kb, y));
            kb.for_const(0, g.h as i64, 1, |kb, sy| {
                let y = kb.addi(sy, g.ph as i64);
                zero_row(kb, y);
                let from = kb.elem(src, sy, (g.w * 4) as i64);
                let to = {
                    let r = kb.elem(dst, y, (wp * 4) as i64);
                    kb.addi(r, (g.pw * 4) as i64)
                };
                // Vectors of four, the last one overlapping the one before when w is not a
                // multiple of four; narrow rows go element by element.
                if g.w >= 4 {
                    let mut starts: Vec<usize> = (0..=g.w - 4).step_by(4).collect();
                    if !g.w.is_multiple_of(4) {
                        starts.push(g.w - 4);
                    }
                    for s in starts {
                        let v = kb.load_v(from, (4 * s) as i32, ro());
                        kb.store_v(v, to, (4 * s) as i32);
                    }
                } else {
                    for s in 0..g.w {
                        let v = kb.load_f32(from, (4 * s) as i32, ro());
                        kb.store_f32(v, to, (4 * s) as i32);
                    }
                }
            });
        });
    }
}

/// The F(4x4, 3x3) input transform into `V` (see [`WinoInput`]), read from the padded planes.
/// Operands: P, the quad table (per quad of a panel, each tile's patch corner as a float offset
/// in the padded plane; lanes past the band's last tile repeat it), V.
#[derive(Clone, Debug)]
pub struct Wino4InputSpec {
    pub v: WinoInput,
}

impl Wino4InputSpec {
    /// Per quad of the band starting at tile `first`: each of its four tiles' patch corner in
    /// the padded plane (a float offset).
    pub fn table(&self, first: usize) -> Vec<i64> {
        let g = &self.v.g;
        let (tiles, tw) = (self.v.tiles_per_image(), g.tw());
        let wp = padded_dims(g).1;
        (0..self.v.quads() * Q)
            .map(|i| {
                let tile = first + i.min(tiles - 1);
                (4 * (tile / tw) * wp + 4 * (tile % tw)) as i64
            })
            .collect()
    }
}

impl KernelSpec for Wino4InputSpec {
    fn name(&self) -> String {
        let band = self.v.band_tiles.map(|t| format!(" band {t}")).unwrap_or_default();
        format!("winograd4 input c{} {}x{}{band}", self.v.c, self.v.g.h, self.v.g.w)
    }

    fn emit(&self, kb: &mut Kb) {
        let [p, table, v] = [kb.operand(0), kb.operand(1), kb.operand(2)];
        let g = self.v.g.clone();
        let (hp, wp) = padded_dims(&g);
        let nr = self.v.nr;
        assert!(nr.is_multiple_of(Q) && nr > 0, "quads fill the panels");
        let c = self.v.c as i64;
        let e_stride = self.v.e_stride() as i64;
        assert!(e_stride * E as i64 <= i32::MAX as i64, "lowering checks the transformed input fits i32 offsets");
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, t| {
            let (img, panel, c_lo, c_hi) = self.v.emit_step_tile(kb, t);
            kb.for_range(c_lo, c_hi, 1, |kb, ch| {
                let plane = {
                    let a = kb.muli(img, c);
                    let pl = kb.add(a, ch);
                    kb.elem(p, pl, (hp * wp * 4) as i64)
                };
                let vp = {
                    let a = kb.muli(img, E as i64 * e_stride);
                    let b = kb.muli(ch, (nr * 4) as i64);
                    let s = kb.add(a, b);
                    let pc = kb.muli(panel, c * (nr * 4) as i64);
                    let s = kb.add(s, pc);
                    kb.add(v, s)
                };
                kb.for_const(0, (nr / Q) as i64, 1, |kb, q| {
                    let row = {
                        let j = {
                            let a = kb.muli(panel, (nr / Q) as i64);
                            kb.add(a, q)
                        };
                        kb.elem(table, j, (Q * 8) as i64)
                    };
                    let corners: Vec<Value> = (0..Q)
                        .map(|l| {
                            let o = kb.b.ins().load(I64, ro(), row, (8 * l) as i32);
                            kb.elem(plane, o, 4)
                        })
                        .collect();
                    let dst = {
                        let o = kb.muli(q, (Q * 4) as i64);
                        kb.add(vp, o)
                    };
                    // Rows of the patch, each transformed along its columns (d B), kept in V at
                    // e = 6r + j until the second pass combines the rows.
                    for r in 0..6 {
                        let off = (r * wp * 4) as i32;
                        let lo: Vec<Value> = corners.iter().map(|&a| kb.load_v(a, off, ro())).collect();
                        let hi: Vec<Value> = corners.iter().map(|&a| kb.load_v(a, off + 16, ro())).collect();
                        let [c0, c1, c2, c3] = kb.transpose4([lo[0], lo[1], lo[2], lo[3]]);
                        let [c4, c5, _, _] = kb.transpose4([hi[0], hi[1], hi[2], hi[3]]);
                        let cols = bt(kb, &[c0, c1, c2, c3, c4, c5]);
                        for (j, col) in cols.into_iter().enumerate() {
                            kb.store_v(col, dst, ((6 * r + j) as i64 * e_stride) as i32);
                        }
                    }
                    for j in 0..6 {
                        let rows: Vec<Value> =
                            (0..6).map(|r| kb.load_v(dst, ((6 * r + j) as i64 * e_stride) as i32, rw())).collect();
                        let out = bt(kb, &[rows[0], rows[1], rows[2], rows[3], rows[4], rows[5]]);
                        for (i, val) in out.into_iter().enumerate() {
                            kb.store_v(val, dst, ((6 * i + j) as i64 * e_stride) as i32);
                        }
                    }
                });
            });
        });
    }
}

/// Floats read past the end of M by the output transform's last group (see `output_plane`).
pub const M_OVERREAD: usize = Q - 1;

/// The F(4x4, 3x3) output transform of one plane (`WinoOutputSpec` with `g.tile == 4`):
/// `Y = A^T M A` per 4x4 tile, four tiles of a tile row at a time (lane = tile). The group at a
/// row's end may hold fewer; it reads the next row's tiles (or, at M's end, up to three floats
/// past it: lowering pads M) into lanes it drops.
pub(super) fn output_plane(kb: &mut Kb, g: &WinoGeom, plane: &OutPlane) {
    let (mp, yp, tw, e_stride, rows) = (plane.mp, plane.yp, g.tw(), plane.e_stride, plane.rows);
    // Output rows of the band's last tile row (all four but at the map's end).
    let last_rows = if plane.last && !g.oh.is_multiple_of(4) { g.oh % 4 } else { 4 };
    let full_groups = (g.ow / 4) / Q; // groups of four tiles with all columns inside
    // Group of four tiles from tile (ty, tx0); `out_rows` output rows and, per tile, the
    // columns inside (compile-time, None: all four of all four tiles).
    let group = |kb: &mut Kb, ty: Value, tx0: Value, out_rows: usize, cols: Option<[usize; Q]>| {
        let p = {
            let a = kb.muli(ty, tw as i64);
            let tt = kb.add(a, tx0);
            kb.elem(mp, tt, 4)
        };
        let load = |kb: &mut Kb, e: usize| kb.load_v(p, (e as i64 * e_stride) as i32, ro());
        // Output rows in pairs that share sums (0 and 2, 1 and 3), so fewer values live.
        for pair in [[0usize, 2], [1, 3]] {
            let pair: Vec<usize> = pair.into_iter().filter(|&k| k < out_rows).collect();
            if pair.is_empty() {
                continue;
            }
            // s[k][j] = (A^T M)[k][j].
            let mut s = vec![Vec::new(); pair.len()];
            for j in 0..6 {
                let col: Vec<Value> = (0..6).map(|i| load(kb, 6 * i + j)).collect();
                let a = at(kb, &[col[0], col[1], col[2], col[3], col[4], col[5]]);
                for (slot, &k) in pair.iter().enumerate() {
                    s[slot].push(a[k]);
                }
            }
            for (slot, &k) in pair.iter().enumerate() {
                let sk = &s[slot];
                let y = at(kb, &[sk[0], sk[1], sk[2], sk[3], sk[4], sk[5]]);
                // Lane l of y[c] is tile l's column c: transposed, tile l's row.
                let per_tile = kb.transpose4(y);
                let oy = {
                    let a = kb.muli(ty, 4);
                    kb.addi(a, k as i64)
                };
                let row0 = {
                    let a = kb.muli(oy, g.ow as i64);
                    let b = kb.muli(tx0, 4);
                    kb.add(a, b)
                };
                for (l, v) in per_tile.into_iter().enumerate() {
                    let n_cols = cols.map_or(4, |c| c[l]);
                    if n_cols == 4 {
                        let idx = kb.addi(row0, 4 * l as i64);
                        let r = plane.epi.apply(kb, plane.steps, v, idx, plane.helpers);
                        let q = kb.elem(yp, idx, 4);
                        kb.store_v(r, q, 0);
                    } else {
                        for cc in 0..n_cols {
                            let idx = kb.addi(row0, (4 * l + cc) as i64);
                            let x = kb.b.ins().extractlane(v, cc as u8);
                            let r = plane.epi.apply(kb, plane.steps, x, idx, plane.helpers);
                            let q = kb.elem(yp, idx, 4);
                            kb.store_f32(r, q, 0);
                        }
                    }
                }
            }
        }
    };
    let tile_row = |kb: &mut Kb, ty: Value, out_rows: usize| {
        kb.for_const(0, (full_groups * Q) as i64, Q as i64, |kb, tx0| group(kb, ty, tx0, out_rows, None));
        let tx0 = full_groups * Q;
        if tx0 < tw {
            // The row's last group: tiles past the row get no columns.
            let cols = std::array::from_fn(|l| g.ow.saturating_sub(4 * (tx0 + l)).min(4));
            let x = kb.iconst(tx0 as i64);
            group(kb, ty, x, out_rows, Some(cols));
        }
    };
    let full_rows = if last_rows < 4 { rows - 1 } else { rows };
    kb.for_const(0, full_rows as i64, 1, |kb, ty| tile_row(kb, ty, 4));
    if last_rows < 4 {
        let ty = kb.iconst(full_rows as i64);
        tile_row(kb, ty, last_rows);
    }
}

#[cfg(test)]
mod tests {
    use super::transform_kernel;

    const BT: [[f64; 6]; 6] = [
        [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
        [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
        [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
        [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
        [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
        [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
    ];
    const AT: [[f64; 6]; 4] = [
        [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
        [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
        [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
    ];

    /// The three matrices make a 3x3 correlation: `A^T [(G g G^T) . (B^T d B)] A` (in f64, from
    /// the f32 transformed kernel) equals the direct 4x4 output of a 6x6 patch up to the
    /// rounding of the transformed weights.
    #[test]
    fn transforms_compute_the_correlation() {
        let mut rng = incept_ir::text::parse::SplitMix(11);
        for _ in 0..200 {
            let g: Vec<f32> = (0..9).map(|_| (rng.uniform() * 2.0 - 1.0) as f32).collect();
            let d: Vec<f64> = (0..36).map(|_| rng.uniform() * 2.0 - 1.0).collect();
            let u = transform_kernel(&g);
            let mut v = [[0f64; 6]; 6];
            for i in 0..6 {
                for j in 0..6 {
                    v[i][j] = (0..6)
                        .flat_map(|r| (0..6).map(move |s| (r, s)))
                        .map(|(r, s)| BT[i][r] * d[r * 6 + s] * BT[j][s])
                        .sum();
                }
            }
            for y in 0..4 {
                for x in 0..4 {
                    let terms: Vec<f64> = (0..6)
                        .flat_map(|i| (0..6).map(move |j| (i, j)))
                        .map(|(i, j)| AT[y][i] * u[i * 6 + j] as f64 * v[i][j] * AT[x][j])
                        .collect();
                    let got: f64 = terms.iter().sum();
                    // Each transformed weight is rounded to f32 once (relative 2^-24).
                    let bound = terms.iter().map(|t| t.abs()).sum::<f64>() * 1e-7;
                    let want: f64 = (0..3)
                        .flat_map(|ky| (0..3).map(move |kx| (ky, kx)))
                        .map(|(ky, kx)| g[ky * 3 + kx] as f64 * d[(y + ky) * 6 + x + kx])
                        .sum();
                    assert!((got - want).abs() <= bound, "output ({y}, {x}): {got} vs {want} (bound {bound})");
                }
            }
        }
    }
}
