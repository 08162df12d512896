//! 3-D (volumetric) windows: im2col packing for 3-D convs and 3-D pools. Scalar with bounds
//! checks on every tap: correct for any geometry, not tuned (2-D CNNs take the 2-D kernels).

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{InstBuilder, Value};

use crate::codegen::KernelSpec;
use crate::codegen::builder::{Kb, ro};

/// A 3-D window: input dims, kernel, strides, begin pads, dilations and output dims, each
/// (depth, height, width).
#[derive(Clone, Debug, PartialEq)]
pub struct VolGeom {
    pub dims: [usize; 3],
    pub kernel: [usize; 3],
    pub strides: [usize; 3],
    pub pads: [usize; 3],
    pub dilations: [usize; 3],
    pub out: [usize; 3],
}

impl VolGeom {
    fn taps(&self) -> usize {
        self.kernel.iter().product()
    }
    fn in_size(&self) -> usize {
        self.dims.iter().product()
    }
    fn out_size(&self) -> usize {
        self.out.iter().product()
    }
    /// Input position of each axis for output position `o` (three values), before the taps.
    fn origin(&self, kb: &mut Kb, o: [Value; 3]) -> [Value; 3] {
        [0, 1, 2].map(|a| {
            let m = kb.muli(o[a], self.strides[a] as i64);
            kb.addi(m, -(self.pads[a] as i64))
        })
    }
    /// For tap `t` (z, y, x) from `origin`: whether it is inside, and its element offset in the
    /// plane, clamped inside so the load is always in bounds.
    fn tap(&self, kb: &mut Kb, origin: [Value; 3], t: [usize; 3]) -> (Value, Value) {
        let mut inside = None;
        let mut off = kb.iconst(0);
        for a in 0..3 {
            let i = kb.addi(origin[a], (t[a] * self.dilations[a]) as i64);
            let ok = kb.in_range(i, 0, self.dims[a] as i64);
            inside = Some(match inside {
                None => ok,
                Some(p) => kb.b.ins().band(p, ok),
            });
            let z = kb.iconst(0);
            let c = kb.b.ins().smax(i, z);
            let c = kb.mini(c, self.dims[a] as i64 - 1);
            let stride: usize = self.dims[a + 1..].iter().product();
            let s = kb.muli(c, stride as i64);
            off = kb.add(off, s);
        }
        (inside.expect("three axes"), off)
    }
    fn all_taps(&self) -> Vec<[usize; 3]> {
        let k = self.kernel;
        (0..k[0]).flat_map(|z| (0..k[1]).flat_map(move |y| (0..k[2]).map(move |x| [z, y, x]))).collect()
    }
}

/// Output position `n` (flattened) as (z, y, x).
fn unflatten(kb: &mut Kb, n: Value, out: [usize; 3]) -> [Value; 3] {
    let (z, rest) = kb.divmod(n, (out[1] * out[2]) as i64);
    let (y, x) = kb.divmod(rest, out[2] as i64);
    [z, y, x]
}

/// The 3-D im2col matrix of one group of one image as packed B panels (the layout of the 2-D
/// `Im2colSpec`): k = (ci, kz, ky, kx), columns = output positions. Operands: X, P. Tiles:
/// batch x panels.
#[derive(Clone, Debug)]
pub struct VolIm2colSpec {
    pub batch: usize,
    pub groups: usize,
    pub c_total: usize,
    pub cin: usize,
    pub v: VolGeom,
    /// Panel width: the GEMM tier's NR.
    pub nr: usize,
}

impl VolIm2colSpec {
    pub fn k(&self) -> usize {
        self.cin * self.v.taps()
    }
    pub fn panels(&self) -> usize {
        self.v.out_size().div_ceil(self.nr)
    }
    pub fn tiles(&self) -> usize {
        self.batch * self.panels()
    }
    pub fn bytes(&self) -> usize {
        self.batch * self.panels() * self.k() * self.nr * 4
    }
}

impl KernelSpec for VolIm2colSpec {
    fn name(&self) -> String {
        let k = self.v.kernel;
        format!("im2col3d {}x{}x{} c{} nr{}", k[0], k[1], k[2], self.cin, self.nr)
    }

    fn emit(&self, kb: &mut Kb) {
        let [x, p] = [kb.operand(0), kb.operand(1)];
        let v = self.v.clone();
        let (pn, k, vin, taps) = (self.panels(), self.k(), v.in_size(), v.taps());
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, t| {
            let (b, j) = kb.divmod(t, pn as i64);
            let (img, grp) = kb.divmod(b, self.groups as i64);
            let xb = {
                let a = kb.muli(img, self.c_total as i64);
                let c = kb.muli(grp, self.cin as i64);
                let ch = kb.add(a, c);
                let o = kb.muli(ch, vin as i64);
                kb.elem(x, o, 4)
            };
            let pb = {
                let o = kb.muli(t, (k * self.nr) as i64);
                kb.elem(p, o, 4)
            };
            let zero = kb.fconst(0.0);
            // Columns in a loop, taps unrolled: a panel is up to 16 columns wide, and unrolling
            // both would make a very large function for 3x3x3 kernels.
            let (c0, c1) = (kb.iconst(0), kb.iconst(self.nr as i64));
            kb.for_range(c0, c1, 1, |kb, c| {
                let n = {
                    let n0 = kb.muli(j, self.nr as i64);
                    kb.add(n0, c)
                };
                let valid = kb.in_range(n, 0, v.out_size() as i64);
                let nc = kb.mini(n, v.out_size() as i64 - 1);
                let o = unflatten(kb, nc, v.out);
                let origin = v.origin(kb, o);
                let col = kb.elem(pb, c, 4);
                kb.for_const(0, self.cin as i64, 1, |kb, ci| {
                    let xc = {
                        let o = kb.muli(ci, vin as i64);
                        kb.elem(xb, o, 4)
                    };
                    let dst = {
                        let o = kb.muli(ci, (taps * self.nr) as i64);
                        kb.elem(col, o, 4)
                    };
                    for (ti, tap) in v.all_taps().into_iter().enumerate() {
                        let (inside, off) = v.tap(kb, origin, tap);
                        let ok = kb.b.ins().band(inside, valid);
                        let q = kb.elem(xc, off, 4);
                        let val = kb.load_f32(q, 0, ro());
                        let val = kb.b.ins().select(ok, val, zero);
                        kb.store_f32(val, dst, (ti * self.nr * 4) as i32);
                    }
                });
            });
        });
    }
}

/// 3-D max or average pooling, one tile per (image, channel) volume (1-D and 2-D pools that need
/// MaxPool's Indices output come here with leading dims of 1). `ends` are the end pads (for
/// count_include_pad's divisor). Operands: X, Y, and with `indices` the i64 Indices output.
#[derive(Clone, Debug)]
pub struct VolPoolSpec {
    pub max: bool,
    pub v: VolGeom,
    pub ends: [usize; 3],
    pub count_include_pad: bool,
    /// Max only: also write each maximum's flat input index (`Some(column_major)`), choosing
    /// as the reference does: the first element inside the window, then any strictly greater.
    pub indices: Option<bool>,
}

impl KernelSpec for VolPoolSpec {
    fn name(&self) -> String {
        let k = self.v.kernel;
        format!("{}pool3d {}x{}x{}", if self.max { "max" } else { "avg" }, k[0], k[1], k[2])
    }

    fn emit(&self, kb: &mut Kb) {
        let [x, y] = [kb.operand(0), kb.operand(1)];
        let ip = self.indices.map(|_| kb.operand(2));
        let v = self.v.clone();
        let (vin, vout) = (v.in_size(), v.out_size());
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, t| {
            let xp = {
                let o = kb.muli(t, vin as i64);
                kb.elem(x, o, 4)
            };
            let yp = {
                let o = kb.muli(t, vout as i64);
                kb.elem(y, o, 4)
            };
            let ipl = ip.map(|ip| {
                let o = kb.muli(t, vout as i64);
                kb.elem(ip, o, 8)
            });
            kb.for_const(0, vout as i64, 1, |kb, n| {
                let o = unflatten(kb, n, v.out);
                let origin = v.origin(kb, o);
                if let (Some(column_major), Some(ip)) = (self.indices, ipl) {
                    self.argmax(kb, xp, yp, ip, t, n, origin, column_major);
                    return;
                }
                let mut acc = kb.fconst(if self.max { f32::NEG_INFINITY } else { 0.0 });
                let (one, zero) = (kb.fconst(1.0), kb.fconst(0.0));
                let (mut real, mut padded) = (zero, zero);
                let mut found = kb.b.ins().iconst(cranelift_codegen::ir::types::I8, 0);
                for tap in v.all_taps() {
                    let (inside, off) = v.tap(kb, origin, tap);
                    let q = kb.elem(xp, off, 4);
                    let val = kb.load_f32(q, 0, ro());
                    if self.max {
                        // The first tap inside, then any strictly greater one (the reference's).
                        let gt = kb.b.ins().fcmp(FloatCC::GreaterThan, val, acc);
                        let one = kb.b.ins().iconst(cranelift_codegen::ir::types::I8, 1);
                        let first = kb.b.ins().bxor(found, one);
                        let better = kb.b.ins().bor(gt, first);
                        let take = kb.b.ins().band(inside, better);
                        acc = kb.b.ins().select(take, val, acc);
                        found = kb.b.ins().bor(found, inside);
                    } else {
                        let a = kb.b.ins().fadd(acc, val);
                        acc = kb.b.ins().select(inside, a, acc);
                        let r = kb.b.ins().fadd(real, one);
                        real = kb.b.ins().select(inside, r, real);
                        // Inside the padded volume (count_include_pad's divisor).
                        let mut inpad = None;
                        for a in 0..3 {
                            let i = kb.addi(origin[a], (tap[a] * v.dilations[a]) as i64);
                            let ok = kb.in_range(i, -(v.pads[a] as i64), (v.dims[a] + self.ends[a]) as i64);
                            inpad = Some(match inpad {
                                None => ok,
                                Some(p) => kb.b.ins().band(p, ok),
                            });
                        }
                        let q = kb.b.ins().fadd(padded, one);
                        padded = kb.b.ins().select(inpad.expect("three axes"), q, padded);
                    }
                }
                if !self.max {
                    let div = if self.count_include_pad { padded } else { real };
                    let is_zero = kb.b.ins().fcmp(FloatCC::Equal, div, zero);
                    let q = kb.b.ins().fdiv(acc, div);
                    acc = kb.b.ins().select(is_zero, zero, q);
                }
                let q = kb.elem(yp, n, 4);
                kb.store_f32(acc, q, 0);
            });
        });
    }
}

impl VolPoolSpec {
    /// One output of a max pool with its index.
    #[allow(clippy::too_many_arguments)]
    fn argmax(
        &self,
        kb: &mut Kb,
        xp: Value,
        yp: Value,
        ip: Value,
        plane: Value,
        n: Value,
        origin: [Value; 3],
        column_major: bool,
    ) {
        let v = &self.v;
        let mut best = kb.fconst(f32::NEG_INFINITY);
        let mut idx = kb.iconst(-1);
        let mut found = kb.b.ins().iconst(cranelift_codegen::ir::types::I8, 0);
        for tap in v.all_taps() {
            let (inside, off) = v.tap(kb, origin, tap);
            let q = kb.elem(xp, off, 4);
            let val = kb.load_f32(q, 0, ro());
            let greater = kb.b.ins().fcmp(FloatCC::GreaterThan, val, best);
            let one = kb.b.ins().iconst(cranelift_codegen::ir::types::I8, 1);
            let first = kb.b.ins().bxor(found, one);
            let better = kb.b.ins().bor(greater, first);
            let take = kb.b.ins().band(inside, better);
            best = kb.b.ins().select(take, val, best);
            // The flat index of the element: its offset in the plane (row-major), or column-major
            // over the spatial dims, plus the plane's start.
            let spatial = if column_major {
                let mut s = kb.iconst(0);
                let mut stride = 1i64;
                for a in 0..3 {
                    let i = kb.addi(origin[a], (tap[a] * v.dilations[a]) as i64);
                    let m = kb.muli(i, stride);
                    s = kb.add(s, m);
                    stride *= v.dims[a] as i64;
                }
                s
            } else {
                off
            };
            let base = kb.muli(plane, v.in_size() as i64);
            let flat = kb.add(base, spatial);
            idx = kb.b.ins().select(take, flat, idx);
            found = kb.b.ins().bor(found, inside);
        }
        let q = kb.elem(yp, n, 4);
        kb.store_f32(best, q, 0);
        let q = kb.elem(ip, n, 8);
        kb.b.ins().store(crate::codegen::builder::rw(), idx, q, 0);
    }
}

/// The gather half of a 3-D transposed convolution (the volumetric `Col2ImSpec`): given
/// `cols[plane][kz][ky][kx][iz][iy][ix]` from the GEMM, output voxel `o` of a plane sums the taps
/// with `o + pad = i * stride + k * dilation` on every axis, plus the channel's bias. `v` is the
/// forward geometry: `dims` the transposed conv's input, `out` its output. Operands: COLS, Y,
/// [BIAS]. One tile per output plane (image, channel).
#[derive(Clone, Debug)]
pub struct VolCol2ImSpec {
    pub planes: usize,
    pub channels: usize,
    pub v: VolGeom,
    pub bias: bool,
}

impl KernelSpec for VolCol2ImSpec {
    fn name(&self) -> String {
        let k = self.v.kernel;
        format!("col2im3d {}x{}x{} {:?}->{:?}", k[0], k[1], k[2], self.v.dims, self.v.out)
    }

    fn emit(&self, kb: &mut Kb) {
        let [cols, y] = [kb.operand(0), kb.operand(1)];
        let bias = if self.bias { Some(kb.operand(2)) } else { None };
        let v = self.v.clone();
        let (n_in, n_out) = (v.in_size() as i64, v.out_size() as i64);
        let taps = v.all_taps();
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, p| {
            let cp = {
                let a = kb.muli(p, taps.len() as i64 * n_in * 4);
                kb.add(cols, a)
            };
            let yp = {
                let a = kb.muli(p, n_out * 4);
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
            kb.for_const(0, n_out, 1, |kb, o| {
                let pos = unflatten(kb, o, v.out);
                let acc = kb.var(crate::codegen::builder::F32, b0);
                for (ti, tap) in taps.iter().enumerate() {
                    // t = i * stride: valid when divisible and in range, on every axis.
                    let mut valid = None;
                    let mut idx = kb.iconst(ti as i64 * n_in);
                    for a in 0..3 {
                        let t = kb.addi(pos[a], v.pads[a] as i64 - (tap[a] * v.dilations[a]) as i64);
                        let (i, r) = kb.divmod(t, v.strides[a] as i64);
                        let ok = kb.in_range(t, 0, (v.dims[a] * v.strides[a]) as i64);
                        let z = kb.eqi(r, 0);
                        let ok = kb.b.ins().band(ok, z);
                        valid = Some(match valid {
                            None => ok,
                            Some(p) => kb.b.ins().band(p, ok),
                        });
                        let stride: usize = v.dims[a + 1..].iter().product();
                        let s = kb.muli(i, stride as i64);
                        idx = kb.add(idx, s);
                    }
                    kb.if_then(valid.expect("three axes"), |kb| {
                        let q = kb.elem(cp, idx, 4);
                        let x = kb.load_f32(q, 0, ro());
                        let a = kb.b.use_var(acc);
                        let s = kb.b.ins().fadd(a, x);
                        kb.b.def_var(acc, s);
                    });
                }
                let r = kb.b.use_var(acc);
                let q = kb.elem(yp, o, 4);
                kb.store_f32(r, q, 0);
            });
        });
    }
}
