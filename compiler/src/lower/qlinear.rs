//! ONNX Runtime's QOperator ops, MaxPool of integers and DynamicQuantizeLinear: scalar steps
//! (see `codegen/kernels/qlinear.rs`). Their scales and zero points must be constants: the
//! tables and constants the kernels read are computed from them at compile time, with the
//! reference's own arithmetic.

use std::sync::Arc;

use incept_ir::graph::{NodeId, ValueId};
use incept_ir::ops::conv::Window;
use incept_ir::ops::norm_axis;
use incept_ir::ops::qlinear::{QBinaryKind, QLinearBinary, QLinearLookup, QLinearSoftmax, QParams};
use incept_ir::ops::quant::{qrange, quantize};
use incept_ir::{DType, Op};

use super::{LowerError, Lowerer};
use crate::codegen::Tier;
use crate::codegen::int8_depthwise::{PlaneOp, QDepthwiseSpec};
use crate::codegen::int8_elementwise::{
    QBinaryKernel, QBinaryOp, QBinaryRows, QBinarySpec, RequantKernel, RequantRowsSpec,
};
use crate::codegen::kernels::nd::broadcast_strides;
use crate::codegen::kernels::qlinear::{
    DynQuantSpec, PairTableSpec, QGlobalPoolSpec, QPoolSpec, QSoftmaxSpec, Span, TableSpec,
};

/// The integer behind table index (byte) `b` of a u8 or i8 tensor.
fn byte_value(b: usize, dtype: DType) -> i32 {
    if dtype == DType::I8 { b as u8 as i8 as i32 } else { b as i32 }
}

impl<'g> Lowerer<'g> {
    /// A per-tensor scale and zero point that must be constants (an absent zero point is 0).
    fn const_params(&self, id: NodeId, scale: usize, zero: Option<usize>) -> Result<(f32, i32), LowerError> {
        let refuse =
            |s: &Self| s.unsupported(id, "scales or zero points computed at run time (the JIT needs them constant)");
        let sv = self.in_val(id, scale).ok_or_else(|| self.unsupported(id, "a missing scale"))?;
        let s = self.konst(sv).ok_or_else(|| refuse(self))?;
        let s = s.view::<f32>().map_err(|e| self.unsupported(id, e.to_string()))?[0];
        let z = match zero.and_then(|z| self.in_val(id, z)) {
            Some(zv) => {
                let z = self.konst(zv).ok_or_else(|| refuse(self))?;
                z.to_i64s().map_err(|e| self.unsupported(id, e.to_string()))?[0] as i32
            }
            None => 0,
        };
        Ok((s, z))
    }

    fn range_of(&self, id: NodeId, dtype: DType) -> Result<(i32, i32), LowerError> {
        qrange(dtype).ok_or_else(|| self.unsupported(id, format!("quantized values of type {dtype}")))
    }

    /// QLinearSigmoid and QLinearLeakyRelu: a 256-byte table.
    pub(super) fn qlinear_lookup(&mut self, id: NodeId, op: &QLinearLookup) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
        let dtype = self.g.ty(x).dtype;
        let ((xs, xz), (ys, yz)) = (self.const_params(id, 1, Some(2))?, self.const_params(id, 3, Some(4))?);
        let r = self.range_of(id, dtype)?;
        let table: Vec<u8> =
            (0..256).map(|b| quantize(op.apply(xs * (byte_value(b, dtype) - xz) as f32), ys, yz, r) as u8).collect();
        let n: usize = self.shape(x)?.iter().product();
        self.define(ValueId::new(id, 0))?;
        self.table_step(id, x, &table, TableSpec { outer: 1, chunk: n, total: n, offset: 0 }, &name)
    }

    fn table_step(
        &mut self,
        id: NodeId,
        x: ValueId,
        table: &[u8],
        spec: TableSpec,
        name: &str,
    ) -> Result<(), LowerError> {
        let t = self.weight(table, &format!("{name}.table"));
        let src = self.value(x)?;
        let dst = self.value(ValueId::new(id, 0))?;
        let tiles = spec.tiles();
        self.step(Arc::new(spec), tiles, &[src, t], &[dst], false, name, self.g.node(id).op.name(), 0);
        Ok(())
    }

    /// QLinearConcat: each input through its own requantising table into its place.
    pub(super) fn qlinear_concat(&mut self, id: NodeId, axis: i64) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let out = ValueId::new(id, 0);
        let os = self.shape(out)?;
        let dtype = self.g.ty(out).dtype;
        let ax = norm_axis(axis, os.len()).map_err(|e| self.unsupported(id, e.to_string()))?;
        let (ys, yz) = self.const_params(id, 0, Some(1))?;
        let r = self.range_of(id, dtype)?;
        self.define(out)?;
        let outer: usize = os[..ax].iter().product();
        let total: usize = os[ax..].iter().product();
        let mut offset = 0;
        let inputs = self.g.node(id).inputs().len();
        for k in 0..(inputs - 2) / 3 {
            let x = self.in_val(id, 2 + 3 * k).ok_or_else(|| self.unsupported(id, "a missing input"))?;
            let (xs, xz) = self.const_params(id, 3 + 3 * k, Some(4 + 3 * k))?;
            let chunk: usize = self.shape(x)?[ax..].iter().product();
            if self.tier == Tier::Avx512 {
                let consts: Vec<u8> = [xs, ys, yz as f32, r.0 as f32, r.1 as f32]
                    .iter()
                    .map(|f| f.to_bits())
                    .chain([xz as u32])
                    .flat_map(|v| v.to_le_bytes())
                    .collect();
                let c = self.weight(&consts, &format!("{name}.consts{k}"));
                let kernel = RequantKernel { signed: dtype == DType::I8 };
                let spec = RequantRowsSpec { outer, chunk, total, offset, kernel: kernel.clone() };
                let (src, dst) = (self.value(x)?, self.value(out)?);
                let kr = self.kernel(Arc::new(kernel));
                let tiles = spec.tiles();
                self.step(Arc::new(spec), tiles, &[src, c], &[dst], false, &name, self.g.node(id).op.name(), 0);
                if let Some(step) = self.out.steps.last_mut() {
                    step.operands.push(super::LOperand::Kernel(kr));
                }
                offset += chunk;
                continue;
            }
            let table: Vec<u8> =
                (0..256).map(|b| quantize(xs * (byte_value(b, dtype) - xz) as f32, ys, yz, r) as u8).collect();
            self.table_step(id, x, &table, TableSpec { outer, chunk, total, offset }, &name)?;
            offset += chunk;
        }
        Ok(())
    }

    /// QLinearAdd and QLinearMul: a 256 x 256 table of outputs by input pair.
    pub(super) fn qlinear_binary(&mut self, id: NodeId, op: &QLinearBinary) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let missing = |s: &Self| s.unsupported(id, "a missing input");
        let (a, b) =
            (self.in_val(id, 0).ok_or_else(|| missing(self))?, self.in_val(id, 3).ok_or_else(|| missing(self))?);
        let out = ValueId::new(id, 0);
        let dtype = self.g.ty(out).dtype;
        let (as_, bs, os) = (self.shape(a)?, self.shape(b)?, self.shape(out)?);
        let q = QParams {
            a: self.const_params(id, 1, Some(2))?,
            b: self.const_params(id, 4, Some(5))?,
            c: self.const_params(id, 6, Some(7))?,
            range: self.range_of(id, dtype)?,
        };
        let swap = QLinearBinary::swaps(&as_, &bs, &os);
        let (a_strides, b_strides) = (broadcast_strides(&as_, &os), broadcast_strides(&bs, &os));
        if matches!(self.tier, Tier::Avx2 | Tier::Avx512)
            && let Some(rows) = QBinaryRows::of(&os, &a_strides, &b_strides)
        {
            let kernel = QBinaryKernel {
                op: match op.kind {
                    QBinaryKind::Add => QBinaryOp::Add { swap },
                    QBinaryKind::Mul => QBinaryOp::Mul,
                },
                signed: dtype == DType::I8,
                a_scalar: rows.a_scalar,
                b_scalar: rows.b_scalar,
                avx2: self.tier == Tier::Avx2,
            };
            let (ra, rb, fixed) = q.add_coefficients();
            let floats = [ra, rb, fixed, q.mul_multiplier(), q.c.1 as f32, q.range.0 as f32, q.range.1 as f32];
            let consts: Vec<u8> = floats
                .iter()
                .map(|f| f.to_bits())
                .chain([q.a.1 as u32, q.b.1 as u32])
                .flat_map(|v| v.to_le_bytes())
                .collect();
            let c = self.weight(&consts, &format!("{name}.consts"));
            let (sa, sb) = (self.value(a)?, self.value(b)?);
            let dst = self.define(out)?;
            let k = self.kernel(Arc::new(kernel.clone()));
            let spec = QBinarySpec { rows, kernel };
            let tiles = spec.rows.tiles();
            self.step(Arc::new(spec), tiles, &[sa, sb, c], &[dst], false, &name, op_name(self, id), 0);
            if let Some(step) = self.out.steps.last_mut() {
                step.operands.push(super::LOperand::Kernel(k));
            }
            return Ok(());
        }
        let table: Vec<u8> = (0..65536)
            .map(|i| op.value(byte_value(i / 256, dtype), byte_value(i % 256, dtype), &q, swap) as u8)
            .collect();
        let t = self.weight(&table, &format!("{name}.table"));
        let spec = PairTableSpec { a_strides, b_strides, dims: os };
        let (sa, sb) = (self.value(a)?, self.value(b)?);
        let dst = self.define(out)?;
        let tiles = spec.tiles();
        self.step(Arc::new(spec), tiles, &[sa, sb, t], &[dst], false, &name, op_name(self, id), 0);
        Ok(())
    }

    /// QLinearGlobalAveragePool, and QLinearAveragePool whose window is the whole unpadded input.
    pub(super) fn qlinear_global_pool(&mut self, id: NodeId, channels_last: bool) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
        let xs_shape = self.shape(x)?;
        let dtype = self.g.ty(x).dtype;
        let ((xs, xz), (ys, yz)) = (self.const_params(id, 1, Some(2))?, self.const_params(id, 3, Some(4))?);
        let c = if channels_last { xs_shape[xs_shape.len() - 1] } else { xs_shape[1] };
        let s: usize = xs_shape.iter().product::<usize>() / (xs_shape[0] * c).max(1);
        // The reference's scale: xs / (ys * S), in f32.
        let scale = xs / (ys * s as f32);
        self.range_of(id, dtype)?;
        let spec = QGlobalPoolSpec { n: xs_shape[0], c, s, channels_last, dtype, x_zero: xz, scale, y_zero: yz };
        let src = self.value(x)?;
        let dst = self.define(ValueId::new(id, 0))?;
        let tiles = spec.tiles();
        self.step(Arc::new(spec), tiles, &[src], &[dst], false, &name, op_name(self, id), 0);
        Ok(())
    }

    /// QLinearAveragePool (channel-first, 1-D or 2-D), or MaxPool of u8/i8 (`max`).
    pub(super) fn qlinear_pool(
        &mut self,
        id: NodeId,
        window: &Window,
        max: bool,
        count_include_pad: bool,
        channels_last: bool,
    ) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
        let out = ValueId::new(id, 0);
        let (xs_shape, os) = (self.shape(x)?, self.shape(out)?);
        let dtype = self.g.ty(x).dtype;
        if channels_last {
            return Err(self.unsupported(id, "a channels-last QLinearAveragePool"));
        }
        if !(3..=4).contains(&xs_shape.len()) || window.dilations.iter().any(|&d| d != 1) {
            return Err(self.unsupported(id, "an integer pool other than 1-D or 2-D without dilations"));
        }
        if !max && window.kernel == xs_shape[2..] && window.pads.iter().all(|&p| p == 0) {
            return self.qlinear_global_pool(id, false);
        }
        let w3 = window.in3(&xs_shape[2..], &os[2..]);
        let span = |i: usize| Span {
            input: w3.input[i],
            output: w3.output[i],
            kernel: w3.kernel[i],
            stride: w3.strides[i],
            dilation: w3.dilations[i],
            pad: w3.pads[i],
            end_pad: w3.ends[i],
        };
        let ((xs, xz), (ys, yz)) = if max {
            ((1.0, 0), (1.0, 0))
        } else {
            (self.const_params(id, 1, Some(2))?, self.const_params(id, 3, Some(4))?)
        };
        let range = self.range_of(id, dtype)?;
        if matches!(self.tier, Tier::Avx2 | Tier::Avx512)
            && self.plane_pool(id, window, max, ((xs, xz), (ys, yz)), range)?
        {
            return Ok(());
        }
        let spec = QPoolSpec {
            planes: xs_shape[0] * xs_shape[1],
            h: span(1),
            w: span(2),
            max,
            count_include_pad,
            dtype,
            y_scale: ys,
            y_zero: yz,
        };
        let mut reads = vec![self.value(x)?];
        if !max {
            let deq: Vec<f32> = (0..256).map(|b| xs * (byte_value(b, dtype) - xz) as f32).collect();
            reads.push(self.weight_f32(&deq, &format!("{name}.dequantized")));
        }
        let dst = self.define(out)?;
        let tiles = spec.tiles();
        self.step(Arc::new(spec), tiles, &reads, &[dst], false, &name, op_name(self, id), 0);
        Ok(())
    }

    /// An integer max pool or QLinearAveragePool on the AVX-512 or AVX2 plane kernel (see
    /// `codegen/int8_depthwise.rs`) when its planes fit the stack; false (nothing emitted)
    /// otherwise.
    fn plane_pool(
        &mut self,
        id: NodeId,
        window: &Window,
        max: bool,
        ((xs, xz), (ys, yz)): ((f32, i32), (f32, i32)),
        (lo, hi): (i32, i32),
    ) -> Result<bool, LowerError> {
        let name = self.g.node(id).name.clone();
        let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
        let out = ValueId::new(id, 0);
        let (xs_shape, os) = (self.shape(x)?, self.shape(out)?);
        let dtype = self.g.ty(x).dtype;
        let signed = dtype == DType::I8;
        // The max compares signed bytes as they are and pads with the low end; the average
        // widens unsigned bytes (i8 flipped) and pads with the zero point.
        let (op, flip, fill) = if max {
            (PlaneOp::Max { signed }, false, if signed { 0x80 } else { 0 })
        } else {
            (PlaneOp::Average, signed, (xz + if signed { 128 } else { 0 }) as u8)
        };
        let g = super::conv::geom(window, &xs_shape, &os);
        let (n, c, avx2) = (xs_shape[0], xs_shape[1], self.tier == Tier::Avx2);
        let spec = QDepthwiseSpec { op, n, c, mult: 1, g, flip, fill, avx2, signed };
        if !spec.fits() {
            return Ok(false);
        }
        let mut reads = vec![self.value(x)?];
        if !max {
            let Op::QLinearAveragePool(pool) = &self.g.node(id).op else {
                return Err(self.unsupported(id, "an average pool that is not QLinearAveragePool"));
            };
            let w3 = window.in3(&xs_shape[2..], &os[2..]);
            let span = |i: usize, o: usize| {
                incept_ir::ops::qlinear::span(o, w3.strides[i], w3.kernel[i], w3.pads[i], w3.ends[i], w3.input[i])
            };
            let (pitch, len) = spec.stage_outputs();
            let mut counts = vec![1f32; len];
            for oy in 0..spec.g.oh {
                for ox in 0..spec.g.ow {
                    counts[oy * pitch + ox] = pool.count([span(0, 0), span(1, oy), span(2, ox)]) as f32;
                }
            }
            let consts: Vec<u8> = [xs, ys, yz as f32, lo as f32, hi as f32]
                .iter()
                .map(|f| f.to_bits())
                // The zero point as the kernel widens it: the byte, unsigned.
                .chain([fill as u32])
                .flat_map(|v| v.to_le_bytes())
                .collect();
            reads.push(self.weight_f32(&counts, &format!("{name}.counts")));
            reads.push(self.weight(&consts, &format!("{name}.consts")));
        }
        let dst = self.define(out)?;
        self.plane_step(spec, &reads, dst, &name, op_name(self, id), 0);
        Ok(true)
    }

    pub(super) fn qlinear_softmax(&mut self, id: NodeId, op: &QLinearSoftmax) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
        let shape = self.shape(x)?;
        let dtype = self.g.ty(x).dtype;
        let (xs, _) = self.const_params(id, 1, None)?;
        let (ys, yz) = self.const_params(id, 3, Some(4))?;
        self.range_of(id, dtype)?;
        let (d, inner) = op.rows(&shape).map_err(|e| self.unsupported(id, e.to_string()))?;
        let n: usize = shape.iter().product();
        let outer = n.checked_div(d * inner).unwrap_or(0);
        let e = self.weight_f32(&QLinearSoftmax::exps(xs, d), &format!("{name}.exps"));
        let spec = QSoftmaxSpec { outer, d, inner, dtype, yse: (1.0f32 / ys).floor(), y_zero: yz };
        let src = self.value(x)?;
        let dst = self.define(ValueId::new(id, 0))?;
        let tiles = spec.tiles();
        self.step(Arc::new(spec), tiles, &[src, e], &[dst], false, &name, "QLinearSoftmax", 0);
        Ok(())
    }

    pub(super) fn dynamic_quantize(&mut self, id: NodeId) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
        let spec = DynQuantSpec { n: self.shape(x)?.iter().product() };
        let src = self.value(x)?;
        let outs = [0, 1, 2].map(|i| self.define(ValueId::new(id, i)));
        let outs: Vec<_> = outs.into_iter().collect::<Result<_, _>>()?;
        self.step(Arc::new(spec), 1, &[src], &outs, false, &name, "DynamicQuantizeLinear", 0);
        Ok(())
    }
}

fn op_name(l: &Lowerer, id: NodeId) -> &'static str {
    l.g.node(id).op.name()
}
