//! Conv and ConvTranspose: the choice among depthwise, Winograd and im2col GEMM paths, the
//! im2col GEMM itself (whole, in bands, transposed, or reading a 1x1 conv's input in place),
//! and the window geometry that pools share.

use std::borrow::Cow;
use std::sync::Arc;

use incept_ir::graph::{NodeId, ValueId};
use incept_ir::ops::Step;
use incept_ir::ops::conv::{Window, Window3};

use super::linear::{AddLayout, ConvPath, balanced, even_bands, min_band_rows};
use super::winograd::winograd_tile;
use super::{BufRef, LowerError, Lowerer};
use crate::codegen::Tier;
use crate::codegen::bf16::{Bf16Tier, PadPairs};
use crate::codegen::bf16_phase::PhasePairs;
use crate::codegen::kernels::conv::{Col2ImSpec, Geom, Im2colSpec};
use crate::codegen::kernels::copy::CopySpec;
use crate::codegen::kernels::depthwise::DepthwiseSpec;
use crate::codegen::kernels::gemm::{GemmSpec, GemmStep, Mat, Taps};
use crate::codegen::kernels::nd::contiguous;
use crate::codegen::kernels::transposed::TransposedOutSpec;
use crate::codegen::kernels::volume::{VolCol2ImSpec, VolGeom, VolIm2colSpec};
use crate::codegen::kernels::winograd::geom::WinoGeom;

impl<'g> Lowerer<'g> {
    /// Which kernels compute a conv, from its geometry alone (never from its epilogue).
    pub(super) fn conv_path(
        &self,
        id: NodeId,
        c: &incept_ir::ops::Conv,
        inputs: &[Option<ValueId>],
    ) -> Result<ConvPath, LowerError> {
        let x = inputs.first().copied().flatten().ok_or_else(|| self.unsupported(id, "a missing input"))?;
        let wv = inputs.get(1).copied().flatten().ok_or_else(|| self.unsupported(id, "missing weights"))?;
        let xs = self.shape(x)?;
        let os = self.shape(ValueId::new(id, 0))?;
        if xs.len() == 5 || xs.len() < 3 || os.len() != xs.len() {
            return Ok(ConvPath::Gemm);
        }
        let geom = geom(&c.window, &xs, &os);
        let (n, cin_total, cout, g) = (xs[0], xs[1], os[1], c.group);
        if g == cin_total && g > 1 {
            return Ok(ConvPath::Depthwise);
        }
        let constant = self.is_konst(wv);
        // In bf16, a conv with constant weights is a bf16 GEMM over im2col panels: bf16
        // multiplies at twice (AVX512-BF16) or many times (AMX) the f32 rate, which outruns
        // Winograd's 2.25-4x fewer multiplies, and Winograd's transforms would amplify the bf16
        // rounding.
        // (Measured: bf16 GEMMs inside Winograd F(2x2, 3x3) were 3-13% faster on the zoo, but
        // they round in the transform domain: InceptionV3's output error grew by a third and its
        // top-1 class flipped on the stored input.)
        if constant && self.bf16.is_some() {
            return Ok(ConvPath::Gemm);
        }
        if constant && let Some(tile) = winograd_tile(&geom, g, cin_total / g, cout / g, n, xs.len(), self.winograd) {
            return Ok(ConvPath::Winograd(tile));
        }
        Ok(ConvPath::Gemm)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn conv(
        &mut self,
        id: NodeId,
        c: &incept_ir::ops::Conv,
        path: ConvPath,
        inputs: &[Option<ValueId>],
        steps: &[Step],
        adds: &[(ValueId, AddLayout)],
        dst: BufRef,
    ) -> Result<(), LowerError> {
        let nr = self.tier.nr();
        let name = self.g.node(id).name.clone();
        let (x, wv, w, bias) = self.conv_inputs(id, inputs)?;
        let xs = self.shape(x)?;
        let os = self.shape(ValueId::new(id, 0))?;
        if xs.len() < 3 || xs.len() > 5 {
            return Err(self.unsupported(id, format!("{}-D convolution", xs.len().saturating_sub(2))));
        }
        // 3-D convs take the general path (volumetric im2col + GEMM); `geom` is the view of
        // their last two dims, which that path does not read.
        let vol = (xs.len() == 5).then(|| vol_geom(&c.window, &xs, &os));
        let geom = geom(&c.window, &xs, &os);
        let (n, cin_total, cout) = (xs[0], xs[1], os[1]);
        let g = c.group;
        let (cg, mg) = (cin_total / g, cout / g);
        let src = self.value(x)?;
        let taps: usize = c.window.kernel.iter().product();
        let out_sp: usize = os[2..].iter().product();
        let flops = 2 * (n * cout * out_sp * cg * taps) as u64;
        match (path, &w) {
            (ConvPath::Depthwise, _) => {
                let (dsteps, add_vals, helpers) = self.plane_steps(steps, adds);
                let mult = cout / cin_total;
                let wref = self.value(wv)?;
                let bias_ref = bias.map(|b| self.value(b)).transpose()?;
                let mut spec = DepthwiseSpec {
                    n,
                    c_in: cin_total,
                    mult,
                    g: geom,
                    bias: bias_ref.is_some(),
                    steps: dsteps,
                    wide: false,
                    plane: false,
                };
                let wide = self.tier == Tier::Avx512;
                let plane = wide.then(|| spec.wide_plane()).flatten();
                let row = wide.then(|| spec.wide_row()).flatten().filter(|_| plane.is_none());
                spec.wide = row.is_some() || plane.is_some();
                spec.plane = plane.is_some();
                let tiles = spec.tiles();
                // Operands: X, W, Y, bias, adds: Y comes third.
                let mut ops = vec![src, wref, dst];
                ops.extend(bias_ref);
                for v in add_vals {
                    ops.push(self.value(v)?);
                }
                self.step_ordered(Arc::new(spec), tiles, &ops, 2, helpers, &name, "DepthwiseConv", flops);
                let machine: Option<Arc<dyn crate::codegen::KernelSpec>> = match (plane, row) {
                    (Some(p), _) => Some(Arc::new(p)),
                    (None, Some(r)) => Some(Arc::new(r)),
                    (None, None) => None,
                };
                if let Some(m) = machine {
                    let k = self.kernel(m);
                    if let Some(step) = self.out.steps.last_mut() {
                        step.operands.push(super::LOperand::Kernel(k));
                    }
                }
                return Ok(());
            }
            (ConvPath::Winograd(tile), Some(wts)) => {
                let (dsteps, add_vals, helpers) = self.plane_steps(steps, adds);
                let add_refs = add_vals.iter().map(|&v| self.value(v)).collect::<Result<Vec<_>, _>>()?;
                let bias_ref = bias.map(|b| self.value(b)).transpose()?;
                let wg = WinoGeom { tile, n, h: geom.h, w: geom.w, ph: geom.ph, pw: geom.pw, oh: geom.oh, ow: geom.ow };
                return self.winograd(&name, src, wts, bias_ref, &wg, cg, mg, dsteps, &add_refs, helpers, dst);
            }
            _ => {}
        }
        if let (None, Some(wts), 1) = (&vol, &w, g)
            && self.transposed_pays(out_sp, cout)
            && let Some(plane_adds) = self.plane_adds(adds, &os)?
        {
            return self.conv_transposed(&name, src, wts, bias, &geom, n, cin_total, cout, steps, &plane_adds, dst);
        }
        let (gsteps, add_vals, helpers) = self.gemm_steps(steps, adds);
        let add_refs = add_vals.iter().map(|&v| self.value(v)).collect::<Result<Vec<_>, _>>()?;
        // Dense or grouped: GEMM over im2col panels, one problem per (image, group).
        let k = cg * taps;
        let hw_out = out_sp;
        // bf16 when asked for and the weights are constant (packed and rounded now).
        let bf16 = self.bf16.filter(|_| w.is_some());
        let mr = bf16.map_or(self.tier.panel_rows(mg), |t| t.mr());
        let (a_ref, a) = match &w {
            // A: the weights of each group, [mg] x [k] row-major.
            Some(w) if let Some(t) = bf16 => {
                self.pack_a_bf16(&name, g, mg, k, t, |gi, m, kk| w[(gi * mg + m) * k + kk])
            }
            Some(w) => self.pack_a(&name, g, mg, k, mr, |gi, m, kk| w[(gi * mg + m) * k + kk]),
            None => {
                let a = Mat {
                    rs: k as isize,
                    cs: 1,
                    panel_stride: (mr * k) as isize,
                    batch_stride: (mg * k) as isize,
                    batch_mod: g,
                };
                let src = self.value(wv)?;
                self.run_time_a(&name, src, a, g, mg, k, mr)
            }
        };
        // B: packed into nr-wide panels, except a wide tier's 1x1 convs of arena values (below).
        // On the f32x4 tier, reading a 1x1 conv's input in place (rows of hw floats, one f32x4 per
        // k step) measured slower than packing it first: ResNet50 196 vs 190 ms, Xception 460 vs
        // 413 ms (one thread).
        let bias_ref = bias.map(|b| self.value(b)).transpose()?;
        let bias_mat = bias_ref.map(|_| Mat { rs: 1, cs: 0, panel_stride: 0, batch_stride: mg as isize, batch_mod: g });
        let c_mat =
            Mat { rs: hw_out as isize, cs: 1, panel_stride: 0, batch_stride: (mg * hw_out) as isize, batch_mod: 0 };
        let b_mat = |pn: usize| Mat {
            rs: nr as isize,
            cs: 1,
            panel_stride: (k * nr) as isize,
            batch_stride: (pn * k * nr) as isize,
            batch_mod: 0,
        };
        let gemm = |this: &Self, n_cols: usize, pn: usize| GemmSpec {
            m: mg,
            n: n_cols,
            k,
            batch: n * g,
            a,
            b: b_mat(pn),
            c: c_mat,
            alpha: 1.0,
            bias: bias_mat,
            steps: gsteps.clone(),
            mr,
            bf16,
            ..this.gemm_blocking()
        };
        let im2col = |band: Option<usize>| Im2colSpec {
            batch: n * g,
            groups: g,
            c_total: cin_total,
            cin: cg,
            g: geom.clone(),
            nr,
            band,
        };
        // A 1x1 stride-1 conv of a value in the arena on a wide tier: B is the input itself, rows
        // of a channel's positions read in place by the microkernel (no panel copies). The last
        // panel's row reads run past the row into what follows in the arena (or its slack,
        // `ARENA_OVERREAD`); those columns' sums are dropped.
        // Only up to 64 output channels: each strided B row is then read by few row panels, and
        // the copy it saves weighs more than the strided rows cost. Six 1x1 convs alternating
        // 24/144 channels on 56x56: 1.29 -> 0.99 ms (the 144 -> 24 ones gain); in place, 728
        // channels on 19x19 ran 15.0 -> 15.6 ms and Xception's 128 -> 128 on 147x147 7.9 -> 13.8
        // ms (K rows a page or more apart, from memory), so those pack.
        let pointwise = taps == 1 && geom.sh == 1 && geom.sw == 1 && geom.ph == 0 && geom.pw == 0;
        if pointwise
            && hw_out == geom.h * geom.w
            && vol.is_none()
            && g == 1
            // In bf16 every B panel is rounded into a pair buffer per K block anyway (a packing
            // of its own): the im2col copy would only be read once more.
            && (mg <= DIRECT_MAX_CHANNELS || bf16.is_some())
            && self.tier.is_wide()
            && self.in_arena(src)
        {
            let b = Mat {
                rs: hw_out as isize,
                cs: 1,
                panel_stride: nr as isize,
                batch_stride: (cin_total * hw_out) as isize,
                batch_mod: 0,
            };
            let spec = balanced(GemmSpec { b, ..gemm(self, hw_out, hw_out.div_ceil(nr)) });
            let mut ops = vec![a_ref, src, dst];
            ops.extend(bias_ref);
            ops.extend(add_refs.iter().copied());
            let (tiles, spec) = (spec.tiles(), Arc::new(spec));
            self.step_ordered(spec.clone(), tiles, &ops, 2, helpers, &name, "Conv", flops);
            self.attach_microkernels(&spec);
            self.gemm_in_place(&spec, &add_refs, dst);
            return Ok(());
        }
        // bf16, stride 1, one image: no im2col at all (see `conv_implicit`). Stride 2 on a few
        // input channels (a stem) too, as a stride-1 conv over the input's phases: its window
        // and K grow (7x7 on 3 channels: K 147 -> 192), but the im2col panels it saves were as
        // long as its GEMM (see `codegen/bf16_phase.rs`).
        let phase =
            (geom.sh, geom.sw, geom.dh, geom.dw) == (2, 2, 1, 1) && cin_total <= PHASE_MAX_CHANNELS && geom.pw < 16;
        if let (Some(Bf16Tier::Avx512Bf16), Some(wts), None) = (bf16, &w, &vol)
            && g == 1
            && n == 1
            && taps > 1
            && ((geom.sh, geom.sw, geom.dh, geom.dw) == (1, 1, 1, 1) || phase)
        {
            let kw = if phase { geom.kw.div_ceil(2) } else { geom.kw };
            let wp = geom.ow + kw - 1;
            // Rows that fill the lanes are a problem each; narrower ones run as one problem over
            // the padded planes' rows end to end, computing the kw - 1 columns between rows too
            // (dropped when the result is copied out), which residual adds cannot take.
            let (row, flat) = (row_fill(geom.ow, nr), geom.ow as f64 / wp as f64);
            let flat = add_refs.is_empty() && flat >= self.implicit_min_fill && flat > row;
            if row >= self.implicit_min_fill || flat {
                let form = Implicit { flat, phase };
                return self.conv_implicit(
                    &name, src, wts, &geom, cin_total, cout, bias_ref, gsteps, &add_refs, helpers, dst, form,
                );
            }
        }
        if let (None, Some(rows)) = (&vol, im2col_band_rows(n * g, k, &geom, nr, self.band_bytes)) {
            // Packed panels bigger than the cache go out to memory and come back for the GEMM:
            // pack and multiply a band of output rows at a time, through one band-sized buffer.
            let band = |oy0: usize| im2col(Some(rows.min(geom.oh - oy0)));
            let scratch = self.scratch(band(0).bytes(), &format!("{name}/im2col"));
            for oy0 in (0..geom.oh).step_by(rows) {
                let im = band(oy0);
                let (cols, pn, tiles) = (im.n(), im.panels(), im.tiles());
                let first = self.weight(&(oy0 as i64).to_le_bytes(), &format!("{name}/band_row"));
                let mut ops = vec![src, scratch, first];
                if im.band_unrolled() {
                    ops.push(self.weight(&vec![0; im.zero_row_bytes()], &format!("{name}/zero_row")));
                }
                self.step_ordered(Arc::new(im), tiles, &ops, 1, false, &name, "Im2col", 0);
                let spec = balanced(gemm(self, cols, pn));
                // Operands laid out over columns start at the band's first column.
                let col0 = oy0 * geom.ow;
                let at = |r: BufRef, m: &Mat| BufRef { offset: r.offset + col0 * m.cs as usize * 4, ..r };
                let mut ops = vec![a_ref, scratch, at(dst, &c_mat)];
                ops.extend(bias_ref);
                let add_mats = spec.steps.iter().filter_map(|s| match s {
                    GemmStep::Add(m) => Some(*m),
                    _ => None,
                });
                ops.extend(add_mats.zip(&add_refs).map(|(m, &r)| at(r, &m)));
                let (tiles, band_flops) = (spec.tiles(), flops * cols as u64 / hw_out as u64);
                let spec = Arc::new(spec);
                self.step_ordered(spec.clone(), tiles, &ops, 2, helpers, &name, "Conv", band_flops);
                self.attach_microkernels(&spec);
            }
            return Ok(());
        }
        let (im, bytes, tiles, pn): (Arc<dyn crate::codegen::KernelSpec>, usize, usize, usize) = match vol {
            Some(v) => {
                let im = VolIm2colSpec { batch: n * g, groups: g, c_total: cin_total, cin: cg, v, nr };
                let (b, t, p) = (im.bytes(), im.tiles(), im.panels());
                (Arc::new(im), b, t, p)
            }
            None => {
                let im = im2col(None);
                let (b, t, p) = (im.bytes(), im.tiles(), im.panels());
                (Arc::new(im), b, t, p)
            }
        };
        let scratch = self.scratch(bytes, &format!("{name}/im2col"));
        self.step(im, tiles, &[src], &[scratch], false, &name, "Im2col", 0);
        let spec = balanced(gemm(self, hw_out, pn));
        let tiles = spec.tiles();
        let mut ops = vec![a_ref, scratch, dst];
        ops.extend(bias_ref);
        ops.extend(add_refs.iter().copied());
        let spec = Arc::new(spec);
        self.step_ordered(spec.clone(), tiles, &ops, 2, helpers, &name, "Conv", flops);
        self.attach_microkernels(&spec);
        self.gemm_in_place(&spec, &add_refs, dst);
        Ok(())
    }

    /// A stride-1 2-D conv of one image in bf16 without im2col: the input is written once into
    /// padded bf16 planes of channel pairs (`PadPairs`), and the GEMM reads its B straight from
    /// them: K runs over taps then channel pairs, so a K block's pair rows are whole planes
    /// apart and a tap shifts them by a row and a column (`gemm::Taps`). Each output row is one
    /// problem of the batch (its columns are a run of the padded row; the columns between rows
    /// are never computed), the weights are packed for that K order. With `flat`, the whole map
    /// is one problem over the planes' rows end to end (the columns between rows are computed
    /// into a scratch output and dropped when it is copied to `dst`): for rows too narrow to
    /// fill the lanes (14, 17 or 35 wide).
    #[allow(clippy::too_many_arguments)]
    fn conv_implicit(
        &mut self,
        name: &str,
        src: BufRef,
        w: &[f32],
        geom: &Geom,
        cin: usize,
        cout: usize,
        bias: Option<BufRef>,
        steps: Vec<GemmStep>,
        adds: &[BufRef],
        helpers: bool,
        dst: BufRef,
        form: Implicit,
    ) -> Result<(), LowerError> {
        let Implicit { flat, phase } = form;
        let t = Bf16Tier::Avx512Bf16;
        let nr = self.tier.nr();
        // The stride-1 conv that runs: the original, or the one over the phases (channels
        // (c, a, b), window halved).
        let (kh, kw, cin_run) =
            if phase { (geom.kh.div_ceil(2), geom.kw.div_ceil(2), 4 * cin) } else { (geom.kh, geom.kw, cin) };
        let taps = kh * kw;
        let cpad = cin_run.next_multiple_of(2);
        // Planes hold every row and column a window reads, and rows past them for the last
        // column panel's reads beyond its row (their sums are dropped).
        let wp = geom.ow + kw - 1;
        let hp = geom.oh + kh - 1 + nr.div_ceil(wp) + 1;
        let (plane_bytes, planes) = if phase {
            let pp = PhasePairs { c: cin, h: geom.h, w: geom.w, pt: geom.ph, pl: geom.pw, hp, wp };
            let planes = self.scratch(pp.bytes(), &format!("{name}/bf16_planes"));
            let (tiles, bytes) = (pp.tiles(), pp.plane_bytes() as i64);
            self.step(Arc::new(pp), tiles, &[src], &[planes], false, name, "PackBf16", 0);
            (bytes, planes)
        } else {
            let pad = PadPairs { n: 1, c: cin, h: geom.h, w: geom.w, ph: geom.ph, pw: geom.pw, hp, wp };
            let planes = self.scratch(pad.bytes(), &format!("{name}/bf16_planes"));
            let (tiles, bytes) = (pad.tiles(), pad.plane_bytes() as i64);
            self.step(Arc::new(pad), tiles, &[src], &[planes], false, name, "PackBf16", 0);
            (bytes, planes)
        };
        let k = taps * cpad;
        let (gkh, gkw) = (geom.kh, geom.kw);
        let (a_ref, a) = self.pack_a_bf16(name, 1, cout, k, t, |_, m, kk| {
            let (tap, c) = (kk / cpad, kk % cpad);
            if phase {
                // Channel (c, a, b) at tap (u, v) is the original tap (2u + a, 2v + b).
                let (u, v) = (tap / kw, tap % kw);
                let (ch, ky, kx) = (c / 4, 2 * u + (c / 2) % 2, 2 * v + c % 2);
                if ky < gkh && kx < gkw { w[((m * cin + ch) * gkh + ky) * gkw + kx] } else { 0.0 }
            } else if c < cin {
                w[(m * cin + c) * taps + tap]
            } else {
                0.0
            }
        });
        // One K block: the microkernels run every tap with the sums in registers.
        let kc = k;
        // Operands laid out like the output move by a row per problem; per-channel ones do not.
        let steps = steps
            .into_iter()
            .map(|s| match s {
                GemmStep::Add(m) => {
                    GemmStep::Add(Mat { batch_stride: if m.cs == 0 { 0 } else { geom.ow as isize }, batch_mod: 0, ..m })
                }
                other => other,
            })
            .collect();
        // Flat: output (oy, ox) is column oy * wp + ox of one problem, whose B addresses are then
        // the same as a row's (planes are wp wide); C has that pitch too, in a scratch buffer.
        let (n_cols, batch, c_pitch) =
            if flat { ((geom.oh - 1) * wp + geom.ow, 1, wp) } else { (geom.ow, geom.oh, geom.ow) };
        let c_ref = if flat { self.scratch(cout * geom.oh * wp * 4, &format!("{name}/rows")) } else { dst };
        let spec = balanced(GemmSpec {
            m: cout,
            n: n_cols,
            k,
            batch,
            a,
            b: Mat { rs: 0, cs: 1, panel_stride: nr as isize, batch_stride: wp as isize, batch_mod: 0 },
            c: Mat {
                rs: (geom.oh * c_pitch) as isize,
                cs: 1,
                panel_stride: 0,
                batch_stride: geom.ow as isize,
                batch_mod: 0,
            },
            alpha: 1.0,
            bias: bias.map(|_| Mat { rs: 1, cs: 0, panel_stride: 0, batch_stride: 0, batch_mod: 0 }),
            steps,
            mr: t.mr(),
            kc,
            bf16: Some(t),
            b_pairs: true,
            b_taps: Some(Taps { cpad, kw, row_bytes: (wp * 4) as i64, plane_bytes }),
            ..self.gemm_blocking()
        });
        let flops = 2 * (cout * geom.oh * geom.ow * cin * geom.kh * geom.kw) as u64;
        let mut ops = vec![a_ref, planes, c_ref];
        ops.extend(bias);
        ops.extend(adds.iter().copied());
        let (tiles, spec) = (spec.tiles(), Arc::new(spec));
        self.step_ordered(spec.clone(), tiles, &ops, 2, helpers, name, "Conv", flops);
        self.attach_microkernels(&spec);
        if flat {
            let dims = [cout, geom.oh, geom.ow];
            let strides = vec![(geom.oh * wp) as isize, wp as isize, 1];
            let copy = CopySpec::new(&dims, strides, contiguous(&dims), 0, 0, 4);
            let tiles = copy.tiles();
            self.step(Arc::new(copy), tiles, &[c_ref], &[dst], false, name, "ImplicitRows", 0);
        }
        Ok(())
    }

    /// Whether `r` lies in the arena (not a graph input or output, nor a weight).
    fn in_arena(&self, r: BufRef) -> bool {
        matches!(self.out.buffers[r.buf].place, super::Place::Arena)
    }

    /// Whether a conv with `positions` outputs per channel and `channels` output channels runs
    /// transposed (`conv_transposed`): on AVX-512, when the channels fill the GEMM's vector
    /// lanes at least a tenth better than the positions do (ResNet50's 7x7 maps: 49 positions
    /// fill 77% of two 32-lane panels, 512 channels all of sixteen) and make one whole row panel.
    fn transposed_pays(&self, positions: usize, channels: usize) -> bool {
        // Im2col fills panels four columns at a time: AVX2's six-row panels cannot hold them.
        // In bf16 on AMX the weights stay A (no transposed AMX GEMM yet).
        let mr = self.tier.panel_rows(positions);
        if self.bf16 == Some(Bf16Tier::Amx) {
            return false;
        }
        if !self.tier.is_wide() || !mr.is_multiple_of(4) || positions < mr {
            return false;
        }
        let nr = self.tier.nr();
        // The share of the lanes a GEMM's columns fill: whole panels, then a half-width tail
        // kernel for a remainder of up to nr / 2, else a whole panel.
        let filled = |cols: usize| {
            let rem = cols % nr;
            let tail = if rem == 0 {
                0
            } else if rem <= nr / 2 {
                nr / 2
            } else {
                nr
            };
            cols as f64 / (cols - rem + tail) as f64
        };
        filled(channels) >= filled(positions) + 0.1
    }

    /// A dense conv computed transposed: im2col panels `mr` positions wide as the GEMM's A, the
    /// weights packed as B panels of `nr` output channels, so that `Ct[img][position][channel]`
    /// comes out with the channels along the vector lanes; then `TransposedOutSpec` writes Y
    /// from it with the bias and epilogue. Each output is the same sum in the same order as the
    /// untransposed GEMM's, so the bits are the same.
    #[allow(clippy::too_many_arguments)]
    fn conv_transposed(
        &mut self,
        name: &str,
        src: BufRef,
        w: &[f32],
        bias: Option<ValueId>,
        geom: &Geom,
        n: usize,
        cin: usize,
        cout: usize,
        steps: &[Step],
        adds: &[(ValueId, AddLayout)],
        dst: BufRef,
    ) -> Result<(), LowerError> {
        let (nr, mr) = (self.tier.nr(), self.tier.panel_rows(0));
        let k = cin * geom.kh * geom.kw;
        let positions = geom.oh * geom.ow;
        let im = Im2colSpec { batch: n, groups: 1, c_total: cin, cin, g: geom.clone(), nr: mr, band: None };
        let (pm, tiles) = (im.panels(), im.tiles());
        let a_ref = self.scratch(im.bytes(), &format!("{name}/im2col"));
        self.step(Arc::new(im), tiles, &[src], &[a_ref], false, name, "Im2col", 0);
        let bf16 = self.bf16;
        let a = Mat {
            rs: 1,
            cs: mr as isize,
            panel_stride: (k * mr) as isize,
            batch_stride: (pm * k * mr) as isize,
            batch_mod: 0,
        };
        let (a_ref, a, b_ref, b) = match bf16 {
            // bf16: the position panels rounded into pairs, the weights packed in pairs now.
            Some(_) => {
                let (a_pairs, a) = self.pair_panels(name, a_ref, a, n * pm, k, mr);
                let (b_ref, b) = self.pack_b_bf16(name, cout, k, nr, |kk, co| w[co * k + kk]);
                (a_pairs, a, b_ref, b)
            }
            None => {
                let b_ref = self.pack_b(name, 1, cout, k, nr, |_, kk, co| w[co * k + kk]);
                let b = Mat { rs: nr as isize, cs: 1, panel_stride: (k * nr) as isize, batch_stride: 0, batch_mod: 0 };
                (a_ref, a, b_ref, b)
            }
        };
        let ct = self.scratch(n * positions * cout * 4, &format!("{name}/transposed"));
        let spec = balanced(GemmSpec {
            m: positions,
            n: cout,
            k,
            batch: n,
            a,
            b,
            c: Mat::row_major(cout, positions * cout),
            mr,
            bf16,
            b_pairs: bf16.is_some(),
            ..self.gemm_blocking()
        });
        let flops = 2 * (n * cout * positions * k) as u64;
        let (gemm_tiles, spec) = (spec.tiles(), Arc::new(spec));
        self.step_ordered(spec.clone(), gemm_tiles, &[a_ref, b_ref, ct], 2, false, name, "Conv", flops);
        self.attach_microkernels(&spec);
        let (dsteps, add_vals, helpers) = self.plane_steps(steps, adds);
        let bias_ref = bias.map(|b| self.value(b)).transpose()?;
        let out = TransposedOutSpec { batch: n, channels: cout, positions, bias: bias_ref.is_some(), steps: dsteps };
        let mut ops = vec![ct, dst];
        ops.extend(bias_ref);
        for v in add_vals {
            ops.push(self.value(v)?);
        }
        let tiles = out.tiles();
        self.step_ordered(Arc::new(out), tiles, &ops, 1, helpers, name, "TransposedOutput", 0);
        Ok(())
    }

    /// A conv's input, weights (with their values when constant: those are packed now, weights
    /// computed at run time are read in place) and optional bias.
    #[allow(clippy::type_complexity)]
    fn conv_inputs(
        &self,
        id: NodeId,
        inputs: &[Option<ValueId>],
    ) -> Result<(ValueId, ValueId, Option<Cow<'g, [f32]>>, Option<ValueId>), LowerError> {
        let x = inputs[0].ok_or_else(|| self.unsupported(id, "a missing input"))?;
        let wv = inputs.get(1).copied().flatten().ok_or_else(|| self.unsupported(id, "missing weights"))?;
        self.f32_only(id, wv)?;
        // Weights in the model file are read where they are (no copy of 100 MB of weights).
        let view_err = |e: incept_ir::tensor::TensorError| self.unsupported(id, e.to_string());
        let w = match self.konst(wv) {
            Some(Cow::Borrowed(t)) => Some(t.view::<f32>().map_err(view_err)?),
            Some(Cow::Owned(t)) => Some(Cow::Owned(t.view::<f32>().map_err(view_err)?.into_owned())),
            None => None,
        };
        let bias = inputs.get(2).copied().flatten();
        if let Some(b) = bias {
            self.f32_only(id, b)?;
        }
        Ok((x, wv, w, bias))
    }

    /// ConvTranspose as a GEMM that gives every input pixel's contribution to each kernel tap
    /// (`cols = W^T X` per image and group), then a gather of those columns into the output.
    pub(super) fn conv_transpose(
        &mut self,
        id: NodeId,
        c: &incept_ir::ops::ConvTranspose,
        inputs: &[Option<ValueId>],
        dst: BufRef,
    ) -> Result<(), LowerError> {
        let nr = self.tier.nr();
        let name = self.g.node(id).name.clone();
        let (x, wv, w, bias) = self.conv_inputs(id, inputs)?;
        let xs = self.shape(x)?;
        let os = self.shape(ValueId::new(id, 0))?;
        if !(3..=5).contains(&xs.len()) {
            return Err(self.unsupported(id, format!("{}-D transposed convolution", xs.len().saturating_sub(2))));
        }
        let mut c = c.clone();
        c.resolve(&xs[2..]).map_err(|e| self.unsupported(id, e.to_string()))?;
        let (n, cin, m) = (xs[0], xs[1], os[1]);
        let g = c.group;
        let (cg, mg) = (cin / g, m / g);
        let taps: usize = c.window.kernel.iter().product();
        let (gm, gn, gk) = (mg * taps, xs[2..].iter().product::<usize>(), cg);
        // A: W^T of each group, [M = (mo, ky, kx)] x [K = ci], in MR-row panels.
        let mr = self.tier.panel_rows(gm);
        let (a_ref, a) = match &w {
            Some(w) => self.pack_a(&name, g, gm, gk, mr, |gi, row, ci| w[(gi * cg + ci) * gm + row]),
            None => {
                let a = Mat {
                    rs: 1,
                    cs: gm as isize,
                    panel_stride: mr as isize,
                    batch_stride: (cg * gm) as isize,
                    batch_mod: g,
                };
                let src = self.value(wv)?;
                self.run_time_a(&name, src, a, g, gm, gk, mr)
            }
        };
        // B: the input of each image and group, packed into nr panels (a 1x1 im2col over the
        // flattened spatial dims).
        let unit = Geom { h: 1, w: gn, kh: 1, kw: 1, sh: 1, sw: 1, ph: 0, pw: 0, dh: 1, dw: 1, oh: 1, ow: gn };
        let im = Im2colSpec { batch: n * g, groups: g, c_total: cin, cin: cg, g: unit, nr: self.tier.nr(), band: None };
        let src = self.value(x)?;
        let packed_x = self.scratch(im.bytes(), &format!("{name}/packed_input"));
        let tiles = im.tiles();
        let pn = im.panels();
        self.step(Arc::new(im), tiles, &[src], &[packed_x], false, &name, "Im2col", 0);
        let b = Mat {
            rs: nr as isize,
            cs: 1,
            panel_stride: (gk * nr) as isize,
            batch_stride: (pn * gk * nr) as isize,
            batch_mod: 0,
        };
        let cols = self.scratch(n * g * gm * gn * 4, &format!("{name}/cols"));
        let spec = GemmSpec {
            m: gm,
            n: gn,
            k: gk,
            batch: n * g,
            a,
            b,
            c: Mat { rs: gn as isize, cs: 1, panel_stride: 0, batch_stride: (gm * gn) as isize, batch_mod: 0 },
            mr,
            ..self.gemm_blocking()
        };
        let spec = balanced(spec);
        let flops = spec.flops();
        let tiles = spec.tiles();
        let spec = Arc::new(spec);
        self.step_ordered(spec.clone(), tiles, &[a_ref, packed_x, cols], 2, false, &name, "ConvTranspose", flops);
        self.attach_microkernels(&spec);
        let col2im: Arc<dyn crate::codegen::KernelSpec> = if xs.len() == 5 {
            Arc::new(VolCol2ImSpec {
                planes: n * m,
                channels: m,
                v: vol_geom(&c.window, &xs, &os),
                bias: bias.is_some(),
            })
        } else {
            Arc::new(Col2ImSpec { planes: n * m, channels: m, g: geom(&c.window, &xs, &os), bias: bias.is_some() })
        };
        let mut ops = vec![cols, dst];
        if let Some(b) = bias {
            ops.push(self.value(b)?);
        }
        self.step_ordered(col2im, n * m, &ops, 1, false, &name, "Col2im", 0);
        Ok(())
    }
}

/// Packed im2col panels up to this size are built whole; bigger ones band by band (see
/// `im2col_band_rows`). Half of a 2 MiB L2 (a Zen 3 L2 is 512 KiB, but there the bands still
/// stay in L3 instead of going out to memory).
pub(super) const IM2COL_BAND_BYTES: usize = 1 << 20;

/// The most output channels of a 1x1 conv that reads its input in place (see `conv`).
const DIRECT_MAX_CHANNELS: usize = 64;

/// Bytes past the arena's last buffer that kernels may read and ignore: a 1x1 conv reading its
/// input in place reads the last row of a channel a whole panel (at most 32 floats) wide.
pub const ARENA_OVERREAD: usize = 128;

/// The output rows per band when a conv's packed panels (`problems` images and groups) are
/// bigger than `limit` bytes, or None to pack them whole; at least two bands.
fn im2col_band_rows(problems: usize, k: usize, g: &Geom, nr: usize, limit: usize) -> Option<usize> {
    let row_bytes = problems * k * g.ow * 4;
    let whole = problems * k * (g.oh * g.ow).div_ceil(nr) * nr * 4;
    if whole <= limit {
        return None;
    }
    // Eight panels of columns at least, and two such bands: InceptionV3's 17x17 convs (289
    // columns, K up to 2592) ran slower in bands of 85-153 columns (Conv__53: 5.2 -> 6.1 ms).
    let fewest = min_band_rows(g.ow, nr, 8);
    if 2 * fewest > g.oh {
        return None;
    }
    let rows = even_bands(g.oh, (limit / row_bytes).max(fewest));
    (rows < g.oh).then_some(rows)
}

/// The 3-D kernel geometry of a window op on [N, C, spatial...] (1-D to 3-D, see `Window3`).
pub(super) fn vol_geom(w: &Window, xs: &[usize], os: &[usize]) -> VolGeom {
    vol_of(&w.in3(&xs[2..], &os[2..]))
}

/// The volumetric kernels' geometry of a window.
pub(super) fn vol_of(g: &Window3) -> VolGeom {
    VolGeom { dims: g.input, kernel: g.kernel, strides: g.strides, pads: g.pads, dilations: g.dilations, out: g.output }
}

/// The 2-D kernel geometry of a window op: its last two spatial dims (a 1-D op has height 1).
pub(super) fn geom(w: &Window, xs: &[usize], os: &[usize]) -> Geom {
    let g = w.in3(&xs[2..], &os[2..]);
    Geom {
        h: g.input[1],
        w: g.input[2],
        kh: g.kernel[1],
        kw: g.kernel[2],
        sh: g.strides[1],
        sw: g.strides[2],
        ph: g.pads[1],
        pw: g.pads[2],
        dh: g.dilations[1],
        dw: g.dilations[2],
        oh: g.output[1],
        ow: g.output[2],
    }
}

/// The share of the microkernels' columns a bf16 implicit conv's rows must fill: each output row
/// is one GEMM problem, cut into panels of `nr` columns and a half-width one for a remainder of
/// up to `nr / 2`, where im2col panels run across rows (ResNet50's 56x56 3x3 convs, rows of 56
/// in 64 columns: 0.64 ms through im2col, 0.57 ms implicit; its 14x14 ones, 14 in 16: 0.60 and
/// 0.64 ms; InceptionV3, with rows of 35 in 48 and 17 in 32, 30.5 -> 33.6 ms all implicit).
pub(super) const IMPLICIT_MIN_FILL: f64 = 0.85;

/// The share of lanes rows of `w` columns fill in panels of `nr` (a remainder of up to `nr / 2`
/// in a half panel). A row that only a half panel covers counts against a whole one: the
/// half-width microkernel keeps half the accumulators per load, so such rows stay with im2col
/// (ResNet50's 14x14 3x3 convs: 19.6 -> 19.1 ms).
/// How an implicit conv runs: `flat`, one problem over the planes' rows end to end (else a
/// problem per output row); `phase`, a stride-2 conv as a stride-1 one over the input's phases.
#[derive(Clone, Copy, Debug)]
struct Implicit {
    flat: bool,
    phase: bool,
}

/// The most input channels a stride-2 conv has to run over its phases (a stem's 3 or 4; with
/// more, the window's growth costs more than its im2col).
const PHASE_MAX_CHANNELS: usize = 4;

fn row_fill(w: usize, nr: usize) -> f64 {
    let rem = w % nr;
    let tail = match rem {
        0 => 0,
        r if r <= nr / 2 && w > nr / 2 => nr / 2,
        _ => nr,
    };
    w as f64 / (w - rem + tail) as f64
}
