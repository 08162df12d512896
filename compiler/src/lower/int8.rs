//! QLinearConv on the AVX-512 int8 kernels: ungrouped convs on the VNNI tile
//! (`codegen/int8.rs`), depthwise ones on the plane kernel (`codegen/int8_depthwise.rs`). Both
//! take constant weights, scales, zero points and bias, folded at compile time.

use std::sync::Arc;

use incept_ir::graph::{NodeId, ValueId};
use incept_ir::ops::Op;
use incept_ir::ops::conv::Window;
use incept_ir::ops::quant::qrange;
use incept_ir::{DType, Tensor};

use super::conv::geom;
use super::{BufRef, LowerError, Lowerer};
use crate::codegen::Tier;
use crate::codegen::int8::{Im2colBytesSpec, Int8GemmSpec, Int8Isa, MR_INT8, QuadIm2colSpec};
use crate::codegen::int8_columns::column_work;
use crate::codegen::int8_depthwise::{PlaneOp, QDepthwiseSpec};
use crate::codegen::int8_planes::{PlanesCopyOutSpec, QuadPlanes, QuadPlanesSpec};
use crate::codegen::kernels::conv::Geom;

/// A QLinearConv's operands when everything but the input is constant.
struct QConv {
    x: ValueId,
    x_shape: Vec<usize>,
    y_shape: Vec<usize>,
    x_type: DType,
    y_type: DType,
    x_zero: i32,
    weights: Tensor,
    /// One value, or one per output channel.
    w_zero: Vec<i64>,
    /// The requantising multiplier per output channel, `(x_scale * w_scale) / y_scale` as the
    /// reference computes it.
    mult: Vec<f32>,
    y_zero: i32,
    bias: Vec<i64>,
    /// The output's range (narrowed by a fused Relu or Clip).
    range: (i32, i32),
}

impl QConv {
    /// The low and high output bounds less the zero point (f32) and the zero point (i32 bits):
    /// the kernels' `consts`.
    fn consts(&self) -> Vec<u8> {
        let (lo, hi) = self.range;
        [((lo - self.y_zero) as f32).to_bits(), ((hi - self.y_zero) as f32).to_bits(), self.y_zero as u32]
            .iter()
            .flat_map(|b| b.to_le_bytes())
            .collect()
    }
}

impl<'g> Lowerer<'g> {
    /// A constant input as a tensor, or None (absent inputs are None too).
    fn const_input(&self, id: NodeId, i: usize) -> Option<Tensor> {
        self.in_val(id, i).and_then(|v| self.konst(v)).map(|t| t.into_owned())
    }

    /// The QLinearConv's operands, or None when the input or output is not 8-bit, the conv is
    /// not 1-D or 2-D, or any operand but the input is computed at run time.
    fn qconv(&self, id: NodeId) -> Result<Option<QConv>, LowerError> {
        let (Some(x), Some(weights)) = (self.in_val(id, 0), self.const_input(id, 3)) else { return Ok(None) };
        let out = ValueId::new(id, 0);
        let (x_shape, y_shape) = (self.shape(x)?, self.shape(out)?);
        let (x_type, y_type) = (self.g.ty(x).dtype, self.g.ty(out).dtype);
        let int8 = |d: DType| matches!(d, DType::U8 | DType::I8);
        if !(3..=4).contains(&x_shape.len()) || !int8(x_type) || !int8(y_type) || !int8(weights.dtype()) {
            return Ok(None);
        }
        let params: Vec<Option<Tensor>> = (0..9).map(|i| self.const_input(id, i)).collect();
        let present = |i: usize| self.in_val(id, i).is_some();
        // Every scale, zero point and the bias constant (or absent where optional).
        if [1, 4, 6, 7].iter().any(|&i| params[i].is_none())
            || [2, 5, 8].iter().any(|&i| present(i) && params[i].is_none())
        {
            return Ok(None);
        }
        let err = |e: incept_ir::tensor::TensorError| self.unsupported(id, e.to_string());
        let ints = |i: usize| params[i].as_ref().map(|t| t.to_i64s()).transpose();
        let floats = |i: usize| params[i].as_ref().map(|t| t.view::<f32>().map(|v| v.into_owned())).transpose();
        let m = y_shape[1];
        let x_scale = floats(1).map_err(err)?.unwrap_or_default()[0];
        let w_scale = floats(4).map_err(err)?.unwrap_or_default();
        let y_scale = floats(6).map_err(err)?.unwrap_or_default()[0];
        let mult = (0..m).map(|r| (x_scale * w_scale[if w_scale.len() == 1 { 0 } else { r }]) / y_scale).collect();
        let range = match &self.g.node(id).op {
            Op::QLinearConv(q) => q.out_range(y_type),
            _ => qrange(y_type),
        };
        let Some(range) = range else { return Ok(None) };
        Ok(Some(QConv {
            x,
            x_shape,
            y_shape,
            x_type,
            y_type,
            x_zero: ints(2).map_err(err)?.map_or(0, |z| z[0]) as i32,
            weights,
            w_zero: ints(5).map_err(err)?.unwrap_or_else(|| vec![0]),
            mult,
            y_zero: ints(7).map_err(err)?.unwrap_or_default()[0] as i32,
            bias: ints(8).map_err(err)?.unwrap_or_else(|| vec![0; m]),
            range,
        }))
    }

    /// The per-channel weights' constants, shared by both kernels: the multipliers and the
    /// requantisation bounds.
    fn requant_weights(&mut self, q: &QConv, name: &str) -> (BufRef, BufRef) {
        let mut mult = q.mult.clone();
        mult.resize(q.mult.len().div_ceil(MR_INT8) * MR_INT8, 0.0);
        (self.weight_f32(&mult, &format!("{name}.multipliers")), self.weight(&q.consts(), &format!("{name}.requant")))
    }

    /// QLinearConv on an AVX-512 int8 kernel where one applies (see the module doc); false
    /// (nothing emitted) where none does.
    pub(super) fn int8_conv(&mut self, id: NodeId, window: &Window, groups: usize) -> Result<bool, LowerError> {
        let Some(q) = self.qconv(id)? else { return Ok(false) };
        let c = q.x_shape[1];
        if let (1, Some(isa)) = (groups, self.int8_isa) {
            let g = geom(window, &q.x_shape, &q.y_shape);
            return self.vnni_conv(id, g, &q, isa);
        }
        if groups == c && groups > 1 && matches!(self.tier, Tier::Avx2 | Tier::Avx512) {
            return self.depthwise_conv(id, window, &q);
        }
        Ok(false)
    }

    /// An ungrouped conv with i8 weights of zero point 0 on the VNNI tile. The input goes into
    /// quad panels, the weights into quad panels at compile time, and the zero points into a
    /// per-row bias.
    fn vnni_conv(&mut self, id: NodeId, g: Geom, q: &QConv, isa: Int8Isa) -> Result<bool, LowerError> {
        if q.weights.dtype() != DType::I8 || q.w_zero.iter().any(|&z| z != 0) {
            return Ok(false);
        }
        let (xs_shape, os) = (&q.x_shape, &q.y_shape);
        let m = os[1];
        let flip = q.x_type == DType::I8;
        let shift = if flip { 128 } else { 0 };
        let quads_in = QuadIm2colSpec {
            n: xs_shape[0],
            c: xs_shape[1],
            g,
            flip,
            // The zero point as the tile sees it: padding then adds nothing.
            fill: (q.x_zero + shift) as u8,
            avx2: matches!(self.tier, Tier::Avx2 | Tier::Avx512),
        };
        let k = quads_in.k();
        let w: Vec<i8> = q.weights.view::<i8>().map_err(|e| self.unsupported(id, e.to_string()))?.into_owned();
        let rows = m.div_ceil(MR_INT8) * MR_INT8;
        // The zero points' correction: sum (x - zx) w = sum x' w - (zx + shift) sum w.
        let mut bias: Vec<i32> = vec![0; rows];
        for r in 0..m {
            let sum_w: i32 = w[r * k..(r + 1) * k].iter().map(|&v| v as i32).sum();
            bias[r] = (q.bias[r] as i32).wrapping_sub((q.x_zero + shift).wrapping_mul(sum_w));
        }
        let name = self.g.node(id).name.clone();
        let bias_bytes: Vec<u8> = bias.iter().flat_map(|v| v.to_le_bytes()).collect();
        let bias_ref = self.weight(&bias_bytes, &format!("{name}.bias"));
        let (mult_ref, consts_ref) = self.requant_weights(q, &name);
        let src = self.value(q.x)?;
        let dst = self.define(ValueId::new(id, 0))?;
        let signed = q.y_type == DType::I8;
        let planes = QuadPlanes { n: quads_in.n, c: quads_in.c, g: quads_in.g.clone(), flip, fill: quads_in.fill };
        // Over quad planes, unless their dropped columns cost more than the byte matrix and its
        // packing (taken as 15% of the GEMM: 13% measured on ResNet50's 14x14 3x3 convs, whose
        // planes then win, 224 columns' work against 200): a 7x7 map's 3x3 conv is 63 padded
        // columns (64 columns' work) against 49 positions (32 + 16 + a column).
        let planes_pay = self
            .int8_planes
            .unwrap_or_else(|| column_work(planes.cols()) * 100 <= column_work(quads_in.g.oh * quads_in.g.ow) * 115);
        if isa == Int8Isa::Avx512Vnni && QuadPlanes::applies(&quads_in.g) && planes.addressable() && planes_pay {
            let packed = isa.pack_a(&planes.reorder_weights(&w, m), m, planes.walk().quads() * 4);
            let a_ref = self.weight(&packed, &format!("{name}.packed"));
            self.planes_conv(&name, planes, src, dst, m, signed, [a_ref, bias_ref, mult_ref, consts_ref]);
            return Ok(true);
        }
        let packed = isa.pack_a(&w, m, k);
        let a_ref = self.weight(&packed, &format!("{name}.packed"));
        let consts = [a_ref, bias_ref, mult_ref, consts_ref];
        // A windowed or strided conv: row copies (or strided gathers) into a byte matrix first,
        // which the quad packing then interleaves as it does a pointwise conv's input.
        let windowed = (quads_in.g.kh, quads_in.g.kw, quads_in.g.ph, quads_in.g.pw) != (1, 1, 0, 0);
        let strided = (quads_in.g.sh, quads_in.g.sw) != (1, 1);
        let npos = quads_in.g.oh * quads_in.g.ow;
        if !(windowed || strided) {
            let panels = self.scratch(quads_in.n * quads_in.image_bytes(), &format!("{name}/quads"));
            let band = Band { src, panels, dst, cols: npos };
            self.quads_and_gemm(&name, quads_in, band, m, signed, isa, consts);
            return Ok(true);
        }
        // Band by band of output rows where the byte matrix would not stay in L2: each band's
        // matrix and panels are packed and multiplied before the next band overwrites them.
        let (img, g) = (quads_in.n, quads_in.g.clone());
        let bands = int8_bands(img * k * g.ow, &g, self.band_bytes / 2);
        let most = bands.iter().map(|(a, b)| b - a).max().unwrap_or(g.oh) * g.ow;
        let matrix = self.scratch(img * k * most, &format!("{name}/im2col"));
        let pointwise = |n_pos: usize| Geom {
            h: 1,
            w: n_pos,
            oh: 1,
            ow: n_pos,
            kh: 1,
            kw: 1,
            sh: 1,
            sw: 1,
            ph: 0,
            pw: 0,
            dh: 1,
            dw: 1,
        };
        let biggest = QuadIm2colSpec { c: k, g: pointwise(most), ..quads_in.clone() };
        let panels = self.scratch(img * biggest.image_bytes(), &format!("{name}/quads"));
        for (oy0, oy1) in bands {
            // The band reads the input from row `start` on, as a conv of its own: rows past the
            // input's end and above its start are padding.
            let first = (oy0 * g.sh) as i64 - g.ph as i64;
            let start = first.max(0) as usize;
            let gb = Geom { h: g.h - start.min(g.h), oh: oy1 - oy0, ph: (start as i64 - first) as usize, ..g.clone() };
            let rows = Im2colBytesSpec {
                n: img,
                c: quads_in.c,
                g: gb,
                plane: g.h * g.w,
                // Raw bytes: the packing flips them all.
                fill: q.x_zero as u8,
                avx512: self.tier == Tier::Avx512,
            };
            let band_src = BufRef { offset: src.offset + start * g.w, ..src };
            let tiles = rows.tiles();
            let taps: Vec<usize> = rows.tap_kernels().into_iter().map(|k| self.kernel(Arc::new(k))).collect();
            self.step(Arc::new(rows), tiles, &[band_src], &[matrix], false, &name, "Im2colBytes", 0);
            if let Some(step) = self.out.steps.last_mut() {
                step.operands.extend(taps.into_iter().map(super::LOperand::Kernel));
            }
            // The matrix as a pointwise conv's input: k channels of the band's positions.
            let n_pos = (oy1 - oy0) * g.ow;
            let spec = QuadIm2colSpec { c: k, g: pointwise(n_pos), ..quads_in.clone() };
            let band = Band { src: matrix, panels, dst: BufRef { offset: dst.offset + oy0 * g.ow, ..dst }, cols: npos };
            self.quads_and_gemm(&name, spec, band, m, signed, isa, consts);
        }
        Ok(true)
    }

    /// A stride-1 windowed conv as an implicit GEMM (`codegen/int8_planes.rs`): the input into
    /// quad planes, the tile over them into rows of padded positions, and those rows' first `ow`
    /// columns out to Y.
    #[allow(clippy::too_many_arguments)]
    fn planes_conv(
        &mut self,
        name: &str,
        planes: QuadPlanes,
        src: BufRef,
        dst: BufRef,
        m: usize,
        signed: bool,
        [a_ref, bias_ref, mult_ref, consts_ref]: [BufRef; 4],
    ) {
        let (walk, images, cols, g) = (planes.walk(), planes.n, planes.cols(), planes.g.clone());
        let quad_planes = self.scratch(images * walk.image_bytes(), &format!("{name}/planes"));
        let padded = self.scratch(images * m * cols, &format!("{name}/padded"));
        let pack = QuadPlanesSpec { q: planes.clone() };
        let kernels: Vec<usize> = planes.kernels().into_iter().map(|k| self.kernel(Arc::new(k))).collect();
        self.step(Arc::new(pack.clone()), pack.tiles(), &[src], &[quad_planes], false, name, "QuadPlanes", 0);
        if let Some(step) = self.out.steps.last_mut() {
            step.operands.extend(kernels.into_iter().map(super::LOperand::Kernel));
        }
        // By rows where the weights outweigh the planes (each row panel then reads the planes
        // from cache; the weights stream once).
        let weights = m.div_ceil(MR_INT8) * MR_INT8 * walk.quads() * 4;
        let gemm = Int8GemmSpec {
            images,
            m,
            n: cols,
            quads: walk.quads(),
            ldc: cols,
            signed,
            by_rows: weights > walk.image_bytes(),
            isa: Int8Isa::Avx512Vnni,
            walk: Some(walk),
        };
        // The conv's work, not the tile's (which includes the dropped columns).
        let flops = 2 * (images * m * g.oh * g.ow * planes.c * g.kh * g.kw) as u64;
        let tiles = gemm.tiles();
        let tile_kernels: Vec<usize> = gemm.microkernels().into_iter().map(|k| self.kernel(Arc::new(k))).collect();
        let reads = [a_ref, quad_planes, bias_ref, mult_ref, consts_ref];
        self.step(Arc::new(gemm), tiles, &reads, &[padded], false, name, "QLinearConv", flops);
        if let Some(step) = self.out.steps.last_mut() {
            step.operands.extend(tile_kernels.into_iter().map(super::LOperand::Kernel));
        }
        let out = PlanesCopyOutSpec { images, m, oh: g.oh, ow: g.ow, wp: planes.wp() };
        let copy = self.kernel(Arc::new(out.kernel()));
        let tiles = out.tiles();
        self.step(Arc::new(out), tiles, &[padded], &[dst], false, name, "PlanesCopyOut", 0);
        if let Some(step) = self.out.steps.last_mut() {
            step.operands.push(super::LOperand::Kernel(copy));
        }
    }

    /// The quad packing of `band.src` into `band.panels`, then the GEMM into `band.dst` (rows of
    /// C `band.cols` apart): the steps every conv on the int8 tile ends with.
    #[allow(clippy::too_many_arguments)]
    fn quads_and_gemm(
        &mut self,
        name: &str,
        spec: QuadIm2colSpec,
        band: Band,
        m: usize,
        signed: bool,
        isa: Int8Isa,
        [a_ref, bias_ref, mult_ref, consts_ref]: [BufRef; 4],
    ) {
        let (n, quads) = (spec.g.oh * spec.g.ow, spec.quads());
        let gemm = Int8GemmSpec {
            images: spec.n,
            m,
            n,
            quads,
            ldc: band.cols,
            signed,
            by_rows: Int8GemmSpec::weights_dominate(m, n, quads),
            isa,
            walk: None,
        };
        let tiles = spec.tiles();
        let interleaves: Vec<usize> = spec.quad_kernels().into_iter().map(|k| self.kernel(Arc::new(k))).collect();
        self.step(Arc::new(spec), tiles, &[band.src], &[band.panels], false, name, "QuadIm2col", 0);
        if let Some(step) = self.out.steps.last_mut() {
            step.operands.extend(interleaves.into_iter().map(super::LOperand::Kernel));
        }
        let (tiles, flops) = (gemm.tiles(), gemm.flops());
        let mut kernels: Vec<usize> = gemm.microkernels().into_iter().map(|k| self.kernel(Arc::new(k))).collect();
        kernels.extend(gemm.column_kernels().into_iter().map(|k| self.kernel(Arc::new(k))));
        let reads = [a_ref, band.panels, bias_ref, mult_ref, consts_ref];
        self.step(Arc::new(gemm), tiles, &reads, &[band.dst], false, name, "QLinearConv", flops);
        if let Some(step) = self.out.steps.last_mut() {
            step.operands.extend(kernels.into_iter().map(super::LOperand::Kernel));
        }
    }

    /// QLinearMatMul of one row (`[.., 1, K]` or `[K]` by constant i8 `[K, N]` of zero point 0)
    /// on the VNNI tile, as the pointwise conv it is: B transposed is the weights (N output
    /// channels of K), A the input (K channels of one position), and the one-row output is the
    /// conv's output in memory. False (nothing emitted) where it does not apply.
    pub(super) fn int8_matmul(&mut self, id: NodeId) -> Result<bool, LowerError> {
        let Some(isa) = self.int8_isa else { return Ok(false) };
        let (Some(a), Some(b)) = (self.in_val(id, 0), self.const_input(id, 3)) else { return Ok(false) };
        let out = ValueId::new(id, 0);
        let a_shape = self.shape(a)?;
        let (a_type, y_type) = (self.g.ty(a).dtype, self.g.ty(out).dtype);
        let int8 = |d: DType| matches!(d, DType::U8 | DType::I8);
        let rows: usize = a_shape[..a_shape.len().saturating_sub(1)].iter().product();
        if b.rank() != 2 || b.dtype() != DType::I8 || rows != 1 || !int8(a_type) || !int8(y_type) {
            return Ok(false);
        }
        let (k, n) = (b.shape()[0], b.shape()[1]);
        let params: Vec<Option<Tensor>> = (0..8).map(|i| self.const_input(id, i)).collect();
        let present = |i: usize| self.in_val(id, i).is_some();
        if [1, 4, 6, 7].iter().any(|&i| params[i].is_none())
            || [2, 5].iter().any(|&i| present(i) && params[i].is_none())
        {
            return Ok(false);
        }
        let err = |e: incept_ir::tensor::TensorError| self.unsupported(id, e.to_string());
        let ints = |i: usize| params[i].as_ref().map(|t| t.to_i64s()).transpose();
        let floats = |i: usize| params[i].as_ref().map(|t| t.view::<f32>().map(|v| v.into_owned())).transpose();
        let a_zero = ints(2).map_err(err)?.unwrap_or_else(|| vec![0]);
        if a_zero.len() != 1 || ints(5).map_err(err)?.unwrap_or_default().iter().any(|&z| z != 0) {
            return Ok(false);
        }
        let xs = floats(1).map_err(err)?.unwrap_or_default()[0];
        let ws = floats(4).map_err(err)?.unwrap_or_default();
        let ys = floats(6).map_err(err)?.unwrap_or_default()[0];
        let bv: Vec<i8> = b.view::<i8>().map_err(err)?.into_owned();
        let transposed: Vec<i8> = (0..n * k).map(|i| bv[(i % k) * n + i / k]).collect();
        let q = QConv {
            x: a,
            x_shape: vec![1, k, 1, 1],
            y_shape: vec![1, n, 1, 1],
            x_type: a_type,
            y_type,
            x_zero: a_zero[0] as i32,
            weights: Tensor::from_vec(vec![n, k], transposed),
            w_zero: vec![0],
            mult: (0..n).map(|j| (xs * ws[if ws.len() == 1 { 0 } else { j }]) / ys).collect(),
            y_zero: ints(7).map_err(err)?.unwrap_or_default()[0] as i32,
            bias: vec![0; n],
            range: qrange(y_type).expect("u8 or i8"),
        };
        let g = Geom { h: 1, w: 1, oh: 1, ow: 1, kh: 1, kw: 1, sh: 1, sw: 1, ph: 0, pw: 0, dh: 1, dw: 1 };
        self.vnni_conv(id, g, &q, isa)
    }

    /// A depthwise conv (one input channel per group, any channel multiplier, any weight zero
    /// point) on the AVX-512 or AVX2 plane kernel, when its planes fit the stack.
    fn depthwise_conv(&mut self, id: NodeId, window: &Window, q: &QConv) -> Result<bool, LowerError> {
        let (c, m) = (q.x_shape[1], q.y_shape[1]);
        let flip = q.x_type == DType::I8;
        let shift = if flip { 128 } else { 0 };
        let spec = QDepthwiseSpec {
            op: PlaneOp::Conv,
            n: q.x_shape[0],
            c,
            mult: m / c,
            g: geom(window, &q.x_shape, &q.y_shape),
            flip,
            fill: (q.x_zero + shift) as u8,
            avx2: self.tier == Tier::Avx2,
            signed: q.y_type == DType::I8,
        };
        if !spec.fits() || m % c != 0 {
            return Ok(false);
        }
        let taps = spec.g.kh * spec.g.kw;
        let w = q.weights.to_i64s().map_err(|e| self.unsupported(id, e.to_string()))?;
        // The taps: weights less their zero point; the bias: the reference's less (zx + shift)
        // times the taps' sum (see `codegen/int8_depthwise.rs`).
        let mut tap_bytes = Vec::with_capacity(m * taps * 4);
        let mut bias = vec![0i32; m];
        for oc in 0..m {
            let zw = q.w_zero[if q.w_zero.len() == 1 { 0 } else { oc }];
            let row: Vec<i32> = w[oc * taps..(oc + 1) * taps].iter().map(|&v| (v - zw) as i32).collect();
            let sum: i32 = row.iter().sum();
            bias[oc] = (q.bias[oc] as i32).wrapping_sub((q.x_zero + shift).wrapping_mul(sum));
            tap_bytes.extend(row.iter().flat_map(|v| v.to_le_bytes()));
        }
        let name = self.g.node(id).name.clone();
        let taps_ref = self.weight(&tap_bytes, &format!("{name}.taps"));
        let bias_bytes: Vec<u8> = bias.iter().flat_map(|v| v.to_le_bytes()).collect();
        let bias_ref = self.weight(&bias_bytes, &format!("{name}.bias"));
        let (mult_ref, consts_ref) = self.requant_weights(q, &name);
        let src = self.value(q.x)?;
        let dst = self.define(ValueId::new(id, 0))?;
        let flops = spec.flops();
        self.plane_step(spec, &[src, taps_ref, bias_ref, mult_ref, consts_ref], dst, &name, "QLinearConv", flops);
        Ok(true)
    }

    /// The step of a plane op (see `QDepthwiseSpec`) with its machine-code kernels.
    pub(super) fn plane_step(
        &mut self,
        spec: QDepthwiseSpec,
        reads: &[BufRef],
        dst: BufRef,
        name: &str,
        op: &str,
        flops: u64,
    ) {
        let mut kernels = vec![self.kernel(Arc::new(spec.kernel())), self.kernel(Arc::new(spec.copy_kernel()))];
        if let Some(f) = spec.fill_kernel() {
            kernels.push(self.kernel(Arc::new(f)));
        }
        let tiles = spec.tiles();
        self.step(Arc::new(spec), tiles, reads, &[dst], false, name, op, flops);
        if let Some(step) = self.out.steps.last_mut() {
            step.operands.extend(kernels.into_iter().map(super::LOperand::Kernel));
        }
    }
}

/// Where one band of an int8 conv reads and writes.
struct Band {
    src: BufRef,
    panels: BufRef,
    dst: BufRef,
    /// Columns of the output's rows (all positions, not the band's).
    cols: usize,
}

/// Output row bands `[first, end)` for a byte matrix of `row_bytes` per output row: one band
/// when the whole matrix fits `limit`, else bands as even as they come of at most `limit`
/// bytes, each at least eight 32-position panels wide (where the map has rows for two such).
fn int8_bands(row_bytes: usize, g: &Geom, limit: usize) -> Vec<(usize, usize)> {
    if row_bytes * g.oh <= limit || g.oh < 2 {
        return vec![(0, g.oh)];
    }
    let fewest = 256usize.div_ceil(g.ow).min(g.oh.div_ceil(2));
    let rows = (limit / row_bytes.max(1)).max(fewest).max(1);
    let count = g.oh.div_ceil(rows);
    (0..count).map(|b| (b * g.oh / count, (b + 1) * g.oh / count)).collect()
}
