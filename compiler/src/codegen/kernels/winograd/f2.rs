//! Winograd F(2x2, 3x3) convolution (Lavin and Gray, "Fast Algorithms for Convolutional Neural
//! Networks", 2016): each 2x2 output tile is `A^T [(G g G^T) . (B^T d B)] A` for the 4x4 input
//! patch d and the 3x3 kernel g. Summed over input channels, the elementwise product becomes 16
//! independent matrix products (one per position e of the 4x4 transformed tile), which the GEMM
//! kernel runs as a batch; the two kernels here transform the input into the GEMM's packed B
//! panels and the GEMM's output back into the conv output, with bias and epilogue. 2.25x fewer
//! multiplies than direct 3x3; the transforms only add, subtract and halve, so the result differs
//! from the direct sum by rounding alone.

use cranelift_codegen::ir::{InstBuilder, Value};

use crate::codegen::KernelSpec;
use crate::codegen::builder::{F32X4, I64, Kb, ro};

use super::geom::{OutPlane, Q, WinoGeom, WinoInput};

/// `G g G^T` for one 3x3 kernel (row-major), the 16 transformed weights, with
/// `G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]` written out (ResNet50 has
/// over a million 3x3 kernels). In f64, halving is exact, so this equals the matrix product.
pub fn transform_kernel(g: &[f32]) -> [f32; 16] {
    // Rows of G applied to a triple.
    let apply = |a: f64, b: f64, c: f64| [a, 0.5 * ((a + b) + c), 0.5 * ((a - b) + c), c];
    let mut t = [[0f64; 3]; 4]; // G g: 4 x 3
    for j in 0..3 {
        let col = apply(g[j] as f64, g[3 + j] as f64, g[6 + j] as f64);
        for i in 0..4 {
            t[i][j] = col[i];
        }
    }
    let mut u = [0f32; 16]; // (G g) G^T: 4 x 4
    for i in 0..4 {
        let row = apply(t[i][0], t[i][1], t[i][2]);
        for j in 0..4 {
            u[i * 4 + j] = row[j] as f32;
        }
    }
    u
}

/// The F(2x2, 3x3) input transform into `V` (see [`WinoInput`]). Four tiles (a quad) are
/// transformed together and transposed so that each e takes one vector store. Operands: X, the
/// quad table (see [`WinoInputSpec::table`]), V.
#[derive(Clone, Debug)]
pub struct WinoInputSpec {
    pub v: WinoInput,
    /// Groups of sixteen tiles side by side inside the input go to the AVX-512 transform
    /// (`wide_kernel`), an operand after the table.
    pub wide: bool,
}

/// i64 entries per quad in the table: a mask of the tiles whose patch lies inside the input
/// (bit l for tile l), then (iy0, ix0) for each of 4 tiles.
const TABLE_ROW: usize = 1 + 2 * Q;

/// The mask of a quad whose four patches all lie inside.
const ALL_INSIDE: i64 = (1 << Q) - 1;

/// Tiles of a wide group, and i64 entries per quad in the group table (after the quad table):
/// 1 if a group of sixteen tiles side by side in one tile row, inside the input, starts in the
/// quad; its first tile's (iy0, ix0), its slot in the band, and the mask of its tiles in the
/// quad's panel (the rest are the next panel's); then 1 if groups cover all four of the quad's
/// tiles, so that the f32x4 transform skips it.
const GROUP: usize = 16;
const GROUP_ROW: usize = 6;

impl WinoInputSpec {
    /// The AVX-512 transform of a group of sixteen tiles, with this conv's strides.
    pub fn wide_kernel(&self) -> crate::codegen::wide_winograd::WideWinoInput {
        let g = &self.v.g;
        crate::codegen::wide_winograd::WideWinoInput {
            row_bytes: (g.w * 4) as i32,
            plane_bytes: (g.h * g.w * 4) as i32,
            e_stride: self.v.e_stride() as i32,
            channel_bytes: (self.v.nr * 4) as i32,
        }
    }

    /// Per quad of the band starting at tile `first`: the mask of its tiles whose patch lies
    /// inside the input, then the top-left input position of each tile's patch (lanes past the
    /// last tile repeat it). Then, for the wide transform, per quad again: whether it takes the
    /// sixteen tiles from the quad's first, and that tile's position.
    pub fn table(&self, first: usize) -> Vec<i64> {
        let g = &self.v.g;
        let (tiles, tw) = (self.v.tiles_per_image(), g.tw());
        let (ty_lo, ty_hi) = WinoGeom::inside(g.h, g.ph, g.th());
        let (tx_lo, tx_hi) = WinoGeom::inside(g.w, g.pw, tw);
        let mut t = Vec::with_capacity(self.v.quads() * TABLE_ROW);
        for j in 0..self.v.quads() {
            let lanes: Vec<(usize, usize)> = (0..Q)
                .map(|l| {
                    let tile = first + (4 * j + l).min(tiles - 1);
                    (tile / tw, tile % tw)
                })
                .collect();
            let inside = |&(ty, tx): &(usize, usize)| (ty_lo..ty_hi).contains(&ty) && (tx_lo..tx_hi).contains(&tx);
            t.push(lanes.iter().enumerate().map(|(l, p)| (inside(p) as i64) << l).sum());
            for (ty, tx) in lanes {
                t.push(2 * ty as i64 - g.ph as i64);
                t.push(2 * tx as i64 - g.pw as i64);
            }
        }
        if self.wide {
            // Groups along each tile row's inside tiles: every sixteen from the first, and one
            // more ending at the last (overlapping the one before: those tiles are transformed
            // twice, to the same bits). At most one group starts in a quad.
            let nr = self.v.nr;
            let mut groups: Vec<Option<[i64; 5]>> = vec![None; self.v.quads()];
            let mut covered = vec![false; self.v.quads() * Q];
            let rows = (first / tw..(first + tiles).div_ceil(tw)).filter(|ty| (ty_lo..ty_hi).contains(ty));
            for ty in rows {
                if tx_hi < tx_lo + GROUP {
                    continue;
                }
                let mut starts: Vec<usize> = (tx_lo..=tx_hi - GROUP).step_by(GROUP).collect();
                if (tx_hi - tx_lo) % GROUP != 0 {
                    starts.push(tx_hi - GROUP);
                }
                for tx in starts {
                    let Some(slot) = (ty * tw + tx).checked_sub(first).filter(|&s| s + GROUP <= tiles) else {
                        continue;
                    };
                    if groups[slot / Q].is_some() {
                        continue;
                    }
                    let lanes = (0..GROUP).take_while(|l| (slot + l) / nr == slot / nr).count();
                    for c in &mut covered[slot..slot + lanes] {
                        *c = true;
                    }
                    let (iy0, ix0) = (2 * ty as i64 - g.ph as i64, 2 * tx as i64 - g.pw as i64);
                    groups[slot / Q] = Some([1, iy0, ix0, slot as i64, (1 << lanes) - 1]);
                }
            }
            for (j, group) in groups.into_iter().enumerate() {
                t.extend(group.unwrap_or([0; 5]));
                t.push(covered[4 * j..4 * j + Q].iter().all(|&c| c) as i64);
            }
        }
        t
    }
}

impl KernelSpec for WinoInputSpec {
    fn name(&self) -> String {
        let band = self.v.band_tiles.map(|t| format!(" band {t}")).unwrap_or_default();
        format!("winograd input c{} {}x{}{band}", self.v.c, self.v.g.h, self.v.g.w)
    }

    fn emit(&self, kb: &mut Kb) {
        let [x, table, v] = [kb.operand(0), kb.operand(1), kb.operand(2)];
        let wide = self.wide.then(|| kb.operand(3));
        assert!(!self.wide || self.v.nr.is_multiple_of(GROUP), "wide groups fill the panels");
        let g = self.v.g.clone();
        let (c, hw) = (self.v.c as i64, (g.h * g.w) as i64);
        let nr = self.v.nr;
        assert!(nr.is_multiple_of(Q) && nr > 0, "quads fill the panels");
        let e_stride = self.v.e_stride() as i64;
        assert!(e_stride * 16 < i32::MAX as i64, "lowering checks the transformed input fits i32 offsets");
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, t| {
            let (img, panel, c_lo, c_hi) = self.v.emit_step_tile(kb, t);
            let zero = kb.vconst(0.0);
            // vars[lane][r]: row r of the transformed tile of `lane`.
            let vars: Vec<Vec<_>> = (0..Q).map(|_| (0..4).map(|_| kb.var(F32X4, zero)).collect()).collect();
            let pointers = |kb: &mut Kb, ch: Value| {
                let xp = {
                    let a = kb.muli(img, c);
                    let plane = kb.add(a, ch);
                    let o = kb.muli(plane, hw * 4);
                    kb.add(x, o)
                };
                let vp = {
                    let a = kb.muli(img, 16 * e_stride);
                    let b = kb.muli(ch, (nr * 4) as i64);
                    let s = kb.add(a, b);
                    kb.add(v, s)
                };
                (xp, vp)
            };
            // Quad q of the panel in channel ch.
            let quad = |kb: &mut Kb, xp: Value, vp: Value, q: Value| {
                {
                    let j = {
                        let a = kb.muli(panel, (nr / Q) as i64);
                        kb.add(a, q)
                    };
                    let row = {
                        let o = kb.muli(j, (TABLE_ROW * 8) as i64);
                        kb.add(table, o)
                    };
                    let mask = kb.b.ins().load(I64, ro(), row, 0);
                    let pos: Vec<(Value, Value)> = (0..Q)
                        .map(|l| {
                            let iy = kb.b.ins().load(I64, ro(), row, ((1 + 2 * l) * 8) as i32);
                            let ix = kb.b.ins().load(I64, ro(), row, ((2 + 2 * l) * 8) as i32);
                            (iy, ix)
                        })
                        .collect();
                    // One tile's transformed rows; `checked` loads element by element, with
                    // zeros outside the plane.
                    let lane = |kb: &mut Kb, l: usize, checked: bool| {
                        let (iy0, ix0) = pos[l];
                        let rows: Vec<Value> = (0..4)
                            .map(|r| {
                                let iy = kb.addi(iy0, r);
                                if checked {
                                    patch_row_checked(kb, xp, iy, ix0, g.h, g.w)
                                } else {
                                    let o = {
                                        let a = kb.muli(iy, g.w as i64);
                                        kb.add(a, ix0)
                                    };
                                    let p = kb.elem(xp, o, 4);
                                    kb.load_v(p, 0, ro())
                                }
                            })
                            .collect();
                        let vt = input_transform(kb, &rows);
                        for (r, &val) in vt.iter().enumerate() {
                            kb.b.def_var(vars[l][r], val);
                        }
                    };
                    let (fast, slow, join) = (kb.b.create_block(), kb.b.create_block(), kb.b.create_block());
                    let all = kb.eqi(mask, ALL_INSIDE);
                    kb.b.ins().brif(all, fast, &[], slow, &[]);
                    kb.b.switch_to_block(fast);
                    for l in 0..Q {
                        lane(kb, l, false);
                    }
                    kb.b.ins().jump(join, &[]);
                    // A quad on the border: only its tiles whose patch crosses the border (one
                    // or two, mostly) take the element-by-element loads.
                    kb.b.switch_to_block(slow);
                    for l in 0..Q {
                        let bit = kb.b.ins().band_imm_s(mask, 1i64 << l);
                        let (inside_b, border_b, next) =
                            (kb.b.create_block(), kb.b.create_block(), kb.b.create_block());
                        kb.b.ins().brif(bit, inside_b, &[], border_b, &[]);
                        kb.b.switch_to_block(inside_b);
                        lane(kb, l, false);
                        kb.b.ins().jump(next, &[]);
                        kb.b.switch_to_block(border_b);
                        lane(kb, l, true);
                        kb.b.ins().jump(next, &[]);
                        kb.b.switch_to_block(next);
                    }
                    kb.b.ins().jump(join, &[]);
                    kb.b.switch_to_block(join);
                    // Transpose each row r across the four tiles: lane s of tile l -> lane l of e = 4r + s.
                    // Quad j is columns 4*(j % (nr/4)) .. of panel j / (nr/4).
                    let base = {
                        let (panel, q) = kb.divmod(j, (nr / Q) as i64);
                        let a = kb.muli(panel, c * (nr * 4) as i64);
                        let b = kb.muli(q, (Q * 4) as i64);
                        let o = kb.add(a, b);
                        kb.add(vp, o)
                    };
                    for r in 0..4 {
                        let [a, b, cc, d] = [&vars[0], &vars[1], &vars[2], &vars[3]].map(|lane| kb.b.use_var(lane[r]));
                        let cols = kb.transpose4([a, b, cc, d]);
                        for (s, col) in cols.into_iter().enumerate() {
                            let e = (r * 4 + s) as i64;
                            kb.store_v(col, base, (e * e_stride) as i32);
                        }
                    }
                }
            };
            match wide {
                // Channel by channel, the panel's quads in order: each of the 16 matrices
                // receives nr contiguous floats per channel and the next channel's right after,
                // so every line written is completed while it is in L1.
                None => kb.for_range(c_lo, c_hi, 1, |kb, ch| {
                    let (xp, vp) = pointers(kb, ch);
                    kb.for_const(0, (nr / Q) as i64, 1, |kb, q| quad(kb, xp, vp, q));
                }),
                // Quad by quad: a group starting in the quad goes to the wide transform (all
                // the chunk's channels), then the quad to the f32x4 one unless groups cover it.
                Some(f) => {
                    let header = kb.b.create_block();
                    let (test_b, wide_b, quad_b, exit) =
                        (kb.b.create_block(), kb.b.create_block(), kb.b.create_block(), kb.b.create_block());
                    kb.b.append_block_param(header, I64);
                    let zero_q = kb.iconst(0);
                    kb.b.ins().jump(header, &[cranelift_codegen::ir::BlockArg::Value(zero_q)]);
                    kb.b.switch_to_block(header);
                    let q = kb.b.block_params(header)[0];
                    let more = {
                        let lim = kb.iconst((nr / Q) as i64);
                        kb.lt(q, lim)
                    };
                    kb.b.ins().brif(more, test_b, &[], exit, &[]);
                    kb.b.switch_to_block(test_b);
                    let row = {
                        let j = {
                            let a = kb.muli(panel, (nr / Q) as i64);
                            kb.add(a, q)
                        };
                        let o = kb.muli(j, (GROUP_ROW * 8) as i64);
                        let at = kb.add(table, o);
                        kb.addi(at, (self.v.quads() * TABLE_ROW * 8) as i64)
                    };
                    let group = kb.b.ins().load(I64, ro(), row, 0);
                    let (after_b, next_b) = (kb.b.create_block(), kb.b.create_block());
                    kb.b.ins().brif(group, wide_b, &[], after_b, &[]);
                    kb.b.switch_to_block(wide_b);
                    {
                        let iy0 = kb.b.ins().load(I64, ro(), row, 8);
                        let ix0 = kb.b.ins().load(I64, ro(), row, 16);
                        let slot = kb.b.ins().load(I64, ro(), row, 24);
                        let lanes = kb.b.ins().load(I64, ro(), row, 32);
                        let (xp, vp) = pointers(kb, c_lo);
                        let src = {
                            let a = kb.muli(iy0, g.w as i64);
                            let o = kb.add(a, ix0);
                            kb.elem(xp, o, 4)
                        };
                        // The slot's column in this panel (the group starts in it).
                        let dst = {
                            let a = kb.muli(panel, c * (nr * 4) as i64);
                            let first = kb.muli(panel, nr as i64);
                            let col = kb.b.ins().isub(slot, first);
                            let b = kb.muli(col, 4);
                            let o = kb.add(a, b);
                            kb.add(vp, o)
                        };
                        let count = kb.b.ins().isub(c_hi, c_lo);
                        kb.call_code(f, &[src, dst, count, lanes]);
                        kb.b.ins().jump(after_b, &[]);
                    }
                    kb.b.switch_to_block(after_b);
                    let skip = kb.b.ins().load(I64, ro(), row, 40);
                    kb.b.ins().brif(skip, next_b, &[], quad_b, &[]);
                    kb.b.switch_to_block(quad_b);
                    kb.for_range(c_lo, c_hi, 1, |kb, ch| {
                        let (xp, vp) = pointers(kb, ch);
                        quad(kb, xp, vp, q);
                    });
                    kb.b.ins().jump(next_b, &[]);
                    kb.b.switch_to_block(next_b);
                    let next = kb.addi(q, 1);
                    kb.b.ins().jump(header, &[cranelift_codegen::ir::BlockArg::Value(next)]);
                    kb.b.switch_to_block(exit);
                }
            }
        });
    }
}

/// Four floats of row `iy` from column `ix0`, zero where outside the plane.
fn patch_row_checked(kb: &mut Kb, xp: Value, iy: Value, ix0: Value, h: usize, w: usize) -> Value {
    let zero = kb.fconst(0.0);
    let mut row = kb.vconst(0.0);
    let iny = kb.in_range(iy, 0, h as i64);
    let z = kb.iconst(0);
    let iyc = {
        let a = kb.b.ins().smax(iy, z);
        kb.mini(a, h as i64 - 1)
    };
    for s in 0..4u8 {
        let ix = kb.addi(ix0, s as i64);
        let inx = kb.in_range(ix, 0, w as i64);
        let ok = kb.b.ins().band(iny, inx);
        let ixc = {
            let a = kb.b.ins().smax(ix, z);
            kb.mini(a, w as i64 - 1)
        };
        let o = {
            let a = kb.muli(iyc, w as i64);
            kb.add(a, ixc)
        };
        let p = kb.elem(xp, o, 4);
        let val = kb.load_f32(p, 0, ro());
        let val = kb.b.ins().select(ok, val, zero);
        row = kb.b.ins().insertlane(row, val, s);
    }
    row
}

/// `B^T d B` for a patch given as four row vectors; returns four row vectors (lane = column).
fn input_transform(kb: &mut Kb, d: &[Value]) -> [Value; 4] {
    // Rows: B^T d.
    let t0 = kb.b.ins().fsub(d[0], d[2]);
    let t1 = kb.b.ins().fadd(d[1], d[2]);
    let t2 = kb.b.ins().fsub(d[2], d[1]);
    let t3 = kb.b.ins().fsub(d[1], d[3]);
    // Columns: (.) B, i.e. [c0 - c2, c1 + c2, c2 - c1, c1 - c3] for every row.
    let sign = {
        let m = kb.vconst(-1.0);
        let p = kb.vconst(1.0);
        kb.shuffle32(m, p, [0, 4, 1, 2])
    };
    let mut out = [t0; 4];
    for (k, t) in [t0, t1, t2, t3].into_iter().enumerate() {
        let s1 = kb.shuffle32(t, t, [0, 1, 2, 1]);
        let s2 = kb.shuffle32(t, t, [2, 2, 1, 3]);
        out[k] = kb.fma(s2, sign, s1);
    }
    out
}

/// The F(2x2, 3x3) output transform of one plane: `A^T M A` per 2x2 tile, four tiles at a time
/// where both output columns of all four lie inside.
pub(super) fn output_plane(kb: &mut Kb, g: &WinoGeom, p: &OutPlane) {
    let (mp, yp, tw, e_stride) = (p.mp, p.yp, g.tw(), p.e_stride);
    // Tile rows with both output rows inside (all of a band's but an odd height's last);
    // columns in groups of four tiles with both output columns inside.
    let full_rows = if p.last && g.oh % 2 == 1 { p.rows - 1 } else { p.rows };
    let full_cols = g.ow / 2;
    let vec_cols = full_cols / 4 * 4;
    let last = p.last;
    let finish = |kb: &mut Kb, v: Value, idx: Value| p.epi.apply(kb, p.steps, v, idx, p.helpers);
    // The 16 GEMM outputs of tile (ty, tx) (and the next three, as vectors), transformed.
    // Tile rows ty count from the band's first (as do the output and residual operands).
    let outputs = |kb: &mut Kb, ty: Value, tx: Value, vector: bool| -> [Value; 4] {
        let tt = {
            let a = kb.muli(ty, tw as i64);
            kb.add(a, tx)
        };
        let p = kb.elem(mp, tt, 4);
        let me: Vec<Value> = (0..16)
            .map(|e| {
                let off = (e * e_stride) as i32;
                if vector { kb.load_v(p, off, ro()) } else { kb.load_f32(p, off, ro()) }
            })
            .collect();
        output_transform(kb, &me)
    };
    let out_index = |kb: &mut Kb, ty: Value, tx: Value, i: i64, j: i64| -> Value {
        let r = {
            let a = kb.muli(ty, 2);
            kb.addi(a, i)
        };
        let a = kb.muli(r, g.ow as i64);
        let c = kb.muli(tx, 2);
        let s = kb.add(a, c);
        kb.addi(s, j)
    };
    // Scalar: one tile, writing the outputs that lie inside.
    let scalar = |kb: &mut Kb, ty: Value, tx: Value, rows: usize, cols: usize| {
        let y = outputs(kb, ty, tx, false);
        for i in 0..rows {
            for j in 0..cols {
                let idx = out_index(kb, ty, tx, i as i64, j as i64);
                let r = finish(kb, y[i * 2 + j], idx);
                let q = kb.elem(yp, idx, 4);
                kb.store_f32(r, q, 0);
            }
        }
    };
    let row = |kb: &mut Kb, ty: Value, rows: usize| {
        if rows == 2 {
            kb.for_const(0, vec_cols as i64, 4, |kb, tx| {
                let y = outputs(kb, ty, tx, true);
                // Interleave the tiles' two columns: output row i is
                // [y_i0(t0), y_i1(t0), y_i0(t1), y_i1(t1)], [.. t2, .. t3].
                for i in 0..2 {
                    let lo = kb.shuffle32(y[i * 2], y[i * 2 + 1], [0, 4, 1, 5]);
                    let hi = kb.shuffle32(y[i * 2], y[i * 2 + 1], [2, 6, 3, 7]);
                    for (half, v) in [lo, hi].into_iter().enumerate() {
                        let idx = {
                            let a = out_index(kb, ty, tx, i as i64, 0);
                            kb.addi(a, half as i64 * 4)
                        };
                        let r = finish(kb, v, idx);
                        let q = kb.elem(yp, idx, 4);
                        kb.store_v(r, q, 0);
                    }
                }
            });
            kb.for_const(vec_cols as i64, full_cols as i64, 1, |kb, tx| scalar(kb, ty, tx, 2, 2));
        } else {
            kb.for_const(0, full_cols as i64, 1, |kb, tx| scalar(kb, ty, tx, rows, 2));
        }
        if g.ow % 2 == 1 {
            let tx = kb.iconst(full_cols as i64);
            scalar(kb, ty, tx, rows, 1);
        }
    };
    kb.for_const(0, full_rows as i64, 1, |kb, ty| row(kb, ty, 2));
    if last && g.oh % 2 == 1 {
        let ty = kb.iconst(full_rows as i64);
        row(kb, ty, 1);
    }
}

/// `A^T M A` for the 16 values of a tile (scalars, or vectors over four tiles): [y00, y01, y10, y11].
fn output_transform(kb: &mut Kb, me: &[Value]) -> [Value; 4] {
    let at = |kb: &mut Kb, a: Value, b: Value, c: Value, d: Value| -> (Value, Value) {
        // [1 1 1 0; 0 1 -1 -1] applied to (a, b, c, d).
        let s = kb.b.ins().fadd(a, b);
        let s = kb.b.ins().fadd(s, c);
        let t = kb.b.ins().fsub(b, c);
        let t = kb.b.ins().fsub(t, d);
        (s, t)
    };
    // Along rows of the 4x4 (for each column j), then along columns.
    let mut s0 = vec![];
    let mut s1 = vec![];
    for j in 0..4 {
        let (a, b) = at(kb, me[j], me[4 + j], me[8 + j], me[12 + j]);
        s0.push(a);
        s1.push(b);
    }
    let (y00, y01) = at(kb, s0[0], s0[1], s0[2], s0[3]);
    let (y10, y11) = at(kb, s1[0], s1[1], s1[2], s1[3]);
    [y00, y01, y10, y11]
}

#[cfg(test)]
mod tests {
    use super::transform_kernel;

    /// The written-out transform is the matrix product `G g G^T`, to the bit.
    #[test]
    fn kernel_transform_is_g_g_gt() {
        let gm = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];
        let mut rng = incept_ir::text::parse::SplitMix(9);
        for _ in 0..1000 {
            let g: Vec<f32> = (0..9).map(|_| (rng.uniform() * 10.0) as f32).collect();
            let mut t = [[0f64; 3]; 4];
            for (i, row) in gm.iter().enumerate() {
                for j in 0..3 {
                    t[i][j] = (0..3).map(|k| row[k] * g[k * 3 + j] as f64).sum();
                }
            }
            let mut want = [0f32; 16];
            for i in 0..4 {
                for (j, row) in gm.iter().enumerate() {
                    want[i * 4 + j] = (0..3).map(|k| t[i][k] * row[k]).sum::<f64>() as f32;
                }
            }
            assert_eq!(transform_kernel(&g), want, "{g:?}");
        }
    }
}
